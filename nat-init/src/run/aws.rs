//! The AWS side, on a thread of its own so that nothing it waits for (an endpoint that does not
//! answer, a denied permission, a wrong clock) can hold up the NAT on its own ENI: the clock
//! checked against the Amazon Time Sync Service and stepped when it is off, the instance role's
//! credentials from IMDS (refreshed before they expire), and the EC2 calls the configuration
//! asks for, each read back: the ENI's source/destination check off, the Elastic IPs associated
//! (with secondary private addresses for all but the first), the claimed route tables'
//! `0.0.0.0/0` pointed at this ENI and watched afterwards. `plan::aws` decides; this file asks
//! and carries out. The main loop sends [`Inputs`] (configuration, MAC, address, resolvers)
//! whenever they change, reads [`Event`]s (the addresses the table must SNAT to), and prints
//! the [`AwsStatus`] on its `ready` and `health` lines.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nat_init::aws::{credentials, ec2, iam, sigv4};
use nat_init::config::AwsConfig;
use nat_init::dhcp::KernelRandom;
use nat_init::plan::aws::{
    self as awsplan, AwsStatus, DefaultRoute, Endpoint, ItemState, RouteAction,
};
use nat_init::plan::{Backoff, Throttle};
use nat_init::{dns, http, https, imds, ntp};

use super::console::{error, info, now_ms};

mod group;
mod publish;
pub use group::{Command, Facts};

/// How often the clock is checked once it has been found right.
const NTP_PERIOD: Duration = Duration::from_secs(15 * 60);
/// ... and while the time server does not answer.
const NTP_RETRY: Duration = Duration::from_secs(60);
/// A clock further off than this is stepped.
const STEP_THRESHOLD_NS: i64 = 1_000_000_000;
/// One HTTPS call's limit, connect to last byte.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts of one call that is throttled or meets a server error.
const CALL_ATTEMPTS: u32 = 4;
/// The endpoint's address is looked up again this often (and after a failed connection).
const RESOLVE_PERIOD: Duration = Duration::from_secs(600);
/// Error lines that repeat are printed at most this often.
const REPEAT_GAP_MS: u64 = 60_000;

/// What the worker needs from the main loop; sent again whenever any of it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inputs {
    pub cfg: AwsConfig,
    /// Whether IMDS may be asked (the baked `imds` key).
    pub imds: bool,
    /// The primary ENI's MAC, `0a:1b:...`.
    pub mac: String,
    /// The lease's address (the ENI's primary private address).
    pub primary: Ipv4Addr,
    /// The VPC's resolvers (DHCP option 6).
    pub dns: Vec<Ipv4Addr>,
}

/// What the worker tells the main loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The ENI's secondary addresses that carry Elastic IPs (to put on the interface), and the
    /// addresses new flows are spread across (empty: masquerade on the primary).
    Egress {
        secondary: Vec<Ipv4Addr>,
        snat: Vec<Ipv4Addr>,
        /// Sources that take one address first: the subnets of a peer's tables held here,
        /// out through that peer's address (a failover member; empty otherwise).
        by_source: Vec<(nat_init::cidr::Ipv4Cidr, Ipv4Addr)>,
    },
}

/// What the worker's channel carries.
enum Msg {
    Inputs(Box<Inputs>),
    /// From the failover thread: carried out before anything else.
    Command(Command),
    /// From the metrics sampler: one period to publish.
    Metrics(Box<nat_init::metrics::Sample>),
}

/// Hands the metrics sampler's periods to the worker.
#[derive(Clone)]
pub struct Publisher {
    tx: Sender<Msg>,
}

impl Publisher {
    pub fn send(&self, s: nat_init::metrics::Sample) {
        if self.tx.send(Msg::Metrics(Box::new(s))).is_err() {
            error("metrics", "the AWS thread is gone; the period is dropped");
        }
    }
}

/// The main loop's end of the worker (and the failover thread's, through [`Aws::commander`]).
pub struct Aws {
    inputs: Sender<Msg>,
    events: Receiver<Event>,
    status: Arc<Mutex<AwsStatus>>,
    facts: Arc<Mutex<Facts>>,
    sent: Option<Inputs>,
}

/// Sends failover commands to the worker.
#[derive(Clone)]
pub struct Commander {
    tx: Sender<Msg>,
    facts: Arc<Mutex<Facts>>,
}

impl Commander {
    pub fn send(&self, cmd: Command) {
        if self.tx.send(Msg::Command(cmd)).is_err() {
            error("failover", "the AWS thread is gone; the command is dropped");
        }
    }

    /// What the worker knows of this member and its group.
    pub fn facts(&self) -> Facts {
        self.facts.lock().map(|f| f.clone()).unwrap_or_default()
    }
}

impl Aws {
    /// Starts the worker thread; it waits for the first [`Inputs`].
    pub fn start() -> Aws {
        let (inputs, inputs_rx) = mpsc::channel();
        let (events_tx, events) = mpsc::channel();
        let status = Arc::new(Mutex::new(AwsStatus::default()));
        let facts = Arc::new(Mutex::new(Facts::default()));
        let st = Arc::clone(&status);
        let fx = Arc::clone(&facts);
        let spawned = std::thread::Builder::new()
            .name("aws".into())
            .spawn(move || Worker::new(inputs_rx, events_tx, st, fx).run());
        if let Err(e) = spawned {
            error("aws", format_args!("cannot start the AWS thread: {e}"));
        }
        Aws {
            inputs,
            events,
            status,
            facts,
            sent: None,
        }
    }

