//! An emulated VPC made of network namespaces, for the end-to-end test of the NAT instance.
//! It follows AWS's routing model; nothing outside these namespaces is ever contacted.
//!
//! ```text
//!  private (10.0.1.10/24) --veth-- vpc --veth 1500-- internet (192.0.2.2, server 203.0.113.10)
//!  private2 (198.18.1.10/24) --veth-/|
//!                      bridge br0 10.0.0.1/24 (public subnet, MTU 9001)
//!                       |       |          |            |
//!             tap (NAT VM)   tap2 (its     pubhost      fwd (plain Linux forwarder)
//!                            second ENI)
//! ```
//! - vpc: the VPC router. dnsmasq serves DHCP on the bridge (router 10.0.0.1, MTU 9001; fixed
//!   addresses for the NAT's primary and second ENI); an IMDSv2 double listens on
//!   169.254.169.254:80 and names the primary ENI's MAC, the VPC's CIDR blocks, and can answer
//!   503 for a while (all settable, as tests need). The private subnets' route table sends
//!   0.0.0.0/0 to the NAT instance (policy routing on packets from the private veths); the
//!   public subnet's default route goes to the internet. private2 is a subnet of a secondary
//!   VPC CIDR outside RFC 1918 and 100.64.0.0/10, so only IMDS's answer makes it private.
//! - Internet gateway, in vpc: only public-subnet sources leave; the NAT's private address is
//!   translated 1:1 to its public address 198.51.100.10. The link to the internet has MTU 1500
//!   and ICMP "fragmentation needed" is dropped, a path-MTU black hole.
//! - internet: an HTTP server that records client addresses, and a UDP echo service.
//! - vpc also answers NTP at 169.254.169.123 (the Amazon Time Sync Service's address, see
//!   `ntp`) with the host's clock.
//!
//! The routing above is fixed. [`Vpc::start_aws`] (opt-in, so every fixed-topology test keeps
//! its state) gives the VPC a control plane instead: a local AWS double (moto, the local
//! stand-in for AWS, see `aws`) seeded with the state right after `run-instances` (source/dest
//! check on, no `0.0.0.0/0` in the private route table, no Elastic IP associated), whose EC2
//! state the namespaces then follow: table 100's default, the gateway's 1:1 mappings and the
//! bridge's source/dest checks. It also makes dnsmasq the VPC resolver (DHCP option 6, the
//! regional endpoints' names -> the double) and the IMDS double serve the instance role's
//! credentials, the ENI id and the region.
//!
//! [`Vpc::start_aws_pair`] (opt-in too) seeds the failover pair instead: a second NAT's place
//! on the public subnet ([`TAPB`], [`NATB_MAC`], [`NATB_ADDR`], public [`NATB_PUBLIC`]), one
//! private route table per private subnet, IMDS answering each instance as itself (told apart
//! by the request's source address), and the internet namespace forwarding, so that traffic
//! from one NAT to the other's public address hairpins through the gateway as on AWS. The
//! failover tests' faults ([`Vpc::partition_nats`], [`Vpc::cut_internet`]) are the
//! `faults` tables in the vpc namespace; their meters are in `meters`.

pub mod aws;
pub mod dns;
pub mod meters;
pub mod ntp;
pub mod tls;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

use crate::netns::{Namespaces, run_in, spawn_in};
use crate::qemu;

pub const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const NAT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);
pub const NAT_PUBLIC: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
pub const NAT_MAC: &str = "52:54:00:0a:00:0a";
/// The NAT's second ENI (on `TAP2`), for tests with two NICs: not the primary.
pub const SECOND_MAC: &str = "52:54:00:0a:00:0b";
pub const SECOND_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 11);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 10);
/// The client in the subnet of the secondary CIDR [`CIDR2`].
pub const CLIENT2: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);
/// A secondary VPC CIDR outside nat-init's default private ranges.
pub const CIDR2: &str = "198.18.0.0/16";
pub const PUBHOST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 20);
pub const FORWARDER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 30);
pub const PUBHOST2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 21);
pub const SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const VPC_CIDR: &str = "10.0.0.0/16";
pub const IMDS: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
pub const INSTANCE_ID: &str = "i-0e2e0e2e0e2e0e2e0";
pub const TAP: &str = "tapnat";
pub const TAP2: &str = "tapnat2";
/// The failover pair's second NAT (`nat-b`), with [`Vpc::start_aws_pair`]; `nat-a` is the
/// NAT of the fixed topology ([`TAP`], [`NAT_MAC`], [`NAT_ADDR`], [`NAT_PUBLIC`]).
pub const TAPB: &str = "tapnatb";
pub const NATB_MAC: &str = "52:54:00:0a:00:0c";
pub const NATB_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 12);
pub const NATB_PUBLIC: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 12);
/// The pair's members: name, tap, MAC, primary private and public address.
pub const PAIR: [(&str, &str, &str, Ipv4Addr, Ipv4Addr); 2] = [
    ("nat-a", TAP, NAT_MAC, NAT_ADDR, NAT_PUBLIC),
    ("nat-b", TAPB, NATB_MAC, NATB_ADDR, NATB_PUBLIC),
];
pub const HTTP_PORT: u16 = 80;
pub const UDP_PORT: u16 = 7;
/// A port the internet server's namespace drops without answering: a SYN to it leaves a
/// half-open (SYN_SENT) flow in the NAT's conntrack table until it times out.
pub const BLACKHOLE_PORT: u16 = 9;

/// What the servers in the internet namespace saw.
#[derive(Default, Debug)]
pub struct Seen {
    pub http_clients: Vec<Ipv4Addr>,
    pub udp_clients: Vec<Ipv4Addr>,
    pub uploads: Vec<u64>,
}

/// The IMDS double's state: what it serves and what it was asked.
#[derive(Debug)]
pub struct ImdsState {
    pub user_data: Option<String>,
    /// `meta-data/mac`, the primary ENI (device index 0); the per-interface documents
    /// (`network/interfaces/macs/<mac>/...`) are served for this MAC only.
    pub mac: String,
    /// `vpc-ipv4-cidr-blocks`, one per line.
    pub vpc_cidrs: String,
    /// Every request is answered 503 until this long after the first one.
    pub unavailable_for: Duration,
    pub first_request: Option<Instant>,
    /// How many requests were answered 503.
    pub refused: u32,
    pub requests: Vec<String>,
    /// `meta-data/instance-id`.
    pub instance_id: String,
    /// `meta-data/iam/security-credentials/`: the role, and what `.../<role>` serves.
    pub role: Option<String>,
    pub credentials: Option<aws::Credentials>,
    /// The primary ENI's `interface-id` and `local-ipv4s` (one per line), when set.
    pub interface_id: Option<String>,
    /// The primary ENI's `vpc-id`, when set.
    pub vpc_id: Option<String>,
    pub local_ipv4s: Option<String>,
}

