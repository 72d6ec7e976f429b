//! The instance role's temporary credentials as IMDS serves them: the role name from the
//! listing of `meta-data/iam/security-credentials/`, the JSON document at
//! `meta-data/iam/security-credentials/<role>`, and when to fetch them again.
//!
//! Schedule: IMDS publishes the next credentials at least five minutes before the current ones
//! expire, so a refresh [`REFRESH_LEAD_S`] (four minutes) before expiry always finds new ones,
//! and still leaves four minutes of working credentials for retries if IMDS does not answer
//! ([`retry_at_unix_s`]). Refreshing earlier would often fetch the same credentials again.
//! Nothing here waits less than [`MIN_WAIT_S`], so credentials that expire soon (or an IMDS that
//! keeps serving the old ones) cannot make the caller spin.

use super::sigv4::Credentials;
use super::utc;

/// How long before expiry the credentials are fetched again.
pub const REFRESH_LEAD_S: i64 = 240;
/// The shortest wait ever scheduled.
pub const MIN_WAIT_S: i64 = 10;
/// The longest wait between retries after IMDS failed.
pub const MAX_RETRY_WAIT_S: i64 = 60;
/// IAM's limit on a role name's length.
const MAX_ROLE_NAME: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error(
        "iam/security-credentials/ lists no role: the instance has no instance profile (or its role)"
    )]
    NoRole,
    #[error(
        "iam/security-credentials/ role name {0:?} is not an IAM role name (1-64 of A-Z a-z 0-9 + = , . @ _ -)"
    )]
    BadRoleName(String),
    #[error("iam/security-credentials/<role>: not a JSON object: {0}")]
    Json(String),
    #[error("iam/security-credentials/<role>: Code is {0:?}, not \"Success\"")]
    Code(String),
    #[error("iam/security-credentials/<role>: Type is {0:?}, not \"AWS-HMAC\"")]
    Type(String),
    #[error("iam/security-credentials/<role>: {0} is missing, empty or not a string")]
    Missing(&'static str),
    #[error("iam/security-credentials/<role>: Expiration {value:?} is not an RFC 3339 time: {why}")]
    Expiration { value: String, why: &'static str },
    #[error(
        "iam/security-credentials/<role>: the credentials expired at unix {expiration_unix_s} (now {now_unix_s}): is the clock right?"
    )]
    Expired {
        expiration_unix_s: i64,
        now_unix_s: i64,
    },
}

/// The role name: the listing's first line, checked against IAM's character set since it goes
/// into a URL path.
pub fn parse_role_name(body: &str) -> Result<String, CredentialsError> {
    let name = body.lines().next().unwrap_or("").trim();
    if name.is_empty() {
        return Err(CredentialsError::NoRole);
    }
    let valid = name.len() <= MAX_ROLE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b));
    if !valid {
        return Err(CredentialsError::BadRoleName(
            name.chars().take(80).collect(),
        ));
    }
    Ok(name.to_string())
}

/// The credentials document, checked: `Code` is `Success`, the keys are present, and
/// `Expiration` is a valid time after `now_unix_s`.
pub fn parse(body: &str, now_unix_s: i64) -> Result<Credentials, CredentialsError> {
    let doc: serde_json::Value =
        serde_json::from_str(body).map_err(|e| CredentialsError::Json(e.to_string()))?;
    let obj = doc
        .as_object()
        .ok_or_else(|| CredentialsError::Json("the document is not an object".into()))?;
    let field = |name: &'static str| -> Result<String, CredentialsError> {
        match obj.get(name).and_then(serde_json::Value::as_str) {
            Some(s) if !s.is_empty() => Ok(s.to_string()),
            _ => Err(CredentialsError::Missing(name)),
        }
    };
    let code = field("Code")?;
    if code != "Success" {
        return Err(CredentialsError::Code(code));
    }
    if let Some(kind) = obj.get("Type") {
        let kind = kind.as_str().unwrap_or("");
        if kind != "AWS-HMAC" {
            return Err(CredentialsError::Type(kind.to_string()));
        }
    }
    let expiration = field("Expiration")?;
    let expiration_unix_s =
        parse_rfc3339(&expiration).map_err(|why| CredentialsError::Expiration {
            value: expiration.chars().take(40).collect(),
            why,
        })?;
    if expiration_unix_s <= now_unix_s {
        return Err(CredentialsError::Expired {
            expiration_unix_s,
            now_unix_s,
        });
    }
    Ok(Credentials {
        access_key_id: field("AccessKeyId")?,
        secret_access_key: field("SecretAccessKey")?,
        session_token: Some(field("Token")?),
        expiration_unix_s: Some(expiration_unix_s),
    })
}

