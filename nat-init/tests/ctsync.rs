//! Root test of conntrack replication across a failover, in network namespaces made here:
//!
//! ```text
//! client 10.0.1.2 [br0] ── lan0 10.0.1.1  natA  ens5 198.51.100.1 ── [br0] 198.51.100.2 server
//!                       └─ lan0 10.0.1.3  natB  ens5 198.51.100.3 ─┘
//! ```
//!
//! Both NATs run the appliance's table (source NAT to P = 203.0.113.10) and the real
//! [`CtSync`], each on threads inside its namespace, streaming to the other over the LAN. A TCP
//! connection goes client → natA → server; then natA's links go down, P moves to natB, and the
//! client's default route and the server's route to P switch to natB. With `commit_from` the
//! same connection carries on; without it, the server's next bytes to P meet no conntrack
//! entry on natB, whose table drops them as unsolicited input, and the connection stalls.
//! All traffic stays in the namespaces; they are removed in `Drop`, also when a test fails.
// The fixture functions below are not #[test]s, so allow-unwrap-in-tests does not reach them:
// a panic in them is the failure report.
#![allow(clippy::unwrap_used)]

mod common;
use common::{sh, spawn_in_ns};

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nat_init::conntrack::socket::Ctnl;
use nat_init::conntrack::sync::{CtSync, Report};
use nat_init::conntrack::{Entry, PROTO_TCP, STATUS_ASSURED};
use nat_init::nft::{self, Nfnl, RulesetSpec};

const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
const NAT_A_LAN: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);
const NAT_B_LAN: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 3);
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// The source-NAT address that moves from natA to natB.
const P: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const SERVER_PORT: u16 = 8080;

static SERIAL: AtomicU32 = AtomicU32::new(0);

struct Topology {
    client: String,
    nat_a: String,
    nat_b: String,
    server: String,
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in [&self.client, &self.nat_a, &self.nat_b, &self.server] {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .status();
        }
    }
}

fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    test_support::netns::run_in(ns, f).unwrap_or_else(|e| panic!("{e}"))
}

fn ip(ns: &str, args: &str) {
    let mut all = vec!["-n", ns];
    all.extend(args.split_whitespace());
    sh("ip", &all);
}

impl Topology {
    fn new() -> Self {
        let n = SERIAL.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let t = Topology {
            client: format!("ctsync-c-{pid}-{n}"),
            nat_a: format!("ctsync-a-{pid}-{n}"),
            nat_b: format!("ctsync-b-{pid}-{n}"),
            server: format!("ctsync-s-{pid}-{n}"),
        };
        for ns in [&t.client, &t.nat_a, &t.nat_b, &t.server] {
            sh("ip", &["netns", "add", ns]);
            ip(ns, "link set lo up");
        }
        for (nat, port) in [(&t.nat_a, "pa"), (&t.nat_b, "pb")] {
            ip(
                nat,
                &format!(
                    "link add lan0 type veth peer name {port} netns {}",
                    t.client
                ),
            );
            ip(
                nat,
                &format!(
                    "link add ens5 type veth peer name {port} netns {}",
                    t.server
                ),
            );
        }
        for (ns, addr) in [(&t.client, "10.0.1.2/24"), (&t.server, "198.51.100.2/24")] {
            ip(ns, "link add br0 type bridge");
            ip(ns, "link set pa master br0");
            ip(ns, "link set pb master br0");
            for dev in ["pa", "pb", "br0"] {
                ip(ns, &format!("link set {dev} up"));
            }
            ip(ns, &format!("addr add {addr} dev br0"));
        }
        ip(&t.client, "route add default via 10.0.1.1");
        ip(&t.server, &format!("route add {P}/32 via 198.51.100.1"));
        for (nat, host) in [(&t.nat_a, 1), (&t.nat_b, 3)] {
            ip(nat, &format!("addr add 10.0.1.{host}/24 dev lan0"));
            ip(nat, &format!("addr add 198.51.100.{host}/24 dev ens5"));
            ip(nat, "link set lan0 up");
            ip(nat, "link set ens5 up");
            install_table(nat);
        }
        ip(&t.nat_a, &format!("addr add {P}/32 dev ens5"));
        t
    }
}

/// The appliance's own table (source NAT to P) with a failover member's ports open, and
/// forwarding on.
fn install_table(ns: &str) {
    let r = nft::build(&RulesetSpec {
        table: nft::TABLE.into(),
        iface: "ens5".into(),
        private: vec!["10.0.0.0/16".parse().unwrap()],
        flowtable: false,
        mss_clamp: true,
        icmp_rate_per_s: 5,
        masquerade_ports: nft::MasqueradePorts::default(),
        per_source_limit: 1000,
        dhcp_server: None,
        snat_addresses: vec![P],
        snat_by_source: Vec::new(),
        failover_ports: Some((nat_init::failover::PORT, nat_init::failover::CTSYNC_PORT)),
        nat_port_range: None,
    });
    in_ns(ns, || {
        let mut s = Nfnl::open().unwrap();
        nft::apply(&mut s, &r).unwrap();
        nft::verify(&mut s, &r).unwrap();
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap();
    });
}

