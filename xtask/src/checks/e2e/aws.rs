//! The appliance's own AWS part, end to end: the VPC's control plane is a local AWS double
//! (moto over HTTPS with the test CA, see `vpc::aws`) whose EC2 state the namespaces follow, and
//! the guest starts from what a user has right after `run-instances`: the source/dest check on,
//! no `0.0.0.0/0` in the private route table, no Elastic IP, and a clock a day behind (its RTC
//! off, so TLS to the endpoint fails until the clock is stepped from NTP). The user-data names
//! the route table and two Elastic IPs; no other command is run. One boot, in order:
//! the role first lacks the route permissions (the denial is named and the NAT still works on
//! its own ENI), the policy is then fixed (as IAM propagation would) and the private subnet
//! comes online with the Elastic IPs as its public sources, both of them across many flows; a
//! route moved behind the appliance's back is reported; credentials rotated in IMDS are taken
//! up before the old ones expire.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::{BOOT, curl, diagnose, graviton_like, ready_field, tap};
use crate::netns::run_in;
use crate::qemu::{Nic, Vm};
use crate::report::{Report, say};
use crate::vpc::{self, Vpc, aws};
use crate::{hostdeps, target_dir};

pub const DENIED: &str = "e2e-aws-denied-route-permission-named-nat-works-on-its-own-eni";
pub const CLOCK: &str = "e2e-aws-clock-a-day-behind-stepped-from-ntp";
pub const ONLINE: &str = "e2e-aws-just-launched-to-private-online-through-the-eip";
pub const TWO_EIPS: &str = "e2e-aws-two-eips-two-public-sources-across-flows";
pub const MOVED: &str = "e2e-aws-route-moved-behind-its-back-reported";
pub const CREDS: &str = "e2e-aws-rotated-credentials-taken-up-before-expiry";
pub const METRICS: &str = "e2e-aws-metrics-in-cloudwatch-match-known-traffic";
pub const METRICS_ERRORS: &str = "e2e-aws-metrics-port-allocation-errors-and-drops-counted";

/// The metrics keys the user-data adds: a 10 s period so a check sees several within
/// minutes, a NAT name, and a source-port range small enough for a burst of flows to one
/// destination to exhaust it (64 ports on each of the two Elastic IPs).
const METRICS_USER_DATA: &str = "metrics = true\nmetrics_period = 10\nnat_name = \"e2e-nat\"\nnat_port_range = \"40000-40063\"\n";
const METRICS_NAMESPACE: &str = "NatInstance";
const METRICS_PERIOD_S: u64 = 10;
/// The burst of UDP flows to one destination: more than the two addresses' 128 ports.
const BURST: usize = 200;
/// Unsolicited datagrams from the internet to the NAT's Elastic IP, which it drops.
const UNSOLICITED: usize = 25;

/// The guest's clock at boot: a day behind.
const RTC_OFFSET_S: i64 = -86_400;
/// The first credentials' lifetime: short, so their refresh (4 minutes before expiry) is due
/// within the test.
const FIRST_CREDS: Duration = Duration::from_secs(300);
/// How long after a boot the console may take for the AWS side's lines under TCG.
const AWS_WAIT: Duration = Duration::from_secs(120);

/// Every action the user-data's items need, on `*` (moto checks actions only).
const ALL_ACTIONS: &[&str] = &[
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeRouteTables",
    "ec2:DescribeAddresses",
    "ec2:ModifyNetworkInterfaceAttribute",
    "ec2:AssignPrivateIpAddresses",
    "ec2:AssociateAddress",
    "ec2:CreateRoute",
    "ec2:ReplaceRoute",
    "ec2:DescribeInstances",
    "cloudwatch:PutMetricData",
];

fn policy(without: &[&str]) -> Value {
    let actions: Vec<&str> = ALL_ACTIONS
        .iter()
        .copied()
        .filter(|a| !without.contains(a))
        .collect();
    json!({
        "Version": "2012-10-17",
        "Statement": [{ "Effect": "Allow", "Action": actions, "Resource": "*" }]
    })
}

