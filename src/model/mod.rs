//! The values that flow between pipeline stages: data types, typed rows, rejections.
//!
//! `DataType` is the single exhaustive mapping data type ↔ subject prefix ↔ table. Rows are
//! plain typed structs whose fields match the ClickHouse columns one to one (see
//! `crate::schema`): decimals are fixed-point integers scaled by 10^8, timestamps are UTC
//! milliseconds since the epoch.

mod data_type;
mod quality_event;
mod row;

pub use data_type::DataType;
pub use quality_event::{EventKind, QualityEvent};
pub use row::{
    Common, DeadLetterRow, FundingRateRow, LiquidationRow, LsrAllAccountRow, LsrTopPositionRow,
    OpenInterestRow, OrderbookRow, Record, TradeRow, VolatilityIndexRow,
};

/// Scale of every `Decimal64(8)`/`Decimal128(8)` column: the stored integer is value × 10^8.
pub const DECIMAL_SCALE: u32 = 8;