/// Failure lines of one `CtSync`, kept for the assertion messages.
fn reporter(name: &'static str, lines: &Arc<Mutex<Vec<String>>>) -> Report {
    let lines = Arc::clone(lines);
    Arc::new(move |what: &str, why: String| {
        let line = format!("{name}: error {what}: {why}");
        eprintln!("{line}");
        lines.lock().unwrap().push(line);
    })
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i % 251) as u8))
        .collect()
}

fn read_exact_within(s: &mut TcpStream, len: usize, within: Duration) -> std::io::Result<Vec<u8>> {
    s.set_read_timeout(Some(within))?;
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf)?;
    Ok(buf)
}

/// Waits until `ok`; `state` says what was seen when it never came.
fn wait_for(state: &dyn Fn() -> String, within: Duration, mut ok: impl FnMut() -> bool) {
    let until = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < until, "timed out: {}", state());
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Failover {
    /// What `commit_from` did, when called.
    committed: Option<nat_init::conntrack::socket::CommitReport>,
    /// The server's bytes after the failover, as the client read them (or why not).
    after: std::io::Result<Vec<u8>>,
    client: TcpStream,
    server: TcpStream,
    errors: Arc<Mutex<Vec<String>>>,
    _t: Topology,
}

/// Builds the topology, opens and uses a connection through natA, waits until natB has its
/// entry, fails over to natB (committing natA's entries when `commit`), then has the server
/// send again.
fn failover(commit: bool) -> Failover {
    let t = Topology::new();
    let errors = Arc::new(Mutex::new(Vec::new()));
    let a = in_ns(&t.nat_a, || CtSync::start(reporter("natA", &errors)));
    let b = in_ns(&t.nat_b, || CtSync::start(reporter("natB", &errors)));
    a.set_peers(vec![NAT_B_LAN]);
    b.set_peers(vec![NAT_A_LAN]);

    let listener = in_ns(&t.server, || {
        TcpListener::bind(SocketAddr::from((SERVER_IP, SERVER_PORT))).unwrap()
    });
    let accept = spawn_in_ns(&t.server, move || listener.accept().unwrap().0);
    let mut client = in_ns(&t.client, || {
        TcpStream::connect_timeout(
            &SocketAddr::from((SERVER_IP, SERVER_PORT)),
            Duration::from_secs(3),
        )
        .unwrap()
    });
    let mut server = accept.join().unwrap();
    assert_eq!(server.peer_addr().unwrap().ip(), P, "the server sees P");
    let before = pattern(1, 64 * 1024);
    client.write_all(&before).unwrap();
    assert_eq!(
        read_exact_within(&mut server, before.len(), Duration::from_secs(3)).unwrap(),
        before
    );
    server.write_all(&before).unwrap();
    assert_eq!(
        read_exact_within(&mut client, before.len(), Duration::from_secs(3)).unwrap(),
        before
    );

    // natA's kernel has the entry (a real dump, parsed by our codec), and natB got it.
    let sport = client.local_addr().unwrap().port();
    let nat_port = server.peer_addr().unwrap().port();
    let dumped: Vec<Entry> = in_ns(&t.nat_a, || {
        Ctnl::open(Duration::from_secs(2))
            .unwrap()
            .dump()
            .unwrap()
            .0
    });
    let ours: Vec<&Entry> = dumped.iter().filter(|e| e.orig.sport == sport).collect();
    assert_eq!(ours.len(), 1, "natA's dump: {dumped:?}");
    let e = ours[0];
    assert_eq!(
        (
            e.orig.proto,
            e.orig.src,
            e.orig.dst,
            e.orig.dport,
            e.nat_addr,
            e.nat_port
        ),
        (PROTO_TCP, CLIENT_IP, SERVER_IP, SERVER_PORT, P, nat_port)
    );
    assert_eq!(
        e.tcp_state,
        Some(nat_init::conntrack::TCP_STATE_ESTABLISHED)
    );
    assert_ne!(e.status & STATUS_ASSURED, 0);
    let stats = || format!("natA {:?}, natB {:?}", a.stats(), b.stats());
    wait_for(&stats, Duration::from_secs(5), || {
        b.stats()
            .inbound
            .iter()
            .any(|p| p.peer == NAT_A_LAN && p.cached >= 1)
    });

    // natA fails; P and the routes move to natB.
    ip(&t.nat_a, "link set lan0 down");
    ip(&t.nat_a, "link set ens5 down");
    ip(&t.nat_b, &format!("addr add {P}/32 dev ens5"));
    ip(&t.client, "route replace default via 10.0.1.3");
    ip(&t.server, &format!("route replace {P}/32 via 198.51.100.3"));
    let committed = commit.then(|| {
        let started = Instant::now();
        let r = b.commit_from(NAT_A_LAN, &[P]);
        eprintln!("commit_from: {r:?} in {:?}", started.elapsed());
        r
    });

    let after = pattern(7, 16 * 1024);
    server.write_all(&after).unwrap();
    let got = read_exact_within(&mut client, after.len(), Duration::from_secs(3));
    drop((a, b));
    Failover {
        committed,
        after: got,
        client,
        server,
        errors,
        _t: t,
    }
}

