//! The nat-init configuration: a flat TOML document. The image builder bakes one at
//! [`BAKED_PATH`]; IMDS user-data holding a nat-init TOML document overrides it key by key.
//! Every key is optional. Errors name the document, the line and the key so the console line
//! tells the operator exactly what to fix.

use std::ops::Range;

use serde::Deserialize;
use toml::de::DeTable;

use crate::cidr::Ipv4Cidr;
use crate::nft::MasqueradePorts;

/// Where the image builder puts the rendered profile configuration.
pub const BAKED_PATH: &str = "/etc/nat-init.toml";

/// The effective configuration after defaults, the baked file and user-data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `interface`: pin the primary interface by name (its kernel name such as `eth0`, or its
    /// udev-style name such as `ens5`), kept even when IMDS names another ENI the primary.
    /// Default: the primary ENI IMDS names (the first Ethernet device in PCI address order
    /// until IMDS answers, or without IMDS).
    pub interface: Option<String>,
    /// `rename` (default `true`): rename the primary interface to its udev-style name
    /// (`ens<slot>`, else `enp<bus>s<dev>`), the name AWS documentation and rules assume.
    pub rename: bool,
    /// `name`: rename the primary interface to this name instead of the udev-style one.
    /// Needs `rename = true`. At most 15 bytes, no `/`, `:` or whitespace.
    pub name: Option<String>,
    /// `private_ranges`: the source ranges whose new flows are forwarded and masqueraded
    /// (anything else is dropped: no open relay). Default: the VPC's IPv4 CIDR blocks from IMDS;
    /// without IMDS, 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 and 100.64.0.0/10.
    /// Refused: an empty list, ranges whose merged union is the whole address space, and any
    /// range overlapping a special-use block (0/8, 127/8, 169.254/16, 224/4, 240/4).
    pub private_ranges: Option<Vec<Ipv4Cidr>>,
    /// `health_interval` (default 60, 1..=86400): seconds between `nat-init: health` lines.
    pub health_interval: u32,
    /// `rp_filter` (default 0): reverse-path filter for `all` and the interface: 0 off, 1 strict,
    /// 2 loose. Traffic enters and leaves one ENI, so 0 is right for a single interface.
    pub rp_filter: u8,
    /// `conntrack_max` (default 0): connection-tracking table size; 0 sizes it from RAM. A
    /// size whose full table (324 bytes an entry with its share of the hash) would take more
    /// than a quarter of `MemTotal` is refused when the sysctls are applied, with an error
    /// line, and sized from RAM instead (`plan::conntrack_sizing`).
    pub conntrack_max: u32,
    /// `conntrack_buckets` (default 0): conntrack hash buckets; 0 derives them from the size
    /// (half). Refused like `conntrack_max` when the hash (8 bytes a bucket) does not fit in
    /// what a quarter of `MemTotal` leaves beside a full table.
    pub conntrack_buckets: u32,
    /// `tcp_established_timeout` (default 7440, 60..=432000): seconds an idle established TCP
    /// flow keeps its mapping. RFC 5382 asks for at least 7440 (2 h 4 min); lower values are
    /// accepted (NAT Gateway uses 350) because some operators want them, at their own risk.
    pub tcp_established_timeout: u32,
    /// `tcp_transitory_timeout` (default 240, 30..=86400): seconds an idle TCP flow that is
    /// partially open (`SYN_SENT`, `SYN_RECV`) or partially closed (`FIN_WAIT`, `CLOSE_WAIT`,
    /// `LAST_ACK`) keeps its mapping. RFC 5382 asks for at least 240 (4 min); the kernel's
    /// defaults are 30 to 120. NAT Gateway drops any flow idle for 350 s.
    pub tcp_transitory_timeout: u32,
    /// `tcp_time_wait_timeout` (default 120, 10..=3600): seconds a TCP flow closed from both
    /// ends (`TIME_WAIT`) keeps its mapping, for a retransmitted last FIN and ACK. RFC 5382's
    /// 4 minutes is for partially closed flows; 120 s (the kernel's, twice Linux's 60-s
    /// TIME_WAIT) is kept because closed flows dominate the table of a busy NAT.
    pub tcp_time_wait_timeout: u32,
    /// `udp_timeout` (default 120, 10..=3600): seconds an idle UDP flow keeps its mapping
    /// until it is a stream: unanswered, or answered within its first 2 s (a DNS query).
    /// RFC 4787 (REQ-5): a UDP mapping lasts at least 2 minutes; the kernel's default is 30.
    pub udp_timeout: u32,
    /// `udp_timeout_stream` (default 350, 30..=86400): seconds an idle UDP stream (traffic
    /// both ways past its first 2 s) keeps its mapping. RFC 4787 recommends 5 minutes or
    /// more; 350 s is NAT Gateway's idle timeout, so a flow kept alive behind NAT Gateway is
    /// kept alive here. The kernel's default is 120.
    pub udp_timeout_stream: u32,
    /// `flowtable` (default `true`): offload established flows to the nftables flowtable fast
    /// path when the kernel supports it. Offloaded packets skip the forward counters.
    pub flowtable: bool,
    /// `mss_clamp` (default `true`): clamp the MSS of forwarded SYNs to the route MTU so the
    /// 9001-byte VPC MTU does not black-hole traffic over the 1500-byte internet path.
    pub mss_clamp: bool,
    /// `default_route_mtu` (default 1500, 576..=9001): MTU set on the default route, the
    /// internet path's MTU.
    pub default_route_mtu: u16,
    /// `icmp_rate` (default 10, 1..=100000): ICMP packets per second accepted on input.
    pub icmp_rate: u32,
    /// `masquerade_ports` (default `"fully-random"`; or `"random"`, `"preserve"`): how the
    /// outside source port of a masqueraded flow is chosen. `fully-random`: a fresh random port
    /// each flow. Many hosts opening flows to the same destination at once (the usual load of
    /// a NAT: one API, one bucket) are otherwise steered to the same candidate port, and the
    /// loser of that race is dropped when conntrack confirms it (`insert_failed`, a lost SYN and
    /// a retransmission a second later: the SNAT race Docker and Kubernetes met); random ports
    /// also keep outside ports unpredictable. `random`: a port from a keyed hash of the flow.
    /// `preserve`: the host's own port while it is free on the outside address (the kernel's
    /// default), for what wants port preservation (some peer-to-peer traversal); it is also
    /// the most predictable. NAT Gateway documents ports per destination (55,000 simultaneous
    /// connections to each unique destination), not port preservation.
    pub masquerade_ports: MasqueradePorts,
    /// `per_source_conntrack_limit` (default 32768, 0 = no limit): most tracked connections
    /// one private source may hold through the NAT; its new flows beyond are dropped (counted
    /// by `fwd_per_source_limit`), so one host cannot fill the table for the others. 32768 is
    /// a quarter of the default `conntrack_max` (131072): one host never takes more than that
    /// share, and it is above what a normal host opens (Linux's whole ephemeral port range,
    /// 28232 ports, to one destination). Set it lower with a small `conntrack_max`.
    pub per_source_conntrack_limit: u32,
    /// `nat_port_range` (default unset, the kernel's choice: 1024-65535 for a port it must
    /// change; or `"MIN-MAX"`, ports 1..=65535, MIN <= MAX): the outside source ports
    /// masquerade and source NAT give flows, whatever `masquerade_ports` says about picking
    /// among them. NAT Gateway limits ports per destination too; a small range means fewer
    /// flows at once to one destination address and port (a new one beyond it is dropped,
    /// counted in conntrack's `insert_failed`). ICMP echo ids are taken from it as well.
    pub nat_port_range: Option<(u16, u16)>,
    /// `imds` (default `true`): ask IMDSv2 for the VPC ranges and user-data at boot. Only the
    /// baked file can turn it off (user-data comes from IMDS).
    pub imds: bool,
    /// `dhcp_timeout` (default 30, 1..=3600): seconds without a lease after which nat-init
    /// prints `nat-init: error dhcp ...`. It keeps trying afterwards.
    pub dhcp_timeout: u32,
    /// The AWS side: the instance role's calls to EC2 (all off by default, since they need
    /// IAM permissions) and the clock (on by default).
    pub aws: AwsConfig,
}

