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

pub mod aws;
pub mod dns;
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

pub struct Vpc {
    pub ns: Namespaces,
    pub seen: Arc<Mutex<Seen>>,
    pub imds: Arc<Mutex<ImdsState>>,
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
        let imds = Arc::new(Mutex::new(ImdsState {
            user_data,
            mac: NAT_MAC.to_string(),
            vpc_cidrs: VPC_CIDR.to_string(),
            unavailable_for: Duration::ZERO,
            first_request: None,
            refused: 0,
            requests: Vec::new(),
            instance_id: INSTANCE_ID.to_string(),
            role: None,
            credentials: None,
            interface_id: None,
            vpc_id: None,
            local_ipv4s: None,
        }));
        let ntp_served = Arc::new(AtomicU64::new(0));
        ntp::start(&ns.name("vpc"), Arc::clone(&ntp_served), Arc::clone(&stop))?;
        start_internet_servers(&ns.name("internet"), Arc::clone(&seen), Arc::clone(&stop))?;
        start_imds(&ns.name("vpc"), Arc::clone(&imds), Arc::clone(&stop))?;
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
        let ca_dir = root.join(aws::TEST_CA_DIR);
        self.ns
            .ip("internet", &format!("addr add {}/32 dev lo", aws::ENDPOINT))?;
        self.ns
            .ip("fwd", &format!("link set eth0 address {}", aws::FWD_MAC))?;
        let imds = Arc::clone(&self.imds);
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
            }),
        })
        .context("starting the AWS double")?;
        let nat = double.seed().instance("nat")?.clone();
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

/// A minimal HTTP/1.1 server: `GET /bytes/N` sends N bytes; `POST /upload` reads the body and
/// answers with its length. One request per connection.
fn serve_http(s: TcpStream, seen: &Arc<Mutex<Seen>>) -> Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut w = s;
    let (method, path, headers) = read_request(&mut r)?;
    let (method, path) = (method.as_str(), path.as_str());
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
fn start_imds(ns: &str, state: Arc<Mutex<ImdsState>>, stop: Arc<AtomicBool>) -> Result<()> {
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
                    let _ = serve_imds(s, &state);
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

fn serve_imds(s: TcpStream, state: &Arc<Mutex<ImdsState>>) -> Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut w = s;
    let (method, path, headers) = read_request(&mut r)?;
    let (user_data, mac, cidrs, unavailable, ids) = {
        let mut g = state
            .lock()
            .map_err(|_| anyhow::anyhow!("imds state poisoned"))?;
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
