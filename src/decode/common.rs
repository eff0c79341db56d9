//! Fields every message carries, and typed access to borrowed JSON values with rejections.
//!
//! Wire structs keep each field as an `Option<&RawValue>`: the exact JSON text, borrowed from the
//! payload (absent and `null` are both `None`). The helpers here turn one such value into a typed
//! column value or a [`Rejection`] naming the field, so every type applies the same rules.

use std::borrow::Cow;
use std::fmt;

use serde_json::value::RawValue;

use super::decimal::{self, DecimalError};
use super::timestamp::{self, RangeError, TimestampError};
use crate::decode::{RejectKind, Rejection};
use crate::model::{Common, DataType};

/// `data_source` written when the payload has none (what the Python service wrote).
pub const DEFAULT_DATA_SOURCE: &str = "simple_hot_storage";

/// A field name in rejection reasons: `ts_ms`, or `trade.price` for type-specific fields.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// The data type prefix (`None` for the fields every type shares).
    pub ty: Option<DataType>,
    /// The payload key.
    pub name: &'static str,
}

impl Field {
    /// A field shared by every type (no prefix).
    pub const fn shared(name: &'static str) -> Field {
        Field { ty: None, name }
    }

    /// A field of one data type, shown as `<type>.<name>`.
    pub const fn of(ty: DataType, name: &'static str) -> Field {
        Field { ty: Some(ty), name }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ty {
            Some(t) => write!(f, "{}.{}", t.as_str(), self.name),
            None => f.write_str(self.name),
        }
    }
}

/// One JSON value, classified, with string contents unescaped (borrowed when possible).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Json<'a> {
    /// `null`.
    Null,
    /// `true`/`false`.
    Bool(bool),
    /// A number, as its exact text.
    Number(&'a str),
    /// A string's contents.
    String(Cow<'a, str>),
    /// An array.
    Array,
    /// An object.
    Object,
}

impl Json<'_> {
    /// What kind of value this is, for reasons (`a string`, `a number`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number(_) => "a number",
            Json::String(_) => "a string",
            Json::Array => "an array",
            Json::Object => "an object",
        }
    }
}

/// Classifies a raw JSON value (which serde_json has already validated).
pub fn classify(raw: &RawValue) -> Json<'_> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'"') => {
            let inner = text
                .strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .unwrap_or("");
            if inner.contains('\\') {
                // Escapes are rare; unescaping allocates only then.
                match serde_json::from_str::<String>(text) {
                    Ok(s) => Json::String(Cow::Owned(s)),
                    Err(_) => Json::String(Cow::Borrowed(inner)),
                }
            } else {
                Json::String(Cow::Borrowed(inner))
            }
        }
        Some(b't') => Json::Bool(true),
        Some(b'f') => Json::Bool(false),
        Some(b'n') => Json::Null,
        Some(b'[') => Json::Array,
        Some(b'{') => Json::Object,
        _ => Json::Number(text),
    }
}

/// Shows a raw JSON value in a reason: its exact text, cut at 64 bytes.
#[derive(Debug, Clone, Copy)]
pub struct Shown<'a>(pub &'a RawValue);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 64;
        let text = self.0.get();
        if text.len() <= MAX {
            return f.write_str(text);
        }
        let mut end = MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        write!(f, "{}…", text.get(..end).unwrap_or(""))
    }
}

/// The value of a required field, or `<field>: missing`.
pub fn required<'a>(
    field: &dyn fmt::Display,
    raw: Option<&'a RawValue>,
) -> Result<&'a RawValue, Rejection> {
    raw.ok_or_else(|| Rejection::new(RejectKind::MissingField, format!("{field}: missing")))
}

/// A JSON string's contents, or `<field>: expected a string, got …`.
pub fn string<'a>(field: &dyn fmt::Display, raw: &'a RawValue) -> Result<Cow<'a, str>, Rejection> {
    match classify(raw) {
        Json::String(s) => Ok(s),
        _ => Err(Rejection::new(
            RejectKind::InvalidField,
            format!("{field}: expected a string, got {}", Shown(raw)),
        )),
    }
}

