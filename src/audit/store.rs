//! The stored side's IO: per-cell fingerprints, keys of differing cells, dead letters.
//!
//! Reads only, through `Sink::query_bytes` (TabSeparated; strings travel as `hex()` so no
//! escaping can bite). Every query is restricted to the markets the stream side saw and, per
//! market, to the `timestamp` span of its in-range rows (`transform` over the market list),
//! so the stored side covers exactly what the stream side can explain.

use std::collections::{BTreeMap, HashMap};

use crate::model::DataType;
use crate::sink::Sink;

use super::AuditError;
use super::compare::{StoredCell, StoredKey};
use super::key::{self, MARKET_SQL, sql_str};

/// Markets per fingerprint query (keeps the SQL text small).
const MARKETS_PER_QUERY: usize = 500;
/// Cells per key query.
const CELLS_PER_QUERY: usize = 500;

/// The `WITH … WHERE …` restricting a table to `spans` (market → inclusive ms span).
pub fn span_filter(spans: &[(&String, &(i64, i64))]) -> String {
    let names: Vec<String> = spans.iter().map(|(m, _)| sql_str(m)).collect();
    let los: Vec<String> = spans.iter().map(|(_, s)| s.0.to_string()).collect();
    let his: Vec<String> = spans.iter().map(|(_, s)| s.1.to_string()).collect();
    let gmin = spans.iter().map(|(_, s)| s.0).min().unwrap_or(0);
    let gmax = spans.iter().map(|(_, s)| s.1).max().unwrap_or(0);
    let names = names.join(",");
    format!(
        "timestamp >= fromUnixTimestamp64Milli(toInt64({gmin})) \
         AND timestamp <= fromUnixTimestamp64Milli(toInt64({gmax})) \
         AND toUnixTimestamp64Milli(timestamp) >= transform({MARKET_SQL}, [{names}], CAST([{los}] AS Array(Int64)), toInt64(9223372036854775807)) \
         AND toUnixTimestamp64Milli(timestamp) <= transform({MARKET_SQL}, [{names}], CAST([{his}] AS Array(Int64)), toInt64(-9223372036854775807))",
        los = los.join(","),
        his = his.join(","),
    )
}

/// The fingerprint query of one group of markets.
pub fn cells_sql(
    db: &str,
    t: DataType,
    spans: &[(&String, &(i64, i64))],
    bucket_ms: i64,
) -> String {
    format!(
        "SELECT hex({MARKET_SQL}) AS m, intDiv(toUnixTimestamp64Milli(timestamp), {bucket_ms}) AS b, \
         count() AS n, sum(sipHash64({k})) AS h FROM `{db}`.`{table}` WHERE {w} GROUP BY m, b",
        k = key::key_sql(t),
        table = t.table(),
        w = span_filter(spans),
    )
}

/// The key query of one group of differing cells.
pub fn keys_sql(
    db: &str,
    t: DataType,
    spans: &[(&String, &(i64, i64))],
    cells: &[(String, i64)],
    bucket_ms: i64,
) -> String {
    let list: Vec<String> = cells
        .iter()
        .map(|(m, b)| format!("({}, {b})", sql_str(m)))
        .collect();
    format!(
        "SELECT hex({MARKET_SQL}) AS m, intDiv(toUnixTimestamp64Milli(timestamp), {bucket_ms}) AS b, \
         hex({k}) AS k, count() AS n FROM `{db}`.`{table}` WHERE {w} \
         AND ({MARKET_SQL}, intDiv(toUnixTimestamp64Milli(timestamp), {bucket_ms})) IN ({list}) \
         GROUP BY m, b, k",
        k = key::key_sql(t),
        table = t.table(),
        w = span_filter(spans),
        list = list.join(","),
    )
}