#[test]
fn established_tcp_connection_survives_failover_with_commit() {
    let mut f = failover(true);
    let r = f.committed.clone().unwrap();
    assert_eq!(
        (r.committed, r.already_present, r.failed),
        (1, 0, 0),
        "{r:?}; errors: {:?}",
        f.errors.lock().unwrap()
    );
    assert_eq!(f.after.as_ref().unwrap(), &pattern(7, 16 * 1024));
    // natB's kernel holds the flow with natA's mapping, and the status that was carried.
    let sport = f.client.local_addr().unwrap().port();
    let nat_port = f.server.peer_addr().unwrap().port();
    let on_b: Vec<Entry> = in_ns(&f._t.nat_b, || {
        Ctnl::open(Duration::from_secs(2))
            .unwrap()
            .dump()
            .unwrap()
            .0
    });
    let e = on_b.iter().find(|e| e.orig.sport == sport).unwrap();
    assert_eq!((e.nat_addr, e.nat_port), (P, nat_port), "{on_b:?}");
    assert_ne!(e.status & STATUS_ASSURED, 0, "{e:?}");
    // And back the other way, through natB, on the same connection.
    let more = pattern(9, 32 * 1024);
    f.client.write_all(&more).unwrap();
    assert_eq!(
        read_exact_within(&mut f.server, more.len(), Duration::from_secs(3)).unwrap(),
        more
    );
}

#[test]
fn without_commit_the_connection_stalls() {
    let f = failover(false);
    let e = f.after.unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "want a stall, got {e}"
    );
    let _ = (f.client, f.server, f.errors);
}

/// A TCP connection from a chosen local address (std cannot bind before connecting).
fn connect_from(local: Ipv4Addr, to: Ipv4Addr, port: u16) -> std::os::fd::OwnedFd {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, socket};
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .unwrap();
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(std::net::SocketAddrV4::new(local, 0)),
    )
    .unwrap();
    connect(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(std::net::SocketAddrV4::new(to, port)),
    )
    .unwrap();
    fd
}

/// Two namespaces on one veth pair, removed on drop.
struct Pair(String, String);

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.0, &self.1] {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .status();
        }
    }
}

fn bulk(n: usize) -> Vec<Entry> {
    (0..n)
        .map(|i| {
            let i = u16::try_from(i).unwrap();
            let udp = i % 10 == 9;
            Entry {
                orig: nat_init::conntrack::Tuple {
                    proto: if udp {
                        nat_init::conntrack::PROTO_UDP
                    } else {
                        PROTO_TCP
                    },
                    src: CLIENT_IP,
                    dst: SERVER_IP,
                    sport: 10_000 + i,
                    dport: if udp { 53 } else { 443 },
                },
                nat_addr: P,
                nat_port: 30_000 + i,
                tcp_state: (!udp).then_some(nat_init::conntrack::TCP_STATE_ESTABLISHED),
                status: STATUS_ASSURED | nat_init::conntrack::STATUS_SEEN_REPLY,
                timeout: 600,
            }
        })
        .collect()
}

/// Entries as compared after a trip through a kernel: the timeout has ticked.
fn untimed(mut v: Vec<Entry>) -> Vec<Entry> {
    for e in &mut v {
        assert!((590..=600).contains(&e.timeout), "{e:?}");
        e.timeout = 0;
    }
    v.sort_by_key(|e| e.orig);
    v
}

