//! Tests of the configuration: example file, fixtures, precedence, errors, rendering.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

fn manifest(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

/// Loads `yaml` (written to a temporary file) with the environment `env`.
fn check(yaml: &str, env: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(yaml.as_bytes()).unwrap();
    Config::load(Some(file.path()), &env_of(env))
}

fn check_err(yaml: &str, env: &[(&str, &str)]) -> String {
    match check(yaml, env) {
        Ok(_) => panic!("expected an error for {yaml:?} {env:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn example_file_equals_the_defaults() {
    let path = manifest("config/example.yaml");
    let loaded = Config::load(Some(&path), &|_| None).unwrap();
    assert_eq!(loaded.config, Config::defaults().unwrap());
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    // The example sets keys explicitly, so they are reported as coming from the file.
    assert_eq!(loaded.source("nats.url"), &Source::File(path.clone()));
    assert_eq!(
        loaded.source("batch.types.trade.max_rows"),
        &Source::File(path)
    );
}

#[test]
fn example_file_commented_keys_are_real_keys() {
    // Uncomment every `# key: value` line (lower-case key) and load it: a renamed key whose
    // comment was not updated fails here.
    let text = std::fs::read_to_string(manifest("config/example.yaml")).unwrap();
    let mut uncommented = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let is_key = trimmed.strip_prefix("# ").is_some_and(|rest| {
            let rest = rest.trim_start();
            rest.split(':').next().is_some_and(|k| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            }) && rest.contains(':')
        });
        if is_key {
            uncommented.push_str(indent);
            uncommented.push_str(&trimmed[2..]);
        } else {
            uncommented.push_str(line);
        }
        uncommented.push('\n');
    }
    // The TLS examples name files under one directory: write real ones there, and turn
    // HTTPS on, which they need.
    let pki = tempfile::tempdir().unwrap();
    for name in ["ca", "cold-ca"] {
        std::fs::write(pki.path().join(format!("{name}.pem")), test_ca().pem()).unwrap();
    }
    for name in ["client", "cold", "embedded"] {
        let (cert, key) = test_leaf();
        std::fs::write(pki.path().join(format!("{name}.pem")), cert).unwrap();
        std::fs::write(pki.path().join(format!("{name}.key")), key).unwrap();
    }
    let dir = format!("{}/", pki.path().display());
    let uncommented = uncommented
        .replace("/etc/marketprism/tls/", &dir)
        .replace("secure: false", "secure: true");
    let loaded = check(&uncommented, &[]).unwrap();
    let c = &loaded.config;
    assert_eq!(
        c.hot_endpoint().tls.unwrap().files().ca,
        Some(pki.path().join("ca.pem"))
    );
    assert_eq!(
        c.cold_endpoint().tls.unwrap().files().key,
        Some(pki.path().join("cold.key"))
    );
    assert_eq!(c.embedded.tls_client_ca, Some(pki.path().join("ca.pem")));
    assert_eq!(c.http.metrics_port, Some(9094));
    assert!(c.http.token.is_some());
    assert_eq!(c.cold_clickhouse.as_ref().unwrap().host, "cold.example");
    assert_eq!(c.migration.exchange.as_deref(), Some("binance"));
    assert_eq!(c.nats.max_ack_pending.get(DataType::Trade).get(), 20_000);
    assert_eq!(c.nats.kv_replicas.get(), 3);
}

#[test]
fn defaults_match_the_brief() {
    let c = Config::defaults().unwrap();
    assert_eq!(c.nats.urls, vec!["nats://localhost:4222"]);
    assert_eq!(c.nats.mode, NatsMode::JetStream);
    assert_eq!(c.nats.streams.market_data.subjects.len(), 18);
    assert_eq!(c.nats.streams.market_data.max_bytes.get(), 2 << 30);
    assert_eq!(c.nats.streams.high_frequency.name, "MARKET_DATA_HF");
    assert_eq!(
        c.nats.durable_name(DataType::Trade),
        "marketprism_storage_trade"
    );
    assert_eq!(c.nats.types, DataType::ALL.to_vec());
    for t in DataType::ALL {
        let s = c.nats.stream_for(t).unwrap();
        let expected = if t.is_high_frequency() {
            "MARKET_DATA_HF"
        } else {
            "MARKET_DATA"
        };
        assert_eq!(s.name, expected, "{t}");
        let b = c.batch.get(t);
        assert_eq!(b.max_queue.get(), 4 * b.max_rows.get());
        let pending = c.nats.max_ack_pending.get(t).get();
        let pull = c.nats.fetch_batch.get() as u64;
        assert_eq!(
            pending,
            (6 * b.max_rows.get() as u64 + 4 * pull).max(10_000)
        );
    }
    assert_eq!(c.batch.get(DataType::Trade).max_rows.get(), 100_000);
    assert_eq!(c.batch.get(DataType::Orderbook).max_rows.get(), 5_000);
    assert_eq!(
        c.batch.get(DataType::Liquidation).max_age,
        Duration::from_secs(2)
    );
    assert!(c.clickhouse.is_embedded());
    assert_eq!(c.hot_endpoint().base_url, "http://127.0.0.1:8123");
    assert_eq!(c.cold_endpoint().database, "marketprism_cold");
    assert_eq!(c.http.addr().to_string(), "127.0.0.1:8081");
    assert_eq!(c.log.filter(), "info");
    assert_eq!(c.migration.window, Duration::from_secs(8 * 3600));
    assert!(!c.migration.enabled);
    assert_eq!(c.shutdown_grace, Duration::from_secs(30));
}

#[test]
fn wrong_key_fixture_names_the_key() {
    let path = manifest("src/config/testdata/wrong_key.yaml");
    let err = Config::load(Some(&path), &|_| None).unwrap_err();
    assert!(matches!(err, ConfigError::UnknownKey { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "config file {}: unknown key \"batch.trade_batch_sise\" (did you mean \"trade_batch_size\"?)",
            path.display()
        )
    );
}

#[test]
fn unknown_keys_fail_at_every_level() {
    assert!(check_err("colour: red\n", &[]).contains("unknown key \"colour\""));
    assert!(
        check_err("batch:\n  types:\n    trade:\n      max_rowz: 1\n", &[])
            .contains("unknown key \"batch.types.trade.max_rowz\" (did you mean \"max_rows\"?)")
    );
    // A Python-service section is accepted only with the keys the Python service's file has.
    assert!(
        check_err("hot_storage:\n  connection_pool:\n    sizes: 3\n", &[])
            .contains("unknown key \"hot_storage.connection_pool.sizes\"")
    );
    assert!(check_err("nats:\n  urll: x\n", &[]).contains("(did you mean \"url\"?)"));
}

#[test]
fn nats_url_precedence() {
    let yaml = "nats:\n  url: nats://yaml:4222\n  servers: [\"nats://servers:4222\"]\n";
    let both = [
        ("MARKETPRISM_NATS_URL", "nats://mp:4222"),
        ("NATS_URL", "nats://plain:4222"),
    ];
    let l = check(yaml, &both).unwrap();
    assert_eq!(l.config.nats.url(), "nats://mp:4222");
    assert_eq!(
        l.source("nats.url"),
        &Source::Env("MARKETPRISM_NATS_URL".into())
    );

    let l = check(yaml, &[("NATS_URL", "nats://plain:4222")]).unwrap();
    assert_eq!(l.config.nats.url(), "nats://plain:4222");
    assert_eq!(l.source("nats.url"), &Source::Env("NATS_URL".into()));

    // An empty variable counts as unset.
    let l = check(yaml, &[("MARKETPRISM_NATS_URL", ""), ("NATS_URL", " ")]).unwrap();
    assert_eq!(l.config.nats.url(), "nats://yaml:4222");
    assert!(matches!(l.source("nats.url"), Source::File(_)));
    assert!(
        l.warnings
            .iter()
            .any(|w| w.contains("\"nats.servers\" is ignored"))
    );

    let l = check(
        "nats:\n  servers: [\"nats://a:4222\", \"tls://b:4222\"]\n",
        &[],
    )
    .unwrap();
    assert_eq!(l.config.nats.urls, vec!["nats://a:4222", "tls://b:4222"]);

    let l = check("{}\n", &[]).unwrap();
    assert_eq!(l.config.nats.url(), "nats://localhost:4222");
    assert_eq!(l.source("nats.url"), &Source::Default);
}

#[test]
fn nats_urls_are_checked() {
    assert_eq!(
        check_err("", &[("NATS_URL", "http://x:4222")]),
        "env NATS_URL: invalid url \"http://x:4222\": scheme must be nats:// or tls://"
    );
    assert!(
        check_err("nats:\n  url: \"nats://a:4222,nats://b:42x\"\n", &[])
            .starts_with("nats.url: invalid url \"nats://b:42x\": invalid port")
    );
    let l = check("", &[("NATS_URL", "nats://u:p@[::1]:4222, tls://h")]).unwrap();
    assert_eq!(l.config.nats.urls.len(), 2);
}

#[test]
fn clickhouse_host_absent_means_embedded() {
    let l = check("", &[]).unwrap();
    assert_eq!(l.config.clickhouse.host, ClickHouseHost::Embedded);
    let l = check(
        "",
        &[
            ("CLICKHOUSE_HOST", "ch.internal"),
            ("CLICKHOUSE_HTTP_PORT", "8443"),
            ("CLICKHOUSE_SECURE", "1"),
        ],
    )
    .unwrap();
    assert_eq!(
        l.config.clickhouse.host,
        ClickHouseHost::Server("ch.internal".into())
    );
    assert_eq!(l.config.hot_endpoint().base_url, "https://ch.internal:8443");
    assert_eq!(
        l.source("clickhouse.host"),
        &Source::Env("CLICKHOUSE_HOST".into())
    );
    // The cold database lives on the hot server unless told otherwise.
    assert_eq!(
        l.config.cold_endpoint().base_url,
        "https://ch.internal:8443"
    );
}

#[test]
fn clickhouse_database_aliases_and_cold_server() {
    let l = check("", &[("CLICKHOUSE_DATABASE", "legacy_db")]).unwrap();
    assert_eq!(l.config.clickhouse.hot_db, "legacy_db");
    let l = check(
        "",
        &[
            ("CLICKHOUSE_DATABASE", "legacy_db"),
            ("CLICKHOUSE_HOT_DB", "ours"),
        ],
    )
    .unwrap();
    assert_eq!(l.config.clickhouse.hot_db, "ours");
    assert_eq!(
        l.source("clickhouse.hot_db"),
        &Source::Env("CLICKHOUSE_HOT_DB".into())
    );

    let env = [
        ("CLICKHOUSE_USER", "hot_user"),
        ("CLICKHOUSE_PASSWORD", "hot_pw"),
        ("COLD_CLICKHOUSE_HOST", "cold"),
        ("COLD_CLICKHOUSE_HTTP_PORT", "9123"),
    ];
    let l = check("", &env).unwrap();
    let cold = l.config.cold_endpoint();
    assert_eq!(cold.base_url, "http://cold:9123");
    assert_eq!(cold.user, "hot_user");
    assert_eq!(cold.password.expose(), "hot_pw");
    assert_eq!(cold.database, "marketprism_cold");

    assert_eq!(
        check_err("", &[("COLD_CLICKHOUSE_USER", "x")]),
        "cold_clickhouse.host: required when another cold_clickhouse key (or COLD_CLICKHOUSE_* variable) is set"
    );
}

#[test]
fn python_service_shipped_file_loads_with_mapping() {
    let path = manifest("src/config/testdata/python_hot_storage_config.yaml");
    let l = Config::load(Some(&path), &|_| None).unwrap();
    let c = &l.config;
    let file = Source::File(path.clone());
    assert_eq!(c.nats.urls, vec!["nats://127.0.0.1:4222"]);
    assert_eq!(c.http.port, 8080);
    assert_eq!(c.http.metrics_port, Some(9094));
    assert_eq!(
        c.clickhouse.host,
        ClickHouseHost::Server("localhost".into())
    );
    assert_eq!(c.clickhouse.http_port, 8123);
    assert_eq!(c.clickhouse.hot_db, "marketprism_hot");
    assert_eq!(c.clickhouse.user, "default");
    assert!(c.clickhouse.password.is_empty());
    let orderbook = c.batch.get(DataType::Orderbook);
    assert_eq!(orderbook.max_rows.get(), 6000);
    assert_eq!(orderbook.max_age, Duration::from_millis(2500));
    assert_eq!(orderbook.max_queue.get(), 24_000);
    let trade = c.batch.get(DataType::Trade);
    assert_eq!(trade.max_rows.get(), 10_000);
    assert_eq!(trade.max_age, Duration::from_secs(3));
    for t in DataType::ALL.into_iter().filter(|t| !t.is_high_frequency()) {
        assert_eq!(c.batch.get(t).max_rows.get(), 800, "{t}");
        assert_eq!(c.batch.get(t).max_age, Duration::from_secs(2), "{t}");
        assert_eq!(c.nats.max_ack_pending.get(t).get(), 6 * 800 + 4 * 2000);
    }
    assert_eq!(c.nats.types, DataType::ALL.to_vec());
    assert_eq!(c.log.level, "info");
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(l.source("batch.types.trade.max_rows"), &file);
    assert_eq!(l.source("http.port"), &file);
    assert_eq!(l.source("clickhouse.host"), &file);
    // Each Python service key without meaning here is reported once, not refused.
    for key in [
        "nats.max_reconnect_attempts",
        "batch.high_freq_types",
        "hot_storage.clickhouse_tcp_port",
        "hot_storage.connection_pool",
        "logging.output",
        "monitoring",
        "security",
    ] {
        assert!(
            l.warnings
                .iter()
                .any(|w| w.contains(&format!("Python service key \"{key}\" is ignored"))),
            "{key}: {:?}",
            l.warnings
        );
    }
    // The Python service's env variables still win over its file.
    let l = Config::load(
        Some(&path),
        &env_of(&[("CLICKHOUSE_HOST", "clickhouse-hot")]),
    )
    .unwrap();
    assert_eq!(
        l.config.clickhouse.host,
        ClickHouseHost::Server("clickhouse-hot".into())
    );
}

#[test]
fn python_service_retry_and_subscription_keys_map() {
    let yaml = "retry:\n  max_retries: 3\n  delay_seconds: 1\n  backoff_multiplier: 3\n\
                subscriptions:\n  lsr_enabled: false\n  trade_enabled: false\n";
    let l = check(yaml, &[]).unwrap();
    let c = &l.config;
    assert_eq!(c.retry.initial_backoff, Duration::from_secs(1));
    assert_eq!(c.retry.multiplier, 3.0);
    assert!(l.warnings.iter().any(|w| w.contains("retry.max_retries")));
    assert_eq!(
        c.nats.types,
        vec![
            DataType::Orderbook,
            DataType::FundingRate,
            DataType::OpenInterest,
            DataType::Liquidation,
            DataType::VolatilityIndex
        ]
    );
    // Our own key wins over the Python service's, with a warning.
    let l = check(
        "batch:\n  trade_batch_size: 7\n  types:\n    trade:\n      max_rows: 9\n",
        &[],
    )
    .unwrap();
    assert_eq!(l.config.batch.get(DataType::Trade).max_rows.get(), 9);
    let l = check("http_port: 9000\nhttp:\n  port: 9001\n", &[]).unwrap();
    assert_eq!(l.config.http.port, 9001);
    assert!(
        l.warnings
            .iter()
            .any(|w| w.contains("\"http_port\" is ignored"))
    );
}

#[test]
fn batch_layers_and_readme_table_shape() {
    let yaml = "batch:\n  max_rows: 3000\n  max_age: 500ms\n  types:\n    trades:\n      batch_size: 100\n      timeout: 10.0\n      max_queue: 1000\n";
    let c = check(yaml, &[]).unwrap().config;
    let trade = c.batch.get(DataType::Trade);
    assert_eq!(trade.max_rows.get(), 100);
    assert_eq!(trade.max_age, Duration::from_secs(10));
    assert_eq!(trade.max_queue.get(), 1000);
    let book = c.batch.get(DataType::Orderbook);
    assert_eq!(book.max_rows.get(), 3000);
    assert_eq!(book.max_age, Duration::from_millis(500));
    assert_eq!(book.max_bytes.get(), 64 << 20);
}

#[test]
fn bad_values_name_the_key() {
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (
            "",
            &[("CLICKHOUSE_HTTP_PORT", "80x")],
            "env CLICKHOUSE_HTTP_PORT: invalid port \"80x\": invalid digit",
        ),
        (
            "",
            &[("HOT_STORAGE_HTTP_PORT", "0")],
            "env HOT_STORAGE_HTTP_PORT: invalid port \"0\": must be 1-65535",
        ),
        (
            "",
            &[("MIGRATION_DRY_RUN", "perhaps")],
            "env MIGRATION_DRY_RUN: invalid boolean \"perhaps\": expected 1/0, true/false or yes/no",
        ),
        (
            "",
            &[("MIGRATION_ENABLED", "2")],
            "env MIGRATION_ENABLED: invalid boolean \"2\": expected 1/0, true/false or yes/no",
        ),
        (
            "",
            &[("MARKETPRISM_LOG_JSON", "2")],
            "env MARKETPRISM_LOG_JSON: invalid boolean \"2\": expected 1/0, true/false or yes/no",
        ),
        (
            "",
            &[("MIGRATION_WINDOW_HOURS", "0")],
            "env MIGRATION_WINDOW_HOURS: must be > 0",
        ),
        (
            "batch:\n  types:\n    trade:\n      max_rows: 0\n",
            &[],
            "batch.types.trade.max_rows: must be > 0",
        ),
        (
            "batch:\n  max_rows: 0\n",
            &[],
            "batch.max_rows: must be > 0",
        ),
        (
            "batch:\n  types:\n    orderbook:\n      max_rows: 10\n      max_queue: 5\n",
            &[],
            "batch.types.orderbook.max_queue: must be >= max_rows (5 < 10)",
        ),
        (
            "batch:\n  types:\n    trade:\n      max_bytes: 0\n",
            &[],
            "batch.types.trade.max_bytes: must be > 0",
        ),
        (
            "batch:\n  types:\n    candles: {}\n",
            &[],
            "batch.types.candles: unknown data type \"candles\"",
        ),
        (
            "nats:\n  types: [trade, trades]\n",
            &[],
            "nats.types: unknown data type \"trades\"",
        ),
        (
            "nats:\n  types: [trade, trade]\n",
            &[],
            "nats.types: \"trade\" is listed twice",
        ),
        (
            "nats:\n  types: []\n",
            &[],
            "nats.types: must name at least one data type",
        ),
        (
            "nats:\n  mode: push\n",
            &[],
            "nats.mode: unknown mode \"push\" (expected jetstream or core)",
        ),
        (
            "nats:\n  streams:\n    market_data:\n      name: MARKET.DATA\n",
            &[],
            "nats.streams.market_data.name: invalid name \"MARKET.DATA\": must not contain '.'",
        ),
        (
            "nats:\n  streams:\n    high_frequency:\n      name: \"HF >\"\n",
            &[],
            "nats.streams.high_frequency.name: invalid name \"HF >\": must not contain ' '",
        ),
        (
            "nats:\n  streams:\n    high_frequency:\n      subjects: [\"orderbook.>\"]\n",
            &[],
            "nats.streams: no stream captures data type \"trade\"",
        ),
        (
            "nats:\n  streams:\n    high_frequency:\n      subjects: [\"trade.>.x\", \"orderbook.>\"]\n",
            &[],
            "nats.streams.high_frequency.subjects: invalid subject \"trade.>.x\"",
        ),
        (
            "nats:\n  fetch_batch: 0\n",
            &[],
            "nats.fetch_batch: must be > 0",
        ),
        (
            "nats:\n  ack_wait: 5x\n",
            &[],
            "nats.ack_wait: invalid duration \"5x\": unknown unit \"x\"",
        ),
        (
            "nats:\n  streams:\n    market_data:\n      max_bytes: 2XB\n",
            &[],
            "nats.streams.market_data.max_bytes: invalid size \"2XB\"",
        ),
        (
            "clickhouse:\n  http_port: 70000\n",
            &[],
            "clickhouse.http_port: invalid port \"70000\": must be 1-65535",
        ),
        (
            "clickhouse:\n  compression: zstd\n",
            &[],
            "clickhouse.compression: unknown compression \"zstd\" (expected lz4 or none)",
        ),
        (
            "clickhouse:\n  hot_db: \"hot-db\"\n",
            &[],
            "clickhouse.hot_db: invalid database name \"hot-db\"",
        ),
        (
            "",
            &[("CLICKHOUSE_HOST", "http://ch:8123")],
            "env CLICKHOUSE_HOST: invalid host \"http://ch:8123\"",
        ),
        (
            "http:\n  port: 9000\n  metrics_port: 9000\n",
            &[],
            "http.metrics_port: must differ from http.port (9000)",
        ),
        (
            "http:\n  bind: localhost\n",
            &[],
            "http.bind: invalid ip address \"localhost\"",
        ),
        (
            "retry:\n  initial_backoff: 2s\n  max_backoff: 1s\n",
            &[],
            "retry.max_backoff: must be >= retry.initial_backoff",
        ),
        (
            "retry:\n  multiplier: 0.5\n",
            &[],
            "retry.multiplier: must be a number >= 1",
        ),
        (
            "log:\n  level: loud\n",
            &[],
            "log.level: unknown level \"loud\"",
        ),
        (
            "embedded:\n  listen: \"127.0.0.1\"\n",
            &[],
            "embedded.listen: invalid address \"127.0.0.1\": expected ip:port",
        ),
        (
            "nats: [1, 2]\n",
            &[],
            "nats: invalid type: sequence, expected a mapping",
        ),
    ];
    for (yaml, env, expected) in cases {
        let err = check_err(yaml, env);
        assert!(
            err.contains(expected),
            "got {err:?}, expected it to contain {expected:?}"
        );
    }
}

#[test]
fn seconds_and_python_style_values_are_accepted() {
    let yaml = "batch:\n  flush_interval: 3.0\nlog:\n  level: WARNING\nmigration:\n  window_hours: 0.05\n  dry_run: true\n";
    let c = check(
        yaml,
        &[
            ("MIGRATION_BATCH_LIMIT", "1_000"),
            ("MIGRATION_EXCHANGE", "binance"),
        ],
    )
    .unwrap()
    .config;
    assert_eq!(c.batch.get(DataType::Trade).max_age, Duration::from_secs(3));
    assert_eq!(c.log.level, "warn");
    assert_eq!(c.migration.window, Duration::from_secs(180));
    assert!(c.migration.dry_run);
    assert_eq!(c.migration.batch_limit.get(), 1000);
    assert_eq!(c.migration.exchange.as_deref(), Some("binance"));
}

#[test]
fn migration_enabled_from_file_and_env() {
    let file = check("migration:\n  enabled: true\n", &[]).unwrap();
    assert!(file.config.migration.enabled);
    for (value, expected) in [("1", true), ("true", true), ("0", false), ("false", false)] {
        let c = check(
            "migration:\n  enabled: true\n",
            &[("MIGRATION_ENABLED", value)],
        )
        .unwrap()
        .config;
        assert_eq!(c.migration.enabled, expected, "MIGRATION_ENABLED={value}");
    }
    let l = check("", &[("MIGRATION_ENABLED", "1")]).unwrap();
    assert_eq!(
        l.source("migration.enabled"),
        &Source::Env("MIGRATION_ENABLED".into())
    );
}

#[test]
fn log_env_and_rust_log() {
    let c = check(
        "log:\n  format: pretty\n",
        &[
            ("MARKETPRISM_LOG_JSON", "true"),
            ("LOG_LEVEL", "debug"),
            ("RUST_LOG", "marketprism_storage=trace"),
        ],
    )
    .unwrap()
    .config;
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.log.level, "debug");
    assert_eq!(c.log.filter(), "marketprism_storage=trace");
    let c = check("", &[("MARKETPRISM_LOG_JSON", "0")]).unwrap().config;
    assert_eq!(c.log.format, LogFormat::Pretty);
}

