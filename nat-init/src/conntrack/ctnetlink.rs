//! The kernel's conntrack messages (ctnetlink, include/uapi/linux/netfilter/nfnetlink_conntrack.h),
//! encoded and decoded by hand: `netlink-packet-netfilter` 0.4 has tuples, status, timeout and
//! protoinfo but no CTA_NAT_SRC, and its emitters panic on short buffers; one small hand codec
//! for the whole message is shorter than mixing its types with hand-encoded NAT attributes.
//! Everything parsed comes from the kernel (or a fuzzer), so nothing here may panic.

use std::net::Ipv4Addr;

use super::{
    Entry, OFFLOADED_TIMEOUT_S, PROTO_TCP, PROTO_UDP, STATUS_ASSURED, STATUS_OFFLOAD,
    STATUS_SEEN_REPLY, STATUS_SRC_NAT, TCP_STATE_ESTABLISHED, TCP_STATE_MAX, Tuple,
};

/// A message that does not fit the layout ctnetlink documents, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ctnetlink: {0}")]
pub struct CodecError(String);

fn err(s: impl Into<String>) -> CodecError {
    CodecError(s.into())
}

// Netlink framing (linux/netlink.h).
const NLMSG_HDRLEN: usize = 16;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

// nfnetlink: subsystem in the type's high byte, then nfgenmsg {family, version, res_id}.
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const NFGENMSG_LEN: usize = 4;
const AF_INET: u8 = 2;
pub const IPCTNL_MSG_CT_NEW: u8 = 0;
pub const IPCTNL_MSG_CT_GET: u8 = 1;
pub const IPCTNL_MSG_CT_DELETE: u8 = 2;
/// A dump that zeroes each entry's counters as it reads them (ctnetlink_dump_acct).
pub const IPCTNL_MSG_CT_GET_CTRZERO: u8 = 3;

// enum ctattr_type and its nests.
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_STATUS: u16 = 3;
const CTA_PROTOINFO: u16 = 4;
const CTA_NAT_SRC: u16 = 6;
const CTA_TIMEOUT: u16 = 7;
const CTA_COUNTERS_ORIG: u16 = 9;
const CTA_COUNTERS_REPLY: u16 = 10;
const CTA_COUNTERS_PACKETS: u16 = 1;
const CTA_COUNTERS_BYTES: u16 = 2;
/// The 32-bit forms old kernels sent; still decoded, since they cost two lines.
const CTA_COUNTERS32_PACKETS: u16 = 3;
const CTA_COUNTERS32_BYTES: u16 = 4;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_PROTOINFO_TCP: u16 = 1;
const CTA_PROTOINFO_TCP_STATE: u16 = 1;
const CTA_PROTOINFO_TCP_FLAGS_ORIGINAL: u16 = 4;
const CTA_PROTOINFO_TCP_FLAGS_REPLY: u16 = 5;
const CTA_NAT_V4_MINIP: u16 = 1;
const CTA_NAT_V4_MAXIP: u16 = 2;
const CTA_NAT_PROTO: u16 = 3;
const CTA_PROTONAT_PORT_MIN: u16 = 1;
const CTA_PROTONAT_PORT_MAX: u16 = 2;
/// IPS_CONFIRMED: ctnetlink marks an entry it creates confirmed before it reads CTA_STATUS,
/// and refuses (EBUSY) a CTA_STATUS that would clear the bit.
const STATUS_CONFIRMED: u32 = 1 << 3;
/// IP_CT_TCP_FLAG_BE_LIBERAL: no window checks for this direction.
const TCP_FLAG_BE_LIBERAL: u8 = 0x08;

/// One netlink message of a received datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    /// After the netlink header.
    pub payload: &'a [u8],
}

/// Splits a datagram into its netlink messages.
pub fn split(buf: &[u8]) -> Result<Vec<Message<'_>>, CodecError> {
    let mut out = Vec::new();
    let mut off = 0;
    while off < buf.len() {
        let hdr = buf
            .get(off..off + NLMSG_HDRLEN)
            .ok_or_else(|| err(format!("truncated netlink header at offset {off}")))?;
        let len = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
        if len < NLMSG_HDRLEN || off + len > buf.len() {
            return Err(err(format!(
                "bad netlink message length {len} at offset {off}"
            )));
        }
        out.push(Message {
            kind: u16::from_ne_bytes([hdr[4], hdr[5]]),
            flags: u16::from_ne_bytes([hdr[6], hdr[7]]),
            seq: u32::from_ne_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]),
            payload: &buf[off + NLMSG_HDRLEN..off + len],
        });
        off += (len + 3) & !3;
    }
    Ok(out)
}

