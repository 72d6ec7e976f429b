//! IMDSv2 client: the VPC's CIDR blocks, the instance id and the user-data, read at boot and
//! again in the background until IMDS answers.
//!
//! Written on a plain `TcpStream` with the messages of [`crate::http`] rather than with an HTTP
//! crate: IMDS is a link-local plain HTTP/1.1 endpoint with no TLS or redirects, and five small
//! requests do not justify an HTTP stack in a static PID-1-supervised binary. Every request carries a deadline so a boot
//! without IMDS costs at most [`Endpoint::budget`].

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

use crate::cidr::Ipv4Cidr;
use crate::http::{Response, ResponseError, build_request, parse_response};

/// Token lifetime asked for: the maximum, six hours (each fetch asks for a token of its own).
const TOKEN_TTL_S: u32 = 21600;

/// Where and how patiently to ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// Per connection attempt.
    pub connect_timeout: Duration,
    /// Per request attempt, from connect to the last byte.
    pub request_timeout: Duration,
    /// Attempts per request (connection errors, timeouts, 429 and 5xx are retried).
    pub attempts: u32,
    /// Bound on the whole [`fetch`].
    pub budget: Duration,
}

impl Default for Endpoint {
    fn default() -> Self {
        Self {
            addr: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(169, 254, 169, 254), 80)),
            connect_timeout: Duration::from_millis(300),
            request_timeout: Duration::from_millis(500),
            attempts: 3,
            budget: Duration::from_secs(2),
        }
    }
}

/// What nat-init uses from IMDS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImdsData {
    /// The primary interface's MAC, `0a:1b:2c:3d:4e:5f`.
    pub mac: String,
    pub vpc_cidrs: Vec<Ipv4Cidr>,
    pub instance_id: String,
    /// `None` when the instance has no user-data (404). Invalid UTF-8 is replaced (U+FFFD) so
    /// the config parser reports it with a location.
    pub user_data: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImdsError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: no complete answer in time (budget {budget:?})")]
    Budget { what: String, budget: Duration },
    #[error("{what}: HTTP status {status}")]
    Status { what: String, status: u16 },
    #[error("{what}: bad response: {source}")]
    Response {
        what: String,
        #[source]
        source: ResponseError,
    },
    #[error("{what}: unexpected content: {detail}")]
    Content { what: String, detail: String },
}

/// `0a:1b:2c:3d:4e:5f`; it goes into a URL path, so nothing else is accepted.
pub fn parse_mac(body: &str) -> Option<String> {
    let mac = body.trim();
    let ok = mac.len() == 17
        && mac.split(':').count() == 6
        && mac
            .split(':')
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    ok.then(|| mac.to_ascii_lowercase())
}

/// The `vpc-ipv4-cidr-blocks` document: one CIDR a line.
pub fn parse_cidr_lines(body: &str) -> Result<Vec<Ipv4Cidr>, String> {
    let mut out = Vec::new();
    for line in body.lines().map(str::trim).filter(|l| !l.is_empty()) {
        out.push(line.parse::<Ipv4Cidr>().map_err(|e| e.to_string())?);
    }
    if out.is_empty() {
        return Err("no CIDR blocks".to_string());
    }
    Ok(out)
}

