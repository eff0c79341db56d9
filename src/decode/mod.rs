//! Decode stage: one message payload → one validated [`Record`], or a [`Rejection`] saying why.
//!
//! Consumes the data type (resolved from the subject by the caller with
//! `DataType::from_subject`), the subject (for reasons only), the raw JSON payload and the
//! current time in UTC ms. Emits exactly one typed row of the type's table, or a rejection with
//! a stable [`RejectKind`] label for metrics and a lower-case reason naming the field and the
//! problem. It is pure: it never does IO, never reads the clock, never panics on any input, and
//! never coerces a bad value to 0 or to "now". `docs/data-model.md` lists every rule.
//!
//! One file per data type holds the borrowed serde struct for the JSON the MarketPrism collector
//! publishes and its `into_record`: validation and normalization into the typed row of
//! `crate::model`. Shared helpers: [`common`] (the fields every type carries, typed access to
//! JSON values), [`decimal`] (the one exact decimal parser) and [`timestamp`] (the one timestamp
//! parser); [`reject`] holds the rejection type every rule returns.

use serde::Deserialize;

use crate::model::{Common, DataType, Record};

pub mod reject;

pub use reject::{RejectKind, Rejection};

/// Declares a borrowed wire struct: the shared fields plus the type's own.
///
/// Every field is optional (absent and `null` are both `None`) and borrowed from the payload;
/// unknown keys are ignored. Validation happens in `into_row`, so a bad value is a rejection
/// that names its field rather than a generic JSON error.
macro_rules! wire_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident<'a> {
            $( $(#[$fmeta:meta])* pub $field:ident: $ty:ty, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Default, serde::Deserialize)]
        pub struct $name<'a> {
            /// `data_type`: must agree with the subject when present.
            #[serde(borrow, default)]
            pub data_type: Option<&'a serde_json::value::RawValue>,
            /// `exchange`.
            #[serde(borrow, default)]
            pub exchange: Option<&'a serde_json::value::RawValue>,
            /// `market_type`.
            #[serde(borrow, default)]
            pub market_type: Option<&'a serde_json::value::RawValue>,
            /// `symbol`.
            #[serde(borrow, default)]
            pub symbol: Option<&'a serde_json::value::RawValue>,
            /// `data_source`.
            #[serde(borrow, default)]
            pub data_source: Option<&'a serde_json::value::RawValue>,
            /// `ts_ms`: the preferred timestamp.
            #[serde(borrow, default)]
            pub ts_ms: Option<&'a serde_json::value::RawValue>,
            /// `timestamp`: used when `ts_ms` is absent.
            #[serde(borrow, default)]
            pub timestamp: Option<&'a serde_json::value::RawValue>,
            $(
                $(#[$fmeta])*
                #[serde(borrow, default)]
                pub $field: $ty,
            )*
        }

        impl<'a> $crate::decode::common::HasCommon<'a> for $name<'a> {
            fn common_wire(&self) -> $crate::decode::common::CommonWire<'a> {
                $crate::decode::common::CommonWire {
                    data_type: self.data_type,
                    exchange: self.exchange,
                    market_type: self.market_type,
                    symbol: self.symbol,
                    data_source: self.data_source,
                    ts_ms: self.ts_ms,
                    timestamp: self.timestamp,
                }
            }
        }
    };
}

pub mod common;
pub mod decimal;
pub mod funding_rate;
pub mod liquidation;
pub mod lsr_all_account;
pub mod lsr_top_position;
pub mod open_interest;
pub mod orderbook;
pub mod timestamp;
pub mod trade;
pub mod volatility_index;

/// A message type: its wire struct, its data type and its mapping to a row.
pub trait Message<'a>: Deserialize<'a> + common::HasCommon<'a> {
    /// The data type (subject prefix) this wire struct belongs to.
    const DATA_TYPE: DataType;

    /// Validates the type's own fields and builds the row (the shared columns are resolved).
    fn into_record(self, common: Common, now_ms: i64) -> Result<Record, Rejection>;
}

