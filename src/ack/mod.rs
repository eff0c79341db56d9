//! The only caller of JetStream ack APIs: confirmed acks after a successful insert.
//!
//! Consumes the ack handles a `Batch` carries; emits nothing but the server's confirmation.
//! An ack is sent only once the INSERT holding its message returned 200, and it is sent with a
//! reply (`double_ack`) so the caller knows the ack floor moved before it journals the next
//! batch. Under `AckPolicy::All` one ack covers every earlier message of the consumer.

use async_nats::jetstream::message::Acker;

/// A message's ack handle, to be consumed after its insert succeeded.
#[must_use = "an unacked message is redelivered: ack it after the insert, or let recovery handle it"]
pub struct AckHandle {
    acker: Acker,
    /// The message's stream sequence.
    pub stream_seq: u64,
}

impl std::fmt::Debug for AckHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckHandle")
            .field("stream_seq", &self.stream_seq)
            .finish_non_exhaustive()
    }
}

impl AckHandle {
    /// Wraps a JetStream ack handle.
    pub fn new(acker: Acker, stream_seq: u64) -> Self {
        AckHandle { acker, stream_seq }
    }
}

/// Error of a confirmed ack.
#[derive(Debug, thiserror::Error)]
#[error("ack of stream sequence {seq} not confirmed: {detail}")]
pub struct AckError {
    /// Stream sequence that was being acked.
    pub seq: u64,
    /// Client error text.
    pub detail: String,
}

/// Acks and waits for the server's confirmation (bounded by the client's request timeout).
pub async fn ack_confirmed(handle: &AckHandle) -> Result<(), AckError> {
    handle.acker.double_ack().await.map_err(|e| AckError {
        seq: handle.stream_seq,
        detail: e.to_string(),
    })
}

/// How many times an ack is tried before the caller gives up and resynchronises.
///
/// An ack that cannot be confirmed (NATS down for long, or a restarted server whose consumer
/// state no longer knows the delivery) is never worth waiting on forever: the journal makes an
/// unconfirmed ack harmless — the messages are re-read from the ack floor, re-cut at the same
/// boundaries and deduplicated — and a later ack covers them.
pub const ACK_ATTEMPTS: u32 = 6;

/// Acks, retrying on `policy` until confirmed, until [`ACK_ATTEMPTS`] attempts of this call
/// failed, or until `stop`. `on_retry` sees every failed attempt.
pub async fn ack_until_confirmed(
    handle: &AckHandle,
    stop: &tokio_util::sync::CancellationToken,
    policy: &crate::retry::Policy,
    mut on_retry: impl FnMut(&AckError),
) -> Result<(), AckError> {
    use crate::retry::{Failure, Verdict};
    // A walk of its own: the attempt limit counts this ack's failures only.
    crate::retry::retry_until(
        stop,
        &mut policy.backoff(),
        || ack_confirmed(handle),
        |e, attempt, _| {
            on_retry(e);
            if attempt >= ACK_ATTEMPTS {
                Verdict::GiveUp
            } else {
                Verdict::Retry
            }
        },
    )
    .await
    .map_err(|f| match f {
        Failure::GaveUp(e) | Failure::Stopped { last: e, .. } => e,
    })
}

/// Acks without waiting for a confirmation (explicit-ack consumers, all but the last handle).
pub async fn ack_no_wait(handle: &AckHandle) -> Result<(), AckError> {
    handle.acker.ack().await.map_err(|e| AckError {
        seq: handle.stream_seq,
        detail: e.to_string(),
    })
}