/// One request with retries, within `deadline`.
fn request(
    ep: &Endpoint,
    deadline: Instant,
    what: &str,
    raw: &[u8],
) -> Result<Response, ImdsError> {
    let mut last: Option<ImdsError> = None;
    for attempt in 0..ep.attempts.max(1) {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if attempt > 0 {
            // A short pause so a refused connection does not spin through the attempts.
            std::thread::sleep(Duration::from_millis(50).min(deadline - now));
        }
        match request_once(ep, deadline, what, raw) {
            // IMDS throttles with 429: as transient as a 5xx.
            Ok(r) if r.status >= 500 || r.status == 429 => {
                last = Some(ImdsError::Status {
                    what: what.to_string(),
                    status: r.status,
                })
            }
            Ok(r) => return Ok(r),
            Err(e @ (ImdsError::Io { .. } | ImdsError::Budget { .. })) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or(ImdsError::Budget {
        what: what.to_string(),
        budget: ep.budget,
    }))
}

fn request_once(
    ep: &Endpoint,
    deadline: Instant,
    what: &str,
    raw: &[u8],
) -> Result<Response, ImdsError> {
    let io = |source: std::io::Error| ImdsError::Io {
        what: what.to_string(),
        source,
    };
    let budget = || ImdsError::Budget {
        what: what.to_string(),
        budget: ep.budget,
    };
    let start = Instant::now();
    let attempt_deadline = deadline.min(start + ep.request_timeout);
    let left = |at: Instant| {
        attempt_deadline
            .checked_duration_since(at)
            .filter(|d| !d.is_zero())
    };
    let connect_for = left(start).ok_or_else(budget)?.min(ep.connect_timeout);
    let mut stream = TcpStream::connect_timeout(&ep.addr, connect_for).map_err(io)?;
    stream
        .set_write_timeout(Some(left(Instant::now()).ok_or_else(budget)?))
        .map_err(io)?;
    stream.write_all(raw).map_err(io)?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let wait = left(Instant::now()).ok_or_else(budget)?;
        stream.set_read_timeout(Some(wait)).map_err(io)?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return Err(budget());
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(e)),
        };
        buf.extend_from_slice(&chunk[..n]);
        match parse_response(&buf, n == 0) {
            Ok(r) => return Ok(r),
            Err(ResponseError::Incomplete) if n > 0 => continue,
            Err(source) => {
                return Err(ImdsError::Response {
                    what: what.to_string(),
                    source,
                });
            }
        }
    }
}

/// Reads the token, then the MAC, the VPC CIDR blocks, the instance id and the user-data.
/// The whole exchange is bounded by `ep.budget`.
pub fn fetch(ep: &Endpoint) -> Result<ImdsData, ImdsError> {
    let s = Session::open(ep, ep.budget)?;
    let get = |what: &str, path: &str| s.get(what, path);

    let mac_text = ok_text("mac", get("mac", "meta-data/mac")?)?;
    let mac = parse_mac(&mac_text).ok_or_else(|| ImdsError::Content {
        what: "mac".to_string(),
        detail: format!("{:?} is not a MAC address", truncate(&mac_text)),
    })?;
    let cidrs_path = format!("meta-data/network/interfaces/macs/{mac}/vpc-ipv4-cidr-blocks");
    let cidrs_text = ok_text(
        "vpc-ipv4-cidr-blocks",
        get("vpc-ipv4-cidr-blocks", &cidrs_path)?,
    )?;
    let vpc_cidrs = parse_cidr_lines(&cidrs_text).map_err(|detail| ImdsError::Content {
        what: "vpc-ipv4-cidr-blocks".to_string(),
        detail,
    })?;
    let id_text = ok_text("instance-id", get("instance-id", "meta-data/instance-id")?)?;
    let instance_id = id_text.trim().to_string();
    if instance_id.is_empty() || !instance_id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ImdsError::Content {
            what: "instance-id".to_string(),
            detail: format!("{:?} is not an instance id", truncate(&instance_id)),
        });
    }
    let ud = get("user-data", "user-data")?;
    let user_data = match ud.status {
        404 => None,
        200 => Some(String::from_utf8_lossy(&ud.body).into_owned()),
        status => {
            return Err(ImdsError::Status {
                what: "user-data".to_string(),
                status,
            });
        }
    };
    Ok(ImdsData {
        mac,
        vpc_cidrs,
        instance_id,
        user_data,
    })
}

fn ok_text(what: &str, r: Response) -> Result<String, ImdsError> {
    if r.status != 200 {
        return Err(ImdsError::Status {
            what: what.to_string(),
            status: r.status,
        });
    }
    String::from_utf8(r.body).map_err(|_| ImdsError::Content {
        what: what.to_string(),
        detail: "not UTF-8".to_string(),
    })
}

/// What the AWS side needs from IMDS besides [`ImdsData`]: where it runs and which ENI is its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsIdentity {
    /// `instance-id`: the metrics' `InstanceId` dimension.
    pub instance_id: String,
    /// `placement/region`.
    pub region: String,
    /// The primary ENI's id (`network/interfaces/macs/<mac>/interface-id`).
    pub interface_id: String,
    /// Its VPC (`.../vpc-id`): route tables found by tag are looked for there only.
    pub vpc_id: String,
    /// Its private addresses (`.../local-ipv4s`), primary first.
    pub local_ipv4s: Vec<Ipv4Addr>,
}

/// An IMDSv2 session: one token, then GETs, all within one deadline.
pub struct Session<'a> {
    ep: &'a Endpoint,
    deadline: Instant,
    host: String,
    token: String,
}