use funding_rate::FundingRateWire;
use liquidation::LiquidationWire;
use lsr_all_account::LsrAllAccountWire;
use lsr_top_position::LsrTopPositionWire;
use open_interest::OpenInterestWire;
use orderbook::OrderbookWire;
use trade::TradeWire;
use volatility_index::VolatilityIndexWire;

/// Decodes one payload of `data_type` into its row.
///
/// `subject` is only quoted in reasons; `now_ms` (UTC ms) bounds timestamps to at most one day
/// ahead. The payload's `data_type`, when present, must equal `data_type`.
pub fn decode(
    data_type: DataType,
    subject: &str,
    payload: &[u8],
    now_ms: i64,
) -> Result<Record, Rejection> {
    match data_type {
        DataType::Orderbook => run::<OrderbookWire>(subject, payload, now_ms),
        DataType::Trade => run::<TradeWire>(subject, payload, now_ms),
        DataType::FundingRate => run::<FundingRateWire>(subject, payload, now_ms),
        DataType::OpenInterest => run::<OpenInterestWire>(subject, payload, now_ms),
        DataType::Liquidation => run::<LiquidationWire>(subject, payload, now_ms),
        DataType::LsrTopPosition => run::<LsrTopPositionWire>(subject, payload, now_ms),
        DataType::LsrAllAccount => run::<LsrAllAccountWire>(subject, payload, now_ms),
        DataType::VolatilityIndex => run::<VolatilityIndexWire>(subject, payload, now_ms),
    }
}

fn run<'a, M: Message<'a>>(
    subject: &str,
    payload: &'a [u8],
    now_ms: i64,
) -> Result<Record, Rejection> {
    let wire: M = parse(payload)?;
    let common = common::resolve_common(wire.common_wire(), M::DATA_TYPE, subject, now_ms)?;
    wire.into_record(common, now_ms)
}

