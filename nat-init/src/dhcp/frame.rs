//! IPv4 + UDP framing for DHCP before the client has an address: the raw socket hands us IP
//! packets and takes IP packets (the kernel adds the Ethernet header). Pure functions.
//! Written here because it is two fixed headers and a checksum; a packet crate would be more
//! code than this.

use std::net::Ipv4Addr;

pub const CLIENT_PORT: u16 = 68;
pub const SERVER_PORT: u16 = 67;
const IPPROTO_UDP: u8 = 17;
const IPV4_HEADER: usize = 20;
const UDP_HEADER: usize = 8;

/// The Internet checksum (RFC 1071) of `chunks` laid end to end (each of even length except
/// possibly the last).
fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in chunks {
        let mut it = chunk.chunks_exact(2);
        for pair in &mut it {
            sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
        }
        if let [last] = it.remainder() {
            sum += u32::from(u16::from_be_bytes([*last, 0]));
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn udp_checksum(src: Ipv4Addr, dst: Ipv4Addr, udp: &[u8]) -> u16 {
    let len = u16::try_from(udp.len()).unwrap_or(u16::MAX).to_be_bytes();
    let pseudo = [
        &src.octets()[..],
        &dst.octets()[..],
        &[0, IPPROTO_UDP],
        &len[..],
    ]
    .concat();
    match checksum(&[&pseudo, udp]) {
        // RFC 768: a computed zero is sent as all ones (zero means "no checksum").
        0 => 0xffff,
        c => c,
    }
}

/// An IPv4 packet carrying `payload` in UDP. `None` if it would not fit in 65535 bytes.
pub fn build(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Option<Vec<u8>> {
    let udp_len = u16::try_from(UDP_HEADER + payload.len()).ok()?;
    let total = u16::try_from(IPV4_HEADER + usize::from(udp_len)).ok()?;
    let mut p = Vec::with_capacity(usize::from(total));
    p.extend_from_slice(&[0x45, 0x00]);
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0]); // id 0, no fragmentation flags
    p.extend_from_slice(&[64, IPPROTO_UDP, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let ipsum = checksum(&[&p[..IPV4_HEADER]]);
    p[10..12].copy_from_slice(&ipsum.to_be_bytes());
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&udp_len.to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    let usum = udp_checksum(src, dst, &p[IPV4_HEADER..]);
    p[IPV4_HEADER + 6..IPV4_HEADER + 8].copy_from_slice(&usum.to_be_bytes());
    Some(p)
}

/// A UDP datagram found in an IPv4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram<'a> {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub payload: &'a [u8],
}

/// The UDP datagram to `dport` in IPv4 packet `p`, or `None` for anything else: other
/// protocols or ports, fragments, bad lengths, bad IP header checksum.
///
/// The UDP checksum is not verified: packets from a local veth or virtio peer can arrive with
/// the checksum still to be filled in by offload (CHECKSUM_PARTIAL), and the DHCP layer matches
/// xid and chaddr anyway.
pub fn parse(p: &[u8], dport: u16) -> Option<Datagram<'_>> {
    let first = *p.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(first & 0x0f) * 4;
    if ihl < IPV4_HEADER || p.len() < ihl {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
    if total < ihl + UDP_HEADER || total > p.len() {
        return None;
    }
    // More-fragments flag or a fragment offset: DHCP replies are never fragmented.
    if u16::from_be_bytes([p[6], p[7]]) & 0x3fff != 0 || p[9] != IPPROTO_UDP {
        return None;
    }
    if checksum(&[&p[..ihl]]) != 0 {
        return None;
    }
    let udp = &p[ihl..total];
    let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if udp_len < UDP_HEADER || udp_len > udp.len() {
        return None;
    }
    let d = Datagram {
        src: Ipv4Addr::new(p[12], p[13], p[14], p[15]),
        dst: Ipv4Addr::new(p[16], p[17], p[18], p[19]),
        sport: u16::from_be_bytes([udp[0], udp[1]]),
        dport: u16::from_be_bytes([udp[2], udp[3]]),
        payload: &udp[UDP_HEADER..udp_len],
    };
    (d.dport == dport).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_parses_round_trip() {
        let p = build(
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::BROADCAST,
            CLIENT_PORT,
            SERVER_PORT,
            b"hello",
        )
        .unwrap();
        assert_eq!(p.len(), 20 + 8 + 5);
        // Both checksums verify to zero.
        assert_eq!(checksum(&[&p[..20]]), 0);
        let pseudo = [
            &[0u8, 0, 0, 0][..],
            &[255, 255, 255, 255],
            &[0, 17],
            &[0, 13],
        ]
        .concat();
        assert_eq!(checksum(&[&pseudo, &p[20..]]), 0);
        let d = parse(&p, SERVER_PORT).unwrap();
        assert_eq!(d.payload, b"hello");
        assert_eq!((d.sport, d.dport), (68, 67));
        assert_eq!(d.dst, Ipv4Addr::BROADCAST);
        assert_eq!(parse(&p, CLIENT_PORT), None);
    }

    #[test]
    fn known_header_checksum() {
        // The example header from RFC 1071 discussions / Wikipedia's IPv4 header checksum.
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&[&h]), 0xb861);
    }

    #[test]
    fn rejects_malformed() {
        let good = build(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::BROADCAST,
            SERVER_PORT,
            CLIENT_PORT,
            &[1, 2, 3, 4],
        )
        .unwrap();
        assert!(parse(&good, CLIENT_PORT).is_some());
        let mutate = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut p = good.clone();
            f(&mut p);
            parse(&p, CLIENT_PORT).map(|d| d.payload.to_vec())
        };
        assert_eq!(mutate(&|p| p[0] = 0x65), None, "IPv6 version");
        assert_eq!(mutate(&|p| p[0] = 0x44), None, "short IHL");
        assert_eq!(mutate(&|p| p[9] = 6), None, "TCP");
        assert_eq!(mutate(&|p| p[12] ^= 1), None, "bad IP checksum");
        assert_eq!(mutate(&|p| p[6] = 0x20), None, "more fragments");
        assert_eq!(mutate(&|p| p.truncate(30)), None, "truncated");
        assert_eq!(mutate(&|p| p[25] = 200), None, "UDP length past end");
        assert_eq!(mutate(&|p| p[25] = 4), None, "UDP length below header");
        assert_eq!(parse(&[], CLIENT_PORT), None);
        assert_eq!(parse(&[0x45], CLIENT_PORT), None);
        // Trailing Ethernet padding beyond the IP total length is ignored.
        let mut padded = good.clone();
        padded.extend_from_slice(&[0; 10]);
        assert_eq!(parse(&padded, CLIENT_PORT).unwrap().payload, &[1, 2, 3, 4]);
    }
}
