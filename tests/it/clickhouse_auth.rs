//! ClickHouse auth and TLS for real: the embedded engine serving HTTPS with a private CA made
//! here (`rcgen`), client certificates required, a password; the real service storing rows
//! through it, hot and cold on separate servers with their own CA and password; credentials
//! only in headers; a wrong password failing the start; the embedded server the service starts
//! refusing `file()` and `INTO OUTFILE`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use marketprism_storage::embedded::{ChServerOptions, EmbeddedClickHouse, free_port};
use marketprism_storage::schema::{self, Layout, Tier};
use marketprism_storage::sink::tls::{ClientTls, TlsFiles};
use marketprism_storage::sink::{Sink, SinkOptions};

use crate::harness::{
    Service, TEST_CONFIG, TestNats, publish_acked, tools, tools_dir, wait_for_streams, wait_until,
};
use crate::ingest::tail;
use crate::proxy::Proxy;

const HOT: &str = "marketprism_hot";
const COLD: &str = "marketprism_cold";

/// A private CA and, signed by it, a server certificate for 127.0.0.1/localhost and a client
/// certificate, as PEM files in a temp dir.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        };
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Each certificate its own name: a leaf named like its issuer looks self-signed.
        ca_params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("MarketPrism test CA {}", rand::random::<u32>()),
        );
        let ca = ca_params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        for (name, sans, usage) in [
            (
                "server",
                vec!["127.0.0.1".to_string(), "localhost".to_string()],
                ExtendedKeyUsagePurpose::ServerAuth,
            ),
            (
                "client",
                vec!["marketprism-storage".to_string()],
                ExtendedKeyUsagePurpose::ClientAuth,
            ),
        ] {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(sans).unwrap();
            params.extended_key_usages = vec![usage];
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            let cert = params.signed_by(&key, &issuer).unwrap();
            std::fs::write(dir.path().join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.path().join(format!("{name}.key")), key.serialize_pem()).unwrap();
        }
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn show(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// The client side: trust this CA, show the client certificate when `mtls`.
    fn client_tls(&self, mtls: bool) -> ClientTls {
        ClientTls::load(&TlsFiles {
            ca: Some(self.path("ca.pem")),
            cert: mtls.then(|| self.path("client.pem")),
            key: mtls.then(|| self.path("client.key")),
        })
        .unwrap()
    }
}

/// An embedded ClickHouse with a password and, given a PKI, HTTPS (client certificates
/// required when `mtls`).
struct GuardedClickHouse {
    server: Option<EmbeddedClickHouse>,
    _dir: tempfile::TempDir,
    url: String,
    port: u16,
}

impl GuardedClickHouse {
    async fn start(pki: Option<&Pki>, password: &str, mtls: bool) -> GuardedClickHouse {
        let dir = tempfile::tempdir().unwrap();
        let options = ChServerOptions {
            user: Some("writer".into()),
            password: Some(password.into()),
            tls: pki.map(|p| (p.path("server.pem"), p.path("server.key"))),
            tls_client_ca: pki.filter(|_| mtls).map(|p| p.path("ca.pem")),
            allow_external: false,
        };
        let server = EmbeddedClickHouse::start_with(
            &tools(),
            dir.path(),
            "127.0.0.1:0",
            "warning",
            &options,
        )
        .await
        .unwrap();
        let (url, port) = (server.url.clone(), server.port);
        GuardedClickHouse {
            server: Some(server),
            _dir: dir,
            url,
            port,
        }
    }
}

impl Drop for GuardedClickHouse {
    fn drop(&mut self) {
        // kill_on_drop stops the child.
        self.server.take();
    }
}

/// A sink on `url`'s `db` as user `writer` with `password` and `tls`.
fn sink(url: &str, db: &str, password: &str, tls: Option<ClientTls>) -> Sink {
    let mut o = SinkOptions::new(url, db);
    o.user = Some("writer".into());
    o.password = Some(password.into());
    o.tls = tls;
    Sink::new(&o)
}

