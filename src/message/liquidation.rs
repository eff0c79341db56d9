//! `liquidation` messages → `liquidations` rows.
//!
//! Wire shape (seed collector): `price`/`quantity` as JSON numbers, `side`, `liquidation_ts_ms`
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
