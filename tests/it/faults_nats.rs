//! NATS-side faults: outages of several lengths, a recreated stream, a journaled batch cut short
//! by a stop, shutdown with NATS down, a durable we cannot use, a flood of large payloads, and a
//! crash during the recovery read, journal entries of an older stream, fencing at a resync.
//! Every test counts rows per trade id (exactly once).

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::AckPolicy, consumer::pull};
use futures::StreamExt;
use rand::Rng;

use crate::harness::{
    Service, TestClickHouse, TestNats, create_streams, http_get, wait_for_streams, wait_until,
};
use crate::harness::{stack_with_streams, started_stack};
use crate::ingest::{assert_exactly_once, publish_trades, tail, trade_body};

const DURABLE: &str = "marketprism_storage_trade";
const JOURNAL: &str = "marketprism_storage_journal";

/// Waits up to `secs` for the service process to end; whether it did.
async fn wait_exit(svc: &mut Service, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while svc.running() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

async fn trades(ch: &TestClickHouse) -> u64 {
    ch.count("marketprism_hot.trades").await
}

/// Waits until the service has created the schema (counting before that is an error).
async fn wait_schema(ch: &TestClickHouse, svc: &Service) {
    let ok = wait_until(60, || async {
        ch.query("SELECT count() FROM system.tables WHERE database = 'marketprism_hot' AND name = 'trades'")
            .await
            == "1"
    })
    .await;
    assert!(ok, "no schema; log:\n{}", tail(&svc.log_text()));
}

/// Kills NATS for `secs`, then starts it again on the same port and store. While it is down,
/// checks that `/ready` names the trade type or NATS (and, for long outages, that the
/// service survives).
async fn nats_outage(nats: &mut TestNats, svc: &mut Service, secs: u64) {
    nats.kill().await;
    let t0 = Instant::now();
    let mut said_why = false;
    let mut said_type = false;
    while t0.elapsed() < Duration::from_secs(secs) {
        // (The first probes may still see the connection up: the client notices a dead server
        // after a moment.)
        if let Some((code, body)) = http_get(svc.http_port, "/ready").await {
            said_why |= code == 503 && body.contains("nats: not connected");
            said_type |= body.contains("trade: consumer lease lost");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(said_why, "/ready never said why during the outage");
    // Past a lease refresh (4 s) and its request timeout, the type says it is recovering.
    assert!(
        secs < 20 || said_type,
        "/ready never named the trade type during a {secs} s outage"
    );
    assert!(
        svc.running(),
        "the service must survive a {secs} s NATS outage"
    );
    nats.restart().await;
}

/// Hole 1: a failed lease refresh used to end the type for good (nothing stored after the
/// outage until a manual restart). Outages of 3 s, 20 s and 70 s (longer than the lease TTL of
/// 15 s), the first while a backlog drains, each followed by new messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_outage_of_3s_20s_and_70s_does_not_stop_ingestion() {
    let (mut nats, ch, client) = stack_with_streams().await;
    const BACKLOG: u64 = 150_000;
    let now = chrono::Utc::now().timestamp_millis();
    publish_trades(&client, 0, BACKLOG, now).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(client);
    let mut svc = Service::new(&nats, &ch, "");
    svc.start();
    wait_schema(&ch, &svc).await;
    assert!(wait_until(60, || async { trades(&ch).await > 0 }).await);
    let mut next = BACKLOG;
    for secs in [3, 20, 70] {
        let before = trades(&ch).await;
        nats_outage(&mut nats, &mut svc, secs).await;
        eprintln!("nats outage of {secs} s at {before} rows");
        let client = nats.client().await;
        publish_trades(&client, next, next + 10_000, now).await;
        next += 10_000;
        let ok = wait_until(120, || async { trades(&ch).await >= next }).await;
        assert!(
            ok,
            "after a {secs} s outage only {} of {next} rows; log:\n{}",
            trades(&ch).await,
            tail(&svc.log_text())
        );
        let (code, body) = http_get(svc.http_port, "/ready").await.unwrap_or_default();
        let ready = wait_until(30, || async {
            http_get(svc.http_port, "/ready")
                .await
                .is_some_and(|(c, _)| c == 200)
        })
        .await;
        assert!(ready, "not ready again after the outage: {code} {body}");
    }
    assert_exactly_once(&ch, next, &svc).await;
    assert_eq!(svc.terminate(), Some(0), "{}", tail(&svc.log_text()));
}

/// Hole 2: sequences of a recreated stream restart at 1; without the stream's epoch in the
/// journal and tokens, new batches were cut at old boundaries, got old tokens, and ClickHouse
/// dropped them as duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_and_recreated_stream_stores_the_new_messages() {
    let (_nats, ch, mut svc, client) = started_stack("").await;
    const N: u64 = 20_000;
    const M: u64 = 15_000;
    let now = chrono::Utc::now().timestamp_millis();
    publish_trades(&client, 0, N, now).await;
    assert!(wait_until(60, || async { trades(&ch).await == N }).await);
    let js = jetstream::new(client.clone());
    js.delete_stream("MARKET_DATA_HF").await.unwrap();
    create_streams(&client).await;
    // Different trade ids, same timestamps (same partitions as the old rows).
    publish_trades(&client, N, N + M, now).await;
    assert_exactly_once(&ch, N + M, &svc).await;
    assert!(
        svc.log_text().contains("earlier incarnation of the stream"),
        "old journal entries are logged as ignored"
    );
    assert_eq!(svc.terminate(), Some(0));
}

/// Creates the trade durable the way the service does, but with `max_ack_pending` = `pending`,
/// then takes `take` deliveries without acking them (the state a crash leaves).
async fn durable_with_unacked(client: &async_nats::Client, pending: i64, take: usize) {
    let js = jetstream::new(client.clone());
    let stream = js.get_stream("MARKET_DATA_HF").await.unwrap();
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some(DURABLE.into()),
            filter_subject: "trade.>".into(),
            ack_policy: AckPolicy::All,
            ack_wait: Duration::from_secs(5),
            max_deliver: -1,
            max_ack_pending: pending,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut got = 0;
    let mut msgs = consumer
        .fetch()
        .max_messages(take)
        .expires(Duration::from_secs(5))
        .messages()
        .await
        .unwrap();
    while let Some(m) = msgs.next().await {
        m.unwrap();
        got += 1;
    }
    assert_eq!(got, take, "deliveries taken");
}

/// Writes the journal entry of the trade durable as an older version of the service did.
async fn journal_entry(client: &async_nats::Client, json: &str) {
    let js = jetstream::new(client.clone());
    let kv = js
        .create_key_value(jetstream::kv::Config {
            bucket: JOURNAL.into(),
            history: 1,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .unwrap();
    kv.put(DURABLE, json.to_string().into()).await.unwrap();
}

/// Hole 3 (and the SIGTERM-during-recovery half of hole 4): a journaled batch of 1000 messages
/// whose messages 501-1000 cannot arrive yet (the durable is at its `max_ack_pending`). A stop
/// used to insert messages 1-500 under the token of the WHOLE batch, so 501-1000 were later
/// dropped as duplicates. Now the part is not sent: it is re-read and inserted whole. The
/// journal entry is in the format of the previous release (no stream epoch, an `mp1` token):
/// an upgrade must replay it with its stored token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_a_journaled_batch_is_partly_reread_inserts_it_whole_later() {
    let (nats, ch, client) = stack_with_streams().await;
    let now = chrono::Utc::now().timestamp_millis();
    publish_trades(&client, 0, 1000, now).await;
    durable_with_unacked(&client, 500, 500).await;
    journal_entry(
        &client,
        &format!(r#"[{{"first_seq":1,"last_seq":1000,"count":1000,"token":"mp1:{DURABLE}:1-1000:1000"}}]"#),
    )
    .await;
    let mut svc = Service::new(&nats, &ch, "shutdown:\n  grace_period: 10s\n");
    svc.start();
    let recovering = wait_until(60, || async {
        svc.log_text().contains("recovered unacked messages")
    })
    .await;
    assert!(
        recovering,
        "no recovery read; log:\n{}",
        tail(&svc.log_text())
    );
    // Messages 1-500 are held, waiting for 501-1000, which the durable does not deliver.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t0 = Instant::now();
    assert_eq!(svc.terminate(), Some(0), "{}", tail(&svc.log_text()));
    assert!(
        t0.elapsed() < Duration::from_secs(15),
        "stop took {:?}",
        t0.elapsed()
    );
    assert_eq!(
        trades(&ch).await,
        0,
        "a part of a journaled batch must not be inserted; log:\n{}",
        tail(&svc.log_text())
    );
    // Let the durable deliver the rest, then restart: the batch is re-formed whole.
    let js = jetstream::new(client.clone());
    let stream = js.get_stream("MARKET_DATA_HF").await.unwrap();
    stream
        .update_consumer(pull::Config {
            durable_name: Some(DURABLE.into()),
            filter_subject: "trade.>".into(),
            ack_policy: AckPolicy::All,
            ack_wait: Duration::from_secs(5),
            max_deliver: -1,
            max_ack_pending: 100_000,
            ..Default::default()
        })
        .await
        .unwrap();
    svc.start();
    publish_trades(&client, 1000, 3000, now).await;
    assert_exactly_once(&ch, 3000, &svc).await;
    assert_eq!(svc.terminate(), Some(0));
}

/// Review finding 2: journal entries without an epoch (the previous release's) were taken as
/// the current epoch whatever the stream. Written before the stream was (re)created, they
/// became cut points of the new stream: one at sequence 8000 that 1500 messages never reach
/// held messages 1001-1500 for ever (thresholds and age are off while a cut is pending), and
/// one at (1, 1000) gave the new batch an old token (a ClickHouse holding the old batch would
/// drop the new rows). Now entries of a journal last written before the stream's creation,
/// and entries beyond the stream's last sequence, are ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epochless_journal_entries_older_than_the_stream_are_not_cut_points() {
    let nats = TestNats::start().await;
    let ch = TestClickHouse::start().await;
    let client = nats.client().await;
    journal_entry(
        &client,
        &format!(
            r#"[{{"first_seq":1,"last_seq":1000,"count":1000,"token":"mp1:{DURABLE}:1-1000:1000"}},{{"first_seq":8001,"last_seq":9000,"count":1000,"token":"mp1:{DURABLE}:8001-9000:1000"}}]"#
        ),
    )
    .await;
    // The stream is created after the journal's last write: a later incarnation.
    tokio::time::sleep(Duration::from_millis(50)).await;
    create_streams(&client).await;
    let now = chrono::Utc::now().timestamp_millis();
    publish_trades(&client, 0, 1500, now).await;
    let mut svc = Service::new(&nats, &ch, "");
    svc.start();
    wait_schema(&ch, &svc).await;
    let all = wait_until(60, || async { trades(&ch).await >= 1500 }).await;
    assert!(
        all,
        "{} of 1500 rows; log:\n{}",
        trades(&ch).await,
        tail(&svc.log_text())
    );
    assert_exactly_once(&ch, 1500, &svc).await;
    assert!(
        svc.log_text().contains("earlier incarnation of the stream"),
        "ignored entries are logged"
    );
    assert_eq!(svc.terminate(), Some(0));
}

/// Review finding 4: reading the journal does not change its revision, so a new owner's
/// resync did not fence the previous owner's writer (paused, then resumed with the revision
/// it had read): the stale writer's compare-and-set still succeeded and the new owner was the
/// one fenced. Now the resync writes the entries it loaded back: a write stating the old
/// revision fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_bumps_the_journal_revision_so_a_stale_writer_is_fenced() {
    let (nats, ch, client) = stack_with_streams().await;
    journal_entry(&client, "[]").await;
    let js = jetstream::new(client.clone());
    let kv = js.get_key_value(JOURNAL).await.unwrap();
    let stale = kv.entry(DURABLE).await.unwrap().unwrap().revision;
    let mut svc = Service::new(&nats, &ch, "");
    svc.start();
    // No message is published: only the resync can write the journal.
    let bumped = wait_until(60, || async {
        kv.entry(DURABLE)
            .await
            .ok()
            .flatten()
            .is_some_and(|e| e.revision > stale)
    })
    .await;
    assert!(
        bumped,
        "journal revision still {stale} after the resync; log:\n{}",
        tail(&svc.log_text())
    );
    let write = kv.update(DURABLE, "[]".into(), stale).await;
    assert!(
        write.is_err(),
        "a write stating the revision read before the resync succeeded"
    );
    publish_trades(&client, 0, 1000, chrono::Utc::now().timestamp_millis()).await;
    assert_exactly_once(&ch, 1000, &svc).await;
    assert_eq!(svc.terminate(), Some(0));
}

/// The grace period of the shutdown tests.
const GRACE: Duration = Duration::from_secs(5);

/// Sends SIGTERM and asserts that the service exits within `bound`.
async fn sigterm_exits_within(svc: &mut Service, bound: Duration, state: &str) {
    let t0 = Instant::now();
    nix::sys::signal::kill(svc.pid().unwrap(), nix::sys::signal::Signal::SIGTERM).unwrap();
    let exited = wait_exit(svc, 30).await;
    let took = t0.elapsed();
    let log = svc.log_text();
    assert!(
        exited,
        "still running {took:?} after SIGTERM with {state}; log:\n{}",
        tail(&log)
    );
    eprintln!("exit with {state} took {took:?}");
    if std::env::var_os("SHOW_SERVICE_LOG").is_some() {
        eprintln!("{log}");
    }
    assert!(took < bound, "exit with {state} took {took:?}");
}

/// Hole 4: shutdown used to wait on NATS without a bound (`flush`, lease release, journal and
/// ack retries): with NATS down, SIGTERM must still end the process within the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_nats_down_exits_within_the_grace_period() {
    let (mut nats, ch, mut svc, client) = started_stack("shutdown:\n  grace_period: 5s\n").await;
    let now = chrono::Utc::now().timestamp_millis();
    publish_trades(&client, 0, 5_000, now).await;
    assert!(wait_until(60, || async { trades(&ch).await == 5_000 }).await);
    // Messages in flight when NATS goes away.
    publish_trades(&client, 5_000, 30_000, now).await;
    nats.kill().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    sigterm_exits_within(&mut svc, GRACE + Duration::from_secs(5), "NATS down").await;
    // And nothing is lost: NATS back, service back, every row once.
    nats.restart().await;
    svc.start();
    assert_exactly_once(&ch, 30_000, &svc).await;
    assert_eq!(svc.terminate(), Some(0));
}

