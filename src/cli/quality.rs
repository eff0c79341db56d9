//! `quality`: the data-quality report computed from the stored rows (`crate::quality::report`).

use anyhow::Context as _;

use crate::config::Config;
use crate::model::DataType;
use crate::quality::report::{self, MarketReport, ReportFilter};

/// Arguments of `quality`.
#[derive(Debug, clap::Args)]
pub struct QualityArgs {
    /// Report the last span of time: `90s`, `30m`, `1h`, `2d` (default `1h`; ignored with
    /// `--from`).
    #[arg(long)]
    pub since: Option<String>,
    /// Start (UTC): `2025-10-21T10:00:00Z`, `2025-10-21 10:00:00` or unix milliseconds.
    #[arg(long)]
    pub from: Option<String>,
    /// End (UTC), same forms as `--from` (default: now).
    #[arg(long)]
    pub to: Option<String>,
    /// Only this data type (`trade`, `orderbook`, …).
    #[arg(long = "type")]
    pub data_type: Option<String>,
    /// Only this symbol.
    #[arg(long)]
    pub symbol: Option<String>,
    /// Print JSON (one object) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `90s`, `30m`, `1h`, `2d` → milliseconds.
fn parse_span(s: &str) -> anyhow::Result<i64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num.parse().with_context(|| format!("invalid span {s:?}"))?;
    let mult = match unit {
        "ms" => 1,
        "s" | "" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => anyhow::bail!("invalid span {s:?}: use e.g. 90s, 30m, 1h, 2d"),
    };
    Ok(n.saturating_mul(mult))
}

/// A point in time → unix milliseconds.
fn parse_time(s: &str) -> anyhow::Result<i64> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    for f in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return Ok(t.and_utc().timestamp_millis());
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d
            .and_time(chrono::NaiveTime::MIN)
            .and_utc()
            .timestamp_millis());
    }
    anyhow::bail!("invalid time {s:?}: use 2025-10-21T10:00:00Z, 2025-10-21 10:00:00 or unix ms")
}

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
        .unwrap_or_default()
}

/// Builds the filter from the arguments and the configuration.
pub fn filter(cfg: &Config, args: &QualityArgs, now_ms: i64) -> anyhow::Result<ReportFilter> {
    let to_ms = args
        .to
        .as_deref()
        .map(parse_time)
        .transpose()?
        .unwrap_or(now_ms);
    let from_ms = match &args.from {
        Some(f) => parse_time(f)?,
        None => to_ms - parse_span(args.since.as_deref().unwrap_or("1h"))?,
    };
    let data_type = match &args.data_type {
        Some(t) => Some(DataType::parse(t).with_context(|| {
            format!("unknown type {t:?}: one of trade, orderbook, funding_rate, open_interest, liquidation, lsr_top_position, lsr_all_account, volatility_index")
        })?),
        None => None,
    };
    Ok(ReportFilter {
        from_ms,
        to_ms,
        data_type,
        symbol: args.symbol.clone(),
        sequential_ids: cfg.quality.sequential_ids.clone(),
    })
}

/// Runs the report against the hot database and prints it.
pub async fn run(cfg: &Config, args: &QualityArgs) -> anyhow::Result<()> {
    let f = filter(cfg, args, chrono::Utc::now().timestamp_millis())?;
    let (sink, embedded) = crate::service::one_shot_clickhouse(cfg).await?;
    let result = collect(&sink, &f).await;
    if let Some(s) = embedded {
        s.stop().await;
    }
    let markets = result?;
    if args.json {
        let v = serde_json::json!({
            "from_ms": f.from_ms,
            "to_ms": f.to_ms,
            "from": iso(f.from_ms),
            "to": iso(f.to_ms),
            "markets": markets,
        });
        super::out(&format!("{}\n", serde_json::to_string_pretty(&v)?));
    } else {
        super::out(&render(&f, &markets));
    }
    Ok(())
}

async fn collect(sink: &crate::sink::Sink, f: &ReportFilter) -> anyhow::Result<Vec<MarketReport>> {
    let db = sink.database().to_string();
    let mut markets = Vec::new();
    for t in DataType::ALL {
        if f.data_type.is_some_and(|x| x != t) {
            continue;
        }
        let text = sink
            .query_bytes(&report::summary_sql(&db, t, f), "TabSeparated")
            .await?;
        markets.extend(report::parse_summary(
            t,
            &String::from_utf8_lossy(&text),
            f,
        )?);
    }
    if f.data_type.is_none_or(|t| t == DataType::Trade) {
        let text = sink
            .query_bytes(&report::sequence_sql(&db, f), "TabSeparated")
            .await?;
        report::apply_sequence(&mut markets, &String::from_utf8_lossy(&text))?;
    }
    // The events table may be missing on a database created before it existed: report without.
    match sink
        .query_bytes(&report::events_sql(&db, f), "TabSeparated")
        .await
    {
        Ok(text) => report::apply_events(&mut markets, &String::from_utf8_lossy(&text))?,
        Err(e) => tracing::warn!(error = %e, "data_quality_events not readable; events left out"),
    }
    Ok(markets)
}

fn render(f: &ReportFilter, markets: &[MarketReport]) -> String {
    let header = [
        "type",
        "exchange",
        "market",
        "symbol",
        "rows",
        "first",
        "last",
        "gaps",
        "missing",
        "dups",
        "silence_s",
        "exch_p50",
        "exch_p99",
        "ingest_p50",
        "ingest_p99",
        "events",
    ];
    let rows: Vec<Vec<String>> = markets
        .iter()
        .map(|m| {
            let (e50, e99) = m
                .exchange_latency_ms
                .map(|l| (l.p50.to_string(), l.p99.to_string()))
                .unwrap_or(("-".into(), "-".into()));
            let seq = |n: u64| {
                if m.sequential {
                    n.to_string()
                } else {
                    "-".into()
                }
            };
            let events = m
                .events
                .iter()
                .map(|(k, n)| format!("{k}={n}"))
                .collect::<Vec<_>>()
                .join(" ");
            vec![
                m.data_type.clone(),
                m.exchange.clone(),
                m.market_type.clone(),
                m.symbol.clone(),
                m.rows.to_string(),
                iso(m.first_ms),
                iso(m.last_ms),
                seq(m.gaps),
                seq(m.missing),
                seq(m.duplicates),
                format!("{:.1}", m.longest_silence_ms as f64 / 1000.0),
                e50,
                e99,
                m.ingest_latency_ms.p50.to_string(),
                m.ingest_latency_ms.p99.to_string(),
                if events.is_empty() {
                    "-".into()
                } else {
                    events
                },
            ]
        })
        .collect();
    format!(
        "quality {} .. {} (UTC); latencies in ms; gaps only where trade ids are sequential\n{}({} market{})\n",
        iso(f.from_ms),
        iso(f.to_ms),
        super::table::render(&header, &rows),
        markets.len(),
        if markets.len() == 1 { "" } else { "s" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_and_times_parse() {
        assert_eq!(parse_span("90s").unwrap(), 90_000);
        assert_eq!(parse_span("1h").unwrap(), 3_600_000);
        assert_eq!(parse_span("2d").unwrap(), 172_800_000);
        assert!(parse_span("1w").is_err());
        assert_eq!(parse_time("1761040800123").unwrap(), 1_761_040_800_123);
        assert_eq!(
            parse_time("2025-10-21T10:00:00Z").unwrap(),
            parse_time("2025-10-21 10:00:00").unwrap()
        );
    }
}