/// A service (not started) on `ch` over HTTPS, trusting the CA of `pkis.0`, showing the client
/// certificate of `pkis.1`, as user `writer` with `password`.
fn https_service(
    nats: &TestNats,
    ch: &GuardedClickHouse,
    pkis: (&Pki, &Pki),
    password: &str,
) -> Service {
    let (ca, client) = pkis;
    let mut svc = Service::on_port(&nats.url, ch.port, TEST_CONFIG);
    for (k, v) in [
        ("CLICKHOUSE_SECURE", "true".to_string()),
        ("CLICKHOUSE_TLS_CA", ca.show("ca.pem")),
        ("CLICKHOUSE_TLS_CERT", client.show("client.pem")),
        ("CLICKHOUSE_TLS_KEY", client.show("client.key")),
        ("CLICKHOUSE_USER", "writer".into()),
        ("CLICKHOUSE_PASSWORD", password.into()),
    ] {
        svc.set_env(k, &v);
    }
    svc
}

async fn publish_trades(client: &async_nats::Client, n: u64) {
    let now = chrono::Utc::now().timestamp_millis();
    publish_acked(
        client,
        (0..n).map(|i| {
            let body = format!(
                r#"{{"symbol":"BTC-USDT","price":"66990.5","quantity":"0.01","side":"buy","trade_id":"tls-{i}","exchange":"binance","market_type":"spot","data_source":"marketprism","data_type":"trade","ts_ms":{now},"trade_ts_ms":{now}}}"#
            );
            ("trade.binance.spot.BTC-USDT".to_string(), body)
        }),
    )
    .await;
}

