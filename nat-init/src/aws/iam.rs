//! The least-privilege IAM policy for a configuration: exactly the EC2 actions the configured
//! AWS-side items need, each on the narrowest resources that can be named before launch. Printed
//! for the user to attach to the instance role; [`permission_statement`] is the one-statement form
//! an AccessDenied error line shows.
//!
//! Scoping:
//! - `Describe*` actions support no resource-level permissions: `Resource: *`.
//! - Routes: the route tables' ARNs when configured by id; by tag, `route-table/*` with a
//!   `StringEquals` on `ec2:ResourceTag/KEY` for every configured tag (ANDed, as the lookup).
//! - The instance's own ENI (source/dest check, Elastic IP association, secondary addresses):
//!   its id does not exist before launch, so the ARN is `network-interface/*`, narrowed by a
//!   condition when the inputs allow: the ENI's tag (`ec2:ResourceTag/KEY`, set through the launch
//!   template's network-interface tag specification) or else its VPC (`ec2:Vpc`). Without either
//!   the statement covers the account's ENIs in the region; say so to the user.
//! - Elastic IPs: their `elastic-ip/eipalloc-...` ARNs, in a statement without the ENI's
//!   condition (an Elastic IP carries no ENI tag); AssociateAddress is allowed only when both
//!   statements allow their resource.
//! - Failover: a member takes over route tables and Elastic IPs its own configuration does not
//!   name (a peer's), so those statements cover `route-table/*` and `elastic-ip/*` carrying the
//!   group's tag (`nat:failover-group`): tag the group's route tables and Elastic IPs with it.

use std::collections::BTreeMap;

use serde::Serialize;

use super::ec2::Action;

/// What the configuration asks of AWS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyInputs {
    /// Turn the ENI's source/destination check off.
    pub source_dest_check: bool,
    /// Route tables named by id.
    pub route_table_ids: Vec<String>,
    /// Route tables found by tags (all of them must match).
    pub route_table_tags: Vec<(String, String)>,
    /// Elastic IPs to associate; more than one needs secondary private addresses.
    pub elastic_ip_allocation_ids: Vec<String>,
    /// A tag the instance's ENI carries, to scope the ENI statement.
    pub eni_tag: Option<(String, String)>,
    /// The VPC id, to scope the ENI statement when there is no ENI tag.
    pub vpc_id: Option<String>,
    /// The failover group (`failover_group`), when there is one.
    pub failover_group: Option<String>,
    /// The CloudWatch namespace metrics are published to, when they are.
    pub metrics_namespace: Option<String>,
    /// Whether the metrics carry the Auto Scaling group's name, which the instance reads from
    /// its own tags (DescribeInstances).
    pub metrics_asg: bool,
    /// `*` in ARNs when unknown.
    pub region: Option<String>,
    pub account: Option<String>,
}

#[derive(Serialize)]
struct Policy {
    #[serde(rename = "Version")]
    version: &'static str,
    #[serde(rename = "Statement")]
    statement: Vec<Statement>,
}

/// Field order is the output's (derive keeps it, whatever serde_json's map features).
#[derive(Serialize)]
struct Statement {
    #[serde(rename = "Sid", skip_serializing_if = "Option::is_none")]
    sid: Option<&'static str>,
    #[serde(rename = "Effect")]
    effect: &'static str,
    #[serde(rename = "Action")]
    action: Vec<String>,
    #[serde(rename = "Resource")]
    resource: Vec<String>,
    #[serde(rename = "Condition", skip_serializing_if = "BTreeMap::is_empty")]
    condition: BTreeMap<&'static str, BTreeMap<String, String>>,
}

impl Statement {
    fn allow(sid: Option<&'static str>, actions: &[Action], resource: Vec<String>) -> Self {
        Self {
            sid,
            effect: "Allow",
            action: actions.iter().map(|a| a.permission()).collect(),
            resource,
            condition: BTreeMap::new(),
        }
    }
}

/// An EC2 ARN, `arn:aws:ec2:REGION:ACCOUNT:KIND/ID`, with `*` for an unknown region or account.
pub fn arn(kind: &str, id: &str, region: Option<&str>, account: Option<&str>) -> String {
    format!(
        "arn:aws:ec2:{}:{}:{kind}/{id}",
        region.unwrap_or("*"),
        account.unwrap_or("*")
    )
}

