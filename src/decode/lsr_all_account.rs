//! `lsr_all_account` messages → `lsr_all_accounts` rows.
//!
//! Wire shape (MarketPrism collector): `long_account_ratio`/`short_account_ratio`: all-account ratios as strings; `period` is `5m`.

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::RejectKind;
    use crate::decode::testing::{err, ok, with};

    /// A Binance all-account payload in the MarketPrism collector's shape (reference §2.2).
    const EXAMPLE: &str = r#"{"exchange":"binance","market_type":"perpetual","symbol":"BTC-USDT","instrument_id":"BTCUSDT","long_short_ratio":"1.8670","period":"5m","data_source":"api","data_type":"lsr_all_account","long_account_ratio":"0.6512","short_account_ratio":"0.3488","ts_ms":1761040800123,"publisher":"unified-collector","collected_ts_ms":1761040800123}"#;

    fn row(json: &str) -> LsrAllAccountRow {
        match ok(TY, json) {
            Record::LsrAllAccount(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn collector_example_maps_every_column() {
        assert_eq!(
            row(EXAMPLE),
            LsrAllAccountRow {
                common: Common {
                    timestamp_ms: 1_761_040_800_123,
                    exchange: "binance".into(),
                    market_type: "perpetual".into(),
                    symbol: "BTC-USDT".into(),
                    data_source: "api".into(),
                },
                long_account_ratio: 65_120_000,
                short_account_ratio: 34_880_000,
                period: "5m".into(),
            }
        );
    }

    #[test]
    fn rejects_bad_ratio() {
        let e = err(TY, &with(EXAMPLE, "long_account_ratio", Some("true")));
        assert_eq!(e.kind, RejectKind::InvalidNumber);
        assert_eq!(
            e.reason,
            "lsr_all_account.long_account_ratio: not a decimal number: true"
        );
    }
}
