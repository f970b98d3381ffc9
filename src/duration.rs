//! Human-written durations: `"250ms"`, `"3s"`, `"1m"`, `"1h"`, and sums such as `"1m30s"`.
//!
//! Used by the config file and by `echo-backend --latency`. A bare number is refused, because
//! `"5"` could mean seconds or milliseconds and a wrong guess is a silent misconfiguration.

use std::time::Duration;

/// Parses a duration such as `"50ms"`, `"3s"`, `"1m"`, `"2h"` or `"1m30s"`.
///
/// Returns a message fit to follow a key name (`must be a duration like "3s" ...`) on error.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("must be a duration like \"50ms\", \"3s\" or \"1m\", got {text:?}");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(invalid());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" => Duration::from_secs(number.saturating_mul(60)),
            "h" => Duration::from_secs(number.saturating_mul(3600)),
            _ => return Err(invalid()),
        };
        total = total.checked_add(part).ok_or_else(invalid)?;
    }
    Ok(total)
}

/// Formats a duration the way [`parse_duration`] reads it, for logs and metrics.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis.is_multiple_of(1000) { format!("{}s", millis / 1000) } else { format!("{millis}ms") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_each_unit_and_sums() {
        let cases = [
            ("50ms", Duration::from_millis(50)),
            ("3s", Duration::from_secs(3)),
            ("1m", Duration::from_secs(60)),
            ("2h", Duration::from_secs(7200)),
            ("1m30s", Duration::from_secs(90)),
            ("0s", Duration::ZERO),
            (" 5s ", Duration::from_secs(5)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn refuses_ambiguous_or_malformed_text() {
        for text in ["", "5", "s", "5 s", "5x", "-5s", "1.5s", "ms50", "99999999999999999999s"] {
            let error = parse_duration(text).unwrap_err();
            assert!(error.starts_with("must be a duration"), "{text}: {error}");
        }
    }

    #[test]
    fn formats_whole_seconds_and_millis() {
        assert_eq!(format_duration(Duration::from_secs(10)), "10s");
        assert_eq!(format_duration(Duration::from_millis(50)), "50ms");
    }
}