impl ImdsState {
    /// What IMDS serves an instance before any control plane: its MAC and instance id.
    pub fn new(mac: &str, instance_id: &str, user_data: Option<String>) -> Self {
        Self {
            user_data,
            mac: mac.to_string(),
            vpc_cidrs: VPC_CIDR.to_string(),
            unavailable_for: Duration::ZERO,
            first_request: None,
            refused: 0,
            requests: Vec::new(),
            instance_id: instance_id.to_string(),
            role: None,
            credentials: None,
            interface_id: None,
            vpc_id: None,
            local_ipv4s: None,
        }
    }
}

/// IMDS per instance (the pair): each instance's state by its primary private address; a
/// request from an address found nowhere here gets [`Vpc::imds`].
pub type ImdsInstances = Arc<Mutex<BTreeMap<Ipv4Addr, ImdsState>>>;

/// The faults in force (see [`Vpc::partition_nats`], [`Vpc::cut_internet`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Faults {
    partition: bool,
    /// The taps of the instances whose internet is cut.
    cut: std::collections::BTreeSet<String>,
}

pub struct Vpc {
    pub ns: Namespaces,
    pub seen: Arc<Mutex<Seen>>,
    pub imds: Arc<Mutex<ImdsState>>,
    /// IMDS of the pair's instances, by primary address (empty but for the pair).
    pub imds_instances: ImdsInstances,
    faults: Mutex<Faults>,
    /// How many NTP requests the time double answered.
    pub ntp_served: Arc<AtomicU64>,
    aws: Option<aws::AwsDouble>,
    stop: Arc<AtomicBool>,
    dnsmasq: Option<Child>,
    dnsmasq_args: Vec<String>,
    pub dnsmasq_log: PathBuf,
    dir: tempfile::TempDir,
}

impl Vpc {
    /// Builds the namespaces, links, routes and filters, and starts the services.
    pub fn build(lease_secs: u32, user_data: Option<String>) -> Result<Self> {
        let mut ns = Namespaces::new("vpc");
        for n in [
            "vpc", "private", "private2", "internet", "pubhost", "pubhost2", "fwd",
        ] {
            ns.add(n)?;
        }
        // Readable by others as the pid-named directory it replaces was: dnsmasq drops to
        // nobody after opening its files.
        let dir = tempfile::Builder::new()
            .prefix("xtask-vpc-")
            .permissions(std::fs::Permissions::from_mode(0o755))
            .tempdir()
            .context("creating the VPC's temporary directory")?;
        // public subnet bridge and the NAT's tap
        ns.ip("vpc", "link add br0 type bridge")?;
        ns.ip("vpc", "link set br0 mtu 9001")?;
        ns.ip("vpc", "addr add 10.0.0.1/24 dev br0")?;
        for tap in [TAP, TAP2] {
            ns.ip("vpc", &format!("tuntap add dev {tap} mode tap"))?;
            ns.ip("vpc", &format!("link set {tap} mtu 9001 master br0 up"))?;
        }
        ns.ip("vpc", "link set br0 up")?;
        // (the CI kernel has no dummy interfaces; a /32 on lo serves just as well)
        ns.ip("vpc", &format!("addr add {IMDS}/32 dev lo"))?;
        ns.ip("vpc", &format!("addr add {}/32 dev lo", ntp::NTP))?;
        // hosts on the public subnet
        for (host, addr, gw) in [
            ("pubhost", PUBHOST, NAT_ADDR),
            ("pubhost2", PUBHOST2, FORWARDER),
            ("fwd", FORWARDER, ROUTER),
        ] {
            ns.veth(host, "eth0", "vpc", &format!("p-{host}"))?;
            ns.ip("vpc", &format!("link set p-{host} mtu 9001 master br0 up"))?;
            ns.ip(host, "link set eth0 mtu 9001 up")?;
            ns.ip(host, &format!("addr add {addr}/24 dev eth0"))?;
            ns.ip(host, &format!("route add default via {gw}"))?;
        }
        // private subnet
        ns.veth("private", "eth0", "vpc", "v-priv")?;
        ns.ip("vpc", "link set v-priv mtu 9001 up")?;
        ns.ip("vpc", "addr add 10.0.1.1/24 dev v-priv")?;
        ns.ip("private", "link set eth0 mtu 9001 up")?;
        ns.ip("private", &format!("addr add {CLIENT}/24 dev eth0"))?;
        ns.ip("private", "route add default via 10.0.1.1")?;
        ns.veth("private2", "eth0", "vpc", "v-priv2")?;
        ns.ip("vpc", "link set v-priv2 mtu 9001 up")?;
        ns.ip("vpc", "addr add 198.18.1.1/24 dev v-priv2")?;
        ns.ip("private2", "link set eth0 mtu 9001 up")?;
        ns.ip("private2", &format!("addr add {CLIENT2}/24 dev eth0"))?;
        ns.ip("private2", "route add default via 198.18.1.1")?;
        // internet: the vpc side of the link is the 1500-byte segment; the server's side is 9001
        ns.veth("internet", "eth0", "vpc", "v-inet")?;
        ns.ip("vpc", "link set v-inet mtu 1500 up")?;
        ns.ip("vpc", "addr add 192.0.2.1/24 dev v-inet")?;
        ns.ip("internet", "link set eth0 mtu 9001 up")?;
        ns.ip("internet", "addr add 192.0.2.2/24 dev eth0")?;
        ns.ip("internet", &format!("addr add {SERVER}/32 dev lo"))?;
        ns.ip("internet", "route add 198.51.100.0/24 via 192.0.2.1")?;
        ns.ip("vpc", "route add default via 192.0.2.2")?;
        // the private subnet's route table: 0.0.0.0/0 -> the NAT instance
        ns.ip("vpc", "route add 10.0.0.0/24 dev br0 table 100")?;
        ns.ip("vpc", "route add 10.0.1.0/24 dev v-priv table 100")?;
        ns.ip(
            "vpc",
            &format!("route add default via {NAT_ADDR} dev br0 table 100"),
        )?;
        ns.ip("vpc", "route add 198.18.1.0/24 dev v-priv2 table 100")?;
        ns.ip("vpc", "rule add iif v-priv lookup 100 priority 100")?;
        ns.ip("vpc", "rule add iif v-priv2 lookup 100 priority 100")?;
        // an attacker on the internet that sends to private addresses through the NAT
        ns.ip("internet", "route add 10.0.1.0/24 via 192.0.2.1")?;
        ns.ip(
            "vpc",
            "route add 10.0.1.0/24 via 10.0.0.10 dev br0 table 101",
        )?;
        ns.ip(
            "vpc",
            "rule add iif v-inet to 10.0.1.0/24 lookup 101 priority 101",
        )?;
        for n in ["vpc", "fwd"] {
            ns.sysctl(n, "net.ipv4.ip_forward", "1")?;
        }
        for key in ["all", "default", "br0", "v-priv", "v-priv2", "v-inet"] {
            ns.sysctl("vpc", &format!("net.ipv4.conf.{key}.rp_filter"), "0")?;
            ns.sysctl("vpc", &format!("net.ipv4.conf.{key}.send_redirects"), "0")?;
        }
        // the control forwarder sends redirects, as Linux does by default
        ns.sysctl("fwd", "net.ipv4.conf.all.send_redirects", "1")?;
        ns.sysctl("fwd", "net.ipv4.conf.eth0.send_redirects", "1")?;
        ns.nft(
            "internet",
            &format!("table ip blackhole {{ chain input {{ type filter hook input priority 0; tcp dport {BLACKHOLE_PORT} counter drop; }}; }}"),
        )?;
        // the NAT subnet's own hosts route the private subnet through the router
        ns.nft("vpc", &igw_rules())?;
        for host in ["pubhost", "pubhost2"] {
            ns.nft(host, "table ip redirects { chain input { type filter hook input priority 0; icmp type redirect counter; }; }")?;
        }

        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let imds = Arc::new(Mutex::new(ImdsState::new(NAT_MAC, INSTANCE_ID, user_data)));
        let imds_instances: ImdsInstances = Arc::new(Mutex::new(BTreeMap::new()));
        let ntp_served = Arc::new(AtomicU64::new(0));
        ntp::start(&ns.name("vpc"), Arc::clone(&ntp_served), Arc::clone(&stop))?;
        start_internet_servers(&ns.name("internet"), Arc::clone(&seen), Arc::clone(&stop))?;
        start_imds(
            &ns.name("vpc"),
            Arc::clone(&imds),
            Arc::clone(&imds_instances),
            Arc::clone(&stop),
        )?;
        let dnsmasq_log = dir.path().join("dnsmasq.log");
        let dnsmasq_args = vec![
            "--no-daemon".to_string(),
            "--conf-file=/dev/null".into(),
            "--port=0".into(),
            "--interface=br0".into(),
            "--bind-interfaces".into(),
            "--log-dhcp".into(),
            format!("--log-facility={}", dnsmasq_log.display()),
            format!("--dhcp-leasefile={}", dir.path().join("leases").display()),
            format!("--dhcp-range=10.0.0.100,10.0.0.200,{lease_secs}"),
            format!("--dhcp-host={NAT_MAC},{NAT_ADDR}"),
            format!("--dhcp-host={SECOND_MAC},{SECOND_ADDR}"),
            format!("--dhcp-option=option:router,{ROUTER}"),
            "--dhcp-option=option:mtu,9001".into(),
            format!("--pid-file={}", dir.path().join("dnsmasq.pid").display()),
        ];
        let mut vpc = Self {
            ns,
            seen,
            imds,
            imds_instances,
            faults: Mutex::new(Faults::default()),
            ntp_served,
            aws: None,
            stop,
            dnsmasq: None,
            dnsmasq_args,
            dnsmasq_log,
            dir,
        };
        vpc.start_dnsmasq()?;
        Ok(vpc)
    }

