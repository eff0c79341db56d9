//! Pure planning: chunk grid, filters → SQL, fingerprints, dedup tokens, repair decisions.
//!
//! Consumes times, counts and hashes; emits chunk spans, SQL fragments, tokens and
//! [`Step`]s. Never does IO, so every rule the executor relies on is unit- and
//! property-tested here.

use std::collections::HashMap;
use std::fmt;

use crate::schema::quote;

/// A half-open time range `[start_ms, end_ms)` in UTC milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    /// Inclusive start.
    pub start_ms: i64,
    /// Exclusive end.
    pub end_ms: i64,
}

impl Span {
    /// `[start_ms, end_ms)`.
    pub fn new(start_ms: i64, end_ms: i64) -> Span {
        Span { start_ms, end_ms }
    }

    /// Width in milliseconds (0 for an empty or inverted span).
    pub fn width(&self) -> i64 {
        self.end_ms.saturating_sub(self.start_ms).max(0)
    }

    /// The two halves, split at the midpoint; `None` when the span is 1 ms or less wide.
    pub fn halves(&self) -> Option<(Span, Span)> {
        if self.width() <= 1 {
            return None;
        }
        let mid = self.start_ms + self.width() / 2;
        Some((Span::new(self.start_ms, mid), Span::new(mid, self.end_ms)))
    }

    /// The SQL predicate selecting this span on the time column `column` (`timestamp` for
    /// the market data, `event_time` for the quality events).
    pub fn where_sql(&self, column: &str) -> String {
        format!(
            "{column} >= fromUnixTimestamp64Milli(toInt64({}), 'UTC') AND {column} < fromUnixTimestamp64Milli(toInt64({}), 'UTC')",
            self.start_ms, self.end_ms
        )
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", fmt_ms(self.start_ms), fmt_ms(self.end_ms))
    }
}

/// `2025-01-02T03:04:05.678Z` for UTC milliseconds (or the number when out of range).
pub fn fmt_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// `t` rounded down to a multiple of `step` (floor, also for negative `t`).
pub fn align_down(t: i64, step: i64) -> i64 {
    if step <= 0 {
        return t;
    }
    t.div_euclid(step) * step
}

/// The chunks that cover `[align_down(from, chunk), to)`: cells of the fixed grid of width
/// `chunk_ms` (aligned to the Unix epoch, hence to the hour for 1-hour chunks), the last one
/// cut at `to`. The grid never moves, so a chunk means the same rows in every run; only the
/// newest chunk may be partial, and it grows into its full cell in a later run (its rows are
/// then verified, never blindly re-copied).
pub fn plan_chunks(from_ms: i64, to_ms: i64, chunk_ms: i64) -> Vec<Span> {
    let chunk_ms = chunk_ms.max(1);
    let mut out = Vec::new();
    let mut start = align_down(from_ms, chunk_ms);
    while start < to_ms {
        let end = start.saturating_add(chunk_ms).min(to_ms);
        out.push(Span::new(start, end));
        start = end;
    }
    out
}

/// [`plan_chunks`], except that the first chunk starts at `from_ms` itself (the rest of its
/// grid cell): the chunks of `[from_ms, to_ms)` exactly. Used where rows before `from_ms` must
/// not be compared (hot's TTL may already have deleted some of them).
pub fn plan_chunks_from(from_ms: i64, to_ms: i64, chunk_ms: i64) -> Vec<Span> {
    let mut out = plan_chunks(from_ms, to_ms, chunk_ms);
    if let Some(first) = out.first_mut() {
        first.start_ms = first.start_ms.max(from_ms);
    }
    out.retain(|s| s.start_ms < s.end_ms);
    out
}

/// Where a cycle starts comparing a table that has a watermark: the recheck chunks before the
/// watermark (`recheck_from`, grid-aligned) or, when hot holds older rows, the oldest of them
/// that the hot TTL cannot delete during the cycle (`max(hot_min, ttl_edge)`, not aligned):
/// late rows anywhere in hot's retention are then found before the TTL deletes them.
pub fn compare_from(recheck_from: i64, hot_min: Option<i64>, ttl_edge: i64) -> i64 {
    match hot_min.map(|m| m.max(ttl_edge)) {
        Some(f) if f < recheck_from => f,
        _ => recheck_from,
    }
}