impl<'a> Session<'a> {
    /// Asks for a token; the session's GETs must be done within `budget` from now.
    pub fn open(ep: &'a Endpoint, budget: Duration) -> Result<Self, ImdsError> {
        let deadline = Instant::now() + budget;
        let host = ep.addr.ip().to_string();
        let ttl = TOKEN_TTL_S.to_string();
        let put = build_request(
            "PUT",
            "/latest/api/token",
            &host,
            &[("X-aws-ec2-metadata-token-ttl-seconds", &ttl)],
        );
        let token = ok_text("token", request(ep, deadline, "token", &put)?)?;
        let token = token.trim().to_string();
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ImdsError::Content {
                what: "token".to_string(),
                detail: "empty or not printable".to_string(),
            });
        }
        Ok(Self {
            ep,
            deadline,
            host,
            token,
        })
    }

    /// `GET /latest/<path>`, any status.
    pub fn get(&self, what: &str, path: &str) -> Result<Response, ImdsError> {
        let raw = build_request(
            "GET",
            &format!("/latest/{path}"),
            &self.host,
            &[("X-aws-ec2-metadata-token", &self.token)],
        );
        request(self.ep, self.deadline, what, &raw)
    }

    /// `GET /latest/<path>`, which must answer 200 with UTF-8.
    pub fn text(&self, what: &str, path: &str) -> Result<String, ImdsError> {
        ok_text(what, self.get(what, path)?)
    }
}

/// A single path segment IMDS named (a role name, a region): printable, no `/`, so it can go
/// into a URL path or a host name as it is.
fn segment(what: &str, text: &str) -> Result<String, ImdsError> {
    let t = text.trim();
    let ok = !t.is_empty()
        && t.len() <= 128
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_+=,.@".contains(&b));
    if ok {
        Ok(t.to_string())
    } else {
        Err(ImdsError::Content {
            what: what.to_string(),
            detail: format!("{:?} is not a plain name", truncate(t)),
        })
    }
}

/// The region, the primary ENI's id and its private addresses, for the ENI with `mac`.
pub fn fetch_aws_identity(ep: &Endpoint, mac: &str) -> Result<AwsIdentity, ImdsError> {
    let s = Session::open(ep, ep.budget)?;
    let region = segment("region", &s.text("region", "meta-data/placement/region")?)?;
    let instance_id = segment(
        "instance-id",
        &s.text("instance-id", "meta-data/instance-id")?,
    )?;
    let base = format!("meta-data/network/interfaces/macs/{mac}");
    let eni = s.text("interface-id", &format!("{base}/interface-id"))?;
    let interface_id = segment("interface-id", &eni)?;
    if !interface_id.starts_with("eni-") {
        return Err(ImdsError::Content {
            what: "interface-id".to_string(),
            detail: format!("{interface_id:?} is not an ENI id"),
        });
    }
    let vpc_id = segment("vpc-id", &s.text("vpc-id", &format!("{base}/vpc-id"))?)?;
    let ips = s.text("local-ipv4s", &format!("{base}/local-ipv4s"))?;
    let mut local_ipv4s = Vec::new();
    for line in ips.lines().map(str::trim).filter(|l| !l.is_empty()) {
        local_ipv4s.push(line.parse::<Ipv4Addr>().map_err(|_| ImdsError::Content {
            what: "local-ipv4s".to_string(),
            detail: format!("{:?} is not an IPv4 address", truncate(line)),
        })?);
    }
    Ok(AwsIdentity {
        instance_id,
        region,
        interface_id,
        vpc_id,
        local_ipv4s,
    })
}

