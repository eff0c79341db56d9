//! Test harness: real `nats-server`s and embedded ClickHouse servers on free ports in temp dirs.
#![allow(dead_code)] // not every test binary build uses every helper
//!
//! Each helper owns its temp directory and kills its process on drop (`kill_on_drop`), so a
//! failing test leaves nothing running. `kill`/`restart` keep the port and the data.

use std::path::PathBuf;

use marketprism_storage::embedded::{EmbeddedClickHouse, EmbeddedNats, Tools, free_port};

/// The tools venv: `MARKETPRISM_TOOLS_DIR`, else `<repo>/.venv`.
pub fn tools_dir() -> PathBuf {
    std::env::var_os("MARKETPRISM_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv"))
}

/// The tools in [`tools_dir`].
pub fn tools() -> Tools {
    Tools::locate(&tools_dir()).unwrap_or_else(|e| panic!("{e}"))
}

/// An embedded ClickHouse for one test.
pub struct TestClickHouse {
    server: Option<EmbeddedClickHouse>,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub url: String,
}

impl TestClickHouse {
    /// Starts a fresh server on a free port.
    pub async fn start() -> TestClickHouse {
        let dir = tempfile::tempdir().unwrap();
        let server = EmbeddedClickHouse::start(&tools(), dir.path(), "127.0.0.1:0")
            .await
            .unwrap();
        let port = server.port;
        let url = server.url.clone();
        TestClickHouse {
            server: Some(server),
            dir,
            port,
            url,
        }
    }

    /// [`TestClickHouse::start`] with a ClickHouse configuration file (`remote_servers`, …)
    /// that the embedded engine loads from its data dir (kept across restarts).
    pub async fn start_with_config(xml: &str) -> TestClickHouse {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("clickhouse-config.xml"), xml).unwrap();
        let server = EmbeddedClickHouse::start(&tools(), dir.path(), "127.0.0.1:0")
            .await
            .unwrap();
        let (port, url) = (server.port, server.url.clone());
        TestClickHouse {
            server: Some(server),
            dir,
            port,
            url,
        }
    }

    /// A client of the official crate pointed at it.
    pub fn client(&self) -> clickhouse::Client {
        clickhouse::Client::default().with_url(&self.url)
    }

    /// Kills it (SIGKILL), keeping its data.
    pub async fn kill(&mut self) {
        if let Some(s) = self.server.take() {
            s.kill().await;
        }
    }

    /// Stops it cleanly.
    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop().await;
        }
    }

    /// Starts it again on the same port and data.
    pub async fn restart(&mut self) {
        self.kill().await;
        let listen = format!("127.0.0.1:{}", self.port);
        let mut last = None;
        for _ in 0..50 {
            match EmbeddedClickHouse::start(&tools(), self.dir.path(), &listen).await {
                Ok(s) => {
                    self.server = Some(s);
                    return;
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        panic!("restart clickhouse: {last:?}");
    }

    /// Runs a query and returns its TabSeparated output, trimmed.
    pub async fn query(&self, sql: &str) -> String {
        let body = http_post(&self.url, sql).await;
        body.trim().to_string()
    }

    /// `SELECT count()` of a table.
    pub async fn count(&self, table: &str) -> u64 {
        let out = self.query(&format!("SELECT count() FROM {table}")).await;
        out.parse()
            .unwrap_or_else(|_| panic!("count of {table}: {out}"))
    }
}

/// A JetStream-enabled nats-server for one test.
pub struct TestNats {
    server: Option<EmbeddedNats>,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub url: String,
}

impl TestNats {
    /// Starts a fresh server on a free port.
    pub async fn start() -> TestNats {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port().unwrap();
        let server = EmbeddedNats::start(&tools(), dir.path(), port, None)
            .await
            .unwrap();
        let url = server.url.clone();
        TestNats {
            server: Some(server),
            dir,
            port,
            url,
        }
    }

    /// A connected client.
    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(&self.url).await.unwrap()
    }

    /// Kills it (SIGKILL), keeping its store.
    pub async fn kill(&mut self) {
        if let Some(s) = self.server.take() {
            s.kill().await;
        }
    }

    /// Starts it again on the same port and store.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.server = Some(
            EmbeddedNats::start(&tools(), self.dir.path(), self.port, None)
                .await
                .unwrap(),
        );
    }
}

