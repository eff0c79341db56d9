//! Config → the parts the service is built from: stream specs, pipeline settings, sinks.
//!
//! Each function maps validated configuration to one stage's own type (Vector's
//! `SinkConfig::build` beside its config); none of them opens a connection.

use std::collections::BTreeMap;

use crate::batch::Limits;
use crate::config::{self, Config, StreamConfig};
use crate::embedded::{ChServerOptions, EmbeddedClickHouse, EmbeddedError, Tools};
use crate::model::DataType;
use crate::pipeline::Settings;
use crate::sink::{Compression, Sink, SinkOptions};
use crate::source::ConsumerSpec;
use crate::source::streams::StreamSpec;

fn stream_spec(which: &str, s: &StreamConfig) -> StreamSpec {
    StreamSpec {
        name: s.name.clone(),
        which: which.to_string(),
        subjects: s.subjects.clone(),
        max_age: s.max_age,
        max_msgs: s.max_msgs,
        max_bytes: i64::try_from(s.max_bytes.get()).unwrap_or(i64::MAX),
        duplicate_window: s.duplicate_window,
        replicas: s.replicas.get(),
        partitions: s.partitions,
    }
}

/// The streams to ensure: the Python service's `MARKET_DATA` and our `MARKET_DATA_HF`.
pub fn stream_specs(cfg: &Config) -> Vec<StreamSpec> {
    vec![
        stream_spec("market_data", &cfg.nats.streams.market_data),
        stream_spec("high_frequency", &cfg.nats.streams.high_frequency),
    ]
}

/// The durable consumer of type `t`, when a configured stream holds its subjects.
fn consumer_spec(cfg: &Config, t: DataType) -> Option<ConsumerSpec> {
    let stream = cfg.nats.stream_for(t)?;
    Some(ConsumerSpec {
        data_type: t,
        stream: stream.name.clone(),
        durable: cfg.nats.durable_name(t),
        filter_subject: t.subject_filter(),
        ack_wait: cfg.nats.ack_wait,
        max_ack_pending: i64::try_from(cfg.nats.max_ack_pending.get(t).get()).unwrap_or(i64::MAX),
    })
}

/// The batch thresholds of type `t`.
pub fn limits(cfg: &Config, t: DataType) -> Limits {
    let b = cfg.batch.get(t);
    Limits {
        max_rows: b.max_rows.get(),
        max_bytes: usize::try_from(b.max_bytes.get()).unwrap_or(usize::MAX),
        max_age: b.max_age,
    }
}

/// Resolves the pipeline settings from the configuration.
pub fn pipeline_settings(cfg: &Config, instance_id: String) -> Settings {
    let mut consumers = BTreeMap::new();
    let mut limits_by_type = BTreeMap::new();
    let mut max_queue = BTreeMap::new();
    let mut max_queue_bytes = BTreeMap::new();
    for t in DataType::ALL {
        let b = cfg.batch.get(t);
        max_queue.insert(t, b.max_queue.get());
        max_queue_bytes.insert(t, b.max_queue_bytes.get());
        limits_by_type.insert(t, limits(cfg, t));
        if let Some(c) = consumer_spec(cfg, t) {
            consumers.insert(t, c);
        }
    }
    Settings {
        types: cfg.nats.types.clone(),
        streams: stream_specs(cfg),
        consumers,
        limits: limits_by_type,
        max_queue,
        max_queue_bytes,
        fetch_batch: cfg.nats.fetch_batch.get(),
        fetch_max_bytes: usize::try_from(cfg.nats.fetch_max_bytes.get()).unwrap_or(usize::MAX),
        journal_bucket: cfg.nats.journal_bucket.clone(),
        lease_bucket: format!("{}_leases", cfg.nats.journal_bucket),
        kv_replicas: cfg.nats.kv_replicas.get(),
        instance_id,
        retry: cfg.retry.policy(),
    }
}

