//! The defaults that depend on the data type or the stream, each with the reason it was chosen,
//! and the ones other modules size themselves by. Every other default is in its key's
//! declaration (`keys::k`); `config/example.yaml` repeats them all and a test checks they agree.

use std::time::Duration;

use crate::model::DataType;

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

/// ClickHouse asks for ≥ 10k–100k rows per insert and ~1 insert/s per table; trades are small
/// (~150 B), so 100k rows is ~15 MB.
pub const DEFAULT_TRADE_MAX_ROWS: usize = 100_000;
/// 100-level books are ~8 KB each, so 5,000 rows is ~40 MB, under `max_bytes`.
pub const DEFAULT_ORDERBOOK_MAX_ROWS: usize = 5_000;
/// Low-frequency types rarely reach it (~100 messages a minute in total); the age flushes them.
pub const DEFAULT_LOW_FREQ_MAX_ROWS: usize = 10_000;
/// `max_queue` = this × `max_rows`: one batch filling, one decoding, one being inserted, and
/// room for the next pull; below that the three stages could not overlap.
pub const DEFAULT_MAX_QUEUE_FACTOR: usize = 4;
/// `max_queue_bytes` = this × `max_bytes` (the byte twin of [`DEFAULT_MAX_QUEUE_FACTOR`]).
pub const DEFAULT_MAX_QUEUE_BYTES_FACTOR: u64 = 4;
/// Lower bound of the per-type default `max_ack_pending` (6 × `max_rows` + 4 × `fetch_batch`).
///
/// The default must exceed what the pipeline can hold unacked (one batch filling, one at each
/// of the two hand-offs, one decoding, one being written, plus the pull buffer): after a crash
/// those messages are re-read from the stream without ack handles, and only a *new* delivery's
/// ack moves the floor past them. If the durable's pending count were already at
/// `max_ack_pending`, the server would deliver nothing new until `ack_wait` expired.
pub const DEFAULT_MIN_MAX_ACK_PENDING: u64 = 10_000;

/// The flush thresholds of one type when nothing is configured.
pub(crate) struct BatchDefaults {
    pub max_rows: usize,
    pub max_bytes: u64,
    pub max_age: Duration,
}

/// Trades and books: 64 MiB bounds memory if rows are unexpectedly large, and ~1 insert/s per
/// table is ClickHouse's guidance (it also bounds the latency). The six low-frequency types:
/// small rows, so 8 MiB keeps six buffers cheap, and 2 s gives fewer, larger parts for sparse
/// tables while staying fresh.
pub(crate) fn batch_defaults(t: DataType) -> BatchDefaults {
    let (max_rows, max_bytes, secs) = match t {
        DataType::Trade => (DEFAULT_TRADE_MAX_ROWS, 64 * MIB, 1),
        DataType::Orderbook => (DEFAULT_ORDERBOOK_MAX_ROWS, 64 * MIB, 1),
        _ => (DEFAULT_LOW_FREQ_MAX_ROWS, 8 * MIB, 2),
    };
    BatchDefaults {
        max_rows,
        max_bytes,
        max_age: Duration::from_secs(secs),
    }
}

/// What differs between the two streams' defaults.
pub(crate) struct StreamDefaults {
    pub name: &'static str,
    pub subjects: &'static [&'static str],
    pub max_age: Duration,
    pub max_msgs: i64,
    pub max_bytes: u64,
}

/// The Python service's stream for the six low-frequency types, with its limits (48 h survives a
/// weekend-long outage; ~100 messages a minute never reach 5 M). The collector owns it and
/// rewrites its subjects when they differ, so its 18 exchange-scoped subjects must stay as they are.
pub(crate) const MARKET_DATA: StreamDefaults = StreamDefaults {
    name: "MARKET_DATA",
    subjects: &[
        "funding_rate.binance.>",
        "funding_rate.okx.>",
        "funding_rate.deribit.>",
        "open_interest.binance.>",
        "open_interest.okx.>",
        "open_interest.deribit.>",
        "liquidation.binance.>",
        "liquidation.okx.>",
        "liquidation.deribit.>",
        "volatility_index.binance.>",
        "volatility_index.okx.>",
        "volatility_index.deribit.>",
        "lsr_top_position.binance.>",
        "lsr_top_position.okx.>",
        "lsr_top_position.deribit.>",
        "lsr_all_account.binance.>",
        "lsr_all_account.okx.>",
        "lsr_all_account.deribit.>",
    ],
    max_age: Duration::from_secs(48 * 3600),
    max_msgs: 5_000_000,
    max_bytes: 2 * GIB,
};

/// Our own stream for trades and books, which the Python service publishes on core NATS only
/// (they cannot go to `MARKET_DATA`: the collector rewrites its subjects). Same retention;
/// ~100 messages/s is ~17 M in 48 h, and 48 h of 100-level books plus trades fit in 20 GiB.
pub(crate) const HIGH_FREQUENCY: StreamDefaults = StreamDefaults {
    name: "MARKET_DATA_HF",
    subjects: &["trade.>", "orderbook.>"],
    max_age: Duration::from_secs(48 * 3600),
    max_msgs: 50_000_000,
    max_bytes: 20 * GIB,
};
