//! The one timestamp parser: epoch numbers and ISO-8601 text → UTC milliseconds, exactly.
//!
//! Rules (the MarketPrism collector's `_to_ms`, with its bugs fixed): a JSON integer is milliseconds; a
//! JSON float or a numeric string is milliseconds when ≥ 1e11, else seconds (× 1000, fractional
//! seconds keep their milliseconds). Numbers are read with the exact decimal parser, never via
//! `f64`. Anything else must be ISO-8601 / RFC 3339: `Z` or any `±hh:mm` offset converted to UTC
//! (the Python service failed on negative offsets), no offset = UTC, fractions truncated to the
//! millisecond. Nothing here reads the clock: the plausibility window takes `now_ms` as input.

use std::fmt;

use super::decimal::{self, DecimalError};

/// 2009-01-01T00:00:00Z in UTC ms: no market data is older.
pub const MIN_MS: i64 = 1_230_768_000_000;

/// How far past `now` a timestamp may lie (1 day), for clock skew between hosts.
pub const MAX_AHEAD_MS: i64 = 86_400_000;

/// Numbers at or above this many milliseconds ×1000 (i.e. value ≥ 1e11) are milliseconds.
const MS_THRESHOLD_THOUSANDTHS: i128 = 100_000_000_000_000;

/// Why a value is not a usable timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampError {
    /// Not an epoch number and not an ISO-8601 date-time.
    Invalid,
    /// A number or date too far from the epoch to be held in i64 milliseconds.
    Overflow,
}

/// Milliseconds from a JSON number's text (`is_integer`: no `.`/exponent in the text).
pub fn from_number(text: &str, is_integer: bool) -> Result<i64, TimestampError> {
    if is_integer {
        let v = decimal::parse_scaled(text, 0, decimal::D128_MAX_SCALED).map_err(map_decimal)?;
        return i64::try_from(v).map_err(|_| TimestampError::Overflow);
    }
    let thousandths =
        decimal::parse_scaled(text, 3, decimal::D128_MAX_SCALED).map_err(map_decimal)?;
    let ms = if thousandths >= MS_THRESHOLD_THOUSANDTHS {
        thousandths / 1000
    } else {
        thousandths
    };
    i64::try_from(ms).map_err(|_| TimestampError::Overflow)
}

fn map_decimal(e: DecimalError) -> TimestampError {
    match e {
        DecimalError::Syntax => TimestampError::Invalid,
        DecimalError::OutOfRange => TimestampError::Overflow,
    }
}

/// Milliseconds from a JSON string's content: a number (seconds/ms heuristic) or ISO-8601.
pub fn from_text(text: &str) -> Result<i64, TimestampError> {
    match from_number(text, false) {
        Err(TimestampError::Invalid) => parse_iso(text),
        other => other,
    }
}

/// A cursor over ASCII bytes for the ISO parser.
struct Cursor<'a> {
    b: &'a [u8],
}

impl Cursor<'_> {
    fn digits(&mut self, n: usize) -> Option<i64> {
        let (head, rest) = self.b.split_at_checked(n)?;
        if !head.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.b = rest;
        Some(head.iter().fold(0, |acc, d| acc * 10 + i64::from(d - b'0')))
    }

    fn eat(&mut self, c: u8) -> bool {
        match self.b.split_first() {
            Some((&x, rest)) if x == c => {
                self.b = rest;
                true
            }
            _ => false,
        }
    }

    fn eat_any(&mut self, set: &[u8]) -> Option<u8> {
        let (&x, rest) = self.b.split_first()?;
        if set.contains(&x) {
            self.b = rest;
            Some(x)
        } else {
            None
        }
    }
}

/// Days from 0001-01-01 (chrono's common-era day 1) to 1970-01-01.
const UNIX_EPOCH_DAYS_FROM_CE: i64 = 719_163;

use chrono::Datelike;

/// Parses `YYYY-MM-DD[(T|t| )hh:mm[:ss[(.|,)fraction]][Z|z|±hh[:mm]|±hhmm]]` to UTC ms.
///
/// No offset means UTC. The fraction may have any number of digits and is truncated to the
/// millisecond. Leap seconds (`:60`) and out-of-range fields are rejected.
pub fn parse_iso(text: &str) -> Result<i64, TimestampError> {
    parse_iso_inner(text).ok_or(TimestampError::Invalid)
}

