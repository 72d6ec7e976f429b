//! The AWS side's decisions, pure: which endpoint to call, what to do with each claimed route
//! table, how the Elastic IPs pair with the ENI's private addresses, and what the `aws` fields
//! of the `ready` and `health` lines say. `run/aws.rs` (the worker thread) asks EC2, feeds the
//! answers here, and carries out what comes back.

use std::fmt;
use std::net::Ipv4Addr;

use crate::aws::iam::PolicyInputs;
use crate::config::AwsConfig;
use crate::plan::PolicyArgs;

/// Where HTTPS calls for one service go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.port == 443 {
            write!(f, "https://{}", self.host)
        } else {
            write!(f, "https://{}:{}", self.host, self.port)
        }
    }
}

/// `https://host[:port][/]`: the only form accepted, since calls to AWS are never plain HTTP.
pub fn parse_endpoint(url: &str) -> Result<Endpoint, String> {
    let rest = url.strip_prefix("https://").ok_or_else(|| {
        format!("{url:?} is not an https:// URL (AWS is never called in plain HTTP)")
    })?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{url:?} has a bad port {p:?}"))?,
        ),
        None => (rest, 443),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
        return Err(format!(
            "{url:?}: {host:?} is not a host name (no path, user or query may follow it)"
        ));
    }
    Ok(Endpoint {
        host: host.to_ascii_lowercase(),
        port,
    })
}

/// The regional endpoint of `service` (`ec2`, `monitoring`).
pub fn regional_endpoint(service: &str, region: &str) -> Endpoint {
    Endpoint {
        host: format!("{service}.{region}.amazonaws.com"),
        port: 443,
    }
}

/// Where a route table's `0.0.0.0/0` points, as far as this appliance cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DefaultRoute {
    None,
    /// To a network interface (ours or another).
    Eni(String),
    /// To anything else (an instance, a NAT gateway, an internet gateway...): its id.
    Other(String),
    /// A route whose target is gone (`blackhole`), with the id it had.
    Blackhole(String),
}

impl fmt::Display for DefaultRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DefaultRoute::None => f.write_str("no 0.0.0.0/0 route"),
            DefaultRoute::Eni(id) | DefaultRoute::Other(id) => write!(f, "0.0.0.0/0 -> {id}"),
            DefaultRoute::Blackhole(id) => write!(f, "0.0.0.0/0 -> {id} (blackhole)"),
        }
    }
}

/// What to do with one claimed route table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteAction {
    /// It points at our ENI: nothing.
    Keep,
    /// No default route: `CreateRoute`.
    Create,
    /// `ReplaceRoute` from what it points at now.
    Replace,
    /// It points elsewhere and this is not ours to change now: report it.
    Report,
}

/// The action for a table: at the first claim (boot) every table is made ours; later, one
/// found pointing elsewhere is taken back only with `reclaim` (someone, a peer or an operator,
/// moved it on purpose, and fighting over it would flap the route).
pub fn route_action(
    current: &DefaultRoute,
    our_eni: &str,
    first_claim: bool,
    reclaim: bool,
) -> RouteAction {
    match current {
        DefaultRoute::Eni(id) if id == our_eni => RouteAction::Keep,
        DefaultRoute::None => RouteAction::Create,
        // A blackhole route carries no traffic: replacing it takes nothing from anyone.
        DefaultRoute::Blackhole(_) => RouteAction::Replace,
        _ if first_claim || reclaim => RouteAction::Replace,
        _ => RouteAction::Report,
    }
}

/// How the Elastic IPs pair with the ENI's private addresses: the first with the primary, the
/// rest with secondary addresses in the order EC2 lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EipPlan {
    /// Secondary private addresses still to assign (`AssignPrivateIpAddresses`).
    pub assign: usize,
    /// `(allocation id, private address)` for every Elastic IP that has its address.
    pub pairs: Vec<(String, Ipv4Addr)>,
}

