//! Lanes: one type split into partitions across instances, hand-over, fencing, duplicate ids.
//!
//! Real nats-server and chDB; several service processes against them. Every test counts every
//! message (count, distinct trade ids, and the audit oracle).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use marketprism_storage::model::DataType;
use marketprism_storage::source::lease::LEASE_TTL;

use crate::harness::{Service, TestClickHouse, TestNats, wait_for_streams, wait_until};
use crate::ingest::tail;
use crate::oracle::assert_audit_clean;
use crate::proxy::{Fault, Proxy};

const LEASES: &str = "marketprism_storage_journal_leases";
const TRADE: &str = "marketprism_storage_trade";
const PARTITIONS: u32 = 4;

fn partitioned() -> String {
    format!("  streams:\n    high_frequency:\n      partitions: {PARTITIONS}\n")
}

/// Trades `from..to` over `markets` symbols of one exchange (subject and payload agree), with
/// JetStream acks.
async fn publish_market_trades(client: &async_nats::Client, from: u64, to: u64, markets: u64) {
    let now = chrono::Utc::now().timestamp_millis();
    let msg = |i: u64| {
        let sym = format!("S{}-USDT", i % markets);
        let ts = now - 600_000 + (i as i64 % 500_000);
        (
            format!("trade.binance.spot.{sym}"),
            format!(
                r#"{{"symbol":"{sym}","price":"{}.{:02}","quantity":"0.{:03}","side":"buy","trade_id":"{i}","exchange":"binance","market_type":"spot","data_type":"trade","ts_ms":{ts},"trade_ts_ms":{ts}}}"#,
                100 + i % 900,
                i % 100,
                1 + i % 998,
            ),
        )
    };
    crate::harness::publish_acked(client, (from..to).map(msg)).await;
}

/// Who holds each trade partition's lease (durable → instance id).
async fn trade_holders(client: &async_nats::Client) -> BTreeMap<String, String> {
    let js = jetstream::new(client.clone());
    let Ok(kv) = js.get_key_value(LEASES).await else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for k in 0..PARTITIONS {
        let key = format!("{TRADE}_p{k}of{PARTITIONS}");
        if let Ok(Some(v)) = kv.get(&key).await {
            let instance = serde_json::from_slice::<serde_json::Value>(&v)
                .ok()
                .and_then(|j| j["instance"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&v).into_owned());
            out.insert(key, instance);
        }
    }
    out
}

async fn assert_trades_exactly(ch: &TestClickHouse, n: u64, logs: &str) {
    let ok = wait_until(120, || async {
        ch.count("marketprism_hot.trades").await >= n
    })
    .await;
    assert!(
        ok,
        "{} of {n} rows; logs:\n{logs}",
        ch.count("marketprism_hot.trades").await
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stats = ch
        .query("SELECT count(), uniqExact(trade_id) FROM marketprism_hot.trades")
        .await;
    assert_eq!(stats, format!("{n}\t{n}"), "count, distinct ids");
}

/// The deduplication tokens in INSERT URIs (the part of a row token before any `/`).
fn tokens(uris: &[String]) -> BTreeSet<String> {
    uris.iter()
        .filter_map(|u| {
            let v = u.split("insert_deduplication_token=").nth(1)?;
            let v = v.split('&').next()?;
            let v = urlencoding_decode(v);
            Some(v.split('/').next().unwrap_or(&v).to_string())
        })
        .collect()
}

fn urlencoding_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(x) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(x);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn instance_of(svc: &Service) -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}", svc.http_port)
}

