//! `open_interest` messages → `open_interests` rows.
//!
//! Wire shape (MarketPrism collector): `open_interest_value` (the raw open interest in contracts or
//! coins, a JSON number) and `open_interest_usd` (the notional, a number or `null`); there is no
//! `open_interest` field. The Python service stored neither (both columns 0); we store both, in columns
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::RejectKind;
    use crate::decode::testing::{err, ok, with};

    /// The MarketPrism collector's open-interest payload (reference §2.2).
    const EXAMPLE: &str = r#"{"exchange":"binance","market_type":"perpetual","symbol":"BTC-USDT","instrument_id":"BTCUSDT","open_interest_value":81234.567,"open_interest_usd":5443568951.9535,"open_interest_unit":"contracts","mark_price":67010.5,"index_price":null,"change_24h":null,"change_24h_percent":null,"data_type":"open_interest","ts_ms":1761040800123,"publisher":"unified-collector","collected_ts_ms":1761040800123}"#;

    fn row(json: &str) -> OpenInterestRow {
        match ok(TY, json) {
            Record::OpenInterest(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn python_service_oi_columns_zero() {
        // The Python service wrote only the common columns: open_interest = open_interest_value = 0.
        assert_eq!(
            row(EXAMPLE),
            OpenInterestRow {
                common: Common {
                    timestamp_ms: 1_761_040_800_123,
                    exchange: "binance".into(),
                    market_type: "perpetual".into(),
                    symbol: "BTC-USDT".into(),
                    data_source: "simple_hot_storage".into(),
                },
                open_interest: 8_123_456_700_000,
                open_interest_value: 544_356_895_195_350_000,
                count: 0,
            }
        );
    }

    #[test]
    fn notional_beyond_decimal64_fits_decimal128() {
        let r = row(&with(
            EXAMPLE,
            "open_interest_usd",
            Some(r#""123456789012.5""#),
        ));
        assert_eq!(r.open_interest_value, 12_345_678_901_250_000_000);
        assert_eq!(
            row(&with(EXAMPLE, "open_interest_usd", Some("null"))).open_interest_value,
            0
        );
        assert_eq!(
            row(&with(EXAMPLE, "open_interest_usd", None)).open_interest_value,
            0
        );
    }

    #[test]
    fn rejects_missing_and_out_of_range() {
        let e = err(TY, &with(EXAMPLE, "open_interest_value", None));
        assert_eq!(e.kind, RejectKind::MissingField);
        assert_eq!(e.reason, "open_interest.open_interest_value: missing");
        let e = err(TY, &with(EXAMPLE, "open_interest_value", Some(r#""1e40""#)));
        assert_eq!(e.kind, RejectKind::OutOfRange);
        assert_eq!(
            e.reason,
            r#"open_interest.open_interest_value: out of range for Decimal128(8): "1e40""#
        );
    }
}
