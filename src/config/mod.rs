//! Configuration: one typed tree read from an optional YAML file and the environment, validated
//! once, before any port is bound.
//!
//! Every key is declared once, in `keys::k`: its dotted name, kind, environment variables, the
//! Python service's file keys for it, default, rule and doc line. `resolve` takes each key
//! through the same path (environment variable > file > default; the Python service's keys
//! mapped onto ours; unknown file keys refused with a suggestion) and records where each value
//! came from and how `config` prints it; `keys::build` assembles the [`Config`], whose fields
//! are typed (`Duration`, `NonZero*`, `SocketAddr`, enums) and already checked (see
//! `docs/configuration.md`).
//!
//! This module never reads the process environment itself except in [`process_env`], never
//! touches the network and never logs: warnings are returned to the caller. The only files it
//! reads are the configuration file and those the NATS auth and TLS keys name, to check them
//! ([`nats_security`]).

pub mod defaults;
mod error;
mod keys;
pub mod nats_security;
mod resolve;
mod value;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::num::{NonZeroU64, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::model::DataType;
use crate::sink::tls::ClientTls;

pub use error::ConfigError;
pub use resolve::render;
pub use value::parse_duration;

/// The validated configuration. Every field holds a value that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// NATS connection, streams and consumers.
    pub nats: NatsConfig,
    /// The (hot) ClickHouse server.
    pub clickhouse: ClickHouseConfig,
    /// A separate server for the cold database; `None` = the hot server.
    pub cold_clickhouse: Option<ColdClickHouseConfig>,
    /// The embedded ClickHouse and nats-server children.
    pub embedded: EmbeddedConfig,
    /// Flush thresholds per data type.
    pub batch: PerType<TypeBatch>,
    /// Backoff of retriable failures (NATS and ClickHouse).
    pub retry: RetryConfig,
    /// The operations HTTP surface.
    pub http: HttpConfig,
    /// Logging.
    pub log: LogConfig,
    /// Hot → cold migration.
    pub migration: MigrationConfig,
    /// Data-quality detection.
    pub quality: QualityConfig,
    /// Time allowed after a stop signal to flush, insert and ack before exiting.
    pub shutdown_grace: Duration,
}

/// The result of [`Config::load`]: the configuration, where each value came from, and warnings.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The validated configuration.
    pub config: Config,
    /// Dotted key (as printed by [`render`]) → where its value came from. Keys not listed are
    /// defaults.
    pub sources: BTreeMap<String, Source>,
    /// Things the operator should know that do not stop the service (e.g. ignored Python service keys).
    pub warnings: Vec<String>,
    /// Every key as [`render`] prints it: dotted key and value (secrets masked), in print order.
    pub entries: Vec<(String, String)>,
    /// Dotted key → each secret its value holds, as the key's kind reports it (every key of a
    /// secret kind: `PASSWORD`, `TOKEN`, `NATS_URLS`' credentials, `SECRET_FILE`).
    pub secrets: Vec<(String, SecretItem)>,
}

impl Loaded {
    /// Where the value of a dotted key came from (`Default` when not recorded).
    pub fn source(&self, key: &str) -> &Source {
        self.sources.get(key).unwrap_or(&Source::Default)
    }

    /// Every secret text of the configuration, for `crate::redact::register`: the values, and
    /// the key material of each secret file — every line of it except PEM armour (`-----…`),
    /// so a private key, an nkey seed and both parts of a creds file (JWT and seed) are
    /// covered. A file that cannot be read adds nothing (whoever uses it reports the error).
    pub fn secret_texts(&self) -> Vec<Secret> {
        let mut texts = Vec::new();
        for (_, item) in &self.secrets {
            match item {
                SecretItem::Value(s) if !s.is_empty() => texts.push(s.clone()),
                SecretItem::Value(_) => {}
                SecretItem::File(path) => {
                    use std::io::Read;
                    // Key material is small; a larger file is read up to this much.
                    const MAX_SECRET_FILE: u64 = 1 << 20;
                    let mut content = Vec::new();
                    let read = std::fs::File::open(path)
                        .and_then(|f| f.take(MAX_SECRET_FILE).read_to_end(&mut content));
                    if read.is_err() {
                        continue;
                    }
                    let content = String::from_utf8_lossy(&content);
                    let lines = content.lines().map(str::trim);
                    texts.extend(
                        lines
                            .filter(|l| !l.is_empty() && !l.starts_with("---"))
                            .map(Secret::new),
                    );
                }
            }
        }
        texts
    }
}

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The built-in default (or a value derived from other values).
    Default,
    /// The YAML file (possibly through a Python service key mapped onto ours).
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(path) => write!(f, "file {}", path.display()),
            Source::Env(var) => write!(f, "env {var}"),
        }
    }
}

