//! Blocking HTTPS/1.1 client for nat-init's AWS calls (EC2, CloudWatch): one request per
//! connection over a `std::net::TcpStream`, every step (connect, handshake, write, read) bounded
//! by the caller's deadline. AWS calls are rare (boot, failover, a metric a minute), so neither
//! keep-alive nor an async runtime earns its weight in a static PID-1-supervised binary.
//!
//! The caller resolves the name ([`crate::dns`]) and passes the address; the name is the SNI
//! and what the certificate must be valid for. Messages are [`crate::http`]'s.
//!
//! TLS is rustls (1.2 and 1.3), verifying against Mozilla's roots (`webpki-roots`, compiled in)
//! plus, for test images, extra roots from a PEM bundle. The crypto provider is
//! `rustls-graviola`: graviola's primitives are Rust with aarch64 (and x86_64) assembly written
//! as Rust inline asm, so the static aarch64-musl binary still builds with nothing but rustc and
//! rust-lld. `ring` and `aws-lc-rs` would both need a C cross compiler (and aws-lc-rs cmake) in
//! the image build. Graviola needs the aes, sha2, pmull and neon CPU features, which every
//! Graviton has. Its algorithms are those of rustls' ring provider (ECDHE X25519/P-256/P-384,
//! AES-GCM, ChaCha20-Poly1305, ECDSA and RSA signatures), which is what AWS endpoints offer.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{CertificateError, ClientConfig, ClientConnection, RootCertStore};

use crate::http::{MAX_AWS_RESPONSE, Request, RequestError, Response, ResponseError};

/// What was wrong with the server's certificate. `Expired` and `NotValidYet` usually mean our
/// own clock is wrong (see [`CertificateProblem::hints_at_clock`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateProblem {
    UnknownIssuer,
    Expired,
    NotValidYet,
    WrongName,
    Revoked,
    /// Bad signature, bad encoding, unsupported algorithm, wrong key usage, ...
    Other,
}

impl CertificateProblem {
    pub fn hints_at_clock(self) -> bool {
        matches!(
            self,
            CertificateProblem::Expired | CertificateProblem::NotValidYet
        )
    }

    fn describe(self) -> &'static str {
        match self {
            CertificateProblem::UnknownIssuer => "unknown issuer",
            CertificateProblem::Expired => "expired (or our clock is ahead)",
            CertificateProblem::NotValidYet => "not valid yet (or our clock is behind)",
            CertificateProblem::WrongName => "not valid for the host name",
            CertificateProblem::Revoked => "revoked",
            CertificateProblem::Other => "invalid",
        }
    }

    /// The certificate problem behind a TLS error, if that is what it is.
    pub fn of(e: &rustls::Error) -> Option<CertificateProblem> {
        let rustls::Error::InvalidCertificate(c) = e else {
            return None;
        };
        Some(match c {
            CertificateError::UnknownIssuer => CertificateProblem::UnknownIssuer,
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                CertificateProblem::Expired
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                CertificateProblem::NotValidYet
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                CertificateProblem::WrongName
            }
            CertificateError::Revoked => CertificateProblem::Revoked,
            _ => CertificateProblem::Other,
        })
    }
}

