//! Every NATS client of the binary connects here: [`options`] is the one place
//! `async_nats::ConnectOptions` is built from the configuration (auth, TLS, the connect
//! timeout), [`connect`] extends it for the service and [`connect_once`] for the one-shot
//! commands.
//!
//! The client is given every URL of `nats.url` (the list, never the comma-joined text, which
//! it would read as one malformed address), without the credentials a URL carries: the client
//! ignores a URL's `user:pass@`, so they are sent as the configured auth
//! (`config::NatsAuth`). It adds the servers a cluster node announces (`connect_urls` in its
//! INFO), so when its node dies it reconnects to another: the servers are tried shuffled, those
//! that failed least first.
//!
//! The service's first connect is retried while no server answers (it starts before NATS),
//! waiting as `retry.*` says, but a server that refuses the credentials or whose certificate
//! is not trusted fails the start at once ([`NatsError`], naming the key, never the secret):
//! that does not heal by waiting. Once connected, every reconnect is retried forever
//! (`max_reconnects(None)`, [`reconnect_delay`]); a credential refused then (rotated, expired)
//! is logged as an error at each attempt and counted (`Stats::record_nats_auth_failure`), as
//! is a permission the server denies.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, NatsAuth, NatsConfig, nats_security};
use crate::pipeline::Stats;
use crate::retry::Policy;

/// How long the last flush of the NATS connection may take at exit.
pub const EXIT_FLUSH: Duration = Duration::from_secs(2);

/// Why NATS could not be used. No variant carries a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsError {
    /// A credentials file could not be read since the start-up check (`key`: its key).
    #[error("{key}: {reason}")]
    File {
        /// The key naming the file.
        key: &'static str,
        /// What is wrong (names the file, not its content).
        reason: String,
    },
    /// The server refused the configured credentials.
    #[error("NATS refused the credentials ({key}): {reason}")]
    Refused {
        /// The key of the credentials (`nats.password`, `nats.token`, `nats.url`, …).
        key: &'static str,
        /// The server's or the client's reason (`authorization violation`).
        reason: String,
    },
    /// The server requires credentials and none are configured.
    #[error(
        "NATS requires credentials and none are configured (set nats.user and nats.password, nats.token, nats.nkey_seed_file or nats.creds_file): {reason}"
    )]
    NoCredentials {
        /// The server's reason.
        reason: String,
    },
    /// The TLS handshake failed for a reason waiting does not heal (an untrusted server
    /// certificate, a client certificate the server refuses).
    #[error("TLS with the NATS server failed ({key}): {reason}")]
    Tls {
        /// The key to look at (`nats.tls.ca`, `nats.tls.cert`).
        key: &'static str,
        /// rustls's reason.
        reason: String,
    },
    /// No server could be reached (the one-shot commands do not retry).
    #[error("connect to NATS at {urls}: {source}")]
    Connect {
        /// The URLs, credentials masked.
        urls: String,
        /// The client's error.
        #[source]
        source: async_nats::ConnectError,
    },
}

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

/// The connect options every client of the binary starts from: the configured auth (the
/// keys, or the URLs' credentials), TLS (CA, client certificate, TLS first, required) and the
/// connect timeout. Reads the seed or credentials file (checked at start; an error here means
/// it changed since).
pub fn options(nats: &NatsConfig) -> Result<async_nats::ConnectOptions, NatsError> {
    let mut o = async_nats::ConnectOptions::new()
        .connection_timeout(nats.connect_timeout)
        .custom_inbox_prefix(nats.inbox_prefix.as_str());
    o = match &nats.auth {
        NatsAuth::None => o,
        NatsAuth::UserPassword { user, password, .. } => {
            o.user_and_password(user.clone(), password.expose().to_string())
        }
        NatsAuth::Token { token, .. } => o.token(token.expose().to_string()),
        NatsAuth::NkeySeedFile(path) => {
            let seed = nats_security::read_nkey_seed(path).map_err(|reason| NatsError::File {
                key: "nats.nkey_seed_file",
                reason,
            })?;
            o.nkey(seed.expose().to_string())
        }
        NatsAuth::CredsFile(path) => {
            let file_error = |reason| NatsError::File {
                key: "nats.creds_file",
                reason,
            };
            let creds = nats_security::read_creds(path).map_err(file_error)?;
            o.credentials(creds.expose()).map_err(|_| {
                file_error(format!("{} is not a NATS credentials file", path.display()))
            })?
        }
    };
    let tls = &nats.tls;
    if let Some(ca) = &tls.ca {
        o = o.add_root_certificates(ca.clone());
    }
    if let Some((cert, key)) = &tls.client {
        o = o.add_client_certificate(cert.clone(), key.clone());
    }
    if tls.first {
        o = o.tls_first();
    }
    if tls.required {
        o = o.require_tls(true);
    }
    Ok(o)
}

