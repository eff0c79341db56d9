//! The pure half of the audit: stream messages in, per-market expectations out; stored
//! fingerprints and keys in, differences out. No IO.
//!
//! The stream side is folded message by message into a [`StreamSide`] (one per data type,
//! mergeable, so several decode workers can each fill one). Each decoded row lands in a
//! `(market, bucket)` cell — `bucket` = `timestamp` div the bucket width — holding the count
//! and the wrapping sum of its key hashes (`key::hash`), plus `(hash, stream_seq)` per row so
//! a differing cell can be resolved key by key. Messages read only as edge context (just
//! outside the audited range) are kept apart: they explain stored rows, they are never
//! expected.
//!
//! Then [`compare_buckets`] checks the stored fingerprint of every cell; only cells that
//! differ are fetched key by key and resolved by [`resolve`].

use std::collections::{BTreeMap, HashMap};

use crate::decode;
use crate::model::DataType;

use super::key;

/// How many ids/sequences a report lists per market and kind.
pub const LISTED: usize = 10;

/// One stream-side cell: rows expected in one market and bucket.
#[derive(Debug, Clone, Default)]
pub struct Cell {
    /// Rows expected from in-range messages.
    pub count: u64,
    /// Wrapping sum of their key hashes.
    pub sum: u64,
    /// `(key hash, stream_seq)` of each of them.
    pub keys: Vec<(u64, u64)>,
    /// Rows of edge-context messages that fall in this cell.
    pub ctx_count: u64,
    /// Wrapping sum of their key hashes.
    pub ctx_sum: u64,
    /// Their key hashes.
    pub ctx_keys: Vec<u64>,
}

/// The stream side of one market.
#[derive(Debug, Clone, Default)]
pub struct MarketAcc {
    /// In-range messages of this market (rows and dead letters).
    pub messages: u64,
    /// In-range messages matched by a dead letter.
    pub dead_letters: u64,
    /// In-range rejected messages with no dead letter.
    pub missing_dead_letters: Vec<u64>,
    /// Smallest and largest `timestamp` of the in-range rows.
    pub span: Option<(i64, i64)>,
    /// Cells by bucket.
    pub cells: HashMap<i64, Cell>,
    /// Edge-context rows `(timestamp, key hash)`, folded into `cells` by [`StreamSide::seal`].
    pub context: Vec<(i64, u64)>,
}

/// One message as the audit reads it.
#[derive(Debug, Clone, Copy)]
pub struct Msg<'a> {
    /// Stream sequence.
    pub seq: u64,
    /// Subject.
    pub subject: &'a str,
    /// Body.
    pub payload: &'a [u8],
    /// Whether it is inside the audited range (else: edge context).
    pub in_range: bool,
}

/// The stream side of one data type.
#[derive(Debug, Clone)]
pub struct StreamSide {
    /// The type.
    pub data_type: DataType,
    /// Bucket width, ms.
    pub bucket_ms: i64,
    /// Markets (`key::write_market` strings).
    pub markets: HashMap<String, MarketAcc>,
    /// In-range messages read.
    pub messages: u64,
    /// Edge-context messages read.
    pub context_messages: u64,
    /// In-range messages that decode to a row today but that the service dead-lettered
    /// (decoded earlier against an earlier clock, or a row ClickHouse refused): they count as
    /// dead letters.
    pub dead_lettered_rows: u64,
    /// Dead letters beyond the first for one in-range message.
    pub duplicated_dead_letters: u64,
    /// In-range rows ClickHouse refused, matched to their dead letter (counted as dead letters).
    pub refused_rows: u64,
    /// Rejection reasons of the first in-range messages lacking a dead letter.
    pub missing_dead_letter_reasons: Vec<(u64, String)>,
    market_buf: String,
    key_buf: String,
}

impl StreamSide {
    /// An empty side.
    pub fn new(data_type: DataType, bucket_ms: i64) -> StreamSide {
        StreamSide {
            data_type,
            bucket_ms: bucket_ms.max(1),
            markets: HashMap::new(),
            messages: 0,
            context_messages: 0,
            dead_lettered_rows: 0,
            duplicated_dead_letters: 0,
            refused_rows: 0,
            missing_dead_letter_reasons: Vec::new(),
            market_buf: String::new(),
            key_buf: String::new(),
        }
    }

