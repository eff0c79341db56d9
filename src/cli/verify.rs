//! `verify`: hot vs cold per table and UTC day; exits non-zero on any mismatch.
//!
//! The compared range defaults to where both sides must agree: from `now − 3 days + 1 hour`
//! (hot still holds the rows; an hour away from the TTL edge) to `now − window − interval`
//! (the migrator has had a full interval to copy them). `--from`/`--to` override it.

use anyhow::Context;

use crate::config::Config;
use crate::migrate::Span;
use crate::migrate::plan::fmt_ms;
use crate::migrate::verify::{self, DayCheck};

/// Arguments of `verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Start (inclusive): `YYYY-MM-DD`, RFC 3339, or Unix ms.
    #[arg(long)]
    pub from: Option<String>,
    /// End (exclusive): `YYYY-MM-DD`, RFC 3339, or Unix ms.
    #[arg(long)]
    pub to: Option<String>,
    /// Only these tables (repeatable).
    #[arg(long = "table")]
    pub tables: Vec<String>,
    /// Rows older than this many hours are expected in cold (MIGRATION_WINDOW_HOURS).
    #[arg(long)]
    pub window_hours: Option<f64>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Parses a time bound into UTC ms.
pub fn parse_time(s: &str) -> anyhow::Result<i64> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(d) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(d.timestamp_millis());
    }
    let day = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .with_context(|| format!("{s:?}: expected YYYY-MM-DD, RFC 3339 or Unix ms"))?;
    Ok(day
        .and_hms_opt(0, 0, 0)
        .map(|d| d.and_utc().timestamp_millis())
        .unwrap_or_default())
}

/// Runs `verify`.
pub async fn run(cfg: &Config, args: &VerifyArgs) -> anyhow::Result<()> {
    let window = super::migrate::window(cfg, args.window_hours)?;
    let now = chrono::Utc::now().timestamp_millis();
    let default = verify::default_range(now, window, cfg.migration.interval);
    let span = Span::new(
        args.from
            .as_deref()
            .map(parse_time)
            .transpose()?
            .unwrap_or(default.start_ms),
        args.to
            .as_deref()
            .map(parse_time)
            .transpose()?
            .unwrap_or(default.end_ms),
    );
    let tables = super::migrate::parse_tables(&args.tables)?;
    let filters = super::migrate::filters(cfg, &None, &None, &None);
    let (hot, cold, _same, embedded) = crate::service::migration::sinks(cfg).await?;
    let checks = verify::compare(&hot, &cold, &tables, span, &filters).await;
    if let Some(s) = embedded {
        s.stop().await;
    }
    let checks = checks?;
    let bad = checks.iter().filter(|c| !c.matches()).count();
    if args.json {
        super::out(&format!("{}\n", to_json(span, &checks)));
    } else {
        super::out(&render(span, &checks));
    }
    if bad > 0 {
        anyhow::bail!("{bad} table-days differ between hot and cold");
    }
    Ok(())
}

fn to_json(span: Span, checks: &[DayCheck]) -> serde_json::Value {
    serde_json::json!({
        "from": fmt_ms(span.start_ms),
        "to": fmt_ms(span.end_ms),
        "ok": checks.iter().all(DayCheck::matches),
        "days": checks.iter().map(|c| serde_json::json!({
            "table": c.table,
            "day": c.day,
            "rows_hot": c.hot.rows,
            "rows_cold": c.cold.rows,
            "fingerprint_hot": format!("{:016x}", c.hot.sum),
            "fingerprint_cold": format!("{:016x}", c.cold.sum),
            "match": c.matches(),
        })).collect::<Vec<_>>(),
    })
}

fn render(span: Span, checks: &[DayCheck]) -> String {
    let rows: Vec<Vec<String>> = checks
        .iter()
        .map(|c| {
            vec![
                c.table.to_string(),
                c.day.clone(),
                c.hot.rows.to_string(),
                c.cold.rows.to_string(),
                if c.matches() { "ok" } else { "MISMATCH" }.to_string(),
            ]
        })
        .collect();
    format!(
        "compared {} .. {}\n{}",
        fmt_ms(span.start_ms),
        fmt_ms(span.end_ms),
        super::table::render(
            &["table", "day", "rows_hot", "rows_cold", "fingerprint"],
            &rows
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_bounds() {
        assert_eq!(parse_time("86400000").unwrap(), 86_400_000);
        assert_eq!(parse_time("1970-01-02").unwrap(), 86_400_000);
        assert_eq!(parse_time("1970-01-02T00:00:01Z").unwrap(), 86_401_000);
        assert!(parse_time("yesterday").is_err());
    }
}