async fn wait_rows(sink: &Sink, n: u64, svc: &Service) {
    let ok = wait_until(90, || async {
        sink.fetch_count("SELECT count() FROM marketprism_hot.trades")
            .await
            .is_ok_and(|c| c >= n)
    })
    .await;
    assert!(ok, "rows not stored; log:\n{}", tail(&svc.log_text()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_stores_rows_over_https_with_a_private_ca_a_client_certificate_and_a_password() {
    let pki = Pki::new();
    let ch = GuardedClickHouse::start(Some(&pki), "hot-pw-1", true).await;
    assert!(ch.url.starts_with("https://127.0.0.1:"), "{}", ch.url);
    let nats = TestNats::start().await;
    let mut svc = https_service(&nats, &ch, (&pki, &pki), "hot-pw-1");
    svc.start();
    let client = nats.client().await;
    wait_for_streams(&client).await;
    publish_trades(&client, 200).await;
    let reader = sink(&ch.url, HOT, "hot-pw-1", Some(pki.client_tls(true)));
    wait_rows(&reader, 200, &svc).await;
    assert_eq!(
        reader
            .fetch_count("SELECT uniqExact(trade_id) FROM marketprism_hot.trades")
            .await
            .unwrap(),
        200
    );
    // The server really requires each part: no client certificate, a wrong password.
    let no_cert = sink(&ch.url, HOT, "hot-pw-1", Some(pki.client_tls(false)));
    let e = no_cert.fetch_count("SELECT 1").await.unwrap_err();
    assert!(!e.is_auth_failure(), "a TLS failure, not an answer: {e}");
    let wrong = sink(&ch.url, HOT, "nope", Some(pki.client_tls(true)));
    let e = wrong.fetch_count("SELECT 1").await.unwrap_err();
    assert!(e.is_auth_failure(), "{e}");
    assert!(
        e.to_string()
            .contains("writer: Authentication failed: password is incorrect"),
        "{e}"
    );
    // The web roots alone do not trust a private CA.
    let web_roots = sink(
        &ch.url,
        HOT,
        "hot-pw-1",
        Some(
            ClientTls::load(&TlsFiles {
                cert: Some(pki.path("client.pem")),
                key: Some(pki.path("client.key")),
                ..TlsFiles::default()
            })
            .unwrap(),
        ),
    );
    assert!(web_roots.fetch_count("SELECT 1").await.is_err());
    assert_eq!(svc.terminate(), Some(0), "{}", tail(&svc.log_text()));
    assert!(!svc.log_text().contains("hot-pw-1"));
}

/// The binary with the environment of a service on the proxy (HTTP, password).
fn bin_on(port: u16, password: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_marketprism-storage"));
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("MARKETPRISM_TOOLS_DIR", tools_dir())
        .env("CLICKHOUSE_HOST", "127.0.0.1")
        .env("CLICKHOUSE_HTTP_PORT", port.to_string())
        .env("CLICKHOUSE_USER", "writer")
        .env("CLICKHOUSE_PASSWORD", password);
    c
}

fn ok(mut c: Command, args: &[&str]) -> String {
    let out = c.args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{args:?} failed:\n{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_travel_in_headers_never_in_urls_on_every_path() {
    const PW: &str = "hdr-pw-Z9";
    let ch = GuardedClickHouse::start(None, PW, false).await;
    let proxy = Proxy::start(ch.port).await;
    let nats = TestNats::start().await;
    let mut svc = Service::on_port(&nats.url, proxy.port, TEST_CONFIG);
    svc.set_env("CLICKHOUSE_USER", "writer");
    svc.set_env("CLICKHOUSE_PASSWORD", PW);
    svc.start();
    let client = nats.client().await;
    wait_for_streams(&client).await;
    publish_trades(&client, 50).await;
    let reader = sink(&ch.url, HOT, PW, None);
    wait_rows(&reader, 50, &svc).await;
    assert_eq!(svc.terminate(), Some(0));
    // The one-shot commands: schema check, query, migration and its verification, quality.
    for args in [
        &["init", "--check"][..],
        &["query", "SELECT count() FROM marketprism_hot.trades"],
        &["migrate", "--once"],
        &["verify"],
    ] {
        ok(bin_on(proxy.port, PW), args);
    }
    let uris = proxy.uris("");
    let creds = proxy.credentials();
    assert!(uris.len() > 20, "{}", uris.len());
    assert_eq!(uris.len(), creds.len());
    for (uri, c) in uris.iter().zip(&creds) {
        assert!(!uri.contains(PW), "password in a URL: {uri}");
        assert!(
            !uri.contains("password=") && !uri.contains("user="),
            "credentials in a URL: {uri}"
        );
        assert_eq!(c.user.as_deref(), Some("writer"), "{uri}");
        assert_eq!(c.key.as_deref(), Some(PW), "{uri}");
        assert!(!c.authorization, "{uri}");
    }
    assert!(!uris.iter().any(|u| u.contains("INSERT") && u.contains(PW)));
    assert!(uris.iter().any(|u| u.contains("INSERT")), "{uris:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_the_start_with_a_clear_secret_free_error() {
    let ch = GuardedClickHouse::start(None, "right-pw-7", false).await;
    let nats = TestNats::start().await;
    let mut svc = Service::on_port(&nats.url, ch.port, TEST_CONFIG);
    svc.set_env("CLICKHOUSE_USER", "writer");
    svc.set_env("CLICKHOUSE_PASSWORD", "wrong-pw-3");
    svc.start();
    let exited = wait_until(60, || {
        let code = svc.exit_code();
        async move { code.is_some() }
    })
    .await;
    assert!(exited, "still running:\n{}", tail(&svc.log_text()));
    assert_eq!(svc.exit_code(), Some(1));
    let log = svc.log_text();
    let expected = format!(
        "clickhouse at http://127.0.0.1:{} refused the credentials of user writer: Code: 516. DB::Exception: writer: Authentication failed: password is incorrect, or there is no user with such name. (AUTHENTICATION_FAILED) (version 26.9.2.1); check clickhouse.user and clickhouse.password (CLICKHOUSE_USER, CLICKHOUSE_PASSWORD; with the embedded server, embedded.user and embedded.password)",
        ch.port
    );
    assert!(log.contains(&expected), "{log}");
    assert!(
        !log.contains("wrong-pw-3") && !log.contains("right-pw-7"),
        "{log}"
    );
}

/// The binary with hot and cold on their own HTTPS servers.
fn bin_tls(
    hot: (&GuardedClickHouse, &Pki, &str),
    cold: (&GuardedClickHouse, &Pki, &str),
) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_marketprism-storage"));
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("MARKETPRISM_TOOLS_DIR", tools_dir())
        .env("CLICKHOUSE_HOST", "127.0.0.1")
        .env("CLICKHOUSE_HTTP_PORT", hot.0.port.to_string())
        .env("CLICKHOUSE_SECURE", "true")
        .env("CLICKHOUSE_TLS_CA", hot.1.show("ca.pem"))
        .env("CLICKHOUSE_TLS_CERT", hot.1.show("client.pem"))
        .env("CLICKHOUSE_TLS_KEY", hot.1.show("client.key"))
        .env("CLICKHOUSE_USER", "writer")
        .env("CLICKHOUSE_PASSWORD", hot.2)
        .env("COLD_CLICKHOUSE_HOST", "127.0.0.1")
        .env("COLD_CLICKHOUSE_HTTP_PORT", cold.0.port.to_string())
        .env("COLD_CLICKHOUSE_TLS_CA", cold.1.show("ca.pem"))
        .env("COLD_CLICKHOUSE_PASSWORD", cold.2);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_and_cold_on_their_own_https_servers_with_their_own_ca_and_password() {
    const HOUR: i64 = 3_600_000;
    let (hot_pki, cold_pki) = (Pki::new(), Pki::new());
    let hot = GuardedClickHouse::start(Some(&hot_pki), "hot-pw-2", true).await;
    let cold = GuardedClickHouse::start(Some(&cold_pki), "cold-pw-2", false).await;
    let hot_sink = sink(
        &hot.url,
        "system",
        "hot-pw-2",
        Some(hot_pki.client_tls(true)),
    );
    let cold_sink = sink(
        &cold.url,
        "system",
        "cold-pw-2",
        Some(cold_pki.client_tls(false)),
    );
    marketprism_storage::sink::ddl::apply(
        &hot_sink,
        &schema::database_ddl(HOT, Tier::Hot, &Layout::Single),
    )
    .await
    .unwrap();
    marketprism_storage::sink::ddl::apply(
        &cold_sink,
        &schema::database_ddl(COLD, Tier::Cold, &Layout::Single),
    )
    .await
    .unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let (from, to, n) = (now - 30 * HOUR, now - 10 * HOUR, 3_000);
    hot_sink
        .execute(&format!(
            "INSERT INTO {HOT}.trades (timestamp, exchange, market_type, symbol, trade_id, price, quantity, side, is_maker, trade_time) \
             SELECT fromUnixTimestamp64Milli(toInt64({from} + number * {}), 'UTC') AS ts, 'okx', 'spot', 'BTC-USDT', \
                    toString(number), toDecimal64(100, 8), toDecimal64('0.5', 8), 'buy', false, ts FROM numbers({n})",
            (to - from) / n
        ))
        .await
        .unwrap();
    // The cold CA alone does not trust the hot server: each side has its own.
    let crossed = sink(&hot.url, HOT, "hot-pw-2", Some(cold_pki.client_tls(false)));
    assert!(crossed.fetch_count("SELECT 1").await.is_err());
    let hot_env = (&hot, &hot_pki, "hot-pw-2");
    let cold_env = (&cold, &cold_pki, "cold-pw-2");
    ok(bin_tls(hot_env, cold_env), &["migrate", "--once"]);
    assert_eq!(
        cold_sink
            .fetch_count(&format!("SELECT count() FROM {COLD}.trades"))
            .await
            .unwrap(),
        n as u64
    );
    ok(bin_tls(hot_env, cold_env), &["verify"]);
    // A wrong cold password is refused by the cold server.
    let out = bin_tls(hot_env, (&cold, &cold_pki, "cold-wrong"))
        .args(["migrate", "--once"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("AUTHENTICATION_FAILED"), "{text}");
    assert!(
        !text.contains("cold-wrong") && !text.contains("hot-pw-2"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_server_the_service_starts_is_guarded_and_still_stores_rows() {
    let pki = Pki::new();
    let nats = TestNats::start().await;
    let port = free_port().unwrap();
    let yaml = format!(
        "{TEST_CONFIG}clickhouse:\n  tls:\n    ca: {ca}\n    cert: {cert}\n    key: {key}\nembedded:\n  listen: 127.0.0.1:{port}\n  user: writer\n  tls:\n    cert: {scert}\n    key: {skey}\n    client_ca: {ca}\n",
        ca = pki.show("ca.pem"),
        cert = pki.show("client.pem"),
        key = pki.show("client.key"),
        scert = pki.show("server.pem"),
        skey = pki.show("server.key"),
    );
    let mut svc = Service::on_port(&nats.url, port, &yaml);
    svc.env
        .retain(|(k, _)| k != "CLICKHOUSE_HOST" && k != "CLICKHOUSE_HTTP_PORT");
    svc.set_env("MARKETPRISM_EMBEDDED_PASSWORD", "emb-pw-4");
    svc.start();
    let client = nats.client().await;
    wait_for_streams(&client).await;
    publish_trades(&client, 100).await;
    let url = format!("https://127.0.0.1:{port}");
    let reader = sink(&url, HOT, "emb-pw-4", Some(pki.client_tls(true)));
    wait_rows(&reader, 100, &svc).await;
    // Its guard: file() and INTO OUTFILE refused, with the way to allow them.
    let out = std::env::temp_dir().join(format!("mp-outfile-{port}.txt"));
    for sql in [
        "SELECT * FROM file('/etc/hostname', 'LineAsString')".to_string(),
        format!("SELECT 1 INTO OUTFILE '{}'", out.display()),
    ] {
        let e = reader.execute(&sql).await.unwrap_err();
        assert_eq!(e.code(), Some(497), "{sql}: {e}");
        let text = e.to_string();
        assert!(
            text.contains("is refused by the embedded ClickHouse: it reaches the filesystem, the network or other processes; to allow it, start the embedded server with external access allowed (embedded.allow_external: true; chserver.py --allow-external)"),
            "{text}"
        );
    }
    assert!(!out.exists());
    // Its password: the service's own client used it (rows are stored); others need it.
    let e = sink(&url, HOT, "", Some(pki.client_tls(true)))
        .fetch_count("SELECT 1")
        .await
        .unwrap_err();
    assert!(e.is_auth_failure(), "{e}");
    assert_eq!(svc.terminate(), Some(0), "{}", tail(&svc.log_text()));
    let log = svc.log_text();
    assert!(!log.contains("emb-pw-4"), "{log}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_loopback_embedded_listen_without_a_password_refuses_to_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_marketprism-storage"))
        .arg("run")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("MARKETPRISM_TOOLS_DIR", tools_dir())
        .env("MARKETPRISM_CONFIG", {
            let f = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(f.path(), "embedded:\n  listen: 0.0.0.0:18123\n").unwrap();
            f.into_temp_path().keep().unwrap()
        })
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("embedded.listen: 0.0.0.0:18123 is reachable from other machines: set embedded.password (MARKETPRISM_EMBEDDED_PASSWORD) or listen on 127.0.0.1"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_the_other_side_does_not_trust_fails_the_start() {
    let (pki, other) = (Pki::new(), Pki::new());
    let ch = GuardedClickHouse::start(Some(&pki), "tls-pw-5", true).await;
    let nats = TestNats::start().await;
    // (CA, client certificate dir, the rustls reason expected)
    let cases = [
        (&other, &pki, "invalid peer certificate: UnknownIssuer"),
        (&pki, &other, "received fatal alert: "),
    ];
    for (ca, client, reason) in cases {
        let mut svc = https_service(&nats, &ch, (ca, client), "tls-pw-5");
        svc.start();
        let exited = wait_until(60, || {
            let code = svc.exit_code();
            async move { code.is_some() }
        })
        .await;
        let log = svc.log_text();
        assert!(exited, "still running:\n{}", tail(&log));
        assert_eq!(svc.exit_code(), Some(1), "{log}");
        let expected = format!(
            "error: clickhouse at https://127.0.0.1:{}: the TLS handshake failed: {reason}",
            ch.port
        );
        assert!(log.contains(&expected), "{log}");
        eprintln!(
            "{}",
            log.lines().find(|l| l.starts_with("error:")).unwrap_or("")
        );
        assert!(
            log.contains("; check clickhouse.tls.ca (the CA that signed the server's certificate, for its name) and clickhouse.tls.cert/clickhouse.tls.key (a client certificate the server accepts)"),
            "{log}"
        );
        assert!(!log.contains("tls-pw-5"), "{log}");
    }
}