    /// The market's accumulator, created when new (the lookup allocates only then).
    fn market(&mut self, e: &str, t: &str, s: &str) -> Option<&mut MarketAcc> {
        key::write_market(e, t, s, &mut self.market_buf);
        if !self.markets.contains_key(self.market_buf.as_str()) {
            self.markets
                .insert(self.market_buf.clone(), MarketAcc::default());
        }
        self.markets.get_mut(self.market_buf.as_str())
    }

    /// Folds one message in: decoded with the service's decoder against `now_ms`; `dead` is
    /// the number of dead letters stored for its stream sequence; `refused` the dead letters
    /// of rows ClickHouse refused, by payload (`None` when there are none).
    pub fn observe(&mut self, m: Msg<'_>, dead: u32, refused: Option<&Refused>, now_ms: i64) {
        let dt = self.data_type;
        let outcome = decode::decode(dt, m.subject, m.payload, now_ms);
        if !m.in_range {
            self.context_messages += 1;
            if dead == 0
                && let Ok(r) = outcome
            {
                let c = r.common();
                let ts = c.timestamp_ms;
                key::write_key(&r, &mut self.key_buf);
                let h = key::hash(&self.key_buf);
                if let Some(acc) = self.market(&c.exchange, &c.market_type, &c.symbol) {
                    acc.context.push((ts, h));
                }
            }
            return;
        }
        self.messages += 1;
        if dead > 0 {
            // One outcome per message: a dead letter explains it, whatever decode says now.
            if outcome.is_ok() {
                self.dead_lettered_rows += 1;
            }
            self.duplicated_dead_letters += u64::from(dead - 1);
            let (e, t, s) = subject_market(m.subject);
            if let Some(acc) = self.market(e, t, s) {
                acc.messages += 1;
                acc.dead_letters += 1;
            }
            return;
        }
        match outcome {
            Err(rej) => {
                if self.missing_dead_letter_reasons.len() < LISTED {
                    self.missing_dead_letter_reasons.push((m.seq, rej.reason));
                }
                let (e, t, s) = subject_market(m.subject);
                if let Some(acc) = self.market(e, t, s) {
                    acc.messages += 1;
                    acc.missing_dead_letters.push(m.seq);
                }
            }
            Ok(r) => {
                if let Some(refused) = refused
                    && refused.take(&r)
                {
                    // ClickHouse refused this row and the service dead-lettered it: one
                    // outcome, a dead letter.
                    self.refused_rows += 1;
                    let c = r.common();
                    if let Some(acc) = self.market(&c.exchange, &c.market_type, &c.symbol) {
                        acc.messages += 1;
                        acc.dead_letters += 1;
                    }
                    return;
                }
                let bucket_ms = self.bucket_ms;
                let c = r.common();
                let ts = c.timestamp_ms;
                key::write_key(&r, &mut self.key_buf);
                let h = key::hash(&self.key_buf);
                let Some(acc) = self.market(&c.exchange, &c.market_type, &c.symbol) else {
                    return;
                };
                acc.messages += 1;
                acc.span = Some(match acc.span {
                    None => (ts, ts),
                    Some((lo, hi)) => (lo.min(ts), hi.max(ts)),
                });
                let cell = acc.cells.entry(ts.div_euclid(bucket_ms)).or_default();
                cell.count += 1;
                cell.sum = cell.sum.wrapping_add(h);
                cell.keys.push((h, m.seq));
            }
        }
    }

