//! A fault-injecting HTTP proxy between the service and the embedded ClickHouse.
//!
//! The service under test is pointed at [`Proxy::port`] instead of ClickHouse's port; the test
//! switches the [`Fault`] at run time: pass through, refuse connections, delay, answer an
//! HTTP error, or forward the request and drop ClickHouse's answer after it committed (the
//! client sees its connection closed without a response). A fault can be limited to requests
//! whose URL contains a string (e.g. `INSERT`, or a table name: the official crate sends the
//! statement in the `query` URL parameter) and to the next `n` such requests.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::Rng;

/// What the proxy does to a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Forward it and its answer.
    Pass,
    /// Close the connection without forwarding (new connections are closed on accept).
    Refuse,
    /// Wait, then forward.
    Delay(Duration),
    /// Answer this status and body without forwarding (the request body is read first).
    Status(u16, String),
    /// Forward it, wait for ClickHouse's full answer, then close the client's connection
    /// without sending it: the insert committed, the client does not know.
    DropResponse,
    /// [`Fault::DropResponse`] with this probability, else [`Fault::Pass`].
    DropResponseRandomly(f64),
    /// Answer `413 Payload Too Large` (empty body, as a body-size limit in front of
    /// ClickHouse does) to requests whose body is longer than this many bytes; forward the
    /// others.
    TooLargeOver(usize),
}

#[derive(Debug)]
struct Rule {
    fault: Fault,
    /// Only requests whose URI contains this.
    only: Option<String>,
    /// Only this many more requests (then back to `Pass`).
    remaining: Option<u64>,
}

/// What the proxy saw and did, for assertions.
#[derive(Debug, Default)]
pub struct Counts {
    /// Requests received.
    pub requests: AtomicU64,
    /// Requests a fault was applied to.
    pub faulted: AtomicU64,
    /// Answers dropped after ClickHouse answered (200 or not).
    pub dropped_after_commit: AtomicU64,
    /// The URI of every INSERT received, in order (the query and its settings: the
    /// deduplication token among them).
    pub inserts: Mutex<Vec<String>>,
}

struct State {
    rule: Mutex<Rule>,
    counts: Counts,
    /// Every request's URI (path and query), in arrival order.
    uris: Mutex<Vec<String>>,
    /// Every request's `X-ClickHouse-User` and `X-ClickHouse-Key` headers and whether it had
    /// an `Authorization` header, in arrival order.
    credentials: Mutex<Vec<Credentials>>,
    upstream: String,
    client: Client<HttpConnector, Either<Incoming, Full<Bytes>>>,
}

impl State {
    /// The fault for a request to `uri` (counting it against a limited rule).
    fn fault_for(&self, uri: &str) -> Fault {
        self.counts.requests.fetch_add(1, Relaxed);
        self.uris.lock().unwrap().push(uri.to_string());
        if uri.contains("INSERT") {
            self.counts.inserts.lock().unwrap().push(uri.to_string());
        }
        let mut rule = self.rule.lock().unwrap();
        if rule.fault == Fault::Pass || rule.only.as_deref().is_some_and(|o| !uri.contains(o)) {
            return Fault::Pass;
        }
        let fault = rule.fault.clone();
        if let Some(n) = rule.remaining.as_mut() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                rule.fault = Fault::Pass;
            }
        }
        let fault = match fault {
            Fault::DropResponseRandomly(p) if rand::rng().random_bool(p) => Fault::DropResponse,
            Fault::DropResponseRandomly(_) => Fault::Pass,
            f => f,
        };
        if fault != Fault::Pass {
            self.counts.faulted.fetch_add(1, Relaxed);
        }
        fault
    }

    fn refusing_all(&self) -> bool {
        let rule = self.rule.lock().unwrap();
        rule.fault == Fault::Refuse && rule.only.is_none()
    }
}

/// The credentials one request carried in its headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `X-ClickHouse-User`.
    pub user: Option<String>,
    /// `X-ClickHouse-Key`.
    pub key: Option<String>,
    /// Whether an `Authorization` header was sent.
    pub authorization: bool,
}

/// The proxy; stops when dropped.
pub struct Proxy {
    /// The port to point the service at.
    pub port: u16,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Answer = Result<Response<Full<Bytes>>, std::io::Error>;

fn closed(why: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionAborted, why.to_string())
}

