//! The record stream between peers, over TCP. A stream opens with [`HELLO`] (magic and
//! version), then carries frames: a big-endian u16 length, then that many bytes, a kind byte and
//! a fixed-size body. Every length is bounded and checked, so a decoder fed garbage (a wrong
//! peer, a fuzzer) returns an error, never panics and never allocates more than one frame.
//!
//! Records: `Upsert` (31 bytes framed), `Remove` (16), `SnapshotBegin` and `SnapshotEnd` around
//! a full copy (the receiver replaces its cache at the end, so entries the sender no longer has
//! disappear), and `Heartbeat`, which an idle sender writes so that a receiver can tell a
//! silent peer from a dead one.

use std::net::Ipv4Addr;

use super::{Entry, PROTO_TCP, PROTO_UDP, TCP_STATE_MAX, Tuple};

/// First bytes of a stream: "ctsy" and the format's version.
pub const HELLO: [u8; 5] = *b"ctsy\x01";
/// Longest frame any version-1 record needs; a longer length is garbage.
pub const MAX_FRAME: usize = 64;

const KIND_UPSERT: u8 = 1;
const KIND_REMOVE: u8 = 2;
const KIND_BEGIN: u8 = 3;
const KIND_END: u8 = 4;
const KIND_HEARTBEAT: u8 = 5;
const TUPLE_LEN: usize = 13;
const UPSERT_LEN: usize = TUPLE_LEN + 4 + 2 + 1 + 4 + 4;
/// Encoded `tcp_state` of a UDP entry (no TCP state is this large).
const NO_TCP_STATE: u8 = 0xff;

/// One replication record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    Upsert(Entry),
    Remove(Tuple),
    /// A full copy follows; the receiver collects it apart from its cache.
    SnapshotBegin,
    /// The full copy is complete: it replaces the cache. Carries the number of upserts sent,
    /// so a receiver can tell a complete copy.
    SnapshotEnd {
        count: u32,
    },
    Heartbeat,
}

/// Bytes that are not a version-1 stream, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("replication stream: {0}")]
pub struct WireError(String);

fn err(s: impl Into<String>) -> WireError {
    WireError(s.into())
}

fn put_tuple(out: &mut Vec<u8>, t: &Tuple) {
    out.push(t.proto);
    out.extend_from_slice(&t.src.octets());
    out.extend_from_slice(&t.dst.octets());
    out.extend_from_slice(&t.sport.to_be_bytes());
    out.extend_from_slice(&t.dport.to_be_bytes());
}

/// Appends `r` as one frame.
pub fn encode(r: &Record, out: &mut Vec<u8>) {
    let mut body = Vec::with_capacity(1 + UPSERT_LEN);
    match r {
        Record::Upsert(e) => {
            body.push(KIND_UPSERT);
            put_tuple(&mut body, &e.orig);
            body.extend_from_slice(&e.nat_addr.octets());
            body.extend_from_slice(&e.nat_port.to_be_bytes());
            body.push(e.tcp_state.unwrap_or(NO_TCP_STATE));
            body.extend_from_slice(&e.status.to_be_bytes());
            body.extend_from_slice(&e.timeout.to_be_bytes());
        }
        Record::Remove(t) => {
            body.push(KIND_REMOVE);
            put_tuple(&mut body, t);
        }
        Record::SnapshotBegin => body.push(KIND_BEGIN),
        Record::SnapshotEnd { count } => {
            body.push(KIND_END);
            body.extend_from_slice(&count.to_be_bytes());
        }
        Record::Heartbeat => body.push(KIND_HEARTBEAT),
    }
    // A body is at most 1 + UPSERT_LEN bytes.
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(&body);
}

