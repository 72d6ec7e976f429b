//! Meters for the failover tests, run on threads inside a namespace (a private client's),
//! started before a fault and read after it:
//! - [`EchoGaps`]: one UDP socket (one source port, so one conntrack entry on the NAT) sends a
//!   numbered datagram to the internet's echo service at a fixed interval; the report gives
//!   what was lost and the longest silence between two answers.
//! - [`Download`]: one TCP connection receives a paced, deterministic byte stream from the
//!   internet's HTTP server (`GET /paced/<bytes>/<rate>`), so that the transfer spans the
//!   fault; every byte is verified and the report says how the transfer ended.
//!
//! The summaries are pure and unit-tested; the sockets are at the edges.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use super::{HTTP_PORT, SERVER, UDP_PORT};
use crate::netns::spawn_in;

/// How long [`EchoGaps::finish`] still waits for answers after the last datagram.
const ECHO_GRACE: Duration = Duration::from_secs(1);

/// The byte at offset `i` of a paced download: a period of 251 (a prime), so a lost, repeated
/// or shifted segment shows.
pub fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// What [`EchoGaps`] measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoReport {
    pub sent: u64,
    pub answered: u64,
    /// The sequence numbers never answered, in order.
    pub lost: Vec<u64>,
    /// The longest time between two consecutive answers (ms).
    pub longest_gap_ms: u64,
}

impl EchoReport {
    /// The last `tail` echoes were all answered: the path is back, however long it was gone.
    pub fn resumed(&self, tail: u64) -> bool {
        self.sent >= tail && (self.sent - tail..self.sent).all(|i| !self.lost.contains(&i))
    }
}

/// Numbered UDP echoes every `every` from one socket; see the module's doc.
pub struct EchoGaps {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Result<EchoReport>>,
}

impl EchoGaps {
    /// Starts sending from namespace `ns` (full name) to the echo service at once.
    pub fn start(ns: &str, every: Duration) -> Result<Self> {
        if every.is_zero() {
            bail!("an echo interval of zero");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = spawn_in(ns, move || echo_loop(every, &stop2, &tx))?;
        rx.recv_timeout(Duration::from_secs(5))
            .context("the echo meter did not start")?
            .map_err(anyhow::Error::msg)?;
        Ok(Self { stop, handle })
    }

    /// Stops sending, waits [`ECHO_GRACE`] for late answers, and reports.
    pub fn finish(self) -> Result<EchoReport> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .join()
            .map_err(|_| anyhow!("the echo meter's thread panicked"))?
    }
}

