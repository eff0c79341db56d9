//! One active reader per lane (durable consumer): a lease in a key-value bucket with a short
//! TTL, and the members (the instances serving the streams) in the same bucket.
//!
//! Exactly-once relies on a single in-order reader per durable (batch boundaries are cut from
//! one ordered run of messages). An instance reads a lane only while it holds the lane's lease
//! — its key in the bucket, written compare-and-set on its revision and refreshed every
//! [`LEASE_REFRESH`]; the bucket's `max_age` ([`LEASE_TTL`]) removes the key of a holder that
//! stopped refreshing, and another instance may then create it.
//!
//! **Fencing.** A holder counts its lease as valid only until [`LEASE_TTL`] minus
//! [`LEASE_MARGIN`] after it *sent* its last confirmed refresh ([`LeaseGuard`]): the key cannot
//! expire on the server before that, so no other instance can hold the lane while the guard
//! says valid (the margin absorbs clock-rate differences and the expiry sweep). The writer
//! checks the guard before every journal write, insert and ack, so an instance whose lease ran
//! out — a refresh failed, NATS unreachable, the process paused — stops before its next insert,
//! even if its supervisor has not noticed yet. The journal's compare-and-set (the new holder
//! rewrites the entry before reading) is the second line: a stale writer's next journal write
//! fails.
//!
//! **Instance ids.** Each process registers `member.<id>` ([`Membership`]) with a random
//! nonce. A restart under the same id finds its previous incarnation's key still alive for up
//! to [`LEASE_TTL`]; it watches the key for [`DUPLICATE_PROBE`]: if the key is refreshed
//! meanwhile, another live process uses the id and the start is refused
//! ([`SourceError::DuplicateInstance`]); if not, the previous incarnation is dead and its key
//! and leases are taken over at once. A lease whose value names our id with another nonce is
//! thus always a dead incarnation's (a live one would have refused us or been refused).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{SourceError, api_err};
use crate::model::DataType;

/// How long a lease (or a member key) lives without a refresh.
pub const LEASE_TTL: Duration = Duration::from_secs(15);

/// How often the holder refreshes it.
pub const LEASE_REFRESH: Duration = Duration::from_secs(4);

/// How much earlier than the server's expiry a holder stops counting on its lease.
pub const LEASE_MARGIN: Duration = Duration::from_secs(3);

/// How long a start watches a live member key of its own id before taking it over.
pub const DUPLICATE_PROBE: Duration = Duration::from_secs(6);

/// The prefix of member keys in the lease bucket.
const MEMBER_PREFIX: &str = "member.";

/// What a lease or member key holds: who, and which process of that id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Holder {
    instance: String,
    nonce: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    types: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    started_ms: Option<i64>,
}

impl Holder {
    /// A value as stored: ours is JSON; the previous release stored the bare instance id.
    fn parse(value: &[u8]) -> Holder {
        serde_json::from_slice(value).unwrap_or_else(|_| Holder {
            instance: String::from_utf8_lossy(value).into_owned(),
            nonce: String::new(),
            types: Vec::new(),
            started_ms: None,
        })
    }