    /// The metrics sampler's handle on the worker.
    pub fn publisher(&self) -> Publisher {
        Publisher {
            tx: self.inputs.clone(),
        }
    }

    /// The failover thread's handle on the worker.
    pub fn commander(&self) -> Commander {
        Commander {
            tx: self.inputs.clone(),
            facts: Arc::clone(&self.facts),
        }
    }

    /// Sends `inputs` when they differ from the last ones sent. A new configuration's items
    /// show as pending at once (the `ready` line that follows names them).
    pub fn update(&mut self, inputs: Inputs) {
        if self.sent.as_ref() == Some(&inputs) {
            return;
        }
        if self.sent.as_ref().is_none_or(|s| s.cfg != inputs.cfg)
            && let Ok(mut st) = self.status.lock()
        {
            reset_status(&mut st, &inputs.cfg);
        }
        if self
            .inputs
            .send(Msg::Inputs(Box::new(inputs.clone())))
            .is_err()
        {
            error("aws", "the AWS thread is gone; restarting it");
            *self = Aws::start();
            let _ = self.inputs.send(Msg::Inputs(Box::new(inputs.clone())));
        }
        self.sent = Some(inputs);
    }

    /// The next event, if any.
    pub fn event(&self) -> Option<Event> {
        self.events.try_recv().ok()
    }

    /// The `aws_*` fields of the console lines.
    pub fn fields(&self) -> String {
        self.status
            .lock()
            .map(|s| s.fields())
            .unwrap_or_else(|_| "aws_status=unknown".to_string())
    }
}

/// The status for a new configuration: items no longer configured dropped, new ones pending,
/// those still configured kept as they are.
fn reset_status(st: &mut AwsStatus, cfg: &AwsConfig) {
    let pending = || ItemState::Pending("not done yet".into());
    let keep = |old: &ItemState, on: bool| match (on, old) {
        (false, _) => ItemState::Off,
        (true, ItemState::Off) => pending(),
        (true, s) => s.clone(),
    };
    st.clock = keep(&st.clock, cfg.ntp);
    st.credentials = keep(&st.credentials, cfg.uses_aws());
    st.metrics = keep(&st.metrics, cfg.metrics.is_some());
    if cfg.metrics.is_none() {
        st.metrics_failing = None;
    }
    st.source_dest_check = keep(&st.source_dest_check, cfg.disable_source_dest_check);
    let old = std::mem::take(&mut st.eips);
    st.eips = cfg
        .elastic_ips
        .iter()
        .map(|a| {
            let s = old
                .iter()
                .find(|(id, _)| id == a)
                .map_or_else(pending, |(_, s)| s.clone());
            (a.clone(), s)
        })
        .collect();
    // Tables found by tag are added as they are found.
    st.routes
        .retain(|(id, _)| cfg.route_tables.contains(id) || cfg.route_table_tag.is_some());
    for id in &cfg.route_tables {
        if !st.routes.iter().any(|(r, _)| r == id) {
            st.routes.push((id.clone(), pending()));
        }
    }
}

/// Why a call failed, once retries within it are spent.
#[derive(Debug)]
enum CallError {
    /// The role lacks the permission (or IAM has not propagated it yet).
    Denied {
        permission: String,
        /// The resource to name in the statement to add (an ARN, or `*`).
        resource: String,
        message: String,
    },
    /// Anything else: the line says it all.
    Other(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Denied {
                permission,
                resource,
                message,
            } => write!(
                f,
                "denied: the instance role lacks {permission} ({message}); add to its policy: {}; \
                 retrying (a new role or policy can take minutes to reach EC2)",
                iam::permission_statement(permission, resource)
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            CallError::Other(s) => f.write_str(s),
        }
    }
}

impl CallError {
    fn short(&self) -> String {
        match self {
            CallError::Denied { permission, .. } => format!("denied {permission}"),
            CallError::Other(s) => s.chars().take(80).collect(),
        }
    }
}

/// What [`Worker::send_signed`] needs to know of one kind of request.
struct Signed<'a> {
    /// The action's name, for lines.
    what: &'a str,
    /// Where it goes: `None` for the session's EC2 endpoint.
    endpoint: Option<&'a Endpoint>,
    /// The signed request to `host` in `region` at a Unix time.
    request: &'a dyn Fn(&str, &str, &sigv4::Credentials, i64) -> http::Request,
    classify: fn(u16, Option<&ec2::ApiError>) -> ec2::ErrorClass,
    /// The error for a denial, from its `code: message`.
    denied: &'a dyn Fn(&Worker, String) -> CallError,
}

struct Session {
    identity: imds::AwsIdentity,
    region: String,
    endpoint: Endpoint,
    client: https::HttpsClient,
}

