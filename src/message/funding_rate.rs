//! `funding_rate` messages → `funding_rates` rows.
//!
//! Wire shape (seed collector): `current_funding_rate` as a JSON number (small rates as
//! `8.12e-05`), `mark_price`/`index_price` numbers or `null`, `next_funding_ts_ms`; no
//! `funding_time` (so `funding_time` falls back to the row timestamp).

use serde_json::value::RawValue;

use super::Message;
use super::common::{self, Field};
use crate::decode::Rejection;
use crate::model::{Common, DataType, FundingRateRow, Record};

const TY: DataType = DataType::FundingRate;

wire_struct! {
    /// A `funding_rate` payload, borrowed.
    pub struct FundingRateWire<'a> {
        /// `current_funding_rate` (required; may be negative).
        pub current_funding_rate: Option<&'a RawValue>,
        /// `mark_price` (null → 0).
        pub mark_price: Option<&'a RawValue>,
        /// `index_price` (null → 0).
        pub index_price: Option<&'a RawValue>,
        /// `funding_ts_ms`.
        pub funding_ts_ms: Option<&'a RawValue>,
        /// `funding_time`.
        pub funding_time: Option<&'a RawValue>,
        /// `next_funding_ts_ms`.
        pub next_funding_ts_ms: Option<&'a RawValue>,
        /// `next_funding_time`.
        pub next_funding_time: Option<&'a RawValue>,
    }
}

impl<'a> Message<'a> for FundingRateWire<'a> {
    const DATA_TYPE: DataType = TY;

    fn into_record(self, common: Common, now_ms: i64) -> Result<Record, Rejection> {
        let funding_rate = common::required_decimal64(
            &Field::of(TY, "current_funding_rate"),
            self.current_funding_rate,
        )?;
        let mark_price = common::optional_decimal64(&Field::of(TY, "mark_price"), self.mark_price)?;
        let index_price =
            common::optional_decimal64(&Field::of(TY, "index_price"), self.index_price)?;
        let funding_time_ms = common::time_column(
            TY,
            ("funding_ts_ms", self.funding_ts_ms),
            ("funding_time", self.funding_time),
            &common,
            now_ms,
        )?;
        let next_funding_time_ms = common::time_column(
            TY,
            ("next_funding_ts_ms", self.next_funding_ts_ms),
            ("next_funding_time", self.next_funding_time),
            &common,
            now_ms,
        )?;
        Ok(Record::FundingRate(FundingRateRow {
            common,
            funding_rate,
            funding_time_ms,
            next_funding_time_ms,
            mark_price,
            index_price,
        }))
    }
}