    /// Starts the control plane (see the module's doc): the AWS double in the internet
    /// namespace at [`aws::ENDPOINT`], seeded "just launched" and followed from now on; dnsmasq
    /// restarted as the VPC resolver; the IMDS double serving the seeded NAT instance's id,
    /// ENI id, role and fresh credentials (valid 6 hours). `root` is the workspace (for the
    /// test CA, [`aws::TEST_CA_DIR`]); `moto_server` is what `hostdeps::ensure_moto` returns.
    pub fn start_aws(
        &mut self,
        root: &std::path::Path,
        moto_server: &std::path::Path,
    ) -> Result<&aws::AwsDouble> {
        self.start_control_plane(root, moto_server, false)
    }

    /// [`Vpc::start_aws`] with the failover pair's seed (see the module's doc): `nat-a` on
    /// [`TAP`] and `nat-b` on [`TAPB`], both running with the instance profile and the tag
    /// `nat:failover-group=e2e`; private route table `a` (10.0.1.0/24) and `b`
    /// (198.18.1.0/24), neither with a default route; an Elastic IP allocation for each
    /// ([`aws::Seed::allocation_of`]). IMDS answers each instance as itself, with fresh
    /// credentials (6 hours) and no user-data ([`Vpc::set_instance_user_data`]).
    pub fn start_aws_pair(
        &mut self,
        root: &std::path::Path,
        moto_server: &std::path::Path,
    ) -> Result<&aws::AwsDouble> {
        self.pair_data_plane()?;
        self.start_control_plane(root, moto_server, true)?;
        let double = self.aws()?;
        let seed = double.seed().clone();
        let mut states = BTreeMap::new();
        for (name, _, mac, addr, _) in PAIR {
            let inst = seed.instance(name)?;
            let mut st = ImdsState::new(mac, &inst.instance_id, None);
            st.interface_id = Some(inst.eni_id.clone());
            st.vpc_id = Some(seed.vpc_id.clone());
            st.role = Some(seed.role_name.clone());
            st.credentials = Some(double.credentials(Duration::from_secs(6 * 3600))?);
            st.local_ipv4s = Some(addr.to_string());
            states.insert(addr, st);
        }
        *self.imds_instances_state()? = states;
        // Follow the addresses the data plane already has (secondaries assigned later come
        // through the apply hook).
        let plane = double.sync()?;
        follow_local_ipv4s(&self.imds_instances, &plane);
        self.aws()
    }

    /// The pair's place in the data plane: nat-b's tap and fixed DHCP address, a kernel table
    /// for private table `b`, the internet namespace forwarding (the hairpin), and the
    /// (empty) faults tables.
    fn pair_data_plane(&mut self) -> Result<()> {
        let ns = &self.ns;
        ns.ip("vpc", &format!("tuntap add dev {TAPB} mode tap"))?;
        ns.ip("vpc", &format!("link set {TAPB} mtu 9001 master br0 up"))?;
        let b = aws::TABLE_B;
        for route in [
            "10.0.0.0/24 dev br0",
            "10.0.1.0/24 dev v-priv",
            "198.18.1.0/24 dev v-priv2",
        ] {
            ns.ip("vpc", &format!("route add {route} table {b}"))?;
        }
        ns.ip("vpc", &format!("route add unreachable default table {b}"))?;
        ns.ip("vpc", "rule del iif v-priv2 lookup 100 priority 100")?;
        ns.ip(
            "vpc",
            &format!("rule add iif v-priv2 lookup {b} priority 100"),
        )?;
        // The gateway sends traffic for a public address back in, as AWS's does.
        ns.sysctl("internet", "net.ipv4.ip_forward", "1")?;
        for key in ["all", "default", "eth0"] {
            ns.sysctl(
                "internet",
                &format!("net.ipv4.conf.{key}.send_redirects"),
                "0",
            )?;
        }
        self.dnsmasq_args
            .push(format!("--dhcp-host={NATB_MAC},{NATB_ADDR}"));
        self.apply_faults(&Faults::default())
    }