/// `<hostname>:<http port>`: the lease holder's name when `--instance-id` is not given.
pub fn default_instance_id(cfg: &Config) -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}", cfg.http.port)
}

/// A sink on `endpoint`'s database, with the configured compression, insert timeout and
/// retry policy.
pub fn sink_for(cfg: &Config, endpoint: &config::ClickHouseEndpoint) -> Sink {
    let mut o = SinkOptions::new(endpoint.base_url.clone(), endpoint.database.clone());
    o.user = Some(endpoint.user.clone()).filter(|u| !u.is_empty());
    o.password = Some(endpoint.password.expose().to_string()).filter(|p| !p.is_empty());
    o.tls = endpoint.tls.clone();
    o.compression = match cfg.clickhouse.compression {
        config::Compression::None => Compression::None,
        config::Compression::Lz4 => Compression::Lz4,
    };
    o.end_timeout = cfg.clickhouse.insert_timeout;
    o.backoff = cfg.retry.policy();
    o.cluster = cfg
        .clickhouse
        .cluster
        .as_ref()
        .map(|_| crate::sink::ClusterInsert {
            quorum: cfg.clickhouse.insert_quorum,
            quorum_parallel: cfg.clickhouse.insert_quorum_parallel,
            quorum_timeout: cfg.clickhouse.insert_quorum_timeout,
        });
    Sink::new(&o)
}

/// Starts the configured embedded ClickHouse (`embedded.data_dir`/clickhouse on
/// `embedded.listen`).
pub async fn start_embedded_clickhouse(cfg: &Config) -> Result<EmbeddedClickHouse, EmbeddedError> {
    let tools = Tools::locate(&cfg.embedded.tools_dir)?;
    let dir = cfg.embedded.data_dir.join("clickhouse");
    let listen = cfg.embedded.listen.to_string();
    EmbeddedClickHouse::start_with(&tools, &dir, &listen, "warning", &chserver_options(cfg)).await
}

/// The embedded ClickHouse's password, HTTPS and guard from `embedded.*`.
pub fn chserver_options(cfg: &Config) -> ChServerOptions {
    let e = &cfg.embedded;
    ChServerOptions {
        user: Some(e.user.clone()),
        password: Some(e.password.expose().to_string()).filter(|p| !p.is_empty()),
        tls: e.tls_cert.clone().zip(e.tls_key.clone()),
        tls_client_ca: e.tls_client_ca.clone(),
        allow_external: e.allow_external,
    }
}

/// For one-shot commands: a hot sink, starting the embedded ClickHouse for the duration of the
/// command when it is configured and not already running (a running `run` owns it otherwise).
pub async fn one_shot_clickhouse(
    cfg: &Config,
) -> Result<(Sink, Option<EmbeddedClickHouse>), EmbeddedError> {
    let sink = sink_for(cfg, &cfg.hot_endpoint());
    if !cfg.clickhouse.is_embedded() || sink.ping().await.is_ok() {
        return Ok((sink, None));
    }
    Ok((sink, Some(start_embedded_clickhouse(cfg).await?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_follow_the_config() {
        let cfg = Config::defaults().unwrap();
        let s = pipeline_settings(&cfg, "host:8081".into());
        assert_eq!(s.types, cfg.nats.types);
        assert_eq!(s.instance_id, "host:8081");
        assert_eq!(
            s.lease_bucket,
            format!("{}_leases", cfg.nats.journal_bucket)
        );
        assert_eq!(s.kv_replicas, 1, "the streams' replicas");
        let names: Vec<&str> = s.streams.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(names, ["MARKET_DATA", "MARKET_DATA_HF"]);
        for t in DataType::ALL {
            assert_eq!(s.limits[&t].max_rows, cfg.batch.get(t).max_rows.get());
            let c = &s.consumers[&t];
            assert_eq!(c.durable, cfg.nats.durable_name(t));
            assert_eq!(c.ack_wait, cfg.nats.ack_wait);
        }
    }
}