fn unhex(s: &str) -> Result<String, AuditError> {
    let bad = || AuditError::ClickHouse(format!("bad hex in answer: {s:?}"));
    let digit = |c: u8| char::from(c).to_digit(16).ok_or_else(bad);
    if !s.len().is_multiple_of(2) {
        return Err(bad());
    }
    let mut out = Vec::with_capacity(s.len() / 2);
    for pair in s.as_bytes().chunks_exact(2) {
        if let [hi, lo] = pair {
            // Two hex digits make one byte: the value is below 256.
            out.push(u8::try_from(digit(*hi)? * 16 + digit(*lo)?).map_err(|_| bad())?);
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn field<T: std::str::FromStr>(f: Option<&str>, line: &str) -> Result<T, AuditError> {
    f.and_then(|x| x.parse().ok())
        .ok_or_else(|| AuditError::ClickHouse(format!("unexpected answer line {line:?}")))
}

async fn tsv(sink: &Sink, sql: &str) -> Result<String, AuditError> {
    let body = sink
        .query_bytes(sql, "TabSeparated")
        .await
        .map_err(|e| AuditError::ClickHouse(e.to_string()))?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Fingerprints of every stored cell inside `spans`.
pub async fn cells(
    sink: &Sink,
    t: DataType,
    spans: &BTreeMap<String, (i64, i64)>,
    bucket_ms: i64,
) -> Result<Vec<StoredCell>, AuditError> {
    let all: Vec<(&String, &(i64, i64))> = spans.iter().collect();
    let mut out = Vec::new();
    for group in all.chunks(MARKETS_PER_QUERY) {
        let text = tsv(sink, &cells_sql(sink.database(), t, group, bucket_ms)).await?;
        for line in text.lines().filter(|l| !l.is_empty()) {
            let mut f = line.split('\t');
            out.push(StoredCell {
                market: unhex(f.next().unwrap_or(""))?,
                bucket: field(f.next(), line)?,
                count: field(f.next(), line)?,
                sum: field(f.next(), line)?,
            });
        }
    }
    Ok(out)
}

/// Stored key counts of the `differing` cells.
pub async fn keys(
    sink: &Sink,
    t: DataType,
    spans: &BTreeMap<String, (i64, i64)>,
    differing: &[(String, i64)],
    bucket_ms: i64,
) -> Result<Vec<StoredKey>, AuditError> {
    let mut out = Vec::new();
    for group in differing.chunks(CELLS_PER_QUERY) {
        let markets: std::collections::BTreeSet<&String> = group.iter().map(|(m, _)| m).collect();
        let sub: Vec<(&String, &(i64, i64))> =
            spans.iter().filter(|(m, _)| markets.contains(m)).collect();
        if sub.is_empty() {
            continue;
        }
        let text = tsv(sink, &keys_sql(sink.database(), t, &sub, group, bucket_ms)).await?;
        for line in text.lines().filter(|l| !l.is_empty()) {
            let mut f = line.split('\t');
            out.push(StoredKey {
                market: unhex(f.next().unwrap_or(""))?,
                bucket: field(f.next(), line)?,
                key: unhex(f.next().unwrap_or(""))?,
                count: field(f.next(), line)?,
            });
        }
    }
    Ok(out)
}

/// Dead letters of `t` per stream sequence, for sequences from `min_seq` on.
pub async fn dead_letters(
    sink: &Sink,
    t: DataType,
    min_seq: u64,
) -> Result<HashMap<u64, u32>, AuditError> {
    let sql = format!(
        "SELECT stream_seq, count() FROM `{db}`.`{table}` WHERE data_type = {dt} \
         AND stream_seq >= {min_seq} AND stream_seq > 0 GROUP BY stream_seq",
        db = sink.database(),
        table = crate::schema::DEAD_LETTERS_TABLE,
        dt = sql_str(t.as_str()),
    );
    let text = tsv(sink, &sql).await?;
    let mut out = HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let mut f = line.split('\t');
        let seq: u64 = field(f.next(), line)?;
        let n: u32 = field(f.next(), line)?;
        out.insert(seq, n);
    }
    Ok(out)
}

/// Dead letters of rows of `t` that ClickHouse refused (no stream sequence), counted per
/// payload (the writer stores the decoded row's `Debug` text there).
pub async fn refused(sink: &Sink, t: DataType) -> Result<HashMap<String, u32>, AuditError> {
    let sql = format!(
        "SELECT hex(payload), count() FROM `{db}`.`{table}` WHERE data_type = {dt} \
         AND stream_seq = 0 GROUP BY payload",
        db = sink.database(),
        table = crate::schema::DEAD_LETTERS_TABLE,
        dt = sql_str(t.as_str()),
    );
    let text = tsv(sink, &sql).await?;
    let mut out = HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let mut f = line.split('\t');
        let payload = unhex(f.next().unwrap_or(""))?;
        let n: u32 = field(f.next(), line)?;
        out.insert(payload, n);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_errors() {
        assert_eq!(unhex("61006200").unwrap(), "a\0b\0");
        assert!(unhex("6").is_err());
        assert!(unhex("zz").is_err());
    }

    #[test]
    fn fingerprint_sql_names_table_key_and_spans() {
        let m = "binance\0spot\0BTC-USDT".to_string();
        let span = (10, 20);
        let sql = cells_sql("hot", DataType::Trade, &[(&m, &span)], 60_000);
        assert!(sql.contains("FROM `hot`.`trades`"), "{sql}");
        assert!(sql.contains("sum(sipHash64(trade_id))"), "{sql}");
        assert!(sql.contains("['binance\\0spot\\0BTC-USDT']"), "{sql}");
        assert!(sql.contains("CAST([10] AS Array(Int64))"), "{sql}");
        assert!(sql.contains("toInt64(20)"), "{sql}");
    }
}