#[test]
fn empty_file_and_missing_file() {
    let l = check("# nothing here\n", &[]).unwrap();
    assert_eq!(l.config, Config::defaults().unwrap());
    let err = Config::load(Some(Path::new("/nonexistent/x.yaml")), &|_| None).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("config file /nonexistent/x.yaml: "),
        "{err}"
    );
}

#[test]
fn render_masks_secrets_and_shows_sources() {
    let yaml = "clickhouse:\n  password: hunter2\nhttp:\n  token: s3cret-token\n";
    let l = check(
        yaml,
        &[
            ("COLD_CLICKHOUSE_HOST", "cold"),
            ("COLD_CLICKHOUSE_PASSWORD", "pw2"),
            ("NATS_URL", "nats://n:4222"),
        ],
    )
    .unwrap();
    let text = render(&l);
    assert!(
        !text.contains("hunter2") && !text.contains("s3cret") && !text.contains("pw2"),
        "{text}"
    );
    let line = |key: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(key))
            .unwrap_or_else(|| panic!("no line for {key} in\n{text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(line("clickhouse.password")[1], "****");
    assert_eq!(line("clickhouse.password")[2], "file");
    assert_eq!(line("http.token")[1], "****");
    assert_eq!(
        line("cold_clickhouse.password")[1..],
        ["****", "env", "COLD_CLICKHOUSE_PASSWORD"]
    );
    assert_eq!(line("nats.url")[1..], ["nats://n:4222", "env", "NATS_URL"]);
    assert_eq!(line("clickhouse.user")[1..], ["default", "default"]);
    assert_eq!(
        line("batch.types.trade.max_bytes")[1..],
        ["64MiB", "default"]
    );
    assert_eq!(line("key")[1..], ["value", "source"]);
    // Empty secrets say so rather than pretending to hide something.
    let l = check("", &[]).unwrap();
    assert!(
        render(&l)
            .lines()
            .any(|l| l.starts_with("clickhouse.password") && l.contains("(empty)"))
    );
    // The value column is aligned: every source starts at the same column.
    let columns: std::collections::BTreeSet<usize> = render(&l)
        .lines()
        // Values longer than the column (subjects, types) overflow by design.
        .filter(|l| {
            l.ends_with(" default") && !l.contains("subjects") && !l.starts_with("nats.types")
        })
        .map(|l| l.len() - "default".len())
        .collect();
    assert_eq!(columns.len(), 1, "{columns:?}");
    // Secrets stay masked in Debug output too.
    assert!(!format!("{:?}", check(yaml, &[]).unwrap().config).contains("hunter2"));
}

#[test]
fn every_recorded_source_is_rendered() {
    let path = manifest("config/example.yaml");
    let l = Config::load(Some(&path), &|_| None).unwrap();
    let keys: Vec<String> = l.entries.iter().map(|(k, _)| k.clone()).collect();
    for key in l.sources.keys() {
        assert!(
            keys.contains(key),
            "source recorded for {key} but not rendered"
        );
    }
    let l = check("", &[("RUST_LOG", "x"), ("MIGRATION_SYMBOL_PREFIX", "BTC")]).unwrap();
    for key in l.sources.keys() {
        assert!(keys.contains(key), "{key}");
    }
    // Every printed key sits in a known section (which orders the output).
    for (key, _) in &l.entries {
        let section = key.split('.').next().unwrap();
        assert!(super::resolve::SECTIONS.contains(&section), "{key}");
    }
}

#[test]
fn empty_sections_are_empty() {
    // A section whose keys are all commented out is null in YAML.
    let l = check(
        "cold_clickhouse:\nnats:\n  streams:\nbatch:\n  types:\n    trade:\n",
        &[],
    )
    .unwrap();
    assert_eq!(l.config, Config::defaults().unwrap());
}

#[test]
fn every_key_is_documented_where_operators_look() {
    let docs = std::fs::read_to_string(manifest("docs/configuration.md")).unwrap();
    let example = std::fs::read_to_string(manifest("config/example.yaml")).unwrap();
    let keys = super::resolve::declared();
    assert!(keys.len() > 60, "{}", keys.len());
    for (name, env, file, doc, _) in keys {
        assert!(!doc.is_empty(), "{name} has no doc line");
        for var in env {
            assert!(
                docs.contains(&format!("`{var}`")),
                "{var} ({name}) not in the docs"
            );
        }
        // A `*` key is documented by its leaf (`batch.types.<type>.max_rows` …).
        let leaf = name.rsplit(['.', '*']).next().unwrap();
        let documented = match name.contains('*') {
            true => docs.contains(leaf),
            false => docs.contains(&format!("`{name}`")),
        };
        assert!(documented, "{name} not in docs/configuration.md");
        if file && !name.starts_with("subscriptions") {
            assert!(
                example.contains(&format!("{leaf}:")),
                "{name} not in example.yaml"
            );
        }
    }
}

#[test]
fn nats_connect_timeout_is_one_declaration() {
    let c = Config::defaults().unwrap();
    assert_eq!(c.nats.connect_timeout, Duration::from_secs(5));
    let env = [("MARKETPRISM_NATS_CONNECT_TIMEOUT", "2500ms")];
    let l = check("nats:\n  connect_timeout: 3s\n", &env).unwrap();
    assert_eq!(l.config.nats.connect_timeout, Duration::from_millis(2500));
    assert_eq!(
        l.source("nats.connect_timeout"),
        &Source::Env("MARKETPRISM_NATS_CONNECT_TIMEOUT".into())
    );
    let l = check("nats:\n  connect_timeout: 3s\n", &[]).unwrap();
    assert_eq!(l.config.nats.connect_timeout, Duration::from_secs(3));
    assert!(
        render(&l).lines().any(
            |l| l.split_whitespace().collect::<Vec<_>>()[..2] == ["nats.connect_timeout", "3s"]
        )
    );
    assert_eq!(
        check_err("", &[("MARKETPRISM_NATS_CONNECT_TIMEOUT", "0")]),
        "env MARKETPRISM_NATS_CONNECT_TIMEOUT: must be > 0"
    );
    assert_eq!(
        check_err("nats:\n  connect_timeout: 0s\n", &[]),
        "nats.connect_timeout: must be > 0"
    );
}

#[test]
fn env_only_and_python_only_keys_stay_where_they_belong() {
    // `log.rust_log` is read from RUST_LOG only: the file may not set it.
    assert!(check_err("log:\n  rust_log: debug\n", &[]).contains("unknown key \"log.rust_log\""));
    // The Python service's sections accept their own keys only, and `subscriptions` is a
    // section, not a value.
    assert!(
        check_err("subscriptions:\n  candles_enabled: true\n", &[])
            .contains("unknown key \"subscriptions.candles_enabled\"")
    );
    // A Python service key mapped onto ours warns only when ours is set too.
    let l = check("hot_storage:\n  clickhouse_user: py\n", &[]).unwrap();
    assert_eq!(l.config.clickhouse.user, "py");
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    let l = check(
        "hot_storage:\n  clickhouse_user: py\nclickhouse:\n  user: ours\n",
        &[],
    )
    .unwrap();
    assert_eq!(l.config.clickhouse.user, "ours");
    assert!(l.warnings[0].contains(
        "Python service key \"hot_storage.clickhouse_user\" is ignored: \"clickhouse.user\" is set"
    ));
}

#[test]
fn environment_overrides_a_file_value_that_only_breaks_a_rule() {
    // The file's value is refused on its own, but a variable that wins replaces it (as before
    // the key table): an operator fixes a bad file from the environment.
    for (yaml, var, value) in [
        ("log:\n  level: verbose\n", "LOG_LEVEL", "debug"),
        (
            "nats:\n  url: ftp://x\n",
            "MARKETPRISM_NATS_URL",
            "nats://n:4222",
        ),
        (
            "migration:\n  batch_limit: 0\n",
            "MIGRATION_BATCH_LIMIT",
            "10",
        ),
    ] {
        assert!(check(yaml, &[]).is_err(), "{yaml}");
        assert!(check(yaml, &[(var, value)]).is_ok(), "{yaml} with {var}");
    }
    // A malformed file value (the wrong type) is refused whatever the environment says.
    assert!(check("log:\n  level: [a, b]\n", &[("LOG_LEVEL", "debug")]).is_err());
}

#[test]
fn an_empty_subscriptions_section_sets_nothing() {
    let l = check("subscriptions: {}\n", &[]).unwrap();
    assert_eq!(l.config.nats.types.len(), 8);
    let l = check("subscriptions:\n  trade_enabled:\n", &[]).unwrap();
    assert_eq!(l.config.nats.types.len(), 8);
}

#[test]
fn unquoted_numeric_secrets_are_refused_not_rewritten() {
    let e = check_err("hot_storage:\n  clickhouse_password: 1.50\n", &[]);
    assert!(e.contains("write the secret in quotes"), "{e}");
    assert!(!e.contains("1.5"), "{e}");
    let e = check_err("http:\n  token: true\n", &[]);
    assert!(e.contains("write the secret in quotes"), "{e}");
    let l = check("clickhouse:\n  password: \"0123\"\n", &[]).unwrap();
    assert_eq!(l.config.clickhouse.password.expose(), "0123");
    // A value YAML itself cannot hold is refused without being echoed.
    let e = check_err("clickhouse:\n  password: 123456789012345678901234\n", &[]);
    assert!(!e.contains("123456789012345678901234"), "{e}");
}

#[test]
fn a_cluster_sets_the_layout_and_the_insert_quorum_needs_one() {
    let c = check("clickhouse:\n  cluster: mp\n  insert_quorum: 2\n", &[])
        .unwrap()
        .config;
    assert_eq!(c.clickhouse.cluster.as_deref(), Some("mp"));
    assert_eq!(
        c.clickhouse.layout(),
        crate::schema::Layout::Cluster("mp".into())
    );
    assert_eq!(c.clickhouse.insert_quorum, 2);
    assert!(c.clickhouse.insert_quorum_parallel);
    assert_eq!(c.clickhouse.insert_quorum_timeout, Duration::from_secs(30));
    let e = check_err(
        "clickhouse:\n  cluster: mp\n  insert_quorum: 2\n  insert_quorum_timeout: 1m\n",
        &[],
    );
    assert!(
        e.contains("clickhouse.insert_quorum_timeout") && e.contains("clickhouse.insert_timeout"),
        "{e}"
    );
    let c = check("", &[("CLICKHOUSE_CLUSTER", "prod-1.eu")])
        .unwrap()
        .config;
    assert_eq!(c.clickhouse.cluster.as_deref(), Some("prod-1.eu"));
    assert_eq!(Config::defaults().unwrap().clickhouse.cluster, None);
    assert_eq!(
        Config::defaults().unwrap().clickhouse.layout(),
        crate::schema::Layout::Single
    );
    let e = check_err("clickhouse:\n  insert_quorum: 2\n", &[]);
    assert!(
        e.contains("clickhouse.insert_quorum") && e.contains("clickhouse.cluster"),
        "{e}"
    );
    let e = check_err("clickhouse:\n  cluster: \"mp`x\"\n", &[]);
    assert!(e.contains("clickhouse.cluster"), "{e}");
}

/// A stream without an age limit could re-send a batch older than the replicas keep its
/// hashes (`replicated_deduplication_window_seconds`): refused, naming the key.
#[test]
fn a_cluster_refuses_streams_without_an_age_limit() {
    let yaml =
        "clickhouse:\n  cluster: mp\nnats:\n  streams:\n    market_data:\n      max_age: 0s\n";
    let e = check_err(yaml, &[]);
    assert!(e.contains("nats.streams.market_data.max_age"), "{e}");
    assert!(e.contains("replicated_deduplication_window_seconds"), "{e}");
    // One server keeps hashes by count only; core mode never re-sends.
    assert!(
        check(
            "nats:\n  streams:\n    market_data:\n      max_age: 0s\n",
            &[]
        )
        .is_ok()
    );
    let core = format!("{yaml}  mode: core\n");
    assert!(check(&core, &[]).is_ok(), "{core}");
}

#[test]
fn kv_replicas_default_to_the_largest_stream_replicas_and_are_checked() {
    let c = Config::defaults().unwrap();
    assert_eq!(c.nats.kv_replicas.get(), 1);
    let l = check(
        "nats:\n  streams:\n    high_frequency:\n      replicas: 3\n",
        &[],
    )
    .unwrap();
    assert_eq!(l.config.nats.kv_replicas.get(), 3, "the largest stream's");
    assert_eq!(l.source("nats.kv_replicas"), &Source::Default);
    assert!(
        l.entries
            .contains(&("nats.kv_replicas".to_string(), "3".to_string()))
    );
    let yaml = "nats:\n  kv_replicas: 5\n  streams:\n    market_data:\n      replicas: 3\n";
    let l = check(yaml, &[]).unwrap();
    assert_eq!(l.config.nats.kv_replicas.get(), 5, "set wins");
    assert!(matches!(l.source("nats.kv_replicas"), Source::File(_)));
    assert_eq!(
        check_err("nats:\n  kv_replicas: 6\n", &[]),
        "nats.kv_replicas: must be 1 to 5 (JetStream's largest replica count), got 6"
    );
    assert!(check_err("nats:\n  kv_replicas: 0\n", &[]).starts_with("nats.kv_replicas: "));
    assert_eq!(
        check_err(
            "nats:\n  streams:\n    market_data:\n      replicas: 7\n",
            &[]
        ),
        "nats.streams.market_data.replicas: must be 1 to 5 (JetStream's largest replica count), got 7"
    );
}

#[test]
fn nats_urls_are_a_list_and_redacted_in_messages() {
    let l = check(
        "",
        &[(
            "NATS_URL",
            "nats://u:p@n1:4222, tls://u:p@n2:4223,nats://n3:4224",
        )],
    )
    .unwrap();
    let n = &l.config.nats;
    assert_eq!(n.urls.len(), 3);
    assert_eq!(
        n.url_redacted(),
        "nats://u:***@n1:4222,tls://u:***@n2:4223,nats://n3:4224"
    );
    // The client is given the URLs without credentials, and the credentials as the auth.
    assert_eq!(
        n.server_urls(),
        ["nats://n1:4222", "tls://n2:4223", "nats://n3:4224"]
    );
    assert_eq!(
        n.auth,
        NatsAuth::UserPassword {
            user: "u".into(),
            password: Secret::new("p"),
            key: "nats.url"
        }
    );
    let l = check("", &[("NATS_URL", "tls://tok@n2:4223")]).unwrap();
    assert_eq!(
        l.config.nats.auth,
        NatsAuth::Token {
            token: Secret::new("tok"),
            key: "nats.url"
        }
    );
    // One set of credentials is sent to every server.
    assert_eq!(
        check_err("", &[("NATS_URL", "nats://u:p@n1:4222,tls://tok@n2:4223")]),
        "env NATS_URL: the URLs carry different credentials; the client sends one set to every server (use nats.user/nats.password or nats.token instead)"
    );
}

#[test]
fn nats_url_secrets_are_never_printed_by_config_or_in_errors() {
    let secret = "s3cr3t-PW";
    let token = "t0k3n-XYZ";
    let url = format!("nats://alice:{secret}@n1:4222,tls://alice:{secret}@n2:4223");
    let l = check("", &[("NATS_URL", url.as_str())]).unwrap();
    // The client still gets the credentials…
    assert_eq!(
        l.config.nats.auth,
        NatsAuth::UserPassword {
            user: "alice".into(),
            password: Secret::new(secret),
            key: "nats.url"
        }
    );
    // …and nothing printed shows them.
    let printed = crate::config::render(&l);
    assert!(
        printed.contains("nats://alice:***@n1:4222,tls://alice:***@n2:4223"),
        "{printed}"
    );
    let l = check("", &[("NATS_URL", &format!("tls://{token}@n2:4223"))]).unwrap();
    let printed_token = crate::config::render(&l);
    assert!(
        printed_token.contains("tls://***@n2:4223"),
        "{printed_token}"
    );
    assert!(
        !printed.contains(secret) && !printed_token.contains(token),
        "{printed}"
    );
    // A raw `/`, `?` or `#` would end the URL's authority inside the password: refused, with
    // the way to write it, and never quoted.
    for raw in ["pa/ss-w0rd-x", "pa?ss-w0rd-x", "pa#ss-w0rd-x"] {
        let err = check_err("", &[("NATS_URL", &format!("nats://alice:{raw}@n1:4222"))]);
        assert!(
            err.contains("percent-encode the user, password or token") && !err.contains(raw),
            "{err}"
        );
    }
    for bad in [
        format!("nats://alice:{secret}@:4222"),
        format!("nats://alice:{secret}@n1:notaport"),
        format!("http://alice:{secret}@n1:4222"),
    ] {
        let err = check_err("", &[("NATS_URL", bad.as_str())]);
        assert!(!err.contains(secret), "{err}");
        assert!(err.contains("alice:***@"), "{err}");
    }
}

#[test]
fn nats_auth_is_one_method_named_by_its_key() {
    let l = check(
        "nats:\n  user: svc\n  password: \"pw-123\"\n",
        &[("MARKETPRISM_NATS_URL", "nats://n1:4222")],
    )
    .unwrap();
    assert_eq!(
        l.config.nats.auth,
        NatsAuth::UserPassword {
            user: "svc".into(),
            password: Secret::new("pw-123"),
            key: "nats.password"
        }
    );
    let printed = crate::config::render(&l);
    assert!(!printed.contains("pw-123"), "{printed}");
    assert!(printed.contains("user/password"), "{printed}");
    let l = check("", &[("MARKETPRISM_NATS_TOKEN", "tk-9")]).unwrap();
    assert_eq!(
        l.config.nats.auth,
        NatsAuth::Token {
            token: Secret::new("tk-9"),
            key: "nats.token"
        }
    );
    assert!(!crate::config::render(&l).contains("tk-9"));
    assert_eq!(
        check_err("nats:\n  user: svc\n", &[]),
        "nats.user: needs nats.password (MARKETPRISM_NATS_PASSWORD)"
    );
    assert_eq!(
        check_err("", &[("MARKETPRISM_NATS_PASSWORD", "pw-123")]),
        "env MARKETPRISM_NATS_PASSWORD: needs nats.user (MARKETPRISM_NATS_USER)"
    );
    assert_eq!(
        check_err("nats:\n  token: \"tk-9\"\n  creds_file: /x.creds\n", &[]),
        "nats.creds_file: only one NATS auth method can be used, and nats.token is set too"
    );
    assert_eq!(
        check_err(
            "nats:\n  user: svc\n  password: \"pw-123\"\n",
            &[("MARKETPRISM_NATS_URL", "nats://tk-9@n1:4222")]
        ),
        "env MARKETPRISM_NATS_URL: only one NATS auth method can be used, and nats.user/nats.password is set too"
    );
    let e = check_err("nats:\n  nkey_seed_file: /nonexistent/seed\n", &[]);
    assert!(
        e.starts_with("nats.nkey_seed_file: cannot read /nonexistent/seed: "),
        "{e}"
    );
    // A seed file holding a password instead of a seed: the error names the file only.
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed");
    std::fs::write(&seed, "hunter2-not-a-seed").unwrap();
    let e = check_err(
        "",
        &[("MARKETPRISM_NATS_NKEY_SEED_FILE", seed.to_str().unwrap())],
    );
    assert!(e.contains("holds no valid nkey seed"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
    let user = nkeys::KeyPair::new_user();
    std::fs::write(&seed, user.seed().unwrap()).unwrap();
    let l = check(
        "",
        &[("MARKETPRISM_NATS_NKEY_SEED_FILE", seed.to_str().unwrap())],
    )
    .unwrap();
    assert_eq!(l.config.nats.auth, NatsAuth::NkeySeedFile(seed.clone()));
    assert!(!crate::config::render(&l).contains(&user.seed().unwrap()));
}

#[test]
fn nats_tls_files_are_checked_and_imply_tls() {
    assert!(!Config::defaults().unwrap().nats.tls.required);
    let l = check("", &[("MARKETPRISM_NATS_URL", "tls://n1:4222")]).unwrap();
    assert!(l.config.nats.tls.required);
    let l = check("nats:\n  tls:\n    first: true\n", &[]).unwrap();
    assert!(l.config.nats.tls.first && l.config.nats.tls.required);
    assert_eq!(
        check_err("nats:\n  tls:\n    cert: /c.pem\n", &[]),
        "nats.tls.cert: needs nats.tls.key (its private key)"
    );
    assert_eq!(
        check_err("", &[("MARKETPRISM_NATS_TLS_KEY", "/k.pem")]),
        "env MARKETPRISM_NATS_TLS_KEY: needs nats.tls.cert (the certificate it is the key of)"
    );
    let e = check_err("nats:\n  tls:\n    ca: /nonexistent/ca.pem\n", &[]);
    assert!(
        e.starts_with("nats.tls.ca: cannot read /nonexistent/ca.pem"),
        "{e}"
    );
    assert!(
        check_err("nats:\n  tls:\n    colour: red\n", &[])
            .contains("unknown key \"nats.tls.colour\"")
    );
}

#[test]
fn a_non_loopback_bind_without_a_token_fails_naming_both_keys() {
    for bind in ["0.0.0.0", "::", "10.1.2.3"] {
        let yaml = format!("http:\n  bind: \"{bind}\"\n");
        let e = check_err(&yaml, &[]);
        assert!(
            e.starts_with("http.token: required when http.bind") && e.contains(bind),
            "{e}"
        );
        let ok = check(&yaml, &[("MARKETPRISM_HTTP_TOKEN", "a-long-token")]).unwrap();
        assert_eq!(ok.config.http.bind.to_string(), bind);
        // An empty token is no token.
        let e = check_err(&format!("{yaml}  token: \"\"\n"), &[]);
        assert!(e.starts_with("http.token: required"), "{e}");
    }
    // Loopback needs none, in either family (and as an IPv4-mapped IPv6 address).
    for bind in ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"] {
        let yaml = format!("http:\n  bind: \"{bind}\"\n");
        assert!(check(&yaml, &[]).is_ok(), "{bind}");
    }
}

/// Whether a key's name says it holds a secret (or a file whose content is one).
fn named_like_a_secret(name: &str) -> bool {
    let leaf = name.rsplit('.').next().unwrap_or(name);
    ["password", "token", "secret", "seed", "creds", "nkey"]
        .iter()
        .any(|w| leaf.contains(w))
        || name.ends_with("tls.key")
}

#[test]
fn every_key_named_like_a_secret_has_a_secret_kind() {
    // A new password, token, seed, creds file or TLS key declared with a plain kind would be
    // printed by `config` and never masked in logs: its kind must report its secrets
    // (`PASSWORD`, `TOKEN`, `SECRET_FILE`, `NATS_URLS`).
    let declared = super::resolve::declared();
    for (name, _, _, _, secret) in &declared {
        if named_like_a_secret(name) {
            assert!(
                *secret,
                "{name} holds a secret but its kind does not say so"
            );
        }
    }
    let secret_keys: Vec<&str> = declared.iter().filter(|d| d.4).map(|d| d.0).collect();
    for k in [
        "nats.url",
        "clickhouse.password",
        "cold_clickhouse.password",
        "http.token",
    ] {
        assert!(secret_keys.contains(&k), "{k}: {secret_keys:?}");
    }
    assert!(named_like_a_secret("nats.creds_file") && named_like_a_secret("nats.tls.key"));
    assert!(!named_like_a_secret("nats.tls.cert") && !named_like_a_secret("nats.user"));
}

#[test]
fn every_secret_of_the_configuration_is_reported_for_masking() {
    let yaml =
        "clickhouse:\n  password: \"file-ch-password\"\nhttp:\n  token: \"file-ops-token\"\n";
    let env = [
        ("COLD_CLICKHOUSE_HOST", "cold"),
        ("COLD_CLICKHOUSE_PASSWORD", "env-cold-password"),
        (
            "MARKETPRISM_NATS_URL",
            "nats://alice:env-nats-password@n1:4222,nats://alice:env-nats-password@n2:4222,nats://n3:4222",
        ),
    ];
    let mut l = check(yaml, &env).unwrap();
    let texts = |l: &Loaded| -> Vec<String> {
        l.secret_texts()
            .iter()
            .map(|s| s.expose().to_string())
            .collect()
    };
    let found = texts(&l);
    for s in [
        "file-ch-password",
        "file-ops-token",
        "env-cold-password",
        "env-nats-password",
    ] {
        assert!(found.iter().any(|f| f == s), "{s} not reported: {found:?}");
    }
    // A token alone in the URL, and the auth keys of their own.
    let t = check(
        "",
        &[("MARKETPRISM_NATS_URL", "tls://env-nats-token@n2:4222")],
    )
    .unwrap();
    assert!(texts(&t).iter().any(|f| f == "env-nats-token"));
    let t = check("", &[("MARKETPRISM_NATS_TOKEN", "env-nats-token-key")]).unwrap();
    assert!(texts(&t).iter().any(|f| f == "env-nats-token-key"));
    let t = check(
        "nats:\n  user: svc\n",
        &[("MARKETPRISM_NATS_PASSWORD", "env-nats-password-key")],
    )
    .unwrap();
    assert!(texts(&t).iter().any(|f| f == "env-nats-password-key"));
    let keys: Vec<&str> = l.secrets.iter().map(|(k, _)| k.as_str()).collect();
    assert!(
        keys.contains(&"nats.url") && keys.contains(&"http.token"),
        "{keys:?}"
    );
    // A secret file reports its key material, not its armour.
    let mut file = tempfile::NamedTempFile::new().unwrap();
    let creds = "-----BEGIN NATS USER JWT-----\neyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.jwt\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\nSUAIBDPBAUTWCWBKIO6XHQNINK5FWJW4OHLXC3HQ2KFE4PEJUA44CNHTC4\n------END USER NKEY SEED------\n";
    file.write_all(creds.as_bytes()).unwrap();
    l.secrets.push((
        "nats.creds_file".into(),
        SecretItem::File(file.path().into()),
    ));
    l.secrets.push((
        "nats.nkey_seed_file".into(),
        SecretItem::File("/nonexistent/seed".into()),
    ));
    let found = texts(&l);
    assert!(found.iter().any(|f| f.starts_with("eyJ0eXAi")), "{found:?}");
    assert!(found.iter().any(|f| f.starts_with("SUAIBDPB")), "{found:?}");
    assert!(!found.iter().any(|f| f.contains("BEGIN")), "{found:?}");
    // Empty secrets (the default password) report nothing to mask.
    let l = check("", &[]).unwrap();
    assert!(l.secret_texts().is_empty());
}

#[test]
fn a_secret_too_short_to_mask_in_logs_is_warned_about() {
    let l = check("clickhouse:\n  password: \"abc\"\n", &[]).unwrap();
    assert!(
        l.warnings
            .iter()
            .any(|w| w.contains("clickhouse.password: a secret shorter than 6 characters")),
        "{:?}",
        l.warnings
    );
    assert!(!l.warnings.iter().any(|w| w.contains("abc")));
    let l = check("clickhouse:\n  password: \"long-enough\"\n", &[]).unwrap();
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
}

#[test]
fn secrets_print_masked_through_every_formatter() {
    let s = Secret::new("fmt-secret-value");
    assert_eq!(format!("{s}"), "****");
    assert_eq!(format!("{s:?}"), "****");
    assert_eq!(serde_json::to_string(&s).unwrap(), "\"****\"");
    assert_eq!(format!("{}", Secret::new("")), "(empty)");
}

#[test]
fn the_secret_variables_are_those_of_the_secret_keys() {
    let vars = secret_variables();
    for v in [
        "MARKETPRISM_NATS_URL",
        "NATS_URL",
        "CLICKHOUSE_PASSWORD",
        "COLD_CLICKHOUSE_PASSWORD",
        "MARKETPRISM_HTTP_TOKEN",
    ] {
        assert!(vars.contains(&v), "{v}: {vars:?}");
    }
    assert!(!vars.contains(&"CLICKHOUSE_USER") && !vars.contains(&"MARKETPRISM_DATA_DIR"));
}

fn test_ca() -> rcgen::Certificate {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&key).unwrap()
}

/// A self-signed leaf certificate and its key, PEM.
fn test_leaf() -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A directory holding `ca.pem`, `leaf.pem` and `leaf.key`.
fn test_pki() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), test_ca().pem()).unwrap();
    let (cert, key) = test_leaf();
    std::fs::write(dir.path().join("leaf.pem"), cert).unwrap();
    std::fs::write(dir.path().join("leaf.key"), key).unwrap();
    dir
}

