//! The quality report computed from the stored rows (SQL over the hot tables), not from the
//! in-memory trackers: it works over old data, after restarts and on another machine.
//!
//! Consumes a [`ReportFilter`]; emits SQL ([`summary_sql`], [`sequence_sql`], [`events_sql`])
//! and turns the TabSeparated answers into [`MarketReport`]s. Pure: the CLI runs the queries.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::DataType;
use crate::schema::quote;

use super::QUALITY_EVENTS_TABLE;

/// What to report on.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportFilter {
    /// Start, UTC ms (inclusive).
    pub from_ms: i64,
    /// End, UTC ms (exclusive).
    pub to_ms: i64,
    /// Only this type.
    pub data_type: Option<DataType>,
    /// Only this symbol.
    pub symbol: Option<String>,
    /// Markets with sequential trade ids (`exchange` or `exchange/market_type`).
    pub sequential_ids: Vec<String>,
}

fn range(col: &str, f: &ReportFilter) -> String {
    let mut w = format!(
        "{col} >= fromUnixTimestamp64Milli(toInt64({}), 'UTC') AND {col} < fromUnixTimestamp64Milli(toInt64({}), 'UTC')",
        f.from_ms, f.to_ms
    );
    if let Some(s) = &f.symbol {
        w.push_str(&format!(" AND symbol = {}", quote(s)));
    }
    w
}

fn sequential_predicate(f: &ReportFilter) -> String {
    let parts: Vec<String> = f
        .sequential_ids
        .iter()
        .map(|e| match e.split_once('/') {
            Some((ex, mt)) => format!("(exchange = {} AND market_type = {})", quote(ex), quote(mt)),
            None => format!("exchange = {}", quote(e)),
        })
        .collect();
    if parts.is_empty() {
        "0".into()
    } else {
        format!("({})", parts.join(" OR "))
    }
}

/// The exchange → collector latency expression of a type, if it has an exchange time.
fn exchange_latency(t: DataType) -> Option<&'static str> {
    match t {
        DataType::Trade => Some("t - toUnixTimestamp64Milli(trade_time)"),
        DataType::Liquidation => Some("t - toUnixTimestamp64Milli(liquidation_time)"),
        _ => None,
    }
}

/// Per market of `t`: `exchange, market_type, symbol, rows, first ms, last ms, longest
/// silence ms, exchange latency p50, p99, ingest latency p50, p99`.
pub fn summary_sql(db: &str, t: DataType, f: &ReportFilter) -> String {
    let exch = exchange_latency(t).unwrap_or("toInt64(0)");
    format!(
        "SELECT exchange, market_type, symbol, count(), min(t), max(t), max(t - prev_t), \
         toInt64(quantileExact(0.5)(exch)), toInt64(quantileExact(0.99)(exch)), \
         toInt64(quantileExact(0.5)(ingest)), toInt64(quantileExact(0.99)(ingest)) \
         FROM (SELECT exchange, market_type, symbol, toUnixTimestamp64Milli(timestamp) AS t, \
         lagInFrame(toUnixTimestamp64Milli(timestamp), 1, toUnixTimestamp64Milli(timestamp)) OVER \
         (PARTITION BY exchange, market_type, symbol ORDER BY timestamp ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS prev_t, \
         toInt64(toUnixTimestamp64Milli(created_at)) - t AS ingest, toInt64({exch}) AS exch \
         FROM `{db}`.`{table}` WHERE {w}) \
         GROUP BY exchange, market_type, symbol ORDER BY exchange, market_type, symbol",
        table = t.table(),
        w = range("timestamp", f),
    )
}

