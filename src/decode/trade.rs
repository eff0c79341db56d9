//! `trade` messages → `trades` rows.
//!
//! Wire shape (MarketPrism collector): `price`/`quantity` as strings, `side`, `trade_id`, `trade_ts_ms`
//! (the exchange trade time); `is_maker` is never sent today but is stored when present.

use serde_json::value::RawValue;

use super::Message;
use super::common::{self, Field, Json, Shown};
use crate::decode::{RejectKind, Rejection};
use crate::model::{Common, DataType, Record, TradeRow};

const TY: DataType = DataType::Trade;

wire_struct! {
    /// A `trade` payload, borrowed.
    pub struct TradeWire<'a> {
        /// `price` (> 0).
        pub price: Option<&'a RawValue>,
        /// `quantity` (> 0).
        pub quantity: Option<&'a RawValue>,
        /// `side`: buy or sell.
        pub side: Option<&'a RawValue>,
        /// `trade_id`: a string or an integer.
        pub trade_id: Option<&'a RawValue>,
        /// `is_maker`: optional boolean.
        pub is_maker: Option<&'a RawValue>,
        /// `trade_ts_ms`: exchange trade time in ms.
        pub trade_ts_ms: Option<&'a RawValue>,
        /// `trade_time`: exchange trade time in any timestamp form.
        pub trade_time: Option<&'a RawValue>,
    }
}

/// `trade_id` as text: a non-empty string as sent, or an integer's decimal text.
fn trade_id(raw: Option<&RawValue>) -> Result<String, Rejection> {
    let field = Field::of(TY, "trade_id");
    let raw = common::required(&field, raw)?;
    let id = match common::classify(raw) {
        Json::String(s) => s.into_owned(),
        Json::Number(t) if is_integer(t) => t.to_owned(),
        _ => {
            return Err(Rejection::new(
                RejectKind::InvalidField,
                format!(
                    "{field}: expected a string or an integer, got {}",
                    Shown(raw)
                ),
            ));
        }
    };
    if id.is_empty() {
        return Err(Rejection::new(
            RejectKind::MissingField,
            format!("{field}: must not be empty"),
        ));
    }
    Ok(id)
}

