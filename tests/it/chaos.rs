//! The randomized soak: a seeded mix of every fault the harness can inject (service SIGKILL and
//! SIGTERM, nats-server and ClickHouse SIGKILL with outages up to 30 s, and through the proxy:
//! lost responses after commit, unknown 500s, refused connections, slow answers), over a backlog
//! of a million messages plus live publishing, bounded in time; then every message is counted.
//!
//! `make chaos` runs it (release build). `CHAOS_SEED` replays a run, `CHAOS_MESSAGES` sets the
//! backlog (default 1,000,000), `CHAOS_SECONDS` the fault phase (default 300).

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::harness::stack_with_streams;
use crate::harness::{Service, wait_until};
use crate::ingest::{publish_trades, tail};
use crate::proxy::{Fault as Wire, Proxy};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The faults the soak draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    /// The service is SIGKILLed and restarted after a pause.
    ServiceKill,
    /// The service is stopped with SIGTERM (drain) and restarted.
    ServiceTerm,
    /// nats-server is SIGKILLed and restarted after a pause (up to 30 s: longer than the lease).
    NatsKill,
    /// The embedded ClickHouse is SIGKILLed and restarted after a pause.
    ClickHouseKill,
    /// For a while, the proxy drops half the answers after ClickHouse committed the INSERT.
    LostResponses,
    /// For a while, the proxy answers 500 with an error code the service has never seen.
    ServerErrors,
    /// For a while, the proxy refuses connections (ClickHouse unreachable).
    Unreachable,
    /// For a while, every ClickHouse answer is delayed.
    Slow,
}

const FAULTS: [Fault; 8] = [
    Fault::ServiceKill,
    Fault::ServiceTerm,
    Fault::NatsKill,
    Fault::ClickHouseKill,
    Fault::LostResponses,
    Fault::ServerErrors,
    Fault::Unreachable,
    Fault::Slow,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the soak takes minutes: run it with `make chaos`"]
async fn chaos_soak_loses_and_duplicates_nothing() {
    let seed = env_u64("CHAOS_SEED", rand::rng().random());
    let backlog = env_u64("CHAOS_MESSAGES", 1_000_000);
    let live = backlog / 10;
    let seconds = env_u64("CHAOS_SECONDS", 300);
    println!(
        "chaos: seed {seed} (CHAOS_SEED={seed} replays the fault schedule), {backlog} backlog + {live} live messages, {seconds} s of faults"
    );
    let mut rng = StdRng::seed_from_u64(seed);

    let (mut nats, mut ch, client) = stack_with_streams().await;
    let now = chrono::Utc::now().timestamp_millis();
    let t0 = Instant::now();
    publish_trades(&client, 0, backlog, now).await;
    println!("chaos: backlog published in {:?}", t0.elapsed());
    // What a SIGKILLed nats-server had not written yet is its own loss: let it write the backlog.
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(client);

    // The service reaches ClickHouse through the fault-injecting proxy.
    let proxy = Proxy::start(ch.port).await;
    let mut svc = Service::new(&nats, &ch, "");
    for (k, v) in &mut svc.env {
        if k == "CLICKHOUSE_HTTP_PORT" {
            *v = proxy.port.to_string();
        }
    }
    svc.start();
    let mut injected: std::collections::BTreeMap<Fault, u32> = Default::default();
    let mut published_live = 0u64;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..4_000))).await;
        let fault = FAULTS[rng.random_range(0..FAULTS.len())];
        *injected.entry(fault).or_default() += 1;
        let rows = ch.count("marketprism_hot.trades").await;
        match fault {
            Fault::ServiceKill => {
                svc.kill();
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..2_000))).await;
                svc.start();
            }
            Fault::ServiceTerm => {
                let code = svc.terminate();
                assert_eq!(
                    code,
                    Some(0),
                    "SIGTERM exit; log:\n{}",
                    tail(&svc.log_text())
                );
                svc.start();
            }
            Fault::NatsKill => {
                nats.kill().await;
                let pause = rng.random_range(200..30_000);
                tokio::time::sleep(Duration::from_millis(pause)).await;
                nats.restart().await;
            }
            Fault::ClickHouseKill => {
                ch.kill().await;
                tokio::time::sleep(Duration::from_millis(rng.random_range(200..15_000))).await;
                ch.restart().await;
            }
            Fault::LostResponses | Fault::ServerErrors | Fault::Unreachable | Fault::Slow => {
                proxy.set(match fault {
                    Fault::LostResponses => Wire::DropResponseRandomly(0.5),
                    Fault::ServerErrors => Wire::Status(
                        500,
                        "Code: 999. DB::Exception: a code the service has never seen. (CHAOS)"
                            .into(),
                    ),
                    Fault::Unreachable => Wire::Refuse,
                    _ => Wire::Delay(Duration::from_millis(rng.random_range(100..2_000))),
                });
                tokio::time::sleep(Duration::from_millis(rng.random_range(1_000..20_000))).await;
                proxy.set(Wire::Pass);
            }
        }
        println!(
            "chaos: t={:>4}s {fault:?} at {rows} rows",
            start.elapsed().as_secs()
        );
        // Live traffic between faults, while NATS is up.
        if published_live < live {
            let n = (live / 20).max(1).min(live - published_live);
            let client = nats.client().await;
            publish_trades(
                &client,
                backlog + published_live,
                backlog + published_live + n,
                now,
            )
            .await;
            published_live += n;
        }
    }
    if published_live < live {
        let client = nats.client().await;
        publish_trades(&client, backlog + published_live, backlog + live, now).await;
    }
    proxy.set(Wire::Pass);
    let n = backlog + live;
    let drained = wait_until(900, || async {
        ch.count("marketprism_hot.trades").await >= n
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = ch
        .query("SELECT count(), uniqExact(trade_id), min(toUInt64(trade_id)), max(toUInt64(trade_id)) FROM marketprism_hot.trades")
        .await;
    let mut it = got
        .split_whitespace()
        .map(|v| v.parse::<u64>().unwrap_or(0));
    let (rows, distinct) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    let dead = ch.count("marketprism_hot.dead_letters").await;
    let lost = n.saturating_sub(distinct);
    let duplicated = rows.saturating_sub(distinct);
    println!("chaos: seed {seed}");
    println!(
        "chaos: faults injected {injected:?} ({} in all)",
        injected.values().sum::<u32>()
    );
    println!(
        "chaos: messages {n}, rows {rows}, distinct ids {distinct}, dead letters {dead}, lost {lost}, duplicated {duplicated}, total {:?}",
        t0.elapsed()
    );
    assert!(
        drained,
        "not drained: {got}; log:\n{}",
        tail(&svc.log_text())
    );
    assert_eq!(
        got,
        format!("{n}\t{n}\t0\t{}", n - 1),
        "count, distinct ids, min, max (seed {seed})"
    );
    assert_eq!(dead, 0);
    // The user's proof, as `marketprism-storage audit` gives it: stream vs table per market.
    let report = crate::oracle::assert_audit_clean(
        &nats,
        &ch,
        &[marketprism_storage::model::DataType::Trade],
    )
    .await;
    println!(
        "chaos: audit: {} messages, {} rows matched, missing {}, duplicated {}, unexplained {} ({:.0} msgs/s)",
        report.totals.messages,
        report.totals.rows_matched,
        report.totals.missing,
        report.totals.duplicated,
        report.totals.unexplained,
        report.messages_per_s
    );
    assert_eq!(report.totals.messages, n);
    assert_eq!(svc.terminate(), Some(0));
}
