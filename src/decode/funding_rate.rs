//! `funding_rate` messages → `funding_rates` rows.
//!
//! Wire shape (MarketPrism collector): `current_funding_rate` as a JSON number (small rates as
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::RejectKind;
    use crate::decode::testing::{err, ok, with};

    /// The MarketPrism collector's funding-rate payload (reference §2.2).
    const EXAMPLE: &str = r#"{"exchange":"binance","market_type":"perpetual","symbol":"BTC-USDT","instrument_id":"BTCUSDT","current_funding_rate":0.0001,"estimated_funding_rate":0.0001,"funding_interval":"8h","mark_price":67010.5,"index_price":67005.12345678,"premium_index":5.37654322,"data_type":"funding_rate","ts_ms":1761040800123,"publisher":"unified-collector","collected_ts_ms":1761040800123,"next_funding_ts_ms":1761040800123}"#;

    fn row(json: &str) -> FundingRateRow {
        match ok(TY, json) {
            Record::FundingRate(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn collector_example_maps_every_column() {
        assert_eq!(
            row(EXAMPLE),
            FundingRateRow {
                common: Common {
                    timestamp_ms: 1_761_040_800_123,
                    exchange: "binance".into(),
                    market_type: "perpetual".into(),
                    symbol: "BTC-USDT".into(),
                    data_source: "simple_hot_storage".into(),
                },
                funding_rate: 10_000,
                funding_time_ms: 1_761_040_800_123,
                next_funding_time_ms: 1_761_040_800_123,
                mark_price: 6_701_050_000_000,
                index_price: 6_700_512_345_678,
            }
        );
    }

    #[test]
    fn okx_shape_exponent_rate_null_prices_and_iso_times() {
        // OKX: small rates serialize as 8.12e-05; mark/index are null.
        let json = r#"{"exchange":"OKX","market_type":"perpetual","symbol":"BTC-USDT","current_funding_rate":8.12e-05,"mark_price":null,"index_price":null,"ts_ms":1761040800123,"funding_time":"2025-10-21T08:00:00+00:00","next_funding_ts_ms":1761062400000}"#;
        let r = row(json);
        assert_eq!(r.common.exchange, "okx");
        assert_eq!(r.funding_rate, 8_120);
        assert_eq!((r.mark_price, r.index_price), (0, 0));
        assert_eq!(r.funding_time_ms, 1_761_033_600_000);
        assert_eq!(r.next_funding_time_ms, 1_761_062_400_000);
        let neg = with(json, "current_funding_rate", Some(r#""-0.000000019""#));
        assert_eq!(row(&neg).funding_rate, -1);
    }

    #[test]
    fn rejects_missing_rate_and_bad_mark_price() {
        let e = err(TY, &with(EXAMPLE, "current_funding_rate", None));
        assert_eq!(e.kind, RejectKind::MissingField);
        assert_eq!(e.reason, "funding_rate.current_funding_rate: missing");
        let e = err(TY, &with(EXAMPLE, "mark_price", Some(r#""n/a""#)));
        assert_eq!(e.kind, RejectKind::InvalidNumber);
        assert_eq!(
            e.reason,
            r#"funding_rate.mark_price: not a decimal number: "n/a""#
        );
    }
}
