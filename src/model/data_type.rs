//! The eight market-data types and everything keyed on them.

use std::fmt;

/// One of the eight market-data types the collector publishes.
///
/// This is the only place where a data type is tied to its subject prefix and its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DataType {
    /// Order book snapshots (`orderbook.>` → `orderbooks`).
    Orderbook,
    /// Trades (`trade.>` → `trades`).
    Trade,
    /// Funding rates (`funding_rate.>` → `funding_rates`).
    FundingRate,
    /// Open interest (`open_interest.>` → `open_interests`).
    OpenInterest,
    /// Liquidations (`liquidation.>` → `liquidations`).
    Liquidation,
    /// Top-trader long/short position ratio (`lsr_top_position.>` → `lsr_top_positions`).
    LsrTopPosition,
    /// All-account long/short ratio (`lsr_all_account.>` → `lsr_all_accounts`).
    LsrAllAccount,
    /// Deribit volatility index (`volatility_index.>` → `volatility_indices`).
    VolatilityIndex,
}

impl DataType {
    /// All eight types, high-frequency first.
    pub const ALL: [DataType; 8] = [
        DataType::Trade,
        DataType::Orderbook,
        DataType::FundingRate,
        DataType::OpenInterest,
        DataType::Liquidation,
        DataType::LsrTopPosition,
        DataType::LsrAllAccount,
        DataType::VolatilityIndex,
    ];

    /// The first subject token and the payload's `data_type` value.
    pub const fn as_str(self) -> &'static str {
        match self {
            DataType::Orderbook => "orderbook",
            DataType::Trade => "trade",
            DataType::FundingRate => "funding_rate",
            DataType::OpenInterest => "open_interest",
            DataType::Liquidation => "liquidation",
            DataType::LsrTopPosition => "lsr_top_position",
            DataType::LsrAllAccount => "lsr_all_account",
            DataType::VolatilityIndex => "volatility_index",
        }
    }

    /// The ClickHouse table (same name in the hot and the cold database).
    pub const fn table(self) -> &'static str {
        match self {
            DataType::Orderbook => "orderbooks",
            DataType::Trade => "trades",
            DataType::FundingRate => "funding_rates",
            DataType::OpenInterest => "open_interests",
            DataType::Liquidation => "liquidations",
            DataType::LsrTopPosition => "lsr_top_positions",
            DataType::LsrAllAccount => "lsr_all_accounts",
            DataType::VolatilityIndex => "volatility_indices",
        }
    }

    /// Whether the Python service's collector publishes this type on core NATS (high-frequency types).
    pub const fn is_high_frequency(self) -> bool {
        matches!(self, DataType::Orderbook | DataType::Trade)
    }

    /// The subject filter covering every message of this type, e.g. `trade.>`.
    pub fn subject_filter(self) -> String {
        format!("{}.>", self.as_str())
    }

    /// Parses a data-type name (`trade`, `funding_rate`, …) as used in subjects and payloads.
    pub fn parse(name: &str) -> Option<DataType> {
        DataType::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// The data type a subject belongs to, from its first token.
    pub fn from_subject(subject: &str) -> Option<DataType> {
        let first = subject.split('.').next().unwrap_or(subject);
        DataType::parse(first)
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_tables_are_distinct() {
        let mut tables = std::collections::BTreeSet::new();
        for t in DataType::ALL {
            assert_eq!(DataType::parse(t.as_str()), Some(t));
            assert_eq!(
                DataType::from_subject(&format!("{}.binance.spot.BTC-USDT", t)),
                Some(t)
            );
            assert!(tables.insert(t.table()));
        }
        assert_eq!(DataType::parse("trades"), None);
        assert_eq!(DataType::from_subject("trade-data.binance"), None);
    }
}
