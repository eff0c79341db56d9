//! Router tests, in-process with `oneshot`: every endpoint in healthy and degraded states.

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

use super::*;

const TYPES: [DataType; 2] = [DataType::Trade, DataType::Orderbook];

/// Counters of a healthy service: connected, both consumers bound, some traffic.
fn healthy() -> Arc<Stats> {
    let s = Arc::new(Stats::new(now_ms() - 90_500));
    s.set_nats_connected(true);
    s.set_clickhouse_up(true);
    for t in TYPES {
        s.of(t).set_bound(true);
    }
    let trade = s.of(DataType::Trade);
    trade.update(|c| {
        c.received = 12_400;
        c.rows_inserted = 12_345;
        c.dead_letters = 55;
        c.batches = 25;
        c.last_message_ms = now_ms() - 1_000;
        c.last_insert_ms = now_ms() - 900;
    });
    trade.reject("invalid_json");
    s
}

async fn get(state: &OpsState, uri: &str, token: Option<&str>) -> (StatusCode, String) {
    let mut req = Request::builder().uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = router(state.clone())
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let body = to_bytes(resp.into_body(), 1 << 22).await.unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

async fn get_json(state: &OpsState, uri: &str) -> (StatusCode, Value) {
    let (code, body) = get(state, uri, None).await;
    (code, serde_json::from_str(&body).unwrap())
}

#[tokio::test]
async fn health_when_healthy() {
    let state = OpsState::new(healthy(), TYPES);
    let (code, v) = get_json(&state, "/health").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(v["status"], "healthy");
    assert_eq!(v["service"], "hot_storage");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["nats_connected"], true);
    assert_eq!(v["clickhouse_up"], true);
    assert_eq!(v["subscriptions"], 2);
    assert_eq!(v["is_running"], true);
    assert_eq!(v["consumers"]["trade"], true);
    assert!(v["uptime"].as_f64().unwrap() >= 90.0);
    let ts = v["timestamp"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(ts).is_ok() && ts.ends_with('Z'),
        "{ts}"
    );
    let (code, v) = get_json(&state, "/ready").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(v["ready"], true);
    assert_eq!(v["reasons"], serde_json::json!([]));
}

#[tokio::test]
async fn nats_down_is_not_ready_but_alive() {
    let stats = healthy();
    stats.set_nats_connected(false);
    let state = OpsState::new(stats, TYPES);
    let (code, v) = get_json(&state, "/health").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(v["status"], "degraded");
    assert_eq!(v["nats_connected"], false);
    let (code, v) = get_json(&state, "/ready").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v["reasons"], serde_json::json!(["nats: not connected"]));
}

#[tokio::test]
async fn a_stuck_type_fails_health_and_is_named_by_ready() {
    let stats = healthy();
    stats
        .of(DataType::Trade)
        .set_stuck("writer task died: panicked".into());
    let state = OpsState::new(stats, TYPES);
    let (code, v) = get_json(&state, "/health").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        v["stuck"],
        serde_json::json!(["trade: stuck (restart needed): writer task died: panicked"])
    );
    let (code, v) = get_json(&state, "/ready").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        v["reasons"],
        serde_json::json!(["trade: stuck (restart needed): writer task died: panicked"])
    );
}

#[tokio::test]
async fn clickhouse_down_is_not_ready() {
    let stats = healthy();
    stats.set_clickhouse_up(false);
    let state = OpsState::new(stats, TYPES);
    let (code, v) = get_json(&state, "/ready").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        v["reasons"],
        serde_json::json!(["clickhouse: not answering"])
    );
    assert_eq!(get_json(&state, "/health").await.0, StatusCode::OK);
}

#[tokio::test]
async fn type_failing_longer_than_the_bound_is_named() {
    let stats = healthy();
    let trade = stats.of(DataType::Trade);
    trade.update(|c| c.failing_since_ms = now_ms() - 75_400);
    trade.error("Code: 252. TOO_MANY_PARTS");
    let state = OpsState::new(stats.clone(), TYPES);
    let (code, v) = get_json(&state, "/ready").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        v["reasons"],
        serde_json::json!(["trade: inserts failing for 75 s: Code: 252. TOO_MANY_PARTS"])
    );
    // A longer bound tolerates it.
    let lenient = OpsState::new(stats, TYPES).with_failing_bound(Duration::from_secs(120));
    assert_eq!(get_json(&lenient, "/ready").await.0, StatusCode::OK);
}

