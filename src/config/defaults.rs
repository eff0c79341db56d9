//! Every default value of the configuration, in one place, each with the reason it was chosen.
//!
//! `config/example.yaml` repeats these values and a test checks that the two agree.

use std::time::Duration;

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

// ---- nats ---------------------------------------------------------------------------------

/// Same fallback as the Python service (`nats://localhost:4222`) so an unconfigured local run behaves alike.
pub const DEFAULT_NATS_URL: &str = "nats://localhost:4222";
/// Durable consumers are the point of this service: at-least-once delivery, acked after insert.
pub const DEFAULT_NATS_MODE: &str = "jetstream";
/// The Python service's stream for the six low-frequency types; the collector owns and rewrites it.
pub const DEFAULT_MARKET_DATA_STREAM: &str = "MARKET_DATA";
/// The Python service's 18 exchange-scoped subjects; we must not widen them, the collector would rewrite them.
pub const DEFAULT_MARKET_DATA_SUBJECTS: [&str; 18] = [
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
];
/// 48 h, as the Python service: survives a weekend-long outage of the storage service.
pub const DEFAULT_MARKET_DATA_MAX_AGE: Duration = Duration::from_secs(48 * 3600);
/// The Python service's limit; low-frequency types produce ~100 messages a minute, so it is never reached.
pub const DEFAULT_MARKET_DATA_MAX_MSGS: i64 = 5_000_000;
/// The Python service's limit (2 GiB).
pub const DEFAULT_MARKET_DATA_MAX_BYTES: u64 = 2 * GIB;
/// The collector's value (js-init uses 300 s; whoever creates the stream first wins).
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// A new stream of our own: trades and order books are in no stream of the Python service, and the collector
/// rewrites `MARKET_DATA`'s subjects, so they cannot go there.
pub const DEFAULT_HIGH_FREQUENCY_STREAM: &str = "MARKET_DATA_HF";
/// The two high-frequency types the Python service publishes on core NATS.
pub const DEFAULT_HIGH_FREQUENCY_SUBJECTS: [&str; 2] = ["trade.>", "orderbook.>"];
/// Same retention as `MARKET_DATA`.
pub const DEFAULT_HIGH_FREQUENCY_MAX_AGE: Duration = Duration::from_secs(48 * 3600);
/// 10× `MARKET_DATA`: trades and books are ~100 messages/s, i.e. ~17 M in 48 h.
pub const DEFAULT_HIGH_FREQUENCY_MAX_MSGS: i64 = 50_000_000;
/// 20 GiB: 48 h of 100-level books (~8 KB each, ~8/s) plus trades fit with room to spare.
pub const DEFAULT_HIGH_FREQUENCY_MAX_BYTES: u64 = 20 * GIB;
/// File storage: the stream must survive a NATS restart.
pub const DEFAULT_STREAM_STORAGE: &str = "file";
/// Discard old: a full stream keeps the newest data, as the Python service's streams do.
pub const DEFAULT_STREAM_DISCARD: &str = "old";
/// One replica: the Python service runs a single NATS server.
pub const DEFAULT_STREAM_REPLICAS: usize = 1;
/// Distinct from the Python service's `simple_hot_storage_realtime_` durables, which it deletes at start.
pub const DEFAULT_CONSUMER_PREFIX: &str = "marketprism_storage_";
/// The Python service's value; an insert of a full batch takes well under a second, retries back off to 10 s.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(60);
/// Lower bound of the per-type default `max_ack_pending` (6 × `max_rows` + 4 × `fetch_batch`).
///
/// The default must exceed what the pipeline can hold unacked (one batch filling, one at each
/// of the two hand-offs, one decoding, one being written, plus the pull buffer): after a crash those messages are re-read from the
/// stream without ack handles, and only a *new* delivery's ack moves the floor past them. If
/// the durable's pending count were already at `max_ack_pending`, the server would deliver
/// nothing new until `ack_wait` expired.
pub const DEFAULT_MIN_MAX_ACK_PENDING: u64 = 10_000;
/// Messages per pull request: large enough to amortise the round trip, small enough that a pull
/// of order books (~8 KB each) stays around 16 MB.
pub const DEFAULT_FETCH_BATCH: usize = 2_000;
/// The key-value bucket where the sink journals in-flight batches (dedup tokens, seq ranges).
pub const DEFAULT_JOURNAL_BUCKET: &str = "marketprism_storage_journal";

