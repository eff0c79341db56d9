//! The fault tests' oracle: `audit::run` (what `marketprism-storage audit` runs) over the
//! streams and the hot tables, asserting that every message is exactly one row or one dead
//! letter.

use marketprism_storage::audit::{self, AuditOptions, AuditReport, AuditTarget, End, NoProgress};
use marketprism_storage::config::Config;
use marketprism_storage::model::DataType;
use marketprism_storage::sink::{Sink, SinkOptions};

use crate::harness::{TestClickHouse, TestNats};

/// Audits `types` over their whole streams (up to the last message) against the hot database
/// and asserts no difference; returns the report for further checks.
pub async fn assert_audit_clean(
    nats: &TestNats,
    ch: &TestClickHouse,
    types: &[DataType],
) -> AuditReport {
    let cfg = Config::defaults().unwrap();
    let targets = types
        .iter()
        .map(|t| AuditTarget {
            data_type: *t,
            stream: cfg.nats.stream_for(*t).unwrap().name.clone(),
            durable: Some(cfg.nats.durable_name(*t)),
        })
        .collect();
    let mut opts = AuditOptions::new(targets, chrono::Utc::now().timestamp_millis());
    opts.end = End::Last;
    let js = async_nats::jetstream::new(nats.client().await);
    let hot = Sink::new(&SinkOptions::new(ch.url.clone(), "marketprism_hot"));
    let report = audit::run(&opts, &js, &hot, &hot, &NoProgress)
        .await
        .unwrap();
    assert!(
        report.ok && report.differences() == 0,
        "audit found differences: {:?}",
        report.totals
    );
    report
}