#[tokio::test]
async fn unbound_consumer_and_latches() {
    let stats = healthy();
    stats.of(DataType::Orderbook).set_bound(false);
    let started = Latch::new();
    let stop = CancellationToken::new();
    let state = OpsState::new(stats.clone(), TYPES)
        .with_startup(started.clone())
        .with_stop(stop.clone());
    let (code, v) = get_json(&state, "/ready").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        v["reasons"],
        serde_json::json!(["service: starting", "orderbook: consumer not bound"])
    );
    started.open();
    stats.of(DataType::Orderbook).set_bound(true);
    assert_eq!(get_json(&state, "/ready").await.0, StatusCode::OK);
    stop.cancel();
    let (code, v) = get_json(&state, "/ready").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v["reasons"], serde_json::json!(["service: shutting down"]));
    assert_eq!(get_json(&state, "/health").await.1["is_running"], false);
}

/// One request: method, path, extra headers and a body; the answer's status, headers, body.
async fn send(
    state: &OpsState,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = router(state.clone())
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let body = to_bytes(resp.into_body(), 1 << 22).await.unwrap();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

/// Logs in with `token`; returns the `Cookie` header value the browser would send back.
async fn log_in(state: &OpsState, token: &str) -> String {
    let (code, headers, _) =
        send(state, "POST", "/login", &[FORM], &format!("token={token}")).await;
    assert_eq!(code, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "./");
    let set = headers["set-cookie"].to_str().unwrap().to_string();
    set.split(';').next().unwrap().to_string()
}

#[tokio::test]
async fn token_guards_everything_but_health() {
    let secret = Secret::new("s3cret");
    let state = OpsState::new(healthy(), TYPES).with_token(Some(&secret));
    for uri in ["/", "/ready", "/stats", "/api/v1/status", "/metrics"] {
        assert_eq!(
            get(&state, uri, None).await.0,
            StatusCode::UNAUTHORIZED,
            "{uri}"
        );
        assert_eq!(
            get(&state, uri, Some("wrong")).await.0,
            StatusCode::UNAUTHORIZED,
            "{uri}"
        );
        assert_eq!(
            get(&state, uri, Some("s3cret")).await.0,
            StatusCode::OK,
            "{uri}"
        );
    }
    assert_eq!(get(&state, "/health", None).await.0, StatusCode::OK);
    let metrics_only = metrics_router(state.clone());
    let resp = metrics_only
        .oneshot(
            Request::builder()
                .uri("/metrics")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // Neither the token nor the session shows in a Debug of the state.
    let shown = format!("{state:?}");
    assert!(
        !shown.contains("s3cret") && shown.contains("token: Some(****)"),
        "{shown}"
    );
    // An empty token means no token.
    let open = OpsState::new(healthy(), TYPES).with_token(Some(&Secret::new("")));
    assert_eq!(get(&open, "/stats", None).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_token_in_the_url_is_never_accepted() {
    let secret = Secret::new("s3cret");
    let state = OpsState::new(healthy(), TYPES).with_token(Some(&secret));
    // The page answers its login form instead, saying why; the data endpoints a 401.
    let (code, headers, body) = send(&state, "GET", "/?token=s3cret", &[], "").await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        body.contains("<form method=\"post\" action=\"login\""),
        "{body}"
    );
    assert!(
        body.contains("A token in the URL is not accepted"),
        "{body}"
    );
    assert!(!headers.contains_key("set-cookie"));
    for uri in [
        "/stats?token=s3cret",
        "/metrics?token=s3cret",
        "/login?token=s3cret",
    ] {
        let (code, headers, _) = send(&state, "GET", uri, &[], "").await;
        assert!(!headers.contains_key("set-cookie"), "{uri}");
        if uri.starts_with("/login") {
            assert_eq!(code, StatusCode::OK, "{uri}"); // the form, not a session
        } else {
            assert_eq!(code, StatusCode::UNAUTHORIZED, "{uri}");
        }
    }
    // The form answers 401 without a note when nothing was in the URL.
    let (code, _, body) = send(&state, "GET", "/", &[], "").await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert!(
        !body.contains("{{note}}") && !body.contains("not accepted"),
        "{body}"
    );
}

#[tokio::test]
async fn a_login_sets_a_strict_http_only_cookie_that_serves_the_page_and_get_apis() {
    let secret = Secret::new("s3cret");
    let state = OpsState::new(healthy(), TYPES).with_token(Some(&secret));
    let (code, headers, _) = send(&state, "POST", "/login", &[FORM], "token=s3cret").await;
    assert_eq!(code, StatusCode::SEE_OTHER);
    let set = headers["set-cookie"].to_str().unwrap();
    assert!(set.starts_with("mp_ops_session="), "{set}");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.split("; ").any(|a| a == attr), "{attr} missing: {set}");
    }
    // The cookie is a session, not the token.
    assert!(!set.contains("s3cret"), "{set}");
    let cookie = log_in(&state, "s3cret").await;
    let with_cookie = [("cookie", cookie.as_str())];
    for uri in ["/", "/ready", "/stats", "/api/v1/status", "/metrics"] {
        let (code, _, body) = send(&state, "GET", uri, &with_cookie, "").await;
        assert_eq!(code, StatusCode::OK, "{uri}: {body}");
    }
    let (_, _, page) = send(&state, "GET", "/", &with_cookie, "").await;
    assert_eq!(page, STATUS_PAGE);
    // Among other cookies, and HEAD like GET.
    let several = format!("theme=dark; {cookie}; other=1");
    let (code, _, _) = send(&state, "GET", "/stats", &[("cookie", several.as_str())], "").await;
    assert_eq!(code, StatusCode::OK);
    let (code, _, _) = send(&state, "HEAD", "/stats", &with_cookie, "").await;
    assert_eq!(code, StatusCode::OK);
    // A wrong token, a forged cookie or another process's session: no access.
    let (code, headers, body) = send(&state, "POST", "/login", &[FORM], "token=nope").await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert!(!headers.contains_key("set-cookie") && body.contains("Wrong token."));
    let forged = [("cookie", "mp_ops_session=s3cret")];
    assert_eq!(
        send(&state, "GET", "/stats", &forged, "").await.0,
        StatusCode::UNAUTHORIZED
    );
    let other = OpsState::new(healthy(), TYPES).with_token(Some(&secret));
    assert_eq!(
        send(&other, "GET", "/stats", &with_cookie, "").await.0,
        StatusCode::UNAUTHORIZED
    );
    // No token configured: the login form sends the browser to the page.
    let open = OpsState::new(healthy(), TYPES);
    let (code, headers, _) = send(&open, "GET", "/login", &[], "").await;
    assert_eq!(code, StatusCode::SEE_OTHER);
    assert!(!headers.contains_key("set-cookie"));
}

#[tokio::test]
async fn a_cookie_alone_cannot_authorize_a_request_that_could_change_something() {
    // No ops endpoint changes state today; the rule holds for any method but GET and HEAD, so
    // a page on another site cannot ride a logged-in browser's cookie (SameSite aside).
    let secret = Secret::new("s3cret");
    let state = OpsState::new(healthy(), TYPES).with_token(Some(&secret));
    let cookie = log_in(&state, "s3cret").await;
    let with_cookie = [("cookie", cookie.as_str())];
    let guarded = |state: &OpsState| {
        Router::new()
            .route("/act", axum::routing::post(|| async { "acted" }))
            .layer(middleware::from_fn_with_state(state.clone(), require_token))
            .with_state(state.clone())
    };
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let (code, _, body) = send(&state, method, "/stats", &with_cookie, "").await;
        assert_eq!(code, StatusCode::UNAUTHORIZED, "{method}");
        assert!(body.contains("authorizes GET and HEAD only"), "{body}");
        let req = Request::builder()
            .method(method)
            .uri("/act")
            .header("cookie", cookie.as_str())
            .body(Body::empty())
            .unwrap();
        let resp = guarded(&state).oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{method}");
    }
    // The header authorizes any method (here the route's own answer).
    let req = Request::builder()
        .method("POST")
        .uri("/act")
        .header("authorization", "Bearer s3cret")
        .body(Body::empty())
        .unwrap();
    let resp = guarded(&state).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let auth = [("authorization", "Bearer s3cret")];
    assert_eq!(
        send(&state, "POST", "/stats", &auth, "").await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    // Without anything: 401 with the challenge.
    let (code, headers, _) = send(&state, "POST", "/stats", &[], "").await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert!(headers.contains_key("www-authenticate"));
}

#[tokio::test]
async fn every_answer_masks_the_configured_secrets() {
    // An error text quoting a secret (a server echoing a URL, a header) reaches /stats,
    // /metrics and /api/v1/status masked.
    let leaked = "ops-answer-leak-Q7w2";
    crate::redact::register([leaked]);
    let stats = healthy();
    stats
        .of(DataType::Trade)
        .error(format!("connect to http://u:{leaked}@h failed"));
    stats
        .of(DataType::Trade)
        .set_stuck(format!("writer died: \"{leaked}\""));
    let state = OpsState::new(stats, TYPES);
    for uri in ["/stats", "/api/v1/status", "/metrics", "/health", "/ready"] {
        let (code, _, body) = send(&state, "GET", uri, &[], "").await;
        assert!(
            code.is_success() || code == StatusCode::SERVICE_UNAVAILABLE,
            "{uri}"
        );
        assert!(!body.contains(leaked), "{uri}: {body}");
    }
    let (_, headers, body) = send(&state, "GET", "/stats", &[], "").await;
    assert!(body.contains("http://u:****@h"), "{body}");
    assert!(serde_json::from_str::<Value>(&body).is_ok(), "{body}");
    assert!(
        !headers.contains_key("content-length")
            || headers["content-length"] == body.len().to_string().as_str()
    );
}

#[test]
fn secret_comparison() {
    assert!(same_secret("abc", "abc"));
    assert!(!same_secret("abd", "abc"));
    assert!(!same_secret("ab", "abc"));
    assert!(!same_secret("abcd", "abc"));
    assert!(!same_secret("", "abc"));
}

#[tokio::test]
async fn metrics_count_inserted_rows() {
    let state = OpsState::new(healthy(), TYPES);
    let (code, text) = get(&state, "/metrics", None).await;
    assert_eq!(code, StatusCode::OK);
    metrics::tests::check_exposition(&text);
    for line in [
        "marketprism_storage_messages_processed_total{data_type=\"trade\"} 12345",
        "marketprism_storage_messages_processed_total{data_type=\"orderbook\"} 0",
        "marketprism_storage_messages_received_total{data_type=\"trade\"} 12400",
        "marketprism_storage_messages_failed_total{data_type=\"trade\"} 55",
        "marketprism_storage_validation_errors_total{data_type=\"trade\",reason=\"invalid_json\"} 1",
        "marketprism_storage_batch_inserts_total{data_type=\"trade\"} 25",
        "marketprism_storage_batch_size_total 12345",
        "marketprism_storage_nats_connected 1",
        "marketprism_storage_clickhouse_up 1",
        "marketprism_storage_consumer_bound{data_type=\"orderbook\"} 1",
        "marketprism_storage_ready 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
    }
    assert!(text.contains("\nmarketprism_storage_process_rss_bytes "));
    let metrics_only = metrics_router(state);
    let resp = metrics_only
        .oneshot(
            Request::builder()
                .uri("/metrics")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
}

#[tokio::test]
async fn stats_has_the_python_service_shape_and_types() {
    let state = OpsState::new(healthy(), TYPES);
    let (code, v) = get_json(&state, "/stats").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(v["service_status"]["is_running"], true);
    assert_eq!(v["service_status"]["subscriptions_count"], 2);
    assert_eq!(v["message_stats"]["messages_received"], 12_400);
    assert_eq!(v["message_stats"]["messages_processed"], 12_345);
    assert_eq!(v["message_stats"]["messages_failed"], 55);
    assert_eq!(v["message_stats"]["validation_errors"], 1);
    assert_eq!(v["message_stats"]["batch_inserts"], 25);
    assert_eq!(v["message_stats"]["batch_size_total"], 12_345);
    assert!(v["message_stats"]["last_message_time"].as_f64().unwrap() > 1.7e9);
    assert_eq!(v["message_stats"]["last_error_time"], Value::Null);
    assert_eq!(v["health_check"]["status"], "healthy");
    assert_eq!(v["health_check"]["subscriptions_active"], 2);
    let t = &v["types"]["trade"];
    assert_eq!(t["inserted"], 12_345);
    assert_eq!(t["rejects_by_kind"]["invalid_json"], 1);
    assert_eq!(t["bound"], true);
    assert_eq!(v["types"]["orderbook"]["last_insert"], Value::Null);
    assert!(
        v["types"].get("funding_rate").is_none(),
        "only configured types"
    );
}

/// Counters of a migrator that has run: two tables measured, one lagging, one mismatch.
fn migrated() -> Arc<MigrationStats> {
    Arc::new(metrics::tests::migration_stats())
}

#[tokio::test]
async fn migration_metrics_and_stats_when_present() {
    let state = OpsState::new(healthy(), TYPES).with_migration(migrated());
    let (code, text) = get(&state, "/metrics", None).await;
    assert_eq!(code, StatusCode::OK);
    metrics::tests::check_exposition(&text);
    for line in [
        "marketprism_cold_replication_lag_minutes{table=\"trades\"} 0",
        "marketprism_cold_replication_lag_minutes{table=\"orderbooks\"} 42",
        "marketprism_cold_rows_migrated_total 60000",
        "marketprism_cold_chunks_verified_total 52",
        "marketprism_cold_chunks_repaired_total 3",
        "marketprism_cold_chunks_mismatched_total 1",
        "marketprism_cold_last_success_timestamp_seconds 1700000123.5",
        "marketprism_cold_late_rows_repaired_total{table=\"trades\"} 7",
        "marketprism_cold_late_rows_repaired_total{table=\"orderbooks\"} 0",
        "marketprism_storage_messages_processed_total{data_type=\"trade\"} 12345",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
    }
    let (code, v) = get_json(&state, "/stats").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        v["migration"],
        serde_json::json!({
            "rows_migrated": 60_000,
            "chunks_verified": 52,
            "chunks_repaired": 3,
            "chunks_mismatched": 1,
            "last_success": 1_700_000_123.5,
            "lag_minutes": { "trades": 0, "orderbooks": 42 },
            "late_rows_repaired": {
                "trades": 7, "orderbooks": 0, "funding_rates": 0, "open_interests": 0,
                "liquidations": 0, "lsr_top_positions": 0, "lsr_all_accounts": 0,
                "volatility_indices": 0, "data_quality_events": 0
            },
            "table_order": [
                "trades", "orderbooks", "funding_rates", "open_interests", "liquidations",
                "lsr_top_positions", "lsr_all_accounts", "volatility_indices",
                "data_quality_events"
            ],
        })
    );
    let (_, v) = get_json(&state, "/api/v1/status").await;
    assert_eq!(v["data"]["stats"]["migration"]["rows_migrated"], 60_000);
    // A lagging or mismatched migration does not make the ingest unready.
    let (code, v) = get_json(&state, "/ready").await;
    assert_eq!(code, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn no_migration_section_without_migration_stats() {
    let state = OpsState::new(healthy(), TYPES);
    let (_, text) = get(&state, "/metrics", None).await;
    assert!(!text.contains("marketprism_cold_"));
    let (_, v) = get_json(&state, "/stats").await;
    assert!(v.get("migration").is_none(), "{v}");
    // `None` removes them again.
    let state = state.with_migration(None);
    assert!(state.migration().is_none());
}

#[tokio::test]
async fn migrator_only_state_serves_its_metrics() {
    // What the standalone `migrate` loop serves on --metrics-port: no pipeline families, and the
    // token still applies.
    let secret = Secret::new("m-token");
    let state = OpsState::new(Arc::new(Stats::new(now_ms())), [])
        .with_token(Some(&secret))
        .with_migration(migrated());
    let req = |token: Option<&str>| {
        let mut r = Request::builder().uri("/metrics");
        if let Some(t) = token {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        r.body(Body::empty()).unwrap()
    };
    let resp = metrics_router(state.clone())
        .oneshot(req(None))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = metrics_router(state)
        .oneshot(req(Some("m-token")))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text =
        String::from_utf8(to_bytes(resp.into_body(), 1 << 22).await.unwrap().to_vec()).unwrap();
    metrics::tests::check_exposition(&text);
    assert!(
        text.contains("\nmarketprism_cold_rows_migrated_total 60000\n"),
        "{text}"
    );
    assert!(!text.contains("marketprism_storage_ready"), "{text}");
    assert!(!text.contains("data_type="), "{text}");
}

#[tokio::test]
async fn api_status_answers_200_after_messages() {
    let stats = healthy();
    let state = OpsState::new(stats.clone(), TYPES);
    let (code, v) = get_json(&state, "/api/v1/status").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(v["status"], "success");
    assert_eq!(v["data"]["service"], "hot_storage");
    assert_eq!(v["data"]["health"]["ok"], true);
    assert_eq!(v["data"]["health"]["summary"], "ready");
    assert_eq!(
        v["data"]["stats"]["message_stats"]["messages_processed"],
        12_345
    );
    assert!(v["timestamp"].is_string());
    stats.set_clickhouse_up(false);
    let (code, v) = get_json(&state, "/api/v1/status").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(v["data"]["health"]["ok"], false);
    assert_eq!(v["data"]["health"]["summary"], "clickhouse: not answering");
}

#[tokio::test]
async fn page_is_served_self_contained() {
    let state = OpsState::new(healthy(), TYPES);
    let (code, html) = get(&state, "/", None).await;
    assert_eq!(code, StatusCode::OK);
    assert!(html.contains("data-field"));
    assert!(html.contains("fetch(\"stats\""));
    for external in ["http://", "https://", "//cdn", "<link"] {
        assert!(!html.contains(external), "page refers to {external}");
    }
    assert_eq!(get(&state, "/nope", None).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn serve_answers_and_stops_on_shutdown() {
    let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let server = tokio::spawn(serve(
        listener,
        router(OpsState::new(healthy(), TYPES)),
        stop.clone(),
    ));
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    conn.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut resp = String::new();
    conn.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("\"service\":\"hot_storage\""));
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let taken = std::net::TcpListener::bind(addr).unwrap();
    assert!(matches!(
        bind(taken.local_addr().unwrap()).await,
        Err(OpsError::Bind { .. })
    ));
}

#[test]
fn container_config_is_valid() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/storage.yaml");
    // The image binds every interface, so it runs with a token from the environment (a bind
    // off loopback without one is refused).
    let env = |k: &str| (k == "MARKETPRISM_HTTP_TOKEN").then(|| "a-long-ops-token".to_string());
    let cfg = Config::load(Some(&path), &env).unwrap().config;
    assert_eq!(cfg.http.port, 8080);
    assert_eq!(cfg.http.metrics_port, Some(9094));
    assert!(cfg.http.bind.is_unspecified());
}

#[tokio::test]
async fn a_standby_lane_is_ready_and_its_role_is_shown() {
    use crate::pipeline::stats::{LaneRole, MemberView};
    use crate::source::partition::LaneId;
    let stats = healthy();
    stats.set_instance("a");
    let trade = stats.lane(&LaneId::base(DataType::Trade, "trade_c"));
    trade.set_owner("a");
    trade.record_acquired(now_ms() - 5_000);
    trade.set_bound(true);
    // Assigned here, standing by while `b` drains and hands it over.
    let book = stats.lane(&LaneId::base(DataType::Orderbook, "orderbook_c"));
    book.set_owner("a");
    book.set_role(LaneRole::Standby("b".into()));
    stats.set_members(
        ["a", "b"]
            .into_iter()
            .map(|i| MemberView {
                instance: i.into(),
                types: TYPES.to_vec(),
                me: i == "a",
            })
            .collect(),
    );
    let state = OpsState::new(stats.clone(), TYPES);
    let (code, v) = get_json(&state, "/ready").await;
    assert_eq!(code, StatusCode::OK, "{v}");
    let (code, v) = get_json(&state, "/stats").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(v["instance"], "a");
    assert_eq!(
        v["role"]["summary"],
        "holder of 1 of 2 lanes, standby for 1"
    );
    assert_eq!(v["types"]["orderbook"]["role"], "standby");
    assert_eq!(v["types"]["trade"]["role"], "holder");
    let lanes = v["lanes"].as_array().unwrap();
    assert_eq!(lanes[1]["durable"], "orderbook_c");
    assert_eq!(lanes[1]["role"], "standby");
    assert_eq!(lanes[1]["holder"], "b");
    assert_eq!(v["members"].as_array().unwrap().len(), 2);
    assert_eq!(v["health_check"]["ready"], true);
    let (_, text) = get(&state, "/metrics", None).await;
    metrics::tests::check_exposition(&text);
    for line in [
        "marketprism_storage_lane_role{data_type=\"orderbook\",lane=\"orderbook_c\",partition=\"base\",role=\"standby\"} 1",
        "marketprism_storage_lane_held{data_type=\"trade\",lane=\"trade_c\",partition=\"base\"} 1",
        "marketprism_storage_members 2",
        "marketprism_storage_ready 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
    }
    // Still acquiring (no holder known yet) is not ready, and says so.
    book.set_role(LaneRole::Standby(String::new()));
    let (code, v) = get_json(&state, "/ready").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        v["reasons"],
        serde_json::json!(["orderbook: acquiring the consumer lease"])
    );
}