/// A required, non-empty string.
pub fn non_empty_string<'a>(
    field: &dyn fmt::Display,
    raw: Option<&'a RawValue>,
) -> Result<Cow<'a, str>, Rejection> {
    let s = string(field, required(field, raw)?)?;
    if s.is_empty() {
        return Err(Rejection::new(
            RejectKind::MissingField,
            format!("{field}: must not be empty"),
        ));
    }
    Ok(s)
}

/// The text of a number given as a JSON number or a string, or an `invalid_number` rejection.
pub fn number_text<'a>(
    field: &dyn fmt::Display,
    raw: &'a RawValue,
) -> Result<Cow<'a, str>, Rejection> {
    match classify(raw) {
        Json::Number(t) => Ok(Cow::Borrowed(t)),
        Json::String(s) => Ok(s),
        _ => Err(invalid_number(field, raw)),
    }
}

fn invalid_number(field: &dyn fmt::Display, raw: &RawValue) -> Rejection {
    Rejection::new(
        RejectKind::InvalidNumber,
        format!("{field}: not a decimal number: {}", Shown(raw)),
    )
}

fn decimal_error(
    field: &dyn fmt::Display,
    raw: &RawValue,
    e: DecimalError,
    column: &str,
) -> Rejection {
    match e {
        DecimalError::Syntax => invalid_number(field, raw),
        DecimalError::OutOfRange => Rejection::new(
            RejectKind::OutOfRange,
            format!("{field}: out of range for {column}: {}", Shown(raw)),
        ),
    }
}

/// A `Decimal64(8)` value (× 10^8) from a number or numeric string.
pub fn decimal64(field: &dyn fmt::Display, raw: &RawValue) -> Result<i64, Rejection> {
    decimal64_with_text(field, raw).map(|(v, _)| v)
}

/// A `Decimal64(8)` value and the exact number text it was read from.
pub fn decimal64_with_text<'a>(
    field: &dyn fmt::Display,
    raw: &'a RawValue,
) -> Result<(i64, Cow<'a, str>), Rejection> {
    let text = number_text(field, raw)?;
    let value =
        decimal::parse_d64(&text).map_err(|e| decimal_error(field, raw, e, "Decimal64(8)"))?;
    Ok((value, text))
}

/// A `Decimal128(8)` value (× 10^8) from a number or numeric string.
pub fn decimal128(field: &dyn fmt::Display, raw: &RawValue) -> Result<i128, Rejection> {
    let text = number_text(field, raw)?;
    decimal::parse_d128(&text).map_err(|e| decimal_error(field, raw, e, "Decimal128(8)"))
}

/// A required `Decimal64(8)` value.
pub fn required_decimal64(
    field: &dyn fmt::Display,
    raw: Option<&RawValue>,
) -> Result<i64, Rejection> {
    decimal64(field, required(field, raw)?)
}

/// An optional `Decimal64(8)` value: absent or `null` → 0.
pub fn optional_decimal64(
    field: &dyn fmt::Display,
    raw: Option<&RawValue>,
) -> Result<i64, Rejection> {
    raw.map_or(Ok(0), |r| decimal64(field, r))
}

/// A required `Decimal64(8)` value that must be > 0 (prices and quantities of events).
pub fn positive_decimal64(
    field: &dyn fmt::Display,
    raw: Option<&RawValue>,
) -> Result<i64, Rejection> {
    let raw = required(field, raw)?;
    let v = decimal64(field, raw)?;
    if v <= 0 {
        return Err(Rejection::new(
            RejectKind::NonPositive,
            format!("{field}: must be > 0, got {}", Shown(raw)),
        ));
    }
    Ok(v)
}

/// `side`: `buy` or `sell` in any case, returned lower-case.
pub fn side(field: &dyn fmt::Display, raw: Option<&RawValue>) -> Result<String, Rejection> {
    let raw = required(field, raw)?;
    if let Json::String(s) = classify(raw) {
        if s.eq_ignore_ascii_case("buy") {
            return Ok("buy".to_owned());
        }
        if s.eq_ignore_ascii_case("sell") {
            return Ok("sell".to_owned());
        }
    }
    Err(Rejection::new(
        RejectKind::InvalidSide,
        format!("{field}: must be buy or sell, got {}", Shown(raw)),
    ))
}