/// The Python service's `MIGRATION_SYMBOL_PREFIX`, `MIGRATION_EXCHANGE` and `MIGRATION_MARKET_TYPE`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    /// Only symbols starting with this (the Python service's `symbol LIKE 'p%'`).
    pub symbol_prefix: Option<String>,
    /// Only this exchange.
    pub exchange: Option<String>,
    /// Only this market type.
    pub market_type: Option<String>,
}

impl Filters {
    /// `""` or ` AND …` conditions to append to a WHERE clause.
    pub fn where_sql(&self) -> String {
        let mut s = String::new();
        if let Some(p) = &self.symbol_prefix {
            // startsWith instead of the Python service's LIKE: `_` and `%` in a prefix are literal.
            s.push_str(&format!(" AND startsWith(symbol, {})", quote(p)));
        }
        if let Some(e) = &self.exchange {
            s.push_str(&format!(" AND exchange = {}", quote(e)));
        }
        if let Some(m) = &self.market_type {
            s.push_str(&format!(" AND market_type = {}", quote(m)));
        }
        s
    }

    /// A canonical text of the filters: the key of the watermark and part of every token.
    /// Empty when unfiltered.
    pub fn canonical(&self) -> String {
        let mut parts = Vec::new();
        let mut add = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                parts.push(format!("{k}={v}"));
            }
        };
        add("symbol_prefix", &self.symbol_prefix);
        add("exchange", &self.exchange);
        add("market_type", &self.market_type);
        parts.join(";")
    }

    /// Whether any filter is set.
    pub fn is_empty(&self) -> bool {
        self.symbol_prefix.is_none() && self.exchange.is_none() && self.market_type.is_none()
    }
}

/// FNV-1a 64: a stable, dependency-free hash for token parts (not for security).
pub fn fnv64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// An order-independent fingerprint of a set of rows: `count()` and
/// `sum(cityHash64(<all columns>))` (wrapping, so the order of summation never matters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    /// Rows.
    pub rows: u64,
    /// Wrapping sum of the row hashes.
    pub sum: u64,
}

impl Fingerprint {
    /// Parses `"<rows>\t<sum>"` (one TabSeparated row); an empty answer is the empty set.
    pub fn parse_tsv(line: &str) -> Option<Fingerprint> {
        let line = line.trim();
        if line.is_empty() {
            return Some(Fingerprint::default());
        }
        let mut it = line.split('\t');
        let rows = it.next()?.parse().ok()?;
        let sum = it.next()?.parse().ok()?;
        Some(Fingerprint { rows, sum })
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{:016x}", self.rows, self.sum)
    }
}

/// The dedup token of a plain copy of `span` of `table`: a function of the table, the span,
/// the filters and the hot fingerprint. A retry of the same copy (same rows in hot) gets the
/// same token and is dropped by ClickHouse; different hot rows get a different token, and the
/// executor copies a span only while cold holds none of its rows, so a new token can never
/// duplicate a row.
pub fn copy_token(table: &str, span: Span, filters: &Filters, hot: Fingerprint) -> String {
    format!(
        "mpm1:{table}:{}-{}:{:016x}:{hot}",
        span.start_ms,
        span.end_ms,
        fnv64(filters.canonical().as_bytes())
    )
}

/// The dedup token of a repair of `span` that copies exactly `need` (row hash → copies).
pub fn repair_token(table: &str, span: Span, filters: &Filters, need: &[(u64, u64)]) -> String {
    let mut text = Vec::with_capacity(need.len() * 16);
    for (h, n) in need {
        text.extend_from_slice(&h.to_le_bytes());
        text.extend_from_slice(&n.to_le_bytes());
    }
    format!(
        "mpm1:{table}:{}-{}:{:016x}:repair:{:016x}",
        span.start_ms,
        span.end_ms,
        fnv64(filters.canonical().as_bytes()),
        fnv64(&text)
    )
}

/// What to do with one span after comparing its hot and cold fingerprints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Cold equals hot: nothing to do.
    Equal,
    /// Cold holds none of the span's rows and hot at most the batch limit: copy it whole.
    Copy,
    /// Too many rows to copy or diff at once: handle the two halves.
    Bisect,
    /// Compare the row hashes of both sides and copy exactly the missing rows.
    Diff,
}

/// The repair decision for one span (see [`Step`]). `leaf_rows` bounds the size of a
/// row-hash diff; a 1 ms span is diffed whatever its size (it cannot be split).
pub fn decide(
    hot: Fingerprint,
    cold: Fingerprint,
    span: Span,
    batch_limit: u64,
    leaf_rows: u64,
) -> Step {
    if hot == cold {
        return Step::Equal;
    }
    if cold.rows == 0 && hot.rows <= batch_limit {
        return Step::Copy;
    }
    if span.width() <= 1 {
        return Step::Diff;
    }
    if cold.rows > 0 && hot.rows.max(cold.rows) <= leaf_rows {
        return Step::Diff;
    }
    Step::Bisect
}

