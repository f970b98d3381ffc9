//! Wall-clock times as RFC 3339 text in UTC, for the metrics document and the access log.
//!
//! Pure functions on [`SystemTime`], with no time-zone database: the output is always UTC (`Z`).
//! Times before 1970 are written as the epoch.

use std::time::{SystemTime, UNIX_EPOCH};

/// Formats a time as RFC 3339 in UTC with second precision: `2026-11-22T02:43:57Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let (date_and_clock, _) = date_and_clock(time);
    format!("{date_and_clock}Z")
}

/// Formats a time as RFC 3339 in UTC with millisecond precision: `2026-11-22T02:43:57.123Z`.
pub fn rfc3339_millis(time: SystemTime) -> String {
    let (date_and_clock, millis) = date_and_clock(time);
    format!("{date_and_clock}.{millis:03}Z")
}

/// `2026-11-22T02:43:57` and the milliseconds past that second.
fn date_and_clock(time: SystemTime) -> (String, u32) {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    let days = (seconds / 86_400) as i64;
    let of_day = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    let text = format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}", of_day / 3600, of_day / 60 % 60, of_day % 60);
    (text, since_epoch.subsec_millis())
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn known_dates_to_the_second() {
        let at = |seconds: u64| rfc3339(UNIX_EPOCH + Duration::from_secs(seconds));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_795_315_437), "2026-11-22T02:43:57Z");
        assert_eq!(at(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn known_dates_to_the_millisecond() {
        let at = |millis: u64| rfc3339_millis(UNIX_EPOCH + Duration::from_millis(millis));
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(1_795_315_437_007), "2026-11-22T02:43:57.007Z");
        assert_eq!(at(1_795_329_000_123), "2026-11-22T06:30:00.123Z");
        let just_before_a_second = UNIX_EPOCH + Duration::from_nanos(1_999_999_999);
        assert_eq!(rfc3339_millis(just_before_a_second), "1970-01-01T00:00:01.999Z", "truncated, never rounded up");
    }

    #[test]
    fn times_before_the_epoch_are_the_epoch() {
        assert_eq!(rfc3339(UNIX_EPOCH - Duration::from_secs(5)), "1970-01-01T00:00:00Z");
    }
}
