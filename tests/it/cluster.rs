//! The ClickHouse cluster path (`clickhouse.cluster`) on the embedded engine.
//!
//! chDB has no Keeper and no distributed DDL queue, so `ReplicatedMergeTree` and `ON CLUSTER`
//! cannot run here (see `docs/production.md`, "not exercised here"). What can run: a cluster
//! in `remote_servers` whose one shard is the server itself (`is_local`), and our cluster DDL
//! with `ON CLUSTER` removed and the replicated engines replaced by their plain ones — the
//! `Distributed` tables exactly as we create them. The service then runs in cluster mode
//! against it: it checks the cluster exists, finds the schema in place (so skips the
//! `ON CLUSTER` DDL), and writes through the `Distributed` tables with
//! `distributed_foreground_insert=1` and the configured quorum, every row once through lost
//! answers and a SIGKILL.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use marketprism_storage::schema::{self, DEDUP_WINDOW, DEDUP_WINDOW_SECONDS, Layout, Tier};
use marketprism_storage::sink::{Sink, SinkOptions};

use crate::harness::{Service, TestClickHouse, TestNats, wait_for_streams, wait_until};
use crate::proxy::{Fault, Proxy};

const CLUSTER: &str = "mp_it";

/// One shard, one replica: this server. `tcp_port` is only what makes ClickHouse see the
/// replica as local (the engine listens on no TCP port): a local shard is written in-process.
const CLUSTER_XML: &str = r#"<clickhouse>
  <tcp_port>9000</tcp_port>
  <remote_servers>
    <mp_it>
      <shard>
        <internal_replication>true</internal_replication>
        <replica><host>localhost</host><port>9000</port></replica>
      </shard>
    </mp_it>
  </remote_servers>
</clickhouse>
"#;

/// Our `ON CLUSTER` statement as the embedded engine can run it: without `ON CLUSTER`, with
/// `MergeTree`/`ReplacingMergeTree` for their replicated variants and the non-replicated
/// window for the replicated one. `Distributed` statements are unchanged.
fn embedded_flavour(st: &str) -> String {
    let mut s = st.replace(&format!(" ON CLUSTER `{CLUSTER}`"), "");
    if let Some(at) = s.find("ENGINE = Replicated") {
        let start = at + "ENGINE = ".len();
        let open = start + s[start..].find('(').unwrap();
        let close = open + s[open..].find(')').unwrap();
        let name = s[start + "Replicated".len()..open].to_string();
        let args: Vec<&str> = s[open + 1..close].split(", ").collect();
        let engine = if name == "ReplacingMergeTree" {
            format!("ReplacingMergeTree({})", args[2])
        } else {
            assert_eq!(args.len(), 2, "{st}");
            name
        };
        s.replace_range(start..=close, &engine);
    }
    s.replace(
        &format!(
            "replicated_deduplication_window = {DEDUP_WINDOW}, replicated_deduplication_window_seconds = {DEDUP_WINDOW_SECONDS}"
        ),
        &format!("non_replicated_deduplication_window = {DEDUP_WINDOW}"),
    )
}

async fn cluster_clickhouse() -> TestClickHouse {
    let ch = TestClickHouse::start_with_config(CLUSTER_XML).await;
    assert_eq!(
        ch.query(&format!(
            "SELECT shard_num, replica_num, is_local FROM system.clusters WHERE cluster = '{CLUSTER}'"
        ))
        .await,
        "1\t1\t1"
    );
    let ddl = schema::full_ddl(
        "marketprism_hot",
        "marketprism_cold",
        &Layout::Cluster(CLUSTER.into()),
    );
    for st in &ddl {
        let sql = embedded_flavour(st);
        assert!(
            !sql.contains("Replicated") && !sql.contains("ON CLUSTER"),
            "{sql}"
        );
        let out = ch.query(&sql).await;
        assert!(!out.contains("Exception"), "{sql}\n{out}");
    }
    ch
}

fn trade(i: u64, exchange: &str, symbol: &str, now: i64) -> String {
    format!(
        r#"{{"symbol":"{symbol}","price":"{}.5","quantity":"0.01","side":"buy","trade_id":"{i}","exchange":"{exchange}","market_type":"spot","ts_ms":{},"trade_ts_ms":{}}}"#,
        60_000 + i % 1000,
        now - 1000,
        now - 1001,
    )
}

