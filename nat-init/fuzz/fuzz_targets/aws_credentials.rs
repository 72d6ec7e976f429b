//! Fuzzes the IMDS role listing and credentials document parsers and the RFC 3339 reader.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nat_init::aws::credentials;
use nat_init::aws::sigv4::Credentials;

/// 2026-12-03T12:00:00Z.
const NOW: i64 = 1_796_299_200;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(role) = credentials::parse_role_name(text) {
        assert!(!role.is_empty() && role.len() <= 64 && !role.contains('/'));
    }
    if let Ok(creds) = credentials::parse(text, NOW) {
        let expiry = creds.expiration_unix_s.expect("parse sets the expiry");
        assert!(expiry > NOW && creds.session_token.is_some());
        assert!(credentials::refresh_at_unix_s(expiry, NOW) >= NOW + credentials::MIN_WAIT_S);
        // Debug does not depend on the secret or the token.
        let blanked = Credentials {
            secret_access_key: String::new(),
            session_token: Some(String::new()),
            ..creds.clone()
        };
        assert_eq!(format!("{creds:?}"), format!("{blanked:?}"));
    }
    let _ = credentials::parse_rfc3339(text);
});
