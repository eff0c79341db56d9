//! One active reader per durable consumer: a lease in a key-value bucket with a short TTL.
//!
//! Exactly-once relies on a single in-order reader per consumer (batch boundaries are cut from
//! one ordered run of messages). A second instance configured for the same types waits as a
//! standby until the holder's lease expires, then takes over from the ack floor. An instance
//! that restarts under the same instance id takes its own lease back at once.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;

use super::{SourceError, api_err};

/// How long a lease lives without a refresh.
pub const LEASE_TTL: Duration = Duration::from_secs(15);

/// How often the holder refreshes it.
pub const LEASE_REFRESH: Duration = Duration::from_secs(4);

/// The lease bucket.
#[derive(Clone)]
pub struct Leases {
    store: kv::Store,
    instance: String,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// A held lease; refresh it every [`LEASE_REFRESH`].
#[derive(Debug)]
pub struct Lease {
    key: String,
    revision: u64,
}

impl Leases {
    /// Opens (or creates) the lease bucket `<bucket>`; `instance` identifies this process
    /// across restarts.
    pub async fn open(
        js: &jetstream::Context,
        bucket: &str,
        instance: &str,
    ) -> Result<Leases, SourceError> {
        let store = match js.get_key_value(bucket).await {
            Ok(s) => s,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: bucket.to_string(),
                    description: "marketprism-storage consumer leases".into(),
                    history: 1,
                    max_age: LEASE_TTL,
                    storage: jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(api_err(format!("create lease bucket {bucket}")))?,
        };
        Ok(Leases {
            store,
            instance: instance.to_string(),
        })
    }

    /// This process's instance id.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Takes the lease on `consumer`, or says who holds it.
    pub async fn acquire(&self, consumer: &str) -> Result<Lease, SourceError> {
        let me = Bytes::from(self.instance.clone());
        match self.store.create(consumer, me.clone()).await {
            Ok(revision) => {
                return Ok(Lease {
                    key: consumer.to_string(),
                    revision,
                });
            }
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(SourceError::Api {
                    what: format!("acquire lease {consumer}"),
                    detail: e.to_string(),
                });
            }
        }
        let entry = self
            .store
            .entry(consumer)
            .await
            .map_err(api_err(format!("read lease {consumer}")))?;
        match entry {
            Some(e) if e.value == me || e.operation != kv::Operation::Put => {
                let revision = self
                    .store
                    .update(consumer, me, e.revision)
                    .await
                    .map_err(api_err(format!("take over lease {consumer}")))?;
                Ok(Lease {
                    key: consumer.to_string(),
                    revision,
                })
            }
            Some(e) => Err(SourceError::Leased {
                consumer: consumer.to_string(),
                holder: String::from_utf8_lossy(&e.value).into_owned(),
            }),
            None => Err(SourceError::Leased {
                consumer: consumer.to_string(),
                holder: "?".into(),
            }),
        }
    }

    /// Extends a held lease. An error means it was lost: stop reading at once.
    pub async fn refresh(&self, lease: &mut Lease) -> Result<(), SourceError> {
        lease.revision = self
            .store
            .update(
                &lease.key,
                Bytes::from(self.instance.clone()),
                lease.revision,
            )
            .await
            .map_err(api_err(format!("refresh lease {}", lease.key)))?;
        Ok(())
    }

    /// Gives the lease up (clean shutdown), so a standby can take over at once.
    pub async fn release(&self, lease: Lease) {
        let _ = self
            .store
            .delete_expect_revision(&lease.key, Some(lease.revision))
            .await;
    }
}