    fn start_control_plane(
        &mut self,
        root: &std::path::Path,
        moto_server: &std::path::Path,
        pair: bool,
    ) -> Result<&aws::AwsDouble> {
        let ca_dir = root.join(aws::TEST_CA_DIR);
        self.ns
            .ip("internet", &format!("addr add {}/32 dev lo", aws::ENDPOINT))?;
        self.ns
            .ip("fwd", &format!("link set eth0 address {}", aws::FWD_MAC))?;
        let imds = Arc::clone(&self.imds);
        let instances = Arc::clone(&self.imds_instances);
        let double = aws::AwsDouble::start(aws::Start {
            moto_server,
            internet_ns: &self.ns.name("internet"),
            vpc_ns: &self.ns.name("vpc"),
            dir: self.dir.path(),
            ca_dir: &ca_dir,
            // As on EC2, `local-ipv4s` lists the primary ENI's addresses as they change.
            on_apply: Box::new(move |plane| {
                if let Ok(mut g) = imds.lock()
                    && let Some(eni) = plane.enis.values().find(|e| e.mac == g.mac)
                {
                    let v: Vec<String> = eni.private_ips.iter().map(|a| a.to_string()).collect();
                    g.local_ipv4s = Some(v.join("\n"));
                }
                follow_local_ipv4s(&instances, plane);
            }),
            pair,
        })
        .context("starting the AWS double")?;
        let nat = double
            .seed()
            .instance(if pair { "nat-a" } else { "nat" })?
            .clone();
        let creds = double.credentials(Duration::from_secs(6 * 3600))?;
        {
            let mut g = self.imds_state()?;
            g.instance_id = nat.instance_id;
            g.interface_id = Some(nat.eni_id);
            g.vpc_id = Some(double.seed().vpc_id.clone());
            g.role = Some(double.seed().role_name.clone());
            g.credentials = Some(creds);
        }
        self.aws = Some(double);
        self.dnsmasq_args.retain(|a| a != "--port=0");
        self.dnsmasq_args.extend(resolver_args());
        self.restart_dnsmasq()?;
        self.aws()
    }

    /// The AWS double, once [`Vpc::start_aws`] started it.
    pub fn aws(&self) -> Result<&aws::AwsDouble> {
        self.aws
            .as_ref()
            .context("the VPC has no control plane: call start_aws first")
    }

    /// New instance-role credentials valid for `lifetime`, served by IMDS from now on (as
    /// EC2 rotates them); returns them.
    pub fn refresh_imds_credentials(&self, lifetime: Duration) -> Result<aws::Credentials> {
        let creds = self.aws()?.credentials(lifetime)?;
        self.imds_state()?.credentials = Some(creds.clone());
        Ok(creds)
    }

