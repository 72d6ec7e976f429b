//! Lifecycle tests of the state machine, driven by server messages shaped like dnsmasq's.

use super::*;
use crate::dhcp::KernelRandom;

/// A deterministic [`Random`] for tests: xorshift64*, low 32 bits.
#[derive(Debug, Clone)]
struct Seeded(u64);

impl Seeded {
    fn new(seed: u64) -> Seeded {
        Seeded(seed.max(1))
    }
}

impl Random for Seeded {
    fn next_u32(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D) as u32
    }
}

/// The values given, in a loop.
#[derive(Debug, Clone)]
struct Sequence(Vec<u32>, usize);

impl Random for Sequence {
    fn next_u32(&mut self) -> u32 {
        let v = self.0[self.1 % self.0.len()];
        self.1 += 1;
        v
    }
}

const MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x07];
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);
const ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 23);
/// The VPC resolver's address (base + 2).
const DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

/// A reply as dnsmasq 2.9x sends it: server id, lease time, T1, T2, mask, broadcast, then
/// the requested/configured options (router, MTU).
struct Reply {
    kind: MessageType,
    xid: u32,
    mac: [u8; 6],
    yiaddr: Ipv4Addr,
    server: Option<Ipv4Addr>,
    lease_s: Option<u32>,
    t1_t2: Option<(u32, u32)>,
    router: Option<Ipv4Addr>,
    mtu: Option<u16>,
    dns: Vec<Ipv4Addr>,
}

impl Reply {
    fn new(kind: MessageType, xid: u32) -> Reply {
        let ack_like = kind != MessageType::Nak;
        Reply {
            kind,
            xid,
            mac: MAC,
            yiaddr: if ack_like {
                ADDR
            } else {
                Ipv4Addr::UNSPECIFIED
            },
            server: Some(SERVER),
            lease_s: ack_like.then_some(120),
            t1_t2: ack_like.then_some((60, 105)),
            router: ack_like.then_some(SERVER),
            mtu: ack_like.then_some(9001),
            dns: if ack_like { vec![DNS] } else { Vec::new() },
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut m = Message::default();
        m.set_opcode(Opcode::BootReply)
            .set_xid(self.xid)
            .set_chaddr(&self.mac)
            .set_yiaddr(self.yiaddr)
            .set_siaddr(SERVER);
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(self.kind));
        if let Some(s) = self.server {
            o.insert(DhcpOption::ServerIdentifier(s));
        }
        if let Some(l) = self.lease_s {
            o.insert(DhcpOption::AddressLeaseTime(l));
        }
        if let Some((t1, t2)) = self.t1_t2 {
            o.insert(DhcpOption::Renewal(t1));
            o.insert(DhcpOption::Rebinding(t2));
        }
        if self.kind != MessageType::Nak {
            o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
            o.insert(DhcpOption::BroadcastAddr(Ipv4Addr::new(10, 0, 1, 255)));
        }
        if let Some(r) = self.router {
            o.insert(DhcpOption::Router(vec![r]));
        }
        if let Some(mtu) = self.mtu {
            o.insert(DhcpOption::InterfaceMtu(mtu));
        }
        if !self.dns.is_empty() {
            o.insert(DhcpOption::DomainNameServer(self.dns.clone()));
        }
        if self.kind == MessageType::Nak {
            o.insert(DhcpOption::Message("wrong network".into()));
        }
        m.to_vec().unwrap()
    }

    /// Through the wire format and back, as the socket layer would deliver it.
    fn feed(&self, m: &mut Machine<impl Random>, now: u64) -> Vec<Action> {
        let msg = decode(&self.bytes()).unwrap();
        m.handle(now, Event::Packet(&msg))
    }
}

fn sent(actions: &[Action]) -> Vec<Message> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(Transmit::Raw(b)) | Action::Send(Transmit::Udp { payload: b, .. }) => {
                Some(decode(b).unwrap())
            }
            _ => None,
        })
        .collect()
}

fn only_sent(actions: &[Action]) -> Message {
    let s = sent(actions);
    assert_eq!(s.len(), 1, "{actions:?}");
    s.into_iter().next().unwrap()
}

fn applied(actions: &[Action]) -> Lease {
    let l: Vec<&Lease> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Apply(l) => Some(l),
            _ => None,
        })
        .collect();
    assert_eq!(l.len(), 1, "{actions:?}");
    l[0].clone()
}

