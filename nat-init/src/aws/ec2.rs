//! The EC2 Query API calls the appliance makes for itself: request builders (form-encoded POST
//! bodies, `Version=2016-11-15`), parsers of the XML answers into typed structs, and the error
//! classifier that tells the caller whether to retry, refresh, wait for IAM, fix the clock or
//! give up.
//!
//! The XML is read by element local names, so the namespace (AWS's
//! `http://ec2.amazonaws.com/doc/2016-11-15/`, moto's without the trailing slash, none on error
//! documents) does not matter. Shapes follow the EC2 API reference; moto's answers (the test
//! double) are a subset: no `<return>` on ModifyNetworkInterfaceAttribute and ReplaceRoute, and
//! no per-address `<association>` on an ENI's private addresses, so both are optional here.

use std::net::Ipv4Addr;

use super::sigv4::uri_encode;
use crate::cidr::Ipv4Cidr;

/// The API version every request names.
pub const API_VERSION: &str = "2016-11-15";
/// The request body's content type.
pub const CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";
/// The route a NAT owns in the private route tables.
pub const DEFAULT_ROUTE: &str = "0.0.0.0/0";

/// The actions this module builds requests for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    ModifyNetworkInterfaceAttribute,
    DescribeNetworkInterfaces,
    DescribeRouteTables,
    ReplaceRoute,
    CreateRoute,
    AssociateAddress,
    DescribeAddresses,
    AssignPrivateIpAddresses,
    DescribeInstances,
    DescribeSubnets,
}

impl Action {
    /// The `Action=` value, also the answer's root element without `Response`.
    pub fn name(self) -> &'static str {
        match self {
            Self::ModifyNetworkInterfaceAttribute => "ModifyNetworkInterfaceAttribute",
            Self::DescribeNetworkInterfaces => "DescribeNetworkInterfaces",
            Self::DescribeRouteTables => "DescribeRouteTables",
            Self::ReplaceRoute => "ReplaceRoute",
            Self::CreateRoute => "CreateRoute",
            Self::AssociateAddress => "AssociateAddress",
            Self::DescribeAddresses => "DescribeAddresses",
            Self::AssignPrivateIpAddresses => "AssignPrivateIpAddresses",
            Self::DescribeInstances => "DescribeInstances",
            Self::DescribeSubnets => "DescribeSubnets",
        }
    }

    /// The IAM permission the action needs, e.g. `ec2:ReplaceRoute`.
    pub fn permission(self) -> String {
        format!("ec2:{}", self.name())
    }
}

/// One request: the action and its parameters (unencoded), in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub action: Action,
    pub params: Vec<(String, String)>,
}

impl Call {
    fn new(action: Action) -> Self {
        Self {
            action,
            params: Vec::new(),
        }
    }

    fn param(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.params.push((key.into(), value.into()));
        self
    }

    /// The form-encoded body: `Action=...&Version=2016-11-15&...`, each side encoded with
    /// SigV4's [`uri_encode`].
    /// The signed HTTP request for this call to `host` (the regional endpoint or a VPC
    /// endpoint's name).
    pub fn signed_request(
        &self,
        host: &str,
        region: &str,
        creds: &super::sigv4::Credentials,
        unix_time_s: i64,
    ) -> crate::http::Request {
        let body = self.body();
        let headers = [("Content-Type", CONTENT_TYPE)];
        let signed = super::sigv4::sign(
            &super::sigv4::Request {
                method: "POST",
                host,
                path: "/",
                query: &[],
                headers: &headers,
                body: body.as_bytes(),
            },
            creds,
            region,
            "ec2",
            unix_time_s,
        );
        let mut req = crate::http::Request::new("POST", "/");
        for (k, v) in &signed {
            req = req.header(k, v);
        }
        req.body(CONTENT_TYPE, body.into_bytes())
    }

    pub fn body(&self) -> String {
        let mut out = format!("Action={}&Version={API_VERSION}", self.action.name());
        for (k, v) in &self.params {
            out.push('&');
            out.push_str(&uri_encode(k, false));
            out.push('=');
            out.push_str(&uri_encode(v, false));
        }
        out
    }
}

