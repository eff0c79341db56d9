//! Verification: hot vs cold fingerprints per table and UTC day, over a range hot still holds.
//!
//! Consumes a hot and a cold [`Sink`], tables, a [`Span`] and [`Filters`]; emits one
//! [`DayCheck`] per table and day that has rows on either side. Read only.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::sink::Sink;

use super::plan::{Filters, Fingerprint, Span, align_down};
use super::{MigTable, MigrateError};

/// Hot keeps rows this long (`schema::HOT_TTL` and `schema::QUALITY_EVENTS_TTL`, 3 days).
pub const HOT_RETENTION: Duration = Duration::from_secs(3 * 24 * 3600);
/// Kept away from the TTL edge: rows about to expire may vanish from hot between the two
/// sides' queries (and TTL merges remove them at their own pace).
pub const TTL_MARGIN: Duration = Duration::from_secs(3600);

/// The default compared range at `now_ms`: from `now − 3 days + 1 hour` (rows hot still
/// holds, away from the TTL edge) to `now − window − interval` (rows the migrator, running
/// every `interval`, has had the chance to copy), both in UTC ms.
pub fn default_range(now_ms: i64, window: Duration, interval: Duration) -> Span {
    let d = |x: Duration| i64::try_from(x.as_millis()).unwrap_or(i64::MAX / 4);
    Span::new(
        now_ms - d(HOT_RETENTION) + d(TTL_MARGIN),
        now_ms - d(window) - d(interval),
    )
}

/// One table and day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayCheck {
    /// The table.
    pub table: &'static str,
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// Hot's fingerprint of the day (within the range).
    pub hot: Fingerprint,
    /// Cold's.
    pub cold: Fingerprint,
}

impl DayCheck {
    /// Whether cold equals hot.
    pub fn matches(&self) -> bool {
        self.hot == self.cold
    }
}

async fn per_day(
    sink: &Sink,
    t: MigTable,
    span: Span,
    filters: &Filters,
) -> Result<BTreeMap<i64, Fingerprint>, MigrateError> {
    let cols: Vec<String> = t
        .columns()
        .iter()
        .map(|c| format!("`{}`", c.name))
        .collect();
    let sql = format!(
        "SELECT intDiv(toUnixTimestamp64Milli({}), 86400000) * 86400000 AS d, count(), sum(cityHash64({})) FROM `{}`.`{}` WHERE {}{} GROUP BY d",
        t.time_column(),
        cols.join(", "),
        sink.database(),
        t.name(),
        span.where_sql(t.time_column()),
        filters.where_sql()
    );
    let bytes = sink.query_bytes(&sql, "TabSeparated").await?;
    let text = String::from_utf8_lossy(&bytes);
    let map = super::plan::parse_chunk_fingerprints(&text).ok_or_else(|| MigrateError::Parse {
        what: "per-day fingerprints",
        answer: text.chars().take(200).collect(),
    })?;
    Ok(map.into_iter().collect())
}

/// Compares hot and cold per table and UTC day over `span`.
pub async fn compare(
    hot: &Sink,
    cold: &Sink,
    tables: &[MigTable],
    span: Span,
    filters: &Filters,
) -> Result<Vec<DayCheck>, MigrateError> {
    let mut out = Vec::new();
    for &t in tables {
        let h = per_day(hot, t, span, filters).await?;
        let c = per_day(cold, t, span, filters).await?;
        let mut days: Vec<i64> = h.keys().chain(c.keys()).copied().collect();
        days.sort_unstable();
        days.dedup();
        for d in days {
            out.push(DayCheck {
                table: t.name(),
                day: super::plan::fmt_ms(align_down(d, 86_400_000))
                    .chars()
                    .take(10)
                    .collect(),
                hot: h.get(&d).copied().unwrap_or_default(),
                cold: c.get(&d).copied().unwrap_or_default(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_range_is_inside_the_ttl_and_older_than_the_window() {
        let now = 10 * 86_400_000;
        let r = default_range(now, Duration::from_secs(8 * 3600), Duration::from_secs(300));
        assert_eq!(r.start_ms, now - 72 * 3_600_000 + 3_600_000);
        assert_eq!(r.end_ms, now - 8 * 3_600_000 - 300_000);
    }
}
