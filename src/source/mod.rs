//! The NATS side of ingest: streams, durable pull consumers, the batch journal and leases.
//!
//! Consumes the NATS connection; emits [`Delivery`]s in stream order for one data type. It
//! never writes to ClickHouse and never acks (acks belong to `ack`). Streams and durables are
//! created when missing and never deleted, recreated or narrowed: the Python service's habit of deleting
//! its durable on every start is what lost its backlog.

mod bucket;
pub mod journal;
pub mod lease;
pub mod partition;
pub mod streams;

use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;

use crate::model::DataType;

/// Errors talking to NATS.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// A JetStream API call failed.
    #[error("{what}: {detail}")]
    Api {
        /// What was being done.
        what: String,
        /// The client's error text.
        detail: String,
    },
    /// The state this reader/writer acted on was taken over (journal rewritten by another
    /// owner, lease lost): stop at once; whatever is held is dropped and re-read.
    #[error("fenced: {what}")]
    Fenced {
        /// What changed under us.
        what: String,
    },
    /// The existing durable cannot be used safely as it is; it is never changed by us.
    #[error(
        "durable {durable} on stream {stream} has ack policy {policy}, but exactly-once needs AckPolicy::All; \
         it is left unchanged: delete it (`nats consumer rm {stream} {durable}`; its ack floor is lost, the \
         journal and tokens make the re-read harmless) or set `nats.consumer_prefix` to use another name"
    )]
    DurableUnusable {
        /// The durable's name.
        durable: String,
        /// Its stream.
        stream: String,
        /// Its ack policy as found.
        policy: String,
    },
    /// Another live process uses this instance id: two instances with one id would take over
    /// each other's leases. Refused at start; each instance needs its own `--instance-id`.
    #[error(
        "instance id {instance} is already in use: {detail}; give each instance its own id \
         (`run --instance-id`, default `<hostname>:<http.port>`)"
    )]
    DuplicateInstance {
        /// The id.
        instance: String,
        /// What shows the other process is alive.
        detail: String,
    },
    /// An existing stream's partition layout is not the configured one.
    #[error(
        "stream {stream} is laid out for {found} but {key} is {configured}: change the key, or \
         change the stream with `marketprism-storage streams partition --stream {which} --partitions {configured}` \
         (docs/operations.md, \"Partitions\")"
    )]
    Layout {
        /// The stream.
        stream: String,
        /// Which configured stream (`market_data`, `high_frequency`).
        which: String,
        /// The configuration key.
        key: String,
        /// What the stream's transform says.
        found: String,
        /// The configured partition count.
        configured: u32,
    },
    /// Another instance holds the lease on this consumer.
    #[error("consumer {consumer} is held by instance {holder}")]
    Leased {
        /// Consumer name.
        consumer: String,
        /// The holder's instance id.
        holder: String,
    },
}

pub(crate) fn api_err<E: std::fmt::Display>(
    what: impl Into<String>,
) -> impl FnOnce(E) -> SourceError {
    let what = what.into();
    move |e| SourceError::Api {
        what,
        detail: e.to_string(),
    }
}

/// One message from JetStream (or core NATS), before decoding.
pub struct Delivery {
    /// Subject it was published on (cheap to clone: shared bytes).
    pub subject: async_nats::Subject,
    /// Stream sequence (0 in core mode).
    pub stream_seq: u64,
    /// Consumer (delivery) sequence, to detect lost deliveries (0 in core mode).
    pub consumer_seq: u64,
    /// Server receive time in UTC ms (the service's clock in core mode).
    pub published_ms: i64,
    /// Messages still pending for the consumer after this one (server's count; 0 in core mode).
    pub pending: u64,
    /// Body.
    pub payload: Bytes,
    /// Ack handle (None in core mode and for recovery reads).
    pub acker: Option<jetstream::message::Acker>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("subject", &self.subject)
            .field("stream_seq", &self.stream_seq)
            .field("consumer_seq", &self.consumer_seq)
            .field("payload_len", &self.payload.len())
            .finish_non_exhaustive()
    }
}

impl Delivery {
    /// Builds a delivery from a JetStream message, splitting off its ack handle.
    pub fn from_jetstream(msg: jetstream::Message) -> Result<Delivery, SourceError> {
        let (stream_seq, consumer_seq, published_ms, pending) = {
            let info = msg.info().map_err(api_err("read message info"))?;
            let published = info.published.unix_timestamp_nanos() / 1_000_000;
            (
                info.stream_sequence,
                info.consumer_sequence,
                i64::try_from(published).unwrap_or(0),
                info.pending,
            )
        };
        let (m, acker) = msg.split();
        // A partitioned stream stores `_mp.<type>.<n>.<k>.<rest>`: the message's subject is
        // the one it was published on (dead letters, audit, quality keep that one).
        let subject = match partition::original_subject(m.subject.as_str()) {
            std::borrow::Cow::Borrowed(_) => m.subject,
            std::borrow::Cow::Owned(s) => async_nats::Subject::from(s),
        };
        Ok(Delivery {
            subject,
            stream_seq,
            consumer_seq,
            published_ms,
            pending,
            payload: m.payload,
            acker: Some(acker),
        })
    }
}

