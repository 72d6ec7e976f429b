//! The emulated VPC's control plane: a local AWS double (moto, the local stand-in for AWS,
//! run by `aws_double.py` in the internet namespace and served over HTTPS at [`ENDPOINT`]
//! with a leaf of the test CA) holds the VPC, subnets, route tables, the instances' ENIs,
//! Elastic IPs and the instance role; this module starts it, talks to it over its standard
//! streams and applies the data plane it reports to the namespaces, as EC2 would:
//! - the private route table's `0.0.0.0/0` becomes table 100's default in the vpc namespace
//!   (via the target ENI's primary address on br0, or `unreachable` when there is none);
//! - the internet gateway's 1:1 mappings (auto-assigned public addresses and Elastic IP
//!   associations) become the `ip igw` table's DNAT/SNAT rules, and a source without a public
//!   address does not leave;
//! - an ENI with its source/dest check on gets a bridge-family filter on its bridge port:
//!   forwarded IPv4 to or from any address not its own is dropped (ARP and DHCP pass).
//!
//!
//! With the pair seed ([`Start::pair`], for the failover tests: two NAT instances `nat-a` and
//! `nat-b`, one private route table each) every private table has its own kernel table, and
//! every private address of every ENI on the bridge is a permanent neighbour entry of the
//! router at that ENI's MAC (EC2's fabric knows which ENI owns an address: a secondary address
//! moved with `AssignPrivateIpAddresses` is re-pointed without the guests' ARP).
//!
//! The rendering is pure and unit-tested; `apply` runs `ip` and `nft`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    FORWARDER, NAT_ADDR, NAT_MAC, NAT_PUBLIC, NATB_ADDR, NATB_MAC, NATB_PUBLIC, SECOND_MAC, TAP,
    TAP2, TAPB,
};
use crate::netns::nft_in;

/// The AWS double's address ("the AWS public endpoint"), on the internet namespace's lo.
pub const ENDPOINT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20);
pub const ENDPOINT_PORT: u16 = 443;
pub const REGION: &str = "us-east-1";
/// The TEST-ONLY CA (certificate and key) under the workspace root; `ca.pem` is what a test
/// image must trust to reach the double.
pub const TEST_CA_DIR: &str = "images/test-ca";
pub const EC2_HOST: &str = "ec2.us-east-1.amazonaws.com";
pub const MONITORING_HOST: &str = "monitoring.us-east-1.amazonaws.com";
/// The instance role (and instance profile) of the NAT instance.
pub const ROLE: &str = "nat-instance";
/// The role's inline least-privilege policy, which tests may replace to deny permissions.
pub const ROLE_POLICY: &str = "nat-least-privilege";
/// The stand-in forwarder's ENI MAC (set on the fwd namespace's eth0) and public address.
pub const FWD_MAC: &str = "52:54:00:0a:00:1e";
pub const FWD_PUBLIC: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 30);
/// The Elastic IPs allocated by the seed (TEST-NET-2), in allocation order.
pub const ELASTIC_IPS: [Ipv4Addr; 2] = [
    Ipv4Addr::new(198, 51, 100, 20),
    Ipv4Addr::new(198, 51, 100, 21),
];
/// The kernel table of the pair's private route table `b` (198.18.1.0/24).
pub const TABLE_B: u32 = 102;
/// moto hands out secondary (and unspecified) private addresses from .40-.99 of a subnet
/// only: the namespaces own .1, .10, .11, .20, .21, .30 and DHCP's .100-.200.
const POOL: (u8, u8) = (40, 99);
/// The internet side of the vpc namespace's link (for a route whose target is the gateway).
const INTERNET_PEER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const SCRIPT: &str = include_str!("aws_double.py");

/// The ids the seed created (moto chose them).
#[derive(Debug, Clone, Deserialize)]
pub struct Seed {
    pub account: String,
    pub region: String,
    pub vpc_id: String,
    pub public_subnet_id: String,
    pub private_subnet_ids: Vec<String>,
    pub internet_gateway_id: String,
    pub public_route_table_id: String,
    /// Tagged `nat:route=private`, associated with both private subnets; no default route.
    pub private_route_table_id: String,
    pub role_name: String,
    pub role_arn: String,
    pub policy_name: String,
    /// `nat` (10.0.0.10, the NAT instance, with the instance profile) and `fwd` (10.0.0.30,
    /// the plain Linux forwarder standing in for a NAT).
    pub instances: BTreeMap<String, SeededInstance>,
    /// The Elastic IPs' allocation ids, in the order of [`ELASTIC_IPS`].
    pub allocation_ids: Vec<String>,
    /// The pair seed's private route tables by name (`a`: 10.0.1.0/24, owned by nat-a; `b`:
    /// 198.18.1.0/24, owned by nat-b); empty otherwise.
    #[serde(default)]
    pub route_tables: BTreeMap<String, String>,
    /// The pair seed's Elastic IP allocation of each NAT (nat-a: [`ELASTIC_IPS`]`[0]`, nat-b:
    /// `[1]`); empty otherwise.
    #[serde(default)]
    pub eip_allocations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SeededInstance {
    pub instance_id: String,
    pub eni_id: String,
}

impl Seed {
    /// The NAT's user-data that asks for the whole AWS part: its check off, the private route
    /// table, both Elastic IPs; re-checks every 10 s and health lines every 5 s, for tests.
    pub fn nat_user_data(&self) -> String {
        let eips: Vec<String> = self
            .allocation_ids
            .iter()
            .map(|a| format!("{a:?}"))
            .collect();
        format!(
            "# nat-init user-data: the whole AWS part\nhealth_interval = 5\ndisable_source_dest_check = true\nroute_tables = [{:?}]\nelastic_ips = [{}]\naws_check_interval = 10\n",
            self.private_route_table_id,
            eips.join(", ")
        )
    }