// ---- clickhouse ---------------------------------------------------------------------------

/// `embedded`: without a configured server the service starts its own (see `embedded`).
pub const DEFAULT_CLICKHOUSE_HOST: &str = "embedded";
/// ClickHouse's standard HTTP port.
pub const DEFAULT_CLICKHOUSE_HTTP_PORT: u16 = 8123;
/// Plain HTTP: the common deployment is ClickHouse on the same host or private network.
pub const DEFAULT_CLICKHOUSE_SECURE: bool = false;
/// The Python service's hot database name, so the same tables are written.
pub const DEFAULT_HOT_DB: &str = "marketprism_hot";
/// The Python service's cold database name.
pub const DEFAULT_COLD_DB: &str = "marketprism_cold";
/// ClickHouse's default user.
pub const DEFAULT_CLICKHOUSE_USER: &str = "default";
/// ClickHouse's default user has no password.
pub const DEFAULT_CLICKHOUSE_PASSWORD: &str = "";
/// No compression: over loopback LZ4 costs more CPU than it saves in transfer (measured).
pub const DEFAULT_CLICKHOUSE_COMPRESSION: &str = "none";
/// A 100,000-row insert takes well under a second; 60 s only trips on a stuck server.
pub const DEFAULT_INSERT_TIMEOUT: Duration = Duration::from_secs(60);

// ---- embedded -----------------------------------------------------------------------------

/// Relative to the working directory, as the Python service's `data/` folder.
pub const DEFAULT_DATA_DIR: &str = "./data";
/// The virtualenv holding `bin/python` (chDB) and `bin/nats-server`.
pub const DEFAULT_TOOLS_DIR: &str = "./.venv";
/// Loopback only: the embedded server has no authentication.
pub const DEFAULT_EMBEDDED_LISTEN: &str = "127.0.0.1:8123";

// ---- batch --------------------------------------------------------------------------------

/// ClickHouse asks for ≥ 10k–100k rows per insert and ~1 insert/s per table; trades are small
/// (~150 B), so 100k rows is ~15 MB.
pub const DEFAULT_TRADE_MAX_ROWS: usize = 100_000;
/// A cap that is rarely reached by trades; it bounds memory if rows are unexpectedly large.
pub const DEFAULT_TRADE_MAX_BYTES: u64 = 64 * MIB;
/// ~1 insert/s per table, ClickHouse's guidance; also bounds the end-to-end latency.
pub const DEFAULT_TRADE_MAX_AGE: Duration = Duration::from_secs(1);
/// 100-level books are ~8 KB each, so 5,000 rows is ~40 MB, under `max_bytes`.
pub const DEFAULT_ORDERBOOK_MAX_ROWS: usize = 5_000;
/// Bounds memory per order-book batch (≈ 8,000 books).
pub const DEFAULT_ORDERBOOK_MAX_BYTES: u64 = 64 * MIB;
/// ~1 insert/s per table.
pub const DEFAULT_ORDERBOOK_MAX_AGE: Duration = Duration::from_secs(1);
/// Low-frequency types rarely reach it (~100 messages a minute in total); the age flushes them.
pub const DEFAULT_LOW_FREQ_MAX_ROWS: usize = 10_000;
/// Small rows; 8 MiB is plenty and keeps six buffers cheap.
pub const DEFAULT_LOW_FREQ_MAX_BYTES: u64 = 8 * MIB;
/// 2 s: fewer, larger parts for six sparse tables while staying fresh.
pub const DEFAULT_LOW_FREQ_MAX_AGE: Duration = Duration::from_secs(2);
/// `max_queue_bytes` = this × `max_bytes` (the byte twin of [`DEFAULT_MAX_QUEUE_FACTOR`]).
pub const DEFAULT_MAX_QUEUE_BYTES_FACTOR: u64 = 4;
/// Bytes one pull request may return: 16 large (1 MiB) messages, or thousands of small ones.
pub const DEFAULT_FETCH_MAX_BYTES: u64 = 16 * MIB;
/// The smallest `nats.fetch_max_bytes`: a pull must fit one message of NATS's default
/// `max_payload` (1 MiB), or the server could never deliver it.
pub const MIN_FETCH_MAX_BYTES: u64 = MIB;
/// `max_queue` = this × `max_rows`: one batch filling, one decoding, one being inserted, and
/// room for the next pull; below that the three stages could not overlap.
pub const DEFAULT_MAX_QUEUE_FACTOR: usize = 4;