/// Trade-id breaks of the sequential markets, rows ordered by id per market: `exchange,
/// market_type, symbol, previous id, id, exchange time span ms` for every pair of neighbours
/// that are not consecutive (equal: a duplicate; further apart: a gap).
pub fn sequence_sql(db: &str, f: &ReportFilter) -> String {
    format!(
        "SELECT exchange, market_type, symbol, prev, id, tt - prev_tt FROM (\
         SELECT exchange, market_type, symbol, toUInt64OrZero(trade_id) AS id, \
         lagInFrame(toUInt64OrZero(trade_id), 1, 0) OVER w AS prev, \
         toUnixTimestamp64Milli(trade_time) AS tt, \
         lagInFrame(toUnixTimestamp64Milli(trade_time), 1, toUnixTimestamp64Milli(trade_time)) OVER w AS prev_tt, \
         row_number() OVER w AS rn \
         FROM `{db}`.`trades` WHERE {w} AND {seq} \
         WINDOW w AS (PARTITION BY exchange, market_type, symbol ORDER BY id ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)) \
         WHERE rn > 1 AND id != prev + 1 ORDER BY exchange, market_type, symbol, id",
        w = range("timestamp", f),
        seq = sequential_predicate(f),
    )
}

/// Stored quality events per market and kind: `data_type, exchange, market_type, symbol, kind,
/// count`.
pub fn events_sql(db: &str, f: &ReportFilter) -> String {
    let mut w = range("event_time", f);
    if let Some(t) = f.data_type {
        w.push_str(&format!(" AND data_type = {}", quote(t.as_str())));
    }
    format!(
        "SELECT data_type, exchange, market_type, symbol, kind, count() FROM `{db}`.`{QUALITY_EVENTS_TABLE}` \
         WHERE {w} GROUP BY data_type, exchange, market_type, symbol, kind \
         ORDER BY data_type, exchange, market_type, symbol, kind"
    )
}

/// One hole in a sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    /// First id missing.
    pub first_missing: u64,
    /// Last id missing.
    pub last_missing: u64,
    /// Ids missing.
    pub missing: u64,
    /// Exchange time between the rows around the hole, ms.
    pub span_ms: i64,
}

/// Two quantiles of a latency, ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: i64,
    /// 99th percentile.
    pub p99: i64,
}

/// The report of one market of one type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MarketReport {
    /// Data type.
    pub data_type: String,
    /// Exchange.
    pub exchange: String,
    /// Market type.
    pub market_type: String,
    /// Symbol.
    pub symbol: String,
    /// Rows stored in the range.
    pub rows: u64,
    /// First `timestamp`, UTC ms.
    pub first_ms: i64,
    /// Last `timestamp`, UTC ms.
    pub last_ms: i64,
    /// Longest time between two consecutive rows, ms.
    pub longest_silence_ms: i64,
    /// Whether ids are checked for continuity (sequential trade ids).
    pub sequential: bool,
    /// Gaps in the ids (0 when not sequential).
    pub gaps: u64,
    /// Ids missing in total.
    pub missing: u64,
    /// Ids stored more than once (extra copies).
    pub duplicates: u64,
    /// Every gap (sequential markets).
    pub gap_list: Vec<Gap>,
    /// Exchange → collector latency (`timestamp − trade_time` / `− liquidation_time`).
    pub exchange_latency_ms: Option<Latency>,
    /// Collector → stored latency (`created_at − timestamp`).
    pub ingest_latency_ms: Latency,
    /// Stored quality events in the range, by kind.
    pub events: BTreeMap<String, u64>,
}

fn parse_err(line: &str) -> super::QualityError {
    super::QualityError::Parse(line.to_string())
}

fn fields<const N: usize>(line: &str) -> Result<[&str; N], super::QualityError> {
    let v: Vec<&str> = line.split('\t').collect();
    <[&str; N]>::try_from(v).map_err(|_| parse_err(line))
}

fn int<T: std::str::FromStr>(s: &str, line: &str) -> Result<T, super::QualityError> {
    s.parse().map_err(|_| parse_err(line))
}