struct Worker {
    inputs_rx: Receiver<Msg>,
    events: Sender<Event>,
    status: Arc<Mutex<AwsStatus>>,
    facts: Arc<Mutex<Facts>>,
    /// Failover commands not carried out yet (they wait for a session).
    commands: Vec<Command>,
    /// A peer's tables held here: their subnets, out through the peer's address.
    peer_subnets: std::collections::BTreeMap<String, Vec<(nat_init::cidr::Ipv4Cidr, Ipv4Addr)>>,
    inputs: Option<Inputs>,
    random: KernelRandom,
    next_ntp: Instant,
    ntp_ok_said: bool,
    session: Option<Session>,
    creds: Option<sigv4::Credentials>,
    creds_refresh_unix_s: i64,
    creds_failures: u32,
    addr: Option<(SocketAddr, Instant)>,
    /// Tables pointed at this ENI once: later changes are reported, not undone.
    claimed: BTreeSet<String>,
    egress_sent: Option<Event>,
    backoff: Backoff,
    errors: Throttle,
    started_ms: u64,
    complete_said: bool,
    /// Metrics periods not published yet, oldest first.
    metrics_queue: std::collections::VecDeque<nat_init::metrics::Sample>,
    /// Periods dropped from a full queue.
    metrics_dropped: u64,
    metrics_failures: u32,
    /// A new period arrived: publish at this wake.
    metrics_due: bool,
    /// The Auto Scaling group's name once looked up (`Some(None)`: in none).
    asg: Option<Option<String>>,
    /// Another endpoint's address (CloudWatch's), when it was resolved, and for which host.
    other_addr: Option<(SocketAddr, Instant, String)>,
}

impl Worker {
    fn new(
        inputs_rx: Receiver<Msg>,
        events: Sender<Event>,
        status: Arc<Mutex<AwsStatus>>,
        facts: Arc<Mutex<Facts>>,
    ) -> Worker {
        Worker {
            inputs_rx,
            events,
            status,
            facts,
            commands: Vec::new(),
            peer_subnets: std::collections::BTreeMap::new(),
            inputs: None,
            random: KernelRandom::new(),
            next_ntp: Instant::now(),
            ntp_ok_said: false,
            session: None,
            creds: None,
            creds_refresh_unix_s: 0,
            creds_failures: 0,
            addr: None,
            claimed: BTreeSet::new(),
            egress_sent: None,
            backoff: Backoff::new(Duration::from_secs(2), Duration::from_secs(300)),
            errors: Throttle::default(),
            started_ms: now_ms(),
            complete_said: false,
            metrics_queue: std::collections::VecDeque::new(),
            metrics_dropped: 0,
            metrics_failures: 0,
            metrics_due: false,
            asg: None,
            other_addr: None,
        }
    }