fn echo_loop(
    every: Duration,
    stop: &AtomicBool,
    started: &std::sync::mpsc::Sender<Result<(), String>>,
) -> Result<EchoReport> {
    let open = || -> std::io::Result<UdpSocket> {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.connect((SERVER, UDP_PORT))?;
        s.set_read_timeout(Some(Duration::from_millis(5)))?;
        Ok(s)
    };
    let s = match open() {
        Ok(s) => {
            let _ = started.send(Ok(()));
            s
        }
        Err(e) => {
            let _ = started.send(Err(format!("echo socket: {e}")));
            bail!("echo socket: {e}");
        }
    };
    let t0 = Instant::now();
    let mut sent = 0u64;
    let mut next = t0;
    let mut answers: Vec<(u64, Duration)> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut stopped_at: Option<Instant> = None;
    let mut buf = [0u8; 64];
    loop {
        let now = Instant::now();
        if stopped_at.is_none() && stop.load(Ordering::Relaxed) {
            stopped_at = Some(now);
        }
        if let Some(at) = stopped_at {
            if now.duration_since(at) >= ECHO_GRACE {
                break;
            }
        } else if now >= next {
            // A send that fails (no route while a path is down) still counts as sent.
            let _ = s.send(format!("gap-{sent}").as_bytes());
            sent += 1;
            next += every;
        }
        match s.recv(&mut buf) {
            Ok(n) => {
                let seq = std::str::from_utf8(&buf[..n])
                    .ok()
                    .and_then(|t| t.strip_prefix("gap-"))
                    .and_then(|t| t.parse::<u64>().ok());
                if let Some(seq) = seq
                    && seq < sent
                    && seen.insert(seq)
                {
                    answers.push((seq, t0.elapsed()));
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            // ICMP errors surface on a connected socket (refused, unreachable): not an answer.
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    Ok(summarize_echoes(sent, &answers))
}

/// The report for `sent` datagrams (numbered from 0) and the answers (sequence number,
/// arrival since the start), each sequence number at most once, in arrival order.
pub fn summarize_echoes(sent: u64, answers: &[(u64, Duration)]) -> EchoReport {
    let got: std::collections::BTreeSet<u64> = answers.iter().map(|a| a.0).collect();
    let lost = (0..sent).filter(|i| !got.contains(i)).collect();
    let longest = answers
        .windows(2)
        .map(|w| w[1].1.saturating_sub(w[0].1))
        .max()
        .unwrap_or_default();
    EchoReport {
        sent,
        answered: got.len() as u64,
        lost,
        longest_gap_ms: u64::try_from(longest.as_millis()).unwrap_or(u64::MAX),
    }
}

/// How a [`Download`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Every byte arrived, verified, then the server closed.
    Complete,
    /// The connection was reset (or aborted) by a RST.
    Reset,
    /// Nothing arrived for the stall timeout.
    Stalled,
    /// The server closed before every byte arrived.
    Closed,
    /// A byte differed from the pattern at this offset.
    Corrupt { at: u64 },
    /// Anything else (connect failed, a bad HTTP answer): what happened.
    Failed(String),
}

/// What a [`Download`] measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadReport {
    pub bytes: u64,
    /// Body bytes received and verified.
    pub received: u64,
    pub ended: Ended,
    /// From the start to the end.
    pub elapsed_ms: u64,
    /// The longest time between two reads that returned data (ms).
    pub longest_stall_ms: u64,
}

/// One paced TCP download through the NAT; see the module's doc.
pub struct Download {
    received: Arc<AtomicU64>,
    handle: JoinHandle<DownloadReport>,
}

impl Download {
    /// Starts from namespace `ns` (full name): `bytes` of the pattern that the server sends at
    /// about `rate` bytes/s; the transfer counts as stalled after `stall` without data.
    pub fn start(ns: &str, bytes: u64, rate: u64, stall: Duration) -> Result<Self> {
        if rate == 0 || stall.is_zero() {
            bail!("a download needs a rate and a stall timeout above zero");
        }
        let received = Arc::new(AtomicU64::new(0));
        let r2 = Arc::clone(&received);
        let handle = spawn_in(ns, move || download(bytes, rate, stall, &r2))?;
        Ok(Self { received, handle })
    }

    /// Body bytes verified so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Waits for the transfer to end and reports.
    pub fn finish(self) -> Result<DownloadReport> {
        self.handle
            .join()
            .map_err(|_| anyhow!("the download's thread panicked"))
    }
}

fn download(bytes: u64, rate: u64, stall: Duration, progress: &AtomicU64) -> DownloadReport {
    let t0 = Instant::now();
    let mut report = DownloadReport {
        bytes,
        received: 0,
        ended: Ended::Failed(String::new()),
        elapsed_ms: 0,
        longest_stall_ms: 0,
    };
    report.ended = match receive(bytes, rate, stall, progress, &mut report) {
        Ok(e) => e,
        Err(e) => Ended::Failed(format!("{e:#}")),
    };
    report.elapsed_ms = u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX);
    report
}

fn receive(
    bytes: u64,
    rate: u64,
    stall: Duration,
    progress: &AtomicU64,
    report: &mut DownloadReport,
) -> Result<Ended> {
    let addr = SocketAddr::from((SERVER, HTTP_PORT));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(stall))?;
    write!(
        s,
        "GET /paced/{bytes}/{rate} HTTP/1.1\r\nHost: server\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut verifier = Verifier::default();
    let mut last_data = Instant::now();
    loop {
        let n = match s.read(&mut buf) {
            Ok(n) => n,
            Err(e) => return Ok(ended_by(&e)),
        };
        let now = Instant::now();
        let gap = u64::try_from(now.duration_since(last_data).as_millis()).unwrap_or(u64::MAX);
        report.longest_stall_ms = report.longest_stall_ms.max(gap);
        last_data = now;
        if n == 0 {
            return Ok(if verifier.offset == bytes {
                Ended::Complete
            } else {
                Ended::Closed
            });
        }
        let mut data = &buf[..n];
        if head.len() < 4 || !head.ends_with(b"\r\n\r\n") {
            // Still in the header: take bytes up to its end.
            let mut i = 0;
            while i < data.len() && !head.ends_with(b"\r\n\r\n") {
                head.push(data[i]);
                i += 1;
            }
            if head.len() > 4096 {
                bail!("no end of the HTTP header in 4 KiB");
            }
            if !head.ends_with(b"\r\n\r\n") {
                continue;
            }
            if !head.starts_with(b"HTTP/1.1 200") {
                bail!("the server answered {:?}", String::from_utf8_lossy(&head));
            }
            data = &data[i..];
        }
        if let Err(at) = verifier.feed(data) {
            return Ok(Ended::Corrupt { at });
        }
        report.received = verifier.offset;
        progress.store(verifier.offset, Ordering::Relaxed);
    }
}

fn ended_by(e: &std::io::Error) -> Ended {
    match e.kind() {
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
            Ended::Reset
        }
        ErrorKind::WouldBlock | ErrorKind::TimedOut => Ended::Stalled,
        _ => Ended::Failed(e.to_string()),
    }
}

/// Checks a byte stream against [`pattern_byte`].
#[derive(Default)]
struct Verifier {
    offset: u64,
}

impl Verifier {
    /// Err: the offset of the first wrong byte.
    fn feed(&mut self, data: &[u8]) -> std::result::Result<(), u64> {
        for &b in data {
            if b != pattern_byte(self.offset) {
                return Err(self.offset);
            }
            self.offset += 1;
        }
        Ok(())
    }
}

