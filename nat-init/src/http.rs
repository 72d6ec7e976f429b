//! HTTP/1.1 messages as bytes: the requests nat-init sends and the responses it accepts, for
//! IMDS (plain TCP, [`crate::imds`]) and for AWS APIs (over TLS, [`crate::https`]).
//!
//! Pure functions on byte slices: the transports read into a buffer and call
//! [`parse_response_max`] after each read until it stops answering
//! [`ResponseError::Incomplete`]. One request per connection (`Connection: close`), so a body
//! ends at its `Content-Length`, at the last chunk of a `chunked` body (AWS sends those), or at
//! EOF. Everything from the peer is bounded by a size limit chosen by the caller.

use std::time::{Duration, SystemTime};

/// Default limit on a response (head and body): enough for IMDS, whose user-data is at most
/// 16 KiB on EC2.
pub const MAX_RESPONSE: usize = 64 * 1024;
/// Limit for AWS API answers: a DescribeRouteTables of a large VPC runs to hundreds of KiB.
pub const MAX_AWS_RESPONSE: usize = 1024 * 1024;
/// Longest chunk-size line (size, extensions) or trailer section accepted.
const MAX_CHUNK_LINE: usize = 4096;

/// An HTTP/1.1 request. The `Host`, `Content-Length` and `Connection` headers are written by
/// [`Request::to_bytes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The request target, `/` and the query string included.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Why a [`Request`] cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("invalid {what} {value:?}")]
    Invalid { what: &'static str, value: String },
    #[error("header {0:?} is written by the transport")]
    Reserved(String),
}

impl Request {
    /// A request without headers or body.
    pub fn new(method: &str, path: &str) -> Request {
        Request {
            method: method.to_string(),
            path: path.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header (in order; duplicates are kept).
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets the body and its `Content-Type`.
    pub fn body(mut self, content_type: &str, body: Vec<u8>) -> Request {
        self.headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case("content-type"));
        self.headers
            .push(("Content-Type".to_string(), content_type.to_string()));
        self.body = body;
        self
    }

    /// The bytes on the wire: request line, `Host`, the headers, `Content-Length` (when there is
    /// a body, or for POST and PUT), `Connection: close`, the body. A `Host` header among
    /// `headers` (a signer may add one) must name `host` and is then not repeated.
    pub fn to_bytes(&self, host: &str) -> Result<Vec<u8>, RequestError> {
        let invalid = |what, value: &str| RequestError::Invalid {
            what,
            value: value.chars().take(64).collect(),
        };
        if !is_token(&self.method) {
            return Err(invalid("method", &self.method));
        }
        if !self.path.starts_with('/') || !self.path.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid("path", &self.path));
        }
        if host.is_empty() || !host.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid("host", host));
        }
        let mut r = format!("{} {} HTTP/1.1\r\nHost: {host}\r\n", self.method, self.path);
        for (name, value) in &self.headers {
            if !is_token(name) {
                return Err(invalid("header name", name));
            }
            if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
                return Err(invalid("header value", value));
            }
            if name.eq_ignore_ascii_case("host") {
                if !value.trim().eq_ignore_ascii_case(host) {
                    return Err(invalid("Host header (not the endpoint's)", value));
                }
                continue;
            }
            if ["content-length", "transfer-encoding", "connection"]
                .iter()
                .any(|h| name.eq_ignore_ascii_case(h))
            {
                return Err(RequestError::Reserved(name.clone()));
            }
            r.push_str(&format!("{name}: {}\r\n", value.trim()));
        }
        if !self.body.is_empty() || self.method == "POST" || self.method == "PUT" {
            r.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        r.push_str("Connection: close\r\n\r\n");
        let mut bytes = r.into_bytes();
        bytes.extend_from_slice(&self.body);
        Ok(bytes)
    }
}

/// RFC 9110 token characters (method, header name).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The IMDS form: a request without body; PUT gets `Content-Length: 0`. The caller passes
/// values it has checked (printable, no CR/LF).
pub fn build_request(method: &str, path: &str, host: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "PUT" {
        r.push_str("Content-Length: 0\r\n");
    }
    r.push_str("Connection: close\r\n\r\n");
    r.into_bytes()
}

