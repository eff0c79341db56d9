//! NATS credentials and TLS material: the credentials a URL carries, and the checks of the
//! files the `nats.*` auth and TLS keys name (read and parsed at start, so a missing or
//! malformed file fails the start naming its key).
//!
//! Every reason returned here names the file, never what it holds: no seed, no JWT, no key,
//! no password reaches a message.

use std::path::Path;

use async_nats::rustls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::Secret;

/// The credentials in a `nats://` / `tls://` URL: `user:pass@` or a token `tok@`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlCredentials {
    /// `user:pass@host`.
    UserPassword(String, Secret),
    /// `token@host`.
    Token(Secret),
}

impl UrlCredentials {
    /// The secret part: the password, or the token.
    pub fn into_secret(self) -> Secret {
        match self {
            UrlCredentials::UserPassword(_, s) | UrlCredentials::Token(s) => s,
        }
    }
}

/// The URL's credentials (percent-decoded), if it has any.
pub fn url_credentials(url: &str) -> Option<UrlCredentials> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let (userinfo, _) = authority.rsplit_once('@')?;
    Some(match userinfo.split_once(':') {
        Some((user, pass)) => UrlCredentials::UserPassword(
            crate::redact::percent_decode(user),
            Secret::new(crate::redact::percent_decode(pass)),
        ),
        None => UrlCredentials::Token(Secret::new(crate::redact::percent_decode(userinfo))),
    })
}

/// The URL without its credentials (what the client is given).
pub fn without_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://{host}{path}"),
        None => url.to_string(),
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The user nkey seed a `nats.nkey_seed_file` holds (the file's only non-blank line, `SU…`).
pub fn read_nkey_seed(path: &Path) -> Result<Secret, String> {
    let text = read(path)?;
    let seed = text.trim();
    let not_a_seed = || {
        format!(
            "{} holds no valid nkey seed (expected one line, a user seed starting with SU, as `nk -gen user` writes)",
            path.display()
        )
    };
    let kp = nkeys::KeyPair::from_seed(seed).map_err(|_| not_a_seed())?;
    if !kp.public_key().starts_with('U') {
        return Err(format!(
            "{} holds the seed of an nkey that is not a user's (a user seed starts with SU)",
            path.display()
        ));
    }
    Ok(Secret::new(seed))
}

/// The text of a `nats.creds_file`, checked the way the client will read it (a user JWT block
/// and a user seed block).
pub fn read_creds(path: &Path) -> Result<Secret, String> {
    let text = read(path)?;
    if let Err(e) = async_nats::ConnectOptions::new().credentials(&text) {
        // The client's own messages name the missing part; an nkeys error is about the seed.
        let why = if e.to_string().starts_with("cannot parse") {
            e.to_string()
        } else {
            "its seed is not a valid nkey seed".to_string()
        };
        return Err(format!(
            "{} is not a NATS credentials file: {why}",
            path.display()
        ));
    }
    Ok(Secret::new(text))
}

/// A warning when a secret file (seed, creds, TLS key) can be read by other users than its
/// owner: anyone on the host could then connect as the service.
pub fn loose_permissions(key: &str, path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o077 != 0).then(|| {
        format!(
            "{key}: {} can be read by other users (mode {:o}); `chmod 600` it",
            path.display(),
            mode & 0o777
        )
    })
}

/// The certificates of a PEM file (at least one).
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    read(path)?; // the readable-file message
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{} is not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no certificate (expected PEM `-----BEGIN CERTIFICATE-----` blocks)",
            path.display()
        ));
    }
    Ok(certs)
}

/// Checks a `nats.tls.ca` file: PEM certificates, each usable as a trust anchor.
pub fn check_ca(path: &Path) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(path)? {
        roots.add(cert).map_err(|e| {
            format!(
                "{} holds a certificate that is not a CA: {e}",
                path.display()
            )
        })?;
    }
    Ok(())
}

