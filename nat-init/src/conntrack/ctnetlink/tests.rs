//! The codec against hand-checked bytes (little-endian hosts: netlink lengths and types are in
//! host order, addresses, ports and CTA_STATUS/CTA_TIMEOUT in network order).

use super::*;

fn entry() -> Entry {
    Entry {
        orig: Tuple {
            proto: PROTO_TCP,
            src: Ipv4Addr::new(10, 0, 1, 2),
            dst: Ipv4Addr::new(198, 51, 100, 2),
            sport: 40000,
            dport: 80,
        },
        nat_addr: Ipv4Addr::new(198, 51, 100, 1),
        nat_port: 61000,
        tcp_state: Some(3),
        status: STATUS_ASSURED | STATUS_SEEN_REPLY,
        timeout: 100,
    }
}

#[test]
fn new_request_bytes() {
    #[rustfmt::skip]
    let want: Vec<u8> = vec![
        212, 0, 0, 0, 0x00, 0x01, 0x05, 0x06, 7, 0, 0, 0, 0, 0, 0, 0, // nlmsghdr: NEW, REQ|ACK|EXCL|CREATE
        2, 0, 0, 0, // nfgenmsg: AF_INET
        52, 0, 0x01, 0x80, // CTA_TUPLE_ORIG
          20, 0, 0x01, 0x80, 8, 0, 1, 0, 10, 0, 1, 2, 8, 0, 2, 0, 198, 51, 100, 2,
          28, 0, 0x02, 0x80, 5, 0, 1, 0, 6, 0, 0, 0, 6, 0, 2, 0, 0x9c, 0x40, 0, 0,
            6, 0, 3, 0, 0, 80, 0, 0,
        52, 0, 0x02, 0x80, // CTA_TUPLE_REPLY: the inverse, not translated
          20, 0, 0x01, 0x80, 8, 0, 1, 0, 198, 51, 100, 2, 8, 0, 2, 0, 10, 0, 1, 2,
          28, 0, 0x02, 0x80, 5, 0, 1, 0, 6, 0, 0, 0, 6, 0, 2, 0, 0, 80, 0, 0,
            6, 0, 3, 0, 0x9c, 0x40, 0, 0,
        40, 0, 0x06, 0x80, // CTA_NAT_SRC
          8, 0, 1, 0, 198, 51, 100, 1, 8, 0, 2, 0, 198, 51, 100, 1,
          20, 0, 0x03, 0x80, 6, 0, 1, 0, 0xee, 0x48, 0, 0, 6, 0, 2, 0, 0xee, 0x48, 0, 0,
        8, 0, 7, 0, 0, 0, 0, 100, // CTA_TIMEOUT
        8, 0, 3, 0, 0, 0, 0, 14, // CTA_STATUS: ASSURED|SEEN_REPLY|CONFIRMED
        32, 0, 0x04, 0x80, // CTA_PROTOINFO
          28, 0, 0x01, 0x80, 5, 0, 1, 0, 3, 0, 0, 0, // TCP: state ESTABLISHED
            6, 0, 4, 0, 0x08, 0x08, 0, 0, 6, 0, 5, 0, 0x08, 0x08, 0, 0, // BE_LIBERAL both ways
    ];
    assert_eq!(new_request(&entry(), 100, 7, true), want);
    // Without CTA_STATUS: 8 bytes shorter, the same otherwise.
    let mut without = want.clone();
    let at = without.len() - 32 - 8;
    without.drain(at..at + 8);
    without[0] = 204;
    assert_eq!(new_request(&entry(), 100, 7, false), without);
}

#[test]
fn dump_request_bytes() {
    assert_eq!(
        dump_request(9),
        vec![
            20, 0, 0, 0, 0x01, 0x01, 0x01, 0x03, 9, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0
        ]
    );
}

fn tlv(kind: u16, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    put(&mut out, kind, value);
    out
}

fn tuple_nest(kind: u16, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let ip = [tlv(CTA_IP_V4_SRC, &src), tlv(CTA_IP_V4_DST, &dst)].concat();
    let proto = [
        tlv(CTA_PROTO_NUM, &[PROTO_TCP]),
        tlv(CTA_PROTO_SRC_PORT, &sport.to_be_bytes()),
        tlv(CTA_PROTO_DST_PORT, &dport.to_be_bytes()),
    ]
    .concat();
    tlv(
        kind | NLA_F_NESTED,
        &[
            tlv(CTA_TUPLE_IP | NLA_F_NESTED, &ip),
            tlv(CTA_TUPLE_PROTO | NLA_F_NESTED, &proto),
            tlv(3, &0u16.to_be_bytes()), // CTA_TUPLE_ZONE, ignored
        ]
        .concat(),
    )
}

/// A dump reply shaped like the kernel's (ctnetlink_fill_info's order and extras: counters,
/// mark, use, id, window scales), for 10.0.1.2:40000 -> 198.51.100.2:80 translated to
/// 198.51.100.1:61000, with `status`.
fn dump_reply(status: u32, family: u8) -> Vec<u8> {
    reply(status, family, true)
}

