//! The scaling benchmark (`bench --instances N --partitions P`): N service processes draining
//! one backlog of a stream laid out for P partitions, with the CPU each one spent per message.
//!
//! Each configuration (one value of N) is a run of its own, on fresh servers: the
//! high-frequency stream is created with P partitions (`source::partition`), and for each type
//! the backlog is published, the two raw ceilings are measured on it exactly as the default
//! benchmark does (one plain pull consumer over all the type's partitions; pre-encoded
//! inserts), then N processes of this binary (`run --instance-id bench-<type>-<i>`, each with
//! its own ops port and a configuration file naming the partitions) are started together and
//! the clock runs until ClickHouse holds every message. CPU is `utime + stime` from
//! `/proc/<pid>/stat`, read when the last row is stored: each instance's (from its start, so
//! start-up and hand-overs are included), and separately nats-server's, the embedded
//! ClickHouse's and this process's own over the same span. The lease bucket is surveyed while
//! the backlog drains, so the report shows which lanes each instance held at the end and how
//! many times a lane changed hands on the way (the first instance up takes every lane, and
//! hands lanes over as the others register).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::TryStreamExt;

use super::{
    BenchError, BenchOptions, Instance, Servers, ServiceChild, err, fill, raw_consume, raw_insert,
    spawn_service, start_servers,
};
use crate::embedded::{Tools, free_port};
use crate::model::DataType;
use crate::source::lease::Leases;
use crate::source::partition::{self, PREFIX};

/// What the scaling benchmark runs.
#[derive(Debug, Clone)]
pub struct ScaleOptions {
    /// Backlog sizes, binary, tools and work directory, as for the default benchmark (the
    /// latency settings are not used).
    pub bench: BenchOptions,
    /// The instance counts to run, one configuration each, in this order.
    pub instances: Vec<u32>,
    /// Partitions of the high-frequency stream.
    pub partitions: u32,
}

/// CPU and work of one service instance over a drain.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstanceFigures {
    /// Its instance id.
    pub id: String,
    /// `utime + stime` from its start to the last row stored, clock ticks.
    pub ticks: u64,
    /// Rows it inserted (its `/stats`: `types.<type>.inserted`).
    pub inserted: u64,
    /// The lanes whose lease it held at the end (labels: `base`, `0/4`, …).
    pub lanes: Vec<String>,
}

/// One configuration's figures for one type.
#[derive(Debug, Clone, Default)]
pub struct ScaleFigures {
    /// The type.
    pub data_type: Option<DataType>,
    /// Service instances.
    pub instances: u32,
    /// Partitions of the stream.
    pub partitions: u32,
    /// Messages in the backlog.
    pub messages: u64,
    /// Average payload size.
    pub avg_bytes: f64,
    /// Raw JetStream consume ceiling, msg/s.
    pub raw_consume: f64,
    /// Raw insert ceiling, rows/s.
    pub raw_insert: f64,
    /// The instances draining the backlog, first row to last row, msg/s.
    pub e2e: f64,
    /// The same from the start of the processes to the last row, msg/s.
    pub wall: f64,
    /// Per instance.
    pub per_instance: Vec<InstanceFigures>,
    /// nats-server over the drain, clock ticks.
    pub nats_ticks: u64,
    /// The embedded ClickHouse over the drain, clock ticks.
    pub clickhouse_ticks: u64,
    /// This process (the benchmark: polling ClickHouse and the lease bucket), clock ticks.
    pub bench_ticks: u64,
    /// Messages per lane in the stream (`base` or `k/P`), base first.
    pub lane_messages: Vec<(String, u64)>,
    /// Times a lane's lease went from one instance to another during the drain.
    pub moves: u32,
    /// Seconds from the start to the last move (0: none).
    pub settled_secs: f64,
}

impl ScaleFigures {
    /// End-to-end throughput (first row to last) as a fraction of the smaller raw ceiling.
    pub fn ratio(&self) -> f64 {
        super::ratio(self.e2e, self.raw_consume, self.raw_insert)
    }

    /// CPU of every instance together, per message of the backlog, µs.
    pub fn service_us(&self) -> f64 {
        us_per_msg(
            self.per_instance.iter().map(|i| i.ticks).sum(),
            self.messages,
        )
    }

