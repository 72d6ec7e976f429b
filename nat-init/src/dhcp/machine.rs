//! The DHCPv4 client state machine (RFC 2131 section 4.4), pure: time comes in as milliseconds
//! from a monotonic clock, packets come in decoded, and what to do goes out as [`Action`]s plus
//! the next deadline. No sockets, no clock reads; randomness (xids, jitter) comes in through
//! [`Random`].
//!
//! Deliberate departures from the RFC, for an appliance that wants its address fast:
//! - no random 1-10 s wait before the first DISCOVER (one client per link, nothing to spread);
//! - the first OFFER is taken at once instead of collecting offers;
//! - retransmission starts at 0.5 s and doubles to a 4 s cap (RFC: 4 s doubling to 64 s), with
//!   +-25 % jitter instead of +-1 s; the first DISCOVER is repeated after only 0.25 s, so one
//!   lost at link start-up costs a quarter of a second;
//! - ACKs and NAKs are taken only from the server in use (the OFFER's in REQUESTING, the
//!   lease's in RENEWING and REBINDING): in REBINDING the RFC hears any server, but a VPC has
//!   one, and a NAK drops the address and every masqueraded flow;
//! - a lease under [`MIN_LEASE_S`] is held for that long (see there);
//! - INIT-REBOOT is not implemented (the appliance has no storage for a previous lease);
//! - no ARP probe / DECLINE: in a VPC the address is the ENI's, assigned by AWS.

use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};

pub use super::random::Random;

/// First retransmission delay of the first DISCOVER: a DISCOVER lost while the link settles
/// (seen through UEFI boot) should cost well under a second.
const FIRST_DISCOVER_RETRANSMIT_MS: u64 = 250;
/// Retransmission delay after that (and for REQUESTs), doubling to the cap.
const RETRANSMIT_BASE_MS: u64 = 500;
/// Retransmission delay cap.
const RETRANSMIT_CAP_MS: u64 = 4000;
/// REQUESTs sent in REQUESTING before starting over with DISCOVER.
const REQUEST_ATTEMPTS: u32 = 4;
/// Shortest wait between REQUESTs in RENEWING/REBINDING (RFC: 60 s; leases here can be 2 min).
const RENEW_RETRY_MIN_MS: u64 = 1000;
/// Cap of the back-off after repeated NAKs, so a confused server cannot make us spin.
const NAK_BACKOFF_CAP_MS: u64 = 8000;
/// The lease time value meaning "infinite".
const INFINITE: u32 = u32::MAX;
/// Largest DHCP message we accept (our receive buffers are bigger).
const MAX_MESSAGE_SIZE: u16 = 1500;
/// Shortest lease held. A shorter one (a rogue or misconfigured server) would have us renew
/// every few seconds and the address flap; a VPC address is the ENI's and cannot go to anyone
/// else meanwhile, so holding it a little longer than granted harms nobody. The lease keeps
/// the granted time in [`Lease::granted_lease_s`] so the caller can say so.
pub const MIN_LEASE_S: u32 = 60;

/// `ms` scaled by a random factor in [0.75, 1.25].
fn jitter(random: &mut impl Random, ms: u64) -> u64 {
    let quarter = ms / 4;
    if quarter == 0 {
        return ms;
    }
    ms - quarter + u64::from(random.next_u32()) % (2 * quarter + 1)
}

/// The client's states (RFC 2131 figure 5, without INIT-REBOOT/REBOOTING).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Init,
    Selecting,
    Requesting,
    Bound,
    Renewing,
    Rebinding,
}

/// A lease as the rest of nat-init needs it. Times are absolute, in the caller's clock (ms);
/// `u64::MAX` means never (infinite lease).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
    /// Option 3, first router; `None` when the server sent none.
    pub router: Option<Ipv4Addr>,
    /// Option 26.
    pub mtu: Option<u16>,
    /// Option 6, the usable addresses in the server's order (the VPC's resolver): where the AWS
    /// endpoints' names are resolved. Empty when the server sent none.
    pub dns: Vec<Ipv4Addr>,
    /// Option 54.
    pub server: Ipv4Addr,
    /// Lease time, T1 and T2 in seconds as held: as granted, T1/T2 defaulted when absent, and
    /// the lease time raised to [`MIN_LEASE_S`].
    pub lease_s: u32,
    pub t1_s: u32,
    pub t2_s: u32,
    /// When the REQUEST that got this lease was sent: the lease counts from there.
    pub start_ms: u64,
    /// Option 51 as the server sent it (differs from `lease_s` when raised).
    pub granted_lease_s: u32,
}

