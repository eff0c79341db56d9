//! Data quality end to end: trades with known holes and a repeat, and a crossed book, through
//! NATS and the service → exact `data_quality_events` rows, the `quality --json` report, and
//! no false gap across restarts (state rebuilt from ClickHouse).

use std::process::Command;

use crate::harness::started_stack;
use crate::harness::{TestClickHouse, wait_until};

fn trade(id: u64, t: i64) -> String {
    format!(
        r#"{{"symbol":"BTC-USDT","price":"66990.5","quantity":"0.012","side":"buy","trade_id":"{id}","exchange":"binance","market_type":"spot","data_source":"marketprism","normalized_symbol":"BTC-USDT","data_type":"trade","ts_ms":{t},"trade_ts_ms":{},"publisher":"unified-collector","collected_ts_ms":{t}}}"#,
        t - 253
    )
}

fn book(uid: u64, t: i64, bid: &str, ask: &str) -> String {
    format!(
        r#"{{"exchange":"binance","symbol":"BTC-USDT","bids":[["{bid}","0.5"]],"asks":[["{ask}","0.3"]],"last_update_id":{uid},"data_source":"marketprism","data_type":"orderbook","market_type":"spot","ts_ms":{t},"publisher":"unified-collector","collected_ts_ms":{t}}}"#
    )
}

async fn publish(client: &async_nats::Client, subject: &str, bodies: Vec<String>) {
    for b in bodies {
        client.publish(subject.to_string(), b.into()).await.unwrap();
    }
    client.flush().await.unwrap();
}

async fn publish_trades(client: &async_nats::Client, ids: &[u64], base: i64) {
    let bodies = ids.iter().map(|&i| trade(i, base + i as i64)).collect();
    publish(client, "trade.binance.spot.BTC-USDT", bodies).await;
}

/// The events other than staleness (which depends on wall-clock pauses), as
/// `kind first last missing` lines.
async fn events(ch: &TestClickHouse) -> String {
    ch.query(
        "SELECT data_type, kind, first_missing, last_missing, missing FROM marketprism_hot.data_quality_events \
         WHERE kind NOT IN ('stale_open', 'stale_close') ORDER BY data_type, kind, first_missing",
    )
    .await
}

fn report(ch: &TestClickHouse) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_marketprism-storage"))
        .args(["quality", "--since", "1h", "--json"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("MARKETPRISM_TOOLS_DIR", crate::harness::tools_dir())
        .env("CLICKHOUSE_HOST", "127.0.0.1")
        .env("CLICKHOUSE_HTTP_PORT", ch.port.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "quality failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn market<'a>(r: &'a serde_json::Value, data_type: &str) -> &'a serde_json::Value {
    r["markets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["data_type"] == data_type && m["symbol"] == "BTC-USDT")
        .unwrap_or_else(|| panic!("no {data_type} market in {r:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holes_repeats_and_crossed_books_are_labelled_exactly_and_restarts_add_no_false_gap() {
    let (_nats, ch, mut svc, client) = started_stack("").await;
    let base = chrono::Utc::now().timestamp_millis() - 120_000;

    // Ids 1..=20 without 6, 7, 8 and 15; 10 sent twice.
    let ids: Vec<u64> = (1..=20)
        .filter(|i| ![6, 7, 8, 15].contains(i))
        .flat_map(|i| if i == 10 { vec![10, 10] } else { vec![i] })
        .collect();
    publish_trades(&client, &ids, base).await;
    publish(
        &client,
        "orderbook.binance.spot.BTC-USDT",
        vec![
            book(100, base, "67000.1", "67000.2"),
            book(101, base + 1, "67000.3", "67000.2"), // crossed
            book(102, base + 2, "67000.1", "67000.2"),
        ],
    )
    .await;
    let want = "orderbook\tcrossed_book\t0\t0\t0\n\
                trade\tduplicate\t10\t10\t0\n\
                trade\tgap\t6\t8\t3\n\
                trade\tgap\t15\t15\t1";
    let ok = wait_until(60, || async {
        ch.count("marketprism_hot.trades").await == 17
            && ch.count("marketprism_hot.orderbooks").await == 3
            && events(&ch).await == want
    })
    .await;
    assert!(
        ok,
        "events: {}\nlog:\n{}",
        events(&ch).await,
        svc.log_text()
    );
    // Every field of one gap.
    assert_eq!(
        ch.query("SELECT exchange, market_type, symbol, toUnixTimestamp64Milli(event_time), span_ms, detail FROM marketprism_hot.data_quality_events WHERE kind = 'gap' ORDER BY first_missing LIMIT 1").await,
        format!("binance\tspot\tBTC-USDT\t{}\t4\ttrade ids 6..=8 missing", base + 9)
    );

    let r = report(&ch);
    let t = market(&r, "trade");
    assert_eq!(t["rows"], 17);
    assert_eq!(t["gaps"], 2);
    assert_eq!(t["missing"], 4);
    assert_eq!(t["duplicates"], 1);
    let missing: Vec<u64> = t["gap_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["missing"].as_u64().unwrap())
        .collect();
    assert_eq!(missing, vec![3, 1]);
    assert_eq!(t["exchange_latency_ms"]["p50"], 253);
    assert_eq!(t["events"]["gap"], 2);
    assert_eq!(t["events"]["duplicate"], 1);
    assert!(t["ingest_latency_ms"]["p99"].as_i64().unwrap() >= 0);
    assert_eq!(market(&r, "orderbook")["events"]["crossed_book"], 1);

    // Stop; ids 21..=25 arrive while the service is down; restart: no gap at the boundary.
    assert_eq!(svc.terminate(), Some(0), "log:\n{}", svc.log_text());
    publish_trades(&client, &[21, 22, 23, 24, 25], base).await;
    svc.start();
    let ok = wait_until(60, || async {
        ch.count("marketprism_hot.trades").await == 22
    })
    .await;
    assert!(ok, "log:\n{}", svc.log_text());
    // Again, with a real hole at the boundary (26, 27): found only because the state was
    // rebuilt from ClickHouse (an empty tracker would take 28 as the first id).
    assert_eq!(svc.terminate(), Some(0), "log:\n{}", svc.log_text());
    publish_trades(&client, &[28, 29, 30], base).await;
    svc.start();
    let want = format!("{want}\ntrade\tgap\t26\t27\t2");
    let ok = wait_until(60, || async {
        ch.count("marketprism_hot.trades").await == 25 && events(&ch).await == want
    })
    .await;
    assert!(
        ok,
        "events: {}\nlog:\n{}",
        events(&ch).await,
        svc.log_text()
    );
    assert!(svc.log_text().contains("quality state restored"));
    let r = report(&ch);
    let t = market(&r, "trade");
    assert_eq!(
        (t["gaps"].as_u64(), t["missing"].as_u64()),
        (Some(3), Some(6))
    );
    assert_eq!(svc.terminate(), Some(0), "log:\n{}", svc.log_text());
}
