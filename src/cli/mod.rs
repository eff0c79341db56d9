//! The command-line interface: the clap tree and one file per command.
//!
//! Commands parse their flags, call the library (the service itself is `service::Service`)
//! and print; logging is set up here (`init_logging`, once the configuration is loaded). Each
//! returns `anyhow::Result` to `main`, which maps errors to exit codes.

pub mod audit;
mod bench;
mod clickhouse_cmd;
mod config_cmd;
mod demo;
mod init;
pub mod migrate;
mod progress;
pub mod publish;
pub mod quality;
mod query;
mod run;
mod streams;
pub mod table;
pub mod verify;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{self, Config, Loaded};

/// MarketPrism Storage: NATS JetStream → ClickHouse, exactly once.
#[derive(Debug, Parser)]
#[command(name = "marketprism-storage", version, about, long_about = None)]
pub struct Cli {
    /// YAML configuration file (keys: config/example.yaml; env vars override it).
    #[arg(long, global = true, env = "MARKETPRISM_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormatArg>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormatArg {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: ensure streams and consumers, ingest, write to ClickHouse.
    Run(run::RunArgs),
    /// Create the hot and cold databases and tables (idempotent).
    Init(init::InitArgs),
    /// Run SQL against the configured ClickHouse and print the result.
    Query(query::QueryArgs),
    /// Print the effective configuration with the source of every key (secrets masked).
    Config,
    /// Run the embedded ClickHouse (chDB behind the ClickHouse HTTP protocol) in the foreground.
    Clickhouse(clickhouse_cmd::ClickhouseArgs),
    /// Manage the JetStream streams.
    Streams(streams::StreamsArgs),
    /// The whole product on this machine: embedded NATS and ClickHouse, the service and a
    /// publisher of all eight types, with a live progress line and a summary.
    Demo(demo::DemoArgs),
    /// Benchmark: raw JetStream and ClickHouse ceilings, then the service end to end.
    Bench(bench::BenchArgs),
    /// Publish collector-shaped messages for all eight types (testing, demos, benchmarks).
    Publish(publish::PublishArgs),
    /// Copy hot rows older than the window into cold, verified chunk by chunk.
    Migrate(migrate::MigrateArgs),
    /// Compare hot and cold per table and day; exit non-zero on any mismatch.
    Verify(verify::VerifyArgs),
    /// Data-quality report from the stored rows: gaps, duplicates, silences, latencies.
    Quality(quality::QualityArgs),
    /// Prove exactly-once: compare what the streams hold with what ClickHouse stores, per
    /// type and market; exit 1 on any difference, 2 on error.
    Audit(audit::AuditArgs),
}

/// Loads and validates the configuration (file + process environment) and registers its
/// secrets for masking (`redact`: before anything can print them).
pub fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<Loaded> {
    let loaded = Config::load(path, &config::process_env)?;
    let secrets = loaded.secret_texts();
    crate::redact::register(secrets.iter().map(config::Secret::expose));
    Ok(loaded)
}

/// Sets up `tracing` from the configuration (`RUST_LOG` wins over `LOG_LEVEL`); every line
/// goes through the redacting writer, so no registered secret reaches the log.
pub fn init_logging(cfg: Option<&Config>, format: Option<LogFormatArg>) {
    use tracing_subscriber::EnvFilter;
    let filter = cfg
        .map(|c| c.log.filter().to_string())
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".into());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        Some(LogFormatArg::Json) => true,
        Some(LogFormatArg::Pretty) => false,
        None => cfg.is_some_and(|c| c.log.format == config::LogFormat::Json),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(crate::redact::RedactingMakeWriter(std::io::stderr));
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.compact().try_init()
    };
}

/// Runs the parsed command.
pub async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    if let Command::Clickhouse(args) = &cli.command {
        // Needs no configuration beyond the tools dir, and must work without a config file.
        init_logging(None, cli.log_format);
        return clickhouse_cmd::run(args).await;
    }
    let loaded = load_config(cli.config.as_deref())?;
    if matches!(cli.command, Command::Demo(_) | Command::Audit(_))
        && std::env::var_os("LOG_LEVEL").is_none()
        && std::env::var_os("RUST_LOG").is_none()
    {
        // The demo and the audit talk through their own output; logs only when something is
        // wrong.
        let mut quiet = loaded.config.clone();
        quiet.log.level = "warn".into();
        init_logging(Some(&quiet), cli.log_format);
    } else {
        init_logging(Some(&loaded.config), cli.log_format);
    }
    // Logged once logging is set up (`config` prints them under its table).
    if !matches!(cli.command, Command::Config) {
        for w in &loaded.warnings {
            tracing::warn!("{w}");
        }
    }
    match cli.command {
        Command::Run(args) => run::run(&loaded.config, &args).await,
        Command::Init(args) => init::run(&loaded.config, &args).await,
        Command::Query(args) => query::run(&loaded.config, &args).await,
        Command::Config => config_cmd::run(&loaded),
        Command::Streams(args) => streams::run(&loaded.config, &args).await,
        Command::Publish(args) => publish::run(&loaded.config, &args).await,
        Command::Bench(args) => bench::run(&loaded.config, &args).await,
        Command::Demo(args) => demo::run(&loaded.config, &args).await,
        Command::Migrate(args) => migrate::run(&loaded.config, &args).await,
        Command::Verify(args) => verify::run(&loaded.config, &args).await,
        Command::Quality(args) => quality::run(&loaded.config, &args).await,
        Command::Audit(args) => audit::run(&loaded.config, &args).await,
        Command::Clickhouse(_) => Ok(()),
    }
}

/// An error that carries the process exit code (`audit`: 1 = differences, 2 = failure).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ExitError {
    /// The exit code.
    pub code: u8,
    /// What to print.
    pub message: String,
}

/// Writes to stdout (the CLI's output channel; logs go to stderr), secrets masked.
pub fn out(text: &str) {
    use std::io::Write;
    let mut so = crate::redact::RedactingWriter(std::io::stdout().lock());
    let _ = so.write_all(text.as_bytes());
    let _ = so.flush();
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Variables clap may show in `--help` with their value (`[env: NAME=value]`): none of
    /// them holds a secret. Clap prints help before the configuration is loaded, so its
    /// output cannot be masked: an argument read from any other variable must hide its value.
    const SHOWN_VARIABLES: [&str; 4] = [
        "MARKETPRISM_CONFIG",
        "MARKETPRISM_DATA_DIR",
        "MARKETPRISM_TOOLS_DIR",
        "MARKETPRISM_INSTANCE_ID",
    ];

    #[test]
    fn help_never_shows_the_value_of_a_variable_that_may_hold_a_secret() {
        fn walk(cmd: &clap::Command, seen: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let Some(var) = arg.get_env().and_then(|v| v.to_str()) else {
                    continue;
                };
                seen.push(var.to_string());
                assert!(
                    arg.is_hide_env_values_set() || SHOWN_VARIABLES.contains(&var),
                    "{} --{}: add hide_env_values = true (or list {var} here if it can never hold a secret)",
                    cmd.get_name(),
                    arg.get_id()
                );
            }
            for sub in cmd.get_subcommands() {
                walk(sub, seen);
            }
        }
        let mut seen = Vec::new();
        walk(&super::Cli::command(), &mut seen);
        assert!(seen.iter().any(|v| v == "MARKETPRISM_CONFIG"), "{seen:?}");
    }
}
