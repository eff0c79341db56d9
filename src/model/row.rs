//! Typed rows, one struct per table, field order = column order.

use super::DataType;

/// Columns shared by every market-data table (`created_at` is left to its DEFAULT).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Common {
    /// `timestamp`: UTC milliseconds since the epoch.
    pub timestamp_ms: i64,
    /// `exchange`, lower-cased as received.
    pub exchange: String,
    /// `market_type`, lower-cased as received.
    pub market_type: String,
    /// `symbol`, verbatim.
    pub symbol: String,
    /// `data_source`: the payload's value, else `simple_hot_storage` (as the Python service wrote).
    pub data_source: String,
}

/// A row of `orderbooks`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OrderbookRow {
    /// Shared columns.
    pub common: Common,
    /// `last_update_id` (null → 0).
    pub last_update_id: u64,
    /// `bids_count`.
    pub bids_count: u32,
    /// `asks_count`.
    pub asks_count: u32,
    /// `best_bid_price` × 10^8 (0 when the side is empty).
    pub best_bid_price: i64,
    /// `best_ask_price` × 10^8.
    pub best_ask_price: i64,
    /// `best_bid_quantity` × 10^8.
    pub best_bid_quantity: i64,
    /// `best_ask_quantity` × 10^8.
    pub best_ask_quantity: i64,
    /// `bids` as compact JSON `[["price","qty"],…]`, strings exactly as received.
    pub bids: String,
    /// `asks`, same shape.
    pub asks: String,
}

/// A row of `trades`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TradeRow {
    /// Shared columns.
    pub common: Common,
    /// `trade_id`.
    pub trade_id: String,
    /// `price` × 10^8.
    pub price: i64,
    /// `quantity` × 10^8.
    pub quantity: i64,
    /// `side`: `buy` or `sell`.
    pub side: String,
    /// `is_maker` from the payload when present, else false.
    pub is_maker: bool,
    /// `trade_time` in UTC ms.
    pub trade_time_ms: i64,
}

/// A row of `funding_rates`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FundingRateRow {
    /// Shared columns.
    pub common: Common,
    /// `funding_rate` × 10^8.
    pub funding_rate: i64,
    /// `funding_time` in UTC ms.
    pub funding_time_ms: i64,
    /// `next_funding_time` in UTC ms.
    pub next_funding_time_ms: i64,
    /// `mark_price` × 10^8 (0 when absent).
    pub mark_price: i64,
    /// `index_price` × 10^8 (0 when absent).
    pub index_price: i64,
}

/// A row of `open_interests` (both value columns widened to `Decimal128(8)`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OpenInterestRow {
    /// Shared columns.
    pub common: Common,
    /// `open_interest` × 10^8, from `open_interest_value` (contracts/coins).
    pub open_interest: i128,
    /// `open_interest_value` × 10^8, from `open_interest_usd` (notional; 0 when null).
    pub open_interest_value: i128,
    /// `count` (0: the collector sends none).
    pub count: u64,
}

/// A row of `liquidations`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LiquidationRow {
    /// Shared columns.
    pub common: Common,
    /// `side`: `buy` or `sell`.
    pub side: String,
    /// `price` × 10^8.
    pub price: i64,
    /// `quantity` × 10^8.
    pub quantity: i64,
    /// `liquidation_time` in UTC ms.
    pub liquidation_time_ms: i64,
}

/// A row of `lsr_top_positions`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LsrTopPositionRow {
    /// Shared columns.
    pub common: Common,
    /// `long_position_ratio` × 10^8.
    pub long_position_ratio: i64,
    /// `short_position_ratio` × 10^8.
    pub short_position_ratio: i64,
    /// `period`, verbatim (`5m` when missing).
    pub period: String,
}

/// A row of `lsr_all_accounts`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LsrAllAccountRow {
    /// Shared columns.
    pub common: Common,
    /// `long_account_ratio` × 10^8.
    pub long_account_ratio: i64,
    /// `short_account_ratio` × 10^8.
    pub short_account_ratio: i64,
    /// `period`, verbatim (`5m` when missing).
    pub period: String,
}