/// A real `nats-server` cluster on loopback: `n` nodes with JetStream (a store directory
/// each), client, route and monitoring ports chosen free once and kept across restarts, full
/// mesh routes. Each node's JetStream store is bounded by `max_file_store` as the embedded
/// server's is (otherwise 75 % of the free disk, which refuses the default streams on a small
/// disk). Nodes are named `n0`, `n1`, … (the names JetStream reports as stream leaders).
pub struct TestNatsCluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<ClusterNode>,
}

/// What has a RAFT leader in a cluster: a stream (a key-value bucket is the stream
/// `KV_<bucket>`) or a consumer of one.
#[derive(Debug, Clone, Copy)]
pub enum Led<'a> {
    Stream(&'a str),
    Consumer(&'a str, &'a str),
}

/// One node of a [`TestNatsCluster`].
pub struct ClusterNode {
    child: Option<tokio::process::Child>,
    pub name: String,
    pub port: u16,
    pub route_port: u16,
    pub monitor_port: u16,
    pub conf: PathBuf,
}

impl ClusterNode {
    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Whether it is running (started and not killed).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }
}

impl TestNatsCluster {
    /// Starts `n` nodes and waits until JetStream has a meta leader and every node is healthy.
    pub async fn start(n: usize) -> TestNatsCluster {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16, u16)> = (0..n)
            .map(|_| {
                (
                    free_port().unwrap(),
                    free_port().unwrap(),
                    free_port().unwrap(),
                )
            })
            .collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, r, _)| format!("nats-route://127.0.0.1:{r}"))
            .collect();
        let mut nodes = Vec::new();
        for (i, (port, route_port, monitor_port)) in ports.into_iter().enumerate() {
            let name = format!("n{i}");
            let store = dir.path().join(&name);
            std::fs::create_dir_all(&store).unwrap();
            let conf = dir.path().join(format!("{name}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "server_name: {name}\nlisten: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor_port}\n\
                     jetstream {{\n  store_dir: \"{}\"\n  max_file_store: 1TB\n}}\n\
                     cluster {{\n  name: mp\n  listen: 127.0.0.1:{route_port}\n  routes: [{}]\n}}\n",
                    store.display(),
                    routes.join(", ")
                ),
            )
            .unwrap();
            nodes.push(ClusterNode {
                child: None,
                name,
                port,
                route_port,
                monitor_port,
                conf,
            });
        }
        let mut cluster = TestNatsCluster { dir, nodes };
        for i in 0..n {
            cluster.spawn(i);
        }
        for i in 0..n {
            cluster.wait_healthy(i).await;
        }
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.child = Some(spawn_nats_server(&node.conf, &[]));
    }

    /// Waits until node `i` answers `/healthz` with 200: JetStream is up on it and its
    /// streams are current (caught up with their leaders).
    pub async fn wait_healthy(&self, i: usize) {
        let port = self.nodes[i].monitor_port;
        // Generous: a restarted node catches up while other tests share the two cores.
        let ok = wait_until(120, || async move {
            http_get(port, "/healthz")
                .await
                .is_some_and(|(c, _)| c == 200)
        })
        .await;
        assert!(ok, "node n{i} not healthy within 120 s");
    }

    /// Every node's URL, comma-separated (what `nats.url` is given).
    pub fn urls(&self) -> String {
        let urls: Vec<String> = self.nodes.iter().map(ClusterNode::url).collect();
        urls.join(",")
    }

    /// A client that knows every node (it reconnects to another when its node dies).
    pub async fn client(&self) -> async_nats::Client {
        let urls: Vec<String> = self.nodes.iter().map(ClusterNode::url).collect();
        async_nats::ConnectOptions::new()
            .max_reconnects(None)
            .connect(urls.as_slice())
            .await
            .unwrap()
    }

    /// SIGKILLs node `i`, keeping its store and ports.
    pub async fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill().await;
        }
    }

    /// Starts node `i` again (same name, ports and store) and waits until it is healthy.
    pub async fn restart(&mut self, i: usize) {
        self.kill(i).await;
        self.spawn(i);
        self.wait_healthy(i).await;
    }

    /// The index of the node named `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// The node leading `stream` (its RAFT leader, from `$JS.API.STREAM.INFO`), once it has one.
    pub async fn leader(&self, client: &async_nats::Client, stream: &str) -> usize {
        self.leader_of(client, Led::Stream(stream)).await
    }

    /// The node leading `led` (its RAFT leader, from the stream or consumer info), once it
    /// has one.
    pub async fn leader_of(&self, client: &async_nats::Client, led: Led<'_>) -> usize {
        let js = async_nats::jetstream::new(client.clone());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Some(i) = self.try_leader(&js, led).await {
                return i;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{led:?} has no leader within 30 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    async fn try_leader(&self, js: &async_nats::jetstream::Context, led: Led<'_>) -> Option<usize> {
        let stream = match led {
            Led::Stream(s) | Led::Consumer(s, _) => s,
        };
        let mut s = js.get_stream(stream).await.ok()?;
        let cluster = match led {
            Led::Stream(_) => s.info().await.ok()?.cluster.clone(),
            Led::Consumer(_, durable) => s.consumer_info(durable).await.ok()?.cluster.clone(),
        };
        self.index(cluster?.leader.as_deref()?)
    }

    /// Moves the leadership of `led` off the nodes `avoid` (leader step-downs until another
    /// node leads it); returns the new leader.
    pub async fn lead_elsewhere(
        &self,
        client: &async_nats::Client,
        led: Led<'_>,
        avoid: &[usize],
    ) -> usize {
        let subject = match led {
            Led::Stream(s) => format!("$JS.API.STREAM.LEADER.STEPDOWN.{s}"),
            Led::Consumer(s, d) => format!("$JS.API.CONSUMER.LEADER.STEPDOWN.{s}.{d}"),
        };
        // The step-down names the node wanted (`placement.preferred`, nats-server ≥ 2.11): a
        // random pick can keep landing on an avoided node while the wanted one lags behind.
        let wanted = (0..self.nodes.len()).find(|i| !avoid.contains(i) && self.nodes[*i].running());
        let body = match wanted {
            Some(i) => format!(
                r#"{{"placement":{{"preferred":"{}"}}}}"#,
                self.nodes[i].name
            ),
            None => String::new(),
        };
        for _ in 0..60 {
            let leader = self.leader_of(client, led).await;
            if !avoid.contains(&leader) {
                return leader;
            }
            let _ = client.request(subject.clone(), body.clone().into()).await;
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        panic!("{led:?} stays led by one of {avoid:?}");
    }

    /// The JetStream meta leader (it places streams and consumers: creating one, also an
    /// ordered consumer, waits for it), from a running node's `/jsz`.
    pub async fn meta_leader(&self) -> Option<usize> {
        for node in self.nodes.iter().filter(|n| n.running()) {
            let Some((200, body)) = http_get(node.monitor_port, "/jsz").await else {
                continue;
            };
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            if let Some(leader) = v["meta_cluster"]["leader"].as_str() {
                return self.index(leader);
            }
        }
        None
    }

    /// The node a client named `name` is connected to (from each running node's `/connz`).
    pub async fn connected_node(&self, name: &str) -> Option<usize> {
        for (i, node) in self.nodes.iter().enumerate() {
            if !node.running() {
                continue;
            }
            let Some((200, body)) = http_get(node.monitor_port, "/connz?limit=1024").await else {
                continue;
            };
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let conns = v["connections"].as_array().cloned().unwrap_or_default();
            if conns.iter().any(|c| c["name"] == name) {
                return Some(i);
            }
        }
        None
    }
}

/// `nats-server -c conf <args>`, killed on drop, its output discarded.
fn spawn_nats_server(conf: &std::path::Path, args: &[&std::ffi::OsStr]) -> tokio::process::Child {
    tokio::process::Command::new(tools().nats_server)
        .arg("-c")
        .arg(conf)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Minimal HTTP POST (SQL body) over a raw TCP connection, for assertions without a client.
pub async fn http_post(base: &str, sql: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hostport = base.trim_start_matches("http://").trim_end_matches('/');
    let mut s = tokio::net::TcpStream::connect(hostport).await.unwrap();
    let req = format!(
        "POST / HTTP/1.1\r\nHost: {hostport}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{sql}",
        sql.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    assert!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
        "{sql}\n{text}"
    );
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

/// The service binary (`marketprism-storage run`) as a child process, for crash tests.
pub struct Service {
    child: Option<std::process::Child>,
    pub dir: tempfile::TempDir,
    pub http_port: u16,
    pub env: Vec<(String, String)>,
    /// Arguments after `run` (e.g. `--instance-id x`).
    pub args: Vec<String>,
    pub log: PathBuf,
}

/// Test settings: small ages so tests finish fast, thresholds small enough to cut many
/// batches (each is a crash window), and a short `ack_wait`: after a crash that leaves the
/// durable at `max_ack_pending`, nothing new is delivered until `ack_wait` redelivers the
/// re-read messages (ARCHITECTURE.md, "Exactly once").
pub const TEST_CONFIG: &str = r#"
nats:
  ack_wait: 5s
batch:
  types:
    trade: { max_rows: 5000, max_age: 200ms }
    orderbook: { max_rows: 500, max_age: 200ms }
    funding_rate: { max_age: 200ms }
    open_interest: { max_age: 200ms }
    liquidation: { max_age: 200ms }
    lsr_top_position: { max_age: 200ms }
    lsr_all_account: { max_age: 200ms }
    volatility_index: { max_age: 200ms }
"#;

impl Service {
    /// A service configured for `nats` and `ch`, not started yet.
    pub fn new(nats: &TestNats, ch: &TestClickHouse, extra_yaml: &str) -> Service {
        Service::with_yaml(&nats.url, ch, &format!("{TEST_CONFIG}{extra_yaml}"))
    }

    /// A service for the NATS servers `nats_url` (comma-separated) and `ch`, configured by
    /// the whole file `yaml`, not started yet.
    pub fn with_yaml(nats_url: &str, ch: &TestClickHouse, yaml: &str) -> Service {
        Service::on_port(nats_url, ch.port, yaml)
    }

    /// [`Service::with_yaml`] for a ClickHouse on `127.0.0.1:ch_port` that is not a
    /// [`TestClickHouse`] (a proxy, an HTTPS server).
    pub fn on_port(nats_url: &str, ch_port: u16, yaml: &str) -> Service {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config.yaml");
        std::fs::write(&cfg, yaml).unwrap();
        let http_port = free_port().unwrap();
        let env = vec![
            ("MARKETPRISM_CONFIG".to_string(), cfg.display().to_string()),
            ("MARKETPRISM_NATS_URL".to_string(), nats_url.to_string()),
            ("CLICKHOUSE_HOST".to_string(), "127.0.0.1".to_string()),
            ("CLICKHOUSE_HTTP_PORT".to_string(), ch_port.to_string()),
            ("HOT_STORAGE_HTTP_PORT".to_string(), http_port.to_string()),
            (
                "MARKETPRISM_TOOLS_DIR".to_string(),
                tools_dir().display().to_string(),
            ),
            (
                "MARKETPRISM_DATA_DIR".to_string(),
                dir.path().join("data").display().to_string(),
            ),
            (
                "LOG_LEVEL".to_string(),
                std::env::var("TEST_SERVICE_LOG_LEVEL").unwrap_or_else(|_| "info".to_string()),
            ),
        ];
        let log = dir.path().join("service.log");
        Service {
            child: None,
            dir,
            http_port,
            env,
            args: Vec::new(),
            log,
        }
    }

    /// Adds lines under the configuration's `nats:` section (indented two spaces already),
    /// e.g. `"  streams:\n    high_frequency:\n      partitions: 4\n"`.
    pub fn with_nats_yaml(self, lines: &str) -> Service {
        let cfg = self.dir.path().join("config.yaml");
        let text = std::fs::read_to_string(&cfg).unwrap();
        let text = text.replacen("nats:\n", &format!("nats:\n{lines}"), 1);
        std::fs::write(&cfg, text).unwrap();
        self
    }

    /// Sets the environment variable `name` (replacing the harness's value, if any).
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.env.retain(|(k, _)| k != name);
        self.env.push((name.to_string(), value.to_string()));
    }

    /// Starts `marketprism-storage run` (stderr appended to `self.log`).
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_marketprism-storage"))
            .arg("run")
            .args(&self.args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        c.wait().ok().and_then(|s| s.code())
    }

    /// The child's process id, while one was started.
    pub fn pid(&self) -> Option<nix::unistd::Pid> {
        self.child
            .as_ref()
            .map(|c| nix::unistd::Pid::from_raw(c.id() as i32))
    }

    /// The child's exit code once it has exited by itself.
    pub fn exit_code(&mut self) -> Option<i32> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
            .and_then(|s| s.code())
    }

    /// Whether the child is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// The service's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `f` every 100 ms until it returns true or `secs` pass; returns the last result.
pub async fn wait_until<F, Fut>(secs: u64, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if f().await {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Waits until the service has created the JetStream streams (core publishes before that
/// would not be persisted).
pub async fn wait_for_streams(client: &async_nats::Client) {
    let js = async_nats::jetstream::new(client.clone());
    let ok = wait_until(60, || {
        let js = js.clone();
        async move {
            js.get_stream("MARKET_DATA_HF").await.is_ok()
                && js.get_stream("MARKET_DATA").await.is_ok()
        }
    })
    .await;
    assert!(ok, "streams not created within 60 s");
}

/// The start of most tests: nats-server, the embedded ClickHouse, the service (with `extra`
/// configuration) running, a client, and the streams the service created.
pub async fn started_stack(extra: &str) -> (TestNats, TestClickHouse, Service, async_nats::Client) {
    let nats = TestNats::start().await;
    let ch = TestClickHouse::start().await;
    let mut svc = Service::new(&nats, &ch, extra);
    svc.start();
    let client = nats.client().await;
    wait_for_streams(&client).await;
    (nats, ch, svc, client)
}

/// nats-server and the embedded ClickHouse with the streams created by the test, the service
/// not started (to fill a backlog, a journal or a durable before it runs).
pub async fn stack_with_streams() -> (TestNats, TestClickHouse, async_nats::Client) {
    let nats = TestNats::start().await;
    let ch = TestClickHouse::start().await;
    let client = nats.client().await;
    create_streams(&client).await;
    (nats, ch, client)
}

/// Creates the streams the way the service does, without the service (to fill a backlog
/// while it is down).
pub async fn create_streams(client: &async_nats::Client) {
    let cfg = marketprism_storage::config::Config::defaults().unwrap();
    create_streams_with(client, &cfg).await;
}

/// Creates the streams `cfg` describes, the way the service does.
pub async fn create_streams_with(
    client: &async_nats::Client,
    cfg: &marketprism_storage::config::Config,
) {
    let js = async_nats::jetstream::new(client.clone());
    let specs = marketprism_storage::service::stream_specs(cfg);
    let stop = tokio_util::sync::CancellationToken::new();
    stop.cancel();
    marketprism_storage::pipeline::ensure_streams(&js, &specs, &stop)
        .await
        .unwrap();
}

/// `GET path` on `127.0.0.1:port` over a raw connection: (status code, body); `None` while
/// nothing answers.
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// Publishes `(subject, body)` messages into their stream with JetStream acks, pipelined with
/// 1000 in flight; returns once every ack has arrived (the stream holds them all).
pub async fn publish_acked(
    client: &async_nats::Client,
    msgs: impl IntoIterator<Item = (String, String)>,
) {
    let js = async_nats::jetstream::new(client.clone());
    let mut acks = Vec::with_capacity(1000);
    for (subject, body) in msgs {
        acks.push(js.publish(subject, body.into()).await.unwrap());
        if acks.len() == 1000 {
            for a in acks.drain(..) {
                a.await.unwrap();
            }
        }
    }
    for a in acks {
        a.await.unwrap();
    }
}

/// A JetStream-enabled nats-server for one test, started from a configuration text the test
/// gives (auth, TLS, …): the harness adds the listen address and the store. Its log
/// (`-l`, permission violations included) is in `log`.
pub struct ConfiguredNats {
    child: Option<tokio::process::Child>,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub log: PathBuf,
}

impl ConfiguredNats {
    /// Starts nats-server with `conf` added to `listen` and `jetstream { … }`, and waits until
    /// its port accepts connections.
    pub async fn start(conf: &str) -> ConfiguredNats {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port().unwrap();
        let store = dir.path().join("js");
        let log = dir.path().join("nats-server.log");
        let path = dir.path().join("nats.conf");
        std::fs::write(
            &path,
            format!(
                "listen: 127.0.0.1:{port}\njetstream {{\n  store_dir: \"{}\"\n  max_file_store: 1TB\n}}\n{conf}\n",
                store.display()
            ),
        )
        .unwrap();
        let child = spawn_nats_server(&path, &["-l".as_ref(), log.as_os_str()]);
        let up = wait_until(30, || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        let server = ConfiguredNats {
            child: Some(child),
            dir,
            port,
            log,
        };
        assert!(up, "nats-server not up; log:\n{}", server.log_text());
        server
    }

    /// `<scheme>://127.0.0.1:<port>`.
    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills it.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// Replaces the `conf` part of its configuration and has it reload (SIGHUP), as an
    /// operator rotating a credential does.
    pub fn reload(&self, conf: &str) {
        let path = self.dir.path().join("nats.conf");
        let text = std::fs::read_to_string(&path).unwrap();
        let head_end = text.find("}\n").unwrap() + 2; // listen + jetstream block
        std::fs::write(&path, format!("{}{conf}\n", &text[..head_end])).unwrap();
        let pid = self.child.as_ref().and_then(|c| c.id()).unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap();
    }
}
