//! The batch journal: each consumer's in-doubt batch, in a JetStream key-value bucket.
//!
//! Before a batch is inserted, its boundaries (first/last stream sequence, message count) and
//! dedup token are appended to the consumer's entry here and confirmed by the server. The entry
//! lists every batch whose messages are not yet covered by a confirmed ack (normally just the
//! one being written; several after a recovery, whose re-read messages have no ack handle until
//! the durable redelivers them). After a crash at any instant the messages above the ack floor
//! are re-read and cut at the same places, re-sent with the same tokens, and ClickHouse drops
//! whatever it already has.
//!
//! Two identities keep an entry from being applied where it does not belong:
//! - the stream's epoch (its creation time in ns, [`stream_epoch`]): a stream deleted and
//!   created again restarts its sequences at 1, so an entry of another epoch describes other
//!   messages and is ignored. Entries written before epochs existed carry none: they are kept
//!   (and bound to the current epoch) only when the journal was last written after the
//!   stream's creation, so an upgrade still replays its in-doubt batches with their tokens,
//!   while those of an older incarnation are ignored; an entry starting beyond the stream's
//!   last sequence is ignored whatever its epoch ([`select`]);
//! - the entry's revision in the bucket: every write states the revision it replaces. Reading
//!   changes nothing, so each resync writes the entries it loaded back (a new revision): a
//!   writer of an earlier owner (its lease lost, or its process paused past the lease) still
//!   holding the old revision then fails its next write with [`SourceError::Fenced`] instead of
//!   overwriting the journal of the new owner.

use async_nats::jetstream::{self, kv};
use serde::{Deserialize, Serialize};

use super::{SourceError, api_err};

/// One consumer's last journaled batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Stream sequence of the batch's first message.
    pub first_seq: u64,
    /// Stream sequence of its last message.
    pub last_seq: u64,
    /// Messages in the batch (rows + dead letters).
    pub count: u64,
    /// The `insert_deduplication_token` its INSERTs carry.
    pub token: String,
    /// The stream's epoch ([`stream_epoch`]) when the batch was cut; absent in entries written
    /// before epochs were recorded (see [`select`] for when they count as the current epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// Pieces of the batch halved because they were too large (`sink::halving_key`), journaled
    /// before their halves were sent: a replay halves them up front, since the same piece may
    /// fit whole on another attempt and would then store the rows of a landed half twice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub halved: Vec<String>,
}

/// What a resync keeps of a loaded journal entry list, and how many entries it ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// The entries that describe messages of the current stream, oldest first; entries
    /// written without an epoch that were kept now carry the current one.
    pub entries: Vec<JournalEntry>,
    /// Entries of another epoch (the stream was deleted and created again).
    pub other_epoch: usize,
    /// Entries without an epoch in a journal last written before the stream was created:
    /// they describe an older incarnation of the stream.
    pub older_stream: usize,
    /// Entries starting beyond the stream's last sequence: not messages of this stream.
    pub beyond_stream: usize,
}

/// Keeps the entries that describe messages of the stream as it is now: epoch `epoch`
/// (0: unknown), last sequence `last_seq`, the journal last written at `written_ns` (ns since
/// 1970; the key-value entry's own time, set by the server).
///
/// An entry without an epoch (written before epochs existed, `mp1` token) can only be told
/// apart by time: a journal last written before the stream was created cannot describe its
/// messages. Whatever the epochs say, an entry starting beyond the stream's last sequence
/// describes no message of it: cutting there would leave a cut point pending for ever (the
/// batch thresholds and back-pressure wait for it) and could give a new batch an old token.
pub fn select(entries: Vec<JournalEntry>, epoch: u64, written_ns: u64, last_seq: u64) -> Selection {
    let mut sel = Selection::default();
    for mut e in entries {
        match e.epoch {
            Some(x) if x != epoch => sel.other_epoch += 1,
            None if epoch != 0 && written_ns < epoch => sel.older_stream += 1,
            _ if e.first_seq > last_seq => sel.beyond_stream += 1,
            _ => {
                if epoch != 0 {
                    e.epoch = Some(epoch);
                }
                sel.entries.push(e);
            }
        }
    }
    sel
}

/// The stream's epoch: its creation time in nanoseconds since 1970. A stream deleted and
/// created again gets a new one, while its sequences restart at 1. 0 (no epoch: `mp1`
/// tokens, epoch protection off) only for a creation time before 1970, which is logged.
pub fn stream_epoch(info: &jetstream::stream::Info) -> u64 {
    match u64::try_from(info.created.unix_timestamp_nanos()) {
        Ok(ns) => ns,
        Err(_) => {
            tracing::warn!(stream = %info.config.name, created = %info.created,
                "stream creation time before 1970: no stream epoch, tokens without epoch (a recreated stream is not told apart)");
            0
        }
    }
}

/// A consumer's journal as read: its entries and the revision a write must replace.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// The entries, oldest first (every epoch).
    pub entries: Vec<JournalEntry>,
    /// The key's revision in the bucket (0: never written).
    pub revision: u64,
    /// When the server stored that revision (ns since 1970; 0: never written).
    pub written_ns: u64,
}

/// Handle on the journal bucket.
#[derive(Clone)]
pub struct Journal {
    store: kv::Store,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").finish_non_exhaustive()
    }
}

impl Journal {
    /// Opens the bucket, creating it when missing (file storage, one value per key, no TTL:
    /// an entry must outlive any downtime; `replicas` copies on a cluster, and an existing
    /// bucket with fewer is raised to them).
    pub async fn open(
        js: &jetstream::Context,
        bucket: &str,
        replicas: usize,
    ) -> Result<Journal, SourceError> {
        let config = kv::Config {
            bucket: bucket.to_string(),
            description: "marketprism-storage batch journal".into(),
            history: 1,
            storage: jetstream::stream::StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        };
        let store = super::bucket::open(js, config, "journal").await?;
        Ok(Journal { store })
    }

