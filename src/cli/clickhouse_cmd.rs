//! `clickhouse`: the embedded ClickHouse in the foreground until Ctrl-C or SIGTERM.

use std::path::PathBuf;

use crate::embedded::{ChServerOptions, EmbeddedClickHouse, Tools};

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
    /// Address to listen on; other than loopback, it needs a password in
    /// MARKETPRISM_EMBEDDED_PASSWORD (read from the environment only: a command line is
    /// visible to every user).
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
    let password = std::env::var("MARKETPRISM_EMBEDDED_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty());
    if password.is_none() && !is_loopback(&args.listen) {
        anyhow::bail!(
            "--listen {} is reachable from other machines: set MARKETPRISM_EMBEDDED_PASSWORD or listen on 127.0.0.1",
            args.listen
        );
    }
    let options = ChServerOptions {
        password,
        ..ChServerOptions::default()
    };
    let mut server =
        EmbeddedClickHouse::start_with(&tools, &args.data_dir, &args.listen, "info", &options)
            .await?;
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

/// Whether `listen` (`host:port`) is a loopback address (`localhost` counts).
fn is_loopback(listen: &str) -> bool {
    if let Ok(addr) = listen.parse::<std::net::SocketAddr>() {
        return addr.ip().is_loopback();
    }
    listen
        .rsplit_once(':')
        .is_some_and(|(host, _)| host.eq_ignore_ascii_case("localhost"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_loopback_listens_without_a_password() {
        for (listen, loopback) in [
            ("127.0.0.1:8123", true),
            ("[::1]:0", true),
            ("localhost:8123", true),
            ("0.0.0.0:8123", false),
            ("[::]:8123", false),
            ("10.1.2.3:8123", false),
            ("ch.example:8123", false),
        ] {
            assert_eq!(super::is_loopback(listen), loopback, "{listen}");
        }
    }
}