impl Lease {
    fn at(&self, secs: u32) -> u64 {
        if self.lease_s == INFINITE {
            return u64::MAX;
        }
        self.start_ms.saturating_add(u64::from(secs) * 1000)
    }

    pub fn renew_at_ms(&self) -> u64 {
        self.at(self.t1_s)
    }

    pub fn rebind_at_ms(&self) -> u64 {
        self.at(self.t2_s)
    }

    pub fn expires_at_ms(&self) -> u64 {
        self.at(self.lease_s)
    }

    /// Whole seconds left at `now_ms` (`u64::MAX` for an infinite lease).
    pub fn left_s(&self, now_ms: u64) -> u64 {
        match self.expires_at_ms() {
            u64::MAX => u64::MAX,
            e => e.saturating_sub(now_ms) / 1000,
        }
    }
}

/// How a message leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// From 0.0.0.0:68 to 255.255.255.255:67 in a link-layer broadcast (raw socket): the client
    /// has no address yet.
    Raw(Vec<u8>),
    /// From the leased address :68 to `dst`:67 over an ordinary UDP socket; `dst` is the
    /// server (RENEWING) or 255.255.255.255 (REBINDING).
    Udp { dst: Ipv4Addr, payload: Vec<u8> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Send(Transmit),
    /// Configure this lease (address, prefix, router, MTU). Sent on BOUND and on every
    /// successful renewal (times move; address normally unchanged).
    Apply(Lease),
    /// Remove this lease's address: it expired, or the server refused it (NAK).
    Drop(Lease),
}

/// What is pending: the event that wakes the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A DHCP message received on port 68 (already decoded).
    Packet(&'a Message),
    /// The deadline given by [`Machine::deadline_ms`] may have passed.
    Timer,
}

/// The offer being requested.
#[derive(Debug, Clone)]
struct Offer {
    addr: Ipv4Addr,
    server: Ipv4Addr,
}

#[derive(Debug, Clone)]
pub struct Machine<R: Random> {
    mac: [u8; 6],
    random: R,
    state: State,
    xid: u32,
    /// When the current exchange began, for the `secs` field.
    exchange_start_ms: u64,
    /// When the last REQUEST went out: the start of the lease it may bring.
    request_sent_ms: u64,
    retransmit_ms: u64,
    attempts: u32,
    naks: u32,
    offer: Option<Offer>,
    lease: Option<Lease>,
    deadline_ms: u64,
}

/// Decodes a DHCP message; `None` for anything dhcproto cannot read, and for a hardware
/// address length over 16, on which dhcproto 0.15's `Message::chaddr` would panic (found by the
/// `dhcp_parse` fuzz target).
pub fn decode(bytes: &[u8]) -> Option<Message> {
    Message::from_bytes(bytes).ok().filter(|m| m.hlen() <= 16)
}

/// A BOOTREQUEST with every field zero, then the magic cookie and END: the 236-byte fixed
/// header of RFC 2131 section 2 plus 5 bytes.
const BLANK_REQUEST: [u8; 241] = {
    let mut b = [0u8; 241];
    b[0] = 1; // op BOOTREQUEST
    b[1] = 1; // htype Ethernet
    b[2] = 6; // hlen
    b[236] = 99;
    b[237] = 130;
    b[238] = 83;
    b[239] = 99;
    b[240] = 255;
    b
};

/// What every message the client sends starts from. Not `Message::default()` (nor `new`, nor
/// `new_with_id`, which uses it): each draws an xid from `rand::random()`, whose first call seeds
/// from getrandom(2) in blocking mode, and that waits until the kernel's CRNG is ready. Through
/// UEFI no early seed reaches the kernel (direct boot gets the device tree's `rng-seed`), so the
/// first DISCOVER waited a second for the kernel's jitter entropy. Decoding builds no xid.
fn blank_request() -> Message {
    Message::decode(&mut dhcproto::Decoder::new(&BLANK_REQUEST))
        // Cannot fail on this fixed template; the fallback only costs that wait.
        .unwrap_or_default()
}

impl<R: Random> Machine<R> {
    /// A client in INIT whose first DISCOVER is due at once, drawing xids and jitter from
    /// `random`.
    pub fn new(mac: [u8; 6], random: R) -> Self {
        Machine {
            mac,
            random,
            state: State::Init,
            xid: 0,
            exchange_start_ms: 0,
            request_sent_ms: 0,
            retransmit_ms: FIRST_DISCOVER_RETRANSMIT_MS,
            attempts: 0,
            naks: 0,
            offer: None,
            lease: None,
            deadline_ms: 0,
        }
    }

