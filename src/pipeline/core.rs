//! Core-NATS mode: plain subscriptions, at-most-once, for setups without JetStream.
//!
//! What the Python service did for trades and order books, offered for compatibility: each type gets a
//! core subscription on `<type>.>`; rows are batched and inserted exactly as in JetStream mode,
//! but nothing is persisted before the insert, so messages published while the service is down,
//! or buffered when it crashes, are lost. Batches still carry unique tokens (instance nonce +
//! counter) so an insert retried after a timeout is not doubled.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::ack::AckHandle;
use crate::batch::{Batcher, Limits};
use crate::model::DataType;
use crate::sink::Sink;
use crate::source::{SourceError, api_err};

use super::decoder::{self, RawMsg, StageCmd};
use super::reader::WriterCmd;
use super::stats::{Stats, now_ms};
use super::writer::Writer;

/// Runs one core subscription per type until `stop`.
pub async fn run(
    types: Vec<(DataType, Limits)>,
    client: async_nats::Client,
    sink: Arc<Sink>,
    stats: Arc<Stats>,
    stop: CancellationToken,
) -> Result<(), SourceError> {
    let nonce = format!("{:x}", rand::random::<u64>());
    let mut tasks = Vec::new();
    let dts: Vec<DataType> = types.iter().map(|(t, _)| *t).collect();
    if let Some(h) =
        crate::quality::restore::start(sink.clone(), stats.quality.clone(), &dts, &stop).await
    {
        tasks.push(h);
    }
    for (dt, limits) in types {
        let sub = client
            .subscribe(dt.subject_filter())
            .await
            .map_err(api_err(format!("subscribe {}", dt.subject_filter())))?;
        let (tx, rx) = mpsc::channel(1);
        let (dtx, drx) = mpsc::channel(1);
        // Core mode has no acks, so nothing ever asks for a resync.
        let needs_resync = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = Writer {
            data_type: dt,
            durable: format!("core-{nonce}-{dt}"),
            sink: sink.clone(),
            journal: None,
            stats: stats.clone(),
            stop: stop.clone(),
            stored_through: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            journaled: Vec::new(),
            floor: 0,
            needs_resync: needs_resync.clone(),
            broken: false,
            epoch: 0,
            journal_rev: 0,
            fence: CancellationToken::new(),
        };
        tasks.push(tokio::spawn(writer.run(drx)));
        tasks.push(tokio::spawn(decoder::run(rx, dtx, stats.clone())));
        tasks.push(tokio::spawn(read(
            dt,
            limits,
            sub,
            tx,
            stats.clone(),
            stop.clone(),
        )));
        stats.of(dt).set_bound(true);
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

async fn read(
    dt: DataType,
    limits: Limits,
    mut sub: async_nats::Subscriber,
    tx: mpsc::Sender<WriterCmd>,
    stats: Arc<Stats>,
    stop: CancellationToken,
) {
    let mut batcher: Batcher<RawMsg, AckHandle> = Batcher::new(dt, limits);
    // A local sequence stands in for the stream sequence: it only has to order the batch.
    let mut seq = 0u64;
    loop {
        let deadline = batcher.deadline().map(tokio::time::Instant::from_std);
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                batcher.poll_age(Instant::now());
            }
            m = sub.next() => {
                let Some(m) = m else { break };
                seq += 1;
                let now = now_ms();
                let st = stats.of(dt);
                // Core mode has no byte bound: its queue counts messages only.
                st.record_received(0, now);
                let bytes = m.payload.len();
                let raw = RawMsg { subject: m.subject, stream_seq: seq, published_ms: now, payload: m.payload };
                batcher.push(seq, raw, bytes, now, None, Instant::now());
            }
        }
        while let Some(b) = batcher.pop_closed() {
            if tx.send(StageCmd::Batch(b)).await.is_err() {
                return;
            }
        }
    }
    batcher.close();
    while let Some(b) = batcher.pop_closed() {
        let _ = tx.send(StageCmd::Batch(b)).await;
    }
}
