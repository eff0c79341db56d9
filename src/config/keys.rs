//! Every configuration key, declared once (module [`k`]), and [`build`], which reads them into
//! a [`Config`] and applies the rules that involve several keys.
//!
//! A declaration gives the key's dotted name, its kind (how it is read and printed), its
//! environment variables, the Python service's file keys for it, its default, its rule and one
//! line of documentation. Precedence, the sources and lines `config` prints, the refusal of
//! unknown file keys and the docs test all come from it (see `resolve`). Defaults that depend
//! on the data type or the stream are in `defaults`.

use std::num::{NonZeroU64, NonZeroUsize};

use yaml_serde::Value;

use super::defaults::*;
use super::resolve::{Key, Resolver};
use super::{
    ClickHouseConfig, ColdClickHouseConfig, Config, ConfigError, EmbeddedConfig, HttpConfig,
    LogConfig, MigrationConfig, NatsAuth, NatsConfig, NatsMode, NatsTls, PerType, QualityConfig,
    RetryConfig, StreamConfig, Streams, TypeBatch,
};
use crate::model::DataType;
use crate::sink::tls::{ClientTls, TlsFile, TlsFiles};

/// Declares each key once: the doc line (also the key's rustdoc), the constant, the value type,
/// `(dotted name, kind)`, then its variables, Python service keys, rule and default.
macro_rules! keys {
    ($($(#[doc = $doc:literal])+ $id:ident: $t:ty = ($name:literal, $kind:ident)
        $(.$setter:ident($($arg:expr),*))*;)*) => {$(
        $(#[doc = $doc])+
        pub const $id: Key<$t> = Key::new($name, &$kind, concat!($($doc),+).trim_ascii())
            $(.$setter($($arg),*))*;
    )*};
}

/// The declarations. Each is the only place its key is described.
pub(crate) mod k {
    use std::net::{IpAddr, SocketAddr};
    use std::num::{NonZeroU64, NonZeroUsize};
    use std::path::PathBuf;
    use std::time::Duration;

    use super::super::value::*;
    use super::super::{
        ClickHouseHost, Compression, Discard, LogFormat, NatsMode, Secret, StreamStorage,
    };
    use super::Key;
    use crate::model::DataType;

    keys! {
        // ---- nats ----
        /// NATS servers, comma-separated; the Python service's fallback too.
        NATS_URL: Vec<String> = ("nats.url", NATS_URLS).env(&["MARKETPRISM_NATS_URL", "NATS_URL"])
            .python(&["nats.servers"]).default("nats://localhost:4222");
        /// `jetstream`: durable consumers, acked after the insert; `core`: at-most-once.
        NATS_MODE: NatsMode = ("nats.mode", MODE).env(&["MARKETPRISM_NATS_MODE"]).default("jetstream");
        /// Stream name.
        STREAM_NAME: String = ("nats.streams.*.name", TEXT).check(|s| check_name(s, false));
        /// Subjects the stream captures.
        STREAM_SUBJECTS: Vec<String> = ("nats.streams.*.subjects", LIST).check(|s| subjects(s));
        /// Messages older than this are dropped by NATS.
        STREAM_MAX_AGE: Duration = ("nats.streams.*.max_age", DURATION);
        /// Message count limit, -1 = none.
        STREAM_MAX_MSGS: i64 = ("nats.streams.*.max_msgs", I64).check(max_msgs);
        /// Size limit.
        STREAM_MAX_BYTES: NonZeroU64 = ("nats.streams.*.max_bytes", SIZE);
        /// Nats-Msg-Id dedup window (the collector's value).
        DUPLICATE_WINDOW: Duration = ("nats.streams.*.duplicate_window", DURATION).default("2m");
        /// `file`: the stream survives a NATS restart.
        STORAGE: StreamStorage = ("nats.streams.*.storage", STREAM_STORAGE).default("file");
        /// `old`: a full stream keeps the newest data.
        DISCARD: Discard = ("nats.streams.*.discard", STREAM_DISCARD).default("old");
        /// Replicas; one: the Python service runs one NATS server.
        REPLICAS: NonZeroUsize = ("nats.streams.*.replicas", ROWS).check(replicas).default("1");
        /// Partitions per type of a stream we create (1: none); lanes follow the stream's layout.
        PARTITIONS: NonZeroUsize = ("nats.streams.*.partitions", ROWS).check(partitions).default("1");
        /// Durable = prefix + type; not the Python service's (it deletes its own).
        CONSUMER_PREFIX: String = ("nats.consumer_prefix", TEXT).check(|s| check_name(s, true))
            .default("marketprism_storage_");
        /// Redelivery when not acked within this (the Python service's value).
        ACK_WAIT: Duration = ("nats.ack_wait", DURATION).check(positive).default("1m");
        /// Time a TCP/TLS connect to a NATS server may take.
        CONNECT_TIMEOUT: Duration = ("nats.connect_timeout", DURATION)
            .env(&["MARKETPRISM_NATS_CONNECT_TIMEOUT"]).check(positive).default("5s");
        /// One value for every type; default per type from the batch.
        MAX_ACK_PENDING: NonZeroU64 = ("nats.max_ack_pending", COUNT);
        /// Messages per pull: amortises the round trip, ~16 MB of books.
        FETCH_BATCH: NonZeroUsize = ("nats.fetch_batch", ROWS).default("2000");
        /// Bytes per pull: 16 large messages or thousands of small ones.
        FETCH_MAX_BYTES: NonZeroU64 = ("nats.fetch_max_bytes", SIZE).check(fits_a_message)
            .default("16MiB");
        /// Key-value bucket of the insert journal.
        JOURNAL_BUCKET: String = ("nats.journal_bucket", TEXT).check(|s| check_bucket(s))
            .default("marketprism_storage_journal");
        /// Subject prefix of the client's reply inboxes (a NATS user can then be allowed only its
        /// own, so that another user cannot read its replies).
        INBOX_PREFIX: String = ("nats.inbox_prefix", TEXT).env(&["MARKETPRISM_NATS_INBOX_PREFIX"])
            .check(|s| check_inbox_prefix(s)).default("_INBOX");
        /// Replicas of the journal and lease buckets; default: the streams' largest.
        KV_REPLICAS: NonZeroUsize = ("nats.kv_replicas", ROWS).check(replicas);
        /// Data types this instance consumes.
        NATS_TYPES: Vec<DataType> = ("nats.types", TYPES).env(&["MARKETPRISM_NATS_TYPES"])
            .python(&["subscriptions"])
            .default("trade,orderbook,funding_rate,open_interest,liquidation,lsr_top_position,lsr_all_account,volatility_index");
        /// The Python service's switch per type, mapped onto `nats.types`.
        SUBSCRIBED: bool = ("subscriptions.*_enabled", BOOL);
        /// User, with nats.password; one auth method only.
        NATS_USER: String = ("nats.user", TEXT).env(&["MARKETPRISM_NATS_USER"]);
        /// Password of nats.user (secret).
        NATS_PASSWORD: Secret = ("nats.password", TOKEN).env(&["MARKETPRISM_NATS_PASSWORD"]);
        /// Token (secret).
        NATS_TOKEN: Secret = ("nats.token", TOKEN).env(&["MARKETPRISM_NATS_TOKEN"]);
        /// File holding a user nkey seed (`SU…`).
        NATS_NKEY_SEED_FILE: PathBuf = ("nats.nkey_seed_file", SECRET_FILE)
            .env(&["MARKETPRISM_NATS_NKEY_SEED_FILE"]);
        /// Credentials file (user JWT + seed), decentralized auth.
        NATS_CREDS_FILE: PathBuf = ("nats.creds_file", SECRET_FILE).env(&["MARKETPRISM_NATS_CREDS_FILE"]);
        /// PEM CA(s) the servers' certificates chain to; unset: the system's.
        NATS_TLS_CA: PathBuf = ("nats.tls.ca", PATH).env(&["MARKETPRISM_NATS_TLS_CA"]);
        /// Client certificate chain (PEM), with nats.tls.key.
        NATS_TLS_CERT: PathBuf = ("nats.tls.cert", PATH).env(&["MARKETPRISM_NATS_TLS_CERT"]);
        /// Its private key (PEM).
        NATS_TLS_KEY: PathBuf = ("nats.tls.key", SECRET_FILE).env(&["MARKETPRISM_NATS_TLS_KEY"]);
        /// TLS before the server's INFO (servers with `handshake_first`).
        NATS_TLS_FIRST: bool = ("nats.tls.first", BOOL).env(&["MARKETPRISM_NATS_TLS_FIRST"])
            .default("false");
        /// Refuse a server without TLS (implied by tls://, ca, cert, first).
        NATS_TLS_REQUIRED: bool = ("nats.tls.required", BOOL).default("false");

        // ---- clickhouse ----
        /// `embedded`: the service starts its own ClickHouse.
        CH_HOST: ClickHouseHost = ("clickhouse.host", CLICKHOUSE_HOST).env(&["CLICKHOUSE_HOST"])
            .python(&["hot_storage.clickhouse_host"]).default("embedded");
        /// HTTP port of an external server.
        CH_HTTP_PORT: u16 = ("clickhouse.http_port", PORT).env(&["CLICKHOUSE_HTTP_PORT"])
            .python(&["hot_storage.clickhouse_http_port"]).default("8123");
        /// HTTPS; plain HTTP suits a server on the same host or network.
        CH_SECURE: bool = ("clickhouse.secure", BOOL).env(&["CLICKHOUSE_SECURE"]).default("false");
        /// Hot database (the Python service's name).
        HOT_DB: String = ("clickhouse.hot_db", TEXT).env(&["CLICKHOUSE_HOT_DB", "CLICKHOUSE_DATABASE"])
            .python(&["hot_storage.clickhouse_database"]).check(|s| check_identifier(s))
            .default("marketprism_hot");
        /// Cold database (the Python service's name).
        COLD_DB: String = ("clickhouse.cold_db", TEXT).env(&["CLICKHOUSE_COLD_DB"])
            .check(|s| check_identifier(s)).default("marketprism_cold");
        /// User.
        CH_USER: String = ("clickhouse.user", TEXT).env(&["CLICKHOUSE_USER"])
            .python(&["hot_storage.clickhouse_user"]).check(|s| not_empty(s)).default("default");
        /// Password (secret).
        CH_PASSWORD: Secret = ("clickhouse.password", PASSWORD).env(&["CLICKHOUSE_PASSWORD"])
            .python(&["hot_storage.clickhouse_password"]).default("");
        /// `none`: over loopback LZ4 costs more than it saves (measured).
        COMPRESSION: Compression = ("clickhouse.compression", INSERT_COMPRESSION).default("none");
        /// Time limit of one INSERT; only a stuck server takes 60 s.
        INSERT_TIMEOUT: Duration = ("clickhouse.insert_timeout", DURATION).check(positive)
            .default("1m");
        /// Cluster (remote_servers) of the ON CLUSTER schema; empty: one server.
        CH_CLUSTER: String = ("clickhouse.cluster", FILTER).env(&["CLICKHOUSE_CLUSTER"])
            .check(|s| check_cluster(s)).default("");
        /// Replicas of a shard that must have a block before its INSERT returns; 0: off.
        INSERT_QUORUM: u32 = ("clickhouse.insert_quorum", U32).check(quorum).default("0");
        /// Quorum INSERTs into one table may overlap (8 writers share dead_letters).
        INSERT_QUORUM_PARALLEL: bool = ("clickhouse.insert_quorum_parallel", BOOL).default("true");
        /// Time a quorum write may take; below insert_timeout, so ClickHouse answers first.
        INSERT_QUORUM_TIMEOUT: Duration = ("clickhouse.insert_quorum_timeout", DURATION)
            .check(positive).default("30s");

        /// CA certificates (PEM) that sign the server's; set: only these are trusted.
        CH_TLS_CA: PathBuf = ("clickhouse.tls.ca", PATH).env(&["CLICKHOUSE_TLS_CA"]);
        /// Client certificate chain (PEM) for mutual TLS; needs `clickhouse.tls.key`.
        CH_TLS_CERT: PathBuf = ("clickhouse.tls.cert", PATH).env(&["CLICKHOUSE_TLS_CERT"]);
        /// Private key (PEM) of `clickhouse.tls.cert`.
        CH_TLS_KEY: PathBuf = ("clickhouse.tls.key", SECRET_FILE).env(&["CLICKHOUSE_TLS_KEY"]);

        // ---- cold_clickhouse (absent: the cold database is on the hot server) ----
        /// Server of the cold database.
        COLD_HOST: String = ("cold_clickhouse.host", HOST).env(&["COLD_CLICKHOUSE_HOST"])
            .check(|h| not_embedded(h));
        /// Its HTTP port.
        COLD_HTTP_PORT: u16 = ("cold_clickhouse.http_port", PORT).env(&["COLD_CLICKHOUSE_HTTP_PORT"])
            .default("8123");
        /// HTTPS (default: `clickhouse.secure`).
        COLD_SECURE: bool = ("cold_clickhouse.secure", BOOL);
        /// User (default: `clickhouse.user`).
        COLD_USER: String = ("cold_clickhouse.user", TEXT).env(&["COLD_CLICKHOUSE_USER"]);
        /// Password (default: `clickhouse.password`).
        COLD_PASSWORD: Secret = ("cold_clickhouse.password", PASSWORD)
            .env(&["COLD_CLICKHOUSE_PASSWORD"]);
        /// CA file (default: `clickhouse.tls.ca`).
        COLD_TLS_CA: PathBuf = ("cold_clickhouse.tls.ca", PATH).env(&["COLD_CLICKHOUSE_TLS_CA"]);
        /// Client certificate (default: `clickhouse.tls.cert`).
        COLD_TLS_CERT: PathBuf = ("cold_clickhouse.tls.cert", PATH)
            .env(&["COLD_CLICKHOUSE_TLS_CERT"]);
        /// Client key (default: `clickhouse.tls.key`).
        COLD_TLS_KEY: PathBuf = ("cold_clickhouse.tls.key", SECRET_FILE).env(&["COLD_CLICKHOUSE_TLS_KEY"]);

        // ---- embedded ----
        /// Data of the embedded servers, like the Python service's `data/`.
        DATA_DIR: PathBuf = ("embedded.data_dir", PATH).env(&["MARKETPRISM_DATA_DIR"])
            .default("./data");
        /// Holds `bin/python` (chDB) and `bin/nats-server`.
        TOOLS_DIR: PathBuf = ("embedded.tools_dir", PATH).env(&["MARKETPRISM_TOOLS_DIR"])
            .default("./.venv");
        /// Address of the embedded ClickHouse; not loopback: needs `embedded.password`.
        LISTEN: SocketAddr = ("embedded.listen", SOCKET).default("127.0.0.1:8123");
        /// The one user the embedded ClickHouse accepts when it has a password.
        EMBEDDED_USER: String = ("embedded.user", TEXT).env(&["MARKETPRISM_EMBEDDED_USER"])
            .check(|s| not_empty(s)).default("default");
        /// Password the embedded ClickHouse requires; empty: none.
        EMBEDDED_PASSWORD: Secret = ("embedded.password", PASSWORD)
            .env(&["MARKETPRISM_EMBEDDED_PASSWORD"]).default("");
        /// Certificate chain (PEM): the embedded ClickHouse serves HTTPS.
        EMBEDDED_TLS_CERT: PathBuf = ("embedded.tls.cert", PATH).env(&["MARKETPRISM_EMBEDDED_TLS_CERT"]);
        /// Private key (PEM) of `embedded.tls.cert`.
        EMBEDDED_TLS_KEY: PathBuf = ("embedded.tls.key", SECRET_FILE).env(&["MARKETPRISM_EMBEDDED_TLS_KEY"]);
        /// CA (PEM): clients must show a certificate it signed (mutual TLS).
        EMBEDDED_TLS_CLIENT_CA: PathBuf = ("embedded.tls.client_ca", PATH)
            .env(&["MARKETPRISM_EMBEDDED_TLS_CLIENT_CA"]);
        /// Allow table functions, engines and clauses reaching files, network, processes.
        ALLOW_EXTERNAL: bool = ("embedded.allow_external", BOOL)
            .env(&["MARKETPRISM_EMBEDDED_ALLOW_EXTERNAL"]).default("false");

        // ---- batch (per type; defaults in `defaults`) ----
        /// Flush at this many rows.
        MAX_ROWS: NonZeroUsize = ("batch.types.*.max_rows", ROWS);
        /// Or at this many bytes.
        MAX_BYTES: NonZeroU64 = ("batch.types.*.max_bytes", SIZE);
        /// Or when the oldest row is this old.
        MAX_AGE: Duration = ("batch.types.*.max_age", DURATION).check(positive);
        /// Rows buffered + in flight before fetching pauses.
        MAX_QUEUE: NonZeroUsize = ("batch.types.*.max_queue", ROWS);
        /// Unacked payload bytes before fetching pauses.
        MAX_QUEUE_BYTES: NonZeroU64 = ("batch.types.*.max_queue_bytes", SIZE);

        // ---- retry ----
        /// First wait: most failures are brief.
        INITIAL_BACKOFF: Duration = ("retry.initial_backoff", DURATION)
            .python(&["retry.delay_seconds"]).check(positive).default("100ms");
        /// Largest wait: recovery is noticed within 10 s.
        MAX_BACKOFF: Duration = ("retry.max_backoff", DURATION).default("10s");
        /// Each wait = previous × this (the Python service's `backoff_multiplier`).
        MULTIPLIER: f64 = ("retry.multiplier", F64).python(&["retry.backoff_multiplier"])
            .check(multiplier).default("2.0");

        // ---- http ----
        /// Ops HTTP server (the Python service's port).
        HTTP_PORT: u16 = ("http.port", PORT).env(&["HOT_STORAGE_HTTP_PORT"]).python(&["http_port"])
            .default("8081");
        /// Loopback: exposing the ops surface is a deliberate choice (and needs http.token).
        HTTP_BIND: IpAddr = ("http.bind", IP).default("127.0.0.1");
        /// Bearer token of every ops endpoint but /health (secret); required off loopback.
        HTTP_TOKEN: Secret = ("http.token", TOKEN).env(&["MARKETPRISM_HTTP_TOKEN"]);
        /// An extra port serving /metrics only.
        METRICS_PORT: u16 = ("http.metrics_port", PORT).env(&["HOT_STORAGE_METRICS_PORT"])
            .python(&["metrics_port"]);

        // ---- log ----
        /// Info: one line per batch, not per message.
        LOG_LEVEL: String = ("log.level", LEVEL).env(&["LOG_LEVEL"]).python(&["logging.level"])
            .default("info");
        /// A filter that wins over log.level.
        RUST_LOG: String = ("log.rust_log", TEXT).env(&["RUST_LOG"]).env_only();
        /// Pretty or json.
        LOG_FORMAT: LogFormat = ("log.format", LOG_FORMAT_KIND).env(&["MARKETPRISM_LOG_JSON"])
            .env_kind(&LOG_JSON).python(&["logging.format"]).default("pretty");

        // ---- migration ----
        /// Run the migration loop inside `run` (off, as the Python service).
        MIGRATION_ENABLED: bool = ("migration.enabled", BOOL).env(&["MIGRATION_ENABLED"])
            .default("false");
        /// Span of one window (the Python service's default).
        WINDOW_HOURS: Duration = ("migration.window_hours", HOURS).env(&["MIGRATION_WINDOW_HOURS"])
            .check(positive).default("8");
        /// Rows per table per round at most (the Python service's).
        BATCH_LIMIT: NonZeroU64 = ("migration.batch_limit", COUNT).env(&["MIGRATION_BATCH_LIMIT"])
            .default("5000000");
        /// Only these symbols.
        SYMBOL_PREFIX: String = ("migration.symbol_prefix", FILTER).env(&["MIGRATION_SYMBOL_PREFIX"]);
        /// Only this exchange.
        EXCHANGE: String = ("migration.exchange", FILTER).env(&["MIGRATION_EXCHANGE"]);
        /// Only this market type.
        MARKET_TYPE: String = ("migration.market_type", FILTER).env(&["MIGRATION_MARKET_TYPE"]);
        /// Count only, write and delete nothing.
        DRY_RUN: bool = ("migration.dry_run", BOOL).env(&["MIGRATION_DRY_RUN"]).default("false");
        /// Time between rounds (the Python service's advice).
        INTERVAL: Duration = ("migration.interval", DURATION).check(positive).default("5m");
        /// Rows younger than this wait: late batches still go to hot.
        LAG: Duration = ("migration.lag", DURATION).default("10m");
        /// Migrated windows compared again each round.
        RECHECK_WINDOWS: u32 = ("migration.recheck_windows", U32).default("2");

        // ---- quality ----
        /// Data-quality detectors: a few ns per row.
        QUALITY_ENABLED: bool = ("quality.enabled", BOOL).env(&["MARKETPRISM_QUALITY_ENABLED"])
            .default("true");
        /// A price this fraction from the recent median is a jump.
        PRICE_JUMP: f64 = ("quality.price_jump", F64).check(fraction).default("0.1");
        /// Markets with sequential trade ids (Deribit's are not).
        SEQUENTIAL_IDS: Vec<String> = ("quality.sequential_ids", LIST).default("binance,okx");

        // ---- shutdown ----
        /// Flush, insert and ack after a stop signal within this.
        SHUTDOWN_GRACE: Duration = ("shutdown.grace_period", DURATION).default("30s");
    }
}

/// Keys of the Python service's file that have no meaning here: the key, the reason given in
/// the warning, and the sub-keys its file has (only those are accepted).
#[rustfmt::skip]
pub(crate) const PYTHON_IGNORED: &[(&str, &str, &[&str])] = &[
    ("nats.max_reconnect_attempts", "we reconnect to NATS forever", &[]),
    ("nats.reconnect_time_wait", "we reconnect with backoff (retry.*)", &[]),
    ("batch.high_freq_types", "every type is consumed from JetStream; streams are set in nats.streams", &[]),
    ("retry.max_retries", "retriable errors are retried forever and nothing is dropped", &[]),
    ("hot_storage.clickhouse_tcp_port", "we use the HTTP interface only", &[]),
    ("hot_storage.retention_days", "retention is the tables' TTL (schema)", &[]),
    ("hot_storage.batch_size", "the Python service ignored it too; use batch.*", &[]),
    ("hot_storage.flush_interval", "the Python service ignored it too; use batch.*", &[]),
    ("hot_storage.connection_pool", "connections are pooled by the HTTP client", &["size", "max_retries", "timeout"]),
    ("hot_storage.performance", "compression is clickhouse.compression; other settings do not apply",
        &["enable_compression", "compression_method", "compression_level", "max_insert_threads", "insert_quorum"]),
    ("hot_storage.tables", "tables are always created from the built-in schema", &["schema_file", "auto_create", "auto_optimize"]),
    ("logging.output", "logs always go to stderr", &[]),
    ("monitoring", "health is computed continuously; metrics are served on request",
        &["health_check_interval", "metrics_collection_interval"]),
    ("performance", "the Python service did not read it",
        &["max_concurrent_transfers", "transfer_timeout_minutes", "connection_pool_size"]),
    ("security", "the Python service did not read it; use clickhouse.secure and http.token",
        &["enable_ssl", "verify_checksums", "encrypt_transfers"]),
];

/// Python service keys computed from several of its keys rather than read at one path.
pub(crate) const COMPUTED: [&str; 1] = ["subscriptions"];

/// Reads every key into the validated [`Config`].
pub(crate) fn build(r: &mut Resolver) -> Result<Config, ConfigError> {
    let non_empty = |v: Option<String>| v.filter(|s| !s.is_empty());
    let batch = batch(r)?;
    let nats = nats(r, &batch)?;
    let host: super::ClickHouseHost = r.get(&k::CH_HOST)?;
    let embedded = embedded(r, &host)?;
    // The service's own client uses the embedded server's credentials unless told otherwise.
    let (default_user, default_password) = match host {
        super::ClickHouseHost::Embedded => {
            (Some(embedded.user.clone()), Some(embedded.password.clone()))
        }
        super::ClickHouseHost::Server(_) => (None, None),
    };
    let clickhouse = ClickHouseConfig {
        http_port: r.get(&k::CH_HTTP_PORT)?,
        secure: r.get(&k::CH_SECURE)?,
        hot_db: r.get(&k::HOT_DB)?,
        cold_db: r.get(&k::COLD_DB)?,
        user: r.value(&k::CH_USER, None, &[], default_user)?,
        password: r.value(&k::CH_PASSWORD, None, &[], default_password)?,
        tls: None,
        host,
        compression: r.get(&k::COMPRESSION)?,
        insert_timeout: r.get(&k::INSERT_TIMEOUT)?,
        cluster: non_empty(Some(r.get(&k::CH_CLUSTER)?)),
        insert_quorum: r.get(&k::INSERT_QUORUM)?,
        insert_quorum_parallel: r.get(&k::INSERT_QUORUM_PARALLEL)?,
        insert_quorum_timeout: r.get(&k::INSERT_QUORUM_TIMEOUT)?,
    };
    let mut clickhouse = clickhouse;
    let hot_tls = TlsFiles {
        ca: r.opt(&k::CH_TLS_CA)?,
        cert: r.opt(&k::CH_TLS_CERT)?,
        key: r.opt(&k::CH_TLS_KEY)?,
    };
    let https = clickhouse.secure || (clickhouse.is_embedded() && embedded.tls_cert.is_some());
    clickhouse.tls = client_tls(r, "clickhouse", &hot_tls, https)?;
    if clickhouse.is_embedded() {
        embedded_client_rules(r, &embedded, &hot_tls)?;
    }
    if let super::ClickHouseHost::Server(host) = &clickhouse.host {
        r.warnings.extend(password_in_clear(
            "clickhouse",
            host,
            clickhouse.secure,
            &clickhouse.password,
        ));
    }
    cluster_rules(r, &clickhouse, &nats)?;
    let cold_clickhouse = cold_clickhouse(r, &clickhouse, &hot_tls)?;
    r.show("clickhouse.url", clickhouse.base_url(&embedded));
    let retry = RetryConfig {
        initial_backoff: r.get(&k::INITIAL_BACKOFF)?,
        max_backoff: r.get(&k::MAX_BACKOFF)?,
        multiplier: r.get(&k::MULTIPLIER)?,
    };
    if retry.max_backoff < retry.initial_backoff {
        return Err(r.fail("retry.max_backoff", "must be >= retry.initial_backoff"));
    }
    let http = HttpConfig {
        port: r.get(&k::HTTP_PORT)?,
        bind: r.get(&k::HTTP_BIND)?,
        token: r.opt(&k::HTTP_TOKEN)?.filter(|t| !t.is_empty()),
        metrics_port: r.opt(&k::METRICS_PORT)?,
    };
    if !http.bind.to_canonical().is_loopback() && http.token.is_none() {
        let reason = format!(
            "required when http.bind ({}) is not a loopback address: the status page, /stats and /metrics would be open to the network; set http.token (env MARKETPRISM_HTTP_TOKEN) or bind 127.0.0.1",
            http.bind
        );
        return Err(r.fail("http.token", reason));
    }
    if http.metrics_port == Some(http.port) {
        let reason = format!(
            "must differ from http.port ({}); /metrics is served there too",
            http.port
        );
        return Err(r.fail("http.metrics_port", reason));
    }
    Ok(Config {
        nats,
        clickhouse,
        cold_clickhouse,
        embedded,
        batch,
        retry,
        http,
        log: LogConfig {
            level: r.get(&k::LOG_LEVEL)?,
            rust_log: r.opt(&k::RUST_LOG)?,
            format: r.get(&k::LOG_FORMAT)?,
        },
        migration: MigrationConfig {
            enabled: r.get(&k::MIGRATION_ENABLED)?,
            window: r.get(&k::WINDOW_HOURS)?,
            batch_limit: r.get(&k::BATCH_LIMIT)?,
            symbol_prefix: non_empty(r.opt(&k::SYMBOL_PREFIX)?),
            exchange: non_empty(r.opt(&k::EXCHANGE)?),
            market_type: non_empty(r.opt(&k::MARKET_TYPE)?),
            dry_run: r.get(&k::DRY_RUN)?,
            interval: r.get(&k::INTERVAL)?,
            lag: r.get(&k::LAG)?,
            recheck_windows: r.get(&k::RECHECK_WINDOWS)?,
        },
        quality: QualityConfig {
            enabled: r.get(&k::QUALITY_ENABLED)?,
            price_jump: r.get(&k::PRICE_JUMP)?,
            sequential_ids: r.get(&k::SEQUENTIAL_IDS)?,
        },
        shutdown_grace: r.get(&k::SHUTDOWN_GRACE)?,
    })
}

fn nats(r: &mut Resolver, batch: &PerType<TypeBatch>) -> Result<NatsConfig, ConfigError> {
    let urls = r.get(&k::NATS_URL)?;
    let mode = r.get(&k::NATS_MODE)?;
    let streams = Streams {
        market_data: stream(r, "market_data", &MARKET_DATA)?,
        high_frequency: stream(r, "high_frequency", &HIGH_FREQUENCY)?,
    };
    let (md, hf) = (&streams.market_data, &streams.high_frequency);
    if md.name == hf.name {
        let reason = format!("must differ from the market_data stream (\"{}\")", md.name);
        return Err(ConfigError::invalid(
            "nats.streams.high_frequency.name",
            reason,
        ));
    }
    if let Some(s) = hf.subjects.iter().find(|s| md.subjects.contains(s)) {
        let reason = format!("subject \"{s}\" is also in the market_data stream");
        return Err(ConfigError::invalid(
            "nats.streams.high_frequency.subjects",
            reason,
        ));
    }
    let consumer_prefix = r.get(&k::CONSUMER_PREFIX)?;
    let ack_wait = r.get(&k::ACK_WAIT)?;
    let connect_timeout = r.get(&k::CONNECT_TIMEOUT)?;
    let mark = r.entries.len();
    let fetch_batch = r.get(&k::FETCH_BATCH)?;
    let fetch_batch_line = r.entries.split_off(mark); // printed after max_ack_pending
    // One file value for every type, printed per type; the default exceeds what the pipeline
    // can hold unacked (see `DEFAULT_MIN_MAX_ACK_PENDING`).
    let pending = r.peek(&k::MAX_ACK_PENDING, None)?;
    let max_ack_pending = PerType::try_from_fn(|t| {
        let derived = (batch.get(t).max_rows.get() as u64)
            .saturating_mul(6)
            .saturating_add((fetch_batch.get() as u64).saturating_mul(4))
            .max(DEFAULT_MIN_MAX_ACK_PENDING);
        let (value, source) = pending.clone().unwrap_or((
            NonZeroU64::new(derived).unwrap_or(NonZeroU64::MIN),
            super::Source::Default,
        ));
        r.record(
            &k::MAX_ACK_PENDING,
            &format!("nats.max_ack_pending.{t}"),
            &value,
            &source,
        );
        Ok::<_, ConfigError>(value)
    })?;
    r.entries.extend(fetch_batch_line);
    let fetch_max_bytes = r.get(&k::FETCH_MAX_BYTES)?;
    let journal_bucket = r.get(&k::JOURNAL_BUCKET)?;
    let inbox_prefix = r.get(&k::INBOX_PREFIX)?;
    // The journal and leases are as needed as the streams they describe: by default they
    // survive the loss of as many nodes as the most replicated stream does.
    let kv_replicas = match r.peek(&k::KV_REPLICAS, None)? {
        Some((v, source)) => {
            r.record(&k::KV_REPLICAS, k::KV_REPLICAS.name, &v, &source);
            v
        }
        None => {
            let v = md.replicas.max(hf.replicas);
            r.record(
                &k::KV_REPLICAS,
                k::KV_REPLICAS.name,
                &v,
                &super::Source::Default,
            );
            v
        }
    };
    subscriptions(r)?;
    let types = r.get(&k::NATS_TYPES)?;
    let uncaptured = types
        .iter()
        .find(|t| !md.captures(**t) && !hf.captures(**t));
    if let (NatsMode::JetStream, Some(t)) = (mode, uncaptured) {
        return Err(ConfigError::invalid(
            "nats.streams",
            format!(
                "no stream captures data type \"{t}\" (add \"{t}.>\" to a stream's subjects or remove it from nats.types)"
            ),
        ));
    }
    let auth = nats_auth(r, &urls)?;
    let tls = nats_tls(r, &urls)?;
    Ok(NatsConfig {
        urls,
        mode,
        streams,
        consumer_prefix,
        ack_wait,
        connect_timeout,
        max_ack_pending,
        fetch_batch,
        fetch_max_bytes,
        journal_bucket,
        inbox_prefix,
        kv_replicas,
        types,
        auth,
        tls,
    })
}

/// The one NATS auth method: the keys, or the credentials the URLs carry (the same in every
/// URL that has some). Two methods, a user without a password (or the reverse), or a file that
/// cannot be read or parsed fail naming the key; no reason quotes a secret.
fn nats_auth(r: &mut Resolver, urls: &[String]) -> Result<NatsAuth, ConfigError> {
    use super::nats_security::{self as sec, UrlCredentials};
    let non_empty_path = |p: Option<std::path::PathBuf>| p.filter(|p| !p.as_os_str().is_empty());
    let user = r.opt(&k::NATS_USER)?.filter(|u| !u.is_empty());
    let password = r.opt(&k::NATS_PASSWORD)?.filter(|p| !p.is_empty());
    let token = r.opt(&k::NATS_TOKEN)?.filter(|t| !t.is_empty());
    let seed = non_empty_path(r.opt(&k::NATS_NKEY_SEED_FILE)?);
    let creds = non_empty_path(r.opt(&k::NATS_CREDS_FILE)?);
    let mut in_urls = urls.iter().filter_map(|u| sec::url_credentials(u));
    let from_url = in_urls.next();
    if in_urls.any(|c| Some(c) != from_url) {
        return Err(r.fail(
            "nats.url",
            "the URLs carry different credentials; the client sends one set to every server (use nats.user/nats.password or nats.token instead)",
        ));
    }
    let mut methods: Vec<&str> = Vec::new();
    if user.is_some() || password.is_some() {
        methods.push("nats.user/nats.password");
    }
    if token.is_some() {
        methods.push("nats.token");
    }
    if seed.is_some() {
        methods.push("nats.nkey_seed_file");
    }
    if creds.is_some() {
        methods.push("nats.creds_file");
    }
    if from_url.is_some() {
        methods.push("nats.url");
    }
    if methods.len() > 1 {
        let (last, first) = methods.split_last().unwrap_or((&"", &[]));
        let key = match *last {
            "nats.user/nats.password" => "nats.password",
            k => k,
        };
        let reason = format!(
            "only one NATS auth method can be used, and {} is set too",
            first.join(" and ")
        );
        return Err(r.fail(key, reason));
    }
    let auth = match (user, password, token, seed, creds, from_url) {
        (Some(user), Some(password), ..) => NatsAuth::UserPassword {
            user,
            password,
            key: "nats.password",
        },
        (Some(_), None, ..) => {
            return Err(r.fail(
                "nats.user",
                "needs nats.password (MARKETPRISM_NATS_PASSWORD)",
            ));
        }
        (None, Some(_), ..) => {
            return Err(r.fail("nats.password", "needs nats.user (MARKETPRISM_NATS_USER)"));
        }
        (_, _, Some(token), ..) => NatsAuth::Token {
            token,
            key: "nats.token",
        },
        (_, _, _, Some(path), ..) => {
            sec::read_nkey_seed(&path).map_err(|e| r.fail("nats.nkey_seed_file", e))?;
            r.warnings
                .extend(sec::loose_permissions("nats.nkey_seed_file", &path));
            NatsAuth::NkeySeedFile(path)
        }
        (_, _, _, _, Some(path), _) => {
            sec::read_creds(&path).map_err(|e| r.fail("nats.creds_file", e))?;
            r.warnings
                .extend(sec::loose_permissions("nats.creds_file", &path));
            NatsAuth::CredsFile(path)
        }
        (.., Some(UrlCredentials::UserPassword(user, password))) => NatsAuth::UserPassword {
            user,
            password,
            key: "nats.url",
        },
        (.., Some(UrlCredentials::Token(token))) => NatsAuth::Token {
            token,
            key: "nats.url",
        },
        _ => NatsAuth::None,
    };
    let shown = match auth.key() {
        Some(key) => format!("{} ({key})", auth.method()),
        None => auth.method().to_string(),
    };
    r.show("nats.auth", shown);
    Ok(auth)
}

/// TLS towards NATS: the CA and the client certificate checked (they parse, the key is the
/// certificate's), `required` implied by anything that only makes sense over TLS.
fn nats_tls(r: &mut Resolver, urls: &[String]) -> Result<NatsTls, ConfigError> {
    use super::nats_security as sec;
    let non_empty_path = |p: Option<std::path::PathBuf>| p.filter(|p| !p.as_os_str().is_empty());
    let ca = non_empty_path(r.opt(&k::NATS_TLS_CA)?);
    let cert = non_empty_path(r.opt(&k::NATS_TLS_CERT)?);
    let key = non_empty_path(r.opt(&k::NATS_TLS_KEY)?);
    let first = r.get(&k::NATS_TLS_FIRST)?;
    let (required, source) = r
        .peek(&k::NATS_TLS_REQUIRED, None)?
        .unwrap_or((false, super::Source::Default));
    if let Some(ca) = &ca {
        sec::check_ca(ca).map_err(|e| r.fail("nats.tls.ca", e))?;
    }
    let client = match (cert, key) {
        (Some(cert), Some(key)) => {
            sec::check_client_cert(&cert, &key).map_err(|(k, e)| r.fail(k, e))?;
            r.warnings
                .extend(sec::loose_permissions("nats.tls.key", &key));
            Some((cert, key))
        }
        (Some(_), None) => {
            return Err(r.fail("nats.tls.cert", "needs nats.tls.key (its private key)"));
        }
        (None, Some(_)) => {
            return Err(r.fail(
                "nats.tls.key",
                "needs nats.tls.cert (the certificate it is the key of)",
            ));
        }
        (None, None) => None,
    };
    let implied =
        ca.is_some() || client.is_some() || first || urls.iter().any(|u| u.starts_with("tls://"));
    // Printed as in effect: implied by the other keys, it is true whatever was written.
    let required = required || implied;
    r.record(
        &k::NATS_TLS_REQUIRED,
        k::NATS_TLS_REQUIRED.name,
        &required,
        &source,
    );
    Ok(NatsTls {
        ca,
        client,
        first,
        required,
    })
}

/// The Python service's `subscriptions.<type>_enabled` switches → the list `nats.types` reads
/// under the name `subscriptions` (types switched off are not consumed).
fn subscriptions(r: &mut Resolver) -> Result<(), ConfigError> {
    use DataType::*;
    let switches: [(&str, &[DataType]); 7] = [
        ("orderbook", &[Orderbook]),
        ("trade", &[Trade]),
        ("funding_rate", &[FundingRate]),
        ("open_interest", &[OpenInterest]),
        ("liquidation", &[Liquidation]),
        ("lsr", &[LsrTopPosition, LsrAllAccount]),
        ("volatility_index", &[VolatilityIndex]),
    ];
    let (mut any, mut off) = (false, Vec::new());
    for (name, types) in switches {
        if let Some((on, _)) = r.peek(&k::SUBSCRIBED, Some(name))? {
            any = true;
            if !on {
                off.extend_from_slice(types);
            }
        }
    }
    if any {
        let on = DataType::ALL.into_iter().filter(|t| !off.contains(t));
        let names = on.map(|t| Value::String(t.as_str().into())).collect();
        r.computed.insert("subscriptions", Value::Sequence(names));
    }
    Ok(())
}

fn stream(r: &mut Resolver, which: &str, d: &StreamDefaults) -> Result<StreamConfig, ConfigError> {
    let at = Some(which);
    let subjects = d.subjects.iter().map(|s| s.to_string()).collect();
    let s = StreamConfig {
        name: r.value(&k::STREAM_NAME, at, &[], Some(d.name.to_string()))?,
        subjects: r.value(&k::STREAM_SUBJECTS, at, &[], Some(subjects))?,
        max_age: r.value(&k::STREAM_MAX_AGE, at, &[], Some(d.max_age))?,
        max_msgs: r.value(&k::STREAM_MAX_MSGS, at, &[], Some(d.max_msgs))?,
        max_bytes: r.value(&k::STREAM_MAX_BYTES, at, &[], NonZeroU64::new(d.max_bytes))?,
        duplicate_window: r.value(&k::DUPLICATE_WINDOW, at, &[], None)?,
        storage: r.value(&k::STORAGE, at, &[], None)?,
        discard: r.value(&k::DISCARD, at, &[], None)?,
        replicas: r.value(&k::REPLICAS, at, &[], None)?,
        partitions: u32::try_from(r.value(&k::PARTITIONS, at, &[], None)?.get()).unwrap_or(1),
    };
    if !s.max_age.is_zero() && s.duplicate_window > s.max_age {
        let key = format!("nats.streams.{which}.duplicate_window");
        return Err(r.fail(&key, "must not exceed max_age"));
    }
    Ok(s)
}

/// The rules of a cluster: a quorum needs one, and every stream must bound the age of a replay
/// (`max_age`) well inside the replicated tables' `replicated_deduplication_window_seconds`
/// (see `schema::needed_window_seconds`): a stream without an age limit could re-send a batch
/// whose hashes the replicas have already dropped, and it would be stored twice.
fn cluster_rules(
    r: &mut Resolver,
    ch: &ClickHouseConfig,
    nats: &NatsConfig,
) -> Result<(), ConfigError> {
    if ch.insert_quorum > 1 && ch.insert_quorum_timeout >= ch.insert_timeout {
        let reason = format!(
            "must be below clickhouse.insert_timeout ({}): the server must answer a quorum failure before the client gives up on the INSERT",
            super::value::format_duration(ch.insert_timeout)
        );
        return Err(r.fail("clickhouse.insert_quorum_timeout", reason));
    }
    if ch.cluster.is_none() {
        if ch.insert_quorum > 1 {
            return Err(r.fail(
                "clickhouse.insert_quorum",
                "needs clickhouse.cluster (replicas to reach a quorum on)",
            ));
        }
        return Ok(());
    }
    if nats.mode == NatsMode::Core {
        return Ok(()); // at-most-once: nothing is ever re-sent
    }
    for (which, s) in [
        ("market_data", &nats.streams.market_data),
        ("high_frequency", &nats.streams.high_frequency),
    ] {
        if let Err(reason) = crate::schema::replay_fits_window(s.max_age) {
            let key = format!("nats.streams.{which}.max_age");
            return Err(r.fail(&key, reason));
        }
    }
    Ok(())
}

fn cold_clickhouse(
    r: &mut Resolver,
    hot: &ClickHouseConfig,
    hot_tls: &TlsFiles,
) -> Result<Option<ColdClickHouseConfig>, ConfigError> {
    let host = r.peek(&k::COLD_HOST, None)?;
    let others = [
        r.peek(&k::COLD_HTTP_PORT, None)?.is_some(),
        r.peek(&k::COLD_SECURE, None)?.is_some(),
        r.peek(&k::COLD_USER, None)?.is_some(),
        r.peek(&k::COLD_PASSWORD, None)?.is_some(),
        r.peek(&k::COLD_TLS_CA, None)?.is_some(),
        r.peek(&k::COLD_TLS_CERT, None)?.is_some(),
        r.peek(&k::COLD_TLS_KEY, None)?.is_some(),
    ];
    let Some((host, source)) = host else {
        if others.contains(&true) {
            return Err(ConfigError::invalid(
                "cold_clickhouse.host",
                "required when another cold_clickhouse key (or COLD_CLICKHOUSE_* variable) is set",
            ));
        }
        r.show("cold_clickhouse.host", "(same server as clickhouse)");
        return Ok(None);
    };
    r.record(&k::COLD_HOST, "cold_clickhouse.host", &host, &source);
    let http_port = r.get(&k::COLD_HTTP_PORT)?;
    let secure = r.value(&k::COLD_SECURE, None, &[], Some(hot.secure))?;
    let user = r.value(&k::COLD_USER, None, &[], Some(hot.user.clone()))?;
    let password = r.value(&k::COLD_PASSWORD, None, &[], Some(hot.password.clone()))?;
    // Each TLS file defaults to the hot one, as user and password do.
    let mut file = |key: &Key<std::path::PathBuf>, hot: &Option<std::path::PathBuf>| match r
        .peek(key, None)?
    {
        Some((v, source)) => {
            r.record(key, key.name, &v, &source);
            Ok::<_, ConfigError>(Some(v))
        }
        None => {
            let shown = hot
                .as_ref()
                .map_or("(none)".into(), |p| p.display().to_string());
            r.show(key.name, shown);
            Ok(hot.clone())
        }
    };
    let files = TlsFiles {
        ca: file(&k::COLD_TLS_CA, &hot_tls.ca)?,
        cert: file(&k::COLD_TLS_CERT, &hot_tls.cert)?,
        key: file(&k::COLD_TLS_KEY, &hot_tls.key)?,
    };
    let tls = client_tls(r, "cold_clickhouse", &files, secure)?;
    r.warnings.extend(password_in_clear(
        "cold_clickhouse",
        &host,
        secure,
        &password,
    ));
    Ok(Some(ColdClickHouseConfig {
        host,
        http_port,
        secure,
        user,
        password,
        tls,
    }))
}

/// A warning when `section`'s password would cross the network in clear: plain HTTP to a host
/// that is not this machine.
fn password_in_clear(
    section: &str,
    host: &str,
    secure: bool,
    password: &super::Secret,
) -> Option<String> {
    let local = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    (!secure && !local && !password.is_empty()).then(|| {
        format!(
            "{section}.password: sent in clear over plain HTTP to {host}; set {section}.secure: true (HTTPS)"
        )
    })
}

/// The TLS files of `section` (`clickhouse`, `cold_clickhouse`) loaded and checked, the error
/// naming the key of the file at fault; `None` when none is set.
fn client_tls(
    r: &Resolver,
    section: &str,
    files: &TlsFiles,
    https: bool,
) -> Result<Option<ClientTls>, ConfigError> {
    if files.is_empty() {
        return Ok(None);
    }
    let named = |file: TlsFile| format!("{section}.tls.{}", file.key_suffix());
    if !https {
        let file = if files.ca.is_some() {
            TlsFile::Ca
        } else if files.cert.is_some() {
            TlsFile::Cert
        } else {
            TlsFile::Key
        };
        let reason = match section {
            "clickhouse" => {
                "needs HTTPS: set clickhouse.secure: true (or, for the embedded server, embedded.tls.cert)"
            }
            _ => "needs HTTPS: set cold_clickhouse.secure: true",
        };
        return Err(r.fail(&named(file), reason));
    }
    ClientTls::load(files)
        .map(Some)
        .map_err(|e| r.fail(&named(e.file()), e.to_string()))
}

/// The service's own client of the embedded server it starts must pass that server's TLS:
/// trust the CA of its certificate (the web roots never vouch for 127.0.0.1), and show a
/// client certificate when it requires one.
fn embedded_client_rules(
    r: &Resolver,
    embedded: &EmbeddedConfig,
    client: &TlsFiles,
) -> Result<(), ConfigError> {
    if embedded.tls_cert.is_some() && client.ca.is_none() {
        return Err(r.fail(
            "clickhouse.tls.ca",
            "must be set to the CA that signed embedded.tls.cert (the service connects to its embedded server over HTTPS)",
        ));
    }
    if embedded.tls_client_ca.is_some() && client.cert.is_none() {
        return Err(r.fail(
            "clickhouse.tls.cert",
            "must be set (with clickhouse.tls.key) to a certificate signed by embedded.tls.client_ca: the embedded server requires client certificates",
        ));
    }
    Ok(())
}

/// The `embedded` section: paths, credentials, TLS files (checked) and the rule that a
/// non-loopback address needs a password (when the service starts the embedded server).
fn embedded(r: &mut Resolver, host: &super::ClickHouseHost) -> Result<EmbeddedConfig, ConfigError> {
    let e = EmbeddedConfig {
        data_dir: r.get(&k::DATA_DIR)?,
        tools_dir: r.get(&k::TOOLS_DIR)?,
        listen: r.get(&k::LISTEN)?,
        user: r.get(&k::EMBEDDED_USER)?,
        password: r.get(&k::EMBEDDED_PASSWORD)?,
        tls_cert: r.opt(&k::EMBEDDED_TLS_CERT)?,
        tls_key: r.opt(&k::EMBEDDED_TLS_KEY)?,
        tls_client_ca: r.opt(&k::EMBEDDED_TLS_CLIENT_CA)?,
        allow_external: r.get(&k::ALLOW_EXTERNAL)?,
    };
    match (&e.tls_cert, &e.tls_key) {
        (Some(cert), Some(key)) => {
            crate::sink::tls::certificates(cert, TlsFile::Cert)
                .map_err(|err| r.fail("embedded.tls.cert", err.to_string()))?;
            crate::sink::tls::private_key(key)
                .map_err(|err| r.fail("embedded.tls.key", err.to_string()))?;
        }
        (Some(_), None) => return Err(r.fail("embedded.tls.cert", "needs embedded.tls.key too")),
        (None, Some(_)) => return Err(r.fail("embedded.tls.key", "needs embedded.tls.cert too")),
        (None, None) => {}
    }
    if let Some(ca) = &e.tls_client_ca {
        if e.tls_cert.is_none() {
            return Err(r.fail(
                "embedded.tls.client_ca",
                "needs embedded.tls.cert and embedded.tls.key (client certificates are a TLS feature)",
            ));
        }
        crate::sink::tls::certificates(ca, TlsFile::Ca)
            .map_err(|err| r.fail("embedded.tls.client_ca", err.to_string()))?;
    }
    if *host == super::ClickHouseHost::Embedded
        && !e.listen.ip().is_loopback()
        && e.password.is_empty()
    {
        let reason = format!(
            "{} is reachable from other machines: set embedded.password (MARKETPRISM_EMBEDDED_PASSWORD) or listen on 127.0.0.1",
            e.listen
        );
        return Err(r.fail("embedded.listen", reason));
    }
    Ok(e)
}

/// Per type: `batch.types.<type>.<key>` > the Python service's key for that type >
/// `batch.<key>` > the type's default.
fn batch(r: &mut Resolver) -> Result<PerType<TypeBatch>, ConfigError> {
    PerType::try_from_fn(|t| {
        let at = Some(t.as_str());
        let d = batch_defaults(t);
        let (python_rows, python_age): (&[&str], &[&str]) = match t {
            DataType::Trade => (&["batch.trade_batch_size"], &["batch.flush_interval"]),
            DataType::Orderbook => (
                &["batch.max_batch_size"],
                &["batch.orderbook_flush_interval"],
            ),
            _ => (&["batch.low_freq_batch_size"], &[]),
        };
        let rows_keys = [python_rows, &["batch.max_rows"]].concat();
        let max_rows = r.value(&k::MAX_ROWS, at, &rows_keys, NonZeroUsize::new(d.max_rows))?;
        let max_bytes = r.value(
            &k::MAX_BYTES,
            at,
            &["batch.max_bytes"],
            NonZeroU64::new(d.max_bytes),
        )?;
        let age_keys = [python_age, &["batch.max_age"]].concat();
        let max_age = r.value(&k::MAX_AGE, at, &age_keys, Some(d.max_age))?;
        let queue = NonZeroUsize::new(max_rows.get().saturating_mul(DEFAULT_MAX_QUEUE_FACTOR));
        let max_queue = r.value(&k::MAX_QUEUE, at, &[], queue)?;
        if max_queue < max_rows {
            let key = format!("batch.types.{t}.max_queue");
            return Err(r.fail(
                &key,
                format!("must be >= max_rows ({max_queue} < {max_rows})"),
            ));
        }
        let queue_bytes = max_bytes
            .get()
            .saturating_mul(DEFAULT_MAX_QUEUE_BYTES_FACTOR);
        let max_queue_bytes =
            r.value(&k::MAX_QUEUE_BYTES, at, &[], NonZeroU64::new(queue_bytes))?;
        if max_queue_bytes < max_bytes {
            let key = format!("batch.types.{t}.max_queue_bytes");
            let reason = format!("must be >= max_bytes ({max_queue_bytes} < {max_bytes})");
            return Err(r.fail(&key, reason));
        }
        Ok(TypeBatch {
            max_rows,
            max_bytes,
            max_age,
            max_queue,
            max_queue_bytes,
        })
    })
}
