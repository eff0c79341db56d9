//! The JSON bodies of `/health`, `/stats` and `/api/v1/status`, with the Python service's keys (so its
//! scripts and probes keep working) plus ours. Pure: counters and readiness in, JSON out.

use serde_json::{Map, Value, json};

use crate::migrate::{MigTable, MigrationStats};
use crate::model::DataType;
use crate::pipeline::stats::{LaneView, Stats, TypeCounters, TypeStats};

use super::lanes::{self, RoleCounts, TypeRole};
use super::ready::Readiness;

/// The `service` value the Python service reported.
pub const SERVICE: &str = "hot_storage";

/// The crate version, reported as `version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What every body is built from.
#[derive(Debug, Clone)]
pub struct ReportInputs<'a> {
    /// The counters.
    pub stats: &'a Stats,
    /// The configured data types.
    pub types: &'a [DataType],
    /// The readiness verdict.
    pub readiness: &'a Readiness,
    /// Why types cannot make progress without a restart (`ready::stuck`); empty when live.
    pub stuck: &'a [String],
    /// False once a stop signal was received.
    pub is_running: bool,
    /// Now, unix ms.
    pub now_ms: i64,
    /// The migrator's counters, when the migration runs in this process.
    pub migration: Option<&'a MigrationStats>,
}

impl ReportInputs<'_> {
    fn bound_count(&self) -> usize {
        self.types
            .iter()
            .filter(|t| self.stats.of(**t).is_bound())
            .count()
    }

    fn status(&self) -> &'static str {
        if self.readiness.is_ready() {
            "healthy"
        } else {
            "degraded"
        }
    }

    /// The counters of every configured type, in order.
    fn counters(&self) -> Vec<TypeCounters> {
        self.types
            .iter()
            .map(|t| self.stats.of(*t).counters())
            .collect()
    }
}

/// ISO-8601 UTC with milliseconds, e.g. `2025-01-31T12:00:00.123Z`.
pub fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Unix ms → epoch seconds (float), `null` for 0 (never happened).
fn epoch_s(ms: i64) -> Value {
    if ms <= 0 {
        Value::Null
    } else {
        json!(ms as f64 / 1000.0)
    }
}

/// `/health`: the Python service's keys plus `clickhouse_up` and the per-type bound flags.
pub fn health(i: &ReportInputs<'_>) -> Value {
    let consumers: Map<String, Value> = i
        .types
        .iter()
        .map(|t| (t.as_str().to_string(), json!(i.stats.of(*t).is_bound())))
        .collect();
    json!({
        "status": i.status(),
        "timestamp": iso(i.now_ms),
        "service": SERVICE,
        "version": VERSION,
        "uptime": (i.now_ms - i.stats.started_ms).max(0) as f64 / 1000.0,
        "nats_connected": i.stats.nats_connected(),
        "clickhouse_up": i.stats.clickhouse_up(),
        "subscriptions": i.bound_count(),
        "is_running": i.is_running,
        "consumers": consumers,
        "stuck": i.stuck,
    })
}

/// `/ready`: `ready` and the reasons (empty when ready).
pub fn ready(i: &ReportInputs<'_>) -> Value {
    json!({
        "ready": i.readiness.is_ready(),
        "reasons": i.readiness.reasons,
        "timestamp": iso(i.now_ms),
    })
}

