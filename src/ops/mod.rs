//! The operations HTTP surface: `/health`, `/ready`, `/stats`, `/api/v1/status`, `/metrics` and
//! the status page at `/`, read from the pipeline's [`Stats`] and never writing to them.
//!
//! Consumes: an `Arc<Stats>` (the pipeline's counters), the configured types, the optional ops
//! token (`http.token`: the `Authorization: Bearer` header, or the session cookie a login
//! gives the status page, see [`router`]), two latches (startup finished, stop requested)
//! and, when the hot → cold migration runs in this process, an `Arc<MigrationStats>` (the
//! migrator's counters: `/metrics`, `/stats.migration`, the status page; never `/ready`).
//! Emits: HTTP answers, every body with the configured secrets masked (`crate::redact`: an
//! error text in `/stats` may quote anything). Never: talks to NATS or ClickHouse, or changes a counter — the stages know nothing of this
//! module; never accepts the token in a URL.
//!
//! A state with no configured types serves a process that runs no pipeline: the standalone
//! `migrate` loop uses one with migration stats only, behind [`metrics_router`].
//!
//! Wiring (in the run command). The ops server gets its own token, cancelled after the pipeline
//! has drained, so that during the drain `/ready` answers 503 `service: shutting down`:
//! ```ignore
//! let started = Latch::new();
//! let state = OpsState::from_config(stats.clone(), &cfg)
//!     .with_startup(started.clone())
//!     .with_stop(stop.clone());
//! let ops_stop = CancellationToken::new();
//! tokio::spawn(ops::serve(ops::bind(cfg.http.addr()).await?, ops::router(state.clone()), ops_stop.clone()));
//! if let Some(addr) = cfg.http.metrics_addr() {
//!     tokio::spawn(ops::serve(ops::bind(addr).await?, ops::metrics_router(state), ops_stop.clone()));
//! }
//! // … schema ensured, pipeline spawned:
//! started.open();
//! // … pipeline returned after the stop signal and the drain:
//! ops_stop.cancel();
//! ```

pub mod lanes;
pub mod metrics;
pub mod process;
pub mod ready;
pub mod report;
pub mod summary;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Secret};
use crate::migrate::MigrationStats;
use crate::model::DataType;
use crate::pipeline::stats::{Stats, now_ms};

pub use ready::{DEFAULT_FAILING_BOUND, Latch, Readiness};
pub use summary::{Snapshot, summary_line};

/// The status page, embedded in the binary.
pub const STATUS_PAGE: &str = include_str!("status.html");

/// The status page's login form (`{{note}}`: a fixed sentence, never request text).
pub const LOGIN_PAGE: &str = include_str!("login.html");

/// The cookie of a status-page session, set by `POST /login`.
pub const SESSION_COOKIE: &str = "mp_ops_session";

/// The largest answer body the masking reads (a `/metrics` of many lanes is far below).
const MAX_ANSWER_BYTES: usize = 64 << 20;

/// Errors of the ops server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpsError {
    /// The listening socket could not be bound.
    #[error("bind the ops http server on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The server failed while serving.
    #[error("ops http server: {0}")]
    Serve(#[source] std::io::Error),
}

/// What the handlers read: the counters and the readiness inputs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct OpsState {
    inner: Arc<Inner>,
}

#[derive(Debug, Clone)]
struct Inner {
    stats: Arc<Stats>,
    types: Vec<DataType>,
    /// `Secret`s, so a `Debug` of the state never shows them.
    token: Option<Secret>,
    /// The value of [`SESSION_COOKIE`] a login hands out: random per process (a restart ends
    /// every session), never the token itself, so a browser never stores the token.
    session: Option<Secret>,
    failing_bound: Duration,
    started: Latch,
    stop: Option<CancellationToken>,
    process: Arc<process::ProcessSampler>,
    migration: Option<Arc<MigrationStats>>,
}

impl OpsState {
    /// State over `stats` for the given configured types: no token, the default failing bound
    /// ([`DEFAULT_FAILING_BOUND`]), startup considered done, no stop token.
    pub fn new(stats: Arc<Stats>, types: impl IntoIterator<Item = DataType>) -> Self {
        OpsState {
            inner: Arc::new(Inner {
                stats,
                types: types.into_iter().collect(),
                token: None,
                session: None,
                failing_bound: DEFAULT_FAILING_BOUND,
                started: Latch::opened(),
                stop: None,
                process: Arc::new(process::ProcessSampler::new()),
                migration: None,
            }),
        }
    }

    /// State for the configured types (`nats.types`) and token (`http.token`).
    pub fn from_config(stats: Arc<Stats>, cfg: &Config) -> Self {
        OpsState::new(stats, cfg.nats.types.iter().copied()).with_token(cfg.http.token.as_ref())
    }

    /// Builders run before the state is shared, so `make_mut` does not copy in practice.
    fn modify(mut self, f: impl FnOnce(&mut Inner)) -> Self {
        f(Arc::make_mut(&mut self.inner));
        self
    }