// ---- retry --------------------------------------------------------------------------------

/// First wait after a retriable failure: short, most failures are brief.
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Upper bound of the wait, so recovery is noticed within 10 s of the server coming back.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(10);
/// The Python service's `backoff_multiplier`: the wait doubles after each failure.
pub const DEFAULT_BACKOFF_MULTIPLIER: f64 = 2.0;

// ---- http ---------------------------------------------------------------------------------

/// The Python service's port when `http_port` is absent (and the README's `HOT_STORAGE_HTTP_PORT`).
pub const DEFAULT_HTTP_PORT: u16 = 8081;
/// Loopback: the ops surface exposes controls; exposing it is a deliberate choice.
pub const DEFAULT_HTTP_BIND: &str = "127.0.0.1";

// ---- log ----------------------------------------------------------------------------------

/// `info`: one line per batch is useful, per message is not.
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// Human-readable unless asked for JSON.
pub const DEFAULT_LOG_FORMAT: &str = "pretty";

// ---- migration ----------------------------------------------------------------------------

/// Off: `run` ingests only, as the Python service's hot service did (its migrator was a separate cold
/// service); turning it on runs the migration loop inside the service (`run --migrate`).
pub const DEFAULT_MIGRATION_ENABLED: bool = false;
/// The Python service's `MIGRATION_WINDOW_HOURS` default.
pub const DEFAULT_MIGRATION_WINDOW_HOURS: f64 = 8.0;
/// The Python service's `MIGRATION_BATCH_LIMIT` default: rows copied per table per round at most.
pub const DEFAULT_MIGRATION_BATCH_LIMIT: u64 = 5_000_000;
/// Off: a real migration unless asked otherwise, as the Python service.
pub const DEFAULT_MIGRATION_DRY_RUN: bool = false;
/// Every 5 minutes, the Python service's recommended interval.
pub const DEFAULT_MIGRATION_INTERVAL: Duration = Duration::from_secs(300);
/// Rows younger than this are not migrated yet: late batches may still be inserted into hot.
pub const DEFAULT_MIGRATION_LAG: Duration = Duration::from_secs(600);
/// Windows already migrated that are compared again each round (hot vs cold counts), to catch
/// rows inserted into hot after their window was copied.
pub const DEFAULT_MIGRATION_RECHECK_WINDOWS: u32 = 2;

// ---- quality ------------------------------------------------------------------------------

/// On: the detectors cost a few ns per row and label problems nobody would see otherwise.
pub const DEFAULT_QUALITY_ENABLED: bool = true;
/// 10 % away from the recent median: far beyond a normal tick for the majors, close enough to
/// catch a bad print or a wrong scale.
pub const DEFAULT_QUALITY_PRICE_JUMP: f64 = 0.10;
/// Binance (`t`, aggTrade `a`) and OKX (`tradeId`) trade ids are sequential per market;
/// Deribit's are not.
pub const DEFAULT_QUALITY_SEQUENTIAL_IDS: [&str; 2] = ["binance", "okx"];

// ---- shutdown -----------------------------------------------------------------------------

/// Time to flush, insert and ack after a signal; well under Docker's and systemd's kill timeouts
/// once doubled, and long enough for a 100k-row insert with a retry or two.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
