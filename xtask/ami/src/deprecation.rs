//! `--deprecate-in DAYS|TIME`: when EnableImageDeprecation marks the AMI (and every copy)
//! deprecated. Computed once per run so every region gets the same time. Pure: "now" is a
//! parameter.

use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format;

const DAY: i64 = 24 * 60 * 60;
/// EC2 refuses a DeprecateAt more than 10 years ahead, or 2 years for a public AMI (counted
/// from its creation, which is about now).
const MAX_PRIVATE: i64 = 10 * 365 * DAY;
const MAX_PUBLIC: i64 = 2 * 365 * DAY;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deprecation {
    /// Days from now.
    Days(u32),
    /// A fixed time, Unix seconds.
    At(i64),
}

/// Parses `--deprecate-in`: a whole number of days, or an RFC 3339 time
/// (`2027-06-30T00:00:00Z`, offsets allowed).
pub fn parse(s: &str) -> Result<Deprecation, String> {
    let s = s.trim();
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
        return match s.parse::<u32>() {
            Ok(0) => Err("must be at least 1 day".into()),
            Ok(d) => Ok(Deprecation::Days(d)),
            Err(e) => Err(e.to_string()),
        };
    }
    DateTime::from_str(s, Format::DateTimeWithOffset)
        .map(|t| Deprecation::At(t.secs()))
        .map_err(|e| {
            format!("neither a number of days nor an RFC 3339 time like 2027-06-30T00:00:00Z ({e})")
        })
}

/// The DeprecateAt to send, Unix seconds: rounded up to a whole minute (EC2 keeps minutes only),
/// in the future, and within EC2's limit.
pub fn deprecate_at(d: Deprecation, now: i64, public: bool) -> Result<i64, String> {
    let raw = match d {
        Deprecation::Days(n) => now + i64::from(n) * DAY,
        Deprecation::At(t) => t,
    };
    let at = raw.div_euclid(60) * 60 + if raw.rem_euclid(60) == 0 { 0 } else { 60 };
    if at <= now {
        return Err(format!(
            "the deprecation time {} is not in the future",
            format(at)
        ));
    }
    let (max, what) = if public {
        (MAX_PUBLIC, "2 years for a public AMI")
    } else {
        (MAX_PRIVATE, "10 years")
    };
    if at - now > max {
        return Err(format!(
            "the deprecation time {} is too far ahead: EC2 allows at most {what}",
            format(at)
        ));
    }
    Ok(at)
}

/// `2027-06-30T00:00:00Z`, the form DeprecateAt and the map use.
pub fn format(secs: i64) -> String {
    DateTime::from_secs(secs)
        .fmt(Format::DateTime)
        .unwrap_or_else(|_| format!("@{secs}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-01-01T00:00:30Z
    const NOW: i64 = 1_767_225_630;

    #[test]
    fn days_or_times() {
        assert_eq!(parse("30"), Ok(Deprecation::Days(30)));
        assert_eq!(
            parse("2027-06-30T00:00:00Z"),
            Ok(Deprecation::At(1_814_313_600))
        );
        assert_eq!(
            parse("2027-06-30T02:00:00+02:00"),
            Ok(Deprecation::At(1_814_313_600))
        );
        assert!(parse("0").unwrap_err().contains("at least 1"));
        for bad in ["", "-3", "1.5", "tomorrow", "2027-06-30", "99999999999"] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse("soon").unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn days_count_from_now_rounded_up_to_the_minute() {
        let at = deprecate_at(Deprecation::Days(30), NOW, false).unwrap();
        assert_eq!(at, NOW + 30 * DAY + 30);
        assert_eq!(format(at), "2026-01-31T00:01:00Z");
        let exact = deprecate_at(Deprecation::At(1_814_313_600), NOW, false).unwrap();
        assert_eq!(format(exact), "2027-06-30T00:00:00Z");
    }

    #[test]
    fn past_and_too_far_are_refused() {
        let e = deprecate_at(Deprecation::At(NOW - 120), NOW, false).unwrap_err();
        assert!(e.contains("not in the future"), "{e}");
        assert!(deprecate_at(Deprecation::Days(3000), NOW, false).is_ok());
        let e = deprecate_at(Deprecation::Days(3000), NOW, true).unwrap_err();
        assert!(e.contains("2 years for a public AMI"), "{e}");
        let e = deprecate_at(Deprecation::Days(4000), NOW, false).unwrap_err();
        assert!(e.contains("10 years"), "{e}");
    }
}
