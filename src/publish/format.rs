//! Number and time text exactly as the MarketPrism collector writes it (no allocation, no clock).
//!
//! The collector serialises with orjson from Python values, so the text of a number depends on
//! where it came from: exchange strings pass through `str(Decimal)` (kept as given), floats use
//! Python's `repr` (shortest round-trip, exponent form below 1e-4, `.0` on integral values) and
//! datetimes use `isoformat()` (microseconds omitted when zero).

use chrono::Datelike;

/// Appends an unsigned integer in decimal.
pub(crate) fn push_u64(buf: &mut String, mut v: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        // `v % 10` is below 10, so the cast cannot truncate.
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for &b in &tmp[i..] {
        buf.push(char::from(b));
    }
}

/// Appends a signed integer in decimal.
pub(crate) fn push_i64(buf: &mut String, v: i64) {
    if v < 0 {
        buf.push('-');
    }
    push_u64(buf, v.unsigned_abs());
}

/// Appends `units / 10^scale` with exactly `out_dec` decimals (`out_dec >= scale`), e.g.
/// Binance's zero-padded `"67000.10000000"` from `(670001, 1, 8)`.
pub(crate) fn push_fixed(buf: &mut String, units: i64, scale: u32, out_dec: u32) {
    if units < 0 {
        buf.push('-');
    }
    let u = units.unsigned_abs();
    let p = 10u64.pow(scale);
    push_u64(buf, u / p);
    if out_dec == 0 {
        return;
    }
    buf.push('.');
    push_frac(buf, u % p, scale);
    for _ in scale..out_dec {
        buf.push('0');
    }
}

/// Appends `units / 10^scale` as a plain decimal with trailing zeros stripped (OKX's strings,
/// `"67001.1"`, `"67001"`); with `point_zero` an integral value keeps `.0` like Python's `repr`.
pub(crate) fn push_stripped(buf: &mut String, units: i64, scale: u32, point_zero: bool) {
    if units < 0 {
        buf.push('-');
    }
    let u = units.unsigned_abs();
    let p = 10u64.pow(scale);
    push_u64(buf, u / p);
    let mut frac = u % p;
    let mut digits = scale;
    if frac == 0 {
        if point_zero {
            buf.push_str(".0");
        }
        return;
    }
    while frac.is_multiple_of(10) {
        frac /= 10;
        digits -= 1;
    }
    buf.push('.');
    push_frac(buf, frac, digits);
}

/// Appends `frac` left-padded with zeros to `digits` digits.
fn push_frac(buf: &mut String, frac: u64, digits: u32) {
    let mut p = 10u64.pow(digits);
    while p > 1 {
        p /= 10;
        // A single decimal digit, so the cast cannot truncate.
        buf.push(char::from(b'0' + ((frac / p) % 10) as u8));
    }
}

/// Appends a float the way Python's `repr(float)` (and orjson) writes it: `0.0001`, `8.12e-05`,
/// `66850.0`, `1e-08`, `1.5e+16`.
pub(crate) fn push_py_float(buf: &mut String, v: f64) {
    use std::fmt::Write as _;
    if !v.is_finite() {
        // orjson writes NaN/inf as null; the generator never produces them.
        buf.push_str("null");
        return;
    }
    if v == 0.0 {
        buf.push_str(if v.is_sign_negative() { "-0.0" } else { "0.0" });
        return;
    }
    // Rust's `{:e}` is the shortest round-trip mantissa, as Python's repr.
    let mut sci = String::with_capacity(24);
    // Writing to a String cannot fail.
    let _ = write!(sci, "{v:e}");
    let (mantissa, exp) = match sci.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (sci.as_str(), 0),
    };
    if (-4..16).contains(&exp) {
        let start = buf.len();
        let _ = write!(buf, "{v}");
        if !buf[start..].contains('.') {
            buf.push_str(".0");
        }
    } else {
        buf.push_str(mantissa);
        buf.push('e');
        buf.push(if exp < 0 { '-' } else { '+' });
        let a = exp.unsigned_abs();
        if a < 10 {
            buf.push('0');
        }
        let _ = write!(buf, "{a}");
    }
}

/// Appends Python's `datetime.isoformat()` of a UTC instant given in microseconds:
/// `2025-10-21T10:00:00.120512+00:00`, or without the fraction when it is zero.
pub(crate) fn push_iso_micros(buf: &mut String, micros: i64) {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let sod = secs.rem_euclid(86_400);
    // Out of chrono's range (±262,000 years) only for nonsense input: the epoch's date then.
    let date = chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .date_naive();
    push_i64(buf, i64::from(date.year()));
    buf.push('-');
    push_2(buf, i64::from(date.month()));
    buf.push('-');
    push_2(buf, i64::from(date.day()));
    buf.push('T');
    push_2(buf, sod / 3600);
    buf.push(':');
    push_2(buf, (sod / 60) % 60);
    buf.push(':');
    push_2(buf, sod % 60);
    if frac != 0 {
        buf.push('.');
        push_frac(buf, frac.unsigned_abs(), 6);
    }
    buf.push_str("+00:00");
}