/// Settings of one lane's durable consumer.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    /// Data type (its filter is `<type>.>`).
    pub data_type: DataType,
    /// Stream holding the type's subjects.
    pub stream: String,
    /// Durable name.
    pub durable: String,
    /// The subjects it reads (`<type>.>` for a type's base lane, a partition's subjects for a
    /// partition lane: [`partition::LaneId::filter`]).
    pub filter_subject: String,
    /// Redelivery timeout for unacked messages.
    pub ack_wait: Duration,
    /// Most unacked messages outstanding.
    pub max_ack_pending: i64,
}

/// Binds the durable pull consumer, creating it when missing (never recreated or changed).
///
/// An existing durable whose ack policy is not `AckPolicy::All` is refused with
/// [`SourceError::DurableUnusable`] (naming it, its policy and the fix).
///
/// A new durable uses `AckPolicy::All` (one confirmed ack per batch, safe with one in-order
/// reader), unlimited deliveries (a message is never abandoned), the configured
/// `max_ack_pending`, and `DeliverPolicy::All` (a new durable sees the whole retained stream) —
/// unless `journal` holds entries for it in the stream's current epoch: then the durable
/// existed and was deleted (by an operator, a tool), its ack floor is lost, and a durable read
/// from the start would store everything it had stored again under new tokens. It is created
/// from the oldest journaled batch instead (the journal keeps the in-doubt batches and 64
/// acked ones): those are re-cut at their boundaries with their tokens and deduplicated, and
/// everything older was acked long before.
pub async fn bind_consumer(
    js: &jetstream::Context,
    spec: &ConsumerSpec,
    journal: Option<&journal::Journal>,
) -> Result<jetstream::consumer::PullConsumer, SourceError> {
    use jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
    let stream = js
        .get_stream(&spec.stream)
        .await
        .map_err(api_err(format!("get stream {}", spec.stream)))?;
    match stream.get_consumer::<pull::Config>(&spec.durable).await {
        Ok(c) => {
            // An existing durable is never changed; one whose acks do not mean "everything up
            // to here" (another tool's explicit-ack durable) is refused rather than misused.
            let policy = c.cached_info().config.ack_policy;
            if policy != AckPolicy::All {
                return Err(SourceError::DurableUnusable {
                    durable: spec.durable.clone(),
                    stream: spec.stream.clone(),
                    policy: format!("{policy:?}"),
                });
            }
            Ok(c)
        }
        Err(e) if e.to_string().contains("not found") => {
            let deliver_policy = match journal {
                Some(j) => match resume_point(j, &stream, &spec.durable).await? {
                    Some(start_sequence) => {
                        tracing::warn!(durable = %spec.durable, stream = %spec.stream, start_sequence,
                            "durable missing but its journal has batches of this stream: created from the oldest journaled batch, not from the start (its journaled batches are re-cut with their tokens)");
                        DeliverPolicy::ByStartSequence { start_sequence }
                    }
                    None => DeliverPolicy::All,
                },
                None => DeliverPolicy::All,
            };
            let cfg = pull::Config {
                durable_name: Some(spec.durable.clone()),
                description: Some(format!(
                    "marketprism-storage: {} rows for ClickHouse",
                    spec.data_type
                )),
                filter_subject: spec.filter_subject.clone(),
                ack_policy: AckPolicy::All,
                deliver_policy,
                ack_wait: spec.ack_wait,
                max_deliver: -1,
                max_ack_pending: spec.max_ack_pending,
                ..Default::default()
            };
            stream
                .create_consumer(cfg)
                .await
                .map_err(api_err(format!("create consumer {}", spec.durable)))
        }
        Err(e) => Err(SourceError::Api {
            what: format!("get consumer {}", spec.durable),
            detail: e.to_string(),
        }),
    }
}

/// Where a durable that existed (its journal has entries of the stream's current epoch) must
/// start when it is created again: the first sequence of its oldest journaled batch; `None`
/// when the journal knows nothing of it in this incarnation of the stream.
async fn resume_point(
    journal: &journal::Journal,
    stream: &jetstream::stream::Stream,
    durable: &str,
) -> Result<Option<u64>, SourceError> {
    let loaded = journal.get(durable).await?;
    if loaded.entries.is_empty() {
        return Ok(None);
    }
    let mut stream = stream.clone();
    let info = stream
        .info()
        .await
        .map_err(api_err(format!("stream {} info", durable)))?;
    let epoch = journal::stream_epoch(info);
    let kept = journal::select(
        loaded.entries,
        epoch,
        loaded.written_ns,
        info.state.last_sequence,
    );
    Ok(kept.entries.iter().map(|e| e.first_seq).min())
}
