//! The stream side's IO: one ephemeral, ack-less pull consumer per type over the audited range
//! (plus its edge margins), big pull batches, decode on worker threads.
//!
//! Consumes a JetStream context and a [`Range`]; emits a sealed [`StreamSide`]. It never acks
//! (the consumer has `AckPolicy::None`), never touches the service's durables (it only reads
//! their ack floor) and deletes its consumer when done.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::DeliverPolicy};
use bytes::Bytes;
use futures::StreamExt;

use crate::model::DataType;

use super::compare::{Msg, Refused, StreamSide};
use super::{AuditError, Progress};

/// Messages handed to a decode worker at once.
const CHUNK: usize = 4096;

/// A read with no message for this long (while the server says more are pending) is an error.
const IDLE: Duration = Duration::from_secs(30);

/// Where the audited range starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lower {
    /// The stream's first message.
    Beginning,
    /// The first message at or after this stream sequence.
    Seq(u64),
    /// The first message published at or after this time (UTC ms).
    Time(i64),
}

/// Where the audited range ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upper {
    /// Up to and including this stream sequence.
    Seq(u64),
    /// Messages published before this time (UTC ms).
    Time(i64),
}

/// The resolved range of one type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// Start.
    pub lower: Lower,
    /// End.
    pub upper: Upper,
    /// Messages within this many ms (publish time) outside the range are read as context.
    pub margin_ms: i64,
    /// The stream's last sequence when the audit started: the read never goes past it.
    pub read_until: u64,
}

impl Range {
    fn in_range(&self, seq: u64, published_ms: i64) -> bool {
        let lower = match self.lower {
            Lower::Beginning => true,
            Lower::Seq(s) => seq >= s,
            Lower::Time(t) => published_ms >= t,
        };
        let upper = match self.upper {
            Upper::Seq(s) => seq <= s,
            Upper::Time(t) => published_ms < t,
        };
        lower && upper
    }

    fn past_upper(&self, seq: u64, published_ms: i64) -> bool {
        match self.upper {
            Upper::Seq(s) => seq > s,
            Upper::Time(t) => published_ms >= t,
        }
    }
}

struct Raw {
    seq: u64,
    subject: async_nats::Subject,
    payload: Bytes,
    in_range: bool,
}

/// What one read saw besides the decoded side.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadStats {
    /// First in-range stream sequence (0: none).
    pub first_seq: u64,
    /// Last in-range stream sequence.
    pub last_seq: u64,
    /// Bytes of payload read.
    pub bytes: u64,
    /// Time spent reading and decoding.
    pub elapsed: Duration,
    /// Time the reader waited for a decode worker to take a chunk (decode-bound when large).
    pub send_wait: Duration,
}

/// One type's read: what to read and how to decode it.
#[derive(Clone)]
pub struct ReadJob<'a> {
    /// The stream.
    pub stream: &'a str,
    /// The type (its consumer filters `<type>.>`).
    pub data_type: DataType,
    /// The range and its margins.
    pub range: Range,
    /// Messages per pull request.
    pub fetch_batch: usize,
    /// Decode threads.
    pub workers: usize,
    /// Cell width, ms.
    pub bucket_ms: i64,
    /// Dead letters per stream sequence.
    pub dead: Arc<HashMap<u64, u32>>,
    /// Dead letters of rows ClickHouse refused (`None`: there are none).
    pub refused: Option<Arc<Refused>>,
    /// "Now" for the decoder.
    pub now_ms: i64,
    /// Progress callbacks.
    pub progress: &'a dyn Progress,
}

