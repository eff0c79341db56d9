//! The one exact decimal parser: JSON number text → fixed-point integer, never via `f64`.
//!
//! Every price, quantity, rate, ratio and index value goes through [`parse_scaled`]. The text is
//! read digit by digit, so `0.1`, `8.12e-05` or a 28-digit OKX ratio give exactly the integer
//! ClickHouse would store: the value × 10^scale, truncated toward zero (ClickHouse truncates extra
//! decimals of `Decimal(…, 8)` the same way). Exponents of any size are handled without loss;
//! a value too large for the column is an [`DecimalError::OutOfRange`], never a wrapped integer.

use std::fmt;

/// Largest magnitude of a `Decimal64(8)` value × 10^8: 18 digits, i.e. |value| < 10^10.
pub const D64_MAX_SCALED: u128 = 999_999_999_999_999_999;

/// Largest magnitude of a `Decimal128(8)` value × 10^8: 38 digits, i.e. |value| < 10^30.
pub const D128_MAX_SCALED: u128 = 99_999_999_999_999_999_999_999_999_999_999_999_999;

/// Exponents are clamped to this magnitude while parsing; far beyond any column's range.
const EXP_CLAMP: i64 = 1_000_000_000;

/// Why a text is not a decimal of the wanted column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecimalError {
    /// Not a decimal number (`abc`, ``, `NaN`, `Infinity`, `1e`, `--1`, …).
    Syntax,
    /// A decimal number whose scaled magnitude exceeds the column's limit.
    OutOfRange,
}

/// The parts of a syntactically valid decimal text.
struct Parts<'a> {
    negative: bool,
    int: &'a [u8],
    frac: &'a [u8],
    exp: i64,
}

fn digit_prefix(b: &[u8]) -> usize {
    b.iter().take_while(|c| c.is_ascii_digit()).count()
}

/// Splits `[+-]digits[.digits][(e|E)[+-]digits]` (at least one mantissa digit).
fn split(text: &str) -> Option<Parts<'_>> {
    let b = text.as_bytes();
    let (negative, rest) = match b.split_first() {
        Some((b'-', r)) => (true, r),
        Some((b'+', r)) => (false, r),
        _ => (false, b),
    };
    let (int, rest) = rest.split_at_checked(digit_prefix(rest))?;
    let (frac, rest) = match rest.strip_prefix(b".") {
        Some(r) => r.split_at_checked(digit_prefix(r))?,
        None => (&[][..], rest),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let exp = match rest.split_first() {
        None => 0,
        Some((b'e' | b'E', r)) => {
            let (exp_negative, digits) = match r.split_first() {
                Some((b'-', d)) => (true, d),
                Some((b'+', d)) => (false, d),
                _ => (false, r),
            };
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let magnitude = digits.iter().fold(0i64, |acc, d| {
                acc.saturating_mul(10)
                    .saturating_add(i64::from(d - b'0'))
                    .min(EXP_CLAMP)
            });
            if exp_negative { -magnitude } else { magnitude }
        }
        Some(_) => return None,
    };
    Some(Parts {
        negative,
        int,
        frac,
        exp,
    })
}

