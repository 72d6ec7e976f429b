//! One UDP receive bounded by a deadline, shared by the DNS and NTP clients: both send a query
//! on a connected socket and read answers until a usable one or the deadline.

use std::io;
use std::net::UdpSocket;
use std::time::Instant;

/// The next datagram into `buf` (its length), or `None` once `deadline` has passed. Interrupted
/// reads are retried; any other error (an ICMP port unreachable, say) is returned.
pub fn recv_before(
    sock: &UdpSocket,
    buf: &mut [u8],
    deadline: Instant,
) -> io::Result<Option<usize>> {
    loop {
        let Some(left) = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        else {
            return Ok(None);
        };
        sock.set_read_timeout(Some(left))?;
        match sock.recv(buf) {
            Ok(n) => return Ok(Some(n)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn datagram_then_nothing_by_the_deadline() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.connect(b.local_addr().unwrap()).unwrap();
        b.connect(a.local_addr().unwrap()).unwrap();
        b.send(b"hi").unwrap();
        let mut buf = [0u8; 16];
        let deadline = Instant::now() + Duration::from_millis(300);
        assert_eq!(recv_before(&a, &mut buf, deadline).unwrap(), Some(2));
        let t = Instant::now();
        assert_eq!(recv_before(&a, &mut buf, deadline).unwrap(), None);
        assert!(t.elapsed() < Duration::from_secs(2));
        let past = Instant::now();
        assert_eq!(recv_before(&a, &mut buf, past).unwrap(), None);
    }
}
