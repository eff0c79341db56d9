//! Dedup tokens, splitting of batches the server refuses for their shape, and bad-row
//! isolation, independent of any IO.
//!
//! A batch's token ([`epoch_batch_token`] for a JetStream stream; [`batch_token`] in core mode
//! and in the previous release's journal entries) is derived from its identity (consumer,
//! stream epoch and stream-sequence range), never
//! from time or randomness, so re-sending the batch after a crash or a retry produces the same
//! token and ClickHouse drops the duplicate. A batch spanning too many partitions is split by
//! partition under the same token; a single-partition piece that is too large or holds a row
//! the server refuses is split in halves with derived tokens `<token>/0` and `<token>/1`,
//! recursively, down to single rows: see [`Splitter`] for why every split is replay-proof.

use std::ops::Range;

use super::error::{ErrorClass, SinkError};

/// The dedup token of a batch without a stream epoch:
/// `mp1:<consumer>:<first_seq>-<last_seq>:<count>` (core mode, where the writer's epoch is 0,
/// and journal entries of the previous release; JetStream batches use [`epoch_batch_token`]).
///
/// `mp1` versions the scheme. The consumer name scopes stream sequences (two consumers may
/// deliver the same sequence to different tables); `first_seq`, `last_seq` and `count` pin the
/// exact message set, so a batch re-assembled after a redelivery gets the same token only if
/// it holds the same messages. ClickHouse scopes tokens per table and partition, within the
/// table's deduplication window (`crate::schema::DEDUP_WINDOW` blocks).
pub fn batch_token(consumer: &str, first_seq: u64, last_seq: u64, count: u64) -> String {
    format!("mp1:{consumer}:{first_seq}-{last_seq}:{count}")
}

/// The dedup token of a batch of a JetStream stream:
/// `mp2:<consumer>:<epoch>:<first_seq>-<last_seq>:<count>`.
///
/// Like [`batch_token`], plus the stream's epoch (its creation time in ns): a stream that is
/// deleted and created again restarts its sequences at 1, and without the epoch its new
/// batches would get the tokens of old ones and be dropped as duplicates. Tokens already
/// journaled in the `mp1` form stay valid: a journaled batch always re-uses its stored token.
pub fn epoch_batch_token(
    consumer: &str,
    epoch: u64,
    first_seq: u64,
    last_seq: u64,
    count: u64,
) -> String {
    format!("mp2:{consumer}:{epoch}:{first_seq}-{last_seq}:{count}")
}

/// The token for the dead letters of the batch tokened `token` (decode-time rejections and
/// rows ClickHouse refused, in one insert): `<token>/dl`. Tokens are scoped per table, so the
/// suffix is not needed for correctness today; it keeps the dead-letter insert recognisable in
/// server logs and distinct should another insert into `dead_letters` ever use the batch
/// token.
pub fn dead_letter_token(token: &str) -> String {
    format!("{token}/dl")
}

/// The token of half `half` (0 or 1) of the sub-batch tokened `token`.
pub fn child_token(token: &str, half: u8) -> String {
    format!("{token}/{half}")
}

/// Splits a range of two or more rows into its halves with their tokens; `None` for a single
/// row (or none), which cannot be split further.
pub fn split(range: Range<usize>, token: &str) -> Option<[(Range<usize>, String); 2]> {
    let len = range.end.checked_sub(range.start)?;
    if len < 2 {
        return None;
    }
    let mid = range.start + len / 2;
    Some([
        (range.start..mid, child_token(token, 0)),
        (mid..range.end, child_token(token, 1)),
    ])
}

/// Most partitions one INSERT of ours spans: ClickHouse's default
/// `max_partitions_per_insert_block` (a block beyond it fails with `Code: 252`).
///
/// Batches are split before sending (see [`Splitter::new`]) so that the common case never
/// pays a failed INSERT; a server configured lower is handled by the reactive split. It also
/// bounds what one piece adds to a table's dedup window (see [`super::max_blocks_per_batch`]).
pub const MAX_PARTITIONS_PER_INSERT: usize = 100;

/// A row ClickHouse refused even on its own.
#[derive(Debug)]
pub struct RejectedRow {
    /// Position of the row in the slice given to the isolating insert.
    pub index: usize,
    /// The ClickHouse error for that single row (a data error; see [`SinkError::code`]).
    pub error: SinkError,
}

