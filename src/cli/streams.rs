//! `streams ensure`: create the JetStream streams when missing; report what exists.
//! `streams partition`: change a stream's partition layout (the one operation that changes an
//! existing stream).

use anyhow::{Context, bail};

use crate::config::Config;
use crate::source::partition::Layout;
use crate::source::streams::{Ensured, layout, transform_for};

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
    /// Lay a stream out for N partitions per type (1: none). Messages stored from then on go
    /// to the new layout's lanes; the lanes of the old one drain what they hold. Nothing is
    /// lost or stored twice, and running instances follow within seconds. Set
    /// `nats.streams.<stream>.partitions` to N before their next restart (`run` refuses a
    /// stream whose layout differs from the key).
    Partition {
        /// `market_data` or `high_frequency` (the configuration's names).
        #[arg(long, value_parser = ["market_data", "high_frequency"])]
        stream: String,
        /// Partitions per type, 1–256 (1 removes the layout).
        #[arg(long)]
        partitions: u32,
    },
}

fn layout_text(l: &Layout) -> String {
    match l {
        Layout::Unpartitioned => "unpartitioned".into(),
        Layout::Partitioned(n) => format!("{n} partitions"),
        Layout::Foreign {
            source,
            destination,
        } => format!("foreign transform {source} → {destination}"),
    }
}

/// Connects to NATS and ensures every configured stream, or changes one stream's layout.
pub async fn run(cfg: &Config, args: &StreamsArgs) -> anyhow::Result<()> {
    let client =
        crate::service::nats::connect_once(&cfg.nats, "marketprism-storage streams").await?;
    let js = async_nats::jetstream::new(client);
    match &args.action {
        StreamsAction::Ensure => {
            let specs = crate::service::stream_specs(cfg);
            let never = tokio_util::sync::CancellationToken::new();
            never.cancel(); // one attempt: a CLI user wants the error, not a retry loop
            let results = crate::pipeline::ensure_streams(&js, &specs, &never).await?;
            let rows: Vec<Vec<String>> = results
                .into_iter()
                .map(|(name, e)| match e {
                    Ensured::Created => {
                        let n = specs
                            .iter()
                            .find(|s| s.name == name)
                            .map_or(1, |s| s.partitions);
                        let l = if n > 1 {
                            Layout::Partitioned(n)
                        } else {
                            Layout::Unpartitioned
                        };
                        vec![name, "created".into(), layout_text(&l), String::new()]
                    }
                    Ensured::Existing {
                        uncovered,
                        messages,
                        layout,
                        ..
                    } => vec![
                        name,
                        format!("exists ({messages} messages), unchanged"),
                        layout_text(&layout),
                        if uncovered.is_empty() {
                            String::new()
                        } else {
                            format!("not captured: {}", uncovered.join(", "))
                        },
                    ],
                })
                .collect();
            super::out(&super::table::render(
                &["stream", "state", "layout", "note"],
                &rows,
            ));
            Ok(())
        }
        StreamsAction::Partition { stream, partitions } => {
            let n = *partitions;
            let max = crate::source::partition::MAX_PARTITIONS;
            if n == 0 || n > max {
                bail!("--partitions must be 1–{max}, not {n}");
            }
            let sc = if stream == "market_data" {
                &cfg.nats.streams.market_data
            } else {
                &cfg.nats.streams.high_frequency
            };
            let mut s = js
                .get_stream(&sc.name)
                .await
                .with_context(|| format!("stream {} (run `streams ensure` first)", sc.name))?;
            let info = s.info().await?.clone();
            let before = layout(&info.config);
            if let Layout::Foreign { .. } = before {
                bail!(
                    "stream {} has a subject transform that is not ours ({}); it is left unchanged",
                    sc.name,
                    layout_text(&before)
                );
            }
            if before.partitions() == n {
                super::out(&format!(
                    "stream {} is already laid out for {}; unchanged\n",
                    sc.name,
                    layout_text(&before)
                ));
                return Ok(());
            }
            // The old layout's lanes are found by their durables: create any that no instance
            // created yet, so the messages already stored under it are read (from the start).
            let settings = crate::service::pipeline_settings(cfg, String::new());
            let journal = crate::source::journal::Journal::open(
                &js,
                &settings.journal_bucket,
                settings.kv_replicas,
            )
            .await?;
            let old_n = before.partitions();
            for (t, spec) in &settings.consumers {
                if spec.stream != sc.name || old_n < 2 {
                    continue;
                }
                for k in 0..old_n {
                    let id =
                        crate::source::partition::LaneId::partition(*t, &spec.durable, k, old_n);
                    let lane = crate::source::ConsumerSpec {
                        durable: id.durable.clone(),
                        filter_subject: id.filter(),
                        ..spec.clone()
                    };
                    crate::source::bind_consumer(&js, &lane, Some(&journal)).await?;
                }
            }
            let mut new_cfg = info.config.clone();
            new_cfg.subject_transform = transform_for(n);
            let updated = js
                .update_stream(&new_cfg)
                .await
                .with_context(|| format!("update stream {}", sc.name))?;
            let after = layout(&updated.config);
            let rows = vec![vec![
                sc.name.clone(),
                layout_text(&before),
                layout_text(&after),
                format!("{}", updated.state.last_sequence),
            ]];
            super::out(&super::table::render(
                &["stream", "before", "after", "from after sequence"],
                &rows,
            ));
            super::out(&format!(
                "Messages stored from now on go to the new layout's lanes; the old layout's lanes \
                 drain what they hold. Running instances pick the new lanes up within seconds.\n\
                 Set nats.streams.{stream}.partitions: {n} in the configuration before the next \
                 restart: `run` refuses a stream whose layout differs from the key.\n"
            ));
            Ok(())
        }
    }
}