/// An optional boolean: absent or `null` → false; anything but `true`/`false` is rejected.
pub fn optional_bool(field: &dyn fmt::Display, raw: Option<&RawValue>) -> Result<bool, Rejection> {
    let Some(raw) = raw else { return Ok(false) };
    match classify(raw) {
        Json::Bool(b) => Ok(b),
        _ => Err(Rejection::new(
            RejectKind::InvalidField,
            format!("{field}: expected true or false, got {}", Shown(raw)),
        )),
    }
}

/// An optional non-negative integer (a JSON integer or a string of digits): absent → 0.
pub fn optional_u64(field: &dyn fmt::Display, raw: Option<&RawValue>) -> Result<u64, Rejection> {
    let Some(raw) = raw else { return Ok(0) };
    let text = match classify(raw) {
        Json::Number(t) => Cow::Borrowed(t),
        Json::String(s) => s,
        _ => return Err(invalid_number(field, raw)),
    };
    let digits = text.strip_prefix('-');
    let (negative, digits) = match digits {
        Some(d) => (true, d),
        None => (false, text.as_ref()),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Rejection::new(
            RejectKind::InvalidNumber,
            format!("{field}: not a non-negative integer: {}", Shown(raw)),
        ));
    }
    let all_zero = digits.bytes().all(|b| b == b'0');
    match digits.parse::<u64>() {
        Ok(v) if !negative || all_zero => Ok(v),
        _ => Err(Rejection::new(
            RejectKind::OutOfRange,
            format!("{field}: out of range for UInt64: {}", Shown(raw)),
        )),
    }
}

/// A timestamp field, if present: UTC ms, checked against the plausibility window.
pub fn timestamp(
    field: &dyn fmt::Display,
    raw: Option<&RawValue>,
    now_ms: i64,
) -> Result<Option<i64>, Rejection> {
    let Some(raw) = raw else { return Ok(None) };
    let parsed = match classify(raw) {
        Json::Number(t) => timestamp::from_number(t, !t.contains(['.', 'e', 'E'])),
        Json::String(s) => timestamp::from_text(&s),
        _ => Err(TimestampError::Invalid),
    };
    let ms = parsed.map_err(|e| match e {
        TimestampError::Invalid => Rejection::new(
            RejectKind::InvalidTimestamp,
            format!("{field}: not a timestamp: {}", Shown(raw)),
        ),
        TimestampError::Overflow => Rejection::new(
            RejectKind::TimestampOutOfRange,
            format!("{field}: out of range: {}", Shown(raw)),
        ),
    })?;
    check_range(field, raw, ms, now_ms)?;
    Ok(Some(ms))
}

fn check_range(
    field: &dyn fmt::Display,
    raw: &RawValue,
    ms: i64,
    now_ms: i64,
) -> Result<(), Rejection> {
    timestamp::check_range(ms, now_ms).map_err(|e| {
        let iso = timestamp::Iso(ms);
        let why = match e {
            RangeError::TooOld => "is before 2009-01-01T00:00:00Z".to_owned(),
            RangeError::TooNew => {
                format!("is more than 1 day after now ({})", timestamp::Iso(now_ms))
            }
        };
        Rejection::new(
            RejectKind::TimestampOutOfRange,
            format!("{field}: out of range: {} ({iso}) {why}", Shown(raw)),
        )
    })
}