    /// Requires the token on every endpoint but `/health` (an empty token counts as none):
    /// `Authorization: Bearer <token>`, or for `GET`/`HEAD` the session cookie of a login.
    pub fn with_token(self, token: Option<&Secret>) -> Self {
        let token = token.filter(|t| !t.is_empty()).cloned();
        let session = token.as_ref().map(|_| {
            let bytes: [u8; 32] = rand::random();
            Secret::new(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
        });
        self.modify(|i| {
            i.token = token;
            i.session = session;
        })
    }

    /// How long a table may fail inserts before `/ready` turns 503.
    pub fn with_failing_bound(self, bound: Duration) -> Self {
        self.modify(|i| i.failing_bound = bound)
    }

    /// `/ready` stays 503 (`service: starting`) until `latch` is opened.
    pub fn with_startup(self, latch: Latch) -> Self {
        self.modify(|i| i.started = latch)
    }

    /// Once `stop` is cancelled, `/ready` answers 503 (`service: shutting down`) and
    /// `is_running` turns false, so that load balancers drain before the exit.
    pub fn with_stop(self, stop: CancellationToken) -> Self {
        self.modify(|i| i.stop = Some(stop))
    }

    /// Exports the migrator's counters (`/metrics`, `/stats.migration`, the status page's
    /// "Migration to cold" section); `None` removes them. Readiness does not depend on them: a
    /// failing migration must not take the ingest out of a load balancer.
    pub fn with_migration(self, stats: impl Into<Option<Arc<MigrationStats>>>) -> Self {
        let stats = stats.into();
        self.modify(|i| i.migration = stats)
    }

    /// The migrator's counters, when the migration runs in this process.
    pub fn migration(&self) -> Option<&Arc<MigrationStats>> {
        self.inner.migration.as_ref()
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.inner.stats
    }

    /// The readiness verdict now.
    pub fn readiness(&self) -> Readiness {
        self.readiness_at(now_ms())
    }

    fn is_running(&self) -> bool {
        !self.inner.stop.as_ref().is_some_and(|s| s.is_cancelled())
    }

    fn readiness_at(&self, now: i64) -> Readiness {
        ready::check(&ready::ReadyInputs {
            stats: &self.inner.stats,
            types: &self.inner.types,
            failing_bound: self.inner.failing_bound,
            started: self.inner.started.is_open(),
            stopping: !self.is_running(),
            now_ms: now,
        })
    }

    /// Builds a body from the report inputs of this moment.
    fn report<T>(&self, f: impl FnOnce(&report::ReportInputs<'_>) -> T) -> T {
        let now = now_ms();
        let readiness = self.readiness_at(now);
        let stuck = ready::stuck(&self.inner.stats, &self.inner.types);
        f(&report::ReportInputs {
            stats: &self.inner.stats,
            types: &self.inner.types,
            readiness: &readiness,
            stuck: &stuck,
            is_running: self.is_running(),
            now_ms: now,
            migration: self.inner.migration.as_deref(),
        })
    }

    /// The Prometheus exposition of this moment.
    pub fn render_metrics(&self) -> String {
        let now = now_ms();
        metrics::render(&metrics::ScrapeInput {
            stats: &self.inner.stats,
            types: &self.inner.types,
            migration: self.inner.migration.as_deref(),
            process: self.inner.process.sample(),
            ready: self.readiness_at(now).is_ready(),
            now_ms: now,
        })
    }
}

/// The full ops surface: `/`, `/health`, `/ready`, `/stats`, `/api/v1/status`, `/metrics`,
/// and `/login` (the status page's login form and its `POST`).
///
/// With a token, every endpoint but `/health` and `/login` needs it: the
/// `Authorization: Bearer <token>` header (every method), or the session cookie that
/// `POST /login` (form field `token`) sets — `HttpOnly; SameSite=Strict; Path=/`, a random
/// value per process, never the token — which authorizes `GET` and `HEAD` only, so no
/// request that could change something is authorized by a cookie a browser sends by itself.
/// `/` without either answers the login form (401). A token in the URL is never accepted.
pub fn router(state: OpsState) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/login", get(login_form).post(login))
        .route("/health", get(health))
        .route("/ready", get(ready_handler))
        .route("/stats", get(stats))
        .route("/api/v1/status", get(api_status))
        .route("/metrics", get(metrics_handler))
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .layer(middleware::from_fn(mask_secrets))
        .with_state(state)
}

/// `/metrics` alone, for the separate metrics port (`http.metrics_port`; the Python service used 9094).
/// The token applies here too when set.
pub fn metrics_router(state: OpsState) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .layer(middleware::from_fn(mask_secrets))
        .with_state(state)
}

/// Binds a listener, naming the address on failure.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, OpsError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| OpsError::Bind { addr, source })
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then finishes the requests in
/// flight and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> Result<(), OpsError> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(OpsError::Serve)
}