    /// The allocation id of [`ELASTIC_IPS`]`[i]`.
    pub fn allocation(&self, i: usize) -> Result<&str> {
        self.allocation_ids
            .get(i)
            .map(String::as_str)
            .with_context(|| format!("the seed has no Elastic IP {i}"))
    }

    /// The pair seed's private route table `name` (`a` or `b`).
    pub fn route_table(&self, name: &str) -> Result<&str> {
        self.route_tables
            .get(name)
            .map(String::as_str)
            .with_context(|| format!("the seed has no route table {name:?} (pair seed only)"))
    }

    /// The pair seed's Elastic IP allocation id owned by NAT `name` (`nat-a` or `nat-b`).
    pub fn allocation_of(&self, name: &str) -> Result<&str> {
        self.eip_allocations
            .get(name)
            .map(String::as_str)
            .with_context(|| format!("the seed has no Elastic IP for {name:?} (pair seed only)"))
    }

    /// The user-data of pair member `name` (`nat-a` or `nat-b`): its check off, its own route
    /// table and its own Elastic IP; re-checks every 10 s, health lines every 5 s. The
    /// failover keys are to be added here.
    pub fn pair_user_data(&self, name: &str) -> Result<String> {
        let table = match name {
            "nat-a" => self.route_table("a")?,
            "nat-b" => self.route_table("b")?,
            _ => bail!("{name:?} is not a member of the pair (nat-a, nat-b)"),
        };
        let eip = self.allocation_of(name)?;
        Ok(format!(
            "# nat-init user-data: {name} of the failover pair\nhealth_interval = 5\ndisable_source_dest_check = true\nroute_tables = [{table:?}]\nelastic_ips = [{eip:?}]\naws_check_interval = 10\n"
        ))
    }

    /// The kernel routing table of each private route table in the vpc namespace: the single
    /// seed's one table is 100; the pair's `a` is 100 and `b` is [`TABLE_B`].
    pub fn kernel_tables(&self) -> Vec<(String, u32)> {
        if self.route_tables.is_empty() {
            vec![(self.private_route_table_id.clone(), 100)]
        } else {
            self.route_tables
                .iter()
                .map(|(name, id)| (id.clone(), if name == "a" { 100 } else { TABLE_B }))
                .collect()
        }
    }

    pub fn instance(&self, name: &str) -> Result<&SeededInstance> {
        self.instances
            .get(name)
            .with_context(|| format!("the seed has no instance {name:?}"))
    }
}

/// The data plane EC2 would apply now, as the double reported it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct DataPlane {
    /// Increases with every change the double reports.
    #[serde(rename = "gen")]
    pub generation: u64,
    /// The private route tables' `0.0.0.0/0`, by route table id.
    pub routes: BTreeMap<String, RouteTarget>,
    pub enis: BTreeMap<String, Eni>,
    pub mappings: Vec<Mapping>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct RouteTarget {
    /// The target ENI's (or instance's primary ENI's) primary private address, `internet`
    /// for the internet gateway, none without a default route.
    pub target: Option<String>,
    /// The ENI, instance or gateway id the route names.
    pub target_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Eni {
    pub mac: String,
    pub private_ips: Vec<Ipv4Addr>,
    pub primary_ip: Ipv4Addr,
    pub source_dest_check: bool,
}

/// The pair's instances' tag (key and value) that DescribeInstances filters on.
pub const FAILOVER_TAG: &str = "nat:failover-group";
pub const FAILOVER_GROUP: &str = "e2e";

/// One 1:1 mapping of the internet gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub struct Mapping {
    pub public: Ipv4Addr,
    pub private: Ipv4Addr,
}

impl DataPlane {
    /// Whether ENI `id`'s source/dest check is on (none: no such ENI).
    pub fn check_of(&self, id: &str) -> Option<bool> {
        self.enis.get(id).map(|e| e.source_dest_check)
    }