/// The result of an isolating insert: every row either landed or is in `rejected`.
#[derive(Debug, Default)]
pub struct Isolation {
    /// Rows inserted (including rows ClickHouse deduplicated as already present).
    pub inserted_rows: u64,
    /// INSERT statements that ended successfully (1 when the batch was clean and spanned at
    /// most [`MAX_PARTITIONS_PER_INSERT`] partitions).
    pub inserts: u64,
    /// Splits made: by partition before sending, or after a shape or data error.
    pub splits: u64,
    /// Rows that failed alone, in row order, to be dead-lettered.
    pub rejected: Vec<RejectedRow>,
}

/// The number of distinct keys, exact up to `cap + 1` (it stops counting there).
///
/// Batches hold a handful of partitions, interleaved: a short list with a last-hit cache
/// beats a tree there (equality, no ordering, no allocation per row); past 16 distinct keys
/// it switches to a tree.
fn count_distinct<K: Ord>(keys: &[K], cap: usize) -> usize {
    const LINEAR: usize = 16;
    let mut seen: Vec<&K> = Vec::with_capacity(LINEAR);
    let mut last = 0;
    let mut rest = keys.iter();
    for k in rest.by_ref() {
        if seen.get(last).is_some_and(|s| *s == k) {
            continue;
        }
        match seen.iter().position(|s| *s == k) {
            Some(i) => last = i,
            None => {
                last = seen.len();
                seen.push(k);
                if seen.len() > LINEAR {
                    break;
                }
            }
        }
    }
    if seen.len() <= LINEAR {
        return seen.len();
    }
    let mut tree: std::collections::BTreeSet<&K> = seen.into_iter().collect();
    for k in rest {
        tree.insert(k);
        if tree.len() > cap {
            break;
        }
    }
    tree.len()
}

/// One INSERT to make: rows of the batch (indices, ascending within each partition) and the
/// dedup token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// Indices into the batch's rows.
    pub rows: Vec<usize>,
    /// The `insert_deduplication_token`.
    pub token: String,
}

impl Piece {
    /// The rows as one contiguous range of the batch, when they are (the common case: the
    /// whole batch), so the caller can encode a sub-slice without gathering rows.
    pub fn as_range(&self) -> Option<Range<usize>> {
        let first = *self.rows.first()?;
        let contiguous = self.rows.iter().enumerate().all(|(i, &r)| r == first + i);
        contiguous.then(|| first..first + self.rows.len())
    }
}

/// Splitting and bad-row isolation as a pure state machine: the caller asks for the
/// [`next_piece`](Splitter::next_piece), inserts it (retrying transient errors), and
/// [`record`](Splitter::record)s the outcome.
///
/// Two kinds of split, and why each is replay-proof (a re-run after a crash, which may split
/// differently or not at all, stores every row exactly once):
/// - **by partition**, keeping the token: pieces hold disjoint partitions and ClickHouse
///   keys dedup on (partition, token), so any grouping of the same rows under the same token
///   — the whole batch, or pieces — lands each partition once. Used before sending (more than
///   [`MAX_PARTITIONS_PER_INSERT`]), and first after any shape or data error.
/// - **in halves** of a single-partition piece, with derived tokens `<token>/0`, `<token>/1`
///   ([`split`]): the split points depend only on the row count. A row the server refuses
///   (`DataError`) is a function of the rows, so a re-run derives the same halves and tokens.
///   A block over a per-query memory or body-size limit (`TooLarge`) is not: the limit, or the
///   memory a block needs, can differ on the next attempt, and a re-run that sent the piece
///   whole under `<token>` after `<token>/0` had landed would store those rows twice. So each
///   such halving is handed out ([`take_halved`](Splitter::take_halved), a [`halving_key`]) for
///   the caller to make durable *before* it sends the halves, and a re-run given the recorded
///   keys ([`with_halved`](Splitter::with_halved)) halves those pieces up front, never
///   sending them whole.
///
/// A single row refused for its data is rejected (to be dead-lettered); a single row
/// "too large", or a single partition with "too many partitions", cannot be helped by a
/// split and is handed back as an error (the batch is held, never dead-lettered). Any other
/// error is handed back to stop the procedure.
///
/// Pieces come depth-first in key order. Keeping the IO in the caller's plain loop (rather
/// than behind an async closure) keeps the caller's future `Send`.
#[derive(Debug)]
pub struct Splitter<K> {
    keys: Vec<K>,
    stack: Vec<Piece>,
    out: Isolation,
    /// Halvings recorded by an earlier attempt, by token: the first rows of the pieces
    /// halved under it. Done up front.
    halved: std::collections::BTreeMap<String, std::collections::BTreeSet<usize>>,
    /// Halvings made for `TooLarge` since the last [`take_halved`](Splitter::take_halved).
    new_halved: Vec<String>,
}

