//! `orderbook` messages → `orderbooks` rows.
//!
//! Wire shape (MarketPrism collector): `bids`/`asks` as arrays of levels, best first, each level either
//! `[price, quantity]` (snapshot mode) or `{"price": …, "quantity": …}` (websocket mode), with
//! price and quantity as strings (or numbers); `last_update_id` an integer or `null` (OKX).
//! Levels are read in one pass as borrowed raw values (no `serde_json::Value`), each is checked
//! with the exact decimal parser and re-rendered as compact JSON `[["price","qty"],…]` keeping
//! the exact text: strings as received, numbers as their JSON text turned into strings.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::Message;
use super::common::{self, Field};
use crate::decode::{RejectKind, Rejection};
use crate::model::{Common, DataType, OrderbookRow, Record};

const TY: DataType = DataType::Orderbook;

wire_struct! {
    /// An `orderbook` payload, borrowed.
    pub struct OrderbookWire<'a> {
        /// `bids`, best first (required; may be empty).
        pub bids: Option<Levels<'a>>,
        /// `asks`, best first (required; may be empty).
        pub asks: Option<Levels<'a>>,
        /// `last_update_id`: a non-negative integer, a string of digits or `null` (→ 0).
        pub last_update_id: Option<&'a RawValue>,
    }
}

/// One side of the book as sent: a list of levels, or what was sent instead of an array.
#[derive(Debug)]
pub enum Levels<'a> {
    /// The levels in the order received.
    List(Vec<Level<'a>>),
    /// Not an array; the JSON kind that was sent (`a string`, …).
    NotArray(&'static str),
}

impl Default for Levels<'_> {
    fn default() -> Self {
        Levels::List(Vec::new())
    }
}

/// One level as sent.
#[derive(Debug)]
pub enum Level<'a> {
    /// Price and quantity, as raw JSON values (validated later, with the level's index).
    Pair {
        /// The price value.
        price: &'a RawValue,
        /// The quantity value.
        quantity: &'a RawValue,
    },
    /// The level does not have the shape of a level.
    Bad(LevelProblem),
}

/// What is wrong with the shape of a level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LevelProblem {
    /// Neither an array nor an object (the JSON kind sent).
    NotALevel(&'static str),
    /// An array with other than two elements (the count).
    ArrayLength(usize),
    /// An object without `price` or `quantity` (the missing key).
    MissingKey(&'static str),
    /// An object with a key other than `price` and `quantity`.
    UnknownKey(String),
    /// An object with `price` or `quantity` twice.
    DuplicateKey(&'static str),
}

/// An object key, borrowed unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Key<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V(PhantomData))
    }
}

/// Implements the non-container visits of a visitor as "got <kind>".
macro_rules! visit_scalars {
    ($value:ty, $make:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<$value, E> {
            Ok($make("a boolean"))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<$value, E> {
            Ok($make("a number"))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<$value, E> {
            Ok($make("a number"))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<$value, E> {
            Ok($make("a number"))
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<$value, E> {
            Ok($make("a string"))
        }
        fn visit_unit<E: de::Error>(self) -> Result<$value, E> {
            Ok($make("null"))
        }
    };
}

impl<'de: 'a, 'a> Deserialize<'de> for Levels<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Levels<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of levels")
            }
            visit_scalars!(Levels<'a>, Levels::NotArray);
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Levels<'a>, A::Error> {
                let mut levels = Vec::with_capacity(seq.size_hint().unwrap_or(0).max(64));
                while let Some(level) = seq.next_element::<Level<'a>>()? {
                    levels.push(level);
                }
                Ok(Levels::List(levels))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Levels<'a>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Levels::NotArray("an object"))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Level<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Level<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an orderbook level")
            }
            visit_scalars!(Level<'a>, |k| Level::Bad(LevelProblem::NotALevel(k)));
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Level<'a>, A::Error> {
                let price = seq.next_element::<&'a RawValue>()?;
                let quantity = match price {
                    Some(_) => seq.next_element::<&'a RawValue>()?,
                    None => None,
                };
                let mut extra = 0usize;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    extra = extra.saturating_add(1);
                }
                Ok(match (price, quantity, extra) {
                    (Some(price), Some(quantity), 0) => Level::Pair { price, quantity },
                    (p, q, n) => Level::Bad(LevelProblem::ArrayLength(
                        usize::from(p.is_some()) + usize::from(q.is_some()) + n,
                    )),
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Level<'a>, A::Error> {
                let mut price = None;
                let mut quantity = None;
                let mut problem = None;
                while let Some(Key(key)) = map.next_key::<Key<'a>>()? {
                    let slot = match key.as_ref() {
                        "price" => Some((&mut price, "price")),
                        "quantity" => Some((&mut quantity, "quantity")),
                        _ => None,
                    };
                    match slot {
                        Some((slot, name)) => {
                            let value = map.next_value::<&'a RawValue>()?;
                            if slot.replace(value).is_some() && problem.is_none() {
                                problem = Some(LevelProblem::DuplicateKey(name));
                            }
                        }
                        None => {
                            map.next_value::<IgnoredAny>()?;
                            if problem.is_none() {
                                problem = Some(LevelProblem::UnknownKey(key.into_owned()));
                            }
                        }
                    }
                }
                Ok(match (problem, price, quantity) {
                    (Some(p), _, _) => Level::Bad(p),
                    (None, None, _) => Level::Bad(LevelProblem::MissingKey("price")),
                    (None, _, None) => Level::Bad(LevelProblem::MissingKey("quantity")),
                    (None, Some(price), Some(quantity)) => Level::Pair { price, quantity },
                })
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// `orderbook.bids[3]` or `orderbook.bids[3].price` in reasons.
struct LevelField {
    side: &'static str,
    index: usize,
    part: Option<&'static str>,
}

impl fmt::Display for LevelField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}[{}]", TY.as_str(), self.side, self.index)?;
        if let Some(part) = self.part {
            write!(f, ".{part}")?;
        }
        Ok(())
    }
}