impl Config {
    /// Reads the optional YAML file and the environment (through `env`), applies defaults and
    /// validates everything. `env` is injected so that tests never touch the process
    /// environment; pass [`process_env`] in production.
    pub fn load(
        path: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Loaded, ConfigError> {
        resolve::load(path, env)
    }

    /// The configuration with no file and an empty environment: every default.
    pub fn defaults() -> Result<Config, ConfigError> {
        Ok(Config::load(None, &|_| None)?.config)
    }

    /// Where the hot database lives: base URL and credentials.
    pub fn hot_endpoint(&self) -> ClickHouseEndpoint {
        ClickHouseEndpoint {
            base_url: self.clickhouse.base_url(&self.embedded),
            user: self.clickhouse.user.clone(),
            password: self.clickhouse.password.clone(),
            tls: self.clickhouse.tls.clone(),
            database: self.clickhouse.hot_db.clone(),
        }
    }

    /// Where the cold database lives: `cold_clickhouse` if set, else the hot server.
    pub fn cold_endpoint(&self) -> ClickHouseEndpoint {
        match &self.cold_clickhouse {
            Some(cold) => ClickHouseEndpoint {
                base_url: base_url(cold.secure, &cold.host, cold.http_port),
                user: cold.user.clone(),
                password: cold.password.clone(),
                tls: cold.tls.clone(),
                database: self.clickhouse.cold_db.clone(),
            },
            None => ClickHouseEndpoint {
                database: self.clickhouse.cold_db.clone(),
                ..self.hot_endpoint()
            },
        }
    }
}

/// The environment variables that may hold a secret: those of every key whose kind holds
/// secrets (passwords, tokens, the NATS URL). The embedded children are started without them.
pub fn secret_variables() -> Vec<&'static str> {
    resolve::secret_variables()
}

/// The process environment, for [`Config::load`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// A string that must not be printed: `Debug` and [`render`] show `****` (or `(empty)`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `****`, or `(empty)` for an empty secret.
    pub fn masked(&self) -> &'static str {
        if self.0.is_empty() { "(empty)" } else { "****" }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.masked())
    }
}

/// Masked, as `Debug`: a secret formatted into a message never shows its value.
impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.masked())
    }
}

/// Masked: a secret serialized into JSON (a report, a log field) never shows its value.
impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.masked())
    }
}

/// Something the configuration holds that must never be printed, as its key's kind reports
/// it (`Loaded::secrets`): the binary registers each with `crate::redact`.
#[derive(Debug, Clone, PartialEq)]
pub enum SecretItem {
    /// A value: a password, a token, the credentials of a NATS URL.
    Value(Secret),
    /// A file whose content is secret (a private key, an nkey seed, a creds file); the path
    /// itself is not secret.
    File(PathBuf),
}

/// One value per data type, looked up with an exhaustive match (no map, no missing entry).
#[derive(Debug, Clone, PartialEq)]
pub struct PerType<T> {
    trade: T,
    orderbook: T,
    funding_rate: T,
    open_interest: T,
    liquidation: T,
    lsr_top_position: T,
    lsr_all_account: T,
    volatility_index: T,
}

impl<T> PerType<T> {
    /// Builds the value of each type with `f`.
    pub fn try_from_fn<E>(mut f: impl FnMut(DataType) -> Result<T, E>) -> Result<Self, E> {
        Ok(PerType {
            trade: f(DataType::Trade)?,
            orderbook: f(DataType::Orderbook)?,
            funding_rate: f(DataType::FundingRate)?,
            open_interest: f(DataType::OpenInterest)?,
            liquidation: f(DataType::Liquidation)?,
            lsr_top_position: f(DataType::LsrTopPosition)?,
            lsr_all_account: f(DataType::LsrAllAccount)?,
            volatility_index: f(DataType::VolatilityIndex)?,
        })
    }

