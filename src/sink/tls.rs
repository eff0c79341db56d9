//! HTTPS to ClickHouse with a private CA and a client certificate (mutual TLS).
//!
//! Consumes the configured PEM files ([`TlsFiles`]) and emits a [`ClientTls`]: a rustls
//! `ClientConfig` loaded and checked once, at start-up, from which [`Sink::new`](super::Sink::new)
//! builds its HTTP client. Without one the sink keeps the `clickhouse` crate's own client
//! (`Client::default()`: the built-in web roots, no client certificate).
//!
//! Trust: with a CA file configured, **only** that CA is trusted — a private PKI is the point,
//! and also trusting the web roots would let any publicly trusted certificate for the server's
//! name stand in for it. Without one the web roots (`webpki-roots`, as the crate's default
//! client has) are trusted.
//!
//! The HTTP client is built as the crate's default one is (`clickhouse` 0.15.3,
//! `http_client::default`): hyper-util's legacy client over an `HttpConnector` with TCP
//! keep-alive at 60 s and idle pooled connections dropped after 2 s (below ClickHouse's
//! `keep_alive_timeout` of 3–10 s), HTTP/1 only, `http://` URLs still accepted.
//!
//! Errors name the file and what is wrong with it, never its content: a PEM parse error is
//! reported by kind only, since its details could quote part of a key.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// TCP keep-alive of pooled connections (the crate's default client's value).
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// Idle pooled connections are dropped after this (the crate's default client's value).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(2);

/// The PEM files of one ClickHouse endpoint, as configured (`clickhouse.tls.*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificates to trust instead of the web roots.
    pub ca: Option<PathBuf>,
    /// Client certificate chain (mutual TLS); needs `key`.
    pub cert: Option<PathBuf>,
    /// Private key of `cert`.
    pub key: Option<PathBuf>,
}

impl TlsFiles {
    /// Whether no file is configured (the crate's default client is used).
    pub fn is_empty(&self) -> bool {
        self.ca.is_none() && self.cert.is_none() && self.key.is_none()
    }
}

/// Which of the [`TlsFiles`] an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    /// The CA file.
    Ca,
    /// The client certificate.
    Cert,
    /// The client key.
    Key,
}

impl TlsFile {
    /// The last part of the file's configuration key (`ca`, `cert`, `key`).
    pub fn key_suffix(self) -> &'static str {
        match self {
            TlsFile::Ca => "ca",
            TlsFile::Cert => "cert",
            TlsFile::Key => "key",
        }
    }
}

/// A TLS file that cannot be used. Never contains the file's content.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The file cannot be read (missing, no permission).
    #[error("cannot read {}: {reason}", path.display())]
    Unreadable {
        /// Which file.
        file: TlsFile,
        /// Its path.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// The file is not the PEM it should be.
    #[error("{} is not a PEM {what} file ({reason})", path.display())]
    BadPem {
        /// Which file.
        file: TlsFile,
        /// Its path.
        path: PathBuf,
        /// `certificate` or `private key`.
        what: &'static str,
        /// The kind of problem (no PEM block found, bad base64, an unterminated block).
        reason: &'static str,
    },
    /// A client certificate without its key, or a key without its certificate.
    #[error("needs {} too (a client certificate and its key go together)", other.key_suffix())]
    Unpaired {
        /// The file that is set.
        file: TlsFile,
        /// The one that is missing.
        other: TlsFile,
    },
    /// A CA certificate rustls does not accept as a trust anchor.
    #[error("{}: a certificate is not usable as a CA ({reason})", path.display())]
    BadCa {
        /// Its path.
        path: PathBuf,
        /// rustls's reason.
        reason: String,
    },
    /// The client certificate and key do not make a usable identity (e.g. they do not match).
    #[error("the client certificate and key are not usable together ({reason})")]
    BadIdentity {
        /// rustls's reason (it names no key material).
        reason: String,
    },
}

impl TlsError {
    /// The file the error is about (the one to name in a configuration error).
    pub fn file(&self) -> TlsFile {
        match self {
            TlsError::Unreadable { file, .. }
            | TlsError::BadPem { file, .. }
            | TlsError::Unpaired { file, .. } => *file,
            TlsError::BadCa { .. } => TlsFile::Ca,
            TlsError::BadIdentity { .. } => TlsFile::Key,
        }
    }
}

/// A loaded TLS client configuration for one endpoint, cheap to clone.
#[derive(Clone)]
pub struct ClientTls {
    files: TlsFiles,
    config: Arc<rustls::ClientConfig>,
}