/// `dump_reply`, or with `timed` false as the kernel dumps a flowtable's flow: no
/// CTA_TIMEOUT and no CTA_PROTOINFO (ctnetlink_dump_info).
fn reply(status: u32, family: u8, timed: bool) -> Vec<u8> {
    let tcp = [
        tlv(CTA_PROTOINFO_TCP_STATE, &[3]),
        tlv(2, &[7]),
        tlv(3, &[7]),
        tlv(CTA_PROTOINFO_TCP_FLAGS_ORIGINAL, &[0x23, 0]),
        tlv(CTA_PROTOINFO_TCP_FLAGS_REPLY, &[0x23, 0]),
    ]
    .concat();
    let mut parts = vec![
        vec![family, 0, 0, 0],
        tuple_nest(CTA_TUPLE_ORIG, [10, 0, 1, 2], [198, 51, 100, 2], 40000, 80),
        tuple_nest(
            CTA_TUPLE_REPLY,
            [198, 51, 100, 2],
            [198, 51, 100, 1],
            80,
            61000,
        ),
        tlv(CTA_STATUS, &status.to_be_bytes()),
        tlv(9 | NLA_F_NESTED, &tlv(1, &5u64.to_be_bytes())),
    ];
    if timed {
        parts.push(tlv(CTA_TIMEOUT, &431_999u32.to_be_bytes()));
    }
    parts.push(tlv(8, &0u32.to_be_bytes()));
    if timed {
        parts.push(tlv(
            CTA_PROTOINFO | NLA_F_NESTED,
            &tlv(CTA_PROTOINFO_TCP | NLA_F_NESTED, &tcp),
        ));
    }
    parts.push(tlv(11, &1u32.to_be_bytes()));
    parts.push(tlv(12, &0xdead_beefu32.to_be_bytes()));
    parts.concat()
}

const NEW: u16 = 0x0100;
const DELETE: u16 = 0x0102;
/// IPS_CONFIRMED|SRC_NAT|SRC_NAT_DONE|DST_NAT_DONE|ASSURED|SEEN_REPLY, as the kernel dumps a
/// masqueraded established flow.
const MASQUERADED: u32 = 0x19e;

#[test]
fn parses_a_source_nated_entry() {
    let got = parse(NEW, &dump_reply(MASQUERADED, AF_INET)).unwrap();
    let want = Entry {
        timeout: 431_999,
        ..entry()
    };
    assert_eq!(got, Some(Event::Upsert(want)));
    let got = parse(DELETE, &dump_reply(MASQUERADED, AF_INET)).unwrap();
    assert_eq!(got, Some(Event::Remove(entry().orig)));
}

#[test]
fn an_offloaded_flow_is_replicated_as_established() {
    let got = parse(NEW, &reply(MASQUERADED | STATUS_OFFLOAD, AF_INET, false)).unwrap();
    let want = Entry {
        timeout: OFFLOADED_TIMEOUT_S,
        tcp_state: Some(TCP_STATE_ESTABLISHED),
        ..entry()
    };
    assert_eq!(got, Some(Event::Upsert(want)));
    // Without OFFLOAD a TCP entry with no protocol info is still malformed.
    let e = parse(NEW, &reply(MASQUERADED, AF_INET, false)).unwrap_err();
    assert!(e.to_string().contains("CTA_PROTOINFO"), "{e}");
}

#[test]
fn skips_what_is_not_replicated() {
    // Not source-NATed, IPv6, another subsystem, a GET.
    assert_eq!(parse(NEW, &dump_reply(0x18e, AF_INET)), Ok(None));
    assert_eq!(parse(NEW, &dump_reply(MASQUERADED, 10)), Ok(None));
    assert_eq!(parse(0x0a00, &dump_reply(MASQUERADED, AF_INET)), Ok(None));
    assert_eq!(parse(0x0101, &dump_reply(MASQUERADED, AF_INET)), Ok(None));
}

#[test]
fn malformed_is_an_error_saying_what() {
    let msg = dump_reply(MASQUERADED, AF_INET);
    for cut in [2, 10, 30, msg.len() - 3] {
        assert!(parse(NEW, &msg[..cut]).is_err(), "cut at {cut}");
    }
    let no_status = [
        vec![AF_INET, 0, 0, 0],
        tuple_nest(CTA_TUPLE_ORIG, [10, 0, 1, 2], [1, 1, 1, 1], 1, 2),
    ]
    .concat();
    assert!(
        parse(NEW, &no_status)
            .unwrap_err()
            .to_string()
            .contains("CTA_STATUS")
    );
    let mut bad_state = msg.clone();
    let at = bad_state
        .windows(5)
        .position(|w| w == [5, 0, 1, 0, 3])
        .unwrap();
    bad_state[at + 4] = TCP_STATE_MAX;
    assert!(
        parse(NEW, &bad_state)
            .unwrap_err()
            .to_string()
            .contains("TCP state")
    );
}

