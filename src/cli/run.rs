//! `run`: the service (`service::Service`) until SIGINT/SIGTERM.

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::service::{RunOptions, Service};

/// Arguments of `run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Do not create missing databases and tables at start.
    #[arg(long)]
    pub no_init: bool,
    /// Instance id for consumer leases (default `<hostname>:<http port>`; keep it stable
    /// across restarts of the same instance, distinct between instances).
    #[arg(long, env = "MARKETPRISM_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Also run the hot → cold migration loop in this process (same as `migration.enabled`).
    #[arg(long)]
    pub migrate: bool,
}

impl RunArgs {
    /// The service's options from the flags.
    fn options(&self) -> RunOptions {
        RunOptions {
            no_init: self.no_init,
            instance_id: self.instance_id.clone(),
            migrate: self.migrate,
        }
    }
}

/// Cancels `stop` on the first SIGINT/SIGTERM; a second one exits at once.
fn spawn_signal_handler(stop: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::info!("shutdown requested: stop fetching, flush, insert, ack");
        stop.cancel();
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::warn!("second signal: exiting without flushing (the journal makes this safe)");
        std::process::exit(130);
    });
    Ok(())
}

/// Runs the service until SIGINT/SIGTERM.
pub async fn run(cfg: &Config, args: &RunArgs) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    spawn_signal_handler(stop.clone())?;
    Service::new(cfg.clone(), args.options()).run(stop).await?;
    Ok(())
}