fn type_stats(s: &TypeStats, lanes: &[&LaneView]) -> Value {
    let rejects: Map<String, Value> = s
        .rejects()
        .into_iter()
        .map(|(k, v)| (k, json!(v)))
        .collect();
    let c = s.counters();
    let counts = RoleCounts::of(lanes.iter().copied());
    let latency_avg = if c.batches == 0 {
        0.0
    } else {
        c.latency_ms_sum as f64 / c.batches as f64
    };
    json!({
        "received": c.received,
        "inserted": c.rows_inserted,
        "dead_letters": c.dead_letters,
        "rejects_by_kind": rejects,
        "batches": c.batches,
        "insert_errors": c.insert_errors,
        "queued": c.queued,
        "queued_bytes": c.queued_bytes,
        "consumer_pending": c.consumer_pending,
        "redeliveries_skipped": c.redeliveries_skipped,
        "resyncs": c.resyncs,
        "last_message": epoch_s(c.last_message_ms),
        "last_insert": epoch_s(c.last_insert_ms),
        "last_error": s.last_error(),
        "last_error_time": epoch_s(c.last_error_ms),
        "failing_since": epoch_s(c.failing_since_ms),
        "retries": c.retries,
        "bound": c.bound,
        "latency_ms_last": c.last_latency_ms,
        "latency_ms_avg": latency_avg,
        "role": TypeRole::of(&counts, c.bound).as_str(),
        "lanes": counts.lanes,
        "lanes_held": counts.held,
    })
}

/// `/stats.lanes[]`: one lane as this instance sees it.
fn lane(l: &LaneView, me: Option<&str>) -> Value {
    json!({
        "type": l.id.data_type.as_str(),
        "partition": lanes::partition(l),
        "label": l.id.label(),
        "durable": l.id.durable,
        "role": l.role.as_str(),
        "held": lanes::is_held(l),
        "holder": lanes::holder(l, me),
        "owner": Some(l.owner.as_str()).filter(|o| !o.is_empty()),
        "bound": l.bound,
        "queued": l.queued,
        "consumer_pending": l.consumer_pending,
        "held_since": epoch_s(l.held_since_ms),
        "acquired": l.acquired,
        "lost": l.lost,
        "released": l.released,
        "waiting": l.waiting,
        "stuck": l.stuck,
    })
}

/// The lane, member, role and cluster keys of `/stats`: `instance`, `role` (the instance's, in
/// words and counts), `lanes` (one entry per lane of the configured types), `members` (each with
/// how many of the lanes seen here the assignment gives it) and `cluster` (the connections as
/// seen from here).
fn cluster_keys(i: &ReportInputs<'_>, lanes: &[LaneView], map: &mut Map<String, Value>) {
    let me = i.stats.instance();
    let counts = RoleCounts::of(lanes);
    let members = i.stats.members();
    map.insert("instance".into(), json!(me));
    map.insert(
        "role".into(),
        json!({
            "summary": counts.summary(),
            "lanes": counts.lanes,
            "held": counts.held,
            "standby": counts.standby,
            "elsewhere": counts.elsewhere,
        }),
    );
    map.insert(
        "lanes".into(),
        lanes.iter().map(|l| lane(l, me.as_deref())).collect(),
    );
    map.insert(
        "members".into(),
        members
            .iter()
            .map(|m| {
                json!({
                    "instance": m.instance,
                    "types": m.types.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
                    "me": m.me,
                    "lanes_assigned": lanes.iter().filter(|l| l.owner == m.instance).count(),
                })
            })
            .collect(),
    );
    map.insert(
        "cluster".into(),
        json!({
            "nats_connected": i.stats.nats_connected(),
            "nats_server": i.stats.nats_server(),
            "clickhouse_up": i.stats.clickhouse_up(),
            "members": members.len(),
            "lanes": counts.lanes,
            "lanes_held_here": counts.held,
        }),
    );
}

/// `/stats.migration`: the migrator's counters; `lag_minutes` holds the tables measured so far
/// (by table name), `last_success` is epoch seconds or `null`.
pub fn migration(m: &MigrationStats) -> Value {
    let lag: Map<String, Value> = MigTable::ALL
        .iter()
        .filter_map(|t| {
            let lag = m.lag_minutes(*t);
            (lag >= 0).then(|| (t.name().to_string(), json!(lag)))
        })
        .collect();
    let c = m.counters();
    json!({
        "rows_migrated": c.rows_migrated,
        "chunks_verified": c.chunks_verified,
        "chunks_repaired": c.chunks_repaired,
        "chunks_mismatched": c.chunks_mismatched,
        "last_success": epoch_s(c.last_success_ms),
        "lag_minutes": lag,
        "late_rows_repaired": MigTable::ALL
            .iter()
            .map(|t| (t.name().to_string(), json!(m.late_rows_repaired(*t))))
            .collect::<Map<String, Value>>(),
        "table_order": MigTable::ALL.iter().map(|t| t.name()).collect::<Vec<_>>(),
    })
}