    /// Route table `id`'s default route target (an address, or `internet`).
    pub fn route_target(&self, id: &str) -> Option<&str> {
        self.routes.get(id).and_then(|r| r.target.as_deref())
    }

    /// The public address the internet gateway maps `private` to.
    pub fn public_of(&self, private: Ipv4Addr) -> Option<Ipv4Addr> {
        self.mappings
            .iter()
            .find(|m| m.private == private)
            .map(|m| m.public)
    }
}

/// Instance-role credentials as IMDS serves them (`iam/security-credentials/<role>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Credentials {
    #[serde(rename = "Code")]
    pub code: String,
    #[serde(rename = "LastUpdated")]
    pub last_updated: String,
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "AccessKeyId")]
    pub access_key_id: String,
    #[serde(rename = "SecretAccessKey")]
    pub secret_access_key: String,
    #[serde(rename = "Token")]
    pub token: String,
    /// `YYYY-MM-DDTHH:MM:SSZ`.
    #[serde(rename = "Expiration")]
    pub expiration: String,
}

/// One request the API received.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ApiRequest {
    /// The EC2 Query `Action` (empty for other protocols).
    pub action: String,
    pub access_key_id: String,
    pub host: String,
    /// The HTTP status answered.
    pub status: u16,
    /// An error code the double itself answered (`RequestExpired`, `ExpiredToken`).
    pub error: String,
}

#[derive(Default)]
struct Inner {
    seed: Option<Seed>,
    plane: Option<DataPlane>,
    apply_error: Option<String>,
    replies: BTreeMap<u64, Value>,
    gone: Option<String>,
}

struct Shared {
    inner: Mutex<Inner>,
    changed: Condvar,
}

/// The running AWS double. Dropping it stops the process; the data plane stays as last
/// applied.
pub struct AwsDouble {
    child: Child,
    stdin: Mutex<Option<ChildStdin>>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
    seed: Seed,
    ca: PathBuf,
    log: PathBuf,
}

/// How the double is set up: the namespaces and files it needs.
pub struct Start<'a> {
    /// moto's `moto_server` from `hostdeps::ensure_moto`: its venv's python runs the double.
    pub moto_server: &'a Path,
    pub internet_ns: &'a str,
    pub vpc_ns: &'a str,
    /// Where the leaf certificate, the script and the log go.
    pub dir: &'a Path,
    pub ca_dir: &'a Path,
    /// Called after each data plane is applied (the IMDS double follows the ENI's addresses).
    pub on_apply: Box<dyn Fn(&DataPlane) + Send>,
    /// The pair seed (nat-a, nat-b, one route table each) instead of the single NAT's.
    pub pair: bool,
}

