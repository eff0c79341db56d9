//! Swap-in over the Python service's tables: `init` upgrades them in place (deduplication
//! window, open-interest widening) without losing or changing a row; `init --check` and `run`
//! refuse while exactly-once cannot hold.
//!
//! The tables come from `fixtures/python_clickhouse_schema.sql`, reconstructed from the
//! Python service's reference (we do not have its original file).

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use marketprism_storage::model::{Common, DataType, OpenInterestRow, Record};
use marketprism_storage::schema::{self, DEDUP_WINDOW};
use marketprism_storage::sink::{self, Sink, SinkOptions};

use crate::harness::{TestClickHouse, TestNats, wait_until};

const HOT: &str = "marketprism_hot";
const COLD: &str = "marketprism_cold";
const FIXTURE: &str = include_str!("fixtures/python_clickhouse_schema.sql");

fn bin(ch: &TestClickHouse) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_marketprism-storage"));
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("MARKETPRISM_TOOLS_DIR", crate::harness::tools_dir())
        .env("CLICKHOUSE_HOST", "127.0.0.1")
        .env("CLICKHOUSE_HTTP_PORT", ch.port.to_string());
    c
}

fn run(mut c: Command, args: &[&str]) -> Output {
    let out = c.args(args).output().unwrap();
    eprintln!(
        "$ {args:?} → {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Applies the Python service's schema file the way its init job does, one statement at a
/// time.
async fn apply_python_schema(ch: &TestClickHouse) {
    let sql: String = FIXTURE
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    for st in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        ch.query(st).await;
    }
}

/// A value expression for column type `ty`, row `number`, time expression `ts`.
fn value_expr(name: &str, ty: &str, ts: &str) -> String {
    match ty {
        t if t.starts_with("DateTime64") => ts.to_string(),
        t if t.starts_with("Decimal") => {
            "toDecimal64(toString(number % 100000) || '.12345678', 8)".to_string()
        }
        "UInt64" | "UInt32" => "number * 7".into(),
        "Bool" => "number % 2 = 0".into(),
        "Date" => format!("toDate({ts})"),
        _ if name == "exchange" => "['binance', 'okx', 'deribit'][number % 3 + 1]".into(),
        _ => format!("'{name}-' || toString(number % 17) || '\\'q'"),
    }
}

/// Inserts `n` rows into `db.table` like the Python service's SQL inserts do (every column but
/// `created_at` given), spread over the last two days.
async fn insert_rows(ch: &TestClickHouse, db: &str, t: DataType, n: u64, now_ms: i64) {
    let cols: Vec<&schema::Column> = schema::columns(t).iter().filter(|c| c.written).collect();
    let ts = format!("fromUnixTimestamp64Milli(toInt64({now_ms} - 1000 - number * 17000), 'UTC')");
    let names: Vec<String> = cols.iter().map(|c| format!("`{}`", c.name)).collect();
    let values: Vec<String> = cols.iter().map(|c| value_expr(c.name, c.ty, &ts)).collect();
    ch.query(&format!(
        "INSERT INTO {db}.{} ({}) SELECT {} FROM numbers({n})",
        t.table(),
        names.join(", "),
        values.join(", ")
    ))
    .await;
}

/// `count()` and a hash of every column's text, so a widened column with the same values
/// gives the same fingerprint.
async fn content(ch: &TestClickHouse, db: &str, t: DataType) -> String {
    let cols: Vec<String> = schema::columns(t)
        .iter()
        .map(|c| format!("toString(`{}`)", c.name))
        .collect();
    ch.query(&format!(
        "SELECT count(), sum(cityHash64({})) FROM {db}.{}",
        cols.join(", "),
        t.table()
    ))
    .await
}

fn oi_rows(n: u64, now_ms: i64, notional: i128) -> Vec<Record> {
    (0..n)
        .map(|i| {
            Record::OpenInterest(OpenInterestRow {
                common: Common {
                    timestamp_ms: now_ms - 5_000 - i as i64,
                    exchange: ["binance", "okx"][(i % 2) as usize].into(),
                    market_type: "perpetual".into(),
                    symbol: "BTC-USDT".into(),
                    data_source: "simple_hot_storage".into(),
                },
                open_interest: 8_123_456_700_000 + i as i128,
                open_interest_value: notional,
                count: 0,
            })
        })
        .collect()
}

async fn insert_oi(sink: &Sink, rows: &[Record], token: &str) -> Result<(), sink::SinkError> {
    let body = sink::encode_block(DataType::OpenInterest, rows).unwrap();
    sink.insert("open_interests", body, rows.len() as u64, token)
        .await
}

/// Starts `run` against `ch` (NATS on a closed port: the schema check comes first) and waits
/// up to 90 s for it to exit; returns its stderr, or `None` if it kept running.
async fn run_service_until_exit(ch: &TestClickHouse) -> Option<(Option<i32>, String)> {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("run.log");
    let port = marketprism_storage::embedded::free_port().unwrap();
    let nats_port = marketprism_storage::embedded::free_port().unwrap();
    let mut child = bin(ch)
        .arg("run")
        .env("HOT_STORAGE_HTTP_PORT", port.to_string())
        .env(
            "MARKETPRISM_NATS_URL",
            format!("nats://127.0.0.1:{nats_port}"),
        )
        .env("MARKETPRISM_DATA_DIR", dir.path().join("data"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    eprintln!("run log:\n{text}");
    status.map(|s| (s.code(), text))
}

/// Hole A: `init` over the Python service's tables used to keep them as they were (window 0:
/// every replay duplicated; `Decimal64(8)` open interest: real notionals dead-lettered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_over_python_service_tables_turns_exactly_once_on_without_losing_a_row() {
    let ch = TestClickHouse::start().await;
    apply_python_schema(&ch).await;
    let now = chrono::Utc::now().timestamp_millis();
    for (i, t) in DataType::ALL.into_iter().enumerate() {
        insert_rows(&ch, HOT, t, 3_000 + 100 * i as u64, now).await;
        insert_rows(&ch, COLD, t, 1_000 + 10 * i as u64, now).await;
    }
    let mut hot_sink = Sink::new(&SinkOptions::new(ch.url.clone(), HOT));
    hot_sink.detect_server().await.unwrap();

    // The holes, as they are on the Python service's tables: a retried token inserts twice,
    // and a notional ≥ 1e10 does not fit.
    let pre = oi_rows(4, now, 544_356_895_195_350_000);
    let before_retry = ch.count(&format!("{HOT}.open_interests")).await;
    insert_oi(&hot_sink, &pre, "python-window-0").await.unwrap();
    insert_oi(&hot_sink, &pre, "python-window-0").await.unwrap();
    assert_eq!(
        ch.count(&format!("{HOT}.open_interests")).await,
        before_retry + 8,
        "window 0: the retry inserted again"
    );
    let big = oi_rows(1, now, 123_456_789_012_312_345_678);
    // Beyond Int64 (a notional of 1.2e12): the Decimal64(8) column refuses it.
    let err = insert_oi(&hot_sink, &big, "too-big-before")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("DECIMAL_OVERFLOW"), "{err}");

    let mut before = Vec::new();
    for t in DataType::ALL {
        before.push((t, content(&ch, HOT, t).await, content(&ch, COLD, t).await));
    }

    // init --check: drift that breaks exactly-once → non-zero, naming table and setting.
    let out = run(bin(&ch), &["init", "--check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    for t in DataType::ALL {
        assert!(
            stdout.lines().any(|l| l.contains(t.table())
                && l.contains("non_replicated_deduplication_window")
                && l.contains(&format!(">= {DEDUP_WINDOW}"))
                && l.contains("error")),
            "{t:?}: {stdout}"
        );
    }
    assert!(
        stdout.lines().any(|l| l.contains("open_interests")
            && l.contains("column open_interest_value")
            && l.contains("Decimal(18, 8)")
            && l.contains("Decimal128(8)")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("dead_letters") && l.contains("missing")),
        "{stdout}"
    );
    // The Python service's ORDER BYs are ours: no warning about them.
    assert!(!stdout.contains("ORDER BY"), "{stdout}");

    // run refuses to start, naming the table and the setting.
    let (code, log) = run_service_until_exit(&ch)
        .await
        .expect("run started over tables without a deduplication window");
    assert_ne!(code, Some(0));
    assert!(
        log.contains("refusing to start")
            && log.contains("marketprism_hot.trades: non_replicated_deduplication_window is 0"),
        "{log}"
    );

    // The migrator refuses to copy into the Python service's cold tables (a retried copy
    // would insert twice there).
    let out = run(bin(&ch), &["migrate", "--once"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "cold schema: marketprism_cold.trades: non_replicated_deduplication_window is 0"
        ),
        "{err}"
    );

    // init upgrades in place, printing every change.
    let out = run(bin(&ch), &["init"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("upgraded"), "{stdout}");
    for db in [HOT, COLD] {
        assert!(
            stdout.lines().any(|l| l.starts_with(db)
                && l.contains("open_interests")
                && l.contains("column open_interest ")
                && l.contains("Decimal(18, 8)")
                && l.contains("Decimal128(8)")),
            "{db}: {stdout}"
        );
        assert!(
            stdout.lines().any(|l| l.starts_with(db)
                && l.contains("trades")
                && l.contains("non_replicated_deduplication_window")
                && l.contains(&DEDUP_WINDOW.to_string())),
            "{db}: {stdout}"
        );
    }

    // Every row kept, every value the same.
    for (t, hot, cold) in &before {
        assert_eq!(&content(&ch, HOT, *t).await, hot, "hot {t:?}");
        assert_eq!(&content(&ch, COLD, *t).await, cold, "cold {t:?}");
    }
    // Settings and types as the service needs them, in both databases.
    for db in [HOT, COLD] {
        let windows = ch
            .query(&format!(
                "SELECT name FROM system.tables WHERE database = '{db}' AND engine = 'MergeTree' AND name NOT LIKE 'migration_%' AND engine_full NOT LIKE '%non_replicated_deduplication_window = {DEDUP_WINDOW}%' ORDER BY name"
            ))
            .await;
        assert_eq!(windows, "", "{db}: tables without the window");
        let types = ch
            .query(&format!(
                "SELECT groupArray(type) FROM system.columns WHERE database = '{db}' AND table = 'open_interests' AND name IN ('open_interest', 'open_interest_value')"
            ))
            .await;
        assert_eq!(types, "['Decimal(38, 8)','Decimal(38, 8)']", "{db}");
    }
    let out = run(bin(&ch), &["init", "--check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Dedup works: a retried insert with the same token adds 0 rows (two partitions).
    let post = oi_rows(6, now, 544_356_895_195_350_000);
    let n = ch.count(&format!("{HOT}.open_interests")).await;
    insert_oi(&hot_sink, &post, "after-init").await.unwrap();
    insert_oi(&hot_sink, &post, "after-init").await.unwrap();
    assert_eq!(ch.count(&format!("{HOT}.open_interests")).await, n + 6);
    // A real notional ≥ 1e10 now stores, exactly.
    insert_oi(&hot_sink, &big, "too-big-after").await.unwrap();
    assert_eq!(
        ch.query(&format!(
            "SELECT toString(open_interest_value) FROM {HOT}.open_interests WHERE open_interest_value >= 10000000000"
        ))
        .await,
        "1234567890123.12345678"
    );

    // run now passes its check and starts the pipeline.
    let nats = TestNats::start().await;
    let mut svc = crate::harness::Service::new(&nats, &ch, "");
    svc.start();
    let started = wait_until(90, || {
        let log = svc.log_text();
        async move { log.contains("starting pipeline") }
    })
    .await;
    assert!(started, "{}", svc.log_text());
    assert!(!svc.log_text().contains("refusing to start"));
    assert_eq!(svc.terminate(), Some(0), "{}", svc.log_text());
}
