//! No secret in sight (issue 12): known, distinctive secrets set by the configuration file and
//! by the environment are fed through every path that prints — `--help`, `config` (pretty
//! and JSON logs, and a config error), the start-up and running logs at debug level, a
//! wrong-password start, every ops answer (`/`, `/login`, `/stats`, `/api/v1/status`,
//! `/metrics`, `/ready`, `/health`), the command lines of the service and of its children
//! (the embedded ClickHouse) and the children's environment, a ClickHouse error that echoes
//! the password, and what the service writes into NATS (the journal and lease
//! buckets, its durables) — and every byte of it is searched for every form of every secret.
//! Panics are covered by `redact`'s unit test (the hook is the one `main` installs).
//!
//! The secrets live in one list, [`SECRETS`]: a new secret key is one line there plus the
//! line of the configuration that sets it.

use crate::harness::{ConfiguredNats, Service, TEST_CONFIG, TestClickHouse, TestNats, wait_until};
use crate::proxy::{Fault, Proxy};
use marketprism_storage::embedded::free_port;

/// Every secret the test sets: `(where it is set, value)`. Values are distinctive (no log
/// line could contain them by chance) and at least `redact::MIN_LEN` long; one holds the
/// characters JSON and Debug escape.
const SECRETS: &[(&str, &str)] = &[
    ("nats.url password, env MARKETPRISM_NATS_URL", NATS_PASSWORD),
    (
        "nats.url password of the wrong-password start",
        NATS_WRONG_PASSWORD,
    ),
    (
        "clickhouse.password and embedded.password (given to the engine on its stdin), file",
        CH_PASSWORD,
    ),
    (
        "cold_clickhouse.password, env COLD_CLICKHOUSE_PASSWORD",
        COLD_PASSWORD,
    ),
    ("http.token, env MARKETPRISM_HTTP_TOKEN", OPS_TOKEN),
];

const NATS_USER: &str = "leaktest";
const NATS_PASSWORD: &str = "natsPW-leak-7Hq2x";
const NATS_WRONG_PASSWORD: &str = "natsWRONG-leak-5Tn1p";
const CH_PASSWORD: &str = r#"chPW-leak-"q\uoted"-9Zr"#;
const COLD_PASSWORD: &str = "coldPW-leak-4Kd8s";
const OPS_TOKEN: &str = "opsTOKEN-leak-2Wv6m";

/// The forms a secret can take in printed text: as is, JSON- and Debug-escaped (and both, a
/// `?field` in a JSON log line), percent-encoded (computed here, independently of `redact`).
fn forms(secret: &str) -> Vec<String> {
    let json = serde_json::to_string(secret).unwrap();
    let debug = format!("{secret:?}");
    let mut encoded = String::new();
    for b in secret.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    let debug = &debug[1..debug.len() - 1];
    let json_debug = serde_json::to_string(debug).unwrap();
    let mut all = vec![
        secret.to_string(),
        json[1..json.len() - 1].to_string(),
        debug.to_string(),
        json_debug[1..json_debug.len() - 1].to_string(),
        encoded,
    ];
    all.sort();
    all.dedup();
    all
}

/// Everything the test saw, by where it came from.
#[derive(Default)]
struct Seen(Vec<(String, String)>);

impl Seen {
    fn add(&mut self, what: impl Into<String>, text: impl Into<String>) {
        self.0.push((what.into(), text.into()));
    }

    /// Fails naming each place a form of a secret appeared in.
    fn assert_clean(&self) {
        let mut leaks = Vec::new();
        for (secret_where, secret) in SECRETS {
            for form in forms(secret) {
                for (what, text) in &self.0 {
                    if let Some(at) = text.find(&form) {
                        let from = text[..at].char_indices().rev().nth(120).map_or(0, |c| c.0);
                        let to = (at + form.len() + 120).min(text.len());
                        let to = (to..=text.len())
                            .find(|i| text.is_char_boundary(*i))
                            .unwrap_or(text.len());
                        leaks.push(format!(
                            "{secret_where} ({form:?}) in {what}: …{}…",
                            &text[from..to]
                        ));
                    }
                }
            }
        }
        assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
    }
}

/// A `nats-server` that requires `NATS_USER`/`NATS_PASSWORD`: the wrong-password start.
async fn auth_nats() -> ConfiguredNats {
    ConfiguredNats::start(&format!(
        "authorization {{\n  user: {NATS_USER}\n  password: {NATS_PASSWORD}\n}}"
    ))
    .await
}

/// `nats://NATS_USER:<password>@` the server.
fn url_with(server: &ConfiguredNats, password: &str) -> String {
    format!("nats://{NATS_USER}:{password}@127.0.0.1:{}", server.port)
}

