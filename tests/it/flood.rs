//! Hostile volume: a flood of made-up symbols is stored exactly, while the data-quality state and
//! the per-market metric series stay bounded.

use std::time::Duration;

use crate::harness::started_stack;
use crate::harness::{http_get, publish_acked, wait_until};
use crate::ingest::tail;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_symbol_flood_is_stored_exactly_with_bounded_quality_series() {
    let (_nats, ch, mut svc, client) = started_stack("").await;
    const N: u64 = 20_000;
    let now = chrono::Utc::now().timestamp_millis();
    publish_acked(
        &client,
        (0..N).map(|i| {
            let symbol = format!("FAKE{i}-USDT");
            let body = format!(
                r#"{{"symbol":"{symbol}","price":"1.5","quantity":"2","side":"buy","trade_id":"{i}","exchange":"binance","market_type":"spot","data_source":"marketprism","data_type":"trade","ts_ms":{now},"trade_ts_ms":{now}}}"#
            );
            (format!("trade.binance.spot.{symbol}"), body)
        }),
    )
    .await;
    let ok = wait_until(120, || async {
        ch.count("marketprism_hot.trades").await >= N
    })
    .await;
    assert!(ok, "log:\n{}", tail(&svc.log_text()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        ch.query(
            "SELECT count(), uniqExact(trade_id), uniqExact(symbol) FROM marketprism_hot.trades"
        )
        .await,
        format!("{N}\t{N}\t{N}")
    );
    let (_, metrics) = http_get(svc.http_port, "/metrics").await.unwrap();
    let series = metrics
        .lines()
        .filter(|l| l.starts_with("marketprism_storage_gaps_total{"))
        .count();
    assert_eq!(series, 1000, "per-market series are capped");
    let value = |prefix: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(-1.0)
    };
    // At most 10,000 markets are tracked, 1,000 of them exposed: the rest are folded.
    let folded = value(r#"marketprism_storage_quality_series_folded{data_type="trade"} "#);
    assert!((1.0..=9000.0).contains(&folded), "folded {folded}");
    let evicted: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                r#"marketprism_storage_quality_markets_evicted_total{data_type="trade"} "#,
            )
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(evicted >= 10_000.0, "evicted {evicted}");
    assert_eq!(svc.terminate(), Some(0));
}