    /// The randomness source (to collect its failures).
    pub fn random_mut(&mut self) -> &mut R {
        &mut self.random
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The lease in force (BOUND, RENEWING, REBINDING).
    pub fn lease(&self) -> Option<&Lease> {
        self.lease.as_ref()
    }

    /// The transaction id of the exchange in progress.
    pub fn xid(&self) -> u32 {
        self.xid
    }

    /// When to deliver [`Event::Timer`] next (same clock as `now_ms`).
    pub fn deadline_ms(&self) -> u64 {
        self.deadline_ms
    }

    /// Feeds one event. Timer events before the deadline and packets that do not belong to the
    /// exchange in progress do nothing.
    pub fn handle(&mut self, now_ms: u64, event: Event<'_>) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Timer if now_ms >= self.deadline_ms => self.on_timer(now_ms, &mut out),
            Event::Timer => {}
            Event::Packet(msg) => self.on_packet(now_ms, msg, &mut out),
        }
        out
    }

    /// Starts a renewal now (for example after the link came back), if bound.
    pub fn renew_now(&mut self, now_ms: u64) -> Vec<Action> {
        let mut out = Vec::new();
        if self.state == State::Bound {
            self.enter_renewing(now_ms, &mut out);
        }
        out
    }

    fn on_timer(&mut self, now: u64, out: &mut Vec<Action>) {
        match self.state {
            State::Init => self.discover(now, out),
            State::Selecting => {
                self.bump_retransmit();
                self.send_discover(now, out);
            }
            State::Requesting => {
                if self.attempts >= REQUEST_ATTEMPTS {
                    self.discover(now, out);
                } else {
                    self.bump_retransmit();
                    self.send_request(now, out);
                }
            }
            State::Bound => self.enter_renewing(now, out),
            State::Renewing | State::Rebinding => {
                let Some(lease) = self.lease.clone() else {
                    self.discover(now, out);
                    return;
                };
                if now >= lease.expires_at_ms() {
                    self.expire(now, out);
                } else if self.state == State::Renewing && now >= lease.rebind_at_ms() {
                    self.state = State::Rebinding;
                    self.new_exchange(now);
                    self.send_request(now, out);
                } else {
                    self.send_request(now, out);
                }
            }
        }
    }

    fn on_packet(&mut self, now: u64, msg: &Message, out: &mut Vec<Action>) {
        // hlen first: `chaddr()` panics on hlen > 16.
        if msg.opcode() != Opcode::BootReply
            || msg.xid() != self.xid
            || usize::from(msg.hlen()) != self.mac.len()
            || msg.chaddr() != &self.mac[..]
        {
            return;
        }
        let Some(kind) = msg.opts().msg_type() else {
            return;
        };
        match (self.state, kind) {
            (State::Selecting, MessageType::Offer) => {
                let addr = msg.yiaddr();
                let Some(server) = server_id(msg) else { return };
                if !usable_addr(addr) {
                    return;
                }
                self.offer = Some(Offer { addr, server });
                self.state = State::Requesting;
                self.retransmit_ms = RETRANSMIT_BASE_MS;
                self.attempts = 0;
                self.send_request(now, out);
            }
            (State::Requesting | State::Renewing | State::Rebinding, MessageType::Ack) => {
                if !self.sent_by_our_server(msg) {
                    return;
                }
                let Some(lease) = lease_from_ack(msg, self.request_sent_ms) else {
                    return;
                };
                if let Some(old) = self.lease.take()
                    && old.addr != lease.addr
                {
                    out.push(Action::Drop(old));
                }
                self.deadline_ms = lease.renew_at_ms();
                self.state = State::Bound;
                self.naks = 0;
                self.offer = None;
                self.lease = Some(lease.clone());
                out.push(Action::Apply(lease));
            }
            (State::Requesting | State::Renewing | State::Rebinding, MessageType::Nak) => {
                if !self.sent_by_our_server(msg) {
                    return;
                }
                if let Some(old) = self.lease.take() {
                    out.push(Action::Drop(old));
                }
                // RFC 2131 3.1.5: restart at INIT. Back off only when NAKs repeat.
                let backoff = if self.naks == 0 {
                    0
                } else {
                    (RETRANSMIT_BASE_MS << self.naks.min(8)).min(NAK_BACKOFF_CAP_MS)
                };
                self.naks = self.naks.saturating_add(1);
                self.state = State::Init;
                self.offer = None;
                if backoff == 0 {
                    self.discover(now, out);
                } else {
                    self.deadline_ms = now + jitter(&mut self.random, backoff);
                }
            }
            _ => {}
        }
    }

