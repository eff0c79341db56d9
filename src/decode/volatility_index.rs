//! `volatility_index` messages → `volatility_indices` rows.
//!
//! Wire shape (MarketPrism collector, Deribit DVOL): `volatility_index` and `vol_index` (the same value,
//! as strings) and `currency`. The Python service stored none of them (`index_value` 0); we store the index
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::RejectKind;
    use crate::decode::testing::{err, ok, with};

    /// The MarketPrism collector's Deribit DVOL payload (reference §2.2).
    const EXAMPLE: &str = r#"{"exchange":"deribit","symbol":"BTC","currency":"BTC","vol_index":"48.73","volatility_index":"48.73","market_type":"options","data_source":"marketprism","data_type":"volatility_index","ts_ms":1761040800123,"publisher":"unified-collector","collected_ts_ms":1761040800123}"#;

    fn row(json: &str) -> VolatilityIndexRow {
        match ok(TY, json) {
            Record::VolatilityIndex(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn python_service_vol_index_zero() {
        // The Python service wrote only the common columns: index_value = 0, underlying_asset = ''.
        assert_eq!(
            row(EXAMPLE),
            VolatilityIndexRow {
                common: Common {
                    timestamp_ms: 1_761_040_800_123,
                    exchange: "deribit".into(),
                    market_type: "options".into(),
                    symbol: "BTC".into(),
                    data_source: "marketprism".into(),
                },
                index_value: 4_873_000_000,
                underlying_asset: "BTC".into(),
                maturity_date_days: 0,
            }
        );
    }

    #[test]
    fn vol_index_alone_and_no_currency() {
        let json = with(&with(EXAMPLE, "volatility_index", None), "currency", None);
        let r = row(&json);
        assert_eq!(
            (r.index_value, r.underlying_asset.as_str()),
            (4_873_000_000, "")
        );
    }

    #[test]
    fn rejects_missing_index() {
        let json = with(&with(EXAMPLE, "volatility_index", None), "vol_index", None);
        let e = err(TY, &json);
        assert_eq!(e.kind, RejectKind::MissingField);
        assert_eq!(
            e.reason,
            "volatility_index.volatility_index: missing (need volatility_index or vol_index)"
        );
    }
}
