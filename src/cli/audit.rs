//! `audit`: read the streams, compare with ClickHouse, report per type and market; exit 0 when
//! everything matches, 1 on any difference, 2 when the audit could not run.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Context as _;

use crate::audit::{self, AuditOptions, AuditReport, AuditTarget, End, Start};
use crate::config::Config;
use crate::model::DataType;

use super::ExitError;

/// Arguments of `audit`.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Start: messages published at or after this time (`YYYY-MM-DD`, RFC 3339 or Unix ms).
    /// Default: the stream's first message.
    #[arg(long, conflicts_with = "start_seq")]
    pub from: Option<String>,
    /// End: messages published before this time. Default: the service's ack floor per type.
    #[arg(long, conflicts_with = "end_seq")]
    pub to: Option<String>,
    /// Start at this stream sequence instead of a time.
    #[arg(long)]
    pub start_seq: Option<u64>,
    /// End at this stream sequence (inclusive) instead of a time.
    #[arg(long)]
    pub end_seq: Option<u64>,
    /// Only these types (repeatable; default: the configured ones).
    #[arg(long = "type")]
    pub types: Vec<String>,
    /// Audit the cold database instead of the hot one (dead letters are always hot).
    #[arg(long, conflicts_with = "database")]
    pub cold: bool,
    /// Audit this database (on the hot server) instead of the hot one.
    #[arg(long)]
    pub database: Option<String>,
    /// Edge context read on each side of the range, e.g. `5m`, `30s`.
    #[arg(long, default_value = "5m")]
    pub margin: String,
    /// Width of a fingerprint cell, e.g. `1m`.
    #[arg(long, default_value = "1m")]
    pub bucket: String,
    /// Messages per pull request.
    #[arg(long, default_value_t = audit::DEFAULT_FETCH_BATCH)]
    pub fetch_batch: usize,
    /// Decode threads (default: one per core).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// Runs `audit`, mapping a difference to exit 1 and a failure to exit 2.
pub async fn run(cfg: &Config, args: &AuditArgs) -> anyhow::Result<()> {
    let report = match audit(cfg, args).await {
        Ok(r) => r,
        Err(e) => {
            return Err(ExitError {
                code: 2,
                message: format!("audit failed: {e:#}"),
            }
            .into());
        }
    };
    if args.json {
        let v = serde_json::to_string_pretty(&report).unwrap_or_default();
        super::out(&format!("{v}\n"));
    } else {
        super::out(&render(&report));
    }
    if !report.ok {
        return Err(ExitError {
            code: 1,
            message: format!(
                "{} differences between the streams and `{}`",
                report.differences(),
                report.database
            ),
        }
        .into());
    }
    Ok(())
}

