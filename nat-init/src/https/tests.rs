//! Real TLS handshakes on loopback: a rustls server thread with a CA and leaf certificates made
//! at test time by the `openssl` command (host setup installs it: `hostdeps::NET`).

use super::*;
use crate::http::Request;
use rustls::pki_types::PrivateKeyDer;
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

const HOST: &str = "ec2.test.internal";

const OPENSSL_CNF: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = Test CA TAG
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[leaf_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:ec2.test.internal
";

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a leaf for [`HOST`] signed by it, in their own directory.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// `leaf_days`: the leaf's validity; negative makes it already expired.
    fn new(tag: &str, leaf_days: i32) -> Pki {
        let dir = std::env::temp_dir().join(format!("nat-init-https-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Each CA its own name: a same-named CA would fail as a bad signature, not an unknown
        // issuer.
        std::fs::write(dir.join("c.cnf"), OPENSSL_CNF.replace("TAG", tag)).unwrap();
        let days = leaf_days.to_string();
        for args in [
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                "ca.key",
            ][..],
            &[
                "req",
                "-x509",
                "-new",
                "-config",
                "c.cnf",
                "-extensions",
                "ca_ext",
                "-key",
                "ca.key",
                "-days",
                "2",
                "-out",
                "ca.pem",
            ],
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                "leaf.key",
            ],
            &[
                "req",
                "-new",
                "-config",
                "c.cnf",
                "-key",
                "leaf.key",
                "-subj",
                "/CN=ec2.test.internal",
                "-out",
                "leaf.csr",
            ],
            &[
                "x509",
                "-req",
                "-in",
                "leaf.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                "2",
                "-days",
                &days,
                "-extfile",
                "c.cnf",
                "-extensions",
                "leaf_ext",
                "-out",
                "leaf.pem",
            ],
        ] {
            openssl(&dir, args);
        }
        Pki { dir }
    }

    fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.dir.join("ca.pem")).unwrap()
    }

    fn server_config(&self) -> Arc<ServerConfig> {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(self.dir.join("leaf.pem"))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_file(self.dir.join("leaf.key")).unwrap();
        let config =
            ServerConfig::builder_with_provider(Arc::new(rustls_graviola::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap();
        Arc::new(config)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TLS server on 127.0.0.1 that reads one request head (and its body, by Content-Length) and
/// answers `reply`, in `pieces` writes. Sends what it received on the channel.
fn serve(
    config: Arc<ServerConfig>,
    reply: Vec<u8>,
    pieces: usize,
) -> (SocketAddr, mpsc::Receiver<Result<Vec<u8>, String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let Ok((sock, _)) = listener.accept() else {
            return;
        };
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let conn = ServerConnection::new(config).unwrap();
        let mut tls = StreamOwned::new(conn, sock);
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let result = loop {
            match tls.read(&mut buf) {
                Ok(0) => break Err("eof before a request".to_string()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => break Err(e.to_string()),
            }
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                if got.len() >= end + 4 + len {
                    break Ok(got.clone());
                }
            }
        };
        let ok = result.is_ok();
        let _ = tx.send(result);
        if ok {
            let size = reply.len().div_ceil(pieces.max(1)).max(1);
            for piece in reply.chunks(size) {
                let _ = tls.write_all(piece);
                let _ = tls.flush();
                std::thread::sleep(Duration::from_millis(5));
            }
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    (addr, rx)
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

fn ok_reply(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nx-amzn-requestid: 11111111-2222\r\nContent-Type: text/xml;charset=UTF-8\r\nContent-Length: {}\r\nDate: Thu, 03 Dec 2026 18:00:00 GMT\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn good_chain_posts_and_reads_the_answer() {
    let pki = Pki::new("good", 2);
    let (addr, received) = serve(pki.server_config(), ok_reply("<Response/>"), 1);
    let client = HttpsClient::new(Some(&pki.ca_pem())).unwrap();
    let req = Request::new("POST", "/").body(
        "application/x-www-form-urlencoded; charset=utf-8",
        b"Action=DescribeRouteTables&Version=2016-11-15".to_vec(),
    );
    let r = client.send(HOST, addr, &req, deadline()).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"<Response/>");
    assert_eq!(r.header("X-Amzn-RequestId"), Some("11111111-2222"));
    assert!(r.date().is_some());
    let got = String::from_utf8(received.recv().unwrap().unwrap()).unwrap();
    assert!(
        got.starts_with("POST / HTTP/1.1\r\nHost: ec2.test.internal\r\n"),
        "{got}"
    );
    assert!(
        got.ends_with("\r\n\r\nAction=DescribeRouteTables&Version=2016-11-15"),
        "{got}"
    );
}

#[test]
fn chunked_response_in_many_records_is_decoded() {
    let pki = Pki::new("chunked", 2);
    let mut body = String::new();
    let mut wire = String::from(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nx-amzn-requestid: r-2\r\n\r\n",
    );
    for i in 0..200 {
        let piece = format!("<item>{i}</item>");
        wire.push_str(&format!("{:x};ext=1\r\n{piece}\r\n", piece.len()));
        body.push_str(&piece);
    }
    wire.push_str("0\r\nX-Trailer: t\r\n\r\n");
    let (addr, _rx) = serve(pki.server_config(), wire.into_bytes(), 7);
    let client = HttpsClient::new(Some(&pki.ca_pem())).unwrap();
    let r = client
        .send(HOST, addr, &Request::new("GET", "/"), deadline())
        .unwrap();
    assert_eq!(r.header("x-amzn-requestid"), Some("r-2"));
    assert_eq!(String::from_utf8(r.body).unwrap(), body);
}

#[test]
fn untrusted_ca_is_an_unknown_issuer() {
    let pki = Pki::new("untrusted", 2);
    let other = Pki::new("other", 2);
    let (addr, received) = serve(pki.server_config(), ok_reply("x"), 1);
    // Trusts another CA (and Mozilla's), not the server's.
    let client = HttpsClient::new(Some(&other.ca_pem())).unwrap();
    let e = client
        .send(HOST, addr, &Request::new("GET", "/"), deadline())
        .unwrap_err();
    match &e {
        HttpsError::Certificate { problem, .. } => {
            assert_eq!(*problem, CertificateProblem::UnknownIssuer);
            assert!(!problem.hints_at_clock());
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("unknown issuer"), "{e}");
    // The server saw the handshake fail, not a request.
    assert!(received.recv().unwrap().is_err());
    // Without extra roots at all: the same.
    let (addr, _rx) = serve(pki.server_config(), ok_reply("x"), 1);
    let e = HttpsClient::new(None)
        .unwrap()
        .send(HOST, addr, &Request::new("GET", "/"), deadline())
        .unwrap_err();
    assert!(
        matches!(
            e,
            HttpsError::Certificate {
                problem: CertificateProblem::UnknownIssuer,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn wrong_host_name_is_refused() {
    let pki = Pki::new("name", 2);
    let (addr, _rx) = serve(pki.server_config(), ok_reply("x"), 1);
    let client = HttpsClient::new(Some(&pki.ca_pem())).unwrap();
    let e = client
        .send(
            "monitoring.test.internal",
            addr,
            &Request::new("GET", "/"),
            deadline(),
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            HttpsError::Certificate {
                problem: CertificateProblem::WrongName,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn expired_certificate_hints_at_the_clock() {
    let pki = Pki::new("expired", -1);
    let (addr, _rx) = serve(pki.server_config(), ok_reply("x"), 1);
    let client = HttpsClient::new(Some(&pki.ca_pem())).unwrap();
    let e = client
        .send(HOST, addr, &Request::new("GET", "/"), deadline())
        .unwrap_err();
    match &e {
        HttpsError::Certificate { problem, .. } => {
            assert_eq!(*problem, CertificateProblem::Expired);
            assert!(problem.hints_at_clock());
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("clock"), "{e}");
}

#[test]
fn certificate_problems_are_classified() {
    use rustls::CertificateError as C;
    for (err, want) in [
        (C::UnknownIssuer, CertificateProblem::UnknownIssuer),
        (C::Expired, CertificateProblem::Expired),
        (C::NotValidYet, CertificateProblem::NotValidYet),
        (C::NotValidForName, CertificateProblem::WrongName),
        (C::Revoked, CertificateProblem::Revoked),
        (C::BadSignature, CertificateProblem::Other),
    ] {
        assert_eq!(
            CertificateProblem::of(&rustls::Error::InvalidCertificate(err)),
            Some(want)
        );
    }
    assert!(CertificateProblem::NotValidYet.hints_at_clock());
    assert_eq!(CertificateProblem::of(&rustls::Error::DecryptError), None);
}

#[test]
fn silent_server_times_out_in_the_handshake() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = std::thread::spawn(move || {
        let conn = listener.accept();
        std::thread::sleep(Duration::from_millis(800));
        drop(conn);
    });
    let client = HttpsClient::new(None).unwrap();
    let start = Instant::now();
    let e = client
        .send(
            HOST,
            addr,
            &Request::new("GET", "/"),
            start + Duration::from_millis(300),
        )
        .unwrap_err();
    let took = start.elapsed();
    assert!(
        matches!(
            e,
            HttpsError::Timeout {
                stage: Stage::Handshake,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(took < Duration::from_millis(700), "{took:?}");
    hold.join().unwrap();
}

#[test]
fn closed_port_is_a_connect_error_and_plain_http_a_tls_error() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let client = HttpsClient::new(None).unwrap();
    let e = client
        .send(HOST, addr, &Request::new("GET", "/"), deadline())
        .unwrap_err();
    assert!(
        matches!(
            e,
            HttpsError::Io {
                stage: Stage::Connect,
                ..
            }
        ),
        "{e:?}"
    );

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let e = client
        .send(HOST, addr, &Request::new("GET", "/"), deadline())
        .unwrap_err();
    assert!(matches!(e, HttpsError::Tls { .. }), "{e:?}");
}

#[test]
fn truncated_and_oversized_responses() {
    let pki = Pki::new("trunc", 2);
    // Content-Length promises more than is sent before close_notify.
    let (addr, _rx) = serve(
        pki.server_config(),
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort".to_vec(),
        1,
    );
    let client = HttpsClient::new(Some(&pki.ca_pem())).unwrap();
    let e = client
        .send(HOST, addr, &Request::new("GET", "/"), deadline())
        .unwrap_err();
    assert!(matches!(e, HttpsError::Truncated { .. }), "{e:?}");

    let (addr, _rx) = serve(pki.server_config(), ok_reply(&"x".repeat(5000)), 3);
    let e = client
        .clone()
        .with_max_response(1024)
        .send(HOST, addr, &Request::new("GET", "/"), deadline())
        .unwrap_err();
    assert!(
        matches!(
            e,
            HttpsError::Response {
                source: ResponseError::TooLarge { max: 1024 },
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn bad_extra_roots_are_refused() {
    assert!(matches!(
        HttpsClient::new(Some(b"not a pem")),
        Err(HttpsError::Roots(_))
    ));
    assert!(matches!(
        HttpsClient::new(Some(
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        )),
        Err(HttpsError::Roots(_))
    ));
}