    /// Whether an ACK or NAK carries the server identifier of the server in use: the OFFER's
    /// in REQUESTING, the lease's in RENEWING and REBINDING. Both must carry one (RFC 2131
    /// table 3); without it anyone on the link could end the lease.
    fn sent_by_our_server(&self, msg: &Message) -> bool {
        let expected = match self.state {
            State::Requesting => self.offer.as_ref().map(|o| o.server),
            State::Renewing | State::Rebinding => self.lease.as_ref().map(|l| l.server),
            _ => None,
        };
        expected.is_some() && server_id(msg) == expected
    }

    fn expire(&mut self, now: u64, out: &mut Vec<Action>) {
        if let Some(old) = self.lease.take() {
            out.push(Action::Drop(old));
        }
        self.discover(now, out);
    }

    fn new_exchange(&mut self, now: u64) {
        self.xid = self.random.next_u32();
        self.exchange_start_ms = now;
        self.retransmit_ms = RETRANSMIT_BASE_MS;
        self.attempts = 0;
    }

    /// INIT -> SELECTING with a new exchange.
    fn discover(&mut self, now: u64, out: &mut Vec<Action>) {
        self.state = State::Selecting;
        self.offer = None;
        self.new_exchange(now);
        self.retransmit_ms = FIRST_DISCOVER_RETRANSMIT_MS;
        self.send_discover(now, out);
    }

    fn enter_renewing(&mut self, now: u64, out: &mut Vec<Action>) {
        self.state = State::Renewing;
        self.new_exchange(now);
        self.send_request(now, out);
    }

    fn bump_retransmit(&mut self) {
        self.retransmit_ms = if self.retransmit_ms < RETRANSMIT_BASE_MS {
            RETRANSMIT_BASE_MS
        } else {
            (self.retransmit_ms * 2).min(RETRANSMIT_CAP_MS)
        };
    }

    fn base_message(&self, now: u64, kind: MessageType) -> Message {
        let mut m = blank_request();
        m.set_opcode(Opcode::BootRequest)
            .set_xid(self.xid)
            .set_chaddr(&self.mac)
            .set_flags(Flags::default())
            .set_secs(
                u16::try_from(now.saturating_sub(self.exchange_start_ms) / 1000)
                    .unwrap_or(u16::MAX),
            );
        let opts = m.opts_mut();
        opts.insert(DhcpOption::MessageType(kind));
        let mut client_id = vec![1u8];
        client_id.extend_from_slice(&self.mac);
        opts.insert(DhcpOption::ClientIdentifier(client_id));
        opts.insert(DhcpOption::MaxMessageSize(MAX_MESSAGE_SIZE));
        opts.insert(DhcpOption::ParameterRequestList(vec![
            OptionCode::SubnetMask,
            OptionCode::Router,
            OptionCode::DomainNameServer,
            OptionCode::InterfaceMtu,
            OptionCode::Renewal,
            OptionCode::Rebinding,
        ]));
        m
    }

    fn send_discover(&mut self, now: u64, out: &mut Vec<Action>) {
        let m = self.base_message(now, MessageType::Discover);
        if let Ok(bytes) = m.to_vec() {
            out.push(Action::Send(Transmit::Raw(bytes)));
        }
        self.attempts = self.attempts.saturating_add(1);
        self.deadline_ms = now + jitter(&mut self.random, self.retransmit_ms);
    }