/// Whether an error is worth waiting out (`None`) or fails the start (`Some`): the server
/// refused the credentials, or the TLS handshake failed on a certificate.
pub fn permanent(nats: &NatsConfig, e: &async_nats::ConnectError) -> Option<NatsError> {
    use async_nats::ConnectErrorKind as K;
    let refused = |reason: &str| match nats.auth.key() {
        Some(key) => NatsError::Refused {
            key,
            reason: reason.to_string(),
        },
        None => NatsError::NoCredentials {
            reason: reason.to_string(),
        },
    };
    match e.kind() {
        K::AuthorizationViolation => Some(refused("authorization violation")),
        K::Authentication => Some(refused("the nonce could not be signed with the nkey")),
        K::Tls => Some(NatsError::Tls {
            key: "nats.tls.*",
            reason: e.to_string(),
        }),
        _ => tls_refusal(e),
    }
}

/// A certificate problem in the error's chain (rustls's error inside an I/O error).
fn tls_refusal(e: &async_nats::ConnectError) -> Option<NatsError> {
    use async_nats::rustls::{AlertDescription as A, Error as R};
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let inner = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|i| i.downcast_ref::<R>())
            .or_else(|| err.downcast_ref::<R>());
        if let Some(r) = inner {
            let key = match r {
                R::InvalidMessage(_) => {
                    return Some(NatsError::Tls {
                        key: "nats.tls.required",
                        reason: format!(
                            "the server does not speak TLS (a tls:// URL or a nats.tls key requires it): {r}"
                        ),
                    });
                }
                R::InvalidCertificate(_) => "nats.tls.ca",
                R::AlertReceived(
                    A::CertificateRequired
                    | A::BadCertificate
                    | A::UnknownCA
                    | A::CertificateUnknown
                    | A::UnsupportedCertificate
                    | A::CertificateExpired
                    | A::CertificateRevoked
                    | A::AccessDenied,
                ) => "nats.tls.cert",
                _ => return None,
            };
            return Some(NatsError::Tls {
                key,
                reason: r.to_string(),
            });
        }
        cur = err.source();
    }
    None
}

/// What a server's or the client's error says NATS refuses us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// The credentials (at a reconnect, expired, revoked).
    Credentials,
    /// A subject the user may not publish or subscribe to.
    Permission,
}

fn refusal(text: &str) -> Option<Refusal> {
    let t = text.to_ascii_lowercase();
    if t.contains("permissions violation") {
        Some(Refusal::Permission)
    } else if t.contains("authorization violation")
        || t.contains("authentication expired")
        || t.contains("authentication revoked")
    {
        Some(Refusal::Credentials)
    } else {
        None
    }
}

/// What a permission violation names: `Publish to "<subject>"` (the text after
/// "Permissions Violation for"), or the whole text when it has another shape.
fn denied_what(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let marker = "permissions violation for ";
    match lower.find(marker) {
        Some(i) => text[i + marker.len()..].trim().to_string(),
        None => text.to_string(),
    }
}