    fn bytes(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// A holder's own view of how long its lease is good for: until [`LEASE_TTL`] −
/// [`LEASE_MARGIN`] after the last confirmed refresh was sent. Clones share it.
#[derive(Debug, Clone)]
pub struct LeaseGuard {
    base: Instant,
    /// Milliseconds after `base` until which the lease is valid (0: never or revoked).
    until_ms: Arc<AtomicU64>,
}

impl LeaseGuard {
    fn new(sent: Instant) -> LeaseGuard {
        let g = LeaseGuard {
            base: sent,
            until_ms: Arc::new(AtomicU64::new(0)),
        };
        g.extend(sent);
        g
    }

    /// A guard that is always valid (core mode, tests: no lease to lose).
    pub fn unlimited() -> LeaseGuard {
        LeaseGuard {
            base: Instant::now(),
            until_ms: Arc::new(AtomicU64::new(u64::MAX)),
        }
    }

    /// A refresh sent at `sent` was confirmed.
    fn extend(&self, sent: Instant) {
        let at = sent.saturating_duration_since(self.base) + LEASE_TTL - LEASE_MARGIN;
        let ms = u64::try_from(at.as_millis()).unwrap_or(u64::MAX);
        self.until_ms.fetch_max(ms, Relaxed);
    }

    /// The lease is gone (lost, released): nothing may be written under it any more.
    pub fn revoke(&self) {
        self.until_ms.store(0, Relaxed);
    }

    /// Whether the lease still holds by this instance's own clock.
    pub fn valid(&self) -> bool {
        let now = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        now < self.until_ms.load(Relaxed)
    }
}

/// The lease bucket, as one process (instance id + nonce) uses it.
#[derive(Clone)]
pub struct Leases {
    store: kv::Store,
    me: Holder,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases")
            .field("instance", &self.me.instance)
            .finish_non_exhaustive()
    }
}

/// A held lease; refresh it every [`LEASE_REFRESH`].
#[derive(Debug)]
pub struct Lease {
    key: String,
    revision: u64,
    guard: LeaseGuard,
}

impl Lease {
    /// The guard the writer checks before it writes anything under this lease.
    pub fn guard(&self) -> LeaseGuard {
        self.guard.clone()
    }
}

/// Who holds a lane's lease, from the bucket's listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldBy {
    /// The lease key (the lane's durable).
    pub key: String,
    /// The holder's instance id.
    pub instance: String,
}

/// An instance serving the streams, from its member key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// Its instance id.
    pub instance: String,
    /// The types it serves.
    pub types: Vec<DataType>,
}

/// This process's registration as a member; refresh it every [`LEASE_REFRESH`].
#[derive(Debug)]
pub struct Membership {
    key: String,
    revision: u64,
}

/// A key-value key for an instance id (ids may hold characters keys may not: `host:8081`).
fn member_key(instance: &str) -> String {
    let mut k = String::from(MEMBER_PREFIX);
    for b in instance.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            k.push(char::from(b));
        } else {
            k.push_str(&format!("_{b:02x}"));
        }
    }
    k
}

impl Leases {
    /// Opens (or creates) the lease bucket `<bucket>` with `replicas` copies (an existing
    /// bucket with fewer is raised to them) for instance `instance` (stable across restarts
    /// of the same instance) serving `types`; each process gets a fresh nonce.
    pub async fn open(
        js: &jetstream::Context,
        bucket: &str,
        instance: &str,
        types: &[DataType],
        replicas: usize,
    ) -> Result<Leases, SourceError> {
        let config = kv::Config {
            bucket: bucket.to_string(),
            description: "marketprism-storage consumer leases and members".into(),
            history: 1,
            max_age: LEASE_TTL,
            storage: jetstream::stream::StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        };
        let store = super::bucket::open(js, config, "lease").await?;
        let nonce = format!("{:016x}", rand::random::<u64>());
        Ok(Leases {
            store,
            me: Holder {
                instance: instance.to_string(),
                nonce,
                types: types.iter().map(|t| t.to_string()).collect(),
                started_ms: Some(chrono::Utc::now().timestamp_millis()),
            },
        })
    }

    /// This process's instance id.
    pub fn instance(&self) -> &str {
        &self.me.instance
    }

    fn lease_value(&self) -> Bytes {
        Holder {
            types: Vec::new(),
            started_ms: None,
            ..self.me.clone()
        }
        .bytes()
    }