impl AwsDouble {
    /// Issues the endpoint's certificate, starts the double, waits for its seed and applies its
    /// first data plane ("just launched": no default route, checks on, no EIP associated).
    pub fn start(s: Start<'_>) -> Result<Self> {
        let python = s
            .moto_server
            .parent()
            .map(|d| d.join("python3"))
            .with_context(|| format!("{} has no directory", s.moto_server.display()))?;
        let leaf =
            super::tls::issue_leaf(s.ca_dir, s.dir, &[EC2_HOST, MONITORING_HOST], &[ENDPOINT])?;
        let script = s.dir.join("aws_double.py");
        std::fs::write(&script, SCRIPT).with_context(|| format!("writing {}", script.display()))?;
        let log = s.dir.join("aws-double.log");
        let err =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut instances = json!({
            "nat": {"private_ip": NAT_ADDR.to_string(), "mac": NAT_MAC,
                    "public_ip": NAT_PUBLIC.to_string(), "profile": true},
            "fwd": {"private_ip": FORWARDER.to_string(), "mac": FWD_MAC,
                    "public_ip": FWD_PUBLIC.to_string(), "profile": false},
        });
        if s.pair {
            let tags = json!({FAILOVER_TAG: FAILOVER_GROUP});
            instances = json!({
                "nat-a": {"private_ip": NAT_ADDR.to_string(), "mac": NAT_MAC,
                          "public_ip": NAT_PUBLIC.to_string(), "profile": true, "tags": tags},
                "nat-b": {"private_ip": NATB_ADDR.to_string(), "mac": NATB_MAC,
                          "public_ip": NATB_PUBLIC.to_string(), "profile": true, "tags": tags},
                "fwd": {"private_ip": FORWARDER.to_string(), "mac": FWD_MAC,
                        "public_ip": FWD_PUBLIC.to_string(), "profile": false},
            });
        }
        let config = json!({
            "endpoint_addr": ENDPOINT.to_string(),
            "endpoint_port": ENDPOINT_PORT,
            "cert": leaf.cert,
            "key": leaf.key,
            "ca": leaf.ca,
            "vpc_cidr": super::VPC_CIDR,
            "cidr2": super::CIDR2,
            "public_subnet": "10.0.0.0/24",
            "private_subnets": ["10.0.1.0/24", "198.18.1.0/24"],
            "role": ROLE,
            "policy": ROLE_POLICY,
            "instance_id_hint": "nat",
            "pool_first": POOL.0,
            "pool_last": POOL.1,
            "instances": instances,
            "elastic_ips": ELASTIC_IPS.map(|a| a.to_string()),
            "pair": s.pair,
            "pair_tables": [["a", "10.0.1.0/24"], ["b", "198.18.1.0/24"]],
            "eip_owners": if s.pair { json!(["nat-a", "nat-b"]) } else { json!([]) },
        });
        let mut child = Command::new("ip")
            .args(["netns", "exec", s.internet_ns])
            .arg(&python)
            .arg("-u")
            .arg(&script)
            .arg(config.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting the AWS double with {}", python.display()))?;
        let stdout = child.stdout.take().context("the double's stdout")?;
        let stdin = child.stdin.take();
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner::default()),
            changed: Condvar::new(),
        });
        let (shared2, vpc_ns, log2) = (Arc::clone(&shared), s.vpc_ns.to_string(), log.clone());
        let on_apply = s.on_apply;
        let pair = s.pair;
        std::thread::spawn(move || read_events(stdout, &shared2, &vpc_ns, &log2, pair, &*on_apply));
        // Importing moto and seeding take seconds.
        let seed = wait_on(
            &shared,
            &log,
            Duration::from_secs(90),
            "the double's seed",
            |i| i.seed.clone(),
        );
        let seed = match seed {
            Ok(s) => s,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        let double = Self {
            child,
            stdin: Mutex::new(stdin),
            shared,
            next_id: AtomicU64::new(1),
            seed,
            ca: leaf.ca,
            log,
        };
        double.wait(Duration::from_secs(10), "the first data plane", |i| {
            i.plane.clone()
        })?;
        Ok(double)
    }

    pub fn seed(&self) -> &Seed {
        &self.seed
    }

    /// The test CA's certificate that the endpoint's leaf chains to.
    pub fn ca(&self) -> &Path {
        &self.ca
    }

    /// The double's stderr (moto's request lines, failures).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A boto3 call (`service` client, snake_case `op`, keyword `args`) as the test's admin
    /// user, through the HTTPS endpoint: an API error is an `Err` naming its code.
    pub fn call(&self, service: &str, op: &str, args: Value) -> Result<Value> {
        self.command(json!({"cmd": "call", "service": service, "op": op, "args": args}))
            .with_context(|| format!("{service}.{op}"))
    }

    /// The same call signed with `creds` (the instance role's, for instance).
    pub fn call_as(
        &self,
        creds: &Credentials,
        service: &str,
        op: &str,
        args: Value,
    ) -> Result<Value> {
        let signer = serde_json::to_value(creds)?;
        self.command(
            json!({"cmd": "call", "service": service, "op": op, "args": args, "as": signer}),
        )
        .with_context(|| format!("{service}.{op} as {}", creds.access_key_id))
    }

    /// Replaces the role's inline policy [`ROLE_POLICY`] with `document` (IAM JSON), to take
    /// permissions away; moto applies it to the next request, credentials already issued
    /// included.
    pub fn set_role_policy(&self, document: &Value) -> Result<()> {
        self.call(
            "iam",
            "put_role_policy",
            json!({"RoleName": ROLE, "PolicyName": ROLE_POLICY,
                   "PolicyDocument": document.to_string()}),
        )
        .map(|_| ())
    }

    /// New session credentials of the instance role, valid for `lifetime` (any length: the
    /// double enforces the expiry itself, to the second).
    pub fn credentials(&self, lifetime: Duration) -> Result<Credentials> {
        let v = self.command(json!({"cmd": "credentials", "lifetime_secs": lifetime.as_secs()}))?;
        serde_json::from_value(v).context("the double's credentials")
    }

    /// Every request the API received since the seed (or the last `clear`), in order.
    pub fn requests(&self, clear: bool) -> Result<Vec<ApiRequest>> {
        let v = self.command(json!({"cmd": "requests", "clear": clear}))?;
        serde_json::from_value(v).context("the double's request log")
    }

    /// Makes the double report its state now; returns once that state is applied.
    pub fn sync(&self) -> Result<DataPlane> {
        let v = self.command(json!({"cmd": "sync"}))?;
        let generation = v["gen"].as_u64().context("sync answered no gen")?;
        self.wait(Duration::from_secs(10), "the synced data plane", |i| {
            i.plane.clone().filter(|p| p.generation >= generation)
        })
    }

    /// The data plane last applied.
    pub fn data_plane(&self) -> Result<DataPlane> {
        self.wait(Duration::ZERO, "a data plane", |i| i.plane.clone())
    }

    /// Waits until the applied data plane satisfies `pred` (what: for the error).
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&DataPlane) -> bool,
    ) -> Result<DataPlane> {
        self.wait(timeout, what, |i| i.plane.clone().filter(|p| pred(p)))
            .with_context(|| format!("last data plane: {:?}", self.data_plane().ok()))
    }

    fn command(&self, mut cmd: Value) -> Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        cmd["id"] = json!(id);
        {
            let mut g = self
                .stdin
                .lock()
                .map_err(|_| anyhow!("the double's stdin lock is poisoned"))?;
            let w = g.as_mut().context("the double's stdin is closed")?;
            writeln!(w, "{cmd}").context("writing to the AWS double")?;
            w.flush()?;
        }
        let reply = self.wait(Duration::from_secs(60), "the double's reply", |i| {
            i.replies.remove(&id)
        })?;
        if reply["ok"] == json!(true) {
            Ok(reply["result"].clone())
        } else {
            bail!("{}", reply["error"].as_str().unwrap_or("failed"))
        }
    }

    fn wait<T>(
        &self,
        timeout: Duration,
        what: &str,
        take: impl FnMut(&mut Inner) -> Option<T>,
    ) -> Result<T> {
        wait_on(&self.shared, &self.log, timeout, what, take)
    }
}