/// The errno of an NLMSG_ERROR payload (0 is an ACK).
pub fn error_code(payload: &[u8]) -> Result<i32, CodecError> {
    let b = payload
        .get(..4)
        .ok_or_else(|| err("NLMSG_ERROR shorter than its error code"))?;
    Ok(-i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

/// What a conntrack message says about one source-NATed flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A new or changed entry (dump reply, NEW and UPDATE events).
    Upsert(Entry),
    /// A destroyed entry (DESTROY events).
    Remove(Tuple),
}

/// (type without flags, value) pairs of a buffer of attributes.
fn attrs(buf: &[u8]) -> Result<Vec<(u16, &[u8])>, CodecError> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 4 <= buf.len() {
        let len = usize::from(u16::from_ne_bytes([buf[off], buf[off + 1]]));
        let kind = u16::from_ne_bytes([buf[off + 2], buf[off + 3]]) & NLA_TYPE_MASK;
        if len < 4 || off + len > buf.len() {
            return Err(err(format!("bad attribute length {len} at offset {off}")));
        }
        out.push((kind, &buf[off + 4..off + len]));
        off += (len + 3) & !3;
    }
    Ok(out)
}

fn get<'a>(list: &[(u16, &'a [u8])], kind: u16) -> Option<&'a [u8]> {
    list.iter().find(|(k, _)| *k == kind).map(|(_, v)| *v)
}

fn need<'a>(list: &[(u16, &'a [u8])], kind: u16, what: &str) -> Result<&'a [u8], CodecError> {
    get(list, kind).ok_or_else(|| err(format!("{what} missing")))
}

fn fixed<const N: usize>(v: &[u8], what: &str) -> Result<[u8; N], CodecError> {
    v.try_into()
        .map_err(|_| err(format!("{what}: want {N} bytes, got {}", v.len())))
}

/// A tuple nest: (proto, src, dst, sport, dport). Ports are 0 for protocols without them.
fn parse_tuple(v: &[u8], what: &str) -> Result<Tuple, CodecError> {
    let t = attrs(v)?;
    let ip = attrs(need(&t, CTA_TUPLE_IP, &format!("{what} CTA_TUPLE_IP"))?)?;
    let proto = attrs(need(
        &t,
        CTA_TUPLE_PROTO,
        &format!("{what} CTA_TUPLE_PROTO"),
    )?)?;
    let addr = |kind, name: &str| -> Result<Ipv4Addr, CodecError> {
        let w = format!("{what} {name}");
        Ok(Ipv4Addr::from(fixed::<4>(need(&ip, kind, &w)?, &w)?))
    };
    let port = |kind, name: &str| -> Result<u16, CodecError> {
        let w = format!("{what} {name}");
        match get(&proto, kind) {
            Some(v) => Ok(u16::from_be_bytes(fixed::<2>(v, &w)?)),
            None => Ok(0),
        }
    };
    let num = format!("{what} CTA_PROTO_NUM");
    Ok(Tuple {
        proto: fixed::<1>(need(&proto, CTA_PROTO_NUM, &num)?, &num)?[0],
        src: addr(CTA_IP_V4_SRC, "CTA_IP_V4_SRC")?,
        dst: addr(CTA_IP_V4_DST, "CTA_IP_V4_DST")?,
        sport: port(CTA_PROTO_SRC_PORT, "CTA_PROTO_SRC_PORT")?,
        dport: port(CTA_PROTO_DST_PORT, "CTA_PROTO_DST_PORT")?,
    })
}

/// What every message about a source-NATed IPv4 flow starts with.
struct NatFlow<'a> {
    msg: u8,
    top: Vec<(u16, &'a [u8])>,
    status: u32,
    orig: Tuple,
}