/// A row of `volatility_indices`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VolatilityIndexRow {
    /// Shared columns.
    pub common: Common,
    /// `index_value` × 10^8, from `volatility_index` (or `vol_index`).
    pub index_value: i64,
    /// `underlying_asset`, from `currency` ('' when absent).
    pub underlying_asset: String,
    /// `maturity_date` as days since 1970-01-01 (0: the index has no maturity).
    pub maturity_date_days: u16,
}

/// A row of `dead_letters`: a message that could not become a row, and why.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeadLetterRow {
    /// `received_at` in UTC ms.
    pub received_at_ms: i64,
    /// `subject` the message arrived on.
    pub subject: String,
    /// `stream_seq` of the message (a local counter in core mode).
    pub stream_seq: u64,
    /// `data_type` from the subject (or '' when unknown).
    pub data_type: String,
    /// `reason`, naming the field and the problem.
    pub reason: String,
    /// `payload`, the message body byte for byte as received (ClickHouse `String` is bytes;
    /// invalid UTF-8 and binary bodies are stored as they are).
    pub payload: bytes::Bytes,
}

/// One decoded, validated message: exactly one row of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// `orderbooks` row.
    Orderbook(OrderbookRow),
    /// `trades` row.
    Trade(TradeRow),
    /// `funding_rates` row.
    FundingRate(FundingRateRow),
    /// `open_interests` row.
    OpenInterest(OpenInterestRow),
    /// `liquidations` row.
    Liquidation(LiquidationRow),
    /// `lsr_top_positions` row.
    LsrTopPosition(LsrTopPositionRow),
    /// `lsr_all_accounts` row.
    LsrAllAccount(LsrAllAccountRow),
    /// `volatility_indices` row.
    VolatilityIndex(VolatilityIndexRow),
}

impl Record {
    /// The data type (and so the table) of this row.
    pub fn data_type(&self) -> DataType {
        match self {
            Record::Orderbook(_) => DataType::Orderbook,
            Record::Trade(_) => DataType::Trade,
            Record::FundingRate(_) => DataType::FundingRate,
            Record::OpenInterest(_) => DataType::OpenInterest,
            Record::Liquidation(_) => DataType::Liquidation,
            Record::LsrTopPosition(_) => DataType::LsrTopPosition,
            Record::LsrAllAccount(_) => DataType::LsrAllAccount,
            Record::VolatilityIndex(_) => DataType::VolatilityIndex,
        }
    }

    /// The shared columns.
    pub fn common(&self) -> &Common {
        match self {
            Record::Orderbook(r) => &r.common,
            Record::Trade(r) => &r.common,
            Record::FundingRate(r) => &r.common,
            Record::OpenInterest(r) => &r.common,
            Record::Liquidation(r) => &r.common,
            Record::LsrTopPosition(r) => &r.common,
            Record::LsrAllAccount(r) => &r.common,
            Record::VolatilityIndex(r) => &r.common,
        }
    }

    /// A cheap estimate of the row's encoded size in bytes, for the batch byte threshold.
    pub fn approx_bytes(&self) -> usize {
        let c = self.common();
        let base =
            8 + c.exchange.len() + c.market_type.len() + c.symbol.len() + c.data_source.len() + 8;
        base + match self {
            Record::Orderbook(r) => 48 + r.bids.len() + r.asks.len(),
            Record::Trade(r) => 26 + r.trade_id.len() + r.side.len(),
            Record::FundingRate(_) => 40,
            Record::OpenInterest(_) => 40,
            Record::Liquidation(r) => 24 + r.side.len(),
            Record::LsrTopPosition(r) => 16 + r.period.len(),
            Record::LsrAllAccount(r) => 16 + r.period.len(),
            Record::VolatilityIndex(r) => 10 + r.underlying_asset.len(),
        }
    }
}