/// Source/destination check off on an ENI (a NAT forwards packets that are not its own).
pub fn disable_source_dest_check(eni_id: &str) -> Call {
    Call::new(Action::ModifyNetworkInterfaceAttribute)
        .param("NetworkInterfaceId", eni_id)
        .param("SourceDestCheck.Value", "false")
}

/// One ENI, to read back its check, addresses and associations.
pub fn describe_network_interface(eni_id: &str) -> Call {
    Call::new(Action::DescribeNetworkInterfaces).param("NetworkInterfaceId.1", eni_id)
}

/// Route tables by id.
pub fn describe_route_tables_by_id(ids: &[String]) -> Call {
    ids.iter()
        .enumerate()
        .fold(Call::new(Action::DescribeRouteTables), |c, (i, id)| {
            c.param(format!("RouteTableId.{}", i + 1), id)
        })
}

/// Route tables carrying every one of `tags` (filters are ANDed), optionally in one VPC. With
/// no tag and no VPC this asks for every route table of the region: callers pass at least one.
pub fn describe_route_tables_by_tags(tags: &[(String, String)], vpc_id: Option<&str>) -> Call {
    let mut call = Call::new(Action::DescribeRouteTables);
    let mut n = 0;
    for (key, value) in tags {
        n += 1;
        call = call
            .param(format!("Filter.{n}.Name"), format!("tag:{key}"))
            .param(format!("Filter.{n}.Value.1"), value);
    }
    if let Some(vpc) = vpc_id {
        n += 1;
        call = call
            .param(format!("Filter.{n}.Name"), "vpc-id")
            .param(format!("Filter.{n}.Value.1"), vpc);
    }
    call
}

/// Points an existing route (e.g. [`DEFAULT_ROUTE`]) at an ENI.
pub fn replace_route(route_table_id: &str, destination: &str, eni_id: &str) -> Call {
    route(Action::ReplaceRoute, route_table_id, destination, eni_id)
}

/// Creates a route to an ENI, for a table that has no route for `destination` (as read with
/// DescribeRouteTables: ReplaceRoute cannot create one, CreateRoute fails on an existing one).
pub fn create_route(route_table_id: &str, destination: &str, eni_id: &str) -> Call {
    route(Action::CreateRoute, route_table_id, destination, eni_id)
}

fn route(action: Action, route_table_id: &str, destination: &str, eni_id: &str) -> Call {
    Call::new(action)
        .param("RouteTableId", route_table_id)
        .param("DestinationCidrBlock", destination)
        .param("NetworkInterfaceId", eni_id)
}

/// An Elastic IP onto one of an ENI's private addresses, taking it from wherever it is.
pub fn associate_address(allocation_id: &str, eni_id: &str, private_ip: Option<Ipv4Addr>) -> Call {
    let call = Call::new(Action::AssociateAddress)
        .param("AllocationId", allocation_id)
        .param("NetworkInterfaceId", eni_id);
    let call = match private_ip {
        Some(ip) => call.param("PrivateIpAddress", ip.to_string()),
        None => call,
    };
    call.param("AllowReassociation", "true")
}

/// Elastic IPs by allocation id.
pub fn describe_addresses(allocation_ids: &[String]) -> Call {
    allocation_ids
        .iter()
        .enumerate()
        .fold(Call::new(Action::DescribeAddresses), |c, (i, id)| {
            c.param(format!("AllocationId.{}", i + 1), id)
        })
}

/// The running instances that carry the tag `key=value` (a failover group's members).
pub fn describe_running_instances_by_tag(key: &str, value: &str) -> Call {
    Call::new(Action::DescribeInstances)
        .param("Filter.1.Name", format!("tag:{key}"))
        .param("Filter.1.Value.1", value)
        .param("Filter.2.Name", "instance-state-name")
        .param("Filter.2.Value.1", "running")
}

/// One instance by id: this one's own, for its Auto Scaling group's tag.
pub fn describe_instance(id: &str) -> Call {
    Call::new(Action::DescribeInstances).param("InstanceId.1", id)
}

/// The tag Auto Scaling puts on the instances it launches.
pub const ASG_TAG: &str = "aws:autoscaling:groupName";