/// Where an isolating insert makes its size halvings durable before it sends the halves
/// (see [`Splitter`]).
pub trait HalvingLog: Send + Sync {
    /// Records the [`halving_key`] `key`; the halves are sent only once this returned `Ok`.
    /// An `Err` stops the insert.
    fn record<'a>(
        &'a mut self,
        key: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<(), SinkError>>;

    /// Whether a piece may be sent now; checked before every attempt, retries included. The
    /// pipeline's writer answers whether its lane's lease still holds (fencing), so a writer
    /// whose lease lapsed during a ClickHouse outage sends nothing more. `false` stops the
    /// insert with [`SinkError::Journal`].
    fn may_send(&self) -> bool {
        true
    }
}

/// Records nothing: for inserts that are never replayed after a crash.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHalvingLog;

impl HalvingLog for NoHalvingLog {
    fn record<'a>(
        &'a mut self,
        _key: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// The identity of a piece across attempts: its token and its first row (pieces sharing a
/// token hold disjoint partitions). Recorded for a piece halved because it was too large.
pub fn halving_key(piece: &Piece) -> String {
    format!(
        "{}@{}",
        piece.token,
        piece.rows.first().copied().unwrap_or(0)
    )
}

impl<K: Ord> Splitter<K> {
    /// Starts with a batch whose row `i` lies in partition `keys[i]`, under `token`: one
    /// piece when it spans at most `max_partitions` partitions (the rows in batch order),
    /// else pieces of `max_partitions` partitions each in key order, all under `token`.
    pub fn new(keys: Vec<K>, token: &str, max_partitions: usize) -> Self {
        let max_partitions = max_partitions.max(1);
        // Counting first (no per-row allocation) keeps the common case — a few partitions —
        // at one pass over the keys.
        let distinct = count_distinct(&keys, max_partitions);
        let mut s = Splitter {
            stack: Vec::new(),
            out: Isolation::default(),
            keys,
            halved: Default::default(),
            new_halved: Vec::new(),
        };
        if s.keys.is_empty() {
            return s;
        }
        let all: Vec<usize> = (0..s.keys.len()).collect();
        if distinct <= max_partitions {
            s.stack.push(Piece {
                rows: all,
                token: token.to_owned(),
            });
            return s;
        }
        let pieces: Vec<Piece> = s
            .partition_groups(&all)
            .chunks(max_partitions)
            .map(|chunk| Piece {
                rows: chunk.concat(),
                token: token.to_owned(),
            })
            .collect();
        s.out.splits += pieces.len() as u64 - 1;
        s.stack.extend(pieces.into_iter().rev());
        s
    }

    /// The rows of `rows` grouped by partition, groups in key order, rows in index order.
    fn partition_groups(&self, rows: &[usize]) -> Vec<Vec<usize>> {
        let mut by_key: std::collections::BTreeMap<&K, Vec<usize>> = Default::default();
        for &r in rows {
            if let Some(k) = self.keys.get(r) {
                by_key.entry(k).or_default().push(r);
            }
        }
        by_key.into_values().collect()
    }

    /// Replays the halvings an earlier attempt recorded (their [`halving_key`]s): those
    /// pieces are halved before sending, as the earlier attempt did after its error.
    ///
    /// A recorded piece is always a single partition's rows under its token; a piece holding
    /// it together with other partitions (the earlier attempt split that by partition after
    /// its error) is split by partition first, keeping the token.
    pub fn with_halved(mut self, keys: impl IntoIterator<Item = String>) -> Self {
        for key in keys {
            if let Some((token, row)) = key.rsplit_once('@')
                && let Ok(row) = row.parse::<usize>()
            {
                self.halved.entry(token.to_owned()).or_default().insert(row);
            }
        }
        self
    }

