//! `clickhouse`: the embedded ClickHouse in the foreground until Ctrl-C or SIGTERM.

use std::path::PathBuf;

use crate::embedded::{EmbeddedClickHouse, Tools};

/// Arguments of `clickhouse`.
#[derive(Debug, clap::Args)]
pub struct ClickhouseArgs {
    /// Data directory (created if missing).
    #[arg(
        long,
        env = "MARKETPRISM_DATA_DIR",
        default_value = "./data/clickhouse"
    )]
    pub data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8123")]
    pub listen: String,
    /// The tools venv (python with chdb-core).
    #[arg(long, env = "MARKETPRISM_TOOLS_DIR", default_value = "./.venv")]
    pub tools_dir: PathBuf,
}

/// Starts the server, prints its URL, forwards SIGINT/SIGTERM and waits for it to exit.
pub async fn run(args: &ClickhouseArgs) -> anyhow::Result<()> {
    let tools = Tools::locate(&args.tools_dir)?;
    // Listen for SIGTERM before anything is printed: a supervisor that stops us as soon as it
    // sees the ready line must reach the handler (forward and drain), not the default action.
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut server =
        EmbeddedClickHouse::start_logging(&tools, &args.data_dir, &args.listen, "info").await?;
    super::out(&format!(
        "embedded ClickHouse listening on {} (data in {}); Ctrl-C to stop\n",
        server.url,
        args.data_dir.display()
    ));
    tokio::select! {
        _ = int.recv() => server.signal_stop(),
        _ = term.recv() => server.signal_stop(),
        code = server.wait() => anyhow::bail!("embedded ClickHouse exited unexpectedly (status {code:?})"),
    }
    match server.wait().await {
        Some(0) | None => Ok(()),
        Some(code) => anyhow::bail!("embedded ClickHouse exited with status {code}"),
    }
}