/// The multiset difference of two `(row hash, count)` lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HashDiff {
    /// Hashes cold lacks, with how many more copies hot has; sorted by hash.
    pub need: Vec<(u64, u64)>,
    /// Rows cold has that hot does not (cannot be repaired by copying: reported).
    pub excess: u64,
}

impl HashDiff {
    /// Rows to copy.
    pub fn missing(&self) -> u64 {
        self.need.iter().map(|(_, n)| n).sum()
    }
}

/// Computes what cold lacks (and has too much of) from both sides' hash counts.
pub fn hash_diff(hot: &[(u64, u64)], cold: &[(u64, u64)]) -> HashDiff {
    let mut cold_counts: HashMap<u64, u64> = HashMap::with_capacity(cold.len());
    for (h, n) in cold {
        *cold_counts.entry(*h).or_default() += n;
    }
    let mut hot_counts: HashMap<u64, u64> = HashMap::with_capacity(hot.len());
    for (h, n) in hot {
        *hot_counts.entry(*h).or_default() += n;
    }
    let mut need = Vec::new();
    for (h, n) in &hot_counts {
        let c = cold_counts.get(h).copied().unwrap_or(0);
        if *n > c {
            need.push((*h, n - c));
        }
    }
    need.sort_unstable();
    let excess = cold_counts
        .iter()
        .map(|(h, c)| c.saturating_sub(hot_counts.get(h).copied().unwrap_or(0)))
        .sum();
    HashDiff { need, excess }
}

/// Parses TabSeparated `(hash, count)` rows.
pub fn parse_hash_counts(tsv: &str) -> Option<Vec<(u64, u64)>> {
    tsv.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (h, n) = l.split_once('\t')?;
            Some((h.parse().ok()?, n.parse().ok()?))
        })
        .collect()
}

/// Parses TabSeparated `(chunk start ms, rows, sum)` rows into a map.
pub fn parse_chunk_fingerprints(tsv: &str) -> Option<HashMap<i64, Fingerprint>> {
    tsv.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, rest) = l.split_once('\t')?;
            Some((k.parse().ok()?, Fingerprint::parse_tsv(rest)?))
        })
        .collect()
}

/// How far the watermark may advance: the end of the longest prefix of `chunks` (in order)
/// that is verified (`ok`) and settled (ends at or before `settled_ms`), or `current` when
/// none is. Never moves backwards.
pub fn advance_watermark(
    current: Option<i64>,
    chunks: &[(Span, bool)],
    settled_ms: i64,
) -> Option<i64> {
    let mut wm = current;
    for (span, ok) in chunks {
        if !ok || span.end_ms > settled_ms {
            break;
        }
        if wm.is_none_or(|w| span.end_ms > w) {
            wm = Some(span.end_ms);
        }
    }
    wm
}