/// Three instances over a type split into four partitions: the partitions spread over all
/// three; one is SIGKILLed mid-drain; its partitions are taken over within the lease TTL
/// (plus one look of the coordinator) and every trade is stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_a_partitioned_type_and_survive_a_sigkill_mid_drain() {
    let nats = TestNats::start().await;
    let ch = TestClickHouse::start().await;
    let client = nats.client().await;
    let mut svcs: Vec<Service> = (0..3)
        .map(|_| Service::new(&nats, &ch, "").with_nats_yaml(&partitioned()))
        .collect();
    svcs[0].start();
    wait_for_streams(&client).await;
    svcs[1].start();
    svcs[2].start();
    let ids: Vec<String> = svcs.iter().map(instance_of).collect();
    let spread = wait_until(60, || async {
        let h = trade_holders(&client).await;
        h.len() == PARTITIONS as usize && h.values().collect::<BTreeSet<_>>().len() == 3
    })
    .await;
    let logs = |svcs: &[Service]| {
        svcs.iter()
            .map(|s| tail(&s.log_text()))
            .collect::<Vec<_>>()
            .join("\n----\n")
    };
    assert!(
        spread,
        "partitions not spread over 3 instances: {:?}\n{}",
        trade_holders(&client).await,
        logs(&svcs)
    );

    const N: u64 = 150_000;
    publish_market_trades(&client, 0, N, 64).await;
    assert!(
        wait_until(60, || async {
            ch.count("marketprism_hot.trades").await >= N / 5
        })
        .await
    );
    // Kill the instance that holds partition 1 (not the first one, which created the streams).
    let before = trade_holders(&client).await;
    let victim_id = before[&format!("{TRADE}_p1of{PARTITIONS}")].clone();
    let victim = ids.iter().position(|i| *i == victim_id).unwrap();
    let held: Vec<String> = before
        .iter()
        .filter(|(_, who)| **who == victim_id)
        .map(|(k, _)| k.clone())
        .collect();
    let rows_at_kill = ch.count("marketprism_hot.trades").await;
    svcs[victim].kill();
    let killed = Instant::now();
    let taken = wait_until(60, || async {
        let h = trade_holders(&client).await;
        held.iter()
            .all(|k| h.get(k).is_some_and(|who| *who != victim_id))
    })
    .await;
    let takeover = killed.elapsed();
    eprintln!(
        "killed {victim_id} at {rows_at_kill} of {N} rows holding {held:?}; taken over after {:.1} s",
        takeover.as_secs_f64()
    );
    assert!(taken, "partitions of the killed instance not taken over");
    // The lease expires LEASE_TTL after its last refresh; the coordinator looks every 2 s.
    assert!(
        takeover <= LEASE_TTL + Duration::from_secs(4),
        "takeover took {takeover:?}"
    );
    assert_trades_exactly(&ch, N, &logs(&svcs)).await;
    assert_audit_clean(&nats, &ch, &[DataType::Trade]).await;
    for (i, s) in svcs.iter_mut().enumerate() {
        if i != victim {
            assert_eq!(s.terminate(), Some(0), "graceful stop of {}", ids[i]);
        }
    }
}

