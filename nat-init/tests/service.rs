//! Root tests of the real nat-init binary, end to end, in network namespaces made here. A "vpc"
//! namespace plays the VPC router: a bridge with dnsmasq as the DHCP server (router, MTU 9001,
//! 2-minute leases) and an "internet" server address on its loopback. nat-init runs in a "nat"
//! namespace on the bridge with a test config file, and a "client" namespace on the same bridge
//! routes through it, as a private subnet routes through a NAT instance's single ENI. The tests
//! read nat-init's console lines, check what it configured with `ip` and `nft`, and send TCP
//! through it. All traffic stays between these namespaces; they are removed in `Drop`, also when
//! a test fails.
// The fixture functions below are not #[test]s, so allow-unwrap-in-tests does not reach them:
// a panic in them is the failure report.
#![allow(clippy::unwrap_used)]

mod common;
use common::{run, sh, spawn_in_ns, tool_hint};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

const VPC_ROUTER: &str = "10.77.0.1";
const CLIENT_IP: &str = "10.77.0.10";
/// A public address the vpc namespace owns: the "internet" behind the VPC router.
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const READY_TIMEOUT: Duration = Duration::from_secs(20);

static SERIAL: AtomicU32 = AtomicU32::new(0);

/// The two namespaces, dnsmasq, the temp dir and the nat-init process; all torn down on drop.
struct Fixture {
    vpc: String,
    nat: String,
    client: String,
    dir: PathBuf,
    dnsmasq: Option<Child>,
    nat_init: Option<NatInit>,
}

/// A running nat-init and its console lines.
struct NatInit {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Fixture {
    /// [vpc] br0 10.77.0.1/24 (dnsmasq when `dhcp`), lo 198.51.100.2/32; on the bridge:
    /// eth0 [nat] and eth0 10.77.0.10/24 [client].
    fn new(dhcp: bool) -> Fixture {
        let options = [
            format!("option:router,{VPC_ROUTER}"),
            "option:mtu,9001".to_string(),
        ];
        Fixture::with_dhcp_options(dhcp.then_some(&options[..]))
    }

    /// As [`Fixture::new`], with dnsmasq (when `Some`) giving these `--dhcp-option`s instead
    /// of the router and MTU 9001.
    fn with_dhcp_options(dhcp_options: Option<&[String]>) -> Fixture {
        let n = SERIAL.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("nat-init-service-{pid}-{n}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut f = Fixture {
            vpc: format!("natsvc-v-{pid}-{n}"),
            nat: format!("natsvc-n-{pid}-{n}"),
            client: format!("natsvc-c-{pid}-{n}"),
            dir,
            dnsmasq: None,
            nat_init: None,
        };
        for ns in [&f.vpc, &f.nat, &f.client] {
            sh("ip", &["netns", "add", ns]);
        }
        let v = f.vpc.clone();
        sh(
            "ip",
            &[
                "-n", &v, "link", "add", "br0", "mtu", "9001", "type", "bridge",
            ],
        );
        for (port, ns) in [("vpc0", &f.nat), ("cl0", &f.client)] {
            sh(
                "ip",
                &[
                    "-n", &v, "link", "add", port, "mtu", "9001", "type", "veth", "peer", "name",
                    "eth0", "netns", ns,
                ],
            );
            sh("ip", &["-n", &v, "link", "set", port, "master", "br0"]);
            sh("ip", &["-n", &v, "link", "set", port, "up"]);
        }
        sh(
            "ip",
            &[
                "-n",
                &v,
                "addr",
                "add",
                &format!("{VPC_ROUTER}/24"),
                "dev",
                "br0",
            ],
        );
        sh(
            "ip",
            &[
                "-n",
                &v,
                "addr",
                "add",
                &format!("{SERVER_IP}/32"),
                "dev",
                "lo",
            ],
        );
        sh("ip", &["-n", &v, "link", "set", "lo", "up"]);
        sh("ip", &["-n", &v, "link", "set", "br0", "up"]);
        let c = f.client.clone();
        sh(
            "ip",
            &[
                "-n",
                &c,
                "addr",
                "add",
                &format!("{CLIENT_IP}/24"),
                "dev",
                "eth0",
            ],
        );
        sh("ip", &["-n", &c, "link", "set", "lo", "up"]);
        sh("ip", &["-n", &c, "link", "set", "eth0", "up"]);
        if let Some(options) = dhcp_options {
            let leases = f.dir.join("leases");
            let log = f.dir.join("dnsmasq.log");
            let child = Command::new("ip")
                .args(["netns", "exec", &f.vpc, "dnsmasq", "--keep-in-foreground"])
                .args([
                    "--conf-file=/dev/null",
                    "--no-hosts",
                    "--no-resolv",
                    "--port=0",
                    "--interface=br0",
                    "--bind-interfaces",
                    "--pid-file=",
                    // dnsmasq's shortest lease: renewals come after a minute.
                    "--dhcp-range=10.77.0.50,10.77.0.99,255.255.255.0,2m",
                    "--log-dhcp",
                ])
                .args(options.iter().map(|o| format!("--dhcp-option={o}")))
                .arg(format!("--dhcp-leasefile={}", leases.display()))
                .arg(format!("--log-facility={}", log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            match child {
                Ok(c) => f.dnsmasq = Some(c),
                Err(e) => panic!("starting dnsmasq: {e}; {}", tool_hint("dnsmasq")),
            }
            assert!(
                run("dnsmasq", &["--version"]).status.success(),
                "dnsmasq is missing; {}",
                tool_hint("dnsmasq")
            );
        }
        f
    }

    fn write_config(&self, text: &str) -> PathBuf {
        let p = self.dir.join("nat-init.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Starts the host-built nat-init inside the nat namespace (`ip netns exec` execs it, so
    /// the child's pid is nat-init's).
    fn start(&mut self, config: &PathBuf) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.nat, env!("CARGO_BIN_EXE_nat-init")])
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                eprintln!("[nat-init] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        self.nat_init = Some(NatInit {
            child,
            lines: rx,
            seen: Vec::new(),
        });
    }

