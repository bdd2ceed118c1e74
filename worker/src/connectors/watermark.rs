//! Comparing incremental watermarks that are stored as text.
//!
//! A watermark is compared in its own type, recognised from its text: a number
//! (integer or decimal, JSON number syntax, also when the source sends it as a string)
//! is compared as a number — exactly, at any size and precision —, an RFC 3339
//! timestamp as an instant, anything else as text. Two marks of different types do
//! not compare: the source changed the type of its watermark field, and guessing an
//! order would either reset the watermark (re-fetching everything) or freeze it.

use std::cmp::Ordering;

use chrono::{DateTime, FixedOffset};

/// What a watermark's text is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkKind {
    Number,
    Timestamp,
    Text,
}

impl MarkKind {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Number => "a number",
            Self::Timestamp => "an RFC 3339 timestamp",
            Self::Text => "text",
        }
    }
}

/// A parsed watermark.
enum Mark<'a> {
    Number(Decimal<'a>),
    Timestamp(DateTime<FixedOffset>),
    Text(&'a str),
}

impl<'a> Mark<'a> {
    fn parse(text: &'a str) -> Self {
        if let Some(d) = Decimal::parse(text) {
            Self::Number(d)
        } else if let Ok(t) = DateTime::parse_from_rfc3339(text) {
            Self::Timestamp(t)
        } else {
            Self::Text(text)
        }
    }

    fn kind(&self) -> MarkKind {
        match self {
            Self::Number(_) => MarkKind::Number,
            Self::Timestamp(_) => MarkKind::Timestamp,
            Self::Text(_) => MarkKind::Text,
        }
    }
}

/// The type of a watermark text.
pub fn kind(text: &str) -> MarkKind {
    Mark::parse(text).kind()
}

/// Orders two watermarks of one type; `Err` with both types when they differ.
pub fn compare(a: &str, b: &str) -> Result<Ordering, (MarkKind, MarkKind)> {
    match (Mark::parse(a), Mark::parse(b)) {
        (Mark::Number(x), Mark::Number(y)) => Ok(x.cmp(&y)),
        (Mark::Timestamp(x), Mark::Timestamp(y)) => Ok(x.cmp(&y)),
        (Mark::Text(x), Mark::Text(y)) => Ok(x.cmp(y)),
        (x, y) => Err((x.kind(), y.kind())),
    }
}

/// An exact decimal: `digits` (no leading or trailing zeros; empty for zero) times
/// ten to the power `exp`, with a sign.
struct Decimal<'a> {
    negative: bool,
    /// The significant digits, possibly split by the decimal point (kept as the two
    /// borrowed halves to avoid an allocation per comparison).
    int: &'a str,
    frac: &'a str,
    /// Position of the most significant digit: the value's magnitude is in
    /// `[10^(order-1), 10^order)`.
    order: i128,
}

