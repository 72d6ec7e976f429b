//! The failover pair's VPC, proved without guests: a second VPC seeded with the pair
//! ([`Vpc::start_aws_pair`]), whose two NATs are stand-in namespaces on their taps (the
//! members' MACs and primaries, forwarding and masquerading as the appliance does). The
//! checks drive the EC2 API and the faults and watch the namespaces: the instances found by
//! tag, IMDS per instance, each private table following its own NAT, a secondary address and
//! its Elastic IP moved to the other NAT (and how long the router takes), the hairpin through
//! the gateway, the partition, one instance cut off the internet, and the meters measuring an
//! outage caused on purpose. Also `Vm::kill` on a QEMU that boots nothing.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::netns::{run_in, spawn_in};
use crate::report::{Report, say};
use crate::vpc::meters::{Download, EchoGaps, Ended};
use crate::vpc::{self, Vpc, aws};

pub const SEED: &str = "vpc-pair-describe-instances-by-tag-returns-both-with-public-addresses";
pub const IMDS: &str = "vpc-pair-imds-answers-each-instance-as-itself";
pub const ROUTES: &str = "vpc-pair-each-private-table-follows-its-own-nat-and-a-moved-route-fast";
pub const MOVE: &str = "vpc-pair-moved-secondary-address-repoints-the-router-and-its-eip-follows";
pub const HAIRPIN: &str = "vpc-pair-hairpin-to-the-other-public-address-through-the-gateway";
pub const PARTITION: &str = "vpc-pair-partition-blocks-the-direct-path-not-the-hairpin";
pub const CUT: &str = "vpc-pair-cut-internet-drops-one-instance-only";
pub const ECHO: &str = "vpc-meters-echo-gaps-measure-a-one-second-outage";
pub const DOWNLOAD: &str = "vpc-meters-download-complete-reset-and-stalled";
pub const KILL: &str = "vpc-qemu-kill-stops-a-guest-at-once";

/// The bound on the delay from a mutating API call's answer to the namespaces changed.
const FAST: Duration = Duration::from_millis(200);
/// The secondary address the checks move between the NATs (in moto's free pool).
const FLOATING: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 40);

pub fn run(root: &Path, moto: &Path, report: &mut Report) -> Result<()> {
    let mut vpc = Vpc::build(120, None).context("building the pair's VPC")?;
    let t = Instant::now();
    vpc.start_aws_pair(root, moto)
        .context("starting the pair's control plane")?;
    say(&format!(
        "vpc pair: AWS double seeded and followed in {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    for name in ["nat-a", "nat-b"] {
        vpc.stand_in(name)?;
    }
    let failed_before = report.counts().1;
    report.check(SEED, || seed(&vpc));
    report.check(IMDS, || imds(&vpc));
    report.check(ROUTES, || routes(&vpc));
    report.check(MOVE, || move_address(&vpc));
    report.check(HAIRPIN, || hairpin(&vpc));
    report.check(PARTITION, || partition(&vpc));
    report.check(CUT, || cut(&vpc));
    report.check_after(ROUTES, ECHO, || echo(&vpc));
    report.check_after(ROUTES, DOWNLOAD, || download(&vpc));
    report.check(KILL, || kill(&vpc));
    if report.counts().1 > failed_before
        && let Ok(a) = vpc.aws()
    {
        let log = a.log();
        let lines: Vec<&str> = log.lines().collect();
        eprintln!(
            "--- AWS double log (tail) ---\n{}",
            lines[lines.len().saturating_sub(40)..].join("\n")
        );
        eprintln!("{}", vpc.dump());
    }
    Ok(())
}

fn seed(vpc: &Vpc) -> Result<()> {
    let a = vpc.aws()?;
    let seed = a.seed();
    let out = a.call(
        "ec2",
        "describe_instances",
        json!({"Filters": [
            {"Name": format!("tag:{}", aws::FAILOVER_TAG), "Values": [aws::FAILOVER_GROUP]},
            {"Name": "instance-state-name", "Values": ["running"]},
        ]}),
    )?;
    let mut found: Vec<(String, String, String, String)> = out["Reservations"]
        .as_array()
        .context("no Reservations")?
        .iter()
        .flat_map(|r| r["Instances"].as_array().cloned().unwrap_or_default())
        .map(|i| {
            let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (
                s(&i["InstanceId"]),
                s(&i["PrivateIpAddress"]),
                s(&i["PublicIpAddress"]),
                s(&i["NetworkInterfaces"][0]["NetworkInterfaceId"]),
            )
        })
        .collect();
    found.sort();
    let mut want = Vec::new();
    for (name, _, _, addr, public) in vpc::PAIR {
        let i = seed.instance(name)?;
        want.push((
            i.instance_id.clone(),
            addr.to_string(),
            public.to_string(),
            i.eni_id.clone(),
        ));
    }
    want.sort();
    ensure!(found == want, "by tag: {found:?}, want {want:?}");
    // Each private table has no default route and its own subnet.
    let rts = a.call("ec2", "describe_route_tables", json!({}))?;
    for (name, subnet) in [("a", 0), ("b", 1)] {
        let id = seed.route_table(name)?;
        let t = rts["RouteTables"]
            .as_array()
            .and_then(|v| v.iter().find(|t| t["RouteTableId"] == id))
            .with_context(|| format!("no route table {id}"))?;
        ensure!(
            !t["Routes"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r["DestinationCidrBlock"] == "0.0.0.0/0")),
            "table {name} has a default route: {t}"
        );
        let assoc = t["Associations"].to_string();
        ensure!(
            assoc.contains(&seed.private_subnet_ids[subnet]),
            "table {name}: {assoc}"
        );
    }
    ensure!(seed.allocation_of("nat-a")? != seed.allocation_of("nat-b")?);
    ensure!(
        seed.pair_user_data("nat-b")?
            .contains(seed.route_table("b")?)
    );
    Ok(())
}

