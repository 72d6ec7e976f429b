//! UTC calendar arithmetic for SigV4 dates, the credentials' RFC 3339 expiry and CloudWatch's
//! ISO 8601 timestamps: unix seconds to and from a civil date and time, on the proleptic
//! Gregorian calendar. No clock is read here;
//! the callers pass the time in, so every result is testable.

/// Days since 1970-01-01 to a civil date (year, month 1-12, day 1-31).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Eras of 400 years (146097 days) starting on March 1st, so leap days fall at an era's end.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both are in range by construction (day 1-31, month 1-12).
    (year, month as u32, day as u32)
}

/// A civil date (year, month 1-12, day 1-31) to days since 1970-01-01. The month and day are
/// not checked here; [`days_in_month`] is for that.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days in a month of a year, 0 for a month outside 1-12.
pub fn days_in_month(year: i64, month: u32) -> u32 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => 0,
    }
}

/// Unix seconds as SigV4's `X-Amz-Date` (`20150830T123600Z`) and its date part (`20150830`).
pub fn amz_date(unix_s: i64) -> (String, String) {
    let (year, month, day) = civil_from_days(unix_s.div_euclid(86_400));
    let secs = unix_s.rem_euclid(86_400);
    let date = format!("{year:04}{month:02}{day:02}");
    let stamp = format!(
        "{date}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    (stamp, date)
}

/// Unix seconds as ISO 8601 UTC to the second, `2026-12-06T20:44:00Z` (CloudWatch's
/// `Timestamp`). Years past 9999 print five digits; callers that need four check first.
pub fn iso8601(unix_s: i64) -> String {
    let (year, month, day) = civil_from_days(unix_s.div_euclid(86_400));
    let secs = unix_s.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_date_of_known_instants() {
        assert_eq!(amz_date(0), ("19700101T000000Z".into(), "19700101".into()));
        // The SigV4 test suite's instant.
        assert_eq!(
            amz_date(1_440_938_160),
            ("20150830T123600Z".into(), "20150830".into())
        );
        // A leap day and the last second of a century leap year.
        assert_eq!(amz_date(951_782_400).0, "20000229T000000Z");
        assert_eq!(amz_date(978_307_199).0, "20001231T235959Z");
        assert_eq!(amz_date(-1).0, "19691231T235959Z");
    }

    #[test]
    fn iso8601_of_known_instants() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        let t = days_from_civil(2026, 12, 6) * 86_400 + 20 * 3600 + 44 * 60;
        assert_eq!(iso8601(t), "2026-12-06T20:44:00Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(978_307_199), "2000-12-31T23:59:59Z");
        assert_eq!(iso8601(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn civil_round_trips_over_centuries() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert!((1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m));
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn month_lengths() {
        assert_eq!(days_in_month(2024, 2), 29);
        assert_eq!(days_in_month(1900, 2), 28);
        assert_eq!(days_in_month(2000, 2), 29);
        assert_eq!(days_in_month(2026, 11), 30);
        assert_eq!(days_in_month(2026, 13), 0);
    }
}