/// The server side of `GET /paced/<bytes>/<rate>`: the pattern, sent so that by time t about
/// `rate * t` bytes are out (in 10 ms steps); returns when all are sent or the peer is gone.
pub(super) fn serve_paced(w: &mut impl Write, bytes: u64, rate: u64) -> std::io::Result<()> {
    write!(
        w,
        "HTTP/1.1 200 OK\r\nContent-Length: {bytes}\r\nConnection: close\r\n\r\n"
    )?;
    let t0 = Instant::now();
    let mut sent = 0u64;
    let mut chunk = Vec::new();
    while sent < bytes {
        let due = paced_due(t0.elapsed(), rate).min(bytes);
        if due > sent {
            chunk.clear();
            chunk.extend((sent..due).map(pattern_byte));
            w.write_all(&chunk)?;
            w.flush()?;
            sent = due;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Bytes due by `elapsed` at `rate` bytes/s.
fn paced_due(elapsed: Duration, rate: u64) -> u64 {
    u64::try_from(elapsed.as_millis().saturating_mul(u128::from(rate)) / 1000).unwrap_or(u64::MAX)
}

/// Parses `/paced/<bytes>/<rate>` (bytes at most 1 GiB, rate above zero).
pub(super) fn parse_paced(path: &str) -> Result<(u64, u64)> {
    let rest = path
        .strip_prefix("/paced/")
        .with_context(|| format!("{path:?} is not /paced/<bytes>/<rate>"))?;
    let (b, r) = rest
        .split_once('/')
        .with_context(|| format!("{path:?} has no /<rate>"))?;
    let bytes: u64 = b
        .parse()
        .with_context(|| format!("{path:?}: bytes {b:?}"))?;
    let rate: u64 = r.parse().with_context(|| format!("{path:?}: rate {r:?}"))?;
    if bytes > 1 << 30 || rate == 0 {
        bail!("{path:?}: bytes above 1 GiB or a rate of zero");
    }
    Ok((bytes, rate))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn resumed_needs_the_whole_tail_answered() {
        let r = |sent: u64, lost: Vec<u64>| EchoReport {
            sent,
            answered: sent - lost.len() as u64,
            lost,
            longest_gap_ms: 0,
        };
        assert!(r(50, (5..30).collect()).resumed(10));
        assert!(!r(50, vec![45]).resumed(10));
        assert!(!r(50, (30..50).collect()).resumed(10));
        assert!(!r(5, Vec::new()).resumed(10));
    }

    #[test]
    fn echo_gap_and_losses_are_counted() {
        // 0..=4 answered every 100 ms, 5..=14 lost, 15..=19 answered again.
        let mut answers: Vec<(u64, Duration)> = (0..5).map(|i| (i, ms(i * 100 + 3))).collect();
        answers.extend((15..20).map(|i| (i, ms(i * 100 + 3))));
        let r = summarize_echoes(20, &answers);
        assert_eq!(r.sent, 20);
        assert_eq!(r.answered, 10);
        assert_eq!(r.lost, (5..15).collect::<Vec<_>>());
        assert_eq!(r.longest_gap_ms, 1100);
        let none = summarize_echoes(3, &[]);
        assert_eq!(none.lost, vec![0, 1, 2]);
        assert_eq!(none.longest_gap_ms, 0);
    }

    #[test]
    fn verifier_names_the_first_wrong_byte() {
        let mut v = Verifier::default();
        let good: Vec<u8> = (0..600).map(pattern_byte).collect();
        assert_eq!(v.feed(&good[..300]), Ok(()));
        assert_eq!(v.feed(&good[300..]), Ok(()));
        assert_eq!(v.offset, 600);
        let mut v = Verifier::default();
        let mut bad = good.clone();
        bad[400] ^= 1;
        assert_eq!(v.feed(&bad), Err(400));
        // A repeated segment shows too.
        let mut v = Verifier::default();
        let mut dup = good[..100].to_vec();
        dup.extend_from_slice(&good[90..200]);
        assert_eq!(v.feed(&dup), Err(100));
    }

    #[test]
    fn paced_path_and_schedule() {
        assert_eq!(parse_paced("/paced/1000/200").unwrap(), (1000, 200));
        assert!(parse_paced("/paced/1000/0").is_err());
        assert!(
            parse_paced("/paced/x/1")
                .unwrap_err()
                .to_string()
                .contains("bytes")
        );
        assert!(parse_paced("/bytes/1").is_err());
        assert_eq!(paced_due(ms(500), 1000), 500);
        assert_eq!(paced_due(Duration::ZERO, 1000), 0);
        let mut out = Vec::new();
        serve_paced(&mut out, 300, 1_000_000).unwrap();
        let body = &out[out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
        assert_eq!(body.len(), 300);
        assert!(
            body.iter()
                .enumerate()
                .all(|(i, b)| *b == pattern_byte(i as u64))
        );
    }
}