    /// The value for `data_type`.
    pub fn get(&self, data_type: DataType) -> &T {
        match data_type {
            DataType::Trade => &self.trade,
            DataType::Orderbook => &self.orderbook,
            DataType::FundingRate => &self.funding_rate,
            DataType::OpenInterest => &self.open_interest,
            DataType::Liquidation => &self.liquidation,
            DataType::LsrTopPosition => &self.lsr_top_position,
            DataType::LsrAllAccount => &self.lsr_all_account,
            DataType::VolatilityIndex => &self.volatility_index,
        }
    }

    /// `(type, value)` for the eight types, in [`DataType::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (DataType, &T)> {
        DataType::ALL.into_iter().map(move |t| (t, self.get(t)))
    }
}

/// How messages are received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatsMode {
    /// Durable pull consumers on JetStream streams; acked after the insert (at-least-once,
    /// exactly-once in ClickHouse through dedup tokens).
    JetStream,
    /// Plain core-NATS subscriptions, like the Python service's trade/orderbook path: no stream, no ack,
    /// **at-most-once** — messages published while the service is down or slow are lost.
    Core,
}

impl NatsMode {
    /// `jetstream` or `core`.
    pub const fn as_str(self) -> &'static str {
        match self {
            NatsMode::JetStream => "jetstream",
            NatsMode::Core => "core",
        }
    }
}

/// NATS settings.
#[derive(Debug, Clone, PartialEq)]
pub struct NatsConfig {
    /// Server URLs (`nats://` or `tls://`), at least one.
    pub urls: Vec<String>,
    /// JetStream (default) or core NATS.
    pub mode: NatsMode,
    /// The streams this service ensures exist and consumes from.
    pub streams: Streams,
    /// Durable consumer name = prefix + data type (e.g. `marketprism_storage_trade`).
    pub consumer_prefix: String,
    /// How long JetStream waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// How long a TCP/TLS connect to one NATS server may take (async-nats `connection_timeout`).
    pub connect_timeout: Duration,
    /// JetStream `max_ack_pending` of each type's consumer.
    pub max_ack_pending: PerType<NonZeroU64>,
    /// Messages asked for per pull request.
    pub fetch_batch: NonZeroUsize,
    /// Most bytes one pull request may return (≥ 1 MiB, NATS's default largest message).
    pub fetch_max_bytes: NonZeroU64,
    /// Key-value bucket of the insert journal.
    pub journal_bucket: String,
    /// Subject prefix of reply inboxes (`nats.inbox_prefix`).
    pub inbox_prefix: String,
    /// Replicas of the journal and lease buckets (1 to 5; default: the streams' largest).
    pub kv_replicas: NonZeroUsize,
    /// The data types this instance consumes (no duplicates, in [`DataType::ALL`] order).
    pub types: Vec<DataType>,
    /// How the service authenticates (one method at most; the URLs' credentials included).
    pub auth: NatsAuth,
    /// TLS towards the servers.
    pub tls: NatsTls,
}

/// How the service authenticates to NATS: one method at most, checked at start (the files
/// read and parsed, never printed).
#[derive(Debug, Clone, PartialEq)]
pub enum NatsAuth {
    /// No credentials (a server without authorization).
    None,
    /// `nats.user` + `nats.password`, or `user:pass@` in `nats.url` (`key` says which).
    UserPassword {
        /// The user.
        user: String,
        /// Its password.
        password: Secret,
        /// The key an error names: `nats.password` or `nats.url`.
        key: &'static str,
    },
    /// `nats.token`, or `token@` in `nats.url` (`key` says which).
    Token {
        /// The token.
        token: Secret,
        /// The key an error names: `nats.token` or `nats.url`.
        key: &'static str,
    },
    /// `nats.nkey_seed_file`: a file holding a user nkey seed (`SU…`).
    NkeySeedFile(PathBuf),
    /// `nats.creds_file`: a credentials file (user JWT + seed), decentralized auth.
    CredsFile(PathBuf),
}

impl NatsAuth {
    /// The key an authentication error names (`None`: no credentials configured).
    pub fn key(&self) -> Option<&'static str> {
        match self {
            NatsAuth::None => None,
            NatsAuth::UserPassword { key, .. } | NatsAuth::Token { key, .. } => Some(key),
            NatsAuth::NkeySeedFile(_) => Some("nats.nkey_seed_file"),
            NatsAuth::CredsFile(_) => Some("nats.creds_file"),
        }
    }

    /// The method's name, as `config` and the logs show it.
    pub fn method(&self) -> &'static str {
        match self {
            NatsAuth::None => "none",
            NatsAuth::UserPassword { .. } => "user/password",
            NatsAuth::Token { .. } => "token",
            NatsAuth::NkeySeedFile(_) => "nkey",
            NatsAuth::CredsFile(_) => "creds (JWT)",
        }
    }
}