    /// Adds another worker's side of the same type.
    pub fn merge(&mut self, other: StreamSide) {
        self.messages += other.messages;
        self.context_messages += other.context_messages;
        self.dead_lettered_rows += other.dead_lettered_rows;
        self.duplicated_dead_letters += other.duplicated_dead_letters;
        self.refused_rows += other.refused_rows;
        for r in other.missing_dead_letter_reasons {
            self.missing_dead_letter_reasons.push(r);
        }
        self.missing_dead_letter_reasons.sort();
        self.missing_dead_letter_reasons.truncate(LISTED);
        for (name, o) in other.markets {
            let acc = self.markets.entry(name).or_default();
            acc.messages += o.messages;
            acc.dead_letters += o.dead_letters;
            acc.missing_dead_letters.extend(o.missing_dead_letters);
            acc.span = match (acc.span, o.span) {
                (None, x) | (x, None) => x,
                (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
            };
            for (b, c) in o.cells {
                let cell = acc.cells.entry(b).or_default();
                cell.count += c.count;
                cell.sum = cell.sum.wrapping_add(c.sum);
                cell.keys.extend(c.keys);
            }
            acc.context.extend(o.context);
        }
    }

    /// Folds the edge-context rows that fall inside their market's span into the cells (the
    /// stored side is read over exactly that span), dropping the rest.
    pub fn seal(&mut self) {
        let bucket_ms = self.bucket_ms;
        for acc in self.markets.values_mut() {
            let context = std::mem::take(&mut acc.context);
            let Some((lo, hi)) = acc.span else { continue };
            for (ts, h) in context {
                if ts < lo || ts > hi {
                    continue;
                }
                let cell = acc.cells.entry(ts.div_euclid(bucket_ms)).or_default();
                cell.ctx_count += 1;
                cell.ctx_sum = cell.ctx_sum.wrapping_add(h);
                cell.ctx_keys.push(h);
            }
            acc.missing_dead_letters.sort_unstable();
        }
    }

    /// Per-market `timestamp` spans of the in-range rows, for the stored side's query.
    pub fn spans(&self) -> BTreeMap<String, (i64, i64)> {
        self.markets
            .iter()
            .filter_map(|(m, a)| a.span.map(|s| (m.clone(), s)))
            .collect()
    }
}

/// Dead letters of rows ClickHouse refused (the writer stores them with `stream_seq = 0` and
/// the decoded row's `Debug` text as payload), shared by the decode workers. Each matches one
/// message whose decoded row prints the same.
#[derive(Debug, Default)]
pub struct Refused(std::sync::Mutex<HashMap<String, u32>>);

impl Refused {
    /// From payload → count.
    pub fn new(payloads: HashMap<String, u32>) -> Refused {
        Refused(std::sync::Mutex::new(payloads))
    }

    /// Takes one dead letter matching `r`, if any is left.
    pub fn take(&self, r: &crate::model::Record) -> bool {
        let text = format!("{r:?}");
        let Ok(mut m) = self.0.lock() else {
            return false;
        };
        match m.get_mut(&text) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }
}

/// The market of a subject `<type>.<exchange>.<market_type>.<symbol>` (for messages that
/// decode to no row); missing tokens are empty.
pub fn subject_market(subject: &str) -> (&str, &str, &str) {
    let mut it = subject.splitn(4, '.');
    let _type = it.next();
    let e = it.next().unwrap_or("");
    let t = it.next().unwrap_or("");
    let s = it.next().unwrap_or("");
    (e, t, s)
}

/// One stored cell's fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCell {
    /// Market string.
    pub market: String,
    /// Bucket.
    pub bucket: i64,
    /// Rows.
    pub count: u64,
    /// Wrapping sum of the rows' key hashes.
    pub sum: u64,
}

/// One stored key's count within a cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// Market string.
    pub market: String,
    /// Bucket.
    pub bucket: i64,
    /// Key string.
    pub key: String,
    /// Rows holding it.
    pub count: u64,
}

/// The outcome of the fingerprint pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirstPass {
    /// Cells whose stored fingerprint equals the expected one: in-range rows matched there.
    pub matched: BTreeMap<String, u64>,
    /// Cells to resolve key by key, `(market, bucket)`, sorted.
    pub differing: Vec<(String, i64)>,
}

/// Compares stored fingerprints with the stream side's cells.
pub fn compare_buckets(side: &StreamSide, stored: &[StoredCell]) -> FirstPass {
    let mut seen: HashMap<(&str, i64), (u64, u64)> = HashMap::new();
    for s in stored {
        let e = seen.entry((s.market.as_str(), s.bucket)).or_insert((0, 0));
        e.0 += s.count;
        e.1 = e.1.wrapping_add(s.sum);
    }
    let mut out = FirstPass::default();
    for (m, acc) in &side.markets {
        for (b, cell) in &acc.cells {
            let want = (
                cell.count + cell.ctx_count,
                cell.sum.wrapping_add(cell.ctx_sum),
            );
            let got = seen.remove(&(m.as_str(), *b)).unwrap_or((0, 0));
            if got == want {
                *out.matched.entry(m.clone()).or_default() += cell.count;
            } else {
                out.differing.push((m.clone(), *b));
            }
        }
    }
    // Stored cells no stream row expects: every row there is unexplained (resolved by key).
    for ((m, b), _) in seen {
        out.differing.push((m.to_string(), b));
    }
    out.differing.sort();
    out
}

/// A missing row: the stream sequence of the message whose row is not stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MissingRow {
    /// Stream sequence.
    pub seq: u64,
    /// The row's key (filled in from the stream by the caller; empty until then).
    pub key: String,
}