/// The instance role's name and its credentials document (JSON, parsed by
/// `aws::credentials`). An instance without a role answers 404 to the listing.
pub fn fetch_role_credentials(ep: &Endpoint) -> Result<(String, String), ImdsError> {
    let s = Session::open(ep, ep.budget)?;
    let listing = s.text("iam role", "meta-data/iam/security-credentials/")?;
    let first = listing.lines().next().unwrap_or_default();
    let role = segment("iam role", first)?;
    let doc = s.text(
        "iam credentials",
        &format!("meta-data/iam/security-credentials/{role}"),
    )?;
    Ok((role, doc))
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    #[test]
    fn mac_and_cidr_documents() {
        assert_eq!(
            parse_mac("0A:1b:2c:3d:4e:5f\n").as_deref(),
            Some("0a:1b:2c:3d:4e:5f")
        );
        for bad in [
            "",
            "0a:1b:2c:3d:4e",
            "0a:1b:2c:3d:4e:5g",
            "0a:1b:2c:3d:4e:5f/../x",
            "0a-1b-2c-3d-4e-5f",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
        assert_eq!(
            parse_cidr_lines("10.0.0.0/16\n100.64.0.0/16\n").unwrap(),
            vec![
                "10.0.0.0/16".parse().unwrap(),
                "100.64.0.0/16".parse().unwrap()
            ]
        );
        assert!(parse_cidr_lines("").is_err());
        assert!(parse_cidr_lines("10.0.0.1/16").is_err());
    }

    /// How the fake IMDS answers one request.
    #[derive(Clone)]
    enum Reply {
        Bytes(Vec<u8>),
        /// Accept, read, never answer (until the test ends).
        Silent,
    }

    fn http(status: &str, body: &str) -> Reply {
        Reply::Bytes(
            format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nServer: EC2ws\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    }

    /// A fake IMDS on 127.0.0.1: `route(request_head)` decides each reply. Returns the
    /// endpoint and the log of request heads.
    fn serve(
        route: impl Fn(&str) -> Reply + Send + 'static,
    ) -> (Endpoint, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                log2.lock().unwrap().push(head.clone());
                match route(&head) {
                    Reply::Bytes(b) => {
                        let _ = conn.write_all(&b);
                    }
                    Reply::Silent => held.push(conn),
                }
            }
        });
        let ep = Endpoint {
            addr,
            ..Endpoint::default()
        };
        (ep, log)
    }

    const TOKEN: &str = "AQAEAFakeToken==";

    fn imds(head: &str, user_data: Option<&str>) -> Reply {
        let first = head.lines().next().unwrap_or("");
        if first.starts_with("PUT /latest/api/token ") {
            if head.contains("X-aws-ec2-metadata-token-ttl-seconds: 21600\r\n") {
                return http("200 OK", TOKEN);
            }
            return http("400 Bad Request", "");
        }
        if !head.contains(&format!("X-aws-ec2-metadata-token: {TOKEN}\r\n")) {
            return http("401 Unauthorized", "");
        }
        match first.split(' ').nth(1).unwrap_or("") {
            "/latest/meta-data/mac" => http("200 OK", "0a:1b:2c:3d:4e:5f"),
            "/latest/meta-data/network/interfaces/macs/0a:1b:2c:3d:4e:5f/vpc-ipv4-cidr-blocks" => {
                http("200 OK", "10.0.0.0/16\n10.1.0.0/16")
            }
            "/latest/meta-data/instance-id" => http("200 OK", "i-0123456789abcdef0"),
            "/latest/user-data" => match user_data {
                Some(u) => http("200 OK", u),
                None => http("404 Not Found", ""),
            },
            _ => http("404 Not Found", ""),
        }
    }

    #[test]
    fn aws_identity_and_role_credentials() {
        let (ep, _) = serve(|h| {
            let first = h.lines().next().unwrap_or("");
            let base = "/latest/meta-data/network/interfaces/macs/0a:1b:2c:3d:4e:5f";
            match first.split(' ').nth(1).unwrap_or("") {
                "/latest/meta-data/placement/region" => http("200 OK", "eu-west-1"),
                p if p == format!("{base}/interface-id") => http("200 OK", "eni-0123456789abcdef0"),
                p if p == format!("{base}/local-ipv4s") => http("200 OK", "10.0.0.10\n10.0.0.40\n"),
                p if p == format!("{base}/vpc-id") => http("200 OK", "vpc-0123456789abcdef0"),
                "/latest/meta-data/iam/security-credentials/" => http("200 OK", "nat-role\n"),
                "/latest/meta-data/iam/security-credentials/nat-role" => {
                    http("200 OK", "{\"Code\":\"Success\"}")
                }
                _ => imds(h, None),
            }
        });
        let id = fetch_aws_identity(&ep, "0a:1b:2c:3d:4e:5f").unwrap();
        assert_eq!(
            id,
            AwsIdentity {
                instance_id: "i-0123456789abcdef0".into(),
                region: "eu-west-1".into(),
                interface_id: "eni-0123456789abcdef0".into(),
                vpc_id: "vpc-0123456789abcdef0".into(),
                local_ipv4s: vec!["10.0.0.10".parse().unwrap(), "10.0.0.40".parse().unwrap()],
            }
        );
        let (role, doc) = fetch_role_credentials(&ep).unwrap();
        assert_eq!(role, "nat-role");
        assert_eq!(doc, "{\"Code\":\"Success\"}");
    }

    #[test]
    fn no_role_and_bad_names_are_errors() {
        let (ep, _) = serve(|h| {
            let first = h.lines().next().unwrap_or("");
            match first.split(' ').nth(1).unwrap_or("") {
                "/latest/meta-data/placement/region" => http("200 OK", "../../etc"),
                _ => imds(h, None),
            }
        });
        let e = fetch_role_credentials(&ep).unwrap_err();
        assert!(matches!(e, ImdsError::Status { status: 404, .. }), "{e}");
        let e = fetch_aws_identity(&ep, "0a:1b:2c:3d:4e:5f").unwrap_err();
        assert!(e.to_string().contains("not a plain name"), "{e}");
    }

    #[test]
    fn fetches_everything() {
        let (ep, log) = serve(|h| imds(h, Some("rp_filter = 2\n")));
        let d = fetch(&ep).unwrap();
        assert_eq!(
            d,
            ImdsData {
                mac: "0a:1b:2c:3d:4e:5f".into(),
                vpc_cidrs: vec![
                    "10.0.0.0/16".parse().unwrap(),
                    "10.1.0.0/16".parse().unwrap()
                ],
                instance_id: "i-0123456789abcdef0".into(),
                user_data: Some("rp_filter = 2\n".into()),
            }
        );
        assert_eq!(log.lock().unwrap().len(), 5);
    }

    #[test]
    fn missing_user_data_is_none() {
        let (ep, _) = serve(|h| imds(h, None));
        assert_eq!(fetch(&ep).unwrap().user_data, None);
    }

    #[test]
    fn token_refused_is_status_401() {
        // A server that hands out a different token than it checks.
        let (ep, _) = serve(|h| {
            if h.starts_with("PUT") {
                http("200 OK", "other-token")
            } else {
                imds(h, None)
            }
        });
        match fetch(&ep) {
            Err(ImdsError::Status { what, status: 401 }) => assert_eq!(what, "mac"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn silent_server_times_out_within_budget() {
        let (ep, log) = serve(|_| Reply::Silent);
        let start = Instant::now();
        let e = fetch(&ep).unwrap_err();
        let took = start.elapsed();
        assert!(matches!(e, ImdsError::Budget { .. }), "{e:?}");
        assert!(took < ep.budget + Duration::from_millis(300), "{took:?}");
        // Retried: one connection per attempt.
        assert_eq!(log.lock().unwrap().len(), 3);
    }

    #[test]
    fn nothing_listening_fails_fast() {
        let addr = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let ep = Endpoint {
            addr,
            ..Endpoint::default()
        };
        let start = Instant::now();
        assert!(matches!(fetch(&ep), Err(ImdsError::Io { .. })));
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn garbage_is_a_response_error() {
        let (ep, _) = serve(|_| Reply::Bytes(b"garbage\r\n\r\n".to_vec()));
        assert!(matches!(
            fetch(&ep),
            Err(ImdsError::Response {
                source: ResponseError::StatusLine,
                ..
            })
        ));
    }

    #[test]
    fn server_errors_and_throttling_are_retried() {
        for status in ["503 Service Unavailable", "429 Too Many Requests"] {
            let count = Arc::new(Mutex::new(0));
            let c2 = count.clone();
            let (ep, _) = serve(move |h| {
                let mut n = c2.lock().unwrap();
                *n += 1;
                if *n == 1 {
                    http(status, "")
                } else {
                    imds(h, None)
                }
            });
            assert_eq!(
                fetch(&ep).unwrap().instance_id,
                "i-0123456789abcdef0",
                "{status}"
            );
            assert_eq!(*count.lock().unwrap(), 6, "{status}");
        }
        // Throttling that lasts is reported as what it is.
        let (ep, _) = serve(|_| http("429 Too Many Requests", ""));
        match fetch(&ep) {
            Err(ImdsError::Status { what, status }) => {
                assert_eq!((what.as_str(), status), ("token", 429));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_documents_are_content_errors() {
        let (ep, _) = serve(|h| {
            if h.contains("/vpc-ipv4-cidr-blocks") {
                http("200 OK", "10.0.0.1/16")
            } else {
                imds(h, None)
            }
        });
        match fetch(&ep) {
            Err(ImdsError::Content { what, detail }) => {
                assert_eq!(what, "vpc-ipv4-cidr-blocks");
                assert!(detail.contains("host bits"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
    }
}