    pub fn start_dnsmasq(&mut self) -> Result<()> {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns.name("vpc"), "dnsmasq"])
            .args(&self.dnsmasq_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting dnsmasq (package dnsmasq-base)")?;
        self.dnsmasq = Some(child);
        Ok(())
    }

    /// Restarts the DHCP server (the lease file survives, as a real VPC's state does).
    pub fn restart_dnsmasq(&mut self) -> Result<()> {
        self.stop_dnsmasq();
        std::thread::sleep(Duration::from_millis(200));
        self.start_dnsmasq()
    }

    fn stop_dnsmasq(&mut self) {
        if let Some(mut c) = self.dnsmasq.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// dnsmasq's command line (after `start_aws`, with the resolver's options).
    pub fn dnsmasq_args(&self) -> &[String] {
        &self.dnsmasq_args
    }

    pub fn dnsmasq_log(&self) -> String {
        std::fs::read_to_string(&self.dnsmasq_log).unwrap_or_default()
    }

    /// What the internet servers saw. A server thread that panicked poisons the record: that
    /// is an error, never an empty record (which would let a "no stranger seen" check pass).
    pub fn seen(&self) -> Result<MutexGuard<'_, Seen>> {
        self.seen.lock().map_err(|_| {
            anyhow!("the internet servers' record is poisoned: a server thread panicked")
        })
    }

    /// The IMDS double's state; poisoned is an error, as for `seen`.
    pub fn imds_state(&self) -> Result<MutexGuard<'_, ImdsState>> {
        self.imds
            .lock()
            .map_err(|_| anyhow!("the IMDS double's state is poisoned: its thread panicked"))
    }

    pub fn set_user_data(&self, data: Option<String>) {
        if let Ok(mut s) = self.imds.lock() {
            s.user_data = data;
        }
    }

    /// Which MAC the IMDS double names as the primary ENI from now on.
    pub fn set_imds_mac(&self, mac: &str) {
        if let Ok(mut s) = self.imds.lock() {
            s.mac = mac.to_string();
        }
    }

    /// What the IMDS double serves as the VPC's CIDR blocks from now on.
    pub fn set_imds_vpc_cidrs(&self, cidrs: &[&str]) {
        if let Ok(mut s) = self.imds.lock() {
            s.vpc_cidrs = cidrs.join("\n");
        }
    }

    /// Makes the IMDS double answer 503 to everything until `d` after its next request, as a
    /// throttled or overloaded IMDS does.
    pub fn set_imds_unavailable_for(&self, d: Duration) {
        if let Ok(mut s) = self.imds.lock() {
            s.unavailable_for = d;
            s.first_request = None;
            s.refused = 0;
        }
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The pair's IMDS states; poisoned is an error, as for `seen`.
    pub fn imds_instances_state(&self) -> Result<MutexGuard<'_, BTreeMap<Ipv4Addr, ImdsState>>> {
        self.imds_instances
            .lock()
            .map_err(|_| anyhow!("the IMDS double's state is poisoned: its thread panicked"))
    }

    /// What IMDS serves pair member `name` (`nat-a`, `nat-b`) as user-data from now on.
    pub fn set_instance_user_data(&self, name: &str, data: Option<String>) -> Result<()> {
        let (_, _, _, addr, _) = member(name)?;
        let mut g = self.imds_instances_state()?;
        let st = g
            .get_mut(&addr)
            .with_context(|| format!("IMDS knows no {name}: call start_aws_pair first"))?;
        st.user_data = data;
        Ok(())
    }

    /// Drops every frame between the pair's taps, both ways, on the bridge (`on`), or stops
    /// (`!on`). Both still reach the router, the internet, and each other's public address
    /// through the gateway.
    pub fn partition_nats(&self, on: bool) -> Result<()> {
        let mut f = self.faults_state()?.clone();
        f.partition = on;
        self.apply_faults(&f)
    }

    /// Cuts pair member `name` off the internet (`on`) or reconnects it: what its ENI sends
    /// out through the gateway, and what the gateway lets in for any of its addresses, is
    /// dropped; its traffic inside the VPC (router, IMDS, DNS, the other NAT, the private
    /// clients) flows.
    pub fn cut_internet(&self, name: &str, on: bool) -> Result<()> {
        let (_, tap, _, _, _) = member(name)?;
        let mut f = self.faults_state()?.clone();
        if on {
            f.cut.insert(tap.to_string());
        } else {
            f.cut.remove(tap);
        }
        self.apply_faults(&f)
    }

    fn faults_state(&self) -> Result<MutexGuard<'_, Faults>> {
        self.faults
            .lock()
            .map_err(|_| anyhow!("the faults' state is poisoned"))
    }

    fn apply_faults(&self, f: &Faults) -> Result<()> {
        let mut g = self.faults_state()?;
        self.ns
            .nft("vpc", &faults_script(f))
            .context("the faults tables")?;
        *g = f.clone();
        Ok(())
    }

    /// Drops connection replication (TCP 7472) on the bridge, both ways (`on`), or stops: the
    /// failover tests' control, flows that start meanwhile are never replicated.
    pub fn block_replication(&self, on: bool) -> Result<()> {
        if on {
            self.ns.nft(
                "vpc",
                "table bridge nosync { chain block { type filter hook forward priority 0; policy accept; ether type ip tcp dport 7472 counter drop; ether type ip tcp sport 7472 counter drop; }; }",
            )
        } else {
            self.ns.nft("vpc", "delete table bridge nosync")
        }
        .context("the replication block")
    }

    /// Packets the faults dropped so far: (partition, internet cut).
    pub fn fault_drops(&self) -> Result<(u64, u64)> {
        let bridge = self
            .ns
            .exec("vpc", "nft", &["list", "table", "bridge", "faults"])?;
        let ip = self
            .ns
            .exec("vpc", "nft", &["list", "table", "ip", "faults"])?;
        let sum = |text: &str, tag: &str| -> u64 {
            text.lines()
                .filter(|l| l.contains(tag))
                .filter_map(counter_packets)
                .sum()
        };
        Ok((
            sum(&bridge, "\"partition\""),
            sum(&bridge, "\"cut\"") + sum(&ip, "\"cut\""),
        ))
    }

    /// Replaces pair member `name`'s tap with a veth into a namespace of its own (short name
    /// `name`) that stands in for the guest: the member's MAC and primary address, default
    /// route via the router (MTU 1500, SYNs clamped), forwarding on and the private ranges
    /// masqueraded, as the appliance does.
    /// Returns the namespace's full name. For tests without guests.
    pub fn stand_in(&mut self, name: &str) -> Result<String> {
        let (_, tap, mac, addr, _) = member(name)?;
        self.ns.ip("vpc", &format!("link del {tap}"))?;
        let full = self.ns.add(name)?;
        self.ns.veth(name, "eth0", "vpc", tap)?;
        self.ns
            .ip("vpc", &format!("link set {tap} mtu 9001 master br0 up"))?;
        self.ns
            .ip(name, &format!("link set eth0 address {mac} mtu 9001 up"))?;
        self.ns.ip(name, &format!("addr add {addr}/24 dev eth0"))?;
        self.ns
            .ip(name, &format!("route add default via {ROUTER} mtu 1500"))?;
        self.ns.sysctl(name, "net.ipv4.ip_forward", "1")?;
        // As the appliance: 1500 bytes beyond the VPC (the gateway's path-MTU black hole
        // would eat bigger segments), forwarded SYNs clamped to it.
        self.ns.nft(
            name,
            "table ip stand_in {
  chain post { type nat hook postrouting priority srcnat; oifname \"eth0\" ip saddr { 10.0.1.0/24, 198.18.0.0/16 } masquerade; }
  chain forward { type filter hook forward priority 0; tcp flags syn tcp option maxseg size set rt mtu; }
}",
        )?;
        Ok(full)
    }

    /// Deletes `tap` and creates it again on the bridge (a stand-in's veth end, or a tap a
    /// killed QEMU left): as a new instance would find its ENI. A new QEMU can also take a
    /// tap over as it is (taps here are persistent), so this is needed only after
    /// [`Vpc::stand_in`].
    pub fn recreate_tap(&self, tap: &str) -> Result<()> {
        let _ = self.ns.ip("vpc", &format!("link del {tap}"));
        self.ns
            .ip("vpc", &format!("tuntap add dev {tap} mode tap"))?;
        self.ns
            .ip("vpc", &format!("link set {tap} mtu 9001 master br0 up"))?;
        Ok(())
    }

    /// The VM configuration of pair member `name` (`nat-a`, `nat-b`): Graviton-like as the
    /// e2e boots are (`virt-4.1`, console on a PCI 16550 logged to its own file), one vCPU,
    /// its tap with its MAC in slot 5, QEMU in the vpc namespace.
    pub fn pair_vm_config(&self, disk: &std::path::Path, name: &str) -> Result<qemu::VmConfig> {
        let (_, tap, mac, _, _) = member(name)?;
        let mut cfg = qemu::VmConfig::new(disk.to_path_buf());
        cfg.machine = qemu::Machine::Virt41;
        cfg.console = qemu::Console::PciSerial;
        cfg.cpus = 1;
        cfg.nics = vec![qemu::Nic::slot5(qemu::Net::Tap(tap.to_string()), mac)];
        cfg.netns = Some(self.ns.name("vpc"));
        Ok(cfg)
    }

    /// Boots the pair: nat-a then nat-b, each with [`Vpc::pair_vm_config`] changed by
    /// `tweak(name, config)`.
    pub fn boot_pair(
        &self,
        disk: &std::path::Path,
        tweak: impl Fn(&str, &mut qemu::VmConfig),
    ) -> Result<(qemu::Vm, qemu::Vm)> {
        let boot = |name: &str| -> Result<qemu::Vm> {
            let mut cfg = self.pair_vm_config(disk, name)?;
            tweak(name, &mut cfg);
            qemu::Vm::start(&cfg).with_context(|| format!("booting {name}"))
        };
        let a = boot("nat-a")?;
        let b = boot("nat-b")?;
        Ok((a, b))
    }

    /// Redirects counted by the nftables counter in a host's namespace.
    pub fn redirects(&self, host: &str) -> Result<u64> {
        let out = self
            .ns
            .exec(host, "nft", &["list", "table", "ip", "redirects"])?;
        counter_packets(&out).with_context(|| format!("no counter in {out}"))
    }

    pub fn dump(&self) -> String {
        self.ns.dump()
    }
}