impl ClientTls {
    /// Reads and checks `files`: every file readable and PEM, a client certificate only with
    /// its key, the CA usable as a trust anchor, the certificate and key a usable pair.
    pub fn load(files: &TlsFiles) -> Result<ClientTls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::BadIdentity {
                reason: e.to_string(),
            })?;
        let mut roots = rustls::RootCertStore::empty();
        match &files.ca {
            Some(path) => {
                for cert in certificates(path, TlsFile::Ca)? {
                    roots.add(cert).map_err(|e| TlsError::BadCa {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let builder = builder.with_root_certificates(roots);
        let config = match (&files.cert, &files.key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(certificates(cert, TlsFile::Cert)?, private_key(key)?)
                .map_err(|e| TlsError::BadIdentity {
                    reason: e.to_string(),
                })?,
            (Some(_), None) => {
                return Err(TlsError::Unpaired {
                    file: TlsFile::Cert,
                    other: TlsFile::Key,
                });
            }
            (None, Some(_)) => {
                return Err(TlsError::Unpaired {
                    file: TlsFile::Key,
                    other: TlsFile::Cert,
                });
            }
        };
        Ok(ClientTls {
            files: files.clone(),
            config: Arc::new(config),
        })
    }

    /// The files it was loaded from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// A ClickHouse client over this TLS configuration (`Client::with_http_client`), with the
    /// crate's default client's pool and keep-alive.
    pub(crate) fn client(&self) -> clickhouse::Client {
        let mut http = HttpConnector::new();
        http.set_keepalive(Some(TCP_KEEPALIVE));
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*self.config).clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        clickhouse::Client::with_http_client(
            HyperClient::builder(TokioExecutor::new())
                .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                .build(https),
        )
    }
}

impl PartialEq for ClientTls {
    fn eq(&self, other: &Self) -> bool {
        self.files == other.files
    }
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path, file: TlsFile) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Unreadable {
        file,
        path: path.to_path_buf(),
        reason: e.kind().to_string(),
    })
}

/// Why a PEM file was refused, without anything the parser quoted from it.
fn pem_reason(e: &pem::Error) -> &'static str {
    match e {
        pem::Error::NoItemsFound => "no PEM block of that kind found",
        pem::Error::Base64Decode(_) => "bad base64 in a PEM block",
        pem::Error::MissingSectionEnd { .. } => "a PEM block has no END line",
        pem::Error::IllegalSectionStart { .. } => "a malformed BEGIN line",
        _ => "unreadable PEM",
    }
}

/// Every certificate in the PEM file at `path` (at least one).
pub fn certificates(path: &Path, file: TlsFile) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path, file)?;
    let bad = |reason| TlsError::BadPem {
        file,
        path: path.to_path_buf(),
        what: "certificate",
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(pem_reason(&e)))?;
    if certs.is_empty() {
        return Err(bad(pem_reason(&pem::Error::NoItemsFound)));
    }
    Ok(certs)
}

/// The private key in the PEM file at `path` (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path, TlsFile::Key)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::BadPem {
        file: TlsFile::Key,
        path: path.to_path_buf(),
        what: "private key",
        reason: pem_reason(&e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files_in(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let cert = rcgen::CertificateParams::new(vec!["client".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let p = |n: &str| dir.join(n);
        std::fs::write(p("ca.pem"), ca.pem()).unwrap();
        std::fs::write(p("client.pem"), cert.pem()).unwrap();
        std::fs::write(p("client.key"), key.serialize_pem()).unwrap();
        (p("ca.pem"), p("client.pem"), p("client.key"))
    }

    #[test]
    fn a_ca_and_a_client_pair_load() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = files_in(dir.path());
        let files = TlsFiles {
            ca: Some(ca),
            cert: Some(cert),
            key: Some(key),
        };
        let tls = ClientTls::load(&files).unwrap();
        assert_eq!(tls.files(), &files);
        assert!(!format!("{tls:?}").contains("PRIVATE"));
    }

    #[test]
    fn bad_files_are_named_and_never_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = files_in(dir.path());
        let key_text = std::fs::read_to_string(&key).unwrap();
        let missing = dir.path().join("missing.pem");
        let err = |files: TlsFiles| ClientTls::load(&files).unwrap_err();

        let e = err(TlsFiles {
            ca: Some(missing.clone()),
            ..TlsFiles::default()
        });
        assert_eq!(e.file(), TlsFile::Ca);
        assert_eq!(
            e.to_string(),
            format!("cannot read {}: entity not found", missing.display())
        );

        // A key where the CA should be: not a certificate, and not one byte of it quoted.
        let e = err(TlsFiles {
            ca: Some(key.clone()),
            ..TlsFiles::default()
        });
        assert_eq!(
            e.to_string(),
            format!(
                "{} is not a PEM certificate file (no PEM block of that kind found)",
                key.display()
            )
        );
        let body: String = key_text.lines().nth(1).unwrap().chars().take(20).collect();
        assert!(!e.to_string().contains(&body));

        let e = err(TlsFiles {
            cert: Some(cert.clone()),
            ..TlsFiles::default()
        });
        assert_eq!(e.file(), TlsFile::Cert);
        assert_eq!(
            e.to_string(),
            "needs key too (a client certificate and its key go together)"
        );

        // A certificate where the key should be.
        let e = err(TlsFiles {
            cert: Some(cert.clone()),
            key: Some(ca.clone()),
            ..TlsFiles::default()
        });
        assert_eq!(e.file(), TlsFile::Key);
        assert!(
            e.to_string().contains("is not a PEM private key file"),
            "{e}"
        );

        // Garbage inside a PEM block.
        let broken = dir.path().join("broken.key");
        std::fs::write(
            &broken,
            "-----BEGIN PRIVATE KEY-----\nnot*base64*secretbits\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let e = err(TlsFiles {
            cert: Some(cert),
            key: Some(broken),
            ..TlsFiles::default()
        });
        assert!(!e.to_string().contains("secretbits"), "{e}");
    }
}
