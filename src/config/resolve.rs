//! Step two: file values + environment + defaults → the validated [`Config`].
//!
//! For every key the environment variable wins over the file, the file over the default. A Python service
//! key mapped onto one of ours loses against our own key (with a warning). Each value's origin is
//! recorded in `sources`; a value that breaks a rule is reported under the variable it came from
//! (`env X: …`) or under its dotted key.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::num::{NonZeroU64, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::defaults::*;
use super::raw::{self, RawConfig, RawStream, RawTypeBatch};
use super::value::{
    DurationValue, PortValue, SizeValue, parse_bool, parse_count, parse_port, seconds_to_duration,
};
use super::{
    ClickHouseConfig, ClickHouseHost, ColdClickHouseConfig, Compression, Config, ConfigError,
    Discard, EmbeddedConfig, HttpConfig, Loaded, LogConfig, LogFormat, MigrationConfig, NatsConfig,
    NatsMode, PerType, QualityConfig, RetryConfig, Secret, Source, StreamConfig, StreamStorage,
    Streams, TypeBatch,
};
use crate::model::DataType;

/// Reads, parses and validates; see [`Config::load`].
pub(super) fn load(
    path: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigError> {
    let mut r = Resolver {
        file: path.map(Path::to_path_buf),
        env,
        sources: BTreeMap::new(),
        warnings: Vec::new(),
    };
    let raw = match path {
        Some(path) => r.read_file(path)?,
        None => RawConfig::default(),
    };
    let config = r.build(raw)?;
    Ok(Loaded {
        config,
        sources: r.sources,
        warnings: r.warnings,
    })
}

struct Resolver<'a> {
    file: Option<PathBuf>,
    env: &'a dyn Fn(&str) -> Option<String>,
    sources: BTreeMap<String, Source>,
    warnings: Vec<String>,
}

/// Variables for which an empty value is a value (an empty password), not "unset".
const EMPTY_IS_A_VALUE: [&str; 2] = ["CLICKHOUSE_PASSWORD", "COLD_CLICKHOUSE_PASSWORD"];

fn text(s: &str) -> Result<String, String> {
    Ok(s.to_string())
}