    /// The halvings made for `TooLarge` since the last call, to be recorded durably before
    /// the next piece is sent.
    pub fn take_halved(&mut self) -> Vec<String> {
        std::mem::take(&mut self.new_halved)
    }

    /// The next piece to insert; `None` when done.
    pub fn next_piece(&mut self) -> Option<Piece> {
        loop {
            let piece = self.stack.pop()?;
            let Some(firsts) = self.halved.get(&piece.token) else {
                return Some(piece);
            };
            if !piece.rows.iter().any(|r| firsts.contains(r)) {
                return Some(piece);
            }
            let halve = piece.rows.first().is_some_and(|r| firsts.contains(r));
            let groups = self.partition_groups(&piece.rows);
            if groups.len() > 1 {
                self.push_partition_halves(&piece.token, &groups);
                continue;
            }
            if !halve {
                return Some(piece);
            }
            if let Err(piece) = self.push_halves(piece) {
                return Some(piece);
            }
        }
    }

    /// Pushes the partition groups of a piece in two halves by partition, same token (see the
    /// type's docs), the first half on top.
    fn push_partition_halves(&mut self, token: &str, groups: &[Vec<usize>]) {
        let mid = groups.len().div_ceil(2);
        let (left, right) = groups.split_at(mid);
        self.out.splits += 1;
        self.stack.push(Piece {
            rows: right.concat(),
            token: token.to_owned(),
        });
        self.stack.push(Piece {
            rows: left.concat(),
            token: token.to_owned(),
        });
    }

    /// Pushes the halves of a piece (the first half on top); the piece back for a single row.
    fn push_halves(&mut self, piece: Piece) -> Result<(), Piece> {
        let Some([(l, lt), (r, rt)]) = split(0..piece.rows.len(), &piece.token) else {
            return Err(piece);
        };
        self.out.splits += 1;
        let rows = |range: Range<usize>| piece.rows.get(range).unwrap_or_default().to_vec();
        self.stack.push(Piece {
            rows: rows(r),
            token: rt,
        });
        self.stack.push(Piece {
            rows: rows(l),
            token: lt,
        });
        Ok(())
    }

    /// Records the outcome of inserting `piece`; returns the error back when no split can
    /// help (the procedure must stop and the batch be held).
    pub fn record(&mut self, piece: Piece, result: Result<(), SinkError>) -> Result<(), SinkError> {
        let e = match result {
            Ok(()) => {
                self.out.inserted_rows += piece.rows.len() as u64;
                self.out.inserts += 1;
                return Ok(());
            }
            Err(e) => e,
        };
        let class = e.kind();
        if class != ErrorClass::DataError && !class.is_shape() {
            return Err(e);
        }
        let groups = self.partition_groups(&piece.rows);
        if groups.len() > 1 {
            self.push_partition_halves(&piece.token, &groups);
            return Ok(());
        }
        if class == ErrorClass::TooManyPartitions {
            return Err(e);
        }
        let key = (class == ErrorClass::TooLarge).then(|| halving_key(&piece));
        match self.push_halves(piece) {
            Ok(()) => {
                self.new_halved.extend(key);
                Ok(())
            }
            Err(piece) if class == ErrorClass::DataError => {
                if let Some(&index) = piece.rows.first() {
                    self.out.rejected.push(RejectedRow { index, error: e });
                }
                Ok(())
            }
            Err(_) => Err(e),
        }
    }

