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
//!   messages and is ignored (entries written before epochs existed carry none and are taken as
//!   the current epoch, so an upgrade still replays its in-doubt batches with their tokens);
//! - the entry's revision in the bucket: every write states the revision it replaces, so a
//!   writer that lost its lease (another reader re-read the journal since) cannot overwrite the
//!   journal: its write fails with [`SourceError::Fenced`].

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
    /// before epochs were recorded (taken as the current epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

impl JournalEntry {
    /// Whether the entry describes messages of the stream epoch `epoch`.
    pub fn in_epoch(&self, epoch: u64) -> bool {
        self.epoch.is_none_or(|e| e == epoch)
    }
}

/// The stream's epoch: its creation time in nanoseconds since 1970. A stream deleted and
/// created again gets a new one, while its sequences restart at 1.
pub fn stream_epoch(info: &jetstream::stream::Info) -> u64 {
    u64::try_from(info.created.unix_timestamp_nanos()).unwrap_or(0)
}

/// A consumer's journal as read: its entries and the revision a write must replace.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// The entries, oldest first (every epoch).
    pub entries: Vec<JournalEntry>,
    /// The key's revision in the bucket (0: never written).
    pub revision: u64,
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
    /// an entry must outlive any downtime).
    pub async fn open(js: &jetstream::Context, bucket: &str) -> Result<Journal, SourceError> {
        let store = match js.get_key_value(bucket).await {
            Ok(s) => s,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: bucket.to_string(),
                    description: "marketprism-storage batch journal".into(),
                    history: 1,
                    storage: jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(api_err(format!("create journal bucket {bucket}")))?,
        };
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
            }),
            Some(e) => Ok(Loaded {
                entries: serde_json::from_slice(&e.value).map_err(|err| SourceError::Api {
                    what: format!("parse journal entry {consumer}"),
                    detail: err.to_string(),
                })?,
                revision: e.revision,
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

    #[test]
    fn entries_of_the_previous_release_parse_and_count_as_the_current_epoch() {
        let old = r#"[{"first_seq":1,"last_seq":1000,"count":1000,"token":"mp1:d:1-1000:1000"}]"#;
        let entries: Vec<JournalEntry> = serde_json::from_str(old).unwrap();
        assert_eq!(entries[0].epoch, None);
        assert_eq!(entries[0].token, "mp1:d:1-1000:1000");
        assert!(entries[0].in_epoch(42));
    }

    #[test]
    fn entries_of_another_epoch_are_not_in_this_one_and_round_trip() {
        let e = JournalEntry {
            first_seq: 1,
            last_seq: 5,
            count: 5,
            token: "mp2:d:7:1-5:5".into(),
            epoch: Some(7),
        };
        assert!(e.in_epoch(7));
        assert!(!e.in_epoch(8));
        let text = serde_json::to_string(&e).unwrap();
        assert_eq!(
            text,
            r#"{"first_seq":1,"last_seq":5,"count":5,"token":"mp2:d:7:1-5:5","epoch":7}"#
        );
        assert_eq!(serde_json::from_str::<JournalEntry>(&text).unwrap(), e);
    }
}