    fn nat_init(&mut self) -> &mut NatInit {
        self.nat_init.as_mut().unwrap()
    }

    fn ns(&self, args: &[&str]) -> String {
        let mut v = vec!["netns", "exec", &self.nat];
        v.extend_from_slice(args);
        let o = run("ip", &v);
        assert!(
            o.status.success(),
            "{args:?} in {}: {}",
            self.nat,
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl NatInit {
    /// The first line from now on that satisfies `pred`; fails with everything seen.
    fn wait_for(&mut self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if pred(&l) {
                        return l;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "no {what} line within {timeout:?}; saw:\n{}",
                        self.seen.join("\n")
                    )
                }
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "nat-init closed stdout before a {what} line; saw:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Every line printed within `d` from now (no failure when there are none).
    fn lines_for(&mut self, d: Duration) -> Vec<String> {
        let end = Instant::now() + d;
        let mut got = Vec::new();
        while let Ok(l) = self
            .lines
            .recv_timeout(end.saturating_duration_since(Instant::now()))
        {
            self.seen.push(l.clone());
            got.push(l);
        }
        got
    }

    fn signal(&self, sig: &str) {
        sh("kill", &[sig, &self.child.id().to_string()]);
    }

    fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let end = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < end,
                "nat-init did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(n) = &mut self.nat_init {
            let _ = n.child.kill();
            let _ = n.child.wait();
        }
        if let Some(d) = &mut self.dnsmasq {
            let _ = d.kill();
            let _ = d.wait();
        }
        for ns in [&self.nat, &self.client, &self.vpc] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One TCP exchange from the client namespace to the server address in the vpc namespace;
/// returns the source address the server saw, or the client's error.
fn tcp_through_nat(f: &Fixture, port: u16) -> Result<SocketAddr, String> {
    let (tx, rx) = mpsc::channel();
    let server = spawn_in_ns(&f.vpc, move || {
        let l = TcpListener::bind((SERVER_IP, port)).unwrap();
        l.set_nonblocking(true).unwrap();
        tx.send(()).unwrap();
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            match l.accept() {
                Ok((mut s, peer)) => {
                    s.set_nonblocking(false).unwrap();
                    s.write_all(b"hello").unwrap();
                    return Some(peer);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > end {
                        return None;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    });
    rx.recv().unwrap();
    let client = spawn_in_ns(&f.client, move || {
        let mut s = TcpStream::connect_timeout(
            &SocketAddr::from((SERVER_IP, port)),
            Duration::from_secs(3),
        )
        .map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
        if buf != b"hello" {
            return Err(format!("got {buf:?}"));
        }
        Ok(())
    });
    let client = client.join().unwrap();
    let seen = server.join().unwrap();
    client?;
    seen.ok_or_else(|| "the server saw no connection".to_string())
}

/// `key=value` of a console line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split(' ')
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

const DEFAULT_PRIVATE: &str = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10";

#[test]
fn leases_configures_verifies_survives_sigkill_renews_and_stops_on_sigterm() {
    let mut f = Fixture::new(true);
    let cfg = f
        .write_config("interface = \"eth0\"\nname = \"wan0\"\nimds = false\nhealth_interval = 2\n");
    f.start(&cfg);
    let n = f.nat_init();
    let lease = n.wait_for("dhcp lease", READY_TIMEOUT, |l| {
        l.starts_with("nat-init: dhcp lease ")
    });
    assert_eq!(field(&lease, "mtu"), "9001", "{lease}");
    let ready = n.wait_for("ready", READY_TIMEOUT, |l| {
        l.starts_with("nat-init: ready ")
    });
    assert!(
        n.seen
            .iter()
            .any(|l| l == "nat-init: nft table ip nat_instance installed and verified"),
        "{:?}",
        n.seen
    );
    assert!(
        n.seen
            .iter()
            .any(|l| l.starts_with("nat-init: flowtable ft ")),
        "a flowtable line: {:?}",
        n.seen
    );
    assert!(
        !n.seen.iter().any(|l| l.starts_with("nat-init: error")),
        "no error on a clean boot: {:?}",
        n.seen
    );
    assert_eq!(field(&ready, "iface"), "wan0");
    let addr = field(&ready, "addr");
    assert!(
        addr.starts_with("10.77.0.") && addr.ends_with("/24"),
        "{ready}"
    );
    assert_eq!(field(&ready, "gw"), VPC_ROUTER);
    assert_eq!(field(&ready, "mtu"), "9001");
    assert_eq!(field(&ready, "private"), DEFAULT_PRIVATE);
    assert!(field(&ready, "elapsed_ms").parse::<u64>().unwrap() > 0);
    let health = n.wait_for("health", Duration::from_secs(5), |l| {
        l.starts_with("nat-init: health ")
    });
    let left: u64 = field(&health, "lease_left_s").parse().unwrap();
    assert!((100..=120).contains(&left), "{health}");

    // What the kernel holds now.
    let link = f.ns(&["ip", "-o", "link", "show", "wan0"]);
    assert!(link.contains("mtu 9001"), "{link}");
    let addrs = f.ns(&["ip", "-o", "-4", "addr", "show", "dev", "wan0"]);
    assert!(addrs.contains(&format!("inet {addr} ")), "{addrs}");
    assert!(
        addrs.contains("valid_lft 1"),
        "lease lifetime on the address: {addrs}"
    );
    let routes = f.ns(&["ip", "route", "show", "default"]);
    assert!(
        routes.contains(&format!("default via {VPC_ROUTER} dev wan0"))
            && routes.contains("mtu 1500"),
        "{routes}"
    );
    let table = f.ns(&["nft", "list", "table", "ip", "nat_instance"]);
    assert!(table.contains("masquerade"), "{table}");
    assert!(table.contains("oifname \"wan0\""), "{table}");
    assert_eq!(f.ns(&["cat", "/proc/sys/net/ipv4/ip_forward"]).trim(), "1");
    assert_eq!(
        f.ns(&["cat", "/proc/sys/net/ipv4/conf/all/send_redirects"])
            .trim(),
        "0"
    );

    // The client's default route points at the NAT instance, as a private subnet's does.
    let nat_ip = addr.split('/').next().unwrap().to_string();
    sh(
        "ip",
        &["-n", &f.client, "route", "add", "default", "via", &nat_ip],
    );
    let seen = tcp_through_nat(&f, 8080).unwrap();
    assert_eq!(
        seen.ip().to_string(),
        nat_ip,
        "the server must see the NAT's address (masquerade)"
    );
    let n = f.nat_init();
    let health = n.wait_for("health after traffic", Duration::from_secs(5), |l| {
        l.starts_with("nat-init: health ")
    });
    assert!(
        field(&health, "forwarded_packets").parse::<u64>().unwrap() >= 3,
        "{health}"
    );

    // Drift: someone turns forwarding off; the next health tick puts it back.
    f.ns(&["sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward"]);
    let n = f.nat_init();
    let drift = n.wait_for("sysctl drift", Duration::from_secs(6), |l| {
        l.starts_with("nat-init: error sysctl ")
    });
    assert!(drift.contains("ip_forward"), "{drift}");
    n.wait_for("ready again", Duration::from_secs(5), |l| {
        l.starts_with("nat-init: ready ")
    });
    assert_eq!(f.ns(&["cat", "/proc/sys/net/ipv4/ip_forward"]).trim(), "1");

    // Drift: the table is deleted; the next health tick reinstalls it.
    f.ns(&["nft", "delete", "table", "ip", "nat_instance"]);
    let n = f.nat_init();
    n.wait_for("nft drift", Duration::from_secs(6), |l| {
        l.starts_with("nat-init: error nft ") && l.ends_with("; reinstalling")
    });
    n.wait_for("ready after reinstall", Duration::from_secs(5), |l| {
        l.starts_with("nat-init: ready ")
    });
    let table = f.ns(&["nft", "list", "table", "ip", "nat_instance"]);
    assert!(table.contains("masquerade"), "{table}");

    // SIGKILL: the NAT stays configured; the restarted nat-init keeps the verified table.
    let n = f.nat_init();
    n.signal("-KILL");
    let _ = n.wait_exit(Duration::from_secs(5));
    let table = f.ns(&["nft", "list", "table", "ip", "nat_instance"]);
    assert!(
        table.contains("masquerade"),
        "table gone after SIGKILL: {table}"
    );
    f.start(&cfg);
    let n = f.nat_init();
    let ready2 = n.wait_for("ready after restart", READY_TIMEOUT, |l| {
        l.starts_with("nat-init: ready ")
    });
    assert_eq!(field(&ready2, "iface"), "wan0");
    assert_eq!(field(&ready2, "addr"), addr, "same lease after restart");
    assert!(
        n.seen.iter().any(
            |l| l == "nat-init: nft table ip nat_instance already installed and verified; kept"
        ),
        "{:?}",
        n.seen
    );

    // Renewal at T1 (half of the 2-minute lease), without a second ready line.
    let renewed = n.wait_for("dhcp renewed", Duration::from_secs(80), |l| {
        l.starts_with("nat-init: dhcp renewed ")
    });
    assert_eq!(field(&renewed, "addr"), addr);
    let s: u64 = field(&renewed, "lease_s").parse().unwrap();
    assert!((110..=120).contains(&s), "{renewed}");
    n.wait_for("health after renewal", Duration::from_secs(5), |l| {
        l.starts_with("nat-init: health ")
    });
    assert!(
        n.seen
            .iter()
            .filter(|l| l.starts_with("nat-init: ready "))
            .count()
            == 1,
        "a renewal is not a new ready: {:?}",
        n.seen
    );

    // SIGTERM: prompt exit 0, ruleset left in place.
    n.signal("-TERM");
    let status = n.wait_exit(Duration::from_secs(3));
    assert_eq!(status.code(), Some(0), "{status:?}");
    let table = f.ns(&["nft", "list", "table", "ip", "nat_instance"]);
    assert!(table.contains("masquerade"), "{table}");
}

#[test]
fn no_dhcp_server_is_reported_not_silent() {
    let mut f = Fixture::new(false);
    let cfg =
        f.write_config("interface = \"eth0\"\nrename = false\nimds = false\ndhcp_timeout = 2\n");
    f.start(&cfg);
    let n = f.nat_init();
    let e = n.wait_for("dhcp error", Duration::from_secs(10), |l| {
        l.starts_with("nat-init: error dhcp ")
    });
    assert!(e.contains("no lease on eth0 after 2 s"), "{e}");
    n.signal("-TERM");
    assert_eq!(n.wait_exit(Duration::from_secs(3)).code(), Some(0));
}

#[test]
fn bad_config_and_missing_interface_are_reported_not_silent() {
    let mut f = Fixture::new(false);
    // Invalid: the whole baked file is refused (defaults: no pinned interface, and a veth is
    // not on PCI, so no primary interface is found).
    let cfg = f.write_config("imds = false\nbogus = 1\n");
    f.start(&cfg);
    let n = f.nat_init();
    let e = n.wait_for("config error", Duration::from_secs(5), |l| {
        l.starts_with("nat-init: error config ")
    });
    assert!(e.contains("line 2") && e.contains("bogus"), "{e}");
    let e = n.wait_for("link error", Duration::from_secs(15), |l| {
        l.starts_with("nat-init: error link ")
    });
    assert!(e.contains("no Ethernet device on PCI"), "{e}");
    assert!(e.contains("retrying in"), "{e}");
    n.signal("-TERM");
    assert_eq!(n.wait_exit(Duration::from_secs(3)).code(), Some(0));
}

/// The interface MTU of `dev` in namespace `ns`.
fn link_mtu(ns: &str, dev: &str) -> u32 {
    let link = sh("ip", &["-n", ns, "-o", "link", "show", dev]);
    link.split_whitespace()
        .skip_while(|w| *w != "mtu")
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("no mtu in {link:?}"))
}

#[test]
fn a_lease_with_mtu_68_is_refused_with_an_error_line_and_the_mtu_stays() {
    let options = [format!("option:router,{VPC_ROUTER}"), "26,68".to_string()];
    let mut f = Fixture::with_dhcp_options(Some(&options));
    let before = link_mtu(&f.nat, "eth0");
    let cfg = f.write_config("interface = \"eth0\"\nrename = false\nimds = false\n");
    f.start(&cfg);
    let n = f.nat_init();
    let e = n.wait_for("dhcp MTU error", READY_TIMEOUT, |l| {
        l.starts_with("nat-init: error dhcp ")
    });
    assert!(
        e.contains("MTU 68 (option 26) is outside 576..=9216")
            && e.ends_with(&format!("keeping the interface MTU {before}")),
        "{e}"
    );
    let ready = n.wait_for("ready", READY_TIMEOUT, |l| {
        l.starts_with("nat-init: ready ")
    });
    assert_eq!(field(&ready, "mtu"), before.to_string(), "{ready}");
    assert_eq!(link_mtu(&f.nat, "eth0"), before);
    let routes = f.ns(&["ip", "route", "show", "default"]);
    assert!(
        routes.contains(&format!("default via {VPC_ROUTER} dev eth0")),
        "{routes}"
    );
}

/// A DHCP server that is not the lease's: in the vpc namespace it watches the bridge for the
/// first renewal REQUEST (ciaddr set, unicast to the real server) and answers it with a NAK
/// with the same xid and chaddr but server identifier `rogue_id`, from the real server's
/// address (spoofed, so only the server identifier tells them apart). Returns the xid.
fn rogue_nak(f: &Fixture, rogue_id: Ipv4Addr, timeout: Duration) -> std::thread::JoinHandle<u32> {
    use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode};
    use dhcproto::{Decodable, Encodable};
    use nat_init::dhcp::frame;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    let (tx, rx) = mpsc::channel();
    let h = spawn_in_ns(&f.vpc, move || {
        let ifindex = nix::net::if_::if_nametoindex("br0").unwrap();
        let proto = (libc::ETH_P_IP as u16).to_be();
        // SAFETY: plain socket(2); the result is checked.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, i32::from(proto)) };
        assert!(raw >= 0, "{}", std::io::Error::last_os_error());
        // SAFETY: a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let sll = |mac: Option<[u8; 6]>| {
            // SAFETY: sockaddr_ll is plain old data; zero is valid.
            let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sa.sll_family = libc::AF_PACKET as u16;
            sa.sll_protocol = proto;
            sa.sll_ifindex = ifindex as i32;
            if let Some(m) = mac {
                sa.sll_halen = 6;
                sa.sll_addr[..6].copy_from_slice(&m);
            }
            sa
        };
        let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        let sa = sll(None);
        // SAFETY: `sa` is a valid sockaddr_ll of `len` bytes.
        let rc = unsafe { libc::bind(fd.as_raw_fd(), (&raw const sa).cast(), len) };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        // SAFETY: `tv` is a valid timeval for the call.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        tx.send(()).unwrap();
        let end = Instant::now() + timeout;
        let mut buf = vec![0u8; 2048];
        while Instant::now() < end {
            // SAFETY: `buf` is valid for writing its length.
            let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            let Ok(n) = usize::try_from(n) else { continue };
            let Some(d) = frame::parse(&buf[..n], frame::SERVER_PORT) else {
                continue;
            };
            let Ok(req) = Message::from_bytes(d.payload) else {
                continue;
            };
            if req.opcode() != Opcode::BootRequest
                || req.opts().msg_type() != Some(MessageType::Request)
                || req.ciaddr().is_unspecified()
            {
                continue;
            }
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&req.chaddr()[..6]);
            let mut nak = Message::default();
            nak.set_opcode(Opcode::BootReply)
                .set_xid(req.xid())
                .set_chaddr(&mac);
            nak.opts_mut()
                .insert(DhcpOption::MessageType(MessageType::Nak));
            nak.opts_mut()
                .insert(DhcpOption::ServerIdentifier(rogue_id));
            nak.opts_mut()
                .insert(DhcpOption::Message("rogue says no".into()));
            let src: Ipv4Addr = VPC_ROUTER.parse().unwrap();
            let packet = frame::build(
                src,
                req.ciaddr(),
                frame::SERVER_PORT,
                frame::CLIENT_PORT,
                &nak.to_vec().unwrap(),
            )
            .unwrap();
            let to = sll(Some(mac));
            // SAFETY: `packet` and `to` are valid for the lengths passed.
            let rc = unsafe {
                libc::sendto(
                    fd.as_raw_fd(),
                    packet.as_ptr().cast(),
                    packet.len(),
                    0,
                    (&raw const to).cast(),
                    len,
                )
            };
            assert_eq!(
                rc as usize,
                packet.len(),
                "{}",
                std::io::Error::last_os_error()
            );
            return req.xid();
        }
        panic!("no renewal REQUEST seen on br0 within {timeout:?}");
    });
    rx.recv().unwrap();
    h
}

#[test]
fn a_nak_from_another_server_while_renewing_is_ignored() {
    // T1 at 4 s so the renewal comes quickly.
    let options = [
        format!("option:router,{VPC_ROUTER}"),
        "option:mtu,9001".to_string(),
        "option:T1,4".to_string(),
    ];
    let mut f = Fixture::with_dhcp_options(Some(&options));
    let cfg = f.write_config("interface = \"eth0\"\nrename = false\nimds = false\n");
    let rogue = rogue_nak(&f, Ipv4Addr::new(10, 77, 0, 66), Duration::from_secs(20));
    f.start(&cfg);
    let n = f.nat_init();
    let lease = n.wait_for("dhcp lease", READY_TIMEOUT, |l| {
        l.starts_with("nat-init: dhcp lease ")
    });
    // The real server goes quiet: the renewal REQUEST waits in its socket, and only the rogue
    // answers meanwhile.
    let dnsmasq = f.dnsmasq.as_ref().unwrap().id().to_string();
    sh("kill", &["-STOP", &dnsmasq]);
    let addr = field(&lease, "addr").to_string();
    let xid = rogue.join().unwrap();
    let n = f.nat_init();
    let after = n.lines_for(Duration::from_secs(2));
    sh("kill", &["-CONT", &dnsmasq]);
    // The real server's ACK to the same REQUEST renews the lease kept all along.
    let renewed = n.wait_for("dhcp renewed", Duration::from_secs(10), |l| {
        l.starts_with("nat-init: dhcp renewed ")
    });
    assert_eq!(field(&renewed, "addr"), addr);
    assert!(
        !n.seen.iter().any(|l| l.contains("lease lost")),
        "a NAK (xid {xid:#x}) from a server that is not the lease's dropped the lease: {after:?}\n{:?}",
        n.seen
    );
    let addrs = f.ns(&["ip", "-o", "-4", "addr", "show", "dev", "eth0"]);
    assert!(addrs.contains(&format!("inet {addr} ")), "{addrs}");
}

/// A router advertisement (RFC 4861 4.2) from the vpc namespace's bridge to all nodes: router
/// lifetime 1800 s (a default route) and one prefix, on-link and autonomous (SLAAC).
fn router_advertisement(prefix: [u8; 16]) -> Vec<u8> {
    let mut p = vec![134, 0, 0, 0, 64, 0];
    p.extend_from_slice(&1800u16.to_be_bytes());
    p.extend_from_slice(&[0; 8]); // reachable time, retrans timer
    // Prefix information: type 3, length 4 (32 bytes), /64, L and A flags.
    p.extend_from_slice(&[3, 4, 64, 0xc0]);
    p.extend_from_slice(&86400u32.to_be_bytes());
    p.extend_from_slice(&14400u32.to_be_bytes());
    p.extend_from_slice(&[0; 4]);
    p.extend_from_slice(&prefix);
    p
}

/// Sends `ra` from `dev` in namespace `ns` to ff02::1 with hop limit 255 (receivers drop an RA
/// with any other); the kernel fills in the ICMPv6 checksum of a raw ICMPv6 socket.
fn send_ra(ns: &str, dev: &'static str, ra: Vec<u8>) -> Result<(), String> {
    spawn_in_ns(ns, move || {
        let name = std::ffi::CString::new(dev).unwrap();
        // SAFETY: a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(format!("no {dev}"));
        }
        // SAFETY: plain socket(2) call; the fd is closed below.
        let fd = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6) };
        if fd < 0 {
            return Err(format!("socket: {}", std::io::Error::last_os_error()));
        }
        let hops: libc::c_int = 255;
        let idx = ifindex as libc::c_int;
        // SAFETY: sockaddr_in6 is plain data; all zeroes is a valid value.
        let mut addr: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        addr.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        addr.sin6_addr.s6_addr = "ff02::1".parse::<std::net::Ipv6Addr>().unwrap().octets();
        addr.sin6_scope_id = ifindex;
        // SAFETY: the option values are c_ints that outlive the calls, the address a
        // sockaddr_in6 of the given size, the buffer `ra` of its length.
        let r = unsafe {
            let int = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            libc::setsockopt(
                fd,
                libc::IPPROTO_IPV6,
                libc::IPV6_MULTICAST_HOPS,
                (&hops as *const libc::c_int).cast(),
                int,
            );
            libc::setsockopt(
                fd,
                libc::IPPROTO_IPV6,
                libc::IPV6_MULTICAST_IF,
                (&idx as *const libc::c_int).cast(),
                int,
            );
            let r = libc::sendto(
                fd,
                ra.as_ptr().cast(),
                ra.len(),
                0,
                (&addr as *const libc::sockaddr_in6).cast(),
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            );
            libc::close(fd);
            r
        };
        if r < 0 {
            return Err(format!("sendto: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    })
    .join()
    .unwrap()
}

fn global_ipv6(ns: &str, dev: &str) -> String {
    sh(
        "ip",
        &[
            "-n", ns, "-6", "-o", "addr", "show", "dev", dev, "scope", "global",
        ],
    )
}

#[test]
fn ipv6_is_off_router_advertisements_configure_nothing_and_timeouts_are_set() {
    let mut f = Fixture::new(true);
    let cfg = f
        .write_config("interface = \"eth0\"\nname = \"wan0\"\nimds = false\nhealth_interval = 1\n");
    f.start(&cfg);
    let n = f.nat_init();
    n.wait_for("ready", READY_TIMEOUT, |l| {
        l.starts_with("nat-init: ready ")
    });
    let health = n.wait_for("health", Duration::from_secs(5), |l| {
        l.starts_with("nat-init: health ")
    });
    eprintln!("health line: {health}");

    // The control: the client namespace, which nothing manages, takes an address from the RA.
    let mut prefix = [0u8; 16];
    prefix[..6].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01]);
    let end = Instant::now() + Duration::from_secs(20);
    let client_addr = loop {
        send_ra(&f.vpc, "br0", router_advertisement(prefix)).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let a = global_ipv6(&f.client, "eth0");
        if a.contains("2001:db8:1:") {
            break a;
        }
        assert!(
            Instant::now() < end,
            "the client never took the RA's prefix: {a:?}"
        );
    };
    let client_route = sh("ip", &["-n", &f.client, "-6", "route", "show", "default"]);
    assert!(client_route.contains("default via fe80:"), "{client_route}");
    // A few more after the client has it, so the NAT has seen several.
    for _ in 0..3 {
        send_ra(&f.vpc, "br0", router_advertisement(prefix)).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    eprintln!("client: {client_addr}");
    let nat_addrs = f.ns(&["ip", "-6", "-o", "addr", "show", "scope", "global"]);
    assert_eq!(
        nat_addrs.trim(),
        "",
        "the NAT took an IPv6 address from the RA"
    );
    let nat_routes = f.ns(&["ip", "-6", "route", "show"]);
    assert!(
        !nat_routes.contains("default"),
        "the NAT took an IPv6 default route: {nat_routes}"
    );
    let nat_all = f.ns(&["ip", "-6", "-o", "addr", "show"]);
    assert_eq!(
        nat_all.trim(),
        "",
        "IPv6 is off on every interface, link-local and ::1 too"
    );

    // What the sysctl stage set, read back from the kernel.
    let read = |f: &Fixture, k: &str| f.ns(&["cat", &format!("/proc/sys/{k}")]).trim().to_string();
    for dev in ["all", "default", "wan0", "lo"] {
        assert_eq!(
            read(&f, &format!("net/ipv6/conf/{dev}/disable_ipv6")),
            "1",
            "{dev}"
        );
    }
    for (k, v) in [
        ("tcp_timeout_established", "7440"),
        ("tcp_timeout_syn_sent", "240"),
        ("tcp_timeout_syn_recv", "240"),
        ("tcp_timeout_fin_wait", "240"),
        ("tcp_timeout_close_wait", "240"),
        ("tcp_timeout_last_ack", "240"),
        ("tcp_timeout_time_wait", "120"),
        ("udp_timeout", "120"),
        ("udp_timeout_stream", "350"),
    ] {
        assert_eq!(
            read(&f, &format!("net/netfilter/nf_conntrack_{k}")),
            v,
            "{k}"
        );
    }

    // The health line: conntrack's statistics; no ENA allowances on a veth.
    for k in ["ct_drop", "ct_early_drop", "ct_insert_failed"] {
        field(&health, k).parse::<u64>().unwrap();
    }
    assert!(!health.contains("allowance"), "{health}");
    let n = f.nat_init();
    assert!(
        !n.seen.iter().any(|l| l.starts_with("nat-init: error")),
        "no error on a clean boot: {:?}",
        n.seen
    );

    // Drift: IPv6 turned back on on the interface; the next health tick turns it off again.
    f.ns(&[
        "sh",
        "-c",
        "echo 0 > /proc/sys/net/ipv6/conf/wan0/disable_ipv6",
    ]);
    let n = f.nat_init();
    let drift = n.wait_for("sysctl drift", Duration::from_secs(5), |l| {
        l.starts_with("nat-init: error sysctl ")
    });
    assert!(drift.contains("ipv6/conf/wan0/disable_ipv6"), "{drift}");
    n.wait_for("ready again", Duration::from_secs(5), |l| {
        l.starts_with("nat-init: ready ")
    });
    assert_eq!(read(&f, "net/ipv6/conf/wan0/disable_ipv6"), "1");
}

#[test]
fn a_conntrack_size_beyond_ram_is_refused_and_the_nat_comes_up() {
    let mut f = Fixture::new(true);
    let cfg = f.write_config(
        "interface = \"eth0\"\nrename = false\nimds = false\nconntrack_max = 4000000000\n",
    );
    f.start(&cfg);
    let n = f.nat_init();
    let e = n.wait_for("conntrack_max refused", READY_TIMEOUT, |l| {
        l.starts_with("nat-init: error config conntrack_max=")
    });
    assert!(
        e.starts_with("nat-init: error config conntrack_max=4000000000 does not fit in RAM: ")
            && e.contains(" more than a quarter of MemTotal ")
            && e.contains(" entries); using "),
        "{e}"
    );
    n.wait_for("ready", READY_TIMEOUT, |l| {
        l.starts_with("nat-init: ready ")
    });
    n.signal("-TERM");
    assert_eq!(n.wait_exit(Duration::from_secs(3)).code(), Some(0));
}