/// Reads fixed-size fields off a body, front to back.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        // Callers check the body's exact length first, so N bytes are always there; the
        // fallback only keeps this total.
        let mut b = [0u8; N];
        if let Some((head, rest)) = self.0.split_first_chunk::<N>() {
            b = *head;
            self.0 = rest;
        }
        b
    }
    fn addr(&mut self) -> Ipv4Addr {
        Ipv4Addr::from(self.take::<4>())
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take())
    }
    fn tuple(&mut self) -> Result<Tuple, WireError> {
        let [proto] = self.take::<1>();
        if proto != PROTO_TCP && proto != PROTO_UDP {
            return Err(err(format!("protocol {proto} is neither TCP nor UDP")));
        }
        Ok(Tuple {
            proto,
            src: self.addr(),
            dst: self.addr(),
            sport: self.u16(),
            dport: self.u16(),
        })
    }
}

fn want_len(kind: &str, body: &[u8], len: usize) -> Result<(), WireError> {
    if body.len() != len {
        return Err(err(format!(
            "{kind} record of {} bytes, want {len}",
            body.len()
        )));
    }
    Ok(())
}

/// Decodes the frame at the start of `buf`: `Ok(None)` when `buf` does not hold a whole frame
/// yet, else the record and the bytes it took.
pub fn decode(buf: &[u8]) -> Result<Option<(Record, usize)>, WireError> {
    let Some((len, rest)) = buf.split_first_chunk::<2>() else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes(*len));
    if len == 0 || len > MAX_FRAME {
        return Err(err(format!("frame length {len} outside 1..={MAX_FRAME}")));
    }
    let Some(frame) = rest.get(..len) else {
        return Ok(None);
    };
    let (kind, body) = (frame[0], &frame[1..]);
    let mut r = Reader(body);
    let record = match kind {
        KIND_UPSERT => {
            want_len("upsert", body, UPSERT_LEN)?;
            let orig = r.tuple()?;
            let nat_addr = r.addr();
            let nat_port = r.u16();
            let [state] = r.take::<1>();
            let tcp_state = match (orig.proto, state) {
                (PROTO_TCP, s) if s < TCP_STATE_MAX => Some(s),
                (PROTO_UDP, NO_TCP_STATE) => None,
                (p, s) => return Err(err(format!("TCP state {s} for protocol {p}"))),
            };
            Record::Upsert(Entry {
                orig,
                nat_addr,
                nat_port,
                tcp_state,
                status: r.u32(),
                timeout: r.u32(),
            })
        }
        KIND_REMOVE => {
            want_len("remove", body, TUPLE_LEN)?;
            Record::Remove(r.tuple()?)
        }
        KIND_BEGIN => {
            want_len("snapshot begin", body, 0)?;
            Record::SnapshotBegin
        }
        KIND_END => {
            want_len("snapshot end", body, 4)?;
            Record::SnapshotEnd { count: r.u32() }
        }
        KIND_HEARTBEAT => {
            want_len("heartbeat", body, 0)?;
            Record::Heartbeat
        }
        k => return Err(err(format!("unknown record kind {k}"))),
    };
    Ok(Some((record, 2 + len)))
}

/// Checks a stream's opening bytes: `Ok(false)` while fewer than [`HELLO`]'s length arrived.
pub fn check_hello(buf: &[u8]) -> Result<bool, WireError> {
    let Some(head) = buf.get(..HELLO.len()) else {
        return Ok(false);
    };
    if head[..4] != HELLO[..4] {
        return Err(err("not a replication stream (bad magic)"));
    }
    if head[4] != HELLO[4] {
        return Err(err(format!(
            "version {} is not the supported {}",
            head[4], HELLO[4]
        )));
    }
    Ok(true)
}

