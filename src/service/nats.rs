//! The service's NATS connection: the one place `async_nats::ConnectOptions` is built.
//!
//! The client is given every URL of `nats.url` (the list, never the comma-joined text, which
//! it would read as one malformed address) and adds the servers a cluster node announces
//! (`connect_urls` in its INFO), so when its node dies it reconnects to another: the servers
//! are tried shuffled, those that failed least first. It retries the first connect and every
//! reconnect forever (`max_reconnects(None)`), waiting as `retry.*` says between attempts
//! ([`reconnect_delay`]); the pipeline re-acquires its leases and resynchronises once it is
//! back.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::pipeline::Stats;
use crate::retry::Policy;

/// How long the last flush of the NATS connection may take at exit.
pub const EXIT_FLUSH: Duration = Duration::from_secs(2);

/// The wait before the client's reconnect attempt `attempts` (async-nats counts from 1):
/// the first attempt goes at once (a server restart is usually over by then), later ones walk
/// the `retry.*` schedule, so the client is back within `retry.max_backoff` of the server.
pub fn reconnect_delay(policy: &Policy, attempts: usize) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let k = u32::try_from(attempts - 1).unwrap_or(u32::MAX);
    policy.delay(k, &mut rand::rng())
}

/// Connects to NATS, retrying forever in the background (the service starts even when NATS is
/// not up yet), and keeps `stats.nats_connected` current.
pub async fn connect(
    cfg: &Config,
    stats: Arc<Stats>,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    let s = stats.clone();
    let policy = cfg.retry.policy();
    async_nats::ConnectOptions::new()
        .name("marketprism-storage")
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(move |attempts| reconnect_delay(&policy, attempts))
        .connection_timeout(cfg.nats.connect_timeout)
        .event_callback(move |ev| {
            let s = s.clone();
            async move {
                match ev {
                    async_nats::Event::Connected => {
                        s.set_nats_connected(true);
                        tracing::info!("nats connected");
                    }
                    async_nats::Event::Disconnected => {
                        s.set_nats_connected(false);
                        tracing::warn!("nats disconnected; reconnecting");
                    }
                    other => tracing::debug!(event = %other, "nats event"),
                }
            }
        })
        .connect(cfg.nats.urls.as_slice())
        .await
}

/// Flushes what the client still buffers, but never waits on NATS for long: with NATS down a
/// flush waits for the reconnect (which may never come), and the shutdown must stay bounded.
/// What is not flushed is acks, whose messages are re-read and deduplicated on the next start.
pub async fn flush_bounded(client: &async_nats::Client) {
    if client.connection_state() != async_nats::connection::State::Connected {
        tracing::warn!("nats not connected at exit; nothing flushed");
        return;
    }
    if tokio::time::timeout(EXIT_FLUSH, client.flush())
        .await
        .is_err()
    {
        tracing::warn!(timeout = ?EXIT_FLUSH, "nats flush at exit did not finish (nats down?); exiting anyway");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_configured_server_is_a_connect_address() {
        use async_nats::ToServerAddrs;
        let mut cfg = Config::defaults().unwrap();
        cfg.nats.urls = vec![
            "nats://127.0.0.1:4222".into(),
            "nats://u:p@127.0.0.1:4223".into(),
            "tls://nats-3:4224".into(),
        ];
        let addrs: Vec<_> = cfg
            .nats
            .urls
            .as_slice()
            .to_server_addrs()
            .unwrap()
            .collect();
        assert_eq!(addrs.len(), 3);
        assert_eq!(addrs[2].port(), 4224);
        // What `connect` was given before: one address with the port "4222,nats:".
        assert!(cfg.nats.url().as_str().to_server_addrs().is_err());
    }

    #[test]
    fn reconnects_at_once_then_walk_the_retry_policy() {
        let p = Policy {
            initial: Duration::from_millis(100),
            multiplier: 2.0,
            cap: Duration::from_secs(3),
        };
        assert_eq!(reconnect_delay(&p, 0), Duration::ZERO);
        assert_eq!(reconnect_delay(&p, 1), Duration::ZERO);
        for attempts in 2..200 {
            let d = reconnect_delay(&p, attempts);
            assert!(d <= p.ceiling(u32::try_from(attempts - 1).unwrap()));
            assert!(d <= p.cap);
        }
        assert!(reconnect_delay(&p, usize::MAX) <= p.cap);
    }
}
