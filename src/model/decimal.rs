//! Exact fixed-point decimals: prices and sizes as integers of 1e-9 units.
//!
//! This is the only place where numbers cross between text and the integer
//! representation. Nothing here goes through `f64`: a price read as `189.23`
//! is written back as `189.23`, whatever its magnitude.

use std::fmt;

/// Units per whole: 1 unit = 1e-9, as in Databento's DBN.
pub(crate) const SCALE: i64 = 1_000_000_000;
pub(crate) const FRACTION_DIGITS: usize = 9;

/// A fixed-point decimal with nine fractional digits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fixed(pub i64);

/// Why a piece of text is not an exact fixed-point decimal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    #[error("empty number")]
    Empty,
    #[error("`{0}` is not a decimal number")]
    Syntax(String),
    #[error("`{0}` has more than 9 decimal places; it cannot be represented exactly")]
    TooPrecise(String),
    #[error("`{0}` is out of range (at most ±9223372036.854775807)")]
    OutOfRange(String),
}

impl Fixed {
    pub const ZERO: Fixed = Fixed(0);

    /// Whole units, e.g. `Fixed::from_units(100)` is 100.
    pub fn from_units(n: i64) -> Option<Fixed> {
        n.checked_mul(SCALE).map(Fixed)
    }

    /// The raw count of 1e-9 units.
    pub fn raw(self) -> i64 {
        self.0
    }

    /// Parses JSON number text (or plain decimal text) exactly.
    ///
    /// Accepts an optional `-`, digits, an optional fraction and an optional
    /// exponent (`1e-7`, as JavaScript writes small numbers). Refuses anything
    /// that would need rounding or overflow `i64`.
    pub fn parse(text: &str) -> Result<Fixed, DecimalError> {
        parse_fixed(text)
    }

    /// Writes the shortest exact decimal: no exponent, no trailing zeros.
    pub fn write_to(self, out: &mut Vec<u8>) {
        let negative = self.0 < 0;
        // unsigned_abs handles i64::MIN without overflow.
        let abs = self.0.unsigned_abs();
        let whole = abs / SCALE as u64;
        let mut frac = abs % SCALE as u64;
        if negative {
            out.push(b'-');
        }
        let mut buf = itoa::Buffer::new();
        out.extend_from_slice(buf.format(whole).as_bytes());
        if frac != 0 {
            let mut digits = FRACTION_DIGITS;
            while frac.is_multiple_of(10) {
                frac /= 10;
                digits -= 1;
            }
            out.push(b'.');
            let s = buf.format(frac);
            for _ in s.len()..digits {
                out.push(b'0');
            }
            out.extend_from_slice(s.as_bytes());
        }
    }
}

impl fmt::Display for Fixed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut v = Vec::with_capacity(24);
        self.write_to(&mut v);
        // write_to only emits ASCII digits, '-' and '.'.
        f.write_str(std::str::from_utf8(&v).map_err(|_| fmt::Error)?)
    }
}

impl std::str::FromStr for Fixed {
    type Err = DecimalError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Fixed::parse(s)
    }
}

fn parse_fixed(text: &str) -> Result<Fixed, DecimalError> {
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return Err(DecimalError::Empty);
    }
    let syntax = || DecimalError::Syntax(text.to_owned());
    let mut i = 0;
    let negative = bytes[0] == b'-';
    if negative {
        i += 1;
    }
    // Mantissa digits, as an integer with `frac_digits` implied decimals.
    let mut mantissa: u128 = 0;
    let mut frac_digits: i64 = 0;
    let mut int_digits = 0usize;
    let mut significant = 0usize;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        push_digit(&mut mantissa, &mut significant, bytes[i]);
        int_digits += 1;
        i += 1;
    }
    if int_digits == 0 {
        return Err(syntax());
    }
    if i < bytes.len() && bytes[i] == b'.' {
        i += 1;
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            push_digit(&mut mantissa, &mut significant, bytes[i]);
            frac_digits += 1;
            i += 1;
        }
        if i == start {
            return Err(syntax());
        }
    }
    let mut exponent: i64 = 0;
    if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
        i += 1;
        let mut exp_negative = false;
        if i < bytes.len() && (bytes[i] == b'+' || bytes[i] == b'-') {
            exp_negative = bytes[i] == b'-';
            i += 1;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            // Clamp: anything beyond a few dozen is out of range or too precise anyway.
            exponent = (exponent * 10 + i64::from(bytes[i] - b'0')).min(1_000);
            i += 1;
        }
        if i == start {
            return Err(syntax());
        }
        if exp_negative {
            exponent = -exponent;
        }
    }
    if i != bytes.len() {
        return Err(syntax());
    }
    if significant > 38 {
        return Err(DecimalError::OutOfRange(text.to_owned()));
    }
    // value = mantissa * 10^(exponent - frac_digits); in units: * 10^9.
    let mut shift = exponent - frac_digits + FRACTION_DIGITS as i64;
    let mut units = mantissa;
    while shift < 0 {
        if !units.is_multiple_of(10) {
            return Err(DecimalError::TooPrecise(text.to_owned()));
        }
        units /= 10;
        shift += 1;
    }
    while shift > 0 {
        if units == 0 {
            break;
        }
        units = units
            .checked_mul(10)
            .filter(|u| *u <= i64::MAX as u128 + 1)
            .ok_or_else(|| DecimalError::OutOfRange(text.to_owned()))?;
        shift -= 1;
    }
    let value = if negative {
        if units > i64::MAX as u128 + 1 {
            return Err(DecimalError::OutOfRange(text.to_owned()));
        }
        (units as i128).wrapping_neg() as i64
    } else {
        i64::try_from(units).map_err(|_| DecimalError::OutOfRange(text.to_owned()))?
    };
    Ok(Fixed(value))
}