    /// The consumer's journaled batches (oldest first) and the entry's revision.
    pub async fn get(&self, consumer: &str) -> Result<Loaded, SourceError> {
        let raw = self
            .store
            .entry(consumer)
            .await
            .map_err(api_err(format!("read journal entry {consumer}")))?;
        match raw {
            None => Ok(Loaded::default()),
            Some(e) if e.operation != kv::Operation::Put => Ok(Loaded {
                entries: Vec::new(),
                revision: e.revision,
                written_ns: u64::try_from(e.created.unix_timestamp_nanos()).unwrap_or(0),
            }),
            Some(e) => Ok(Loaded {
                entries: serde_json::from_slice(&e.value).map_err(|err| SourceError::Api {
                    what: format!("parse journal entry {consumer}"),
                    detail: err.to_string(),
                })?,
                revision: e.revision,
                written_ns: u64::try_from(e.created.unix_timestamp_nanos()).unwrap_or(0),
            }),
        }
    }

    /// Records the batches in doubt (the last one is about to be inserted), replacing revision
    /// `revision` (0: the key was never written); returns the new revision once the server has
    /// stored it. [`SourceError::Fenced`] when the entry changed since: someone else owns it.
    pub async fn put(
        &self,
        consumer: &str,
        entries: &[JournalEntry],
        revision: u64,
    ) -> Result<u64, SourceError> {
        let body = serde_json::to_vec(entries).map_err(|e| SourceError::Api {
            what: "encode journal entry".into(),
            detail: e.to_string(),
        })?;
        let fenced = || SourceError::Fenced {
            what: format!("journal entry {consumer} changed since revision {revision}"),
        };
        if revision == 0 {
            return match self.store.create(consumer, body.into()).await {
                Ok(r) => Ok(r),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Err(fenced()),
                Err(e) => Err(SourceError::Api {
                    what: format!("write journal entry {consumer}"),
                    detail: e.to_string(),
                }),
            };
        }
        match self.store.update(consumer, body.into(), revision).await {
            Ok(r) => Ok(r),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Err(fenced()),
            Err(e) => Err(SourceError::Api {
                what: format!("write journal entry {consumer}"),
                detail: e.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(first: u64, last: u64, epoch: Option<u64>) -> JournalEntry {
        JournalEntry {
            first_seq: first,
            last_seq: last,
            count: last - first + 1,
            token: format!("mp1:d:{first}-{last}:{}", last - first + 1),
            epoch,
            halved: Vec::new(),
        }
    }

    #[test]
    fn entries_of_the_previous_release_parse_and_count_as_the_current_epoch() {
        let old = r#"[{"first_seq":1,"last_seq":1000,"count":1000,"token":"mp1:d:1-1000:1000"}]"#;
        let entries: Vec<JournalEntry> = serde_json::from_str(old).unwrap();
        assert_eq!(entries[0].epoch, None);
        assert_eq!(entries[0].token, "mp1:d:1-1000:1000");
        // Journal written (at 50) after the stream was created (at 42): same stream.
        let sel = select(entries, 42, 50, 5000);
        assert_eq!(sel.entries.len(), 1);
        assert_eq!(sel.entries[0].token, "mp1:d:1-1000:1000");
        assert_eq!(
            sel.entries[0].epoch,
            Some(42),
            "kept, and now bound to the epoch"
        );
    }

    #[test]
    fn epochless_entries_written_before_a_recreated_stream_are_not_cut_points() {
        // The previous release journaled batches up to sequence 9000; the stream was then
        // deleted and created again (epoch 100, after the journal's last write at 60) and
        // holds 1200 messages. Neither the low entries (their tokens would drop new rows of
        // the same boundaries: data loss) nor the high ones (a cut point never reached:
        // thresholds and back-pressure off for ever) may be kept.
        let entries = vec![entry(1, 1000, None), entry(8001, 9000, None)];
        let sel = select(entries, 100, 60, 1200);
        assert!(sel.entries.is_empty(), "{sel:?}");
        assert_eq!(sel.older_stream, 2);
    }

    #[test]
    fn entries_beyond_the_streams_last_sequence_are_dropped_whatever_their_epoch() {
        let entries = vec![
            entry(1, 1000, Some(7)),
            entry(1001, 2000, Some(7)),
            entry(2001, 3000, Some(8)),
        ];
        let sel = select(entries, 7, 60, 1000);
        assert_eq!(sel.entries, vec![entry(1, 1000, Some(7))]);
        assert_eq!((sel.other_epoch, sel.beyond_stream), (1, 1));
    }

    #[test]
    fn entries_of_another_epoch_are_not_in_this_one_and_round_trip() {
        let e = JournalEntry {
            first_seq: 1,
            last_seq: 5,
            count: 5,
            token: "mp2:d:7:1-5:5".into(),
            epoch: Some(7),
            halved: Vec::new(),
        };
        assert_eq!(select(vec![e.clone()], 7, 1, 10).entries, vec![e.clone()]);
        assert_eq!(select(vec![e.clone()], 8, 1, 10).other_epoch, 1);
        let text = serde_json::to_string(&e).unwrap();
        assert_eq!(
            text,
            r#"{"first_seq":1,"last_seq":5,"count":5,"token":"mp2:d:7:1-5:5","epoch":7}"#
        );
        assert_eq!(serde_json::from_str::<JournalEntry>(&text).unwrap(), e);
    }
}