/// The AWS-side keys (flat in the document, like every other key). Everything that calls
/// EC2 is off until a key asks for it; nothing here holds up the NAT on its own ENI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsConfig {
    /// `disable_source_dest_check` (default `false`): turn the source/destination check off
    /// on the primary ENI (`ec2:ModifyNetworkInterfaceAttribute`) and read it back.
    pub disable_source_dest_check: bool,
    /// `route_tables` (default none): route table ids (`rtb-...`) whose `0.0.0.0/0` is
    /// replaced (or created) to point at this instance's primary ENI.
    pub route_tables: Vec<String>,
    /// `route_table_tag` (default none): `"Key=Value"`: the route tables of this VPC that carry
    /// the tag are claimed like `route_tables`.
    pub route_table_tag: Option<(String, String)>,
    /// `reclaim_routes` (default `false`): a claimed table found pointing elsewhere later is
    /// pointed back at this ENI; otherwise it is only reported.
    pub reclaim_routes: bool,
    /// `elastic_ips` (default none): Elastic IP allocation ids (`eipalloc-...`), associated in
    /// order with the ENI's primary private address and then with secondary private addresses
    /// (assigned as needed); new flows are spread across them.
    pub elastic_ips: Vec<String>,
    /// `aws_region` (default: IMDS's `placement/region`).
    pub region: Option<String>,
    /// `ec2_endpoint` (default `https://ec2.<region>.amazonaws.com`): an `https://host[:port]`
    /// URL, for a VPC interface endpoint's DNS name.
    pub ec2_endpoint: Option<String>,
    /// `aws_ca_file` (default none; baked file only): a PEM file of extra trust roots for the
    /// AWS endpoints, added to the built-in set (the test image's emulated AWS).
    pub ca_file: Option<String>,
    /// `aws_check_interval` (default 60, 10..=3600): seconds between re-checks of the source/
    /// destination check, the routes and the addresses once they are in place.
    pub check_interval: u32,
    /// `ntp` (default `true`): check the clock against `ntp_server` at start and every
    /// 15 minutes, and step it when it is off by more than a second (SigV4 and TLS need it).
    pub ntp: bool,
    /// `ntp_server` (default `169.254.169.123`, the Amazon Time Sync Service).
    pub ntp_server: std::net::Ipv4Addr,
    /// Failover between peers: on when `failover_group` is set.
    pub failover: Option<FailoverConfig>,
    /// CloudWatch metrics: on when `metrics = true`.
    pub metrics: Option<MetricsConfig>,
}

/// The metrics keys (`metrics`, `metrics_*`, `nat_name`): NAT Gateway's CloudWatch metrics
/// and the instance's own, published by nat-init itself (see `crate::metrics`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// `metrics_namespace` (default `"NatInstance"`): CloudWatch's namespace; not `AWS/...`,
    /// which CloudWatch keeps for its own services. 1 to 255 printable ASCII.
    pub namespace: String,
    /// `metrics_period` (default 60): seconds each data point covers: 10, 30 (high
    /// resolution, and dearer to alarm on), or a multiple of 60 up to 3600.
    pub period_s: u32,
    /// `nat_name` (default none): the `NatName` dimension's value, 1 to 255 printable ASCII;
    /// a name that outlives instance replacement, for alarms and dashboards.
    pub nat_name: Option<String>,
    /// `metrics_dimensions` (default `["InstanceId", "NatName", "AutoScalingGroupName"]`): the
    /// dimensions every datum carries, a non-empty subset of those three. `NatName` is put
    /// only when `nat_name` is set, `AutoScalingGroupName` only when the instance is in one
    /// (its `aws:autoscaling:groupName` tag). CloudWatch keeps each combination as a metric
    /// of its own: an alarm must name exactly these.
    pub dimensions: Vec<MetricDimension>,
    /// `cloudwatch_endpoint` (default `https://monitoring.<region>.amazonaws.com`): an
    /// `https://host[:port]` URL, for a VPC interface endpoint's DNS name.
    pub endpoint: Option<String>,
}

/// A dimension `metrics_dimensions` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MetricDimension {
    InstanceId,
    NatName,
    AutoScalingGroupName,
}

impl MetricDimension {
    pub const ALL: [MetricDimension; 3] = [
        MetricDimension::InstanceId,
        MetricDimension::NatName,
        MetricDimension::AutoScalingGroupName,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::InstanceId => "InstanceId",
            Self::NatName => "NatName",
            Self::AutoScalingGroupName => "AutoScalingGroupName",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == s)
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            namespace: "NatInstance".into(),
            period_s: 60,
            nat_name: None,
            dimensions: MetricDimension::ALL.to_vec(),
            endpoint: None,
        }
    }
}

/// Printable ASCII of 1 to `max` characters: what CloudWatch takes for names and values.
fn cloudwatch_text(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len()) && s.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// The failover keys (`failover_*`). A group's members are the running instances tagged
/// `nat:failover-group=<group>`; each owns the `route_tables` and `elastic_ips` of its own
/// configuration and takes over a failed peer's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverConfig {
    /// `failover_group`: 1 to 64 of `A-Za-z0-9._-`.
    pub group: String,
    /// `failover_timeout_ms` (default 1000, 300..=10000): a peer heard on neither path for
    /// this long has failed.
    pub timeout_ms: u32,
    /// `failover_hold` (default 60 s, 0..=3600): how long an owner must have been healthy
    /// before it takes its route tables and addresses back from the peer holding them.
    pub hold_secs: u32,
    /// `failover_probes` (default: the EC2 endpoint, port 443): `"a.b.c.d:port"` TCP targets
    /// that tell whether this instance's internet path works (up to 8).
    pub probes: Vec<std::net::SocketAddrV4>,
}

/// The tag whose value names a failover group.
pub const FAILOVER_TAG: &str = "nat:failover-group";
/// Most probe targets.
pub const MAX_PROBES: usize = 8;

impl Default for AwsConfig {
    fn default() -> Self {
        Self {
            disable_source_dest_check: false,
            route_tables: Vec::new(),
            route_table_tag: None,
            reclaim_routes: false,
            elastic_ips: Vec::new(),
            region: None,
            ec2_endpoint: None,
            ca_file: None,
            check_interval: 60,
            ntp: true,
            ntp_server: std::net::Ipv4Addr::new(169, 254, 169, 123),
            failover: None,
            metrics: None,
        }
    }
}

impl AwsConfig {
    /// Whether anything needs EC2 calls (and so the instance role's credentials).
    pub fn uses_ec2(&self) -> bool {
        self.disable_source_dest_check
            || !self.route_tables.is_empty()
            || self.route_table_tag.is_some()
            || !self.elastic_ips.is_empty()
            || self.failover.is_some()
    }

    /// Whether anything needs the instance role's credentials: EC2 calls or metrics.
    pub fn uses_aws(&self) -> bool {
        self.uses_ec2() || self.metrics.is_some()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            interface: None,
            rename: true,
            name: None,
            private_ranges: None,
            health_interval: 60,
            rp_filter: 0,
            conntrack_max: 0,
            conntrack_buckets: 0,
            tcp_established_timeout: 7440,
            tcp_transitory_timeout: 240,
            tcp_time_wait_timeout: 120,
            udp_timeout: 120,
            udp_timeout_stream: 350,
            flowtable: true,
            mss_clamp: true,
            default_route_mtu: 1500,
            icmp_rate: 10,
            masquerade_ports: MasqueradePorts::default(),
            per_source_conntrack_limit: 32768,
            nat_port_range: None,
            imds: true,
            dhcp_timeout: 30,
            aws: AwsConfig::default(),
        }
    }
}

/// A configuration document that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigError {
    /// The document's name as given by the caller (`/etc/nat-init.toml`, `user-data`).
    pub source_name: String,
    /// 1-based line and column of the offending text, when known.
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// The key at fault, when known.
    pub key: Option<String>,
    pub message: String,
}

impl ConfigError {
    fn render(&self) -> String {
        let mut s = self.source_name.clone();
        if let Some(line) = self.line {
            s.push_str(&format!(" line {line}"));
        }
        if let Some(key) = &self.key {
            if self.line.is_some() {
                s.push(',');
            }
            s.push_str(&format!(" key {key}"));
        }
        s.push_str(": ");
        s.push_str(&self.message);
        s
    }
}