/// TLS towards the NATS servers. The files are checked at start and read again by the client
/// at every (re)connect, so renewed certificates are picked up without a restart.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NatsTls {
    /// PEM file of the CA(s) the servers' certificates must chain to (`None`: the system's).
    pub ca: Option<PathBuf>,
    /// Client certificate chain and its key (PEM), for servers that verify clients.
    pub client: Option<(PathBuf, PathBuf)>,
    /// TLS before the server's INFO (servers configured with `handshake_first`).
    pub first: bool,
    /// Refuse a server that does not offer TLS: `nats.tls.required`, or implied by a
    /// `tls://` URL, a CA, a client certificate or `first`.
    pub required: bool,
}

impl NatsConfig {
    /// The server URLs joined with commas, as configured, credentials included: never print
    /// it ([`NatsConfig::url_redacted`] is the printable form; the client takes the list,
    /// [`NatsConfig::urls`], and reads a joined text as one malformed address).
    pub fn url(&self) -> String {
        self.urls.join(",")
    }

    /// The server URLs joined with commas, each one's password replaced by `***`
    /// (`nats://user:***@host:4222`), for messages and logs.
    pub fn url_redacted(&self) -> String {
        self.urls
            .iter()
            .map(|u| value::redact_nats_url(u))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The server URLs as the client is given them: without their credentials, which are
    /// in [`NatsConfig::auth`] (the client does not read a URL's `user:pass@`).
    pub fn server_urls(&self) -> Vec<String> {
        self.urls
            .iter()
            .map(|u| nats_security::without_credentials(u))
            .collect()
    }

    /// The durable consumer name for `data_type`.
    pub fn durable_name(&self, data_type: DataType) -> String {
        format!("{}{}", self.consumer_prefix, data_type.as_str())
    }

    /// Whether this instance consumes `data_type`.
    pub fn consumes(&self, data_type: DataType) -> bool {
        self.types.contains(&data_type)
    }

    /// The stream that captures `data_type` (the first whose subjects start with `<type>.`).
    pub fn stream_for(&self, data_type: DataType) -> Option<&StreamConfig> {
        [&self.streams.market_data, &self.streams.high_frequency]
            .into_iter()
            .find(|s| s.captures(data_type))
    }
}

/// The two streams.
#[derive(Debug, Clone, PartialEq)]
pub struct Streams {
    /// The Python service's `MARKET_DATA` (six low-frequency types).
    pub market_data: StreamConfig,
    /// Our `MARKET_DATA_HF` (trades and order books).
    pub high_frequency: StreamConfig,
}

/// A JetStream stream definition.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamConfig {
    /// Stream name (no spaces, dots, `*`, `>`).
    pub name: String,
    /// Subjects captured.
    pub subjects: Vec<String>,
    /// Messages older than this are dropped.
    pub max_age: Duration,
    /// Message count limit.
    pub max_msgs: i64,
    /// Size limit in bytes.
    pub max_bytes: NonZeroU64,
    /// `Nats-Msg-Id` dedup window.
    pub duplicate_window: Duration,
    /// File or memory.
    pub storage: StreamStorage,
    /// What happens when a limit is hit.
    pub discard: Discard,
    /// Number of replicas.
    pub replicas: NonZeroUsize,
    /// Partitions per type when we create the stream (1: none; `source::partition`).
    pub partitions: u32,
}

impl StreamConfig {
    /// Whether one of the subjects belongs to `data_type`.
    pub fn captures(&self, data_type: DataType) -> bool {
        let prefix = format!("{}.", data_type.as_str());
        self.subjects.iter().any(|s| s.starts_with(&prefix))
    }
}

/// Stream storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStorage {
    /// On disk.
    File,
    /// In memory.
    Memory,
}

/// Stream discard policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discard {
    /// Drop the oldest messages.
    Old,
    /// Refuse new messages.
    New,
}

/// Where ClickHouse runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClickHouseHost {
    /// The service starts its embedded ClickHouse (see [`EmbeddedConfig`]).
    Embedded,
    /// An external server (host name or address).
    Server(String),
}

/// Insert compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// No compression (default: over loopback LZ4 costs more than it saves).
    None,
    /// LZ4.
    Lz4,
}