    /// CPU of everything on the machine that took part (instances, nats-server, ClickHouse,
    /// the benchmark), per message, µs.
    pub fn all_us(&self) -> f64 {
        let service: u64 = self.per_instance.iter().map(|i| i.ticks).sum();
        us_per_msg(
            service + self.nats_ticks + self.clickhouse_ticks + self.bench_ticks,
            self.messages,
        )
    }
}

/// `ticks` of CPU (USER_HZ) per message, in µs; 0 without messages.
pub fn us_per_msg(ticks: u64, messages: u64) -> f64 {
    if messages == 0 {
        return 0.0;
    }
    ticks as f64 / crate::ops::process::USER_HZ * 1e6 / messages as f64
}

/// `utime + stime` of process `pid` so far, clock ticks (0 once it is gone).
pub(super) fn cpu_ticks(pid: Option<u32>) -> u64 {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => return 0,
    };
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| crate::ops::process::parse_cpu_ticks(&s))
        .unwrap_or(0)
}

fn self_ticks() -> u64 {
    cpu_ticks(Some(std::process::id()))
}

/// A lane's label from its lease key (its durable): `base` for `base`, `k/n` for
/// `<base>_p<k>of<n>`; `None` for another type's lane.
pub fn lane_label(base: &str, key: &str) -> Option<String> {
    if key == base {
        return Some("base".into());
    }
    partition::parse_partition_durable(base, key).map(|p| p.to_string())
}

/// Folds one survey of the lease bucket (lease key, holder) into `last` (the last holder seen
/// of each lane); returns how many lanes changed from one instance to another since.
pub fn note_holders(last: &mut BTreeMap<String, String>, held: &[(String, String)]) -> u32 {
    let mut moves = 0;
    for (key, holder) in held {
        match last.insert(key.clone(), holder.clone()) {
            Some(prev) if &prev != holder => moves += 1,
            _ => {}
        }
    }
    moves
}

/// Messages per partition `k` from a stream's per-subject counts, for subjects stored by the
/// partition transform as `_mp.<type>.<n>.<k>.…`; other subjects are not counted.
pub fn per_partition(subjects: impl IntoIterator<Item = (String, u64)>) -> BTreeMap<u32, u64> {
    let mut out = BTreeMap::new();
    for (s, n) in subjects {
        let mut it = s.split('.');
        if it.next() != Some(PREFIX) {
            continue;
        }
        let (_, _, Some(k)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        if let Ok(k) = k.parse::<u32>() {
            *out.entry(k).or_insert(0) += n;
        }
    }
    out
}

/// The service's configuration file for a run: the user's YAML (if any) with
/// `nats.streams.high_frequency.partitions` set to `partitions`.
pub fn with_partitions(user_yaml: &str, partitions: u32) -> Result<String, BenchError> {
    use yaml_serde::{Mapping, Value};
    let mut root: Value = if user_yaml.trim().is_empty() {
        Value::Mapping(Mapping::new())
    } else {
        yaml_serde::from_str(user_yaml).map_err(err("service config"))?
    };
    let mut at = &mut root;
    for key in ["nats", "streams", "high_frequency"] {
        let Value::Mapping(m) = at else {
            return Err(BenchError(format!(
                "service config: {key}'s parent is not a mapping"
            )));
        };
        at = m
            .entry(Value::String(key.into()))
            .or_insert_with(|| Value::Mapping(Mapping::new()));
        if at.is_null() {
            *at = Value::Mapping(Mapping::new());
        }
    }
    let Value::Mapping(m) = at else {
        return Err(BenchError(
            "service config: nats.streams.high_frequency is not a mapping".into(),
        ));
    };
    m.insert(
        Value::String("partitions".into()),
        Value::Number(partitions.into()),
    );
    yaml_serde::to_string(&root).map_err(err("service config"))
}

/// A tiny HTTP/1.0 GET of a JSON document on the loopback (an instance's `/stats`).
async fn get_json(port: u16, path: &str) -> Result<serde_json::Value, BenchError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(err("connect to an instance"))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await
        .map_err(err("ask an instance"))?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .map_err(err("read an instance's answer"))?
        .map_err(err("read an instance's answer"))?;
    let text = String::from_utf8_lossy(&buf);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).map_err(err("an instance's /stats"))
}

/// (lease key, holder) of every held lease.
async fn held(leases: &Leases) -> Vec<(String, String)> {
    match tokio::time::timeout(Duration::from_secs(2), leases.survey()).await {
        Ok(Ok((_, held))) => held.into_iter().map(|h| (h.key, h.instance)).collect(),
        _ => Vec::new(),
    }
}