/// Every key as written; `None` when absent. Merging two documents is field-wise `or`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    interface: Option<String>,
    rename: Option<bool>,
    name: Option<String>,
    /// Kept as spanned text so an error points at the element, not the whole array.
    private_ranges: Option<Vec<toml::Spanned<String>>>,
    health_interval: Option<u32>,
    rp_filter: Option<u8>,
    conntrack_max: Option<u32>,
    conntrack_buckets: Option<u32>,
    tcp_established_timeout: Option<u32>,
    tcp_transitory_timeout: Option<u32>,
    tcp_time_wait_timeout: Option<u32>,
    udp_timeout: Option<u32>,
    udp_timeout_stream: Option<u32>,
    flowtable: Option<bool>,
    mss_clamp: Option<bool>,
    default_route_mtu: Option<u16>,
    icmp_rate: Option<u32>,
    masquerade_ports: Option<String>,
    per_source_conntrack_limit: Option<u32>,
    nat_port_range: Option<String>,
    imds: Option<bool>,
    dhcp_timeout: Option<u32>,
    disable_source_dest_check: Option<bool>,
    /// Spanned so an error points at the element.
    route_tables: Option<Vec<toml::Spanned<String>>>,
    route_table_tag: Option<String>,
    reclaim_routes: Option<bool>,
    elastic_ips: Option<Vec<toml::Spanned<String>>>,
    aws_region: Option<String>,
    ec2_endpoint: Option<String>,
    aws_ca_file: Option<String>,
    aws_check_interval: Option<u32>,
    ntp: Option<bool>,
    ntp_server: Option<String>,
    failover_group: Option<String>,
    failover_timeout_ms: Option<u32>,
    failover_hold: Option<u32>,
    failover_probes: Option<Vec<toml::Spanned<String>>>,
    metrics: Option<bool>,
    metrics_namespace: Option<String>,
    metrics_period: Option<u32>,
    nat_name: Option<String>,
    metrics_dimensions: Option<Vec<toml::Spanned<String>>>,
    cloudwatch_endpoint: Option<String>,
}

impl RawConfig {
    /// `over`'s keys win.
    fn overridden_by(self, over: RawConfig) -> RawConfig {
        RawConfig {
            interface: over.interface.or(self.interface),
            rename: over.rename.or(self.rename),
            name: over.name.or(self.name),
            private_ranges: over.private_ranges.or(self.private_ranges),
            health_interval: over.health_interval.or(self.health_interval),
            rp_filter: over.rp_filter.or(self.rp_filter),
            conntrack_max: over.conntrack_max.or(self.conntrack_max),
            conntrack_buckets: over.conntrack_buckets.or(self.conntrack_buckets),
            tcp_established_timeout: over
                .tcp_established_timeout
                .or(self.tcp_established_timeout),
            tcp_transitory_timeout: over.tcp_transitory_timeout.or(self.tcp_transitory_timeout),
            tcp_time_wait_timeout: over.tcp_time_wait_timeout.or(self.tcp_time_wait_timeout),
            udp_timeout: over.udp_timeout.or(self.udp_timeout),
            udp_timeout_stream: over.udp_timeout_stream.or(self.udp_timeout_stream),
            flowtable: over.flowtable.or(self.flowtable),
            mss_clamp: over.mss_clamp.or(self.mss_clamp),
            default_route_mtu: over.default_route_mtu.or(self.default_route_mtu),
            icmp_rate: over.icmp_rate.or(self.icmp_rate),
            masquerade_ports: over.masquerade_ports.or(self.masquerade_ports),
            per_source_conntrack_limit: over
                .per_source_conntrack_limit
                .or(self.per_source_conntrack_limit),
            nat_port_range: over.nat_port_range.or(self.nat_port_range),
            imds: over.imds.or(self.imds),
            dhcp_timeout: over.dhcp_timeout.or(self.dhcp_timeout),
            disable_source_dest_check: over
                .disable_source_dest_check
                .or(self.disable_source_dest_check),
            route_tables: over.route_tables.or(self.route_tables),
            route_table_tag: over.route_table_tag.or(self.route_table_tag),
            reclaim_routes: over.reclaim_routes.or(self.reclaim_routes),
            elastic_ips: over.elastic_ips.or(self.elastic_ips),
            aws_region: over.aws_region.or(self.aws_region),
            ec2_endpoint: over.ec2_endpoint.or(self.ec2_endpoint),
            aws_ca_file: over.aws_ca_file.or(self.aws_ca_file),
            aws_check_interval: over.aws_check_interval.or(self.aws_check_interval),
            ntp: over.ntp.or(self.ntp),
            ntp_server: over.ntp_server.or(self.ntp_server),
            failover_group: over.failover_group.or(self.failover_group),
            failover_timeout_ms: over.failover_timeout_ms.or(self.failover_timeout_ms),
            failover_hold: over.failover_hold.or(self.failover_hold),
            failover_probes: over.failover_probes.or(self.failover_probes),
            metrics: over.metrics.or(self.metrics),
            metrics_namespace: over.metrics_namespace.or(self.metrics_namespace),
            metrics_period: over.metrics_period.or(self.metrics_period),
            nat_name: over.nat_name.or(self.nat_name),
            metrics_dimensions: over.metrics_dimensions.or(self.metrics_dimensions),
            cloudwatch_endpoint: over.cloudwatch_endpoint.or(self.cloudwatch_endpoint),
        }
    }

    fn resolve(self) -> Config {
        let d = Config::default();
        let aws = self.resolve_aws(d.aws);
        Config {
            interface: self.interface,
            rename: self.rename.unwrap_or(d.rename),
            name: self.name,
            // Validated when parsed: nothing is dropped here.
            private_ranges: self.private_ranges.map(|v| {
                v.iter()
                    .filter_map(|s| s.get_ref().parse::<Ipv4Cidr>().ok())
                    .collect()
            }),
            health_interval: self.health_interval.unwrap_or(d.health_interval),
            rp_filter: self.rp_filter.unwrap_or(d.rp_filter),
            conntrack_max: self.conntrack_max.unwrap_or(d.conntrack_max),
            conntrack_buckets: self.conntrack_buckets.unwrap_or(d.conntrack_buckets),
            tcp_established_timeout: self
                .tcp_established_timeout
                .unwrap_or(d.tcp_established_timeout),
            tcp_transitory_timeout: self
                .tcp_transitory_timeout
                .unwrap_or(d.tcp_transitory_timeout),
            tcp_time_wait_timeout: self
                .tcp_time_wait_timeout
                .unwrap_or(d.tcp_time_wait_timeout),
            udp_timeout: self.udp_timeout.unwrap_or(d.udp_timeout),
            udp_timeout_stream: self.udp_timeout_stream.unwrap_or(d.udp_timeout_stream),
            flowtable: self.flowtable.unwrap_or(d.flowtable),
            mss_clamp: self.mss_clamp.unwrap_or(d.mss_clamp),
            default_route_mtu: self.default_route_mtu.unwrap_or(d.default_route_mtu),
            icmp_rate: self.icmp_rate.unwrap_or(d.icmp_rate),
            // Validated when parsed.
            masquerade_ports: self
                .masquerade_ports
                .as_deref()
                .and_then(masquerade_ports)
                .unwrap_or(d.masquerade_ports),
            per_source_conntrack_limit: self
                .per_source_conntrack_limit
                .unwrap_or(d.per_source_conntrack_limit),
            // Validated when parsed.
            nat_port_range: self
                .nat_port_range
                .as_deref()
                .and_then(|t| nat_port_range(t).ok())
                .or(d.nat_port_range),
            imds: self.imds.unwrap_or(d.imds),
            dhcp_timeout: self.dhcp_timeout.unwrap_or(d.dhcp_timeout),
            aws,
        }
    }

    /// Validated when parsed: nothing is dropped here.
    fn resolve_aws(&self, d: AwsConfig) -> AwsConfig {
        let texts = |v: &Option<Vec<toml::Spanned<String>>>| -> Vec<String> {
            v.iter().flatten().map(|s| s.get_ref().clone()).collect()
        };
        AwsConfig {
            disable_source_dest_check: self
                .disable_source_dest_check
                .unwrap_or(d.disable_source_dest_check),
            route_tables: texts(&self.route_tables),
            route_table_tag: self.route_table_tag.as_deref().and_then(tag_pair),
            reclaim_routes: self.reclaim_routes.unwrap_or(d.reclaim_routes),
            elastic_ips: texts(&self.elastic_ips),
            region: self.aws_region.clone(),
            ec2_endpoint: self.ec2_endpoint.clone(),
            ca_file: self.aws_ca_file.clone(),
            check_interval: self.aws_check_interval.unwrap_or(d.check_interval),
            ntp: self.ntp.unwrap_or(d.ntp),
            ntp_server: self
                .ntp_server
                .as_deref()
                .and_then(|s| s.parse().ok())
                .unwrap_or(d.ntp_server),
            failover: self.failover_group.as_ref().map(|group| FailoverConfig {
                group: group.clone(),
                timeout_ms: self.failover_timeout_ms.unwrap_or(1000),
                hold_secs: self.failover_hold.unwrap_or(60),
                probes: texts(&self.failover_probes)
                    .iter()
                    .filter_map(|p| p.parse().ok())
                    .collect(),
            }),
            metrics: self.metrics.unwrap_or(false).then(|| {
                let d = MetricsConfig::default();
                MetricsConfig {
                    namespace: self.metrics_namespace.clone().unwrap_or(d.namespace),
                    period_s: self.metrics_period.unwrap_or(d.period_s),
                    nat_name: self.nat_name.clone(),
                    dimensions: match &self.metrics_dimensions {
                        Some(list) => {
                            let mut v: Vec<MetricDimension> = list
                                .iter()
                                .filter_map(|s| MetricDimension::parse(s.get_ref()))
                                .collect();
                            v.sort();
                            v.dedup();
                            v
                        }
                        None => d.dimensions,
                    },
                    endpoint: self.cloudwatch_endpoint.clone(),
                }
            }),
        }
    }
}