fn types(cfg: &Config, names: &[String]) -> anyhow::Result<Vec<DataType>> {
    if names.is_empty() {
        return Ok(cfg.nats.types.clone());
    }
    let mut out = Vec::new();
    for n in names {
        let t = DataType::parse(n).with_context(|| {
            format!(
                "unknown type {n:?} (one of: {})",
                DataType::ALL.map(|t| t.as_str()).join(", ")
            )
        })?;
        if !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(out)
}

fn span_ms(s: &str) -> anyhow::Result<i64> {
    let d = crate::config::parse_duration(s)
        .map_err(|e| anyhow::anyhow!("invalid span {s:?}: {e} (use e.g. 30s, 5m, 1h)"))?;
    Ok(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

async fn audit(cfg: &Config, args: &AuditArgs) -> anyhow::Result<AuditReport> {
    let now = chrono::Utc::now().timestamp_millis();
    let mut targets = Vec::new();
    for t in types(cfg, &args.types)? {
        let stream = cfg
            .nats
            .stream_for(t)
            .with_context(|| format!("no configured stream captures {t}"))?;
        targets.push(AuditTarget {
            data_type: t,
            stream: stream.name.clone(),
            durable: Some(cfg.nats.durable_name(t)),
        });
    }
    let mut opts = AuditOptions::new(targets, now);
    opts.start = match (&args.from, args.start_seq) {
        (Some(f), _) => Start::Time(super::verify::parse_time(f)?),
        (None, Some(s)) => Start::Seq(s),
        (None, None) => Start::Beginning,
    };
    opts.end = match (&args.to, args.end_seq) {
        (Some(t), _) => End::Time(super::verify::parse_time(t)?),
        (None, Some(s)) => End::Seq(s),
        (None, None) => End::AckFloor,
    };
    opts.margin_ms = span_ms(&args.margin)?;
    opts.bucket_ms = span_ms(&args.bucket)?.max(1);
    opts.fetch_batch = args.fetch_batch.max(1);
    if let Some(w) = args.workers {
        opts.workers = w.max(1);
    }
    let client = crate::service::nats::connect_once(&cfg.nats, "marketprism-storage audit").await?;
    let js = async_nats::jetstream::new(client);
    let (hot, embedded) = crate::service::one_shot_clickhouse(cfg).await?;
    let rows = if args.cold {
        crate::service::sink_for(cfg, &cfg.cold_endpoint())
    } else if let Some(db) = &args.database {
        hot.on_database(db)
    } else {
        hot.clone()
    };
    let progress = TermProgress::new();
    let report = audit::run(&opts, &js, &rows, &hot, &progress).await;
    progress.finish();
    if let Some(s) = embedded {
        s.stop().await;
    }
    Ok(report?)
}

fn list<T>(items: &[T], f: impl Fn(&T) -> String) -> String {
    items.iter().map(f).collect::<Vec<_>>().join(" ")
}

/// One table row: the market, the counts in header order, the `first` column.
fn row(market: [&str; 3], c: &audit::Counts, first: String) -> Vec<String> {
    let mut v: Vec<String> = market.iter().map(|x| x.to_string()).collect();
    v.extend(
        [
            c.messages,
            c.rows,
            c.dead_letters,
            c.missing,
            c.duplicated,
            c.unexplained,
            c.missing_dead_letters,
        ]
        .map(|n| n.to_string()),
    );
    v.push(first);
    v
}

/// The text report: one table per type (a row per market), then totals and throughput.
pub fn render(r: &AuditReport) -> String {
    let mut out = format!("audit of `{}` against the streams\n", r.database);
    for t in &r.types {
        out.push_str(&format!(
            "\n{} ({} ← {} seq {}..{}, {} context messages, {}/{} cells resolved by key)\n",
            t.data_type,
            t.table,
            t.stream,
            t.first_seq,
            t.last_seq,
            t.context_messages,
            t.cells_differing,
            t.cells
        ));
        let mut rows: Vec<Vec<String>> = t
            .markets
            .iter()
            .map(|m| {
                let c = &m.counts;
                let mut first = Vec::new();
                if !m.first_missing.is_empty() {
                    first.push(format!(
                        "missing: {}",
                        list(&m.first_missing, |x| format!("{}@{}", x.key, x.seq))
                    ));
                }
                if !m.first_duplicated.is_empty() {
                    first.push(format!(
                        "dup: {}",
                        list(&m.first_duplicated, |x| format!("{}×{}", x.key, x.stored))
                    ));
                }
                if !m.first_unexplained.is_empty() {
                    first.push(format!(
                        "unexplained: {}",
                        list(&m.first_unexplained, |x| x.key.clone())
                    ));
                }
                if !m.first_missing_dead_letters.is_empty() {
                    first.push(format!(
                        "no dead letter: seq {}",
                        list(&m.first_missing_dead_letters, |x| x.to_string())
                    ));
                }
                row(
                    [&m.exchange, &m.market_type, &m.symbol],
                    c,
                    first.join("; "),
                )
            })
            .collect();
        let c = &t.counts;
        rows.push(row(
            ["total", "", ""],
            c,
            if c.duplicated_dead_letters > 0 {
                format!("{} duplicated dead letters", c.duplicated_dead_letters)
            } else {
                String::new()
            },
        ));
        out.push_str(&super::table::render(
            &[
                "exchange",
                "market_type",
                "symbol",
                "messages",
                "rows",
                "dead",
                "missing",
                "dup",
                "unexplained",
                "no_dlq",
                "first",
            ],
            &rows,
        ));
        if t.refused_rows > 0 {
            out.push_str(&format!(
                "{} rows refused by ClickHouse, matched to their dead letters (counted in dead)\n",
                t.refused_rows
            ));
        }
        for m in &t.first_missing_dead_letters {
            out.push_str(&format!("no dead letter for seq {}: {}\n", m.seq, m.reason));
        }
    }
    let c = &r.totals;
    out.push_str(&format!(
        "\ntotal: {} messages, {} rows expected, {} matched, {} dead letters; {} missing, {} duplicated, {} unexplained, {} missing dead letters, {} duplicated dead letters\n",
        c.messages,
        c.rows_expected,
        c.rows_matched,
        c.dead_letters,
        c.missing,
        c.duplicated,
        c.unexplained,
        c.missing_dead_letters,
        c.duplicated_dead_letters
    ));
    out.push_str(&format!(
        "audited {} messages in {:.2} s: {:.0} msgs/s\n{}\n",
        c.messages,
        r.elapsed_s,
        r.messages_per_s,
        if r.ok {
            "OK: every message is stored exactly once (or is a dead letter)"
        } else {
            "DIFFERENCES FOUND"
        }
    ));
    out
}

/// Messages read and pending at start, per type.
type ReadCounts = BTreeMap<DataType, (u64, u64)>;

/// Progress on stderr ([`super::progress::Progress`]): every type being read, total rate.
struct TermProgress {
    line: super::progress::Progress,
    started: Instant,
    /// Per type `(read, of)`.
    state: Mutex<ReadCounts>,
}

impl TermProgress {
    fn new() -> TermProgress {
        TermProgress {
            line: super::progress::Progress::stderr(),
            started: Instant::now(),
            state: Mutex::new(BTreeMap::new()),
        }
    }

    fn finish(&self) {
        self.line.finish(None);
    }
}

impl audit::Progress for TermProgress {
    fn read(&self, data_type: DataType, messages: u64, of: u64) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        st.insert(data_type, (messages, of));
        self.line.update(|| {
            let total: u64 = st.values().map(|(n, _)| n).sum();
            let rate = total as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
            let parts: Vec<String> = st
                .iter()
                .map(|(t, (n, of))| format!("{t} {n}/{of}"))
                .collect();
            format!("audit: {} read, {rate:.0} msgs/s", parts.join(", "))
        });
    }
}
