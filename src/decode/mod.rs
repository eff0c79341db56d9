//! Decode stage: one message payload → one validated [`Record`], or a [`Rejection`] saying why.
//!
//! Consumes the data type (resolved from the subject by the caller with
//! `DataType::from_subject`), the subject (for reasons only), the raw JSON payload and the
//! current time in UTC ms. Emits exactly one typed row of the type's table, or a rejection with
//! a stable [`RejectKind`] label for metrics and a lower-case reason naming the field and the
//! problem. It is pure: it never does IO, never reads the clock, never panics on any input, and
//! never coerces a bad value to 0 or to "now". The per-type rules live in `crate::message`;
//! `docs/data-model.md` lists them all.

use crate::message::common;
use crate::message::{
    Message, funding_rate::FundingRateWire, liquidation::LiquidationWire,
    lsr_all_account::LsrAllAccountWire, lsr_top_position::LsrTopPositionWire,
    open_interest::OpenInterestWire, orderbook::OrderbookWire, trade::TradeWire,
    volatility_index::VolatilityIndexWire,
};
use crate::model::{DataType, Record};

/// A short, stable label for why a message was rejected (a metrics label value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RejectKind {
    /// The payload is not a JSON object (syntax error, wrong top-level value, bad UTF-8).
    InvalidJson,
    /// A required field is absent, `null` or an empty string.
    MissingField,
    /// A field has the wrong JSON type or shape (e.g. `exchange: 5`, a malformed book level).
    InvalidField,
    /// A numeric field is not a decimal number (`"abc"`, `""`, `true`, `NaN`, `Infinity`).
    InvalidNumber,
    /// A number does not fit its column (`Decimal64(8)`, `Decimal128(8)`, `UInt64`).
    OutOfRange,
    /// A timestamp field is neither an epoch number nor an ISO-8601 date-time.
    InvalidTimestamp,
    /// A timestamp lies before 2009-01-01 or more than one day after now.
    TimestampOutOfRange,
    /// `side` is not buy or sell.
    InvalidSide,
    /// A trade or liquidation price or quantity is ≤ 0.
    NonPositive,
    /// The payload's `data_type` disagrees with the subject.
    TypeMismatch,
    /// The subject's first token is not one of the eight data types.
    UnknownType,
}

impl RejectKind {
    /// Every kind, for pre-registering metric label values.
    pub const ALL: [RejectKind; 11] = [
        RejectKind::InvalidJson,
        RejectKind::MissingField,
        RejectKind::InvalidField,
        RejectKind::InvalidNumber,
        RejectKind::OutOfRange,
        RejectKind::InvalidTimestamp,
        RejectKind::TimestampOutOfRange,
        RejectKind::InvalidSide,
        RejectKind::NonPositive,
        RejectKind::TypeMismatch,
        RejectKind::UnknownType,
    ];

    /// The label, e.g. `invalid_number`.
    pub const fn as_str(self) -> &'static str {
        match self {
            RejectKind::InvalidJson => "invalid_json",
            RejectKind::MissingField => "missing_field",
            RejectKind::InvalidField => "invalid_field",
            RejectKind::InvalidNumber => "invalid_number",
            RejectKind::OutOfRange => "out_of_range",
            RejectKind::InvalidTimestamp => "invalid_timestamp",
            RejectKind::TimestampOutOfRange => "timestamp_out_of_range",
            RejectKind::InvalidSide => "invalid_side",
            RejectKind::NonPositive => "non_positive",
            RejectKind::TypeMismatch => "type_mismatch",
            RejectKind::UnknownType => "unknown_type",
        }
    }
}

impl std::fmt::Display for RejectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a message could not become a row: a metrics label and a human reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Rejection {
    /// Stable label for metrics.
    pub kind: RejectKind,
    /// Lower-case reason naming the field and the problem, e.g. `trade.price: must be > 0, got "-1"`.
    pub reason: String,
}

impl Rejection {
    /// A rejection of the given kind.
    pub fn new(kind: RejectKind, reason: String) -> Rejection {
        Rejection { kind, reason }
    }

    /// The rejection for a subject whose first token is not a known data type.
    pub fn unknown_subject(subject: &str) -> Rejection {
        let first = subject.split('.').next().unwrap_or(subject);
        Rejection::new(
            RejectKind::UnknownType,
            format!("subject: unknown data type {first:?} in {subject}"),
        )
    }
}

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
    if let Some(&first) = payload.iter().find(|b| !b.is_ascii_whitespace()) {
        if first != b'{' {
            let what = match first {
                b'[' => "an array",
                b'"' => "a string",
                b'n' => "null",
                b't' | b'f' => "a boolean",
                b'-' | b'0'..=b'9' => "a number",
                _ => "no JSON value",
            };
            return Err(Rejection::new(
                RejectKind::InvalidJson,
                format!("payload: expected a JSON object, got {what}"),
            ));
        }
    }
    serde_json::from_slice(payload).map_err(|e| {
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

    /// "Now" in tests: 2025-10-21T10:00:01.000Z, one second after the seed examples' `ts_ms`.
    pub const NOW: i64 = 1_761_040_801_000;

    /// The subject a seed-shaped message of `t` arrives on.
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
