//! `lsr_all_account` messages → `lsr_all_accounts` rows.
//!
//! Wire shape (seed collector): `long_account_ratio`/`short_account_ratio`: all-account ratios as strings; `period` is `5m`.

use serde_json::value::RawValue;

use super::Message;
use super::common::{self, Field};
use crate::decode::Rejection;
use crate::model::{Common, DataType, LsrAllAccountRow, Record};

const TY: DataType = DataType::LsrAllAccount;

wire_struct! {
    /// A `lsr_all_account` payload, borrowed.
    pub struct LsrAllAccountWire<'a> {
        /// `long_account_ratio` (required).
        pub long_account_ratio: Option<&'a RawValue>,
        /// `short_account_ratio` (required).
        pub short_account_ratio: Option<&'a RawValue>,
        /// `period`, verbatim (`5m` when absent).
        pub period: Option<&'a RawValue>,
    }
}

impl<'a> Message<'a> for LsrAllAccountWire<'a> {
    const DATA_TYPE: DataType = TY;

    fn into_record(self, common: Common, _now_ms: i64) -> Result<Record, Rejection> {
        let long_account_ratio = common::required_decimal64(
            &Field::of(TY, "long_account_ratio"),
            self.long_account_ratio,
        )?;
        let short_account_ratio = common::required_decimal64(
            &Field::of(TY, "short_account_ratio"),
            self.short_account_ratio,
        )?;
        let period = common::period(&Field::of(TY, "period"), self.period)?;
        Ok(Record::LsrAllAccount(LsrAllAccountRow {
            common,
            long_account_ratio,
            short_account_ratio,
            period,
        }))
    }
}
