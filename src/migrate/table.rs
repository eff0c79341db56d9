//! The tables the migrator copies: the eight market-data tables and `data_quality_events`.
//!
//! Consumes nothing; emits, for each migratable table, its name (the same in hot and cold),
//! its time column (what chunks, the watermark and the per-day verification are cut on) and
//! its columns (all of them, so copies are exact and fingerprints cover every column).
//! `dead_letters` is deliberately absent: it lives in hot only (30-day TTL, for replay).

use std::fmt;

use crate::model::DataType;
use crate::schema::{self, Column};

/// A table the migrator copies from hot to cold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MigTable {
    /// One of the eight market-data tables (time column `timestamp`).
    Data(DataType),
    /// `data_quality_events` (time column `event_time`; `crate::quality`).
    QualityEvents,
}

impl MigTable {
    /// Every migratable table, in migration order: the market-data tables in
    /// [`DataType::ALL`] order, then the quality events.
    pub const ALL: [MigTable; 9] = {
        let mut out = [MigTable::QualityEvents; 9];
        let mut i = 0;
        while i < DataType::ALL.len() {
            out[i] = MigTable::Data(DataType::ALL[i]);
            i += 1;
        }
        out
    };

    /// The table's name, the same in the hot and the cold database.
    pub const fn name(self) -> &'static str {
        match self {
            MigTable::Data(t) => t.table(),
            MigTable::QualityEvents => schema::QUALITY_EVENTS_TABLE,
        }
    }

    /// The `DateTime64(3, 'UTC')` column rows are placed in time by (chunks, watermark,
    /// verification days); the hot TTL is on the same column.
    pub const fn time_column(self) -> &'static str {
        match self {
            MigTable::Data(_) => "timestamp",
            MigTable::QualityEvents => "event_time",
        }
    }

    /// Every column, in DDL order (`created_at` included: cold is an exact copy of hot).
    pub fn columns(self) -> &'static [Column] {
        match self {
            MigTable::Data(t) => schema::columns(t),
            MigTable::QualityEvents => schema::QUALITY_EVENTS,
        }
    }

    /// A table by its name or, for the market-data tables, its data-type name (`trades` or
    /// `trade`).
    pub fn parse(name: &str) -> Option<MigTable> {
        MigTable::ALL
            .into_iter()
            .find(|t| t.name() == name || matches!(t, MigTable::Data(d) if d.as_str() == name))
    }

    /// Position in [`MigTable::ALL`] (indexes per-table counters).
    pub fn index(self) -> usize {
        MigTable::ALL
            .iter()
            .position(|x| *x == self)
            .unwrap_or_default()
    }
}

impl From<DataType> for MigTable {
    fn from(t: DataType) -> MigTable {
        MigTable::Data(t)
    }
}

impl fmt::Display for MigTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nine_tables_market_data_first_then_quality_events() {
        let names: Vec<&str> = MigTable::ALL.iter().map(|t| t.name()).collect();
        assert_eq!(
            names,
            [
                "trades",
                "orderbooks",
                "funding_rates",
                "open_interests",
                "liquidations",
                "lsr_top_positions",
                "lsr_all_accounts",
                "volatility_indices",
                "data_quality_events"
            ]
        );
        for (i, t) in MigTable::ALL.into_iter().enumerate() {
            assert_eq!(t.index(), i);
            assert_eq!(MigTable::parse(t.name()), Some(t));
            // The time column is a column of the table.
            assert!(t.columns().iter().any(|c| c.name == t.time_column()), "{t}");
        }
        assert!(
            !names.contains(&schema::DEAD_LETTERS_TABLE),
            "dead letters stay hot"
        );
    }

    #[test]
    fn parse_accepts_table_and_type_names() {
        assert_eq!(
            MigTable::parse("trade"),
            Some(MigTable::Data(DataType::Trade))
        );
        assert_eq!(
            MigTable::parse("trades"),
            Some(MigTable::Data(DataType::Trade))
        );
        assert_eq!(
            MigTable::parse("data_quality_events"),
            Some(MigTable::QualityEvents)
        );
        assert_eq!(MigTable::parse("dead_letters"), None);
        assert_eq!(MigTable::parse("nope"), None);
        assert_eq!(MigTable::QualityEvents.time_column(), "event_time");
        assert_eq!(MigTable::QualityEvents.columns(), schema::QUALITY_EVENTS);
    }
}
