//! `lsr_top_position` messages → `lsr_top_positions` rows.
//!
//! Wire shape (seed collector): `long_position_ratio`/`short_position_ratio`: top-trader position ratios (Binance `longAccount`/`shortAccount`, OKX derived 28-digit strings); the seed collector sends `period: "1h"` for 5-minute data, stored verbatim.

use serde_json::value::RawValue;

use super::Message;
use super::common::{self, Field};
use crate::decode::Rejection;
use crate::model::{Common, DataType, LsrTopPositionRow, Record};

const TY: DataType = DataType::LsrTopPosition;

wire_struct! {
    /// A `lsr_top_position` payload, borrowed.
    pub struct LsrTopPositionWire<'a> {
        /// `long_position_ratio` (required).
        pub long_position_ratio: Option<&'a RawValue>,
        /// `short_position_ratio` (required).
        pub short_position_ratio: Option<&'a RawValue>,
        /// `period`, verbatim (`5m` when absent).
        pub period: Option<&'a RawValue>,
    }
}

impl<'a> Message<'a> for LsrTopPositionWire<'a> {
    const DATA_TYPE: DataType = TY;

    fn into_record(self, common: Common, _now_ms: i64) -> Result<Record, Rejection> {
        let long_position_ratio = common::required_decimal64(
            &Field::of(TY, "long_position_ratio"),
            self.long_position_ratio,
        )?;
        let short_position_ratio = common::required_decimal64(
            &Field::of(TY, "short_position_ratio"),
            self.short_position_ratio,
        )?;
        let period = common::period(&Field::of(TY, "period"), self.period)?;
        Ok(Record::LsrTopPosition(LsrTopPositionRow {
            common,
            long_position_ratio,
            short_position_ratio,
            period,
        }))
    }
}
