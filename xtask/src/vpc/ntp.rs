//! The Amazon Time Sync Service double: an SNTP server (RFC 4330 server mode) on
//! 169.254.169.123:123 in the vpc namespace, answering with the host's clock.

use std::net::{Ipv4Addr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use crate::netns::spawn_in;

pub const NTP: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 123);
/// Seconds from the NTP era (1900) to the Unix epoch.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// An NTP timestamp (32.32 fixed point, seconds since 1900) for a time since the Unix epoch.
pub fn ntp_timestamp(since_unix: Duration) -> u64 {
    let secs = since_unix.as_secs() + NTP_UNIX_OFFSET;
    let frac = (u64::from(since_unix.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// The time since the Unix epoch of an NTP timestamp (era 0).
pub fn from_ntp_timestamp(ts: u64) -> Duration {
    let secs = (ts >> 32).saturating_sub(NTP_UNIX_OFFSET);
    let nanos = ((ts & 0xffff_ffff) * 1_000_000_000) >> 32;
    Duration::new(secs, nanos as u32)
}

/// The server's answer to a client request (mode 3), or none for anything else.
pub fn answer(request: &[u8], received: Duration, sent: Duration) -> Option<[u8; 48]> {
    if request.len() < 48 || request[0] & 0x07 != 3 {
        return None;
    }
    let version = (request[0] >> 3) & 0x07;
    let mut r = [0u8; 48];
    r[0] = (version << 3) | 4; // LI 0, the client's version, mode 4 (server)
    r[1] = 1; // stratum 1: a primary reference
    r[2] = request[2]; // poll, as asked
    r[3] = (-20i8) as u8; // precision about a microsecond
    r[8..12].copy_from_slice(&0x0000_0010u32.to_be_bytes()); // root dispersion ~0.25 ms
    r[12..16].copy_from_slice(b"XVPC");
    r[16..24].copy_from_slice(&ntp_timestamp(received).to_be_bytes()); // reference
    r[24..32].copy_from_slice(&request[40..48]); // originate = the client's transmit
    r[32..40].copy_from_slice(&ntp_timestamp(received).to_be_bytes());
    r[40..48].copy_from_slice(&ntp_timestamp(sent).to_be_bytes());
    Some(r)
}

fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Serves SNTP in namespace `ns` (which must own [`NTP`]) until `stop`; counts answers.
pub fn start(ns: &str, served: Arc<AtomicU64>, stop: Arc<AtomicBool>) -> Result<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    spawn_in(ns, move || {
        let s = match UdpSocket::bind((NTP, 123)) {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(Err(format!("ntp bind: {e}")));
                return;
            }
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
        let _ = tx.send(Ok(()));
        let mut buf = [0u8; 512];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((n, peer)) = s.recv_from(&mut buf) {
                let received = now();
                if let Some(r) = answer(&buf[..n], received, now()) {
                    // Counted before it is sent: a client that has the answer may read the
                    // count at once.
                    served.fetch_add(1, Ordering::Relaxed);
                    if s.send_to(&r, peer).is_err() {
                        served.fetch_sub(1, Ordering::Relaxed);
                    }
                }
            }
        }
    })?;
    rx.recv_timeout(Duration::from_secs(5))
        .context("the NTP double did not start")?
        .map_err(anyhow::Error::msg)
}

/// One SNTP query from the calling thread's namespace: the server's transmit time.
pub fn query(server: Ipv4Addr) -> Result<Duration> {
    let s = UdpSocket::bind("0.0.0.0:0")?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut req = [0u8; 48];
    req[0] = (4 << 3) | 3;
    req[40..48].copy_from_slice(&ntp_timestamp(now()).to_be_bytes());
    s.send_to(&req, (server, 123))
        .with_context(|| format!("sending to {server}:123"))?;
    let mut buf = [0u8; 64];
    let (n, _) = s
        .recv_from(&mut buf)
        .with_context(|| format!("no NTP answer from {server}"))?;
    anyhow::ensure!(n >= 48, "a {n}-byte NTP answer");
    anyhow::ensure!(buf[0] & 0x07 == 4, "NTP answer in mode {}", buf[0] & 0x07);
    anyhow::ensure!(
        buf[24..32] == req[40..48],
        "the answer's originate is not our transmit"
    );
    let mut t = [0u8; 8];
    t.copy_from_slice(&buf[40..48]);
    Ok(from_ntp_timestamp(u64::from_be_bytes(t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_and_start_in_1900() {
        assert_eq!(ntp_timestamp(Duration::ZERO) >> 32, 2_208_988_800);
        let d = Duration::new(1_796_300_000, 250_000_000);
        assert_eq!(ntp_timestamp(d) & 0xffff_ffff, 1 << 30);
        let back = from_ntp_timestamp(ntp_timestamp(d));
        assert!(d - back < Duration::from_nanos(2), "{back:?}");
    }

    #[test]
    fn answers_clients_only_in_server_mode() {
        let mut req = [0u8; 48];
        req[0] = (4 << 3) | 3;
        req[2] = 6;
        req[40..48].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let t = Duration::from_secs(1_800_000_000);
        let r = answer(&req, t, t + Duration::from_millis(1)).unwrap();
        assert_eq!(r[0], (4 << 3) | 4);
        assert_eq!((r[1], r[2]), (1, 6));
        assert_eq!(&r[24..32], &[1, 2, 3, 4, 5, 6, 7, 8]);
        let mut tx = [0u8; 8];
        tx.copy_from_slice(&r[40..48]);
        let sent = from_ntp_timestamp(u64::from_be_bytes(tx));
        assert!(sent > t && sent < t + Duration::from_millis(2), "{sent:?}");
        req[0] = (4 << 3) | 4; // a server's packet: no answer
        assert!(answer(&req, t, t).is_none());
        assert!(answer(&req[..47], t, t).is_none());
    }
}
