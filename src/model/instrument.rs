//! An instrument's reference data: what a client needs to format and
//! check prices and sizes (price increment, decimals shown, currency, lot
//! size). Read from `--symbols-file` and from publishers' `ref` messages.

use crate::model::decimal::Fixed;

/// Longest currency code accepted: ISO 4217 codes are 3 letters, quote
/// assets (`USDT`, `FDUSD`) a few more.
pub const MAX_CURRENCY_LEN: usize = 16;

/// One instrument's reference data; a field not known is `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Instrument {
    /// Smallest price step (`tick_size`), above zero.
    pub tick_size: Option<Fixed>,
    /// Decimals prices are shown with (0–9): given, or those of `tick_size`.
    pub decimals: Option<u8>,
    /// ISO 4217 code or the quote asset (`USD`, `USDT`).
    pub currency: Option<String>,
    /// Smallest size step (`lot_size`), above zero.
    pub lot_size: Option<Fixed>,
}

/// Decimals a decimal needs as written: `0.01` → 2, `0.25` → 2, `5` → 0.
pub fn decimals_of(f: Fixed) -> u8 {
    let mut s = Vec::new();
    f.write_to(&mut s);
    s.iter()
        .position(|&b| b == b'.')
        .map_or(0, |p| (s.len() - p - 1) as u8)
}

/// A currency is 1 to [`MAX_CURRENCY_LEN`] ASCII letters or digits: it is
/// shown beside prices, so nothing that could break a page or a log line.
pub fn validate_currency(c: &str) -> Result<(), String> {
    if c.is_empty() || c.len() > MAX_CURRENCY_LEN {
        return Err(format!(
            "a currency is 1 to {MAX_CURRENCY_LEN} characters, such as \"USD\""
        ));
    }
    if !c.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err("a currency holds ASCII letters and digits only, such as \"USD\"".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_and_currencies() {
        assert_eq!(decimals_of(Fixed::parse("0.25").unwrap()), 2);
        assert_eq!(decimals_of(Fixed::parse("5").unwrap()), 0);
        assert!(validate_currency("USDT").is_ok());
        for bad in ["", "US D", "<b>", "ABCDEFGHIJKLMNOPQ"] {
            assert!(validate_currency(bad).is_err(), "{bad}");
        }
    }
}
