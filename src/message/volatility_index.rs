//! `volatility_index` messages → `volatility_indices` rows.
//!
//! Wire shape (seed collector, Deribit DVOL): `volatility_index` and `vol_index` (the same value,
//! as strings) and `currency`. The seed stored none of them (`index_value` 0); we store the index
//! value and the currency. The DVOL index has no maturity, so `maturity_date` is 1970-01-01 (0).

use serde_json::value::RawValue;

use super::Message;
use super::common::{self, Field};
use crate::decode::Rejection;
use crate::model::{Common, DataType, Record, VolatilityIndexRow};

const TY: DataType = DataType::VolatilityIndex;

wire_struct! {
    /// A `volatility_index` payload, borrowed.
    pub struct VolatilityIndexWire<'a> {
        /// `volatility_index` (preferred).
        pub volatility_index: Option<&'a RawValue>,
        /// `vol_index` (used when `volatility_index` is absent).
        pub vol_index: Option<&'a RawValue>,
        /// `currency` → `underlying_asset` ('' when absent).
        pub currency: Option<&'a RawValue>,
    }
}

impl<'a> Message<'a> for VolatilityIndexWire<'a> {
    const DATA_TYPE: DataType = TY;

    fn into_record(self, common: Common, _now_ms: i64) -> Result<Record, Rejection> {
        let index_value = match (self.volatility_index, self.vol_index) {
            (Some(raw), _) => common::decimal64(&Field::of(TY, "volatility_index"), raw)?,
            (None, Some(raw)) => common::decimal64(&Field::of(TY, "vol_index"), raw)?,
            (None, None) => {
                return Err(Rejection::new(
                    crate::decode::RejectKind::MissingField,
                    "volatility_index.volatility_index: missing (need volatility_index or vol_index)"
                        .to_owned(),
                ));
            }
        };
        let underlying_asset = common::optional_string(&Field::of(TY, "currency"), self.currency)?;
        Ok(Record::VolatilityIndex(VolatilityIndexRow {
            common,
            index_value,
            underlying_asset,
            maturity_date_days: 0,
        }))
    }
}