fn is_integer(t: &str) -> bool {
    let digits = t.strip_prefix('-').unwrap_or(t);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

impl<'a> Message<'a> for TradeWire<'a> {
    const DATA_TYPE: DataType = TY;

    fn into_record(self, common: Common, now_ms: i64) -> Result<Record, Rejection> {
        let price = common::positive_decimal64(&Field::of(TY, "price"), self.price)?;
        let quantity = common::positive_decimal64(&Field::of(TY, "quantity"), self.quantity)?;
        let side = common::side(&Field::of(TY, "side"), self.side)?;
        let trade_id = trade_id(self.trade_id)?;
        let is_maker = common::optional_bool(&Field::of(TY, "is_maker"), self.is_maker)?;
        let trade_time_ms = common::time_column(
            TY,
            ("trade_ts_ms", self.trade_ts_ms),
            ("trade_time", self.trade_time),
            &common,
            now_ms,
        )?;
        Ok(Record::Trade(TradeRow {
            common,
            trade_id,
            price,
            quantity,
            side,
            is_maker,
            trade_time_ms,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::testing::{err, ok, with};
    use crate::model::Common;

    /// The MarketPrism collector's trade payload (reference §2.2).
    const EXAMPLE: &str = r#"{"symbol":"BTC-USDT","price":"66990.5","quantity":"0.012","side":"buy","trade_id":"2345678901","exchange":"binance","market_type":"perpetual","data_source":"marketprism","normalized_symbol":"BTC-USDT","data_type":"trade","ts_ms":1761040800123,"trade_ts_ms":1761040799870,"publisher":"unified-collector","collected_ts_ms":1761040800122}"#;

    fn row(json: &str) -> TradeRow {
        match ok(TY, json) {
            Record::Trade(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn collector_example_maps_every_column() {
        assert_eq!(
            row(EXAMPLE),
            TradeRow {
                common: Common {
                    timestamp_ms: 1_761_040_800_123,
                    exchange: "binance".into(),
                    market_type: "perpetual".into(),
                    symbol: "BTC-USDT".into(),
                    data_source: "marketprism".into(),
                },
                trade_id: "2345678901".into(),
                price: 6_699_050_000_000,
                quantity: 1_200_000,
                side: "buy".into(),
                is_maker: false,
                trade_time_ms: 1_761_040_799_870,
            }
        );
    }

    #[test]
    fn numbers_as_json_numbers_and_integer_trade_id() {
        let json = with(
            &with(EXAMPLE, "price", Some("66990.5")),
            "quantity",
            Some("1.2e-2"),
        );
        let json = with(&json, "trade_id", Some("2345678901"));
        let r = row(&json);
        assert_eq!((r.price, r.quantity), (6_699_050_000_000, 1_200_000));
        assert_eq!(r.trade_id, "2345678901");
    }

    #[test]
    fn python_service_is_maker_always_false() {
        // The Python service wrote bool(payload.is_maker), and the collector never sends it: always false.
        assert!(row(&with(EXAMPLE, "is_maker", Some("true"))).is_maker);
        assert!(!row(&with(EXAMPLE, "is_maker", Some("false"))).is_maker);
        assert!(!row(&with(EXAMPLE, "is_maker", Some("null"))).is_maker);
        let e = err(TY, &with(EXAMPLE, "is_maker", Some(r#""yes""#)));
        assert_eq!(e.kind, RejectKind::InvalidField);
        assert_eq!(
            e.reason,
            r#"trade.is_maker: expected true or false, got "yes""#
        );
    }

    #[test]
    fn side_case_insensitive_stored_lower_case() {
        assert_eq!(row(&with(EXAMPLE, "side", Some(r#""SELL""#))).side, "sell");
        assert_eq!(row(&with(EXAMPLE, "side", Some(r#""Buy""#))).side, "buy");
    }

    #[test]
    fn trade_time_falls_back_to_iso_then_row_timestamp() {
        let no_ts = with(EXAMPLE, "trade_ts_ms", None);
        assert_eq!(row(&no_ts).trade_time_ms, 1_761_040_800_123);
        let iso = with(
            &no_ts,
            "trade_time",
            Some(r#""2025-10-21T04:59:59.870-05:00""#),
        );
        assert_eq!(row(&iso).trade_time_ms, 1_761_040_799_870);
    }

    #[test]
    fn rejects_non_positive_price_and_quantity() {
        let e = err(TY, &with(EXAMPLE, "price", Some(r#""-1""#)));
        assert_eq!(e.kind, RejectKind::NonPositive);
        assert_eq!(e.reason, r#"trade.price: must be > 0, got "-1""#);
        let e = err(TY, &with(EXAMPLE, "quantity", Some("0")));
        assert_eq!(e.reason, "trade.quantity: must be > 0, got 0");
        // Below the 8th decimal the stored value would be 0: rejected too.
        let e = err(TY, &with(EXAMPLE, "quantity", Some(r#""0.000000001""#)));
        assert_eq!(e.kind, RejectKind::NonPositive);
    }

    #[test]
    fn rejects_bad_side_and_trade_id() {
        let e = err(TY, &with(EXAMPLE, "side", Some(r#""hold""#)));
        assert_eq!(e.kind, RejectKind::InvalidSide);
        assert_eq!(e.reason, r#"trade.side: must be buy or sell, got "hold""#);
        let e = err(TY, &with(EXAMPLE, "side", None));
        assert_eq!(
            (e.kind, e.reason.as_str()),
            (RejectKind::MissingField, "trade.side: missing")
        );
        let e = err(TY, &with(EXAMPLE, "trade_id", Some("1.5")));
        assert_eq!(e.kind, RejectKind::InvalidField);
        assert_eq!(
            e.reason,
            "trade.trade_id: expected a string or an integer, got 1.5"
        );
        let e = err(TY, &with(EXAMPLE, "trade_id", Some(r#""""#)));
        assert_eq!(
            (e.kind, e.reason.as_str()),
            (
                RejectKind::MissingField,
                "trade.trade_id: must not be empty"
            )
        );
        let e = err(TY, &with(EXAMPLE, "trade_id", None));
        assert_eq!(e.reason, "trade.trade_id: missing");
    }

    #[test]
    fn rejects_bad_trade_time() {
        let e = err(TY, &with(EXAMPLE, "trade_ts_ms", Some(r#""soon""#)));
        assert_eq!(e.kind, RejectKind::InvalidTimestamp);
        assert_eq!(e.reason, r#"trade.trade_ts_ms: not a timestamp: "soon""#);
        let e = err(TY, &with(EXAMPLE, "trade_ts_ms", Some("1000")));
        assert_eq!(e.kind, RejectKind::TimestampOutOfRange);
        assert_eq!(
            e.reason,
            "trade.trade_ts_ms: out of range: 1000 (1970-01-01T00:00:01.000Z) is before 2009-01-01T00:00:00Z"
        );
    }
}