    fn run(mut self) {
        let mut next_pass = Instant::now();
        loop {
            let wait = next_pass
                .min(self.next_ntp)
                .saturating_duration_since(Instant::now());
            let got = if self.inputs.is_none() {
                self.inputs_rx
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected)
            } else {
                self.inputs_rx.recv_timeout(wait)
            };
            let mut new_inputs = false;
            match got {
                Ok(m) => {
                    new_inputs |= self.take(m);
                    // Whatever else came meanwhile: only the latest inputs count.
                    loop {
                        match self.inputs_rx.try_recv() {
                            Ok(m) => new_inputs |= self.take(m),
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Disconnected) => return,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if new_inputs {
                next_pass = Instant::now();
            }
            let Some(inputs) = self.inputs.clone() else {
                continue;
            };
            if !self.commands.is_empty() {
                self.run_commands(&inputs);
            }
            if std::mem::take(&mut self.metrics_due) {
                self.publish_metrics(&inputs);
            }
            if inputs.cfg.ntp && Instant::now() >= self.next_ntp {
                self.check_clock(&inputs);
            }
            if !inputs.cfg.ntp {
                self.next_ntp = Instant::now() + NTP_PERIOD;
            }
            if Instant::now() < next_pass {
                continue;
            }
            if !inputs.cfg.uses_ec2() {
                next_pass = Instant::now() + NTP_PERIOD;
                continue;
            }
            let wait = match self.pass(&inputs) {
                Ok(()) => {
                    self.backoff.success();
                    Duration::from_secs(u64::from(inputs.cfg.check_interval))
                }
                Err(e) => {
                    let d = self.backoff.failure();
                    let line = format!("{e}; next attempt in {} s", d.as_secs());
                    if self.errors.should_print(&line, now_ms(), REPEAT_GAP_MS) {
                        error("aws", line);
                    }
                    d
                }
            };
            next_pass = Instant::now() + wait;
        }
    }

    /// One message; whether it was new inputs.
    fn take(&mut self, m: Msg) -> bool {
        match m {
            Msg::Inputs(i) => {
                self.take_inputs(*i);
                true
            }
            Msg::Command(c) => {
                self.commands.push(c);
                false
            }
            Msg::Metrics(s) => {
                self.queue_sample(*s);
                self.metrics_due = true;
                false
            }
        }
    }

    fn take_inputs(&mut self, i: Inputs) {
        let old = self.inputs.replace(i.clone());
        let cfg_changed = old.as_ref().is_none_or(|o| o.cfg != i.cfg);
        if cfg_changed {
            self.session = None;
            self.complete_said = false;
            self.asg = None;
        }
        if old.as_ref().is_some_and(|o| o.dns != i.dns) {
            self.addr = None;
        }
    }

    fn with_status(&self, f: impl FnOnce(&mut AwsStatus)) {
        if let Ok(mut st) = self.status.lock() {
            f(&mut st);
        }
    }

    /// Asks the time server; steps the clock when it is more than a second off.
    fn check_clock(&mut self, inputs: &Inputs) {
        let server = SocketAddr::from((inputs.cfg.ntp_server, 123));
        let deadline = Instant::now() + Duration::from_secs(3);
        match ntp::query(server, deadline, &mut self.random) {
            Ok(sample) if sample.offset_ns.abs() > STEP_THRESHOLD_NS => {
                match ntp::step_clock(sample.offset_ns) {
                    Ok(()) => {
                        info(format_args!(
                            "clock stepped by {:+.3} s (ntp {server}, stratum {}, delay {} ms)",
                            sample.offset_ns as f64 / 1e9,
                            sample.stratum,
                            sample.delay.as_millis()
                        ));
                        self.with_status(|st| st.clock = ItemState::Done);
                        self.next_ntp = Instant::now() + NTP_PERIOD;
                    }
                    Err(e) => {
                        error(
                            "clock",
                            format_args!("{e}; retrying in {} s", NTP_RETRY.as_secs()),
                        );
                        self.with_status(|st| st.clock = ItemState::Pending(e.to_string()));
                        self.next_ntp = Instant::now() + NTP_RETRY;
                    }
                }
            }
            Ok(sample) => {
                if !self.ntp_ok_said {
                    info(format_args!(
                        "clock within {} ms of ntp {server} (stratum {})",
                        sample.offset_ns.abs() / 1_000_000,
                        sample.stratum
                    ));
                    self.ntp_ok_said = true;
                }
                self.with_status(|st| st.clock = ItemState::Done);
                self.next_ntp = Instant::now() + NTP_PERIOD;
            }
            Err(e) => {
                let line = format!(
                    "{e}; the clock is unchecked; asking again in {} s",
                    NTP_RETRY.as_secs()
                );
                if self.errors.should_print(&line, now_ms(), REPEAT_GAP_MS) {
                    error("clock", line);
                }
                self.with_status(|st| st.clock = ItemState::Pending(e.to_string()));
                self.next_ntp = Instant::now() + NTP_RETRY;
            }
        }
    }

    fn unix_now() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }

    /// One reconciliation: the session, then each configured item, in an order where each
    /// needs only what came before.
    fn pass(&mut self, inputs: &Inputs) -> Result<(), CallError> {
        if !inputs.imds {
            return Err(CallError::Other(
                "the AWS side needs IMDS (region, ENI id, credentials), and imds = false".into(),
            ));
        }
        self.ensure_session(inputs)?;
        self.ensure_credentials()?;
        let cfg = &inputs.cfg;
        if let Some(group) = &cfg.failover {
            return self.group_pass(cfg, group);
        }
        let mut first_error: Option<CallError> = None;
        let mut note = |r: Result<(), CallError>| {
            if let Err(e) = r
                && first_error.is_none()
            {
                first_error = Some(e);
            }
        };
        if cfg.disable_source_dest_check {
            let r = self.source_dest_check();
            note(r);
        }
        if !cfg.elastic_ips.is_empty() {
            let r = self.elastic_ips(cfg, inputs.primary);
            note(r);
        }
        if !cfg.route_tables.is_empty() || cfg.route_table_tag.is_some() {
            let r = self.routes(cfg);
            note(r);
        }
        self.say_complete();
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// `aws ready ...` once everything configured is in place.
    fn say_complete(&mut self) {
        let complete = self.status.lock().map(|s| s.complete()).unwrap_or(false);
        if complete && !self.complete_said {
            self.complete_said = true;
            let fields = self.status.lock().map(|s| s.fields()).unwrap_or_default();
            info(format_args!(
                "aws ready {fields} elapsed_ms={} since_start_ms={}",
                now_ms(),
                now_ms().saturating_sub(self.started_ms)
            ));
        }
    }

    fn ensure_session(&mut self, inputs: &Inputs) -> Result<(), CallError> {
        if self.session.is_some() {
            return Ok(());
        }
        let ep = imds::Endpoint::default();
        let identity = imds::fetch_aws_identity(&ep, &inputs.mac)
            .map_err(|e| CallError::Other(format!("imds: {e}")))?;
        let region = inputs
            .cfg
            .region
            .clone()
            .unwrap_or_else(|| identity.region.clone());
        let endpoint = match &inputs.cfg.ec2_endpoint {
            Some(url) => awsplan::parse_endpoint(url).map_err(CallError::Other)?,
            None => awsplan::regional_endpoint("ec2", &region),
        };
        let roots = match &inputs.cfg.ca_file {
            Some(path) => Some(
                std::fs::read(path)
                    .map_err(|e| CallError::Other(format!("aws_ca_file {path}: {e}")))?,
            ),
            None => None,
        };
        let client = https::HttpsClient::new(roots.as_deref())
            .map_err(|e| CallError::Other(format!("tls: {e}")))?
            .with_max_response(http::MAX_AWS_RESPONSE);
        info(format_args!(
            "aws region={region} eni={} vpc={} endpoint={endpoint}",
            identity.interface_id, identity.vpc_id
        ));
        self.session = Some(Session {
            identity,
            region,
            endpoint,
            client,
        });
        self.addr = None;
        Ok(())
    }

    fn ensure_credentials(&mut self) -> Result<(), CallError> {
        let now = Self::unix_now();
        if self.creds.is_some() && now < self.creds_refresh_unix_s {
            return Ok(());
        }
        let fetched = imds::fetch_role_credentials(&imds::Endpoint::default())
            .map_err(|e| e.to_string())
            .and_then(|(role, doc)| {
                credentials::parse(&doc, now)
                    .map(|c| (role, c))
                    .map_err(|e| e.to_string())
            });
        match fetched {
            Ok((role, c)) => {
                let exp = c.expiration_unix_s.unwrap_or(now + 3600);
                self.creds_refresh_unix_s = credentials::refresh_at_unix_s(exp, now);
                self.creds_failures = 0;
                // IMDS serves the same ones until it has the next: say only what changed.
                let before = self.creds.as_ref().map(|o| o.access_key_id.clone());
                if before.as_deref() != Some(c.access_key_id.as_str()) {
                    info(format_args!(
                        "aws credentials {} role={role} key={} expire_in_s={}",
                        if before.is_some() {
                            "refreshed"
                        } else {
                            "from the instance role"
                        },
                        c.access_key_id,
                        exp - now
                    ));
                }
                self.creds = Some(c);
                self.with_status(|st| st.credentials = ItemState::Done);
                Ok(())
            }
            Err(why) => {
                self.creds_failures += 1;
                self.creds_refresh_unix_s = credentials::retry_at_unix_s(self.creds_failures, now);
                self.with_status(|st| st.credentials = ItemState::Pending(why.clone()));
                let still_valid = self
                    .creds
                    .as_ref()
                    .and_then(|c| c.expiration_unix_s)
                    .is_some_and(|e| e > now);
                if still_valid {
                    // The current ones still work: say so and carry on with them.
                    error(
                        "aws",
                        format_args!(
                            "credentials refresh: {why}; the current ones are still valid"
                        ),
                    );
                    Ok(())
                } else {
                    self.creds = None;
                    Err(CallError::Other(format!("credentials: {why}")))
                }
            }
        }
    }

    /// The endpoint's address: from the VPC's resolver unless the host is an address.
    fn endpoint_addr(&mut self) -> Result<SocketAddr, CallError> {
        if let Some((a, at)) = self.addr
            && at.elapsed() < RESOLVE_PERIOD
        {
            return Ok(a);
        }
        let (host, port) = match &self.session {
            Some(s) => (s.endpoint.host.clone(), s.endpoint.port),
            None => return Err(CallError::Other("no session".into())),
        };
        let addr = self.resolve(&host, port)?;
        self.addr = Some((addr, Instant::now()));
        Ok(addr)
    }

    /// `host`'s address: itself when it is one, else from the VPC's resolvers (DHCP option 6).
    fn resolve(&mut self, host: &str, port: u16) -> Result<SocketAddr, CallError> {
        if let Ok(ip) = host.parse::<Ipv4Addr>() {
            return Ok(SocketAddr::from((ip, port)));
        }
        let servers = self
            .inputs
            .as_ref()
            .map(|i| i.dns.clone())
            .unwrap_or_default();
        if servers.is_empty() {
            return Err(CallError::Other(format!(
                "no DNS server in the DHCP lease (option 6) to resolve {host}"
            )));
        }
        let mut last = String::new();
        for s in servers {
            let deadline = Instant::now() + Duration::from_secs(3);
            match dns::resolve_ipv4(
                SocketAddr::from((s, 53)),
                host,
                deadline,
                3,
                &mut self.random,
            ) {
                Ok(v) if !v.is_empty() => return Ok(SocketAddr::from((v[0], port))),
                Ok(_) => last = format!("{host}: no address from {s}"),
                Err(e) => last = format!("resolving {host} via {s}: {e}"),
            }
        }
        Err(CallError::Other(last))
    }

    /// One EC2 call, signed, with retries for throttling, server errors and stale credentials.
    fn call(&mut self, call: &ec2::Call) -> Result<String, CallError> {
        let what = call.action.name();
        let body = self.send_signed(&Signed {
            what,
            endpoint: None,
            request: &|host: &str, region: &str, creds: &sigv4::Credentials, now: i64| {
                call.signed_request(host, region, creds, now)
            },
            classify: |status, err| match err {
                Some(e) => ec2::classify_error(status, e),
                None => ec2::classify(status, None),
            },
            denied: &|w: &Worker, message: String| {
                // The call's own resource: its table, ENI or allocation.
                let id = call
                    .params
                    .iter()
                    .find(|(k, _)| {
                        matches!(
                            k.as_str(),
                            "RouteTableId" | "AllocationId" | "NetworkInterfaceId"
                        )
                    })
                    .map(|(_, v)| v.as_str());
                CallError::Denied {
                    permission: call.action.permission(),
                    resource: iam::resource_hint(
                        call.action,
                        id,
                        w.session.as_ref().map(|s| s.region.as_str()),
                        None,
                    ),
                    message,
                }
            },
        })?;
        String::from_utf8(body)
            .map_err(|_| CallError::Other(format!("{what}: answer is not UTF-8")))
    }

    /// The address to send to: the session's EC2 endpoint (`None`) or `endpoint`, each looked
    /// up again every [`RESOLVE_PERIOD`] and after a failed connection.
    fn target_addr(
        &mut self,
        endpoint: Option<&Endpoint>,
    ) -> Result<(SocketAddr, Endpoint), CallError> {
        let Some(ep) = endpoint else {
            let addr = self.endpoint_addr()?;
            let ep = self
                .session
                .as_ref()
                .map(|s| s.endpoint.clone())
                .ok_or_else(|| CallError::Other("no session".into()))?;
            return Ok((addr, ep));
        };
        if let Some((a, at, host)) = &self.other_addr
            && *host == ep.host
            && at.elapsed() < RESOLVE_PERIOD
        {
            return Ok((*a, ep.clone()));
        }
        let a = self.resolve(&ep.host, ep.port)?;
        self.other_addr = Some((a, Instant::now(), ep.host.clone()));
        Ok((a, ep.clone()))
    }

    /// One signed request with retries: throttling and server errors back off and try again,
    /// stale credentials are fetched again once, a clock error checks the clock, a denial
    /// names its permission. The answer's body on HTTP 200.
    fn send_signed(&mut self, s: &Signed<'_>) -> Result<Vec<u8>, CallError> {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        let mut refreshed = false;
        let mut last = String::new();
        for _ in 0..CALL_ATTEMPTS {
            let (addr, endpoint) = self.target_addr(s.endpoint)?;
            let (Some(session), Some(creds)) = (&self.session, &self.creds) else {
                return Err(CallError::Other("no session or credentials".into()));
            };
            let req = (s.request)(&endpoint.host, &session.region, creds, Self::unix_now());
            let what = s.what;
            match session
                .client
                .send(&endpoint.host, addr, &req, Instant::now() + CALL_TIMEOUT)
            {
                Err(e) => {
                    last = format!("{what} to {endpoint}: {e}");
                    // Maybe the address moved: look it up again next time.
                    if s.endpoint.is_none() {
                        self.addr = None;
                    } else {
                        self.other_addr = None;
                    }
                }
                Ok(resp) if resp.status == 200 => return Ok(resp.body),
                Ok(resp) => {
                    let text = String::from_utf8_lossy(&resp.body).into_owned();
                    let err = ec2::parse_error(&text).ok();
                    let class = (s.classify)(resp.status, err.as_ref());
                    let (code, message) = err
                        .map(|e| (e.code, e.message))
                        .unwrap_or_else(|| (format!("HTTP {}", resp.status), String::new()));
                    last = format!("{what}: {code}: {message}");
                    match class {
                        ec2::ErrorClass::Retry => {}
                        ec2::ErrorClass::Credentials if !refreshed => {
                            refreshed = true;
                            self.creds_refresh_unix_s = 0;
                            self.ensure_credentials()?;
                        }
                        ec2::ErrorClass::Clock => {
                            if let Some(i) = self.inputs.clone() {
                                self.check_clock(&i);
                            }
                        }
                        ec2::ErrorClass::Denied => {
                            return Err((s.denied)(self, format!("{code}: {message}")));
                        }
                        _ => return Err(CallError::Other(last)),
                    }
                }
            }
            std::thread::sleep(backoff.failure());
        }
        Err(CallError::Other(last))
    }

    fn eni_id(&self) -> Result<String, CallError> {
        self.session
            .as_ref()
            .map(|s| s.identity.interface_id.clone())
            .ok_or_else(|| CallError::Other("no session".into()))
    }

    fn describe_eni(&mut self) -> Result<ec2::NetworkInterface, CallError> {
        let eni = self.eni_id()?;
        let body = self.call(&ec2::describe_network_interface(&eni))?;
        ec2::parse_describe_network_interfaces(&body)
            .map_err(|e| CallError::Other(format!("DescribeNetworkInterfaces: {e}")))?
            .into_iter()
            .find(|n| n.id == eni)
            .ok_or_else(|| {
                CallError::Other(format!(
                    "DescribeNetworkInterfaces: {eni} not in the answer"
                ))
            })
    }

    fn source_dest_check(&mut self) -> Result<(), CallError> {
        let eni = self.eni_id()?;
        let r = (|| {
            if !self.describe_eni()?.source_dest_check {
                return Ok(false);
            }
            let body = self.call(&ec2::disable_source_dest_check(&eni))?;
            ec2::parse_ok(ec2::Action::ModifyNetworkInterfaceAttribute, &body)
                .map_err(|e| CallError::Other(format!("ModifyNetworkInterfaceAttribute: {e}")))?;
            if self.describe_eni()?.source_dest_check {
                return Err(CallError::Other(format!(
                    "source/dest check of {eni} still on after ModifyNetworkInterfaceAttribute"
                )));
            }
            Ok(true)
        })();
        match r {
            Ok(changed) => {
                let was = self
                    .status
                    .lock()
                    .map(|s| s.source_dest_check.clone())
                    .unwrap_or_default();
                if was != ItemState::Done {
                    info(format_args!(
                        "aws source-dest-check off on {eni} ({}, verified)",
                        if changed { "turned off" } else { "already off" }
                    ));
                }
                self.with_status(|st| st.source_dest_check = ItemState::Done);
                Ok(())
            }
            Err(e) => {
                let why = e.short();
                self.with_status(|st| st.source_dest_check = ItemState::Pending(why));
                Err(e)
            }
        }
    }

    fn elastic_ips(&mut self, cfg: &AwsConfig, primary: Ipv4Addr) -> Result<(), CallError> {
        let eni = self.eni_id()?;
        let mut nic = self.describe_eni()?;
        let secondary = |n: &ec2::NetworkInterface| -> Vec<Ipv4Addr> {
            n.private_ips
                .iter()
                .filter(|p| !p.primary)
                .map(|p| p.address)
                .collect()
        };
        let nic_primary = nic
            .private_ips
            .iter()
            .find(|p| p.primary)
            .map_or(primary, |p| p.address);
        let plan = awsplan::eip_plan(&cfg.elastic_ips, nic_primary, &secondary(&nic));
        // A failed assignment (the instance type's address limit, say) leaves the Elastic IPs
        // that have an address to be associated all the same.
        let mut first_error = None;
        if plan.assign > 0 {
            let n = u32::try_from(plan.assign).unwrap_or(u32::MAX);
            let assigned = self
                .call(&ec2::assign_private_ip_addresses(
                    &eni,
                    &ec2::SecondaryIps::Count(n),
                    false,
                ))
                .and_then(|body| {
                    ec2::parse_assign_private_ip_addresses(&body)
                        .map_err(|e| CallError::Other(format!("AssignPrivateIpAddresses: {e}")))
                });
            match assigned {
                Ok(got) => {
                    info(format_args!(
                        "aws assigned {} secondary address(es) to {eni}: {}",
                        n,
                        got.iter()
                            .filter(|a| **a != nic_primary)
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(",")
                    ));
                    nic = self.describe_eni()?;
                }
                Err(e) => first_error = Some(e),
            }
        }
        let plan = awsplan::eip_plan(&cfg.elastic_ips, nic_primary, &secondary(&nic));
        let body = self.call(&ec2::describe_addresses(&cfg.elastic_ips))?;
        let mut addrs = ec2::parse_describe_addresses(&body)
            .map_err(|e| CallError::Other(format!("DescribeAddresses: {e}")))?;
        for (alloc, private) in &plan.pairs {
            let ours = |list: &[ec2::Address]| {
                list.iter()
                    .find(|a| &a.allocation_id == alloc)
                    .is_some_and(|a| {
                        a.network_interface_id.as_deref() == Some(eni.as_str())
                            && a.private_ip == Some(*private)
                    })
            };
            if ours(&addrs) {
                self.set_eip(alloc, ItemState::Done, None);
                continue;
            }
            let r = self
                .call(&ec2::associate_address(alloc, &eni, Some(*private)))
                .and_then(|b| {
                    ec2::parse_associate_address(&b)
                        .map_err(|e| CallError::Other(format!("AssociateAddress: {e}")))
                })
                .and_then(|_| self.call(&ec2::describe_addresses(&cfg.elastic_ips)))
                .and_then(|b| {
                    ec2::parse_describe_addresses(&b)
                        .map_err(|e| CallError::Other(format!("DescribeAddresses: {e}")))
                });
            match r {
                Ok(a) if ours(&a) => {
                    let public = a
                        .iter()
                        .find(|x| &x.allocation_id == alloc)
                        .map(|x| x.public_ip.to_string())
                        .unwrap_or_default();
                    addrs = a;
                    self.set_eip(
                        alloc,
                        ItemState::Done,
                        Some(format!(
                            "aws eip {alloc} {public} -> {eni} {private} (associated, verified)"
                        )),
                    );
                }
                Ok(a) => {
                    addrs = a;
                    let e = CallError::Other(format!(
                        "{alloc} not on {eni} {private} after AssociateAddress"
                    ));
                    self.set_eip(alloc, ItemState::Pending(e.short()), None);
                    first_error.get_or_insert(e);
                }
                Err(e) => {
                    self.set_eip(alloc, ItemState::Pending(e.short()), None);
                    first_error.get_or_insert(e);
                }
            }
        }
        for alloc in cfg.elastic_ips.iter().skip(plan.pairs.len()) {
            self.set_eip(
                alloc,
                ItemState::Pending("no private address for it yet".into()),
                None,
            );
        }
        // The table spreads flows over the addresses whose Elastic IP is in place.
        let done: Vec<(String, Ipv4Addr)> = {
            let st = self
                .status
                .lock()
                .map(|s| s.eips.clone())
                .unwrap_or_default();
            plan.pairs
                .iter()
                .filter(|(a, _)| st.iter().any(|(id, s)| id == a && *s == ItemState::Done))
                .cloned()
                .collect()
        };
        let event = Event::Egress {
            secondary: plan
                .pairs
                .iter()
                .map(|(_, a)| *a)
                .filter(|a| *a != nic_primary)
                .collect(),
            snat: awsplan::snat_addresses(&done),
            by_source: Vec::new(),
        };
        if self.egress_sent.as_ref() != Some(&event) {
            let _ = self.events.send(event.clone());
            self.egress_sent = Some(event);
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn set_eip(&self, alloc: &str, state: ItemState, line: Option<String>) {
        if let Some(l) = line {
            info(l);
        }
        self.with_status(|st| {
            if let Some(e) = st.eips.iter_mut().find(|(id, _)| id == alloc) {
                e.1 = state;
            }
        });
    }

    fn tables(&mut self, cfg: &AwsConfig) -> Result<Vec<ec2::RouteTable>, CallError> {
        let mut tables = Vec::new();
        if !cfg.route_tables.is_empty() {
            let body = self.call(&ec2::describe_route_tables_by_id(&cfg.route_tables))?;
            tables = ec2::parse_describe_route_tables(&body)
                .map_err(|e| CallError::Other(format!("DescribeRouteTables: {e}")))?;
            let missing: Vec<&String> = cfg
                .route_tables
                .iter()
                .filter(|id| !tables.iter().any(|t| &t.id == *id))
                .collect();
            if !missing.is_empty() {
                error("aws", format_args!("route tables not found: {missing:?}"));
            }
        }
        if let Some(tag) = &cfg.route_table_tag {
            let vpc = self.session.as_ref().map(|s| s.identity.vpc_id.clone());
            let body = self.call(&ec2::describe_route_tables_by_tags(
                std::slice::from_ref(tag),
                vpc.as_deref(),
            ))?;
            for t in ec2::parse_describe_route_tables(&body)
                .map_err(|e| CallError::Other(format!("DescribeRouteTables: {e}")))?
            {
                if !tables.iter().any(|x| x.id == t.id) {
                    tables.push(t);
                }
            }
        }
        Ok(tables)
    }

    fn routes(&mut self, cfg: &AwsConfig) -> Result<(), CallError> {
        let eni = self.eni_id()?;
        let tables = self.tables(cfg)?;
        self.with_status(|st| {
            for t in &tables {
                if !st.routes.iter().any(|(id, _)| *id == t.id) {
                    st.routes
                        .push((t.id.clone(), ItemState::Pending("not done yet".into())));
                }
            }
        });
        let mut first_error = None;
        for t in tables {
            let current = default_route(&t);
            let first_claim = !self.claimed.contains(&t.id);
            let action = awsplan::route_action(&current, &eni, first_claim, cfg.reclaim_routes);
            let r = match action {
                RouteAction::Keep => Ok(None),
                RouteAction::Report => {
                    let why = current.to_string();
                    let was = self.route_state(&t.id);
                    if was != ItemState::Drifted(why.clone()) {
                        error(
                            "aws",
                            format_args!(
                                "route table {} now has {why}, not {eni}: someone moved it; leaving it (reclaim_routes = false)",
                                t.id
                            ),
                        );
                    }
                    self.set_route(&t.id, ItemState::Drifted(why));
                    continue;
                }
                RouteAction::Create => self
                    .call(&ec2::create_route(&t.id, ec2::DEFAULT_ROUTE, &eni))
                    .and_then(|b| {
                        ec2::parse_ok(ec2::Action::CreateRoute, &b)
                            .map_err(|e| CallError::Other(format!("CreateRoute: {e}")))
                    })
                    .map(|()| Some("created")),
                RouteAction::Replace => self
                    .call(&ec2::replace_route(&t.id, ec2::DEFAULT_ROUTE, &eni))
                    .and_then(|b| {
                        ec2::parse_ok(ec2::Action::ReplaceRoute, &b)
                            .map_err(|e| CallError::Other(format!("ReplaceRoute: {e}")))
                    })
                    .map(|()| Some(if first_claim { "replaced" } else { "reclaimed" })),
            };
            let r = r.and_then(|done| match done {
                None => Ok(None),
                Some(how) => {
                    let body = self.call(&ec2::describe_route_tables_by_id(
                        std::slice::from_ref(&t.id),
                    ))?;
                    let back = ec2::parse_describe_route_tables(&body)
                        .map_err(|e| CallError::Other(format!("DescribeRouteTables: {e}")))?;
                    let now = back
                        .iter()
                        .find(|x| x.id == t.id)
                        .map(default_route)
                        .unwrap_or(DefaultRoute::None);
                    if now == DefaultRoute::Eni(eni.clone()) {
                        Ok(Some((how, current.clone())))
                    } else {
                        Err(CallError::Other(format!(
                            "route table {}: {now} after the change, not {eni}",
                            t.id
                        )))
                    }
                }
            });
            match r {
                Ok(changed) => {
                    self.claimed.insert(t.id.clone());
                    if let Some((how, before)) = changed {
                        info(format_args!(
                            "aws route {} 0.0.0.0/0 -> {eni} ({how}, was {before}; verified)",
                            t.id
                        ));
                    } else if self.route_state(&t.id) != ItemState::Done {
                        info(format_args!(
                            "aws route {} 0.0.0.0/0 -> {eni} (already; verified)",
                            t.id
                        ));
                    }
                    self.set_route(&t.id, ItemState::Done);
                }
                Err(e) => {
                    self.set_route(&t.id, ItemState::Pending(e.short()));
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn route_state(&self, id: &str) -> ItemState {
        self.status
            .lock()
            .ok()
            .and_then(|s| {
                s.routes
                    .iter()
                    .find(|(r, _)| r == id)
                    .map(|(_, st)| st.clone())
            })
            .unwrap_or_default()
    }

    fn set_route(&self, id: &str, state: ItemState) {
        self.with_status(|st| match st.routes.iter_mut().find(|(r, _)| r == id) {
            Some(e) => e.1 = state,
            None => st.routes.push((id.to_string(), state)),
        });
    }
}

/// A table's `0.0.0.0/0` as the plan sees it.
fn default_route(t: &ec2::RouteTable) -> DefaultRoute {
    let Some(r) = t.route(ec2::DEFAULT_ROUTE) else {
        return DefaultRoute::None;
    };
    let id = r.target.as_ref().map(|x| x.id.clone()).unwrap_or_default();
    match (&r.state, r.target.as_ref().map(|x| x.kind)) {
        (ec2::RouteState::Blackhole, _) => DefaultRoute::Blackhole(id),
        (_, Some(ec2::TargetKind::NetworkInterface)) => DefaultRoute::Eni(id),
        _ => DefaultRoute::Other(id),
    }
}