/// Waits until `take` finds what it wants in the shared state, the double is gone, or a
/// data plane could not be applied.
fn wait_on<T>(
    shared: &Shared,
    log: &Path,
    timeout: Duration,
    what: &str,
    mut take: impl FnMut(&mut Inner) -> Option<T>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut g = shared
        .inner
        .lock()
        .map_err(|_| anyhow!("the AWS double's state is poisoned"))?;
    loop {
        if let Some(e) = &g.apply_error {
            bail!("applying the data plane failed: {e}");
        }
        if let Some(t) = take(&mut g) {
            return Ok(t);
        }
        if let Some(e) = &g.gone {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            bail!("{e} while waiting for {what}:\n{text}");
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("no {what} within {timeout:?}");
        }
        g = shared
            .changed
            .wait_timeout(g, left)
            .map_err(|_| anyhow!("the AWS double's state is poisoned"))?
            .0;
    }
}

impl Drop for AwsDouble {
    fn drop(&mut self) {
        if let Ok(mut g) = self.stdin.lock() {
            g.take();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The double's stdout: seed, states (applied here, in order, before any later reply is
/// delivered: a `sync` reply means its state is in the namespaces) and replies.
fn read_events(
    stdout: std::process::ChildStdout,
    shared: &Shared,
    vpc_ns: &str,
    log: &Path,
    pair: bool,
    on_apply: &dyn Fn(&DataPlane),
) {
    let mut tables = Vec::new();
    // The router's permanent neighbour entries now (pair seed only).
    let mut neighbours = pair.then(BTreeMap::new);
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let v: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                set(shared, |i| {
                    i.apply_error = Some(format!("unreadable line from the double: {e}: {line}"))
                });
                continue;
            }
        };
        if let Some(id) = v.get("reply").and_then(Value::as_u64) {
            set(shared, |i| {
                i.replies.insert(id, v);
            });
            continue;
        }
        match v["event"].as_str() {
            Some("seeded") => match serde_json::from_value::<Seed>(v) {
                Ok(s) => {
                    tables = s.kernel_tables();
                    set(shared, |i| i.seed = Some(s));
                }
                Err(e) => set(shared, |i| i.apply_error = Some(format!("seed: {e}"))),
            },
            Some("state") => {
                let plane = match serde_json::from_value::<DataPlane>(v) {
                    Ok(p) => p,
                    Err(e) => {
                        set(shared, |i| i.apply_error = Some(format!("state: {e}")));
                        continue;
                    }
                };
                match apply(vpc_ns, &tables, &plane, neighbours.as_mut()) {
                    Ok(()) => {
                        on_apply(&plane);
                        set(shared, |i| i.plane = Some(plane));
                    }
                    Err(e) => set(shared, |i| i.apply_error = Some(format!("{e:#}"))),
                }
            }
            Some("failed") => {
                let e = v["error"].as_str().unwrap_or_default().to_string();
                set(shared, |i| {
                    i.gone = Some(format!("the AWS double failed: {e}"))
                });
            }
            _ => {}
        }
    }
    set(shared, |i| {
        i.gone
            .get_or_insert(format!("the AWS double exited (log: {})", log.display()));
    });
}

fn set(shared: &Shared, f: impl FnOnce(&mut Inner)) {
    if let Ok(mut g) = shared.inner.lock() {
        f(&mut g);
    }
    shared.changed.notify_all();
}