/// One side, validated and rendered.
struct Side {
    json: String,
    count: u32,
    best_price: i64,
    best_quantity: i64,
}

fn level_problem(side: &'static str, index: usize, problem: LevelProblem) -> Rejection {
    let at = LevelField {
        side,
        index,
        part: None,
    };
    match problem {
        LevelProblem::NotALevel(kind) => Rejection::new(
            RejectKind::InvalidField,
            format!(
                "{at}: expected [price, quantity] or {{\"price\":…,\"quantity\":…}}, got {kind}"
            ),
        ),
        LevelProblem::ArrayLength(n) => Rejection::new(
            RejectKind::InvalidField,
            format!("{at}: expected 2 elements [price, quantity], got {n}"),
        ),
        LevelProblem::MissingKey(key) => Rejection::new(
            RejectKind::MissingField,
            format!(
                "{}: missing",
                LevelField {
                    side,
                    index,
                    part: Some(key)
                }
            ),
        ),
        LevelProblem::UnknownKey(key) => Rejection::new(
            RejectKind::InvalidField,
            format!("{at}: unexpected key {key:?} (a level has exactly price and quantity)"),
        ),
        LevelProblem::DuplicateKey(key) => Rejection::new(
            RejectKind::InvalidField,
            format!("{at}: duplicate key {key:?}"),
        ),
    }
}

fn side(name: &'static str, levels: Option<Levels<'_>>) -> Result<Side, Rejection> {
    let field = Field::of(TY, name);
    let levels = match levels {
        None => {
            return Err(Rejection::new(
                RejectKind::MissingField,
                format!("{field}: missing"),
            ));
        }
        Some(Levels::NotArray(kind)) => {
            return Err(Rejection::new(
                RejectKind::InvalidField,
                format!("{field}: expected an array of levels, got {kind}"),
            ));
        }
        Some(Levels::List(levels)) => levels,
    };
    let count = u32::try_from(levels.len()).map_err(|_| {
        Rejection::new(
            RejectKind::OutOfRange,
            format!("{field}: too many levels for UInt32"),
        )
    })?;
    // Each level renders to about its price and quantity text plus 7 bytes of punctuation.
    let mut json = String::with_capacity(2 + levels.len() * 40);
    json.push('[');
    let (mut best_price, mut best_quantity) = (0, 0);
    for (index, level) in levels.into_iter().enumerate() {
        let (price, quantity) = match level {
            Level::Pair { price, quantity } => (price, quantity),
            Level::Bad(problem) => return Err(level_problem(name, index, problem)),
        };
        let (p, p_text) = common::decimal64_with_text(
            &LevelField {
                side: name,
                index,
                part: Some("price"),
            },
            price,
        )?;
        let (q, q_text) = common::decimal64_with_text(
            &LevelField {
                side: name,
                index,
                part: Some("quantity"),
            },
            quantity,
        )?;
        if index == 0 {
            (best_price, best_quantity) = (p, q);
        } else {
            json.push(',');
        }
        // Decimal text has no characters that need escaping in a JSON string.
        json.push_str("[\"");
        json.push_str(&p_text);
        json.push_str("\",\"");
        json.push_str(&q_text);
        json.push_str("\"]");
    }
    json.push(']');
    Ok(Side {
        json,
        count,
        best_price,
        best_quantity,
    })
}