/// Runs DISCOVER/OFFER/REQUEST/ACK starting at `t0`.
fn bind(m: &mut Machine<impl Random>, t0: u64) -> Lease {
    let a = m.handle(t0, Event::Timer);
    let discover = only_sent(&a);
    assert_eq!(discover.opts().msg_type(), Some(MessageType::Discover));
    assert_eq!(m.state(), State::Selecting);
    let a = Reply::new(MessageType::Offer, m.xid()).feed(m, t0 + 5);
    let request = only_sent(&a);
    assert_eq!(request.opts().msg_type(), Some(MessageType::Request));
    assert_eq!(m.state(), State::Requesting);
    let a = Reply::new(MessageType::Ack, m.xid()).feed(m, t0 + 10);
    assert_eq!(m.state(), State::Bound);
    applied(&a)
}

#[test]
fn discover_is_well_formed() {
    let mut m = Machine::new(MAC, Seeded::new(42));
    assert_eq!(m.deadline_ms(), 0);
    let a = m.handle(0, Event::Timer);
    assert!(matches!(&a[..], [Action::Send(Transmit::Raw(_))]), "{a:?}");
    let d = only_sent(&a);
    assert_eq!(d.opcode(), Opcode::BootRequest);
    assert_eq!(d.chaddr(), &MAC);
    assert_eq!(d.xid(), m.xid());
    assert_eq!(d.ciaddr(), Ipv4Addr::UNSPECIFIED);
    assert!(matches!(
        d.opts().get(OptionCode::ClientIdentifier),
        Some(DhcpOption::ClientIdentifier(id)) if id[..] == [1, 2, 0, 0, 0, 0, 7]
    ));
    match d.opts().get(OptionCode::ParameterRequestList) {
        Some(DhcpOption::ParameterRequestList(l)) => {
            assert!(l.contains(&OptionCode::Router) && l.contains(&OptionCode::InterfaceMtu));
        }
        other => panic!("{other:?}"),
    }
    // First retransmission 0.25 s +- 25 %.
    assert!(
        (188..=312).contains(&m.deadline_ms()),
        "{}",
        m.deadline_ms()
    );
}

#[test]
fn full_bind_applies_lease_with_router_and_mtu() {
    let mut m = Machine::new(MAC, Seeded::new(1));
    m.handle(1000, Event::Timer);
    let a = Reply::new(MessageType::Offer, m.xid()).feed(&mut m, 1005);
    let req = only_sent(&a);
    assert!(matches!(
        req.opts().get(OptionCode::ServerIdentifier),
        Some(DhcpOption::ServerIdentifier(s)) if *s == SERVER
    ));
    assert!(matches!(
        req.opts().get(OptionCode::RequestedIpAddress),
        Some(DhcpOption::RequestedIpAddress(a)) if *a == ADDR
    ));
    assert_eq!(req.ciaddr(), Ipv4Addr::UNSPECIFIED);
    let a = Reply::new(MessageType::Ack, m.xid()).feed(&mut m, 1010);
    let lease = applied(&a);
    assert_eq!(
        lease,
        Lease {
            addr: ADDR,
            prefix_len: 24,
            router: Some(SERVER),
            mtu: Some(9001),
            dns: vec![DNS],
            server: SERVER,
            lease_s: 120,
            t1_s: 60,
            t2_s: 105,
            start_ms: 1005,
            granted_lease_s: 120,
        }
    );
    assert_eq!(m.deadline_ms(), 61_005);
    assert_eq!(lease.left_s(1005 + 20_000), 100);
    assert_eq!(m.lease(), Some(&lease));
}

