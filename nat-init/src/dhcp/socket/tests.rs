//! The client against a real dnsmasq across a veth pair between two network namespaces this
//! test creates (needs root, `ip` and `dnsmasq` on the host; fails loudly without them).

use super::*;
use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

const CLIENT_MAC: [u8; 6] = [0x02, 0x6e, 0x61, 0x74, 0x00, 0x01];

/// Two namespaces joined by a veth pair, dnsmasq serving one end. Dropping it kills dnsmasq
/// and deletes the namespaces (which deletes the veths).
struct Lab {
    server_ns: String,
    client_ns: String,
    client_if: String,
    dir: std::path::PathBuf,
    dnsmasq: Option<Child>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let pid = std::process::id();
        let mut lab = Lab {
            server_ns: format!("natinit-{tag}-s-{pid}"),
            client_ns: format!("natinit-{tag}-c-{pid}"),
            client_if: format!("nc{tag}{pid}"),
            dir: std::env::temp_dir().join(format!("natinit-dhcp-{tag}-{pid}")),
            dnsmasq: None,
        };
        let server_if = format!("ns{tag}{pid}");
        assert!(lab.client_if.len() <= 15);
        std::fs::create_dir_all(&lab.dir).unwrap();
        ip(&["netns", "add", &lab.server_ns]);
        ip(&["netns", "add", &lab.client_ns]);
        ip(&[
            "link",
            "add",
            &server_if,
            "netns",
            &lab.server_ns,
            "type",
            "veth",
            "peer",
            "name",
            &lab.client_if,
            "netns",
            &lab.client_ns,
            "address",
            "02:6e:61:74:00:01",
        ]);
        let sip = |args: &[&str]| {
            let mut v = vec!["-n", lab.server_ns.as_str()];
            v.extend_from_slice(args);
            ip(&v);
        };
        sip(&["addr", "add", "10.213.0.1/24", "dev", &server_if]);
        sip(&["link", "set", &server_if, "up"]);
        sip(&["link", "set", "lo", "up"]);
        ip(&["-n", &lab.client_ns, "link", "set", &lab.client_if, "up"]);
        ip(&["-n", &lab.client_ns, "link", "set", "lo", "up"]);
        let log = File::create(lab.dir.join("dnsmasq.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.server_ns, "dnsmasq", "--no-daemon"])
            .arg("--conf-file=/dev/null")
            .arg("--port=0")
            .arg(format!("--interface={server_if}"))
            .arg("--bind-interfaces")
            .arg("--dhcp-range=10.213.0.50,10.213.0.60,255.255.255.0,2m")
            .arg("--dhcp-option=option:mtu,9001")
            .arg("--dhcp-option=option:router,10.213.0.1")
            // Sent only when asked for: the parameter request list must name option 6.
            .arg("--dhcp-option=option:dns-server,10.213.0.2")
            .arg(format!(
                "--dhcp-leasefile={}",
                lab.dir.join("leases").display()
            ))
            .arg("--pid-file=")
            .arg("--log-dhcp")
            .arg("--log-facility=-")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting dnsmasq (install dnsmasq-base)");
        lab.dnsmasq = Some(child);
        lab
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dnsmasq.log")).unwrap_or_default()
    }

    /// Runs `f` on a thread inside the client namespace.
    fn in_client<T: Send + 'static>(&self, f: impl FnOnce(u32) -> T + Send + 'static) -> T {
        let ifname = self.client_if.clone();
        test_support::netns::run_in(&self.client_ns, move || {
            let ifindex = nix::net::if_::if_nametoindex(ifname.as_str()).unwrap();
            f(ifindex)
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut c) = self.dnsmasq.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // `ip netns exec` may leave dnsmasq running if it outlived its parent: the namespace
        // deletion below takes the veth with it either way.
        for ns in [&self.server_ns, &self.client_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Steps `client` until a lease change arrives or `limit` passes.
fn step_until_change(client: &mut Client, limit: Duration) -> (Vec<LeaseChange>, Vec<String>) {
    let start = Instant::now();
    let mut errors = Vec::new();
    while start.elapsed() < limit {
        let step = client.step(Duration::from_millis(200));
        errors.extend(step.errors.iter().map(|e| e.to_string()));
        if !step.changes.is_empty() {
            return (step.changes, errors);
        }
    }
    (Vec::new(), errors)
}

#[test]
fn binds_and_renews_against_dnsmasq() {
    let lab = Lab::new("b");
    let client_if = lab.client_if.clone();
    let client_ns = lab.client_ns.clone();
    let result = lab.in_client(move |ifindex| {
        let mut client = Client::new(&client_if, ifindex, CLIENT_MAC);
        let started = Instant::now();
        let (changes, errors) = step_until_change(&mut client, Duration::from_secs(15));
        let bound_after = started.elapsed();
        let lease = match changes.as_slice() {
            [LeaseChange::Apply(l)] => l.clone(),
            other => return Err(format!("no lease: {other:?} errors: {errors:?}")),
        };
        if client.machine().state() != State::Bound {
            return Err(format!("state {:?}", client.machine().state()));
        }
        // Configure the address as nat-init would, then renew by unicast over UDP.
        ip(&[
            "-n",
            &client_ns,
            "addr",
            "add",
            &format!("{}/{}", lease.addr, lease.prefix_len),
            "dev",
            &client_if,
        ]);
        let first = client.renew_now();
        if !first.errors.is_empty() {
            return Err(format!("renew: {:?}", first.errors));
        }
        if client.machine().state() != State::Renewing {
            return Err(format!(
                "state after renew_now {:?}",
                client.machine().state()
            ));
        }
        let (changes, errors) = step_until_change(&mut client, Duration::from_secs(10));
        let renewed = match changes.as_slice() {
            [LeaseChange::Apply(l)] => l.clone(),
            other => return Err(format!("no renewal: {other:?} errors: {errors:?}")),
        };
        Ok((lease, renewed, bound_after, client.machine().state()))
    });
    let (lease, renewed, bound_after, state) = match result {
        Ok(r) => r,
        Err(e) => panic!("{e}\ndnsmasq log:\n{}", lab.log()),
    };
    assert!(
        (50..=60).contains(&lease.addr.octets()[3]) && lease.addr.octets()[..3] == [10, 213, 0],
        "{lease:?}"
    );
    assert_eq!(lease.prefix_len, 24);
    assert_eq!(lease.router, Some(Ipv4Addr::new(10, 213, 0, 1)));
    assert_eq!(lease.mtu, Some(9001));
    assert_eq!(lease.dns, [Ipv4Addr::new(10, 213, 0, 2)]);
    assert_eq!(lease.server, Ipv4Addr::new(10, 213, 0, 1));
    assert_eq!(lease.lease_s, 120);
    assert!(bound_after < Duration::from_secs(5), "{bound_after:?}");
    assert_eq!(renewed.addr, lease.addr);
    assert!(renewed.start_ms > lease.start_ms);
    assert_eq!(state, State::Bound);
    let log = lab.log();
    assert!(log.contains("DHCPOFFER"), "{log}");
    // The renewal reached dnsmasq as a unicast REQUEST with ciaddr set.
    assert!(
        log.matches("DHCPACK").count() >= 2,
        "expected two ACKs:\n{log}"
    );
}

#[test]
fn filter_jumps_land_on_returns() {
    let f = dhcp_filter();
    for (i, ins) in f.iter().enumerate() {
        if ins.code & 0x07 == 0x05 {
            for off in [ins.jt, ins.jf] {
                let target = i + 1 + usize::from(off);
                assert!(target < f.len(), "instruction {i} jumps out");
            }
        }
    }
    assert_eq!(f[7].k, 0xffff);
    assert_eq!(f[8].k, 0);
    assert_eq!((f[1].jf, f[3].jt, f[6].jf), (6, 4, 1));
}