/// The value of tag `key` on the first instance of a DescribeInstances answer; `None` when it
/// has no such tag.
pub fn parse_instance_tag(body: &str, key: &str) -> Result<Option<String>, ParseError> {
    let doc = document(body)?;
    let root = response_root(&doc, Action::DescribeInstances)?;
    let Some(item) = items(root, "reservationSet")
        .flat_map(|r| items(r, "instancesSet"))
        .next()
    else {
        return Err(missing("reservationSet", "instancesSet/item"));
    };
    Ok(items(item, "tagSet")
        .find(|t| text(*t, "key") == Some(key))
        .and_then(|t| text(t, "value"))
        .map(str::to_string))
}

/// Subnets by id, for their CIDR blocks.
pub fn describe_subnets(ids: &[String]) -> Call {
    ids.iter()
        .enumerate()
        .fold(Call::new(Action::DescribeSubnets), |c, (i, id)| {
            c.param(format!("SubnetId.{}", i + 1), id)
        })
}

/// Which secondary private addresses to ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecondaryIps {
    /// Any N free addresses of the subnet.
    Count(u32),
    /// These addresses.
    Addresses(Vec<Ipv4Addr>),
}

/// Secondary private addresses on an ENI (one per extra Elastic IP).
pub fn assign_private_ip_addresses(
    eni_id: &str,
    ips: &SecondaryIps,
    allow_reassignment: bool,
) -> Call {
    let mut call = Call::new(Action::AssignPrivateIpAddresses).param("NetworkInterfaceId", eni_id);
    match ips {
        SecondaryIps::Count(n) => {
            call = call.param("SecondaryPrivateIpAddressCount", n.to_string());
        }
        SecondaryIps::Addresses(list) => {
            for (i, ip) in list.iter().enumerate() {
                call = call.param(format!("PrivateIpAddress.{}", i + 1), ip.to_string());
            }
        }
    }
    call.param("AllowReassignment", allow_reassignment.to_string())
}

/// Why an answer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("not XML: {0}")]
    Xml(String),
    #[error("root element is <{found}>, expected <{expected}>")]
    Root { expected: String, found: String },
    #[error("{at}: <{field}> is missing or empty")]
    Missing { at: String, field: &'static str },
    #[error("{at}: <{field}> is {value:?}, not {expected}")]
    Invalid {
        at: String,
        field: &'static str,
        value: String,
        expected: &'static str,
    },
}

/// A failed call's error document: `<Response><Errors><Error><Code>`, `<Message>`, and
/// `<RequestID>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: String,
    pub message: String,
    pub request_id: Option<String>,
}

/// A route: its destination (IPv4 or IPv6 CIDR, or prefix list id), where it goes, its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub destination: String,
    /// `None` for a route with no target the parser knows.
    pub target: Option<Target>,
    /// Set beside an ENI target when the ENI is attached to an instance.
    pub instance_id: Option<String>,
    pub state: RouteState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: TargetKind,
    pub id: String,
}

/// The element a route's target came from. An ENI wins over an instance: routes to an instance
/// name both, and the ENI is what this appliance compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    NetworkInterface,
    Instance,
    /// Internet and virtual private gateways, `local`, gateway VPC endpoints.
    Gateway,
    NatGateway,
    TransitGateway,
    VpcPeeringConnection,
    EgressOnlyInternetGateway,
    LocalGateway,
    CarrierGateway,
    CoreNetwork,
}