/// Hole 5: a durable under our name with `AckPolicy::Explicit` (made by another tool) used to be
/// accepted and then never advanced correctly. It is refused at start, naming the durable, its
/// policy and the fix, and left unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_ack_durable_is_refused_at_start_and_left_unchanged() {
    let (nats, ch, client) = stack_with_streams().await;
    let js = jetstream::new(client.clone());
    let stream = js.get_stream("MARKET_DATA_HF").await.unwrap();
    stream
        .create_consumer(pull::Config {
            durable_name: Some(DURABLE.into()),
            filter_subject: "trade.>".into(),
            ack_policy: AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut svc = Service::new(&nats, &ch, "");
    svc.start();
    let exited = wait_exit(&mut svc, 60).await;
    let log = svc.log_text();
    assert!(
        exited,
        "the service must refuse to start; log:\n{}",
        tail(&log)
    );
    assert_eq!(svc.exit_code(), Some(1), "{}", tail(&log));
    assert!(
        log.contains(&format!(
            "durable {DURABLE} on stream MARKET_DATA_HF has ack policy Explicit"
        )) && log.contains("AckPolicy::All")
            && log.contains("nats consumer rm MARKET_DATA_HF marketprism_storage_trade"),
        "error names the durable, its policy and the fix:\n{}",
        tail(&log)
    );
    let mut c: jetstream::consumer::PullConsumer = stream.get_consumer(DURABLE).await.unwrap();
    assert_eq!(
        c.info().await.unwrap().config.ack_policy,
        AckPolicy::Explicit
    );
}

/// A trade message padded to about `size` bytes (the padding is an unknown field, ignored).
fn big_trade(i: u64, now: i64, size: usize) -> String {
    let body = trade_body(i, now);
    let pad = "x".repeat(size.saturating_sub(body.len() + 16));
    format!("{},\"padding\":\"{pad}\"}}", &body[..body.len() - 1])
}

fn vm_hwm_kb(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Hole 6: pulls had no byte limit and the queue bound counted messages only, so a flood of
/// large payloads was held in memory whole. 300 messages of 900 KB (270 MB) are stored exactly
/// while the service's unacked bytes stay under `max_queue_bytes` + one pull.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_of_900kb_messages_is_stored_exactly_within_the_byte_budget() {
    let (nats, ch, client) = stack_with_streams().await;
    const N: u64 = 300;
    const SIZE: usize = 900 * 1024;
    let now = chrono::Utc::now().timestamp_millis();
    let js = jetstream::new(client.clone());
    for i in 0..N {
        js.publish(
            "trade.binance.spot.BTC-USDT",
            big_trade(i, now, SIZE).into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let mut svc = Service::new(&nats, &ch, "");
    // The whole file (the harness's settings already hold `nats` and `batch`).
    std::fs::write(
        svc.dir.path().join("config.yaml"),
        "nats:\n  ack_wait: 5s\n  fetch_max_bytes: 4MiB\nbatch:\n  types:\n    trade: { max_rows: 5000, max_bytes: 8MiB, max_queue_bytes: 16MiB, max_age: 200ms }\n",
    )
    .unwrap();
    svc.start();
    let pid = svc.pid().unwrap().as_raw();
    wait_schema(&ch, &svc).await;
    let mut peak_queued = 0u64;
    let deadline = Instant::now() + Duration::from_secs(180);
    while trades(&ch).await < N && Instant::now() < deadline {
        if let Some((200, body)) = http_get(svc.http_port, "/stats").await {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let q = v["types"]["trade"]["queued_bytes"].as_u64().unwrap_or(0);
            peak_queued = peak_queued.max(q);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hwm_mb = vm_hwm_kb(pid) / 1024;
    eprintln!("peak unacked bytes {peak_queued}, peak RSS {hwm_mb} MiB");
    assert_eq!(
        ch.query("SELECT count(), uniqExact(trade_id) FROM marketprism_hot.trades")
            .await,
        format!("{N}\t{N}"),
        "log:\n{}",
        tail(&svc.log_text())
    );
    assert_eq!(ch.count("marketprism_hot.dead_letters").await, 0);
    assert!(peak_queued > 0, "unacked bytes are counted");
    let budget = 16 * 1024 * 1024 + 4 * 1024 * 1024 + SIZE as u64;
    assert!(peak_queued <= budget, "unacked {peak_queued} > {budget}");
    assert!(hwm_mb < 200, "peak RSS {hwm_mb} MiB for a 270 MB flood");
    assert_eq!(svc.terminate(), Some(0));
}

/// SIGKILL while the recovery read (re-reading the unacked range from the stream) is under way,
/// several times over: every row once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_the_recovery_read_stores_every_row_once() {
    let nats = TestNats::start().await;
    let mut ch = TestClickHouse::start().await;
    // Through the proxy, so that inserts can be slowed below: the drain must outlast the kills
    // (on a quiet machine it finished before the third restart, leaving nothing to re-read).
    let proxy = crate::proxy::Proxy::start(ch.port).await;
    let mut svc = Service::new(&nats, &ch, "");
    for (k, v) in &mut svc.env {
        if k == "CLICKHOUSE_HTTP_PORT" {
            *v = proxy.port.to_string();
        }
    }
    svc.start();
    let client = nats.client().await;
    wait_for_streams(&client).await;
    wait_schema(&ch, &svc).await;
    // ClickHouse down while the backlog arrives: the service pulls up to `max_queue` messages
    // and holds them unacked (its first batch journaled), so every restart re-reads them all.
    ch.kill().await;
    const N: u64 = 100_000;
    let now = chrono::Utc::now().timestamp_millis();
    publish_trades(&client, 0, N, now).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    svc.kill();
    ch.restart().await;
    // Every INSERT answers after 400 ms: 100,000 rows take ≥ 8 s to drain, so each restart
    // below still finds an unacked range to re-read.
    proxy.set_rule(
        crate::proxy::Fault::Delay(Duration::from_millis(400)),
        Some("INSERT"),
        None,
    );
    let mut rng = rand::rng();
    let mut hits = 0;
    // Even kills land within the first 60 ms of the re-read (it takes ~100 ms here), odd ones
    // later, during the slow inserts (some of which land: batches stored, not all acked); at
    // least six kills and two hits during a read.
    for k in 0..12 {
        if k >= 6 && hits >= 2 {
            break;
        }
        let seen = svc
            .log_text()
            .matches("re-forming journaled batches")
            .count();
        svc.start();
        let reforming = wait_until(30, || async {
            svc.log_text()
                .matches("re-forming journaled batches")
                .count()
                > seen
        })
        .await;
        let ms = if k % 2 == 0 {
            rng.random_range(0..60)
        } else {
            rng.random_range(300..1_500)
        };
        tokio::time::sleep(Duration::from_millis(ms)).await;
        let during = !svc.log_text()[..]
            .rsplit("re-forming journaled batches")
            .next()
            .unwrap_or("")
            .contains("recovered unacked messages");
        hits += u32::from(reforming && during);
        svc.kill();
        eprintln!(
            "kill {k} {ms} ms into the recovery read (still reading: {during}): {} rows",
            trades(&ch).await
        );
    }
    assert!(hits > 0, "no kill landed during a recovery read");
    proxy.set(crate::proxy::Fault::Pass);
    svc.start();
    assert_exactly_once(&ch, N, &svc).await;
    assert_eq!(svc.terminate(), Some(0));
}

/// Fencing: when the lease is taken by another owner the type's stages stop storing at once
/// (standby: ready, the holder named), and come back when the lease is free; when the journal is
/// rewritten behind the writer's back, its compare-and-set fails, the stages are fenced and
/// start over from the journal. Every row once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_lease_and_rewritten_journal_fence_the_stages_and_recover() {
    let (_nats, ch, mut svc, client) = started_stack("").await;
    let now = chrono::Utc::now().timestamp_millis();
    publish_trades(&client, 0, 10_000, now).await;
    assert!(wait_until(60, || async { trades(&ch).await == 10_000 }).await);

    // Another owner takes the lease.
    let js = jetstream::new(client.clone());
    let leases = js.get_key_value(format!("{JOURNAL}_leases")).await.unwrap();
    let e = leases.entry(DURABLE).await.unwrap().unwrap();
    leases
        .update(DURABLE, "intruder".into(), e.revision)
        .await
        .unwrap();
    // A standby is doing its job: /ready stays 200, the log names the holder.
    let standby = wait_until(30, || async {
        let log = svc.log_text();
        log.contains("standby: another instance holds this lane")
            && log.contains("intruder")
            && http_get(svc.http_port, "/ready")
                .await
                .is_some_and(|(c, _)| c == 200)
    })
    .await;
    assert!(standby, "no standby; log:\n{}", tail(&svc.log_text()));
    publish_trades(&client, 10_000, 20_000, now).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(trades(&ch).await, 10_000, "a fenced type stores nothing");

    // The other owner goes away: the lease is taken back and the rest stored.
    leases.delete(DURABLE).await.unwrap();
    assert!(wait_until(60, || async { trades(&ch).await == 20_000 }).await);

    // The journal is rewritten behind the writer's back (same content, new revision).
    let kv = js.get_key_value(JOURNAL).await.unwrap();
    let body = kv.get(DURABLE).await.unwrap().unwrap();
    kv.put(DURABLE, body).await.unwrap();
    publish_trades(&client, 20_000, 30_000, now).await;
    assert_exactly_once(&ch, 30_000, &svc).await;
    assert!(
        svc.log_text().contains("journal changed under this writer"),
        "{}",
        tail(&svc.log_text())
    );
    assert_eq!(svc.terminate(), Some(0));
}

/// Shutdown stays bounded with ClickHouse down too (an insert retrying forever is given up at
/// the stop); nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_clickhouse_down_exits_within_the_grace_period() {
    let (_nats, mut ch, mut svc, client) = started_stack("shutdown:\n  grace_period: 5s\n").await;
    let now = chrono::Utc::now().timestamp_millis();
    publish_trades(&client, 0, 5_000, now).await;
    assert!(wait_until(60, || async { trades(&ch).await == 5_000 }).await);
    ch.kill().await;
    publish_trades(&client, 5_000, 20_000, now).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    sigterm_exits_within(&mut svc, GRACE + Duration::from_secs(5), "ClickHouse down").await;
    ch.restart().await;
    svc.start();
    assert_exactly_once(&ch, 20_000, &svc).await;
    assert_eq!(svc.terminate(), Some(0));
}
