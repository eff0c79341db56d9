//! `trade` messages → `trades` rows.
//!
//! Wire shape (seed collector): `price`/`quantity` as strings, `side`, `trade_id`, `trade_ts_ms`
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
