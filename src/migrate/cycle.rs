//! The migration loop: a cycle at once, then one every interval, until the stop.
//!
//! Used by the service (`run --migrate`, `migration.enabled`) and by the standalone `migrate`
//! command alike; what the caller shows while a cycle runs goes through [`Progress`].

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::exec::{Migrator, Progress, Report};
use super::plan::fmt_ms;

/// Logs the end of a cycle: rows copied, late rows, chunks left mismatched.
fn log_cycle(r: &Report, started: Instant) {
    let copied: u64 = r.tables.iter().map(|t| t.rows_copied).sum();
    let mismatched: usize = r.tables.iter().map(|t| t.chunks_mismatched).sum();
    let late: u64 = r.tables.iter().map(|t| t.late_rows).sum();
    tracing::info!(
        cutoff = %fmt_ms(r.cutoff_ms),
        rows_copied = copied,
        late_rows = late,
        chunks_mismatched = mismatched,
        secs = started.elapsed().as_secs_f64(),
        "migration cycle done"
    );
}

/// A cycle every `interval` until `stop` (which also cuts a running cycle: every copy carries a
/// deterministic token, so a cut cycle is safe). A failed cycle is logged and tried again at
/// the next interval; the interval is the wait, not a retry schedule.
pub async fn run_cycles(
    migrator: &Migrator,
    interval: Duration,
    stop: &CancellationToken,
    progress: &dyn Progress,
) {
    loop {
        let started = Instant::now();
        let now = chrono::Utc::now().timestamp_millis();
        progress.cycle_started();
        let result = tokio::select! {
            r = migrator.run_once(now, progress) => r,
            () = stop.cancelled() => {
                progress.cycle_ended();
                return;
            }
        };
        progress.cycle_ended();
        match result {
            Ok(r) => log_cycle(&r, started),
            Err(e) => tracing::error!(error = %e, "migration cycle failed; retrying next interval"),
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = stop.cancelled() => return,
        }
    }
}