/// The end of the verified prefix of `chunks` (`from` when the first chunk failed).
pub fn verified_until(from: i64, chunks: &[(Span, bool)]) -> i64 {
    let mut until = from;
    for (span, ok) in chunks {
        if !ok {
            break;
        }
        until = span.end_ms;
    }
    until
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const H: i64 = 3_600_000;

    fn fp(rows: u64, sum: u64) -> Fingerprint {
        Fingerprint { rows, sum }
    }

    #[test]
    fn chunks_are_aligned_to_the_hour_and_the_last_is_cut() {
        let from = 10 * H + 123;
        let to = 12 * H + 5;
        assert_eq!(
            plan_chunks(from, to, H),
            vec![
                Span::new(10 * H, 11 * H),
                Span::new(11 * H, 12 * H),
                Span::new(12 * H, 12 * H + 5)
            ]
        );
        assert!(plan_chunks(5 * H, 5 * H, H).is_empty());
        assert!(plan_chunks(6 * H, 5 * H, H).is_empty());
    }

    proptest! {
        #[test]
        fn chunks_cover_the_range_exactly_without_overlap(
            from in -10_000_000_000i64..10_000_000_000,
            len in 0i64..500_000_000,
            chunk in 1i64..50_000_000,
        ) {
            let to = from + len;
            let chunks = plan_chunks(from, to, chunk);
            let start = align_down(from, chunk);
            if start >= to {
                prop_assert!(chunks.is_empty());
            } else {
                prop_assert_eq!(chunks.first().map(|c| c.start_ms), Some(start));
                prop_assert_eq!(chunks.last().map(|c| c.end_ms), Some(to));
            }
            for w in chunks.windows(2) {
                prop_assert_eq!(w[0].end_ms, w[1].start_ms);
            }
            for c in &chunks {
                prop_assert!(c.start_ms < c.end_ms);
                // Each chunk lies in one grid cell and starts on the grid.
                prop_assert_eq!(c.start_ms.rem_euclid(chunk), 0);
                prop_assert!(c.end_ms - c.start_ms <= chunk);
            }
        }

        #[test]
        fn halves_partition_the_span(start in -1_000_000i64..1_000_000, w in 0i64..1_000_000) {
            let s = Span::new(start, start + w);
            match s.halves() {
                None => prop_assert!(w <= 1),
                Some((a, b)) => {
                    prop_assert_eq!(a.start_ms, s.start_ms);
                    prop_assert_eq!(a.end_ms, b.start_ms);
                    prop_assert_eq!(b.end_ms, s.end_ms);
                    prop_assert!(a.width() > 0 && b.width() > 0);
                }
            }
        }

        #[test]
        fn diff_then_copy_makes_the_multisets_equal(
            hot in proptest::collection::vec((0u64..20, 1u64..4), 0..30),
            keep in proptest::collection::vec(0u64..4, 30),
        ) {
            // cold = a sub-multiset of hot
            let cold: Vec<(u64, u64)> = hot.iter().zip(&keep).map(|((h, n), k)| (*h, (*k).min(*n))).collect();
            let d = hash_diff(&hot, &cold);
            prop_assert_eq!(d.excess, 0);
            let total_hot: u64 = hot.iter().map(|x| x.1).sum();
            let total_cold: u64 = cold.iter().map(|x| x.1).sum();
            prop_assert_eq!(d.missing(), total_hot - total_cold);
        }
    }

    #[test]
    fn chunks_from_start_exactly_at_from_and_compare_from_covers_hot_retention() {
        assert_eq!(
            plan_chunks_from(10 * H + 123, 12 * H + 5, H),
            vec![
                Span::new(10 * H + 123, 11 * H),
                Span::new(11 * H, 12 * H),
                Span::new(12 * H, 12 * H + 5)
            ]
        );
        assert_eq!(
            plan_chunks_from(10 * H, 11 * H, H),
            plan_chunks(10 * H, 11 * H, H)
        );
        assert!(plan_chunks_from(11 * H, 11 * H, H).is_empty());
        // recheck from 60 h; hot holds rows from 10 h; the TTL edge is at 20 h + 5 min.
        let edge = 20 * H + 300_000;
        assert_eq!(compare_from(60 * H, Some(10 * H), edge), edge);
        assert_eq!(compare_from(60 * H, Some(30 * H), edge), 30 * H);
        assert_eq!(compare_from(60 * H, None, edge), 60 * H);
        // A watermark far behind (the migrator was down): the recheck range is wider already.
        assert_eq!(compare_from(15 * H, Some(10 * H), edge), 15 * H);
    }

    #[test]
    fn span_sql_is_on_the_given_time_column() {
        let s = Span::new(1, 2);
        assert_eq!(
            s.where_sql("timestamp"),
            "timestamp >= fromUnixTimestamp64Milli(toInt64(1), 'UTC') AND timestamp < fromUnixTimestamp64Milli(toInt64(2), 'UTC')"
        );
        assert_eq!(
            s.where_sql("event_time"),
            "event_time >= fromUnixTimestamp64Milli(toInt64(1), 'UTC') AND event_time < fromUnixTimestamp64Milli(toInt64(2), 'UTC')"
        );
    }

    #[test]
    fn filters_are_escaped_and_canonical() {
        let f = Filters {
            symbol_prefix: Some("BTC'; DROP TABLE x; --\\".into()),
            exchange: Some("binance_spot".into()),
            market_type: None,
        };
        assert_eq!(
            f.where_sql(),
            " AND startsWith(symbol, 'BTC\\'; DROP TABLE x; --\\\\') AND exchange = 'binance_spot'"
        );
        assert_eq!(
            f.canonical(),
            "symbol_prefix=BTC'; DROP TABLE x; --\\;exchange=binance_spot"
        );
        assert_eq!(Filters::default().where_sql(), "");
        assert!(Filters::default().is_empty());
        assert_eq!(quote("a\nb\t\0"), "'a\\nb\\t\\0'");
    }

    #[test]
    fn tokens_are_deterministic_and_distinguish_what_matters() {
        let f = Filters::default();
        let s = Span::new(0, H);
        let a = copy_token("trades", s, &f, fp(10, 99));
        assert_eq!(a, copy_token("trades", s, &f, fp(10, 99)));
        assert_eq!(
            a,
            "mpm1:trades:0-3600000:cbf29ce484222325:10:0000000000000063"
        );
        assert_ne!(a, copy_token("trades", s, &f, fp(11, 99)));
        assert_ne!(a, copy_token("orderbooks", s, &f, fp(10, 99)));
        assert_ne!(a, copy_token("trades", Span::new(0, H - 1), &f, fp(10, 99)));
        let g = Filters {
            exchange: Some("okx".into()),
            ..Filters::default()
        };
        assert_ne!(a, copy_token("trades", s, &g, fp(10, 99)));
        let r = repair_token("trades", s, &f, &[(1, 2)]);
        assert_eq!(r, repair_token("trades", s, &f, &[(1, 2)]));
        assert_ne!(r, repair_token("trades", s, &f, &[(1, 1)]));
    }

    #[test]
    fn decisions() {
        let s = Span::new(0, H);
        let one_ms = Span::new(5, 6);
        // (hot, cold, span, limit, leaf) → step
        let cases = [
            (fp(0, 0), fp(0, 0), s, 100, 10, Step::Equal),
            (fp(5, 7), fp(5, 7), s, 100, 10, Step::Equal),
            (fp(50, 7), fp(0, 0), s, 100, 10, Step::Copy),
            (fp(100, 7), fp(0, 0), s, 100, 10, Step::Copy),
            (fp(101, 7), fp(0, 0), s, 100, 10, Step::Bisect),
            (fp(101, 7), fp(0, 0), one_ms, 100, 10, Step::Diff),
            (fp(8, 7), fp(7, 3), s, 100, 10, Step::Diff),
            (fp(80, 7), fp(7, 3), s, 100, 10, Step::Bisect),
            (fp(80, 7), fp(7, 3), one_ms, 100, 10, Step::Diff),
            // Same count, different content (a changed row): diff, never a blind copy.
            (fp(8, 7), fp(8, 3), s, 100, 10, Step::Diff),
            // Cold has rows hot lacks: diff reports the excess.
            (fp(0, 0), fp(3, 3), s, 100, 10, Step::Diff),
        ];
        for (hot, cold, span, limit, leaf, want) in cases {
            assert_eq!(
                decide(hot, cold, span, limit, leaf),
                want,
                "{hot} {cold} {span:?}"
            );
        }
    }

    #[test]
    fn hash_diff_counts_multiplicity_and_excess() {
        let d = hash_diff(&[(1, 2), (2, 1), (3, 1)], &[(1, 1), (3, 1), (4, 2)]);
        assert_eq!(d.need, vec![(1, 1), (2, 1)]);
        assert_eq!(d.missing(), 2);
        assert_eq!(d.excess, 2);
    }

    #[test]
    fn parsing() {
        assert_eq!(
            Fingerprint::parse_tsv("3\t18446744073709551615\n"),
            Some(fp(3, u64::MAX))
        );
        assert_eq!(Fingerprint::parse_tsv(""), Some(fp(0, 0)));
        assert_eq!(Fingerprint::parse_tsv("x\t1"), None);
        assert_eq!(
            parse_hash_counts("1\t2\n3\t4\n"),
            Some(vec![(1, 2), (3, 4)])
        );
        let m = parse_chunk_fingerprints("3600000\t2\t5\n").unwrap();
        assert_eq!(m.get(&H), Some(&fp(2, 5)));
    }

    #[test]
    fn watermark_advances_over_the_settled_verified_prefix_only() {
        let c = |i: i64| Span::new(i * H, (i + 1) * H);
        let chunks = [(c(0), true), (c(1), true), (c(2), false), (c(3), true)];
        assert_eq!(advance_watermark(None, &chunks, 10 * H), Some(2 * H));
        assert_eq!(advance_watermark(None, &chunks, H + 5), Some(H));
        assert_eq!(advance_watermark(Some(5 * H), &chunks, 10 * H), Some(5 * H));
        assert_eq!(advance_watermark(None, &[(c(0), false)], 10 * H), None);
        assert_eq!(verified_until(0, &chunks), 2 * H);
        assert_eq!(verified_until(7, &[]), 7);
    }
}