/// Why a response could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("incomplete")]
    Incomplete,
    #[error("larger than {max} bytes")]
    TooLarge { max: usize },
    #[error("bad status line")]
    StatusLine,
    #[error("bad header line")]
    Header,
    #[error("bad or conflicting Content-Length")]
    ContentLength,
    #[error("unsupported Transfer-Encoding (only chunked is)")]
    TransferEncoding,
    #[error("bad chunk size line")]
    ChunkSize,
    #[error("chunk data not followed by CRLF")]
    ChunkFraming,
    #[error("bad trailer section")]
    Trailer,
}

/// A parsed HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// As received, in order (trailers of a chunked body not included).
    pub headers: Vec<(String, String)>,
    /// Decoded (de-chunked).
    pub body: Vec<u8>,
}

impl Response {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `Date` header as a time: the server's clock, to detect our own clock's skew.
    pub fn date(&self) -> Option<SystemTime> {
        parse_http_date(self.header("date")?)
    }
}

/// [`parse_response_max`] with [`MAX_RESPONSE`].
pub fn parse_response(bytes: &[u8], eof: bool) -> Result<Response, ResponseError> {
    parse_response_max(bytes, eof, MAX_RESPONSE)
}

/// Parses `bytes` received so far. `eof`: the peer closed, so a body without Content-Length or
/// chunking ends here. Returns [`ResponseError::Incomplete`] when more bytes are needed (also at
/// EOF: the caller reports a truncated answer), and [`ResponseError::TooLarge`] as soon as the
/// bytes (head and body as sent) are known to exceed `max`.
pub fn parse_response_max(bytes: &[u8], eof: bool, max: usize) -> Result<Response, ResponseError> {
    let too_large = ResponseError::TooLarge { max };
    let Some(head_end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        if bytes.len() > max {
            return Err(too_large);
        }
        return Err(ResponseError::Incomplete);
    };
    if head_end + 4 > max {
        return Err(too_large);
    }
    let head = std::str::from_utf8(&bytes[..head_end]).map_err(|_| ResponseError::Header)?;
    let body = &bytes[head_end + 4..];
    let mut lines = head.split("\r\n");
    let status = parse_status_line(lines.next().unwrap_or(""))?;
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line.split_once(':').ok_or(ResponseError::Header)?;
        if name.is_empty() || name.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err(ResponseError::Header);
        }
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            if value.is_empty() || value.len() > 9 || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ResponseError::ContentLength);
            }
            let n: usize = value.parse().map_err(|_| ResponseError::ContentLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(ResponseError::ContentLength);
            }
            if n > max {
                return Err(too_large);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Only a lone `chunked`: any other coding would need a decoder we do not carry.
            if !value.eq_ignore_ascii_case("chunked") || chunked {
                return Err(ResponseError::TransferEncoding);
            }
            chunked = true;
        }
        headers.push((name.to_string(), value.to_string()));
    }
    if chunked {
        // Both framings at once is how responses get smuggled: refuse rather than pick one.
        if length.is_some() {
            return Err(ResponseError::ContentLength);
        }
        if bytes.len() > max {
            return Err(too_large);
        }
        let body = decode_chunked(body)?;
        return Ok(Response {
            status,
            headers,
            body,
        });
    }
    if head_end + 4 + length.unwrap_or(body.len()) > max {
        return Err(too_large);
    }
    let body = match length {
        Some(n) if body.len() >= n => body[..n].to_vec(),
        Some(_) => return Err(ResponseError::Incomplete),
        None if eof => body.to_vec(),
        None => return Err(ResponseError::Incomplete),
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// Decodes a complete `chunked` body (RFC 9112 7.1): `size[;ext]CRLF data CRLF`, ..., `0CRLF`,
/// trailer lines, CRLF. Extensions and trailers are checked for shape and dropped.
fn decode_chunked(mut rest: &[u8]) -> Result<Vec<u8>, ResponseError> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = find_crlf(rest) else {
            return Err(if rest.len() > MAX_CHUNK_LINE {
                ResponseError::ChunkSize
            } else {
                ResponseError::Incomplete
            });
        };
        if eol > MAX_CHUNK_LINE {
            return Err(ResponseError::ChunkSize);
        }
        let size = parse_chunk_size(&rest[..eol])?;
        rest = &rest[eol + 2..];
        if size == 0 {
            check_trailers(rest)?;
            return Ok(out);
        }
        if rest.len() < size + 2 {
            return Err(ResponseError::Incomplete);
        }
        if &rest[size..size + 2] != b"\r\n" {
            return Err(ResponseError::ChunkFraming);
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

/// `1a3f`, `1a3f;name=value`, `1a3f ; name`: the hex size and optional extensions.
fn parse_chunk_size(line: &[u8]) -> Result<usize, ResponseError> {
    let hex_len = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    // Seven hex digits are 256 MiB, far beyond any limit; more could overflow.
    if hex_len == 0 || hex_len > 7 {
        return Err(ResponseError::ChunkSize);
    }
    let ext = &line[hex_len..];
    let ext_ok = ext.is_empty()
        || (ext.iter().find(|b| **b != b' ' && **b != b'\t') == Some(&b';')
            && ext.iter().all(|b| !b.is_ascii_control() || *b == b'\t'));
    if !ext_ok {
        return Err(ResponseError::ChunkSize);
    }
    let hex = std::str::from_utf8(&line[..hex_len]).map_err(|_| ResponseError::ChunkSize)?;
    usize::from_str_radix(hex, 16).map_err(|_| ResponseError::ChunkSize)
}

/// After the last chunk: `name: value` lines up to an empty line.
fn check_trailers(mut rest: &[u8]) -> Result<(), ResponseError> {
    let mut seen = 0usize;
    loop {
        let Some(eol) = find_crlf(rest) else {
            return Err(if rest.len() > MAX_CHUNK_LINE {
                ResponseError::Trailer
            } else {
                ResponseError::Incomplete
            });
        };
        if eol == 0 {
            return Ok(());
        }
        seen += eol + 2;
        if seen > MAX_CHUNK_LINE {
            return Err(ResponseError::Trailer);
        }
        let line = &rest[..eol];
        let colon = line
            .iter()
            .position(|b| *b == b':')
            .ok_or(ResponseError::Trailer)?;
        if colon == 0 || !line[..colon].iter().all(|b| b.is_ascii_graphic()) {
            return Err(ResponseError::Trailer);
        }
        rest = &rest[eol + 2..];
    }
}

fn parse_status_line(line: &str) -> Result<u16, ResponseError> {
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let code = parts.next().unwrap_or("");
    if !(version == "HTTP/1.1" || version == "HTTP/1.0")
        || code.len() != 3
        || !code.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(ResponseError::StatusLine);
    }
    let status: u16 = code.parse().map_err(|_| ResponseError::StatusLine)?;
    if !(100..=599).contains(&status) {
        return Err(ResponseError::StatusLine);
    }
    Ok(status)
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form every current server sends.
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let (_weekday, rest) = s.split_once(", ")?;
    let mut parts = rest.split(' ');
    let day: u32 = parts.next().filter(|d| d.len() == 2)?.parse().ok()?;
    let month = parts.next()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == month)? as u32
        + 1;
    let year: i64 = parts.next().filter(|y| y.len() == 4)?.parse().ok()?;
    let time = parts.next()?;
    if parts.next()? != "GMT" || parts.next().is_some() {
        return None;
    }
    let mut hms = time.split(':').map(|p| {
        if p.len() == 2 {
            p.parse::<u32>().ok()
        } else {
            None
        }
    });
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    if hms.next().is_some() || h > 23 || m > 59 || sec > 60 || day == 0 || day > 31 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86400 + i64::from(h * 3600 + m * 60 + sec);
    let secs = u64::try_from(secs).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imds_request_bytes() {
        assert_eq!(
            String::from_utf8(build_request(
                "PUT",
                "/latest/api/token",
                "169.254.169.254",
                &[("X-aws-ec2-metadata-token-ttl-seconds", "21600")]
            ))
            .unwrap(),
            "PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\nX-aws-ec2-metadata-token-ttl-seconds: 21600\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn post_with_body() {
        let r = Request::new("POST", "/")
            .header("X-Amz-Date", "20261203T180000Z")
            .header("host", "ec2.eu-west-1.amazonaws.com")
            .body(
                "application/x-www-form-urlencoded; charset=utf-8",
                b"Action=DescribeRouteTables&Version=2016-11-15".to_vec(),
            );
        assert_eq!(
            String::from_utf8(r.to_bytes("ec2.eu-west-1.amazonaws.com").unwrap()).unwrap(),
            "POST / HTTP/1.1\r\nHost: ec2.eu-west-1.amazonaws.com\r\nX-Amz-Date: 20261203T180000Z\r\n\
             Content-Type: application/x-www-form-urlencoded; charset=utf-8\r\nContent-Length: 45\r\n\
             Connection: close\r\n\r\nAction=DescribeRouteTables&Version=2016-11-15"
        );
        let get = Request::new("GET", "/?a=b").to_bytes("h").unwrap();
        assert_eq!(
            String::from_utf8(get).unwrap(),
            "GET /?a=b HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn request_refuses_injection_and_reserved_headers() {
        let bad = [
            Request::new("GE T", "/"),
            Request::new("GET", "no-slash"),
            Request::new("GET", "/a b"),
            Request::new("GET", "/").header("X-A", "v\r\nEvil: 1"),
            Request::new("GET", "/").header("X A", "v"),
            Request::new("GET", "/").header("Host", "other.example"),
        ];
        for r in bad {
            assert!(
                matches!(r.to_bytes("h"), Err(RequestError::Invalid { .. })),
                "{r:?}"
            );
        }
        assert!(matches!(
            Request::new("GET", "/").to_bytes("h\r\n"),
            Err(RequestError::Invalid { what: "host", .. })
        ));
        for name in ["Content-Length", "transfer-encoding", "Connection"] {
            assert_eq!(
                Request::new("GET", "/").header(name, "1").to_bytes("h"),
                Err(RequestError::Reserved(name.to_string()))
            );
        }
    }

    #[test]
    fn parses_content_length_body_and_keeps_headers() {
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\ncontent-length: 5\r\nx-amzn-RequestId: abc-123\r\nDate: Thu, 03 Dec 2026 18:00:00 GMT\r\n\r\nhelloEXTRA",
            false,
        )
        .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"hello");
        assert_eq!(r.header("X-Amzn-RequestId"), Some("abc-123"));
        assert_eq!(r.header("content-type"), Some("text/plain"));
        assert_eq!(r.header("missing"), None);
        assert_eq!(
            r.date(),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_320_800))
        );
    }

    #[test]
    fn http_dates() {
        let at = |s| {
            parse_http_date(s).map(|t| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs())
        };
        assert_eq!(at("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(at("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(at("Tue, 29 Feb 2028 23:59:59 GMT"), Some(1_835_481_599));
        for bad in [
            "",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 GMT x",
            "Sun, 01 Jan 1969 00:00:00 GMT",
        ] {
            assert_eq!(at(bad), None, "{bad}");
        }
    }

    #[test]
    fn incomplete_until_enough_bytes() {
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n", false),
            Err(ResponseError::Incomplete)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", false),
            Err(ResponseError::Incomplete)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", true),
            Err(ResponseError::Incomplete)
        );
        // Without Content-Length the body ends at EOF.
        assert_eq!(
            parse_response(b"HTTP/1.0 404 Not Found\r\n\r\nnope", false),
            Err(ResponseError::Incomplete)
        );
        let r = parse_response(b"HTTP/1.0 404 Not Found\r\n\r\nnope", true).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"nope"[..]));
    }

    #[test]
    fn rejects_garbage() {
        let too_large = ResponseError::TooLarge { max: MAX_RESPONSE };
        for (bytes, err) in [
            (&b"SSH-2.0-OpenSSH\r\n\r\n"[..], ResponseError::StatusLine),
            (b"HTTP/1.1 20 OK\r\n\r\n", ResponseError::StatusLine),
            (b"HTTP/1.1 999 OK\r\n\r\n", ResponseError::StatusLine),
            (b"HTTP/2 200\r\n\r\n", ResponseError::StatusLine),
            (
                b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
                ResponseError::Header,
            ),
            (b"HTTP/1.1 200 OK\r\n: v\r\n\r\n", ResponseError::Header),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                ResponseError::ContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
                ResponseError::ContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n",
                too_large.clone(),
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                ResponseError::TransferEncoding,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                ResponseError::TransferEncoding,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
                ResponseError::ContentLength,
            ),
            (b"HTTP/1.1 200 OK\r\nX: \xff\r\n\r\n", ResponseError::Header),
        ] {
            assert_eq!(
                parse_response(bytes, true),
                Err(err.clone()),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        let huge = vec![b'a'; MAX_RESPONSE + 1];
        assert_eq!(parse_response(&huge, false), Err(too_large.clone()));
        let mut big = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        big.extend(vec![b'a'; MAX_RESPONSE]);
        assert_eq!(parse_response(&big, true), Err(too_large));
        // The AWS limit takes it.
        let r = parse_response_max(&big, true, MAX_AWS_RESPONSE).unwrap();
        assert_eq!(r.body.len(), MAX_RESPONSE);
    }

    const CHUNKED_HEAD: &[u8] =
        b"HTTP/1.1 200 OK\r\nx-amzn-requestid: r-1\r\nTransfer-Encoding: chunked\r\n\r\n";

    fn chunked(body: &[u8]) -> Vec<u8> {
        [CHUNKED_HEAD, body].concat()
    }

    #[test]
    fn chunked_bodies_decode() {
        for (wire, want) in [
            (
                &b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"[..],
                &b"hello world"[..],
            ),
            // Upper- and lower-case hex, leading zeros.
            (
                b"000A\r\n0123456789\r\n0b\r\nabcdefghijk\r\n0\r\n\r\n",
                b"0123456789abcdefghijk",
            ),
            // Extensions, with and without whitespace before the semicolon.
            (
                b"5;name=value\r\nhello\r\n1 ; x\r\n!\r\n0;last\r\n\r\n",
                b"hello!",
            ),
            // Trailers are accepted and dropped.
            (
                b"3\r\nabc\r\n0\r\nChecksum: 1234\r\nX-Other: y\r\n\r\n",
                b"abc",
            ),
            // Data may contain CRLF.
            (b"4\r\n\r\n\r\n\r\n0\r\n\r\n", b"\r\n\r\n"),
            (b"0\r\n\r\n", b""),
        ] {
            let r = parse_response(&chunked(wire), false).unwrap();
            assert_eq!(r.body, want, "{:?}", String::from_utf8_lossy(wire));
            assert_eq!(r.header("X-Amzn-RequestId"), Some("r-1"));
        }
    }

    #[test]
    fn chunked_split_reads_are_incomplete_until_the_end() {
        let full = chunked(b"5;e=1\r\nhello\r\n6\r\n world\r\n0\r\nT: v\r\n\r\n");
        let head = CHUNKED_HEAD.len();
        for cut in head..full.len() {
            for eof in [false, true] {
                assert_eq!(
                    parse_response(&full[..cut], eof),
                    Err(ResponseError::Incomplete),
                    "cut at {cut}"
                );
            }
        }
        assert_eq!(parse_response(&full, false).unwrap().body, b"hello world");
    }

    #[test]
    fn chunked_malformed() {
        for (wire, err) in [
            (&b"x\r\nhello\r\n0\r\n\r\n"[..], ResponseError::ChunkSize),
            (b"\r\nhello\r\n0\r\n\r\n", ResponseError::ChunkSize),
            (b"-5\r\nhello\r\n0\r\n\r\n", ResponseError::ChunkSize),
            (b"0x5\r\nhello\r\n0\r\n\r\n", ResponseError::ChunkSize),
            (b"5 junk\r\nhello\r\n0\r\n\r\n", ResponseError::ChunkSize),
            (b"5;a\x01\r\nhello\r\n0\r\n\r\n", ResponseError::ChunkSize),
            // Would overflow (or be absurd).
            (b"ffffffffffffffffff\r\n", ResponseError::ChunkSize),
            (b"10000000\r\n", ResponseError::ChunkSize),
            // Data longer than its size says.
            (b"3\r\nhello\r\n0\r\n\r\n", ResponseError::ChunkFraming),
            (b"5\r\nhelloXY0\r\n\r\n", ResponseError::ChunkFraming),
            (b"0\r\nno colon\r\n\r\n", ResponseError::Trailer),
            (b"0\r\n: v\r\n\r\n", ResponseError::Trailer),
        ] {
            assert_eq!(
                parse_response(&chunked(wire), true),
                Err(err),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
        // A size line that never ends is refused once it is too long to be one.
        let endless = chunked(&vec![b'1'; MAX_CHUNK_LINE + 1]);
        assert_eq!(
            parse_response(&endless, false),
            Err(ResponseError::ChunkSize)
        );
        let endless_trailer =
            chunked(&[&b"0\r\nX: "[..], &vec![b'a'; MAX_CHUNK_LINE + 1]].concat());
        assert_eq!(
            parse_response(&endless_trailer, false),
            Err(ResponseError::Trailer)
        );
    }

    #[test]
    fn chunked_size_is_bounded() {
        // Declared size beyond the limit: refused once the bytes exceed it, not buffered forever.
        let mut wire = chunked(b"fffff\r\n");
        wire.extend(vec![b'a'; 600]);
        assert_eq!(
            parse_response_max(&wire, false, 512),
            Err(ResponseError::TooLarge { max: 512 })
        );
        assert_eq!(
            parse_response_max(&wire, false, 4096),
            Err(ResponseError::Incomplete)
        );
    }

    /// The fuzz target's properties (fuzz_targets/http_response.rs) over deterministic
    /// mutations of complete responses, so they are checked on every `cargo test`.
    #[test]
    fn parser_properties_hold_under_mutation() {
        let seeds: [&[u8]; 3] = [
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;e=1\r\nhello\r\n6\r\n world\r\n0\r\nT: v\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nDate: Thu, 03 Dec 2026 18:00:00 GMT\r\n\r\nhello",
            b"HTTP/1.0 404 Not Found\r\n\r\nnope",
        ];
        let alphabet = b"\r\n:;0123456789abcdefABCDEF -xHTP/.\t";
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        let max = 256;
        let mut complete = 0;
        for round in 0..30_000 {
            let mut data = seeds[round % seeds.len()].to_vec();
            for _ in 0..1 + next(4) {
                let at = next(data.len() + 1);
                let b = alphabet[next(alphabet.len())];
                match next(3) {
                    0 if at < data.len() => data[at] = b,
                    1 if at < data.len() => {
                        data.remove(at);
                    }
                    _ => data.insert(at, b),
                }
            }
            let Ok(r) = parse_response_max(&data, false, max) else {
                let _ = parse_response_max(&data, true, max);
                continue;
            };
            complete += 1;
            assert!(r.body.len() <= data.len());
            let mut more = data.clone();
            more.extend_from_slice(b"0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n");
            if more.len() <= max {
                assert_eq!(
                    parse_response_max(&more, false, max),
                    Ok(r.clone()),
                    "{data:?}"
                );
            }
            let cut = parse_response_max(&data[..data.len() - 1], false, max);
            assert!(
                cut == Err(ResponseError::Incomplete) || cut == Ok(r),
                "{:?}: {cut:?}",
                String::from_utf8_lossy(&data)
            );
        }
        // The mutations kept enough responses whole for the properties to have been exercised.
        assert!(complete > 1_000, "{complete}");
    }
}