#[test]
fn renews_at_t1_by_unicast_then_rebinds_at_t2_by_broadcast() {
    let mut m = Machine::new(MAC, Seeded::new(7));
    let lease = bind(&mut m, 0);
    let t1 = lease.renew_at_ms();
    assert!(m.handle(t1 - 1, Event::Timer).is_empty());
    let a = m.handle(t1, Event::Timer);
    assert_eq!(m.state(), State::Renewing);
    match &a[..] {
        [Action::Send(Transmit::Udp { dst, payload })] => {
            assert_eq!(*dst, SERVER);
            let r = decode(payload).unwrap();
            assert_eq!(r.opts().msg_type(), Some(MessageType::Request));
            assert_eq!(r.ciaddr(), ADDR);
            assert!(r.opts().get(OptionCode::ServerIdentifier).is_none());
            assert!(r.opts().get(OptionCode::RequestedIpAddress).is_none());
        }
        other => panic!("{other:?}"),
    }
    // Retries at half the time left to T2 until T2.
    let t2 = lease.rebind_at_ms();
    assert_eq!(m.deadline_ms(), t1 + (t2 - t1) / 2);
    let mut now = m.deadline_ms();
    let mut renew_sends = 1;
    loop {
        assert!(now <= t2, "renewal retries stop at T2");
        let a = m.handle(now, Event::Timer);
        match (m.state(), &a[..]) {
            (State::Renewing, [Action::Send(Transmit::Udp { dst, .. })]) => {
                assert_eq!(*dst, SERVER);
                renew_sends += 1;
            }
            (State::Rebinding, [Action::Send(Transmit::Udp { dst, .. })]) => {
                assert_eq!(*dst, Ipv4Addr::BROADCAST);
                assert_eq!(now, t2);
                break;
            }
            other => panic!("{other:?}"),
        }
        now = m.deadline_ms();
    }
    assert!(renew_sends >= 3, "{renew_sends}");
    // Rebinding retries run up to expiry.
    assert!(m.deadline_ms() > t2 && m.deadline_ms() <= lease.expires_at_ms());
    // An ACK while rebinding re-binds with fresh times from the REQUEST's send time.
    let a = Reply::new(MessageType::Ack, m.xid()).feed(&mut m, t2 + 5000);
    let renewed = applied(&a);
    assert_eq!(m.state(), State::Bound);
    assert_eq!(renewed.start_ms, t2);
    assert_eq!(m.deadline_ms(), renewed.start_ms + 60_000);
    assert!(
        !a.iter().any(|x| matches!(x, Action::Drop(_))),
        "same address: no drop"
    );
}

#[test]
fn renewal_ack_refreshes_times() {
    let mut m = Machine::new(MAC, Seeded::new(8));
    let lease = bind(&mut m, 0);
    m.handle(lease.renew_at_ms(), Event::Timer);
    let renew_xid = m.xid();
    assert_ne!(renew_xid, 0);
    let a = Reply::new(MessageType::Ack, renew_xid).feed(&mut m, lease.renew_at_ms() + 3);
    let l2 = applied(&a);
    assert_eq!(l2.start_ms, lease.renew_at_ms());
    assert_eq!(l2.addr, lease.addr);
    assert_eq!(m.state(), State::Bound);
}

#[test]
fn expiry_drops_address_and_restarts() {
    let mut m = Machine::new(MAC, Seeded::new(9));
    let lease = bind(&mut m, 0);
    let mut now = lease.renew_at_ms();
    let mut dropped = None;
    for _ in 0..1000 {
        let a = m.handle(now, Event::Timer);
        if let Some(Action::Drop(l)) = a.iter().find(|x| matches!(x, Action::Drop(_))) {
            dropped = Some((l.clone(), a.clone()));
            break;
        }
        now = m.deadline_ms();
    }
    let (l, a) = dropped.expect("lease expired");
    assert_eq!(l, lease);
    assert_eq!(now, lease.expires_at_ms());
    assert_eq!(m.state(), State::Selecting);
    assert!(m.lease().is_none());
    // Dropped first, then a fresh DISCOVER.
    assert!(
        matches!(&a[..], [Action::Drop(_), Action::Send(Transmit::Raw(_))]),
        "{a:?}"
    );
}

#[test]
fn nak_in_requesting_restarts_discovery() {
    let mut m = Machine::new(MAC, Seeded::new(10));
    m.handle(0, Event::Timer);
    Reply::new(MessageType::Offer, m.xid()).feed(&mut m, 1);
    let old_xid = m.xid();
    let a = Reply::new(MessageType::Nak, old_xid).feed(&mut m, 2);
    assert_eq!(m.state(), State::Selecting);
    assert_ne!(m.xid(), old_xid);
    let d = only_sent(&a);
    assert_eq!(d.opts().msg_type(), Some(MessageType::Discover));
    // A second NAK in a row backs off instead of spinning.
    Reply::new(MessageType::Offer, m.xid()).feed(&mut m, 3);
    let a = Reply::new(MessageType::Nak, m.xid()).feed(&mut m, 4);
    assert!(a.is_empty(), "{a:?}");
    assert_eq!(m.state(), State::Init);
    assert!(m.deadline_ms() >= 4 + 750, "{}", m.deadline_ms());
    let a = m.handle(m.deadline_ms(), Event::Timer);
    assert_eq!(only_sent(&a).opts().msg_type(), Some(MessageType::Discover));
}

