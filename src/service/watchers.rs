//! Background watchers of a running service: the ClickHouse probe behind `/ready` and the
//! summary log line.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::ops;
use crate::pipeline::Stats;
use crate::sink::Sink;

/// Time between ClickHouse probes (and the bound of one probe).
pub const PROBE_EVERY: Duration = Duration::from_secs(2);
/// Time between summary log lines.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(30);

/// Pings ClickHouse every [`PROBE_EVERY`] (for `/ready`) and logs a summary line every
/// [`SUMMARY_EVERY`], until `stop`. A probe is a reading, not a retry: it never waits longer
/// when ClickHouse stays down.
pub fn spawn(sink: Arc<Sink>, stats: Arc<Stats>, stop: CancellationToken) {
    let s = stats.clone();
    let st = stop.clone();
    tokio::spawn(async move {
        loop {
            let up = tokio::time::timeout(PROBE_EVERY, sink.ping())
                .await
                .is_ok_and(|r| r.is_ok());
            if s.set_clickhouse_up(up) != up {
                if up {
                    tracing::info!("clickhouse answering")
                } else {
                    tracing::warn!("clickhouse not answering")
                }
            }
            tokio::select! { _ = tokio::time::sleep(PROBE_EVERY) => {}, _ = st.cancelled() => return }
        }
    });
    tokio::spawn(async move {
        let every = SUMMARY_EVERY;
        let mut prev = ops::Snapshot::take(&stats);
        loop {
            tokio::select! { _ = tokio::time::sleep(every) => {}, _ = stop.cancelled() => return }
            tracing::info!("{}", ops::summary_line(&stats, &prev, every));
            prev = ops::Snapshot::take(&stats);
        }
    });
}
