//! The batch journal: each consumer's in-doubt batch, in a JetStream key-value bucket.
//!
//! Before a batch is inserted, its boundaries (first/last stream sequence, message count) and
//! dedup token are appended to the consumer's entry here and confirmed by the server. The entry
//! lists every batch whose messages are not yet covered by a confirmed ack (normally just the
//! one being written; several after a recovery, whose re-read messages have no ack handle until
//! the durable redelivers them). After a crash at any instant the messages above the ack floor
//! are re-read and cut at the same places, re-sent with the same tokens, and ClickHouse drops
//! whatever it already has.

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

    /// The consumer's journaled batches not yet covered by a confirmed ack, oldest first.
    pub async fn get(&self, consumer: &str) -> Result<Vec<JournalEntry>, SourceError> {
        let raw = self
            .store
            .get(consumer)
            .await
            .map_err(api_err(format!("read journal entry {consumer}")))?;
        match raw {
            None => Ok(Vec::new()),
            Some(b) => serde_json::from_slice(&b).map_err(|e| SourceError::Api {
                what: format!("parse journal entry {consumer}"),
                detail: e.to_string(),
            }),
        }
    }

    /// Records the batches in doubt (the last one is about to be inserted); returns once the
    /// server has stored them.
    pub async fn put(&self, consumer: &str, entries: &[JournalEntry]) -> Result<(), SourceError> {
        let body = serde_json::to_vec(entries).map_err(|e| SourceError::Api {
            what: "encode journal entry".into(),
            detail: e.to_string(),
        })?;
        self.store
            .put(consumer, body.into())
            .await
            .map_err(api_err(format!("write journal entry {consumer}")))?;
        Ok(())
    }
}
