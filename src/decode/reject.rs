//! Why a message could not become a row: a stable label and a reason naming the field.

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