    /// The outcome, once [`next_piece`](Splitter::next_piece) returned `None`; rejected
    /// rows sorted by index.
    pub fn finish(mut self) -> Isolation {
        self.out.rejected.sort_by_key(|r| r.index);
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn batch_token_is_deterministic_and_documented() {
        assert_eq!(
            batch_token("mp-trade", 101, 200, 100),
            "mp1:mp-trade:101-200:100"
        );
        assert_eq!(batch_token("c", 1, 1, 1), batch_token("c", 1, 1, 1));
        assert_ne!(batch_token("c", 1, 2, 2), batch_token("d", 1, 2, 2));
        // A recreated stream (another epoch) never reuses the tokens of the old one.
        assert_eq!(epoch_batch_token("c", 9, 1, 2, 2), "mp2:c:9:1-2:2");
        assert_ne!(
            epoch_batch_token("c", 9, 1, 2, 2),
            epoch_batch_token("c", 10, 1, 2, 2)
        );
        assert_eq!(dead_letter_token("t"), "t/dl");
    }

    #[test]
    fn split_halves_with_derived_tokens() {
        assert_eq!(
            split(0..5, "t"),
            Some([(0..2, "t/0".into()), (2..5, "t/1".into())])
        );
        assert_eq!(
            split(2..4, "t/1"),
            Some([(2..3, "t/1/0".into()), (3..4, "t/1/1".into())])
        );
        assert_eq!(split(3..4, "t"), None);
        assert_eq!(split(3..3, "t"), None);
        let (hi, lo) = (4, 3);
        assert_eq!(split(hi..lo, "t"), None);
    }

    fn server(code: i32, message: &str) -> SinkError {
        SinkError::Server {
            code: Some(code),
            http_status: Some(500),
            message: message.into(),
        }
    }

    fn data_error() -> SinkError {
        server(27, "bad row")
    }

    /// A fake server: refuses a piece holding a bad row (data error), spanning more than
    /// `limit` partitions (252), or more than `max_rows` rows (241 for query); records what
    /// landed under which token.
    struct Fake {
        bad: BTreeSet<usize>,
        limit: usize,
        max_rows: usize,
    }

    impl Fake {
        fn insert(&self, keys: &[u32], p: &Piece) -> Result<(), SinkError> {
            let parts: BTreeSet<u32> = p.rows.iter().map(|&r| keys[r]).collect();
            if parts.len() > self.limit {
                return Err(server(
                    252,
                    "Too many partitions for single INSERT block (more than 100)",
                ));
            }
            if p.rows.len() > self.max_rows {
                return Err(server(241, "Memory limit (for query) exceeded"));
            }
            if p.rows.iter().any(|r| self.bad.contains(r)) {
                return Err(data_error());
            }
            Ok(())
        }
    }

    /// Runs a splitter over `keys` against `fake`; returns the outcome and the landed
    /// (row, token) pairs in insert order.
    fn drive(keys: &[u32], cap: usize, fake: &Fake) -> (Isolation, Vec<(Vec<usize>, String)>) {
        let mut landed = Vec::new();
        let mut s = Splitter::new(keys.to_vec(), "t", cap);
        while let Some(p) = s.next_piece() {
            let result = fake.insert(keys, &p);
            if result.is_ok() {
                landed.push((p.rows.clone(), p.token.clone()));
            }
            s.record(p, result).unwrap();
        }
        (s.finish(), landed)
    }

    /// Runs a splitter like [`drive`] until `crash_after` pieces have landed (a crash), with
    /// the halvings of an earlier attempt replayed; returns the landed (rows, token) pairs and
    /// the halvings recorded (what the writer journals before sending the halves).
    fn drive_until(
        keys: &[u32],
        fake: &Fake,
        halved: &[String],
        crash_after: usize,
    ) -> (Vec<(Vec<usize>, String)>, Vec<String>) {
        let mut landed = Vec::new();
        let mut recorded = halved.to_vec();
        let mut s = Splitter::new(keys.to_vec(), "t", 100).with_halved(halved.to_vec());
        while let Some(p) = s.next_piece() {
            if landed.len() == crash_after {
                break;
            }
            let result = fake.insert(keys, &p);
            if result.is_ok() {
                landed.push((p.rows.clone(), p.token.clone()));
            }
            s.record(p, result).unwrap();
            recorded.extend(s.take_halved());
        }
        (landed, recorded)
    }

    /// Review finding 1: a piece halved because it was too large (241 for query, 413) may
    /// fit on the next attempt (memory varies, a limit is raised). A replay after a crash
    /// that followed `t/0` landing sent the batch whole under `t`: ClickHouse had (p, t/0)
    /// but not (p, t), so t/0's rows were stored twice. With the halvings recorded before
    /// the halves were sent, the replay halves up front and reuses t/0 and t/1.
    #[test]
    fn replay_of_a_piece_halved_for_size_reuses_the_halves_when_it_would_fit_whole() {
        // Partition 0: rows 0-1; partition 1: rows 2-9 (too large at 4 rows a block).
        let keys = [0, 0, 1, 1, 1, 1, 1, 1, 1, 1];
        let tight = Fake {
            bad: BTreeSet::new(),
            limit: usize::MAX,
            max_rows: 4,
        };
        let (first, recorded) = drive_until(&keys, &tight, &[], 2);
        assert_eq!(recorded, ["t@2"]);
        assert_eq!(first[0], (vec![0, 1], "t".to_owned()));
        let roomy = Fake {
            bad: BTreeSet::new(),
            limit: usize::MAX,
            max_rows: usize::MAX,
        };
        let (replay, _) = drive_until(&keys, &roomy, &recorded, usize::MAX);
        let mut landed = first.clone();
        landed.extend(replay);
        // What ClickHouse keeps: one part per distinct (partition, token).
        let mut kept = std::collections::BTreeMap::new();
        for (rows, token) in &landed {
            for &r in rows {
                kept.entry((keys[r], token.clone()))
                    .or_insert_with(BTreeSet::new)
                    .insert(r);
            }
        }
        let mut stored: Vec<usize> = kept.values().flatten().copied().collect();
        stored.sort_unstable();
        assert_eq!(
            stored,
            (0..10).collect::<Vec<_>>(),
            "each row stored once: {landed:?}"
        );
    }

    /// One partition, `len` rows, the given bad rows (the old bisection's cases).
    fn run(len: usize, bad: &[usize]) -> (Isolation, Vec<(Range<usize>, String)>) {
        let fake = Fake {
            bad: bad.iter().copied().collect(),
            limit: usize::MAX,
            max_rows: usize::MAX,
        };
        let (out, landed) = drive(&vec![0; len], MAX_PARTITIONS_PER_INSERT, &fake);
        let landed = landed
            .into_iter()
            .map(|(rows, t)| {
                let p = Piece { rows, token: t };
                (p.as_range().unwrap(), p.token)
            })
            .collect();
        (out, landed)
    }

    #[test]
    fn clean_batch_is_one_insert_with_the_batch_token() {
        let (out, landed) = run(10, &[]);
        assert_eq!(out.inserted_rows, 10);
        assert_eq!(out.inserts, 1);
        assert_eq!(out.splits, 0);
        assert!(out.rejected.is_empty());
        assert_eq!(landed, [(0..10, "t".to_owned())]);
    }

    #[test]
    fn bad_rows_are_isolated_and_good_rows_land() {
        let (out, landed) = run(8, &[2, 7]);
        let rejected: Vec<usize> = out.rejected.iter().map(|r| r.index).collect();
        assert_eq!(rejected, [2, 7]);
        assert_eq!(out.inserted_rows, 6);
        assert_eq!(
            landed,
            [
                (0..2, "t/0/0".to_owned()),
                (3..4, "t/0/1/1".to_owned()),
                (4..6, "t/1/0".to_owned()),
                (6..7, "t/1/1/0".to_owned()),
            ]
        );
        assert!(out.rejected.iter().all(|r| r.error.code() == Some(27)));
    }

    #[test]
    fn rerun_after_a_crash_uses_the_same_tokens() {
        let (_, first) = run(37, &[0, 5, 36]);
        let (_, again) = run(37, &[0, 5, 36]);
        assert_eq!(first, again);
        let covered: usize = first.iter().map(|(r, _)| r.len()).sum();
        assert_eq!(covered, 34);
    }

    #[test]
    fn non_data_errors_stop_the_procedure() {
        let mut s = Splitter::new(vec![0u32; 4], "t", 100);
        let p = s.next_piece().unwrap();
        assert!(matches!(
            s.record(p, Err(SinkError::EmptyToken)),
            Err(SinkError::EmptyToken)
        ));
        let mut empty = Splitter::<u32>::new(Vec::new(), "t", 100);
        assert!(empty.next_piece().is_none());
    }

    /// Every row lands exactly once per (partition, token) — what ClickHouse's dedup keys
    /// on — and no two landed pieces share a (partition, token) pair: a replay that groups
    /// the rows differently under the same tokens can only be deduplicated, never doubled.
    fn assert_each_row_once(keys: &[u32], landed: &[(Vec<usize>, String)], rejected: &[usize]) {
        let mut seen = std::collections::BTreeMap::new();
        let mut rows = BTreeSet::new();
        for (i, (piece, token)) in landed.iter().enumerate() {
            for &r in piece {
                assert!(rows.insert(r), "row {r} landed twice");
                let prev = seen.insert((keys[r], token.clone()), i);
                assert!(
                    prev.is_none() || prev == Some(i),
                    "block ({}, {token}) twice",
                    keys[r]
                );
            }
        }
        let all: BTreeSet<usize> = (0..keys.len()).filter(|r| !rejected.contains(r)).collect();
        assert_eq!(rows, all);
    }

    #[test]
    fn distinct_keys_are_counted_up_to_the_cap() {
        assert_eq!(count_distinct::<u32>(&[], 100), 0);
        assert_eq!(count_distinct(&[1, 2, 1, 2, 3, 3, 1], 100), 3);
        let many: Vec<u32> = (0..1000).map(|i| i % 40).collect();
        assert_eq!(count_distinct(&many, 100), 40);
        let more: Vec<u32> = (0..1000).collect();
        assert_eq!(count_distinct(&more, 100), 101);
        let exact: Vec<u32> = (0..17).chain(0..17).collect();
        assert_eq!(count_distinct(&exact, 100), 17);
    }

    #[test]
    fn poison_batch_of_too_many_partitions_is_split_before_sending() {
        // 250 partitions, 2 rows each, interleaved: three pieces of ≤ 100 partitions, all
        // under the batch token, never a failed INSERT.
        let keys: Vec<u32> = (0..500).map(|i| i % 250).collect();
        let fake = Fake {
            bad: BTreeSet::new(),
            limit: 100,
            max_rows: usize::MAX,
        };
        let (out, landed) = drive(&keys, MAX_PARTITIONS_PER_INSERT, &fake);
        assert_eq!(out.inserted_rows, 500);
        assert_eq!(out.inserts, 3);
        assert_eq!(out.splits, 2);
        assert!(landed.iter().all(|(_, t)| t == "t"));
        assert_each_row_once(&keys, &landed, &[]);
    }

    #[test]
    fn a_server_with_a_lower_partition_limit_splits_by_partition_under_the_same_token() {
        let keys: Vec<u32> = (0..90).map(|i| i % 30).collect();
        let fake = Fake {
            bad: BTreeSet::new(),
            limit: 7,
            max_rows: usize::MAX,
        };
        let (out, landed) = drive(&keys, MAX_PARTITIONS_PER_INSERT, &fake);
        assert_eq!(out.inserted_rows, 90);
        assert!(landed.iter().all(|(_, t)| t == "t"));
        assert_each_row_once(&keys, &landed, &[]);
        // Whatever the grouping, a replay of the whole batch under "t" is deduplicated.
        let (_, again) = drive(&keys, 2, &fake);
        assert_each_row_once(&keys, &again, &[]);
    }

    #[test]
    fn too_large_halves_and_bad_rows_in_many_partitions_are_isolated() {
        let keys: Vec<u32> = (0..64).map(|i| i % 4).collect();
        let fake = Fake {
            bad: [5, 6, 63].into_iter().collect(),
            limit: 100,
            max_rows: 5,
        };
        let (out, landed) = drive(&keys, MAX_PARTITIONS_PER_INSERT, &fake);
        let rejected: Vec<usize> = out.rejected.iter().map(|r| r.index).collect();
        assert_eq!(rejected, [5, 6, 63]);
        assert_eq!(out.inserted_rows, 61);
        assert!(landed.iter().all(|(p, _)| p.len() <= 5));
        assert_each_row_once(&keys, &landed, &rejected);
        // Same input, same pieces and tokens: a re-run after a crash is deduplicated.
        let (_, again) = drive(&keys, MAX_PARTITIONS_PER_INSERT, &fake);
        assert_eq!(landed, again);
    }

    #[test]
    fn unsplittable_shape_errors_hold_the_batch() {
        // One partition that the server still refuses as "too many partitions".
        let mut s = Splitter::new(vec![0u32; 3], "t", 100);
        let p = s.next_piece().unwrap();
        let e = server(
            252,
            "Too many partitions for single INSERT block (more than 0)",
        );
        assert!(s.record(p, Err(e)).is_err());
        // One row "too large": held, never dead-lettered.
        let mut s = Splitter::new(vec![0u32; 1], "t", 100);
        let p = s.next_piece().unwrap();
        let e = server(241, "Memory limit (for query) exceeded");
        assert!(s.record(p, Err(e)).is_err());
        assert!(s.finish().rejected.is_empty());
    }
}