/// `Key=Value` of `route_table_tag`: both sides non-empty.
fn tag_pair(text: &str) -> Option<(String, String)> {
    let (k, v) = text.split_once('=')?;
    (!k.is_empty() && !v.is_empty()).then(|| (k.to_string(), v.to_string()))
}

/// An EC2 resource id: `prefix-` and 8 or 17 lowercase hex digits.
fn is_resource_id(text: &str, prefix: &str) -> bool {
    text.strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('-'))
        .is_some_and(|hex| {
            matches!(hex.len(), 8 | 17)
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

/// Most Elastic IPs one ENI can carry on any instance type (50 addresses); a t4g.nano's ENI
/// takes 2.
const MAX_ELASTIC_IPS: usize = 50;

/// A parsed document with what is needed to point at its keys.
struct Document<'a> {
    text: &'a str,
    source_name: &'a str,
    /// (key, key span, value span) for each top-level key.
    keys: Vec<(String, Range<usize>, Range<usize>)>,
}

impl<'a> Document<'a> {
    fn error(&self, span: Option<Range<usize>>, key: Option<&str>, message: String) -> ConfigError {
        let key = key.map(str::to_string).or_else(|| {
            let at = span.as_ref()?.start;
            self.keys
                .iter()
                .find(|(_, k, v)| k.contains(&at) || v.contains(&at))
                .map(|(name, _, _)| name.clone())
        });
        let (line, column) = match span {
            Some(s) => {
                let (l, c) = line_column(self.text, s.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        ConfigError {
            source_name: self.source_name.to_string(),
            line,
            column,
            key,
            message,
        }
    }

    /// An error about `key`, located at its value.
    fn key_error(&self, key: &str, message: String) -> ConfigError {
        let span = self
            .keys
            .iter()
            .find(|(name, _, _)| name == key)
            .map(|(_, _, v)| v.clone());
        self.error(span, Some(key), message)
    }
}

/// 1-based line and column (in characters) of byte offset `at`.
fn line_column(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

fn parse_raw<'a>(text: &'a str, source_name: &'a str) -> Result<RawConfig, ConfigError> {
    let mut doc = Document {
        text,
        source_name,
        keys: Vec::new(),
    };
    let table = DeTable::parse(text)
        .map_err(|e| doc.error(e.span(), None, e.message().trim().to_string()))?;
    doc.keys = table
        .get_ref()
        .iter()
        .map(|(k, v)| (k.get_ref().to_string(), k.span(), v.span()))
        .collect();
    let raw: RawConfig = toml::from_str(text)
        .map_err(|e| doc.error(e.span(), None, e.message().trim().to_string()))?;
    validate(&raw, &doc)?;
    Ok(raw)
}

fn check_range(
    doc: &Document<'_>,
    key: &str,
    value: Option<u64>,
    min: u64,
    max: u64,
) -> Result<(), ConfigError> {
    match value {
        Some(v) if v < min || v > max => {
            Err(doc.key_error(key, format!("{v} is out of range: expected {min} to {max}")))
        }
        _ => Ok(()),
    }
}

fn check_ifname(doc: &Document<'_>, key: &str, name: Option<&String>) -> Result<(), ConfigError> {
    let Some(name) = name else { return Ok(()) };
    // The kernel's rules (dev_valid_name): 1..=15 bytes, not `.`/`..`, no `/`, `:` or space.
    let bad = name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if bad {
        return Err(doc.key_error(
            key,
            format!(
                "{name:?} is not a valid interface name: 1 to 15 bytes without '/', ':' or spaces"
            ),
        ));
    }
    Ok(())
}

fn masquerade_ports(name: &str) -> Option<MasqueradePorts> {
    MasqueradePorts::NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, m)| *m)
}

/// `"MIN-MAX"`: two ports from 1 to 65535, the first not above the second.
fn nat_port_range(text: &str) -> Result<(u16, u16), String> {
    let bad =
        || format!("{text:?} is not MIN-MAX with 1 <= MIN <= MAX <= 65535 (e.g. \"1024-65535\")");
    let (a, b) = text.split_once('-').ok_or_else(bad)?;
    let port = |p: &str| p.trim().parse::<u16>().ok().filter(|p| *p > 0);
    match (port(a), port(b)) {
        (Some(a), Some(b)) if a <= b => Ok((a, b)),
        _ => Err(bad()),
    }
}

fn validate(raw: &RawConfig, doc: &Document<'_>) -> Result<(), ConfigError> {
    if let Some(r) = &raw.nat_port_range
        && let Err(message) = nat_port_range(r)
    {
        return Err(doc.key_error("nat_port_range", message));
    }
    if let Some(m) = &raw.masquerade_ports
        && masquerade_ports(m).is_none()
    {
        return Err(doc.key_error(
            "masquerade_ports",
            format!("{m:?} is not one of \"random\", \"fully-random\", \"preserve\""),
        ));
    }
    check_ifname(doc, "interface", raw.interface.as_ref())?;
    check_ifname(doc, "name", raw.name.as_ref())?;
    if raw.name.is_some() && raw.rename == Some(false) {
        return Err(doc.key_error(
            "name",
            "conflicts with rename = false: drop one of them".to_string(),
        ));
    }
    if let Some(texts) = &raw.private_ranges {
        let mut ranges = Vec::new();
        for text in texts {
            let cidr = text
                .get_ref()
                .parse::<Ipv4Cidr>()
                .map_err(|e| doc.error(Some(text.span()), Some("private_ranges"), e.to_string()))?;
            ranges.push(cidr);
        }
        if ranges.is_empty() {
            return Err(doc.key_error(
                "private_ranges",
                "is empty: nothing would be forwarded; omit the key to use the VPC ranges"
                    .to_string(),
            ));
        }
        // The merged union, so no combination of ranges gets around it.
        if let Err(e) = crate::cidr::check_private(&ranges) {
            let at = e
                .range()
                .and_then(|bad| ranges.iter().position(|c| *c == bad))
                .map(|i| texts[i].span());
            return Err(match at {
                Some(span) => doc.error(Some(span), Some("private_ranges"), e.to_string()),
                None => doc.key_error("private_ranges", e.to_string()),
            });
        }
    }
    let num = |v: Option<u32>| v.map(u64::from);
    check_range(doc, "health_interval", num(raw.health_interval), 1, 86400)?;
    check_range(doc, "rp_filter", raw.rp_filter.map(u64::from), 0, 2)?;
    check_range(
        doc,
        "tcp_established_timeout",
        num(raw.tcp_established_timeout),
        60,
        432_000,
    )?;
    check_range(
        doc,
        "tcp_transitory_timeout",
        num(raw.tcp_transitory_timeout),
        30,
        86400,
    )?;
    check_range(
        doc,
        "tcp_time_wait_timeout",
        num(raw.tcp_time_wait_timeout),
        10,
        3600,
    )?;
    check_range(doc, "udp_timeout", num(raw.udp_timeout), 10, 3600)?;
    check_range(
        doc,
        "udp_timeout_stream",
        num(raw.udp_timeout_stream),
        30,
        86400,
    )?;
    check_range(
        doc,
        "default_route_mtu",
        raw.default_route_mtu.map(u64::from),
        576,
        9001,
    )?;
    check_range(doc, "icmp_rate", num(raw.icmp_rate), 1, 100_000)?;
    check_range(doc, "dhcp_timeout", num(raw.dhcp_timeout), 1, 3600)?;
    validate_aws(raw, doc)
}

/// Every element of a list of EC2 resource ids has the id's form, and none repeats.
fn check_ids(
    doc: &Document<'_>,
    key: &str,
    ids: Option<&Vec<toml::Spanned<String>>>,
    prefix: &str,
) -> Result<(), ConfigError> {
    let Some(ids) = ids else { return Ok(()) };
    for (i, id) in ids.iter().enumerate() {
        let text = id.get_ref();
        if !is_resource_id(text, prefix) {
            return Err(doc.error(
                Some(id.span()),
                Some(key),
                format!("{text:?} is not a {prefix} id: expected {prefix}- and 8 or 17 hex digits"),
            ));
        }
        if ids[..i].iter().any(|o| o.get_ref() == text) {
            return Err(doc.error(
                Some(id.span()),
                Some(key),
                format!("{text} is listed twice"),
            ));
        }
    }
    Ok(())
}

fn validate_aws(raw: &RawConfig, doc: &Document<'_>) -> Result<(), ConfigError> {
    check_ids(doc, "route_tables", raw.route_tables.as_ref(), "rtb")?;
    check_ids(doc, "elastic_ips", raw.elastic_ips.as_ref(), "eipalloc")?;
    if let Some(ids) = &raw.elastic_ips
        && ids.len() > MAX_ELASTIC_IPS
    {
        return Err(doc.key_error(
            "elastic_ips",
            format!(
                "{} allocation ids: an ENI carries at most {MAX_ELASTIC_IPS} addresses (a t4g.nano's 2)",
                ids.len()
            ),
        ));
    }
    if let Some(t) = &raw.route_table_tag
        && tag_pair(t).is_none()
    {
        return Err(doc.key_error(
            "route_table_tag",
            format!("{t:?} is not \"Key=Value\" with both sides non-empty"),
        ));
    }
    if let Some(r) = &raw.aws_region {
        let ok = r.len() <= 32
            && r.split('-').count() >= 3
            && r.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(doc.key_error(
                "aws_region",
                format!("{r:?} is not a region name such as \"eu-west-1\""),
            ));
        }
    }
    if let Some(e) = &raw.ec2_endpoint
        && let Err(why) = crate::plan::aws::parse_endpoint(e)
    {
        return Err(doc.key_error("ec2_endpoint", why));
    }
    if let Some(p) = &raw.aws_ca_file
        && !p.starts_with('/')
    {
        return Err(doc.key_error("aws_ca_file", format!("{p:?} is not an absolute path")));
    }
    if let Some(s) = &raw.ntp_server
        && s.parse::<std::net::Ipv4Addr>().is_err()
    {
        return Err(doc.key_error("ntp_server", format!("{s:?} is not an IPv4 address")));
    }
    check_range(
        doc,
        "aws_check_interval",
        raw.aws_check_interval.map(u64::from),
        10,
        3600,
    )?;
    validate_failover(raw, doc)?;
    validate_metrics(raw, doc)
}

fn validate_metrics(raw: &RawConfig, doc: &Document<'_>) -> Result<(), ConfigError> {
    if raw.metrics != Some(true) {
        // A key that would do nothing is a mistake worth saying, not a silent no-op.
        let stray = [
            ("metrics_namespace", raw.metrics_namespace.is_some()),
            ("metrics_period", raw.metrics_period.is_some()),
            ("nat_name", raw.nat_name.is_some()),
            ("metrics_dimensions", raw.metrics_dimensions.is_some()),
            ("cloudwatch_endpoint", raw.cloudwatch_endpoint.is_some()),
        ];
        if let Some((key, _)) = stray.iter().find(|(_, set)| *set) {
            return Err(doc.key_error(key, format!("{key} needs metrics = true")));
        }
    }
    if let Some(ns) = &raw.metrics_namespace {
        if !cloudwatch_text(ns, 255) {
            return Err(doc.key_error(
                "metrics_namespace",
                format!("{ns:?} is not 1 to 255 printable ASCII characters"),
            ));
        }
        if ns.starts_with("AWS/") {
            return Err(doc.key_error(
                "metrics_namespace",
                format!(
                    "{ns:?}: CloudWatch keeps AWS/ namespaces for its own services and refuses data put there; use one of your own"
                ),
            ));
        }
    }
    if let Some(p) = raw.metrics_period {
        let ok = matches!(p, 10 | 30) || ((60..=3600).contains(&p) && p % 60 == 0);
        if !ok {
            return Err(doc.key_error(
                "metrics_period",
                format!("{p} s: expected 10, 30, or a multiple of 60 up to 3600"),
            ));
        }
    }
    if let Some(n) = &raw.nat_name
        && !cloudwatch_text(n, 255)
    {
        return Err(doc.key_error(
            "nat_name",
            format!("{n:?} is not 1 to 255 printable ASCII characters"),
        ));
    }
    if let Some(list) = &raw.metrics_dimensions {
        if list.is_empty() {
            return Err(doc.key_error(
                "metrics_dimensions",
                "is empty: name at least one of InstanceId, NatName, AutoScalingGroupName".into(),
            ));
        }
        for d in list {
            if MetricDimension::parse(d.get_ref()).is_none() {
                return Err(doc.error(
                    Some(d.span()),
                    Some("metrics_dimensions"),
                    format!(
                        "{:?} is not one of InstanceId, NatName, AutoScalingGroupName",
                        d.get_ref()
                    ),
                ));
            }
        }
    }
    if let Some(e) = &raw.cloudwatch_endpoint
        && let Err(why) = crate::plan::aws::parse_endpoint(e)
    {
        return Err(doc.key_error("cloudwatch_endpoint", why));
    }
    Ok(())
}

fn validate_failover(raw: &RawConfig, doc: &Document<'_>) -> Result<(), ConfigError> {
    if let Some(g) = &raw.failover_group {
        let ok = (1..=64).contains(&g.len())
            && g.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !ok {
            return Err(doc.key_error(
                "failover_group",
                format!("{g:?} is not 1 to 64 of A-Z a-z 0-9 . _ -"),
            ));
        }
    } else {
        let stray = [
            ("failover_timeout_ms", raw.failover_timeout_ms.is_some()),
            ("failover_hold", raw.failover_hold.is_some()),
            ("failover_probes", raw.failover_probes.is_some()),
        ];
        if let Some((key, _)) = stray.iter().find(|(_, set)| *set) {
            return Err(doc.key_error(key, format!("{key} needs failover_group")));
        }
    }
    check_range(
        doc,
        "failover_timeout_ms",
        raw.failover_timeout_ms.map(u64::from),
        300,
        10_000,
    )?;
    check_range(
        doc,
        "failover_hold",
        raw.failover_hold.map(u64::from),
        0,
        3600,
    )?;
    if let Some(probes) = &raw.failover_probes {
        if probes.len() > MAX_PROBES {
            return Err(doc.key_error(
                "failover_probes",
                format!("{} targets: at most {MAX_PROBES}", probes.len()),
            ));
        }
        for p in probes {
            if p.get_ref().parse::<std::net::SocketAddrV4>().is_err() {
                return Err(doc.error(
                    Some(p.span()),
                    Some("failover_probes"),
                    format!("{:?} is not \"a.b.c.d:port\"", p.get_ref()),
                ));
            }
        }
    }
    Ok(())
}

/// The result of layering user-data over the baked file: always a usable configuration, plus
/// the errors of any document that was skipped (the caller logs them and carries on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layered {
    pub config: Config,
    pub errors: Vec<ConfigError>,
}

