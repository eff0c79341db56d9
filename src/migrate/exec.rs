//! The executor: reads fingerprints, copies chunks, repairs, verifies, records state.
//!
//! Consumes a hot [`Sink`] and a cold [`Sink`] (the same server, or two) and
//! [`MigratorOptions`]; emits rows in cold, `migration_state`/`migration_chunks` rows, a
//! [`Report`], [`Progress`] calls and [`MigrationStats`] bumps. It only ever reads hot.
//! Every decision is taken by [`super::plan`]; this file only does the IO.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::schema::{self, quote};
use crate::sink::Sink;

use super::plan::{
    self, Filters, Fingerprint, HashDiff, Span, Step, advance_watermark, align_down, decide,
    verified_until,
};
use super::{CHUNKS_TABLE, MigTable, MigrateError, MigrationStats, STATE_TABLE};

/// Largest span whose row hashes are compared in one go (both sides' `(hash, count)` lists
/// are held in memory, and the missing hashes are sent back in the copy's SQL).
pub const DEFAULT_LEAF_ROWS: u64 = 20_000;
/// How long before the hot TTL deletes a row the migrator stops comparing it: rows within
/// this margin of expiry could be deleted while a cycle compares them (a false mismatch).
pub const TTL_MARGIN: Duration = Duration::from_secs(30 * 60);
/// Fingerprint-and-repair rounds per chunk before it is reported as mismatched.
const MAX_ROUNDS: u32 = 3;

/// What to migrate and how.
#[derive(Debug, Clone)]
pub struct MigratorOptions {
    /// Rows older than `now − window` are eligible.
    pub window: Duration,
    /// Width of a chunk of the fixed grid (1 hour by default).
    pub chunk: Duration,
    /// No single copy moves more rows than this (a chunk with more is split).
    pub batch_limit: u64,
    /// Row filters (the Python service's `MIGRATION_*` filters).
    pub filters: Filters,
    /// Count what would move; write nothing.
    pub dry_run: bool,
    /// A chunk is final (the watermark may pass it) once it ends this long before
    /// `now − window`; younger chunks are verified again every cycle.
    pub lag: Duration,
    /// Chunks before the watermark verified again every cycle (late rows).
    pub recheck_windows: u32,
    /// The tables, in order (default: [`MigTable::ALL`]).
    pub tables: Vec<MigTable>,
    /// See [`DEFAULT_LEAF_ROWS`].
    pub leaf_rows: u64,
    /// Verify (and repair) from the oldest hot row instead of the watermark: the remedy after
    /// `verify` reports a mismatch in an old chunk. The watermark never moves backwards.
    pub recheck_all: bool,
}

/// Where the two databases are.
#[derive(Debug, Clone)]
pub struct Migrator {
    hot: Sink,
    cold: Sink,
    same_server: bool,
    opts: MigratorOptions,
    stats: Arc<MigrationStats>,
}

/// How a chunk ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkStatus {
    /// Hot and cold were already equal.
    Verified,
    /// Cold held none of its rows; copied and verified.
    Copied,
    /// Cold held some of its rows (late rows, an interrupted copy); the missing rows were
    /// copied and the chunk verified.
    Repaired,
    /// Still different after the repair rounds (or cold holds rows hot lacks).
    Mismatch,
    /// Dry run: would be copied or repaired.
    Pending,
}

impl ChunkStatus {
    /// The name stored in `migration_chunks.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChunkStatus::Verified => "verified",
            ChunkStatus::Copied => "copied",
            ChunkStatus::Repaired => "repaired",
            ChunkStatus::Mismatch => "mismatch",
            ChunkStatus::Pending => "pending",
        }
    }
}