/// Reads `job.range` of its type from its stream and decodes every message.
pub async fn read_type(
    js: &jetstream::Context,
    job: ReadJob<'_>,
) -> Result<(StreamSide, ReadStats), AuditError> {
    let started = Instant::now();
    let (data_type, range, stream_name) = (job.data_type, job.range, job.stream);
    let api = |what: &str| {
        let what = what.to_string();
        move |e: &dyn std::fmt::Display| AuditError::Stream(format!("{what}: {e}"))
    };
    let stream = js
        .get_stream(stream_name)
        .await
        .map_err(|e| api(&format!("get stream {stream_name}"))(&e))?;
    let deliver_policy = match range.lower {
        Lower::Beginning => DeliverPolicy::All,
        Lower::Time(t) => DeliverPolicy::ByStartTime {
            start_time: to_time(t.saturating_sub(range.margin_ms)),
        },
        Lower::Seq(s) => match stream.get_raw_message(s).await {
            // Start a margin's worth of publish time before the first sequence.
            Ok(m) => DeliverPolicy::ByStartTime {
                start_time: m.time - time::Duration::milliseconds(range.margin_ms),
            },
            Err(_) => DeliverPolicy::ByStartSequence { start_sequence: s },
        },
    };
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            description: Some(format!("marketprism-storage audit of {data_type}")),
            // The type's subjects as published and as a partitioned stream stores them.
            filter_subjects: vec![
                data_type.subject_filter(),
                format!("{}.{data_type}.>", crate::source::partition::PREFIX),
            ],
            deliver_policy,
            ack_policy: jetstream::consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(60),
            memory_storage: true,
            num_replicas: 1,
            ..Default::default()
        })
        .await
        .map_err(|e| api("create audit consumer")(&e))?;
    let name = consumer.cached_info().name.clone();
    let pending = consumer.cached_info().num_pending;
    let result = read_consumer(&consumer, job, pending).await;
    let _ = stream.delete_consumer(&name).await;
    let (side, mut stats) = result?;
    stats.elapsed = started.elapsed();
    tracing::debug!(data_type = %data_type, elapsed = ?stats.elapsed, send_wait = ?stats.send_wait, "audit read");
    Ok((side, stats))
}

fn to_time(ms: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

async fn read_consumer(
    consumer: &jetstream::consumer::PullConsumer,
    job: ReadJob<'_>,
    pending_at_start: u64,
) -> Result<(StreamSide, ReadStats), AuditError> {
    let (data_type, bucket_ms, now_ms) = (job.data_type, job.bucket_ms, job.now_ms);
    let workers = job.workers.max(1);
    let mut txs = Vec::with_capacity(workers);
    let mut handles = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Raw>>(2);
        let dead = job.dead.clone();
        let refused = job.refused.clone();
        txs.push(tx);
        handles.push(tokio::task::spawn_blocking(move || {
            let mut side = StreamSide::new(data_type, bucket_ms);
            while let Some(chunk) = rx.blocking_recv() {
                for r in &chunk {
                    let d = dead.get(&r.seq).copied().unwrap_or(0);
                    side.observe(
                        Msg {
                            seq: r.seq,
                            subject: r.subject.as_str(),
                            payload: &r.payload,
                            in_range: r.in_range,
                        },
                        d,
                        refused.as_deref(),
                        now_ms,
                    );
                }
            }
            side
        }));
    }
    let read = pull(
        consumer,
        job.range,
        job.fetch_batch,
        pending_at_start,
        &txs,
        data_type,
        job.progress,
    )
    .await;
    drop(txs);
    let mut side = StreamSide::new(data_type, bucket_ms);
    for h in handles {
        match h.await {
            Ok(s) => side.merge(s),
            Err(e) => return Err(AuditError::Stream(format!("decode worker failed: {e}"))),
        }
    }
    let stats = read?;
    side.seal();
    Ok((side, stats))
}