/// Applies a data plane in the vpc namespace: each private table's default (`tables`: route
/// table id and kernel table), the router's neighbour entries (when `neighbours` holds the
/// current ones), the gateway's mappings, the bridge's source/dest checks.
pub fn apply(
    vpc_ns: &str,
    tables: &[(String, u32)],
    plane: &DataPlane,
    neighbours: Option<&mut BTreeMap<Ipv4Addr, String>>,
) -> Result<()> {
    let mut batch = String::new();
    for (id, table) in tables {
        let target = plane.routes.get(id).and_then(|r| r.target.as_deref());
        batch.push_str(&route_args(target, *table)?.join(" "));
        batch.push('\n');
    }
    let want = neighbours
        .as_ref()
        .map(|now| {
            let want = neighbour_entries(&plane.enis, &ports());
            batch.push_str(&neighbour_batch(now, &want));
            want
        })
        .unwrap_or_default();
    ip_batch(vpc_ns, &batch).context("the private tables' defaults and the neighbours")?;
    if let Some(now) = neighbours {
        // Only once applied: a failed batch is retried in full with the next state.
        *now = want;
    }
    let script = format!(
        "{}{}",
        igw_script(&plane.mappings),
        bridge_script(&plane.enis, &ports())
    );
    nft_in(vpc_ns, &script).context("the gateway's mappings and the source/dest checks")?;
    Ok(())
}