/// One table's outcome of a cycle.
#[derive(Debug, Clone, Default)]
pub struct TableReport {
    /// The table.
    pub table: &'static str,
    /// Chunks compared.
    pub chunks: usize,
    /// Chunks needing work (copied, repaired, mismatched, or pending in a dry run).
    pub chunks_changed: usize,
    /// Chunks repaired.
    pub chunks_repaired: usize,
    /// Chunks left mismatched.
    pub chunks_mismatched: usize,
    /// Hot rows in the compared range.
    pub rows_hot: u64,
    /// Rows copied (dry run: rows that would be copied).
    pub rows_copied: u64,
    /// Of those, rows copied into chunks behind the watermark (late rows).
    pub late_rows: u64,
    /// Watermark before and after (UTC ms).
    pub watermark: (Option<i64>, Option<i64>),
    /// Time spent.
    pub elapsed: Duration,
}

/// A cycle's outcome.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Per table, in order.
    pub tables: Vec<TableReport>,
    /// `now − window` of this cycle (UTC ms).
    pub cutoff_ms: i64,
}

impl Report {
    /// Whether every compared chunk verified.
    pub fn all_verified(&self) -> bool {
        self.tables.iter().all(|t| t.chunks_mismatched == 0)
    }
}

/// Progress callbacks (a terminal line or log lines; see the `migrate` command).
pub trait Progress: Send + Sync {
    /// A chunk of `table` needs work; `index` counts from 1 among `of` chunks.
    fn chunk(&self, table: &str, index: usize, of: usize, span: Span, rows_hot: u64);
    /// `rows` more rows of `table` were copied.
    fn copied(&self, table: &str, rows: u64);
    /// A cycle of [`super::run_cycles`] starts (the counts of a progress line restart).
    fn cycle_started(&self) {}
    /// The cycle ended (done, failed or cut by the stop); clear what a line left on screen.
    fn cycle_ended(&self) {}
}