/// A fenced-out instance stops writing: an instance frozen (SIGSTOP) while its writers hold
/// journaled batches (ClickHouse refusing them), whose partitions another instance takes over
/// and stores, does not send its held batches again when it wakes up — its lease lapsed by its
/// own clock, and the refresh fails — and every trade is stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_frozen_past_its_lease_stops_writing_and_every_row_is_stored_once() {
    let nats = TestNats::start().await;
    let ch = TestClickHouse::start().await;
    let client = nats.client().await;
    let proxy = Proxy::start(ch.port).await;
    let mut a = Service::new(&nats, &ch, "").with_nats_yaml(&partitioned());
    let mut b = Service::new(&nats, &ch, "").with_nats_yaml(&partitioned());
    for (k, v) in b.env.iter_mut() {
        if k == "CLICKHOUSE_HTTP_PORT" {
            *v = proxy.port.to_string();
        }
    }
    a.start();
    wait_for_streams(&client).await;
    b.start();
    let b_id = instance_of(&b);
    let logs = |a: &Service, b: &Service| {
        format!(
            "a:\n{}\n----\nb:\n{}",
            tail(&a.log_text()),
            tail(&b.log_text())
        )
    };
    let spread = wait_until(60, || async {
        let h = trade_holders(&client).await;
        h.len() == PARTITIONS as usize && h.values().any(|w| *w == b_id)
    })
    .await;
    assert!(spread, "b holds no partition\n{}", logs(&a, &b));
    let b_lanes: Vec<String> = trade_holders(&client)
        .await
        .into_iter()
        .filter(|(_, w)| *w == b_id)
        .map(|(k, _)| k)
        .collect();

    // b's inserts fail (retried: its writers hold journaled batches).
    proxy.set_rule(
        Fault::Status(503, "overloaded".into()),
        Some("INSERT"),
        None,
    );
    const N: u64 = 30_000;
    publish_market_trades(&client, 0, N, 64).await;
    assert!(
        wait_until(30, || async {
            proxy
                .counts()
                .faulted
                .load(std::sync::atomic::Ordering::Relaxed)
                > 2
        })
        .await,
        "b never tried to insert\n{}",
        logs(&a, &b)
    );
    let pid = b.pid().unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    // a takes b's partitions over once their leases expire, and stores everything.
    let taken = wait_until(60, || async {
        let h = trade_holders(&client).await;
        b_lanes.iter().all(|k| h.get(k).is_some_and(|w| *w != b_id))
    })
    .await;
    assert!(taken, "b's partitions not taken over\n{}", logs(&a, &b));
    assert_trades_exactly(&ch, N, &logs(&a, &b)).await;
    // New messages in every partition, so a's acks move each durable's floor past the batches
    // it re-read from b (re-read messages carry no ack handle): when b gets partitions back,
    // its resync starts above them and its batches carry new tokens.
    publish_market_trades(&client, N, N + 1_000, 64).await;
    assert_trades_exactly(&ch, N + 1_000, &logs(&a, &b)).await;

    // Let b's INSERTs through from now on, and wake it up. A stale insert is one of a batch b
    // had tokened before it froze; once it holds lanes again (legitimately: it registers
    // again and gets its share back) its new batches have new tokens.
    let stale: BTreeSet<String> = tokens(&proxy.counts().inserts.lock().unwrap());
    let seen = proxy.counts().inserts.lock().unwrap().len();
    proxy.set_rule(Fault::Pass, None, None);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after: Vec<String> = proxy.counts().inserts.lock().unwrap()[seen..].to_vec();
    let resent: Vec<String> = tokens(&after).intersection(&stale).cloned().collect();
    eprintln!(
        "b woke: {} INSERTs after waking, {} of them under tokens from before it froze",
        after.len(),
        resent.len()
    );
    // Its writers check the lease before every attempt: at most the attempt each had begun
    // when it froze (past the check, not yet on the wire) still goes out, under the token of
    // a batch the new holder re-formed identically, so ClickHouse drops it (counts below).
    // Measured: none in 3 runs with the check; without it (guard forced valid) both held
    // batches were sent again in each of 2 runs, and this assertion failed.
    assert!(
        resent.len() < b_lanes.len(),
        "the fenced-out instance kept sending its old batches after waking: {resent:?}\n{}",
        logs(&a, &b)
    );
    let blog = b.log_text();
    assert!(
        blog.contains("lapsed") || blog.contains("consumer lease lost"),
        "b did not notice it was fenced\n{}",
        logs(&a, &b)
    );
    // Whatever b does next (it registers again and may get partitions back) stays exact.
    publish_market_trades(&client, N + 1_000, N + 6_000, 64).await;
    assert_trades_exactly(&ch, N + 6_000, &logs(&a, &b)).await;
    assert_audit_clean(&nats, &ch, &[DataType::Trade]).await;
    assert_eq!(b.terminate(), Some(0), "{}", logs(&a, &b));
    assert_eq!(a.terminate(), Some(0), "{}", logs(&a, &b));
}

/// Two live processes with one instance id would take over each other's leases: the second
/// is refused at start with a clear error, and the first keeps storing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_with_the_same_instance_id_is_refused() {
    let nats = TestNats::start().await;
    let ch = TestClickHouse::start().await;
    let client = nats.client().await;
    let mut a = Service::new(&nats, &ch, "");
    a.args = vec!["--instance-id".into(), "twin".into()];
    a.start();
    wait_for_streams(&client).await;
    publish_market_trades(&client, 0, 1_000, 8).await;
    assert_trades_exactly(&ch, 1_000, &tail(&a.log_text())).await;

    let mut b = Service::new(&nats, &ch, "");
    b.args = a.args.clone();
    let started = Instant::now();
    b.start();
    let mut code = None;
    while code.is_none() && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        code = b.exit_code();
    }
    assert_eq!(
        code,
        Some(1),
        "the duplicate was not refused\n{}",
        tail(&b.log_text())
    );
    let log = b.log_text();
    assert!(
        log.contains("instance id twin is already in use"),
        "{}",
        tail(&log)
    );
    eprintln!(
        "duplicate refused after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    publish_market_trades(&client, 1_000, 2_000, 8).await;
    assert_trades_exactly(&ch, 2_000, &tail(&a.log_text())).await;
    assert_eq!(a.terminate(), Some(0));
}