#[test]
fn tls_files_are_checked_at_start_naming_the_key() {
    let pki = test_pki();
    let p = |n: &str| pki.path().join(n).display().to_string();
    let key_text = std::fs::read_to_string(p("leaf.key")).unwrap();
    let secure = "clickhouse:\n  host: ch.internal\n  secure: true\n";
    let cases = [
        (
            format!("{secure}  tls:\n    ca: {}\n", p("missing.pem")),
            format!(
                "clickhouse.tls.ca: cannot read {}: entity not found",
                p("missing.pem")
            ),
        ),
        (
            format!("{secure}  tls:\n    ca: {}\n", p("leaf.key")),
            format!(
                "clickhouse.tls.ca: {} is not a PEM certificate file (no PEM block of that kind found)",
                p("leaf.key")
            ),
        ),
        (
            format!("{secure}  tls:\n    cert: {}\n", p("leaf.pem")),
            "clickhouse.tls.cert: needs key too (a client certificate and its key go together)"
                .to_string(),
        ),
        (
            format!("{secure}  tls:\n    cert: {}\n    key: {}\n", p("leaf.pem"), p("ca.pem")),
            format!(
                "clickhouse.tls.key: {} is not a PEM private key file (no PEM block of that kind found)",
                p("ca.pem")
            ),
        ),
        (
            format!("clickhouse:\n  host: ch.internal\n  tls:\n    ca: {}\n", p("ca.pem")),
            "clickhouse.tls.ca: needs HTTPS: set clickhouse.secure: true (or, for the embedded server, embedded.tls.cert)".to_string(),
        ),
        (
            format!(
                "{secure}cold_clickhouse:\n  host: cold.internal\n  tls:\n    key: {}\n",
                p("leaf.key")
            ),
            "cold_clickhouse.tls.key: needs cert too (a client certificate and its key go together)"
                .to_string(),
        ),
        (
            format!("embedded:\n  tls:\n    cert: {}\n", p("leaf.pem")),
            "embedded.tls.cert: needs embedded.tls.key too".to_string(),
        ),
        (
            format!("embedded:\n  tls:\n    client_ca: {}\n", p("ca.pem")),
            "embedded.tls.client_ca: needs embedded.tls.cert and embedded.tls.key (client certificates are a TLS feature)".to_string(),
        ),
    ];
    for (yaml, expected) in cases {
        let e = check_err(&yaml, &[]);
        assert!(e.ends_with(&expected), "{yaml}\n{e}\nwanted {expected}");
        assert!(!e.contains(key_text.lines().nth(1).unwrap()), "{e}");
    }
    // The environment names the variable.
    let e = check_err(secure, &[("CLICKHOUSE_TLS_CA", "/nonexistent/ca.pem")]);
    assert!(e.contains("CLICKHOUSE_TLS_CA"), "{e}");
}

