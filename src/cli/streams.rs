//! `streams ensure`: create the JetStream streams when missing; report what exists.

use crate::config::Config;

/// Arguments of `streams`.
#[derive(Debug, clap::Args)]
pub struct StreamsArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: StreamsAction,
}

/// `streams` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum StreamsAction {
    /// Create missing streams (never deletes, recreates or narrows an existing one).
    Ensure,
}

/// Connects to NATS and ensures every configured stream.
pub async fn run(cfg: &Config, args: &StreamsArgs) -> anyhow::Result<()> {
    match args.action {
        StreamsAction::Ensure => {
            let client = async_nats::connect(cfg.nats.url()).await?;
            let js = async_nats::jetstream::new(client);
            let specs = crate::service::stream_specs(cfg);
            let never = tokio_util::sync::CancellationToken::new();
            never.cancel(); // one attempt: a CLI user wants the error, not a retry loop
            let results = crate::pipeline::ensure_streams(&js, &specs, &never).await?;
            let rows: Vec<Vec<String>> = results
                .into_iter()
                .map(|(name, e)| match e {
                    crate::source::streams::Ensured::Created => {
                        vec![name, "created".into(), String::new()]
                    }
                    crate::source::streams::Ensured::Existing {
                        uncovered,
                        messages,
                    } => vec![
                        name,
                        format!("exists ({messages} messages), unchanged"),
                        if uncovered.is_empty() {
                            String::new()
                        } else {
                            format!("not captured: {}", uncovered.join(", "))
                        },
                    ],
                })
                .collect();
            super::out(&super::table::render(&["stream", "state", "note"], &rows));
            Ok(())
        }
    }
}