/// `n` UDP flows (each its own socket, so its own source port) from namespace `ns` to the
/// internet's echo service; returns how many were echoed.
fn udp_flows(ns: &str, n: usize) -> Result<usize> {
    run_in(ns, move || -> Result<usize> {
        let dst = SocketAddr::from((vpc::SERVER, vpc::UDP_PORT));
        let mut ok = 0;
        let mut buf = [0u8; 64];
        for i in 0..n {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            s.set_read_timeout(Some(Duration::from_millis(1500)))?;
            let msg = format!("flow-{i}");
            s.send_to(msg.as_bytes(), dst)?;
            if let Ok((len, _)) = s.recv_from(&mut buf)
                && &buf[..len] == msg.as_bytes()
            {
                ok += 1;
            }
        }
        Ok(ok)
    })?
}

/// `n` UDP flows to the echo service sent at once (each its own socket), then their echoes
/// collected for `wait`; returns how many came back.
fn udp_burst(ns: &str, n: usize, wait: Duration) -> Result<usize> {
    run_in(ns, move || -> Result<usize> {
        let dst = SocketAddr::from((vpc::SERVER, vpc::UDP_PORT));
        let mut socks = Vec::with_capacity(n);
        for i in 0..n {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            s.set_nonblocking(true)?;
            s.send_to(format!("burst-{i}").as_bytes(), dst)?;
            socks.push(Some(s));
        }
        let end = Instant::now() + wait;
        let mut ok = 0;
        let mut buf = [0u8; 64];
        while Instant::now() < end && ok < n {
            for (i, slot) in socks.iter_mut().enumerate() {
                let Some(s) = slot else { continue };
                if let Ok((len, _)) = s.recv_from(&mut buf)
                    && buf[..len] == *format!("burst-{i}").as_bytes()
                {
                    ok += 1;
                    *slot = None;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(ok)
    })?
}

/// The sum of `metric`'s values between `start` and `end` (Unix seconds) with the NAT's
/// dimensions, from the CloudWatch double (GetMetricData, as a dashboard or alarm reads it).
fn metric_sum(vpc: &Vpc, instance_id: &str, metric: &str, start: u64, end: u64) -> Result<f64> {
    let r = vpc.aws()?.call(
        "cloudwatch",
        "get_metric_data",
        json!({
            "MetricDataQueries": [{
                "Id": "m0",
                "MetricStat": {
                    "Metric": {
                        "Namespace": METRICS_NAMESPACE,
                        "MetricName": metric,
                        "Dimensions": [
                            {"Name": "InstanceId", "Value": instance_id},
                            {"Name": "NatName", "Value": "e2e-nat"}
                        ]
                    },
                    "Period": METRICS_PERIOD_S,
                    "Stat": "Sum"
                }
            }],
            // Epoch seconds: boto3 takes them for timestamps.
            "StartTime": start,
            "EndTime": end,
        }),
    )?;
    let values = r["MetricDataResults"][0]["Values"]
        .as_array()
        .with_context(|| format!("GetMetricData for {metric}: no values in {r}"))?;
    Ok(values.iter().filter_map(Value::as_f64).sum())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Points `table`'s `0.0.0.0/0` at `eni` through the API, as an operator (or a peer) would.
fn point_route(vpc: &Vpc, table: &str, eni: &str) -> Result<()> {
    vpc.aws()?.call(
        "ec2",
        "replace_route",
        json!({
            "RouteTableId": table,
            "DestinationCidrBlock": "0.0.0.0/0",
            "NetworkInterfaceId": eni,
        }),
    )?;
    Ok(())
}

/// How many UDP datagrams and HTTP connections the internet's servers have seen so far.
fn counts(vpc: &Vpc) -> Result<(usize, usize)> {
    let s = vpc.seen()?;
    Ok((s.udp_clients.len(), s.http_clients.len()))
}

/// The public sources the internet's servers saw since `udp_from`/`http_from`.
fn sources_since(vpc: &Vpc, udp_from: usize, http_from: usize) -> Result<BTreeSet<Ipv4Addr>> {
    let seen = vpc.seen()?;
    Ok(seen.udp_clients[udp_from..]
        .iter()
        .chain(seen.http_clients[http_from..].iter())
        .copied()
        .collect())
}

pub fn run(disk: &Path, root: &Path, vpc: &mut Vpc, report: &mut Report) {
    let mut vm: Option<Vm> = None;
    let mut ready_line_at = 0usize;
    let mut ok = report.check(DENIED, || {
        let moto = hostdeps::ensure_moto(&target_dir(root))?;
        vpc.start_aws(root, &moto)?;
        let seed = vpc.aws()?.seed().clone();
        // A role whose policy lacks the route permissions, as a first apply meets it before
        // IAM has propagated (or when the user forgot them).
        vpc.aws()?
            .set_role_policy(&policy(&["ec2:CreateRoute", "ec2:ReplaceRoute"]))?;
        vpc.refresh_imds_credentials(FIRST_CREDS)?;
        vpc.set_user_data(Some(format!("{}{METRICS_USER_DATA}", seed.nat_user_data())));
        let mut cfg = graviton_like(
            disk,
            vpc,
            vec![Nic::slot5(tap(vpc::TAP), vpc::NAT_MAC)],
        );
        cfg.rtc_offset_secs = Some(RTC_OFFSET_S);
        let v = vm.insert(Vm::start(&cfg)?);
        let (r, ready) = v.wait_for_from(0, "nat-init: ready ", BOOT)?;
        ready_line_at = r;
        say(&ready);
        // The ready line names each configured item, still pending.
        for (k, want) in [("aws_srcdst", "pending"), ("aws_routes", "0/1"), ("aws_eips", "0/2")] {
            if ready_field(&ready, k) != Some(want) {
                bail!("ready line has {k}={:?}, want {want}: {ready}", ready_field(&ready, k));
            }
        }
        let (_, denied) = v.wait_for_from(
            r,
            "denied: the instance role lacks ec2:CreateRoute",
            AWS_WAIT,
        )?;
        say(&denied);
        if !denied.contains("\"Action\"") || !denied.contains("rtb-") {
            bail!("the denial does not give the statement to add for the table: {denied}");
        }
        // Its own ENI is done all the same: check off, both addresses associated.
        let plane = vpc.aws()?.wait_for("check off and both EIPs on the NAT's ENI", AWS_WAIT, |p| {
            let eni = p.enis.values().find(|e| e.mac == vpc::NAT_MAC);
            eni.is_some_and(|e| !e.source_dest_check)
                && aws::ELASTIC_IPS.iter().all(|ip| p.mappings.iter().any(|m| m.public == *ip))
        })?;
        if plane.route_target(&seed.private_route_table_id).is_some() {
            bail!("the private table has a default route though the role may not create one");
        }
        // So the NAT forwards for what reaches it (a public-subnet host routing through it),
        // while the private subnet, which has no route to it, stays offline.
        let (udp0, http0) = counts(vpc)?;
        let echoed = vpc::udp_echo(&vpc.ns.name("pubhost"), 3)?;
        if echoed != 3 {
            bail!("{echoed} of 3 echoes through the NAT from the public subnet while routes are denied");
        }
        let src = sources_since(vpc, udp0, http0)?;
        if !src.iter().all(|s| aws::ELASTIC_IPS.contains(s)) {
            bail!("sources {src:?} are not the Elastic IPs {:?}", aws::ELASTIC_IPS);
        }
        if vpc::udp_echo(&vpc.ns.name("private"), 2)? != 0 {
            bail!("the private subnet reached the internet without a route to the NAT");
        }
        Ok(())
    });
    ok &= report.check_after(DENIED, CLOCK, || {
        let v = vm.as_mut().context("the VM did not start")?;
        let (_, stepped) = v.wait_for_from(0, "nat-init: clock stepped by +", Duration::ZERO)?;
        say(&stepped);
        let secs: f64 = stepped
            .split("stepped by +")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("no step in {stepped}"))?;
        if (secs + RTC_OFFSET_S as f64).abs() > 120.0 {
            bail!("stepped by {secs} s, want about {} s", -RTC_OFFSET_S);
        }
        if vpc.ntp_served.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            bail!("the NTP double at 169.254.169.123 answered nothing");
        }
        Ok(())
    });
    let mut online_ms = 0u64;
    ok &= report.check_after(DENIED, ONLINE, || {
        let v = vm.as_mut().context("the VM did not start")?;
        let seed = vpc.aws()?.seed().clone();
        // IAM catches up: the appliance's retry finds the permission without a restart.
        vpc.aws()?.set_role_policy(&policy(&[]))?;
        let fixed = Instant::now();
        let (_, route) = v.wait_for_from(
            ready_line_at,
            &format!("nat-init: aws route {} 0.0.0.0/0 -> eni-", seed.private_route_table_id),
            Duration::from_secs(400),
        )?;
        let (_, aws_ready) = v.wait_for_from(ready_line_at, "nat-init: aws ready ", AWS_WAIT)?;
        online_ms = u64::try_from(fixed.elapsed().as_millis()).unwrap_or(u64::MAX);
        say(&format!("{route}\n{aws_ready}"));
        let nat = seed.instance("nat")?;
        let plane = vpc.aws()?.wait_for("the private table's route to the NAT", AWS_WAIT, |p| {
            p.routes
                .get(&seed.private_route_table_id)
                .is_some_and(|t| t.target_id.as_deref() == Some(nat.eni_id.as_str()))
        })?;
        let eip0 = plane
            .public_of(vpc::NAT_ADDR)
            .context("no Elastic IP on the NAT's primary address")?;
        if eip0 != aws::ELASTIC_IPS[0] {
            bail!("the primary address maps to {eip0}, want the first Elastic IP {}", aws::ELASTIC_IPS[0]);
        }
        let (udp0, http0) = counts(vpc)?;
        let got = curl(
            vpc,
            "private",
            &["-o", "/dev/null", "-w", "%{size_download}", &format!("http://{}/bytes/1048576", vpc::SERVER)],
        )?;
        if got.trim() != "1048576" {
            bail!("the private client got {got} of 1048576 bytes");
        }
        if vpc::udp_echo(&vpc.ns.name("private"), 3)? != 3 {
            bail!("UDP echoes from the private client did not all come back");
        }
        let src = sources_since(vpc, udp0, http0)?;
        if src.is_empty() || !src.iter().all(|s| aws::ELASTIC_IPS.contains(s)) {
            bail!("the internet saw {src:?}, want only the Elastic IPs {:?}", aws::ELASTIC_IPS);
        }
        say(&format!(
            "private subnet online {online_ms} ms after the role's policy was fixed; sources {src:?}"
        ));
        // A figure, not a check (the bench has it): nat-init's memory with its AWS side busy.
        let mark = v.line_count();
        v.send("init-test meminfo\n")?;
        let (_, mem) = v.wait_for_from(mark, "meminfo MemTotal_kb=", Duration::from_secs(20))?;
        say(&mem);
        Ok(())
    });
    ok &= report.check_after(ONLINE, TWO_EIPS, || {
        let v = vm.as_mut().context("the VM did not start")?;
        let (_, egress) = v.wait_for_from(0, "nat-init: egress snat across ", Duration::ZERO)?;
        say(&egress);
        let udp0 = vpc.seen()?.udp_clients.len();
        let flows = 40;
        let echoed = udp_flows(&vpc.ns.name("private"), flows)?;
        if echoed < flows - 2 {
            bail!("{echoed} of {flows} UDP flows echoed");
        }
        let seen = vpc.seen()?.udp_clients[udp0..].to_vec();
        let count = |ip: Ipv4Addr| seen.iter().filter(|s| **s == ip).count();
        let (a, b) = (count(aws::ELASTIC_IPS[0]), count(aws::ELASTIC_IPS[1]));
        say(&format!(
            "{flows} flows: {a} from {}, {b} from {}",
            aws::ELASTIC_IPS[0],
            aws::ELASTIC_IPS[1]
        ));
        if a + b != seen.len() {
            bail!("sources other than the Elastic IPs: {seen:?}");
        }
        // Each gets a fair share: at 1/2 per flow, fewer than 8 of 40 is a 1-in-10^5 event.
        if a < 8 || b < 8 {
            bail!("the flows did not spread across both Elastic IPs: {a} and {b}");
        }
        Ok(())
    });
    ok &= report.check_after(ONLINE, MOVED, || {
        let v = vm.as_mut().context("the VM did not start")?;
        let seed = vpc.aws()?.seed().clone();
        let fwd = seed.instance("fwd")?;
        let mark = v.line_count();
        point_route(vpc, &seed.private_route_table_id, &fwd.eni_id)?;
        let (_, moved) = v.wait_for_from(
            mark,
            &format!(
                "route table {} now has 0.0.0.0/0 -> {}",
                seed.private_route_table_id, fwd.eni_id
            ),
            Duration::from_secs(60),
        )?;
        say(&moved);
        let (_, health) =
            v.wait_for_from(mark, "aws_routes_elsewhere=", Duration::from_secs(30))?;
        say(&health);
        // Not reclaimed: the table still points where its operator moved it.
        let plane = vpc.aws()?.data_plane()?;
        if plane
            .routes
            .get(&seed.private_route_table_id)
            .and_then(|t| t.target_id.clone())
            != Some(fwd.eni_id.clone())
        {
            bail!("the table was taken back though reclaim_routes is off");
        }
        // Put it back for what follows.
        point_route(
            vpc,
            &seed.private_route_table_id,
            &seed.instance("nat")?.eni_id,
        )?;
        Ok(())
    });
    ok &= report.check_after(ONLINE, CREDS, || {
        let v = vm.as_mut().context("the VM did not start")?;
        // EC2 rotates the role's credentials: IMDS serves new ones, the old ones expire at
        // their time (the double refuses them after that).
        let new = vpc.refresh_imds_credentials(Duration::from_secs(6 * 3600))?;
        let mark = v.line_count();
        let (_, line) = v.wait_for_from(
            mark,
            &format!(
                "nat-init: aws credentials refreshed role={} key={}",
                aws::ROLE,
                new.access_key_id
            ),
            Duration::from_secs(FIRST_CREDS.as_secs() + 60),
        )?;
        say(&line);
        vpc.aws()?.requests(true)?;
        // A call after the refresh: the route check every 10 s.
        let t = Instant::now();
        let reqs = loop {
            let r = vpc.aws()?.requests(false)?;
            if !r.is_empty() || t.elapsed() > Duration::from_secs(40) {
                break r;
            }
            std::thread::sleep(Duration::from_secs(1));
        };
        if reqs.is_empty() {
            bail!("no EC2 call within 40 s of the refresh");
        }
        if let Some(r) = reqs
            .iter()
            .find(|r| r.access_key_id != new.access_key_id || r.status != 200)
        {
            bail!(
                "a call after the refresh used {} (status {} {}), want {}",
                r.access_key_id,
                r.status,
                r.error,
                new.access_key_id
            );
        }
        if let Ok((_, e)) = v.wait_for_from(0, "ExpiredToken", Duration::ZERO) {
            bail!("a call met expired credentials: {e}");
        }
        Ok(())
    });
    // Known traffic, then the figures CloudWatch holds for the periods it fell in.
    let mut window = (0u64, 0u64);
    let mut burst_answered = 0usize;
    ok &= report.check_after(ONLINE, METRICS, || {
        let v = vm.as_mut().context("the VM did not start")?;
        let (_, published) = v.wait_for_from(
            0,
            "nat-init: metrics published to CloudWatch namespace NatInstance every 10 s",
            AWS_WAIT,
        )?;
        say(&published);
        // Start on a fresh period: nothing of the earlier checks' traffic in the window.
        let mark = v.line_count();
        v.wait_for_from(mark, "nat-init: metrics period ", Duration::from_secs(30))?;
        let start = unix_now() / METRICS_PERIOD_S * METRICS_PERIOD_S;
        let size = 2 * 1048576;
        let got = curl(
            vpc,
            "private",
            &["-o", "/dev/null", "-w", "%{size_download}", &format!("http://{}/bytes/{size}", vpc::SERVER)],
        )?;
        if got.trim() != size.to_string() {
            bail!("the private client got {got} of {size} bytes");
        }
        let flows = 20;
        let echoed = udp_flows(&vpc.ns.name("private"), flows)?;
        if echoed != flows {
            bail!("{echoed} of {flows} UDP flows echoed before the port burst");
        }
        burst_answered = udp_burst(&vpc.ns.name("private"), BURST, Duration::from_secs(5))?;
        say(&format!("burst of {BURST} UDP flows to one destination: {burst_answered} answered"));
        if burst_answered == 0 || burst_answered >= BURST {
            bail!("{burst_answered} of {BURST} burst flows answered: the port range was not exhausted, or nothing passed");
        }
        run_in(&vpc.ns.name("internet"), || -> Result<()> {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            for i in 0..UNSOLICITED {
                s.send_to(format!("unsolicited-{i}").as_bytes(), (aws::ELASTIC_IPS[0], 9))?;
            }
            Ok(())
        })??;
        // The period holding the last packets closes, then the next, and is published.
        let mark = v.line_count();
        v.wait_for_from(mark, "nat-init: metrics period ", Duration::from_secs(60))?;
        let (r, _) = v.wait_for_from(mark, "nat-init: metrics period ", Duration::from_secs(60))?;
        v.wait_for_from(r + 1, "nat-init: metrics period ", Duration::from_secs(60))?;
        std::thread::sleep(Duration::from_secs(3));
        window = (start, unix_now() + METRICS_PERIOD_S);
        let seed = vpc.aws()?.seed().clone();
        let id = seed.instance("nat")?.instance_id.clone();
        let sum = |m: &str| metric_sum(vpc, &id, m, window.0, window.1);
        let mut figures = Vec::new();
        for m in [
            "BytesInFromDestination",
            "BytesOutToSource",
            "BytesInFromSource",
            "PacketsInFromSource",
            "PacketsOutToDestination",
            "ConnectionAttemptCount",
            "ConnectionEstablishedCount",
            "ErrorPortAllocation",
            "PacketsDropCount",
        ] {
            figures.push((m, sum(m)?));
        }
        say(&format!("CloudWatch double, {}..{}: {figures:?}", window.0, window.1));
        let get = |m: &str| figures.iter().find(|(n, _)| *n == m).map_or(0.0, |(_, v)| *v);
        // The download's payload plus its TCP/IP headers (about 3%) and the echoes: within
        // 6% above the payload, never below it.
        let down = get("BytesInFromDestination");
        if down < size as f64 || down > size as f64 * 1.06 + 20_000.0 {
            bail!("BytesInFromDestination {down}, want {size} bytes plus at most 6% of headers");
        }
        if get("BytesOutToSource") != down {
            bail!("BytesOutToSource {} differs from BytesInFromDestination {down}", get("BytesOutToSource"));
        }
        // One TCP connection, 20 flows, the burst: every new flow the NAT translated.
        let attempts = (1 + flows + BURST) as f64;
        if get("ConnectionAttemptCount") != attempts {
            bail!("ConnectionAttemptCount {}, want {attempts}", get("ConnectionAttemptCount"));
        }
        let established = (1 + flows + burst_answered) as f64;
        if get("ConnectionEstablishedCount") != established {
            bail!("ConnectionEstablishedCount {}, want {established} (the flows that got a reply)", get("ConnectionEstablishedCount"));
        }
        // At least each UDP flow's datagram and the TCP handshake's and requests' packets.
        if get("PacketsOutToDestination") < (flows + burst_answered + 3) as f64 {
            bail!("PacketsOutToDestination {} is below the flows sent", get("PacketsOutToDestination"));
        }
        Ok(())
    });
    ok &= report.check_after(METRICS, METRICS_ERRORS, || {
        let seed = vpc.aws()?.seed().clone();
        let id = seed.instance("nat")?.instance_id.clone();
        let errors = metric_sum(vpc, &id, "ErrorPortAllocation", window.0, window.1)?;
        let failed = (BURST - burst_answered) as f64;
        // A flow whose translation found no port is dropped at confirmation; an echo lost on
        // the way would be the only other unanswered flow.
        if (errors - failed).abs() > 2.0 {
            bail!("ErrorPortAllocation {errors}, want the {failed} burst flows that found no port");
        }
        let drops = metric_sum(vpc, &id, "PacketsDropCount", window.0, window.1)?;
        if drops < UNSOLICITED as f64 || drops > UNSOLICITED as f64 + 10.0 {
            bail!("PacketsDropCount {drops}, want the {UNSOLICITED} unsolicited datagrams (+10 at most)");
        }
        say(&format!("ErrorPortAllocation {errors} for {failed} flows without a port; PacketsDropCount {drops}"));
        Ok(())
    });
    vpc.set_user_data(None);
    if online_ms > 0 {
        say(&format!(
            "aws: private subnet online {online_ms} ms after the policy allowed it"
        ));
    }
    if !ok && let Some(v) = &vm {
        diagnose(v, vpc);
        if let Ok(a) = vpc.aws() {
            say(&format!("AWS double log:\n{}", a.log()));
        }
    }
}