/// The resource an AccessDenied line should name for `action` on `id` (a route table, ENI or
/// allocation id): its ARN, or `*` for the `Describe*` actions and when there is no id.
pub fn resource_hint(
    action: Action,
    id: Option<&str>,
    region: Option<&str>,
    account: Option<&str>,
) -> String {
    let kind = match action {
        Action::ReplaceRoute | Action::CreateRoute => "route-table",
        Action::ModifyNetworkInterfaceAttribute | Action::AssignPrivateIpAddresses => {
            "network-interface"
        }
        // Its other resource, the ENI, is named by the NatOwnInterface statement.
        Action::AssociateAddress => "elastic-ip",
        Action::DescribeNetworkInterfaces
        | Action::DescribeRouteTables
        | Action::DescribeAddresses
        | Action::DescribeInstances
        | Action::DescribeSubnets => return "*".to_string(),
    };
    match id {
        Some(id) => arn(kind, id, region, account),
        None => "*".to_string(),
    }
}

/// The actions a configuration needs, in [`Action`]'s order.
pub fn actions(inputs: &PolicyInputs) -> Vec<Action> {
    let failover = inputs.failover_group.is_some();
    let routes =
        failover || !inputs.route_table_ids.is_empty() || !inputs.route_table_tags.is_empty();
    let eips = failover || !inputs.elastic_ip_allocation_ids.is_empty();
    let mut out = Vec::new();
    if failover {
        out.extend([Action::DescribeInstances, Action::DescribeSubnets]);
    }
    if inputs.metrics_namespace.is_some() && inputs.metrics_asg && !failover {
        out.push(Action::DescribeInstances);
    }
    if inputs.source_dest_check || eips {
        out.push(Action::DescribeNetworkInterfaces);
    }
    if inputs.source_dest_check {
        out.push(Action::ModifyNetworkInterfaceAttribute);
    }
    if routes {
        out.extend([
            Action::DescribeRouteTables,
            Action::ReplaceRoute,
            Action::CreateRoute,
        ]);
    }
    if eips {
        out.extend([Action::DescribeAddresses, Action::AssociateAddress]);
    }
    // A failover member's Elastic IPs sit on secondary addresses, which move between peers.
    if failover || inputs.elastic_ip_allocation_ids.len() > 1 {
        out.push(Action::AssignPrivateIpAddresses);
    }
    out.sort();
    out
}

/// The policy document, pretty-printed JSON (`Version` 2012-10-17). A configuration that needs
/// nothing gets a policy with no statements.
pub fn policy_json(inputs: &PolicyInputs) -> String {
    let region = inputs.region.as_deref();
    let account = inputs.account.as_deref();
    let needed = actions(inputs);
    let has = |a: Action| needed.contains(&a);
    let mut statements = Vec::new();

    let describe: Vec<Action> = needed
        .iter()
        .copied()
        .filter(|a| a.name().starts_with("Describe"))
        .collect();
    if !describe.is_empty() {
        statements.push(Statement::allow(
            Some("NatDescribe"),
            &describe,
            vec!["*".into()],
        ));
    }

    let routes = [Action::CreateRoute, Action::ReplaceRoute];
    if !inputs.route_table_ids.is_empty() {
        let tables = inputs
            .route_table_ids
            .iter()
            .map(|id| arn("route-table", id, region, account))
            .collect();
        statements.push(Statement::allow(Some("NatRoutesById"), &routes, tables));
    }
    if !inputs.route_table_tags.is_empty() {
        let mut s = Statement::allow(
            Some("NatRoutesByTag"),
            &routes,
            vec![arn("route-table", "*", region, account)],
        );
        s.condition.insert(
            "StringEquals",
            inputs
                .route_table_tags
                .iter()
                .map(|(k, v)| (format!("ec2:ResourceTag/{k}"), v.clone()))
                .collect(),
        );
        statements.push(s);
    }

    if let Some(group) = &inputs.failover_group {
        let tagged = |sid, actions: &[Action], kind| {
            let mut s = Statement::allow(Some(sid), actions, vec![arn(kind, "*", region, account)]);
            s.condition.insert(
                "StringEquals",
                BTreeMap::from([(
                    format!("ec2:ResourceTag/{}", crate::config::FAILOVER_TAG),
                    group.clone(),
                )]),
            );
            s
        };
        statements.push(tagged("NatFailoverRoutes", &routes, "route-table"));
        statements.push(tagged(
            "NatFailoverElasticIps",
            &[Action::AssociateAddress],
            "elastic-ip",
        ));
    }

    let eni_actions: Vec<Action> = [
        Action::AssignPrivateIpAddresses,
        Action::AssociateAddress,
        Action::ModifyNetworkInterfaceAttribute,
    ]
    .into_iter()
    .filter(|a| has(*a))
    .collect();
    if !eni_actions.is_empty() {
        let mut s = Statement::allow(
            Some("NatOwnInterface"),
            &eni_actions,
            vec![arn("network-interface", "*", region, account)],
        );
        if let Some((key, value)) = &inputs.eni_tag {
            s.condition.insert(
                "StringEquals",
                BTreeMap::from([(format!("ec2:ResourceTag/{key}"), value.clone())]),
            );
        } else if let Some(vpc) = &inputs.vpc_id {
            s.condition.insert(
                "ArnEquals",
                BTreeMap::from([("ec2:Vpc".to_string(), arn("vpc", vpc, region, account))]),
            );
        }
        statements.push(s);
    }
    if has(Action::AssociateAddress) && !inputs.elastic_ip_allocation_ids.is_empty() {
        let eips = inputs
            .elastic_ip_allocation_ids
            .iter()
            .map(|id| arn("elastic-ip", id, region, account))
            .collect();
        statements.push(Statement::allow(
            Some("NatElasticIps"),
            &[Action::AssociateAddress],
            eips,
        ));
    }
    if let Some(ns) = &inputs.metrics_namespace {
        // PutMetricData has no resource-level permissions; the namespace condition is the
        // narrowest scope CloudWatch offers.
        statements.push(Statement {
            sid: Some("NatPublishMetrics"),
            effect: "Allow",
            action: vec![crate::aws::cloudwatch::PERMISSION.to_string()],
            resource: vec!["*".into()],
            condition: BTreeMap::from([(
                "StringEquals",
                BTreeMap::from([("cloudwatch:namespace".to_string(), ns.clone())]),
            )]),
        });
    }
    pretty(&Policy {
        version: "2012-10-17",
        statement: statements,
    })
}