impl Config {
    /// Parses one document on its own over the defaults. `source_name` names it in errors.
    pub fn from_toml(text: &str, source_name: &str) -> Result<Config, ConfigError> {
        parse_raw(text, source_name).map(RawConfig::resolve)
    }

    /// Layers `user_data` (a nat-init TOML document from IMDS, if any) over the baked document
    /// (`(text, name)`, if any) over the defaults. An invalid baked document falls back to the
    /// defaults; invalid user-data is skipped as a whole (no half-applied override). User-data
    /// cannot turn `imds` off: it was fetched from IMDS, so the key there is refused.
    pub fn layered(baked: Option<(&str, &str)>, user_data: Option<&str>) -> Layered {
        let mut errors = Vec::new();
        let base = match baked {
            Some((text, name)) => parse_raw(text, name).unwrap_or_else(|e| {
                errors.push(e);
                RawConfig::default()
            }),
            None => RawConfig::default(),
        };
        let merged = match user_data {
            Some(text) => match parse_raw(text, "user-data").and_then(|over| {
                // IMDS comes before user-data, and extra trust roots from user-data would let
                // whoever can set it vouch for the AWS endpoints.
                let baked_only = [
                    ("imds", over.imds.is_some()),
                    ("aws_ca_file", over.aws_ca_file.is_some()),
                ];
                if let Some((key, _)) = baked_only.iter().find(|(_, set)| *set) {
                    let doc = Document {
                        text,
                        source_name: "user-data",
                        keys: key_spans(text),
                    };
                    return Err(doc.key_error(key, "can only be set in the baked file".to_string()));
                }
                Ok(over)
            }) {
                Ok(over) => base.overridden_by(over),
                Err(e) => {
                    errors.push(e);
                    base
                }
            },
            None => base,
        };
        Layered {
            config: merged.resolve(),
            errors,
        }
    }
}