fn push_digit(mantissa: &mut u128, significant: &mut usize, digit: u8) {
    if *significant > 0 || digit != b'0' {
        *significant += 1;
    }
    if *significant <= 38 {
        *mantissa = *mantissa * 10 + u128::from(digit - b'0');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(v: i64) -> String {
        Fixed(v).to_string()
    }

    #[test]
    fn formats_exact_decimals() {
        assert_eq!(fmt(0), "0");
        assert_eq!(fmt(189_230_000_000), "189.23");
        assert_eq!(fmt(1_200_000), "0.0012");
        assert_eq!(fmt(100 * SCALE), "100");
        assert_eq!(fmt(1), "0.000000001");
        assert_eq!(fmt(-1), "-0.000000001");
        assert_eq!(fmt(-37_630_000_000), "-37.63");
        assert_eq!(fmt(123_456_789_123_456_789), "123456789.123456789");
        assert_eq!(fmt(i64::MAX), "9223372036.854775807");
        assert_eq!(fmt(i64::MIN), "-9223372036.854775808");
        assert_eq!(fmt(-SCALE), "-1");
    }

    #[test]
    fn parses_exact_decimals() {
        assert_eq!(Fixed::parse("189.23"), Ok(Fixed(189_230_000_000)));
        assert_eq!(Fixed::parse("0.0012"), Ok(Fixed(1_200_000)));
        assert_eq!(Fixed::parse("100"), Ok(Fixed(100 * SCALE)));
        assert_eq!(Fixed::parse("-0.5"), Ok(Fixed(-500_000_000)));
        assert_eq!(Fixed::parse("0.000000001"), Ok(Fixed(1)));
        assert_eq!(Fixed::parse("1e-7"), Ok(Fixed(100)));
        assert_eq!(Fixed::parse("1.5E2"), Ok(Fixed(150 * SCALE)));
        assert_eq!(Fixed::parse("2.50e+1"), Ok(Fixed(25 * SCALE)));
        assert_eq!(Fixed::parse("0.1000000000000"), Ok(Fixed(100_000_000)));
        assert_eq!(Fixed::parse("9223372036.854775807"), Ok(Fixed(i64::MAX)));
        assert_eq!(Fixed::parse("-9223372036.854775808"), Ok(Fixed(i64::MIN)));
        assert_eq!(Fixed::parse("0e999999"), Ok(Fixed(0)));
    }

    #[test]
    fn refuses_what_cannot_be_exact() {
        assert!(matches!(
            Fixed::parse("0.0000000001"),
            Err(DecimalError::TooPrecise(_))
        ));
        assert!(matches!(
            Fixed::parse("1e-10"),
            Err(DecimalError::TooPrecise(_))
        ));
        assert!(matches!(
            Fixed::parse("9223372036.854775808"),
            Err(DecimalError::OutOfRange(_))
        ));
        assert!(matches!(
            Fixed::parse("1e20"),
            Err(DecimalError::OutOfRange(_))
        ));
        assert!(matches!(
            Fixed::parse("123456789012345678901234567890123456789012"),
            Err(DecimalError::OutOfRange(_))
        ));
        for bad in [
            "", "-", ".5", "5.", "1e", "1.2.3", "0x10", " 1", "1 ", "+1", "NaN", "1e+",
        ] {
            assert!(Fixed::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn round_trips_across_magnitudes() {
        let mut v: i64 = 1;
        for _ in 0..19 {
            for x in [v, -v, v + 7, v - 1] {
                assert_eq!(Fixed::parse(&Fixed(x).to_string()), Ok(Fixed(x)), "{x}");
            }
            v = v.saturating_mul(10);
        }
    }
}
