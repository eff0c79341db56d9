//! The status page in a real browser: the ops server runs in-process on a free port, headless
//! chromium loads `/`, runs its JavaScript (which polls `/stats`) and dumps the rendered DOM.
//!
//! Chromium comes from `scripts/ensure-chromium.sh` (run by `make test`); without it these tests
//! are skipped with a message rather than failed. `MARKETPRISM_CHROMIUM` overrides the binary.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use marketprism_storage::config::Secret;
use marketprism_storage::migrate::{MigrationCounters, MigrationStats};
use marketprism_storage::model::DataType;
use marketprism_storage::ops::{self, OpsState};
use marketprism_storage::pipeline::stats::{MemberView, now_ms};
use marketprism_storage::pipeline::{LaneRole, Stats};
use marketprism_storage::source::partition::LaneId;
use tokio_util::sync::CancellationToken;

/// The chromium binary, if one is installed.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MARKETPRISM_CHROMIUM") {
        return Some(PathBuf::from(p)).filter(|p| p.exists());
    }
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// Runs headless chromium on `url` with `extra` flags; returns its stdout.
async fn run_chromium(bin: &PathBuf, url: &str, extra: &[String]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        "--virtual-time-budget=5000",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(extra)
    .arg(url)
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .expect("chromium did not finish within 90 s")
        .unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text of the element carrying `data-type="<t>" data-field="<f>"` in a dumped DOM.
fn cell(dom: &str, data_type: &str, field: &str) -> String {
    td_text(
        dom,
        &format!("data-type=\"{data_type}\" data-field=\"{field}\""),
    )
}

/// The text of the `<td>` whose start tag contains `attrs` (attributes as chromium dumps them).
fn td_text(dom: &str, attrs: &str) -> String {
    let at = dom
        .find(attrs)
        .unwrap_or_else(|| panic!("no cell {attrs} in the DOM:\n{dom}"));
    let rest = &dom[at..];
    let start = end_of_start_tag(rest);
    let end = rest[start..].find("</td>").unwrap();
    strip_tags(&rest[start..start + end])
}

/// The text of the element with `id="<id>"`.
fn by_id(dom: &str, id: &str) -> String {
    let key = format!("id=\"{id}\"");
    let at = dom
        .find(&key)
        .unwrap_or_else(|| panic!("no #{id} in the DOM"));
    let rest = &dom[at..];
    let start = end_of_start_tag(rest);
    let end = rest[start..].find('<').unwrap();
    rest[start..start + end].to_string()
}

/// The index just past the `>` closing the start tag `s` is in (quoted `>` skipped).
fn end_of_start_tag(s: &str) -> usize {
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '>' if !quoted => return i + 1,
            _ => {}
        }
    }
    panic!("unterminated tag: {s}")
}