/// A [`Progress`] that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn chunk(&self, _: &str, _: usize, _: usize, _: Span, _: u64) {}
    fn copied(&self, _: &str, _: u64) {}
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Back-quoted column list of a table (all columns, `created_at` included: cold is an exact
/// copy of hot).
fn column_list(t: MigTable) -> String {
    t.columns()
        .iter()
        .map(|c| format!("`{}`", c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

fn row_hash(t: MigTable) -> String {
    format!("cityHash64({})", column_list(t))
}

fn parse_err(what: &'static str, answer: &str) -> MigrateError {
    MigrateError::Parse {
        what,
        answer: answer.chars().take(200).collect(),
    }
}

async fn tsv(sink: &Sink, sql: &str) -> Result<String, MigrateError> {
    let bytes = sink.query_bytes(sql, "TabSeparated").await?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

impl Migrator {
    /// A migrator reading `hot` (a sink on the hot database) and writing `cold` (a sink on the
    /// cold database). `same_server`: both databases are on one server, so copies run as
    /// `INSERT … SELECT` inside it; otherwise rows stream through this process.
    pub fn new(
        hot: Sink,
        cold: Sink,
        same_server: bool,
        opts: MigratorOptions,
        stats: Arc<MigrationStats>,
    ) -> Migrator {
        Migrator {
            hot,
            cold,
            same_server,
            opts,
            stats,
        }
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<MigrationStats> {
        &self.stats
    }

    /// The sink and the qualified table name of one side (`hot` or cold).
    fn side(&self, hot: bool, t: MigTable) -> (&Sink, String) {
        if hot {
            (&self.hot, self.hot_table(t))
        } else {
            (&self.cold, self.cold_table(t))
        }
    }

    fn hot_table(&self, t: MigTable) -> String {
        format!("`{}`.`{}`", self.hot.database(), t.name())
    }

    fn cold_table(&self, t: MigTable) -> String {
        format!("`{}`.`{}`", self.cold.database(), t.name())
    }

    fn state_table(&self, name: &str) -> String {
        format!("`{}`.`{name}`", self.cold.database())
    }

    fn where_sql(&self, t: MigTable, span: Span) -> String {
        format!(
            "{}{}",
            span.where_sql(t.time_column()),
            self.opts.filters.where_sql()
        )
    }

    /// Creates the cold database, its tables and the state tables if missing (idempotent),
    /// then refuses to copy into cold tables whose drift breaks exactly-once (the Python
    /// service's cold tables have no deduplication window: a retried copy would insert
    /// twice). Not called in a dry run, which writes nothing.
    pub async fn ensure_cold_schema(&self) -> Result<(), MigrateError> {
        let db = self.cold.database();
        let ddl = schema::database_ddl(db, schema::Tier::Cold, &schema::Layout::Single);
        crate::sink::ddl::apply(&self.cold, &ddl).await?;
        let expected =
            schema::drift::expected_tables(db, schema::Tier::Cold, &schema::Layout::Single);
        let drift = crate::sink::ddl::check(&self.cold, &expected, schema::DEDUP_WINDOW)
            .await
            .map_err(|e| MigrateError::Schema(e.to_string()))?;
        let errors: Vec<String> = drift
            .iter()
            .filter(|d| d.severity == schema::drift::Severity::Error)
            .map(ToString::to_string)
            .collect();
        if !errors.is_empty() {
            return Err(MigrateError::Schema(format!(
                "{}; run `marketprism-storage init` to upgrade the tables in place",
                errors.join("; ")
            )));
        }
        Ok(())
    }

    /// One cycle over every table: copy, repair and verify up to `now_ms − window`.
    pub async fn run_once(
        &self,
        now_ms: i64,
        progress: &dyn Progress,
    ) -> Result<Report, MigrateError> {
        if !self.opts.dry_run {
            self.ensure_cold_schema().await?;
        }
        let cutoff = now_ms - ms(self.opts.window);
        let mut report = Report {
            tables: Vec::new(),
            cutoff_ms: cutoff,
        };
        for &t in &self.opts.tables {
            report
                .tables
                .push(self.table_cycle(t, now_ms, progress).await?);
        }
        if report.all_verified() && !self.opts.dry_run {
            self.stats
                .record_cycle_verified(chrono::Utc::now().timestamp_millis());
        }
        Ok(report)
    }

    async fn state_exists(&self) -> Result<bool, MigrateError> {
        let n = self
            .cold
            .fetch_count(&format!(
                "SELECT count() FROM system.tables WHERE database = {} AND name = {}",
                quote(self.cold.database()),
                quote(STATE_TABLE)
            ))
            .await?;
        Ok(n > 0)
    }

    /// The watermark of `t` under the current filters: everything before it is verified.
    pub async fn watermark(&self, t: MigTable) -> Result<Option<i64>, MigrateError> {
        if self.opts.dry_run && !self.state_exists().await? {
            return Ok(None);
        }
        let out = tsv(
            &self.cold,
            &format!(
                "SELECT toUnixTimestamp64Milli(argMax(watermark, updated_at)), count() FROM {} WHERE `table` = {} AND filters = {}",
                self.state_table(STATE_TABLE),
                quote(t.name()),
                quote(&self.opts.filters.canonical())
            ),
        )
        .await?;
        let (w, n) = out
            .trim()
            .split_once('\t')
            .ok_or_else(|| parse_err("watermark", &out))?;
        let n: u64 = n.parse().map_err(|_| parse_err("watermark", &out))?;
        if n == 0 {
            return Ok(None);
        }
        Ok(Some(w.parse().map_err(|_| parse_err("watermark", &out))?))
    }

    async fn hot_min(&self, t: MigTable) -> Result<Option<i64>, MigrateError> {
        let out = tsv(
            &self.hot,
            &format!(
                "SELECT toUnixTimestamp64Milli(min({})), count() FROM {} WHERE 1{}",
                t.time_column(),
                self.hot_table(t),
                self.opts.filters.where_sql()
            ),
        )
        .await?;
        let (m, n) = out
            .trim()
            .split_once('\t')
            .ok_or_else(|| parse_err("oldest hot row", &out))?;
        if n == "0" {
            return Ok(None);
        }
        Ok(Some(
            m.parse().map_err(|_| parse_err("oldest hot row", &out))?,
        ))
    }

    async fn fingerprint(
        &self,
        hot: bool,
        t: MigTable,
        span: Span,
    ) -> Result<Fingerprint, MigrateError> {
        let (sink, table) = self.side(hot, t);
        let out = tsv(
            sink,
            &format!(
                "SELECT count(), sum({}) FROM {table} WHERE {}",
                row_hash(t),
                self.where_sql(t, span)
            ),
        )
        .await?;
        Fingerprint::parse_tsv(&out).ok_or_else(|| parse_err("fingerprint", &out))
    }

    /// Per-chunk fingerprints of `range` on one side, keyed by chunk start; `counts_only`:
    /// the sums are 0 and only the time column is read (the cheap late-row check of the
    /// chunks behind the watermark: late rows always add to a chunk's count).
    async fn chunk_fingerprints(
        &self,
        hot: bool,
        t: MigTable,
        range: Span,
        counts_only: bool,
    ) -> Result<HashMap<i64, Fingerprint>, MigrateError> {
        if range.width() == 0 {
            return Ok(HashMap::new());
        }
        let (sink, table) = self.side(hot, t);
        let c = ms(self.opts.chunk).max(1);
        let sum = if counts_only {
            "toUInt64(0)".to_string()
        } else {
            format!("sum({})", row_hash(t))
        };
        let out = tsv(
            sink,
            &format!(
                "SELECT intDiv(toUnixTimestamp64Milli({}), {c}) * {c} AS k, count(), {sum} FROM {table} WHERE {} GROUP BY k",
                t.time_column(),
                self.where_sql(t, range)
            ),
        )
        .await?;
        plan::parse_chunk_fingerprints(&out).ok_or_else(|| parse_err("chunk fingerprints", &out))
    }

    async fn hash_counts(
        &self,
        hot: bool,
        t: MigTable,
        span: Span,
    ) -> Result<Vec<(u64, u64)>, MigrateError> {
        let (sink, table) = self.side(hot, t);
        let out = tsv(
            sink,
            &format!(
                "SELECT {} AS h, count() FROM {table} WHERE {} GROUP BY h",
                row_hash(t),
                self.where_sql(t, span)
            ),
        )
        .await?;
        plan::parse_hash_counts(&out).ok_or_else(|| parse_err("row hashes", &out))
    }

    /// Copies the rows `select_where` picks from hot into cold, as one INSERT with `token`.
    async fn copy(&self, t: MigTable, select: &str, token: &str) -> Result<(), MigrateError> {
        let cols = column_list(t);
        let head = format!("INSERT INTO {} ({cols})", self.cold_table(t));
        if self.same_server {
            self.cold
                .insert_select(&format!("{head} {select}"), token)
                .await?;
        } else {
            self.cold.copy_from(&self.hot, select, &head, token).await?;
        }
        Ok(())
    }

    /// Copies a whole span (cold holds none of its rows).
    async fn copy_span(
        &self,
        t: MigTable,
        span: Span,
        hot: Fingerprint,
    ) -> Result<(), MigrateError> {
        let select = format!(
            "SELECT {} FROM {} WHERE {}",
            column_list(t),
            self.hot_table(t),
            self.where_sql(t, span)
        );
        let token = plan::copy_token(t.name(), span, &self.opts.filters, hot);
        self.copy(t, &select, &token).await
    }

    /// Copies exactly the rows of `span` cold lacks (`diff.need`).
    async fn copy_missing(
        &self,
        t: MigTable,
        span: Span,
        diff: &HashDiff,
    ) -> Result<(), MigrateError> {
        if diff.need.is_empty() {
            return Ok(());
        }
        let cols = column_list(t);
        let hashes: Vec<String> = diff.need.iter().map(|(h, _)| h.to_string()).collect();
        let counts: Vec<String> = diff.need.iter().map(|(_, n)| n.to_string()).collect();
        // row_number() over identical rows picks as many copies as cold lacks.
        let select = format!(
            "SELECT {cols} FROM (SELECT {cols}, {} AS __mp_h, row_number() OVER (PARTITION BY __mp_h) AS __mp_rn FROM {} WHERE {} AND __mp_h IN ({})) WHERE __mp_rn <= transform(__mp_h, CAST([{}] AS Array(UInt64)), CAST([{}] AS Array(UInt64)), toUInt64(0))",
            row_hash(t),
            self.hot_table(t),
            self.where_sql(t, span),
            hashes.join(","),
            hashes.join(","),
            counts.join(",")
        );
        let token = plan::repair_token(t.name(), span, &self.opts.filters, &diff.need);
        self.copy(t, &select, &token).await
    }

    /// Brings cold's copy of `span` to hot's: returns (rows copied, rows cold has in excess).
    async fn sync_span(
        &self,
        t: MigTable,
        span: Span,
        first: (Fingerprint, Fingerprint),
        progress: &dyn Progress,
    ) -> Result<(u64, u64), MigrateError> {
        let limit = self.opts.batch_limit.max(1);
        let leaf = self.opts.leaf_rows.clamp(1, limit);
        let mut copied = 0;
        let mut excess = 0;
        let mut stack = vec![(span, Some(first))];
        while let Some((s, known)) = stack.pop() {
            let (h, c) = match known {
                Some(x) => x,
                None => (
                    self.fingerprint(true, t, s).await?,
                    self.fingerprint(false, t, s).await?,
                ),
            };
            match decide(h, c, s, limit, leaf) {
                Step::Equal => {}
                Step::Copy => {
                    self.copy_span(t, s, h).await?;
                    copied += h.rows;
                    self.stats.record_rows_migrated(h.rows);
                    progress.copied(t.name(), h.rows);
                }
                Step::Bisect => {
                    if let Some((a, b)) = s.halves() {
                        stack.push((b, None));
                        stack.push((a, None));
                    }
                }
                Step::Diff => {
                    let diff = plan::hash_diff(
                        &self.hash_counts(true, t, s).await?,
                        &self.hash_counts(false, t, s).await?,
                    );
                    self.copy_missing(t, s, &diff).await?;
                    let n = diff.missing();
                    copied += n;
                    excess += diff.excess;
                    self.stats.record_rows_migrated(n);
                    progress.copied(t.name(), n);
                }
            }
        }
        Ok((copied, excess))
    }

    async fn table_cycle(
        &self,
        t: MigTable,
        now_ms: i64,
        progress: &dyn Progress,
    ) -> Result<TableReport, MigrateError> {
        let started = Instant::now();
        let chunk_ms = ms(self.opts.chunk).max(1);
        let cutoff = now_ms - ms(self.opts.window);
        let settled = cutoff - ms(self.opts.lag);
        let wm = self.watermark(t).await?;
        let mut rep = TableReport {
            table: t.name(),
            watermark: (wm, wm),
            ..TableReport::default()
        };
        // `recheck_from`: where the watermark logic starts (the last `recheck_windows` chunks
        // before the watermark); `from`: where the comparison starts, further back when hot
        // holds older rows, so late rows anywhere in hot's retention reach cold.
        let (recheck_from, from) = match wm.filter(|_| !self.opts.recheck_all) {
            Some(w) => {
                let recheck_from = align_down(
                    w - i64::from(self.opts.recheck_windows) * chunk_ms,
                    chunk_ms,
                );
                let ttl_edge = now_ms - ms(schema::HOT_RETENTION) + ms(TTL_MARGIN);
                let from = plan::compare_from(recheck_from, self.hot_min(t).await?, ttl_edge);
                (recheck_from, from)
            }
            None => match self.hot_min(t).await? {
                Some(m) => {
                    let m = align_down(m, chunk_ms);
                    (m, m)
                }
                None => {
                    self.stats.set_lag_minutes(t, 0);
                    rep.elapsed = started.elapsed();
                    return Ok(rep);
                }
            },
        };
        let chunks = plan::plan_chunks_from(from, cutoff, chunk_ms);
        rep.chunks = chunks.len();
        let range = Span::new(from, cutoff.max(from));
        // Chunks from `recheck_from` on: full fingerprints. Older chunks (verified before):
        // counts first, full fingerprints only where the counts differ.
        let split = recheck_from.clamp(range.start_ms, range.end_ms);
        let recent = Span::new(split, range.end_ms);
        let old = Span::new(range.start_ms, split);
        let mut hot_fps = self.chunk_fingerprints(true, t, recent, false).await?;
        let mut cold_fps = self.chunk_fingerprints(false, t, recent, false).await?;
        let old_hot = self.chunk_fingerprints(true, t, old, true).await?;
        let old_cold = self.chunk_fingerprints(false, t, old, true).await?;
        for c in chunks.iter().filter(|c| c.end_ms <= split) {
            let cell = align_down(c.start_ms, chunk_ms);
            let (h, k) = (old_hot.get(&cell), old_cold.get(&cell));
            if h.map(|f| f.rows) == k.map(|f| f.rows) {
                let same = h.copied().unwrap_or_default();
                hot_fps.insert(cell, same);
                cold_fps.insert(cell, same);
            } else {
                hot_fps.insert(cell, self.fingerprint(true, t, *c).await?);
                cold_fps.insert(cell, self.fingerprint(false, t, *c).await?);
            }
        }
        let mut outcome: Vec<(Span, bool)> = Vec::with_capacity(chunks.len());
        let mut history: Vec<(Span, Fingerprint, Fingerprint, u64, ChunkStatus)> = Vec::new();
        for (i, &c) in chunks.iter().enumerate() {
            // Keyed by grid cell: the first chunk may start inside its cell.
            let cell = align_down(c.start_ms, chunk_ms);
            let mut h = hot_fps.get(&cell).copied().unwrap_or_default();
            let mut k = cold_fps.get(&cell).copied().unwrap_or_default();
            rep.rows_hot += h.rows;
            if h == k {
                if h.rows > 0 {
                    self.stats.record_chunk_verified();
                }
                outcome.push((c, true));
                continue;
            }
            rep.chunks_changed += 1;
            if self.opts.dry_run {
                rep.rows_copied += h.rows.saturating_sub(k.rows);
                outcome.push((c, false));
                history.push((c, h, k, 0, ChunkStatus::Pending));
                continue;
            }
            progress.chunk(t.name(), i + 1, chunks.len(), c, h.rows);
            let repair = k.rows > 0;
            let mut copied = 0;
            let mut status = ChunkStatus::Mismatch;
            for _round in 0..MAX_ROUNDS {
                let (n, excess) = self.sync_span(t, c, (h, k), progress).await?;
                copied += n;
                h = self.fingerprint(true, t, c).await?;
                k = self.fingerprint(false, t, c).await?;
                if h == k {
                    status = if repair {
                        ChunkStatus::Repaired
                    } else {
                        ChunkStatus::Copied
                    };
                    break;
                }
                if excess > 0 {
                    tracing::error!(table = t.name(), chunk = %c, excess, "cold holds rows hot does not; not repairable by copying");
                    break;
                }
            }
            rep.rows_copied += copied;
            // A chunk behind the watermark was verified before: whatever it lacked now landed
            // in hot late (after an outage longer than the window, or a back-fill).
            if wm.is_some_and(|w| c.end_ms <= w) && copied > 0 {
                rep.late_rows += copied;
                self.stats.add_late_rows_repaired(t, copied);
                tracing::warn!(table = t.name(), chunk = %c, rows = copied, "late rows behind the watermark copied into cold");
            }
            match status {
                ChunkStatus::Mismatch => {
                    rep.chunks_mismatched += 1;
                    self.stats.record_chunk_mismatched();
                    tracing::error!(table = t.name(), chunk = %c, hot = %h, cold = %k, "chunk still differs after repair");
                }
                ChunkStatus::Repaired => {
                    rep.chunks_repaired += 1;
                    self.stats.record_chunk_repaired();
                    tracing::warn!(table = t.name(), chunk = %c, rows = copied, "repaired: cold lacked rows of a chunk it already held (late rows or an interrupted copy)");
                }
                _ => {
                    self.stats.record_chunk_verified();
                }
            }
            outcome.push((c, status != ChunkStatus::Mismatch));
            history.push((c, h, k, copied, status));
        }
        // The watermark and the lag follow the chunks from `recheck_from` on: an old chunk that
        // stays mismatched is counted and logged, but does not hold back new ones.
        let recent: Vec<(Span, bool)> = outcome
            .iter()
            .copied()
            .filter(|(c, _)| c.start_ms >= recheck_from)
            .collect();
        let until = verified_until(recheck_from, &recent);
        let lag_min = (cutoff - until.min(cutoff)) / 60_000;
        let new_wm = advance_watermark(wm, &recent, settled);
        rep.watermark.1 = new_wm;
        if !self.opts.dry_run {
            self.stats.set_lag_minutes(t, lag_min);
            self.record_history(t, &history).await?;
            if let Some(w) = new_wm {
                self.write_state(t, w, until).await?;
            }
        }
        rep.elapsed = started.elapsed();
        Ok(rep)
    }

    async fn write_state(
        &self,
        t: MigTable,
        watermark: i64,
        verified_until: i64,
    ) -> Result<(), MigrateError> {
        self.cold
            .execute(&format!(
                "INSERT INTO {} (`table`, filters, watermark, verified_until) SELECT {}, {}, fromUnixTimestamp64Milli(toInt64({watermark}), 'UTC'), fromUnixTimestamp64Milli(toInt64({verified_until}), 'UTC')",
                self.state_table(STATE_TABLE),
                quote(t.name()),
                quote(&self.opts.filters.canonical()),
            ))
            .await?;
        Ok(())
    }

    async fn record_history(
        &self,
        t: MigTable,
        rows: &[(Span, Fingerprint, Fingerprint, u64, ChunkStatus)],
    ) -> Result<(), MigrateError> {
        if rows.is_empty() {
            return Ok(());
        }
        let filters = quote(&self.opts.filters.canonical());
        let values: Vec<String> = rows
            .iter()
            .map(|(s, h, c, copied, st)| {
                format!(
                    "({}, {}, {}, {filters}, {}, {}, {}, {}, {copied}, {})",
                    quote(t.name()),
                    s.start_ms,
                    s.end_ms,
                    h.rows,
                    c.rows,
                    h.sum,
                    c.sum,
                    quote(st.as_str())
                )
            })
            .collect();
        self.cold
            .execute(&format!(
                "INSERT INTO {} (`table`, chunk_start, chunk_end, filters, rows_hot, rows_cold, fingerprint_hot, fingerprint_cold, rows_copied, status) \
                 SELECT t, fromUnixTimestamp64Milli(s, 'UTC'), fromUnixTimestamp64Milli(e, 'UTC'), f, rh, rc, fh, fc, n, st \
                 FROM values('t String, s Int64, e Int64, f String, rh UInt64, rc UInt64, fh UInt64, fc UInt64, n UInt64, st String', {})",
                self.state_table(CHUNKS_TABLE),
                values.join(", ")
            ))
            .await?;
        Ok(())
    }
}