/// A NEW (dump reply, NEW and UPDATE events) or DELETE message about a source-NATed IPv4 flow;
/// `Ok(None)` for anything else: other subsystems or messages, IPv6, flows without
/// IPS_SRC_NAT (the appliance's own, which the NAT does not translate).
fn nat_flow(kind: u16, payload: &[u8]) -> Result<Option<NatFlow<'_>>, CodecError> {
    if kind >> 8 != NFNL_SUBSYS_CTNETLINK {
        return Ok(None);
    }
    let msg = (kind & 0xff) as u8;
    if msg != IPCTNL_MSG_CT_NEW && msg != IPCTNL_MSG_CT_DELETE {
        return Ok(None);
    }
    let nfgen = payload
        .get(..NFGENMSG_LEN)
        .ok_or_else(|| err("message shorter than its nfgenmsg header"))?;
    if nfgen[0] != AF_INET {
        return Ok(None);
    }
    let top = attrs(&payload[NFGENMSG_LEN..])?;
    let status = u32::from_be_bytes(fixed::<4>(
        need(&top, CTA_STATUS, "CTA_STATUS")?,
        "CTA_STATUS",
    )?);
    if status & STATUS_SRC_NAT == 0 {
        return Ok(None);
    }
    let orig = parse_tuple(
        need(&top, CTA_TUPLE_ORIG, "CTA_TUPLE_ORIG")?,
        "CTA_TUPLE_ORIG",
    )?;
    Ok(Some(NatFlow {
        msg,
        top,
        status,
        orig,
    }))
}

/// Parses one conntrack message (its netlink type and the payload after the netlink header).
/// `Ok(None)` for what is not replicated: other subsystems or message types, IPv6, protocols
/// other than TCP and UDP, and entries without IPS_SRC_NAT (flows this NAT did not translate).
pub fn parse(kind: u16, payload: &[u8]) -> Result<Option<Event>, CodecError> {
    let Some(NatFlow {
        msg,
        top,
        status,
        orig,
    }) = nat_flow(kind, payload)?
    else {
        return Ok(None);
    };
    if orig.proto != PROTO_TCP && orig.proto != PROTO_UDP {
        return Ok(None);
    }
    if msg == IPCTNL_MSG_CT_DELETE {
        return Ok(Some(Event::Remove(orig)));
    }
    let reply = parse_tuple(
        need(&top, CTA_TUPLE_REPLY, "CTA_TUPLE_REPLY")?,
        "CTA_TUPLE_REPLY",
    )?;
    let offloaded = status & STATUS_OFFLOAD != 0;
    let timeout = match get(&top, CTA_TIMEOUT) {
        Some(v) => u32::from_be_bytes(fixed::<4>(v, "CTA_TIMEOUT")?),
        None if offloaded => OFFLOADED_TIMEOUT_S,
        None => 0,
    };
    let tcp_state = if orig.proto == PROTO_TCP && offloaded && get(&top, CTA_PROTOINFO).is_none() {
        Some(TCP_STATE_ESTABLISHED)
    } else if orig.proto == PROTO_TCP {
        let info = attrs(need(&top, CTA_PROTOINFO, "CTA_PROTOINFO of a TCP entry")?)?;
        let tcp = attrs(need(&info, CTA_PROTOINFO_TCP, "CTA_PROTOINFO_TCP")?)?;
        let w = "CTA_PROTOINFO_TCP_STATE";
        let state = fixed::<1>(need(&tcp, CTA_PROTOINFO_TCP_STATE, w)?, w)?[0];
        if state >= TCP_STATE_MAX {
            return Err(err(format!("{w} {state} is not a TCP state")));
        }
        Some(state)
    } else {
        None
    };
    Ok(Some(Event::Upsert(Entry {
        orig,
        nat_addr: reply.dst,
        nat_port: reply.dport,
        tcp_state,
        status: status & (STATUS_ASSURED | STATUS_SEEN_REPLY),
        timeout,
    })))
}

/// Packets and bytes of one direction of a flow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    pub packets: u64,
    pub bytes: u64,
}

/// What a conntrack message says about one source-NATed flow's traffic, for the metrics: its
/// accounting counters (zero without `nf_conntrack_acct`) and enough of its state to tell an
/// open TCP connection and an idle timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traffic {
    /// IPPROTO_* of the flow (every protocol, ICMP too: NAT Gateway counts them all).
    pub proto: u8,
    /// A DESTROY event (the flow's last counts), rather than a live entry.
    pub destroyed: bool,
    /// IPS_* bits as the kernel sent them.
    pub status: u32,
    /// The TCP state when the kernel said it (not for an offloaded flow's dump).
    pub tcp_state: Option<u8>,
    /// Client to server (as the source sent it).
    pub orig: Count,
    /// Server to client (as the destination sent it).
    pub reply: Count,
}

