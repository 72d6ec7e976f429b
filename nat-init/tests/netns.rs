//! Root tests in network namespaces: three namespaces made here (client, nat, server) joined by
//! veth pairs; the nat namespace is configured with `Rtnl`, `sysctl` and `nft` exactly as the
//! appliance does, then real TCP, UDP and ICMP traffic checks what gets through. `ip`, `nft` and
//! `ping` are used only to build the fixture and to cross-check. All traffic stays between the
//! namespaces created here. The namespaces are removed in `Drop`, also when a test fails.
// The fixture functions below are not #[test]s, so allow-unwrap-in-tests does not reach them:
// a panic in them is the failure report.
#![allow(clippy::unwrap_used)]

mod common;
use common::{run, sh, spawn_in_ns, tool_hint};

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nat_init::cidr::Ipv4Cidr;
use nat_init::netlink::Rtnl;
use nat_init::nft::{self, Nfnl, RulesetSpec};
use nat_init::sysctl::{self, SysctlSettings};

const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
/// A second private client, on another private subnet behind the NAT.
const CLIENT2_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const NAT_LAN2_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 1);
const NAT_LAN_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);
const NAT_WAN_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// A second outside address on ens5, for source NAT across several addresses.
const NAT_WAN2_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// A public source the client also owns: flows from it must not be forwarded.
const ROGUE_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);
const TIMEOUT: Duration = Duration::from_millis(1500);

/// The three namespaces of one test; deleted on drop.
struct Topology {
    client: String,
    client2: String,
    nat: String,
    server: String,
}

static SERIAL: AtomicU32 = AtomicU32::new(0);

impl Topology {
    /// client eth0 10.0.1.2/24 (+203.0.113.5/32) <-> lan0 10.0.1.1/24 [nat] ens5 198.51.100.1/24
    /// <-> eth0 198.51.100.2/24 server. Addresses and routes are set through `Rtnl`.
    fn new() -> Self {
        let n = SERIAL.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let t = Topology {
            client: format!("natinit-c-{pid}-{n}"),
            client2: format!("natinit-d-{pid}-{n}"),
            nat: format!("natinit-n-{pid}-{n}"),
            server: format!("natinit-s-{pid}-{n}"),
        };
        for ns in [&t.client, &t.client2, &t.nat, &t.server] {
            sh("ip", &["netns", "add", ns]);
        }
        sh(
            "ip",
            &[
                "-n", &t.nat, "link", "add", "lan1", "type", "veth", "peer", "name", "eth0",
                "netns", &t.client2,
            ],
        );
        sh(
            "ip",
            &[
                "-n", &t.nat, "link", "add", "lan0", "type", "veth", "peer", "name", "eth0",
                "netns", &t.client,
            ],
        );
        sh(
            "ip",
            &[
                "-n", &t.nat, "link", "add", "ens5", "type", "veth", "peer", "name", "eth0",
                "netns", &t.server,
            ],
        );
        in_ns(&t.nat, || {
            // A fixture, not a #[test]: failures say which step broke.
            let mut r = Rtnl::open().expect("rtnetlink socket in the nat namespace");
            let lo = r.link("lo").expect("reading lo").expect("lo exists");
            r.set_up(lo.index).expect("lo up");
            let lan = r.link("lan0").expect("reading lan0").expect("lan0 exists");
            let wan = r.link("ens5").expect("reading ens5").expect("ens5 exists");
            r.replace_address(lan.index, NAT_LAN_IP, 24, u32::MAX, u32::MAX)
                .expect("lan0 address");
            r.replace_address(wan.index, NAT_WAN_IP, 24, 3600, 1800)
                .expect("ens5 address");
            r.set_up(lan.index).expect("lan0 up");
            let lan1 = r.link("lan1").expect("reading lan1").expect("lan1 exists");
            r.replace_address(lan1.index, NAT_LAN2_IP, 24, u32::MAX, u32::MAX)
                .expect("lan1 address");
            r.set_up(lan1.index).expect("lan1 up");
            r.set_up(wan.index).expect("ens5 up");
        });
        client_up(&t.client, CLIENT_IP, Some(ROGUE_IP), NAT_LAN_IP);
        client_up(&t.client2, CLIENT2_IP, None, NAT_LAN2_IP);
        in_ns(&t.server, || {
            let mut r = Rtnl::open().unwrap();
            let lo = r.link("lo").unwrap().unwrap();
            r.set_up(lo.index).unwrap();
            let eth = r.link("eth0").unwrap().unwrap();
            r.replace_address(eth.index, SERVER_IP, 24, u32::MAX, u32::MAX)
                .unwrap();
            r.set_up(eth.index).unwrap();
            // Only so the unsolicited-inbound test has a path to try.
            r.replace_route(
                "10.0.1.0/24".parse().unwrap(),
                Some(NAT_WAN_IP),
                eth.index,
                None,
                None,
            )
            .unwrap();
        });
        in_ns(&t.nat, || {
            let mut r = Rtnl::open().unwrap();
            let lan = r.link("lan0").unwrap().unwrap();
            // The rogue source is routable back through lan0, so rp_filter lets it reach the
            // forward chain and the ruleset is what drops it.
            r.replace_route(
                Ipv4Cidr::new(ROGUE_IP, 32).unwrap(),
                None,
                lan.index,
                None,
                None,
            )
            .unwrap();
        });
        t
    }

