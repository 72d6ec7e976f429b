//! The end-to-end test: the real disk image, booted through UEFI firmware in QEMU with its NIC
//! on the public subnet of an emulated VPC (see `vpc`), NATs a private subnet to the
//! "internet". One VM boot serves every assertion, in an order that lets later ones build on
//! earlier state (renewal after traffic, supervision after renewal, power-off last).

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::qemu::{Net, Vm, VmConfig};
use crate::report::{Report, say};
use crate::vpc::{self, Vpc};
use crate::{hostdeps, image};

/// The DHCP lease the VPC hands out: short, so that renewal (at half of it) happens within
/// the test. dnsmasq's minimum is 120 s.
const LEASE_SECS: u32 = 120;
const PORTS: &[u16] = &[22, 53, 80, 443, 2222, 3128, 8080, 8443];
const VALID_USER_DATA: &str = "# nat-init user-data\nhealth_interval = 5\n";
const INVALID_USER_DATA: &str = "health_interval = 5\nprivate_ranges = [\"10.0.0.1/16\"]\n";

const READY: &str = "e2e-boot-ready-with-leased-address-on-ens5";
const PRIVATE_RANGES: &str = "e2e-private-ranges-from-imds-vpc-cidr";
const USER_DATA: &str = "e2e-user-data-changes-health-interval";
const TRAFFIC: &str = "e2e-tcp-udp-icmp-through-the-nat";
const MTU: &str = "e2e-mtu-9001-upload-across-1500-black-hole";
const NO_REDIRECTS: &str = "e2e-no-icmp-redirects";
const CLOSED: &str = "e2e-nothing-open-and-no-inbound-to-private";
const FLOWTABLE: &str = "e2e-flowtable-offload-in-guest-kernel";
const RENEWAL: &str = "e2e-dhcp-renewal-across-dnsmasq-restart";
const SUPERVISION: &str = "e2e-supervision-and-invalid-user-data";
const POWERDOWN: &str = "e2e-acpi-powerdown-within-15s";
pub const CHECKS: &[&str] = &[
    READY,
    PRIVATE_RANGES,
    USER_DATA,
    TRAFFIC,
    MTU,
    NO_REDIRECTS,
    CLOSED,
    FLOWTABLE,
    RENEWAL,
    SUPERVISION,
    POWERDOWN,
];

pub fn run(root: &std::path::Path, report: &mut Report) -> Result<()> {
    hostdeps::ensure(hostdeps::QEMU)?;
    hostdeps::ensure(hostdeps::NET)?;
    let built = image::run(
        root,
        &image::Args {
            profile: "nat-t4g-e2e".into(),
            ..Default::default()
        },
    )
    .context("building the nat-t4g-e2e image")?;
    let mut vpc = Vpc::build(LEASE_SECS, Some(VALID_USER_DATA.to_string()))
        .context("building the emulated VPC")?;
    let mut cfg = VmConfig::new(built.dir.join("disk.raw"));
    cfg.net = Net::Tap(vpc::TAP.to_string());
    cfg.mac = vpc::NAT_MAC.to_string();
    cfg.netns = Some(vpc.ns.name("vpc"));
    let mut vm = Vm::start(&cfg)?;
    let ok = assertions(&mut vm, &mut vpc, report);
    if !ok {
        say(&format!("serial console:\n{}", vm.log()));
        say(&format!("namespaces:\n{}", vpc.dump()));
        say(&format!("dnsmasq log:\n{}", vpc.dnsmasq_log()));
    }
    Ok(())
}

fn curl(vpc: &Vpc, ns: &str, args: &[&str]) -> Result<String> {
    let mut v = vec!["-sS", "--max-time", "60"];
    v.extend_from_slice(args);
    vpc.ns.exec(ns, "curl", &v)
}

/// Downloads `bytes` from the internet server through the NAT, from the private client.
fn download(vpc: &Vpc, bytes: u64) -> Result<()> {
    let got = curl(
        vpc,
        "private",
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            &format!("http://{}/bytes/{bytes}", vpc::SERVER),
        ],
    )?;
    if got.trim() != bytes.to_string() {
        bail!("got {got} of {bytes} bytes");
    }
    Ok(())
}

