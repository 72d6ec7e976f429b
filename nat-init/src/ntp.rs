//! SNTP client (RFC 4330) for the Amazon Time Sync Service at 169.254.169.123: one query gives
//! the clock's offset and the round-trip delay; [`step_clock`] applies an offset. SigV4 requests
//! are refused when our clock is minutes off, and a fresh VM's clock is whatever the firmware
//! said.
//!
//! The 48-byte packet is encoded here rather than with a crate: four timestamps and three
//! fields are read, and the checks that matter (origin echo, mode, stratum) are the ones a
//! crate would leave to us anyway. The transmit field carries a random nonce instead of our
//! clock (as chrony does): the server echoes it as the origin, so an off-path host cannot
//! forge an answer without guessing 64 random bits, and our clock's time never leaves the host.
//! The four timestamps are then our send time, the server's two and our receive time, taken as
//! the send time plus the monotonic round trip so that a clock step meanwhile cannot skew it.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant, SystemTime};

use crate::dhcp::Random;

/// The Amazon Time Sync Service, link-local on every Nitro instance.
pub const TIME_SYNC: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(169, 254, 169, 123), 123));
/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const UNIX_OFFSET_S: u64 = 2_208_988_800;
const PACKET_LEN: usize = 48;

/// An NTP timestamp: seconds since 1900 in the high 32 bits (modulo the 136-year era), the
/// fraction in the low 32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// `t` in the NTP era it falls in.
    pub fn from_system(t: SystemTime) -> Timestamp {
        // Before 1970 cannot come from a running clock: treated as the epoch.
        let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let secs = (d.as_secs() + UNIX_OFFSET_S) & 0xffff_ffff;
        let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
        Timestamp((secs << 32) | frac)
    }

    /// `self - earlier` in nanoseconds, correct across an era rollover (2036) as long as the
    /// two are within 68 years of each other.
    fn minus_ns(self, earlier: Timestamp) -> i64 {
        let fixed = self.0.wrapping_sub(earlier.0) as i64;
        ((i128::from(fixed) * 1_000_000_000) >> 32) as i64
    }
}

/// The result of one exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// What to add to our clock to get the server's, in nanoseconds.
    pub offset_ns: i64,
    /// Round trip minus the server's processing time.
    pub delay: Duration,
    /// The server's stratum (1 for the Time Sync Service).
    pub stratum: u8,
}

/// RFC 4330 section 5: offset = ((T2 - T1) + (T3 - T4)) / 2, delay = (T4 - T1) - (T3 - T2).
/// T1 and T4 are ours (send, receive), T2 and T3 the server's (receive, transmit). A negative
/// delay (server timestamps inconsistent with ours) is reported as zero.
pub fn compute(t1: Timestamp, t2: Timestamp, t3: Timestamp, t4: Timestamp) -> (i64, Duration) {
    let a = i128::from(t2.minus_ns(t1));
    let b = i128::from(t3.minus_ns(t4));
    let offset = ((a + b) / 2) as i64;
    let delay = i128::from(t4.minus_ns(t1)) - i128::from(t3.minus_ns(t2));
    let delay = u64::try_from(delay).unwrap_or(0);
    (offset, Duration::from_nanos(delay))
}

/// What a server answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub leap: u8,
    pub version: u8,
    pub mode: u8,
    pub stratum: u8,
    pub origin: Timestamp,
    pub receive: Timestamp,
    pub transmit: Timestamp,
}

#[derive(Debug, thiserror::Error)]
pub enum NtpError {
    #[error("NTP {server}: {what}: {source}")]
    Io {
        server: SocketAddr,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("NTP {server}: no valid answer in time")]
    Timeout { server: SocketAddr },
    #[error("NTP {server}: answer refused: {reason}")]
    Bad {
        server: SocketAddr,
        reason: &'static str,
    },
    #[error("stepping the clock by {offset_ns} ns: {source}")]
    Step {
        offset_ns: i64,
        #[source]
        source: nix::Error,
    },
    #[error("stepping the clock by {offset_ns} ns: out of range")]
    StepRange { offset_ns: i64 },
}

/// A client request (version 4, mode 3) whose transmit field is `nonce`.
pub fn encode_request(nonce: u64) -> [u8; PACKET_LEN] {
    let mut p = [0u8; PACKET_LEN];
    p[0] = 4 << 3 | 3;
    p[40..48].copy_from_slice(&nonce.to_be_bytes());
    p
}

