//! The emulated VPC's control plane, proved without a guest: the AWS double (moto, the local
//! stand-in for AWS) is seeded "just launched", and the plain Linux forwarder namespace `fwd`
//! (10.0.0.30, its own ENI in moto) stands in for the NAT while the checks change the EC2
//! state through the HTTPS API and watch the namespaces follow: no default route, then a route
//! to the forwarder with its source/dest check off, the check back on, an Elastic IP. Then the
//! pieces the appliance will use: the VPC resolver and the test CA, IMDS's role credentials,
//! moto's request authentication, and the NTP double. Then, in a VPC of its own, the
//! failover pair's (see `pair`).

mod pair;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use serde_json::json;

use crate::hostdeps;
use crate::netns::run_in;
use crate::report::Report;
use crate::vpc::{self, Vpc, aws, dns, ntp};

const LAUNCHED: &str = "vpc-just-launched-no-route-checks-on-private-client-offline";
const ROUTED: &str =
    "vpc-route-to-forwarder-and-check-off-private-reaches-internet-as-its-public-ip";
const CHECK_ON: &str = "vpc-source-dest-check-on-drops-forwarded-traffic";
const EIP: &str = "vpc-elastic-ip-association-becomes-the-internet-source";
const SECOND_EIP: &str = "vpc-secondary-address-from-the-pool-maps-to-the-second-elastic-ip";
const RESOLVER: &str = "vpc-dnsmasq-names-the-endpoints-and-https-verifies-with-the-test-ca";
const IMDS_ROLE: &str = "vpc-imds-serves-role-credentials-region-and-eni-id";
const AUTH: &str = "vpc-moto-checks-signature-token-expiry-and-role-policy";
const NTP: &str = "vpc-ntp-at-169-254-169-123-answers-with-the-host-clock";
pub const CHECKS: &[&str] = &[
    LAUNCHED,
    ROUTED,
    CHECK_ON,
    EIP,
    SECOND_EIP,
    RESOLVER,
    IMDS_ROLE,
    AUTH,
    NTP,
    pair::SEED,
    pair::IMDS,
    pair::ROUTES,
    pair::MOVE,
    pair::HAIRPIN,
    pair::PARTITION,
    pair::CUT,
    pair::ECHO,
    pair::DOWNLOAD,
    pair::KILL,
];

/// How long a data-plane change may take to show.
const FOLLOW: Duration = Duration::from_secs(10);

pub fn run(root: &Path, report: &mut Report) -> Result<()> {
    hostdeps::ensure(hostdeps::NET)?;
    hostdeps::ensure(hostdeps::QEMU)?;
    let moto = hostdeps::ensure_moto(&crate::target_dir(root))?;
    single(root, &moto, report)?;
    // The first VPC is gone: the pair's reuses the namespaces' names.
    pair::run(root, &moto, report)
}