impl Proxy {
    /// A proxy on a free port forwarding to `127.0.0.1:upstream_port`, passing everything.
    pub async fn start(upstream_port: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State {
            rule: Mutex::new(Rule {
                fault: Fault::Pass,
                only: None,
                remaining: None,
            }),
            counts: Counts::default(),
            uris: Mutex::new(Vec::new()),
            credentials: Mutex::new(Vec::new()),
            upstream: format!("http://127.0.0.1:{upstream_port}"),
            client: Client::builder(TokioExecutor::new()).build_http(),
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                if st.refusing_all() {
                    drop(sock);
                    continue;
                }
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(st.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(sock), svc)
                        .await;
                });
            }
        });
        Proxy { port, state, task }
    }

    /// Applies `fault` to every request from now on.
    pub fn set(&self, fault: Fault) {
        self.set_rule(fault, None, None);
    }

    /// Applies `fault` to requests whose URI contains `only` (all if `None`), for the next
    /// `limit` of them (forever if `None`).
    pub fn set_rule(&self, fault: Fault, only: Option<&str>, limit: Option<u64>) {
        *self.state.rule.lock().unwrap() = Rule {
            fault,
            only: only.map(str::to_owned),
            remaining: limit,
        };
    }

    /// Whether the current rule has run out (or is `Pass`).
    pub fn passing(&self) -> bool {
        self.state.rule.lock().unwrap().fault == Fault::Pass
    }

    /// What the proxy saw so far.
    pub fn counts(&self) -> &Counts {
        &self.state.counts
    }

    /// The credential headers of every request so far, in arrival order.
    pub fn credentials(&self) -> Vec<Credentials> {
        self.state.credentials.lock().unwrap().clone()
    }

    /// The URIs (path and query, percent-encoded as sent) of the requests so far whose URI
    /// contains `part` (the crate sends the statement and the settings as URL parameters).
    pub fn uris(&self, part: &str) -> Vec<String> {
        let all = self.state.uris.lock().unwrap();
        all.iter().filter(|u| u.contains(part)).cloned().collect()
    }
}

async fn handle(st: Arc<State>, req: Request<Incoming>) -> Answer {
    let uri = req.uri().to_string();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let seen = Credentials {
        user: header("x-clickhouse-user"),
        key: header("x-clickhouse-key"),
        authorization: req.headers().contains_key("authorization"),
    };
    st.credentials.lock().unwrap().push(seen);
    match st.fault_for(&uri) {
        Fault::Pass => forward(&st, req).await,
        Fault::Refuse => Err(closed("refused by the test proxy")),
        Fault::Delay(d) => {
            tokio::time::sleep(d).await;
            forward(&st, req).await
        }
        Fault::Status(code, body) => {
            // Read the whole request first, so the client sees the answer, not a reset.
            let _ = req.into_body().collect().await;
            Ok(Response::builder()
                .status(code)
                .header("Content-Type", "text/plain; charset=UTF-8")
                .body(Full::new(Bytes::from(body)))
                .unwrap())
        }
        Fault::TooLargeOver(limit) => {
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| closed(&format!("request body: {e}")))?
                .to_bytes();
            if body.len() > limit {
                return Ok(Response::builder()
                    .status(413)
                    .body(Full::new(Bytes::new()))
                    .unwrap());
            }
            send(
                &st,
                Request::from_parts(parts, Either::Right(Full::new(body))),
            )
            .await
        }
        Fault::DropResponse | Fault::DropResponseRandomly(_) => {
            let answer = forward(&st, req).await;
            if answer.is_ok() {
                st.counts.dropped_after_commit.fetch_add(1, Relaxed);
            }
            Err(closed("answer dropped by the test proxy"))
        }
    }
}

/// Forwards a request to ClickHouse and buffers its whole answer.
async fn forward(st: &State, req: Request<Incoming>) -> Answer {
    let (parts, body) = req.into_parts();
    send(st, Request::from_parts(parts, Either::Left(body))).await
}

async fn send(st: &State, req: Request<Either<Incoming, Full<Bytes>>>) -> Answer {
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/".to_string(), |p| p.to_string());
    parts.uri = format!("{}{path}", st.upstream)
        .parse()
        .map_err(|_| closed("bad uri"))?;
    let resp = st
        .client
        .request(Request::from_parts(parts, body))
        .await
        .map_err(|e| closed(&format!("upstream: {e}")))?;
    let (mut parts, body) = resp.into_parts();
    let bytes = body
        .collect()
        .await
        .map_err(|e| closed(&format!("upstream body: {e}")))?
        .to_bytes();
    // The body is re-sent whole: let hyper frame it.
    parts.headers.remove(hyper::header::TRANSFER_ENCODING);
    parts.headers.remove(hyper::header::CONTENT_LENGTH);
    Ok(Response::from_parts(parts, Full::new(bytes)))
}
