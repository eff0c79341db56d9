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
