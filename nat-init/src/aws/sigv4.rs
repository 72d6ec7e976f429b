//! AWS Signature Version 4 for the appliance's own API calls (EC2 now, CloudWatch later): the
//! canonical request, the string to sign, the derived key and the headers to add.
//!
//! Written on `hmac` and `sha2` rather than with `aws-sigv4`: the SDK's signer brings about 50
//! crates, tokio among them, into a static binary that must stay small, while the algorithm is a
//! page of code checked here against AWS's published test suite.
//!
//! Conventions of [`Request`]: the path and the query are given *unencoded*; the signer encodes
//! them with [`uri_encode`] (RFC 3986 unreserved set), and the transport must put the same
//! encoding on the wire ([`encode_path`], [`query_string`]). The path is not normalised (`.`
//! and `..` are signed as given); EC2 only uses `/`.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::utc;

/// The instance role's temporary credentials (or any others).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    /// When they stop working, if they expire.
    pub expiration_unix_s: Option<i64>,
}

impl std::fmt::Debug for Credentials {
    // The secret and the token never reach a log line; the key id is what support asks for.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expiration_unix_s", &self.expiration_unix_s)
            .finish()
    }
}

/// What is signed. `host` is signed as the `host` header; a `host` entry in `headers` is
/// ignored. Every entry of `headers` is signed (names lower-cased, values trimmed, runs of
/// spaces collapsed, repeated names joined with `,` in order).
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    pub host: &'a str,
    /// Unencoded, e.g. `/`.
    pub path: &'a str,
    /// Unencoded key/value pairs, in any order.
    pub query: &'a [(&'a str, &'a str)],
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The headers to add to `req`: `X-Amz-Date`, `X-Amz-Security-Token` when the credentials have
/// a token (signed too), and `Authorization`. No `x-amz-content-sha256`: EC2 and CloudWatch do
/// not ask for it (S3 would).
pub fn sign(
    req: &Request<'_>,
    creds: &Credentials,
    region: &str,
    service: &str,
    unix_time_s: i64,
) -> Vec<(String, String)> {
    let parts = Signing::new(req, creds, region, service, unix_time_s);
    let mut out = vec![("X-Amz-Date".to_string(), parts.amz_date.clone())];
    if let Some(token) = &creds.session_token {
        out.push(("X-Amz-Security-Token".to_string(), token.clone()));
    }
    out.push((
        "Authorization".to_string(),
        format!(
            "{ALGORITHM} Credential={}/{}, SignedHeaders={}, Signature={}",
            creds.access_key_id, parts.scope, parts.signed_headers, parts.signature
        ),
    ));
    out
}

/// Every intermediate of one signature, kept for the tests.
struct Signing {
    amz_date: String,
    scope: String,
    signed_headers: String,
    #[cfg_attr(not(test), expect(dead_code, reason = "read by the tests"))]
    canonical_request: String,
    #[cfg_attr(not(test), expect(dead_code, reason = "read by the tests"))]
    string_to_sign: String,
    signature: String,
}

impl Signing {
    fn new(
        req: &Request<'_>,
        creds: &Credentials,
        region: &str,
        service: &str,
        unix_time_s: i64,
    ) -> Self {
        let (amz_date, date) = utc::amz_date(unix_time_s);
        let mut headers: Vec<(String, String)> = vec![
            ("host".into(), canonical_value(req.host)),
            ("x-amz-date".into(), amz_date.clone()),
        ];
        if let Some(token) = &creds.session_token {
            headers.push(("x-amz-security-token".into(), canonical_value(token)));
        }
        for (name, value) in req.headers {
            let name = name.trim().to_ascii_lowercase();
            if name != "host" {
                headers.push((name, canonical_value(value)));
            }
        }
        // A stable sort keeps repeated names' values in their given order.
        headers.sort_by(|a, b| a.0.cmp(&b.0));
        let mut merged: Vec<(String, String)> = Vec::with_capacity(headers.len());
        for (name, value) in headers {
            match merged.last_mut() {
                Some((last, joined)) if *last == name => {
                    joined.push(',');
                    joined.push_str(&value);
                }
                _ => merged.push((name, value)),
            }
        }
        let signed_headers = merged
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(";");
        let mut canonical_request = format!(
            "{}\n{}\n{}\n",
            req.method,
            encode_path(req.path),
            query_string(req.query)
        );
        for (name, value) in &merged {
            canonical_request.push_str(&format!("{name}:{value}\n"));
        }
        canonical_request.push_str(&format!(
            "\n{signed_headers}\n{}",
            hex(&Sha256::digest(req.body))
        ));
        let scope = format!("{date}/{region}/{service}/aws4_request");
        let string_to_sign = format!(
            "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
            hex(&Sha256::digest(canonical_request.as_bytes()))
        );
        let mut key = hmac_sha256(
            format!("AWS4{}", creds.secret_access_key).as_bytes(),
            date.as_bytes(),
        );
        for part in [region, service, "aws4_request"] {
            key = hmac_sha256(&key, part.as_bytes());
        }
        let signature = hex(&hmac_sha256(&key, string_to_sign.as_bytes()));
        Self {
            amz_date,
            scope,
            signed_headers,
            canonical_request,
            string_to_sign,
            signature,
        }
    }
}