fn strip_tags(s: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in s.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// Starts the ops server on a free port; returns its base URL and the stop token.
async fn start(state: OpsState) -> (String, CancellationToken) {
    start_router(ops::router(state)).await
}

async fn start_router(router: axum::Router) -> (String, CancellationToken) {
    let listener = ops::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(ops::serve(listener, router, stop.clone()));
    (format!("http://{addr}"), stop)
}

/// What a person does at the login form, done by the browser: a page of the test, served from
/// the ops server's own origin, that fills in `token` and submits the form to `/login`.
fn with_autologin(state: OpsState, token: &str) -> axum::Router {
    let html = format!(
        "<!doctype html><form method=post action=login><input name=token value=\"{token}\"></form>\
         <script>document.forms[0].submit()</script>"
    );
    ops::router(state).merge(axum::Router::new().route(
        "/test-autologin",
        axum::routing::get(move || async move { axum::response::Html(html) }),
    ))
}

/// Serves `router`, loads `/<path>` in chromium and returns the DOM of the status page once
/// it has rendered `/stats`.
async fn rendered_page(bin: &PathBuf, router: axum::Router, path: &str) -> String {
    let (base, stop) = start_router(router).await;
    let dom = run_chromium(bin, &format!("{base}/{path}"), &["--dump-dom".into()]).await;
    stop.cancel();
    assert!(
        dom.contains("data-loaded=\"true\""),
        "page never rendered /stats:\n{dom}"
    );
    dom
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_renders_the_counters() {
    let Some(bin) = chromium() else {
        eprintln!(
            "SKIPPED status_page_renders_the_counters: chromium not found \
             (run scripts/ensure-chromium.sh or set MARKETPRISM_CHROMIUM)"
        );
        return;
    };
    let stats = Arc::new(Stats::new(now_ms() - 3_723_000));
    stats.set_nats_connected(true);
    stats.set_clickhouse_up(false);
    let trade = stats.of(DataType::Trade);
    trade.set_bound(true);
    trade.update(|c| {
        c.rows_inserted = 12_345;
        c.consumer_pending = 4_321;
        c.dead_letters = 7;
        c.retries = 3;
        c.queued = 250;
        c.last_message_ms = now_ms() - 2_000;
    });
    trade.error("Code: 241. DB::Exception: Memory limit exceeded <test>");
    let book = stats.of(DataType::Orderbook);
    book.update(|c| c.rows_inserted = 987_654);
    let secret = Secret::new("page-token");
    let state = OpsState::new(stats.clone(), [DataType::Trade, DataType::Orderbook])
        .with_token(Some(&secret));
    // Logged in through the form: the session cookie (HttpOnly, SameSite=Strict) serves the
    // page after the 303 and every poll of /stats.
    let dom = rendered_page(&bin, with_autologin(state, "page-token"), "test-autologin").await;
    let inserted = cell(&dom, "trade", "inserted");
    assert!(
        inserted == "12,345" || inserted == "12345",
        "trade inserted: {inserted:?}"
    );
    assert_eq!(cell(&dom, "orderbook", "inserted"), "987,654");
    assert_eq!(cell(&dom, "trade", "consumer_pending"), "4,321");
    assert_eq!(cell(&dom, "trade", "dead_letters"), "7");
    assert_eq!(cell(&dom, "trade", "retries"), "3");
    assert_eq!(cell(&dom, "trade", "queued"), "250");
    assert_eq!(cell(&dom, "orderbook", "last_message"), "never");
    assert!(cell(&dom, "trade", "last_message").ends_with(" s ago"));
    assert_eq!(cell(&dom, "trade", "state"), "bound");
    assert_eq!(cell(&dom, "orderbook", "state"), "not bound");
    // Counters do not move, so rows/s is 0 once two polls have been compared.
    assert_eq!(cell(&dom, "trade", "rate"), "0.0");
    // Text is inserted as text, never as markup.
    assert_eq!(
        cell(&dom, "trade", "last_error"),
        "Code: 241. DB::Exception: Memory limit exceeded &lt;test&gt;"
    );
    assert_eq!(by_id(&dom, "nats"), "connected");
    assert_eq!(by_id(&dom, "clickhouse"), "down");
    assert_eq!(by_id(&dom, "ready"), "not ready");
    assert_eq!(
        by_id(&dom, "version"),
        format!("v{}", env!("CARGO_PKG_VERSION"))
    );
    assert!(
        by_id(&dom, "uptime").starts_with("1 h 2 m"),
        "{}",
        by_id(&dom, "uptime")
    );
    // No migration in this process: no migration section.
    assert!(
        dom.contains("id=\"migration\" style=\"display: none;\""),
        "migration section shown without migration stats"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_shows_the_migration() {
    let Some(bin) = chromium() else {
        eprintln!("SKIPPED status_page_shows_the_migration: chromium not found");
        return;
    };
    let stats = Arc::new(Stats::new(now_ms() - 60_000));
    let migration = Arc::new(MigrationStats::new());
    migration.restore(&MigrationCounters {
        rows_migrated: 1_234_567,
        chunks_verified: 52,
        chunks_repaired: 3,
        chunks_mismatched: 1,
        last_success_ms: now_ms() - 125_000,
    });
    migration.set_lag_minutes(DataType::Trade, 0);
    migration.set_lag_minutes(DataType::Orderbook, 42);
    let state =
        OpsState::new(stats, [DataType::Trade, DataType::Orderbook]).with_migration(migration);
    let dom = rendered_page(&bin, ops::router(state), "").await;
    assert!(
        dom.contains("id=\"migration\" style=\"display: block;\""),
        "migration section hidden:\n{dom}"
    );
    let m = |f: &str| td_text(&dom, &format!("data-migration=\"{f}\""));
    assert_eq!(m("rows_migrated"), "1,234,567");
    assert_eq!(m("chunks_verified"), "52");
    assert_eq!(m("chunks_repaired"), "3");
    assert_eq!(m("chunks_mismatched"), "1");
    let age = m("last_success");
    assert!(
        age.starts_with("2 m ") && age.ends_with(" s ago"),
        "{age:?}"
    );
    let lag = |t: &str| {
        td_text(
            &dom,
            &format!("data-table=\"{t}\" data-field=\"lag_minutes\""),
        )
    };
    assert_eq!(lag("trades"), "0");
    assert_eq!(lag("orderbooks"), "42");
    // Not measured yet: a dash, not a 0.
    assert_eq!(lag("funding_rates"), "–");
    // The mismatch and the lag above the Python service's 15-minute alert are highlighted.
    assert!(
        dom.contains(
            "data-table=\"orderbooks\" data-field=\"lag_minutes\" data-value=\"42\" class=\"hot\""
        ),
        "{dom}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_without_token_shows_the_401() {
    let Some(bin) = chromium() else {
        eprintln!("SKIPPED status_page_without_token_shows_the_401: chromium not found");
        return;
    };
    let stats = Arc::new(Stats::new(now_ms()));
    let secret = Secret::new("page-token");
    let state = OpsState::new(stats, [DataType::Trade]).with_token(Some(&secret));
    let (base, stop) = start(state).await;
    let dom = run_chromium(&bin, &format!("{base}/"), &["--dump-dom".into()]).await;
    // The page itself needs the token too: the browser gets the login form, no data.
    assert!(
        dom.contains("<form method=\"post\" action=\"login\""),
        "{dom}"
    );
    assert!(!dom.contains("data-loaded"), "{dom}");
    // A token in the URL is refused, and says so; a wrong one at the form stays at the form.
    let dom = run_chromium(
        &bin,
        &format!("{base}/?token=page-token"),
        &["--dump-dom".into()],
    )
    .await;
    assert!(dom.contains("A token in the URL is not accepted"), "{dom}");
    assert!(!dom.contains("data-loaded"), "{dom}");
    stop.cancel();
    let stats = Arc::new(Stats::new(now_ms()));
    let state = OpsState::new(stats, [DataType::Trade]).with_token(Some(&secret));
    let (base, stop) = start_router(with_autologin(state, "wrong-token")).await;
    let dom = run_chromium(
        &bin,
        &format!("{base}/test-autologin"),
        &["--dump-dom".into()],
    )
    .await;
    stop.cancel();
    assert!(dom.contains("Wrong token."), "{dom}");
}

/// Members `a` (this instance), `b` and `c`, serving `types`.
fn members(types: &[DataType], me: &str, names: &[&str]) -> Vec<MemberView> {
    names
        .iter()
        .map(|i| MemberView {
            instance: i.to_string(),
            types: types.to_vec(),
            me: *i == me,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_shows_the_lanes_and_members() {
    let Some(bin) = chromium() else {
        eprintln!("SKIPPED status_page_shows_the_lanes_and_members: chromium not found");
        return;
    };
    let types = [DataType::Trade, DataType::Orderbook];
    let stats = Arc::new(Stats::new(now_ms() - 60_000));
    stats.set_nats_connected(true);
    stats.set_clickhouse_up(true);
    stats.set_instance("a");
    stats.set_nats_server(Some("n1 127.0.0.1:4222".into()));
    // Trade on two partitions: `a` holds its base lane and partition 0 (lost once, taken
    // again 125 s ago), stands by behind `b` for partition 1; orderbook is `b`'s.
    let t = DataType::Trade;
    let base = stats.lane(&LaneId::base(t, "trade_c"));
    base.set_owner("a");
    base.record_acquired(now_ms() - 300_000);
    base.set_bound(true);
    let p0 = stats.lane(&LaneId::partition(t, "trade_c", 0, 2));
    p0.set_owner("a");
    p0.record_acquired(now_ms() - 400_000);
    p0.record_lost();
    p0.record_acquired(now_ms() - 125_000);
    p0.set_bound(true);
    p0.set_consumer_pending(4_321);
    let p1 = stats.lane(&LaneId::partition(t, "trade_c", 1, 2));
    p1.set_owner("a");
    p1.set_role(LaneRole::Standby("b".into()));
    let ob = stats.lane(&LaneId::base(DataType::Orderbook, "orderbook_c"));
    ob.set_owner("b");
    stats.set_members(members(&types, "a", &["a", "b", "c"]));
    let dom = rendered_page(&bin, ops::router(OpsState::new(stats, types)), "").await;
    assert!(
        dom.contains("id=\"lanes-section\" style=\"display: block;\""),
        "lanes section hidden:\n{dom}"
    );
    let lane = |d: &str, f: &str| td_text(&dom, &format!("data-lane=\"{d}\" data-field=\"{f}\""));
    assert_eq!(lane("trade_c", "label"), "trade");
    assert_eq!(lane("trade_c_p0of2", "label"), "trade 0/2");
    assert_eq!(lane("trade_c_p0of2", "role"), "holder");
    assert_eq!(lane("trade_c_p0of2", "holder"), "a");
    assert_eq!(lane("trade_c_p0of2", "owner"), "a");
    assert_eq!(lane("trade_c_p0of2", "bound"), "yes");
    assert_eq!(lane("trade_c_p0of2", "consumer_pending"), "4,321");
    assert_eq!(lane("trade_c_p0of2", "lease_changes"), "2 acquired, 1 lost");
    let held = lane("trade_c_p0of2", "held_for");
    assert!(held.starts_with("2 m "), "{held:?}");
    assert_eq!(lane("trade_c_p1of2", "role"), "standby");
    assert_eq!(lane("trade_c_p1of2", "holder"), "b");
    assert_eq!(lane("trade_c_p1of2", "held_for"), "–");
    assert_eq!(lane("trade_c_p1of2", "lease_changes"), "–");
    assert_eq!(lane("orderbook_c", "role"), "elsewhere");
    assert_eq!(lane("orderbook_c", "owner"), "b");
    assert_eq!(lane("orderbook_c", "holder"), "–");
    // The lanes follow the server's order: type, base, then partitions.
    let at = |d: &str| dom.find(&format!("id=\"lane-{d}\"")).unwrap();
    assert!(at("trade_c") < at("trade_c_p0of2") && at("trade_c_p1of2") < at("orderbook_c"));
    assert_eq!(by_id(&dom, "instance"), "a");
    assert_eq!(by_id(&dom, "role"), "holder of 2 of 4 lanes, standby for 1");
    assert_eq!(by_id(&dom, "nats-server"), "n1 127.0.0.1:4222");
    let members = strip_tags(&dom[dom.find("id=\"members\"").unwrap()..])
        .split('\n')
        .next()
        .unwrap()
        .to_string();
    assert!(
        members.contains("Members (3): a (this instance, 3 lanes) · b (1 lane) · c (0 lanes)"),
        "{members:?}"
    );
    // The type table shows the role: orderbook is another instance's, not "not bound".
    assert_eq!(cell(&dom, "trade", "state"), "bound 2 of 3");
    assert_eq!(cell(&dom, "orderbook", "state"), "elsewhere");
    assert_eq!(by_id(&dom, "ready"), "ready");
}

/// Regenerates `docs/status-page.png` from a lively fake service:
/// `cargo test --test it ops::screenshot -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes docs/status-page.png; run by hand"]
async fn screenshot() {
    let Some(bin) = chromium() else {
        eprintln!("SKIPPED screenshot: chromium not found");
        return;
    };
    let stats = Arc::new(Stats::new(now_ms() - 26 * 3_600_000 - 17 * 60_000));
    stats.set_nats_connected(true);
    stats.set_clickhouse_up(true);
    // (type, rows/s, base rows, pending, dead letters, retries, latency ms)
    let plan: [(DataType, u64, u64, u64, u64, u64, u64); 8] = [
        (DataType::Trade, 1850, 172_406_311, 412, 3, 0, 640),
        (DataType::Orderbook, 620, 58_012_877, 96, 0, 0, 910),
        (DataType::FundingRate, 2, 187_320, 0, 0, 0, 1_210),
        (DataType::OpenInterest, 2, 187_296, 0, 1, 0, 1_150),
        (DataType::Liquidation, 1, 20_418, 0, 0, 0, 730),
        (DataType::LsrTopPosition, 1, 112_388, 0, 0, 0, 1_020),
        (DataType::LsrAllAccount, 1, 112_390, 0, 0, 2, 980),
        (DataType::VolatilityIndex, 0, 4_680, 0, 0, 0, 1_340),
    ];
    for (t, _, base, pending, dead, retries, lat) in plan {
        let s = stats.of(t);
        s.set_bound(true);
        s.update(|c| {
            c.rows_inserted = base;
            c.consumer_pending = pending;
            c.dead_letters = dead;
            c.retries = retries;
            c.last_latency_ms = lat;
            c.batches = base / 500 + 1;
            c.last_message_ms = now_ms() - 300;
        });
    }
    stats
        .of(DataType::LsrAllAccount)
        .error("Code: 242. DB::Exception: Table is in readonly mode (retried, then stored)");
    stats
        .of(DataType::VolatilityIndex)
        .update(|c| c.last_message_ms = now_ms() - 41_000);
    // Counters grow in real time while the page polls.
    let bump = {
        let stats = stats.clone();
        tokio::spawn(async move {
            let t0 = Instant::now();
            loop {
                let secs = t0.elapsed().as_secs_f64();
                for (t, rate, base, ..) in plan {
                    let s = stats.of(t);
                    s.update(|c| {
                        c.rows_inserted = base + (rate as f64 * secs) as u64;
                        if rate > 0 {
                            c.last_message_ms = now_ms() - 200;
                        }
                    });
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    // A cluster of three instances; this one (`storage-a`) holds the base lane and two of
    // the four trade partitions and the lanes of the low-frequency types, stands by for one
    // trade partition being handed over, and leaves the rest to `storage-b` and `storage-c`.
    stats.set_instance("storage-a:8081");
    stats.set_nats_server(Some("nats-1 0.0.0.0:4222 (cluster mp)".into()));
    let names = ["storage-a:8081", "storage-b:8081", "storage-c:8081"];
    stats.set_members(members(&DataType::ALL, names[0], &names));
    let trade = DataType::Trade;
    let lane_plan: [(LaneId, usize, &str, u64, u64); 6] = [
        (LaneId::base(trade, "trade"), 0, "held", 0, 0),
        (LaneId::partition(trade, "trade", 0, 4), 0, "held", 131, 1),
        (LaneId::partition(trade, "trade", 1, 4), 0, "standby", 0, 0),
        (LaneId::partition(trade, "trade", 2, 4), 1, "", 0, 0),
        (LaneId::partition(trade, "trade", 3, 4), 2, "", 0, 0),
        (
            LaneId::base(DataType::Orderbook, "orderbook"),
            0,
            "held",
            96,
            0,
        ),
    ];
    for (id, owner, state, pending, lost) in lane_plan {
        let l = stats.lane(&id);
        l.set_owner(names[owner]);
        match state {
            "held" => {
                for _ in 0..lost {
                    l.record_acquired(now_ms() - 7_200_000);
                    l.record_lost();
                }
                l.record_acquired(now_ms() - 3_000_000 - pending as i64 * 1000);
                l.set_bound(true);
                l.set_consumer_pending(pending);
            }
            "standby" => l.set_role(LaneRole::Standby(names[1].into())),
            _ => {}
        }
    }
    for t in &DataType::ALL[2..] {
        let l = stats.lane(&LaneId::base(*t, t.as_str()));
        l.set_owner(names[0]);
        l.record_acquired(now_ms() - 94_000_000);
        l.set_bound(true);
    }
    let (base, stop) = start(OpsState::new(stats, DataType::ALL)).await;
    let png = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/status-page.png");
    run_chromium(
        &bin,
        &format!("{base}/"),
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1280,1180".into(),
        ],
    )
    .await;
    bump.abort();
    stop.cancel();
    assert!(std::fs::metadata(&png).unwrap().len() > 10_000);
    eprintln!("wrote {}", png.display());
}

/// `(code, JSON)` of `GET path` on a service; `None` while it does not answer with JSON.
async fn get_json(port: u16, path: &str) -> Option<(u16, serde_json::Value)> {
    let (code, body) = crate::harness::http_get(port, path).await?;
    Some((code, serde_json::from_str(&body).ok()?))
}

/// Two instances on one trade stream laid out for 2 partitions (3 lanes: the base lane and two
/// partitions): once both are members, every lane is held by exactly one of them, each
/// `/stats` names itself, both members and the NATS server, each `/ready` is 200 whatever it
/// holds, and `/metrics` agrees with `/stats`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_split_the_lanes_and_each_shows_its_role() {
    use crate::harness::{Service, TEST_CONFIG, TestClickHouse, TestNats, wait_until};
    let nats = TestNats::start().await;
    let ch = TestClickHouse::start().await;
    let config = TEST_CONFIG.replacen(
        "nats:\n",
        "nats:\n  types: [trade]\n  streams:\n    high_frequency:\n      partitions: 2\n",
        1,
    );
    let mut services = Vec::new();
    for id in ["a", "b"] {
        let mut svc = Service::new(&nats, &ch, "");
        std::fs::write(svc.dir.path().join("config.yaml"), &config).unwrap();
        svc.env
            .push(("MARKETPRISM_INSTANCE_ID".to_string(), id.to_string()));
        svc.start();
        services.push(svc);
    }
    let ports: Vec<u16> = services.iter().map(|s| s.http_port).collect();
    // Converged: both see two members, and each of the three lanes is held by one of them.
    let converged = wait_until(90, || {
        let ports = ports.clone();
        async move {
            let mut held = std::collections::BTreeMap::<String, u32>::new();
            for port in &ports {
                let Some((200, v)) = get_json(*port, "/stats").await else {
                    return false;
                };
                if v["cluster"]["members"] != 2
                    || v["lanes"].as_array().map(Vec::len) != Some(3)
                    || v["cluster"]["nats_server"].is_null()
                {
                    return false;
                }
                for l in v["lanes"].as_array().unwrap() {
                    *held.entry(l["durable"].to_string()).or_default() +=
                        u32::from(l["held"] == true);
                }
            }
            held.len() == 3 && held.values().all(|n| *n == 1)
        }
    })
    .await;
    assert!(
        converged,
        "lanes never split over the two instances; logs:\na: {}\nb: {}",
        services[0].log_text(),
        services[1].log_text()
    );
    let mut total_held = 0;
    for (port, me) in ports.iter().zip(["a", "b"]) {
        let (code, ready) = get_json(*port, "/ready").await.unwrap();
        assert_eq!(code, 200, "{me}: {ready}");
        let (_, v) = get_json(*port, "/stats").await.unwrap();
        assert_eq!(v["instance"], me);
        let members: Vec<(&str, bool)> = v["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["instance"].as_str().unwrap(), m["me"] == true))
            .collect();
        assert_eq!(members, [("a", me == "a"), ("b", me == "b")]);
        let held = v["role"]["held"].as_u64().unwrap();
        total_held += held;
        let summary = v["role"]["summary"].as_str().unwrap();
        let expected = match held {
            3 => "holder of all 3 lanes".to_string(),
            0 => String::new(),
            k => format!("holder of {k} of 3 lanes"),
        };
        assert!(summary.starts_with(&expected), "{me}: {summary}");
        assert!(
            v["cluster"]["nats_server"]
                .as_str()
                .is_some_and(|s| s.contains(':')),
            "{me}: {}",
            v["cluster"]
        );
        let labels: Vec<&str> = v["lanes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["label"].as_str().unwrap())
            .collect();
        assert_eq!(labels, ["trade", "trade 0/2", "trade 1/2"]);
        let (_, text) = crate::harness::http_get(*port, "/metrics").await.unwrap();
        assert!(
            text.lines().any(|l| l == "marketprism_storage_members 2"),
            "{text}"
        );
        assert!(
            text.lines().any(
                |l| l == format!("marketprism_storage_instance_info{{instance_id=\"{me}\"}} 1")
            ),
            "{text}"
        );
        let held_series: u64 = text
            .lines()
            .filter(|l| l.starts_with("marketprism_storage_lane_held{"))
            .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
            .sum();
        assert_eq!(held_series, held, "{me}: /metrics and /stats disagree");
    }
    assert_eq!(total_held, 3);
    for s in &mut services {
        s.terminate();
    }
}