/// PUT token, then GET `path` from IMDS, from namespace `ns` (full name).
fn imds_get(ns: &str, path: &'static str) -> Result<String> {
    run_in(ns, move || -> Result<String> {
        use std::io::{Read, Write};
        let req = |method: &str, path: &str, hdr: &str| -> Result<String> {
            let mut s = TcpStream::connect_timeout(
                &SocketAddr::from((vpc::IMDS, 80)),
                Duration::from_secs(2),
            )?;
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            write!(s, "{method} {path} HTTP/1.1\r\nHost: imds\r\n{hdr}\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            let (head, body) = out.split_once("\r\n\r\n").context("no HTTP header end")?;
            ensure!(head.contains(" 200 "), "{method} {path}: {head}");
            Ok(body.to_string())
        };
        let token = req(
            "PUT",
            "/latest/api/token",
            "X-aws-ec2-metadata-token-ttl-seconds: 60\r\n",
        )?;
        req(
            "GET",
            path,
            &format!("X-aws-ec2-metadata-token: {token}\r\n"),
        )
    })?
}

fn imds(vpc: &Vpc) -> Result<()> {
    let seed = vpc.aws()?.seed().clone();
    vpc.set_instance_user_data("nat-b", Some(seed.pair_user_data("nat-b")?))?;
    for (name, _, mac, addr, _) in vpc::PAIR {
        let ns = vpc.ns.name(name);
        let inst = seed.instance(name)?;
        let id = imds_get(&ns, "/latest/meta-data/instance-id")?;
        ensure!(id == inst.instance_id, "{name} is told it is {id}");
        ensure!(imds_get(&ns, "/latest/meta-data/mac")? == mac);
        let iface = imds_get(
            &ns,
            match name {
                "nat-a" => {
                    "/latest/meta-data/network/interfaces/macs/52:54:00:0a:00:0a/interface-id"
                }
                _ => "/latest/meta-data/network/interfaces/macs/52:54:00:0a:00:0c/interface-id",
            },
        )?;
        ensure!(iface == inst.eni_id, "{name}'s interface-id {iface}");
        let ips = imds_get(
            &ns,
            match name {
                "nat-a" => {
                    "/latest/meta-data/network/interfaces/macs/52:54:00:0a:00:0a/local-ipv4s"
                }
                _ => "/latest/meta-data/network/interfaces/macs/52:54:00:0a:00:0c/local-ipv4s",
            },
        )?;
        ensure!(ips == addr.to_string(), "{name}'s local-ipv4s {ips:?}");
        ensure!(imds_get(&ns, "/latest/meta-data/iam/security-credentials/")? == aws::ROLE);
        ensure!(imds_get(&ns, "/latest/meta-data/placement/region")? == aws::REGION);
    }
    let b = imds_get(&vpc.ns.name("nat-b"), "/latest/user-data")?;
    ensure!(
        b.contains("nat-b of the failover pair"),
        "nat-b's user-data {b:?}"
    );
    let a = imds_get_status(vpc, "nat-a", "/latest/user-data")?;
    ensure!(a.contains(" 404 "), "nat-a has user-data: {a}");
    Ok(())
}

/// The status line of GET `path` (with a token) from `name`'s namespace.
fn imds_get_status(vpc: &Vpc, name: &str, path: &'static str) -> Result<String> {
    match imds_get(&vpc.ns.name(name), path) {
        Ok(_) => Ok("HTTP/1.1 200 OK".into()),
        Err(e) => Ok(format!("{e:#}")),
    }
}

/// Polls `probe` every 2 ms until it holds; returns how long that took (None: not within
/// `limit`).
fn until(limit: Duration, mut probe: impl FnMut() -> bool) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if probe() {
            return Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

fn median_max(v: &mut [Duration]) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[v.len() - 1])
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

fn set_check(vpc: &Vpc, eni: &str, on: bool) -> Result<()> {
    vpc.aws()?.call(
        "ec2",
        "modify_network_interface_attribute",
        json!({"NetworkInterfaceId": eni, "SourceDestCheck": {"Value": on}}),
    )?;
    Ok(())
}

fn route(vpc: &Vpc, table: &str, eni: &str, create: bool) -> Result<()> {
    vpc.aws()?.call(
        "ec2",
        if create {
            "create_route"
        } else {
            "replace_route"
        },
        json!({"RouteTableId": table, "DestinationCidrBlock": "0.0.0.0/0",
               "NetworkInterfaceId": eni}),
    )?;
    Ok(())
}

/// The internet source of an HTTP GET from namespace `ns` (short name), or None when it did
/// not get through.
fn source_of(vpc: &Vpc, ns: &str) -> Result<Option<Ipv4Addr>> {
    let before = vpc.seen()?.http_clients.len();
    let url = format!("http://{}/", vpc::SERVER);
    if vpc.ns.exec(ns, "curl", &["-sS", "-m", "2", &url]).is_err() {
        return Ok(None);
    }
    let seen = vpc.seen()?;
    ensure!(seen.http_clients.len() == before + 1, "no new HTTP client");
    Ok(seen.http_clients.last().copied())
}

fn routes(vpc: &Vpc) -> Result<()> {
    let a = vpc.aws()?;
    let seed = a.seed().clone();
    let (eni_a, eni_b) = (
        seed.instance("nat-a")?.eni_id.clone(),
        seed.instance("nat-b")?.eni_id.clone(),
    );
    let (ta, tb) = (seed.route_table("a")?, seed.route_table("b")?);
    ensure!(source_of(vpc, "private")?.is_none(), "online with no route");
    set_check(vpc, &eni_a, false)?;
    set_check(vpc, &eni_b, false)?;
    route(vpc, ta, &eni_a, true)?;
    route(vpc, tb, &eni_b, true)?;
    a.wait_for("both private tables routed", Duration::from_secs(5), |p| {
        p.route_target(ta) == Some("10.0.0.10")
            && p.route_target(tb) == Some("10.0.0.12")
            && p.check_of(&eni_a) == Some(false)
            && p.check_of(&eni_b) == Some(false)
    })?;
    let got = (source_of(vpc, "private")?, source_of(vpc, "private2")?);
    ensure!(
        got == (Some(vpc::NAT_PUBLIC), Some(vpc::NATB_PUBLIC)),
        "private, private2 reached the internet as {got:?}"
    );
    // Table a moved to nat-b and back, a few times: how long until the router follows.
    let mut delays = Vec::new();
    for i in 0..6 {
        let (eni, via) = if i % 2 == 0 {
            (&eni_b, vpc::NATB_ADDR)
        } else {
            (&eni_a, vpc::NAT_ADDR)
        };
        route(vpc, ta, eni, false)?;
        let want = format!("default via {via} ");
        let d = until(Duration::from_secs(3), || {
            vpc.ns
                .ip("vpc", "route show table 100")
                .is_ok_and(|t| t.contains(&want))
        })
        .with_context(|| format!("table 100 never went {want}"))?;
        delays.push(d);
        if i == 0 {
            let src = source_of(vpc, "private")?;
            ensure!(
                src == Some(vpc::NATB_PUBLIC),
                "after the move private went out as {src:?}"
            );
        }
    }
    let (med, max) = median_max(&mut delays);
    say(&format!(
        "vpc pair: ReplaceRoute answered -> kernel route changed: median {} ms, max {} ms over {}",
        ms(med),
        ms(max),
        delays.len()
    ));
    ensure!(max <= FAST, "a route move took {} ms", ms(max));
    ensure!(source_of(vpc, "private")? == Some(vpc::NAT_PUBLIC));
    Ok(())
}

/// The router's neighbour entry for `ip` (its lladdr), if any.
fn neighbour(vpc: &Vpc, ip: Ipv4Addr) -> Option<String> {
    let out = vpc.ns.ip("vpc", &format!("neigh show {ip} dev br0")).ok()?;
    let mut w = out.split_whitespace();
    w.find(|x| *x == "lladdr")?;
    w.next().map(str::to_string)
}

/// A TCP connection from namespace `from` (short name) to `to`:`port`, accepted in namespace
/// `at` (short name): the source the listener saw, or None when it did not get through.
fn reach(vpc: &Vpc, from: &str, to: Ipv4Addr, at: &str, port: u16) -> Result<Option<Ipv4Addr>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let listener = spawn_in(&vpc.ns.name(at), move || -> Result<Option<Ipv4Addr>> {
        let l = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))?;
        l.set_nonblocking(true)?;
        let _ = tx.send(());
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(2500) {
            if let Ok((_, SocketAddr::V4(peer))) = l.accept() {
                return Ok(Some(*peer.ip()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(None)
    })?;
    rx.recv_timeout(Duration::from_secs(2))
        .context("the listener did not start")?;
    let connected = run_in(&vpc.ns.name(from), move || {
        TcpStream::connect_timeout(&SocketAddr::from((to, port)), Duration::from_millis(1500))
            .is_ok()
    })?;
    let seen = listener
        .join()
        .map_err(|_| anyhow::anyhow!("the listener panicked"))??;
    match (connected, seen) {
        (true, Some(s)) => Ok(Some(s)),
        (false, None) => Ok(None),
        (c, s) => bail!("connected {c} but the listener saw {s:?}"),
    }
}

fn move_address(vpc: &Vpc) -> Result<()> {
    let a = vpc.aws()?;
    let seed = a.seed().clone();
    let eni_of = |n: &str| -> Result<String> { Ok(seed.instance(n)?.eni_id.clone()) };
    let (eni_a, eni_b) = (eni_of("nat-a")?, eni_of("nat-b")?);
    let assign = |eni: &str, allow: bool| {
        a.call(
            "ec2",
            "assign_private_ip_addresses",
            json!({"NetworkInterfaceId": eni, "PrivateIpAddresses": [FLOATING.to_string()],
                   "AllowReassignment": allow}),
        )
    };
    assign(&eni_a, false)?;
    a.call(
        "ec2",
        "associate_address",
        json!({"AllocationId": seed.allocation_of("nat-a")?, "NetworkInterfaceId": eni_a,
               "PrivateIpAddress": FLOATING.to_string()}),
    )?;
    a.wait_for(
        "the floating address on nat-a with nat-a's EIP",
        FAST * 10,
        |p| p.public_of(FLOATING) == Some(aws::ELASTIC_IPS[0]),
    )?;
    ensure!(neighbour(vpc, FLOATING).as_deref() == Some(vpc::NAT_MAC));
    // Without AllowReassignment, EC2 refuses to take an address in use.
    let e = assign(&eni_b, false)
        .err()
        .context("an address in use was taken")?;
    ensure!(format!("{e:#}").contains("PrivateIpAddressInUse"), "{e:#}");
    vpc.ns
        .ip("nat-a", &format!("addr add {FLOATING}/24 dev eth0"))?;
    let got = reach(vpc, "internet", aws::ELASTIC_IPS[0], "nat-a", 7001)?;
    ensure!(got.is_some(), "the EIP did not reach nat-a");
    // Moved back and forth: the router re-points, the EIP follows the address.
    let mut delays = Vec::new();
    for i in 0..6 {
        let (to, from, mac) = if i % 2 == 0 {
            ("nat-b", "nat-a", vpc::NATB_MAC)
        } else {
            ("nat-a", "nat-b", vpc::NAT_MAC)
        };
        assign(&eni_of(to)?, true)?;
        let d = until(Duration::from_secs(3), || {
            neighbour(vpc, FLOATING).as_deref() == Some(mac)
        })
        .with_context(|| format!("the router never pointed {FLOATING} at {to}"))?;
        delays.push(d);
        let plane = a.sync()?;
        ensure!(
            plane.public_of(FLOATING) == Some(aws::ELASTIC_IPS[0]),
            "the EIP did not follow {FLOATING} to {to}: {:?}",
            plane.mappings
        );
        ensure!(
            !plane.enis[&eni_of(from)?].private_ips.contains(&FLOATING),
            "{from} still has {FLOATING}"
        );
        if i == 0 {
            vpc.ns
                .ip("nat-a", &format!("addr del {FLOATING}/24 dev eth0"))?;
            vpc.ns
                .ip("nat-b", &format!("addr add {FLOATING}/24 dev eth0"))?;
            let got = reach(vpc, "internet", aws::ELASTIC_IPS[0], "nat-b", 7002)?;
            ensure!(got.is_some(), "the EIP did not reach nat-b after the move");
            let addrs = a.call(
                "ec2",
                "describe_addresses",
                json!({"AllocationIds": [seed.allocation_of("nat-a")?]}),
            )?;
            let eip = &addrs["Addresses"][0];
            ensure!(
                eip["NetworkInterfaceId"] == eni_b.as_str()
                    && eip["PrivateIpAddress"] == FLOATING.to_string().as_str(),
                "DescribeAddresses after the move: {eip}"
            );
            // nat-a's public address is still its own primary's.
            let inst = a.call(
                "ec2",
                "describe_instances",
                json!({"InstanceIds": [seed.instance("nat-a")?.instance_id]}),
            )?;
            let public = &inst["Reservations"][0]["Instances"][0]["PublicIpAddress"];
            ensure!(
                public == vpc::NAT_PUBLIC.to_string().as_str(),
                "nat-a's public {public}"
            );
        }
    }
    let (med, max) = median_max(&mut delays);
    say(&format!(
        "vpc pair: AssignPrivateIpAddresses answered -> router neighbour re-pointed: median {} ms, max {} ms over {}",
        ms(med),
        ms(max),
        delays.len()
    ));
    ensure!(max <= FAST, "an address move took {} ms", ms(max));
    vpc.ns
        .ip("nat-b", &format!("addr del {FLOATING}/24 dev eth0"))?;
    Ok(())
}

fn hairpin(vpc: &Vpc) -> Result<()> {
    let got = reach(vpc, "nat-a", vpc::NATB_PUBLIC, "nat-b", 7010)?;
    ensure!(
        got == Some(vpc::NAT_PUBLIC),
        "nat-b saw nat-a's hairpin from {got:?}"
    );
    let got = reach(vpc, "nat-b", vpc::NAT_PUBLIC, "nat-a", 7011)?;
    ensure!(
        got == Some(vpc::NATB_PUBLIC),
        "nat-a saw nat-b's hairpin from {got:?}"
    );
    // It really went through the internet namespace.
    let fwd = vpc
        .ns
        .exec("internet", "cat", &["/proc/sys/net/ipv4/ip_forward"])?;
    ensure!(fwd.trim() == "1");
    Ok(())
}

fn partition(vpc: &Vpc) -> Result<()> {
    ensure!(reach(vpc, "nat-a", vpc::NATB_ADDR, "nat-b", 7020)?.is_some());
    vpc.partition_nats(true)?;
    let r = (|| -> Result<()> {
        ensure!(
            reach(vpc, "nat-a", vpc::NATB_ADDR, "nat-b", 7021)?.is_none(),
            "nat-a reached nat-b directly across the partition"
        );
        ensure!(
            reach(vpc, "nat-b", vpc::NAT_ADDR, "nat-a", 7022)?.is_none(),
            "nat-b reached nat-a directly across the partition"
        );
        ensure!(
            reach(vpc, "nat-a", vpc::NATB_PUBLIC, "nat-b", 7023)? == Some(vpc::NAT_PUBLIC),
            "the hairpin is blocked by the partition"
        );
        for n in ["nat-a", "nat-b"] {
            ensure!(source_of(vpc, n)?.is_some(), "{n} lost the internet");
            imds_get(&vpc.ns.name(n), "/latest/meta-data/instance-id")?;
        }
        let (dropped, _) = vpc.fault_drops()?;
        ensure!(dropped > 0, "the partition dropped nothing");
        Ok(())
    })();
    vpc.partition_nats(false)?;
    r?;
    ensure!(reach(vpc, "nat-a", vpc::NATB_ADDR, "nat-b", 7024)?.is_some());
    Ok(())
}

fn cut(vpc: &Vpc) -> Result<()> {
    vpc.cut_internet("nat-a", true)?;
    let r = (|| -> Result<()> {
        ensure!(
            source_of(vpc, "nat-a")?.is_none(),
            "nat-a reached the internet"
        );
        ensure!(
            source_of(vpc, "private")?.is_none(),
            "the private client reached the internet through cut nat-a"
        );
        ensure!(
            source_of(vpc, "nat-b")? == Some(vpc::NATB_PUBLIC),
            "nat-b lost the internet"
        );
        ensure!(
            reach(vpc, "nat-b", vpc::NAT_PUBLIC, "nat-a", 7030)?.is_none(),
            "nat-a's public address answered from the internet"
        );
        ensure!(
            reach(vpc, "nat-a", vpc::NATB_PUBLIC, "nat-b", 7031)?.is_none(),
            "nat-a got out to nat-b's public address"
        );
        ensure!(reach(vpc, "nat-a", vpc::NATB_ADDR, "nat-b", 7032)?.is_some());
        ensure!(reach(vpc, "private", vpc::NAT_ADDR, "nat-a", 7033)?.is_some());
        imds_get(&vpc.ns.name("nat-a"), "/latest/meta-data/instance-id")?;
        let (_, dropped) = vpc.fault_drops()?;
        ensure!(dropped > 0, "the cut dropped nothing");
        Ok(())
    })();
    vpc.cut_internet("nat-a", false)?;
    r?;
    ensure!(source_of(vpc, "nat-a")? == Some(vpc::NAT_PUBLIC));
    ensure!(source_of(vpc, "private")? == Some(vpc::NAT_PUBLIC));
    Ok(())
}

/// Drops everything namespace `ns` sends to the internet server for about `d`; returns the
/// least and the most the outage can have lasted (the `nft` runs take time of their own).
fn outage(vpc: &Vpc, ns: &str, d: Duration) -> Result<(Duration, Duration)> {
    let t0 = Instant::now();
    vpc.ns.nft(
        ns,
        &format!(
            "table ip outage {{ chain out {{ type filter hook output priority 0; ip daddr {} drop; }}; }}",
            vpc::SERVER
        ),
    )?;
    let t1 = Instant::now();
    std::thread::sleep(d);
    let t2 = Instant::now();
    vpc.ns.nft(ns, "delete table ip outage")?;
    Ok((t2 - t1, t0.elapsed()))
}

fn echo(vpc: &Vpc) -> Result<()> {
    let meter = EchoGaps::start(&vpc.ns.name("private"), Duration::from_millis(100))?;
    std::thread::sleep(Duration::from_secs(1));
    let (least, most) = outage(vpc, "private", Duration::from_secs(1))?;
    std::thread::sleep(Duration::from_secs(1));
    let r = meter.finish()?;
    say(&format!(
        "vpc meters: echo sent {} answered {} lost {:?} longest gap {} ms for an outage of {}-{} ms",
        r.sent,
        r.answered,
        r.lost,
        r.longest_gap_ms,
        ms(least),
        ms(most)
    ));
    // The gap spans the outage, plus up to an interval on each side (and a round trip).
    let (least, most) = (ms(least) as u64, ms(most) as u64);
    ensure!(
        (least..=most + 250).contains(&r.longest_gap_ms),
        "longest gap {} ms for an outage of {least}-{most} ms",
        r.longest_gap_ms
    );
    let lost = r.lost.len() as u64;
    ensure!(
        (least / 100).saturating_sub(1) <= lost && lost <= most / 100 + 1,
        "{lost} lost at 10/s for an outage of {least}-{most} ms: {:?}",
        r.lost
    );
    // The lost ones are consecutive.
    ensure!(r.lost.windows(2).all(|w| w[1] == w[0] + 1), "{:?}", r.lost);
    ensure!(r.answered + r.lost.len() as u64 == r.sent);
    Ok(())
}

fn download(vpc: &Vpc) -> Result<()> {
    let ns = vpc.ns.name("private");
    let stall = Duration::from_secs(2);
    let r = Download::start(&ns, 300_000, 400_000, stall)?.finish()?;
    ensure!(
        r.ended == Ended::Complete && r.received == 300_000,
        "a clean download: {r:?}"
    );
    ensure!(
        (600..=2000).contains(&r.elapsed_ms),
        "300 kB at 400 kB/s took {} ms (pacing)",
        r.elapsed_ms
    );
    // A reset on the path: the router answers the client's next segment with a RST.
    let d = Download::start(&ns, 2_000_000, 400_000, stall)?;
    std::thread::sleep(Duration::from_millis(1000));
    ensure!(d.received() > 100_000, "{} bytes in 1 s", d.received());
    vpc.ns.nft(
        "vpc",
        &format!(
            "table ip breaker {{ chain forward {{ type filter hook forward priority -20; iifname \"v-priv\" ip daddr {} tcp dport {} reject with tcp reset; }}; }}",
            vpc::SERVER,
            vpc::HTTP_PORT
        ),
    )?;
    let r = d.finish();
    vpc.ns.nft("vpc", "delete table ip breaker")?;
    let r = r?;
    say(&format!("vpc meters: reset download {r:?}"));
    ensure!(
        r.ended == Ended::Reset && (100_000..2_000_000).contains(&r.received),
        "a reset download: {r:?}"
    );
    // A path that drops everything: stalled after the timeout.
    let d = Download::start(&ns, 2_000_000, 400_000, stall)?;
    std::thread::sleep(Duration::from_millis(500));
    vpc.ns.nft(
        "vpc",
        &format!(
            "table ip breaker {{ chain forward {{ type filter hook forward priority -20; ip saddr {} drop; }}; }}",
            vpc::SERVER
        ),
    )?;
    let r = d.finish();
    vpc.ns.nft("vpc", "delete table ip breaker")?;
    let r = r?;
    ensure!(
        r.ended == Ended::Stalled && r.received < 2_000_000,
        "a black-holed download: {r:?}"
    );
    Ok(())
}

/// The pair booted on its taps (given back by the stand-ins) from a disk with nothing to boot:
/// QEMU sits in the firmware with its tap's carrier up; `kill` ends each at once, and a new
/// QEMU takes nat-a's tap over as a replacement instance would take its static ENI.
fn kill(vpc: &Vpc) -> Result<()> {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir()?;
    let disk = dir.path().join("empty.raw");
    std::fs::write(&disk, vec![0u8; 1 << 20])?;
    for (_, tap, _, _, _) in vpc::PAIR {
        vpc.recreate_tap(tap)?;
    }
    let carrier = |tap: &str| {
        vpc.ns
            .ip("vpc", &format!("link show {tap}"))
            .is_ok_and(|l| l.contains("LOWER_UP"))
    };
    ensure!(
        !carrier(vpc::TAP),
        "{} has a carrier with no QEMU",
        vpc::TAP
    );
    let (mut a, mut b) = vpc.boot_pair(&disk, |_, _| {})?;
    let up = until(Duration::from_secs(10), || {
        carrier(vpc::TAP) && carrier(vpc::TAPB)
    });
    ensure!(up.is_some(), "the pair's taps never came up");
    for (name, vm) in [("nat-a", &mut a), ("nat-b", &mut b)] {
        let t = Instant::now();
        let st = vm.kill()?;
        let took = t.elapsed();
        ensure!(st.signal() == Some(9), "{name}'s QEMU ended with {st}");
        ensure!(
            took < Duration::from_secs(1),
            "killing {name} took {took:?}"
        );
    }
    ensure!(
        until(Duration::from_secs(2), || !carrier(vpc::TAP)).is_some(),
        "{} kept its carrier after the kill",
        vpc::TAP
    );
    let mut again = crate::qemu::Vm::start(&vpc.pair_vm_config(&disk, "nat-a")?)?;
    let up = until(Duration::from_secs(10), || carrier(vpc::TAP));
    again.kill()?;
    ensure!(up.is_some(), "a new QEMU did not take {} over", vpc::TAP);
    Ok(())
}