/// The XML element of each target kind, in order of preference.
const TARGETS: [(&str, TargetKind); 10] = [
    ("networkInterfaceId", TargetKind::NetworkInterface),
    ("instanceId", TargetKind::Instance),
    ("natGatewayId", TargetKind::NatGateway),
    ("transitGatewayId", TargetKind::TransitGateway),
    ("vpcPeeringConnectionId", TargetKind::VpcPeeringConnection),
    (
        "egressOnlyInternetGatewayId",
        TargetKind::EgressOnlyInternetGateway,
    ),
    ("localGatewayId", TargetKind::LocalGateway),
    ("carrierGatewayId", TargetKind::CarrierGateway),
    ("coreNetworkArn", TargetKind::CoreNetwork),
    ("gatewayId", TargetKind::Gateway),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteState {
    Active,
    /// The target is gone (e.g. the ENI was deleted).
    Blackhole,
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTable {
    pub id: String,
    pub vpc_id: String,
    pub tags: Vec<(String, String)>,
    pub routes: Vec<Route>,
    /// The subnets explicitly associated with it.
    pub subnets: Vec<String>,
    /// The VPC's main table: it also serves every subnet without an association of its own.
    pub main: bool,
}

impl RouteTable {
    /// The route for `destination` (e.g. [`DEFAULT_ROUTE`]), if the table has one.
    pub fn route(&self, destination: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.destination == destination)
    }
}

/// An Elastic IP's association with a private address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Association {
    pub public_ip: Ipv4Addr,
    pub allocation_id: Option<String>,
    pub association_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateIp {
    pub address: Ipv4Addr,
    pub primary: bool,
    pub association: Option<Association>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkInterface {
    pub id: String,
    pub source_dest_check: bool,
    pub mac: String,
    pub private_ips: Vec<PrivateIp>,
    /// The primary address's association, also given at the ENI's level.
    pub association: Option<Association>,
}

/// An instance as DescribeInstances gives it: what a failover peer needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    /// `instanceState/name`: `running`, `stopping`, ...
    pub state: String,
    pub private_ip: Option<Ipv4Addr>,
    /// The primary address's public address (auto-assigned or an Elastic IP).
    pub public_ip: Option<Ipv4Addr>,
    /// The ENI at device index 0.
    pub primary_eni: Option<String>,
    pub subnet_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub allocation_id: String,
    pub public_ip: Ipv4Addr,
    pub association_id: Option<String>,
    pub network_interface_id: Option<String>,
    pub private_ip: Option<Ipv4Addr>,
}

/// What to do about a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Throttled or a server-side failure: retry with back-off.
    Retry,
    /// The credentials were not accepted (expired, revoked, not yet valid): fetch them again
    /// from IMDS, then retry.
    Credentials,
    /// The role lacks the permission. Retried slowly for a while all the same: a new role or
    /// policy takes time to propagate through IAM (the first apply's classic failure); the
    /// error line names the permission ([`Action::permission`]).
    Denied,
    /// The request's time is too far from AWS's: check the clock (NTP), then retry.
    Clock,
    /// The request itself is wrong (bad id, bad parameter, route missing or present): retrying
    /// the same request will not help until the configuration or the VPC changes.
    Fatal,
}

/// The class of a failure from its HTTP status and error code.
pub fn classify(http_status: u16, code: Option<&str>) -> ErrorClass {
    match code {
        Some(
            "Throttling"
            | "ThrottlingException"
            | "RequestLimitExceeded"
            | "InternalError"
            | "InternalFailure"
            | "ServiceUnavailable"
            | "Unavailable"
            // A resource in a transition (an ENI attaching, an address moving): it settles.
            | "IncorrectState"
            | "IncorrectInstanceState"
            | "ConcurrentTagAccess",
        ) => ErrorClass::Retry,
        Some(
            "AuthFailure"
            | "InvalidClientTokenId"
            | "ExpiredToken"
            | "ExpiredTokenException"
            | "UnrecognizedClientException"
            | "InvalidToken",
        ) => ErrorClass::Credentials,
        Some(
            "UnauthorizedOperation" | "AccessDenied" | "AccessDeniedException" | "Blocked",
        ) => ErrorClass::Denied,
        Some("RequestExpired" | "RequestTimeTooSkewed" | "RequestInTheFuture") => {
            ErrorClass::Clock
        }
        _ if http_status == 429 || (500..=599).contains(&http_status) => ErrorClass::Retry,
        _ => ErrorClass::Fatal,
    }
}

/// [`classify`], also reading the message: a `SignatureDoesNotMatch` that says the signature
/// expired (or is not yet valid) is a clock problem, not a signing bug.
pub fn classify_error(http_status: u16, error: &ApiError) -> ErrorClass {
    let message = error.message.to_ascii_lowercase();
    if error.code == "SignatureDoesNotMatch"
        && (message.contains("signature expired") || message.contains("signature not yet current"))
    {
        return ErrorClass::Clock;
    }
    classify(http_status, Some(&error.code))
}