impl Resolver<'_> {
    fn read_file(&mut self, path: &Path) -> Result<RawConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let doc: serde_yaml::Value = serde_yaml::from_str(&text)
            .map_err(|e| ConfigError::from_yaml(path.to_path_buf(), &e))?;
        // An empty file (or one with only comments) is an empty configuration.
        if doc.is_null() {
            return Ok(RawConfig::default());
        }
        let raw: RawConfig = serde_yaml::from_str(&text)
            .map_err(|e| ConfigError::from_yaml(path.to_path_buf(), &e))?;
        for (key, why) in raw::PYTHON_IGNORED {
            if raw::has_key(&doc, key) {
                self.warn(format!("Python service key \"{key}\" is ignored: {why}"));
            }
        }
        Ok(raw)
    }

    fn warn(&mut self, message: String) {
        let message = match &self.file {
            Some(path) => format!("config file {}: {message}", path.display()),
            None => message,
        };
        self.warnings.push(message);
    }

    fn file_source(&self) -> Source {
        self.file
            .as_ref()
            .map_or(Source::Default, |p| Source::File(p.clone()))
    }

    /// The first of `vars` that is set (and not empty, unless empty is a value for it).
    fn env_var(&self, vars: &[&str]) -> Option<(String, String)> {
        vars.iter().find_map(|var| {
            let value = (self.env)(var)?;
            (!value.trim().is_empty() || EMPTY_IS_A_VALUE.contains(var))
                .then(|| (var.to_string(), value))
        })
    }

    /// Env (first of `vars`, parsed) > `file` > `None`; records the source under `key`.
    fn value<T>(
        &mut self,
        key: &str,
        vars: &[&str],
        parse: impl Fn(&str) -> Result<T, String>,
        file: Option<T>,
    ) -> Result<Option<T>, ConfigError> {
        if let Some((var, value)) = self.env_var(vars) {
            let parsed = parse(&value).map_err(|reason| ConfigError::Env {
                var: var.clone(),
                reason,
            })?;
            self.sources.insert(key.to_string(), Source::Env(var));
            return Ok(Some(parsed));
        }
        Ok(self.file_value(key, file))
    }

    /// `file` if set, recording the file as the source of `key`.
    fn file_value<T>(&mut self, key: &str, file: Option<T>) -> Option<T> {
        if file.is_some() {
            let source = self.file_source();
            self.sources.insert(key.to_string(), source);
        }
        file
    }

    /// Our key if set, else the Python service's; a warning when both are set.
    fn prefer<T>(&mut self, ours: (&str, Option<T>), theirs: (&str, Option<T>)) -> Option<T> {
        match (ours.1, theirs.1) {
            (Some(v), Some(_)) => {
                self.warn(format!(
                    "Python service key \"{}\" is ignored: \"{}\" is set",
                    theirs.0, ours.0
                ));
                Some(v)
            }
            (ours, theirs) => ours.or(theirs),
        }
    }

    /// Reports a broken rule under the env variable the value came from, else under `key`.
    fn check<T>(&self, key: &str, result: Result<T, String>) -> Result<T, ConfigError> {
        result.map_err(|reason| match self.sources.get(key) {
            Some(Source::Env(var)) => ConfigError::Env {
                var: var.clone(),
                reason,
            },
            _ => ConfigError::invalid(key, reason),
        })
    }

    fn build(&mut self, raw: RawConfig) -> Result<Config, ConfigError> {
        let batch = self.batch(&raw)?;
        let nats = self.nats(&raw, &batch)?;
        let clickhouse = self.clickhouse(&raw)?;
        let cold_clickhouse = self.cold_clickhouse(&raw, &clickhouse)?;
        Ok(Config {
            nats,
            clickhouse,
            cold_clickhouse,
            embedded: self.embedded(&raw)?,
            batch,
            retry: self.retry(&raw)?,
            http: self.http(&raw)?,
            log: self.log(&raw)?,
            migration: self.migration(&raw)?,
            quality: self.quality(&raw)?,
            shutdown_grace: {
                let key = "shutdown.grace_period";
                let v = self.file_value(key, raw.shutdown.grace_period.map(|d| d.0));
                v.unwrap_or(DEFAULT_SHUTDOWN_GRACE)
            },
        })
    }

    fn nats(
        &mut self,
        raw: &RawConfig,
        batch: &PerType<TypeBatch>,
    ) -> Result<NatsConfig, ConfigError> {
        let n = &raw.nats;
        let servers = n
            .servers
            .as_ref()
            .filter(|s| !s.is_empty())
            .map(|s| s.join(","));
        let file_url = self.prefer(("nats.url", n.url.clone()), ("nats.servers", servers));
        let url = self
            .value(
                "nats.url",
                &["MARKETPRISM_NATS_URL", "NATS_URL"],
                text,
                file_url,
            )?
            .unwrap_or_else(|| DEFAULT_NATS_URL.to_string());
        let urls = self.check("nats.url", parse_nats_urls(&url))?;

        let mode = self
            .value(
                "nats.mode",
                &["MARKETPRISM_NATS_MODE"],
                text,
                n.mode.clone(),
            )?
            .unwrap_or_else(|| DEFAULT_NATS_MODE.to_string());
        let mode = self.check(
            "nats.mode",
            match mode.to_ascii_lowercase().as_str() {
                "jetstream" => Ok(NatsMode::JetStream),
                "core" => Ok(NatsMode::Core),
                _ => Err(format!(
                    "unknown mode \"{mode}\" (expected jetstream or core)"
                )),
            },
        )?;

        let streams = Streams {
            market_data: self.stream(
                "market_data",
                &n.streams.market_data,
                StreamDefaults {
                    name: DEFAULT_MARKET_DATA_STREAM,
                    subjects: &DEFAULT_MARKET_DATA_SUBJECTS,
                    max_age: DEFAULT_MARKET_DATA_MAX_AGE,
                    max_msgs: DEFAULT_MARKET_DATA_MAX_MSGS,
                    max_bytes: DEFAULT_MARKET_DATA_MAX_BYTES,
                },
            )?,
            high_frequency: self.stream(
                "high_frequency",
                &n.streams.high_frequency,
                StreamDefaults {
                    name: DEFAULT_HIGH_FREQUENCY_STREAM,
                    subjects: &DEFAULT_HIGH_FREQUENCY_SUBJECTS,
                    max_age: DEFAULT_HIGH_FREQUENCY_MAX_AGE,
                    max_msgs: DEFAULT_HIGH_FREQUENCY_MAX_MSGS,
                    max_bytes: DEFAULT_HIGH_FREQUENCY_MAX_BYTES,
                },
            )?,
        };
        if streams.market_data.name == streams.high_frequency.name {
            return Err(ConfigError::invalid(
                "nats.streams.high_frequency.name",
                format!(
                    "must differ from the market_data stream (\"{}\")",
                    streams.market_data.name
                ),
            ));
        }
        if let Some(s) = streams
            .high_frequency
            .subjects
            .iter()
            .find(|s| streams.market_data.subjects.contains(s))
        {
            return Err(ConfigError::invalid(
                "nats.streams.high_frequency.subjects",
                format!("subject \"{s}\" is also in the market_data stream"),
            ));
        }

        let consumer_prefix = self
            .file_value("nats.consumer_prefix", n.consumer_prefix.clone())
            .unwrap_or_else(|| DEFAULT_CONSUMER_PREFIX.to_string());
        self.check("nats.consumer_prefix", check_name(&consumer_prefix, true))?;

        let ack_wait = self
            .file_value("nats.ack_wait", n.ack_wait.map(|d| d.0))
            .unwrap_or(DEFAULT_ACK_WAIT);
        self.check("nats.ack_wait", positive(ack_wait))?;

        let fetch_batch = self
            .file_value("nats.fetch_batch", n.fetch_batch)
            .map_or(Ok(DEFAULT_FETCH_BATCH), |v| {
                usize::try_from(v).map_err(|_| "too large".to_string())
            });
        let fetch_batch = self.check("nats.fetch_batch", fetch_batch.and_then(non_zero_usize))?;

        let fetch_max_bytes = self
            .file_value("nats.fetch_max_bytes", n.fetch_max_bytes.map(|v| v.0))
            .unwrap_or(DEFAULT_FETCH_MAX_BYTES);
        if fetch_max_bytes < MIN_FETCH_MAX_BYTES {
            return Err(ConfigError::invalid(
                "nats.fetch_max_bytes",
                format!(
                    "must be >= 1MiB (one message of NATS's default max_payload), got {fetch_max_bytes}"
                ),
            ));
        }
        let fetch_max_bytes = NonZeroU64::new(fetch_max_bytes)
            .ok_or_else(|| ConfigError::invalid("nats.fetch_max_bytes", "must be > 0"))?;

        let file_pending = n.max_ack_pending;
        let max_ack_pending = PerType::try_from_fn(|t| {
            let key = format!("nats.max_ack_pending.{t}");
            match self.file_value(&key, file_pending) {
                Some(v) => NonZeroU64::new(v)
                    .ok_or_else(|| ConfigError::invalid("nats.max_ack_pending", "must be > 0")),
                None => {
                    let rows = batch.get(t).max_rows.get() as u64;
                    let pull = fetch_batch.get() as u64;
                    let derived = rows
                        .saturating_mul(6)
                        .saturating_add(pull.saturating_mul(4))
                        .max(DEFAULT_MIN_MAX_ACK_PENDING);
                    NonZeroU64::new(derived)
                        .ok_or_else(|| ConfigError::invalid(key.as_str(), "must be > 0"))
                }
            }
        })?;

        let journal_bucket = self
            .file_value("nats.journal_bucket", n.journal_bucket.clone())
            .unwrap_or_else(|| DEFAULT_JOURNAL_BUCKET.to_string());
        self.check("nats.journal_bucket", check_bucket(&journal_bucket))?;

        let types = self.types(raw)?;
        if mode == NatsMode::JetStream {
            for t in &types {
                if !streams.market_data.captures(*t) && !streams.high_frequency.captures(*t) {
                    return Err(ConfigError::invalid(
                        "nats.streams",
                        format!(
                            "no stream captures data type \"{t}\" (add \"{t}.>\" to a stream's subjects or remove it from nats.types)"
                        ),
                    ));
                }
            }
        }

        Ok(NatsConfig {
            urls,
            mode,
            streams,
            consumer_prefix,
            ack_wait,
            max_ack_pending,
            fetch_batch,
            fetch_max_bytes,
            journal_bucket,
            types,
        })
    }

    fn types(&mut self, raw: &RawConfig) -> Result<Vec<DataType>, ConfigError> {
        let s = &raw.subscriptions;
        let python = [
            (DataType::Orderbook, s.orderbook_enabled),
            (DataType::Trade, s.trade_enabled),
            (DataType::FundingRate, s.funding_rate_enabled),
            (DataType::OpenInterest, s.open_interest_enabled),
            (DataType::Liquidation, s.liquidation_enabled),
            (DataType::LsrTopPosition, s.lsr_enabled),
            (DataType::LsrAllAccount, s.lsr_enabled),
            (DataType::VolatilityIndex, s.volatility_index_enabled),
        ];
        let python_names = python.iter().any(|(_, e)| e.is_some()).then(|| {
            DataType::ALL
                .into_iter()
                .filter(|t| python.iter().all(|(s, e)| s != t || e.unwrap_or(true)))
                .map(|t| t.as_str().to_string())
                .collect::<Vec<_>>()
        });
        let file = self.prefer(
            ("nats.types", raw.nats.types.clone()),
            ("subscriptions", python_names),
        );
        let names = self.value(
            "nats.types",
            &["MARKETPRISM_NATS_TYPES"],
            |s| {
                Ok(s.split(',')
                    .map(|p| p.trim().to_string())
                    .collect::<Vec<_>>())
            },
            file,
        )?;
        let Some(names) = names else {
            return Ok(DataType::ALL.to_vec());
        };
        let mut types = Vec::new();
        for name in &names {
            let t = self.check(
                "nats.types",
                DataType::parse(name).ok_or_else(|| unknown_type(name)),
            )?;
            if types.contains(&t) {
                return self.check("nats.types", Err(format!("\"{t}\" is listed twice")));
            }
            types.push(t);
        }
        if types.is_empty() {
            return self.check("nats.types", Err("must name at least one data type".into()));
        }
        types.sort_by_key(|t| DataType::ALL.iter().position(|a| a == t));
        Ok(types)
    }

    fn stream(
        &mut self,
        which: &str,
        raw: &RawStream,
        d: StreamDefaults,
    ) -> Result<StreamConfig, ConfigError> {
        let key = |k: &str| format!("nats.streams.{which}.{k}");
        let name = self
            .file_value(&key("name"), raw.name.clone())
            .unwrap_or_else(|| d.name.to_string());
        self.check(&key("name"), check_name(&name, false))?;
        let subjects = self
            .file_value(&key("subjects"), raw.subjects.clone())
            .unwrap_or_else(|| d.subjects.iter().map(|s| s.to_string()).collect());
        if subjects.is_empty() {
            return Err(ConfigError::invalid(key("subjects"), "must not be empty"));
        }
        for s in &subjects {
            self.check(&key("subjects"), check_subject(s))?;
        }
        let max_age = self
            .file_value(&key("max_age"), raw.max_age.map(|v| v.0))
            .unwrap_or(d.max_age);
        let max_msgs = self
            .file_value(&key("max_msgs"), raw.max_msgs)
            .unwrap_or(d.max_msgs);
        if max_msgs == 0 || max_msgs < -1 {
            return Err(ConfigError::invalid(
                key("max_msgs"),
                "must be > 0 (or -1 for no limit)",
            ));
        }
        let max_bytes = self
            .file_value(&key("max_bytes"), raw.max_bytes.map(|v| v.0))
            .unwrap_or(d.max_bytes);
        let max_bytes = NonZeroU64::new(max_bytes)
            .ok_or_else(|| ConfigError::invalid(key("max_bytes"), "must be > 0"))?;
        let duplicate_window = self
            .file_value(&key("duplicate_window"), raw.duplicate_window.map(|v| v.0))
            .unwrap_or(DEFAULT_DUPLICATE_WINDOW);
        if !max_age.is_zero() && duplicate_window > max_age {
            return Err(ConfigError::invalid(
                key("duplicate_window"),
                "must not exceed max_age",
            ));
        }
        let storage = self
            .file_value(&key("storage"), raw.storage.clone())
            .unwrap_or_else(|| DEFAULT_STREAM_STORAGE.to_string());
        let storage = match storage.as_str() {
            "file" => StreamStorage::File,
            "memory" => StreamStorage::Memory,
            other => {
                return Err(ConfigError::invalid(
                    key("storage"),
                    format!("unknown storage \"{other}\" (expected file or memory)"),
                ));
            }
        };
        let discard = self
            .file_value(&key("discard"), raw.discard.clone())
            .unwrap_or_else(|| DEFAULT_STREAM_DISCARD.to_string());
        let discard = match discard.as_str() {
            "old" => Discard::Old,
            "new" => Discard::New,
            other => {
                return Err(ConfigError::invalid(
                    key("discard"),
                    format!("unknown discard policy \"{other}\" (expected old or new)"),
                ));
            }
        };
        let replicas = self
            .file_value(&key("replicas"), raw.replicas)
            .map_or(Ok(DEFAULT_STREAM_REPLICAS), |v| {
                usize::try_from(v).map_err(|_| "too large".to_string())
            })
            .and_then(non_zero_usize)
            .map_err(|r| ConfigError::invalid(key("replicas"), r))?;
        Ok(StreamConfig {
            name,
            subjects,
            max_age,
            max_msgs,
            max_bytes,
            duplicate_window,
            storage,
            discard,
            replicas,
        })
    }

    fn clickhouse(&mut self, raw: &RawConfig) -> Result<ClickHouseConfig, ConfigError> {
        let c = &raw.clickhouse;
        let h = &raw.hot_storage;
        let file_host = self.prefer(
            ("clickhouse.host", c.host.clone()),
            ("hot_storage.clickhouse_host", h.clickhouse_host.clone()),
        );
        let host = self
            .value("clickhouse.host", &["CLICKHOUSE_HOST"], text, file_host)?
            .unwrap_or_else(|| DEFAULT_CLICKHOUSE_HOST.to_string());
        let host = if host == DEFAULT_CLICKHOUSE_HOST {
            ClickHouseHost::Embedded
        } else {
            ClickHouseHost::Server(self.check("clickhouse.host", check_host(&host))?)
        };
        let file_port = self.prefer(
            ("clickhouse.http_port", c.http_port),
            ("hot_storage.clickhouse_http_port", h.clickhouse_http_port),
        );
        let http_port = self
            .value(
                "clickhouse.http_port",
                &["CLICKHOUSE_HTTP_PORT"],
                parse_port,
                file_port.map(|p| p.0),
            )?
            .unwrap_or(DEFAULT_CLICKHOUSE_HTTP_PORT);
        let secure = self
            .value(
                "clickhouse.secure",
                &["CLICKHOUSE_SECURE"],
                parse_bool,
                c.secure,
            )?
            .unwrap_or(DEFAULT_CLICKHOUSE_SECURE);
        let file_db = self.prefer(
            ("clickhouse.hot_db", c.hot_db.clone()),
            (
                "hot_storage.clickhouse_database",
                h.clickhouse_database.clone(),
            ),
        );
        let hot_db = self
            .value(
                "clickhouse.hot_db",
                &["CLICKHOUSE_HOT_DB", "CLICKHOUSE_DATABASE"],
                text,
                file_db,
            )?
            .unwrap_or_else(|| DEFAULT_HOT_DB.to_string());
        self.check("clickhouse.hot_db", check_identifier(&hot_db))?;
        let cold_db = self
            .value(
                "clickhouse.cold_db",
                &["CLICKHOUSE_COLD_DB"],
                text,
                c.cold_db.clone(),
            )?
            .unwrap_or_else(|| DEFAULT_COLD_DB.to_string());
        self.check("clickhouse.cold_db", check_identifier(&cold_db))?;
        let file_user = self.prefer(
            ("clickhouse.user", c.user.clone()),
            ("hot_storage.clickhouse_user", h.clickhouse_user.clone()),
        );
        let user = self
            .value("clickhouse.user", &["CLICKHOUSE_USER"], text, file_user)?
            .unwrap_or_else(|| DEFAULT_CLICKHOUSE_USER.to_string());
        if user.is_empty() {
            return self.check("clickhouse.user", Err("must not be empty".into()));
        }
        let file_password = self.prefer(
            ("clickhouse.password", c.password.clone()),
            (
                "hot_storage.clickhouse_password",
                h.clickhouse_password.clone(),
            ),
        );
        let password = self
            .value(
                "clickhouse.password",
                &["CLICKHOUSE_PASSWORD"],
                text,
                file_password,
            )?
            .unwrap_or_else(|| DEFAULT_CLICKHOUSE_PASSWORD.to_string());
        let compression = self
            .file_value("clickhouse.compression", c.compression.clone())
            .unwrap_or_else(|| DEFAULT_CLICKHOUSE_COMPRESSION.to_string());
        let compression = self.check(
            "clickhouse.compression",
            match compression.as_str() {
                "none" => Ok(Compression::None),
                "lz4" => Ok(Compression::Lz4),
                other => Err(format!(
                    "unknown compression \"{other}\" (expected lz4 or none)"
                )),
            },
        )?;
        let insert_timeout = self
            .file_value("clickhouse.insert_timeout", c.insert_timeout.map(|d| d.0))
            .unwrap_or(DEFAULT_INSERT_TIMEOUT);
        self.check("clickhouse.insert_timeout", positive(insert_timeout))?;
        Ok(ClickHouseConfig {
            host,
            http_port,
            secure,
            hot_db,
            cold_db,
            user,
            password: Secret::new(password),
            compression,
            insert_timeout,
        })
    }

    fn cold_clickhouse(
        &mut self,
        raw: &RawConfig,
        hot: &ClickHouseConfig,
    ) -> Result<Option<ColdClickHouseConfig>, ConfigError> {
        let c = &raw.cold_clickhouse;
        let host = self.value(
            "cold_clickhouse.host",
            &["COLD_CLICKHOUSE_HOST"],
            text,
            c.host.clone(),
        )?;
        let http_port = self.value(
            "cold_clickhouse.http_port",
            &["COLD_CLICKHOUSE_HTTP_PORT"],
            parse_port,
            c.http_port.map(|p: PortValue| p.0),
        )?;
        let secure = self.file_value("cold_clickhouse.secure", c.secure);
        let user = self.value(
            "cold_clickhouse.user",
            &["COLD_CLICKHOUSE_USER"],
            text,
            c.user.clone(),
        )?;
        let password = self.value(
            "cold_clickhouse.password",
            &["COLD_CLICKHOUSE_PASSWORD"],
            text,
            c.password.clone(),
        )?;
        let Some(host) = host else {
            if http_port.is_some() || secure.is_some() || user.is_some() || password.is_some() {
                return Err(ConfigError::invalid(
                    "cold_clickhouse.host",
                    "required when another cold_clickhouse key (or COLD_CLICKHOUSE_* variable) is set",
                ));
            }
            return Ok(None);
        };
        if host == DEFAULT_CLICKHOUSE_HOST {
            return self.check(
                "cold_clickhouse.host",
                Err("cannot be \"embedded\"; leave it unset to use the hot server".into()),
            );
        }
        let host = self.check("cold_clickhouse.host", check_host(&host))?;
        Ok(Some(ColdClickHouseConfig {
            host,
            http_port: http_port.unwrap_or(DEFAULT_CLICKHOUSE_HTTP_PORT),
            secure: secure.unwrap_or(hot.secure),
            user: user.unwrap_or_else(|| hot.user.clone()),
            password: password.map_or_else(|| hot.password.clone(), Secret::new),
        }))
    }

    fn embedded(&mut self, raw: &RawConfig) -> Result<EmbeddedConfig, ConfigError> {
        let e = &raw.embedded;
        let data_dir = self
            .value(
                "embedded.data_dir",
                &["MARKETPRISM_DATA_DIR"],
                |s| Ok(PathBuf::from(s)),
                e.data_dir.clone(),
            )?
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let tools_dir = self
            .value(
                "embedded.tools_dir",
                &["MARKETPRISM_TOOLS_DIR"],
                |s| Ok(PathBuf::from(s)),
                e.tools_dir.clone(),
            )?
            .unwrap_or_else(|| PathBuf::from(DEFAULT_TOOLS_DIR));
        let listen = self
            .file_value("embedded.listen", e.listen.clone())
            .unwrap_or_else(|| DEFAULT_EMBEDDED_LISTEN.to_string());
        let listen = self.check(
            "embedded.listen",
            listen
                .parse::<SocketAddr>()
                .map_err(|_| format!("invalid address \"{listen}\": expected ip:port"))
                .and_then(|a| {
                    if a.port() == 0 {
                        Err(format!(
                            "invalid address \"{listen}\": port must be 1-65535"
                        ))
                    } else {
                        Ok(a)
                    }
                }),
        )?;
        Ok(EmbeddedConfig {
            data_dir,
            tools_dir,
            listen,
        })
    }

    fn batch(&mut self, raw: &RawConfig) -> Result<PerType<TypeBatch>, ConfigError> {
        let b = &raw.batch;
        let mut per_type: BTreeMap<DataType, (&str, &RawTypeBatch)> = BTreeMap::new();
        for (name, value) in &b.types {
            let t = DataType::parse(name)
                .or_else(|| DataType::ALL.into_iter().find(|t| t.table() == name))
                .ok_or_else(|| {
                    ConfigError::invalid(format!("batch.types.{name}"), unknown_type(name))
                })?;
            if let Some((other, _)) = per_type.insert(t, (name, value)) {
                return Err(ConfigError::invalid(
                    format!("batch.types.{name}"),
                    format!("same data type as batch.types.{other}"),
                ));
            }
        }
        PerType::try_from_fn(|t| {
            let own = per_type.get(&t).map(|(_, v)| *v);
            let key = |k: &str| format!("batch.types.{t}.{k}");

            let (python_rows, python_rows_key) = match t {
                DataType::Trade => (b.trade_batch_size, "batch.trade_batch_size"),
                DataType::Orderbook => (b.max_batch_size, "batch.max_batch_size"),
                _ => (b.low_freq_batch_size, "batch.low_freq_batch_size"),
            };
            let default_rows = match t {
                DataType::Trade => DEFAULT_TRADE_MAX_ROWS,
                DataType::Orderbook => DEFAULT_ORDERBOOK_MAX_ROWS,
                _ => DEFAULT_LOW_FREQ_MAX_ROWS,
            };
            let (rows, rows_key) = self.layered(
                &key("max_rows"),
                own.and_then(|o| o.max_rows),
                &[
                    (python_rows_key, python_rows),
                    ("batch.max_rows", b.max_rows),
                ],
            );
            let max_rows = rows
                .map_or(Ok(default_rows), |v| {
                    usize::try_from(v).map_err(|_| "too large".to_string())
                })
                .and_then(non_zero_usize)
                .map_err(|r| ConfigError::invalid(rows_key.as_str(), r))?;

            let default_bytes = match t {
                DataType::Trade => DEFAULT_TRADE_MAX_BYTES,
                DataType::Orderbook => DEFAULT_ORDERBOOK_MAX_BYTES,
                _ => DEFAULT_LOW_FREQ_MAX_BYTES,
            };
            let (bytes, bytes_key) = self.layered(
                &key("max_bytes"),
                own.and_then(|o| o.max_bytes).map(|v: SizeValue| v.0),
                &[("batch.max_bytes", b.max_bytes.map(|v| v.0))],
            );
            let max_bytes = NonZeroU64::new(bytes.unwrap_or(default_bytes))
                .ok_or_else(|| ConfigError::invalid(bytes_key.as_str(), "must be > 0"))?;

            let python_age = match t {
                DataType::Trade => ("batch.flush_interval", b.flush_interval),
                DataType::Orderbook => {
                    ("batch.orderbook_flush_interval", b.orderbook_flush_interval)
                }
                _ => ("", None),
            };
            let default_age = match t {
                DataType::Trade => DEFAULT_TRADE_MAX_AGE,
                DataType::Orderbook => DEFAULT_ORDERBOOK_MAX_AGE,
                _ => DEFAULT_LOW_FREQ_MAX_AGE,
            };
            let (age, age_key) = self.layered(
                &key("max_age"),
                own.and_then(|o| o.max_age).map(|v: DurationValue| v.0),
                &[
                    (python_age.0, python_age.1.map(|v| v.0)),
                    ("batch.max_age", b.max_age.map(|v| v.0)),
                ],
            );
            let max_age = age.unwrap_or(default_age);
            positive(max_age).map_err(|r| ConfigError::invalid(age_key.as_str(), r))?;

            let queue = self.file_value(&key("max_queue"), own.and_then(|o| o.max_queue));
            let max_queue = match queue {
                Some(v) => usize::try_from(v).map_err(|_| "too large".to_string()),
                None => Ok(max_rows.get().saturating_mul(DEFAULT_MAX_QUEUE_FACTOR)),
            }
            .and_then(non_zero_usize)
            .map_err(|r| ConfigError::invalid(key("max_queue"), r))?;
            if max_queue < max_rows {
                return Err(ConfigError::invalid(
                    key("max_queue"),
                    format!("must be >= max_rows ({max_queue} < {max_rows})"),
                ));
            }
            let queue_bytes = self.file_value(
                &key("max_queue_bytes"),
                own.and_then(|o| o.max_queue_bytes).map(|v: SizeValue| v.0),
            );
            let max_queue_bytes = queue_bytes.unwrap_or(
                max_bytes
                    .get()
                    .saturating_mul(DEFAULT_MAX_QUEUE_BYTES_FACTOR),
            );
            if max_queue_bytes < max_bytes.get() {
                return Err(ConfigError::invalid(
                    key("max_queue_bytes"),
                    format!("must be >= max_bytes ({max_queue_bytes} < {max_bytes})"),
                ));
            }
            let max_queue_bytes = NonZeroU64::new(max_queue_bytes)
                .ok_or_else(|| ConfigError::invalid(key("max_queue_bytes"), "must be > 0"))?;
            Ok(TypeBatch {
                max_rows,
                max_bytes,
                max_age,
                max_queue,
                max_queue_bytes,
            })
        })
    }

    /// The per-type value if set, else the first set of `fallbacks` (file keys, most specific
    /// first). Returns the value and the key it came from (for error messages).
    fn layered<T: Copy>(
        &mut self,
        key: &str,
        own: Option<T>,
        fallbacks: &[(&str, Option<T>)],
    ) -> (Option<T>, String) {
        let found = std::iter::once((key, own))
            .chain(fallbacks.iter().copied())
            .find_map(|(k, v)| v.map(|v| (k, v)));
        match found {
            Some((k, v)) => {
                self.file_value(key, Some(v));
                (Some(v), k.to_string())
            }
            None => (None, key.to_string()),
        }
    }

    fn retry(&mut self, raw: &RawConfig) -> Result<RetryConfig, ConfigError> {
        let r = &raw.retry;
        if r.max_retries.is_some() {
            self.warn(
                "\"retry.max_retries\" is ignored: retriable errors are retried forever and nothing is dropped"
                    .to_string(),
            );
        }
        let initial = self.prefer(
            ("retry.initial_backoff", r.initial_backoff),
            ("retry.delay_seconds", r.delay_seconds),
        );
        let initial_backoff = self
            .file_value("retry.initial_backoff", initial.map(|d| d.0))
            .unwrap_or(DEFAULT_INITIAL_BACKOFF);
        self.check("retry.initial_backoff", positive(initial_backoff))?;
        let max_backoff = self
            .file_value("retry.max_backoff", r.max_backoff.map(|d| d.0))
            .unwrap_or(DEFAULT_MAX_BACKOFF);
        if max_backoff < initial_backoff {
            return Err(ConfigError::invalid(
                "retry.max_backoff",
                "must be >= retry.initial_backoff",
            ));
        }
        let multiplier = self.prefer(
            ("retry.multiplier", r.multiplier),
            ("retry.backoff_multiplier", r.backoff_multiplier),
        );
        let multiplier = self
            .file_value("retry.multiplier", multiplier)
            .unwrap_or(DEFAULT_BACKOFF_MULTIPLIER);
        if !(multiplier.is_finite() && multiplier >= 1.0) {
            return Err(ConfigError::invalid(
                "retry.multiplier",
                "must be a number >= 1",
            ));
        }
        Ok(RetryConfig {
            initial_backoff,
            max_backoff,
            multiplier,
        })
    }

    fn http(&mut self, raw: &RawConfig) -> Result<HttpConfig, ConfigError> {
        let h = &raw.http;
        let file_port = self.prefer(("http.port", h.port), ("http_port", raw.http_port));
        let port = self
            .value(
                "http.port",
                &["HOT_STORAGE_HTTP_PORT"],
                parse_port,
                file_port.map(|p| p.0),
            )?
            .unwrap_or(DEFAULT_HTTP_PORT);
        let bind = self
            .file_value("http.bind", h.bind.clone())
            .unwrap_or_else(|| DEFAULT_HTTP_BIND.to_string());
        let bind = self.check(
            "http.bind",
            bind.parse::<IpAddr>()
                .map_err(|_| format!("invalid ip address \"{bind}\"")),
        )?;
        let token = self
            .value(
                "http.token",
                &["MARKETPRISM_HTTP_TOKEN"],
                text,
                h.token.clone(),
            )?
            .filter(|t| !t.is_empty())
            .map(Secret::new);
        let file_metrics = self.prefer(
            ("http.metrics_port", h.metrics_port),
            ("metrics_port", raw.metrics_port),
        );
        let metrics_port = self.value(
            "http.metrics_port",
            &["HOT_STORAGE_METRICS_PORT"],
            parse_port,
            file_metrics.map(|p| p.0),
        )?;
        if metrics_port == Some(port) {
            return self.check(
                "http.metrics_port",
                Err(format!(
                    "must differ from http.port ({port}); /metrics is served there too"
                )),
            );
        }
        Ok(HttpConfig {
            port,
            bind,
            token,
            metrics_port,
        })
    }

    fn log(&mut self, raw: &RawConfig) -> Result<LogConfig, ConfigError> {
        let file_level = self.prefer(
            ("log.level", raw.log.level.clone()),
            ("logging.level", raw.logging.level.clone()),
        );
        let level = self
            .value("log.level", &["LOG_LEVEL"], text, file_level)?
            .unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_string());
        let level = self.check("log.level", normalize_level(&level))?;
        let rust_log = self.value("log.rust_log", &["RUST_LOG"], text, None)?;
        let file_format = self.prefer(
            ("log.format", raw.log.format.clone()),
            ("logging.format", raw.logging.format.clone()),
        );
        let format = self.value(
            "log.format",
            &["MARKETPRISM_LOG_JSON"],
            |s| parse_bool(s).map(|json| if json { "json" } else { "pretty" }.to_string()),
            file_format,
        )?;
        let format = format.unwrap_or_else(|| DEFAULT_LOG_FORMAT.to_string());
        let format = self.check(
            "log.format",
            match format.to_ascii_lowercase().as_str() {
                "pretty" | "text" => Ok(LogFormat::Pretty),
                "json" => Ok(LogFormat::Json),
                _ => Err(format!(
                    "unknown format \"{format}\" (expected pretty or json)"
                )),
            },
        )?;
        Ok(LogConfig {
            level,
            rust_log,
            format,
        })
    }

    fn quality(&mut self, raw: &RawConfig) -> Result<QualityConfig, ConfigError> {
        let q = &raw.quality;
        let enabled = self
            .value(
                "quality.enabled",
                &["MARKETPRISM_QUALITY_ENABLED"],
                parse_bool,
                q.enabled,
            )?
            .unwrap_or(DEFAULT_QUALITY_ENABLED);
        let price_jump = self
            .file_value("quality.price_jump", q.price_jump)
            .unwrap_or(DEFAULT_QUALITY_PRICE_JUMP);
        self.check(
            "quality.price_jump",
            if price_jump.is_finite() && price_jump > 0.0 {
                Ok(())
            } else {
                Err(format!(
                    "must be a fraction > 0, e.g. 0.1 (got {price_jump})"
                ))
            },
        )?;
        let sequential_ids = self
            .file_value("quality.sequential_ids", q.sequential_ids.clone())
            .unwrap_or_else(|| {
                DEFAULT_QUALITY_SEQUENTIAL_IDS
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            });
        Ok(QualityConfig {
            enabled,
            price_jump,
            sequential_ids,
        })
    }

    fn migration(&mut self, raw: &RawConfig) -> Result<MigrationConfig, ConfigError> {
        let m = &raw.migration;
        let hours = self
            .value(
                "migration.window_hours",
                &["MIGRATION_WINDOW_HOURS"],
                |s| {
                    s.trim().parse::<f64>().map_err(|_| {
                        format!("invalid number \"{s}\": expected hours, e.g. 8 or 0.5")
                    })
                },
                m.window_hours,
            )?
            .unwrap_or(DEFAULT_MIGRATION_WINDOW_HOURS);
        let window = self.check(
            "migration.window_hours",
            seconds_to_duration(hours * 3600.0).and_then(positive),
        )?;
        let batch_limit = self
            .value(
                "migration.batch_limit",
                &["MIGRATION_BATCH_LIMIT"],
                parse_count,
                m.batch_limit,
            )?
            .unwrap_or(DEFAULT_MIGRATION_BATCH_LIMIT);
        let batch_limit = self.check(
            "migration.batch_limit",
            NonZeroU64::new(batch_limit).ok_or_else(|| "must be > 0".to_string()),
        )?;
        let filter = |s: &str| Ok(s.trim().to_string());
        let symbol_prefix = self.value(
            "migration.symbol_prefix",
            &["MIGRATION_SYMBOL_PREFIX"],
            filter,
            m.symbol_prefix.clone(),
        )?;
        let exchange = self.value(
            "migration.exchange",
            &["MIGRATION_EXCHANGE"],
            filter,
            m.exchange.clone(),
        )?;
        let market_type = self.value(
            "migration.market_type",
            &["MIGRATION_MARKET_TYPE"],
            filter,
            m.market_type.clone(),
        )?;
        let enabled = self
            .value(
                "migration.enabled",
                &["MIGRATION_ENABLED"],
                parse_bool,
                m.enabled,
            )?
            .unwrap_or(DEFAULT_MIGRATION_ENABLED);
        let dry_run = self
            .value(
                "migration.dry_run",
                &["MIGRATION_DRY_RUN"],
                parse_bool,
                m.dry_run,
            )?
            .unwrap_or(DEFAULT_MIGRATION_DRY_RUN);
        let interval = self
            .file_value("migration.interval", m.interval.map(|d| d.0))
            .unwrap_or(DEFAULT_MIGRATION_INTERVAL);
        self.check("migration.interval", positive(interval))?;
        let lag = self
            .file_value("migration.lag", m.lag.map(|d| d.0))
            .unwrap_or(DEFAULT_MIGRATION_LAG);
        let recheck_windows = self
            .file_value("migration.recheck_windows", m.recheck_windows)
            .unwrap_or(DEFAULT_MIGRATION_RECHECK_WINDOWS);
        let non_empty = |v: Option<String>| v.filter(|s| !s.is_empty());
        Ok(MigrationConfig {
            enabled,
            window,
            batch_limit,
            symbol_prefix: non_empty(symbol_prefix),
            exchange: non_empty(exchange),
            market_type: non_empty(market_type),
            dry_run,
            interval,
            lag,
            recheck_windows,
        })
    }
}