/// `primary` and `secondary` are the ENI's private addresses now.
pub fn eip_plan(eips: &[String], primary: Ipv4Addr, secondary: &[Ipv4Addr]) -> EipPlan {
    let addrs: Vec<Ipv4Addr> = std::iter::once(primary)
        .chain(secondary.iter().copied())
        .collect();
    EipPlan {
        assign: eips.len().saturating_sub(addrs.len()),
        pairs: eips.iter().cloned().zip(addrs.iter().copied()).collect(),
    }
}

/// The source addresses new flows are spread across: those paired with an associated Elastic
/// IP, primary first. Empty (plain masquerade on the primary) with fewer than two, since one
/// address needs no spreading and masquerade follows the lease by itself.
pub fn snat_addresses(associated: &[(String, Ipv4Addr)]) -> Vec<Ipv4Addr> {
    if associated.len() < 2 {
        return Vec::new();
    }
    associated.iter().map(|(_, a)| *a).collect()
}

/// One AWS-side item's state, for the console.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ItemState {
    /// Not configured.
    #[default]
    Off,
    /// Configured, not done yet (or being retried): why, when known.
    Pending(String),
    /// Done and read back.
    Done,
    /// Done once, found changed since (reported, not reclaimed).
    Drifted(String),
    /// A failover peer holds it (this instance's own item): the named instance.
    Lent(String),
}

impl ItemState {
    fn word(&self) -> &'static str {
        match self {
            ItemState::Off => "off",
            ItemState::Pending(_) => "pending",
            ItemState::Done => "ok",
            ItemState::Drifted(_) => "drifted",
            ItemState::Lent(_) => "lent",
        }
    }
}

/// What the AWS side has done, for the `aws` line and the health line's `aws_*` fields.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AwsStatus {
    pub clock: ItemState,
    pub credentials: ItemState,
    pub source_dest_check: ItemState,
    /// (table id, state), in claim order.
    pub routes: Vec<(String, ItemState)>,
    /// (allocation id, state).
    pub eips: Vec<(String, ItemState)>,
    /// CloudWatch publishing: pending until a period's data went out, then ok.
    pub metrics: ItemState,
    /// Why the last publishing failed, until one succeeds (the NAT is not touched either way).
    pub metrics_failing: Option<String>,
    /// Periods published since start.
    pub metrics_periods: u64,
}

impl AwsStatus {
    /// `aws_srcdst=ok aws_routes=1/2 aws_eips=2/2 ...`: counts of done items; `-` when none is
    /// configured. Drifted routes are named.
    pub fn fields(&self) -> String {
        let count = |items: &[(String, ItemState)]| {
            if items.is_empty() {
                "-".to_string()
            } else {
                let done = items.iter().filter(|(_, s)| *s == ItemState::Done).count();
                format!("{done}/{}", items.len())
            }
        };
        let mut s = format!(
            "aws_clock={} aws_credentials={} aws_srcdst={} aws_routes={} aws_eips={}",
            self.clock.word(),
            self.credentials.word(),
            self.source_dest_check.word(),
            count(&self.routes),
            count(&self.eips)
        );
        let drifted: Vec<&str> = self
            .routes
            .iter()
            .filter(|(_, st)| matches!(st, ItemState::Drifted(_)))
            .map(|(id, _)| id.as_str())
            .collect();
        if !drifted.is_empty() {
            s.push_str(&format!(" aws_routes_elsewhere={}", drifted.join(",")));
        }
        let lent: Vec<&str> = self
            .routes
            .iter()
            .chain(&self.eips)
            .filter(|(_, st)| matches!(st, ItemState::Lent(_)))
            .map(|(id, _)| id.as_str())
            .collect();
        if !lent.is_empty() {
            s.push_str(&format!(" aws_lent={}", lent.join(",")));
        }
        match (&self.metrics, &self.metrics_failing) {
            (ItemState::Off, _) => {}
            (_, Some(why)) => s.push_str(&format!(
                " aws_metrics=failing aws_metrics_sent={} aws_metrics_why={why:?}",
                self.metrics_periods
            )),
            (state, None) => s.push_str(&format!(
                " aws_metrics={} aws_metrics_sent={}",
                state.word(),
                self.metrics_periods
            )),
        }
        s
    }