fn parse_iso_inner(text: &str) -> Option<i64> {
    let mut c = Cursor { b: text.as_bytes() };
    let year = c.digits(4)?;
    c.eat(b'-').then_some(())?;
    let month = c.digits(2)?;
    c.eat(b'-').then_some(())?;
    let day = c.digits(2)?;
    // chrono validates the calendar (month range, day of month, leap years).
    let date = chrono::NaiveDate::from_ymd_opt(
        i32::try_from(year).ok()?,
        u32::try_from(month).ok()?,
        u32::try_from(day).ok()?,
    )?;
    let days = i64::from(date.num_days_from_ce()) - UNIX_EPOCH_DAYS_FROM_CE;
    if c.b.is_empty() {
        return Some(days * 86_400_000);
    }
    c.eat_any(b"Tt ")?;
    let hour = c.digits(2)?;
    c.eat(b':').then_some(())?;
    let minute = c.digits(2)?;
    let mut second = 0;
    let mut millis = 0;
    if c.eat(b':') {
        second = c.digits(2)?;
        if c.eat_any(b".,").is_some() {
            let n = c.b.iter().take_while(|d| d.is_ascii_digit()).count();
            let (frac, rest) = c.b.split_at_checked(n)?;
            if frac.is_empty() {
                return None;
            }
            millis = frac
                .iter()
                .chain(b"000")
                .take(3)
                .fold(0, |acc, d| acc * 10 + i64::from(d - b'0'));
            c.b = rest;
        }
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let offset_minutes = match c.eat_any(b"Zz+-") {
        None => 0,
        Some(b'Z' | b'z') => 0,
        Some(sign) => {
            let oh = c.digits(2)?;
            let om = if c.b.is_empty() {
                0
            } else {
                c.eat(b':');
                c.digits(2)?
            };
            if oh > 23 || om > 59 {
                return None;
            }
            let m = oh * 60 + om;
            if sign == b'-' { -m } else { m }
        }
    };
    if !c.b.is_empty() {
        return None;
    }
    let local = ((days * 24 + hour) * 60 + minute) * 60 + second;
    Some((local - offset_minutes * 60) * 1000 + millis)
}

/// Where a timestamp lies relative to the plausibility window `[MIN_MS, now + MAX_AHEAD_MS]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeError {
    /// Before 2009-01-01T00:00:00Z.
    TooOld,
    /// More than one day after `now`.
    TooNew,
}

/// Checks that `ms` lies in `[MIN_MS, now_ms + MAX_AHEAD_MS]`.
pub fn check_range(ms: i64, now_ms: i64) -> Result<(), RangeError> {
    if ms < MIN_MS {
        Err(RangeError::TooOld)
    } else if ms > now_ms.saturating_add(MAX_AHEAD_MS) {
        Err(RangeError::TooNew)
    } else {
        Ok(())
    }
}

/// Displays UTC ms as RFC 3339 with milliseconds, e.g. `2025-10-21T10:00:00.123Z`.
#[derive(Debug, Clone, Copy)]
pub struct Iso(pub i64);