struct StreamDefaults {
    name: &'static str,
    subjects: &'static [&'static str],
    max_age: Duration,
    max_msgs: i64,
    max_bytes: u64,
}

fn unknown_type(name: &str) -> String {
    let names: Vec<&str> = DataType::ALL.iter().map(|t| t.as_str()).collect();
    format!(
        "unknown data type \"{name}\" (expected one of {})",
        names.join(", ")
    )
}

fn non_zero_usize(v: usize) -> Result<NonZeroUsize, String> {
    NonZeroUsize::new(v).ok_or_else(|| "must be > 0".to_string())
}

fn positive(d: Duration) -> Result<Duration, String> {
    if d.is_zero() {
        Err("must be > 0".into())
    } else {
        Ok(d)
    }
}

/// Splits and checks `nats://a:4222,tls://b:4222`.
pub(crate) fn parse_nats_urls(text: &str) -> Result<Vec<String>, String> {
    let mut urls = Vec::new();
    for part in text.split(',').map(str::trim) {
        let rest = part
            .strip_prefix("nats://")
            .or_else(|| part.strip_prefix("tls://"))
            .ok_or_else(|| format!("invalid url \"{part}\": scheme must be nats:// or tls://"))?;
        // Skip optional credentials (`user:pass@host`).
        let host_port = rest
            .rsplit('@')
            .next()
            .unwrap_or(rest)
            .trim_end_matches('/');
        let (host, port) = match host_port.strip_prefix('[') {
            // An IPv6 literal: `[::1]:4222`.
            Some(v6) => match v6.split_once(']') {
                Some((h, p)) => (h, p.strip_prefix(':')),
                None => return Err(format!("invalid url \"{part}\": unclosed [")),
            },
            None => match host_port.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (host_port, None),
            },
        };
        if host.is_empty() {
            return Err(format!("invalid url \"{part}\": no host"));
        }
        if let Some(port) = port {
            parse_port(port).map_err(|r| format!("invalid url \"{part}\": {r}"))?;
        }
        urls.push(part.to_string());
    }
    Ok(urls)
}