    /// Everything configured is done.
    pub fn complete(&self) -> bool {
        // Lent to a peer is as done as this instance can make it until it takes it back.
        let done =
            |s: &ItemState| matches!(s, ItemState::Off | ItemState::Done | ItemState::Lent(_));
        done(&self.source_dest_check)
            && self.routes.iter().all(|(_, s)| done(s))
            && self.eips.iter().all(|(_, s)| done(s))
    }
}

/// What the IAM policy is built from: the configuration's AWS items, scoped as the command line
/// says (`--region`, `--account`, `--vpc`, `--eni-tag`).
pub fn policy_inputs(cfg: &AwsConfig, args: &PolicyArgs) -> PolicyInputs {
    PolicyInputs {
        source_dest_check: cfg.disable_source_dest_check,
        route_table_ids: cfg.route_tables.clone(),
        route_table_tags: cfg.route_table_tag.iter().cloned().collect(),
        elastic_ip_allocation_ids: cfg.elastic_ips.clone(),
        eni_tag: args.eni_tag.clone(),
        vpc_id: args.vpc.clone(),
        failover_group: cfg.failover.as_ref().map(|f| f.group.clone()),
        metrics_namespace: cfg.metrics.as_ref().map(|m| m.namespace.clone()),
        metrics_asg: cfg.metrics.as_ref().is_some_and(|m| {
            m.dimensions
                .contains(&crate::config::MetricDimension::AutoScalingGroupName)
        }),
        region: args.region.clone().or_else(|| cfg.region.clone()),
        account: args.account.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_follows_the_config() {
        let cfg = crate::config::Config::from_toml(
            "disable_source_dest_check = true\nroute_tables = [\"rtb-01234567\"]\nroute_table_tag = \"nat=a\"\nelastic_ips = [\"eipalloc-01234567\"]\naws_region = \"eu-west-1\"\n",
            "ud",
        )
        .unwrap();
        let args = PolicyArgs {
            config: None,
            user_data: None,
            region: None,
            account: Some("123456789012".into()),
            vpc: Some("vpc-01234567".into()),
            eni_tag: None,
        };
        let i = policy_inputs(&cfg.aws, &args);
        assert!(i.source_dest_check);
        assert_eq!(i.route_table_ids, vec!["rtb-01234567".to_string()]);
        assert_eq!(
            i.route_table_tags,
            vec![("nat".to_string(), "a".to_string())]
        );
        assert_eq!(
            i.elastic_ip_allocation_ids,
            vec!["eipalloc-01234567".to_string()]
        );
        assert_eq!(i.region.as_deref(), Some("eu-west-1"));
        let json = crate::aws::iam::policy_json(&i);
        assert!(
            json.contains("arn:aws:ec2:eu-west-1:123456789012:route-table/rtb-01234567"),
            "{json}"
        );
        assert!(
            json.contains("ec2:ReplaceRoute") && json.contains("ec2:AssociateAddress"),
            "{json}"
        );
        assert!(!json.contains("ec2:*"), "{json}");
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            parse_endpoint("https://vpce-0a1b-x.ec2.eu-west-1.vpce.amazonaws.com/").unwrap(),
            Endpoint {
                host: "vpce-0a1b-x.ec2.eu-west-1.vpce.amazonaws.com".into(),
                port: 443
            }
        );
        assert_eq!(parse_endpoint("https://Ec2.local:8443").unwrap().port, 8443);
        for bad in [
            "http://ec2.us-east-1.amazonaws.com",
            "ec2.us-east-1.amazonaws.com",
            "https://",
            "https://ec2.x/path",
            "https://user@ec2.x",
            "https://ec2.x:0",
            "https://ec2.x:99999",
            "https://-bad.x",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(
            regional_endpoint("ec2", "us-east-1").to_string(),
            "https://ec2.us-east-1.amazonaws.com"
        );
    }

    #[test]
    fn routes_are_claimed_at_boot_and_only_reported_later() {
        let ours = "eni-0aaa";
        let other = DefaultRoute::Eni("eni-0bbb".into());
        let ngw = DefaultRoute::Other("nat-0123".into());
        assert_eq!(
            route_action(&DefaultRoute::Eni(ours.into()), ours, true, false),
            RouteAction::Keep
        );
        assert_eq!(
            route_action(&DefaultRoute::None, ours, false, false),
            RouteAction::Create
        );
        assert_eq!(
            route_action(&other, ours, true, false),
            RouteAction::Replace
        );
        assert_eq!(route_action(&ngw, ours, true, false), RouteAction::Replace);
        assert_eq!(
            route_action(&other, ours, false, false),
            RouteAction::Report
        );
        assert_eq!(
            route_action(&other, ours, false, true),
            RouteAction::Replace
        );
        assert_eq!(
            route_action(
                &DefaultRoute::Blackhole("eni-0dead".into()),
                ours,
                false,
                false
            ),
            RouteAction::Replace
        );
    }

    #[test]
    fn eips_pair_with_primary_then_secondaries() {
        let p: Ipv4Addr = "10.0.0.10".parse().unwrap();
        let s: Ipv4Addr = "10.0.0.40".parse().unwrap();
        let eips = vec![
            "eipalloc-00000001".to_string(),
            "eipalloc-00000002".to_string(),
        ];
        let plan = eip_plan(&eips, p, &[]);
        assert_eq!(plan.assign, 1);
        assert_eq!(plan.pairs, vec![(eips[0].clone(), p)]);
        let plan = eip_plan(&eips, p, &[s]);
        assert_eq!(plan.assign, 0);
        assert_eq!(plan.pairs, vec![(eips[0].clone(), p), (eips[1].clone(), s)]);
        assert_eq!(eip_plan(&[], p, &[s]).pairs, vec![]);
        assert_eq!(snat_addresses(&plan.pairs), vec![p, s]);
        assert!(snat_addresses(&plan.pairs[..1]).is_empty());
    }

    #[test]
    fn status_fields() {
        let mut st = AwsStatus::default();
        assert_eq!(
            st.fields(),
            "aws_clock=off aws_credentials=off aws_srcdst=off aws_routes=- aws_eips=-"
        );
        assert!(st.complete());
        st.source_dest_check = ItemState::Done;
        st.routes = vec![
            ("rtb-1".into(), ItemState::Done),
            (
                "rtb-2".into(),
                ItemState::Drifted("0.0.0.0/0 -> eni-0bbb".into()),
            ),
        ];
        st.eips = vec![(
            "eipalloc-1".into(),
            ItemState::Pending("AccessDenied".into()),
        )];
        assert_eq!(
            st.fields(),
            "aws_clock=off aws_credentials=off aws_srcdst=ok aws_routes=1/2 aws_eips=0/1 aws_routes_elsewhere=rtb-2"
        );
        assert!(!st.complete());
        st.routes[1].1 = ItemState::Lent("i-0b".into());
        st.eips[0].1 = ItemState::Lent("i-0b".into());
        assert_eq!(
            st.fields(),
            "aws_clock=off aws_credentials=off aws_srcdst=ok aws_routes=1/2 aws_eips=0/1 aws_lent=rtb-2,eipalloc-1"
        );
        assert!(
            st.complete(),
            "lent items wait for the peer, not for this instance"
        );
        // Metrics: pending until a period went out, then ok; failing says why.
        let mut m = AwsStatus {
            metrics: ItemState::Pending("not done yet".into()),
            ..AwsStatus::default()
        };
        assert!(
            m.fields()
                .ends_with(" aws_metrics=pending aws_metrics_sent=0"),
            "{}",
            m.fields()
        );
        m.metrics_failing = Some("denied cloudwatch:PutMetricData".into());
        assert!(
            m.fields().ends_with(
                " aws_metrics=failing aws_metrics_sent=0 aws_metrics_why=\"denied cloudwatch:PutMetricData\""
            ),
            "{}",
            m.fields()
        );
        m.metrics = ItemState::Done;
        m.metrics_failing = None;
        m.metrics_periods = 3;
        assert!(
            m.fields().ends_with(" aws_metrics=ok aws_metrics_sent=3"),
            "{}",
            m.fields()
        );
    }
}
