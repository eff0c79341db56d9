//! A batch spans at most 100 partitions whatever the messages say (ARCHITECTURE.md, "Exactly
//! once"): trades over 300 exchange names are journaled and tokened in pieces of at most 100
//! partitions, and SIGKILLs mid-way still store every trade exactly once.

use std::collections::HashSet;
use std::time::Duration;

use rand::Rng;

use crate::harness::Service;
use crate::harness::stack_with_streams;
use crate::ingest::{assert_exactly_once, tail};

/// Trades published.
const N: u64 = 30_000;
/// Distinct exchange names.
const EXCHANGES: u64 = 300;
/// Consecutive trades on one exchange: a 5,000-row batch spans all 300 exchanges.
const RUN: u64 = 10;

/// The exchange of trade `i` (also its stream sequence minus one: the stream is fresh).
fn exchange(i: u64) -> String {
    format!("ex{:03}", (i / RUN) % EXCHANGES)
}

async fn publish(client: &async_nats::Client, now: i64) {
    let msg = |i: u64| {
        let ex = exchange(i);
        let body = format!(
            r#"{{"symbol":"BTC-USDT","price":"60000.{:02}","quantity":"0.5","side":"buy","trade_id":"{i}","exchange":"{ex}","market_type":"spot","data_source":"marketprism","data_type":"trade","ts_ms":{now}}}"#,
            i % 100
        );
        (format!("trade.{ex}.spot.BTC-USDT"), body)
    };
    crate::harness::publish_acked(client, (0..N).map(msg)).await;
}

/// `(first, last)` of every batch the writer stored, from its debug log lines.
fn stored_batches(log: &str) -> Vec<(u64, u64)> {
    let field = |line: &str, key: &str| -> Option<u64> {
        let at = line.find(&format!(" {key}="))? + key.len() + 2;
        line[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    strip_ansi(log)
        .lines()
        .filter(|l| l.contains("batch stored") && l.contains("data_type=trade"))
        .filter_map(|l| Some((field(l, "first")?, field(l, "last")?)))
        .collect()
}

/// The log without its colour codes (`ESC [ … m`).
pub(crate) fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_over_300_exchanges_span_at_most_100_partitions_through_sigkills() {
    let started = std::time::Instant::now();
    let (nats, ch, client) = stack_with_streams().await;
    let now = chrono::Utc::now().timestamp_millis();
    publish(&client, now).await;
    let mut svc = Service::new(&nats, &ch, "");
    // Every stored batch is logged with its boundaries.
    svc.env.push((
        "RUST_LOG".into(),
        "info,marketprism_storage::pipeline::writer=debug".into(),
    ));
    let mut rng = rand::rng();
    for k in 0..3 {
        svc.start();
        let ms = rng.random_range(1_500..3_500);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        svc.kill();
        eprintln!(
            "kill {k} after {ms} ms: {} rows",
            ch.count("marketprism_hot.trades").await
        );
    }
    svc.start();
    assert_exactly_once(&ch, N, &svc).await;
    assert_eq!(svc.terminate(), Some(0));

    let log = svc.log_text();
    let batches = stored_batches(&log);
    assert!(!batches.is_empty(), "no batch logged:\n{}", tail(&log));
    let mut widest = 0;
    for &(first, last) in &batches {
        assert!(first >= 1 && last >= first && last <= N, "{first}..{last}");
        let parts: HashSet<String> = (first..=last).map(|s| exchange(s - 1)).collect();
        widest = widest.max(parts.len());
        assert!(
            parts.len() <= 100,
            "batch {first}..={last} spans {} partitions (one token for all of them)",
            parts.len()
        );
    }
    // Replays re-formed every journaled piece whole (none had to be inserted in parts).
    assert!(!log.contains("cannot be re-formed whole"), "{}", tail(&log));
    let replays = log.matches("re-forming journaled batches").count();
    // Each piece of a batch is cut right before its 101st exchange.
    assert_eq!(widest, 100);
    let parts = ch
        .query("SELECT uniqExact(exchange) FROM marketprism_hot.trades")
        .await;
    assert_eq!(parts, EXCHANGES.to_string());
    eprintln!(
        "{} batches stored (replays included), {replays} replays of journaled pieces, widest {widest} partitions, {:?}",
        batches.len(),
        started.elapsed()
    );
}