    /// Registers this process as a member, refusing an id another live process uses (see
    /// the module's docs); waits up to [`DUPLICATE_PROBE`] when a key of its id is alive.
    pub async fn register(&self) -> Result<Membership, SourceError> {
        let key = member_key(&self.me.instance);
        let value = self.me.bytes();
        loop {
            match self.store.create(&key, value.clone()).await {
                Ok(revision) => return Ok(Membership { key, revision }),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(SourceError::Api {
                        what: format!("register member {key}"),
                        detail: e.to_string(),
                    });
                }
            }
            let read = |k: String| async move {
                self.store
                    .entry(k)
                    .await
                    .map_err(api_err(format!("read member {}", self.me.instance)))
            };
            let Some(seen) = read(key.clone()).await? else {
                continue;
            };
            if seen.operation == kv::Operation::Put {
                let other = Holder::parse(&seen.value);
                tracing::info!(instance = %self.me.instance, probe = ?DUPLICATE_PROBE,
                    "a member key of this instance id is alive: checking whether another process refreshes it");
                tokio::time::sleep(DUPLICATE_PROBE).await;
                if let Some(now) = read(key.clone()).await?
                    && now.operation == kv::Operation::Put
                    && now.revision != seen.revision
                {
                    let other_now = Holder::parse(&now.value);
                    return Err(SourceError::DuplicateInstance {
                        instance: self.me.instance.clone(),
                        detail: format!(
                            "another live process (started at {} ms, nonce {}) refreshes it",
                            other_now.started_ms.or(other.started_ms).unwrap_or(0),
                            other_now.nonce
                        ),
                    });
                }
            }
            match self.store.update(&key, value.clone(), seen.revision).await {
                Ok(revision) => {
                    tracing::info!(instance = %self.me.instance, "took over the member key of a previous incarnation");
                    return Ok(Membership { key, revision });
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => {
                    return Err(SourceError::Api {
                        what: format!("register member {key}"),
                        detail: e.to_string(),
                    });
                }
            }
        }
    }

    /// Refreshes the member key. [`SourceError::DuplicateInstance`] when another process wrote
    /// it since (it took the id over while we were paused or cut off past the TTL).
    pub async fn refresh_member(&self, m: &mut Membership) -> Result<(), SourceError> {
        match self.store.update(&m.key, self.me.bytes(), m.revision).await {
            Ok(r) => {
                m.revision = r;
                Ok(())
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                // Expired meanwhile (we were cut off past the TTL) and nobody took it: register
                // again; a live other process under our id refuses us.
                match self.store.entry(&m.key).await {
                    // Our own write, whose answer was lost (a timeout, a reconnect): the key
                    // is ours at that revision.
                    Ok(Some(en))
                        if en.operation == kv::Operation::Put
                            && Holder::parse(&en.value).nonce == self.me.nonce =>
                    {
                        m.revision = en.revision;
                        Ok(())
                    }
                    Ok(Some(en)) if en.operation == kv::Operation::Put => {
                        Err(SourceError::DuplicateInstance {
                            instance: self.me.instance.clone(),
                            detail: format!(
                                "its member key was taken over by another process (nonce {})",
                                Holder::parse(&en.value).nonce
                            ),
                        })
                    }
                    _ => {
                        *m = self.register().await?;
                        Ok(())
                    }
                }
            }
            Err(e) => Err(SourceError::Api {
                what: format!("refresh member {}", m.key),
                detail: e.to_string(),
            }),
        }
    }

    /// Removes the member key (clean shutdown), so the others re-balance at once.
    pub async fn leave(&self, m: Membership) {
        let _ = self
            .store
            .delete_expect_revision(&m.key, Some(m.revision))
            .await;
    }

    /// The live members and the held leases, from one listing of the bucket.
    pub async fn survey(&self) -> Result<(Vec<MemberInfo>, Vec<HeldBy>), SourceError> {
        use futures::TryStreamExt;
        let keys: Vec<String> = self
            .store
            .keys()
            .await
            .map_err(api_err("list lease bucket"))?
            .try_collect()
            .await
            .map_err(api_err("list lease bucket"))?;
        let mut members = Vec::new();
        let mut held = Vec::new();
        for key in keys {
            let Some(e) = self
                .store
                .entry(&key)
                .await
                .map_err(api_err(format!("read {key}")))?
            else {
                continue;
            };
            if e.operation != kv::Operation::Put {
                continue;
            }
            let h = Holder::parse(&e.value);
            if key.starts_with(MEMBER_PREFIX) {
                members.push(MemberInfo {
                    instance: h.instance,
                    types: h.types.iter().filter_map(|t| DataType::parse(t)).collect(),
                });
            } else {
                held.push(HeldBy {
                    key,
                    instance: h.instance,
                });
            }
        }
        Ok((members, held))
    }