/// Surveys the lease bucket every 500 ms on a task of its own while the backlog drains,
/// counting the lanes that change hands.
struct Survey {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<(u32, Option<Duration>)>,
}

impl Survey {
    fn start(leases: Leases, started: Instant) -> Survey {
        let stop = tokio_util::sync::CancellationToken::new();
        let until = stop.clone();
        let task = tokio::spawn(async move {
            let mut holders = BTreeMap::new();
            let (mut moves, mut last) = (0, None);
            loop {
                let moved = note_holders(&mut holders, &held(&leases).await);
                if moved > 0 {
                    moves += moved;
                    last = Some(started.elapsed());
                }
                tokio::select! {
                    _ = until.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
            // A last look: a move between the last survey and the end counts too.
            let moved = note_holders(&mut holders, &held(&leases).await);
            if moved > 0 {
                moves += moved;
                last = Some(started.elapsed());
            }
            (moves, last)
        });
        Survey { stop, task }
    }

    /// Lease moves seen, and when the last one was seen (from the start).
    async fn stop(self) -> (u32, Option<Duration>) {
        self.stop.cancel();
        self.task.await.unwrap_or((0, None))
    }
}

struct Running {
    id: String,
    http_port: u16,
    child: ServiceChild,
}

/// Runs every configuration of `o` in turn; one entry per configuration and type.
pub async fn run(
    o: &ScaleOptions,
    mut progress: impl FnMut(&str),
) -> Result<Vec<ScaleFigures>, BenchError> {
    let tools = Tools::locate(&o.bench.tools_dir).map_err(err("tools"))?;
    let user_yaml = match &o.bench.service_config {
        Some(p) => std::fs::read_to_string(p).map_err(err("read the service config"))?,
        None => String::new(),
    };
    let mut out = Vec::new();
    for &n in &o.instances {
        let dir = o
            .bench
            .work_dir
            .join(format!("i{n}-p{partitions}", partitions = o.partitions));
        std::fs::create_dir_all(&dir).map_err(err("work dir"))?;
        let config = dir.join("service.yaml");
        std::fs::write(&config, with_partitions(&user_yaml, o.partitions)?)
            .map_err(err("write the service config"))?;
        progress(&format!(
            "{n} instance(s), {} partition(s): starting nats-server and ClickHouse",
            o.partitions
        ));
        let s = start_servers(&dir, &tools).await?;
        let res = one_configuration(o, n, &s, &dir, &config, &mut progress).await;
        s.ch.stop().await;
        s.nats.stop().await;
        out.extend(res?);
    }
    Ok(out)
}

async fn one_configuration(
    o: &ScaleOptions,
    n: u32,
    s: &Servers,
    dir: &Path,
    config: &Path,
    progress: &mut impl FnMut(&str),
) -> Result<Vec<ScaleFigures>, BenchError> {
    let (client, cfg) = super::connect(s, o.partitions).await?;
    let js = jetstream::new(client.clone());
    let settings = crate::service::pipeline_settings(&cfg, String::new());
    let leases = Leases::open(
        &js,
        &settings.lease_bucket,
        "bench-observer",
        &[],
        settings.kv_replicas,
    )
    .await
    .map_err(err("lease bucket"))?;
    let fetch = cfg.nats.fetch_batch.get();
    let mut out = Vec::new();
    for (t, messages) in [
        (DataType::Trade, o.bench.trades),
        (DataType::Orderbook, o.bench.orderbooks),
    ] {
        if messages == 0 {
            continue;
        }
        let mut f = ScaleFigures {
            data_type: Some(t),
            instances: n,
            partitions: o.partitions,
            messages,
            ..Default::default()
        };
        let tag = format!("{t} ×{n}");
        progress(&format!(
            "{tag}: publishing a backlog of {messages} messages"
        ));
        f.avg_bytes = fill(&client, t, messages, o.bench.depth).await?;
        f.lane_messages = lane_messages(&js, t, o.partitions, messages).await?;
        progress(&format!("{tag}: raw JetStream consume"));
        let filter = if o.partitions >= 2 {
            format!("{PREFIX}.{t}.>")
        } else {
            t.subject_filter()
        };
        f.raw_consume = raw_consume(&client, t, filter, messages, fetch).await?;
        progress(&format!("{tag}: raw ClickHouse insert"));
        let batch = cfg.batch.get(t).max_rows.get();
        f.raw_insert = raw_insert(&s.sink, t, messages, batch, o.bench.depth).await?;
        progress(&format!(
            "{tag}: {n} instance(s) draining the backlog over {} partition(s)",
            o.partitions
        ));
        let base = cfg.nats.durable_name(t);
        drain(o, s, t, n, dir, config, &leases, &base, &mut f).await?;
        out.push(f);
    }
    Ok(out)
}

/// Messages per lane of type `t` in the stream (all in the base lane when unpartitioned).
async fn lane_messages(
    js: &jetstream::Context,
    t: DataType,
    partitions: u32,
    messages: u64,
) -> Result<Vec<(String, u64)>, BenchError> {
    if partitions < 2 {
        return Ok(vec![("base".into(), messages)]);
    }
    let stream = js
        .get_stream("MARKET_DATA_HF")
        .await
        .map_err(err("stream"))?;
    let subjects: Vec<(String, usize)> = stream
        .info_with_subjects(format!("{PREFIX}.{t}.{partitions}.>"))
        .await
        .map_err(err("stream subjects"))?
        .try_collect()
        .await
        .map_err(err("stream subjects"))?;
    let counts = per_partition(subjects.into_iter().map(|(s, c)| (s, c as u64)));
    let in_parts: u64 = counts.values().sum();
    let mut v = vec![("base".to_string(), messages.saturating_sub(in_parts))];
    v.extend((0..partitions).map(|k| {
        (
            format!("{k}/{partitions}"),
            counts.get(&k).copied().unwrap_or(0),
        )
    }));
    Ok(v)
}

#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename the arguments
async fn drain(
    o: &ScaleOptions,
    s: &Servers,
    t: DataType,
    n: u32,
    dir: &Path,
    config: &Path,
    leases: &Leases,
    base: &str,
    f: &mut ScaleFigures,
) -> Result<(), BenchError> {
    let (nats0, ch0, me0) = (cpu_ticks(s.nats.pid()), cpu_ticks(s.ch.pid()), self_ticks());
    let started = Instant::now();
    let mut running = Vec::new();
    for i in 1..=n {
        let id = format!("bench-{t}-{i}");
        let log: PathBuf = dir.join(format!("{id}.log"));
        let http_port = free_port().map_err(err("free port"))?;
        let instance = Instance {
            config: Some(config),
            instance_id: Some(&id),
            http_port,
            log: &log,
            log_level: "info",
        };
        let child = spawn_service(&o.bench, s, t, &instance)?;
        running.push(Running {
            id,
            http_port,
            child,
        });
    }
    let survey = Survey::start(leases.clone(), started);
    let stored = super::wait_stored(s, t, f.messages).await;
    let done = Instant::now();
    // CPU first, while the processes still run; then what the survey saw.
    for r in &running {
        f.per_instance.push(InstanceFigures {
            id: r.id.clone(),
            ticks: cpu_ticks(Some(r.child.0.id())),
            ..Default::default()
        });
    }
    f.nats_ticks = cpu_ticks(s.nats.pid()).saturating_sub(nats0);
    f.clickhouse_ticks = cpu_ticks(s.ch.pid()).saturating_sub(ch0);
    f.bench_ticks = self_ticks().saturating_sub(me0);
    let (moves, last_move) = survey.stop().await;
    f.e2e = stored.map_err(|e| BenchError(format!("{e} (instance logs in {})", dir.display())))?;
    f.wall = f.messages as f64 / done.duration_since(started).as_secs_f64();
    let end = held(leases).await;
    f.moves = moves;
    f.settled_secs = last_move.map_or(0.0, |d| d.as_secs_f64());
    for (r, fi) in running.iter().zip(f.per_instance.iter_mut()) {
        fi.inserted = get_json(r.http_port, "/stats")
            .await
            .ok()
            .and_then(|v| v["types"][t.as_str()]["inserted"].as_u64())
            .unwrap_or(0);
        let mut lanes: Vec<String> = end
            .iter()
            .filter(|(_, holder)| holder == &r.id)
            .filter_map(|(key, _)| lane_label(base, key))
            .collect();
        lanes.sort_by_key(|l| lane_order(l));
        fi.lanes = lanes;
    }
    drop(running);
    Ok(())
}

/// Sort key of a lane label: `base` first, then partitions by number.
fn lane_order(label: &str) -> (u32, u32) {
    match label.split_once('/') {
        Some((k, _)) => (1, k.parse().unwrap_or(u32::MAX)),
        None => (0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_per_message_from_clock_ticks() {
        // 250 ticks = 2.5 s of CPU over a million messages: 2.5 µs each.
        assert_eq!(us_per_msg(250, 1_000_000), 2.5);
        assert_eq!(us_per_msg(250, 0), 0.0);
        assert_eq!(us_per_msg(0, 10), 0.0);
    }

    #[test]
    fn this_process_has_spent_some_cpu() {
        if Path::new("/proc/self/stat").exists() {
            // Burn CPU until the kernel has accounted a tick of it (bounded: 5 s of wall time).
            let until = Instant::now() + Duration::from_secs(5);
            let mut x = 0u64;
            while self_ticks() == 0 && Instant::now() < until {
                for i in 0..1_000_000u64 {
                    x = x.wrapping_mul(31).wrapping_add(i);
                }
            }
            assert!(self_ticks() > 0, "{x}");
        }
        assert_eq!(cpu_ticks(None), 0);
        assert_eq!(
            cpu_ticks(Some(u32::MAX)),
            0,
            "a process that is gone has spent 0"
        );
    }

    #[test]
    fn lane_labels_from_lease_keys() {
        let b = "marketprism_storage_trade";
        assert_eq!(lane_label(b, b).as_deref(), Some("base"));
        assert_eq!(
            lane_label(b, "marketprism_storage_trade_p3of4").as_deref(),
            Some("3/4")
        );
        assert_eq!(lane_label(b, "marketprism_storage_orderbook_p0of4"), None);
        assert_eq!(lane_label(b, "member.x"), None);
        let mut v = vec![
            "2/4".to_string(),
            "10/12".into(),
            "base".into(),
            "0/4".into(),
        ];
        v.sort_by_key(|l| lane_order(l));
        assert_eq!(v, ["base", "0/4", "2/4", "10/12"]);
    }

    #[test]
    fn a_move_is_a_lane_held_by_another_instance_than_before() {
        let mut last = BTreeMap::new();
        let h = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(k, i)| (k.to_string(), i.to_string()))
                .collect()
        };
        assert_eq!(note_holders(&mut last, &h(&[("p0", "a"), ("p1", "a")])), 0);
        // p1 released (absent for a look), then taken by b: one move; p0 stays.
        assert_eq!(note_holders(&mut last, &h(&[("p0", "a")])), 0);
        assert_eq!(note_holders(&mut last, &h(&[("p0", "a"), ("p1", "b")])), 1);
        assert_eq!(note_holders(&mut last, &h(&[("p0", "b"), ("p1", "a")])), 2);
    }

    #[test]
    fn messages_are_counted_per_partition() {
        let c = per_partition([
            ("_mp.trade.4.0.binance.spot.BTC-USDT".to_string(), 10),
            ("_mp.trade.4.0.okx.spot.BTC-USDT".to_string(), 5),
            ("_mp.trade.4.3.okx.perp.ETH-USDT".to_string(), 7),
            ("trade.binance.spot.BTC-USDT".to_string(), 100),
            ("_mp.trade.4".to_string(), 1),
            ("_mp.trade.4.x.a.b.c".to_string(), 1),
        ]);
        assert_eq!(c, BTreeMap::from([(0, 15), (3, 7)]));
    }

    #[test]
    fn the_service_config_gets_the_partitions() {
        let y = with_partitions("", 4).unwrap();
        let v: yaml_serde::Value = yaml_serde::from_str(&y).unwrap();
        assert_eq!(v["nats"]["streams"]["high_frequency"]["partitions"], 4);
        let user = "nats:\n  fetch_batch: 500\n  streams:\n    high_frequency:\n      partitions: 2\n      replicas: 1\nbatch: {}\n";
        let v: yaml_serde::Value =
            yaml_serde::from_str(&with_partitions(user, 6).unwrap()).unwrap();
        assert_eq!(v["nats"]["streams"]["high_frequency"]["partitions"], 6);
        assert_eq!(v["nats"]["streams"]["high_frequency"]["replicas"], 1);
        assert_eq!(v["nats"]["fetch_batch"], 500);
        assert!(with_partitions("nats: [1, 2]", 4).is_err());
        assert!(with_partitions("nats:\n  streams:\n", 3).is_ok());
    }
}