/// The (hot) ClickHouse server and databases.
#[derive(Debug, Clone, PartialEq)]
pub struct ClickHouseConfig {
    /// Embedded or an external host.
    pub host: ClickHouseHost,
    /// HTTP port of an external server (the embedded one uses `embedded.listen`).
    pub http_port: u16,
    /// HTTPS instead of HTTP.
    pub secure: bool,
    /// Hot database.
    pub hot_db: String,
    /// Cold database.
    pub cold_db: String,
    /// User.
    pub user: String,
    /// Password.
    pub password: Secret,
    /// HTTPS with a private CA and/or a client certificate (`clickhouse.tls.*`), loaded and
    /// checked at start; `None`: the web roots, no client certificate.
    pub tls: Option<ClientTls>,
    /// Insert compression.
    pub compression: Compression,
    /// Time limit of one INSERT request.
    pub insert_timeout: Duration,
    /// The cluster of the `ON CLUSTER` schema (`remote_servers`); `None`: one server.
    pub cluster: Option<String>,
    /// Replicas of a shard that must hold a block before its INSERT returns (`< 2`: off).
    pub insert_quorum: u32,
    /// `insert_quorum_parallel`: quorum INSERTs into one table may overlap.
    pub insert_quorum_parallel: bool,
    /// `insert_quorum_timeout`.
    pub insert_quorum_timeout: Duration,
}

impl ClickHouseConfig {
    /// Whether the service must start its embedded ClickHouse.
    pub fn is_embedded(&self) -> bool {
        self.host == ClickHouseHost::Embedded
    }

    /// The schema flavour: `ON CLUSTER` with replicated tables when `clickhouse.cluster` is set.
    pub fn layout(&self) -> crate::schema::Layout {
        match &self.cluster {
            Some(c) => crate::schema::Layout::Cluster(c.clone()),
            None => crate::schema::Layout::Single,
        }
    }

    /// `http(s)://host:port`, or `http(s)://<embedded.listen>` for the embedded server (HTTPS
    /// when `embedded.tls.cert` is set).
    pub fn base_url(&self, embedded: &EmbeddedConfig) -> String {
        match &self.host {
            ClickHouseHost::Embedded => {
                let scheme = if embedded.tls_cert.is_some() {
                    "https"
                } else {
                    "http"
                };
                format!("{scheme}://{}", embedded.listen)
            }
            ClickHouseHost::Server(host) => base_url(self.secure, host, self.http_port),
        }
    }
}

fn base_url(secure: bool, host: &str, port: u16) -> String {
    let scheme = if secure { "https" } else { "http" };
    // An IPv6 literal needs brackets in a URL.
    if host.contains(':') && !host.starts_with('[') {
        format!("{scheme}://[{host}]:{port}")
    } else {
        format!("{scheme}://{host}:{port}")
    }
}

/// A separate ClickHouse server for the cold database.
#[derive(Debug, Clone, PartialEq)]
pub struct ColdClickHouseConfig {
    /// Host name or address.
    pub host: String,
    /// HTTP port.
    pub http_port: u16,
    /// HTTPS (defaults to `clickhouse.secure`).
    pub secure: bool,
    /// User (defaults to `clickhouse.user`).
    pub user: String,
    /// Password (defaults to `clickhouse.password`).
    pub password: Secret,
    /// TLS files (each defaults to the `clickhouse.tls` one), loaded and checked at start.
    pub tls: Option<ClientTls>,
}

/// A resolved ClickHouse endpoint, ready for a client.
#[derive(Debug, Clone, PartialEq)]
pub struct ClickHouseEndpoint {
    /// `http(s)://host:port`.
    pub base_url: String,
    /// User.
    pub user: String,
    /// Password.
    pub password: Secret,
    /// TLS client configuration, if any.
    pub tls: Option<ClientTls>,
    /// Database.
    pub database: String,
}

/// The embedded children.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddedConfig {
    /// Where the embedded ClickHouse (and nats-server) keep their data.
    pub data_dir: PathBuf,
    /// Directory holding `bin/python` (with chDB) and `bin/nats-server`.
    pub tools_dir: PathBuf,
    /// Address the embedded ClickHouse HTTP server listens on.
    pub listen: SocketAddr,
    /// The one user it accepts when it has a password.
    pub user: String,
    /// The password it requires (empty: none).
    pub password: Secret,
    /// Its certificate chain: HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// The key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// The CA client certificates must be signed by (mutual TLS).
    pub tls_client_ca: Option<PathBuf>,
    /// Table functions, engines and clauses that reach outside the engine are allowed.
    pub allow_external: bool,
}