/// Parses `text` exactly into value × 10^`scale`, truncated toward zero.
///
/// Accepts an optional sign, digits with an optional fraction (`1`, `1.5`, `.5`, `1.`) and an
/// optional exponent (`8.12e-05`, `1E+3`). Rejects everything else, including surrounding
/// whitespace, `NaN` and `Infinity`. `max_scaled` is the largest allowed magnitude of the result
/// (e.g. [`D64_MAX_SCALED`]); it must be at most [`D128_MAX_SCALED`] for the full range to be
/// checked exactly.
pub fn parse_scaled(text: &str, scale: u32, max_scaled: u128) -> Result<i128, DecimalError> {
    let parts = split(text).ok_or(DecimalError::Syntax)?;
    let int_len = i64::try_from(parts.int.len()).unwrap_or(i64::MAX);
    let frac_len = i64::try_from(parts.frac.len()).unwrap_or(i64::MAX);
    // The result is floor(D × 10^k) where D is the integer made of all mantissa digits and
    // k = exp − frac_len + scale. For k < 0 that means keeping the first int_len + exp + scale
    // digits of D; for k ≥ 0 all of D, then × 10^k.
    let k = parts
        .exp
        .saturating_sub(frac_len)
        .saturating_add(i64::from(scale));
    let keep = int_len
        .saturating_add(parts.exp)
        .saturating_add(i64::from(scale));
    let keep = usize::try_from(keep.max(0)).unwrap_or(usize::MAX);
    let mut acc: u128 = 0;
    for &d in parts.int.iter().chain(parts.frac).take(keep) {
        acc = acc
            .checked_mul(10)
            .and_then(|a| a.checked_add(u128::from(d - b'0')))
            .ok_or(DecimalError::OutOfRange)?;
        if acc > max_scaled {
            return Err(DecimalError::OutOfRange);
        }
    }
    if k > 0 && acc != 0 {
        let k = u32::try_from(k).map_err(|_| DecimalError::OutOfRange)?;
        acc = 10u128
            .checked_pow(k)
            .and_then(|p| acc.checked_mul(p))
            .ok_or(DecimalError::OutOfRange)?;
    }
    if acc > max_scaled {
        return Err(DecimalError::OutOfRange);
    }
    let magnitude = i128::try_from(acc).map_err(|_| DecimalError::OutOfRange)?;
    Ok(if parts.negative {
        -magnitude
    } else {
        magnitude
    })
}

/// Parses a `Decimal64(8)` value: × 10^8, |value| < 10^10.
pub fn parse_d64(text: &str) -> Result<i64, DecimalError> {
    let v = parse_scaled(text, 8, D64_MAX_SCALED)?;
    i64::try_from(v).map_err(|_| DecimalError::OutOfRange)
}

/// Parses a `Decimal128(8)` value: × 10^8, |value| < 10^30.
pub fn parse_d128(text: &str) -> Result<i128, DecimalError> {
    parse_scaled(text, 8, D128_MAX_SCALED)
}

/// Displays a scaled integer as a plain decimal (`52830188` at scale 8 → `0.52830188`).
///
/// Trailing fractional zeros are dropped; the output parses back to the same integer.
#[derive(Debug, Clone, Copy)]
pub struct Scaled {
    /// The integer, value × 10^scale.
    pub value: i128,
    /// Number of fractional digits.
    pub scale: u32,
}

