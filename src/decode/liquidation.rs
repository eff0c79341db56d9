//! `liquidation` messages → `liquidations` rows.
//!
//! Wire shape (MarketPrism collector): `price`/`quantity` as JSON numbers, `side`, `liquidation_ts_ms`
//! and `liquidation_time` (ISO with offset; for OKX both are the collector's clock).

use serde_json::value::RawValue;

use super::Message;
use super::common::{self, Field};
use crate::decode::Rejection;
use crate::model::{Common, DataType, LiquidationRow, Record};

const TY: DataType = DataType::Liquidation;

wire_struct! {
    /// A `liquidation` payload, borrowed.
    pub struct LiquidationWire<'a> {
        /// `price` (> 0).
        pub price: Option<&'a RawValue>,
        /// `quantity` (> 0).
        pub quantity: Option<&'a RawValue>,
        /// `side`: buy or sell.
        pub side: Option<&'a RawValue>,
        /// `liquidation_ts_ms`.
        pub liquidation_ts_ms: Option<&'a RawValue>,
        /// `liquidation_time`.
        pub liquidation_time: Option<&'a RawValue>,
    }
}

impl<'a> Message<'a> for LiquidationWire<'a> {
    const DATA_TYPE: DataType = TY;

    fn into_record(self, common: Common, now_ms: i64) -> Result<Record, Rejection> {
        let price = common::positive_decimal64(&Field::of(TY, "price"), self.price)?;
        let quantity = common::positive_decimal64(&Field::of(TY, "quantity"), self.quantity)?;
        let side = common::side(&Field::of(TY, "side"), self.side)?;
        let liquidation_time_ms = common::time_column(
            TY,
            ("liquidation_ts_ms", self.liquidation_ts_ms),
            ("liquidation_time", self.liquidation_time),
            &common,
            now_ms,
        )?;
        Ok(Record::Liquidation(LiquidationRow {
            common,
            side,
            price,
            quantity,
            liquidation_time_ms,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::RejectKind;
    use crate::decode::testing::{err, ok, with};

    /// The MarketPrism collector's liquidation payload (reference §2.2).
    const EXAMPLE: &str = r#"{"exchange":"binance","market_type":"perpetual","symbol":"BTC-USDT","instrument_id":"BTCUSDT","liquidation_id":"binance_1761040799870_BTCUSDT_sell","side":"sell","status":"filled","price":66850.0,"quantity":0.014,"filled_quantity":0.014,"notional_value":935.9,"liquidation_time":"2025-10-21T09:59:59.870000+00:00","data_type":"liquidation","aggregation_mode":"filtered","average_price":"66850.00","bankruptcy_price":"66850.00","ts_ms":1761040800123,"publisher":"unified-collector","collected_ts_ms":1761040800123,"liquidation_ts_ms":1761040799870}"#;

    fn row(json: &str) -> LiquidationRow {
        match ok(TY, json) {
            Record::Liquidation(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn collector_example_maps_every_column() {
        assert_eq!(
            row(EXAMPLE),
            LiquidationRow {
                common: Common {
                    timestamp_ms: 1_761_040_800_123,
                    exchange: "binance".into(),
                    market_type: "perpetual".into(),
                    symbol: "BTC-USDT".into(),
                    data_source: "simple_hot_storage".into(),
                },
                side: "sell".into(),
                price: 6_685_000_000_000,
                quantity: 1_400_000,
                liquidation_time_ms: 1_761_040_799_870,
            }
        );
    }

    #[test]
    fn liquidation_time_iso_when_no_ts_ms() {
        let json = with(EXAMPLE, "liquidation_ts_ms", None);
        let json = with(
            &json,
            "liquidation_time",
            Some(r#""2025-10-21T02:59:59.870-07:00""#),
        );
        assert_eq!(row(&json).liquidation_time_ms, 1_761_040_799_870);
    }

    #[test]
    fn rejects_non_positive_and_bad_side() {
        let e = err(TY, &with(EXAMPLE, "price", Some("-66850.0")));
        assert_eq!(e.kind, RejectKind::NonPositive);
        assert_eq!(e.reason, "liquidation.price: must be > 0, got -66850.0");
        let e = err(TY, &with(EXAMPLE, "side", Some("1")));
        assert_eq!(e.kind, RejectKind::InvalidSide);
        assert_eq!(e.reason, "liquidation.side: must be buy or sell, got 1");
    }
}
