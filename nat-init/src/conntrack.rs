//! Connection-tracking replication: what lets established connections survive a failover
//! between two NAT instances. The active instance streams its source-NATed conntrack entries to
//! its peers; a peer that takes over commits the entries it cached into its own kernel, so the
//! next packet of each flow finds its translation there instead of being dropped or reset.
//!
//! - [`ctnetlink`]: the kernel's conntrack messages, parsed into [`Entry`] and built back (pure);
//! - [`wire`]: the versioned, length-prefixed record format between peers (pure);
//! - [`cache`]: what one peer told us, applied record by record and expired by timeout (pure);
//! - [`socket`]: the ctnetlink socket (dump, events, commit), the edge to the kernel;
//! - [`sync`]: [`sync::CtSync`], the threads that stream to peers and listen to them.
//!
//! What a replicated entry keeps: the protocol (TCP, UDP), the original tuple, the source-NAT
//! mapping (the address and port the reply comes back to), the TCP state, the ASSURED and
//! SEEN_REPLY bits and the remaining timeout. What it does not keep, and why that is fine:
//! - TCP window data (td_end, td_maxwin, scale): the committed entry is marked BE_LIBERAL in
//!   both directions, so window tracking accepts the flow mid-stream instead of marking its
//!   packets invalid; what is lost is only the out-of-window check for these flows.
//! - sequence adjustment: only NAT helpers (FTP, SIP) rewrite payloads; the appliance loads
//!   no helpers, so no flow of ours has one.
//! - helpers and expectations: none loaded (above), so none to carry.
//! - marks, labels, zones: the table sets one mark only (`fwd_first_reply` marks a flow at its
//!   first reply, to count it once), and it is not replicated: a flow taken over from a peer
//!   counts as established again at its next reply on the new instance. No labels; every
//!   entry is in zone 0.
//! - counters: the new instance counts from zero; the health line's figures are per instance.
//! - ICMP and other protocols: not replicated; a ping in flight at the failover is retried by
//!   its sender, and a new echo creates a new entry.
//! - the OFFLOAD bit: a flow the old instance had in its flowtable is a plain entry here; its
//!   next packets through the forward chain put it in this instance's flowtable. The kernel
//!   reports no timeout or TCP state for an offloaded flow: it is sent as established with
//!   [`OFFLOADED_TIMEOUT_S`] (a dump that skipped it would drop it from the peers' copies at
//!   the next resync, and with it the connection at a takeover).
//!
//! Only source-NATed flows are replicated (IPS_SRC_NAT): they are the ones whose translation a
//! takeover must keep. A replicated TCP entry needs its first packet after the takeover to be
//! seen by conntrack as belonging to it; the table must also accept [`sync::PORT`] from the
//! peers in its input chain, or no stream arrives.
//!
//! Figures (the namespace tests in `nat-init/tests/ctsync.rs`, debug build, x86-64 build
//! host, not Graviton): an upsert record is 31 bytes on the wire, a removal 16; 5000 entries
//! commit in 55 to 85 ms (60 000 to 90 000 entries/s), and go from one kernel to a peer's
//! cache (dump, stream, decode) in about 100 ms. The periodic resync costs 31 bytes per entry
//! per peer every 30 s: about 100 kB/s for 100 000 flows.

pub mod cache;
pub mod ctnetlink;
pub mod socket;
pub mod sync;
pub mod wire;

use std::net::Ipv4Addr;

pub use cache::Cache;

/// IPPROTO_TCP.
pub const PROTO_TCP: u8 = 6;
/// IPPROTO_UDP.
pub const PROTO_UDP: u8 = 17;

/// IPS_SEEN_REPLY: packets went both ways.
pub const STATUS_SEEN_REPLY: u32 = 1 << 1;
/// IPS_ASSURED: the flow is established; early drop under pressure spares it.
pub const STATUS_ASSURED: u32 = 1 << 2;
/// IPS_SRC_NAT: the flow's source was translated (by this NAT).
pub const STATUS_SRC_NAT: u32 = 1 << 4;

/// IPS_OFFLOAD: the flow is in a flowtable; ctnetlink then dumps neither its timeout nor its
/// protocol info (ctnetlink_dump_info), and only established flows are offloaded.
pub const STATUS_OFFLOAD: u32 = 1 << 14;
/// The timeout an offloaded entry is given (the kernel reports none): long enough to outlive
/// several resyncs, which keep it while the flow lives; a packet after a takeover sets the
/// kernel's own established timeout.
pub const OFFLOADED_TIMEOUT_S: u32 = 300;

/// TCP_CONNTRACK_MAX: conntrack's TCP states are below it (ESTABLISHED is 3).
pub const TCP_STATE_MAX: u8 = 10;
/// TCP_CONNTRACK_ESTABLISHED.
pub const TCP_STATE_ESTABLISHED: u8 = 3;

/// A flow's original-direction tuple (IPv4, TCP or UDP): the key of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tuple {
    /// [`PROTO_TCP`] or [`PROTO_UDP`].
    pub proto: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
}

/// One source-NATed conntrack entry, as replicated between peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The original direction (client to server, before translation).
    pub orig: Tuple,
    /// The address the source was translated to: the reply tuple's destination.
    pub nat_addr: Ipv4Addr,
    /// The port the source was translated to: the reply tuple's destination port.
    pub nat_port: u16,
    /// Conntrack's TCP state number when TCP (below [`TCP_STATE_MAX`]); `None` for UDP.
    pub tcp_state: Option<u8>,
    /// The status bits worth carrying ([`STATUS_ASSURED`], [`STATUS_SEEN_REPLY`]).
    pub status: u32,
    /// Seconds left before the entry times out, when it was read.
    pub timeout: u32,
}