/// That a server in the internet namespace saw at least `at_least` clients (each datagram or
/// connection counts), every one of them the NAT's public address.
fn only_from_nat(server: &str, seen: &[Ipv4Addr], at_least: usize) -> Result<()> {
    if seen.len() < at_least.max(1) {
        bail!(
            "the {server} server saw {} clients, want at least {}",
            seen.len(),
            at_least.max(1)
        );
    }
    if let Some(ip) = seen.iter().find(|ip| **ip != vpc::NAT_PUBLIC) {
        bail!(
            "the {server} server saw {ip} among {seen:?}, want only the NAT's public address {}",
            vpc::NAT_PUBLIC
        );
    }
    Ok(())
}

fn ready_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

fn assertions(vm: &mut Vm, vpc: &mut Vpc, report: &mut Report) -> bool {
    let ns_private = vpc.ns.name("private");
    let mut ready_at = 0usize;
    let ok = report.check(READY, || {
        let (i, line) = vm.wait_for_from(0, "nat-init: ready ", Duration::from_secs(240))?;
        ready_at = i;
        say(&format!(
            "{line} (wall {:.1} s from QEMU start)",
            vm.elapsed().as_secs_f64()
        ));
        let want = [
            ("iface", "ens5".to_string()),
            ("addr", format!("{}/24", vpc::NAT_ADDR)),
            ("gw", vpc::ROUTER.to_string()),
            ("mtu", "9001".to_string()),
        ];
        for (k, v) in want {
            if ready_field(&line, k) != Some(v.as_str()) {
                bail!(
                    "ready line has {k}={:?}, want {v}: {line}",
                    ready_field(&line, k)
                );
            }
        }
        let ms: u64 = ready_field(&line, "elapsed_ms")
            .and_then(|v| v.parse().ok())
            .context("no elapsed_ms")?;
        say(&format!(
            "boot to NAT ready: {ms} ms of guest time since kernel start"
        ));
        Ok(())
    });
    // Every later check needs the NAT up; the report says they were not run.
    let mut all = ok;
    all &= report.check_after(READY, PRIVATE_RANGES, || {
        let (_, line) = vm.wait_for_from(ready_at, "nat-init: ready ", Duration::from_secs(1))?;
        if ready_field(&line, "private") != Some(vpc::VPC_CIDR) {
            bail!(
                "want private={} (IMDS's vpc-ipv4-cidr-blocks): {line}",
                vpc::VPC_CIDR
            );
        }
        let asked = vpc.imds_state()?.requests.clone();
        if !asked.iter().any(|r| r.starts_with("PUT /latest/api/token")) {
            bail!("nat-init never asked IMDS for a token: {asked:?}");
        }
        Ok(())
    });
    all &= report.check_after(READY, USER_DATA, || {
        // health_interval = 5 from user-data: two health lines within 15 s (the baked
        // default is 60 s).
        let (i, _) = vm.wait_for_from(ready_at, "nat-init: health ", Duration::from_secs(15))?;
        vm.wait_for_from(i + 1, "nat-init: health ", Duration::from_secs(10))?;
        Ok(())
    });
    all &= report.check_after(READY, TRAFFIC, || {
        let before = vpc.seen()?.http_clients.len();
        download(vpc, 4194304).context("download of 4 MiB")?;
        let http = vpc.seen()?.http_clients[before..].to_vec();
        only_from_nat("HTTP", &http, 1)?;
        let before = vpc.seen()?.udp_clients.len();
        let echoed = vpc::udp_echo(&ns_private, 5)?;
        if echoed != 5 {
            bail!("{echoed} of 5 UDP datagrams echoed");
        }
        let udp = vpc.seen()?.udp_clients[before..].to_vec();
        only_from_nat("UDP", &udp, echoed)?;
        vpc.ns.exec(
            "private",
            "ping",
            &["-c", "3", "-W", "2", &vpc::SERVER.to_string()],
        )?;
        Ok(())
    });
    all &= report.check_after(READY, MTU, || {
        let file = vpc.dir().join("upload.bin");
        std::fs::write(&file, vec![0x5a; 4 << 20])?;
        let body = format!("@{}", file.display());
        let got = curl(vpc, "private", &["--data-binary", &body, &format!("http://{}/upload", vpc::SERVER)])?;
        if got.trim() != (4u64 << 20).to_string() {
            bail!("the server received {got} bytes of 4 MiB");
        }
        // The same upload from a public-subnet host through a plain Linux forwarder (no MSS
        // clamping) stalls: the black hole is real.
        vpc.ns.ip("internet", "route replace 10.0.0.0/24 via 192.0.2.1")?;
        let control = vpc.ns.exec(
            "pubhost2",
            "curl",
            &["-sS", "--max-time", "8", "--data-binary", &body, &format!("http://{}/upload", vpc::SERVER)],
        );
        if let Ok(out) = control {
            bail!("control: an unclamped 9001-MTU upload got through the black hole ({out}); the MTU test proves nothing");
        }
        Ok(())
    });
    all &= report.check_after(READY, NO_REDIRECTS, || {
        vpc.ns.exec("pubhost", "ping", &["-c", "5", "-i", "0.2", "-W", "2", &vpc::CLIENT.to_string()])?;
        let ours = vpc.redirects("pubhost")?;
        if ours != 0 {
            bail!("the NAT sent {ours} ICMP redirects");
        }
        let _ = vpc.ns.exec("pubhost2", "ping", &["-c", "5", "-i", "0.2", "-W", "2", &vpc::CLIENT.to_string()]);
        let control = vpc.redirects("pubhost2")?;
        if control == 0 {
            bail!("control: a forwarder with send_redirects=1 sent no redirects; the check proves nothing");
        }
        say(&format!("redirects: NAT 0, control forwarder {control}"));
        Ok(())
    });
    all &= report.check_after(READY, CLOSED, || {
        for (ns, addr) in [
            ("internet", vpc::NAT_PUBLIC),
            ("vpc", vpc::NAT_ADDR),
            ("pubhost", vpc::NAT_ADDR),
        ] {
            let open = vpc::open_ports(&vpc.ns.name(ns), addr, PORTS)?;
            if !open.is_empty() {
                bail!("from {ns}, ports {open:?} on {addr} accepted a connection");
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let hit = vpc::listen_flag(&ns_private, vpc::CLIENT, 9000, Arc::clone(&stop))?;
        let open = vpc::open_ports(&vpc.ns.name("internet"), vpc::CLIENT, &[9000])?;
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        if !open.is_empty() || hit.load(Ordering::Relaxed) {
            bail!("a new connection from the internet reached the private client");
        }
        Ok(())
    });
    all &= report.check_after(READY, FLOWTABLE, || {
        vm.wait_for_from(
            0,
            "nat-init: flowtable ft on ens5 active",
            Duration::from_secs(1),
        )?;
        // A download held open across health ticks: its flow must show up as offloaded.
        let mark = vm.line_count();
        let slow = duct::cmd(
            "ip",
            [
                "netns",
                "exec",
                &ns_private,
                "curl",
                "-sS",
                "--max-time",
                "40",
                "--limit-rate",
                "100k",
                "-o",
                "/dev/null",
                &format!("http://{}/bytes/2097152", vpc::SERVER),
            ],
        )
        .stdout_null()
        .stderr_null()
        .unchecked()
        .start()?;
        let seen = (|| -> Result<String> {
            let mut from = mark;
            loop {
                let (i, line) =
                    vm.wait_for_from(from, "nat-init: health ", Duration::from_secs(30))?;
                let n: u64 = ready_field(&line, "offloaded")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if n > 0 {
                    return Ok(line);
                }
                from = i + 1;
            }
        })();
        let _ = slow.kill();
        let line =
            seen.context("no health line showed an offloaded flow while a download was open")?;
        say(&format!("flowtable in use: {line}"));
        Ok(())
    });
    all &= report.check_after(READY, RENEWAL, || {
        vpc.restart_dnsmasq()?;
        let t = Instant::now();
        // UDP echoes every half second from before the renewal until after it.
        let stop = Arc::new(AtomicBool::new(false));
        let pinger = {
            let (stop, ns) = (Arc::clone(&stop), ns_private.clone());
            std::thread::spawn(move || {
                let (mut ok, mut sent) = (0, 0);
                while !stop.load(Ordering::Relaxed) {
                    sent += 1;
                    ok += vpc::udp_echo(&ns, 1).unwrap_or(0);
                    std::thread::sleep(Duration::from_millis(500));
                }
                (ok, sent)
            })
        };
        let renewed = vm.wait_for_from(
            ready_at,
            "nat-init: dhcp renewed",
            Duration::from_secs(u64::from(LEASE_SECS)),
        );
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::Relaxed);
        let (ok, sent) = pinger
            .join()
            .map_err(|_| anyhow::anyhow!("echo thread panicked"))?;
        let (i, line) = renewed?;
        say(&format!(
            "{line} ({:.0} s after the dnsmasq restart; {ok}/{sent} UDP echoes across it)",
            t.elapsed().as_secs_f64()
        ));
        if sent < 6 || ok * 10 < sent * 9 {
            bail!("only {ok} of {sent} UDP echoes came back across the renewal");
        }
        ready_at = ready_at.max(i);
        vpc.ns.exec(
            "private",
            "ping",
            &["-c", "3", "-W", "2", &vpc::SERVER.to_string()],
        )?;
        download(vpc, 1048576).context("download after renewal")?;
        if !vpc.dnsmasq_log().contains("DHCPACK") {
            bail!("dnsmasq logged no DHCPACK after its restart");
        }
        Ok(())
    });
    all &= report.check_after(READY, SUPERVISION, || {
        vpc.set_user_data(Some(INVALID_USER_DATA.to_string()));
        let mark = vm.line_count();
        vm.send("init-test kill nat-init\n")?;
        vm.wait_for_from(
            mark,
            "init: nat-init killed by signal SIGKILL",
            Duration::from_secs(20),
        )?;
        // The ruleset outlives the process: traffic flows while nat-init is down or restarting.
        let echoed = vpc::udp_echo(&ns_private, 3)?;
        if echoed == 0 {
            bail!("no UDP echo right after nat-init was killed: the NAT depends on the process");
        }
        let (e, err) = vm.wait_for_from(mark, "nat-init: error config", Duration::from_secs(60))?;
        if !(err.contains("private_ranges") && err.contains("line 2")) {
            bail!("the config error does not name the key and line: {err}");
        }
        let (_, line) = vm.wait_for_from(e, "nat-init: ready ", Duration::from_secs(60))?;
        if ready_field(&line, "private") != Some(vpc::VPC_CIDR) {
            bail!(
                "after invalid user-data, want the defaults' private={}: {line}",
                vpc::VPC_CIDR
            );
        }
        download(vpc, 65536).context("download after the restart")?;
        Ok(())
    });
    all &= report.check_after(READY, POWERDOWN, || {
        let t = Instant::now();
        vm.qmp("system_powerdown")?;
        vm.wait_for("init: powering off", Duration::from_secs(15))?;
        let st = vm.wait_exit(Duration::from_secs(15).saturating_sub(t.elapsed()))?;
        if !st.success() {
            bail!("QEMU exited with {st}");
        }
        Ok(())
    });
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_must_be_seen_and_only_from_the_nat() {
        let nat = vpc::NAT_PUBLIC;
        only_from_nat("UDP", &[nat; 5], 5).unwrap();
        only_from_nat("HTTP", &[nat], 1).unwrap();
        let e = format!("{:#}", only_from_nat("UDP", &[], 0).unwrap_err());
        assert!(e.contains("saw 0 clients, want at least 1"), "{e}");
        assert!(only_from_nat("UDP", &[nat; 4], 5).is_err());
        let e = format!(
            "{:#}",
            only_from_nat("UDP", &[nat, vpc::CLIENT], 1).unwrap_err()
        );
        assert!(e.contains("saw 10.0.1.10 among"), "{e}");
    }
}
