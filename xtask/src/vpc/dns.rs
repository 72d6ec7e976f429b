//! A minimal DNS client (one A question over UDP) so the checks can ask the VPC resolver
//! (dnsmasq on the router) which address it gives the regional AWS endpoints.

use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

/// A recursive-desired query for `name`'s A records.
pub fn encode_query(id: u16, name: &str) -> Result<Vec<u8>> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        ensure!(
            !label.is_empty() && label.len() < 64,
            "bad DNS label {label:?} in {name:?}"
        );
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    Ok(q)
}

/// Skips a (possibly compressed) name at `i`; returns the index after it.
fn skip_name(m: &[u8], mut i: usize) -> Result<usize> {
    loop {
        let len = *m.get(i).context("DNS name runs past the message")?;
        match len {
            0 => return Ok(i + 1),
            l if l & 0xc0 == 0xc0 => return Ok(i + 2),
            l => i += 1 + usize::from(l),
        }
    }
}

/// The A records of an answer to query `id`; an error for another id or an error code.
pub fn parse_answer(id: u16, m: &[u8]) -> Result<Vec<Ipv4Addr>> {
    ensure!(m.len() >= 12, "a {}-byte DNS message", m.len());
    ensure!(m[0..2] == id.to_be_bytes(), "an answer to another query");
    let rcode = m[3] & 0x0f;
    if rcode != 0 {
        bail!("DNS error code {rcode}");
    }
    let qd = u16::from_be_bytes([m[4], m[5]]);
    let an = u16::from_be_bytes([m[6], m[7]]);
    let mut i = 12;
    for _ in 0..qd {
        i = skip_name(m, i)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        i = skip_name(m, i)?;
        let h = m.get(i..i + 10).context("DNS record header past the end")?;
        let (kind, len) = (
            u16::from_be_bytes([h[0], h[1]]),
            usize::from(u16::from_be_bytes([h[8], h[9]])),
        );
        let data = m
            .get(i + 10..i + 10 + len)
            .context("DNS record past the end")?;
        if kind == 1 && len == 4 {
            out.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        i += 10 + len;
    }
    Ok(out)
}

/// Asks `server` for `name`'s A records from the calling thread's namespace.
pub fn query_a(server: Ipv4Addr, name: &str) -> Result<Vec<Ipv4Addr>> {
    let id = (std::process::id() & 0xffff) as u16;
    let s = UdpSocket::bind("0.0.0.0:0")?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.send_to(&encode_query(id, name)?, (server, 53))
        .with_context(|| format!("asking {server}:53 for {name}"))?;
    let mut buf = [0u8; 512];
    let (n, _) = s
        .recv_from(&mut buf)
        .with_context(|| format!("no DNS answer from {server} for {name}"))?;
    parse_answer(id, &buf[..n]).with_context(|| format!("{server}'s answer for {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_compressed_answer() {
        let q = encode_query(0x1234, "ec2.us-east-1.amazonaws.com").unwrap();
        assert_eq!(&q[..4], &[0x12, 0x34, 1, 0]);
        assert_eq!(q[12], 3);
        assert_eq!(&q[q.len() - 5..], &[0, 0, 1, 0, 1]);
        let mut a = q.clone();
        a[2] = 0x81;
        a[3] = 0x80;
        a[7] = 1; // one answer
        a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 203, 0, 113, 20]);
        assert_eq!(
            parse_answer(0x1234, &a).unwrap(),
            [Ipv4Addr::new(203, 0, 113, 20)]
        );
        assert!(parse_answer(0x1235, &a).is_err());
        a[3] = 0x85; // refused
        assert!(
            parse_answer(0x1234, &a)
                .unwrap_err()
                .to_string()
                .contains("5")
        );
        assert!(encode_query(1, "a..b").is_err());
        assert!(parse_answer(0x1234, &a[..20]).is_err());
    }
}