/// The top-level keys of a TOML document, in document order (empty when it does not parse):
/// what a user-data document sets, for the line that says what it changed.
pub fn document_keys(text: &str) -> Vec<String> {
    DeTable::parse(text).map_or_else(
        |_| Vec::new(),
        |t| {
            t.get_ref()
                .iter()
                .map(|(k, _)| k.get_ref().to_string())
                .collect()
        },
    )
}

/// The baked file's text, `None` when there is none (an image built without one).
pub fn read_baked(path: &std::path::Path) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn key_spans(text: &str) -> Vec<(String, Range<usize>, Range<usize>)> {
    DeTable::parse(text)
        .map(|t| {
            t.get_ref()
                .iter()
                .map(|(k, v)| (k.get_ref().to_string(), k.span(), v.span()))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> ConfigError {
        Config::from_toml(text, "user-data").unwrap_err()
    }

    #[test]
    fn document_keys_in_order() {
        assert_eq!(
            document_keys("# x\nhealth_interval = 2\nicmp_rate = 3\n"),
            ["health_interval", "icmp_rate"]
        );
        assert!(document_keys("not toml [").is_empty());
    }

    #[test]
    fn empty_document_is_the_default() {
        assert_eq!(Config::from_toml("", "x").unwrap(), Config::default());
        assert_eq!(
            Config::from_toml("# nothing\n\n", "x").unwrap(),
            Config::default()
        );
    }

    #[test]
    fn every_key_parses() {
        let text = r#"
interface = "eth0"
rename = true
name = "wan0"
private_ranges = ["10.0.0.0/16", "10.1.0.0/16"]
health_interval = 5
rp_filter = 2
conntrack_max = 262144
conntrack_buckets = 65536
tcp_established_timeout = 350
tcp_transitory_timeout = 300
tcp_time_wait_timeout = 60
udp_timeout = 30
udp_timeout_stream = 600
flowtable = false
mss_clamp = false
default_route_mtu = 1400
icmp_rate = 100
masquerade_ports = "preserve"
per_source_conntrack_limit = 0
imds = false
dhcp_timeout = 10
"#;
        let c = Config::from_toml(text, "baked").unwrap();
        assert_eq!(
            c,
            Config {
                interface: Some("eth0".into()),
                rename: true,
                name: Some("wan0".into()),
                private_ranges: Some(vec![
                    "10.0.0.0/16".parse().unwrap(),
                    "10.1.0.0/16".parse().unwrap()
                ]),
                health_interval: 5,
                rp_filter: 2,
                conntrack_max: 262144,
                conntrack_buckets: 65536,
                tcp_established_timeout: 350,
                tcp_transitory_timeout: 300,
                tcp_time_wait_timeout: 60,
                udp_timeout: 30,
                udp_timeout_stream: 600,
                flowtable: false,
                mss_clamp: false,
                default_route_mtu: 1400,
                icmp_rate: 100,
                masquerade_ports: MasqueradePorts::Preserve,
                per_source_conntrack_limit: 0,
                nat_port_range: None,
                imds: false,
                dhcp_timeout: 10,
                aws: AwsConfig::default(),
            }
        );
    }

    #[test]
    fn aws_keys_parse() {
        let text = r#"
disable_source_dest_check = true
route_tables = ["rtb-0123456789abcdef0", "rtb-01234567"]
route_table_tag = "nat:zone=a"
reclaim_routes = true
elastic_ips = ["eipalloc-0123456789abcdef0"]
aws_region = "eu-west-1"
ec2_endpoint = "https://vpce-1.ec2.eu-west-1.vpce.amazonaws.com"
aws_ca_file = "/etc/nat-init/ca.pem"
aws_check_interval = 30
ntp = false
ntp_server = "10.0.0.2"
"#;
        let c = Config::from_toml(text, "baked").unwrap();
        assert_eq!(
            c.aws,
            AwsConfig {
                disable_source_dest_check: true,
                route_tables: vec!["rtb-0123456789abcdef0".into(), "rtb-01234567".into()],
                route_table_tag: Some(("nat:zone".into(), "a".into())),
                reclaim_routes: true,
                elastic_ips: vec!["eipalloc-0123456789abcdef0".into()],
                region: Some("eu-west-1".into()),
                ec2_endpoint: Some("https://vpce-1.ec2.eu-west-1.vpce.amazonaws.com".into()),
                ca_file: Some("/etc/nat-init/ca.pem".into()),
                check_interval: 30,
                ntp: false,
                ntp_server: "10.0.0.2".parse().unwrap(),
                failover: None,
                metrics: None,
            }
        );
        assert!(c.aws.uses_ec2());
        assert!(!Config::default().aws.uses_ec2());
        assert!(Config::default().aws.ntp);
    }

    #[test]
    fn bad_aws_keys_name_the_element() {
        let e = err("route_tables = [\n  \"rtb-01234567\",\n  \"rtb-xyz\",\n]\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(3), Some("route_tables")));
        assert!(e.message.contains("not a rtb id"), "{e}");
        let e = err("elastic_ips = [\"eipalloc-01234567\", \"eipalloc-01234567\"]\n");
        assert!(e.message.contains("listed twice"), "{e}");
        let e = err("elastic_ips = [\"rtb-01234567\"]\n");
        assert_eq!(e.key.as_deref(), Some("elastic_ips"));
        for (text, key) in [
            ("route_table_tag = \"novalue=\"\n", "route_table_tag"),
            ("route_table_tag = \"plain\"\n", "route_table_tag"),
            ("aws_region = \"Mars\"\n", "aws_region"),
            (
                "ec2_endpoint = \"http://ec2.us-east-1.amazonaws.com\"\n",
                "ec2_endpoint",
            ),
            ("ntp_server = \"time.example\"\n", "ntp_server"),
            ("aws_check_interval = 5\n", "aws_check_interval"),
        ] {
            let e = err(text);
            assert_eq!(e.key.as_deref(), Some(key), "{text}: {e}");
            assert_eq!(e.line, Some(1), "{text}: {e}");
        }
        let e = Config::from_toml("aws_ca_file = \"ca.pem\"\n", "baked").unwrap_err();
        assert!(e.message.contains("absolute"), "{e}");
    }

    #[test]
    fn failover_keys_parse_with_defaults() {
        let c = Config::from_toml("failover_group = \"prod-nat.a\"\n", "user-data").unwrap();
        assert_eq!(
            c.aws.failover,
            Some(FailoverConfig {
                group: "prod-nat.a".into(),
                timeout_ms: 1000,
                hold_secs: 60,
                probes: Vec::new(),
            })
        );
        assert!(c.aws.uses_ec2());
        let c = Config::from_toml(
            "failover_group = \"g\"\nfailover_timeout_ms = 500\nfailover_hold = 0\nfailover_probes = [\"203.0.113.10:80\"]\n",
            "user-data",
        )
        .unwrap();
        let f = c.aws.failover.unwrap();
        assert_eq!((f.timeout_ms, f.hold_secs), (500, 0));
        assert_eq!(f.probes, ["203.0.113.10:80".parse().unwrap()]);
    }

    #[test]
    fn bad_failover_keys_name_the_key() {
        for (text, key, says) in [
            ("failover_group = \"a b\"\n", "failover_group", "A-Z"),
            ("failover_group = \"\"\n", "failover_group", "A-Z"),
            (
                "failover_hold = 5\n",
                "failover_hold",
                "needs failover_group",
            ),
            (
                "failover_group = \"g\"\nfailover_timeout_ms = 100\n",
                "failover_timeout_ms",
                "out of range",
            ),
            (
                "failover_group = \"g\"\nfailover_probes = [\"1.2.3.4:80\", \"example:80\"]\n",
                "failover_probes",
                "a.b.c.d:port",
            ),
        ] {
            let e = err(text);
            assert_eq!(e.key.as_deref(), Some(key), "{text}: {e}");
            assert!(e.message.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn metrics_keys_parse_with_defaults() {
        let c = Config::from_toml("metrics = true\n", "user-data").unwrap();
        assert_eq!(c.aws.metrics, Some(MetricsConfig::default()));
        assert_eq!(
            MetricsConfig::default(),
            MetricsConfig {
                namespace: "NatInstance".into(),
                period_s: 60,
                nat_name: None,
                dimensions: vec![
                    MetricDimension::InstanceId,
                    MetricDimension::NatName,
                    MetricDimension::AutoScalingGroupName
                ],
                endpoint: None,
            }
        );
        // Metrics alone need credentials but no EC2 call.
        assert!(c.aws.uses_aws() && !c.aws.uses_ec2());
        let c = Config::from_toml(
            "metrics = true\nmetrics_namespace = \"Prod/NAT\"\nmetrics_period = 300\nnat_name = \"prod-a\"\nmetrics_dimensions = [\"NatName\", \"InstanceId\", \"NatName\"]\ncloudwatch_endpoint = \"https://203.0.113.20\"\n",
            "user-data",
        )
        .unwrap();
        let m = c.aws.metrics.unwrap();
        assert_eq!((m.namespace.as_str(), m.period_s), ("Prod/NAT", 300));
        assert_eq!(m.nat_name.as_deref(), Some("prod-a"));
        assert_eq!(
            m.dimensions,
            [MetricDimension::InstanceId, MetricDimension::NatName]
        );
        assert_eq!(m.endpoint.as_deref(), Some("https://203.0.113.20"));
        let off = Config::from_toml("metrics = false\n", "user-data").unwrap();
        assert_eq!(off.aws.metrics, None);
        assert!(!off.aws.uses_aws());
    }

    #[test]
    fn bad_metrics_keys_name_the_key() {
        for (text, key, says) in [
            ("nat_name = \"a\"\n", "nat_name", "needs metrics = true"),
            (
                "metrics = false\nmetrics_period = 60\n",
                "metrics_period",
                "needs metrics = true",
            ),
            (
                "metrics = true\nmetrics_namespace = \"AWS/NATGateway\"\n",
                "metrics_namespace",
                "AWS/ namespaces",
            ),
            (
                "metrics = true\nmetrics_namespace = \"\"\n",
                "metrics_namespace",
                "1 to 255",
            ),
            (
                "metrics = true\nmetrics_period = 45\n",
                "metrics_period",
                "10, 30, or a multiple of 60",
            ),
            (
                "metrics = true\nmetrics_period = 7200\n",
                "metrics_period",
                "up to 3600",
            ),
            (
                "metrics = true\nnat_name = \"tab\\there\"\n",
                "nat_name",
                "printable",
            ),
            (
                "metrics = true\nmetrics_dimensions = []\n",
                "metrics_dimensions",
                "at least one",
            ),
            (
                "metrics = true\nmetrics_dimensions = [\"InstanceId\", \"Az\"]\n",
                "metrics_dimensions",
                "\"Az\" is not one of",
            ),
            (
                "metrics = true\ncloudwatch_endpoint = \"http://x\"\n",
                "cloudwatch_endpoint",
                "https",
            ),
        ] {
            let e = err(text);
            assert_eq!(e.key.as_deref(), Some(key), "{text}: {e}");
            assert!(e.message.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn user_data_cannot_add_trust_roots() {
        let l = Config::layered(
            Some(("aws_ca_file = \"/etc/ca.pem\"\n", BAKED_PATH)),
            Some("aws_ca_file = \"/tmp/evil.pem\"\nroute_tables = [\"rtb-01234567\"]\n"),
        );
        assert_eq!(l.errors.len(), 1);
        assert_eq!(l.errors[0].key.as_deref(), Some("aws_ca_file"));
        assert_eq!(l.config.aws.ca_file.as_deref(), Some("/etc/ca.pem"));
        // Refused as a whole: no half-applied override.
        assert!(l.config.aws.route_tables.is_empty());
    }

    #[test]
    fn default_timeouts_follow_rfc_5382_and_rfc_4787() {
        let d = Config::default();
        // RFC 5382 REQ-5: established at least 2 h 4 min, transitory at least 4 min.
        assert_eq!(d.tcp_established_timeout, 7440);
        assert_eq!(d.tcp_transitory_timeout, 240);
        assert_eq!(d.tcp_time_wait_timeout, 120);
        // RFC 4787 REQ-5: a UDP mapping at least 2 min; 5 min or more recommended, and NAT
        // Gateway's 350 s idle timeout for streams.
        assert_eq!(d.udp_timeout, 120);
        assert_eq!(d.udp_timeout_stream, 350);
        let c = Config::layered(Some(("udp_timeout = 30\n", BAKED_PATH)), None).config;
        assert_eq!((c.udp_timeout, c.udp_timeout_stream), (30, 350));
    }

    #[test]
    fn host_bits_error_names_line_and_key() {
        let e = err("health_interval = 5\n\nprivate_ranges = [\"10.0.0.1/16\"]\n");
        assert_eq!(e.line, Some(3));
        assert_eq!(e.key.as_deref(), Some("private_ranges"));
        assert_eq!(
            e.to_string(),
            "user-data line 3, key private_ranges: `10.0.0.1/16` has host bits set: did you mean 10.0.0.0/16?"
        );
    }

    #[test]
    fn cidr_in_multiline_array_points_at_its_line() {
        let e = err("private_ranges = [\n  \"10.0.0.0/16\",\n  \"10.1.0.0/33\",\n]\n");
        assert_eq!(e.line, Some(3));
        assert_eq!(e.key.as_deref(), Some("private_ranges"));
        assert!(e.message.contains("prefix length"), "{e}");
    }

    #[test]
    fn unknown_key_is_refused() {
        let e = err("rename = true\nicmp_ratee = 5\n");
        assert_eq!(e.line, Some(2));
        assert_eq!(e.column, Some(1));
        assert_eq!(e.key.as_deref(), Some("icmp_ratee"));
        assert!(e.message.contains("unknown field"), "{e}");
    }

    #[test]
    fn tables_are_refused() {
        let e = err("[dhcp]\ntimeout = 5\n");
        assert_eq!(e.key.as_deref(), Some("dhcp"));
    }

    #[test]
    fn wrong_type_is_refused() {
        let e = err("health_interval = \"60\"\n");
        assert_eq!(e.line, Some(1));
        assert_eq!(e.key.as_deref(), Some("health_interval"));
        assert!(e.message.contains("invalid type"), "{e}");
        let e = err("rename = 1\n");
        assert_eq!(e.key.as_deref(), Some("rename"));
        let e = err("conntrack_max = -1\n");
        assert_eq!(e.key.as_deref(), Some("conntrack_max"));
    }

    #[test]
    fn syntax_error_has_a_line() {
        let e = err("rename = true\nhealth_interval = = 3\n");
        assert_eq!(e.line, Some(2));
        assert!(e.to_string().starts_with("user-data line 2"), "{e}");
    }

    #[test]
    fn duplicate_key_is_refused() {
        let e = err("rp_filter = 1\nrp_filter = 2\n");
        assert_eq!(e.line, Some(2));
    }

    #[test]
    fn ranges_are_checked() {
        for (text, key) in [
            ("health_interval = 0", "health_interval"),
            ("health_interval = 86401", "health_interval"),
            ("rp_filter = 3", "rp_filter"),
            ("tcp_established_timeout = 59", "tcp_established_timeout"),
            (
                "tcp_established_timeout = 432001",
                "tcp_established_timeout",
            ),
            ("default_route_mtu = 575", "default_route_mtu"),
            ("default_route_mtu = 9002", "default_route_mtu"),
            ("icmp_rate = 0", "icmp_rate"),
            ("dhcp_timeout = 0", "dhcp_timeout"),
            ("dhcp_timeout = 3601", "dhcp_timeout"),
            ("tcp_transitory_timeout = 29", "tcp_transitory_timeout"),
            ("tcp_transitory_timeout = 86401", "tcp_transitory_timeout"),
            ("tcp_time_wait_timeout = 9", "tcp_time_wait_timeout"),
            ("tcp_time_wait_timeout = 3601", "tcp_time_wait_timeout"),
            ("udp_timeout = 9", "udp_timeout"),
            ("udp_timeout = 3601", "udp_timeout"),
            ("udp_timeout_stream = 29", "udp_timeout_stream"),
            ("udp_timeout_stream = 86401", "udp_timeout_stream"),
        ] {
            let e = err(&format!("\n{text}\n"));
            assert_eq!(e.key.as_deref(), Some(key), "{text}");
            assert_eq!(e.line, Some(2), "{text}");
            assert!(e.message.contains("out of range"), "{text}: {e}");
        }
        // Out of the type's range is caught by the type.
        assert_eq!(err("rp_filter = 300").key.as_deref(), Some("rp_filter"));
        assert_eq!(
            err("default_route_mtu = 70000").key.as_deref(),
            Some("default_route_mtu")
        );
    }

    #[test]
    fn bounds_are_inclusive() {
        let c = Config::from_toml(
            "health_interval = 1\nrp_filter = 2\ntcp_established_timeout = 60\ndefault_route_mtu = 9001\ndhcp_timeout = 3600\n",
            "x",
        )
        .unwrap();
        assert_eq!(c.health_interval, 1);
        assert_eq!(c.default_route_mtu, 9001);
    }

    #[test]
    fn interface_names_are_checked() {
        for bad in [
            "\"\"",
            "\"averyveryverylong\"",
            "\"a/b\"",
            "\"a:b\"",
            "\"a b\"",
            "\"..\"",
        ] {
            let e = err(&format!("interface = {bad}"));
            assert_eq!(e.key.as_deref(), Some("interface"), "{bad}");
            let e = err(&format!("name = {bad}"));
            assert_eq!(e.key.as_deref(), Some("name"), "{bad}");
        }
        assert!(Config::from_toml("name = \"fifteen-chars-x\"", "x").is_ok());
    }

    #[test]
    fn name_conflicts_with_rename_false() {
        let e = err("rename = false\nname = \"wan0\"\n");
        assert_eq!(e.key.as_deref(), Some("name"));
        assert_eq!(e.line, Some(2));
    }

    #[test]
    fn private_ranges_must_not_be_empty_or_everything() {
        let e = err("private_ranges = []");
        assert!(e.message.contains("empty"), "{e}");
        let e = err("private_ranges = [\"10.0.0.0/8\", \"0.0.0.0/0\"]");
        assert!(e.message.contains("open relay"), "{e}");
        let e = err("private_ranges = \"10.0.0.0/8\"");
        assert_eq!(e.key.as_deref(), Some("private_ranges"));
    }

    #[test]
    fn private_ranges_union_must_not_be_everything_or_special() {
        let e = err("rename = true\nprivate_ranges = [\"0.0.0.0/1\", \"128.0.0.0/1\"]\n");
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(2), Some("private_ranges"))
        );
        assert!(e.message.contains("open relay"), "{e}");
        let e = err("private_ranges = [\n  \"10.0.0.0/16\",\n  \"169.254.0.0/20\",\n]\n");
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(3), Some("private_ranges"))
        );
        assert_eq!(
            e.to_string(),
            "user-data line 3, key private_ranges: 169.254.0.0/20 overlaps 169.254.0.0/16 (link-local (IMDS, the VPC DNS)), which is never a private source"
        );
        for bad in ["127.0.0.0/8", "0.0.0.0/8", "224.0.0.0/4", "240.0.0.0/4"] {
            let e = err(&format!("private_ranges = [\"{bad}\"]"));
            assert!(e.message.contains("overlaps"), "{bad}: {e}");
        }
        // The baked file is checked alike, and the defaults are used instead.
        let l = Config::layered(
            Some(("private_ranges = [\"127.0.0.0/8\"]\n", BAKED_PATH)),
            None,
        );
        assert_eq!(l.config.private_ranges, None);
        assert!(
            l.errors[0]
                .to_string()
                .starts_with("/etc/nat-init.toml line 1, key private_ranges")
        );
    }

    #[test]
    fn masquerade_ports_are_named() {
        assert_eq!(
            Config::default().masquerade_ports,
            MasqueradePorts::FullyRandom
        );
        let c = Config::from_toml("masquerade_ports = \"random\"", "x").unwrap();
        assert_eq!(c.masquerade_ports, MasqueradePorts::Random);
        let e = err("\nmasquerade_ports = \"sequential\"\n");
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(2), Some("masquerade_ports"))
        );
        assert!(e.message.contains("\"sequential\" is not one of"), "{e}");
    }

    #[test]
    fn nat_port_range_parses() {
        assert_eq!(Config::default().nat_port_range, None);
        for (text, want) in [
            ("\"1024-65535\"", (1024, 65535)),
            ("\"2000-2003\"", (2000, 2003)),
            ("\"1-1\"", (1, 1)),
        ] {
            let c = Config::from_toml(&format!("nat_port_range = {text}"), "x").unwrap();
            assert_eq!(c.nat_port_range, Some(want), "{text}");
        }
        for bad in ["2003-2000", "0-10", "1-65536", "2000", "a-b", "-5", "2000-"] {
            let e = err(&format!("\nnat_port_range = \"{bad}\"\n"));
            assert_eq!(
                (e.line, e.key.as_deref()),
                (Some(2), Some("nat_port_range")),
                "{bad}"
            );
            assert_eq!(
                e.to_string(),
                format!(
                    "user-data line 2, key nat_port_range: \"{bad}\" is not MIN-MAX with 1 <= MIN <= MAX <= 65535 (e.g. \"1024-65535\")"
                )
            );
        }
        let e = err("nat_port_range = 2000");
        assert_eq!(e.key.as_deref(), Some("nat_port_range"), "{e}");
        // User-data sets it; a bad value there keeps the baked one.
        let baked = "nat_port_range = \"2000-2999\"\n";
        let l = Config::layered(
            Some((baked, "baked")),
            Some("nat_port_range = \"3000-3001\""),
        );
        assert!(l.errors.is_empty(), "{:?}", l.errors);
        assert_eq!(l.config.nat_port_range, Some((3000, 3001)));
        let l = Config::layered(
            Some((baked, "baked")),
            Some("nat_port_range = \"3001-3000\""),
        );
        assert_eq!(l.errors.len(), 1);
        assert_eq!(l.config.nat_port_range, Some((2000, 2999)));
    }

    #[test]
    fn per_source_limit_default_is_a_quarter_of_the_default_table() {
        assert_eq!(Config::default().per_source_conntrack_limit, 131072 / 4);
        let c = Config::from_toml("per_source_conntrack_limit = 100", "x").unwrap();
        assert_eq!(c.per_source_conntrack_limit, 100);
        let e = err("per_source_conntrack_limit = -1");
        assert_eq!(e.key.as_deref(), Some("per_source_conntrack_limit"));
    }

    #[test]
    fn user_data_overrides_baked_keys() {
        let baked = "health_interval = 30\nrp_filter = 1\nimds = true\n";
        let l = Config::layered(
            Some((baked, BAKED_PATH)),
            Some("rp_filter = 2\nprivate_ranges = [\"10.9.0.0/16\"]\n"),
        );
        assert!(l.errors.is_empty(), "{:?}", l.errors);
        assert_eq!(l.config.health_interval, 30);
        assert_eq!(l.config.rp_filter, 2);
        assert_eq!(
            l.config.private_ranges,
            Some(vec!["10.9.0.0/16".parse().unwrap()])
        );
    }

    #[test]
    fn invalid_user_data_keeps_the_baked_config() {
        let baked = "health_interval = 30\n";
        let l = Config::layered(
            Some((baked, BAKED_PATH)),
            Some("rp_filter = 2\nbogus = 1\n"),
        );
        assert_eq!(l.config.health_interval, 30);
        assert_eq!(l.config.rp_filter, 0, "no half-applied override");
        assert_eq!(l.errors.len(), 1);
        assert!(
            l.errors[0]
                .to_string()
                .starts_with("user-data line 2, key bogus")
        );
    }

    #[test]
    fn user_data_cannot_disable_imds() {
        let l = Config::layered(None, Some("\nimds = false\n"));
        assert!(l.config.imds);
        assert_eq!(l.errors.len(), 1);
        assert_eq!(l.errors[0].key.as_deref(), Some("imds"));
        assert_eq!(l.errors[0].line, Some(2));
    }

    #[test]
    fn invalid_baked_falls_back_to_defaults_and_still_takes_user_data() {
        let l = Config::layered(
            Some(("rp_filter = 9\n", BAKED_PATH)),
            Some("health_interval = 7\n"),
        );
        assert_eq!(l.errors.len(), 1);
        assert!(
            l.errors[0]
                .to_string()
                .starts_with("/etc/nat-init.toml line 1, key rp_filter")
        );
        assert_eq!(l.config.rp_filter, 0);
        assert_eq!(l.config.health_interval, 7);
    }

    #[test]
    fn nothing_given_is_the_default() {
        let l = Config::layered(None, None);
        assert_eq!(l.config, Config::default());
        assert!(l.errors.is_empty());
    }

    #[test]
    fn baked_file_absent_is_none() {
        let dir = std::env::temp_dir().join(format!("nat-init-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("nat-init.toml");
        assert_eq!(read_baked(&f).unwrap(), None);
        std::fs::write(&f, "rp_filter = 1\n").unwrap();
        assert_eq!(read_baked(&f).unwrap().as_deref(), Some("rp_filter = 1\n"));
        assert!(
            read_baked(&dir).is_err(),
            "a directory is an error, not absence"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn line_column_counts_characters() {
        assert_eq!(line_column("ab\ncé d", 7), (2, 4));
        assert_eq!(line_column("", 0), (1, 1));
        assert_eq!(line_column("x", 99), (1, 2));
    }
}
