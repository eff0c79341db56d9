//! Ingest end to end: collector-shaped messages → NATS → the service → ClickHouse.

use std::time::Duration;

use async_nats::HeaderMap;
use marketprism_storage::model::DataType;
use rand::Rng;

use crate::harness::{Service, TestClickHouse, TestNats, create_streams, wait_until};
use crate::harness::{stack_with_streams, started_stack};

/// Publishes like the MarketPrism collector: core NATS for trade/orderbook, JetStream with
/// `Nats-Msg-Id` (and an awaited PubAck) for the rest.
async fn publish_like_collector(
    client: &async_nats::Client,
    subject: &str,
    body: String,
    msg_id: Option<&str>,
) {
    match msg_id {
        None => client
            .publish(subject.to_string(), body.into())
            .await
            .unwrap(),
        Some(id) => {
            let js = async_nats::jetstream::new(client.clone());
            let mut h = HeaderMap::new();
            h.insert("Nats-Msg-Id", id);
            js.publish_with_headers(subject.to_string(), h, body.into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    }
}

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .format("%Y-%m-%d %H:%M:%S%.3f")
        .to_string()
}

/// The MarketPrism collector's example payloads (reference §2.2) with timestamps from `now`.
pub(crate) fn collector_messages(now: i64) -> Vec<(String, String, Option<String>)> {
    let t = now - 60_000;
    vec![
        (
            "orderbook.binance.spot.BTC-USDT".into(),
            format!(
                r#"{{"exchange":"binance","symbol":"BTC-USDT","bids":[["67000.10000000","0.51200000"],["67000.00000000","1.20000000"]],"asks":[["67000.20000000","0.30000000"],["67000.50000000","2.00000000"]],"last_update_id":51234567890,"data_source":"marketprism","normalized_symbol":"BTC-USDT","standardized_at":"2025-10-21T10:00:00.120512+00:00","standardization_version":"2.0","data_type":"orderbook","market_type":"spot","ts_ms":{t},"publisher":"unified-collector","collected_ts_ms":{t}}}"#
            ),
            None,
        ),
        (
            "orderbook.okx.perpetual.ETH-USDT".into(),
            format!(
                r#"{{"exchange":"okx","symbol":"ETH-USDT","bids":[{{"price":"3500.1","quantity":"2"}}],"asks":[],"last_update_id":null,"data_type":"orderbook","market_type":"perpetual","ts_ms":{t},"publisher":"unified-collector","collected_ts_ms":{t}}}"#
            ),
            None,
        ),
        (
            "trade.binance.perpetual.BTC-USDT".into(),
            format!(
                r#"{{"symbol":"BTC-USDT","price":"66990.5","quantity":"0.012","side":"buy","trade_id":"2345678901","exchange":"binance","market_type":"perpetual","data_source":"marketprism","normalized_symbol":"BTC-USDT","data_type":"trade","ts_ms":{t},"trade_ts_ms":{},"publisher":"unified-collector","collected_ts_ms":{t}}}"#,
                t - 253
            ),
            None,
        ),
        (
            "funding_rate.okx.perpetual.BTC-USDT".into(),
            format!(
                r#"{{"exchange":"okx","market_type":"perpetual","symbol":"BTC-USDT","instrument_id":"BTC-USDT-SWAP","current_funding_rate":8.12e-05,"estimated_funding_rate":null,"funding_interval":"8h","mark_price":67010.5,"index_price":67005.12345678,"premium_index":null,"data_type":"funding_rate","ts_ms":{t},"publisher":"unified-collector","collected_ts_ms":{t},"next_funding_ts_ms":{}}}"#,
                t + 3_600_000
            ),
            Some(format!("funding_rate:okx_derivatives:BTC-USDT:{t}")),
        ),
        (
            "open_interest.binance.perpetual.BTC-USDT".into(),
            format!(
                r#"{{"exchange":"binance","market_type":"perpetual","symbol":"BTC-USDT","instrument_id":"BTCUSDT","open_interest_value":81234.567,"open_interest_usd":15443568951.9535,"open_interest_unit":"contracts","mark_price":67010.5,"index_price":null,"change_24h":null,"change_24h_percent":null,"data_type":"open_interest","ts_ms":{t},"publisher":"unified-collector","collected_ts_ms":{t}}}"#
            ),
            Some(format!("open_interest:binance_derivatives:BTC-USDT:{t}")),
        ),
        (
            "liquidation.binance.perpetual.BTC-USDT".into(),
            format!(
                r#"{{"exchange":"binance","market_type":"perpetual","symbol":"BTC-USDT","instrument_id":"BTCUSDT","liquidation_id":"binance_{0}_BTCUSDT_sell","side":"sell","status":"filled","price":66850.0,"quantity":0.014,"filled_quantity":0.014,"notional_value":935.9,"liquidation_time":"2025-10-21T09:59:59.870000+00:00","data_type":"liquidation","aggregation_mode":"filtered","average_price":"66850.00","bankruptcy_price":"66850.00","ts_ms":{t},"publisher":"unified-collector","collected_ts_ms":{t},"liquidation_ts_ms":{0}}}"#,
                t - 253
            ),
            Some(format!(
                "liquidation:binance_derivatives:BTC-USDT:binance_{}_BTCUSDT_sell",
                t - 253
            )),
        ),
        (
            "lsr_top_position.okx.perpetual.BTC-USDT".into(),
            format!(
                r#"{{"exchange":"okx","market_type":"perpetual","symbol":"BTC-USDT","instrument_id":"BTC-USDT-SWAP","long_short_ratio":"1.12","period":"1h","data_source":"api","data_type":"lsr_top_position","long_position_ratio":"0.5283018867924528301886792453","short_position_ratio":"0.4716981132075471698113207547","ts_ms":{t},"publisher":"unified-collector","collected_ts_ms":{t}}}"#
            ),
            Some(format!("lsr_top_position:okx_derivatives:BTC-USDT:{t}:1h")),
        ),
        (
            "lsr_all_account.binance.perpetual.ETH-USDT".into(),
            format!(
                r#"{{"exchange":"binance","market_type":"perpetual","symbol":"ETH-USDT","instrument_id":"ETHUSDT","long_short_ratio":"1.5","period":"5m","data_source":"api","data_type":"lsr_all_account","long_account_ratio":"0.6","short_account_ratio":"0.4","ts_ms":{t},"publisher":"unified-collector","collected_ts_ms":{t}}}"#
            ),
            Some(format!(
                "lsr_all_account:binance_derivatives:ETH-USDT:{t}:5m"
            )),
        ),
        (
            "volatility_index.deribit.options.BTC".into(),
            format!(
                r#"{{"exchange":"deribit","symbol":"BTC","currency":"BTC","vol_index":"48.73","volatility_index":"48.73","market_type":"options","data_source":"marketprism","data_type":"volatility_index","ts_ms":{t},"publisher":"unified-collector","collected_ts_ms":{t}}}"#
            ),
            Some(format!("volatility_index:deribit_derivatives:BTC:{t}")),
        ),
    ]
}

async fn query(ch: &TestClickHouse, sql: &str) -> String {
    ch.query(sql).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_eight_types_land_with_exact_values_and_bad_messages_become_dead_letters() {
    let (_nats, ch, mut svc, client) = started_stack("").await;
    let now = chrono::Utc::now().timestamp_millis();
    let t = now - 60_000;
    for (subject, body, id) in collector_messages(now) {
        publish_like_collector(&client, &subject, body, id.as_deref()).await;
    }
    // Bad messages: each must become one dead letter with a reason naming the problem.
    let bad = [
        ("trade.binance.spot.BTC-USDT", format!(r#"{{"symbol":"BTC-USDT","price":"-1","quantity":"1","side":"buy","trade_id":"1","exchange":"binance","market_type":"spot","ts_ms":{t}}}"#)),
        ("trade.binance.spot.BTC-USDT", format!(r#"{{"symbol":"BTC-USDT","price":"1","quantity":"1","side":"hold","trade_id":"2","exchange":"binance","market_type":"spot","ts_ms":{t}}}"#)),
        ("trade.binance.spot.BTC-USDT", r#"{"symbol":"BTC-USDT","price":"1","quantity":"1","side":"buy","trade_id":"3","exchange":"binance","market_type":"spot"}"#.to_string()),
        ("trade.binance.spot.BTC-USDT", "{not json".to_string()),
    ];
    for (s, b) in &bad {
        client
            .publish(s.to_string(), b.clone().into())
            .await
            .unwrap();
    }
    client.flush().await.unwrap();

    let tables = [
        "orderbooks",
        "trades",
        "funding_rates",
        "open_interests",
        "liquidations",
        "lsr_top_positions",
        "lsr_all_accounts",
        "volatility_indices",
    ];
    let ok = wait_until(60, || async {
        let mut all = true;
        for (tb, want) in tables.iter().zip([2u64, 1, 1, 1, 1, 1, 1, 1]) {
            all &= ch.count(&format!("marketprism_hot.{tb}")).await == want;
        }
        all && ch.count("marketprism_hot.dead_letters").await == 4
    })
    .await;
    assert!(ok, "rows did not arrive; log:\n{}", svc.log_text());

    let ts = iso(t);
    assert_eq!(
        query(&ch, "SELECT toString(timestamp), exchange, market_type, symbol, last_update_id, bids_count, asks_count, best_bid_price, best_ask_price, best_bid_quantity, best_ask_quantity, bids, asks, data_source FROM marketprism_hot.orderbooks ORDER BY exchange").await,
        format!("{ts}\tbinance\tspot\tBTC-USDT\t51234567890\t2\t2\t67000.1\t67000.2\t0.512\t0.3\t[[\"67000.10000000\",\"0.51200000\"],[\"67000.00000000\",\"1.20000000\"]]\t[[\"67000.20000000\",\"0.30000000\"],[\"67000.50000000\",\"2.00000000\"]]\tmarketprism\n{ts}\tokx\tperpetual\tETH-USDT\t0\t1\t0\t3500.1\t0\t2\t0\t[[\"3500.1\",\"2\"]]\t[]\tsimple_hot_storage")
    );
    assert_eq!(
        query(&ch, "SELECT toString(timestamp), exchange, market_type, symbol, trade_id, toString(price), toString(quantity), side, is_maker, toString(trade_time), data_source FROM marketprism_hot.trades").await,
        format!("{ts}\tbinance\tperpetual\tBTC-USDT\t2345678901\t66990.5\t0.012\tbuy\tfalse\t{}\tmarketprism", iso(t - 253))
    );
    assert_eq!(
        query(&ch, "SELECT toString(funding_rate), toString(funding_time), toString(next_funding_time), toString(mark_price), toString(index_price), data_source FROM marketprism_hot.funding_rates").await,
        format!("0.0000812\t{ts}\t{}\t67010.5\t67005.12345678\tsimple_hot_storage", iso(t + 3_600_000))
    );
    assert_eq!(
        query(&ch, "SELECT toString(open_interest), toString(open_interest_value), count FROM marketprism_hot.open_interests").await,
        "81234.567\t15443568951.9535\t0"
    );
    assert_eq!(
        query(&ch, "SELECT side, toString(price), toString(quantity), toString(liquidation_time) FROM marketprism_hot.liquidations").await,
        format!("sell\t66850\t0.014\t{}", iso(t - 253))
    );
    assert_eq!(
        query(&ch, "SELECT toString(long_position_ratio), toString(short_position_ratio), period, data_source FROM marketprism_hot.lsr_top_positions").await,
        "0.52830188\t0.47169811\t1h\tapi"
    );
    assert_eq!(
        query(&ch, "SELECT toString(long_account_ratio), toString(short_account_ratio), period FROM marketprism_hot.lsr_all_accounts").await,
        "0.6\t0.4\t5m"
    );
    assert_eq!(
        query(&ch, "SELECT toString(index_value), underlying_asset, toString(maturity_date) FROM marketprism_hot.volatility_indices").await,
        "48.73\tBTC\t1970-01-01"
    );
    let dl = query(&ch, "SELECT data_type, subject, stream_seq > 0, reason FROM marketprism_hot.dead_letters ORDER BY stream_seq").await;
    let lines: Vec<&str> = dl.lines().collect();
    assert_eq!(lines.len(), 4, "{dl}");
    assert!(
        lines[0].starts_with("trade\ttrade.binance.spot.BTC-USDT\t1\ttrade.price: must be > 0"),
        "{dl}"
    );
    assert!(lines[1].contains("side"), "{dl}");
    assert!(lines[2].contains("timestamp: missing"), "{dl}");
    assert!(lines[3].contains("invalid JSON"), "{dl}");
    let payload = query(
        &ch,
        "SELECT payload FROM marketprism_hot.dead_letters WHERE reason LIKE '%JSON%'",
    )
    .await;
    assert_eq!(payload, "{not json");

    assert_eq!(
        svc.terminate(),
        Some(0),
        "graceful stop; log:\n{}",
        svc.log_text()
    );
}

pub(crate) fn trade_body(i: u64, now: i64) -> String {
    let ex = if i.is_multiple_of(2) {
        "binance"
    } else {
        "okx"
    };
    format!(
        r#"{{"symbol":"BTC-USDT","price":"{}.{:02}","quantity":"0.{:03}","side":"{}","trade_id":"{}","exchange":"{ex}","market_type":"spot","data_source":"marketprism","normalized_symbol":"BTC-USDT","data_type":"trade","ts_ms":{},"trade_ts_ms":{},"publisher":"unified-collector","collected_ts_ms":{}}}"#,
        60000 + i % 9000,
        i % 100,
        1 + i % 998,
        if i.is_multiple_of(3) { "sell" } else { "buy" },
        i,
        now - 600_000 + (i as i64 % 500_000),
        now - 600_001 + (i as i64 % 500_000),
        now - 600_000 + (i as i64 % 500_000),
    )
}

/// Publishes trades `from..to` into the stream with JetStream acks (pipelined, 1000 in flight).
///
/// The collector publishes trades on core NATS; the exactness tests do not, because a server
/// short of CPU drops core messages it cannot ingest in time, and the count they check must be
/// what the stream really holds.
pub(crate) async fn publish_trades(client: &async_nats::Client, from: u64, to: u64, now: i64) {
    let subject = |i: u64| {
        let ex = if i.is_multiple_of(2) {
            "binance"
        } else {
            "okx"
        };
        format!("trade.{ex}.spot.BTC-USDT")
    };
    crate::harness::publish_acked(client, (from..to).map(|i| (subject(i), trade_body(i, now))))
        .await;
}

/// Core NATS publishes (no stream needed), for core mode.
async fn publish_trades_core(client: &async_nats::Client, from: u64, to: u64, now: i64) {
    for i in from..to {
        client
            .publish("trade.binance.spot.BTC-USDT", trade_body(i, now).into())
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
}

pub(crate) async fn assert_exactly_once(ch: &TestClickHouse, n: u64, svc: &Service) {
    let ok = wait_until(180, || async {
        ch.count("marketprism_hot.trades").await >= n
    })
    .await;
    let count = ch.count("marketprism_hot.trades").await;
    assert!(
        ok,
        "only {count} of {n} rows; log tail:\n{}",
        tail(&svc.log_text())
    );
    // Settle: nothing more may arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stats = ch
        .query("SELECT count(), uniqExact(trade_id), min(toUInt64(trade_id)), max(toUInt64(trade_id)) FROM marketprism_hot.trades")
        .await;
    if stats != format!("{n}\t{n}\t0\t{}", n - 1) {
        let path = std::env::temp_dir().join(format!("failed-service-{}.log", std::process::id()));
        let _ = std::fs::copy(&svc.log, &path);
        panic!(
            "count, distinct ids, min, max: {stats} (want {n} each); service log kept at {}",
            path.display()
        );
    }
    assert_eq!(ch.count("marketprism_hot.dead_letters").await, 0);
}

pub(crate) fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_while_draining_a_backlog_stores_every_row_once() {
    let nats = TestNats::start().await;
    let ch = TestClickHouse::start().await;
    let client = nats.client().await;
    // The backlog is published while the service is down: the stream keeps it.
    create_streams(&client).await;
    const N: u64 = 300_000;
    let now = chrono::Utc::now().timestamp_millis();
    publish_trades(&client, 0, N, now).await;
    let mut svc = Service::new(&nats, &ch, "");
    let mut rng = rand::rng();
    let kills = 12;
    for k in 0..kills {
        svc.start();
        // Short lives, so that every kill lands while the backlog is still draining.
        let ms = rng.random_range(150..700);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        svc.kill();
        eprintln!(
            "kill {k} after {ms} ms: {} rows",
            ch.count("marketprism_hot.trades").await
        );
    }
    svc.start();
    assert_exactly_once(&ch, N, &svc).await;
    let report = crate::oracle::assert_audit_clean(&nats, &ch, &[DataType::Trade]).await;
    assert_eq!(report.totals.rows_matched, N);
    assert_eq!(svc.terminate(), Some(0));
    if std::env::var_os("SHOW_SERVICE_LOG").is_some() {
        eprintln!("{}", svc.log_text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restart_and_a_20s_clickhouse_outage_lose_nothing() {
    let (mut nats, mut ch, mut svc, client) = started_stack("").await;
    let now = chrono::Utc::now().timestamp_millis();
    publish_trades(&client, 0, 20_000, now).await;
    assert!(
        wait_until(60, || async {
            ch.count("marketprism_hot.trades").await == 20_000
        })
        .await
    );

    // NATS restart: the service reconnects and resumes.
    nats.restart().await;
    let client = nats.client().await;
    publish_trades(&client, 20_000, 40_000, now).await;
    assert!(
        wait_until(60, || async {
            ch.count("marketprism_hot.trades").await == 40_000
        })
        .await,
        "after nats restart: {}; log:\n{}",
        ch.count("marketprism_hot.trades").await,
        tail(&svc.log_text())
    );

    // ClickHouse down for 20 s while messages keep coming: they wait in JetStream.
    ch.kill().await;
    publish_trades(&client, 40_000, 60_000, now).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(
        svc.running(),
        "the service must survive a ClickHouse outage"
    );
    ch.restart().await;
    publish_trades(&client, 60_000, 70_000, now).await;
    assert_exactly_once(&ch, 70_000, &svc).await;
    assert_eq!(svc.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_killed_while_draining_a_backlog_loses_and_duplicates_nothing() {
    let (mut nats, ch, client) = stack_with_streams().await;
    const N: u64 = 150_000;
    let now = chrono::Utc::now().timestamp_millis();
    publish_trades(&client, 0, N, now).await;
    // Let the server write the backlog out before it is killed: what a SIGKILLed server had
    // not written is its own loss, not the service's.
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(client);
    let mut svc = Service::new(&nats, &ch, "");
    svc.start();
    let mut rng = rand::rng();
    for k in 0..3 {
        let ms = rng.random_range(300..1_200);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        let before = ch.count("marketprism_hot.trades").await;
        nats.kill().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        nats.restart().await;
        eprintln!("nats kill {k} after {ms} ms at {before} rows");
    }
    assert_exactly_once(&ch, N, &svc).await;
    let report = crate::oracle::assert_audit_clean(&nats, &ch, &[DataType::Trade]).await;
    assert_eq!(report.totals.rows_matched, N);
    assert_eq!(svc.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_mode_stores_what_arrives_while_running() {
    let nats = TestNats::start().await;
    let ch = TestClickHouse::start().await;
    let mut svc = Service::new(&nats, &ch, "");
    svc.env
        .push(("MARKETPRISM_NATS_MODE".into(), "core".into()));
    svc.start();
    let client = nats.client().await;
    let schema = wait_until(60, || async {
        ch.query("SELECT count() FROM system.tables WHERE database = 'marketprism_hot' AND name = 'trades'").await == "1"
    })
    .await;
    assert!(schema, "no schema; log:\n{}", tail(&svc.log_text()));
    // Core mode creates no streams: wait until the service's subscriptions exist instead.
    let ok = wait_until(60, || async {
        client
            .publish(
                "trade.binance.spot.BTC-USDT",
                trade_body(0, chrono::Utc::now().timestamp_millis()).into(),
            )
            .await
            .unwrap();
        client.flush().await.unwrap();
        ch.count("marketprism_hot.trades").await > 0
    })
    .await;
    assert!(
        ok,
        "core mode stored nothing; log:\n{}",
        tail(&svc.log_text())
    );
    // Probes still in flight when the first one landed land too: wait until the count rests
    // (two reads 1.5 s apart agree) before taking it as the base.
    let mut before = ch.count("marketprism_hot.trades").await;
    loop {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let now = ch.count("marketprism_hot.trades").await;
        if now == before {
            break;
        }
        before = now;
    }
    let now = chrono::Utc::now().timestamp_millis();
    publish_trades_core(&client, 1, 5_001, now).await;
    assert!(
        wait_until(60, || async {
            ch.count("marketprism_hot.trades").await == before + 5_000
        })
        .await,
        "expected {} rows, got {}",
        before + 5_000,
        ch.count("marketprism_hot.trades").await
    );
    let js = async_nats::jetstream::new(client.clone());
    assert!(
        js.get_stream("MARKET_DATA_HF").await.is_err(),
        "core mode must not create streams"
    );
    assert_eq!(svc.terminate(), Some(0));
}