/// One HTTP request over a raw connection: the whole answer (head and body) as text.
async fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return String::new();
    };
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    if s.write_all(req.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    String::from_utf8_lossy(&buf).into_owned()
}

/// Runs the binary with `args` in `svc`'s environment (plus `extra`): exit code and
/// stdout + stderr.
fn run_binary(svc: &Service, args: &[&str], extra: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_marketprism-storage"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(svc.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .envs(extra.iter().copied())
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// Sets `var` in `svc`'s environment (replacing the harness's value).
fn set_env(svc: &mut Service, var: &str, value: &str) {
    svc.env.retain(|(k, _)| k != var);
    svc.env.push((var.to_string(), value.to_string()));
}

/// The pids of `pid`'s descendants (children, grandchildren, …).
fn descendants(pid: i32) -> Vec<i32> {
    let parent_of = |p: i32| -> Option<i32> {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        // `pid (comm) state ppid …`: the name may hold spaces, so read after the last `)`.
        stat.rsplit(')')
            .next()?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let all: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let mut found = vec![pid];
    loop {
        let more: Vec<i32> = all
            .iter()
            .copied()
            .filter(|p| !found.contains(p))
            .filter(|p| parent_of(*p).is_some_and(|pp| found.contains(&pp)))
            .collect();
        if more.is_empty() {
            break;
        }
        found.extend(more);
    }
    found.retain(|p| *p != pid);
    found
}

fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Every subject, header and payload of every key-value bucket, and every durable's name and
/// description, of the server `client` is on.
async fn nats_contents(client: &async_nats::Client) -> String {
    use futures::StreamExt;
    let js = async_nats::jetstream::new(client.clone());
    let mut out = String::new();
    let names: Vec<String> = js
        .stream_names()
        .filter_map(|n| async { n.ok() })
        .collect()
        .await;
    for name in names {
        let mut stream = js.get_stream(&name).await.unwrap();
        let info = stream.info().await.unwrap().clone();
        out.push_str(&format!("stream {name}: {:?}\n", info.config));
        let mut consumers = stream.consumers();
        while let Some(Ok(c)) = consumers.next().await {
            out.push_str(&format!("consumer {}: {:?}\n", c.name, c.config));
        }
        if !name.starts_with("KV_") {
            continue;
        }
        for seq in info.state.first_sequence..=info.state.last_sequence {
            if let Ok(m) = stream.get_raw_message(seq).await {
                out.push_str(&format!(
                    "{} {:?} {}\n",
                    m.subject,
                    m.headers,
                    String::from_utf8_lossy(&m.payload)
                ));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_never_appears_in_output_logs_errors_or_stats() {
    let nats = TestNats::start().await;
    let auth_nats = auth_nats().await;
    let nats_url = nats.url.replacen(
        "nats://",
        &format!("nats://{NATS_USER}:{NATS_PASSWORD}@"),
        1,
    );
    let cold = TestClickHouse::start().await;
    let listen = format!("127.0.0.1:{}", free_port().unwrap());
    // By file: the hot password (a JSON string is a YAML double-quoted scalar) and the cold
    // server; by env: the NATS URL's password, the cold password and the ops token.
    let yaml = format!(
        "{TEST_CONFIG}clickhouse:\n  password: {}\ncold_clickhouse:\n  host: 127.0.0.1\n  http_port: {}\nembedded:\n  listen: \"{listen}\"\n  password: {}\nmigration:\n  enabled: true\n  interval: 2s\n",
        serde_json::to_string(CH_PASSWORD).unwrap(),
        cold.port,
        serde_json::to_string(CH_PASSWORD).unwrap(),
    );
    let mut svc = Service::with_yaml(&nats_url, &cold, &yaml);
    set_env(&mut svc, "CLICKHOUSE_HOST", "embedded");
    set_env(&mut svc, "COLD_CLICKHOUSE_PASSWORD", COLD_PASSWORD);
    set_env(&mut svc, "MARKETPRISM_HTTP_TOKEN", OPS_TOKEN);
    set_env(&mut svc, "LOG_LEVEL", "debug");
    let mut seen = Seen::default();

    // --help (clap shows some variables' values) and `config`, as text and with JSON logs.
    for args in [
        &["--help"][..],
        &["run", "--help"],
        &["config", "--help"],
        &["config"],
        &["--log-format", "json", "config"],
    ] {
        let (code, text) = run_binary(&svc, args, &[]);
        assert_eq!(code, Some(0), "{args:?}: {text}");
        seen.add(format!("`{}`", args.join(" ")), text);
    }
    let (_, config) = run_binary(&svc, &["config"], &[]);
    for key in [
        "clickhouse.password",
        "cold_clickhouse.password",
        "http.token",
    ] {
        let line = config.lines().find(|l| l.starts_with(key)).unwrap();
        assert!(line.contains("****"), "{line}");
    }
    assert!(
        config.contains(&format!("nats://{NATS_USER}:***@127.0.0.1")),
        "{config}"
    );
    // The same secrets the other way round (hot password by env, token by file).
    let (code, text) = run_binary(
        &svc,
        &["config"],
        &[
            ("CLICKHOUSE_PASSWORD", CH_PASSWORD),
            ("MARKETPRISM_HTTP_TOKEN", ""),
        ],
    );
    assert_eq!(code, Some(0), "{text}");
    seen.add("`config`, password by env", text);
    // A configuration error quoting the URL.
    let bad = format!("http://{NATS_USER}:{NATS_PASSWORD}@127.0.0.1:1");
    let (code, text) = run_binary(&svc, &["config"], &[("MARKETPRISM_NATS_URL", &bad)]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("scheme must be nats://"), "{text}");
    seen.add("`config` with a bad nats.url", text);

    // The service at debug level: start-up, NATS, the embedded ClickHouse, the migration.
    svc.start();
    let port = svc.http_port;
    let auth = format!("Bearer {OPS_TOKEN}");
    let ready = wait_until(120, || {
        let auth = auth.clone();
        async move {
            request(port, "GET", "/ready", &[("Authorization", &auth)], "")
                .await
                .starts_with("HTTP/1.1 200")
        }
    })
    .await;
    assert!(ready, "service not ready; log:\n{}", svc.log_text());
    let client = nats.client().await;
    let now = marketprism_storage::pipeline::stats::now_ms();
    let js = async_nats::jetstream::new(client.clone());
    for i in 0..20 {
        let body = crate::ingest::trade_body(i, now);
        js.publish("trade.binance.spot.BTC-USDT", body.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    // A dead letter too (its reason is an error text).
    js.publish("trade.binance.spot.BTC-USDT", "not json".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let stored = wait_until(60, || async move {
        let body = request(
            port,
            "GET",
            "/stats",
            &[("Authorization", &format!("Bearer {OPS_TOKEN}"))],
            "",
        )
        .await;
        body.contains("\"dead_letters\":1")
    })
    .await;
    assert!(stored, "messages not stored; log:\n{}", svc.log_text());

    // Every ops answer, by header and by the login's cookie.
    for path in [
        "/",
        "/stats",
        "/api/v1/status",
        "/metrics",
        "/ready",
        "/health",
    ] {
        let text = request(port, "GET", path, &[("Authorization", &auth)], "").await;
        assert!(text.starts_with("HTTP/1.1 200"), "{path}: {text}");
        seen.add(format!("GET {path}"), text);
    }
    for path in ["/", "/stats", "/login", "/?token=x"] {
        seen.add(
            format!("GET {path} without token"),
            request(port, "GET", path, &[], "").await,
        );
    }
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let login = request(port, "POST", "/login", &form, &format!("token={OPS_TOKEN}")).await;
    assert!(login.starts_with("HTTP/1.1 303"), "{login}");
    let cookie = login
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_string();
    seen.add("POST /login", login);
    seen.add(
        "POST /login, wrong token",
        request(port, "POST", "/login", &form, "token=wrong").await,
    );
    for path in ["/", "/stats", "/metrics"] {
        let text = request(port, "GET", path, &[("Cookie", &cookie)], "").await;
        assert!(text.starts_with("HTTP/1.1 200"), "{path}: {text}");
        seen.add(format!("GET {path} with the session cookie"), text);
    }

    // Command lines: the service's and its children's (the embedded ClickHouse).
    let pid = svc.pid().unwrap().as_raw();
    let children = descendants(pid);
    assert!(!children.is_empty(), "no embedded clickhouse child");
    assert!(
        children.iter().any(|c| cmdline(*c).contains("chserver.py")),
        "{:?}",
        children.iter().map(|c| cmdline(*c)).collect::<Vec<_>>()
    );
    seen.add(format!("/proc/{pid}/cmdline"), cmdline(pid));
    for p in children {
        seen.add(format!("/proc/{p}/cmdline"), cmdline(p));
        // The service's own environment holds secrets (that is how they are given); its
        // children get none of them.
        let environ = std::fs::read(format!("/proc/{p}/environ")).unwrap_or_default();
        seen.add(
            format!("/proc/{p}/environ"),
            String::from_utf8_lossy(&environ).replace('\0', "\n"),
        );
    }

    // What the service wrote into NATS: journal, leases and members, durables, streams.
    let contents = nats_contents(&client).await;
    assert!(contents.contains("KV_"), "{contents}");
    seen.add("nats buckets and durables", contents);

    assert_eq!(svc.terminate(), Some(0), "{}", svc.log_text());
    let log = svc.log_text();
    // The debug log did carry the paths this test is about.
    assert!(log.contains("DEBUG"), "not at debug level");
    assert!(log.contains("embedded clickhouse started"), "{log}");
    seen.add("service log (debug)", log);

    // A wrong NATS password at start: the error, logged as JSON, and the ops answers meanwhile.
    let mut wrong = Service::with_yaml(&url_with(&auth_nats, NATS_WRONG_PASSWORD), &cold, &yaml);
    set_env(&mut wrong, "CLICKHOUSE_HOST", "embedded");
    set_env(&mut wrong, "MARKETPRISM_HTTP_TOKEN", OPS_TOKEN);
    set_env(&mut wrong, "MARKETPRISM_LOG_JSON", "1");
    set_env(&mut wrong, "LOG_LEVEL", "debug");
    wrong.start();
    let refused = wait_until(90, || {
        let log = wrong.log_text().to_ascii_lowercase();
        async move { log.contains("authorization violation") }
    })
    .await;
    let wport = wrong.http_port;
    for path in ["/stats", "/ready", "/metrics"] {
        seen.add(
            format!("GET {path} during the wrong-password start"),
            request(wport, "GET", path, &[("Authorization", &auth)], "").await,
        );
    }
    wrong.terminate();
    let log = wrong.log_text();
    assert!(refused, "no authorization error within 90 s:\n{log}");
    seen.add("service log (json), wrong nats password", log);

    // A ClickHouse (here a proxy in front of it) that refuses the password and echoes it back
    // in its error: the text reaches the log and the ops answers masked.
    let proxy = Proxy::start(cold.port).await;
    proxy.set(Fault::Status(
        500,
        format!("Code: 516. DB::Exception: default: Authentication failed: the client sent the password {CH_PASSWORD}. (AUTHENTICATION_FAILED)"),
    ));
    let echo_yaml = format!(
        "{TEST_CONFIG}clickhouse:\n  password: {}\n",
        serde_json::to_string(CH_PASSWORD).unwrap()
    );
    let mut echo = Service::with_yaml(&nats_url, &cold, &echo_yaml);
    set_env(&mut echo, "CLICKHOUSE_HTTP_PORT", &proxy.port.to_string());
    set_env(&mut echo, "MARKETPRISM_HTTP_TOKEN", OPS_TOKEN);
    echo.start();
    let echoed = wait_until(60, || {
        let log = echo.log_text();
        async move { log.contains("AUTHENTICATION_FAILED") }
    })
    .await;
    let eport = echo.http_port;
    for path in ["/stats", "/ready", "/metrics"] {
        seen.add(
            format!("GET {path} while clickhouse echoes the password"),
            request(eport, "GET", path, &[("Authorization", &auth)], "").await,
        );
    }
    echo.terminate();
    let log = echo.log_text();
    assert!(echoed, "the echoing clickhouse was never asked:\n{log}");
    assert!(log.contains("the client sent the password ****."), "{log}");
    seen.add("service log, clickhouse echoing the password", log);

    seen.assert_clean();
}

#[test]
fn ops_off_loopback_without_a_token_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, format!("http:\n  bind: 0.0.0.0\n  port: {port}\n")).unwrap();
    let run = |token: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_marketprism-storage"));
        cmd.args(["run", "--no-init"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("MARKETPRISM_CONFIG", &cfg)
            .env("MARKETPRISM_DATA_DIR", dir.path().join("data"))
            .env("MARKETPRISM_TOOLS_DIR", "/nonexistent");
        if let Some(t) = token {
            cmd.env("MARKETPRISM_HTTP_TOKEN", t);
        }
        cmd.output().unwrap()
    };
    let out = run(None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("http.token: required when http.bind (0.0.0.0) is not a loopback address"),
        "{err}"
    );
    // Refused before anything started: no port bound, no child, no data written.
    assert!(std::net::TcpListener::bind(("0.0.0.0", port)).is_ok());
    assert!(!dir.path().join("data").exists());
    // With a token the configuration passes (the start then fails on the missing tools).
    let out = run(Some("a-long-ops-token"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("http.token"), "{err}");
    assert!(err.contains("not found at /nonexistent"), "{err}");
}