/// The fields of a server packet (at least 48 bytes; extensions and MACs are ignored).
pub fn parse_reply(b: &[u8]) -> Option<Reply> {
    if b.len() < PACKET_LEN {
        return None;
    }
    let ts = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[at..at + 8]);
        Timestamp(u64::from_be_bytes(w))
    };
    Some(Reply {
        leap: b[0] >> 6,
        version: (b[0] >> 3) & 7,
        mode: b[0] & 7,
        stratum: b[1],
        origin: ts(24),
        receive: ts(32),
        transmit: ts(40),
    })
}

/// Whether a reply answers `nonce` and can be used: a wrong origin is someone else's packet
/// (ignored while waiting), any other failed check a refusal.
fn check(r: &Reply, nonce: u64) -> Result<(), Refusal> {
    if r.origin.0 != nonce {
        return Err(Refusal::NotOurs);
    }
    let reason = if r.mode != 4 {
        "not a server reply (mode)"
    } else if !(1..=4).contains(&r.version) {
        "unknown version"
    } else if r.stratum == 0 {
        "kiss-o'-death (stratum 0)"
    } else if r.stratum > 15 {
        "server unsynchronised (stratum)"
    } else if r.leap == 3 {
        "server unsynchronised (leap indicator)"
    } else if r.transmit.0 == 0 || r.receive.0 == 0 {
        "zero timestamp"
    } else {
        return Ok(());
    };
    Err(Refusal::Bad(reason))
}

enum Refusal {
    NotOurs,
    Bad(&'static str),
}

/// One exchange with `server`, until `deadline`. Packets that do not echo our nonce are
/// ignored (late answers to an earlier query, forgeries); a reply that echoes it but fails the
/// checks is an error.
pub fn query(
    server: SocketAddr,
    deadline: Instant,
    random: &mut impl Random,
) -> Result<Sample, NtpError> {
    let io = |what, source| NtpError::Io {
        server,
        what,
        source,
    };
    let bind: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind).map_err(|e| io("bind", e))?;
    // Connected: the kernel drops datagrams from any other source.
    sock.connect(server).map_err(|e| io("connect", e))?;
    let nonce = (u64::from(random.next_u32()) << 32) | u64::from(random.next_u32());
    let sent_at = SystemTime::now();
    let sent_mono = Instant::now();
    sock.send(&encode_request(nonce))
        .map_err(|e| io("send", e))?;
    let mut buf = [0u8; 512];
    loop {
        let n = crate::udp::recv_before(&sock, &mut buf, deadline)
            .map_err(|e| io("receive", e))?
            .ok_or(NtpError::Timeout { server })?;
        let round_trip = sent_mono.elapsed();
        let Some(reply) = parse_reply(&buf[..n]) else {
            continue;
        };
        match check(&reply, nonce) {
            Ok(()) => {
                let t1 = Timestamp::from_system(sent_at);
                let t4 = Timestamp::from_system(sent_at + round_trip);
                let (offset_ns, delay) = compute(t1, reply.receive, reply.transmit, t4);
                return Ok(Sample {
                    offset_ns,
                    delay,
                    stratum: reply.stratum,
                });
            }
            Err(Refusal::NotOurs) => continue,
            Err(Refusal::Bad(reason)) => return Err(NtpError::Bad { server, reason }),
        }
    }
}

/// `now` moved by `offset_ns`, or `None` when that leaves the clock's range.
pub fn stepped(now_ns: i64, offset_ns: i64) -> Option<i64> {
    now_ns.checked_add(offset_ns).filter(|t| *t >= 0)
}