impl fmt::Display for Iso {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match chrono::DateTime::from_timestamp_millis(self.0) {
            Some(t) => write!(f, "{}", t.format("%Y-%m-%dT%H:%M:%S%.3fZ")),
            // Beyond chrono's ±262,000 years: no date to show, the number says it all.
            None => write!(f, "{} ms since the epoch", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
    use proptest::prelude::*;

    const T: i64 = 1_761_040_800_123; // 2025-10-21T10:00:00.123Z

    #[test]
    fn integers_are_milliseconds() {
        assert_eq!(from_number("1761040800123", true), Ok(T));
        // An integer is ms even when small (the Python service's rule); the range check rejects it later.
        assert_eq!(from_number("1761040800", true), Ok(1_761_040_800));
        assert_eq!(
            from_number("99999999999999999999999", true),
            Err(TimestampError::Overflow)
        );
    }

    #[test]
    fn seconds_vs_milliseconds_heuristic() {
        assert_eq!(from_number("1761040800.123", false), Ok(T));
        assert_eq!(from_number("1761040800.1239", false), Ok(T));
        assert_eq!(from_number("1.761040800123e9", false), Ok(T));
        assert_eq!(from_number("1761040800123.0", false), Ok(T));
        assert_eq!(from_number("1.761040800123e12", false), Ok(T));
        assert_eq!(from_text("1761040800"), Ok(1_761_040_800_000));
        assert_eq!(from_text("1761040800123"), Ok(T));
        assert_eq!(from_text("1761040800.5"), Ok(1_761_040_800_500));
        // Exactly 1e11 is ms; just below is seconds.
        assert_eq!(from_text("100000000000"), Ok(100_000_000_000));
        assert_eq!(from_text("99999999999.999"), Ok(99_999_999_999_999));
    }

    #[test]
    fn iso_forms() {
        assert_eq!(from_text("2025-10-21T10:00:00.123Z"), Ok(T));
        assert_eq!(from_text("2025-10-21T10:00:00.123+00:00"), Ok(T));
        assert_eq!(from_text("2025-10-21T10:00:00.123456789Z"), Ok(T));
        assert_eq!(from_text("2025-10-21T10:00:00.1239"), Ok(T));
        assert_eq!(from_text("2025-10-21 10:00:00,123"), Ok(T));
        assert_eq!(from_text("2025-10-21t10:00:00.123z"), Ok(T));
        assert_eq!(from_text("2025-10-21T12:00:00.123+02:00"), Ok(T));
        assert_eq!(from_text("2025-10-21T05:00:00.123-05:00"), Ok(T));
        assert_eq!(from_text("2025-10-21T05:00:00.123-0500"), Ok(T));
        assert_eq!(from_text("2025-10-21T05:00:00.123-05"), Ok(T));
        assert_eq!(from_text("2025-10-21T04:30:00.123-05:30"), Ok(T));
        assert_eq!(from_text("2025-10-21T10:00Z"), Ok(T - 123));
        assert_eq!(from_text("2025-10-21"), Ok(T - 36_000_123));
        assert_eq!(from_text("2024-02-29T00:00:00Z"), Ok(1_709_164_800_000));
    }

    #[test]
    fn iso_rejects() {
        for s in [
            "",
            "abc",
            "2025-10-21T",
            "2025-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2025-10-32",
            "2025-10-21T24:00:00Z",
            "2025-10-21T10:60:00Z",
            "2025-10-21T10:00:60Z",
            "2025-10-21T10:00:00.Z",
            "2025-10-21T10:00:00+24:00",
            "2025-10-21T10:00:00+02:00x",
            "2025-10-21T10:00:00 ",
            "25-10-21",
            "now",
            "NaN",
        ] {
            assert_eq!(from_text(s), Err(TimestampError::Invalid), "{s:?}");
        }
    }

    #[test]
    fn range_window() {
        let now = T;
        assert_eq!(check_range(MIN_MS, now), Ok(()));
        assert_eq!(check_range(MIN_MS - 1, now), Err(RangeError::TooOld));
        assert_eq!(check_range(now + MAX_AHEAD_MS, now), Ok(()));
        assert_eq!(
            check_range(now + MAX_AHEAD_MS + 1, now),
            Err(RangeError::TooNew)
        );
        assert_eq!(check_range(i64::MAX, i64::MAX), Ok(()));
        assert_eq!(Iso(MIN_MS).to_string(), "2009-01-01T00:00:00.000Z");
        assert_eq!(Iso(T).to_string(), "2025-10-21T10:00:00.123Z");
        assert_eq!(Iso(-1).to_string(), "1969-12-31T23:59:59.999Z");
    }

    proptest! {
        #[test]
        fn prop_rfc3339_with_any_offset_round_trips(
            ms in MIN_MS..4_102_444_800_000i64, // 2100-01-01
            offset_min in -(23 * 60 + 59)..=(23 * 60 + 59),
            sub_ms_digits in 0u32..7,
        ) {
            let utc = DateTime::<Utc>::from_timestamp_millis(ms).unwrap();
            let tz = FixedOffset::east_opt(offset_min * 60).unwrap();
            let text = utc.with_timezone(&tz).to_rfc3339_opts(SecondsFormat::Millis, true);
            prop_assert_eq!(parse_iso(&text), Ok(ms), "{}", text);
            // More fractional digits are truncated, never rounded.
            let (head, tail) = text.split_at(23);
            let extra = format!("{head}{}{tail}", "9".repeat(usize::try_from(sub_ms_digits).unwrap()));
            prop_assert_eq!(parse_iso(&extra), Ok(ms), "{}", extra);
            prop_assert_eq!(parse_iso(&Iso(ms).to_string()), Ok(ms));
        }

        #[test]
        fn prop_epoch_numbers_exact(ms in MIN_MS..4_102_444_800_000i64) {
            prop_assert_eq!(from_number(&ms.to_string(), true), Ok(ms));
            prop_assert_eq!(from_text(&ms.to_string()), Ok(ms));
            let secs = format!("{}.{:03}", ms / 1000, ms % 1000);
            prop_assert_eq!(from_text(&secs), Ok(ms));
            prop_assert_eq!(from_number(&secs, false), Ok(ms));
        }


        #[test]
        fn prop_never_panics(s in "\\PC{0,40}") {
            let _ = from_text(&s);
        }
    }
}