impl Drop for Vpc {
    fn drop(&mut self) {
        self.aws.take();
        self.stop.store(true, Ordering::Relaxed);
        self.stop_dnsmasq();
    }
}

/// Pair member `name`: (name, tap, MAC, primary address, public address).
pub fn member(
    name: &str,
) -> Result<(&'static str, &'static str, &'static str, Ipv4Addr, Ipv4Addr)> {
    PAIR.into_iter()
        .find(|m| m.0 == name)
        .with_context(|| format!("{name:?} is not a member of the pair (nat-a, nat-b)"))
}

/// The pair's IMDS `local-ipv4s` follow their ENIs' addresses, by MAC.
fn follow_local_ipv4s(instances: &ImdsInstances, plane: &aws::DataPlane) {
    if let Ok(mut g) = instances.lock() {
        for st in g.values_mut() {
            if let Some(eni) = plane.enis.values().find(|e| e.mac == st.mac) {
                let v: Vec<String> = eni.private_ips.iter().map(|a| a.to_string()).collect();
                st.local_ipv4s = Some(v.join("\n"));
            }
        }
    }
}

/// Marks in the faults tables: a packet the gateway lets in from the internet, and a frame
/// from a cut instance's port.
const FROM_INTERNET: u32 = 0x4e41_0001;
const FROM_CUT: u32 = 0x4e41_0002;

/// The `faults` tables. Bridge: the partition (frames between the pair's taps dropped in both
/// directions), frames from a cut port marked, and frames the gateway let in dropped before
/// they leave by a cut port. IP: what comes in from the internet marked, marked frames from
/// a cut port dropped on their way out to it. Marks rather than addresses, so that
/// addresses moving between ENIs cannot open a hole.
fn faults_script(f: &Faults) -> String {
    let mut fwd = String::new();
    if f.partition {
        for (a, b) in [(TAP, TAPB), (TAPB, TAP)] {
            fwd.push_str(&format!(
                "    iifname \"{a}\" oifname \"{b}\" counter drop comment \"partition\"\n"
            ));
        }
    }
    let mut pre = String::new();
    let mut post = String::new();
    for tap in &f.cut {
        pre.push_str(&format!(
            "    iifname \"{tap}\" meta mark set {FROM_CUT:#x}\n"
        ));
        post.push_str(&format!(
            "    oifname \"{tap}\" meta mark {FROM_INTERNET:#x} counter drop comment \"cut\"\n"
        ));
    }
    format!(
        "table bridge faults\ndelete table bridge faults\ntable bridge faults {{
  chain pre {{ type filter hook prerouting priority -10;
{pre}  }}
  chain between {{ type filter hook forward priority -10;
{fwd}  }}
  chain post {{ type filter hook postrouting priority -10;
{post}  }}
}}
table ip faults\ndelete table ip faults\ntable ip faults {{
  chain between {{ type filter hook forward priority -10;
    iifname \"v-inet\" meta mark set {FROM_INTERNET:#x}
    oifname \"v-inet\" meta mark {FROM_CUT:#x} counter drop comment \"cut\"
  }}
}}
"
    )
}

/// dnsmasq as the VPC resolver: DNS on br0 for the regional endpoints only (no upstream), and
/// its address as DHCP option 6 (on AWS the resolver is the VPC base +2; the router will do).
fn resolver_args() -> Vec<String> {
    let mut v = vec![
        "--port=53".to_string(),
        "--no-resolv".into(),
        "--no-hosts".into(),
        format!("--dhcp-option=option:dns-server,{ROUTER}"),
    ];
    for host in [aws::EC2_HOST, aws::MONITORING_HOST] {
        v.push(format!("--address=/{host}/{}", aws::ENDPOINT));
    }
    v
}

