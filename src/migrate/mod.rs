//! Hot → cold migration: a pure planner ([`plan`]), an executor ([`exec`]), verification
//! ([`verify`]) and the loop of cycles ([`cycle`]), over the tables [`MigTable`] names ([`table`]).
//!
//! Consumes the hot tables (the eight market-data tables and `data_quality_events`; never
//! `dead_letters`, which stays hot) (read only: **the migrator never deletes a hot row**; hot retention
//! is the tables' 3-day TTL) and emits rows in the cold tables, a per-table watermark in
//! `migration_state` and a history of chunks in `migration_chunks` (both in the cold
//! database), plus [`MigrationStats`] counters for the ops surface.
//!
//! The algorithm (`docs/migration.md` has the guarantees and the crash table): rows older than
//! `now − window` are eligible; time is cut into chunks of a fixed grid (1 hour by default);
//! for each chunk hot still holds (from its oldest row, at most 3 days minus a margin back, or
//! from the watermark minus `recheck_windows` chunks if that is earlier) to `now − window`, the
//! order-independent fingerprint (`count()`, `sum(cityHash64(all columns))`) of hot and cold
//! are compared. Equal: done. Cold empty: copy the chunk (split so no copy exceeds the batch
//! limit) with a deterministic `insert_deduplication_token`. Otherwise: bisect in time and,
//! at small leaves, compare row hashes and copy exactly the missing rows. The chunk is then
//! fingerprinted again, and only verified chunks move the watermark. Rows copied into chunks
//! behind the watermark are late rows (`MigrationStats::late_rows_repaired`).

pub mod cycle;
pub mod exec;
pub mod plan;
pub mod stats;
pub mod table;
pub mod verify;

use crate::sink::SinkError;

pub use cycle::run_cycles;
pub use exec::{ChunkStatus, Migrator, MigratorOptions, Progress, Report, TableReport};
pub use plan::{Filters, Fingerprint, Span};
pub use stats::{MigrationCounters, MigrationStats};
pub use table::MigTable;

/// The state table holding one watermark per (table, filters), in the cold database.
pub const STATE_TABLE: &str = "migration_state";
/// The history table: one row per chunk handled, in the cold database.
pub const CHUNKS_TABLE: &str = "migration_chunks";

/// A failed migration or verification.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// A ClickHouse call failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// ClickHouse answered with something we could not parse.
    #[error("unexpected answer to {what}: {answer:?}")]
    Parse {
        /// What was asked.
        what: &'static str,
        /// The first bytes of the answer.
        answer: String,
    },
    /// The cold tables cannot take copies exactly once (see `schema::drift`).
    #[error("cold schema: {0}")]
    Schema(String),
    /// Cold holds rows hot does not have in a chunk: copying cannot fix that.
    #[error("{table} {span}: cold has {excess} rows that hot does not")]
    ColdExcess {
        /// The table.
        table: &'static str,
        /// The chunk.
        span: Span,
        /// Rows cold has too many.
        excess: u64,
    },
}
