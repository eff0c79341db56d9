//! Dedup tokens and bad-row isolation by bisection, independent of any IO.
//!
//! A batch's token is derived from its identity (consumer and stream-sequence range), never
//! from time or randomness, so re-sending the batch after a crash or a retry produces the same
//! token and ClickHouse drops the duplicate. When a batch fails with a data error it is split
//! in halves with derived tokens `<token>/0` and `<token>/1`, recursively, down to single
//! rows: the split points depend only on the row count, so a re-run of the whole procedure
//! produces the same sub-batches with the same tokens, and the halves that already landed are
//! deduplicated.

use std::ops::Range;

use super::error::{ErrorClass, SinkError};

/// The dedup token of a batch: `mp1:<consumer>:<first_seq>-<last_seq>:<count>`.
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

/// The token for the dead letters of the rows a bisection rejected from the batch tokened
/// `token`: `<token>/dl`. Tokens are scoped per table, but the pipeline may also write
/// decode-time rejections to `dead_letters` under the batch token itself; the suffix keeps
/// the two inserts from deduplicating each other.
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
    /// INSERT statements that ended successfully (1 when the batch was clean).
    pub inserts: u64,
    /// Rows that failed alone, in row order, to be dead-lettered.
    pub rejected: Vec<RejectedRow>,
}

/// The bisection as a pure state machine: the caller asks for the [`next_batch`](Bisection::next_batch)
/// sub-batch, inserts it (retrying transient errors), and [`record`](Bisection::record)s the
/// outcome. A data error splits the sub-batch, a single failing row is rejected, any other
/// error is handed back to stop the procedure.
///
/// Sub-batches come depth-first in row order, so rejected rows come out sorted. Keeping the
/// IO in the caller's plain loop (rather than behind an async closure) keeps the caller's
/// future `Send`.
#[derive(Debug)]
pub struct Bisection {
    stack: Vec<(Range<usize>, String)>,
    out: Isolation,
}

impl Bisection {
    /// Starts with the whole batch `0..len` under `token`.
    pub fn new(len: usize, token: &str) -> Self {
        let stack = if len == 0 {
            Vec::new()
        } else {
            vec![(0..len, token.to_owned())]
        };
        Bisection {
            stack,
            out: Isolation::default(),
        }
    }

    /// The next sub-batch to insert and its token; `None` when done.
    pub fn next_batch(&mut self) -> Option<(Range<usize>, String)> {
        self.stack.pop()
    }

    /// Records the outcome of inserting `range` under `token`; returns the error back when
    /// it is not a data error (the procedure must stop).
    pub fn record(
        &mut self,
        range: Range<usize>,
        token: &str,
        result: Result<(), SinkError>,
    ) -> Result<(), SinkError> {
        match result {
            Ok(()) => {
                self.out.inserted_rows += range.len() as u64;
                self.out.inserts += 1;
                Ok(())
            }
            Err(e) if e.kind() == ErrorClass::DataError => {
                match split(range.clone(), token) {
                    Some([left, right]) => {
                        self.stack.push(right);
                        self.stack.push(left);
                    }
                    None => self.out.rejected.push(RejectedRow {
                        index: range.start,
                        error: e,
                    }),
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The outcome, once [`next_batch`](Bisection::next_batch) returned `None`.
    pub fn finish(self) -> Isolation {
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

    fn data_error() -> SinkError {
        SinkError::Server {
            code: Some(27),
            http_status: Some(400),
            message: "bad row".into(),
        }
    }

    /// Runs a bisection against a fake server that rejects any sub-batch holding a bad row and
    /// records what landed under which token.
    fn run(len: usize, bad: &[usize]) -> (Isolation, Vec<(Range<usize>, String)>) {
        let bad: BTreeSet<usize> = bad.iter().copied().collect();
        let mut landed = Vec::new();
        let mut b = Bisection::new(len, "t");
        while let Some((r, tok)) = b.next_batch() {
            let result = if r.clone().any(|i| bad.contains(&i)) {
                Err(data_error())
            } else {
                landed.push((r.clone(), tok.clone()));
                Ok(())
            };
            b.record(r, &tok, result).unwrap();
        }
        (b.finish(), landed)
    }

    #[test]
    fn clean_batch_is_one_insert_with_the_batch_token() {
        let (out, landed) = run(10, &[]);
        assert_eq!(out.inserted_rows, 10);
        assert_eq!(out.inserts, 1);
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
        let mut b = Bisection::new(4, "t");
        let (r, tok) = b.next_batch().unwrap();
        assert!(matches!(
            b.record(r, &tok, Err(SinkError::EmptyToken)),
            Err(SinkError::EmptyToken)
        ));
        let mut empty = Bisection::new(0, "t");
        assert!(empty.next_batch().is_none());
    }
}
