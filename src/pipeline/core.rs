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

use super::decoder::{Decoder, RawMsg, StageCmd};
use super::reader::WriterCmd;
use super::stats::{Stats, now_ms};
use super::writer::Writer;
use super::{StageEnd, sleep_until};

/// Runs one core subscription per type until `stop`; held batches are tried again on
/// `retry` (`retry.*`).
pub async fn run(
    types: Vec<(DataType, Limits)>,
    retry: crate::retry::Policy,
    client: async_nats::Client,
    sink: Arc<Sink>,
    stats: Arc<Stats>,
    stop: CancellationToken,
) -> Result<(), SourceError> {
    let nonce = format!("{:x}", rand::random::<u64>());
    let mut tasks = Vec::new();
    let mut stages = Vec::new();
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
        // Core mode has no journal, no acks and no lease: the writer's progress is never
        // needed and nothing can fence it.
        let lane = stats.lane(&crate::source::partition::LaneId::base(
            dt,
            &format!("core-{dt}"),
        ));
        let (writer, _progress) = Writer::new(
            dt,
            format!("core-{nonce}-{dt}"),
            None,
            sink.clone(),
            (
                stats.clone(),
                lane,
                crate::source::lease::LeaseGuard::unlimited(),
            ),
            stop.clone(),
            retry,
        );
        let (dtx, drx) = mpsc::channel(1);
        let (tx, rx) = mpsc::channel(1);
        stages.push(tokio::spawn(writer.run(drx)));
        stages.push(tokio::spawn(Decoder::new(stats.clone()).run(rx, dtx)));
        stages.push(tokio::spawn(read(
            dt,
            limits,
            sub,
            tx,
            stats.clone(),
            stop.clone(),
        )));
        stats
            .lane(&crate::source::partition::LaneId::base(
                dt,
                &format!("core-{dt}"),
            ))
            .set_bound(true);
    }
    for t in stages {
        let _ = t.await;
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
) -> StageEnd {
    let mut batcher: Batcher<RawMsg, AckHandle> = Batcher::new(dt, limits);
    let lane = stats.lane(&crate::source::partition::LaneId::base(
        dt,
        &format!("core-{dt}"),
    ));
    // A local sequence stands in for the stream sequence: it only has to order the batch.
    let mut seq = 0u64;
    loop {
        let deadline = batcher.deadline().map(tokio::time::Instant::from_std);
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = sleep_until(deadline) => {
                batcher.poll_age(Instant::now());
            }
            m = sub.next() => {
                let Some(m) = m else { break };
                seq += 1;
                let now = now_ms();
                // Core mode has no byte bound: its queue counts messages only.
                lane.record_received(0, now);
                let bytes = m.payload.len();
                let raw = RawMsg { subject: m.subject, stream_seq: seq, published_ms: now, payload: m.payload };
                batcher.push(seq, raw, bytes, now, None, Instant::now());
            }
        }
        while let Some(b) = batcher.pop_closed() {
            if tx.send(StageCmd::Batch(b)).await.is_err() {
                return StageEnd::Disconnected;
            }
        }
    }
    batcher.close();
    while let Some(b) = batcher.pop_closed() {
        if tx.send(StageCmd::Batch(b)).await.is_err() {
            return StageEnd::Disconnected;
        }
    }
    StageEnd::Stopped
}