#[test]
fn cold_tls_defaults_to_the_hot_files() {
    let pki = test_pki();
    let p = |n: &str| pki.path().join(n);
    let yaml = format!(
        "clickhouse:\n  host: ch.internal\n  secure: true\n  tls:\n    ca: {}\n    cert: {}\n    key: {}\ncold_clickhouse:\n  host: cold.internal\n  tls:\n    ca: {}\n",
        p("ca.pem").display(),
        p("leaf.pem").display(),
        p("leaf.key").display(),
        p("leaf.pem").display(),
    );
    let c = check(&yaml, &[]).unwrap().config;
    let cold = c.cold_endpoint().tls.unwrap();
    assert_eq!(cold.files().ca, Some(p("leaf.pem")), "its own CA");
    assert_eq!(
        cold.files().cert,
        Some(p("leaf.pem")),
        "the hot certificate"
    );
    assert_eq!(cold.files().key, Some(p("leaf.key")));
    assert_eq!(c.hot_endpoint().tls.unwrap().files().ca, Some(p("ca.pem")));
    // Without TLS keys neither side has a TLS configuration (the crate's own client).
    let c = Config::defaults().unwrap();
    assert!(c.hot_endpoint().tls.is_none() && c.cold_endpoint().tls.is_none());
}

#[test]
fn a_non_loopback_embedded_listen_needs_a_password() {
    let e = check_err("embedded:\n  listen: 0.0.0.0:8123\n", &[]);
    assert!(
        e.ends_with("embedded.listen: 0.0.0.0:8123 is reachable from other machines: set embedded.password (MARKETPRISM_EMBEDDED_PASSWORD) or listen on 127.0.0.1"),
        "{e}"
    );
    let l = check(
        "embedded:\n  listen: 0.0.0.0:8123\n",
        &[("MARKETPRISM_EMBEDDED_PASSWORD", "pw-1")],
    )
    .unwrap();
    assert_eq!(l.config.embedded.password.expose(), "pw-1");
    // An external server: embedded.listen is not used, so not checked.
    check(
        "clickhouse:\n  host: ch.internal\nembedded:\n  listen: 0.0.0.0:8123\n",
        &[],
    )
    .unwrap();
    check("embedded:\n  listen: '[::1]:8123'\n", &[]).unwrap();
}

