//! Foundation: `init` against the embedded engine, and a 1M-row exact round trip with dedup.

use std::process::Command;

use marketprism_storage::model::{Common, DataType, Record, TradeRow};
use marketprism_storage::schema;
use marketprism_storage::sink::{self, Compression, Sink, SinkOptions};

use crate::harness::TestClickHouse;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_marketprism-storage"));
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("MARKETPRISM_TOOLS_DIR", crate::harness::tools_dir());
    c
}

fn run_init(ch: &TestClickHouse) -> String {
    let out = bin()
        .arg("init")
        .env("CLICKHOUSE_HOST", "127.0.0.1")
        .env("CLICKHOUSE_HTTP_PORT", ch.port.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "init failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_creates_the_python_service_tables_and_is_idempotent() {
    let ch = TestClickHouse::start().await;
    let first = run_init(&ch);
    assert!(!first.contains("MISSING"), "{first}");
    let tables = ch
        .query("SELECT database, name FROM system.tables WHERE database LIKE 'marketprism_%' ORDER BY database, name")
        .await;
    let mut expected: Vec<String> = Vec::new();
    for t in schema::table_names(false) {
        expected.push(format!("marketprism_cold\t{t}"));
    }
    for t in schema::table_names(true) {
        expected.push(format!("marketprism_hot\t{t}"));
    }
    expected.sort();
    assert_eq!(tables.lines().collect::<Vec<_>>(), expected);

    // The Python service's columns, in the Python service's order, in both databases.
    for db in ["marketprism_hot", "marketprism_cold"] {
        let cols = ch
            .query(&format!(
                "SELECT name FROM system.columns WHERE database = '{db}' AND table = 'trades' ORDER BY position"
            ))
            .await;
        assert_eq!(
            cols.lines().collect::<Vec<_>>(),
            vec![
                "timestamp",
                "exchange",
                "market_type",
                "symbol",
                "trade_id",
                "price",
                "quantity",
                "side",
                "is_maker",
                "trade_time",
                "data_source",
                "created_at"
            ]
        );
    }
    let ttl = ch.query("SELECT engine_full LIKE '%TTL%' FROM system.tables WHERE database = 'marketprism_hot' AND name = 'trades'").await;
    assert_eq!(ttl, "1");
    let ttl = ch.query("SELECT engine_full LIKE '%TTL%' FROM system.tables WHERE database = 'marketprism_cold' AND name = 'trades'").await;
    assert_eq!(ttl, "0");
    let dl = ch
        .query("SELECT name FROM system.columns WHERE database = 'marketprism_hot' AND table = 'dead_letters' ORDER BY position")
        .await;
    assert_eq!(
        dl.lines().collect::<Vec<_>>(),
        vec![
            "received_at",
            "subject",
            "stream_seq",
            "data_type",
            "reason",
            "payload"
        ]
    );

    let before = ch.query("SELECT sum(cityHash64(create_table_query)) FROM system.tables WHERE database LIKE 'marketprism_%'").await;
    let second = run_init(&ch);
    assert!(second.contains(", 0 objects created"), "{second}");
    let after = ch.query("SELECT sum(cityHash64(create_table_query)) FROM system.tables WHERE database LIKE 'marketprism_%'").await;
    assert_eq!(before, after, "a second init must change nothing");
}

#[derive(Debug, PartialEq, clickhouse::Row, serde::Deserialize)]
struct TradeBack {
    timestamp: i64,
    exchange: String,
    market_type: String,
    symbol: String,
    trade_id: String,
    price: i64,
    quantity: i64,
    side: String,
    is_maker: bool,
    trade_time: i64,
    data_source: String,
}

fn trade(i: u64, now_ms: i64) -> TradeRow {
    let ex = ["binance", "okx"][(i % 2) as usize];
    TradeRow {
        common: Common {
            timestamp_ms: now_ms - 3_600_000 + (i as i64 % 3_000_000),
            exchange: ex.into(),
            market_type: ["spot", "perpetual"][(i / 2 % 2) as usize].into(),
            symbol: ["BTC-USDT", "ETH-USDT", "SOL-USDT"][(i % 3) as usize].into(),
            data_source: "marketprism".into(),
        },
        trade_id: (1_000_000_000 + i).to_string(),
        // 66990.12345678 + i·0.00000001: exercises all eight decimals.
        price: 6_699_012_345_678 + i as i64,
        quantity: 1 + (i as i64 * 7919) % 9_999_999_999,
        side: if i.is_multiple_of(3) {
            "sell".into()
        } else {
            "buy".into()
        },
        is_maker: i.is_multiple_of(5),
        trade_time_ms: now_ms - 3_600_000 + (i as i64 % 3_000_000) - 7,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn million_rows_round_trip_exactly_and_a_retried_token_adds_nothing() {
    let ch = TestClickHouse::start().await;
    run_init(&ch);
    let mut o = SinkOptions::new(ch.url.clone(), "marketprism_hot");
    o.compression = Compression::Lz4;
    let mut sink = Sink::new(&o);
    sink.detect_server().await.unwrap();

    const N: u64 = 1_000_000;
    const CHUNK: u64 = 100_000;
    let now = chrono::Utc::now().timestamp_millis();
    let started = std::time::Instant::now();
    for c in 0..N / CHUNK {
        let rows: Vec<Record> = (c * CHUNK..(c + 1) * CHUNK)
            .map(|i| Record::Trade(trade(i, now)))
            .collect();
        let body = sink::encode_block(DataType::Trade, &rows).unwrap();
        let token = sink::batch_token("roundtrip", c * CHUNK + 1, (c + 1) * CHUNK, CHUNK);
        sink.insert("trades", body, CHUNK, &token).await.unwrap();
    }
    let insert_secs = started.elapsed().as_secs_f64();
    assert_eq!(ch.count("marketprism_hot.trades").await, N);

    // A retried batch (same token, same rows) is dropped by ClickHouse.
    let rows: Vec<Record> = (0..CHUNK).map(|i| Record::Trade(trade(i, now))).collect();
    let body = sink::encode_block(DataType::Trade, &rows).unwrap();
    sink.insert(
        "trades",
        body,
        CHUNK,
        &sink::batch_token("roundtrip", 1, CHUNK, CHUNK),
    )
    .await
    .unwrap();
    assert_eq!(
        ch.count("marketprism_hot.trades").await,
        N,
        "retry with the same token added rows"
    );

    let client = ch
        .client()
        .with_database("marketprism_hot")
        .with_compression(clickhouse::Compression::Lz4);
    let started = std::time::Instant::now();
    let back: Vec<TradeBack> = client
        .query("SELECT timestamp, exchange, market_type, symbol, trade_id, price, quantity, side, is_maker, trade_time, data_source FROM trades ORDER BY toUInt64(trade_id)")
        .fetch_all()
        .await
        .unwrap();
    let fetch_secs = started.elapsed().as_secs_f64();
    assert_eq!(back.len() as u64, N);
    for (i, got) in back.iter().enumerate() {
        let want = trade(i as u64, now);
        let want = TradeBack {
            timestamp: want.common.timestamp_ms,
            exchange: want.common.exchange,
            market_type: want.common.market_type,
            symbol: want.common.symbol,
            trade_id: want.trade_id,
            price: want.price,
            quantity: want.quantity,
            side: want.side,
            is_maker: want.is_maker,
            trade_time: want.trade_time_ms,
            data_source: want.common.data_source,
        };
        assert_eq!(got, &want, "row {i}");
    }
    // Spot-check the text form: exact decimals and milliseconds.
    let txt = ch
        .query("SELECT toString(price), toString(timestamp) FROM marketprism_hot.trades WHERE trade_id = '1000000000'")
        .await;
    let ts = chrono::DateTime::from_timestamp_millis(now - 3_600_000)
        .unwrap()
        .format("%Y-%m-%d %H:%M:%S%.3f");
    assert_eq!(txt, format!("66990.12345678\t{ts}"));
    println!(
        "round trip: {N} rows inserted in {insert_secs:.2}s ({:.0} rows/s, Native+LZ4), fetched in {fetch_secs:.2}s ({:.0} rows/s)",
        N as f64 / insert_secs,
        N as f64 / fetch_secs
    );
}