/// The error document of a failed call.
pub fn parse_error(body: &str) -> Result<ApiError, ParseError> {
    let doc = document(body)?;
    let root = doc.root_element();
    let name = root.tag_name().name();
    if name != "Response" && name != "ErrorResponse" {
        return Err(ParseError::Root {
            expected: "Response".into(),
            found: name.into(),
        });
    }
    let at = "Response/Errors/Error";
    let error = child(root, "Errors")
        .and_then(|e| child(e, "Error"))
        // <ErrorResponse><Error> is the other services' shape; accept it too.
        .or_else(|| child(root, "Error"))
        .ok_or_else(|| missing(at, "Error"))?;
    Ok(ApiError {
        code: required(error, at, "Code")?,
        message: text(error, "Message").unwrap_or_default().to_string(),
        request_id: text(root, "RequestID")
            .or_else(|| text(root, "RequestId"))
            .map(str::to_string),
    })
}

/// A successful answer with nothing to read but `<return>`: ModifyNetworkInterfaceAttribute,
/// ReplaceRoute, CreateRoute. The root must be the action's; `<return>false</return>` is an
/// error, a missing `<return>` is accepted (HTTP 200 is EC2's success; moto sends none).
pub fn parse_ok(action: Action, body: &str) -> Result<(), ParseError> {
    let doc = document(body)?;
    let root = response_root(&doc, action)?;
    match text(root, "return") {
        None | Some("true") => Ok(()),
        Some(other) => Err(ParseError::Invalid {
            at: root_name(action),
            field: "return",
            value: other.to_string(),
            expected: "true",
        }),
    }
}

/// AssociateAddress: the association id.
pub fn parse_associate_address(body: &str) -> Result<String, ParseError> {
    let doc = document(body)?;
    let root = response_root(&doc, Action::AssociateAddress)?;
    required(root, &root_name(Action::AssociateAddress), "associationId")
}

/// AssignPrivateIpAddresses: the addresses assigned by this call.
pub fn parse_assign_private_ip_addresses(body: &str) -> Result<Vec<Ipv4Addr>, ParseError> {
    let doc = document(body)?;
    let root = response_root(&doc, Action::AssignPrivateIpAddresses)?;
    let mut out = Vec::new();
    for (i, item) in items(root, "assignedPrivateIpAddressesSet").enumerate() {
        let at = format!("assignedPrivateIpAddressesSet/item {}", i + 1);
        out.push(ipv4(item, &at, "privateIpAddress")?);
    }
    Ok(out)
}

/// DescribeRouteTables: every table of the answer.
pub fn parse_describe_route_tables(body: &str) -> Result<Vec<RouteTable>, ParseError> {
    let doc = document(body)?;
    let root = response_root(&doc, Action::DescribeRouteTables)?;
    let mut tables = Vec::new();
    for (i, item) in items(root, "routeTableSet").enumerate() {
        let at = format!("routeTableSet/item {}", i + 1);
        let id = required(item, &at, "routeTableId")?;
        let at = format!("route table {id}");
        let mut routes = Vec::new();
        for (j, r) in items(item, "routeSet").enumerate() {
            let rat = format!("{at}: routeSet/item {}", j + 1);
            let destination = text(r, "destinationCidrBlock")
                .or_else(|| text(r, "destinationIpv6CidrBlock"))
                .or_else(|| text(r, "destinationPrefixListId"))
                .ok_or_else(|| missing(&rat, "destinationCidrBlock"))?
                .to_string();
            let target = TARGETS.iter().find_map(|(element, kind)| {
                text(r, element).map(|id| Target {
                    kind: *kind,
                    id: id.to_string(),
                })
            });
            let state = match text(r, "state") {
                Some("active") => RouteState::Active,
                Some("blackhole") => RouteState::Blackhole,
                other => RouteState::Other(other.unwrap_or_default().to_string()),
            };
            let instance_id = match &target {
                Some(t) if t.kind == TargetKind::NetworkInterface => {
                    text(r, "instanceId").map(str::to_string)
                }
                _ => None,
            };
            routes.push(Route {
                destination,
                target,
                instance_id,
                state,
            });
        }
        let associations: Vec<Node<'_, '_>> = items(item, "associationSet").collect();
        tables.push(RouteTable {
            subnets: associations
                .iter()
                .filter_map(|a| text(*a, "subnetId"))
                .map(str::to_string)
                .collect(),
            main: associations
                .iter()
                .any(|a| text(*a, "main") == Some("true")),
            vpc_id: required(item, &at, "vpcId")?,
            tags: tags(item, &at)?,
            routes,
            id,
        });
    }
    Ok(tables)
}