#[test]
fn the_embedded_credentials_are_the_clients_defaults() {
    let l = check("embedded:\n  user: writer\n  password: pw-2\n", &[]).unwrap();
    let hot = l.config.hot_endpoint();
    assert_eq!(
        (hot.user.as_str(), hot.password.expose()),
        ("writer", "pw-2")
    );
    assert!(!render(&l).contains("pw-2"));
    // Set explicitly, clickhouse.* win; with an external server the embedded ones are unused.
    let l = check(
        "clickhouse:\n  password: other\nembedded:\n  password: pw-2\n",
        &[],
    )
    .unwrap();
    assert_eq!(l.config.hot_endpoint().password.expose(), "other");
    let l = check(
        "clickhouse:\n  host: ch.internal\nembedded:\n  password: pw-2\n",
        &[],
    )
    .unwrap();
    assert_eq!(l.config.hot_endpoint().password.expose(), "");
    // The embedded server over HTTPS: the URL says so.
    let pki = test_pki();
    let p = |n: &str| pki.path().join(n).display().to_string();
    let yaml = format!(
        "clickhouse:\n  tls:\n    ca: {}\nembedded:\n  tls:\n    cert: {}\n    key: {}\n",
        p("ca.pem"),
        p("leaf.pem"),
        p("leaf.key")
    );
    let c = check(&yaml, &[]).unwrap().config;
    assert_eq!(c.hot_endpoint().base_url, "https://127.0.0.1:8123");
    // The service's client must be able to pass its embedded server's TLS.
    let embedded_tls = format!(
        "embedded:\n  tls:\n    cert: {}\n    key: {}\n",
        p("leaf.pem"),
        p("leaf.key")
    );
    assert!(
        check_err(&embedded_tls, &[]).ends_with("clickhouse.tls.ca: must be set to the CA that signed embedded.tls.cert (the service connects to its embedded server over HTTPS)"),
    );
    let mtls = format!(
        "clickhouse:\n  tls:\n    ca: {}\n{embedded_tls}    client_ca: {}\n",
        p("ca.pem"),
        p("ca.pem")
    );
    let e = check_err(&mtls, &[]);
    assert!(
        e.ends_with("clickhouse.tls.cert: must be set (with clickhouse.tls.key) to a certificate signed by embedded.tls.client_ca: the embedded server requires client certificates"),
        "{e}"
    );
}