/// Checks a client certificate chain and its key (`nats.tls.cert`, `nats.tls.key`): both
/// parse and the key belongs to the certificate. The `Err` is `(key, reason)`.
pub fn check_client_cert(cert: &Path, key: &Path) -> Result<(), (&'static str, String)> {
    let certs = certificates(cert).map_err(|r| ("nats.tls.cert", r))?;
    read(key).map_err(|r| ("nats.tls.key", r))?;
    let private = PrivateKeyDer::from_pem_file(key).map_err(|_| {
        (
            "nats.tls.key",
            format!(
                "{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
                key.display()
            ),
        )
    })?;
    rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_client_auth_cert(certs, private)
        .map(|_| ())
        .map_err(|e| {
            (
                "nats.tls.key",
                format!(
                    "{} is not the key of the certificate in {}: {e}",
                    key.display(),
                    cert.display()
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_credentials_are_read_and_stripped() {
        assert_eq!(
            url_credentials("nats://svc:p%40ss@127.0.0.1:4222"),
            Some(UrlCredentials::UserPassword(
                "svc".into(),
                Secret::new("p@ss")
            ))
        );
        assert_eq!(
            url_credentials("tls://s3cr3t@nats-1:4222/"),
            Some(UrlCredentials::Token(Secret::new("s3cr3t")))
        );
        assert_eq!(url_credentials("nats://127.0.0.1:4222"), None);
        assert_eq!(
            without_credentials("nats://svc:p%40ss@127.0.0.1:4222"),
            "nats://127.0.0.1:4222"
        );
        assert_eq!(
            without_credentials("tls://tok@[::1]:4222/"),
            "tls://[::1]:4222/"
        );
        assert_eq!(
            without_credentials("nats://127.0.0.1:4222"),
            "nats://127.0.0.1:4222"
        );
        assert_eq!(crate::redact::percent_decode("a%2Fb%zz%4"), "a/b%zz%4");
    }

    #[test]
    fn a_seed_file_must_hold_a_user_seed_and_errors_never_show_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seed");
        let user = nkeys::KeyPair::new_user();
        let seed = user.seed().unwrap();
        std::fs::write(&path, format!("{seed}\n")).unwrap();
        assert_eq!(read_nkey_seed(&path).unwrap().expose(), seed);

        let account = nkeys::KeyPair::new_account().seed().unwrap();
        std::fs::write(&path, &account).unwrap();
        let e = read_nkey_seed(&path).unwrap_err();
        assert!(e.contains("not a user's"), "{e}");
        assert!(!e.contains(&account));

        let broken = format!("{}X", &seed[..seed.len() - 1]);
        std::fs::write(&path, &broken).unwrap();
        let e = read_nkey_seed(&path).unwrap_err();
        assert!(e.contains("holds no valid nkey seed"), "{e}");
        assert!(!e.contains(&broken[4..20]), "{e}");

        let e = read_nkey_seed(&dir.path().join("missing")).unwrap_err();
        assert!(
            e.starts_with("cannot read ") && e.contains("missing"),
            "{e}"
        );
    }

    #[test]
    fn secret_files_readable_by_others_are_warned_about() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seed");
        std::fs::write(&path, "x").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let w = loose_permissions("nats.nkey_seed_file", &path).unwrap();
        assert!(
            w.starts_with("nats.nkey_seed_file: ")
                && w.ends_with("can be read by other users (mode 644); `chmod 600` it"),
            "{w}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(loose_permissions("nats.nkey_seed_file", &path), None);
    }

    #[test]
    fn a_creds_file_must_parse() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("user.creds");
        std::fs::write(&path, "not a creds file").unwrap();
        let e = read_creds(&path).unwrap_err();
        assert!(
            e.ends_with(
                "is not a NATS credentials file: cannot parse user JWT from the credentials file"
            ),
            "{e}"
        );
    }

    #[test]
    fn pem_files_must_hold_what_their_key_says() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "hello").unwrap();
        let e = check_ca(&junk).unwrap_err();
        assert!(
            e.ends_with("holds no certificate (expected PEM `-----BEGIN CERTIFICATE-----` blocks)"),
            "{e}"
        );
        let (key, e) = check_client_cert(&junk, &junk).unwrap_err();
        assert_eq!(key, "nats.tls.cert");
        assert!(e.contains("holds no certificate"), "{e}");
    }
}