    /// Takes the lease on `consumer`, or says who holds it.
    pub async fn acquire(&self, consumer: &str) -> Result<Lease, SourceError> {
        let sent = Instant::now();
        let me = self.lease_value();
        match self.store.create(consumer, me.clone()).await {
            Ok(revision) => {
                return Ok(Lease {
                    key: consumer.to_string(),
                    revision,
                    guard: LeaseGuard::new(sent),
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
            // Our id: this process (a re-acquire after fencing) or a dead incarnation of it
            // (registration refused any live one); a deleted key: released.
            Some(e)
                if e.operation != kv::Operation::Put
                    || Holder::parse(&e.value).instance == self.me.instance =>
            {
                let sent = Instant::now();
                let revision = match self.store.update(consumer, me, e.revision).await {
                    Ok(r) => r,
                    // Another instance took it between our read and our write.
                    Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                        return Err(SourceError::Leased {
                            consumer: consumer.to_string(),
                            holder: "another instance".into(),
                        });
                    }
                    Err(err) => {
                        return Err(SourceError::Api {
                            what: format!("take over lease {consumer}"),
                            detail: err.to_string(),
                        });
                    }
                };
                Ok(Lease {
                    key: consumer.to_string(),
                    revision,
                    guard: LeaseGuard::new(sent),
                })
            }
            Some(e) => Err(SourceError::Leased {
                consumer: consumer.to_string(),
                holder: Holder::parse(&e.value).instance,
            }),
            None => Err(SourceError::Leased {
                consumer: consumer.to_string(),
                holder: "?".into(),
            }),
        }
    }

    /// Extends a held lease. [`SourceError::Fenced`] when it is gone (another instance wrote
    /// it, or it expired): stop at once. Any other error (NATS unreachable, a leader election,
    /// a lost answer) leaves the lease as it was: it may still be ours, and the guard keeps
    /// saying so until its deadline; the caller tries again while the guard is valid.
    pub async fn refresh(&self, lease: &mut Lease) -> Result<(), SourceError> {
        let sent = Instant::now();
        match self
            .store
            .update(&lease.key, self.lease_value(), lease.revision)
            .await
        {
            Ok(r) => {
                lease.revision = r;
                lease.guard.extend(sent);
                Ok(())
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                // Our own earlier write whose answer was lost has the same value: adopt it.
                if let Ok(Some(en)) = self.store.entry(&lease.key).await
                    && en.operation == kv::Operation::Put
                    && Holder::parse(&en.value).nonce == self.me.nonce
                {
                    lease.revision = en.revision;
                    return Ok(());
                }
                lease.guard.revoke();
                Err(SourceError::Fenced {
                    what: format!("lease {} taken by another instance or expired", lease.key),
                })
            }
            Err(e) => Err(SourceError::Api {
                what: format!("refresh lease {}", lease.key),
                detail: e.to_string(),
            }),
        }
    }

    /// Gives the lease up (clean shutdown, hand-over), so its next owner takes over at once.
    pub async fn release(&self, lease: Lease) {
        lease.guard.revoke();
        let _ = self
            .store
            .delete_expect_revision(&lease.key, Some(lease.revision))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_keys_are_valid_key_value_keys_and_distinct() {
        assert_eq!(member_key("host-1:8081"), "member.host-1_3a8081");
        assert_ne!(member_key("a:b"), member_key("a_b"));
        assert!(
            member_key("ü x/y")
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        );
    }

    #[test]
    fn values_of_the_previous_release_name_their_holder() {
        assert_eq!(Holder::parse(b"host:8081").instance, "host:8081");
        let h = Holder {
            instance: "a".into(),
            nonce: "n".into(),
            types: vec!["trade".into()],
            started_ms: Some(5),
        };
        assert_eq!(Holder::parse(&h.bytes()), h);
    }

    #[test]
    fn a_guard_lapses_before_the_server_could_expire_the_lease() {
        let g = LeaseGuard::new(Instant::now());
        assert!(g.valid());
        let later = LeaseGuard {
            base: Instant::now() - (LEASE_TTL - LEASE_MARGIN + Duration::from_millis(1)),
            until_ms: Arc::new(AtomicU64::new(0)),
        };
        later.extend(later.base);
        assert!(
            !later.valid(),
            "past TTL − margin since the last refresh was sent"
        );
        g.revoke();
        assert!(!g.valid());
        assert!(LeaseGuard::unlimited().valid());
    }
}