async fn pull(
    consumer: &jetstream::consumer::PullConsumer,
    range: Range,
    fetch_batch: usize,
    pending_at_start: u64,
    txs: &[tokio::sync::mpsc::Sender<Vec<Raw>>],
    data_type: DataType,
    progress: &dyn Progress,
) -> Result<ReadStats, AuditError> {
    let mut stats = ReadStats::default();
    if pending_at_start == 0 {
        return Ok(stats);
    }
    let mut msgs = consumer
        .stream()
        .max_messages_per_batch(fetch_batch.max(1))
        .max_bytes_per_batch(64 << 20)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(10))
        .messages()
        .await
        .map_err(|e| AuditError::Stream(format!("read audit consumer: {e}")))?;
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut next_worker = 0usize;
    let mut expected_cseq = 1u64;
    let mut read: u64 = 0;
    // Publish time of the last in-range message: the end margin is counted from it.
    let mut last_in_range_ms: Option<i64> = None;
    let mut last_progress = Instant::now();
    loop {
        let next = match tokio::time::timeout(IDLE, msgs.next()).await {
            Ok(n) => n,
            Err(_) => {
                return Err(AuditError::Stream(format!(
                    "no message for {IDLE:?} after {read} messages of {data_type}"
                )));
            }
        };
        let msg = match next {
            None => break,
            Some(Err(e)) => return Err(AuditError::Stream(format!("read {data_type}: {e}"))),
            Some(Ok(m)) => m,
        };
        let (seq, cseq, published_ms, pending) = {
            let info = msg
                .info()
                .map_err(|e| AuditError::Stream(format!("message info: {e}")))?;
            let p = info.published.unix_timestamp_nanos() / 1_000_000;
            (
                info.stream_sequence,
                info.consumer_sequence,
                i64::try_from(p).unwrap_or(0),
                info.pending,
            )
        };
        if cseq != expected_cseq {
            return Err(AuditError::Stream(format!(
                "lost deliveries while reading {data_type}: consumer sequence {cseq}, expected {expected_cseq}; run the audit again"
            )));
        }
        expected_cseq += 1;
        read += 1;
        let in_range = range.in_range(seq, published_ms);
        let past = range.past_upper(seq, published_ms);
        if past {
            let edge = match range.upper {
                Upper::Time(t) => t,
                Upper::Seq(_) => last_in_range_ms.unwrap_or(published_ms),
            };
            if published_ms >= edge.saturating_add(range.margin_ms) {
                break;
            }
        }
        if in_range {
            if stats.first_seq == 0 {
                stats.first_seq = seq;
            }
            stats.last_seq = seq;
            last_in_range_ms = Some(published_ms);
        }
        let m = msg.message;
        stats.bytes += m.payload.len() as u64;
        let subject = match crate::source::partition::original_subject(m.subject.as_str()) {
            std::borrow::Cow::Borrowed(_) => m.subject,
            std::borrow::Cow::Owned(s) => async_nats::Subject::from(s),
        };
        chunk.push(Raw {
            seq,
            subject,
            payload: m.payload,
            in_range,
        });
        if chunk.len() >= CHUNK {
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
            let w = Instant::now();
            send(txs, &mut next_worker, full).await?;
            stats.send_wait += w.elapsed();
            if last_progress.elapsed() >= Duration::from_millis(250) {
                last_progress = Instant::now();
                progress.read(data_type, read, pending_at_start);
            }
        }
        if pending == 0 || seq >= range.read_until {
            break;
        }
    }
    if !chunk.is_empty() {
        send(txs, &mut next_worker, chunk).await?;
    }
    progress.read(data_type, read, pending_at_start);
    Ok(stats)
}

async fn send(
    txs: &[tokio::sync::mpsc::Sender<Vec<Raw>>],
    next: &mut usize,
    chunk: Vec<Raw>,
) -> Result<(), AuditError> {
    let i = *next % txs.len().max(1);
    *next = next.wrapping_add(1);
    match txs.get(i) {
        Some(tx) => tx
            .send(chunk)
            .await
            .map_err(|_| AuditError::Stream("decode worker stopped".into())),
        None => Err(AuditError::Stream("no decode worker".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_by_sequence_and_by_time() {
        let r = Range {
            lower: Lower::Seq(10),
            upper: Upper::Seq(20),
            margin_ms: 5,
            read_until: u64::MAX,
        };
        assert!(!r.in_range(9, 0) && r.in_range(10, 0) && r.in_range(20, 0));
        assert!(!r.in_range(21, 0) && r.past_upper(21, 0) && !r.past_upper(20, 0));
        let r = Range {
            lower: Lower::Time(1000),
            upper: Upper::Time(2000),
            margin_ms: 5,
            read_until: u64::MAX,
        };
        assert!(!r.in_range(1, 999) && r.in_range(1, 1000) && r.in_range(1, 1999));
        assert!(!r.in_range(1, 2000) && r.past_upper(1, 2000));
        let r = Range {
            lower: Lower::Beginning,
            upper: Upper::Seq(0),
            margin_ms: 0,
            read_until: u64::MAX,
        };
        assert!(!r.in_range(1, 0), "an ack floor of 0 audits nothing");
        assert_eq!(to_time(1500).unix_timestamp_nanos(), 1_500_000_000);
    }
}