/// A key stored more often than the stream holds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ExtraKey {
    /// The key.
    pub key: String,
    /// Rows stored.
    pub stored: u64,
    /// Rows expected.
    pub expected: u64,
}

/// Key-level differences of one market.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MarketDiff {
    /// In-range rows matched key by key.
    pub matched: u64,
    /// Rows missing.
    pub missing: u64,
    /// Rows stored more than once (beyond the expected count).
    pub duplicated: u64,
    /// Stored rows no message read explains.
    pub unexplained: u64,
    /// The first missing rows, by stream sequence.
    pub first_missing: Vec<MissingRow>,
    /// The first duplicated keys.
    pub first_duplicated: Vec<ExtraKey>,
    /// The first unexplained keys.
    pub first_unexplained: Vec<ExtraKey>,
}

/// Stored rows per key hash of one cell: the key text and its count.
type KeyCounts<'a> = HashMap<u64, (&'a str, u64)>;

/// Resolves the differing cells key by key. `fetched` holds the stored key counts of exactly
/// those cells.
///
/// Per `(cell, key)`, with `e` in-range rows expected, `c` context rows and `s` stored: a
/// shortfall is missing (charged to the in-range rows first: a loss is never hidden behind
/// the context), a surplus is duplicated when the stream holds the key in range, ignored when
/// only context holds it (outside the range), unexplained when no message read holds it.
pub fn resolve(
    side: &StreamSide,
    differing: &[(String, i64)],
    fetched: &[StoredKey],
) -> BTreeMap<String, MarketDiff> {
    let mut stored: HashMap<(&str, i64), KeyCounts<'_>> = HashMap::new();
    for k in fetched {
        let e = stored
            .entry((k.market.as_str(), k.bucket))
            .or_default()
            .entry(key::hash(&k.key))
            .or_insert((k.key.as_str(), 0));
        e.1 += k.count;
    }
    let mut out: BTreeMap<String, MarketDiff> = BTreeMap::new();
    for (m, b) in differing {
        let diff = out.entry(m.clone()).or_default();
        let empty = Cell::default();
        let cell = side
            .markets
            .get(m)
            .and_then(|a| a.cells.get(b))
            .unwrap_or(&empty);
        // Expected per key hash: (in-range count, context count, in-range seqs).
        let mut want: HashMap<u64, (u64, u64, Vec<u64>)> = HashMap::new();
        for (h, seq) in &cell.keys {
            let w = want.entry(*h).or_default();
            w.0 += 1;
            w.2.push(*seq);
        }
        for h in &cell.ctx_keys {
            want.entry(*h).or_default().1 += 1;
        }
        let got = stored.get(&(m.as_str(), *b));
        for (h, (e, c, seqs)) in &mut want {
            let s = got.and_then(|g| g.get(h)).map_or(0, |x| x.1);
            let total = *e + *c;
            if s < total {
                let lost = (total - s).min(*e);
                diff.missing += lost;
                diff.matched += *e - lost;
                seqs.sort_unstable();
                // The later messages of a key are the ones counted missing.
                for seq in seqs.iter().rev().take(usize::try_from(lost).unwrap_or(0)) {
                    diff.first_missing.push(MissingRow {
                        seq: *seq,
                        key: String::new(),
                    });
                }
            } else {
                diff.matched += *e;
                if s > total && *e > 0 {
                    diff.duplicated += s - total;
                    let k = got.and_then(|g| g.get(h)).map_or("", |x| x.0);
                    diff.first_duplicated.push(ExtraKey {
                        key: k.to_string(),
                        stored: s,
                        expected: total,
                    });
                }
            }
        }
        if let Some(g) = got {
            for (h, (k, s)) in g {
                if !want.contains_key(h) {
                    diff.unexplained += s;
                    diff.first_unexplained.push(ExtraKey {
                        key: k.to_string(),
                        stored: *s,
                        expected: 0,
                    });
                }
            }
        }
    }
    for d in out.values_mut() {
        d.first_missing.sort_by_key(|x| x.seq);
        d.first_missing.truncate(LISTED);
        d.first_duplicated.sort_by(|a, b| a.key.cmp(&b.key));
        d.first_duplicated.truncate(LISTED);
        d.first_unexplained.sort_by(|a, b| a.key.cmp(&b.key));
        d.first_unexplained.truncate(LISTED);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_761_040_801_000;

    fn trade(id: &str, ts: i64) -> String {
        format!(
            r#"{{"exchange":"binance","market_type":"spot","symbol":"BTC-USDT","price":"1","quantity":"1","side":"buy","trade_id":"{id}","ts_ms":{ts}}}"#
        )
    }

    const SUBJ: &str = "trade.binance.spot.BTC-USDT";

    fn side(msgs: &[(u64, String, bool)], dead: &[u64]) -> StreamSide {
        let mut s = StreamSide::new(DataType::Trade, 60_000);
        for (seq, p, in_range) in msgs {
            let d = u32::from(dead.contains(seq));
            s.observe(
                Msg {
                    seq: *seq,
                    subject: SUBJ,
                    payload: p.as_bytes(),
                    in_range: *in_range,
                },
                d,
                None,
                NOW,
            );
        }
        s.seal();
        s
    }

    fn market() -> String {
        let mut m = String::new();
        key::write_market("binance", "spot", "BTC-USDT", &mut m);
        m
    }

    fn stored(keys: &[(&str, i64, u64)]) -> (Vec<StoredCell>, Vec<StoredKey>) {
        let mut cells: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
        let mut out = Vec::new();
        for (k, ts, n) in keys {
            let b = ts.div_euclid(60_000);
            let c = cells.entry(b).or_default();
            c.0 += n;
            for _ in 0..*n {
                c.1 = c.1.wrapping_add(key::hash(k));
            }
            out.push(StoredKey {
                market: market(),
                bucket: b,
                key: k.to_string(),
                count: *n,
            });
        }
        let cells = cells
            .into_iter()
            .map(|(b, (count, sum))| StoredCell {
                market: market(),
                bucket: b,
                count,
                sum,
            })
            .collect();
        (cells, out)
    }

    #[test]
    fn clean_cells_match_without_keys() {
        let t = NOW - 60_000;
        let s = side(
            &[(1, trade("a", t), true), (2, trade("b", t + 1), true)],
            &[],
        );
        let (cells, _) = stored(&[("a", t, 1), ("b", t + 1, 1)]);
        let p = compare_buckets(&s, &cells);
        assert!(p.differing.is_empty());
        assert_eq!(p.matched.get(&market()), Some(&2));
    }

    #[test]
    fn missing_duplicated_unexplained_and_context() {
        let t = (NOW - 120_000).div_euclid(60_000) * 60_000;
        let s = side(
            &[
                (1, trade("ctx", t + 2), false), // edge context: stored, never expected
                (2, trade("a", t + 1), true),
                (3, trade("b", t + 2), true),
                (4, trade("c", t + 3), true),
                (5, r#"{"bad":1}"#.to_string(), true), // rejected, dead letter stored
                (6, r#"{"bad":2}"#.to_string(), true), // rejected, no dead letter
            ],
            &[5],
        );
        assert_eq!(s.messages, 5);
        assert_eq!(s.context_messages, 1);
        let (cells, keys) = stored(&[
            ("ctx", t + 2, 1),
            ("a", t + 1, 1),
            ("c", t + 3, 3),
            ("zzz", t + 3, 1),
        ]);
        let p = compare_buckets(&s, &cells);
        assert_eq!(p.differing, vec![(market(), t / 60_000)]);
        let d = resolve(&s, &p.differing, &keys);
        let d = d.get(&market()).unwrap();
        assert_eq!(
            (d.matched, d.missing, d.duplicated, d.unexplained),
            (2, 1, 2, 1)
        );
        assert_eq!(
            d.first_missing,
            vec![MissingRow {
                seq: 3,
                key: String::new()
            }]
        );
        assert_eq!(d.first_duplicated[0].key, "c");
        assert_eq!(d.first_unexplained[0].key, "zzz");
        let acc = s.markets.get(&market()).unwrap();
        assert_eq!(acc.dead_letters, 1);
        assert_eq!(acc.missing_dead_letters, vec![6]);
    }

    #[test]
    fn context_outside_the_span_is_dropped_and_merge_adds_up() {
        let t = NOW - 600_000;
        let mut a = side(&[(1, trade("a", t), true)], &[]);
        let b = side(
            &[
                (2, trade("b", t + 1), true),
                (3, trade("late", t + 999_999), false),
            ],
            &[],
        );
        a.merge(b);
        a.seal();
        let acc = a.markets.get(&market()).unwrap();
        assert_eq!(acc.span, Some((t, t + 1)));
        let cells: u64 = acc.cells.values().map(|c| c.count + c.ctx_count).sum();
        assert_eq!(cells, 2);
    }
}
