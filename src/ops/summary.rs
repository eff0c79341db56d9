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
use std::time::Duration;

use crate::model::DataType;
use crate::pipeline::stats::{Stats, TypeCounters, now_ms};

/// The counters of every type at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Per type.
    pub types: BTreeMap<DataType, TypeCounters>,
}

impl Snapshot {
    /// Reads the counters now.
    pub fn take(stats: &Stats) -> Snapshot {
        Snapshot {
            types: stats.iter().map(|(t, s)| (t, s.counters())).collect(),
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
        .filter(|t| now.types.get(t).is_some_and(|c| c.bound || c.received > 0))
        .collect();
    let delta = |t: DataType, f: fn(&TypeCounters) -> u64| {
        let cur = now.types.get(&t).map(f).unwrap_or(0);
        let old = previous.types.get(&t).map(f).unwrap_or(0);
        cur.saturating_sub(old)
    };
    let total: u64 = active.iter().map(|t| delta(*t, |s| s.rows_inserted)).sum();
    let mut line = format!("{:.1} rows/s", rate(total));
    if !active.is_empty() {
        let per: Vec<String> = active
            .iter()
            .map(|t| format!("{t} {:.1}", rate(delta(*t, |s| s.rows_inserted))))
            .collect();
        let _ = write!(line, " ({})", per.join(", "));
        let pending: Vec<String> = active
            .iter()
            .map(|t| format!("{t}={}", stats.of(*t).counters().consumer_pending))
            .collect();
        let _ = write!(line, "; pending {}", pending.join(" "));
    }
    let sum =
        |f: fn(&TypeCounters) -> u64| -> u64 { DataType::ALL.iter().map(|t| delta(*t, f)).sum() };
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
            let since = now.types.get(t).map_or(0, |c| c.failing_since_ms);
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
        up(stats.nats_connected()),
        up(stats.clickhouse_up()),
    );
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_lag_and_errors_over_the_interval() {
        let stats = Stats::new(0);
        stats.set_nats_connected(true);
        let trade = stats.of(DataType::Trade);
        let book = stats.of(DataType::Orderbook);
        trade.set_bound(true);
        book.set_bound(true);
        trade.update(|c| {
            c.rows_inserted = 1000;
            c.retries = 5;
        });
        let prev = Snapshot::take(&stats);
        trade.update(|c| {
            c.rows_inserted = 13_345;
            c.dead_letters = 2;
            c.insert_errors = 1;
            c.retries = 8;
        });
        book.update(|c| {
            c.rows_inserted = 2_000;
            c.consumer_pending = 12;
        });
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
            .update(|c| c.failing_since_ms = now_ms() - 75_000);
        let line = summary_line(&stats, &Snapshot::take(&stats), Duration::from_secs(10));
        assert!(line.contains("; inserts failing: trade 75 s;"), "{line}");
    }
}
