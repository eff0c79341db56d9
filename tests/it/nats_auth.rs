//! NATS auth and TLS against real nats-servers configured for each mode: user/password (keys
//! and URL), token, nkey seed file, decentralized JWT with a creds file (operator mode), TLS
//! with a private CA, mutual TLS, TLS first; a user holding exactly the documented minimal
//! permissions (docs/security.md, "NATS"). Each runs the real service end to end and counts
//! the rows in ClickHouse; a wrong credential fails the start with the exact, secret-free
//! error. Every certificate and key is made here (rcgen, nkeys); JWTs are signed here.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use marketprism_storage::config::Config;
use marketprism_storage::service::nats;

use crate::harness::{ConfiguredNats, Service, TEST_CONFIG, TestClickHouse, wait_for_streams};
use crate::ingest::{assert_exactly_once, publish_trades, tail};

/// Trades each test publishes and counts.
const N: u64 = 2_000;

type Env = Vec<(String, String)>;

fn env(pairs: &[(&str, &str)]) -> Env {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A temp dir for a test's keys and certificates.
struct Files(tempfile::TempDir);

impl Files {
    fn new() -> Files {
        Files(tempfile::tempdir().unwrap())
    }

    /// Writes `content` to `name`; returns the path as text.
    fn write(&self, name: &str, content: &str) -> String {
        let p: PathBuf = self.0.path().join(name);
        std::fs::write(&p, content).unwrap();
        p.display().to_string()
    }
}

/// The configuration a client with the service's `env` gets (the test's publisher connects
/// through the service's own `nats::options`).
fn config(url: &str, env: &Env) -> Config {
    let mut all: HashMap<String, String> = env.iter().cloned().collect();
    all.insert("MARKETPRISM_NATS_URL".into(), url.into());
    Config::load(None, &|k| all.get(k).cloned()).unwrap().config
}

/// Runs the service against `url` with `svc_env`, publishes [`N`] trades with a client
/// configured by `pub_env`, and checks every one is stored once; returns the time from the
/// service's start to the last row, and the service's log.
async fn stores_every_message(url: &str, svc_env: &Env, pub_env: &Env) -> (Duration, String) {
    let ch = TestClickHouse::start().await;
    let mut svc = Service::with_yaml(url, &ch, TEST_CONFIG);
    svc.env.extend(svc_env.iter().cloned());
    let t0 = Instant::now();
    svc.start();
    let cfg = config(url, pub_env);
    let client = nats::connect_once(&cfg.nats, "test publisher")
        .await
        .unwrap();
    wait_for_streams(&client).await;
    let now = chrono::Utc::now().timestamp_millis();
    publish_trades(&client, 0, N, now).await;
    assert_exactly_once(&ch, N, &svc).await;
    let took = t0.elapsed();
    let log = svc.log_text();
    assert!(log.contains("nats connected"), "{}", tail(&log));
    assert_eq!(svc.terminate(), Some(0), "{}", tail(&svc.log_text()));
    (took, svc.log_text())
}

/// [`stores_every_message`] with the publisher configured like the service; asserts that
/// `secret` is nowhere in the service's log and prints the time.
async fn mode(name: &str, url: &str, svc_env: &Env, secret: &str) {
    let (took, log) = stores_every_message(url, svc_env, svc_env).await;
    assert!(!log.contains(secret), "the secret is in the log:\n{log}");
    eprintln!("nats auth mode {name}: {N} trades stored in {took:?} (service start to last row)");
}

/// Starts the service, expects it to exit by itself with a non-zero code within 30 s;
/// returns its log.
async fn fails_at_start(url: &str, svc_env: &Env) -> String {
    let ch = TestClickHouse::start().await;
    let mut svc = Service::with_yaml(url, &ch, TEST_CONFIG);
    svc.env.extend(svc_env.iter().cloned());
    let t0 = Instant::now();
    svc.start();
    while svc.running() && t0.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = svc.log_text();
    assert!(!svc.running(), "still running after 30 s:\n{}", tail(&log));
    assert_eq!(svc.exit_code(), Some(1), "{}", tail(&log));
    eprintln!("refused at start after {:?}", t0.elapsed());
    log
}

const PASSWORD: &str = "pw-Sekr3t-91x";
const TOKEN: &str = "tok-Sekr3t-77q";

fn users_conf() -> String {
    format!("authorization {{\n  users: [ {{ user: svc, password: \"{PASSWORD}\" }} ]\n}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_password_from_the_keys() {
    let nats = ConfiguredNats::start(&users_conf()).await;
    // At the most verbose level too: no log line of ours or of the client shows the password.
    let e = env(&[
        ("MARKETPRISM_NATS_USER", "svc"),
        ("MARKETPRISM_NATS_PASSWORD", PASSWORD),
        ("LOG_LEVEL", "trace"),
    ]);
    mode("user/password (keys)", &nats.url("nats"), &e, PASSWORD).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_password_in_the_url() {
    let nats = ConfiguredNats::start(&users_conf()).await;
    let url = format!("nats://svc:{PASSWORD}@127.0.0.1:{}", nats.port);
    let e = env(&[("LOG_LEVEL", "trace")]);
    mode("user/password (URL)", &url, &e, PASSWORD).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token() {
    let nats = ConfiguredNats::start(&format!("authorization {{ token: \"{TOKEN}\" }}")).await;
    let e = env(&[("MARKETPRISM_NATS_TOKEN", TOKEN), ("LOG_LEVEL", "trace")]);
    mode("token", &nats.url("nats"), &e, TOKEN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nkey_seed_file() {
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().unwrap();
    let files = Files::new();
    let path = files.write("svc.nk", &format!("{seed}\n"));
    let conf = format!(
        "authorization {{\n  users: [ {{ nkey: {} }} ]\n}}",
        user.public_key()
    );
    let nats = ConfiguredNats::start(&conf).await;
    let e = env(&[("MARKETPRISM_NATS_NKEY_SEED_FILE", &path)]);
    mode("nkey", &nats.url("nats"), &e, &seed).await;
}

/// A JWT: base64url(header).base64url(claims).base64url(ed25519 signature of the first two
/// parts by the issuer's nkey), as nats-io/jwt v2 encodes it.
fn jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    let claims = serde_json::json!({
        "jti": format!("TEST{}{}", name.to_uppercase(), &subject[1..12]),
        "iat": chrono::Utc::now().timestamp(),
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let head = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signed = format!("{head}.{body}");
    let sig = issuer.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// Operator mode: an operator, a system account, an account with JetStream (unlimited) and a
/// user of it; returns the server configuration and the user's creds file text.
fn operator_mode() -> (String, String, String) {
    let operator = nkeys::KeyPair::new_operator();
    let system = nkeys::KeyPair::new_account();
    let account = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let op_jwt = jwt(
        &operator,
        &operator.public_key(),
        "op",
        serde_json::json!({"type": "operator", "version": 2, "system_account": system.public_key()}),
    );
    let unlimited = serde_json::json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1,
    });
    let sys_jwt = jwt(
        &operator,
        &system.public_key(),
        "SYS",
        serde_json::json!({"type": "account", "version": 2, "limits": unlimited}),
    );
    let mut limits = unlimited.clone();
    for (k, v) in [
        ("mem_storage", -1),
        ("disk_storage", -1),
        ("streams", -1),
        ("consumer", -1),
    ] {
        limits[k] = v.into();
    }
    let acc_jwt = jwt(
        &operator,
        &account.public_key(),
        "market",
        serde_json::json!({"type": "account", "version": 2, "limits": limits}),
    );
    let user_jwt = jwt(
        &account,
        &user.public_key(),
        "svc",
        serde_json::json!({"type": "user", "version": 2, "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1}),
    );
    let conf = format!(
        "operator: {op_jwt}\nsystem_account: {}\nresolver: MEMORY\nresolver_preload: {{\n  {}: {sys_jwt}\n  {}: {acc_jwt}\n}}\n",
        system.public_key(),
        system.public_key(),
        account.public_key()
    );
    let seed = user.seed().unwrap();
    let creds = format!(
        "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    );
    (conf, creds, seed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decentralized_jwt_with_a_creds_file() {
    let (conf, creds, seed) = operator_mode();
    let files = Files::new();
    let path = files.write("svc.creds", &creds);
    let nats = ConfiguredNats::start(&conf).await;
    let e = env(&[("MARKETPRISM_NATS_CREDS_FILE", &path)]);
    mode("creds (JWT, operator mode)", &nats.url("nats"), &e, &seed).await;
}

/// A private CA, a server certificate for 127.0.0.1 and localhost, a client certificate;
/// their PEM files in `files`.
struct Pki {
    ca: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

fn pki(files: &Files, prefix: &str) -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(DnType::CommonName, format!("{prefix} test CA"));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap();
    let leaf = |sans: Vec<String>, usage: ExtendedKeyUsagePurpose, name: &str| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(sans).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![usage];
        let cert = p.signed_by(&key, &*ca).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (sc, sk) = leaf(
        vec!["127.0.0.1".into(), "localhost".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
        "nats",
    );
    let (cc, ck) = leaf(Vec::new(), ExtendedKeyUsagePurpose::ClientAuth, "svc");
    Pki {
        ca: files.write(&format!("{prefix}-ca.pem"), &ca.pem()),
        server_cert: files.write(&format!("{prefix}-server.pem"), &sc),
        server_key: files.write(&format!("{prefix}-server.key"), &sk),
        client_cert: files.write(&format!("{prefix}-client.pem"), &cc),
        client_key: files.write(&format!("{prefix}-client.key"), &ck),
    }
}

fn tls_conf(p: &Pki, extra: &str) -> String {
    format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  timeout: 5\n{extra}}}\n",
        p.server_cert, p.server_key, p.ca
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca() {
    let files = Files::new();
    let p = pki(&files, "a");
    let nats = ConfiguredNats::start(&tls_conf(&p, "")).await;
    let e = env(&[("MARKETPRISM_NATS_TLS_CA", &p.ca)]);
    // A nats:// URL: the CA alone makes the client require TLS.
    mode("TLS, private CA", &nats.url("nats"), &e, "-----BEGIN").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls() {
    let files = Files::new();
    let p = pki(&files, "a");
    let nats = ConfiguredNats::start(&tls_conf(&p, "  verify: true\n")).await;
    let e = env(&[
        ("MARKETPRISM_NATS_TLS_CA", &p.ca),
        ("MARKETPRISM_NATS_TLS_CERT", &p.client_cert),
        ("MARKETPRISM_NATS_TLS_KEY", &p.client_key),
    ]);
    mode("mutual TLS", &nats.url("tls"), &e, "PRIVATE KEY").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_first() {
    let files = Files::new();
    let p = pki(&files, "a");
    let nats = ConfiguredNats::start(&tls_conf(&p, "  handshake_first: true\n")).await;
    let e = env(&[
        ("MARKETPRISM_NATS_TLS_CA", &p.ca),
        ("MARKETPRISM_NATS_TLS_FIRST", "true"),
    ]);
    mode("TLS first", &nats.url("tls"), &e, "-----BEGIN").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_credential_fails_the_start_naming_the_key_never_the_secret() {
    let nats = ConfiguredNats::start(&users_conf()).await;
    let wrong = "wrong-Sekr3t-55z";
    let log = fails_at_start(
        &nats.url("nats"),
        &env(&[
            ("MARKETPRISM_NATS_USER", "svc"),
            ("MARKETPRISM_NATS_PASSWORD", wrong),
        ]),
    )
    .await;
    assert!(
        log.contains(
            "error: NATS refused the credentials (nats.password): authorization violation"
        ),
        "{}",
        tail(&log)
    );
    assert!(!log.contains(wrong), "{log}");
    // The same credential in the URL names the URL.
    let url = format!("nats://svc:{wrong}@127.0.0.1:{}", nats.port);
    let log = fails_at_start(&url, &Env::new()).await;
    assert!(
        log.contains("error: NATS refused the credentials (nats.url): authorization violation"),
        "{}",
        tail(&log)
    );
    assert!(!log.contains(wrong), "{log}");
    // No credentials at all for a server that wants some.
    let log = fails_at_start(&nats.url("nats"), &Env::new()).await;
    assert!(
        log.contains("error: NATS requires credentials and none are configured (set nats.user and nats.password, nats.token, nats.nkey_seed_file or nats.creds_file): authorization violation"),
        "{}",
        tail(&log)
    );
    // A one-shot command says the same, once.
    let cfg = config(
        &nats.url("nats"),
        &env(&[("MARKETPRISM_NATS_TOKEN", wrong)]),
    );
    let e = nats::connect_once(&cfg.nats, "test").await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "NATS refused the credentials (nats.token): authorization violation"
    );
}

/// A password rotated on the server while the service runs: the server drops the connection,
/// every reconnect is refused and logged as an error naming the key (counted), never the
/// secret; once the server takes the service's password again, it reconnects and stores what
/// was published meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_refused_on_reconnect_is_logged_then_recovers() {
    let nats = ConfiguredNats::start(&format!(
        "authorization {{\n  users: [ {{ user: svc, password: \"{PASSWORD}\" }}, {{ user: admin, password: admin }} ]\n}}"
    ))
    .await;
    let url = nats.url("nats");
    let ch = TestClickHouse::start().await;
    let mut svc = Service::with_yaml(&url, &ch, TEST_CONFIG);
    svc.env.extend(svc_env());
    svc.start();
    let client = nats::connect_once(&config(&url, &admin_env()).nats, "test publisher")
        .await
        .unwrap();
    wait_for_streams(&client).await;
    let now = chrono::Utc::now().timestamp_millis();
    publish_trades(&client, 0, N / 2, now).await;
    let stored = crate::harness::wait_until(60, || async {
        ch.count("marketprism_hot.trades").await == N / 2
    })
    .await;
    assert!(stored, "{}", tail(&svc.log_text()));
    let rotated = "rotated-Sekr3t-13k";
    nats.reload(&format!(
        "authorization {{\n  users: [ {{ user: svc, password: \"{rotated}\" }}, {{ user: admin, password: admin }} ]\n}}"
    ));
    let want = "NATS refused the credentials (nats.password); reconnecting on retry.*";
    let refused = crate::harness::wait_until(30, || async { svc.log_text().contains(want) }).await;
    assert!(refused, "{}", tail(&svc.log_text()));
    let (code, body) = crate::harness::http_get(svc.http_port, "/ready")
        .await
        .unwrap();
    assert!(
        code == 503 && body.contains("nats: not connected"),
        "{code} {body}"
    );
    // Counted where an operator's alert can see it.
    let (_, metrics) = crate::harness::http_get(svc.http_port, "/metrics")
        .await
        .unwrap();
    let failures = metrics
        .lines()
        .find_map(|l| l.strip_prefix("marketprism_storage_nats_auth_failures_total "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert!(failures.is_some_and(|n| n >= 1), "{metrics}");
    publish_trades(&client, N / 2, N, now).await;
    // Back to the service's password: it reconnects by itself and stores the rest, once.
    nats.reload(&format!(
        "authorization {{\n  users: [ {{ user: svc, password: \"{PASSWORD}\" }}, {{ user: admin, password: admin }} ]\n}}"
    ));
    assert_exactly_once(&ch, N, &svc).await;
    let log = svc.log_text();
    assert!(!log.contains(PASSWORD) && !log.contains(rotated), "{log}");
    assert_eq!(svc.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_verifies_clients_refuses_one_without_a_certificate() {
    let files = Files::new();
    let p = pki(&files, "a");
    let nats = ConfiguredNats::start(&tls_conf(&p, "  verify: true\n")).await;
    let log = fails_at_start(
        &nats.url("tls"),
        &env(&[("MARKETPRISM_NATS_TLS_CA", &p.ca)]),
    )
    .await;
    assert!(
        log.contains("error: TLS with the NATS server failed (nats.tls.cert): received fatal alert: CertificateRequired"),
        "{}",
        tail(&log)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_of_another_ca_fails_the_start() {
    let files = Files::new();
    let p = pki(&files, "a");
    let other = pki(&files, "b");
    let nats = ConfiguredNats::start(&tls_conf(&p, "")).await;
    let log = fails_at_start(
        &nats.url("tls"),
        &env(&[("MARKETPRISM_NATS_TLS_CA", &other.ca)]),
    )
    .await;
    assert!(
        log.contains("error: TLS with the NATS server failed (nats.tls.ca): invalid peer certificate: UnknownIssuer"),
        "{}",
        tail(&log)
    );
}

/// The publish permissions the service needs, for the default names (docs/security.md,
/// "NATS"); its only subscription is its inbox, `<nats.inbox_prefix>.>`.
fn minimal_publish() -> Vec<String> {
    let mut allow = vec!["$JS.API.INFO".to_string()];
    for s in ["MARKET_DATA", "MARKET_DATA_HF"] {
        allow.extend([
            format!("$JS.API.STREAM.INFO.{s}"),
            format!("$JS.API.STREAM.CREATE.{s}"),
            format!("$JS.API.CONSUMER.NAMES.{s}"),
            format!("$JS.API.CONSUMER.*.{s}.>"),
            format!("$JS.API.CONSUMER.MSG.NEXT.{s}.>"),
            format!("$JS.ACK.{s}.>"),
        ]);
    }
    for b in [
        "marketprism_storage_journal",
        "marketprism_storage_journal_leases",
    ] {
        allow.extend([
            format!("$JS.API.STREAM.INFO.KV_{b}"),
            format!("$JS.API.STREAM.CREATE.KV_{b}"),
            format!("$JS.API.STREAM.UPDATE.KV_{b}"),
            format!("$JS.API.DIRECT.GET.KV_{b}.>"),
            format!("$JS.API.CONSUMER.CREATE.KV_{b}"),
            format!("$KV.{b}.>"),
        ]);
    }
    allow
}

/// The service's user with exactly `publish` (and its own inbox, `_INBOX_svc.>`, to subscribe:
/// `svc_env` sets `nats.inbox_prefix`), everything
/// else denied; an `admin` user for the test's publisher.
fn permissions_conf(publish: &[String]) -> String {
    let list: Vec<String> = publish.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "authorization {{\n  users: [\n    {{ user: svc, password: \"{PASSWORD}\", permissions: {{ publish: {{ allow: [{}] }}, subscribe: {{ allow: [\"_INBOX_svc.>\"] }} }} }}\n    {{ user: admin, password: admin }}\n  ]\n}}\n",
        list.join(", ")
    )
}

fn svc_env() -> Env {
    env(&[
        ("MARKETPRISM_NATS_USER", "svc"),
        ("MARKETPRISM_NATS_PASSWORD", PASSWORD),
        ("MARKETPRISM_NATS_INBOX_PREFIX", "_INBOX_svc"),
    ])
}

fn admin_env() -> Env {
    env(&[
        ("MARKETPRISM_NATS_USER", "admin"),
        ("MARKETPRISM_NATS_PASSWORD", "admin"),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_minimal_permissions_are_enough() {
    let nats = ConfiguredNats::start(&permissions_conf(&minimal_publish())).await;
    let (took, log) = stores_every_message(&nats.url("nats"), &svc_env(), &admin_env()).await;
    let server = nats.log_text();
    assert!(
        !server.contains("Violation"),
        "the server refused something:\n{server}"
    );
    assert!(!log.contains("denied a permission"), "{}", tail(&log));
    eprintln!("minimal permissions: {N} trades stored in {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_permission_is_logged_naming_the_subject_and_fails_ready() {
    let publish: Vec<String> = minimal_publish()
        .into_iter()
        .filter(|s| s != "$JS.API.CONSUMER.MSG.NEXT.MARKET_DATA_HF.>")
        .collect();
    let nats = ConfiguredNats::start(&permissions_conf(&publish)).await;
    let ch = TestClickHouse::start().await;
    let mut svc = Service::with_yaml(&nats.url("nats"), &ch, TEST_CONFIG);
    svc.env.extend(svc_env());
    svc.start();
    let want = "NATS denied a permission the service needs (docs/security.md, \"NATS\": minimal permissions); the operation is retried";
    let subject = "Permissions Violation for Publish to \"$JS.API.CONSUMER.MSG.NEXT.MARKET_DATA_HF.marketprism_storage_trade\"";
    let ok = crate::harness::wait_until(60, || async {
        let log = svc.log_text();
        log.contains(want) && log.contains(subject)
    })
    .await;
    assert!(ok, "{}", tail(&svc.log_text()));
    // And /ready says so (the last denial: every type of that stream is denied its pulls): a
    // denied pull looks like an empty one to the reader.
    let ready = crate::harness::wait_until(30, || async {
        crate::harness::http_get(svc.http_port, "/ready")
            .await
            .is_some_and(|(code, body)| {
                code == 503
                    && body.contains(r#"nats: permission denied: Publish to \"$JS.API.CONSUMER.MSG.NEXT.MARKET_DATA_HF."#)
            })
    })
    .await;
    assert!(
        ready,
        "{:?}",
        crate::harness::http_get(svc.http_port, "/ready").await
    );
    assert_eq!(svc.terminate(), Some(0));
}

/// A service started while its NATS server is down, once it logged that it waits for it.
async fn waiting_for_nats() -> (crate::harness::TestNats, TestClickHouse, Service) {
    let mut nats = crate::harness::TestNats::start().await;
    nats.kill().await;
    let ch = TestClickHouse::start().await;
    let mut svc = Service::new(&nats, &ch, "");
    svc.start();
    let waiting = crate::harness::wait_until(30, || async {
        svc.log_text().contains("nats not reachable")
    })
    .await;
    assert!(waiting, "{}", tail(&svc.log_text()));
    (nats, ch, svc)
}

/// The first connect waits for a server that is not up yet (logged, retried on `retry.*`),
/// unlike a refused credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_not_up_yet_is_waited_for() {
    let (mut nats, ch, mut svc) = waiting_for_nats().await;
    assert!(svc.running());
    nats.restart().await;
    let client = nats.client().await;
    wait_for_streams(&client).await;
    publish_trades(&client, 0, N, chrono::Utc::now().timestamp_millis()).await;
    assert_exactly_once(&ch, N, &svc).await;
    assert_eq!(svc.terminate(), Some(0));
}

/// Drains a backlog of `n` trades published before the service starts; returns the rate
/// between the first and the last row (rows/s), the start-up excluded.
async fn drain_rate(url: &str, svc_env: &Env, n: u64) -> f64 {
    let ch = TestClickHouse::start().await;
    let client = nats::connect_once(&config(url, svc_env).nats, "test publisher")
        .await
        .unwrap();
    crate::harness::create_streams(&client).await;
    publish_trades(&client, 0, n, chrono::Utc::now().timestamp_millis()).await;
    let mut svc = Service::with_yaml(url, &ch, TEST_CONFIG);
    svc.env.extend(svc_env.iter().cloned());
    svc.start();
    let count = || async {
        let out = ch
            .query("SELECT count() FROM system.tables WHERE database = 'marketprism_hot' AND name = 'trades'")
            .await;
        if out == "1" {
            ch.count("marketprism_hot.trades").await
        } else {
            0
        }
    };
    let mut first: Option<(Instant, u64)> = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let c = count().await;
        if c > 0 && first.is_none() {
            first = Some((Instant::now(), c));
        }
        if c >= n || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (t, c0) = first.unwrap();
    let rate = (n - c0) as f64 / t.elapsed().as_secs_f64();
    assert_exactly_once(&ch, n, &svc).await;
    assert_eq!(svc.terminate(), Some(0));
    rate
}

/// A rough figure, not a benchmark (the machine is shared): the ingest rate of a backlog over
/// plain TCP and over mutual TLS, same server otherwise. Both must store every message once;
/// the rates are printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_rate_over_tls_and_plain() {
    const BACKLOG: u64 = 100_000;
    let plain = ConfiguredNats::start("").await;
    let plain_rate = drain_rate(&plain.url("nats"), &Env::new(), BACKLOG).await;
    let files = Files::new();
    let p = pki(&files, "a");
    let tls = ConfiguredNats::start(&tls_conf(&p, "  verify: true\n")).await;
    let e = env(&[
        ("MARKETPRISM_NATS_TLS_CA", &p.ca),
        ("MARKETPRISM_NATS_TLS_CERT", &p.client_cert),
        ("MARKETPRISM_NATS_TLS_KEY", &p.client_key),
    ]);
    let tls_rate = drain_rate(&tls.url("tls"), &e, BACKLOG).await;
    eprintln!(
        "backlog of {BACKLOG} trades: plain {plain_rate:.0} rows/s, mutual TLS {tls_rate:.0} rows/s ({:.0} % of plain)",
        100.0 * tls_rate / plain_rate
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_required_by_the_client_of_a_server_without_tls_fails_the_start() {
    let nats = ConfiguredNats::start("").await;
    let log = fails_at_start(&nats.url("tls"), &Env::new()).await;
    assert!(
        log.contains("error: TLS with the NATS server failed (nats.tls.required): the server does not speak TLS (a tls:// URL or a nats.tls key requires it): received corrupt message of type InvalidContentType"),
        "{}",
        tail(&log)
    );
}

/// A stop while the first connect waits for NATS ends the service at once, cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_while_waiting_for_nats_at_start_exits_cleanly() {
    let (_nats, _ch, mut svc) = waiting_for_nats().await;
    let t0 = Instant::now();
    assert_eq!(svc.terminate(), Some(0), "{}", tail(&svc.log_text()));
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert!(svc.log_text().contains("stopped before NATS was reached"));
}