/// Parses [`summary_sql`]'s answer.
pub fn parse_summary(
    t: DataType,
    text: &str,
    f: &ReportFilter,
) -> Result<Vec<MarketReport>, super::QualityError> {
    let settings = super::QualitySettings {
        sequential_ids: f.sequential_ids.clone(),
        ..Default::default()
    };
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let [ex, mt, sym, rows, first, last, silence, e50, e99, i50, i99] = fields::<11>(line)?;
        out.push(MarketReport {
            data_type: t.as_str().to_string(),
            exchange: ex.to_string(),
            market_type: mt.to_string(),
            symbol: sym.to_string(),
            rows: int(rows, line)?,
            first_ms: int(first, line)?,
            last_ms: int(last, line)?,
            longest_silence_ms: int(silence, line)?,
            sequential: t == DataType::Trade && settings.is_sequential(ex, mt),
            gaps: 0,
            missing: 0,
            duplicates: 0,
            gap_list: Vec::new(),
            exchange_latency_ms: match exchange_latency(t) {
                Some(_) => Some(Latency {
                    p50: int(e50, line)?,
                    p99: int(e99, line)?,
                }),
                None => None,
            },
            ingest_latency_ms: Latency {
                p50: int(i50, line)?,
                p99: int(i99, line)?,
            },
            events: BTreeMap::new(),
        });
    }
    Ok(out)
}

/// Adds [`sequence_sql`]'s answer to the trade markets of `reports`.
pub fn apply_sequence(reports: &mut [MarketReport], text: &str) -> Result<(), super::QualityError> {
    for line in text.lines().filter(|l| !l.is_empty()) {
        let [ex, mt, sym, prev, id, span] = fields::<6>(line)?;
        let prev: u64 = int(prev, line)?;
        let id: u64 = int(id, line)?;
        let span: i64 = int(span, line)?;
        let Some(r) = reports.iter_mut().find(|r| {
            r.data_type == DataType::Trade.as_str()
                && r.exchange == ex
                && r.market_type == mt
                && r.symbol == sym
        }) else {
            continue;
        };
        if id == prev {
            r.duplicates += 1;
        } else if id > prev + 1 {
            r.gaps += 1;
            r.missing += id - prev - 1;
            r.gap_list.push(Gap {
                first_missing: prev + 1,
                last_missing: id - 1,
                missing: id - prev - 1,
                span_ms: span,
            });
        }
    }
    Ok(())
}

/// Adds [`events_sql`]'s answer to `reports`.
pub fn apply_events(reports: &mut [MarketReport], text: &str) -> Result<(), super::QualityError> {
    for line in text.lines().filter(|l| !l.is_empty()) {
        let [dt, ex, mt, sym, kind, n] = fields::<6>(line)?;
        let n: u64 = int(n, line)?;
        if let Some(r) = reports.iter_mut().find(|r| {
            r.data_type == dt && r.exchange == ex && r.market_type == mt && r.symbol == sym
        }) {
            *r.events.entry(kind.to_string()).or_default() += n;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter() -> ReportFilter {
        ReportFilter {
            from_ms: 0,
            to_ms: 10,
            data_type: None,
            symbol: Some("BTC-'X".into()),
            sequential_ids: vec!["binance".into(), "okx/spot".into()],
        }
    }

    #[test]
    fn sql_quotes_the_symbol_and_lists_sequential_markets() {
        let s = sequence_sql("hot", &filter());
        assert!(s.contains("symbol = 'BTC-\\'X'"), "{s}");
        assert!(
            s.contains("(exchange = 'binance' OR (exchange = 'okx' AND market_type = 'spot'))"),
            "{s}"
        );
    }

    #[test]
    fn sequence_rows_become_gaps_and_duplicates() {
        let text = format!(
            "{0}\t{0}s\tBTC\t1\t1\t0\n{0}\t{0}s\tBTC\t3\t7\t40\n{0}\t{0}s\tBTC\t9\t9\t0\n",
            "binance"
        );
        let f = filter();
        let mut r = parse_summary(
            DataType::Trade,
            "binance\tbinances\tBTC\t10\t1\t2\t3\t4\t5\t6\t7\n",
            &f,
        )
        .unwrap();
        apply_sequence(&mut r, &text).unwrap();
        assert_eq!((r[0].gaps, r[0].missing, r[0].duplicates), (1, 3, 2));
        assert_eq!(
            r[0].gap_list,
            vec![Gap {
                first_missing: 4,
                last_missing: 6,
                missing: 3,
                span_ms: 40
            }]
        );
        assert_eq!(r[0].exchange_latency_ms, Some(Latency { p50: 4, p99: 5 }));
        assert!(r[0].sequential);
    }
}