/// DescribeNetworkInterfaces: every ENI of the answer.
pub fn parse_describe_network_interfaces(body: &str) -> Result<Vec<NetworkInterface>, ParseError> {
    let doc = document(body)?;
    let root = response_root(&doc, Action::DescribeNetworkInterfaces)?;
    let mut out = Vec::new();
    for (i, item) in items(root, "networkInterfaceSet").enumerate() {
        let at = format!("networkInterfaceSet/item {}", i + 1);
        let id = required(item, &at, "networkInterfaceId")?;
        let at = format!("network interface {id}");
        let mut private_ips = Vec::new();
        for (j, p) in items(item, "privateIpAddressesSet").enumerate() {
            let pat = format!("{at}: privateIpAddressesSet/item {}", j + 1);
            private_ips.push(PrivateIp {
                address: ipv4(p, &pat, "privateIpAddress")?,
                primary: boolean(p, &pat, "primary")?,
                association: association(p, &pat)?,
            });
        }
        out.push(NetworkInterface {
            source_dest_check: boolean(item, &at, "sourceDestCheck")?,
            mac: required(item, &at, "macAddress")?,
            association: association(item, &at)?,
            private_ips,
            id,
        });
    }
    Ok(out)
}

/// DescribeAddresses: every Elastic IP of the answer.
pub fn parse_describe_addresses(body: &str) -> Result<Vec<Address>, ParseError> {
    let doc = document(body)?;
    let root = response_root(&doc, Action::DescribeAddresses)?;
    let mut out = Vec::new();
    for (i, item) in items(root, "addressesSet").enumerate() {
        let at = format!("addressesSet/item {}", i + 1);
        let allocation_id = required(item, &at, "allocationId")?;
        let at = format!("address {allocation_id}");
        out.push(Address {
            public_ip: ipv4(item, &at, "publicIp")?,
            association_id: text(item, "associationId").map(str::to_string),
            network_interface_id: text(item, "networkInterfaceId").map(str::to_string),
            private_ip: optional_ipv4(item, &at, "privateIpAddress")?,
            allocation_id,
        });
    }
    Ok(out)
}

/// DescribeInstances: every instance of every reservation.
pub fn parse_describe_instances(body: &str) -> Result<Vec<Instance>, ParseError> {
    let doc = document(body)?;
    let root = response_root(&doc, Action::DescribeInstances)?;
    let mut out = Vec::new();
    for (r, reservation) in items(root, "reservationSet").enumerate() {
        for (i, item) in items(reservation, "instancesSet").enumerate() {
            let at = format!("reservationSet/item {}: instancesSet/item {}", r + 1, i + 1);
            let id = required(item, &at, "instanceId")?;
            let at = format!("instance {id}");
            let state = child(item, "instanceState")
                .and_then(|s| text(s, "name"))
                .ok_or_else(|| missing(&at, "instanceState/name"))?
                .to_string();
            let primary_eni = items(item, "networkInterfaceSet")
                .find(|n| child(*n, "attachment").and_then(|a| text(a, "deviceIndex")) == Some("0"))
                .and_then(|n| text(n, "networkInterfaceId"))
                .map(str::to_string);
            out.push(Instance {
                state,
                private_ip: optional_ipv4(item, &at, "privateIpAddress")?,
                public_ip: optional_ipv4(item, &at, "ipAddress")?,
                primary_eni,
                subnet_id: text(item, "subnetId").map(str::to_string),
                id,
            });
        }
    }
    Ok(out)
}

/// DescribeSubnets: each subnet's id and IPv4 CIDR block.
pub fn parse_describe_subnets(body: &str) -> Result<Vec<(String, Ipv4Cidr)>, ParseError> {
    let doc = document(body)?;
    let root = response_root(&doc, Action::DescribeSubnets)?;
    let mut out = Vec::new();
    for (i, item) in items(root, "subnetSet").enumerate() {
        let at = format!("subnetSet/item {}", i + 1);
        let id = required(item, &at, "subnetId")?;
        let at = format!("subnet {id}");
        let text = required(item, &at, "cidrBlock")?;
        let cidr = text.parse().map_err(|_| ParseError::Invalid {
            at: at.clone(),
            field: "cidrBlock",
            value: text.chars().take(80).collect(),
            expected: "an IPv4 CIDR block",
        })?;
        out.push((id, cidr));
    }
    Ok(out)
}

