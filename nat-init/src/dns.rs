//! DNS stub resolver for the AWS endpoints' names: asks one given server (the VPC's resolver,
//! DHCP option 6, [`crate::dhcp::Lease::dns`]) over UDP for A records, within a deadline.
//!
//! The image has no resolv.conf and no libc resolver (static musl, and nat-init chooses the
//! server explicitly), so this is the one place names become addresses. Messages are encoded
//! and parsed with hickory-proto, already linked through dhcproto. A reply counts only when it
//! carries our random id, is a response and echoes our question; anything else on the socket is
//! ignored (a late answer, a forgery), so an off-path host must guess 16 bits of id and the
//! source port. CNAME chains are followed inside the answer section; only A records for the
//! chain's last name are taken.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Instant;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

use crate::dhcp::Random;

/// Where DNS servers listen: the lease gives addresses, `(addr, PORT)` is the server.
pub const PORT: u16 = 53;
/// CNAME hops followed before giving up (resolvers stop around 8-16).
const MAX_CNAME_HOPS: usize = 8;
/// Largest UDP answer read (no EDNS: servers keep to 512 bytes, and set TC beyond).
const MAX_UDP: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("{name:?} is not a valid host name: {reason}")]
    Name { name: String, reason: String },
    #[error("DNS {server}: {what}: {source}")]
    Io {
        server: SocketAddr,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("DNS {server}: no answer for {name} in time")]
    Timeout { server: SocketAddr, name: String },
    #[error("DNS {server}: {name} does not exist (NXDOMAIN)")]
    NoSuchName { server: SocketAddr, name: String },
    #[error("DNS {server}: {name} has no IPv4 address")]
    NoAddress { server: SocketAddr, name: String },
    #[error("DNS {server}: {name}: server answered {rcode}")]
    Server {
        server: SocketAddr,
        name: String,
        rcode: String,
    },
    #[error("DNS {server}: {name}: answer truncated (TC), and TCP is not supported")]
    Truncated { server: SocketAddr, name: String },
    #[error("DNS {server}: {name}: CNAME chain longer than {MAX_CNAME_HOPS} or looping")]
    CnameChain { server: SocketAddr, name: String },
}

/// What a reply said, once it is known to answer our query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Addresses(Vec<Ipv4Addr>),
    NoSuchName,
    NoAddress,
    /// SERVFAIL, REFUSED, ...: worth asking again.
    ServerError(String),
    Truncated,
    CnameChain,
}

/// The A query for `name` with `id`, recursion desired.
pub fn encode_query(id: u16, name: &Name) -> Result<Vec<u8>, String> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name.clone(), RecordType::A));
    m.to_vec().map_err(|e| e.to_string())
}

/// Reads a datagram: `None` when it is not an answer to our query (`id`, `name`), to be
/// ignored.
pub fn decode_answer(bytes: &[u8], id: u16, name: &Name) -> Option<Outcome> {
    let m = Message::from_vec(bytes).ok()?;
    let md = &m.metadata;
    if md.id != id || md.message_type != MessageType::Response || md.op_code != OpCode::Query {
        return None;
    }
    match m.queries.as_slice() {
        [q] if q.query_type() == RecordType::A && q.name() == name => {}
        _ => return None,
    }
    if md.truncation {
        return Some(Outcome::Truncated);
    }
    match md.response_code {
        ResponseCode::NoError => {}
        ResponseCode::NXDomain => return Some(Outcome::NoSuchName),
        other => return Some(Outcome::ServerError(other.to_string())),
    }
    // Follow the chain from the question's name; a record for any other name is ignored.
    let mut current = name.clone();
    for _ in 0..=MAX_CNAME_HOPS {
        let addrs: Vec<Ipv4Addr> = m
            .answers
            .iter()
            .filter(|r| r.name == current)
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect();
        if !addrs.is_empty() {
            return Some(Outcome::Addresses(addrs));
        }
        let next = m
            .answers
            .iter()
            .filter(|r| r.name == current)
            .find_map(|r| match &r.data {
                RData::CNAME(c) => Some(c.0.clone()),
                _ => None,
            });
        match next {
            Some(n) => current = n,
            None => return Some(Outcome::NoAddress),
        }
    }
    Some(Outcome::CnameChain)
}

/// The IPv4 addresses of `host`, asked of `server` at most `attempts` times (each with a new
/// id and source port, and an equal share of the time left) until `deadline`. NXDOMAIN, no
/// address, a truncated answer or a looping chain are final; timeouts and server errors are
/// retried.
pub fn resolve_ipv4(
    server: SocketAddr,
    host: &str,
    deadline: Instant,
    attempts: u32,
    random: &mut impl Random,
) -> Result<Vec<Ipv4Addr>, DnsError> {
    let mut name = Name::from_ascii(host).map_err(|e| DnsError::Name {
        name: host.to_string(),
        reason: e.to_string(),
    })?;
    if name.num_labels() == 0 {
        return Err(DnsError::Name {
            name: host.to_string(),
            reason: "empty".to_string(),
        });
    }
    // Absolute: no search list here. (Name equality is case-insensitive but FQDN-sensitive.)
    name.set_fqdn(true);
    let attempts = attempts.max(1);
    let mut last = DnsError::Timeout {
        server,
        name: host.to_string(),
    };
    for attempt in 0..attempts {
        let Some(left) = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        else {
            break;
        };
        let share = left / (attempts - attempt);
        match ask(server, &name, host, Instant::now() + share, random) {
            Ok(addrs) => return Ok(addrs),
            Err(e @ (DnsError::Timeout { .. } | DnsError::Server { .. } | DnsError::Io { .. })) => {
                last = e
            }
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// One query on a fresh socket, until `until`.
fn ask(
    server: SocketAddr,
    name: &Name,
    host: &str,
    until: Instant,
    random: &mut impl Random,
) -> Result<Vec<Ipv4Addr>, DnsError> {
    let io = |what, source| DnsError::Io {
        server,
        what,
        source,
    };
    let timeout = || DnsError::Timeout {
        server,
        name: host.to_string(),
    };
    let id = (random.next_u32() & 0xffff) as u16;
    let query = encode_query(id, name).map_err(|reason| DnsError::Name {
        name: host.to_string(),
        reason,
    })?;
    let bind: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind).map_err(|e| io("bind", e))?;
    // Connected: datagrams from any other address are dropped by the kernel.
    sock.connect(server).map_err(|e| io("connect", e))?;
    sock.send(&query).map_err(|e| io("send", e))?;
    let mut buf = vec![0u8; MAX_UDP];
    loop {
        // An ICMP port unreachable from an earlier datagram is an error: nothing listens there.
        let n = crate::udp::recv_before(&sock, &mut buf, until)
            .map_err(|e| io("receive", e))?
            .ok_or_else(timeout)?;
        let Some(outcome) = decode_answer(&buf[..n], id, name) else {
            continue;
        };
        let name = host.to_string();
        return match outcome {
            Outcome::Addresses(a) => Ok(a),
            Outcome::NoSuchName => Err(DnsError::NoSuchName { server, name }),
            Outcome::NoAddress => Err(DnsError::NoAddress { server, name }),
            Outcome::ServerError(rcode) => Err(DnsError::Server {
                server,
                name,
                rcode,
            }),
            Outcome::Truncated => Err(DnsError::Truncated { server, name }),
            Outcome::CnameChain => Err(DnsError::CnameChain { server, name }),
        };
    }
}

#[cfg(test)]
mod tests;