/// The internet gateway in the vpc namespace, and the path-MTU black hole.
fn igw_rules() -> String {
    format!(
        "table ip igw {{
  chain pre {{ type nat hook prerouting priority dstnat; iifname \"v-inet\" ip daddr {NAT_PUBLIC} dnat to {NAT_ADDR}; }}
  chain post {{ type nat hook postrouting priority srcnat; oifname \"v-inet\" ip saddr {NAT_ADDR} snat to {NAT_PUBLIC}; }}
  chain forward_filter {{ type filter hook forward priority 0;
    icmp type destination-unreachable icmp code frag-needed counter drop
    oifname \"v-inet\" ip saddr != 10.0.0.0/24 counter drop
  }}
  chain output_filter {{ type filter hook output priority 0;
    icmp type destination-unreachable icmp code frag-needed counter drop
  }}
}}"
    )
}

/// The packet count of the first `counter packets N` in nft output.
pub fn counter_packets(nft_text: &str) -> Option<u64> {
    let i = nft_text.find("counter packets ")?;
    nft_text[i + 16..].split_whitespace().next()?.parse().ok()
}

fn peer_v4(addr: SocketAddr) -> Option<Ipv4Addr> {
    match addr {
        SocketAddr::V4(a) => Some(*a.ip()),
        SocketAddr::V6(_) => None,
    }
}

fn start_internet_servers(ns: &str, seen: Arc<Mutex<Seen>>, stop: Arc<AtomicBool>) -> Result<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let seen2 = Arc::clone(&seen);
    let stop2 = Arc::clone(&stop);
    let tx2 = tx.clone();
    spawn_in(ns, move || {
        let l = match TcpListener::bind((SERVER, HTTP_PORT)) {
            Ok(l) => l,
            Err(e) => {
                let _ = tx2.send(Err(format!("http bind: {e}")));
                return;
            }
        };
        let _ = l.set_nonblocking(true);
        let _ = tx2.send(Ok(()));
        while !stop2.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((s, peer)) => {
                    let seen = Arc::clone(&seen2);
                    std::thread::spawn(move || {
                        if let (Some(ip), Ok(mut g)) = (peer_v4(peer), seen.lock()) {
                            g.http_clients.push(ip);
                        }
                        let _ = serve_http(s, &seen);
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    })?;
    spawn_in(ns, move || {
        let s = match UdpSocket::bind((SERVER, UDP_PORT)) {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(Err(format!("udp bind: {e}")));
                return;
            }
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
        let _ = tx.send(Ok(()));
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((n, peer)) = s.recv_from(&mut buf) {
                if let (Some(ip), Ok(mut g)) = (peer_v4(peer), seen.lock()) {
                    g.udp_clients.push(ip);
                }
                let _ = s.send_to(&buf[..n], peer);
            }
        }
    })?;
    for _ in 0..2 {
        rx.recv_timeout(Duration::from_secs(5))
            .context("internet servers did not start")?
            .map_err(anyhow::Error::msg)?;
    }
    Ok(())
}

/// The request line's method and path, and the headers (names lower-cased).
fn read_request(r: &mut impl BufRead) -> Result<(String, String, BTreeMap<String, String>)> {
    let mut request = String::new();
    r.read_line(&mut request)?;
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let mut parts = request.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    Ok((method, path, headers))
}

/// A minimal HTTP/1.1 server: `GET /bytes/N` sends N bytes; `GET /paced/N/RATE` sends N bytes
/// of `meters::pattern_byte` at about RATE bytes/s; `POST /upload` reads the body and answers
/// with its length. One request per connection.
fn serve_http(s: TcpStream, seen: &Arc<Mutex<Seen>>) -> Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut w = s;
    let (method, path, headers) = read_request(&mut r)?;
    let (method, path) = (method.as_str(), path.as_str());
    if method == "GET" && path.starts_with("/paced/") {
        let (bytes, rate) = meters::parse_paced(path)?;
        // A client gone mid-transfer is its business, not the server's error.
        let _ = meters::serve_paced(&mut w, bytes, rate);
        return Ok(());
    }
    let body: Vec<u8> = if method == "GET" && path.starts_with("/bytes/") {
        let n: usize = path[7..].parse().unwrap_or(0).min(64 << 20);
        vec![b'x'; n]
    } else if method == "POST" && path == "/upload" {
        let len: u64 = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if headers
            .get("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
        {
            w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let got = std::io::copy(&mut (&mut r).take(len), &mut std::io::sink())?;
        if let Ok(mut g) = seen.lock() {
            g.uploads.push(got);
        }
        format!("{got}\n").into_bytes()
    } else {
        b"hello from the internet\n".to_vec()
    };
    write!(
        w,
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    w.write_all(&body)?;
    w.flush()?;
    Ok(())
}

/// The IMDSv2 double: token PUT, then GETs that require the token.
fn start_imds(
    ns: &str,
    state: Arc<Mutex<ImdsState>>,
    instances: ImdsInstances,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    spawn_in(ns, move || {
        let l = match TcpListener::bind((IMDS, 80)) {
            Ok(l) => l,
            Err(e) => {
                let _ = tx.send(Err(format!("imds bind: {e}")));
                return;
            }
        };
        let _ = l.set_nonblocking(true);
        let _ = tx.send(Ok(()));
        while !stop.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((s, _)) => {
                    let _ = s.set_nonblocking(false);
                    let _ = serve_imds(s, &state, &instances);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    })?;
    rx.recv_timeout(Duration::from_secs(5))
        .context("IMDS double did not start")?
        .map_err(anyhow::Error::msg)?;
    Ok(())
}

const TOKEN: &str = "e2e-token-AQAEAHyz";

/// The instance's identity as IMDS serves it (a snapshot of [`ImdsState`]).
struct Identity {
    instance_id: String,
    role: Option<String>,
    credentials: Option<aws::Credentials>,
    interface_id: Option<String>,
    vpc_id: Option<String>,
    local_ipv4s: Option<String>,
}

/// Which pair member's state answers a request from `peer`: the one with that primary
/// address, else the one whose ENI has it now.
fn instance_of(states: &BTreeMap<Ipv4Addr, ImdsState>, peer: Ipv4Addr) -> Option<Ipv4Addr> {
    if states.contains_key(&peer) {
        return Some(peer);
    }
    let peer_s = peer.to_string();
    states
        .iter()
        .find(|(_, st)| {
            st.local_ipv4s
                .as_deref()
                .is_some_and(|l| l.lines().any(|a| a == peer_s))
        })
        .map(|(k, _)| *k)
}

fn serve_imds(
    s: TcpStream,
    state: &Arc<Mutex<ImdsState>>,
    instances: &ImdsInstances,
) -> Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let peer = s.peer_addr().ok().and_then(peer_v4);
    let mut r = BufReader::new(s.try_clone()?);
    let mut w = s;
    let (method, path, headers) = read_request(&mut r)?;
    let (user_data, mac, cidrs, unavailable, ids) = {
        let mut pair = instances
            .lock()
            .map_err(|_| anyhow::anyhow!("imds state poisoned"))?;
        let mut single;
        let g: &mut ImdsState = match peer.and_then(|p| instance_of(&pair, p)) {
            Some(k) => pair
                .get_mut(&k)
                .context("the instance's IMDS state went away")?,
            None => {
                single = state
                    .lock()
                    .map_err(|_| anyhow::anyhow!("imds state poisoned"))?;
                &mut single
            }
        };
        g.requests.push(format!("{method} {path}"));
        let first = *g.first_request.get_or_insert_with(Instant::now);
        let unavailable = first.elapsed() < g.unavailable_for;
        if unavailable {
            g.refused += 1;
        }
        (
            g.user_data.clone(),
            g.mac.clone(),
            g.vpc_cidrs.clone(),
            unavailable,
            Identity {
                instance_id: g.instance_id.clone(),
                role: g.role.clone(),
                credentials: g.credentials.clone(),
                interface_id: g.interface_id.clone(),
                vpc_id: g.vpc_id.clone(),
                local_ipv4s: g.local_ipv4s.clone(),
            },
        )
    };
    let authorised = headers
        .get("x-aws-ec2-metadata-token")
        .is_some_and(|t| t == TOKEN);
    let mac_prefix = format!("/latest/meta-data/network/interfaces/macs/{mac}/");
    let (status, body) = match (method.as_str(), path.as_str()) {
        _ if unavailable => ("503 Service Unavailable", String::new()),
        ("PUT", "/latest/api/token")
            if headers.contains_key("x-aws-ec2-metadata-token-ttl-seconds") =>
        {
            ("200 OK", TOKEN.to_string())
        }
        ("PUT", _) => ("400 Bad Request", String::new()),
        ("GET", _) if !authorised => ("401 Unauthorized", String::new()),
        ("GET", "/latest/meta-data/mac") => ("200 OK", mac.clone()),
        ("GET", "/latest/meta-data/instance-id") => ("200 OK", ids.instance_id.clone()),
        ("GET", "/latest/meta-data/placement/region") => ("200 OK", aws::REGION.to_string()),
        ("GET", "/latest/meta-data/placement/availability-zone") => {
            ("200 OK", format!("{}a", aws::REGION))
        }
        ("GET", "/latest/meta-data/iam/security-credentials/") => match &ids.role {
            Some(r) => ("200 OK", r.clone()),
            None => ("404 Not Found", String::new()),
        },
        ("GET", p) if p.starts_with("/latest/meta-data/iam/security-credentials/") => {
            let name = &p["/latest/meta-data/iam/security-credentials/".len()..];
            match (&ids.role, &ids.credentials) {
                (Some(r), Some(c)) if r == name => ("200 OK", serde_json::to_string(c)?),
                _ => ("404 Not Found", String::new()),
            }
        }
        ("GET", p) if p.strip_prefix(&mac_prefix) == Some("interface-id") => {
            match &ids.interface_id {
                Some(i) => ("200 OK", i.clone()),
                None => ("404 Not Found", String::new()),
            }
        }
        ("GET", p) if p.strip_prefix(&mac_prefix) == Some("vpc-id") => match &ids.vpc_id {
            Some(v) => ("200 OK", v.clone()),
            None => ("404 Not Found", String::new()),
        },
        ("GET", p) if p.strip_prefix(&mac_prefix) == Some("local-ipv4s") => {
            match &ids.local_ipv4s {
                Some(i) => ("200 OK", i.clone()),
                None => ("404 Not Found", String::new()),
            }
        }
        ("GET", "/latest/user-data") => match user_data {
            Some(u) => ("200 OK", u),
            None => ("404 Not Found", String::new()),
        },
        ("GET", p) if p.strip_prefix(&mac_prefix) == Some("vpc-ipv4-cidr-blocks") => {
            ("200 OK", cidrs)
        }
        ("GET", p) if p.strip_prefix(&mac_prefix) == Some("vpc-ipv4-cidr-block") => {
            // The primary CIDR block only.
            (
                "200 OK",
                cidrs.lines().next().unwrap_or_default().to_string(),
            )
        }
        _ => ("404 Not Found", String::new()),
    };
    write!(
        w,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    w.flush()?;
    Ok(())
}

/// A SYN flood from namespace `ns`: `count` connection attempts to the internet server's
/// [`BLACKHOLE_PORT`], each from its own source port and abandoned after a millisecond (its
/// socket closed without a RST), so each leaves one half-open flow on the NAT. Returns how
/// many SYNs were sent (attempts that did not fail at once).
pub fn syn_flood(ns: &str, count: usize) -> Result<usize> {
    run_in(ns, move || -> Result<usize> {
        let dst = SocketAddr::from((SERVER, BLACKHOLE_PORT));
        let mut sent = 0;
        for _ in 0..count {
            match TcpStream::connect_timeout(&dst, Duration::from_millis(1)) {
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => sent += 1,
                Err(e) => return Err(anyhow!("SYN {sent} of {count} to {dst}: {e}")),
                Ok(_) => return Err(anyhow!("{dst} answered: it should drop SYNs")),
            }
        }
        Ok(sent)
    })?
}

/// Sends UDP datagrams from namespace `ns` to the echo service and counts the replies.
pub fn udp_echo(ns: &str, count: usize) -> Result<usize> {
    run_in(ns, move || -> Result<usize> {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.set_read_timeout(Some(Duration::from_millis(1500)))?;
        let mut ok = 0;
        let mut buf = [0u8; 64];
        for i in 0..count {
            let msg = format!("echo-{i}");
            s.send_to(msg.as_bytes(), (SERVER, UDP_PORT))?;
            if let Ok((n, _)) = s.recv_from(&mut buf)
                && &buf[..n] == msg.as_bytes()
            {
                ok += 1;
            }
        }
        Ok(ok)
    })?
}

/// Tries TCP connections from namespace `ns` to `addr` on each port; returns the ports that
/// accepted.
pub fn open_ports(ns: &str, addr: Ipv4Addr, ports: &[u16]) -> Result<Vec<u16>> {
    let ports = ports.to_vec();
    run_in(ns, move || {
        let handles: Vec<_> = ports
            .into_iter()
            .map(|p| {
                std::thread::spawn(move || {
                    TcpStream::connect_timeout(
                        &SocketAddr::from((addr, p)),
                        Duration::from_millis(1500),
                    )
                    .is_ok()
                    .then_some(p)
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().ok().flatten())
            .collect()
    })
}

/// A TCP listener in namespace `ns`; returns a flag set when anything connects.
pub fn listen_flag(
    ns: &str,
    addr: Ipv4Addr,
    port: u16,
    stop: Arc<AtomicBool>,
) -> Result<Arc<AtomicBool>> {
    let hit = Arc::new(AtomicBool::new(false));
    let hit2 = Arc::clone(&hit);
    let (tx, rx) = std::sync::mpsc::channel();
    spawn_in(ns, move || {
        let l = match TcpListener::bind((addr, port)) {
            Ok(l) => l,
            Err(e) => {
                let _ = tx.send(Err(e.to_string()));
                return;
            }
        };
        let _ = l.set_nonblocking(true);
        let _ = tx.send(Ok(()));
        while !stop.load(Ordering::Relaxed) {
            if l.accept().is_ok() {
                hit2.store(true, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })?;
    rx.recv_timeout(Duration::from_secs(5))?
        .map_err(anyhow::Error::msg)?;
    Ok(hit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_render_partition_and_cut() {
        let none = faults_script(&Faults::default());
        assert!(!none.contains("drop comment \"partition\""));
        assert!(!none.contains("oifname \"tapnat\""));
        // The mark on what comes in from the internet is always set, so that a cut applies
        // to flows already open.
        assert!(none.contains("iifname \"v-inet\" meta mark set 0x4e410001"));
        let mut f = Faults {
            partition: true,
            ..Faults::default()
        };
        f.cut.insert(TAPB.to_string());
        let s = faults_script(&f);
        assert!(s.contains("iifname \"tapnat\" oifname \"tapnatb\" counter drop"));
        assert!(s.contains("iifname \"tapnatb\" oifname \"tapnat\" counter drop"));
        assert!(s.contains("iifname \"tapnatb\" meta mark set 0x4e410002"));
        assert!(s.contains("oifname \"tapnatb\" meta mark 0x4e410001 counter drop"));
        assert!(
            !s.contains("iifname \"tapnat\" meta mark"),
            "nat-a is not cut\n{s}"
        );
    }

    #[test]
    fn imds_tells_instances_apart_by_source() {
        let mut states = BTreeMap::new();
        let mut a = ImdsState::new(NAT_MAC, "i-a", None);
        a.local_ipv4s = Some("10.0.0.10\n10.0.0.40".into());
        states.insert(NAT_ADDR, a);
        states.insert(NATB_ADDR, ImdsState::new(NATB_MAC, "i-b", None));
        assert_eq!(instance_of(&states, NATB_ADDR), Some(NATB_ADDR));
        assert_eq!(
            instance_of(&states, Ipv4Addr::new(10, 0, 0, 40)),
            Some(NAT_ADDR)
        );
        assert_eq!(instance_of(&states, FORWARDER), None);
        assert!(member("nat-b").is_ok_and(|m| m.1 == TAPB));
        assert!(member("nat").is_err());
    }
}