fn parse_count(v: Option<&[u8]>, what: &str) -> Result<Count, CodecError> {
    let Some(v) = v else {
        return Ok(Count::default());
    };
    let a = attrs(v)?;
    let field = |k64: u16, k32: u16, name: &str| -> Result<u64, CodecError> {
        let w = format!("{what} {name}");
        if let Some(b) = get(&a, k64) {
            return Ok(u64::from_be_bytes(fixed::<8>(b, &w)?));
        }
        match get(&a, k32) {
            Some(b) => Ok(u64::from(u32::from_be_bytes(fixed::<4>(b, &w)?))),
            None => Ok(0),
        }
    };
    Ok(Count {
        packets: field(CTA_COUNTERS_PACKETS, CTA_COUNTERS32_PACKETS, "packets")?,
        bytes: field(CTA_COUNTERS_BYTES, CTA_COUNTERS32_BYTES, "bytes")?,
    })
}

/// Parses one conntrack message for its traffic: dump replies (a plain or a CTRZERO dump, both
/// answered as IPCTNL_MSG_CT_NEW) and DESTROY events. `Ok(None)` for other subsystems or
/// messages, IPv6, and flows without IPS_SRC_NAT (the appliance's own traffic, which the NAT
/// does not translate).
pub fn parse_traffic(kind: u16, payload: &[u8]) -> Result<Option<Traffic>, CodecError> {
    let Some(NatFlow {
        msg,
        top,
        status,
        orig,
    }) = nat_flow(kind, payload)?
    else {
        return Ok(None);
    };
    let tcp_state = match get(&top, CTA_PROTOINFO) {
        Some(info) if orig.proto == PROTO_TCP => match get(&attrs(info)?, CTA_PROTOINFO_TCP) {
            Some(tcp) => {
                let w = "CTA_PROTOINFO_TCP_STATE";
                match get(&attrs(tcp)?, CTA_PROTOINFO_TCP_STATE) {
                    Some(v) => Some(fixed::<1>(v, w)?[0]),
                    None => None,
                }
            }
            None => None,
        },
        _ => None,
    };
    Ok(Some(Traffic {
        proto: orig.proto,
        destroyed: msg == IPCTNL_MSG_CT_DELETE,
        status,
        tcp_state,
        orig: parse_count(get(&top, CTA_COUNTERS_ORIG), "CTA_COUNTERS_ORIG")?,
        reply: parse_count(get(&top, CTA_COUNTERS_REPLY), "CTA_COUNTERS_REPLY")?,
    }))
}

/// IPCTNL_MSG_CT_GET_CTRZERO with NLM_F_DUMP: every IPv4 entry with its counters, each entry's
/// counters zeroed as they are read, so that consecutive dumps (and the DESTROY events between
/// them) count every packet once.
pub fn ctrzero_dump_request(seq: u32) -> Vec<u8> {
    frame(
        IPCTNL_MSG_CT_GET_CTRZERO,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        &[],
    )
}

/// Appends one attribute, padded to 4 bytes.
fn put(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    // Attribute values here are a few dozen bytes; the cast cannot truncate.
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(out.len() + ((4 - len % 4) % 4), 0);
}

fn nest(out: &mut Vec<u8>, kind: u16, inner: &[u8]) {
    put(out, kind | NLA_F_NESTED, inner);
}

fn tuple_attrs(t: &Tuple) -> Vec<u8> {
    let mut ip = Vec::new();
    put(&mut ip, CTA_IP_V4_SRC, &t.src.octets());
    put(&mut ip, CTA_IP_V4_DST, &t.dst.octets());
    let mut proto = Vec::new();
    put(&mut proto, CTA_PROTO_NUM, &[t.proto]);
    put(&mut proto, CTA_PROTO_SRC_PORT, &t.sport.to_be_bytes());
    put(&mut proto, CTA_PROTO_DST_PORT, &t.dport.to_be_bytes());
    let mut out = Vec::new();
    nest(&mut out, CTA_TUPLE_IP, &ip);
    nest(&mut out, CTA_TUPLE_PROTO, &proto);
    out
}