/// Compares in time independent of where the first difference is.
fn same_secret(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    let mut diff = a.len() ^ b.len();
    for (i, x) in b.iter().enumerate() {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ x);
    }
    diff == 0
}

/// The token check (see [`router`]). `/health` is always open (liveness probes carry no
/// secret); `/login` checks the token it is given itself.
async fn require_token(State(state): State<OpsState>, req: Request, next: Next) -> Response {
    let (Some(expected), Some(session)) = (
        state.inner.token.as_ref().map(Secret::expose),
        state.inner.session.as_ref().map(Secret::expose),
    ) else {
        return next.run(req).await;
    };
    let path = req.uri().path();
    if path == "/health" || path == "/login" {
        return next.run(req).await;
    }
    let by_header = req
        .headers()
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.strip_prefix("Bearer "))
        .any(|t| same_secret(t.trim(), expected));
    if by_header {
        return next.run(req).await;
    }
    let by_cookie = session_cookies(req.headers()).any(|c| same_secret(c, session));
    let safe = matches!(*req.method(), Method::GET | Method::HEAD);
    if by_cookie && safe {
        return next.run(req).await;
    }
    if path == "/" && safe {
        let in_url = Query::<HashMap<String, String>>::try_from_uri(req.uri())
            .is_ok_and(|q| q.0.contains_key("token"));
        let note = if in_url {
            "A token in the URL is not accepted (it would stay in the browser's history and in proxy logs): enter it here."
        } else {
            ""
        };
        return login_page(StatusCode::UNAUTHORIZED, note);
    }
    let why = if by_cookie {
        "a session cookie authorizes GET and HEAD only: send Authorization: Bearer <token>"
    } else {
        "missing or wrong bearer token"
    };
    let mut resp = (
        StatusCode::UNAUTHORIZED,
        Json(serde_json::json!({ "error": why })),
    )
        .into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"marketprism-storage\""),
    );
    resp
}

/// The values of every [`SESSION_COOKIE`] the request carries.
fn session_cookies(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(SESSION_COOKIE)?.strip_prefix('='))
}

/// The login form with `note` (a fixed sentence) under its title.
fn login_page(code: StatusCode, note: &'static str) -> Response {
    (
        code,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        LOGIN_PAGE.replace("{{note}}", note),
    )
        .into_response()
}

/// The login form of `POST /login`.
#[derive(Debug, serde::Deserialize)]
struct LoginForm {
    token: String,
}

async fn login_form(State(state): State<OpsState>) -> Response {
    if state.inner.token.is_none() {
        return see_other_page();
    }
    login_page(StatusCode::OK, "")
}

/// `POST /login`: the right token sets the session cookie and sends the browser to the page
/// (303, so a reload does not post the form again); a wrong one answers the form again.
async fn login(
    State(state): State<OpsState>,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let (Some(expected), Some(session)) = (
        state.inner.token.as_ref().map(Secret::expose),
        state.inner.session.as_ref().map(Secret::expose),
    ) else {
        return see_other_page();
    };
    match form {
        Ok(Form(f)) if same_secret(f.token.trim(), expected) => {
            let mut resp = see_other_page();
            let cookie = format!("{SESSION_COOKIE}={session}; HttpOnly; SameSite=Strict; Path=/");
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            resp
        }
        _ => login_page(StatusCode::UNAUTHORIZED, "Wrong token."),
    }
}

/// 303 to the status page (relative, so a path prefix of a reverse proxy is kept).
fn see_other_page() -> Response {
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "./"),
            (header::CACHE_CONTROL, "no-store"),
        ],
    )
        .into_response()
}

/// Masks the configured secrets in every answer body (`crate::redact`): the counters carry
/// error texts of NATS and ClickHouse, which may quote anything.
async fn mask_secrets(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    if !crate::redact::is_active() {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_ANSWER_BYTES).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    match std::str::from_utf8(&bytes).map(crate::redact::redact) {
        Ok(Cow::Owned(masked)) => {
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(masked))
        }
        _ => Response::from_parts(parts, Body::from(bytes)),
    }
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        STATUS_PAGE,
    )
        .into_response()
}

async fn health(State(state): State<OpsState>) -> Response {
    // Liveness: 503 only while a type cannot make progress without a restart.
    let (stuck, body) = state.report(|i| (!i.stuck.is_empty(), report::health(i)));
    let code = if stuck {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, Json(body)).into_response()
}

async fn ready_handler(State(state): State<OpsState>) -> Response {
    let (ok, body) = state.report(|i| (i.readiness.is_ready(), report::ready(i)));
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn stats(State(state): State<OpsState>) -> Response {
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(state.report(report::stats)),
    )
        .into_response()
}

async fn api_status(State(state): State<OpsState>) -> Json<serde_json::Value> {
    Json(state.report(report::api_status))
}

async fn metrics_handler(State(state): State<OpsState>) -> Response {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        state.render_metrics(),
    )
        .into_response()
}