/// A type-specific time column: `<x>_ts_ms`, else the ISO/other field, else the row timestamp.
pub fn time_column(
    ty: DataType,
    (ts_ms_name, ts_ms): (&'static str, Option<&RawValue>),
    (other_name, other): (&'static str, Option<&RawValue>),
    common: &Common,
    now_ms: i64,
) -> Result<i64, Rejection> {
    if let Some(ms) = timestamp(&Field::of(ty, ts_ms_name), ts_ms, now_ms)? {
        return Ok(ms);
    }
    if let Some(ms) = timestamp(&Field::of(ty, other_name), other, now_ms)? {
        return Ok(ms);
    }
    Ok(common.timestamp_ms)
}

/// The fields every message carries, borrowed from the payload.
#[derive(Debug, Clone, Copy, Default)]
pub struct CommonWire<'a> {
    /// `data_type`: must agree with the subject when present.
    pub data_type: Option<&'a RawValue>,
    /// `exchange`: required string, lower-cased.
    pub exchange: Option<&'a RawValue>,
    /// `market_type`: required string, lower-cased.
    pub market_type: Option<&'a RawValue>,
    /// `symbol`: required string, verbatim.
    pub symbol: Option<&'a RawValue>,
    /// `data_source`: stored when a non-empty string.
    pub data_source: Option<&'a RawValue>,
    /// `ts_ms`: the preferred timestamp.
    pub ts_ms: Option<&'a RawValue>,
    /// `timestamp`: used when `ts_ms` is absent.
    pub timestamp: Option<&'a RawValue>,
}

/// Access to the shared fields of a wire struct.
pub trait HasCommon<'a> {
    /// The shared fields.
    fn common_wire(&self) -> CommonWire<'a>;
}

/// Validates and normalizes the shared fields into the row's [`Common`] columns.
pub fn resolve_common(
    wire: CommonWire<'_>,
    data_type: DataType,
    subject: &str,
    now_ms: i64,
) -> Result<Common, Rejection> {
    if let Some(raw) = wire.data_type {
        let matches = matches!(classify(raw), Json::String(s) if s == data_type.as_str());
        if !matches {
            return Err(Rejection::new(
                RejectKind::TypeMismatch,
                format!(
                    "data_type: payload says {} but subject is {subject}",
                    Shown(raw)
                ),
            ));
        }
    }
    let exchange = non_empty_string(&Field::shared("exchange"), wire.exchange)?;
    let market_type = non_empty_string(&Field::shared("market_type"), wire.market_type)?;
    let symbol = non_empty_string(&Field::shared("symbol"), wire.symbol)?;
    let timestamp_ms = match timestamp(&Field::shared("ts_ms"), wire.ts_ms, now_ms)? {
        Some(ms) => ms,
        None => {
            timestamp(&Field::shared("timestamp"), wire.timestamp, now_ms)?.ok_or_else(|| {
                Rejection::new(
                    RejectKind::MissingField,
                    "timestamp: missing (need ts_ms or timestamp)".to_owned(),
                )
            })?
        }
    };
    let data_source = match wire.data_source.map(classify) {
        Some(Json::String(s)) if !s.is_empty() => s.into_owned(),
        _ => DEFAULT_DATA_SOURCE.to_owned(),
    };
    Ok(Common {
        timestamp_ms,
        exchange: lower(exchange),
        market_type: lower(market_type),
        symbol: symbol.into_owned(),
        data_source,
    })
}

/// Lower-cases without a second allocation when the text is already lower-case ASCII.
fn lower(s: Cow<'_, str>) -> String {
    if s.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase()) {
        s.into_owned()
    } else {
        s.to_lowercase()
    }
}

/// `period` of the long/short-ratio types when the payload has none.
pub const DEFAULT_PERIOD: &str = "5m";

/// `period`: a string stored verbatim; absent or `null` → [`DEFAULT_PERIOD`].
pub fn period(field: &dyn fmt::Display, raw: Option<&RawValue>) -> Result<String, Rejection> {
    raw.map_or(Ok(DEFAULT_PERIOD.to_owned()), |r| {
        string(field, r).map(Cow::into_owned)
    })
}

/// An optional string stored verbatim: absent or `null` → `''`.
pub fn optional_string(
    field: &dyn fmt::Display,
    raw: Option<&RawValue>,
) -> Result<String, Rejection> {
    raw.map_or(Ok(String::new()), |r| string(field, r).map(Cow::into_owned))
}