/// Many entries through the whole path: committed into natA's kernel (and again: all already
/// present), dumped back identical, streamed to natB, committed there from natB's cache.
/// Prints the rates.
#[test]
fn bulk_entries_commit_replicate_and_commit_again() {
    const N: usize = 5000;
    let n = SERIAL.fetch_add(1, Ordering::SeqCst);
    let pid = std::process::id();
    let pair = Pair(format!("ctsync-x-{pid}-{n}"), format!("ctsync-y-{pid}-{n}"));
    for ns in [&pair.0, &pair.1] {
        sh("ip", &["netns", "add", ns]);
        ip(ns, "link set lo up");
    }
    ip(
        &pair.0,
        &format!("link add a0 type veth peer name b0 netns {}", pair.1),
    );
    ip(&pair.0, "addr add 10.9.0.1/24 dev a0");
    ip(&pair.1, "addr add 10.9.0.2/24 dev b0");
    ip(&pair.0, "link set a0 up");
    ip(&pair.1, "link set b0 up");
    let entries = bulk(N);

    let (first, second, dumped, took) = in_ns(&pair.0, || {
        let mut c = Ctnl::open(Duration::from_secs(5)).unwrap();
        let started = Instant::now();
        let first = c.commit(&entries).unwrap();
        let took = started.elapsed();
        let second = c.commit(&entries).unwrap();
        (first, second, c.dump().unwrap(), took)
    });
    eprintln!(
        "commit of {N} entries: {took:?}, {:.0} entries/s",
        N as f64 / took.as_secs_f64()
    );
    assert_eq!(
        (first.committed, first.already_present, first.failed),
        (N, 0, 0),
        "{first:?}"
    );
    assert_eq!(
        (second.committed, second.already_present, second.failed),
        (0, N, 0),
        "{second:?}"
    );
    assert!(dumped.1.is_empty(), "{:?}", dumped.1);
    assert_eq!(untimed(dumped.0), untimed(entries.clone()));

    let errors = Arc::new(Mutex::new(Vec::new()));
    let a = in_ns(&pair.0, || CtSync::start(reporter("x", &errors)));
    let b = in_ns(&pair.1, || CtSync::start(reporter("y", &errors)));
    let from = Ipv4Addr::new(10, 9, 0, 1);
    let stats = || format!("x {:?}, y {:?}", a.stats(), b.stats());
    let started = Instant::now();
    // x listens to y before y streams to it, so no refusal shows among the errors.
    a.set_peers(vec![Ipv4Addr::new(10, 9, 0, 2)]);
    wait_for(&stats, Duration::from_secs(5), || {
        a.stats().outbound.len() == 1
    });
    b.set_peers(vec![from]);
    wait_for(&stats, Duration::from_secs(10), || {
        b.stats()
            .inbound
            .iter()
            .any(|p| p.peer == from && p.cached == N)
    });
    eprintln!(
        "{N} entries dumped, streamed and cached in {:?}",
        started.elapsed()
    );
    // Whichever side learnt its peer first may have had a stream refused (and reported) until
    // the other side learnt it too; once both streams are up, nothing may fail.
    wait_for(&stats, Duration::from_secs(10), || {
        a.stats().inbound.iter().any(|p| p.connected)
    });
    errors.lock().unwrap().clear();
    let started = Instant::now();
    let r = b.commit_from(from, &[P]);
    let took = started.elapsed();
    eprintln!(
        "commit_from of {N} entries: {took:?}, {:.0} entries/s",
        N as f64 / took.as_secs_f64()
    );
    assert_eq!(
        (r.committed, r.already_present, r.failed),
        (N, 0, 0),
        "{r:?}"
    );
    // An address the cache has no entries for commits nothing.
    assert_eq!(b.commit_from(from, &[SERVER_IP]).committed, 0);
    let on_b = in_ns(&pair.1, || {
        Ctnl::open(Duration::from_secs(5))
            .unwrap()
            .dump()
            .unwrap()
            .0
    });
    assert_eq!(untimed(on_b), untimed(entries));
    assert!(
        errors.lock().unwrap().is_empty(),
        "{:?}",
        errors.lock().unwrap()
    );

    // Not a replication stream, from the peer's address: an error line, and the cache stays.
    let mut garbage = in_ns(&pair.0, || {
        TcpStream::connect(SocketAddr::from((Ipv4Addr::new(10, 9, 0, 2), 7472))).unwrap()
    });
    garbage.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let said = || format!("{:?}", errors.lock().unwrap());
    wait_for(&said, Duration::from_secs(5), || {
        errors
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("bad magic"))
    });
    assert!(
        b.stats()
            .inbound
            .iter()
            .any(|p| p.peer == from && p.cached == N && p.connected),
        "{}",
        stats()
    );
    // From an address that is not a peer: refused before a byte is read.
    ip(&pair.0, "addr add 10.9.0.9/24 dev a0");
    let stranger = in_ns(&pair.0, || {
        connect_from(Ipv4Addr::new(10, 9, 0, 9), Ipv4Addr::new(10, 9, 0, 2), 7472)
    });
    wait_for(&said, Duration::from_secs(5), || {
        errors
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("refused 10.9.0.9"))
    });
    drop(stranger);
}