    fn send_request(&mut self, now: u64, out: &mut Vec<Action>) {
        let mut m = self.base_message(now, MessageType::Request);
        self.request_sent_ms = now;
        self.attempts = self.attempts.saturating_add(1);
        match self.state {
            State::Requesting => {
                let Some(offer) = &self.offer else { return };
                m.opts_mut()
                    .insert(DhcpOption::RequestedIpAddress(offer.addr));
                m.opts_mut()
                    .insert(DhcpOption::ServerIdentifier(offer.server));
                if let Ok(bytes) = m.to_vec() {
                    out.push(Action::Send(Transmit::Raw(bytes)));
                }
                self.deadline_ms = now + jitter(&mut self.random, self.retransmit_ms);
            }
            State::Renewing | State::Rebinding => {
                let Some(lease) = &self.lease else { return };
                // RFC 2131 table 5: ciaddr set, no requested address or server identifier.
                m.set_ciaddr(lease.addr);
                let (dst, until) = if self.state == State::Renewing {
                    (lease.server, lease.rebind_at_ms())
                } else {
                    (Ipv4Addr::BROADCAST, lease.expires_at_ms())
                };
                if let Ok(payload) = m.to_vec() {
                    out.push(Action::Send(Transmit::Udp { dst, payload }));
                }
                // RFC 2131 4.4.5: wait half the time left to T2 (or expiry), at least a moment.
                let half = until.saturating_sub(now) / 2;
                self.deadline_ms = (now + half.max(RENEW_RETRY_MIN_MS)).min(until);
            }
            _ => {}
        }
    }
}

fn server_id(msg: &Message) -> Option<Ipv4Addr> {
    match msg.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(s)) if usable_addr(*s) => Some(*s),
        _ => None,
    }
}

fn usable_addr(a: Ipv4Addr) -> bool {
    !(a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback())
}

/// Prefix length of a contiguous netmask.
fn prefix_of_mask(mask: Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    let len = m.leading_ones();
    (m.checked_shl(len).unwrap_or(0) == 0).then_some(len as u8)
}

/// The classful prefix, RFC 2131's fallback when no subnet mask is given.
fn classful_prefix(a: Ipv4Addr) -> u8 {
    match a.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

fn lease_from_ack(msg: &Message, start_ms: u64) -> Option<Lease> {
    let addr = msg.yiaddr();
    if !usable_addr(addr) {
        return None;
    }
    let opts = msg.opts();
    let prefix_len = match opts.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(m)) => prefix_of_mask(*m)?,
        _ => classful_prefix(addr),
    };
    let router = match opts.get(OptionCode::Router) {
        Some(DhcpOption::Router(r)) => r.iter().copied().find(|r| usable_addr(*r)),
        _ => None,
    };
    // As sent: whether it is sane is the interface's business (`plan::plan_lease`).
    let mtu = match opts.get(OptionCode::InterfaceMtu) {
        Some(DhcpOption::InterfaceMtu(m)) => Some(*m),
        _ => None,
    };
    let dns = match opts.get(OptionCode::DomainNameServer) {
        Some(DhcpOption::DomainNameServer(d)) => {
            d.iter().copied().filter(|a| usable_addr(*a)).collect()
        }
        _ => Vec::new(),
    };
    let server = server_id(msg)?;
    let granted_lease_s = match opts.get(OptionCode::AddressLeaseTime) {
        Some(DhcpOption::AddressLeaseTime(t)) if *t > 0 => *t,
        // An ACK must carry it (RFC 2131 table 3); without it the ACK is unusable.
        _ => return None,
    };
    let lease_s = granted_lease_s.max(MIN_LEASE_S);
    let t1 = match opts.get(OptionCode::Renewal) {
        Some(DhcpOption::Renewal(t)) => Some(*t),
        _ => None,
    };
    let t2 = match opts.get(OptionCode::Rebinding) {
        Some(DhcpOption::Rebinding(t)) => Some(*t),
        _ => None,
    };
    // A raised lease's T1/T2 were meant for the short one: default them.
    let (t1, t2) = if lease_s == granted_lease_s {
        (t1, t2)
    } else {
        (None, None)
    };
    let (t1_s, t2_s) = lease_times(lease_s, t1, t2);
    Some(Lease {
        addr,
        prefix_len,
        router,
        mtu,
        dns,
        server,
        lease_s,
        t1_s,
        t2_s,
        start_ms,
        granted_lease_s,
    })
}

/// T1 and T2: as given when 0 < T1 < T2 < lease, else 0.5 and 0.875 of the lease.
fn lease_times(lease_s: u32, t1: Option<u32>, t2: Option<u32>) -> (u32, u32) {
    if lease_s == INFINITE {
        return (INFINITE, INFINITE);
    }
    let d1 = lease_s / 2;
    let d2 = (u64::from(lease_s) * 7 / 8) as u32;
    let t2 = t2.filter(|t| *t > 0 && *t < lease_s).unwrap_or(d2);
    let t1 = t1.filter(|t| *t > 0 && *t < t2).unwrap_or(d1.min(t2));
    (t1, t2)
}

#[cfg(test)]
mod tests;