#[test]
fn nak_while_renewing_drops_lease() {
    let mut m = Machine::new(MAC, Seeded::new(11));
    let lease = bind(&mut m, 0);
    m.handle(lease.renew_at_ms(), Event::Timer);
    let a = Reply::new(MessageType::Nak, m.xid()).feed(&mut m, lease.renew_at_ms() + 1);
    assert_eq!(a[0], Action::Drop(lease));
    assert_eq!(m.state(), State::Selecting);
    assert!(m.lease().is_none());
    assert_eq!(only_sent(&a).opts().msg_type(), Some(MessageType::Discover));
}

#[test]
fn ignores_wrong_xid_mac_opcode_and_type() {
    let mut m = Machine::new(MAC, Seeded::new(12));
    m.handle(0, Event::Timer);
    let xid = m.xid();
    let deadline = m.deadline_ms();
    assert!(
        Reply::new(MessageType::Offer, xid.wrapping_add(1))
            .feed(&mut m, 1)
            .is_empty()
    );
    let mut other = Reply::new(MessageType::Offer, xid);
    other.mac = [2, 0, 0, 0, 0, 8];
    assert!(other.feed(&mut m, 1).is_empty());
    // An ACK is not an answer to a DISCOVER.
    assert!(Reply::new(MessageType::Ack, xid).feed(&mut m, 1).is_empty());
    // Our own DISCOVER looped back.
    let mut own = Message::default();
    own.set_opcode(Opcode::BootRequest)
        .set_xid(xid)
        .set_chaddr(&MAC);
    own.opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Offer));
    assert!(m.handle(1, Event::Packet(&own)).is_empty());
    // An offer without server identifier or with no address.
    let mut no_sid = Reply::new(MessageType::Offer, xid);
    no_sid.server = None;
    assert!(no_sid.feed(&mut m, 1).is_empty());
    let mut no_addr = Reply::new(MessageType::Offer, xid);
    no_addr.yiaddr = Ipv4Addr::UNSPECIFIED;
    assert!(no_addr.feed(&mut m, 1).is_empty());
    assert_eq!(m.state(), State::Selecting);
    assert_eq!(m.deadline_ms(), deadline);
    // Bound ignores stray replies too.
    let lease = {
        Reply::new(MessageType::Offer, xid).feed(&mut m, 2);
        applied(&Reply::new(MessageType::Ack, m.xid()).feed(&mut m, 3))
    };
    assert!(
        Reply::new(MessageType::Nak, m.xid())
            .feed(&mut m, 4)
            .is_empty()
    );
    assert_eq!(m.lease(), Some(&lease));
}

#[test]
fn ack_from_another_server_while_requesting_is_ignored() {
    let mut m = Machine::new(MAC, Seeded::new(13));
    m.handle(0, Event::Timer);
    Reply::new(MessageType::Offer, m.xid()).feed(&mut m, 1);
    let mut other = Reply::new(MessageType::Ack, m.xid());
    other.server = Some(Ipv4Addr::new(10, 0, 1, 2));
    assert!(other.feed(&mut m, 2).is_empty());
    assert_eq!(m.state(), State::Requesting);
}

#[test]
fn offer_without_router_gives_lease_without_router() {
    let mut m = Machine::new(MAC, Seeded::new(14));
    m.handle(0, Event::Timer);
    let mut offer = Reply::new(MessageType::Offer, m.xid());
    offer.router = None;
    offer.feed(&mut m, 1);
    let mut ack = Reply::new(MessageType::Ack, m.xid());
    ack.router = None;
    ack.mtu = None;
    let l = applied(&ack.feed(&mut m, 2));
    assert_eq!(l.router, None);
    assert_eq!(l.mtu, None);
}