/// Parses the payload as a JSON object into a borrowed wire struct.
fn parse<'a, M: serde::Deserialize<'a>>(payload: &'a [u8]) -> Result<M, Rejection> {
    // serde would also map a JSON array onto a struct field by field; only objects are messages.
    let first = payload.iter().find(|b| !b.is_ascii_whitespace());
    let what = match first {
        Some(b'[') => Some("an array"),
        Some(b'"') => Some("a string"),
        Some(b'n') => Some("null"),
        Some(b't' | b'f') => Some("a boolean"),
        Some(b'-' | b'0'..=b'9') => Some("a number"),
        // Objects, and garbage that serde_json will describe with its position.
        _ => None,
    };
    if let Some(what) = what {
        return Err(Rejection::new(
            RejectKind::InvalidJson,
            format!("payload: expected a JSON object, got {what}"),
        ));
    }
    // Validate UTF-8 once up front: serde_json skips it inside ignored values, and parsing
    // from `&str` then needs no per-string check.
    let text = std::str::from_utf8(payload).map_err(|e| {
        Rejection::new(
            RejectKind::InvalidJson,
            format!("payload: invalid UTF-8 at byte {}", e.valid_up_to()),
        )
    })?;
    serde_json::from_str(text).map_err(|e| {
        let full = e.to_string();
        let position = format!(" at line {} column {}", e.line(), e.column());
        let message = full.strip_suffix(&position).unwrap_or(&full);
        Rejection::new(
            RejectKind::InvalidJson,
            format!(
                "payload: invalid JSON at line {} column {}: {message}",
                e.line(),
                e.column()
            ),
        )
    })
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers shared by the per-type tests.

    use super::*;

    /// "Now" in tests: 2025-10-21T10:00:01.000Z, one second after the Python service examples' `ts_ms`.
    pub const NOW: i64 = 1_761_040_801_000;

    /// The subject a collector-shaped message of `t` arrives on.
    pub fn subject(t: DataType) -> String {
        format!("{t}.binance.perpetual.BTC-USDT")
    }

    /// Decodes `json`, expecting a row.
    pub fn ok(t: DataType, json: &str) -> Record {
        match decode(t, &subject(t), json.as_bytes(), NOW) {
            Ok(r) => r,
            Err(e) => panic!("unexpected rejection {}: {}", e.kind.as_str(), e.reason),
        }
    }

    /// Decodes `json`, expecting a rejection.
    pub fn err(t: DataType, json: &str) -> Rejection {
        match decode(t, &subject(t), json.as_bytes(), NOW) {
            Ok(r) => panic!("unexpected row {r:?}"),
            Err(e) => e,
        }
    }

    /// Replaces (or with `None` removes) one top-level key of a JSON object.
    pub fn with(json: &str, key: &str, value: Option<&str>) -> String {
        let mut v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json).unwrap();
        match value {
            Some(x) => {
                v.insert(key.to_owned(), serde_json::from_str(x).unwrap());
            }
            None => {
                v.remove(key);
            }
        }
        serde_json::to_string(&v).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{NOW, err, ok, subject, with};
    use super::*;
    use proptest::prelude::*;

    /// A minimal valid trade, numbers as strings.
    const TRADE: &str = r#"{"exchange":"binance","market_type":"spot","symbol":"BTC-USDT","price":"1","quantity":"1","side":"buy","trade_id":"1","ts_ms":1761040800123}"#;

    fn ts(json: &str) -> i64 {
        ok(DataType::Trade, json).common().timestamp_ms
    }

    fn check(json: &str, kind: RejectKind, reason: &str) {
        let e = err(DataType::Trade, json);
        assert_eq!((e.kind, e.reason.as_str()), (kind, reason), "{json}");
    }

    #[test]
    fn kinds_have_distinct_labels() {
        let labels: std::collections::BTreeSet<_> =
            RejectKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(labels.len(), RejectKind::ALL.len());
        assert_eq!(
            RejectKind::TimestampOutOfRange.to_string(),
            "timestamp_out_of_range"
        );
    }

    #[test]
    fn common_columns_lower_case_verbatim_symbol_default_source() {
        let json = with(
            &with(TRADE, "exchange", Some(r#""Binance""#)),
            "market_type",
            Some(r#""SPOT""#),
        );
        let json = with(&json, "symbol", Some(r#""btc-usdt\u00e9""#));
        let r = ok(DataType::Trade, &json);
        let c = r.common();
        assert_eq!(
            (c.exchange.as_str(), c.market_type.as_str()),
            ("binance", "spot")
        );
        assert_eq!(c.symbol, "btc-usdt\u{e9}");
        assert_eq!(c.data_source, "simple_hot_storage");
        let r = ok(DataType::Trade, &with(TRADE, "data_source", Some(r#""""#)));
        assert_eq!(r.common().data_source, "simple_hot_storage");
        let r = ok(
            DataType::Trade,
            &with(TRADE, "data_source", Some(r#""marketprism""#)),
        );
        assert_eq!(r.common().data_source, "marketprism");
        // Unknown keys, nulls and the payload's matching data_type are fine.
        let json = with(
            &with(TRADE, "whatever", Some(r#"{"a":[1,null]}"#)),
            "data_type",
            Some(r#""trade""#),
        );
        ok(
            DataType::Trade,
            &with(&json, "collected_ts_ms", Some("null")),
        );
    }

    #[test]
    fn timestamp_sources_and_heuristic() {
        let no_ts = with(TRADE, "ts_ms", None);
        let t = |v: &str| ts(&with(&no_ts, "timestamp", Some(v)));
        assert_eq!(t("1761040800123"), 1_761_040_800_123);
        assert_eq!(t("1761040800.123"), 1_761_040_800_123);
        assert_eq!(t(r#""1761040800""#), 1_761_040_800_000);
        assert_eq!(t(r#""1761040800123""#), 1_761_040_800_123);
        assert_eq!(t(r#""2025-10-21T10:00:00.123Z""#), 1_761_040_800_123);
        assert_eq!(t(r#""2025-10-21T10:00:00.123456""#), 1_761_040_800_123);
        // ts_ms wins over timestamp.
        assert_eq!(
            ts(&with(TRADE, "timestamp", Some("1300000000000"))),
            1_761_040_800_123
        );
        // ts_ms as a seconds float (the heuristic applies to every timestamp field).
        assert_eq!(
            ts(&with(TRADE, "ts_ms", Some("1761040800.5"))),
            1_761_040_800_500
        );
    }

    #[test]
    fn python_service_negative_utc_offset_fails() {
        // The Python service cut "+hh:mm" and failed on "-hh:mm" (then stored "now").
        let json = with(
            &with(TRADE, "ts_ms", None),
            "timestamp",
            Some(r#""2025-10-21T06:00:00.123-04:00""#),
        );
        assert_eq!(ts(&json), 1_761_040_800_123);
        let json = with(
            &with(TRADE, "ts_ms", None),
            "timestamp",
            Some(r#""2025-10-21T15:30:00.123+05:30""#),
        );
        assert_eq!(ts(&json), 1_761_040_800_123);
    }

    #[test]
    fn python_service_missing_timestamp_becomes_now() {
        // The Python service stored the service's clock; a missing or unparsable time is now a rejection.
        let no_ts = with(TRADE, "ts_ms", None);
        check(
            &no_ts,
            RejectKind::MissingField,
            "timestamp: missing (need ts_ms or timestamp)",
        );
        check(
            &with(&no_ts, "timestamp", Some("null")),
            RejectKind::MissingField,
            "timestamp: missing (need ts_ms or timestamp)",
        );
        check(
            &with(&no_ts, "timestamp", Some(r#""yesterday""#)),
            RejectKind::InvalidTimestamp,
            r#"timestamp: not a timestamp: "yesterday""#,
        );
        check(
            &with(TRADE, "ts_ms", Some("true")),
            RejectKind::InvalidTimestamp,
            "ts_ms: not a timestamp: true",
        );
    }

    #[test]
    fn python_service_unparsable_number_becomes_zero() {
        // The Python service stored 0 for unparsable numbers; now each is a rejection naming the field.
        for (v, shown) in [
            (r#""abc""#, r#""abc""#),
            (r#""""#, r#""""#),
            ("true", "true"),
            (r#""NaN""#, r#""NaN""#),
            (r#""Infinity""#, r#""Infinity""#),
            ("[1]", "[1]"),
        ] {
            check(
                &with(TRADE, "price", Some(v)),
                RejectKind::InvalidNumber,
                &format!("trade.price: not a decimal number: {shown}"),
            );
        }
    }

    #[test]
    fn one_test_per_rejection_kind() {
        let t = DataType::Trade;
        let e = decode(t, "trade.x", b"{\"a\":", NOW).unwrap_err();
        assert_eq!(e.kind, RejectKind::InvalidJson);
        assert_eq!(
            e.reason,
            "payload: invalid JSON at line 1 column 5: EOF while parsing a value"
        );
        let e = decode(t, "trade.x", b"  [1,2]", NOW).unwrap_err();
        assert_eq!(
            (e.kind, e.reason.as_str()),
            (
                RejectKind::InvalidJson,
                "payload: expected a JSON object, got an array"
            )
        );
        let e = decode(t, "trade.x", b"{\"s\":\"\xff\"}", NOW).unwrap_err();
        assert_eq!(
            (e.kind, e.reason.as_str()),
            (RejectKind::InvalidJson, "payload: invalid UTF-8 at byte 6")
        );
        let e = decode(t, "trade.x", b"", NOW).unwrap_err();
        assert_eq!(
            e.reason,
            "payload: invalid JSON at line 1 column 0: EOF while parsing a value"
        );
        let e = decode(t, "trade.x", br#"{"price":"1","price":"2"}"#, NOW).unwrap_err();
        assert_eq!(
            e.reason,
            "payload: invalid JSON at line 1 column 20: duplicate field `price`"
        );

        check(
            &with(TRADE, "symbol", None),
            RejectKind::MissingField,
            "symbol: missing",
        );
        check(
            &with(TRADE, "exchange", Some(r#""""#)),
            RejectKind::MissingField,
            "exchange: must not be empty",
        );
        check(
            &with(TRADE, "market_type", Some("5")),
            RejectKind::InvalidField,
            "market_type: expected a string, got 5",
        );
        check(
            &with(TRADE, "price", Some(r#""x1""#)),
            RejectKind::InvalidNumber,
            r#"trade.price: not a decimal number: "x1""#,
        );
        check(
            &with(TRADE, "price", Some(r#""1e10""#)),
            RejectKind::OutOfRange,
            r#"trade.price: out of range for Decimal64(8): "1e10""#,
        );
        check(
            &with(TRADE, "ts_ms", Some(r#""2025-13-01""#)),
            RejectKind::InvalidTimestamp,
            r#"ts_ms: not a timestamp: "2025-13-01""#,
        );
        check(
            &with(TRADE, "ts_ms", Some("1761127201001")),
            RejectKind::TimestampOutOfRange,
            "ts_ms: out of range: 1761127201001 (2025-10-22T10:00:01.001Z) is more than 1 day after now (2025-10-21T10:00:01.000Z)",
        );
        check(
            &with(TRADE, "ts_ms", Some("1230767999999")),
            RejectKind::TimestampOutOfRange,
            "ts_ms: out of range: 1230767999999 (2008-12-31T23:59:59.999Z) is before 2009-01-01T00:00:00Z",
        );
        check(
            &with(TRADE, "ts_ms", Some("1e30")),
            RejectKind::TimestampOutOfRange,
            "ts_ms: out of range: 1e+30",
        );
        check(
            &with(TRADE, "side", Some(r#""long""#)),
            RejectKind::InvalidSide,
            r#"trade.side: must be buy or sell, got "long""#,
        );
        check(
            &with(TRADE, "price", Some(r#""-1""#)),
            RejectKind::NonPositive,
            r#"trade.price: must be > 0, got "-1""#,
        );

        let e = decode(
            DataType::Orderbook,
            "orderbook.binance.spot.BTC-USDT",
            TRADE.replace('{', r#"{"data_type":"trade","#).as_bytes(),
            NOW,
        )
        .unwrap_err();
        assert_eq!(e.kind, RejectKind::TypeMismatch);
        assert_eq!(
            e.reason,
            r#"data_type: payload says "trade" but subject is orderbook.binance.spot.BTC-USDT"#
        );

        let e = Rejection::unknown_subject("trade-data.binance.spot.BTC-USDT");
        assert_eq!(e.kind, RejectKind::UnknownType);
        assert_eq!(
            e.reason,
            r#"subject: unknown data type "trade-data" in trade-data.binance.spot.BTC-USDT"#
        );
        assert_eq!(e.to_string(), e.reason);
    }

    #[test]
    fn every_type_rejects_a_foreign_data_type() {
        for t in DataType::ALL {
            let other = if t == DataType::Trade {
                DataType::Orderbook
            } else {
                DataType::Trade
            };
            let json = format!(r#"{{"data_type":"{other}"}}"#);
            let e = decode(t, &subject(t), json.as_bytes(), NOW).unwrap_err();
            assert_eq!(e.kind, RejectKind::TypeMismatch, "{t}");
        }
    }

    /// Collector-shaped payloads of every type, used to mutate in the property below.
    const SAMPLES: [(DataType, &str); 3] = [
        (DataType::Trade, TRADE),
        (
            DataType::Orderbook,
            r#"{"exchange":"okx","market_type":"spot","symbol":"BTC-USDT","bids":[["1.5","2"],{"price":"1","quantity":"3"}],"asks":[],"last_update_id":null,"ts_ms":1761040800123}"#,
        ),
        (
            DataType::OpenInterest,
            r#"{"exchange":"okx","market_type":"perpetual","symbol":"BTC-USDT","open_interest_value":8.1e4,"open_interest_usd":"5443568951.9535","timestamp":"2025-10-21T10:00:00Z"}"#,
        ),
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn prop_never_panics_on_mutated_payloads(
            which in 0usize..3,
            cut in 0usize..400,
            byte in any::<u8>(),
            pos in 0usize..400,
        ) {
            let (t, json) = SAMPLES[which];
            let mut bytes = json.as_bytes().to_vec();
            let pos = pos % (bytes.len() + 1);
            bytes.insert(pos, byte);
            bytes.truncate(cut.max(1) % (bytes.len() + 1));
            let _ = decode(t, "x", &bytes, NOW);
            for t in DataType::ALL {
                let _ = decode(t, "x", json.as_bytes(), NOW);
            }
        }

        #[test]
        fn prop_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            for t in DataType::ALL {
                let _ = decode(t, "x", &bytes, NOW);
            }
        }
    }
}
