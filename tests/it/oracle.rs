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
    assert_audit_clean_with(nats.client().await, ch, types).await
}

/// [`assert_audit_clean`] reading the streams through `client` (a cluster's, for one).
pub async fn assert_audit_clean_with(
    client: async_nats::Client,
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
    let js = async_nats::jetstream::new(client);
    let hot = Sink::new(&SinkOptions::new(ch.url.clone(), "marketprism_hot"));
    // An audit that could not run (a cluster still electing a leader answers "no
    // responders" for a moment) is retried; only a report that ran is a verdict.
    let mut attempt = 0;
    let report = loop {
        match audit::run(&opts, &js, &hot, &hot, &NoProgress).await {
            Ok(r) => break r,
            Err(e) if attempt < 10 => {
                eprintln!("audit could not run ({e}); again in 1 s");
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            Err(e) => panic!("audit could not run: {e}"),
        }
    };
    assert!(
        report.ok && report.differences() == 0,
        "audit found differences: {:?}",
        report.totals
    );
    report
}