/// One `Allow` statement for `action` (e.g. `ec2:ReplaceRoute`) on `resource_hint` (an ARN, `*`
/// when empty), pretty JSON: what an AccessDenied line tells the user to add.
pub fn permission_statement(action: &str, resource_hint: &str) -> String {
    let resource = if resource_hint.is_empty() {
        "*"
    } else {
        resource_hint
    };
    pretty(&Statement {
        sid: None,
        effect: "Allow",
        action: vec![action.to_string()],
        resource: vec![resource.to_string()],
        condition: BTreeMap::new(),
    })
}

fn pretty<T: Serialize>(value: &T) -> String {
    // Strings, vectors and string-keyed maps always serialise; the default is unreachable.
    serde_json::to_string_pretty(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn sample() -> PolicyInputs {
        PolicyInputs {
            source_dest_check: true,
            route_table_ids: vec!["rtb-0a".into(), "rtb-0b".into()],
            route_table_tags: vec![
                ("nat".into(), "private".into()),
                ("env".into(), "prod".into()),
            ],
            elastic_ip_allocation_ids: vec!["eipalloc-1".into(), "eipalloc-2".into()],
            eni_tag: Some(("nat-eni".into(), "true".into())),
            vpc_id: Some("vpc-1".into()),
            failover_group: None,
            metrics_namespace: None,
            metrics_asg: false,
            region: Some("eu-west-1".into()),
            account: Some("111122223333".into()),
        }
    }

    fn all_actions(policy: &Value) -> Vec<String> {
        let mut out: Vec<String> = policy["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["Action"].as_array().unwrap().clone())
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    #[test]
    fn full_config_policy() {
        let text = policy_json(&sample());
        let policy: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            policy,
            json!({
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "NatDescribe", "Effect": "Allow",
                        "Action": ["ec2:DescribeNetworkInterfaces", "ec2:DescribeRouteTables",
                                   "ec2:DescribeAddresses"],
                        "Resource": ["*"]
                    },
                    {
                        "Sid": "NatRoutesById", "Effect": "Allow",
                        "Action": ["ec2:CreateRoute", "ec2:ReplaceRoute"],
                        "Resource": ["arn:aws:ec2:eu-west-1:111122223333:route-table/rtb-0a",
                                     "arn:aws:ec2:eu-west-1:111122223333:route-table/rtb-0b"]
                    },
                    {
                        "Sid": "NatRoutesByTag", "Effect": "Allow",
                        "Action": ["ec2:CreateRoute", "ec2:ReplaceRoute"],
                        "Resource": ["arn:aws:ec2:eu-west-1:111122223333:route-table/*"],
                        "Condition": {"StringEquals": {"ec2:ResourceTag/env": "prod",
                                                       "ec2:ResourceTag/nat": "private"}}
                    },
                    {
                        "Sid": "NatOwnInterface", "Effect": "Allow",
                        "Action": ["ec2:AssignPrivateIpAddresses", "ec2:AssociateAddress",
                                   "ec2:ModifyNetworkInterfaceAttribute"],
                        "Resource": ["arn:aws:ec2:eu-west-1:111122223333:network-interface/*"],
                        "Condition": {"StringEquals": {"ec2:ResourceTag/nat-eni": "true"}}
                    },
                    {
                        "Sid": "NatElasticIps", "Effect": "Allow",
                        "Action": ["ec2:AssociateAddress"],
                        "Resource": ["arn:aws:ec2:eu-west-1:111122223333:elastic-ip/eipalloc-1",
                                     "arn:aws:ec2:eu-west-1:111122223333:elastic-ip/eipalloc-2"]
                    }
                ]
            })
        );
        // Pretty, with the document's keys in IAM's usual order.
        assert!(text.starts_with("{\n  \"Version\": \"2012-10-17\",\n  \"Statement\": ["));
        assert!(!text.contains("ec2:*"));
    }

    #[test]
    fn each_item_asks_for_exactly_its_actions() {
        let only_sdc = PolicyInputs {
            source_dest_check: true,
            ..PolicyInputs::default()
        };
        let p: Value = serde_json::from_str(&policy_json(&only_sdc)).unwrap();
        assert_eq!(
            all_actions(&p),
            vec![
                "ec2:DescribeNetworkInterfaces",
                "ec2:ModifyNetworkInterfaceAttribute"
            ]
        );
        // Unknown region and account, no ENI tag: VPC-scoped.
        let only_sdc_vpc = PolicyInputs {
            vpc_id: Some("vpc-1".into()),
            ..only_sdc
        };
        let p: Value = serde_json::from_str(&policy_json(&only_sdc_vpc)).unwrap();
        assert_eq!(
            p["Statement"][1]["Resource"],
            json!(["arn:aws:ec2:*:*:network-interface/*"])
        );
        assert_eq!(
            p["Statement"][1]["Condition"],
            json!({"ArnEquals": {"ec2:Vpc": "arn:aws:ec2:*:*:vpc/vpc-1"}})
        );

        let by_tag = PolicyInputs {
            route_table_tags: vec![("nat".into(), "private".into())],
            ..PolicyInputs::default()
        };
        let p: Value = serde_json::from_str(&policy_json(&by_tag)).unwrap();
        assert_eq!(
            all_actions(&p),
            vec![
                "ec2:CreateRoute",
                "ec2:DescribeRouteTables",
                "ec2:ReplaceRoute"
            ]
        );

        let one_eip = PolicyInputs {
            elastic_ip_allocation_ids: vec!["eipalloc-1".into()],
            ..PolicyInputs::default()
        };
        let p: Value = serde_json::from_str(&policy_json(&one_eip)).unwrap();
        assert_eq!(
            all_actions(&p),
            vec![
                "ec2:AssociateAddress",
                "ec2:DescribeAddresses",
                "ec2:DescribeNetworkInterfaces"
            ]
        );
        // No ENI tag nor VPC: the ENI statement has no condition.
        assert_eq!(p["Statement"][1]["Sid"], "NatOwnInterface");
        assert!(p["Statement"][1].get("Condition").is_none());

        let nothing: Value = serde_json::from_str(&policy_json(&PolicyInputs::default())).unwrap();
        assert_eq!(nothing["Statement"], json!([]));
    }

    #[test]
    fn failover_covers_the_group_tagged_tables_and_addresses() {
        let member = PolicyInputs {
            route_table_ids: vec!["rtb-0a".into()],
            elastic_ip_allocation_ids: vec!["eipalloc-1".into()],
            failover_group: Some("prod".into()),
            ..PolicyInputs::default()
        };
        let p: Value = serde_json::from_str(&policy_json(&member)).unwrap();
        assert_eq!(
            all_actions(&p),
            vec![
                "ec2:AssignPrivateIpAddresses",
                "ec2:AssociateAddress",
                "ec2:CreateRoute",
                "ec2:DescribeAddresses",
                "ec2:DescribeInstances",
                "ec2:DescribeNetworkInterfaces",
                "ec2:DescribeRouteTables",
                "ec2:DescribeSubnets",
                "ec2:ReplaceRoute"
            ]
        );
        let by_sid = |sid: &str| {
            p["Statement"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["Sid"] == sid)
                .cloned()
                .unwrap()
        };
        let tag = json!({"StringEquals": {"ec2:ResourceTag/nat:failover-group": "prod"}});
        let routes = by_sid("NatFailoverRoutes");
        assert_eq!(routes["Resource"], json!(["arn:aws:ec2:*:*:route-table/*"]));
        assert_eq!(routes["Condition"], tag);
        let eips = by_sid("NatFailoverElasticIps");
        assert_eq!(eips["Resource"], json!(["arn:aws:ec2:*:*:elastic-ip/*"]));
        assert_eq!(eips["Condition"], tag);
        assert_eq!(
            by_sid("NatRoutesById")["Resource"],
            json!(["arn:aws:ec2:*:*:route-table/rtb-0a"])
        );
    }

    #[test]
    fn metrics_add_put_metric_data_on_their_namespace_only() {
        let only = PolicyInputs {
            metrics_namespace: Some("Prod/NAT".into()),
            ..PolicyInputs::default()
        };
        let p: Value = serde_json::from_str(&policy_json(&only)).unwrap();
        assert_eq!(
            p["Statement"],
            json!([{
                "Sid": "NatPublishMetrics",
                "Effect": "Allow",
                "Action": ["cloudwatch:PutMetricData"],
                "Resource": ["*"],
                "Condition": {"StringEquals": {"cloudwatch:namespace": "Prod/NAT"}}
            }])
        );
        // The Auto Scaling group's name comes from the instance's own tags.
        let asg = PolicyInputs {
            metrics_asg: true,
            ..only.clone()
        };
        assert_eq!(actions(&asg), [Action::DescribeInstances]);
        let p: Value = serde_json::from_str(&policy_json(&asg)).unwrap();
        assert_eq!(
            p["Statement"][0]["Action"],
            json!(["ec2:DescribeInstances"])
        );
        assert_eq!(p["Statement"][1]["Sid"], json!("NatPublishMetrics"));
        // Without metrics, neither.
        let none = PolicyInputs {
            metrics_asg: true,
            ..PolicyInputs::default()
        };
        assert!(actions(&none).is_empty());
        assert!(!policy_json(&none).contains("cloudwatch"));
    }

    #[test]
    fn one_statement_for_a_denied_call() {
        let text = permission_statement(
            &Action::ReplaceRoute.permission(),
            &arn("route-table", "rtb-0a", Some("eu-west-1"), None),
        );
        assert_eq!(
            text,
            "{\n  \"Effect\": \"Allow\",\n  \"Action\": [\n    \"ec2:ReplaceRoute\"\n  ],\n  \
             \"Resource\": [\n    \"arn:aws:ec2:eu-west-1:*:route-table/rtb-0a\"\n  ]\n}"
        );
        let any: Value =
            serde_json::from_str(&permission_statement("ec2:DescribeAddresses", "")).unwrap();
        assert_eq!(any["Resource"], json!(["*"]));
    }

    #[test]
    fn resource_hints() {
        let r = Some("eu-west-1");
        assert_eq!(
            resource_hint(Action::ReplaceRoute, Some("rtb-1"), r, None),
            "arn:aws:ec2:eu-west-1:*:route-table/rtb-1"
        );
        assert_eq!(
            resource_hint(
                Action::ModifyNetworkInterfaceAttribute,
                Some("eni-1"),
                r,
                Some("1")
            ),
            "arn:aws:ec2:eu-west-1:1:network-interface/eni-1"
        );
        assert_eq!(
            resource_hint(Action::AssociateAddress, Some("eipalloc-1"), None, None),
            "arn:aws:ec2:*:*:elastic-ip/eipalloc-1"
        );
        assert_eq!(
            resource_hint(Action::DescribeRouteTables, Some("rtb-1"), r, None),
            "*"
        );
        assert_eq!(resource_hint(Action::CreateRoute, None, r, None), "*");
    }

    #[test]
    fn values_are_json_escaped() {
        let odd = PolicyInputs {
            route_table_tags: vec![("a\"b".into(), "c\\d".into())],
            ..PolicyInputs::default()
        };
        let p: Value = serde_json::from_str(&policy_json(&odd)).unwrap();
        assert_eq!(
            p["Statement"][1]["Condition"]["StringEquals"]["ec2:ResourceTag/a\"b"],
            "c\\d"
        );
    }
}