/// A server pair and one instance, started, with its streams created.
async fn one_instance() -> (TestNats, TestClickHouse, async_nats::Client, Service) {
    let nats = TestNats::start().await;
    let ch = TestClickHouse::start().await;
    let client = nats.client().await;
    let mut svc = Service::new(&nats, &ch, "");
    svc.start();
    wait_for_streams(&client).await;
    (nats, ch, client, svc)
}

/// Runs `marketprism-storage <args>` with `svc`'s environment; returns (exit code, output).
fn cli(svc: &Service, args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_marketprism-storage"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(svc.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// Changing the layout is explicit and online: `streams partition` while an instance drains a
/// backlog stores every message once (what was stored before the change through the base lane,
/// what comes after through the new partitions); a restart with the old key is refused naming
/// it and the command; with the new key it goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repartitioning_a_running_stream_loses_and_duplicates_nothing() {
    let (nats, ch, client, mut svc) = one_instance().await;
    publish_market_trades(&client, 0, 40_000, 64).await;
    let (code, out) = cli(
        &svc,
        &[
            "streams",
            "partition",
            "--stream",
            "high_frequency",
            "--partitions",
            "3",
        ],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("3 partitions"), "{out}");
    publish_market_trades(&client, 40_000, 80_000, 64).await;
    assert_trades_exactly(&ch, 80_000, &tail(&svc.log_text())).await;
    let js = jetstream::new(client.clone());
    let kv = js.get_key_value(LEASES).await.unwrap();
    for k in 0..3 {
        assert!(
            kv.get(format!("{TRADE}_p{k}of3")).await.unwrap().is_some(),
            "partition {k} of 3 not held\n{}",
            tail(&svc.log_text())
        );
    }
    assert_eq!(svc.terminate(), Some(0));

    // The key still says 1: refused, naming the key and the way out.
    svc.start();
    let mut code = None;
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        code = svc.exit_code();
        if code.is_some() {
            break;
        }
    }
    assert_eq!(code, Some(1), "{}", tail(&svc.log_text()));
    let log = svc.log_text();
    assert!(
        log.contains("nats.streams.high_frequency.partitions is 1")
            && log.contains("streams partition --stream high_frequency --partitions 1"),
        "{}",
        tail(&log)
    );
    let mut svc = Service::new(&nats, &ch, "")
        .with_nats_yaml("  streams:\n    high_frequency:\n      partitions: 3\n");
    svc.start();
    publish_market_trades(&client, 80_000, 90_000, 64).await;
    assert_trades_exactly(&ch, 90_000, &tail(&svc.log_text())).await;
    assert_audit_clean(&nats, &ch, &[DataType::Trade]).await;
    assert_eq!(svc.terminate(), Some(0));
}

/// A durable removed under a running lane (an operator's `nats consumer rm`, a tool) is
/// created again from the lane's journal, not from the start of the stream: its journaled
/// batches are re-cut with their tokens and nothing it had stored is stored again — before,
/// every retained message was stored a second time. The same at a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_durable_is_created_again_from_its_journal_not_from_the_start() {
    let (nats, ch, client, mut svc) = one_instance().await;
    publish_market_trades(&client, 0, 20_000, 16).await;
    assert_trades_exactly(&ch, 20_000, &tail(&svc.log_text())).await;
    let js = jetstream::new(client.clone());
    let stream = js.get_stream("MARKET_DATA_HF").await.unwrap();
    assert!(stream.delete_consumer(TRADE).await.unwrap().success);
    publish_market_trades(&client, 20_000, 30_000, 16).await;
    assert_trades_exactly(&ch, 30_000, &tail(&svc.log_text())).await;
    assert!(
        svc.log_text()
            .contains("created from the oldest journaled batch"),
        "{}",
        tail(&svc.log_text())
    );
    assert_eq!(svc.terminate(), Some(0));

    // Removed while the service is stopped: the start creates it from the journal too.
    assert!(stream.delete_consumer(TRADE).await.unwrap().success);
    publish_market_trades(&client, 30_000, 35_000, 16).await;
    svc.start();
    assert_trades_exactly(&ch, 35_000, &tail(&svc.log_text())).await;
    assert_audit_clean(&nats, &ch, &[DataType::Trade]).await;
    assert_eq!(svc.terminate(), Some(0));
}