#[test]
fn splits_datagrams() {
    let mut dgram = dump_request(1);
    dgram.extend(dump_request(2));
    let msgs = split(&dgram).unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!(
        (msgs[1].kind, msgs[1].seq, msgs[1].payload),
        (0x0101, 2, &[2, 0, 0, 0][..])
    );
    assert!(split(&dgram[..25]).is_err());
    let ack = [0u8; 4];
    assert_eq!(error_code(&ack), Ok(0));
    assert_eq!(error_code(&(-17i32).to_ne_bytes()), Ok(17));
    assert!(error_code(&[1]).is_err());
}

/// A masqueraded flow's message with counters in both directions (`counters` false: none, as
/// without nf_conntrack_acct), TCP ESTABLISHED unless `offloaded` (then no protoinfo).
fn traffic_msg(status: u32, counters: bool, offloaded: bool) -> Vec<u8> {
    let count = |packets: u64, bytes: u64| {
        [
            tlv(CTA_COUNTERS_PACKETS, &packets.to_be_bytes()),
            tlv(CTA_COUNTERS_BYTES, &bytes.to_be_bytes()),
        ]
        .concat()
    };
    let mut parts = vec![
        vec![2, 0, 0, 0],
        tuple_nest(CTA_TUPLE_ORIG, [10, 0, 1, 2], [198, 51, 100, 2], 40000, 80),
        tuple_nest(
            CTA_TUPLE_REPLY,
            [198, 51, 100, 2],
            [198, 51, 100, 1],
            80,
            61000,
        ),
        tlv(CTA_STATUS, &status.to_be_bytes()),
    ];
    if counters {
        parts.push(tlv(CTA_COUNTERS_ORIG | NLA_F_NESTED, &count(12, 900)));
        parts.push(tlv(CTA_COUNTERS_REPLY | NLA_F_NESTED, &count(20, 25_000)));
    }
    if !offloaded {
        parts.push(tlv(
            CTA_PROTOINFO | NLA_F_NESTED,
            &tlv(
                CTA_PROTOINFO_TCP | NLA_F_NESTED,
                &tlv(CTA_PROTOINFO_TCP_STATE, &[3]),
            ),
        ));
    }
    parts.concat()
}

#[test]
fn traffic_of_a_live_and_a_destroyed_flow() {
    let t = parse_traffic(NEW, &traffic_msg(MASQUERADED, true, false))
        .unwrap()
        .unwrap();
    assert_eq!(
        t,
        Traffic {
            proto: PROTO_TCP,
            destroyed: false,
            status: MASQUERADED,
            tcp_state: Some(3),
            orig: Count {
                packets: 12,
                bytes: 900
            },
            reply: Count {
                packets: 20,
                bytes: 25_000
            },
        }
    );
    let d = parse_traffic(DELETE, &traffic_msg(MASQUERADED, true, false))
        .unwrap()
        .unwrap();
    assert!(d.destroyed);
    assert_eq!(d.reply.bytes, 25_000);
    // No accounting: zero counts, not an error. Offloaded: no TCP state.
    let z = parse_traffic(NEW, &traffic_msg(MASQUERADED, false, true))
        .unwrap()
        .unwrap();
    assert_eq!(
        (z.orig, z.reply, z.tcp_state),
        (Count::default(), Count::default(), None)
    );
    // The 32-bit counters of old kernels.
    let mut old = traffic_msg(MASQUERADED, false, false);
    old.extend(tlv(
        CTA_COUNTERS_ORIG | NLA_F_NESTED,
        &[
            tlv(CTA_COUNTERS32_PACKETS, &7u32.to_be_bytes()),
            tlv(CTA_COUNTERS32_BYTES, &700u32.to_be_bytes()),
        ]
        .concat(),
    ));
    let o = parse_traffic(NEW, &old).unwrap().unwrap();
    assert_eq!((o.orig.packets, o.orig.bytes), (7, 700));
}

#[test]
fn traffic_skips_the_appliance_s_own_flows_and_names_bad_counters() {
    // Not source-NATed: the appliance's own calls and probes.
    assert_eq!(
        parse_traffic(
            NEW,
            &traffic_msg(MASQUERADED & !STATUS_SRC_NAT, true, false)
        )
        .unwrap(),
        None
    );
    assert_eq!(
        parse_traffic(0x0200, &traffic_msg(MASQUERADED, true, false)).unwrap(),
        None
    );
    let mut bad = traffic_msg(MASQUERADED, false, true);
    bad.extend(tlv(
        CTA_COUNTERS_REPLY | NLA_F_NESTED,
        &tlv(CTA_COUNTERS_BYTES, &[1, 2, 3]),
    ));
    let e = parse_traffic(NEW, &bad).unwrap_err();
    assert!(e.to_string().contains("CTA_COUNTERS_REPLY bytes"), "{e}");
}

#[test]
fn ctrzero_dump_request_bytes() {
    let b = ctrzero_dump_request(9);
    // The message type is ctnetlink's GET_CTRZERO; the rest is the plain dump's.
    assert_eq!(&b[4..6], &0x0103u16.to_ne_bytes());
    let plain = dump_request(9);
    assert_eq!((&b[..4], &b[6..]), (&plain[..4], &plain[6..]));
}