    fn spec(&self, flowtable: bool) -> RulesetSpec {
        RulesetSpec {
            table: nft::TABLE.into(),
            iface: "ens5".into(),
            private: vec!["10.0.0.0/16".parse().unwrap()],
            flowtable,
            mss_clamp: true,
            icmp_rate_per_s: 5,
            masquerade_ports: nft::MasqueradePorts::default(),
            per_source_limit: 1000,
            dhcp_server: None,
            snat_addresses: Vec::new(),
            snat_by_source: Vec::new(),
            failover_ports: None,
            nat_port_range: None,
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in [&self.client, &self.client2, &self.nat, &self.server] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `f` on a thread that has joined namespace `ns`; sockets it opens belong to `ns`.
/// A private client in `ns`: lo up, eth0 with `ip`/24 (and `extra`/32), carrier, and its
/// default route through the NAT's address `gw` on its subnet.
fn client_up(ns: &str, ip: Ipv4Addr, extra: Option<Ipv4Addr>, gw: Ipv4Addr) {
    in_ns(ns, || {
        let mut r = Rtnl::open().unwrap();
        let lo = r.link("lo").unwrap().unwrap();
        r.set_up(lo.index).unwrap();
        let eth = r.link("eth0").unwrap().unwrap();
        r.replace_address(eth.index, ip, 24, u32::MAX, u32::MAX)
            .unwrap();
        if let Some(extra) = extra {
            r.replace_address(eth.index, extra, 32, u32::MAX, u32::MAX)
                .unwrap();
        }
        r.set_up(eth.index).unwrap();
        assert!(
            r.wait_for_carrier(eth.index, Duration::from_secs(5))
                .unwrap()
        );
        r.replace_route(
            "0.0.0.0/0".parse().unwrap(),
            Some(gw),
            eth.index,
            Some(ip),
            None,
        )
        .unwrap();
    });
}

fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    test_support::netns::run_in(ns, f).unwrap_or_else(|e| panic!("{e}"))
}

/// Forwarding sysctls through the sysctl module. `nf_conntrack_max` is global (read-only outside
/// the initial namespace), so it is left out here.
fn apply_sysctls(ns: &str) {
    in_ns(ns, || {
        let plan: Vec<(String, String)> = sysctl::plan(&SysctlSettings {
            iface: "ens5".into(),
            rp_filter: 1,
            conntrack_max: 131072,
            conntrack_buckets: 65536,
            tcp_established_timeout_s: 7440,
            tcp_transitory_timeout_s: 240,
            tcp_time_wait_timeout_s: 120,
            udp_timeout_s: 120,
            udp_timeout_stream_s: 350,
            ipv6_devices: Some(vec!["ens5".into(), "lan0".into(), "lo".into()]),
        })
        .into_iter()
        .filter(|(k, _)| k != "net/netfilter/nf_conntrack_max")
        .collect();
        sysctl::apply(Path::new(sysctl::PROC_SYS), &plan).unwrap();
    });
}

fn install(t: &Topology) -> nft::Ruleset {
    let r = nft::build(&t.spec(false));
    in_ns(&t.nat, || {
        let mut s = Nfnl::open().unwrap();
        nft::apply(&mut s, &r).unwrap();
        nft::verify(&mut s, &r).unwrap();
    });
    r
}

fn counters(t: &Topology) -> nft::Counters {
    in_ns(&t.nat, || {
        nft::counters(&mut Nfnl::open().unwrap(), nft::TABLE).unwrap()
    })
}

fn ping(ns: &str, dst: Ipv4Addr, count: u32, interval: &str) -> u32 {
    let o = run(
        "ip",
        &[
            "netns",
            "exec",
            ns,
            "ping",
            "-n",
            "-q",
            "-c",
            &count.to_string(),
            "-i",
            interval,
            "-W",
            "1",
            &dst.to_string(),
        ],
    );
    let text = String::from_utf8_lossy(&o.stdout);
    if text.is_empty() {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !err.contains("No such file") && !err.contains("not found"),
            "`ping` is missing; install it with: {}",
            tool_hint("ping")
        );
        panic!("ping printed nothing: {err}");
    }
    // "N packets transmitted, M received, ..."
    text.lines()
        .find_map(|l| {
            let (_, rest) = l.split_once("transmitted, ")?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("cannot parse ping output: {text}"))
}

/// A TCP listener in `ns` that answers each connection with the peer's address; returns the
/// addresses it saw when `stop` connections have been served or the accept times out.
fn tcp_echo_peer(ns: &str, bind: SocketAddr) -> std::thread::JoinHandle<Vec<SocketAddr>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = spawn_in_ns(ns, move || {
        let l = TcpListener::bind(bind).unwrap();
        l.set_nonblocking(true).unwrap();
        tx.send(()).unwrap();
        let mut seen = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(4);
        while std::time::Instant::now() < deadline {
            match l.accept() {
                Ok((mut s, peer)) => {
                    s.set_nonblocking(false).unwrap();
                    let _ = s.write_all(format!("{}\n", peer.ip()).as_bytes());
                    seen.push(peer);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        seen
    });
    rx.recv().unwrap();
    h
}

fn tcp_ask(ns: &str, dst: SocketAddr) -> std::io::Result<String> {
    in_ns(ns, move || {
        let mut s = TcpStream::connect_timeout(&dst, TIMEOUT)?;
        s.set_read_timeout(Some(TIMEOUT))?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        Ok(text.trim().to_string())
    })
}

/// Sends one datagram from `src` to `dst` inside `ns` and waits for any reply.
fn udp_ask(ns: &str, src: SocketAddr, dst: SocketAddr) -> Option<String> {
    in_ns(ns, move || {
        let u = UdpSocket::bind(src).unwrap();
        u.set_read_timeout(Some(TIMEOUT)).unwrap();
        u.send_to(b"hello", dst).unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = u.recv_from(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
}

/// A UDP server in `ns` that answers each datagram with the sender's address, for 4 seconds.
fn udp_echo_peer(ns: &str, bind: SocketAddr) -> std::thread::JoinHandle<Vec<SocketAddr>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = spawn_in_ns(ns, move || {
        let u = UdpSocket::bind(bind).unwrap();
        u.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        tx.send(()).unwrap();
        let mut seen = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(4);
        let mut buf = [0u8; 64];
        while std::time::Instant::now() < deadline {
            if let Ok((_, peer)) = u.recv_from(&mut buf) {
                let _ = u.send_to(peer.ip().to_string().as_bytes(), peer);
                seen.push(peer);
            }
        }
        seen
    });
    rx.recv().unwrap();
    h
}

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

#[test]
fn ruleset_installs_verifies_and_matches_nft() {
    let t = Topology::new();
    let r = install(&t);
    let listing = sh("ip", &["netns", "exec", &t.nat, "nft", "list", "ruleset"]);
    for needle in [
        "table ip nat_instance",
        "type nat hook postrouting priority srcnat; policy accept;",
        "type filter hook forward priority filter; policy drop;",
        "type filter hook input priority filter; policy drop;",
        "oifname \"ens5\" ip saddr @private ip daddr != @private counter packets 0 bytes 0 masquerade fully-random comment \"masquerade\"",
        "ip saddr @private ip daddr != @private ct state new counter packets 0 bytes 0 accept comment \"fwd_new_private\"",
        "elements = { 10.0.0.0/16 }",
        "ct state established,related counter",
        "ct state invalid counter",
        "tcp option maxseg size set rt mtu",
        "icmp type echo-request limit rate over 5/second",
        "udp sport 67 udp dport 68 counter",
        "comment \"fwd_drop\"",
        "flags dynamic",
        "type filter hook prerouting priority raw; policy accept;",
        "iifname \"ens5\" udp sport 67 udp dport 68 counter packets 0 bytes 0 notrack comment \"raw_dhcp_notrack\"",
        "ip saddr @private ip daddr != @private ct state new add @persrc { ip saddr ct count over 1000 } counter packets 0 bytes 0 drop comment \"fwd_per_source_limit\"",
        "type filter hook postrouting priority srcnat + 1; policy accept;",
        "oifname \"ens5\" ct status snat counter packets 0 bytes 0 comment \"masq_traffic\"",
        "comment \"in_drop\"",
    ] {
        assert!(listing.contains(needle), "`{needle}` not in:\n{listing}");
    }
    // Apply again: replaced atomically, still exactly one table, still identical.
    in_ns(&t.nat, || {
        let mut s = Nfnl::open().unwrap();
        nft::apply(&mut s, &r).unwrap();
        nft::verify(&mut s, &r).unwrap();
        assert_eq!(
            nft::read_back(&mut s, nft::TABLE).unwrap().normalized(),
            r.normalized()
        );
    });
    let tables = sh("ip", &["netns", "exec", &t.nat, "nft", "list", "tables"]);
    assert_eq!(tables.trim(), "table ip nat_instance", "{tables}");

    // Someone edits the table behind our back: verify names the rule, apply repairs it.
    sh(
        "ip",
        &[
            "netns",
            "exec",
            &t.nat,
            "nft",
            "insert",
            "rule",
            "ip",
            "nat_instance",
            "input",
            "tcp",
            "dport",
            "22",
            "accept",
        ],
    );
    in_ns(&t.nat, || {
        let mut s = Nfnl::open().unwrap();
        let err = nft::verify(&mut s, &r).unwrap_err().to_string();
        assert!(err.contains("chain input rule 1"), "{err}");
        let n = r
            .chains
            .iter()
            .find(|c| c.name == "input")
            .unwrap()
            .rules
            .len();
        assert!(
            err.contains(&format!("chain input rule {}: want `nothing`", n + 1)),
            "{err}"
        );
        nft::apply(&mut s, &r).unwrap();
        nft::verify(&mut s, &r).unwrap();
    });

    // A different spec makes verify fail and name the difference.
    in_ns(&t.nat, || {
        let mut s = Nfnl::open().unwrap();
        let mut other = t.spec(false);
        other.private.push("172.16.0.0/12".parse().unwrap());
        let err = nft::verify(&mut s, &nft::build(&other)).unwrap_err();
        assert!(err.to_string().contains("sets:"), "{err}");
    });
}

/// Each `masquerade_ports` setting installs, verifies, lists as nft writes it, and picks ports
/// as it says: `preserve` keeps the client's port, the random ones do not.
#[test]
fn masquerade_port_allocation() {
    let t = Topology::new();
    apply_sysctls(&t.nat);
    let udp = udp_echo_peer(&t.server, sa(SERVER_IP, 9091));
    for (i, (name, ports)) in nft::MasqueradePorts::NAMES.into_iter().enumerate() {
        let mut sp = t.spec(false);
        sp.masquerade_ports = ports;
        let r = nft::build(&sp);
        in_ns(&t.nat, || {
            let mut s = Nfnl::open().unwrap();
            nft::apply(&mut s, &r).unwrap();
            nft::verify(&mut s, &r).unwrap();
        });
        let listing = sh("ip", &["netns", "exec", &t.nat, "nft", "list", "ruleset"]);
        let want = match ports {
            nft::MasqueradePorts::Preserve => "masquerade comment \"masquerade\"".to_string(),
            _ => format!("masquerade {name} comment \"masquerade\""),
        };
        assert!(listing.contains(&want), "`{want}` not in:\n{listing}");
        // Two flows from fixed client ports: preserved both, or (random) not both.
        let base = 40000 + 10 * i as u16;
        let mut kept = 0;
        for p in [base, base + 1] {
            let got = udp_ask(&t.client, sa(CLIENT_IP, p), sa(SERVER_IP, 9091));
            assert_eq!(got.as_deref(), Some("198.51.100.1"), "{name}");
            kept += 1;
        }
        assert_eq!(kept, 2);
    }
    let seen = udp.join().unwrap();
    assert_eq!(seen.len(), 6, "{seen:?}");
    let preserved = |i: usize| {
        let base = 40000 + 10 * i as u16;
        seen.iter()
            .filter(|p| p.port() == base || p.port() == base + 1)
            .count()
    };
    assert!(preserved(0) < 2, "random kept the ports: {seen:?}");
    assert!(preserved(1) < 2, "fully-random kept the ports: {seen:?}");
    assert_eq!(preserved(2), 2, "preserve changed the ports: {seen:?}");
}

/// Sends one datagram from each of `n` client ports (`first` up: `n` new flows) to `dst` and
/// returns the replies, each the source address the server saw.
fn udp_flows(ns: &str, first: u16, n: u16, dst: SocketAddr) -> Vec<String> {
    in_ns(ns, move || {
        (first..first + n)
            .filter_map(|p| {
                let u = UdpSocket::bind(sa(Ipv4Addr::UNSPECIFIED, p)).unwrap();
                u.set_read_timeout(Some(TIMEOUT)).unwrap();
                u.send_to(b"hello", dst).unwrap();
                let mut buf = [0u8; 64];
                let (n, _) = u.recv_from(&mut buf).ok()?;
                Some(String::from_utf8_lossy(&buf[..n]).into_owned())
            })
            .collect()
    })
}

/// With two outside addresses, new flows to one server address and port leave from both, each
/// a fair share, replies come back through either, and the table verifies; with one address
/// given, every flow leaves from it (not the interface's primary).
#[test]
fn snat_spreads_flows_across_addresses() {
    let t = Topology::new();
    apply_sysctls(&t.nat);
    in_ns(&t.nat, || {
        let mut r = Rtnl::open().unwrap();
        let wan = r.link("ens5").unwrap().unwrap();
        r.replace_address(wan.index, NAT_WAN2_IP, 24, u32::MAX, u32::MAX)
            .unwrap();
    });
    let mut sp = t.spec(false);
    sp.snat_addresses = vec![NAT_WAN_IP, NAT_WAN2_IP];
    let r = nft::build(&sp);
    in_ns(&t.nat, || {
        let mut s = Nfnl::open().unwrap();
        nft::apply(&mut s, &r).unwrap();
        nft::verify(&mut s, &r).unwrap();
    });
    // nft reads the rules back as we print them.
    let listing = sh("ip", &["netns", "exec", &t.nat, "nft", "list", "ruleset"]);
    let post = &r
        .chains
        .iter()
        .find(|c| c.name == "postrouting")
        .unwrap()
        .rules;
    assert_eq!(post.len(), 2);
    for rule in post {
        let text = rule.to_string();
        assert!(listing.contains(&text), "`{text}` not in:\n{listing}");
    }
    assert!(
        listing.contains("numgen random mod 2 0 counter packets 0 bytes 0 snat to 198.51.100.1 fully-random comment \"snat 0\""),
        "{listing}"
    );

    const FLOWS: u16 = 200;
    let server = udp_echo_peer(&t.server, sa(SERVER_IP, 9092));
    let replies = udp_flows(&t.client, 42000, FLOWS, sa(SERVER_IP, 9092));
    let seen = server.join().unwrap();
    assert_eq!(seen.len(), usize::from(FLOWS), "{seen:?}");
    assert_eq!(replies.len(), usize::from(FLOWS), "replies lost");
    let from = |ip: Ipv4Addr| seen.iter().filter(|p| p.ip() == ip).count();
    let (a, b) = (from(NAT_WAN_IP), from(NAT_WAN2_IP));
    assert_eq!(a + b, usize::from(FLOWS), "{seen:?}");
    for n in [a, b] {
        assert!(n >= usize::from(FLOWS) / 4, "unfair split {a}/{b}");
    }
    // The replies say the same, each through the address it was sent from.
    let said = |ip: Ipv4Addr| replies.iter().filter(|r| **r == ip.to_string()).count();
    assert_eq!((said(NAT_WAN_IP), said(NAT_WAN2_IP)), (a, b));

    let c = counters(&t);
    assert_eq!(c.masqueraded_flows, u64::from(FLOWS), "{c:?}");
    assert_eq!(
        c.rule(&nft::snat_rule_name(0)).unwrap().0 + c.rule(&nft::snat_rule_name(1)).unwrap().0,
        u64::from(FLOWS)
    );
    in_ns(&t.nat, || {
        nft::verify(&mut Nfnl::open().unwrap(), &r).unwrap()
    });

    // The control: one address given, one source seen, and it is that address.
    sp.snat_addresses = vec![NAT_WAN2_IP];
    let r = nft::build(&sp);
    in_ns(&t.nat, || {
        let mut s = Nfnl::open().unwrap();
        nft::apply(&mut s, &r).unwrap();
        nft::verify(&mut s, &r).unwrap();
    });
    let server = udp_echo_peer(&t.server, sa(SERVER_IP, 9093));
    let replies = udp_flows(&t.client, 43000, 50, sa(SERVER_IP, 9093));
    let seen = server.join().unwrap();
    assert_eq!(seen.len(), 50, "{seen:?}");
    assert!(seen.iter().all(|p| p.ip() == NAT_WAN2_IP), "{seen:?}");
    assert!(replies.iter().all(|r| *r == NAT_WAN2_IP.to_string()));
}

/// A source prefix given its own address leaves from it, while the rest spread as before; the
/// kernel reads the rule back as nft prints it.
#[test]
fn snat_by_source_comes_first() {
    let t = Topology::new();
    apply_sysctls(&t.nat);
    in_ns(&t.nat, || {
        let mut r = Rtnl::open().unwrap();
        let wan = r.link("ens5").unwrap().unwrap();
        r.replace_address(wan.index, NAT_WAN2_IP, 24, u32::MAX, u32::MAX)
            .unwrap();
    });
    let mut sp = t.spec(false);
    sp.snat_addresses = vec![NAT_WAN_IP];
    sp.snat_by_source = vec![("10.0.2.0/24".parse().unwrap(), NAT_WAN2_IP)];
    let r = nft::build(&sp);
    in_ns(&t.nat, || {
        let mut s = Nfnl::open().unwrap();
        nft::apply(&mut s, &r).unwrap();
        nft::verify(&mut s, &r).unwrap();
    });
    let listing = sh("ip", &["netns", "exec", &t.nat, "nft", "list", "ruleset"]);
    let first = r
        .chains
        .iter()
        .find(|c| c.name == "postrouting")
        .unwrap()
        .rules[0]
        .to_string();
    assert!(listing.contains(&first), "`{first}` not in:\n{listing}");
    let server = udp_echo_peer(&t.server, sa(SERVER_IP, 9094));
    let from_client = udp_flows(&t.client, 44000, 10, sa(SERVER_IP, 9094));
    let from_client2 = udp_flows(&t.client2, 44100, 10, sa(SERVER_IP, 9094));
    let seen = server.join().unwrap();
    assert_eq!(seen.len(), 20, "{seen:?}");
    assert!(
        from_client.iter().all(|r| *r == NAT_WAN_IP.to_string()),
        "{from_client:?}"
    );
    assert!(
        from_client2.iter().all(|r| *r == NAT_WAN2_IP.to_string()),
        "{from_client2:?}"
    );
}

/// One private host cannot hold more than its share of conntrack: with a limit of 5, a client
/// opening 8 connections (held open) gets 5, and a second client still connects.
#[test]
fn per_source_connection_limit() {
    let t = Topology::new();
    apply_sysctls(&t.nat);
    let mut sp = t.spec(false);
    sp.per_source_limit = 5;
    let r = nft::build(&sp);
    in_ns(&t.nat, || {
        let mut s = Nfnl::open().unwrap();
        nft::apply(&mut s, &r).unwrap();
        nft::verify(&mut s, &r).unwrap();
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let server = spawn_in_ns(&t.server, move || {
        let l = TcpListener::bind(sa(SERVER_IP, 8084)).unwrap();
        l.set_nonblocking(true).unwrap();
        tx.send(()).unwrap();
        let mut held = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(8);
        while std::time::Instant::now() < deadline {
            match l.accept() {
                Ok((s, _)) => held.push(s),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        held.len()
    });
    rx.recv().unwrap();
    let opened = in_ns(&t.client, || {
        let mut open = Vec::new();
        for _ in 0..8 {
            if let Ok(s) =
                TcpStream::connect_timeout(&sa(SERVER_IP, 8084), Duration::from_millis(700))
            {
                open.push(s);
            }
        }
        let n = open.len();
        // Held until the second client has tried.
        (n, open)
    });
    assert_eq!(opened.0, 5, "connections the first client got");
    let other = in_ns(&t.client2, || {
        TcpStream::connect_timeout(&sa(SERVER_IP, 8084), TIMEOUT).is_ok()
    });
    assert!(other, "the second client could not connect");
    let c = counters(&t);
    assert!(c.rule(nft::RULE_FWD_PER_SOURCE).unwrap().0 >= 3, "{c:?}");
    // The dynamic set's elements do not make the table differ from what was installed.
    in_ns(&t.nat, || {
        nft::verify(&mut Nfnl::open().unwrap(), &r).unwrap()
    });
    drop(opened);
    assert_eq!(server.join().unwrap(), 6);
}

/// Sends `n` UDP datagrams 67 -> 68 to `dst` from `n` different sources (198.51.100.10 up, on
/// the server's link so rp_filter lets them in), as a DHCP-reply flood from the internet would.
fn spoof_dhcp_replies(ns: &str, dst: Ipv4Addr, n: u8) {
    in_ns(ns, move || {
        // SAFETY: plain socket(2); the descriptor is closed below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        for i in 0..n {
            let src = Ipv4Addr::new(198, 51, 100, 10 + i);
            let mut p = vec![0x45u8, 0, 0, 36, 0, 0, 0, 0, 64, 17, 0, 0];
            p.extend(src.octets());
            p.extend(dst.octets());
            // UDP 67 -> 68, length 16, no checksum, 8 bytes of payload.
            p.extend([0, 67, 0, 68, 0, 16, 0, 0]);
            p.extend(*b"dhcpoffr");
            let to = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from(dst).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: `p` and `to` outlive the call; the lengths are theirs.
            let sent = unsafe {
                libc::sendto(
                    fd,
                    p.as_ptr().cast(),
                    p.len(),
                    0,
                    (&to as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            assert_eq!(
                sent,
                p.len() as isize,
                "{}",
                std::io::Error::last_os_error()
            );
        }
        // SAFETY: the descriptor opened above, closed once.
        unsafe { libc::close(fd) };
    });
}

fn conntrack_count(ns: &str) -> u64 {
    sh(
        "ip",
        &[
            "netns",
            "exec",
            ns,
            "cat",
            "/proc/sys/net/netfilter/nf_conntrack_count",
        ],
    )
    .trim()
    .parse()
    .unwrap()
}

/// DHCP is not a door: spoofed replies from the internet never get conntrack entries (before a
/// lease they are accepted untracked), and once the table names the lease's server, only its
/// replies are accepted and the rest are counted as dropped.
#[test]
fn spoofed_dhcp_replies_are_untracked_and_dropped_once_leased() {
    let t = Topology::new();
    apply_sysctls(&t.nat);
    install(&t);
    let before = conntrack_count(&t.nat);
    spoof_dhcp_replies(&t.server, NAT_WAN_IP, 200);
    std::thread::sleep(Duration::from_millis(200));
    let after = conntrack_count(&t.nat);
    assert!(
        after < before + 10,
        "conntrack {before} -> {after} after 200 spoofed replies"
    );
    let c = counters(&t);
    assert!(c.rule(nft::RULE_IN_DHCP).unwrap().0 >= 200, "{c:?}");

    let mut sp = t.spec(false);
    sp.dhcp_server = Some(SERVER_IP);
    let r = nft::build(&sp);
    in_ns(&t.nat, || {
        let mut s = Nfnl::open().unwrap();
        nft::apply(&mut s, &r).unwrap();
        nft::verify(&mut s, &r).unwrap();
    });
    let listing = sh("ip", &["netns", "exec", &t.nat, "nft", "list", "ruleset"]);
    let want = "ip saddr 198.51.100.2 udp sport 67 udp dport 68 counter packets 0 bytes 0 accept comment \"in_dhcp\"";
    assert!(listing.contains(want), "`{want}` not in:\n{listing}");
    spoof_dhcp_replies(&t.server, NAT_WAN_IP, 100);
    // The server's own reply still gets in.
    in_ns(&t.server, || {
        let u = UdpSocket::bind(sa(SERVER_IP, 67)).unwrap();
        u.send_to(b"ack", sa(NAT_WAN_IP, 68)).unwrap();
    });
    std::thread::sleep(Duration::from_millis(200));
    let c = counters(&t);
    assert_eq!(c.rule(nft::RULE_IN_DHCP).unwrap().0, 1, "{c:?}");
    assert!(c.rule(nft::RULE_IN_DROP).unwrap().0 >= 100, "{c:?}");
    assert!(c.rule(nft::RULE_RAW_DHCP).unwrap().0 >= 101, "{c:?}");
    assert!(conntrack_count(&t.nat) < before + 10);
}

#[test]
fn flowtable_probe_and_atomic_failure() {
    let t = Topology::new();
    let r = install(&t);
    let host_has_flowtables = Path::new("/sys/module/nf_flow_table").exists();
    in_ns(&t.nat, || {
        let mut s = Nfnl::open().unwrap();
        assert_eq!(nft::flowtable_supported(&mut s), host_has_flowtables);
        if !host_has_flowtables {
            // The batch fails as a whole; the previous table stays exactly as it was.
            let err = nft::apply(&mut s, &nft::build(&t.spec(true))).unwrap_err();
            assert!(err.to_string().contains("flowtable"), "{err}");
            // ENOENT: no flowtable type for the family, as `nft` itself gets on this kernel.
            assert_eq!(err.errno(), Some(libc::ENOENT), "{err}");
            nft::verify(&mut s, &r).unwrap();
        }
    });
    // The probe's scratch table is gone.
    let tables = sh("ip", &["netns", "exec", &t.nat, "nft", "list", "tables"]);
    assert_eq!(tables.trim(), "table ip nat_instance", "{tables}");
}

#[test]
fn traffic_through_the_nat() {
    let t = Topology::new();
    apply_sysctls(&t.nat);
    install(&t);
    let before = counters(&t);

    // TCP: the server sees the NAT's outside address.
    let tcp = tcp_echo_peer(&t.server, sa(SERVER_IP, 8080));
    assert_eq!(
        tcp_ask(&t.client, sa(SERVER_IP, 8080)).unwrap(),
        NAT_WAN_IP.to_string()
    );
    // UDP echo, likewise.
    let udp = udp_echo_peer(&t.server, sa(SERVER_IP, 9090));
    assert_eq!(
        udp_ask(&t.client, sa(CLIENT_IP, 0), sa(SERVER_IP, 9090)).as_deref(),
        Some("198.51.100.1")
    );
    // A new flow from a non-private source is not forwarded.
    assert_eq!(
        udp_ask(&t.client, sa(ROGUE_IP, 0), sa(SERVER_IP, 9090)),
        None
    );
    // ICMP echo through the NAT.
    assert_eq!(ping(&t.client, SERVER_IP, 1, "1"), 1);

    let seen_tcp = tcp.join().unwrap();
    let seen_udp = udp.join().unwrap();
    assert!(
        seen_tcp.iter().all(|p| p.ip() == NAT_WAN_IP),
        "{seen_tcp:?}"
    );
    assert!(
        seen_udp.iter().all(|p| p.ip() == NAT_WAN_IP) && seen_udp.len() == 1,
        "{seen_udp:?}"
    );

    let after = counters(&t);
    assert!(
        after.masqueraded_flows >= before.masqueraded_flows + 3,
        "{after:?}"
    );
    assert!(
        after.forwarded_packets > before.forwarded_packets + 4,
        "{after:?}"
    );
    let drops = |c: &nft::Counters| c.rule(nft::RULE_FWD_DROP).unwrap().0;
    assert!(
        drops(&after) > drops(&before),
        "rogue source not dropped by the ruleset: {after:?}"
    );
    // Every packet of the masqueraded flows out of ens5 (here the originals only: replies to
    // the client leave by lan0): TCP's handshake, request and close, the UDP datagram and the
    // echo request come to over 300 bytes.
    assert!(
        after.masqueraded_bytes >= before.masqueraded_bytes + 300,
        "{after:?}"
    );
}

/// Two private subnets talk through their own routes, never through the NAT: a new flow
/// between them is dropped, while both still reach the internet.
#[test]
fn private_to_private_is_not_forwarded() {
    let t = Topology::new();
    apply_sysctls(&t.nat);
    install(&t);
    let before = counters(&t);
    let peer = tcp_echo_peer(&t.client2, sa(Ipv4Addr::UNSPECIFIED, 8082));
    assert!(tcp_ask(&t.client, sa(CLIENT2_IP, 8082)).is_err());
    let srv = tcp_echo_peer(&t.server, sa(SERVER_IP, 8083));
    assert_eq!(
        tcp_ask(&t.client2, sa(SERVER_IP, 8083)).unwrap(),
        NAT_WAN_IP.to_string()
    );
    assert_eq!(
        tcp_ask(&t.client, sa(SERVER_IP, 8083)).unwrap(),
        NAT_WAN_IP.to_string()
    );
    assert!(peer.join().unwrap().is_empty());
    assert_eq!(srv.join().unwrap().len(), 2);
    let after = counters(&t);
    let drops = |c: &nft::Counters| c.rule(nft::RULE_FWD_DROP).unwrap().0;
    assert!(drops(&after) > drops(&before), "{after:?}");
}

#[test]
fn unsolicited_traffic_is_dropped() {
    let t = Topology::new();
    apply_sysctls(&t.nat);
    install(&t);
    let before = counters(&t);

    // Inbound from the internet side to the client's address: dropped in forward.
    let client_listener = tcp_echo_peer(&t.client, sa(Ipv4Addr::UNSPECIFIED, 8081));
    assert!(tcp_ask(&t.server, sa(CLIENT_IP, 8081)).is_err());
    assert!(client_listener.join().unwrap().is_empty());

    // Nothing on the NAT's own addresses accepts new TCP, from either side.
    let nat_listener = tcp_echo_peer(&t.nat, sa(Ipv4Addr::UNSPECIFIED, 2222));
    assert!(tcp_ask(&t.client, sa(NAT_LAN_IP, 2222)).is_err());
    assert!(tcp_ask(&t.server, sa(NAT_WAN_IP, 2222)).is_err());
    assert!(nat_listener.join().unwrap().is_empty());

    // Ping to the NAT works but is rate limited (5/s, burst 5): 40 echoes in 0.4 s.
    assert_eq!(ping(&t.client, NAT_LAN_IP, 1, "1"), 1);
    let got = ping(&t.client, NAT_LAN_IP, 40, "0.01");
    assert!((1..=20).contains(&got), "{got} of 40 echoes answered");

    let after = counters(&t);
    let rule = |c: &nft::Counters, n: &str| c.rule(n).unwrap().0;
    assert!(rule(&after, nft::RULE_FWD_DROP) > rule(&before, nft::RULE_FWD_DROP));
    assert!(rule(&after, nft::RULE_IN_DROP) >= rule(&before, nft::RULE_IN_DROP) + 2);
    assert!(rule(&after, nft::RULE_IN_ICMP_LIMIT) > 0, "{after:?}");
    assert!(rule(&after, nft::RULE_IN_ICMP) >= 1, "{after:?}");
    assert!(after.dropped_packets > before.dropped_packets);
}

/// A failover member's table accepts heartbeats (UDP 7471) and connection replication (TCP
/// 7472) from outside and nothing else new; without failover, neither.
#[test]
fn failover_ports_are_open_only_on_a_member() {
    let t = Topology::new();
    apply_sysctls(&t.nat);
    for member in [false, true] {
        let mut sp = t.spec(false);
        sp.failover_ports = member.then_some((7471, 7472));
        let r = nft::build(&sp);
        in_ns(&t.nat, || {
            let mut s = Nfnl::open().unwrap();
            nft::apply(&mut s, &r).unwrap();
            nft::verify(&mut s, &r).unwrap();
        });
        let heartbeat = udp_echo_peer(&t.nat, sa(Ipv4Addr::UNSPECIFIED, 7471));
        let other = udp_echo_peer(&t.nat, sa(Ipv4Addr::UNSPECIFIED, 7473));
        let sync = tcp_echo_peer(&t.nat, sa(Ipv4Addr::UNSPECIFIED, 7472));
        let hb = udp_ask(&t.server, sa(SERVER_IP, 40001), sa(NAT_WAN_IP, 7471));
        assert_eq!(hb.is_some(), member, "heartbeat answered: member={member}");
        assert!(udp_ask(&t.server, sa(SERVER_IP, 40002), sa(NAT_WAN_IP, 7473)).is_none());
        assert_eq!(
            tcp_ask(&t.server, sa(NAT_WAN_IP, 7472)).is_ok(),
            member,
            "replication port open: member={member}"
        );
        assert_eq!(heartbeat.join().unwrap().len(), usize::from(member));
        assert!(other.join().unwrap().is_empty());
        assert_eq!(sync.join().unwrap().len(), usize::from(member));
    }
}

#[test]
fn rtnl_links_addresses_routes() {
    let t = Topology::new();
    // A veth, not a dummy: the CI kernel has no dummy driver.
    sh(
        "ip",
        &[
            "-n", &t.nat, "link", "add", "dummy7", "type", "veth", "peer", "name", "peer7",
        ],
    );
    in_ns(&t.nat, || {
        let mut r = Rtnl::open().unwrap();
        let links = r.links().unwrap();
        let ens5 = links.iter().find(|l| l.name == "ens5").unwrap();
        assert!(ens5.is_ether && ens5.up && ens5.mac.is_some(), "{ens5:?}");
        assert!(
            r.wait_for_carrier(ens5.index, Duration::from_secs(5))
                .unwrap()
        );
        let lo = links.iter().find(|l| l.name == "lo").unwrap();
        assert!(!lo.is_ether);

        let d = r.link("dummy7").unwrap().unwrap();
        r.set_up(d.index).unwrap();
        r.rename(d.index, "wan7").unwrap();
        assert!(r.link("dummy7").unwrap().is_none());
        let w = r.link("wan7").unwrap().unwrap();
        assert_eq!(w.index, d.index);
        assert!(!w.up, "rename leaves the link down");
        r.set_up(w.index).unwrap();
        r.set_mtu(w.index, 9001).unwrap();
        let w = r.link("wan7").unwrap().unwrap();
        assert!(w.up && !w.carrier, "peer is down: {w:?}");
        assert!(
            !r.wait_for_carrier(w.index, Duration::from_millis(300))
                .unwrap()
        );

        // The on-link route the fixture added for the rogue source.
        let lan = r.link("lan0").unwrap().unwrap();
        let onlink = r.routes().unwrap();
        let rogue = onlink
            .iter()
            .find(|x| x.dst == Ipv4Cidr::new(ROGUE_IP, 32).unwrap())
            .unwrap();
        assert_eq!((rogue.gateway, rogue.oif), (None, Some(lan.index)));
        assert_eq!(w.mtu, 9001);

        let a = Ipv4Addr::new(192, 0, 2, 10);
        r.replace_address(w.index, a, 24, 600, 300).unwrap();
        r.replace_address(w.index, a, 24, 900, 900).unwrap();
        assert_eq!(r.addresses(w.index).unwrap(), [(a, 24)]);

        let dst: Ipv4Cidr = "203.0.113.0/24".parse().unwrap();
        r.replace_route(
            dst,
            Some(Ipv4Addr::new(192, 0, 2, 1)),
            w.index,
            Some(a),
            Some(1400),
        )
        .unwrap();
        let routes = r.routes().unwrap();
        let found = routes.iter().find(|x| x.dst == dst).unwrap();
        assert_eq!(found.gateway, Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(found.mtu, Some(1400));
        assert_eq!(found.src, Some(a));
        assert_eq!(found.oif, Some(w.index));
        r.delete_route(dst, None, Some(w.index)).unwrap();
        assert!(!r.routes().unwrap().iter().any(|x| x.dst == dst));

        r.flush_addresses(w.index).unwrap();
        assert!(r.addresses(w.index).unwrap().is_empty());
        // The kernel's errno comes back with what was being done.
        let err = r.set_mtu(w.index, 10).unwrap_err();
        assert_eq!(err.errno(), Some(libc::EINVAL), "{err}");
        assert!(err.to_string().contains("setting MTU 10"), "{err}");
        assert!(
            matches!(
                &err,
                nat_init::netlink::NetlinkError::Kernel {
                    message: Some(_),
                    ..
                }
            ),
            "the extended ACK text is kept: {err}"
        );
    });
    let shown = sh("ip", &["-n", &t.nat, "-4", "route", "show", "dev", "lan0"]);
    assert!(shown.contains("10.0.1.0/24"), "{shown}");
}

/// `cat`s a file inside `ns` (`/proc/net` is the reading process's namespace, so a thread that
/// joined `ns` would still read the test's own).
fn cat_in(ns: &str, path: &str) -> String {
    sh("ip", &["netns", "exec", ns, "cat", path])
}

/// Turns conntrack's accounting on in `ns` (the metrics' byte and packet source).
fn conntrack_acct_on(ns: &str) {
    sh(
        "ip",
        &[
            "netns",
            "exec",
            ns,
            "sh",
            "-c",
            "echo 1 > /proc/sys/net/netfilter/nf_conntrack_acct",
        ],
    );
}

/// The table with a flowtable when this kernel can add one (the spec the appliance would
/// build), installed and verified; whether it has the flowtable.
fn install_with_flowtable_if_supported(t: &Topology, sp: &mut RulesetSpec) -> bool {
    in_ns(&t.nat, || {
        let mut s = Nfnl::open().unwrap();
        sp.flowtable = nft::flowtable_supported(&mut s);
        let r = nft::build(sp);
        nft::apply(&mut s, &r).unwrap();
        nft::verify(&mut s, &r).unwrap();
        sp.flowtable
    })
}

/// The `bytes=` figures of a `/proc/net/nf_conntrack` line: original direction, then reply.
fn conntrack_bytes(line: &str) -> Vec<u64> {
    line.split_whitespace()
        .filter_map(|w| w.strip_prefix("bytes=")?.parse().ok())
        .collect()
}

/// With accounting on, conntrack counts a flow's bytes both ways, the flowtable's offloaded
/// packets included when the flowtable has the `counter` flag: a download of N bytes through
/// the NAT shows at least N bytes in the reply direction. Where the kernel has no flowtables
/// (NF_FLOW_TABLE unset, as on the CI host) the table has none and this checks the slow path.
#[test]
fn conntrack_counts_the_bytes_of_forwarded_flows() {
    const N: usize = 4 << 20;
    let t = Topology::new();
    apply_sysctls(&t.nat);
    conntrack_acct_on(&t.nat);
    let mut sp = t.spec(false);
    let offload = install_with_flowtable_if_supported(&t, &mut sp);
    if offload {
        let listing = sh("ip", &["netns", "exec", &t.nat, "nft", "list", "ruleset"]);
        assert!(
            listing.contains("counter;"),
            "flowtable counter flag:\n{listing}"
        );
    }
    let server = spawn_in_ns(&t.server, || {
        let l = TcpListener::bind(sa(SERVER_IP, 8090)).unwrap();
        let (mut s, _) = l.accept().unwrap();
        s.write_all(&vec![0x5a; N]).unwrap();
        // Held open until the client has read it all and the test has read conntrack.
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    });
    std::thread::sleep(Duration::from_millis(100));
    let mut s = in_ns(&t.client, || {
        TcpStream::connect_timeout(&sa(SERVER_IP, 8090), TIMEOUT)
    })
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = vec![0u8; N];
    s.read_exact(&mut got).unwrap();
    // Offloaded packets update the counters in the flowtable's garbage-collection pass.
    std::thread::sleep(Duration::from_millis(1500));
    let table = cat_in(&t.nat, "/proc/net/nf_conntrack");
    drop(s);
    server.join().unwrap();
    let line = table
        .lines()
        .find(|l| l.contains("dport=8090") && l.contains(&format!("src={CLIENT_IP} ")))
        .unwrap_or_else(|| panic!("no conntrack entry for the download:\n{table}"));
    eprintln!("offload {offload}: {line}");
    let bytes = conntrack_bytes(line);
    assert_eq!(bytes.len(), 2, "accounting off? {line}");
    assert!(
        bytes[1] >= N as u64,
        "reply bytes {} < {N}: {line}",
        bytes[1]
    );
    if offload {
        assert!(line.contains("[OFFLOAD]"), "not offloaded: {line}");
    }
}

/// `fwd_first_reply` counts each answered flow once, TCP and UDP alike and however many
/// replies it has, and flows without a reply not at all; answered flows carry mark 1.
#[test]
fn first_reply_counts_each_answered_flow_once() {
    const K: u16 = 5;
    let t = Topology::new();
    apply_sysctls(&t.nat);
    let mut sp = t.spec(false);
    install_with_flowtable_if_supported(&t, &mut sp);
    let listing = sh("ip", &["netns", "exec", &t.nat, "nft", "list", "ruleset"]);
    let want = "ct direction reply ct mark 0x00000000 ct mark set 0x00000001 counter packets 0 bytes 0 comment \"fwd_first_reply\"";
    assert!(listing.contains(want), "`{want}` not in:\n{listing}");

    let tcp = tcp_echo_peer(&t.server, sa(SERVER_IP, 8081));
    for _ in 0..K {
        assert_eq!(
            tcp_ask(&t.client, sa(SERVER_IP, 8081)).unwrap(),
            NAT_WAN_IP.to_string()
        );
    }
    // Three exchanges per UDP flow: three replies, one count.
    let udp = udp_echo_peer(&t.server, sa(SERVER_IP, 9095));
    let answered = in_ns(&t.client, || {
        (0..K)
            .map(|i| {
                let u = UdpSocket::bind(sa(CLIENT_IP, 41000 + i)).unwrap();
                u.set_read_timeout(Some(TIMEOUT)).unwrap();
                let mut buf = [0u8; 64];
                (0..3)
                    .filter(|_| {
                        u.send_to(b"hello", sa(SERVER_IP, 9095)).unwrap();
                        u.recv_from(&mut buf).is_ok()
                    })
                    .count()
            })
            .sum::<usize>()
    });
    assert_eq!(answered, 3 * usize::from(K));
    // Unanswered: a server socket that reads and never replies (so no ICMP error comes back
    // either, which would be a related reply), and SYNs to an absent host.
    let silent = spawn_in_ns(&t.server, || {
        let u = UdpSocket::bind(sa(SERVER_IP, 9096)).unwrap();
        u.set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        let mut buf = [0u8; 64];
        (0..K).filter(|_| u.recv_from(&mut buf).is_ok()).count()
    });
    std::thread::sleep(Duration::from_millis(100));
    in_ns(&t.client, || {
        for i in 0..K {
            let u = UdpSocket::bind(sa(CLIENT_IP, 42000 + i)).unwrap();
            u.send_to(b"anyone?", sa(SERVER_IP, 9096)).unwrap();
        }
        for _ in 0..2 {
            let absent = sa(Ipv4Addr::new(198, 51, 100, 9), 80);
            assert!(TcpStream::connect_timeout(&absent, Duration::from_millis(300)).is_err());
        }
    });
    assert_eq!(silent.join().unwrap(), usize::from(K));
    tcp.join().unwrap();
    udp.join().unwrap();

    let c = counters(&t);
    assert_eq!(
        c.rule(nft::RULE_FWD_FIRST_REPLY).map(|(p, _)| p),
        Some(2 * u64::from(K)),
        "{c:?}"
    );
    let table = cat_in(&t.nat, "/proc/net/nf_conntrack");
    let marks = |port: &str, mark: &str| {
        table
            .lines()
            .filter(|l| l.contains(port) && l.contains(mark))
            .count()
    };
    assert_eq!(marks("dport=9095 ", "mark=1 "), usize::from(K), "{table}");
    assert_eq!(marks("dport=9096 ", "mark=0 "), usize::from(K), "{table}");
}

/// /proc/net/stat/nf_conntrack of `ns`, every column summed over the CPUs, by name.
fn conntrack_stats(ns: &str) -> Vec<(String, u64)> {
    let text = cat_in(ns, "/proc/net/stat/nf_conntrack");
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap()
        .split_whitespace()
        .map(String::from)
        .collect();
    let mut sums = vec![0u64; header.len()];
    for row in lines {
        for (s, w) in sums.iter_mut().zip(row.split_whitespace()) {
            *s += u64::from_str_radix(w, 16).unwrap();
        }
    }
    header.into_iter().zip(sums).collect()
}

/// With `nat_port_range` of 4 ports, 10 UDP flows from different client ports to one server
/// address and port get at most 4 translations, every one in the range; the others fail at
/// conntrack's confirmation (the metrics' ErrorPortAllocation). The counters that moved are
/// printed: `insert_failed` must be among them.
#[test]
fn nat_port_range_limits_translations() {
    let t = Topology::new();
    apply_sysctls(&t.nat);
    let mut sp = t.spec(false);
    sp.nat_port_range = Some((2000, 2003));
    install_with_flowtable_if_supported(&t, &mut sp);
    let listing = sh("ip", &["netns", "exec", &t.nat, "nft", "list", "ruleset"]);
    let want = "masquerade to :2000-2003 fully-random comment \"masquerade\"";
    assert!(listing.contains(want), "`{want}` not in:\n{listing}");

    let before = conntrack_stats(&t.nat);
    let udp = udp_echo_peer(&t.server, sa(SERVER_IP, 9097));
    let replies = in_ns(&t.client, || {
        let socks: Vec<UdpSocket> = (0..10)
            .map(|i| {
                let u = UdpSocket::bind(sa(CLIENT_IP, 43000 + i)).unwrap();
                u.set_read_timeout(Some(Duration::from_millis(300)))
                    .unwrap();
                u.send_to(b"hello", sa(SERVER_IP, 9097)).unwrap();
                u
            })
            .collect();
        let mut buf = [0u8; 64];
        socks
            .iter()
            .filter(|u| u.recv_from(&mut buf).is_ok())
            .count()
    });
    let seen = udp.join().unwrap();
    let after = conntrack_stats(&t.nat);
    let moved: Vec<String> = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| b.1 != a.1)
        .map(|(b, a)| format!("{} +{}", b.0, a.1 - b.1))
        .collect();
    eprintln!("replies {replies}, server saw {seen:?}; conntrack stats moved: {moved:?}");
    let ports: std::collections::BTreeSet<u16> = seen.iter().map(|p| p.port()).collect();
    assert!(ports.iter().all(|p| (2000..=2003).contains(p)), "{seen:?}");
    assert!(
        ports.len() <= 4 && seen.len() <= 4 && replies <= 4,
        "{seen:?}"
    );
    assert!(replies >= 1, "no flow got through: {seen:?}");
    let delta = |name: &str| {
        let i = before.iter().position(|(n, _)| n == name).unwrap();
        after[i].1 - before[i].1
    };
    // Each flow that found no free port fails when conntrack confirms it: one insert_failed
    // and one drop each (this kernel, 6.18; the metrics' ErrorPortAllocation reads them).
    assert_eq!(delta("insert_failed"), 10 - seen.len() as u64, "{moved:?}");
    assert_eq!(delta("drop"), delta("insert_failed"), "{moved:?}");

    // Source NAT to an address takes the same range; the kernel's dump verifies.
    sp.snat_addresses = vec![NAT_WAN_IP];
    let r = nft::build(&sp);
    in_ns(&t.nat, || {
        let mut s = Nfnl::open().unwrap();
        nft::apply(&mut s, &r).unwrap();
        nft::verify(&mut s, &r).unwrap();
    });
    let listing = sh("ip", &["netns", "exec", &t.nat, "nft", "list", "ruleset"]);
    let want = "snat to 198.51.100.1:2000-2003 fully-random comment \"snat 0\"";
    assert!(listing.contains(want), "`{want}` not in:\n{listing}");
    let seen = {
        let udp = udp_echo_peer(&t.server, sa(SERVER_IP, 9098));
        let got = udp_flows(&t.client, 44000, 2, sa(SERVER_IP, 9098));
        assert_eq!(got.len(), 2, "{got:?}");
        udp.join().unwrap()
    };
    assert!(
        seen.iter().all(|p| (2000..=2003).contains(&p.port())),
        "{seen:?}"
    );
}