#[test]
fn missing_t1_t2_default_to_half_and_seven_eighths() {
    let mut m = Machine::new(MAC, Seeded::new(15));
    m.handle(0, Event::Timer);
    Reply::new(MessageType::Offer, m.xid()).feed(&mut m, 0);
    let mut ack = Reply::new(MessageType::Ack, m.xid());
    ack.lease_s = Some(3600);
    ack.t1_t2 = None;
    let l = applied(&ack.feed(&mut m, 1));
    assert_eq!((l.t1_s, l.t2_s), (1800, 3150));
    assert_eq!(lease_times(3600, Some(3000), Some(2000)), (1800, 2000));
    assert_eq!(lease_times(3600, Some(0), Some(4000)), (1800, 3150));
    assert_eq!(lease_times(INFINITE, None, None), (INFINITE, INFINITE));
}

#[test]
fn ack_without_lease_time_is_ignored() {
    let mut m = Machine::new(MAC, Seeded::new(16));
    m.handle(0, Event::Timer);
    Reply::new(MessageType::Offer, m.xid()).feed(&mut m, 0);
    let mut ack = Reply::new(MessageType::Ack, m.xid());
    ack.lease_s = None;
    assert!(ack.feed(&mut m, 1).is_empty());
    assert_eq!(m.state(), State::Requesting);
}

#[test]
fn infinite_lease_never_renews() {
    let mut m = Machine::new(MAC, Seeded::new(17));
    m.handle(0, Event::Timer);
    Reply::new(MessageType::Offer, m.xid()).feed(&mut m, 0);
    let mut ack = Reply::new(MessageType::Ack, m.xid());
    ack.lease_s = Some(INFINITE);
    ack.t1_t2 = None;
    let l = applied(&ack.feed(&mut m, 1));
    assert_eq!(m.deadline_ms(), u64::MAX);
    assert_eq!(l.left_s(1_000_000), u64::MAX);
}

#[test]
fn retransmits_double_to_cap_with_jitter() {
    let mut m = Machine::new(MAC, Seeded::new(18));
    m.handle(0, Event::Timer);
    let xid = m.xid();
    let mut now = 0;
    let mut gaps = Vec::new();
    for _ in 0..7 {
        let next = m.deadline_ms();
        gaps.push(next - now);
        now = next;
        let a = m.handle(now, Event::Timer);
        assert_eq!(only_sent(&a).xid(), xid, "same xid while selecting");
    }
    let nominal = [250, 500, 1000, 2000, 4000, 4000, 4000];
    for (g, n) in gaps.iter().zip(nominal) {
        assert!(*g >= n * 3 / 4 && *g <= n * 5 / 4, "{gaps:?}");
    }
    // The secs field counts from the start of the exchange.
    let a = m.handle(m.deadline_ms(), Event::Timer);
    assert!(only_sent(&a).secs() >= 15);
}

#[test]
fn requesting_gives_up_after_a_few_requests() {
    let mut m = Machine::new(MAC, Seeded::new(19));
    m.handle(0, Event::Timer);
    Reply::new(MessageType::Offer, m.xid()).feed(&mut m, 0);
    let mut requests = 1;
    loop {
        let a = m.handle(m.deadline_ms(), Event::Timer);
        let s = only_sent(&a);
        if s.opts().msg_type() == Some(MessageType::Discover) {
            break;
        }
        requests += 1;
    }
    assert_eq!(requests, REQUEST_ATTEMPTS);
    assert_eq!(m.state(), State::Selecting);
}

#[test]
fn renew_now_only_when_bound() {
    let mut m = Machine::new(MAC, Seeded::new(20));
    assert!(m.renew_now(0).is_empty());
    bind(&mut m, 0);
    let a = m.renew_now(100);
    assert!(matches!(&a[..], [Action::Send(Transmit::Udp { dst, .. })] if *dst == SERVER));
    assert_eq!(m.state(), State::Renewing);
}

#[test]
fn same_seed_same_bytes() {
    let run = |seed| {
        let mut m = Machine::new(MAC, Seeded::new(seed));
        let a = m.handle(0, Event::Timer);
        (a, m.deadline_ms())
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5).0, run(6).0);
}