/// Runs `ip -batch` in namespace `ns` (one process for every change).
fn ip_batch(ns: &str, batch: &str) -> Result<()> {
    let out = duct::cmd("ip", ["netns", "exec", ns, "ip", "-batch", "-"])
        .stdin_bytes(batch.as_bytes().to_vec())
        .stderr_capture()
        .stdout_capture()
        .unchecked()
        .run()?;
    if !out.status.success() {
        bail!(
            "ip -batch in {ns} failed: {}\n{batch}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Each private address of each ENI on a bridge port, at that ENI's MAC.
fn neighbour_entries(
    enis: &BTreeMap<String, Eni>,
    ports: &BTreeMap<String, String>,
) -> BTreeMap<Ipv4Addr, String> {
    enis.values()
        .filter(|e| ports.contains_key(&e.mac))
        .flat_map(|e| e.private_ips.iter().map(|a| (*a, e.mac.clone())))
        .collect()
}

/// `ip` commands that turn the router's entries `now` into `want`: stale ones deleted, the
/// others replaced (permanent, so the guests' ARP never re-points them).
fn neighbour_batch(now: &BTreeMap<Ipv4Addr, String>, want: &BTreeMap<Ipv4Addr, String>) -> String {
    let mut out = String::new();
    for a in now.keys().filter(|a| !want.contains_key(*a)) {
        out.push_str(&format!("neigh del {a} dev br0\n"));
    }
    for (a, mac) in want {
        if now.get(a) != Some(mac) {
            out.push_str(&format!(
                "neigh replace {a} lladdr {mac} dev br0 nud permanent\n"
            ));
        }
    }
    out
}

/// The bridge port of each ENI, by MAC.
fn ports() -> BTreeMap<String, String> {
    [
        (NAT_MAC, TAP),
        (SECOND_MAC, TAP2),
        (NATB_MAC, TAPB),
        (FWD_MAC, "p-fwd"),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect()
}

/// `ip route replace` for a private table's default: never absent (a missing default would
/// fall through to the main table and leak private traffic to the internet).
fn route_args(target: Option<&str>, table: u32) -> Result<Vec<String>> {
    let words: Vec<String> = match target {
        None => format!("route replace unreachable default table {table}")
            .split(' ')
            .map(str::to_string)
            .collect(),
        Some("internet") => {
            format!("route replace default via {INTERNET_PEER} dev v-inet table {table}")
                .split(' ')
                .map(str::to_string)
                .collect()
        }
        Some(ip) => {
            let a: Ipv4Addr = ip
                .parse()
                .with_context(|| format!("route target {ip:?} is not an IPv4 address"))?;
            format!("route replace default via {a} dev br0 table {table}")
                .split(' ')
                .map(str::to_string)
                .collect()
        }
    };
    Ok(words)
}

fn set_of(addrs: impl IntoIterator<Item = Ipv4Addr>) -> String {
    let v: Vec<String> = addrs.into_iter().map(|a| a.to_string()).collect();
    format!("{{ {} }}", v.join(", "))
}

/// The `ip igw` table: 1:1 NAT for each mapping, nothing else leaves for the internet, and the
/// path-MTU black hole of the fixed topology.
fn igw_script(mappings: &[Mapping]) -> String {
    let mut pre = String::new();
    let mut post = String::new();
    for m in mappings {
        pre.push_str(&format!(
            "    iifname \"v-inet\" ip daddr {} dnat to {}\n",
            m.public, m.private
        ));
        post.push_str(&format!(
            "    oifname \"v-inet\" ip saddr {} snat to {}\n",
            m.private, m.public
        ));
    }
    let leave = if mappings.is_empty() {
        "    oifname \"v-inet\" counter drop\n".to_string()
    } else {
        format!(
            "    oifname \"v-inet\" ip saddr != {} counter drop\n",
            set_of(mappings.iter().map(|m| m.private))
        )
    };
    format!(
        "table ip igw\ndelete table ip igw\ntable ip igw {{
  chain pre {{ type nat hook prerouting priority dstnat;
{pre}  }}
  chain post {{ type nat hook postrouting priority srcnat;
{post}  }}
  chain forward_filter {{ type filter hook forward priority 0;
    icmp type destination-unreachable icmp code frag-needed counter drop
{leave}  }}
  chain output_filter {{ type filter hook output priority 0;
    icmp type destination-unreachable icmp code frag-needed counter drop
  }}
}}
"
    )
}

/// The `bridge srcdst` table: for each ENI on a port with its check on, IPv4 from the port
/// with a source not its own, or to the port with a destination not its own, is dropped.
fn bridge_script(enis: &BTreeMap<String, Eni>, ports: &BTreeMap<String, String>) -> String {
    let mut pre = String::new();
    let mut post = String::new();
    for eni in enis.values().filter(|e| e.source_dest_check) {
        let Some(port) = ports.get(&eni.mac) else {
            continue;
        };
        let own = set_of(eni.private_ips.iter().copied());
        let to = set_of(eni.private_ips.iter().copied().chain([Ipv4Addr::BROADCAST]));
        pre.push_str(&format!(
            "    iifname \"{port}\" udp sport 68 udp dport 67 accept\n    iifname \"{port}\" ip saddr != {own} counter drop\n"
        ));
        post.push_str(&format!(
            "    oifname \"{port}\" udp sport 67 udp dport 68 accept\n    oifname \"{port}\" ip daddr != {to} ip daddr != 224.0.0.0/4 counter drop\n"
        ));
    }
    format!(
        "table bridge srcdst\ndelete table bridge srcdst\ntable bridge srcdst {{
  chain pre {{ type filter hook prerouting priority 0;
{pre}  }}
  chain post {{ type filter hook postrouting priority 0;
{post}  }}
}}
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eni(mac: &str, ips: &[[u8; 4]], check: bool) -> Eni {
        let private_ips: Vec<Ipv4Addr> = ips.iter().map(|a| Ipv4Addr::from(*a)).collect();
        Eni {
            mac: mac.into(),
            primary_ip: private_ips[0],
            private_ips,
            source_dest_check: check,
        }
    }

    #[test]
    fn no_route_is_unreachable_never_absent() {
        assert_eq!(
            route_args(None, 100).unwrap().join(" "),
            "route replace unreachable default table 100"
        );
        assert_eq!(
            route_args(Some("10.0.0.30"), 100).unwrap().join(" "),
            "route replace default via 10.0.0.30 dev br0 table 100"
        );
        assert_eq!(
            route_args(Some("internet"), 100).unwrap().join(" "),
            "route replace default via 192.0.2.2 dev v-inet table 100"
        );
        let e = route_args(Some("eni-1"), 100).unwrap_err().to_string();
        assert!(e.contains("eni-1"), "{e}");
    }

    #[test]
    fn gateway_maps_each_address_and_drops_the_rest() {
        let m = [
            Mapping {
                public: ELASTIC_IPS[0],
                private: NAT_ADDR,
            },
            Mapping {
                public: FWD_PUBLIC,
                private: FORWARDER,
            },
        ];
        let s = igw_script(&m);
        assert!(s.contains("iifname \"v-inet\" ip daddr 198.51.100.20 dnat to 10.0.0.10"));
        assert!(s.contains("oifname \"v-inet\" ip saddr 10.0.0.30 snat to 198.51.100.30"));
        assert!(s.contains("ip saddr != { 10.0.0.10, 10.0.0.30 } counter drop"));
        assert!(!s.contains("198.51.100.10"));
        let none = igw_script(&[]);
        assert!(none.contains("oifname \"v-inet\" counter drop"));
        assert!(!none.contains("snat"));
    }

    #[test]
    fn check_on_filters_its_port_check_off_does_not() {
        let mut enis = BTreeMap::new();
        enis.insert(
            "eni-a".to_string(),
            eni(NAT_MAC, &[[10, 0, 0, 10], [10, 0, 0, 40]], true),
        );
        enis.insert("eni-b".to_string(), eni(FWD_MAC, &[[10, 0, 0, 30]], false));
        enis.insert(
            "eni-c".to_string(),
            eni("0a:00:00:00:00:01", &[[10, 0, 0, 50]], true),
        );
        let s = bridge_script(&enis, &ports());
        assert!(s.contains("iifname \"tapnat\" ip saddr != { 10.0.0.10, 10.0.0.40 } counter drop"));
        assert!(
            s.contains("oifname \"tapnat\" ip daddr != { 10.0.0.10, 10.0.0.40, 255.255.255.255 }")
        );
        assert!(s.contains("iifname \"tapnat\" udp sport 68 udp dport 67 accept"));
        assert!(!s.contains("p-fwd"), "check off: no filter\n{s}");
        assert!(
            !s.contains("10.0.0.50"),
            "an ENI on no port is skipped\n{s}"
        );
    }

    #[test]
    fn neighbours_follow_addresses_between_enis() {
        let mut enis = BTreeMap::new();
        enis.insert(
            "eni-a".to_string(),
            eni(NAT_MAC, &[[10, 0, 0, 10], [10, 0, 0, 40]], false),
        );
        enis.insert("eni-b".to_string(), eni(NATB_MAC, &[[10, 0, 0, 12]], false));
        enis.insert(
            "eni-x".to_string(),
            eni("0a:00:00:00:00:01", &[[10, 0, 0, 50]], true),
        );
        let first = neighbour_entries(&enis, &ports());
        assert_eq!(first.len(), 3, "an ENI on no port gets no entry: {first:?}");
        let batch = neighbour_batch(&BTreeMap::new(), &first);
        assert!(
            batch
                .contains("neigh replace 10.0.0.40 lladdr 52:54:00:0a:00:0a dev br0 nud permanent")
        );
        // .40 moves to nat-b: only it is replaced; nothing else is touched.
        enis.insert("eni-a".to_string(), eni(NAT_MAC, &[[10, 0, 0, 10]], false));
        enis.insert(
            "eni-b".to_string(),
            eni(NATB_MAC, &[[10, 0, 0, 12], [10, 0, 0, 40]], false),
        );
        let moved = neighbour_entries(&enis, &ports());
        assert_eq!(
            neighbour_batch(&first, &moved),
            "neigh replace 10.0.0.40 lladdr 52:54:00:0a:00:0c dev br0 nud permanent\n"
        );
        // Unassigned: deleted.
        enis.insert("eni-b".to_string(), eni(NATB_MAC, &[[10, 0, 0, 12]], false));
        let gone = neighbour_entries(&enis, &ports());
        assert_eq!(
            neighbour_batch(&moved, &gone),
            "neigh del 10.0.0.40 dev br0\n"
        );
    }

    #[test]
    fn pair_seed_has_a_kernel_table_per_route_table() {
        let line = r#"{"account": "123456789012", "region": "us-east-1", "vpc_id": "vpc-1",
            "public_subnet_id": "s-1", "private_subnet_ids": ["s-2", "s-3"],
            "internet_gateway_id": "igw-1", "public_route_table_id": "rtb-p",
            "private_route_table_id": "rtb-a", "role_name": "r", "role_arn": "arn", "policy_name": "p",
            "instances": {}, "allocation_ids": ["eipalloc-1", "eipalloc-2"],
            "route_tables": {"a": "rtb-a", "b": "rtb-b"},
            "eip_allocations": {"nat-a": "eipalloc-1", "nat-b": "eipalloc-2"}}"#;
        let seed: Seed = serde_json::from_str(line).unwrap();
        assert_eq!(
            seed.kernel_tables(),
            vec![("rtb-a".to_string(), 100), ("rtb-b".to_string(), TABLE_B)]
        );
        assert_eq!(seed.allocation_of("nat-b").unwrap(), "eipalloc-2");
        let ud = seed.pair_user_data("nat-b").unwrap();
        assert!(
            ud.contains("route_tables = [\"rtb-b\"]") && ud.contains("\"eipalloc-2\""),
            "{ud}"
        );
        assert!(seed.pair_user_data("nat").is_err());
        // The single seed (no pair fields) keeps table 100 only.
        let single: Seed = serde_json::from_str(
            &line.replace(r#""route_tables": {"a": "rtb-a", "b": "rtb-b"},"#, ""),
        )
        .unwrap();
        assert_eq!(single.kernel_tables(), vec![("rtb-a".to_string(), 100)]);
        assert!(single.route_table("a").is_err());
    }

    #[test]
    fn data_plane_parses_the_doubles_state_line() {
        let line = r#"{"enis": {"eni-1": {"mac": "52:54:00:0a:00:1e", "primary_ip": "10.0.0.30", "private_ips": ["10.0.0.30"], "source_dest_check": true}}, "event": "state", "gen": 3, "mappings": [{"private": "10.0.0.30", "public": "198.51.100.30"}], "routes": {"rtb-1": {"target": null, "target_id": null}}}"#;
        let p: DataPlane = serde_json::from_str(line).unwrap();
        assert_eq!(p.generation, 3);
        assert_eq!(p.public_of(FORWARDER), Some(FWD_PUBLIC));
        assert_eq!(p.routes["rtb-1"].target, None);
        assert!(p.enis["eni-1"].source_dest_check);
    }
}