fn single(root: &Path, moto: &Path, report: &mut Report) -> Result<()> {
    let mut vpc = Vpc::build(120, None).context("building the emulated VPC")?;
    let t = std::time::Instant::now();
    vpc.start_aws(root, moto)
        .context("starting the VPC's control plane")?;
    crate::report::say(&format!(
        "vpc: AWS double seeded and followed in {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    // The stand-in NAT masquerades what it forwards, as the appliance does.
    vpc.ns.nft(
        "fwd",
        "table ip stand_in { chain post { type nat hook postrouting priority srcnat; oifname \"eth0\" ip saddr { 10.0.1.0/24, 198.18.0.0/16 } masquerade; }; }",
    )?;
    let ok = report.check(LAUNCHED, || launched(&vpc));
    let ok = ok && report.check(ROUTED, || routed(&vpc));
    let ok = ok && report.check(CHECK_ON, || check_on(&vpc));
    if ok && report.check(EIP, || elastic_ip(&vpc)) {
        report.check(SECOND_EIP, || second_elastic_ip(&vpc));
    }
    report.check(RESOLVER, || resolver(&vpc));
    report.check(IMDS_ROLE, || imds_role(&vpc));
    report.check(AUTH, || auth(&vpc));
    report.check(NTP, || time_service(&vpc));
    if let Ok(a) = vpc.aws()
        && report_failed(report)
    {
        eprintln!("--- AWS double log (tail) ---\n{}", tail(&a.log(), 40));
        eprintln!("{}", vpc.dump());
    }
    Ok(())
}

fn report_failed(report: &Report) -> bool {
    report.counts().1 > 0
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// One HTTP GET from namespace `ns` (short name) to the internet server.
fn http_get(vpc: &Vpc, ns: &str) -> Result<String> {
    run_in(&vpc.ns.name(ns), || -> Result<String> {
        let addr = SocketAddr::from((vpc::SERVER, vpc::HTTP_PORT));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .with_context(|| format!("connecting to {addr}"))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: server\r\nConnection: close\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })?
}

/// GETs from the private client; returns the source the internet server recorded.
fn private_source(vpc: &Vpc) -> Result<Ipv4Addr> {
    let before = vpc.seen()?.http_clients.len();
    let body = http_get(vpc, "private")?;
    ensure!(body.contains("hello from the internet"), "answer: {body}");
    let seen = vpc.seen()?;
    ensure!(
        seen.http_clients.len() == before + 1,
        "the server saw no new client"
    );
    seen.http_clients
        .last()
        .copied()
        .context("the server recorded no client")
}

fn ensure_offline(vpc: &Vpc, why: &str) -> Result<()> {
    if let Ok(body) = http_get(vpc, "private") {
        bail!("the private client reached the internet {why}: {body}");
    }
    Ok(())
}

/// The seed, read back through the API: what `run-instances` in a fresh VPC leaves.
fn seeded_as_launched(a: &aws::AwsDouble) -> Result<()> {
    let seed = a.seed();
    ensure!(
        seed.region == aws::REGION && seed.account.len() == 12,
        "{seed:?}"
    );
    ensure!(seed.role_arn == format!("arn:aws:iam::{}:role/{}", seed.account, aws::ROLE));
    ensure!(seed.policy_name == aws::ROLE_POLICY);
    let rts = a.call(
        "ec2",
        "describe_route_tables",
        json!({"Filters": [{"Name": "vpc-id", "Values": [seed.vpc_id]}]}),
    )?;
    let rts = rts["RouteTables"].as_array().context("no RouteTables")?;
    let table = |id: &str| {
        rts.iter()
            .find(|t| t["RouteTableId"] == id)
            .with_context(|| format!("route table {id} not in the VPC"))
    };
    let private = table(&seed.private_route_table_id)?;
    let subnets: Vec<&str> = private["Associations"]
        .as_array()
        .map(|v| v.iter().filter_map(|a| a["SubnetId"].as_str()).collect())
        .unwrap_or_default();
    ensure!(
        seed.private_subnet_ids
            .iter()
            .all(|s| subnets.contains(&s.as_str())),
        "private table associations: {subnets:?}"
    );
    let default_of = |t: &serde_json::Value| {
        t["Routes"].as_array().and_then(|r| {
            r.iter()
                .find(|r| r["DestinationCidrBlock"] == "0.0.0.0/0")
                .cloned()
        })
    };
    ensure!(
        default_of(private).is_none(),
        "the private table has a default route"
    );
    let public = table(&seed.public_route_table_id)?;
    let to_igw = default_of(public).map(|r| r["GatewayId"].clone());
    ensure!(
        to_igw == Some(json!(seed.internet_gateway_id)),
        "the public subnet {} routes 0.0.0.0/0 to {to_igw:?}",
        seed.public_subnet_id
    );
    Ok(())
}

fn launched(vpc: &Vpc) -> Result<()> {
    let a = vpc.aws()?;
    let seed = a.seed();
    seeded_as_launched(a)?;
    let plane = a.sync()?;
    let route = plane
        .routes
        .get(&seed.private_route_table_id)
        .context("no state for the private route table")?;
    ensure!(
        route.target.is_none(),
        "the private table routes: {route:?}"
    );
    for name in ["nat", "fwd"] {
        let id = &seed.instance(name)?.eni_id;
        ensure!(
            plane.check_of(id) == Some(true),
            "{name}'s check is not on: {:?}",
            plane.enis.get(id)
        );
    }
    ensure!(plane.public_of(vpc::NAT_ADDR) == Some(vpc::NAT_PUBLIC));
    ensure!(plane.public_of(vpc::FORWARDER) == Some(aws::FWD_PUBLIC));
    let t100 = vpc.ns.ip("vpc", "route show table 100")?;
    ensure!(t100.contains("unreachable default"), "table 100:\n{t100}");
    ensure_offline(vpc, "with no route")
}

fn routed(vpc: &Vpc) -> Result<()> {
    let a = vpc.aws()?;
    let seed = a.seed();
    let fwd = seed.instance("fwd")?.eni_id.clone();
    a.call(
        "ec2",
        "create_route",
        json!({"RouteTableId": seed.private_route_table_id,
               "DestinationCidrBlock": "0.0.0.0/0", "NetworkInterfaceId": fwd}),
    )?;
    a.wait_for("the route to the forwarder", FOLLOW, |p| {
        p.route_target(&seed.private_route_table_id) == Some("10.0.0.30")
    })?;
    // Routed, but the check is still on: the forwarder's port drops what it forwards.
    ensure_offline(vpc, "through an ENI whose source/dest check is on")?;
    a.call(
        "ec2",
        "modify_network_interface_attribute",
        json!({"NetworkInterfaceId": fwd, "SourceDestCheck": {"Value": false}}),
    )?;
    a.wait_for("the forwarder's check off", FOLLOW, |p| {
        p.check_of(&fwd) == Some(false)
    })?;
    let src = private_source(vpc)?;
    ensure!(
        src == aws::FWD_PUBLIC,
        "the internet saw {src}, not {}",
        aws::FWD_PUBLIC
    );
    Ok(())
}

fn check_on(vpc: &Vpc) -> Result<()> {
    let a = vpc.aws()?;
    let fwd = a.seed().instance("fwd")?.eni_id.clone();
    a.call(
        "ec2",
        "modify_network_interface_attribute",
        json!({"NetworkInterfaceId": fwd, "SourceDestCheck": {"Value": true}}),
    )?;
    a.wait_for("the forwarder's check on", FOLLOW, |p| {
        p.check_of(&fwd) == Some(true)
    })?;
    ensure_offline(vpc, "with the forwarder's check back on")?;
    let bridge = vpc
        .ns
        .exec("vpc", "nft", &["list", "table", "bridge", "srcdst"])?;
    let dropped = bridge
        .lines()
        .filter(|l| l.contains("\"p-fwd\"") && l.contains("drop"))
        .filter_map(vpc::counter_packets)
        .sum::<u64>();
    ensure!(
        dropped > 0,
        "the forwarder's port dropped nothing:\n{bridge}"
    );
    Ok(())
}

fn elastic_ip(vpc: &Vpc) -> Result<()> {
    let a = vpc.aws()?;
    let seed = a.seed();
    let fwd = seed.instance("fwd")?.eni_id.clone();
    a.call(
        "ec2",
        "modify_network_interface_attribute",
        json!({"NetworkInterfaceId": fwd, "SourceDestCheck": {"Value": false}}),
    )?;
    a.call(
        "ec2",
        "associate_address",
        json!({"AllocationId": seed.allocation(0)?, "NetworkInterfaceId": fwd}),
    )?;
    let plane = a.wait_for("the EIP mapped to the forwarder", FOLLOW, |p| {
        p.check_of(&fwd) == Some(false) && p.public_of(vpc::FORWARDER) == Some(aws::ELASTIC_IPS[0])
    })?;
    ensure!(
        !plane.mappings.iter().any(|m| m.public == aws::FWD_PUBLIC),
        "the auto-assigned address is still mapped: {:?}",
        plane.mappings
    );
    for _ in 0..3 {
        let src = private_source(vpc)?;
        ensure!(
            src == aws::ELASTIC_IPS[0],
            "the internet saw {src}, not the EIP"
        );
    }
    Ok(())
}

/// A secondary private address (which moto must take from the free pool) with the second EIP
/// associated to it: two public sources from one ENI.
fn second_elastic_ip(vpc: &Vpc) -> Result<()> {
    let a = vpc.aws()?;
    let seed = a.seed();
    let fwd = seed.instance("fwd")?.eni_id.clone();
    a.call(
        "ec2",
        "assign_private_ip_addresses",
        json!({"NetworkInterfaceId": fwd, "SecondaryPrivateIpAddressCount": 1}),
    )?;
    let plane = a.wait_for("a secondary address on the forwarder", FOLLOW, |p| {
        p.enis.get(&fwd).is_some_and(|e| e.private_ips.len() == 2)
    })?;
    let second = plane
        .enis
        .get(&fwd)
        .and_then(|e| e.private_ips.get(1).copied())
        .context("no secondary address")?;
    ensure!(
        (40..=99).contains(&second.octets()[3]) && second.octets()[..3] == [10, 0, 0],
        "moto handed out {second}, outside the free pool"
    );
    a.call(
        "ec2",
        "associate_address",
        json!({"AllocationId": seed.allocation(1)?, "NetworkInterfaceId": fwd,
               "PrivateIpAddress": second.to_string()}),
    )?;
    a.wait_for("the second EIP on the secondary address", FOLLOW, |p| {
        p.public_of(second) == Some(aws::ELASTIC_IPS[1])
            && p.public_of(vpc::FORWARDER) == Some(aws::ELASTIC_IPS[0])
    })?;
    vpc.ns
        .ip("fwd", &format!("addr add {second}/24 dev eth0"))?;
    let before = vpc.seen()?.http_clients.len();
    let url = format!("http://{}/", vpc::SERVER);
    let second_s = second.to_string();
    vpc.ns.exec(
        "fwd",
        "curl",
        &["-sS", "-m", "5", "--interface", &second_s, &url],
    )?;
    vpc.ns.exec("fwd", "curl", &["-sS", "-m", "5", &url])?;
    let seen = vpc.seen()?;
    let new = seen.http_clients.get(before..).unwrap_or_default();
    ensure!(
        new == [aws::ELASTIC_IPS[1], aws::ELASTIC_IPS[0]],
        "the internet saw {new:?}"
    );
    Ok(())
}

fn resolver(vpc: &Vpc) -> Result<()> {
    let ns = vpc.ns.name("fwd");
    let got = run_in(&ns, || -> Result<Vec<(String, Vec<Ipv4Addr>)>> {
        [aws::EC2_HOST, aws::MONITORING_HOST]
            .into_iter()
            .map(|h| Ok((h.to_string(), dns::query_a(vpc::ROUTER, h)?)))
            .collect()
    })??;
    for (host, addrs) in &got {
        ensure!(addrs == &[aws::ENDPOINT], "{host} -> {addrs:?}");
    }
    let unknown = run_in(&ns, || dns::query_a(vpc::ROUTER, "example.com"))?;
    ensure!(
        unknown.as_ref().map_or(true, Vec::is_empty),
        "the resolver answered a name it does not own: {unknown:?}"
    );
    let log = vpc.dnsmasq_log();
    ensure!(
        vpc.dnsmasq_args()
            .contains(&format!("--dhcp-option=option:dns-server,{}", vpc::ROUTER)),
        "dnsmasq hands out no DNS server"
    );
    let ca = vpc.aws()?.ca().to_string_lossy().into_owned();
    let url = format!("https://{}/", aws::EC2_HOST);
    let resolve = format!("{}:443:{}", aws::EC2_HOST, aws::ENDPOINT);
    let code = vpc
        .ns
        .exec(
            "fwd",
            "curl",
            &[
                "-sS",
                "-m",
                "10",
                "--cacert",
                &ca,
                "--resolve",
                &resolve,
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &url,
            ],
        )
        .with_context(|| format!("HTTPS to {url} with the test CA (dnsmasq log:\n{log})"))?;
    ensure!(code.trim() != "000", "no HTTP answer from {url}");
    // And with the system's roots only it is refused: the test CA is what makes it work.
    let refused = vpc.ns.exec(
        "fwd",
        "curl",
        &[
            "-sS",
            "-m",
            "10",
            "--resolve",
            &resolve,
            "-o",
            "/dev/null",
            &url,
        ],
    );
    ensure!(refused.is_err(), "HTTPS verified without the test CA");
    Ok(())
}

/// PUT token, then GET `path` from IMDS, from the vpc namespace.
fn imds_get(vpc: &Vpc, path: &'static str) -> Result<String> {
    run_in(&vpc.ns.name("vpc"), move || -> Result<String> {
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

fn imds_role(vpc: &Vpc) -> Result<()> {
    let a = vpc.aws()?;
    let seed = a.seed();
    let nat = seed.instance("nat")?;
    let role = imds_get(vpc, "/latest/meta-data/iam/security-credentials/")?;
    ensure!(role == aws::ROLE, "role {role:?}");
    ensure!(imds_get(vpc, "/latest/meta-data/placement/region")? == aws::REGION);
    ensure!(imds_get(vpc, "/latest/meta-data/instance-id")? == nat.instance_id);
    let iface = imds_get(
        vpc,
        "/latest/meta-data/network/interfaces/macs/52:54:00:0a:00:0a/interface-id",
    )?;
    ensure!(iface == nat.eni_id, "interface-id {iface:?}");
    let text = imds_get(
        vpc,
        "/latest/meta-data/iam/security-credentials/nat-instance",
    )?;
    let c: aws::Credentials = serde_json::from_str(&text).with_context(|| text.clone())?;
    ensure!(c.code == "Success" && c.kind == "AWS-HMAC", "{text}");
    ensure!(
        c.access_key_id.starts_with("ASIA") && !c.token.is_empty(),
        "{text}"
    );
    // Rotation: new credentials are served from then on.
    let new = vpc.refresh_imds_credentials(Duration::from_secs(3600))?;
    let text = imds_get(
        vpc,
        "/latest/meta-data/iam/security-credentials/nat-instance",
    )?;
    ensure!(text.contains(&new.access_key_id) && new.access_key_id != c.access_key_id);
    // The role's credentials work against the API.
    a.call_as(&new, "ec2", "describe_route_tables", json!({}))?;
    // local-ipv4s follows the ENI's addresses.
    a.call(
        "ec2",
        "assign_private_ip_addresses",
        json!({"NetworkInterfaceId": nat.eni_id, "SecondaryPrivateIpAddressCount": 1}),
    )?;
    a.sync()?;
    let ips = imds_get(
        vpc,
        "/latest/meta-data/network/interfaces/macs/52:54:00:0a:00:0a/local-ipv4s",
    )?;
    let ips: Vec<&str> = ips.lines().collect();
    ensure!(
        ips.len() == 2 && ips[0] == "10.0.0.10",
        "local-ipv4s {ips:?}"
    );
    Ok(())
}

fn auth(vpc: &Vpc) -> Result<()> {
    let a = vpc.aws()?;
    let seed = a.seed();
    let creds = a.credentials(Duration::from_secs(600))?;
    a.requests(true)?;
    a.call_as(&creds, "ec2", "describe_network_interfaces", json!({}))?;
    let denied = a.call_as(&creds, "ec2", "delete_vpc", json!({"VpcId": seed.vpc_id}));
    let e = format!("{:#}", denied.err().context("the role may delete the VPC")?);
    ensure!(
        e.contains("AccessDenied") && e.contains("ec2:DeleteVpc"),
        "{e}"
    );
    let mut bad = creds.clone();
    bad.secret_access_key = "not-the-secret".into();
    let e = format!(
        "{:#}",
        a.call_as(&bad, "ec2", "describe_route_tables", json!({}))
            .err()
            .context("a bad signature passed")?
    );
    ensure!(e.contains("AuthFailure"), "{e}");
    let mut bad = creds.clone();
    bad.token = "not-the-token".into();
    let e = format!(
        "{:#}",
        a.call_as(&bad, "ec2", "describe_route_tables", json!({}))
            .err()
            .context("a bad session token passed")?
    );
    ensure!(e.contains("AuthFailure"), "{e}");
    let short = a.credentials(Duration::from_secs(1))?;
    std::thread::sleep(Duration::from_millis(2100));
    let e = format!(
        "{:#}",
        a.call_as(&short, "ec2", "describe_route_tables", json!({}))
            .err()
            .context("expired credentials passed")?
    );
    ensure!(e.contains("ExpiredToken"), "{e}");
    // A request dated 10 minutes ago is refused before its signature is looked at.
    let ca = a.ca().to_string_lossy().into_owned();
    let stale = SystemTime::now().duration_since(UNIX_EPOCH)? - Duration::from_secs(600);
    let date = format!("X-Amz-Date: {}", amz_date(stale.as_secs()));
    let auth_hdr = format!(
        "Authorization: AWS4-HMAC-SHA256 Credential={}/{}/{}/ec2/aws4_request, SignedHeaders=host;x-amz-date, Signature=00",
        creds.access_key_id,
        &amz_date(stale.as_secs())[..8],
        aws::REGION
    );
    let url = format!("https://{}/", aws::ENDPOINT);
    let body = vpc.ns.exec(
        "fwd",
        "curl",
        &[
            "-sS",
            "-m",
            "10",
            "--cacert",
            &ca,
            "-H",
            &date,
            "-H",
            &auth_hdr,
            "-d",
            "Action=DescribeRouteTables&Version=2016-11-15",
            &url,
        ],
    )?;
    ensure!(
        body.contains("RequestExpired"),
        "a stale X-Amz-Date got: {body}"
    );
    // A permission taken away from the role is denied from then on.
    let policy = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "ec2:Describe*", "Resource": "*"}]});
    a.set_role_policy(&policy)?;
    let e = format!(
        "{:#}",
        a.call_as(&creds, "ec2", "replace_route", json!({"RouteTableId": seed.private_route_table_id,
            "DestinationCidrBlock": "0.0.0.0/0", "NetworkInterfaceId": seed.instance("nat")?.eni_id}))
            .err()
            .context("ReplaceRoute passed without the permission")?
    );
    ensure!(
        e.contains("AccessDenied") && e.contains("ec2:ReplaceRoute"),
        "{e}"
    );
    let log = a.requests(false)?;
    let actions: Vec<(&str, u16)> = log.iter().map(|r| (r.action.as_str(), r.status)).collect();
    ensure!(
        log.iter().any(|r| r.access_key_id == creds.access_key_id
            && r.action == "DescribeNetworkInterfaces"
            && r.status == 200)
            && log
                .iter()
                .any(|r| r.action == "DeleteVpc" && r.status == 403)
            && log.iter().any(|r| r.error == "ExpiredToken"),
        "request log: {actions:?}"
    );
    Ok(())
}

/// SigV4's `YYYYMMDDTHHMMSSZ` for seconds since the epoch.
fn amz_date(unix: u64) -> String {
    let iso = crate::qemu::rtc_base(i64::try_from(unix).unwrap_or(i64::MAX));
    format!("{}Z", iso.replace(['-', ':'], ""))
}

fn time_service(vpc: &Vpc) -> Result<()> {
    let served = vpc.ntp_served.load(std::sync::atomic::Ordering::Relaxed);
    let t = run_in(&vpc.ns.name("fwd"), || ntp::query(ntp::NTP))??;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
    let off = now.abs_diff(t);
    ensure!(
        off < Duration::from_secs(1),
        "the NTP double is {off:?} off the host"
    );
    ensure!(vpc.ntp_served.load(std::sync::atomic::Ordering::Relaxed) == served + 1);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_date_is_sigv4s_format() {
        assert_eq!(amz_date(0), "19700101T000000Z");
        assert_eq!(amz_date(951_825_600), "20000229T120000Z");
        assert_eq!(amz_date(1_796_255_999), "20261202T235959Z");
    }
}