/// Stream names and consumer names: no whitespace, `.`, `*`, `>`, path separators.
fn check_name(name: &str, allow_empty: bool) -> Result<(), String> {
    if name.is_empty() && !allow_empty {
        return Err("must not be empty".into());
    }
    match name
        .chars()
        .find(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
    {
        Some(c) => Err(format!("invalid name \"{name}\": must not contain {c:?}")),
        None => Ok(()),
    }
}

/// Key-value bucket names: letters, digits, `_` and `-`.
fn check_bucket(name: &str) -> Result<(), String> {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        Ok(())
    } else {
        Err(format!(
            "invalid bucket name \"{name}\": use letters, digits, _ and -"
        ))
    }
}

/// A subject filter: non-empty dot-separated tokens, `>` only last.
fn check_subject(subject: &str) -> Result<(), String> {
    let tokens: Vec<&str> = subject.split('.').collect();
    let bad = tokens.iter().enumerate().any(|(i, t)| {
        t.is_empty()
            || t.chars().any(char::is_whitespace)
            || (*t == ">" && i + 1 != tokens.len())
            || (t.len() > 1 && (t.contains('*') || t.contains('>')))
    });
    if bad {
        Err(format!("invalid subject \"{subject}\""))
    } else {
        Ok(())
    }
}

/// A host name or address, not a URL.
fn check_host(host: &str) -> Result<String, String> {
    let host = host.trim();
    if host.is_empty() {
        Err("must not be empty".into())
    } else if host.contains("://") || host.contains('/') || host.chars().any(char::is_whitespace) {
        Err(format!(
            "invalid host \"{host}\": expected a host name or address, not a url"
        ))
    } else {
        Ok(host.to_string())
    }
}

/// A ClickHouse database name we can put in SQL unquoted.
fn check_identifier(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid database name \"{name}\": use letters, digits and _"
        ))
    }
}

/// A level name (Python names accepted: `INFO`, `WARNING`, `CRITICAL`) or a filter directive.
fn normalize_level(level: &str) -> Result<String, String> {
    let lower = level.trim().to_ascii_lowercase();
    if lower.contains('=') || lower.contains(',') {
        return Ok(level.trim().to_string());
    }
    match lower.as_str() {
        "trace" | "debug" | "info" | "warn" | "error" | "off" => Ok(lower),
        "warning" => Ok("warn".into()),
        "critical" | "fatal" => Ok("error".into()),
        _ => Err(format!(
            "unknown level \"{level}\" (expected trace, debug, info, warn, error or off)"
        )),
    }
}
