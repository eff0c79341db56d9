//! `open_interest` messages → `open_interests` rows.
//!
//! Wire shape (seed collector): `open_interest_value` (the raw open interest in contracts or
//! coins, a JSON number) and `open_interest_usd` (the notional, a number or `null`); there is no
//! `open_interest` field. The seed stored neither (both columns 0); we store both, in columns
//! widened to `Decimal128(8)` because notionals exceed `Decimal64(8)`'s 10^10 limit.

use serde_json::value::RawValue;

use super::Message;
use super::common::{self, Field};
use crate::decode::Rejection;
use crate::model::{Common, DataType, OpenInterestRow, Record};

const TY: DataType = DataType::OpenInterest;

wire_struct! {
    /// An `open_interest` payload, borrowed.
    pub struct OpenInterestWire<'a> {
        /// `open_interest_value`: contracts/coins (required) → column `open_interest`.
        pub open_interest_value: Option<&'a RawValue>,
        /// `open_interest_usd`: notional (null → 0) → column `open_interest_value`.
        pub open_interest_usd: Option<&'a RawValue>,
    }
}

impl<'a> Message<'a> for OpenInterestWire<'a> {
    const DATA_TYPE: DataType = TY;

    fn into_record(self, common: Common, _now_ms: i64) -> Result<Record, Rejection> {
        let oi_field = Field::of(TY, "open_interest_value");
        let open_interest = common::decimal128(
            &oi_field,
            common::required(&oi_field, self.open_interest_value)?,
        )?;
        let usd_field = Field::of(TY, "open_interest_usd");
        let open_interest_value = self
            .open_interest_usd
            .map_or(Ok(0), |raw| common::decimal128(&usd_field, raw))?;
        Ok(Record::OpenInterest(OpenInterestRow {
            common,
            open_interest,
            open_interest_value,
            count: 0,
        }))
    }
}