fn push_2(buf: &mut String, v: i64) {
    if v < 10 {
        buf.push('0');
    }
    push_i64(buf, v);
}

/// Appends `num / den` (0 < num < den, value ≥ 0.1) as Python's `Decimal` division with the
/// default 28-digit context writes it: 28 significant digits, rounded half-even, or the exact
/// shorter quotient when it terminates (`0.5283018867924528301886792453`, `0.6`).
pub(crate) fn push_decimal28_ratio(buf: &mut String, num: u128, den: u128) {
    const DIGITS: u32 = 28;
    let scaled = num * 10u128.pow(DIGITS);
    let mut q = scaled / den;
    let r = scaled % den;
    // Half-even rounding on the remainder.
    if r * 2 > den || (r * 2 == den && q % 2 == 1) {
        q += 1;
    }
    let int_part = q / 10u128.pow(DIGITS);
    let mut frac = q % 10u128.pow(DIGITS);
    let mut digits = DIGITS;
    // Only an exact quotient loses its trailing zeros (Decimal's ideal exponent).
    if r == 0 {
        while digits > 0 && frac.is_multiple_of(10) {
            frac /= 10;
            digits -= 1;
        }
    }
    push_u64(buf, u64::try_from(int_part).unwrap_or(0));
    if digits > 0 {
        buf.push('.');
        let mut p = 10u128.pow(digits);
        while p > 1 {
            p /= 10;
            // A single decimal digit, so the cast cannot truncate.
            buf.push(char::from(b'0' + ((frac / p) % 10) as u8));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(f: impl FnOnce(&mut String)) -> String {
        let mut b = String::new();
        f(&mut b);
        b
    }

    #[test]
    fn python_float_repr() {
        let cases = [
            (0.0001, "0.0001"),
            (8.12e-05, "8.12e-05"),
            (1e-05, "1e-05"),
            (-2.5e-05, "-2.5e-05"),
            (66850.0, "66850.0"),
            (0.014, "0.014"),
            (5443568951.9535, "5443568951.9535"),
            (1e-08, "1e-08"),
            (1.5e16, "1.5e+16"),
            (0.0, "0.0"),
        ];
        for (v, want) in cases {
            assert_eq!(s(|b| push_py_float(b, v)), want, "{v}");
        }
    }

    #[test]
    fn fixed_and_stripped() {
        assert_eq!(s(|b| push_fixed(b, 670001, 1, 8)), "67000.10000000");
        assert_eq!(s(|b| push_fixed(b, 51_200_000, 8, 8)), "0.51200000");
        assert_eq!(s(|b| push_fixed(b, 6685000, 2, 2)), "66850.00");
        assert_eq!(s(|b| push_stripped(b, 670011, 1, false)), "67001.1");
        assert_eq!(s(|b| push_stripped(b, 670010, 1, false)), "67001");
        assert_eq!(s(|b| push_stripped(b, 670010, 1, true)), "67001.0");
        assert_eq!(s(|b| push_stripped(b, 1_200, 8, false)), "0.000012");
        assert_eq!(s(|b| push_i64(b, -42)), "-42");
    }

    #[test]
    fn iso_like_python() {
        assert_eq!(
            s(|b| push_iso_micros(b, 1_761_040_800_120_512)),
            "2025-10-21T10:00:00.120512+00:00"
        );
        assert_eq!(
            s(|b| push_iso_micros(b, 1_761_040_799_870_000)),
            "2025-10-21T09:59:59.870000+00:00"
        );
        assert_eq!(
            s(|b| push_iso_micros(b, 1_761_040_800_000_000)),
            "2025-10-21T10:00:00+00:00"
        );
        assert_eq!(
            s(|b| push_iso_micros(b, 951_782_400_000_000)),
            "2000-02-29T00:00:00+00:00"
        );
    }

    #[test]
    fn decimal28_like_python() {
        // Decimal("1.12") / Decimal("2.12") and Decimal(1) / Decimal("2.12").
        assert_eq!(
            s(|b| push_decimal28_ratio(b, 112, 212)),
            "0.5283018867924528301886792453"
        );
        assert_eq!(
            s(|b| push_decimal28_ratio(b, 100, 212)),
            "0.4716981132075471698113207547"
        );
        assert_eq!(s(|b| push_decimal28_ratio(b, 150, 250)), "0.6");
        assert_eq!(
            s(|b| push_decimal28_ratio(b, 2, 3)),
            "0.6666666666666666666666666667"
        );
    }
}
