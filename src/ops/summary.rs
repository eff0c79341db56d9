//! The periodic info log line: rows/s per type, consumer lag and errors over the last interval.
//!
//! The caller keeps the previous [`Snapshot`], e.g.:
//! ```ignore
//! let mut prev = Snapshot::take(&stats);
//! loop {
//!     tokio::time::sleep(every).await;
//!     tracing::info!("{}", summary_line(&stats, &prev, every));
//!     prev = Snapshot::take(&stats);
//! }
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::model::DataType;
use crate::pipeline::stats::{Stats, now_ms};

/// The counters of one type that the summary compares between intervals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TypeSnapshot {
    /// Messages received.
    pub received: u64,
    /// Rows inserted.
    pub inserted: u64,
    /// Dead letters.
    pub dead_letters: u64,
    /// Failed insert attempts.
    pub insert_errors: u64,
    /// Retries.
    pub retries: u64,
}

/// The counters of every type at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Per type.
    pub types: BTreeMap<DataType, TypeSnapshot>,
}

impl Snapshot {
    /// Reads the counters now.
    pub fn take(stats: &Stats) -> Snapshot {
        Snapshot {
            types: stats
                .iter()
                .map(|(t, s)| {
                    (
                        t,
                        TypeSnapshot {
                            received: s.received.load(Relaxed),
                            inserted: s.rows_inserted.load(Relaxed),
                            dead_letters: s.dead_letters.load(Relaxed),
                            insert_errors: s.insert_errors.load(Relaxed),
                            retries: s.retries.load(Relaxed),
                        },
                    )
                })
                .collect(),
        }
    }
}

/// One line summarising the interval since `previous` (taken `elapsed` ago), e.g.
/// `1434.5 rows/s (trade 1234.5, orderbook 200.0); pending trade=0 orderbook=12; last 10 s:
/// +2 dead letters, +1 insert errors, +3 retries; nats up, clickhouse up`.
///
/// Types that are unbound and have never received anything are left out.
pub fn summary_line(stats: &Stats, previous: &Snapshot, elapsed: Duration) -> String {
    let now = Snapshot::take(stats);
    let secs = elapsed.as_secs_f64();
    let rate = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    let active: Vec<DataType> = DataType::ALL
        .into_iter()
        .filter(|t| {
            let s = stats.of(*t);
            s.bound.load(Relaxed) || s.received.load(Relaxed) > 0
        })
        .collect();
    let delta = |t: DataType, f: fn(&TypeSnapshot) -> u64| {
        let cur = now.types.get(&t).map(f).unwrap_or(0);
        let old = previous.types.get(&t).map(f).unwrap_or(0);
        cur.saturating_sub(old)
    };
    let total: u64 = active.iter().map(|t| delta(*t, |s| s.inserted)).sum();
    let mut line = format!("{:.1} rows/s", rate(total));
    if !active.is_empty() {
        let per: Vec<String> = active
            .iter()
            .map(|t| format!("{t} {:.1}", rate(delta(*t, |s| s.inserted))))
            .collect();
        let _ = write!(line, " ({})", per.join(", "));
        let pending: Vec<String> = active
            .iter()
            .map(|t| format!("{t}={}", stats.of(*t).consumer_pending.load(Relaxed)))
            .collect();
        let _ = write!(line, "; pending {}", pending.join(" "));
    }
    let sum =
        |f: fn(&TypeSnapshot) -> u64| -> u64 { DataType::ALL.iter().map(|t| delta(*t, f)).sum() };
    let _ = write!(
        line,
        "; last {} s: +{} dead letters, +{} insert errors, +{} retries",
        elapsed.as_secs(),
        sum(|s| s.dead_letters),
        sum(|s| s.insert_errors),
        sum(|s| s.retries),
    );
    let now_ms = now_ms();
    let failing: Vec<String> = DataType::ALL
        .iter()
        .filter_map(|t| {
            let since = stats.of(*t).failing_since_ms.load(Relaxed);
            (since > 0).then(|| format!("{t} {} s", now_ms.saturating_sub(since).max(0) / 1000))
        })
        .collect();
    if !failing.is_empty() {
        let _ = write!(line, "; inserts failing: {}", failing.join(", "));
    }
    let up = |b: bool| if b { "up" } else { "down" };
    let _ = write!(
        line,
        "; nats {}, clickhouse {}",
        up(stats.nats_connected.load(Relaxed)),
        up(stats.clickhouse_up.load(Relaxed)),
    );
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_lag_and_errors_over_the_interval() {
        let stats = Stats::new(0);
        stats.nats_connected.store(true, Relaxed);
        let trade = stats.of(DataType::Trade);
        let book = stats.of(DataType::Orderbook);
        trade.bound.store(true, Relaxed);
        book.bound.store(true, Relaxed);
        trade.rows_inserted.store(1000, Relaxed);
        trade.retries.store(5, Relaxed);
        let prev = Snapshot::take(&stats);
        trade.rows_inserted.store(13_345, Relaxed);
        book.rows_inserted.store(2_000, Relaxed);
        book.consumer_pending.store(12, Relaxed);
        trade.dead_letters.store(2, Relaxed);
        trade.insert_errors.store(1, Relaxed);
        trade.retries.store(8, Relaxed);
        let line = summary_line(&stats, &prev, Duration::from_secs(10));
        assert_eq!(
            line,
            "1434.5 rows/s (trade 1234.5, orderbook 200.0); pending trade=0 orderbook=12; \
             last 10 s: +2 dead letters, +1 insert errors, +3 retries; nats up, clickhouse down"
        );
    }

    #[test]
    fn idle_service_and_zero_interval() {
        let stats = Stats::new(0);
        let line = summary_line(&stats, &Snapshot::default(), Duration::ZERO);
        assert_eq!(
            line,
            "0.0 rows/s; last 0 s: +0 dead letters, +0 insert errors, +0 retries; nats down, clickhouse down"
        );
    }

    #[test]
    fn failing_tables_are_named() {
        let stats = Stats::new(0);
        stats
            .of(DataType::Trade)
            .failing_since_ms
            .store(now_ms() - 75_000, Relaxed);
        let line = summary_line(&stats, &Snapshot::take(&stats), Duration::from_secs(10));
        assert!(line.contains("; inserts failing: trade 75 s;"), "{line}");
    }
}