/// Trimmed, with each run of spaces collapsed to one (SigV4's canonical header value).
fn canonical_value(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Percent-encodes every byte outside RFC 3986's unreserved set (`A-Z a-z 0-9 - . _ ~`), in
/// upper-case hex; `/` is kept when `keep_slash` (paths). This is SigV4's `UriEncode`, and also
/// the encoding of EC2 Query API form bodies.
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The canonical URI of an unencoded path, as it must also be sent (`/` when empty).
pub fn encode_path(path: &str) -> String {
    if path.is_empty() {
        "/".to_string()
    } else {
        uri_encode(path, true)
    }
}

/// The canonical query string of unencoded pairs: each side encoded, sorted by key then value,
/// joined with `&`. Sending this exact string keeps the wire and the signature in step.
pub fn query_string(pairs: &[(&str, &str)]) -> String {
    let mut encoded: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    encoded.sort();
    encoded
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC's own key normalisation (RFC 2104): a key longer than the 64-byte block is hashed,
    // a shorter one is zero-padded. Done here so that construction cannot fail.
    let mut block = [0u8; 64];
    if key.len() > block.len() {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut mac = <Hmac<Sha256> as KeyInit>::new(&block.into());
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test suite's credentials and instant (2015-08-30T12:36:00Z).
    fn suite_creds(token: Option<&str>) -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: token.map(str::to_string),
            expiration_unix_s: None,
        }
    }
    const SUITE_TIME: i64 = 1_440_938_160;

    fn get<'a>(path: &'a str, query: &'a [(&'a str, &'a str)]) -> Request<'a> {
        Request {
            method: "GET",
            host: "example.amazonaws.com",
            path,
            query,
            headers: &[],
            body: b"",
        }
    }

    fn suite(req: &Request<'_>, token: Option<&str>) -> Signing {
        Signing::new(req, &suite_creds(token), "us-east-1", "service", SUITE_TIME)
    }

    // Vectors below are from AWS's Signature Version 4 test suite (the files `request.txt`,
    // `header-canonical-request.txt`, `header-string-to-sign.txt`, `header-signature.txt`).

    #[test]
    fn get_vanilla() {
        let s = suite(&get("/", &[]), None);
        assert_eq!(
            s.canonical_request,
            "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            s.string_to_sign,
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n\
             bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
        );
        assert_eq!(
            s.signature,
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
        let headers = sign(
            &get("/", &[]),
            &suite_creds(None),
            "us-east-1",
            "service",
            SUITE_TIME,
        );
        assert_eq!(
            headers,
            vec![
                ("X-Amz-Date".to_string(), "20150830T123600Z".to_string()),
                (
                    "Authorization".to_string(),
                    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
                     SignedHeaders=host;x-amz-date, \
                     Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
                        .to_string()
                ),
            ]
        );
    }

    #[test]
    fn get_vanilla_query_order_key_case() {
        let s = suite(
            &get("/", &[("Param2", "value2"), ("Param1", "value1")]),
            None,
        );
        assert!(
            s.canonical_request
                .starts_with("GET\n/\nParam1=value1&Param2=value2\nhost:")
        );
        assert_eq!(
            s.string_to_sign.rsplit('\n').next(),
            Some("816cd5b414d056048ba4f7c5386d6e0533120fb1fcfa93762cf0fc39e2cf19e0")
        );
        assert_eq!(
            s.signature,
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
        );
    }

    #[test]
    fn get_utf8_path_and_query() {
        let s = suite(&get("/\u{1234}", &[]), None);
        assert!(s.canonical_request.starts_with("GET\n/%E1%88%B4\n\n"));
        assert_eq!(
            s.signature,
            "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85"
        );
        let s = suite(&get("/", &[("\u{1234}", "bar")]), None);
        assert!(s.canonical_request.starts_with("GET\n/\n%E1%88%B4=bar\n"));
        assert_eq!(
            s.signature,
            "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04"
        );
        // get-space-unnormalized: a space in the path.
        let s = suite(&get("/example space/", &[]), None);
        assert!(s.canonical_request.starts_with("GET\n/example%20space/\n"));
        assert_eq!(
            s.signature,
            "652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741"
        );
    }

    #[test]
    fn get_header_value_trim() {
        let req = Request {
            headers: &[("My-Header1", " value1"), ("My-Header2", " \"a   b   c\"")],
            ..get("/", &[])
        };
        let s = suite(&req, None);
        assert_eq!(
            s.canonical_request,
            "GET\n/\n\nhost:example.amazonaws.com\nmy-header1:value1\nmy-header2:\"a b c\"\n\
             x-amz-date:20150830T123600Z\n\nhost;my-header1;my-header2;x-amz-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            s.signature,
            "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736"
        );
    }

    #[test]
    fn post_x_www_form_urlencoded() {
        // The 2015 suite's version (content-type, host, x-amz-date signed). Its signature was
        // cross-checked with Python's hmac/hashlib in a one-off command.
        let req = Request {
            method: "POST",
            headers: &[("Content-Type", "application/x-www-form-urlencoded")],
            body: b"Param1=value1",
            ..get("/", &[])
        };
        let s = suite(&req, None);
        assert_eq!(
            s.canonical_request,
            "POST\n/\n\ncontent-type:application/x-www-form-urlencoded\nhost:example.amazonaws.com\n\
             x-amz-date:20150830T123600Z\n\ncontent-type;host;x-amz-date\n\
             9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"
        );
        assert_eq!(
            s.signature,
            "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"
        );
        // The later suite's version also signs content-length and x-amz-content-sha256, which
        // a caller that wants them passes as headers.
        let req = Request {
            headers: &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Content-Length", "13"),
                (
                    "x-amz-content-sha256",
                    "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e",
                ),
            ],
            ..req
        };
        let s = suite(&req, None);
        assert_eq!(
            s.string_to_sign.rsplit('\n').next(),
            Some("b1edd1d03544c25390e32085d55b57acc9a3961bb59415ff86c45c3d89d16cfb")
        );
        assert_eq!(
            s.signature,
            "d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b"
        );
    }

    #[test]
    fn session_token_is_sent_and_signed() {
        // get-vanilla-with-session-token.
        let token = "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267";
        let s = suite(&get("/", &[]), Some(token));
        assert_eq!(
            s.canonical_request,
            format!(
                "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\
                 x-amz-security-token:{token}\n\nhost;x-amz-date;x-amz-security-token\n\
                 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            )
        );
        assert_eq!(
            s.signature,
            "07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8"
        );
        let headers = sign(
            &get("/", &[]),
            &suite_creds(Some(token)),
            "us-east-1",
            "service",
            SUITE_TIME,
        );
        assert_eq!(
            headers[1],
            ("X-Amz-Security-Token".to_string(), token.to_string())
        );
        assert!(
            headers[2]
                .1
                .contains("SignedHeaders=host;x-amz-date;x-amz-security-token,")
        );
        assert!(headers[2].1.ends_with(
            "Signature=07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8"
        ));
    }

    #[test]
    fn iam_list_users_example() {
        // The IAM ListUsers example of AWS's "Create a signed AWS API request" page.
        let req = Request {
            method: "GET",
            host: "iam.amazonaws.com",
            path: "/",
            query: &[("Action", "ListUsers"), ("Version", "2010-05-08")],
            headers: &[(
                "Content-Type",
                "application/x-www-form-urlencoded; charset=utf-8",
            )],
            body: b"",
        };
        let s = Signing::new(&req, &suite_creds(None), "us-east-1", "iam", SUITE_TIME);
        assert_eq!(
            s.canonical_request,
            "GET\n/\nAction=ListUsers&Version=2010-05-08\n\
             content-type:application/x-www-form-urlencoded; charset=utf-8\n\
             host:iam.amazonaws.com\nx-amz-date:20150830T123600Z\n\n\
             content-type;host;x-amz-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            s.string_to_sign,
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/iam/aws4_request\n\
             f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59"
        );
        assert_eq!(
            s.signature,
            "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
    }

    #[test]
    fn repeated_headers_join_and_host_entry_is_ignored() {
        let req = Request {
            headers: &[
                ("My-Header1", "value2"),
                ("host", "evil.example"),
                ("My-Header1", "value1"),
            ],
            ..get("/", &[])
        };
        let s = suite(&req, None);
        assert!(
            s.canonical_request
                .contains("\nhost:example.amazonaws.com\nmy-header1:value2,value1\nx-amz-date:")
        );
        assert!(!s.canonical_request.contains("evil"));
    }

    #[test]
    fn uri_encoding() {
        assert_eq!(uri_encode("AZaz09-._~", false), "AZaz09-._~");
        assert_eq!(
            uri_encode("a b/c=d&e+f%", false),
            "a%20b%2Fc%3Dd%26e%2Bf%25"
        );
        assert_eq!(uri_encode("/a b/", true), "/a%20b/");
        assert_eq!(encode_path(""), "/");
        assert_eq!(
            query_string(&[("b", ""), ("a", "2"), ("a", "1")]),
            "a=1&a=2&b="
        );
    }

    #[test]
    fn debug_hides_secrets() {
        let creds = suite_creds(Some("TOKENVALUE"));
        let shown = format!("{creds:?}");
        assert!(shown.contains("AKIDEXAMPLE"));
        assert!(!shown.contains("wJalrXUtnFEMI"));
        assert!(!shown.contains("TOKENVALUE"));
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn long_keys_follow_hmac_normalisation() {
        // RFC 4231 test case 6: a 131-byte key is hashed first.
        let key = [0xaau8; 131];
        let mac = hmac_sha256(
            &key,
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        assert_eq!(
            hex(&mac),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
        // RFC 4231 test case 2: a short key is padded.
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