/// Connects the service to NATS: retries while no server answers (the service starts before
/// NATS does), until `stop` (`Ok(None)`); fails at once when a server refuses the credentials
/// or the certificates ([`permanent`]). Keeps `stats.nats_connected` current and logs, as
/// errors, and counts every refusal after that.
pub async fn connect(
    cfg: &Config,
    stats: Arc<Stats>,
    stop: &CancellationToken,
) -> Result<Option<async_nats::Client>, NatsError> {
    let urls = cfg.nats.server_urls();
    let mut backoff = cfg.retry.policy().backoff();
    loop {
        let attempt = service_options(cfg, stats.clone())?.connect(urls.as_slice());
        // A stop ends an attempt too (each server may take `nats.connect_timeout`).
        let result = tokio::select! {
            r = attempt => r,
            () = stop.cancelled() => return Ok(None),
        };
        let e = match result {
            Ok(client) => {
                tracing::info!(
                    auth = cfg.nats.auth.method(),
                    tls = cfg.nats.tls.required,
                    "nats connection set up"
                );
                return Ok(Some(client));
            }
            Err(e) => e,
        };
        if let Some(fatal) = permanent(&cfg.nats, &e) {
            stats.record_nats_auth_failure();
            return Err(fatal);
        }
        let delay = backoff.next().unwrap_or(backoff.policy().cap);
        tracing::warn!(error = %e, url = %cfg.nats.url_redacted(), retry_in = ?delay, "nats not reachable");
        tokio::select! {
            () = stop.cancelled() => return Ok(None),
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// [`options`] with what the service adds: its name, reconnects forever on `retry.*`, and the
/// event callback that keeps `stats` and logs refusals.
fn service_options(
    cfg: &Config,
    stats: Arc<Stats>,
) -> Result<async_nats::ConnectOptions, NatsError> {
    let policy = cfg.retry.policy();
    let key = cfg.nats.auth.key().unwrap_or("no credentials configured");
    Ok(options(&cfg.nats)?
        .name("marketprism-storage")
        .max_reconnects(None)
        .reconnect_delay_callback(move |attempts| reconnect_delay(&policy, attempts))
        .event_callback(move |ev| {
            let s = stats.clone();
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
                    other => {
                        let text = other.to_string();
                        match refusal(&text) {
                            Some(Refusal::Permission) => {
                                s.record_nats_denied(denied_what(&text), crate::pipeline::stats::now_ms());
                                tracing::error!(error = %text, "NATS denied a permission the service needs (docs/security.md, \"NATS\": minimal permissions); the operation is retried");
                            }
                            Some(Refusal::Credentials) => {
                                s.record_nats_auth_failure();
                                tracing::error!(error = %text, "NATS refused the credentials ({key}); reconnecting on retry.*");
                            }
                            None => tracing::debug!(event = %text, "nats event"),
                        }
                    }
                }
            }
        }))
}

/// Connects a one-shot command (`name`: how the server lists it): one attempt at every
/// server, no retry, the error naming what is wrong.
pub async fn connect_once(nats: &NatsConfig, name: &str) -> Result<async_nats::Client, NatsError> {
    options(nats)?
        .name(name)
        .connect(nats.server_urls().as_slice())
        .await
        .map_err(|e| {
            permanent(nats, &e).unwrap_or_else(|| NatsError::Connect {
                urls: nats.url_redacted(),
                source: e,
            })
        })
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
            .server_urls()
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
    fn refusals_are_told_apart_from_other_server_errors() {
        assert_eq!(
            refusal("client error: nats: authorization violation"),
            Some(Refusal::Credentials)
        );
        assert_eq!(
            refusal("server error: nats: user authentication expired"),
            Some(Refusal::Credentials)
        );
        assert_eq!(
            refusal(r#"server error: nats: Permissions Violation for Publish to "$JS.API.INFO""#),
            Some(Refusal::Permission)
        );
        assert_eq!(refusal("client error: nats: IO error"), None);
        assert_eq!(
            denied_what(
                r#"server error: nats: Permissions Violation for Publish to "$JS.API.INFO""#
            ),
            r#"Publish to "$JS.API.INFO""#
        );
        assert_eq!(
            refusal("server error: nats: subscription 3 is a slow consumer"),
            None
        );
    }

    #[test]
    fn a_refused_credential_is_permanent_and_names_its_key() {
        use async_nats::{ConnectError, ConnectErrorKind as K};
        let mut cfg = Config::defaults().unwrap();
        let refused = ConnectError::new(K::AuthorizationViolation);
        assert_eq!(
            permanent(&cfg.nats, &refused).unwrap().to_string(),
            "NATS requires credentials and none are configured (set nats.user and nats.password, nats.token, nats.nkey_seed_file or nats.creds_file): authorization violation"
        );
        cfg.nats.auth = NatsAuth::Token {
            token: crate::config::Secret::new("tok-123"),
            key: "nats.token",
        };
        let e = permanent(&cfg.nats, &refused).unwrap().to_string();
        assert_eq!(
            e,
            "NATS refused the credentials (nats.token): authorization violation"
        );
        // A server that does not answer is waited for.
        let down = ConnectError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(permanent(&cfg.nats, &down).is_none());
        assert!(permanent(&cfg.nats, &ConnectError::new(K::TimedOut)).is_none());
        // An untrusted certificate inside the I/O error is not.
        let bad_cert = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            async_nats::rustls::Error::InvalidCertificate(
                async_nats::rustls::CertificateError::UnknownIssuer,
            ),
        );
        let e = permanent(&cfg.nats, &ConnectError::from(bad_cert)).unwrap();
        assert_eq!(
            e.to_string(),
            "TLS with the NATS server failed (nats.tls.ca): invalid peer certificate: UnknownIssuer"
        );
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