impl<'a> Decimal<'a> {
    /// JSON number syntax (`-`? digits (`.` digits)? (`e`|`E` (`+`|`-`)? digits)?),
    /// leading zeros allowed (`007` from a string is the number 7).
    fn parse(text: &'a str) -> Option<Self> {
        let (negative, rest) = match text.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, text),
        };
        let (mantissa, exp) = match rest.find(['e', 'E']) {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let (int, frac) = match mantissa.split_once('.') {
            Some((i, f)) => (i, f),
            None => (mantissa, ""),
        };
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty() || !digits(int) || !digits(frac) || mantissa.ends_with('.') {
            return None;
        }
        let exp: i128 = match exp {
            None => 0,
            Some(e) => {
                let body = e.strip_prefix(['+', '-']).unwrap_or(e);
                if body.is_empty() || !digits(body) {
                    return None;
                }
                // Absurd exponents saturate; they still order correctly against sane ones.
                let magnitude = body
                    .parse::<i128>()
                    .unwrap_or(i128::MAX)
                    .min(i128::from(i64::MAX));
                if e.starts_with('-') {
                    -magnitude
                } else {
                    magnitude
                }
            }
        };
        // The digits are `int ‖ frac` with the point after `int`; the significant
        // ones start after the leading zeros and end before the trailing ones.
        let lead = int.len() - int.trim_start_matches('0').len();
        let lead = if lead == int.len() {
            lead + frac.len() - frac.trim_start_matches('0').len()
        } else {
            lead
        };
        let (int_sig, frac_sig) = if lead < int.len() {
            (&int[lead..], frac)
        } else {
            ("", &frac[lead - int.len()..])
        };
        let frac_sig = frac_sig.trim_end_matches('0');
        let int_sig = if frac_sig.is_empty() {
            int_sig.trim_end_matches('0')
        } else {
            int_sig
        };
        let zero = int_sig.is_empty() && frac_sig.is_empty();
        Some(Self {
            negative: negative && !zero,
            int: int_sig,
            frac: frac_sig,
            order: exp + int.len() as i128 - lead as i128,
        })
    }

    fn is_zero(&self) -> bool {
        self.int.is_empty() && self.frac.is_empty()
    }

    /// The significant digits in order.
    fn digits(&self) -> impl Iterator<Item = u8> + '_ {
        self.int.bytes().chain(self.frac.bytes())
    }

    /// Compares magnitudes.
    fn cmp_abs(&self, other: &Self) -> Ordering {
        match (self.is_zero(), other.is_zero()) {
            (true, true) => return Ordering::Equal,
            (true, false) => return Ordering::Less,
            (false, true) => return Ordering::Greater,
            _ => {}
        }
        self.order.cmp(&other.order).then_with(|| {
            // Same order: the digit strings compare as if padded with trailing zeros.
            let (mut a, mut b) = (self.digits(), other.digits());
            loop {
                match (a.next(), b.next()) {
                    (None, None) => return Ordering::Equal,
                    (Some(_), None) => return Ordering::Greater,
                    (None, Some(_)) => return Ordering::Less,
                    (Some(x), Some(y)) if x != y => return x.cmp(&y),
                    _ => {}
                }
            }
        })
    }

    fn cmp(&self, other: &Self) -> Ordering {
        match (self.negative, other.negative) {
            (false, false) => self.cmp_abs(other),
            (true, true) => other.cmp_abs(self),
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(a: &str, b: &str) -> Ordering {
        match compare(a, b) {
            Ok(o) => o,
            Err(k) => panic!("{a} vs {b}: {k:?}"),
        }
    }

    #[test]
    fn numbers_compare_exactly() {
        use Ordering::*;
        for (a, b, want) in [
            ("10", "9", Greater),
            ("9", "10", Less),
            ("007", "7", Equal),
            ("1.5", "1.25", Greater),
            ("1.50", "1.5", Equal),
            ("-1", "1", Less),
            ("-10", "-9", Less),
            ("-0", "0", Equal),
            ("0.0", "0", Equal),
            ("0.001", "0.0009", Greater),
            ("1e1", "9.99", Greater),
            ("1E-2", "0.01", Equal),
            ("12.5e-1", "1.25", Equal),
            ("100", "1e2", Equal),
            ("120", "12", Greater),
            ("10000000000000000001", "10000000000000000000.5", Greater),
            ("0.30000000000000001", "0.3", Greater),
            ("1e999999999999999999999999", "1e5", Greater),
        ] {
            assert_eq!(num(a, b), want, "{a} vs {b}");
            assert_eq!(num(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn kinds_are_recognised_and_never_mixed() {
        assert_eq!(kind("12"), MarkKind::Number);
        assert_eq!(kind("-1.5e3"), MarkKind::Number);
        for text in ["1.", ".5", "+1", "1e", "0x10", "1_000", "", "-"] {
            assert_eq!(kind(text), MarkKind::Text, "{text}");
        }
        assert_eq!(kind("2026-01-01T00:00:00Z"), MarkKind::Timestamp);
        assert_eq!(kind("2026-01-01"), MarkKind::Text);
        assert_eq!(
            compare("2026-01-01T10:00:00+02:00", "2026-01-01T09:00:00Z"),
            Ok(Ordering::Less)
        );
        assert_eq!(compare("b", "abc"), Ok(Ordering::Greater));
        assert_eq!(
            compare("5", "2026-01-01T00:00:00Z"),
            Err((MarkKind::Number, MarkKind::Timestamp))
        );
        assert_eq!(compare("v2", "17"), Err((MarkKind::Text, MarkKind::Number)));
    }
}