impl EmbeddedConfig {
    /// `<tools_dir>/bin/python`.
    pub fn python(&self) -> PathBuf {
        self.tools_dir.join("bin").join("python")
    }

    /// `<tools_dir>/bin/nats-server`.
    pub fn nats_server(&self) -> PathBuf {
        self.tools_dir.join("bin").join("nats-server")
    }
}

/// Flush thresholds and buffer bound of one data type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeBatch {
    /// Flush when this many rows are buffered.
    pub max_rows: NonZeroUsize,
    /// Flush when the buffered rows take this many bytes.
    pub max_bytes: NonZeroU64,
    /// Flush when the oldest buffered row is this old (never zero).
    pub max_age: Duration,
    /// Rows buffered + in flight before the consumer stops fetching (≥ `max_rows`).
    pub max_queue: NonZeroUsize,
    /// Payload bytes buffered + in flight before the consumer stops fetching (≥ `max_bytes`).
    pub max_queue_bytes: NonZeroU64,
}

/// Backoff of retriable failures. There is no retry limit: retriable errors are retried
/// forever and nothing is dropped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryConfig {
    /// First wait.
    pub initial_backoff: Duration,
    /// Largest wait.
    pub max_backoff: Duration,
    /// Each wait is the previous one times this (≥ 1).
    pub multiplier: f64,
}

impl RetryConfig {
    /// The one retry schedule every NATS and ClickHouse loop walks.
    pub fn policy(&self) -> crate::retry::Policy {
        crate::retry::Policy {
            initial: self.initial_backoff,
            multiplier: self.multiplier,
            cap: self.max_backoff,
        }
    }
}

/// The operations HTTP surface.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    /// Port of the ops HTTP server.
    pub port: u16,
    /// Address it binds.
    pub bind: IpAddr,
    /// The ops token (every endpoint but `/health`), if set; required off loopback.
    pub token: Option<Secret>,
    /// A second port serving only `/metrics` (the Python service's `metrics_port`), if set.
    pub metrics_port: Option<u16>,
}

impl HttpConfig {
    /// `bind:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.port)
    }

    /// `bind:metrics_port`, if a metrics port is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_port.map(|p| SocketAddr::new(self.bind, p))
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Logging.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// A level (`info`) or a filter directive (`marketprism_storage=debug,info`).
    pub level: String,
    /// `RUST_LOG`, if set: it wins over `level`.
    pub rust_log: Option<String>,
    /// Pretty or JSON.
    pub format: LogFormat,
}

impl LogConfig {
    /// The filter to give `tracing_subscriber::EnvFilter`: `RUST_LOG` if set, else `level`.
    pub fn filter(&self) -> &str {
        self.rust_log.as_deref().unwrap_or(&self.level)
    }
}

/// Data-quality detection (`crate::quality`).
#[derive(Debug, Clone, PartialEq)]
pub struct QualityConfig {
    /// Whether the pipeline runs the detectors and stores `data_quality_events`.
    pub enabled: bool,
    /// A price further than this fraction from the recent median is a jump.
    pub price_jump: f64,
    /// Markets with sequential trade ids: `exchange` or `exchange/market_type`.
    pub sequential_ids: Vec<String>,
}

impl QualityConfig {
    /// The detectors' settings.
    pub fn settings(&self) -> crate::quality::QualitySettings {
        crate::quality::QualitySettings {
            sequential_ids: self.sequential_ids.clone(),
            price_jump: self.price_jump,
            ..Default::default()
        }
    }
}

/// Hot → cold migration.
#[derive(Debug, Clone, PartialEq)]
pub struct MigrationConfig {
    /// Whether `run` also runs the migration loop in-process (`run --migrate` forces it on).
    pub enabled: bool,
    /// Span of one migration window.
    pub window: Duration,
    /// At most this many rows per table per round.
    pub batch_limit: NonZeroU64,
    /// Only symbols starting with this.
    pub symbol_prefix: Option<String>,
    /// Only this exchange.
    pub exchange: Option<String>,
    /// Only this market type.
    pub market_type: Option<String>,
    /// Count only; write and delete nothing.
    pub dry_run: bool,
    /// Time between rounds.
    pub interval: Duration,
    /// Rows younger than this are left in hot for a later round.
    pub lag: Duration,
    /// Already-migrated windows re-verified each round.
    pub recheck_windows: u32,
}
