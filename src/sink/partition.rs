//! Partition keys of the tables we write, and the dedup-window arithmetic they lead to.
//!
//! Mirrors the `PARTITION BY` clauses of `crate::schema` — `(toYYYYMM(timestamp), exchange)`
//! for the market data, `toYYYYMM(received_at)` for dead letters, `toYYYYMM(event_time)` for
//! quality events — so the sink can count and group a batch's partitions before sending it
//! ([`super::Splitter`]). A key that disagreed with the server's would only make a split
//! happen later (reactively, on `Code: 252`), never lose or double a row.

use chrono::Datelike;

use crate::model::QualityEvent;
use crate::model::{DeadLetterRow, Record};

/// `toYYYYMM` of a UTC millisecond timestamp, e.g. 202610.
pub fn yyyymm(ms: i64) -> i64 {
    // Days since 0001-01-01 (chrono's day 1). Out of chrono's range (±262,000 years) cannot
    // pass decode's 2009..now+1d check; 0 then.
    let days = i32::try_from(ms.div_euclid(86_400_000) + 719_163).unwrap_or(0);
    chrono::NaiveDate::from_num_days_from_ce_opt(days)
        .map_or(0, |d| i64::from(d.year()) * 100 + i64::from(d.month()))
}

/// The partition of a market-data row: `(toYYYYMM(timestamp), exchange)`.
pub fn record_partition(r: &Record) -> (i64, &str) {
    let c = r.common();
    (yyyymm(c.timestamp_ms), c.exchange.as_str())
}

/// The partition of a dead letter: `toYYYYMM(received_at)`.
pub fn dead_letter_partition(r: &DeadLetterRow) -> i64 {
    yyyymm(r.received_at_ms)
}

/// The partition of a quality event: `toYYYYMM(event_time)`.
pub fn quality_event_partition(e: &QualityEvent) -> i64 {
    yyyymm(e.event_time_ms)
}

/// Upper bound of the blocks (dedup-window entries) one batch adds to a table.
///
/// ClickHouse remembers one entry per (partition, token) that landed. Pieces split by
/// partition share the token and hold disjoint partitions, so they add one entry per
/// partition: `partitions`. Halving a single-partition piece (a refused row, a too-large
/// block) adds, per rejected row, at most one clean sibling per level of the halving tree:
/// `rejected × ⌈log2(rows)⌉` (a dirty node has at most one clean child that lands; the dirty
/// nodes are the `rejected` root-to-leaf paths). And every block holds at least one row of
/// the batch, so never more than `rows`.
///
/// `pipeline::window::required_window` multiplies it by the batches a replay can re-send; that is the
/// one place the tables' window is sized from.
pub const fn max_blocks_per_batch(rows: u64, partitions: u64, rejected: u64) -> u64 {
    let depth = (u64::BITS - rows.saturating_sub(1).leading_zeros()) as u64;
    let blocks = partitions.saturating_add(rejected.saturating_mul(depth));
    if blocks < rows { blocks } else { rows }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yyyymm_matches_clickhouse() {
        assert_eq!(yyyymm(0), 197_001);
        assert_eq!(yyyymm(1_761_040_800_123), 202_510);
        assert_eq!(yyyymm(-1), 196_912);
        assert_eq!(yyyymm(951_782_400_000), 200_002); // 2000-02-29
        assert_eq!(yyyymm(951_868_800_000), 200_003);
    }

    #[test]
    fn window_arithmetic() {
        assert_eq!(max_blocks_per_batch(100_000, 100, 10), 270);
        assert_eq!(max_blocks_per_batch(100_000, 3, 0), 3);
        assert_eq!(max_blocks_per_batch(8, 1, 8), 8, "never more than the rows");
        assert_eq!(max_blocks_per_batch(1, 1, 0), 1);
        assert_eq!(max_blocks_per_batch(0, 0, 0), 0);
        assert_eq!(max_blocks_per_batch(2, 1, 1), 2);
        assert_eq!(max_blocks_per_batch(100_000, 100, 100), 1_800);
    }
}

#[cfg(test)]
mod measure {
    use super::*;
    use crate::model::{Common, TradeRow};

    /// Release-mode micro-measurement of what counting partitions costs every batch:
    /// `cargo test --release --lib partition_ns_per_row -- --ignored --nocapture`.
    #[test]
    #[ignore]
    #[allow(clippy::print_stdout)]
    fn partition_ns_per_row() {
        const N: usize = 100_000;
        let exchanges = ["binance", "okx", "bybit", "deribit", "gate"];
        let rows: Vec<Record> = (0..N)
            .map(|i| {
                Record::Trade(TradeRow {
                    common: Common {
                        timestamp_ms: 1_761_040_800_000 + i as i64,
                        exchange: exchanges[i % 5].into(),
                        ..Default::default()
                    },
                    ..Default::default()
                })
            })
            .collect();
        let start = std::time::Instant::now();
        let mut pieces = 0;
        for _ in 0..20 {
            let keys: Vec<_> = rows.iter().map(record_partition).collect();
            let mut s = crate::sink::Splitter::new(keys, "t", 100);
            while s.next_piece().is_some() {
                pieces += 1;
            }
        }
        let el = start.elapsed() / 20;
        let t = std::time::Instant::now();
        let mut n = 0;
        for _ in 0..20 {
            n += rows
                .iter()
                .map(record_partition)
                .filter(|k| k.0 > 0)
                .count();
        }
        println!("keys alone: {:?} per batch ({n})", t.elapsed() / 20);
        println!(
            "partition keys + splitter: {N} rows in {el:?} = {:.1} ns/row ({} piece/batch)",
            el.as_nanos() as f64 / N as f64,
            pieces / 20
        );
    }
}