// Helpers over roxmltree, by local name.

type Node<'a, 'i> = roxmltree::Node<'a, 'i>;

fn document(body: &str) -> Result<roxmltree::Document<'_>, ParseError> {
    // roxmltree refuses DTDs by default, so no entity expansion from the network.
    roxmltree::Document::parse(body).map_err(|e| ParseError::Xml(e.to_string()))
}

fn root_name(action: Action) -> String {
    format!("{}Response", action.name())
}

fn response_root<'a, 'i>(
    doc: &'a roxmltree::Document<'i>,
    action: Action,
) -> Result<Node<'a, 'i>, ParseError> {
    let root = doc.root_element();
    let expected = root_name(action);
    if root.tag_name().name() != expected {
        return Err(ParseError::Root {
            expected,
            found: root.tag_name().name().chars().take(80).collect(),
        });
    }
    Ok(root)
}

fn child<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    node.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

/// A child element's trimmed text; `None` when absent or empty.
fn text<'a>(node: Node<'a, '_>, name: &str) -> Option<&'a str> {
    child(node, name)
        .and_then(|c| c.text())
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The `<item>` children of the child element `set` (none when the set is absent).
fn items<'a, 'i>(node: Node<'a, 'i>, set: &str) -> impl Iterator<Item = Node<'a, 'i>> {
    child(node, set)
        .into_iter()
        .flat_map(|s| s.children())
        .filter(|c| c.is_element() && c.tag_name().name() == "item")
}

fn missing(at: &str, field: &'static str) -> ParseError {
    ParseError::Missing {
        at: at.to_string(),
        field,
    }
}

fn required(node: Node<'_, '_>, at: &str, field: &'static str) -> Result<String, ParseError> {
    text(node, field)
        .map(str::to_string)
        .ok_or_else(|| missing(at, field))
}

fn boolean(node: Node<'_, '_>, at: &str, field: &'static str) -> Result<bool, ParseError> {
    match text(node, field) {
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err(ParseError::Invalid {
            at: at.to_string(),
            field,
            value: other.chars().take(80).collect(),
            expected: "true or false",
        }),
        None => Err(missing(at, field)),
    }
}

fn optional_ipv4(
    node: Node<'_, '_>,
    at: &str,
    field: &'static str,
) -> Result<Option<Ipv4Addr>, ParseError> {
    text(node, field)
        .map(|t| {
            t.parse().map_err(|_| ParseError::Invalid {
                at: at.to_string(),
                field,
                value: t.chars().take(80).collect(),
                expected: "an IPv4 address",
            })
        })
        .transpose()
}

fn ipv4(node: Node<'_, '_>, at: &str, field: &'static str) -> Result<Ipv4Addr, ParseError> {
    optional_ipv4(node, at, field)?.ok_or_else(|| missing(at, field))
}

/// An `<association>` child; an empty one (moto's `<association/>`) is none.
fn association(node: Node<'_, '_>, at: &str) -> Result<Option<Association>, ParseError> {
    let Some(a) = child(node, "association") else {
        return Ok(None);
    };
    let at = format!("{at}: association");
    let Some(public_ip) = optional_ipv4(a, &at, "publicIp")? else {
        return Ok(None);
    };
    Ok(Some(Association {
        public_ip,
        allocation_id: text(a, "allocationId").map(str::to_string),
        association_id: text(a, "associationId").map(str::to_string),
    }))
}

fn tags(node: Node<'_, '_>, at: &str) -> Result<Vec<(String, String)>, ParseError> {
    items(node, "tagSet")
        .enumerate()
        .map(|(i, t)| {
            let key = required(t, &format!("{at}: tagSet/item {}", i + 1), "key")?;
            // An empty value is a valid tag.
            Ok((key, text(t, "value").unwrap_or_default().to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests;
