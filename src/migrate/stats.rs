//! The migrator's counters ([`MigrationStats`]): recorded by the executor, read by the ops
//! surface (`/metrics`, `/stats.migration`, the status page) through [`MigrationCounters`].
//! The only module that touches their atomics.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use super::MigTable;

/// Counters for the ops surface (`/metrics`): atomics behind methods, recorded by the executor,
/// read by anyone with [`MigrationStats::counters`].
///
/// The Python service exported `marketprism_cold_replication_lag_minutes{table}`; [`Self::lag_minutes`]
/// is the value for that name (see `docs/migration.md` for its definition here).
#[derive(Debug, Default)]
pub struct MigrationStats {
    /// Rows copied into cold (repairs included), since start.
    rows_migrated: AtomicU64,
    /// Chunks whose hot and cold fingerprints were compared equal, since start.
    chunks_verified: AtomicU64,
    /// Chunks that needed a repair (cold held some but not all of their rows), since start.
    chunks_repaired: AtomicU64,
    /// Chunks left mismatched after repair attempts, since start.
    chunks_mismatched: AtomicU64,
    /// Unix time in ms of the end of the last cycle in which every table verified; 0 = never.
    last_success_ms: AtomicI64,
    /// Per table (indexed like [`MigTable::ALL`]): rows found in hot behind the watermark
    /// (late, back-filled) and copied into cold, since start.
    late_rows_repaired: [AtomicU64; MigTable::ALL.len()],
    /// Per table (indexed like [`MigTable::ALL`]): minutes between `now − window` and the end
    /// of the verified prefix in cold, at the end of the last cycle; -1 = not measured yet.
    lag_minutes: [AtomicI64; MigTable::ALL.len()],
}

/// The migrator's scalar counters at one moment ([`MigrationStats::counters`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MigrationCounters {
    /// Rows copied into cold (repairs included), since start.
    pub rows_migrated: u64,
    /// Chunks whose hot and cold fingerprints were compared equal, since start.
    pub chunks_verified: u64,
    /// Chunks that needed a repair, since start.
    pub chunks_repaired: u64,
    /// Chunks left mismatched after repair attempts, since start.
    pub chunks_mismatched: u64,
    /// Unix ms of the end of the last fully verified cycle; 0 = never.
    pub last_success_ms: i64,
}

impl MigrationStats {
    /// Zeroed counters, lag unknown (-1).
    pub fn new() -> MigrationStats {
        let s = MigrationStats::default();
        for l in &s.lag_minutes {
            l.store(-1, Ordering::Relaxed);
        }
        s
    }

    /// Rows copied into cold.
    pub fn record_rows_migrated(&self, n: u64) {
        self.rows_migrated.fetch_add(n, Ordering::Relaxed);
    }

    /// A chunk whose hot and cold fingerprints compared equal (as found, or after a copy).
    pub fn record_chunk_verified(&self) {
        self.chunks_verified.fetch_add(1, Ordering::Relaxed);
    }

    /// A chunk cold held only part of, completed by copying the missing rows: repaired and
    /// verified.
    pub fn record_chunk_repaired(&self) {
        self.chunks_repaired.fetch_add(1, Ordering::Relaxed);
        self.record_chunk_verified();
    }

    /// A chunk still different after repair attempts.
    pub fn record_chunk_mismatched(&self) {
        self.chunks_mismatched.fetch_add(1, Ordering::Relaxed);
    }

    /// A cycle in which every table verified ended at `now_ms`.
    pub fn record_cycle_verified(&self, now_ms: i64) {
        self.last_success_ms.store(now_ms, Ordering::Relaxed);
    }

    /// The scalar counters now.
    pub fn counters(&self) -> MigrationCounters {
        MigrationCounters {
            rows_migrated: self.rows_migrated.load(Ordering::Relaxed),
            chunks_verified: self.chunks_verified.load(Ordering::Relaxed),
            chunks_repaired: self.chunks_repaired.load(Ordering::Relaxed),
            chunks_mismatched: self.chunks_mismatched.load(Ordering::Relaxed),
            last_success_ms: self.last_success_ms.load(Ordering::Relaxed),
        }
    }

    /// Overwrites the scalar counters with `c` — for fixtures (tests, the status-page
    /// screenshot); the executor records events instead.
    pub fn restore(&self, c: &MigrationCounters) {
        self.rows_migrated.store(c.rows_migrated, Ordering::Relaxed);
        self.chunks_verified
            .store(c.chunks_verified, Ordering::Relaxed);
        self.chunks_repaired
            .store(c.chunks_repaired, Ordering::Relaxed);
        self.chunks_mismatched
            .store(c.chunks_mismatched, Ordering::Relaxed);
        self.last_success_ms
            .store(c.last_success_ms, Ordering::Relaxed);
    }

    /// `marketprism_cold_replication_lag_minutes{table}`: -1 when not measured yet. Takes a
    /// [`MigTable`] or a [`crate::model::DataType`].
    pub fn lag_minutes(&self, t: impl Into<MigTable>) -> i64 {
        self.lag_minutes
            .get(t.into().index())
            .map_or(-1, |a| a.load(Ordering::Relaxed))
    }

    /// `marketprism_cold_late_rows_repaired_total{table}`.
    pub fn late_rows_repaired(&self, t: impl Into<MigTable>) -> u64 {
        self.late_rows_repaired
            .get(t.into().index())
            .map_or(0, |a| a.load(Ordering::Relaxed))
    }

    /// Counts `n` late rows of one table copied into cold.
    pub fn add_late_rows_repaired(&self, t: impl Into<MigTable>, n: u64) {
        if let Some(a) = self.late_rows_repaired.get(t.into().index()) {
            a.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Records the lag of one table.
    pub fn set_lag_minutes(&self, t: impl Into<MigTable>, minutes: i64) {
        if let Some(a) = self.lag_minutes.get(t.into().index()) {
            a.store(minutes, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DataType;

    #[test]
    fn stats_lag_per_table() {
        let s = MigrationStats::new();
        assert_eq!(s.lag_minutes(DataType::Trade), -1);
        s.set_lag_minutes(DataType::Trade, 7);
        assert_eq!(s.lag_minutes(DataType::Trade), 7);
        assert_eq!(s.lag_minutes(DataType::Orderbook), -1);
        assert_eq!(s.lag_minutes(MigTable::QualityEvents), -1);
        s.set_lag_minutes(MigTable::QualityEvents, 3);
        assert_eq!(s.lag_minutes(MigTable::QualityEvents), 3);
        assert_eq!(s.lag_minutes(DataType::VolatilityIndex), -1);
    }

    #[test]
    fn a_repaired_chunk_is_also_verified() {
        let s = MigrationStats::new();
        s.record_chunk_verified();
        s.record_chunk_repaired();
        s.record_chunk_mismatched();
        s.record_rows_migrated(40);
        s.record_cycle_verified(1_000);
        assert_eq!(
            s.counters(),
            MigrationCounters {
                rows_migrated: 40,
                chunks_verified: 2,
                chunks_repaired: 1,
                chunks_mismatched: 1,
                last_success_ms: 1_000,
            }
        );
    }
}