/// Trades `from..to` (ids = the numbers) over 3 exchanges × 4 symbols.
async fn publish_trades(client: &async_nats::Client, from: u64, to: u64) {
    let now = chrono::Utc::now().timestamp_millis();
    let msg = |i: u64| {
        let ex = ["binance", "okx", "deribit"][(i % 3) as usize];
        let sym = ["BTC-USDT", "ETH-USDT", "SOL-USDT", "XRP-USDT"][(i / 3 % 4) as usize];
        (format!("trade.{ex}.spot.{sym}"), trade(i, ex, sym, now))
    };
    crate::harness::publish_acked(client, (from..to).map(msg)).await;
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Waits until the shard's local table holds the ids `0..n`, once each (and stays so for
/// 2 s); the `Distributed` table reads the same.
async fn assert_exactly_once(ch: &TestClickHouse, svc: &Service, n: u64) {
    let local = "marketprism_hot.trades_local";
    let ok = wait_until(60, || async { ch.count(local).await >= n }).await;
    assert!(
        ok,
        "{} of {n} rows; log:\n{}",
        ch.count(local).await,
        tail(&svc.log_text())
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stats = |t: &'static str| {
        format!(
            "SELECT count(), uniqExact(trade_id), min(toUInt64(trade_id)), max(toUInt64(trade_id)) FROM marketprism_hot.{t}"
        )
    };
    let want = format!("{n}\t{n}\t0\t{}", n - 1);
    assert_eq!(ch.query(&stats("trades_local")).await, want);
    assert_eq!(
        ch.query(&stats("trades")).await,
        want,
        "through Distributed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_distributed_inserts_store_every_row_once_through_lost_answers_and_a_sigkill() {
    let nats = TestNats::start().await;
    let ch = cluster_clickhouse().await;

    // The start-up drift check of a cluster reads the Distributed tables as the engine shows
    // them: our sharding key, no error.
    let sink = Sink::new(&SinkOptions::new(ch.url.clone(), "marketprism_hot"));
    let expected = schema::drift::expected_tables(
        "marketprism_hot",
        Tier::Hot,
        &Layout::Cluster(CLUSTER.into()),
    );
    let drift = marketprism_storage::sink::ddl::check(&sink, &expected, DEDUP_WINDOW)
        .await
        .unwrap();
    assert!(!schema::drift::has_errors(&drift), "{drift:?}");
    assert!(!drift.iter().any(|d| d.item == "sharding key"), "{drift:?}");

    let proxy = Proxy::start(ch.port).await;
    let mut svc = Service::new(&nats, &ch, "clickhouse:\n  insert_quorum: 2\n");
    for (k, v) in &mut svc.env {
        if k == "CLICKHOUSE_HTTP_PORT" {
            *v = proxy.port.to_string();
        }
    }
    svc.env
        .push(("CLICKHOUSE_CLUSTER".to_string(), CLUSTER.to_string()));
    // The first INSERTs commit and their answers are lost: each is re-sent with its token.
    proxy.set_rule(Fault::DropResponse, Some("INSERT"), Some(6));
    svc.start();
    let client = nats.client().await;
    wait_for_streams(&client).await;
    publish_trades(&client, 0, 3000).await;
    // A dead letter goes through the Distributed `dead_letters` (sharded by subject).
    crate::harness::publish_acked(
        &client,
        [(
            "trade.binance.spot.BTC-USDT".to_string(),
            "{not json".to_string(),
        )],
    )
    .await;
    assert_exactly_once(&ch, &svc, 3000).await;
    assert!(proxy.counts().dropped_after_commit.load(Relaxed) >= 6);

    // A crash while batches are in doubt: the journal replays them with their tokens.
    proxy.set(Fault::DropResponseRandomly(0.3));
    publish_trades(&client, 3000, 6000).await;
    let local = "marketprism_hot.trades_local";
    wait_until(30, || async { ch.count(local).await > 3000 }).await;
    svc.kill();
    proxy.set(Fault::Pass);
    svc.start();
    assert_exactly_once(&ch, &svc, 6000).await;

    assert_eq!(ch.count("marketprism_hot.dead_letters_local").await, 1);
    let log = svc.log_text();
    assert!(log.contains("ON CLUSTER DDL skipped"), "{}", tail(&log));
    let inserts = proxy.uris("INSERT");
    assert!(inserts.len() > 6, "{inserts:?}");
    println!(
        "cluster path: {} INSERTs through Distributed, {} answers dropped after commit",
        inserts.len(),
        proxy.counts().dropped_after_commit.load(Relaxed)
    );
    for uri in &inserts {
        for setting in [
            "distributed_foreground_insert=1",
            "insert_quorum=2",
            "insert_quorum_parallel=1",
            "insert_quorum_timeout=30000",
            "insert_deduplication_token=",
            "async_insert=0",
        ] {
            assert!(uri.contains(setting), "{setting} missing in {uri}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_the_server_does_not_define_fails_the_start_naming_the_key() {
    let nats = TestNats::start().await;
    let ch = TestClickHouse::start().await;
    let mut svc = Service::new(&nats, &ch, "");
    svc.env
        .push(("CLICKHOUSE_CLUSTER".to_string(), "nope".to_string()));
    svc.start();
    let exited = wait_until(30, || {
        let code = svc.exit_code();
        async move { code.is_some() }
    })
    .await;
    assert!(exited, "still running; log:\n{}", tail(&svc.log_text()));
    assert_ne!(svc.exit_code(), Some(0));
    let log = svc.log_text();
    assert!(
        log.contains("clickhouse.cluster") && log.contains("\"nope\""),
        "{}",
        tail(&log)
    );
    // Nothing was created on the server.
    assert_eq!(
        ch.query("SELECT count() FROM system.tables WHERE database = 'marketprism_hot'")
            .await,
        "0"
    );
}

/// `marketprism-storage <args>` against `ch` with `clickhouse.cluster` = `cluster`.
fn init(ch: &TestClickHouse, cluster: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_marketprism-storage"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("MARKETPRISM_TOOLS_DIR", crate::harness::tools_dir())
        .env("CLICKHOUSE_HOST", "127.0.0.1")
        .env("CLICKHOUSE_HTTP_PORT", ch.port.to_string())
        .env("CLICKHOUSE_CLUSTER", cluster)
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_init_prints_the_on_cluster_ddl_and_checks_the_cluster_and_its_tables() {
    let ch = cluster_clickhouse().await;
    let out = init(&ch, CLUSTER, &["init", "--print"]);
    let ddl = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        ddl.contains(
            "CREATE TABLE IF NOT EXISTS `marketprism_hot`.`trades_local` ON CLUSTER `mp_it`"
        ),
        "{ddl}"
    );
    assert!(ddl.contains("cityHash64(exchange, market_type, symbol)"));

    // `init --check` reads the shard's local tables and the Distributed ones: nothing wrong.
    let out = init(&ch, CLUSTER, &["init", "--check"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("sharding key"), "{text}");

    let out = init(&ch, "nope", &["init", "--check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("clickhouse.cluster") && err.contains("\"nope\"") && err.contains(CLUSTER),
        "{err}"
    );
}