/// One step of an exchange, for errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Connect,
    Handshake,
    Write,
    Read,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Connect => "connect",
            Stage::Handshake => "TLS handshake",
            Stage::Write => "sending the request",
            Stage::Read => "reading the response",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HttpsError {
    #[error("extra root certificates: {0}")]
    Roots(String),
    #[error("TLS configuration: {0}")]
    Config(#[source] rustls::Error),
    #[error("{host:?} is not a valid TLS server name")]
    Host { host: String },
    #[error("{host}: request: {source}")]
    Request {
        host: String,
        #[source]
        source: RequestError,
    },
    #[error("{host} ({addr}): {stage}: {source}")]
    Io {
        host: String,
        addr: SocketAddr,
        stage: Stage,
        #[source]
        source: std::io::Error,
    },
    #[error("{host} ({addr}): deadline passed during {stage}")]
    Timeout {
        host: String,
        addr: SocketAddr,
        stage: Stage,
    },
    #[error("{host} ({addr}): certificate {}: {source}", problem.describe())]
    Certificate {
        host: String,
        addr: SocketAddr,
        problem: CertificateProblem,
        #[source]
        source: rustls::Error,
    },
    #[error("{host} ({addr}): TLS: {source}")]
    Tls {
        host: String,
        addr: SocketAddr,
        #[source]
        source: rustls::Error,
    },
    #[error("{host} ({addr}): bad response: {source}")]
    Response {
        host: String,
        addr: SocketAddr,
        #[source]
        source: ResponseError,
    },
    #[error("{host} ({addr}): connection closed before the response was complete")]
    Truncated { host: String, addr: SocketAddr },
}

/// A TLS client configuration, built once and shared by every request.
#[derive(Debug, Clone)]
pub struct HttpsClient {
    config: Arc<ClientConfig>,
    max_response: usize,
}

impl HttpsClient {
    /// Mozilla's roots, plus every certificate in `extra_roots_pem` (a PEM bundle; at least one
    /// certificate when given).
    pub fn new(extra_roots_pem: Option<&[u8]>) -> Result<HttpsClient, HttpsError> {
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(pem) = extra_roots_pem {
            let mut added = 0;
            for (i, cert) in CertificateDer::pem_slice_iter(pem).enumerate() {
                let cert =
                    cert.map_err(|e| HttpsError::Roots(format!("certificate {}: {e}", i + 1)))?;
                roots
                    .add(cert)
                    .map_err(|e| HttpsError::Roots(format!("certificate {}: {e}", i + 1)))?;
                added += 1;
            }
            if added == 0 {
                return Err(HttpsError::Roots(
                    "no CERTIFICATE block in the PEM bundle".to_string(),
                ));
            }
        }
        let provider = Arc::new(rustls_graviola::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(HttpsError::Config)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(HttpsClient {
            config: Arc::new(config),
            max_response: MAX_AWS_RESPONSE,
        })
    }

    /// The largest response accepted (head and body as sent); [`MAX_AWS_RESPONSE`] by default.
    pub fn with_max_response(mut self, max: usize) -> HttpsClient {
        self.max_response = max;
        self
    }

    /// Sends `req` to `host` at `addr` and reads the whole response, all before `deadline`.
    pub fn send(
        &self,
        host: &str,
        addr: SocketAddr,
        req: &Request,
        deadline: Instant,
    ) -> Result<Response, HttpsError> {
        let bytes = req.to_bytes(host).map_err(|source| HttpsError::Request {
            host: host.to_string(),
            source,
        })?;
        let name = ServerName::try_from(host.to_string()).map_err(|_| HttpsError::Host {
            host: host.to_string(),
        })?;
        let conn =
            ClientConnection::new(self.config.clone(), name).map_err(|source| HttpsError::Tls {
                host: host.to_string(),
                addr,
                source,
            })?;
        let mut x = Exchange {
            host,
            addr,
            deadline,
            conn,
        };
        let mut sock = x.connect()?;
        x.handshake(&mut sock)?;
        x.write(&mut sock, &bytes)?;
        x.read(&mut sock, self.max_response)
    }
}

/// One connection's state, for error context.
struct Exchange<'a> {
    host: &'a str,
    addr: SocketAddr,
    deadline: Instant,
    conn: ClientConnection,
}

impl Exchange<'_> {
    fn timeout(&self, stage: Stage) -> HttpsError {
        HttpsError::Timeout {
            host: self.host.to_string(),
            addr: self.addr,
            stage,
        }
    }

    fn io(&self, stage: Stage, source: std::io::Error) -> HttpsError {
        if matches!(
            source.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            return self.timeout(stage);
        }
        HttpsError::Io {
            host: self.host.to_string(),
            addr: self.addr,
            stage,
            source,
        }
    }

    fn tls(&self, source: rustls::Error) -> HttpsError {
        let host = self.host.to_string();
        let addr = self.addr;
        match CertificateProblem::of(&source) {
            Some(problem) => HttpsError::Certificate {
                host,
                addr,
                problem,
                source,
            },
            None => HttpsError::Tls { host, addr, source },
        }
    }

    /// Time left, or the timeout error for `stage`.
    fn left(&self, stage: Stage) -> Result<std::time::Duration, HttpsError> {
        self.deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| self.timeout(stage))
    }

    fn connect(&self) -> Result<TcpStream, HttpsError> {
        let left = self.left(Stage::Connect)?;
        let sock =
            TcpStream::connect_timeout(&self.addr, left).map_err(|e| self.io(Stage::Connect, e))?;
        // The request goes out in one write; no need to wait for ACKs of the handshake.
        sock.set_nodelay(true)
            .map_err(|e| self.io(Stage::Connect, e))?;
        Ok(sock)
    }

    /// Writes whatever TLS records are pending.
    fn flush(&mut self, sock: &mut TcpStream, stage: Stage) -> Result<(), HttpsError> {
        while self.conn.wants_write() {
            let left = self.left(stage)?;
            sock.set_write_timeout(Some(left))
                .map_err(|e| self.io(stage, e))?;
            match self.conn.write_tls(sock) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io(stage, e)),
            }
        }
        Ok(())
    }

    /// Reads one batch of TLS records and processes them. Returns false at TCP EOF.
    fn receive(&mut self, sock: &mut TcpStream, stage: Stage) -> Result<bool, HttpsError> {
        let left = self.left(stage)?;
        sock.set_read_timeout(Some(left))
            .map_err(|e| self.io(stage, e))?;
        let n = loop {
            match self.conn.read_tls(sock) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io(stage, e)),
            }
        };
        if let Err(e) = self.conn.process_new_packets() {
            // Tell the server why (the alert rustls queued), best effort and still bounded.
            if let Ok(left) = self.left(stage) {
                let _ = sock.set_write_timeout(Some(left));
                let _ = self.conn.write_tls(sock);
            }
            return Err(self.tls(e));
        }
        Ok(n > 0)
    }

    fn handshake(&mut self, sock: &mut TcpStream) -> Result<(), HttpsError> {
        while self.conn.is_handshaking() {
            self.flush(sock, Stage::Handshake)?;
            if self.conn.is_handshaking() && !self.receive(sock, Stage::Handshake)? {
                return Err(self.io(
                    Stage::Handshake,
                    std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "server closed the connection",
                    ),
                ));
            }
        }
        Ok(())
    }

    fn write(&mut self, sock: &mut TcpStream, bytes: &[u8]) -> Result<(), HttpsError> {
        self.conn
            .writer()
            .write_all(bytes)
            .map_err(|e| self.io(Stage::Write, e))?;
        self.flush(sock, Stage::Write)
    }

    fn read(&mut self, sock: &mut TcpStream, max: usize) -> Result<Response, HttpsError> {
        let mut buf = Vec::with_capacity(16 * 1024);
        let mut plain = [0u8; 16 * 1024];
        loop {
            // `eof`: the server said close_notify, so a body without framing ends here.
            // `cut`: TCP closed without it, so nothing more will come but the end is not proven.
            let (mut eof, mut cut) = (false, false);
            loop {
                match self.conn.reader().read(&mut plain) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => buf.extend_from_slice(&plain[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                        cut = true;
                        break;
                    }
                    Err(e) => return Err(self.io(Stage::Read, e)),
                }
                if buf.len() > max {
                    break;
                }
            }
            match crate::http::parse_response_max(&buf, eof, max) {
                Ok(r) => return Ok(r),
                Err(ResponseError::Incomplete) if eof || cut => {
                    return Err(HttpsError::Truncated {
                        host: self.host.to_string(),
                        addr: self.addr,
                    });
                }
                Err(ResponseError::Incomplete) => {}
                Err(source) => {
                    return Err(HttpsError::Response {
                        host: self.host.to_string(),
                        addr: self.addr,
                        source,
                    });
                }
            }
            self.flush(sock, Stage::Read)?;
            if !self.receive(sock, Stage::Read)? && !self.conn.wants_read() {
                // EOF that rustls did not turn into a reader state: nothing more will come.
                return Err(HttpsError::Truncated {
                    host: self.host.to_string(),
                    addr: self.addr,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests;
