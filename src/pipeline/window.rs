//! The deduplication window the pipeline's replays need of every table.
//!
//! A replay re-sends batches under their original tokens; ClickHouse recognises a token only
//! while its block is inside the table's window (`schema::DEDUP_WINDOW`). How many blocks a
//! replay can reach back over is a fact of this pipeline (journal history, batches in doubt,
//! partitions per batch, the sink's bisection), so it is computed here; `init` raises the
//! window when a configuration needs more and `run` refuses to start below it.

use crate::schema;

/// The deduplication window (in blocks) one type's table needs for its worst-case replay, for
/// batches of at most `max_rows` rows and at most `max_queue` rows held unacked.
///
/// A replay re-sends, in order, the batches above the ack floor (at most
/// `ceil(max_queue / max_rows)`) and, after a `nats-server` that was killed comes back with
/// its ack floor behind, up to [`super::writer::JOURNAL_HISTORY`] acked ones. The
/// oldest re-sent batch is only recognised if every block inserted into the table since its
/// first insert is still in the window. One batch inserts at most
/// [`crate::sink::max_blocks_per_batch`] blocks; taken here with the partitions of one batch,
/// at most [`super::decoder::MAX_PARTITIONS_PER_BATCH`] (100) for every input (the
/// decoder cuts a raw batch over more into runs of ≤ 100, each journaled and tokened as a batch
/// of its own), and one row ClickHouse refuses in every one of them: 100 + 100 × ⌈log2 max_rows⌉.
pub const fn required_window(max_rows: u64, max_queue: u64) -> u64 {
    let rows = if max_rows == 0 { 1 } else { max_rows };
    let in_doubt = max_queue.div_ceil(rows);
    let batches = super::writer::JOURNAL_HISTORY as u64 + in_doubt;
    let parts = super::decoder::MAX_PARTITIONS_PER_BATCH as u64;
    batches.saturating_mul(crate::sink::max_blocks_per_batch(rows, parts, parts))
}

/// The window every deduplicated table needs for this configuration: [`schema::DEDUP_WINDOW`],
/// or more when a type's `max_rows`/`max_queue` make its worst replay larger
/// ([`required_window`]).
pub fn needed_window(batches: impl IntoIterator<Item = (u64, u64)>) -> u64 {
    batches
        .into_iter()
        .map(|(rows, queue)| required_window(rows, queue))
        .fold(schema::DEDUP_WINDOW, u64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_window_covers_the_worst_replay_of_every_default_type_with_margin() {
        use crate::config::defaults::*;
        use crate::schema::DEDUP_WINDOW;
        assert_eq!(crate::sink::max_blocks_per_batch(5_000, 100, 100), 1_400);
        assert_eq!(crate::sink::max_blocks_per_batch(131_073, 100, 100), 1_900);
        // (64 journaled + 4 in doubt) batches × 100 partitions × (1 + 17 levels).
        assert_eq!(required_window(100_000, 400_000), 122_400);
        for rows in [
            DEFAULT_TRADE_MAX_ROWS,
            DEFAULT_ORDERBOOK_MAX_ROWS,
            DEFAULT_LOW_FREQ_MAX_ROWS,
        ] {
            let rows = rows as u64;
            let need = required_window(rows, rows * DEFAULT_MAX_QUEUE_FACTOR as u64);
            assert!(DEDUP_WINDOW * 10 >= need * 13, "{rows}: {need}");
        }
        // More rows held unacked per batch means more batches in doubt.
        assert!(required_window(1_000, 100_000) > required_window(1_000, 4_000));
    }

    #[test]
    fn needed_window_is_at_least_the_default() {
        assert_eq!(needed_window([]), schema::DEDUP_WINDOW);
        assert_eq!(
            needed_window([(10, 1_000_000)]),
            required_window(10, 1_000_000)
        );
    }
}