/// `/stats`: the Python service's shape (`service_status`, `message_stats`, `health_check`) plus `types`
/// (each with its `role` here and its lane counts), `type_order` (the configured order; JSON
/// objects come out key-sorted), `clickhouse_up`, `ready`, `reasons`, `uptime` and `version`,
/// `quality`, the lanes and members as seen from this instance (`instance`, `role`, `lanes`,
/// `members`, `cluster`), and `migration` ([`migration`]) when the migration runs in this
/// process.
///
/// `messages_processed` counts rows *inserted* (the Python service counted enqueued messages),
/// `messages_failed` dead letters and `validation_errors` rejections of every kind.
pub fn stats(i: &ReportInputs<'_>) -> Value {
    let counters = i.counters();
    let sum = |f: fn(&TypeCounters) -> u64| -> u64 { counters.iter().map(f).sum() };
    let max_ms = |f: fn(&TypeCounters) -> i64| counters.iter().map(f).max().unwrap_or(0);
    let received = sum(|c| c.received);
    let inserted = sum(|c| c.rows_inserted);
    let batches = sum(|c| c.batches);
    let rejections: u64 = i
        .types
        .iter()
        .map(|t| i.stats.of(*t).rejects().values().sum::<u64>())
        .sum();
    let lanes = lanes::lanes(i.stats, i.types);
    let types: Map<String, Value> = i
        .types
        .iter()
        .map(|t| {
            let of_type: Vec<&LaneView> = lanes.iter().filter(|l| l.id.data_type == *t).collect();
            (t.as_str().to_string(), type_stats(i.stats.of(*t), &of_type))
        })
        .collect();
    let nats = i.stats.nats_connected();
    let mut body = json!({
        "timestamp": iso(i.now_ms),
        "service": SERVICE,
        "version": VERSION,
        "uptime": (i.now_ms - i.stats.started_ms).max(0) as f64 / 1000.0,
        "service_status": {
            "is_running": i.is_running,
            "subscriptions_count": i.bound_count(),
            "nats_connected": nats,
            "clickhouse_up": i.stats.clickhouse_up(),
        },
        "message_stats": {
            "messages_received": received,
            "messages_processed": inserted,
            "messages_failed": sum(|c| c.dead_letters),
            "validation_errors": rejections,
            "retry_attempts": sum(|c| c.retries),
            "insert_errors": sum(|c| c.insert_errors),
            "last_message_time": epoch_s(max_ms(|c| c.last_message_ms)),
            "last_error_time": epoch_s(max_ms(|c| c.last_error_ms)),
            "batch_inserts": batches,
            "batch_size_total": inserted,
            "batch_size_avg": if batches == 0 { 0.0 } else { inserted as f64 / batches as f64 },
            "queued": sum(|c| c.queued),
            "consumer_pending": sum(|c| c.consumer_pending),
        },
        "health_check": {
            "status": i.status(),
            "nats_connected": nats,
            "subscriptions_active": i.bound_count(),
            "ready": i.readiness.is_ready(),
            "reasons": i.readiness.reasons,
        },
        "types": types,
        "type_order": i.types.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
    });
    if let (Some(m), Value::Object(map)) = (i.migration, &mut body) {
        map.insert("migration".into(), migration(m));
    }
    if let Value::Object(map) = &mut body {
        map.insert("quality".into(), quality(i));
        cluster_keys(i, &lanes, map);
    }
    body
}