impl fmt::Display for Scaled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.value.unsigned_abs().to_string();
        let scale = usize::try_from(self.scale).unwrap_or(usize::MAX);
        let padded = if digits.len() <= scale {
            format!("{}{}", "0".repeat(scale - digits.len() + 1), digits)
        } else {
            digits
        };
        let (int, frac) = padded.split_at(padded.len() - scale);
        let frac = frac.trim_end_matches('0');
        if self.value < 0 {
            f.write_str("-")?;
        }
        f.write_str(int)?;
        if !frac.is_empty() {
            write!(f, ".{frac}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d64(s: &str) -> Result<i64, DecimalError> {
        parse_d64(s)
    }

    #[test]
    fn plain_values() {
        assert_eq!(d64("0"), Ok(0));
        assert_eq!(d64("-0"), Ok(0));
        assert_eq!(d64("1"), Ok(100_000_000));
        assert_eq!(d64("66990.5"), Ok(6_699_050_000_000));
        assert_eq!(d64("67000.10000000"), Ok(6_700_010_000_000));
        assert_eq!(d64("0.012"), Ok(1_200_000));
        assert_eq!(d64("+1.5"), Ok(150_000_000));
        assert_eq!(d64(".5"), Ok(50_000_000));
        assert_eq!(d64("1."), Ok(100_000_000));
        assert_eq!(d64("00012.50"), Ok(1_250_000_000));
    }

    #[test]
    fn truncates_toward_zero_beyond_eight_decimals() {
        assert_eq!(d64("0.5283018867924528301886792453"), Ok(52_830_188));
        assert_eq!(d64("0.4716981132075471698113207547"), Ok(47_169_811));
        assert_eq!(d64("-0.000000019"), Ok(-1));
        assert_eq!(d64("0.000000009"), Ok(0));
        assert_eq!(d64("-0.000000009"), Ok(0));
        assert_eq!(d64("1.999999999999"), Ok(199_999_999));
    }

    #[test]
    fn exponents_exact() {
        assert_eq!(d64("8.12e-05"), Ok(8_120));
        assert_eq!(d64("1e-08"), Ok(1));
        assert_eq!(d64("1E-8"), Ok(1));
        assert_eq!(d64("1e-9"), Ok(0));
        assert_eq!(d64("1E+3"), Ok(100_000_000_000));
        assert_eq!(d64("1e3"), Ok(100_000_000_000));
        assert_eq!(d64("0.00123e3"), Ok(123_000_000));
        assert_eq!(d64("12345e-2"), Ok(12_345_000_000));
        assert_eq!(d64("0e999999999999999999999"), Ok(0));
        assert_eq!(d64("5e-999999999999999999999"), Ok(0));
        assert_eq!(d64("-2.5E-1"), Ok(-25_000_000));
    }

    #[test]
    fn range_limits() {
        assert_eq!(d64("9999999999.99999999"), Ok(999_999_999_999_999_999));
        assert_eq!(d64("-9999999999.99999999"), Ok(-999_999_999_999_999_999));
        // Extra digits are truncated first, so this still fits.
        assert_eq!(d64("9999999999.999999999"), Ok(999_999_999_999_999_999));
        assert_eq!(d64("10000000000"), Err(DecimalError::OutOfRange));
        assert_eq!(d64("1e10"), Err(DecimalError::OutOfRange));
        assert_eq!(d64("-1e10"), Err(DecimalError::OutOfRange));
        assert_eq!(d64("1e999999999999999999"), Err(DecimalError::OutOfRange));
        assert_eq!(d64(&"9".repeat(400)), Err(DecimalError::OutOfRange));
        assert_eq!(parse_d128("1e29"), Ok(10i128.pow(37)));
        assert_eq!(parse_d128("1e30"), Err(DecimalError::OutOfRange));
        assert_eq!(parse_d128("1e40"), Err(DecimalError::OutOfRange));
        assert_eq!(parse_d128("5443568951.9535"), Ok(544_356_895_195_350_000));
    }

    #[test]
    fn syntax_errors() {
        for s in [
            "",
            "abc",
            "NaN",
            "nan",
            "Infinity",
            "-Infinity",
            "inf",
            "true",
            ".",
            "-",
            "+",
            "1e",
            "1e+",
            "e5",
            "--1",
            "1.2.3",
            " 1",
            "1 ",
            "1_000",
            "0x10",
            "1,5",
            "١",
            "1e5.5",
        ] {
            assert_eq!(d64(s), Err(DecimalError::Syntax), "{s:?}");
        }
        // A syntax error wins over an out-of-range mantissa.
        assert_eq!(d64("1e40abc"), Err(DecimalError::Syntax));
    }

    #[test]
    fn display_plain() {
        let s = |value, scale| Scaled { value, scale }.to_string();
        assert_eq!(s(52_830_188, 8), "0.52830188");
        assert_eq!(s(-1, 8), "-0.00000001");
        assert_eq!(s(100_000_000_000, 8), "1000");
        assert_eq!(s(0, 8), "0");
        assert_eq!(s(150, 2), "1.5");
        assert_eq!(s(7, 0), "7");
    }

    /// Moves the decimal point of a plain digit string by `shift` places (as an exponent would).
    fn shift_plain(mantissa: u64, frac_digits: u32, exp: i32) -> String {
        // value = mantissa × 10^(exp − frac_digits), written without an exponent.
        let digits = mantissa.to_string();
        let point = i64::try_from(digits.len()).unwrap() + i64::from(exp) - i64::from(frac_digits);
        if point <= 0 {
            format!(
                "0.{}{}",
                "0".repeat(usize::try_from(-point).unwrap()),
                digits
            )
        } else if point >= i64::try_from(digits.len()).unwrap() {
            format!(
                "{}{}",
                digits,
                "0".repeat(usize::try_from(point).unwrap() - digits.len())
            )
        } else {
            let (a, b) = digits.split_at(usize::try_from(point).unwrap());
            format!("{a}.{b}")
        }
    }

    proptest! {
        #[test]
        fn prop_format_then_parse_round_trips(v in -999_999_999_999_999_999i64..=999_999_999_999_999_999) {
            let text = Scaled { value: i128::from(v), scale: 8 }.to_string();
            prop_assert_eq!(parse_d64(&text), Ok(v));
            // The fixed 8-decimal form, zero-padded or with extra digits, truncates to the same value.
            let a = v.unsigned_abs();
            let fixed = format!("{}{}.{:08}", if v < 0 { "-" } else { "" }, a / 100_000_000, a % 100_000_000);
            prop_assert_eq!(parse_d64(&fixed), Ok(v));
            prop_assert_eq!(parse_d64(&format!("{fixed}000")), Ok(v));
            prop_assert_eq!(parse_d64(&format!("{fixed}987654321")), Ok(v));
        }

        #[test]
        fn prop_d128_round_trips(v in any::<i128>()) {
            let v = v % 100_000_000_000_000_000_000_000_000_000_000_000_000i128;
            let text = Scaled { value: v, scale: 8 }.to_string();
            prop_assert_eq!(parse_d128(&text), Ok(v));
        }

        #[test]
        fn prop_exponent_forms_agree_with_plain(m in 0u64..1_000_000_000_000, frac in 0u32..12, exp in -25i32..12, neg: bool, upper: bool) {
            let sign = if neg { "-" } else { "" };
            let digits = m.to_string();
            let mantissa = if frac == 0 || usize::try_from(frac).unwrap() >= digits.len() {
                digits.clone()
            } else {
                let (a, b) = digits.split_at(digits.len() - usize::try_from(frac).unwrap());
                format!("{a}.{b}")
            };
            let frac_used = if frac == 0 || usize::try_from(frac).unwrap() >= digits.len() { 0 } else { frac };
            let e = if upper { 'E' } else { 'e' };
            let exp_form = format!("{sign}{mantissa}{e}{exp:+}");
            let plain = format!("{sign}{}", shift_plain(m, frac_used, exp));
            prop_assert_eq!(parse_d64(&exp_form), parse_d64(&plain), "{} vs {}", exp_form, plain);
            // Oracle: exact i128 arithmetic.
            let k = i64::from(exp) - i64::from(frac_used) + 8;
            let expected = if k >= 0 {
                i128::from(m).checked_mul(10i128.pow(u32::try_from(k).unwrap()))
            } else {
                Some(i128::from(m) / 10i128.pow(u32::try_from(-k).unwrap()))
            };
            let expected = expected.filter(|x| x.unsigned_abs() <= D64_MAX_SCALED);
            let expected = expected.map(|x| if neg { -x } else { x });
            match expected {
                Some(x) => prop_assert_eq!(parse_d64(&exp_form), Ok(i64::try_from(x).unwrap())),
                None => prop_assert_eq!(parse_d64(&exp_form), Err(DecimalError::OutOfRange)),
            }
        }

        #[test]
        fn prop_never_panics(s in "\\PC{0,40}") {
            let _ = parse_d64(&s);
            let _ = parse_d128(&s);
        }

        #[test]
        fn prop_matches_f64_for_short_values(v in -99_999_999i64..99_999_999, scale_down in 0u32..8) {
            // For short values f64 is exact enough; the parser must agree with it after truncation.
            let text = Scaled { value: i128::from(v), scale: scale_down }.to_string();
            let via_f64 = (text.parse::<f64>().unwrap() * 1e8).round() as i64;
            prop_assert_eq!(parse_d64(&text), Ok(via_f64));
        }
    }
}