/// Decodes every whole frame of `buf` (the fuzz target's entry): the records and the bytes
/// left over (a partial frame).
pub fn decode_all(mut buf: &[u8]) -> Result<(Vec<Record>, usize), WireError> {
    let mut out = Vec::new();
    while let Some((r, n)) = decode(buf)? {
        out.push(r);
        buf = &buf[n..];
    }
    Ok((out, buf.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(proto: u8) -> Entry {
        Entry {
            orig: Tuple {
                proto,
                src: Ipv4Addr::new(10, 0, 1, 2),
                dst: Ipv4Addr::new(198, 51, 100, 2),
                sport: 40000,
                dport: 443,
            },
            nat_addr: Ipv4Addr::new(198, 51, 100, 1),
            nat_port: 61000,
            tcp_state: (proto == PROTO_TCP).then_some(3),
            status: 6,
            timeout: 431999,
        }
    }

    fn all() -> Vec<Record> {
        vec![
            Record::SnapshotBegin,
            Record::Upsert(entry(PROTO_TCP)),
            Record::Upsert(entry(PROTO_UDP)),
            Record::SnapshotEnd { count: 2 },
            Record::Remove(entry(PROTO_UDP).orig),
            Record::Heartbeat,
        ]
    }

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        for r in all() {
            encode(&r, &mut buf);
        }
        assert_eq!(decode_all(&buf).unwrap(), (all(), 0));
    }

    #[test]
    fn upsert_bytes() {
        let mut buf = Vec::new();
        encode(&Record::Upsert(entry(PROTO_TCP)), &mut buf);
        #[rustfmt::skip]
        let want = [
            0, 29, 1, // length, kind
            6, 10, 0, 1, 2, 198, 51, 100, 2, 0x9c, 0x40, 0x01, 0xbb, // tuple
            198, 51, 100, 1, 0xee, 0x48, // nat address, port
            3, 0, 0, 0, 6, 0, 6, 0x97, 0x7f, // state, status, timeout
        ];
        assert_eq!(buf, want);
        assert_eq!(buf.len(), 31);
    }

    #[test]
    fn truncation_waits_for_more() {
        let mut buf = Vec::new();
        encode(&Record::Upsert(entry(PROTO_TCP)), &mut buf);
        for cut in 0..buf.len() {
            assert_eq!(decode(&buf[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(decode_all(&buf[..buf.len() - 1]).unwrap(), (vec![], 30));
    }

    #[test]
    fn garbage_is_an_error() {
        // length 0, length over the bound, unknown kind, wrong body length, bad protocol,
        // a TCP state on UDP.
        assert!(decode(&[0, 0]).is_err());
        assert!(decode(&[0x10, 0]).is_err());
        assert!(decode(&[0, 1, 99]).is_err());
        assert!(decode(&[0, 2, KIND_BEGIN, 0]).is_err());
        let mut buf = Vec::new();
        encode(&Record::Remove(entry(PROTO_TCP).orig), &mut buf);
        buf[3] = 1;
        assert!(decode(&buf).unwrap_err().to_string().contains("protocol 1"));
        let mut buf = Vec::new();
        encode(&Record::Upsert(entry(PROTO_UDP)), &mut buf);
        buf[22] = 3;
        assert!(decode(&buf).is_err());
    }

    #[test]
    fn every_byte_string_decodes_without_panic() {
        // A cheap stand-in for the fuzz target: every short prefix of a pseudo-random stream.
        let mut x: u32 = 0x1234_5678;
        let bytes: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x % 40) as u8
            })
            .collect();
        for start in 0..bytes.len() {
            let _ = decode_all(&bytes[start..]);
        }
    }

    #[test]
    fn fuzz_seeds_decode() {
        let seed = include_bytes!("../../fuzz/seeds/ct_decode/stream-with-hello.bin");
        assert_eq!(check_hello(seed), Ok(true));
        let (records, left) = decode_all(&seed[HELLO.len()..]).unwrap();
        assert_eq!(left, 0);
        assert_eq!(records.len(), 5);
        assert_eq!(records[1], Record::Upsert(entry(PROTO_TCP)));
    }

    #[test]
    fn hello() {
        assert_eq!(check_hello(b"cts"), Ok(false));
        assert_eq!(check_hello(&HELLO), Ok(true));
        assert!(check_hello(b"GET /").is_err());
        assert!(
            check_hello(b"ctsy\x02")
                .unwrap_err()
                .to_string()
                .contains("version 2")
        );
    }
}
