//! Parsing and printing of scalar values shared by YAML and environment variables: durations,
//! sizes, ports, booleans.
//!
//! The same parser serves both sources, so `2s` means the same in a file and in `env`. Errors are
//! the reason only (lower-case, with the offending value quoted); the caller adds the key.

use std::fmt;
use std::num::IntErrorKind;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// Parses `500ms`, `2s`, `5m`, `48h`, `1d` or a bare number of seconds (`3.0`, `60`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let unit = unit.trim();
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration \"{text}\": expected e.g. 500ms, 2s, 5m, 48h"))?;
    let seconds = match unit {
        "" | "s" | "sec" | "secs" => value,
        "ms" => value / 1000.0,
        "m" | "min" | "mins" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86_400.0,
        _ => {
            return Err(format!(
                "invalid duration \"{text}\": unknown unit \"{unit}\" (use ms, s, m, h or d)"
            ));
        }
    };
    seconds_to_duration(seconds).map_err(|reason| format!("invalid duration \"{text}\": {reason}"))
}

/// Converts a number of seconds into a `Duration`, rejecting negative or non-finite values.
pub(crate) fn seconds_to_duration(seconds: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(seconds).map_err(|_| "must be a finite, non-negative number".into())
}

/// Prints a duration the way [`parse_duration`] reads it back (`48h`, `2s`, `500ms`).
pub(crate) fn format_duration(d: Duration) -> String {
    let millis = d.as_millis();
    if !millis.is_multiple_of(1000) || millis == 0 {
        if !d.subsec_nanos().is_multiple_of(1_000_000) {
            return format!("{}s", d.as_secs_f64());
        }
        return format!("{millis}ms");
    }
    let secs = d.as_secs();
    if secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// Parses `64MiB`, `2GiB`, `512KiB`, `10MB` (decimal) or a bare number of bytes.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let bad = || format!("invalid size \"{text}\": expected e.g. 64MiB, 2GiB or a number of bytes");
    let value: u64 = number.parse().map_err(|_| bad())?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1_000,
        "kib" => 1 << 10,
        "mb" | "m" => 1_000_000,
        "mib" => 1 << 20,
        "gb" | "g" => 1_000_000_000,
        "gib" => 1 << 30,
        "tb" | "t" => 1_000_000_000_000,
        "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    value
        .checked_mul(multiplier)
        .ok_or_else(|| format!("invalid size \"{text}\": too large"))
}

/// Prints a size the way [`parse_size`] reads it back (`64MiB`, `2GiB`, `1234`).
pub(crate) fn format_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    for (unit, name) in UNITS {
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{}{name}", bytes / unit);
        }
    }
    bytes.to_string()
}

/// Parses a TCP port, 1–65535.
pub(crate) fn parse_port(text: &str) -> Result<u16, String> {
    match text.trim().parse::<u16>() {
        Ok(0) => Err(format!("invalid port \"{text}\": must be 1-65535")),
        Ok(port) => Ok(port),
        Err(e) => {
            let why = match e.kind() {
                IntErrorKind::Empty => "empty",
                IntErrorKind::PosOverflow => "must be 1-65535",
                _ => "invalid digit",
            };
            Err(format!("invalid port \"{text}\": {why}"))
        }
    }
}

/// Checks a port given as a number (YAML).
pub(crate) fn check_port(n: u64) -> Result<u16, String> {
    match u16::try_from(n) {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("invalid port \"{n}\": must be 1-65535")),
    }
}

/// Parses a boolean: `1/0`, `true/false`, `yes/no`, `on/off` (any case).
pub(crate) fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!(
            "invalid boolean \"{text}\": expected 1/0, true/false or yes/no"
        )),
    }
}

/// Parses a whole number (`5000000`, `5_000_000`).
pub(crate) fn parse_count(text: &str) -> Result<u64, String> {
    text.trim()
        .replace('_', "")
        .parse()
        .map_err(|_| format!("invalid number \"{text}\": expected a whole number"))
}

/// A YAML duration: a string with a unit or a bare number of seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct DurationValue(pub(crate) Duration);

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DurationValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 500ms, 2s, 5m, 48h or a number of seconds")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse_duration(v).map(DurationValue).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(DurationValue(Duration::from_secs(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(|s| DurationValue(Duration::from_secs(s)))
                    .map_err(|_| {
                        E::custom(format!("invalid duration \"{v}\": must not be negative"))
                    })
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                seconds_to_duration(v)
                    .map(DurationValue)
                    .map_err(|r| E::custom(format!("invalid duration \"{v}\": {r}")))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// A YAML size: a string with a unit or a bare number of bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SizeValue(pub(crate) u64);

impl<'de> Deserialize<'de> for SizeValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = SizeValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as 64MiB, 2GiB or a number of bytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse_size(v).map(SizeValue).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(SizeValue(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(SizeValue)
                    .map_err(|_| E::custom(format!("invalid size \"{v}\": must not be negative")))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// A YAML port: a number or a numeric string, 1–65535.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct PortValue(pub(crate) u16);

impl<'de> Deserialize<'de> for PortValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = PortValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number 1-65535")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse_port(v).map(PortValue).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                check_port(v).map(PortValue).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Err(E::custom(format!("invalid port \"{v}\": must be 1-65535")))
            }
        }
        deserializer.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print_back() {
        for (text, d) in [
            ("500ms", Duration::from_millis(500)),
            ("2s", Duration::from_secs(2)),
            ("5m", Duration::from_secs(300)),
            ("48h", Duration::from_secs(172_800)),
            ("3.0", Duration::from_secs(3)),
            ("2.5", Duration::from_millis(2500)),
            ("1d", Duration::from_secs(86_400)),
        ] {
            assert_eq!(parse_duration(text), Ok(d), "{text}");
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{text}");
        }
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_millis(2500)), "2500ms");
        assert!(
            parse_duration("5x")
                .unwrap_err()
                .contains("unknown unit \"x\"")
        );
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn sizes_parse_and_print_back() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("2 GiB"), Ok(2 << 30));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("1234"), Ok(1234));
        assert_eq!(format_size(2 << 30), "2GiB");
        assert_eq!(format_size(1234), "1234");
        assert!(parse_size("12XB").is_err());
        assert!(
            parse_size("99999999999TiB")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn ports_and_bools() {
        assert_eq!(parse_port("8123"), Ok(8123));
        assert_eq!(
            parse_port("80x").unwrap_err(),
            "invalid port \"80x\": invalid digit"
        );
        assert_eq!(
            parse_port("0").unwrap_err(),
            "invalid port \"0\": must be 1-65535"
        );
        assert_eq!(
            parse_port("70000").unwrap_err(),
            "invalid port \"70000\": must be 1-65535"
        );
        for t in ["1", "true", "YES", "on"] {
            assert_eq!(parse_bool(t), Ok(true));
        }
        for f in ["0", "false", "no", "Off"] {
            assert_eq!(parse_bool(f), Ok(false));
        }
        assert!(parse_bool("maybe").is_err());
        assert_eq!(parse_count("5_000_000"), Ok(5_000_000));
    }
}