impl<'a> Message<'a> for OrderbookWire<'a> {
    const DATA_TYPE: DataType = TY;

    fn into_record(self, common: Common, _now_ms: i64) -> Result<Record, Rejection> {
        let bids = side("bids", self.bids)?;
        let asks = side("asks", self.asks)?;
        let last_update_id =
            common::optional_u64(&Field::of(TY, "last_update_id"), self.last_update_id)?;
        Ok(Record::Orderbook(OrderbookRow {
            common,
            last_update_id,
            bids_count: bids.count,
            asks_count: asks.count,
            best_bid_price: bids.best_price,
            best_ask_price: asks.best_price,
            best_bid_quantity: bids.best_quantity,
            best_ask_quantity: asks.best_quantity,
            bids: bids.json,
            asks: asks.json,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::testing::{err, ok, with};

    /// The MarketPrism collector's snapshot-mode orderbook payload (reference §2.2).
    const EXAMPLE: &str = r#"{"exchange":"binance","symbol":"BTC-USDT","bids":[["67000.10000000","0.51200000"],["67000.00000000","1.20000000"]],"asks":[["67000.20000000","0.30000000"],["67000.50000000","2.00000000"]],"last_update_id":51234567890,"data_source":"marketprism","normalized_symbol":"BTC-USDT","standardized_at":"2025-10-21T10:00:00.120512+00:00","standardization_version":"2.0","data_type":"orderbook","market_type":"spot","ts_ms":1761040800123,"publisher":"unified-collector","collected_ts_ms":1761040800123}"#;

    fn row(json: &str) -> OrderbookRow {
        match ok(TY, json) {
            Record::Orderbook(r) => r,
            other => panic!("{other:?}"),
        }
    }

    fn example_row() -> OrderbookRow {
        OrderbookRow {
            common: Common {
                timestamp_ms: 1_761_040_800_123,
                exchange: "binance".into(),
                market_type: "spot".into(),
                symbol: "BTC-USDT".into(),
                data_source: "marketprism".into(),
            },
            last_update_id: 51_234_567_890,
            bids_count: 2,
            asks_count: 2,
            best_bid_price: 6_700_010_000_000,
            best_ask_price: 6_700_020_000_000,
            best_bid_quantity: 51_200_000,
            best_ask_quantity: 30_000_000,
            bids: r#"[["67000.10000000","0.51200000"],["67000.00000000","1.20000000"]]"#.into(),
            asks: r#"[["67000.20000000","0.30000000"],["67000.50000000","2.00000000"]]"#.into(),
        }
    }

    #[test]
    fn collector_example_maps_every_column() {
        assert_eq!(row(EXAMPLE), example_row());
    }

    #[test]
    fn object_levels_give_the_same_row() {
        // Websocket mode: {"price","quantity"} objects, plus its extra top-level keys.
        let json = r#"{"exchange":"binance","symbol":"BTC-USDT","market_type":"spot","data_source":"marketprism","data_type":"orderbook","ts_ms":1761040800123,"timestamp":"2025-10-21T10:00:00.100Z","update_type":"update","depth_levels":400,"first_update_id":1,"prev_update_id":2,"last_update_id":"51234567890",
            "bids":[{"price":"67000.10000000","quantity":"0.51200000"},{"quantity":"1.20000000","price":"67000.00000000"}],
            "asks":[ {"price" : "67000.20000000", "quantity" : "0.30000000"} , ["67000.50000000","2.00000000"] ]}"#;
        assert_eq!(row(json), example_row());
    }

    #[test]
    fn number_levels_keep_their_exact_text_as_strings() {
        // Built by text replacement so the number text reaches the decoder untouched.
        let json = EXAMPLE.replace(
            r#"[["67000.10000000","0.51200000"],["67000.00000000","1.20000000"]]"#,
            r#"[[67000.1,5.12E-1],["1e-8",8.12e-05]]"#,
        );
        let r = row(&json);
        assert_eq!(r.bids, r#"[["67000.1","5.12E-1"],["1e-8","8.12e-05"]]"#);
        assert_eq!(
            (r.best_bid_price, r.best_bid_quantity),
            (6_700_010_000_000, 51_200_000)
        );
    }

    #[test]
    fn empty_sides_null_update_id_and_no_sorting() {
        let json = with(
            &with(EXAMPLE, "bids", Some("[]")),
            "last_update_id",
            Some("null"),
        );
        let json = with(&json, "asks", Some(r#"[["67001","1"],["67000.2","2"]]"#));
        let r = row(&json);
        assert_eq!(
            (
                r.bids.as_str(),
                r.bids_count,
                r.best_bid_price,
                r.best_bid_quantity
            ),
            ("[]", 0, 0, 0)
        );
        assert_eq!(r.asks_count, 2);
        assert_eq!(
            (r.best_ask_price, r.best_ask_quantity),
            (6_700_100_000_000, 100_000_000)
        );
        assert_eq!(r.last_update_id, 0);
        assert_eq!(
            row(&with(EXAMPLE, "last_update_id", None)).last_update_id,
            0
        );
    }

    #[test]
    fn rejects_bad_levels_naming_the_level() {
        let bids = |v: &str| err(TY, &with(EXAMPLE, "bids", Some(v)));
        let e = bids(r#"[["1","1"],["2","2"],["3","3"],["abc","1"]]"#);
        assert_eq!(e.kind, RejectKind::InvalidNumber);
        assert_eq!(
            e.reason,
            r#"orderbook.bids[3].price: not a decimal number: "abc""#
        );
        let e = bids(r#"[["1",""]]"#);
        assert_eq!(
            e.reason,
            r#"orderbook.bids[0].quantity: not a decimal number: """#
        );
        let e = bids(r#"[["1","1","x"]]"#);
        assert_eq!(e.kind, RejectKind::InvalidField);
        assert_eq!(
            e.reason,
            "orderbook.bids[0]: expected 2 elements [price, quantity], got 3"
        );
        let e = bids(r#"[["1"]]"#);
        assert_eq!(
            e.reason,
            "orderbook.bids[0]: expected 2 elements [price, quantity], got 1"
        );
        let e = bids(r#"[{"price":"1"}]"#);
        assert_eq!(
            (e.kind, e.reason.as_str()),
            (
                RejectKind::MissingField,
                "orderbook.bids[0].quantity: missing"
            )
        );
        let e = bids(r#"[{"price":"1","quantity":"1","size":"1"}]"#);
        assert_eq!(
            e.reason,
            r#"orderbook.bids[0]: unexpected key "size" (a level has exactly price and quantity)"#
        );
        let e = bids(r#"["1"]"#);
        assert_eq!(
            e.reason,
            r#"orderbook.bids[0]: expected [price, quantity] or {"price":…,"quantity":…}, got a string"#
        );
        let e = bids(r#"{"price":"1"}"#);
        assert_eq!(
            e.reason,
            "orderbook.bids: expected an array of levels, got an object"
        );
        let e = bids(r#"[["1e10","1"]]"#);
        assert_eq!(e.kind, RejectKind::OutOfRange);
        assert_eq!(
            e.reason,
            r#"orderbook.bids[0].price: out of range for Decimal64(8): "1e10""#
        );
        let e = err(TY, &with(EXAMPLE, "asks", None));
        assert_eq!(
            (e.kind, e.reason.as_str()),
            (RejectKind::MissingField, "orderbook.asks: missing")
        );
    }

    #[test]
    fn rejects_bad_last_update_id() {
        let e = err(TY, &with(EXAMPLE, "last_update_id", Some("-5")));
        assert_eq!(e.kind, RejectKind::OutOfRange);
        assert_eq!(
            e.reason,
            "orderbook.last_update_id: out of range for UInt64: -5"
        );
        let e = err(TY, &with(EXAMPLE, "last_update_id", Some("5.5")));
        assert_eq!(e.kind, RejectKind::InvalidNumber);
        assert_eq!(
            e.reason,
            "orderbook.last_update_id: not a non-negative integer: 5.5"
        );
        let e = err(
            TY,
            &with(EXAMPLE, "last_update_id", Some(r#""18446744073709551616""#)),
        );
        assert_eq!(e.kind, RejectKind::OutOfRange);
    }
}