#[test]
fn mask_helpers() {
    assert_eq!(prefix_of_mask(Ipv4Addr::new(255, 255, 240, 0)), Some(20));
    assert_eq!(prefix_of_mask(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
    assert_eq!(prefix_of_mask(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
    assert_eq!(prefix_of_mask(Ipv4Addr::new(255, 0, 255, 0)), None);
    assert_eq!(classful_prefix(Ipv4Addr::new(10, 1, 2, 3)), 8);
    assert_eq!(classful_prefix(Ipv4Addr::new(172, 16, 0, 1)), 16);
    assert_eq!(classful_prefix(Ipv4Addr::new(192, 168, 0, 1)), 24);
}

#[test]
fn jitter_stays_within_a_quarter() {
    let mut r = Seeded::new(0);
    for _ in 0..100 {
        let j = jitter(&mut r, 1000);
        assert!((750..=1250).contains(&j));
    }
    assert_eq!(jitter(&mut r, 3), 3);
    assert_eq!(jitter(&mut Sequence(vec![0], 0), 1000), 750);
    assert_eq!(jitter(&mut Sequence(vec![500], 0), 1000), 1250);
}

/// Replies recorded from dnsmasq 2.90 (see tests/data/README.md).
const REC_MAC: [u8; 6] = [0x02, 0x6e, 0x61, 0x74, 0x00, 0x01];
const REC_SEED: u64 = 0x5eed;
const REC_OFFER: &[u8] = include_bytes!("../../../tests/data/dnsmasq-offer.bin");
const REC_ACK: &[u8] = include_bytes!("../../../tests/data/dnsmasq-ack.bin");
/// Option 6 of the recorded ACK.
const REC_DNS: &[Ipv4Addr] = &[];
const REC_NAK: &[u8] = include_bytes!("../../../tests/data/dnsmasq-nak.bin");

fn feed_bytes(m: &mut Machine<impl Random>, now: u64, bytes: &[u8]) -> Vec<Action> {
    m.handle(now, Event::Packet(&decode(bytes).unwrap()))
}

#[test]
fn recorded_dnsmasq_offer_and_ack_bind() {
    let mut m = Machine::new(REC_MAC, Seeded::new(REC_SEED));
    m.handle(0, Event::Timer);
    assert_eq!(m.xid(), 0x0bec_184a, "fixtures were recorded for this xid");
    let a = feed_bytes(&mut m, 3, REC_OFFER);
    let req = only_sent(&a);
    assert!(matches!(
        req.opts().get(OptionCode::RequestedIpAddress),
        Some(DhcpOption::RequestedIpAddress(a)) if *a == Ipv4Addr::new(10, 213, 0, 56)
    ));
    assert!(matches!(
        req.opts().get(OptionCode::ServerIdentifier),
        Some(DhcpOption::ServerIdentifier(s)) if *s == Ipv4Addr::new(10, 213, 0, 1)
    ));
    let lease = applied(&feed_bytes(&mut m, 4, REC_ACK));
    assert_eq!(
        lease,
        Lease {
            addr: Ipv4Addr::new(10, 213, 0, 56),
            prefix_len: 24,
            router: Some(Ipv4Addr::new(10, 213, 0, 1)),
            mtu: Some(9001),
            dns: REC_DNS.to_vec(),
            server: Ipv4Addr::new(10, 213, 0, 1),
            lease_s: 120,
            t1_s: 60,
            t2_s: 105,
            start_ms: 3,
            granted_lease_s: 120,
        }
    );
    // A replayed OFFER or ACK once bound changes nothing.
    assert!(feed_bytes(&mut m, 5, REC_OFFER).is_empty());
    assert!(feed_bytes(&mut m, 5, REC_ACK).is_empty());
}

#[test]
fn recorded_dnsmasq_nak_restarts() {
    let mut m = Machine::new(REC_MAC, Seeded::new(REC_SEED));
    m.handle(0, Event::Timer);
    // A NAK is not an answer to a DISCOVER.
    assert!(feed_bytes(&mut m, 1, REC_NAK).is_empty());
    feed_bytes(&mut m, 2, REC_OFFER);
    let a = feed_bytes(&mut m, 3, REC_NAK);
    assert_eq!(m.state(), State::Selecting);
    assert_eq!(only_sent(&a).opts().msg_type(), Some(MessageType::Discover));
}

#[test]
fn recorded_replies_for_another_client_are_ignored() {
    let mut m = Machine::new([0x02, 0, 0, 0, 0, 0x99], Seeded::new(REC_SEED));
    m.handle(0, Event::Timer);
    assert_eq!(m.xid(), 0x0bec_184a, "same xid, other chaddr");
    assert!(feed_bytes(&mut m, 1, REC_OFFER).is_empty());
    assert_eq!(m.state(), State::Selecting);
}

#[test]
fn oversized_hardware_length_does_not_panic() {
    // Fuzz finding: dhcproto decodes hlen > 16 and then panics in `chaddr()`.
    let mut bytes = REC_OFFER.to_vec();
    bytes[2] = 200;
    assert!(decode(&bytes).is_none());
    let msg = Message::from_bytes(&bytes).unwrap();
    let mut m = Machine::new(REC_MAC, Seeded::new(REC_SEED));
    m.handle(0, Event::Timer);
    assert!(m.handle(1, Event::Packet(&msg)).is_empty());
    // hlen 16 with our MAC in front is not ours either: Ethernet addresses are 6 bytes.
    bytes[2] = 16;
    assert!(feed_bytes(&mut m, 1, &bytes).is_empty());
    bytes[2] = 6;
    assert_eq!(
        only_sent(&feed_bytes(&mut m, 1, &bytes)).opts().msg_type(),
        Some(MessageType::Request)
    );
}

const ROGUE: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 66);

/// Feeds `reply` and checks it changed nothing: no action, same state, same lease.
fn assert_ignored(m: &mut Machine<impl Random>, now: u64, reply: &Reply) {
    let state = m.state();
    let lease = m.lease().cloned();
    let a = reply.feed(m, now);
    assert!(a.is_empty(), "{a:?}");
    assert_eq!(m.state(), state);
    assert_eq!(m.lease().cloned(), lease);
}

#[test]
fn renewing_and_rebinding_take_ack_and_nak_only_from_the_lease_server() {
    let mut m = Machine::new(MAC, Seeded::new(21));
    let lease = bind(&mut m, 0);
    let t1 = lease.renew_at_ms();
    m.handle(t1, Event::Timer);
    assert_eq!(m.state(), State::Renewing);
    for kind in [MessageType::Nak, MessageType::Ack] {
        let mut rogue = Reply::new(kind, m.xid());
        rogue.server = Some(ROGUE);
        assert_ignored(&mut m, t1 + 1, &rogue);
        rogue.server = None;
        assert_ignored(&mut m, t1 + 1, &rogue);
    }
    // Rebinding too: the broadcast REQUEST reaches every server on the link.
    let t2 = lease.rebind_at_ms();
    while m.state() == State::Renewing {
        m.handle(m.deadline_ms(), Event::Timer);
    }
    assert_eq!(m.state(), State::Rebinding);
    for kind in [MessageType::Nak, MessageType::Ack] {
        let mut rogue = Reply::new(kind, m.xid());
        rogue.server = Some(ROGUE);
        assert_ignored(&mut m, t2 + 1, &rogue);
        rogue.server = None;
        assert_ignored(&mut m, t2 + 1, &rogue);
    }
    // The lease's own server is still heard.
    let a = Reply::new(MessageType::Nak, m.xid()).feed(&mut m, t2 + 2);
    assert_eq!(a[0], Action::Drop(lease));
}

#[test]
fn requesting_takes_ack_and_nak_only_from_the_chosen_server() {
    let mut m = Machine::new(MAC, Seeded::new(22));
    m.handle(0, Event::Timer);
    Reply::new(MessageType::Offer, m.xid()).feed(&mut m, 1);
    assert_eq!(m.state(), State::Requesting);
    for kind in [MessageType::Nak, MessageType::Ack] {
        let mut rogue = Reply::new(kind, m.xid());
        rogue.server = Some(ROGUE);
        assert_ignored(&mut m, 2, &rogue);
        rogue.server = None;
        assert_ignored(&mut m, 2, &rogue);
    }
    let a = Reply::new(MessageType::Ack, m.xid()).feed(&mut m, 3);
    assert_eq!(applied(&a).server, SERVER);
}

#[test]
fn xids_are_not_derived_from_mac_and_boot_time() {
    // Two boots of the same instance reach DHCP at about the same boot-clock time: their
    // xids must still differ, and so must those of successive exchanges.
    let xid = || {
        let mut m = Machine::new(MAC, KernelRandom::new());
        m.handle(0, Event::Timer);
        m.xid()
    };
    assert_ne!(xid(), xid());
    let mut m = Machine::new(MAC, KernelRandom::new());
    let lease = bind(&mut m, 0);
    let first = m.xid();
    m.handle(lease.renew_at_ms(), Event::Timer);
    assert_ne!(m.xid(), first);
    assert!(m.random_mut().take_failure().is_none());
}

#[test]
fn xids_and_jitter_come_from_the_random_source() {
    let mut m = Machine::new(MAC, Sequence(vec![0xdead_beef, 0, 124], 0));
    let a = m.handle(0, Event::Timer);
    assert_eq!(m.xid(), 0xdead_beef);
    assert_eq!(only_sent(&a).xid(), 0xdead_beef);
    // 250 ms - 62 + 0 % 125.
    assert_eq!(m.deadline_ms(), 188);
    m.handle(188, Event::Timer);
    // 500 ms - 125 + 124 % 251.
    assert_eq!(m.deadline_ms(), 188 + 499);
}

#[test]
fn first_discover_retransmit_is_fast() {
    let mut m = Machine::new(MAC, Seeded::new(23));
    m.handle(0, Event::Timer);
    let first = m.deadline_ms();
    assert!(
        (188..=312).contains(&first),
        "first retransmit after {first} ms"
    );
    m.handle(first, Event::Timer);
    let second = m.deadline_ms() - first;
    assert!((375..=625).contains(&second), "second after {second} ms");
}

#[test]
fn short_lease_is_held_for_a_minute_with_default_t1_t2() {
    let mut m = Machine::new(MAC, Seeded::new(24));
    m.handle(0, Event::Timer);
    Reply::new(MessageType::Offer, m.xid()).feed(&mut m, 0);
    let mut ack = Reply::new(MessageType::Ack, m.xid());
    ack.lease_s = Some(10);
    ack.t1_t2 = Some((2, 5));
    let l = applied(&ack.feed(&mut m, 1));
    assert_eq!(
        (l.granted_lease_s, l.lease_s, l.t1_s, l.t2_s),
        (10, MIN_LEASE_S, 30, 52)
    );
    assert_eq!(m.deadline_ms(), 30_000);
}

#[test]
fn blank_request_is_what_default_built_without_its_random_xid() {
    let blank = Message::decode(&mut dhcproto::Decoder::new(&BLANK_REQUEST))
        .expect("the template decodes, so the fallback is never taken");
    let mac = [2, 0, 0, 0, 0, 5];
    let mut a = blank_request();
    a.set_xid(7).set_chaddr(&mac);
    let mut b = Message::default();
    b.set_xid(7).set_chaddr(&mac);
    assert_eq!(a.to_vec().unwrap(), b.to_vec().unwrap());
    assert_eq!((blank.xid(), blank.opts().iter().count()), (0, 0));
}

#[test]
fn asks_for_dns_servers_and_keeps_the_usable_ones() {
    let mut m = Machine::new(MAC, Seeded::new(3));
    let discover = only_sent(&m.handle(1000, Event::Timer));
    match discover.opts().get(OptionCode::ParameterRequestList) {
        Some(DhcpOption::ParameterRequestList(l)) => {
            assert!(l.contains(&OptionCode::DomainNameServer), "{l:?}")
        }
        other => panic!("{other:?}"),
    }
    let mut offer = Reply::new(MessageType::Offer, m.xid());
    offer.dns = Vec::new();
    let req = only_sent(&offer.feed(&mut m, 1005));
    assert!(matches!(
        req.opts().get(OptionCode::ParameterRequestList),
        Some(DhcpOption::ParameterRequestList(l)) if l.contains(&OptionCode::DomainNameServer)
    ));
    let mut ack = Reply::new(MessageType::Ack, m.xid());
    ack.dns = vec![
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::new(10, 0, 0, 2),
        Ipv4Addr::new(127, 0, 0, 53),
        Ipv4Addr::new(169, 254, 169, 253),
    ];
    let lease = applied(&ack.feed(&mut m, 1010));
    assert_eq!(
        lease.dns,
        [
            Ipv4Addr::new(10, 0, 0, 2),
            Ipv4Addr::new(169, 254, 169, 253)
        ]
    );

    // None sent: none held.
    let mut m = Machine::new(MAC, Seeded::new(4));
    m.handle(1000, Event::Timer);
    Reply::new(MessageType::Offer, m.xid()).feed(&mut m, 1005);
    let mut ack = Reply::new(MessageType::Ack, m.xid());
    ack.dns = Vec::new();
    assert_eq!(applied(&ack.feed(&mut m, 1010)).dns, Vec::<Ipv4Addr>::new());
}