/// Data-quality counters per type (sums over markets) and the markets with an open stale
/// episode; `enabled: false` when detection is off.
fn quality(i: &ReportInputs<'_>) -> Value {
    use crate::quality::EventKind;
    let snap = i.stats.quality.snapshot(i.now_ms);
    let mut types = Map::new();
    for t in snap.types.iter().filter(|t| i.types.contains(&t.data_type)) {
        let totals = t.totals();
        let sum = |k: EventKind| totals.of(k);
        let stale: Vec<String> = t
            .keys
            .iter()
            .filter(|m| m.stale_open)
            .map(|m| format!("{}.{}.{}", m.exchange, m.market_type, m.symbol))
            .collect();
        types.insert(
            t.data_type.as_str().to_string(),
            json!({
                "gaps": sum(EventKind::Gap),
                "missing_ids": totals.missing,
                "markets": t.keys.len(),
                "markets_evicted": t.evicted,
                "duplicates": sum(EventKind::Duplicate),
                "out_of_order": sum(EventKind::OutOfOrder),
                "crossed_books": sum(EventKind::CrossedBook),
                "price_jumps": sum(EventKind::PriceJump),
                "stale_markets": stale,
            }),
        );
    }
    json!({ "enabled": snap.enabled, "types": types })
}

/// `/api/v1/status`: the Python service's envelope around the `/stats` body. Always 200 (the Python service's
/// answered 500 once a message had arrived).
pub fn api_status(i: &ReportInputs<'_>) -> Value {
    json!({
        "status": "success",
        "message": "service status",
        "data": {
            "service": SERVICE,
            "version": VERSION,
            "health": {
                "ok": i.readiness.is_ready(),
                "summary": i.readiness.summary(),
            },
            "stats": stats(i),
        },
        "timestamp": iso(i.now_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_is_utc_with_millis() {
        assert_eq!(iso(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn stats_has_the_python_service_keys() {
        let stats = Stats::new(0);
        stats.of(DataType::Trade).update(|c| {
            c.rows_inserted = 7;
            c.batches = 2;
            c.latency_ms_sum = 300;
        });
        let r = Readiness {
            reasons: vec!["nats: not connected".into()],
        };
        let i = ReportInputs {
            stats: &stats,
            types: &[DataType::Trade],
            readiness: &r,
            stuck: &[],
            is_running: true,
            now_ms: 5_000,
            migration: None,
        };
        let v = stats_body_keys(&super::stats(&i));
        for k in [
            "timestamp",
            "service_status.is_running",
            "service_status.subscriptions_count",
            "service_status.nats_connected",
            "message_stats.messages_received",
            "message_stats.messages_processed",
            "message_stats.messages_failed",
            "message_stats.validation_errors",
            "message_stats.retry_attempts",
            "message_stats.last_message_time",
            "message_stats.last_error_time",
            "message_stats.batch_inserts",
            "message_stats.batch_size_total",
            "health_check.status",
            "health_check.nats_connected",
            "health_check.subscriptions_active",
            "types.trade.inserted",
            "types.trade.latency_ms_avg",
        ] {
            assert!(v.contains(&k.to_string()), "missing {k}");
        }
        let body = super::stats(&i);
        assert_eq!(body["message_stats"]["messages_processed"], 7);
        assert_eq!(body["types"]["trade"]["latency_ms_avg"], 150.0);
        assert_eq!(body["health_check"]["status"], "degraded");
        assert_eq!(body["uptime"], 5.0);
        assert!(body.get("migration").is_none());
    }

    #[test]
    fn stats_show_lanes_members_roles_and_the_cluster() {
        let now = 1_700_000_000_000;
        let stats = crate::ops::lanes::tests::fixture(now);
        let r = Readiness { reasons: vec![] };
        let types = [DataType::Trade, DataType::Orderbook];
        let i = ReportInputs {
            stats: &stats,
            types: &types,
            readiness: &r,
            stuck: &[],
            is_running: true,
            now_ms: now,
            migration: None,
        };
        let body = super::stats(&i);
        assert_eq!(body["instance"], "a");
        assert_eq!(
            body["role"],
            json!({
                "summary": "holder of 2 of 6 lanes, standby for 1",
                "lanes": 6, "held": 2, "standby": 1, "elsewhere": 3,
            })
        );
        assert_eq!(body["types"]["trade"]["role"], "partial");
        assert_eq!(body["types"]["trade"]["lanes"], 5);
        assert_eq!(body["types"]["trade"]["lanes_held"], 2);
        assert_eq!(body["types"]["orderbook"]["role"], "elsewhere");
        let lanes = body["lanes"].as_array().unwrap();
        let labels: Vec<&str> = lanes.iter().map(|l| l["label"].as_str().unwrap()).collect();
        assert_eq!(
            labels,
            [
                "trade",
                "trade 0/4",
                "trade 1/4",
                "trade 2/4",
                "trade 3/4",
                "orderbook"
            ]
        );
        assert_eq!(
            lanes[1],
            json!({
                "type": "trade", "partition": "0/4", "label": "trade 0/4",
                "durable": "trade_c_p0of4", "role": "holder", "held": true,
                "holder": "a", "owner": "a", "bound": true, "queued": 3,
                "consumer_pending": 12, "held_since": 1_699_999_980.0,
                "acquired": 2, "lost": 1, "released": 0,
                "waiting": null, "stuck": null,
            })
        );
        assert_eq!(lanes[0]["partition"], Value::Null);
        // Standing by behind `b`: the holder is known, the lease is not held here.
        assert_eq!(
            (
                &lanes[2]["role"],
                &lanes[2]["holder"],
                &lanes[2]["held"],
                &lanes[2]["held_since"]
            ),
            (&json!("standby"), &json!("b"), &json!(false), &Value::Null)
        );
        // Another instance's: its owner is known, its holder is not (from here).
        assert_eq!(
            (&lanes[4]["role"], &lanes[4]["owner"], &lanes[4]["holder"]),
            (&json!("elsewhere"), &json!("c"), &Value::Null)
        );
        assert_eq!(lanes[5]["released"], 1);
        assert_eq!(
            body["members"],
            json!([
                { "instance": "a", "types": ["trade", "orderbook"], "me": true, "lanes_assigned": 3 },
                { "instance": "b", "types": ["trade", "orderbook"], "me": false, "lanes_assigned": 2 },
                { "instance": "c", "types": ["trade", "orderbook"], "me": false, "lanes_assigned": 1 },
            ])
        );
        assert_eq!(
            body["cluster"],
            json!({
                "nats_connected": true, "nats_server": "n1 127.0.0.1:4222",
                "clickhouse_up": true, "members": 3, "lanes": 6, "lanes_held_here": 2,
            })
        );
        // The Python service's keys are still there, untouched.
        assert_eq!(body["service_status"]["nats_connected"], true);
        assert_eq!(api_status(&i)["data"]["stats"]["lanes"], body["lanes"]);
    }

    #[test]
    fn without_lanes_the_role_follows_the_binding() {
        let stats = Stats::new(0);
        stats.of(DataType::Trade).set_bound(true);
        let r = Readiness { reasons: vec![] };
        let i = ReportInputs {
            stats: &stats,
            types: &[DataType::Trade, DataType::Orderbook],
            readiness: &r,
            stuck: &[],
            is_running: true,
            now_ms: 0,
            migration: None,
        };
        let body = super::stats(&i);
        assert_eq!(body["instance"], Value::Null);
        assert_eq!(body["role"]["summary"], "no lanes yet");
        assert_eq!(body["lanes"], json!([]));
        assert_eq!(body["members"], json!([]));
        assert_eq!(body["types"]["trade"]["role"], "holder");
        assert_eq!(body["types"]["orderbook"]["role"], "unknown");
        assert_eq!(body["cluster"]["nats_server"], Value::Null);
    }

    fn stats_body_keys(v: &Value) -> Vec<String> {
        fn walk(prefix: &str, v: &Value, out: &mut Vec<String>) {
            if let Value::Object(m) = v {
                for (k, v) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    out.push(key.clone());
                    walk(&key, v, out);
                }
            }
        }
        let mut out = Vec::new();
        walk("", v, &mut out);
        out
    }
}