/// When to fetch credentials that expire at `expiration_unix_s` again: [`REFRESH_LEAD_S`] before
/// that, but never sooner than [`MIN_WAIT_S`] from now.
pub fn refresh_at_unix_s(expiration_unix_s: i64, now_unix_s: i64) -> i64 {
    expiration_unix_s
        .saturating_sub(REFRESH_LEAD_S)
        .max(now_unix_s.saturating_add(MIN_WAIT_S))
}

/// When to ask IMDS again after `failures` (1 for the first) failed refreshes in a row: 10 s
/// doubling to [`MAX_RETRY_WAIT_S`]. The current credentials stay in use while they are valid;
/// the cap keeps several attempts inside the last [`REFRESH_LEAD_S`] of their life.
pub fn retry_at_unix_s(failures: u32, now_unix_s: i64) -> i64 {
    let doublings = failures.saturating_sub(1).min(3);
    let wait = (MIN_WAIT_S << doublings).min(MAX_RETRY_WAIT_S);
    now_unix_s.saturating_add(wait)
}

/// RFC 3339 date-time (`2026-12-03T18:00:00Z`, `...+00:00`, `...-05:30`, fractions of a second
/// ignored) to unix seconds.
pub fn parse_rfc3339(s: &str) -> Result<i64, &'static str> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return Err("too short");
    }
    let num = |range: std::ops::Range<usize>| -> Result<i64, &'static str> {
        let part = &b[range];
        if !part.iter().all(u8::is_ascii_digit) {
            return Err("a digit was expected");
        }
        Ok(part.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    if b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err("not YYYY-MM-DDTHH:MM:SS");
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let month = u32::try_from(month).map_err(|_| "month out of range")?;
    let day = u32::try_from(day).map_err(|_| "day out of range")?;
    if !(1..=12).contains(&month) {
        return Err("month out of range");
    }
    if day < 1 || day > utc::days_in_month(year, month) {
        return Err("day out of range");
    }
    // 60 is a leap second; it counts as the next second.
    if hour > 23 || minute > 59 || second > 60 {
        return Err("time of day out of range");
    }
    let mut rest = &b[19..];
    if let Some(frac) = rest.strip_prefix(b".") {
        let digits = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return Err("empty fraction of a second");
        }
        rest = &frac[digits..];
    }
    let offset_s = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digits = [*h1, *h2, *m1, *m2];
            if !digits.iter().all(u8::is_ascii_digit) {
                return Err("bad UTC offset");
            }
            let hours = i64::from((h1 - b'0') * 10 + (h2 - b'0'));
            let minutes = i64::from((m1 - b'0') * 10 + (m2 - b'0'));
            if hours > 23 || minutes > 59 {
                return Err("bad UTC offset");
            }
            let offset = hours * 3600 + minutes * 60;
            if *sign == b'+' { offset } else { -offset }
        }
        _ => return Err("no Z or +HH:MM offset"),
    };
    let days = utc::days_from_civil(year, month, day);
    Ok(days * 86_400 + hour * 3600 + minute * 60 + second - offset_s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-03T18:00:00Z.
    const EXPIRY: i64 = 1_796_320_800;

    fn doc(code: &str, expiration: &str) -> String {
        format!(
            r#"{{
  "Code" : "{code}",
  "LastUpdated" : "2026-12-03T11:47:31Z",
  "Type" : "AWS-HMAC",
  "AccessKeyId" : "ASIAEXAMPLEKEYID1234",
  "SecretAccessKey" : "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY",
  "Token" : "IQoJb3JpZ2luX2VjEXAMPLETOKEN==",
  "Expiration" : "{expiration}"
}}"#
        )
    }

    #[test]
    fn role_name_is_the_first_line_and_checked() {
        assert_eq!(parse_role_name("nat-role\n").unwrap(), "nat-role");
        assert_eq!(
            parse_role_name("Nat_Role+=,.@-1\nother\n").unwrap(),
            "Nat_Role+=,.@-1"
        );
        assert_eq!(parse_role_name(""), Err(CredentialsError::NoRole));
        assert_eq!(parse_role_name("\n"), Err(CredentialsError::NoRole));
        for bad in ["../admin", "a/b", "role?x=1", "r%2e", "röle"] {
            assert!(
                matches!(parse_role_name(bad), Err(CredentialsError::BadRoleName(_))),
                "{bad}"
            );
        }
        assert!(parse_role_name(&"a".repeat(64)).is_ok());
        assert!(parse_role_name(&"a".repeat(65)).is_err());
    }

    #[test]
    fn parses_the_imds_document() {
        let now = EXPIRY - 6 * 3600;
        let creds = parse(&doc("Success", "2026-12-03T18:00:00Z"), now).unwrap();
        assert_eq!(creds.access_key_id, "ASIAEXAMPLEKEYID1234");
        assert_eq!(
            creds.secret_access_key,
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"
        );
        assert_eq!(
            creds.session_token.as_deref(),
            Some("IQoJb3JpZ2luX2VjEXAMPLETOKEN==")
        );
        assert_eq!(creds.expiration_unix_s, Some(EXPIRY));
        let plus = parse(&doc("Success", "2026-12-03T18:00:00+00:00"), now).unwrap();
        assert_eq!(plus.expiration_unix_s, Some(EXPIRY));
    }

    #[test]
    fn rejects_bad_documents() {
        let now = EXPIRY - 3600;
        assert_eq!(
            parse(&doc("Failure", "2026-12-03T18:00:00Z"), now),
            Err(CredentialsError::Code("Failure".into()))
        );
        assert!(matches!(
            parse("not json", now),
            Err(CredentialsError::Json(_))
        ));
        assert!(matches!(parse("[1]", now), Err(CredentialsError::Json(_))));
        let no_token = doc("Success", "2026-12-03T18:00:00Z").replace("\"Token\"", "\"Tok\"");
        assert_eq!(
            parse(&no_token, now),
            Err(CredentialsError::Missing("Token"))
        );
        let empty_key = doc("Success", "2026-12-03T18:00:00Z").replace("ASIAEXAMPLEKEYID1234", "");
        assert_eq!(
            parse(&empty_key, now),
            Err(CredentialsError::Missing("AccessKeyId"))
        );
        let other_type = doc("Success", "2026-12-03T18:00:00Z").replace("AWS-HMAC", "X");
        assert_eq!(
            parse(&other_type, now),
            Err(CredentialsError::Type("X".into()))
        );
        assert!(matches!(
            parse(&doc("Success", "2026-12-03 18:00:00"), now),
            Err(CredentialsError::Expiration { .. })
        ));
    }

    #[test]
    fn expired_and_soon_expiring_credentials() {
        let d = doc("Success", "2026-12-03T18:00:00Z");
        assert_eq!(
            parse(&d, EXPIRY),
            Err(CredentialsError::Expired {
                expiration_unix_s: EXPIRY,
                now_unix_s: EXPIRY
            })
        );
        assert!(parse(&d, EXPIRY + 1).is_err());
        // One second left still parses: the schedule then refreshes in MIN_WAIT_S.
        let creds = parse(&d, EXPIRY - 1).unwrap();
        assert_eq!(
            refresh_at_unix_s(creds.expiration_unix_s.unwrap(), EXPIRY - 1),
            EXPIRY - 1 + MIN_WAIT_S
        );
    }

    #[test]
    fn refresh_schedule() {
        // Six hours left: four minutes before expiry.
        assert_eq!(
            refresh_at_unix_s(EXPIRY, EXPIRY - 6 * 3600),
            EXPIRY - REFRESH_LEAD_S
        );
        // Five minutes left: still in the future, a minute from now.
        assert_eq!(refresh_at_unix_s(EXPIRY, EXPIRY - 300), EXPIRY - 240);
        // Inside the lead, expired, or IMDS served the old ones again: never sooner than 10 s.
        for now in [EXPIRY - 239, EXPIRY - 5, EXPIRY, EXPIRY + 3600] {
            assert_eq!(refresh_at_unix_s(EXPIRY, now), now + MIN_WAIT_S);
        }
        assert_eq!(refresh_at_unix_s(i64::MIN, 0), MIN_WAIT_S);
        assert_eq!(refresh_at_unix_s(i64::MAX, i64::MAX), i64::MAX);
    }

    #[test]
    fn retry_backs_off_to_a_minute() {
        let waits: Vec<i64> = (0..7).map(|n| retry_at_unix_s(n, 1000) - 1000).collect();
        assert_eq!(waits, vec![10, 10, 20, 40, 60, 60, 60]);
        assert_eq!(retry_at_unix_s(u32::MAX, 0), 60);
    }

    #[test]
    fn rfc3339_forms() {
        assert_eq!(parse_rfc3339("2026-12-03T18:00:00Z"), Ok(EXPIRY));
        assert_eq!(parse_rfc3339("2026-12-03t18:00:00z"), Ok(EXPIRY));
        assert_eq!(parse_rfc3339("2026-12-03T18:00:00.123Z"), Ok(EXPIRY));
        assert_eq!(parse_rfc3339("2026-12-03T19:30:00+01:30"), Ok(EXPIRY));
        assert_eq!(parse_rfc3339("2026-12-03T13:00:00-05:00"), Ok(EXPIRY));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_rfc3339("2024-02-29T00:00:00Z"), Ok(1_709_164_800));
        for bad in [
            "",
            "2026-12-03T18:00:00",
            "2026-12-03T18:00:00+0000",
            "2026-13-03T18:00:00Z",
            "2026-02-29T18:00:00Z",
            "2026-12-00T18:00:00Z",
            "2026-12-03T24:00:00Z",
            "2026-12-03T18:00:00.Z",
            "2026-12-03T18:00:00Z ",
            "2026-12-03T18:00:00+24:00",
            "+026-12-03T18:00:00Z",
            "2026-12-03T18:00:00\u{e9}",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad:?}");
        }
    }
}