/// Steps CLOCK_REALTIME by `offset_ns` (needs CAP_SYS_TIME). A step, not a slew: at boot the
/// clock may be hours off, and nothing here depends on it being monotonic (timers use
/// CLOCK_MONOTONIC / [`Instant`]).
pub fn step_clock(offset_ns: i64) -> Result<(), NtpError> {
    use nix::sys::time::{TimeSpec, TimeValLike};
    use nix::time::{ClockId, clock_gettime, clock_settime};
    let step = |source| NtpError::Step { offset_ns, source };
    let now = clock_gettime(ClockId::CLOCK_REALTIME).map_err(step)?;
    let target =
        stepped(now.num_nanoseconds(), offset_ns).ok_or(NtpError::StepRange { offset_ns })?;
    clock_settime(ClockId::CLOCK_REALTIME, TimeSpec::nanoseconds(target)).map_err(step)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    const S: u64 = 1 << 32;

    #[test]
    fn timestamps_from_system_time() {
        assert_eq!(
            Timestamp::from_system(SystemTime::UNIX_EPOCH),
            Timestamp(UNIX_OFFSET_S << 32)
        );
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_500);
        assert_eq!(
            Timestamp::from_system(t),
            Timestamp(((UNIX_OFFSET_S + 1) << 32) | (S / 2))
        );
        // 2036-02-07 06:28:16 UTC starts era 1: seconds wrap to zero.
        let era1 = SystemTime::UNIX_EPOCH + Duration::from_secs((1 << 32) - UNIX_OFFSET_S + 5);
        assert_eq!(Timestamp::from_system(era1), Timestamp(5 << 32));
    }

    #[test]
    fn offset_and_delay() {
        let ts = |secs: u64, frac: u64| Timestamp((secs << 32) | frac);
        // Server 10 s ahead, 100 ms each way, 1 ms processing.
        let base = 3_900_000_000;
        let (off, delay) = compute(
            ts(base, 0),
            ts(base + 10, S / 10),
            ts(base + 10, S / 10 + S / 1000),
            ts(base, S / 5 + S / 1000),
        );
        assert!((off - 10_000_000_000).abs() <= 2, "{off}");
        assert!(
            delay.abs_diff(Duration::from_millis(200)) <= Duration::from_nanos(2),
            "{delay:?}"
        );
        // Server behind: negative offset.
        let (off, _) = compute(
            ts(base, 0),
            ts(base - 3600, 0),
            ts(base - 3600, 0),
            ts(base, 0),
        );
        assert_eq!(off, -3_600_000_000_000);
        // Inconsistent timestamps (server "took" longer than the round trip): delay 0.
        let (_, delay) = compute(ts(base, 0), ts(base, 0), ts(base + 5, 0), ts(base + 1, 0));
        assert_eq!(delay, Duration::ZERO);
    }

    #[test]
    fn offset_across_the_era_rollover() {
        // Our clock just before the 2036 rollover, the server's just after it.
        let t1 = Timestamp(((1 << 32) - 2) << 32);
        let t2 = Timestamp(3 << 32);
        let t3 = Timestamp(3 << 32);
        let t4 = Timestamp(((1 << 32) - 2) << 32);
        assert_eq!(compute(t1, t2, t3, t4), (5_000_000_000, Duration::ZERO));
        // And the other way round: we are in era 1, the server still in era 0.
        assert_eq!(compute(t2, t1, t4, t3), (-5_000_000_000, Duration::ZERO));
    }

    #[test]
    fn request_and_reply_fields() {
        let p = encode_request(0x0102_0304_0506_0708);
        assert_eq!(p[0], 0x23);
        assert!(p[1..40].iter().all(|b| *b == 0));
        assert_eq!(&p[40..], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(parse_reply(&p[..47]), None);
        let r = parse_reply(&server_packet(0, 0x24, 1, 7, 5, 6)).unwrap();
        assert_eq!((r.leap, r.version, r.mode, r.stratum), (0, 4, 4, 1));
        assert_eq!(
            (r.origin, r.receive, r.transmit),
            (Timestamp(7), Timestamp(5), Timestamp(6))
        );
    }

    fn server_packet(leap: u8, vm: u8, stratum: u8, origin: u64, rx: u64, tx: u64) -> Vec<u8> {
        let mut p = vec![0u8; PACKET_LEN];
        p[0] = leap << 6 | vm;
        p[1] = stratum;
        p[24..32].copy_from_slice(&origin.to_be_bytes());
        p[32..40].copy_from_slice(&rx.to_be_bytes());
        p[40..48].copy_from_slice(&tx.to_be_bytes());
        p
    }

    #[test]
    fn reply_checks() {
        let ok = |leap, vm, stratum, origin, rx, tx| {
            let r = parse_reply(&server_packet(leap, vm, stratum, origin, rx, tx)).unwrap();
            match check(&r, 42) {
                Ok(()) => "ok",
                Err(Refusal::NotOurs) => "not ours",
                Err(Refusal::Bad(r)) => r,
            }
        };
        assert_eq!(ok(0, 0x24, 1, 42, 1, 1), "ok");
        assert_eq!(ok(0, 0x1c, 2, 42, 1, 1), "ok");
        assert_eq!(ok(0, 0x24, 1, 43, 1, 1), "not ours");
        assert_eq!(ok(0, 0x23, 1, 42, 1, 1), "not a server reply (mode)");
        assert_eq!(ok(0, 0x3c, 1, 42, 1, 1), "unknown version");
        assert_eq!(ok(0, 0x24, 0, 42, 1, 1), "kiss-o'-death (stratum 0)");
        assert_eq!(ok(0, 0x24, 16, 42, 1, 1), "server unsynchronised (stratum)");
        assert_eq!(
            ok(3, 0x24, 1, 42, 1, 1),
            "server unsynchronised (leap indicator)"
        );
        assert_eq!(ok(0, 0x24, 1, 42, 1, 0), "zero timestamp");
        assert_eq!(ok(0, 0x24, 1, 42, 0, 1), "zero timestamp");
    }

    /// A fixed sequence, so the test knows the nonce.
    struct Fixed(Vec<u32>);
    impl Random for Fixed {
        fn next_u32(&mut self) -> u32 {
            self.0.remove(0)
        }
    }

    /// A responder on loopback: for each request, `answer(request) -> packets to send back`.
    fn responder(
        answer: impl Fn(&[u8]) -> Vec<Vec<u8>> + Send + 'static,
    ) -> (SocketAddr, mpsc::Receiver<Vec<u8>>) {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, peer)) = sock.recv_from(&mut buf) {
                let _ = tx.send(buf[..n].to_vec());
                for p in answer(&buf[..n]) {
                    let _ = sock.send_to(&p, peer);
                }
            }
        });
        (addr, rx)
    }

    fn echo_with(now_offset_s: i64, stratum: u8) -> impl Fn(&[u8]) -> Vec<Vec<u8>> {
        move |req| {
            let origin = u64::from_be_bytes(req[40..48].try_into().unwrap());
            let now = SystemTime::now();
            let server_now = if now_offset_s >= 0 {
                now + Duration::from_secs(now_offset_s as u64)
            } else {
                now - Duration::from_secs(now_offset_s.unsigned_abs())
            };
            let t = Timestamp::from_system(server_now).0;
            // A forgery first (wrong origin): ignored, then the real answer.
            vec![
                server_packet(0, 0x24, stratum, origin ^ 1, t, t),
                server_packet(0, 0x24, stratum, origin, t, t),
            ]
        }
    }

    #[test]
    fn query_measures_the_offset_and_ignores_forgeries() {
        for offset_s in [3600i64, -86_400] {
            let (addr, requests) = responder(echo_with(offset_s, 1));
            let deadline = Instant::now() + Duration::from_secs(2);
            let s = query(addr, deadline, &mut Fixed(vec![0xdead_beef, 0x0bad_f00d])).unwrap();
            assert!(
                (s.offset_ns - offset_s * 1_000_000_000).abs() < 50_000_000,
                "{s:?}"
            );
            assert!(s.delay < Duration::from_millis(50), "{s:?}");
            assert_eq!(s.stratum, 1);
            let req = requests.recv().unwrap();
            assert_eq!(req.len(), PACKET_LEN);
            assert_eq!(req[0], 0x23);
            // The nonce, not our clock, goes out.
            assert_eq!(&req[40..], &0xdead_beef_0bad_f00d_u64.to_be_bytes());
        }
    }

    #[test]
    fn query_refuses_kiss_of_death_and_times_out() {
        let (addr, _r) = responder(echo_with(0, 0));
        let deadline = Instant::now() + Duration::from_secs(2);
        match query(addr, deadline, &mut Fixed(vec![1, 2])) {
            Err(NtpError::Bad { reason, .. }) => assert_eq!(reason, "kiss-o'-death (stratum 0)"),
            other => panic!("{other:?}"),
        }
        // Only forgeries: nothing valid until the deadline.
        let (addr, _r) = responder(|req| {
            let origin = u64::from_be_bytes(req[40..48].try_into().unwrap());
            vec![server_packet(0, 0x24, 1, origin.wrapping_add(1), 1, 1)]
        });
        let start = Instant::now();
        let e = query(
            addr,
            start + Duration::from_millis(300),
            &mut Fixed(vec![1, 2]),
        )
        .unwrap_err();
        assert!(matches!(e, NtpError::Timeout { .. }), "{e:?}");
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(290) && took < Duration::from_secs(1),
            "{took:?}"
        );
    }

    #[test]
    fn step_arithmetic() {
        assert_eq!(stepped(1_000, 500), Some(1_500));
        assert_eq!(stepped(1_000, -500), Some(500));
        assert_eq!(stepped(1_000, -1_001), None);
        assert_eq!(stepped(i64::MAX, 1), None);
    }

    #[test]
    fn step_clock_by_zero_keeps_the_time() {
        // Tests run as root; a zero step exercises clock_settime without moving the clock.
        let before = SystemTime::now();
        step_clock(0).unwrap();
        let after = SystemTime::now();
        let d = after
            .duration_since(before)
            .unwrap_or_else(|e| e.duration());
        assert!(d < Duration::from_millis(100), "{d:?}");
    }
}