/// Wraps a ctnetlink body in the netlink and nfgenmsg headers.
fn frame(msg: u8, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDRLEN + NFGENMSG_LEN + body.len();
    let mut out = Vec::with_capacity(len);
    // Messages here are a few hundred bytes at most.
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&(NFNL_SUBSYS_CTNETLINK << 8 | u16::from(msg)).to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&[AF_INET, 0, 0, 0]);
    out.extend_from_slice(body);
    out
}

/// IPCTNL_MSG_CT_GET with NLM_F_DUMP: every IPv4 entry of the namespace.
pub fn dump_request(seq: u32) -> Vec<u8> {
    frame(IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, seq, &[])
}

/// IPCTNL_MSG_CT_NEW that recreates `e` with `timeout` seconds to live, asking for an ACK.
///
/// NLM_F_CREATE|NLM_F_EXCL: an entry the kernel already has for this tuple is left alone and
/// answered with EEXIST, which the caller counts as already present. Without EXCL the kernel
/// would try to update it, and refuses a NAT change on an existing entry (EOPNOTSUPP) anyway;
/// a live local entry is also fresher than a peer's copy. Each message is acked on its own,
/// so one refusal does not stop the others.
///
/// The reply tuple is the un-NATed inverse of the original: the kernel derives the translated
/// reply from CTA_NAT_SRC (nf_nat_setup_info), which also sets the status's NAT bits that
/// CTA_STATUS may not. TCP gets BE_LIBERAL in both directions (flag and mask), since this
/// kernel has seen none of the flow's window.
///
/// `with_status` adds CTA_STATUS (ASSURED, SEEN_REPLY, and CONFIRMED, which the kernel already
/// set and will not see cleared); a kernel that checks it before confirming would refuse it
/// with EBUSY, and the caller then sends the entry again without.
pub fn new_request(e: &Entry, timeout: u32, seq: u32, with_status: bool) -> Vec<u8> {
    let o = &e.orig;
    let inverse = Tuple {
        proto: o.proto,
        src: o.dst,
        dst: o.src,
        sport: o.dport,
        dport: o.sport,
    };
    let mut body = Vec::with_capacity(192);
    nest(&mut body, CTA_TUPLE_ORIG, &tuple_attrs(o));
    nest(&mut body, CTA_TUPLE_REPLY, &tuple_attrs(&inverse));
    let mut nat_proto = Vec::new();
    put(
        &mut nat_proto,
        CTA_PROTONAT_PORT_MIN,
        &e.nat_port.to_be_bytes(),
    );
    put(
        &mut nat_proto,
        CTA_PROTONAT_PORT_MAX,
        &e.nat_port.to_be_bytes(),
    );
    let mut nat = Vec::new();
    put(&mut nat, CTA_NAT_V4_MINIP, &e.nat_addr.octets());
    put(&mut nat, CTA_NAT_V4_MAXIP, &e.nat_addr.octets());
    nest(&mut nat, CTA_NAT_PROTO, &nat_proto);
    nest(&mut body, CTA_NAT_SRC, &nat);
    put(&mut body, CTA_TIMEOUT, &timeout.to_be_bytes());
    if with_status {
        let status = e.status & (STATUS_ASSURED | STATUS_SEEN_REPLY) | STATUS_CONFIRMED;
        put(&mut body, CTA_STATUS, &status.to_be_bytes());
    }
    if let Some(state) = e.tcp_state {
        let liberal = [TCP_FLAG_BE_LIBERAL, TCP_FLAG_BE_LIBERAL];
        let mut tcp = Vec::new();
        put(&mut tcp, CTA_PROTOINFO_TCP_STATE, &[state]);
        put(&mut tcp, CTA_PROTOINFO_TCP_FLAGS_ORIGINAL, &liberal);
        put(&mut tcp, CTA_PROTOINFO_TCP_FLAGS_REPLY, &liberal);
        let mut info = Vec::new();
        nest(&mut info, CTA_PROTOINFO_TCP, &tcp);
        nest(&mut body, CTA_PROTOINFO, &info);
    }
    frame(
        IPCTNL_MSG_CT_NEW,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        seq,
        &body,
    )
}

#[cfg(test)]
mod tests;
