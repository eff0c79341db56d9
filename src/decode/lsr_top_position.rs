//! `lsr_top_position` messages → `lsr_top_positions` rows.
//!
//! Wire shape (MarketPrism collector): `long_position_ratio`/`short_position_ratio`: top-trader position ratios (Binance `longAccount`/`shortAccount`, OKX derived 28-digit strings); the MarketPrism collector sends `period: "1h"` for 5-minute data, stored verbatim.

use serde_json::value::RawValue;

use super::Message;
use super::common::{self, Field};
use crate::decode::Rejection;
use crate::model::{Common, DataType, LsrTopPositionRow, Record};

const TY: DataType = DataType::LsrTopPosition;

wire_struct! {
    /// A `lsr_top_position` payload, borrowed.
    pub struct LsrTopPositionWire<'a> {
        /// `long_position_ratio` (required).
        pub long_position_ratio: Option<&'a RawValue>,
        /// `short_position_ratio` (required).
        pub short_position_ratio: Option<&'a RawValue>,
        /// `period`, verbatim (`5m` when absent).
        pub period: Option<&'a RawValue>,
    }
}

impl<'a> Message<'a> for LsrTopPositionWire<'a> {
    const DATA_TYPE: DataType = TY;

    fn into_record(self, common: Common, _now_ms: i64) -> Result<Record, Rejection> {
        let long_position_ratio = common::required_decimal64(
            &Field::of(TY, "long_position_ratio"),
            self.long_position_ratio,
        )?;
        let short_position_ratio = common::required_decimal64(
            &Field::of(TY, "short_position_ratio"),
            self.short_position_ratio,
        )?;
        let period = common::period(&Field::of(TY, "period"), self.period)?;
        Ok(Record::LsrTopPosition(LsrTopPositionRow {
            common,
            long_position_ratio,
            short_position_ratio,
            period,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::RejectKind;
    use crate::decode::testing::{err, ok, with};

    /// The MarketPrism collector's OKX top-position payload (reference §2.2).
    const EXAMPLE: &str = r#"{"exchange":"okx","market_type":"perpetual","symbol":"BTC-USDT","instrument_id":"BTC-USDT-SWAP","long_short_ratio":"1.12","period":"1h","data_source":"api","data_type":"lsr_top_position","long_position_ratio":"0.5283018867924528301886792453","short_position_ratio":"0.4716981132075471698113207547","ts_ms":1761040800123,"publisher":"unified-collector","collected_ts_ms":1761040800123}"#;

    fn row(json: &str) -> LsrTopPositionRow {
        match ok(TY, json) {
            Record::LsrTopPosition(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn collector_example_maps_every_column() {
        assert_eq!(
            row(EXAMPLE),
            LsrTopPositionRow {
                common: Common {
                    timestamp_ms: 1_761_040_800_123,
                    exchange: "okx".into(),
                    market_type: "perpetual".into(),
                    symbol: "BTC-USDT".into(),
                    data_source: "api".into(),
                },
                long_position_ratio: 52_830_188,
                short_position_ratio: 47_169_811,
                period: "1h".into(),
            }
        );
    }

    #[test]
    fn python_service_decimal_float_roundtrip() {
        // The Python service went through float: 0.5283018867924528 (17 digits) then truncated by
        // ClickHouse. We truncate the exact 28-digit text; a value whose float form rounds up
        // across the 8th decimal shows the difference.
        let r = row(&with(
            EXAMPLE,
            "long_position_ratio",
            Some(r#""0.1234567899999999999999""#),
        ));
        assert_eq!(r.long_position_ratio, 12_345_678);
        let r = row(&with(
            EXAMPLE,
            "long_position_ratio",
            Some("0.30000000000000004"),
        ));
        assert_eq!(r.long_position_ratio, 30_000_000);
    }

    #[test]
    fn period_defaults_to_5m_only_when_missing() {
        assert_eq!(row(&with(EXAMPLE, "period", None)).period, "5m");
        assert_eq!(row(&with(EXAMPLE, "period", Some("null"))).period, "5m");
        assert_eq!(
            row(&with(EXAMPLE, "period", Some(r#""15m""#))).period,
            "15m"
        );
        let e = err(TY, &with(EXAMPLE, "period", Some("5")));
        assert_eq!(e.kind, RejectKind::InvalidField);
        assert_eq!(
            e.reason,
            "lsr_top_position.period: expected a string, got 5"
        );
    }

    #[test]
    fn rejects_missing_ratio() {
        let e = err(TY, &with(EXAMPLE, "short_position_ratio", None));
        assert_eq!(e.kind, RejectKind::MissingField);
        assert_eq!(e.reason, "lsr_top_position.short_position_ratio: missing");
    }
}