#[test]
fn a_password_over_plain_http_to_another_machine_is_warned_about() {
    let warned = |yaml: &str| {
        check(yaml, &[])
            .unwrap()
            .warnings
            .into_iter()
            .filter(|w| w.contains("sent in clear"))
            .collect::<Vec<_>>()
    };
    let w = warned("clickhouse:\n  host: ch.internal\n  password: \"s3cret-pw\"\n");
    assert_eq!(
        w,
        [
            "clickhouse.password: sent in clear over plain HTTP to ch.internal; set clickhouse.secure: true (HTTPS)"
        ]
    );
    assert!(
        warned("clickhouse:\n  host: ch.internal\n  secure: true\n  password: \"s3cret-pw\"\n")
            .is_empty()
    );
    assert!(warned("clickhouse:\n  host: 127.0.0.1\n  password: \"s3cret-pw\"\n").is_empty());
    assert!(warned("clickhouse:\n  host: ch.internal\n").is_empty());
    let w = warned(
        "clickhouse:\n  host: localhost\n  password: \"s3cret-pw\"\ncold_clickhouse:\n  host: cold.internal\n",
    );
    assert_eq!(
        w,
        [
            "cold_clickhouse.password: sent in clear over plain HTTP to cold.internal; set cold_clickhouse.secure: true (HTTPS)"
        ]
    );
}
