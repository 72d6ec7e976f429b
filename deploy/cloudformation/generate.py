#!/usr/bin/env python3
"""Writes deploy/cloudformation/nat.yaml, the CloudFormation template of the NAT appliance.

CloudFormation has no loops (Fn::ForEach needs the AWS::LanguageExtensions transform, which
moto, the local AWS stand-in the tests deploy into, does not run), so the template repeats the
same resources for each NAT "slot": zones a, b and c, members 1 and 2 of each (member 2 only
with Failover=pair). Writing those copies by hand would let them drift apart; this script is
the one place they are written. Edit it, then run

    python3 deploy/cloudformation/generate.py > deploy/cloudformation/nat.yaml

(with PyYAML; `cargo xtask test --only deploy` checks the committed file is its output).

Intrinsics are spelled long-form ({"Ref": ...}, {"Fn::If": ...}) so that the output is plain
YAML any parser reads.
"""

import sys

import yaml

ZONES = ["a", "b", "c"]
MEMBERS = [1, 2]
ENI_TAG = "nat:appliance"
FAILOVER_TAG = "nat:failover-group"
NO = {"Ref": "AWS::NoValue"}
# What the security group lets in from the VPC and out to anywhere: (protocol, from, to).
PROTOCOLS = [("tcp", 0, 65535), ("udp", 0, 65535), ("icmp", -1, -1)]

# The alarms of issue 13: what users set on a NAT Gateway, on the appliance's metrics of the
# same names (and the ENA allowance counters, a NAT instance's own limits). `threshold` is a
# number or the name of a parameter. Kept in the same shape as the Terraform module's
# `local.alarms`; the parity check compares the two.
ALARMS = [
    # (key, metric, statistic, comparison, threshold, evaluation periods, datapoints, missing data)
    ("port-allocation", "ErrorPortAllocation", "Sum", "GreaterThanThreshold", 0, 1, 1, "notBreaching"),
    ("packet-drops", "PacketsDropCount", "Sum", "GreaterThanThreshold", "PacketDropThreshold", 5, 3, "notBreaching"),
    ("bw-in-allowance", "BwInAllowanceExceeded", "Sum", "GreaterThanThreshold", 0, 5, 3, "notBreaching"),
    ("bw-out-allowance", "BwOutAllowanceExceeded", "Sum", "GreaterThanThreshold", 0, 5, 3, "notBreaching"),
    ("pps-allowance", "PpsAllowanceExceeded", "Sum", "GreaterThanThreshold", 0, 5, 3, "notBreaching"),
    ("conntrack-allowance", "ConntrackAllowanceExceeded", "Sum", "GreaterThanThreshold", 0, 1, 1, "notBreaching"),
    ("linklocal-allowance", "LinklocalAllowanceExceeded", "Sum", "GreaterThanThreshold", 0, 5, 3, "notBreaching"),
    # No data: ConntrackMax is published every period by a live appliance; none for 3 periods
    # means the NAT (or its metrics) is gone.
    ("no-data", "ConntrackMax", "SampleCount", "LessThanThreshold", 1, 3, 3, "breaching"),
]


def ref(name):
    return {"Ref": name}


def sub(text):
    return {"Fn::Sub": text}


def if_(cond, yes, no=NO):
    return {"Fn::If": [cond, yes, no]}


def slot_id(zone, member):
    return f"{zone.upper()}{member}"


def slot_condition(zone, member):
    """The condition a slot's resources carry: none for zone a's member 1 (always there)."""
    Z = zone.upper()
    if member == 1:
        return None if zone == "a" else f"Zone{Z}"
    return "Pair" if zone == "a" else f"Slot{Z}2"


def drop_empty_conditions(items):
    """Removes `Condition: None` (zone a's member 1) from resources or outputs."""
    for item in items.values():
        if "Condition" in item and item["Condition"] is None:
            del item["Condition"]
    return items


def arn(kind, ident):
    """An EC2 ARN as `nat-init --iam-policy` prints it without --region and --account: ids and
    tags scope the statements, and a Fn::Join delimiter (one ARN per route table) must be a
    literal string, so the region and account are `*`."""
    return f"arn:aws:ec2:*:*:{kind}/{ident}"


def parameters():
    p = {
        "VpcId": {"Type": "AWS::EC2::VPC::Id", "Description": "The VPC of the NAT instances."},
        "VpcCidr": {
            "Type": "String",
            "AllowedPattern": r"^\d{1,3}(\.\d{1,3}){3}/\d{1,2}$",
            "Description": "The VPC's CIDR: the only source the NAT security group lets in.",
        },
    }
    for z in ZONES:
        optional = z != "a"
        p[f"PublicSubnet{z.upper()}"] = {
            "Type": "String",
            **({"Default": ""} if optional else {}),
            "AllowedPattern": r"^(subnet-[0-9a-f]+)?$" if optional else r"^subnet-[0-9a-f]+$",
            "Description": f"Zone {z}: the public subnet its NAT runs in"
            + (" (empty: no zone " + z + ")." if optional else "."),
        }
        p[f"PrivateRouteTables{z.upper()}"] = {
            "Type": "CommaDelimitedList",
            **({"Default": ""} if optional else {}),
            "Description": f"Zone {z}: the private route tables whose 0.0.0.0/0 its NAT points at "
            "itself (the appliance makes the route, not the template).",
        }
        p[f"ElasticIp{z.upper()}"] = {
            "Type": "String",
            "Default": "",
            "AllowedPattern": r"^(eipalloc-[0-9a-f]+)?$",
            "Description": f"Zone {z}: an Elastic IP allocation id for its NAT's egress (empty: "
            "CreateElasticIps decides).",
        }
    p.update(
        {
            "InstanceType": {
                "Type": "String",
                "Default": "t4g.nano",
                "AllowedPattern": r"^[a-z0-9]+g[a-z]*\.[a-z0-9]+$",
                "Description": "A Graviton (arm64) instance type.",
            },
            "CapacityType": {
                "Type": "String",
                "Default": "on-demand",
                "AllowedValues": ["on-demand", "spot"],
                "Description": "on-demand or spot (an interrupted spot NAT is replaced by its "
                "Auto Scaling group; use Failover=pair to keep traffic flowing meanwhile).",
            },
            "AmiId": {
                "Type": "String",
                "Default": "",
                "AllowedPattern": r"^(ami-[0-9a-f]+)?$",
                "Description": "The appliance's AMI id (empty: read AmiSsmParameter).",
            },
            "AmiSsmParameter": {
                "Type": "String",
                "Default": "/nat-appliance/nat-t4g/ami-id",
                "Description": "An SSM parameter holding the AMI id, read at each stack "
                "update when AmiId is empty.",
            },
            "Failover": {
                "Type": "String",
                "Default": "none",
                "AllowedValues": ["none", "across-zones", "pair"],
                "Description": "none: one NAT per zone, replaced by its Auto Scaling group; "
                "across-zones: one per zone, all in one failover group (routes and addresses "
                "move to another zone's NAT, connections are lost); pair: two per zone in the "
                "same subnet, a group per zone (connections kept).",
            },
            "CreateElasticIps": {
                "Type": "String",
                "Default": "false",
                "AllowedValues": ["true", "false"],
                "Description": "Allocate an Elastic IP for each zone whose ElasticIp is empty.",
            },
            "MetricsNamespace": {
                "Type": "String",
                "Default": "NatInstance",
                "AllowedPattern": r"^[A-Za-z0-9._/#:-]{1,255}$",
                "Description": "The CloudWatch namespace of the appliance's metrics.",
            },
            "PacketDropThreshold": {
                "Type": "Number",
                "Default": 100,
                "MinValue": 0,
                "Description": "Dropped packets a minute (3 of 5 minutes) that raise the drop alarm.",
            },
            "AlarmTopicArn": {
                "Type": "String",
                "Default": "",
                "Description": "An SNS topic the alarms notify (empty: none).",
            },
        }
    )
    return p


def conditions():
    c = {
        "Spot": {"Fn::Equals": [ref("CapacityType"), "spot"]},
        "HasAmiId": {"Fn::Not": [{"Fn::Equals": [ref("AmiId"), ""]}]},
        "Pair": {"Fn::Equals": [ref("Failover"), "pair"]},
        "FailoverOn": {"Fn::Not": [{"Fn::Equals": [ref("Failover"), "none"]}]},
        "CreateEips": {"Fn::Equals": [ref("CreateElasticIps"), "true"]},
        "HasAlarmTopic": {"Fn::Not": [{"Fn::Equals": [ref("AlarmTopicArn"), ""]}]},
    }
    for z in ZONES:
        Z = z.upper()
        # Zone a is always there; b and c when their subnet is given.
        zone_on = [] if z == "a" else [{"Condition": f"Zone{Z}"}]
        if z != "a":
            c[f"Zone{Z}"] = {"Fn::Not": [{"Fn::Equals": [ref(f"PublicSubnet{Z}"), ""]}]}
        c[f"GivenEip{Z}"] = {"Fn::Not": [{"Fn::Equals": [ref(f"ElasticIp{Z}"), ""]}]}
        if zone_on:
            c[f"Slot{Z}2"] = {"Fn::And": zone_on + [{"Condition": "Pair"}]}
        # The template allocates the zone's Elastic IP (member 1's).
        c[f"NewEip{Z}"] = {
            "Fn::And": zone_on + [{"Condition": "CreateEips"}, {"Fn::Not": [{"Condition": f"GivenEip{Z}"}]}]
        }
        c[f"Eip{Z}"] = {"Fn::Or": [{"Condition": f"GivenEip{Z}"}, {"Condition": f"NewEip{Z}"}]}
    return c


def group_name(zone, member):
    """The failover group: per zone for a pair, the stack's across zones. Member 2 exists only
    in a pair."""
    if member == 2:
        return sub(f"${{AWS::StackName}}-{zone}")
    return if_("Pair", sub(f"${{AWS::StackName}}-{zone}"), ref("AWS::StackName"))


def when_failover(member, value, otherwise=NO):
    """`value` when the slot is in a failover group: always for member 2 (a pair's)."""
    return value if member == 2 else if_("FailoverOn", value, otherwise)


def nat_name(zone, member):
    return sub(f"${{AWS::StackName}}-{zone}" + ("" if member == 1 else "-2"))


def eip_id(zone):
    Z = zone.upper()
    return if_(f"GivenEip{Z}", ref(f"ElasticIp{Z}"), {"Fn::GetAtt": [f"ElasticIp{Z}1", "AllocationId"]})


def user_data(zone, member):
    """The nat-init TOML document (README "The AWS side"); empty strings for absent lines."""
    Z = zone.upper()
    lines = [
        sub(f"# nat-init user-data from the deploy template: stack ${{AWS::StackName}}, zone {zone}, member {member}"),
        "disable_source_dest_check = true",
    ]
    if member == 1:
        lines.append(
            {"Fn::Join": ["", ['route_tables = ["', {"Fn::Join": ['", "', ref(f"PrivateRouteTables{Z}")]}, '"]']]}
        )
        lines.append(if_(f"Eip{Z}", {"Fn::Join": ["", ['elastic_ips = ["', eip_id(zone), '"]']]}, ""))
    lines.append(when_failover(member, {"Fn::Join": ["", ['failover_group = "', group_name(zone, member), '"']]}, ""))
    lines += [
        "metrics = true",
        {"Fn::Join": ["", ['metrics_namespace = "', ref("MetricsNamespace"), '"']]},
        "metrics_period = 60",
        {"Fn::Join": ["", ['nat_name = "', nat_name(zone, member), '"']]},
        # One series per NAT name, so the alarms outlive each Auto Scaling replacement.
        'metrics_dimensions = ["NatName"]',
        "",
    ]
    return {"Fn::Base64": {"Fn::Join": ["\n", lines]}}


def policy_variant(zone, member, failover, eip):
    """The policy for one combination of the slot's conditions (in a failover group; with an
    Elastic IP of its own), with no condition left inside: moto keeps an AWS::NoValue in a list
    as a null, so every list here is final."""
    Z = zone.upper()
    owns = member == 1
    eip = eip and owns
    routes = ["ec2:CreateRoute", "ec2:ReplaceRoute"]
    describe = ["ec2:DescribeNetworkInterfaces", "ec2:DescribeRouteTables"]
    if eip or failover:
        describe.append("ec2:DescribeAddresses")
    if failover:
        describe += ["ec2:DescribeInstances", "ec2:DescribeSubnets"]
    statements = [{"Sid": "NatDescribe", "Effect": "Allow", "Action": describe, "Resource": ["*"]}]
    if owns:
        # One ARN per table: join the ids with "|<arn prefix>", prefix the first, split on "|".
        prefix = arn("route-table", "")
        statements.append(
            {
                "Sid": "NatRoutesById",
                "Effect": "Allow",
                "Action": routes,
                "Resource": {
                    "Fn::Split": [
                        "|",
                        {"Fn::Join": ["", [prefix, {"Fn::Join": ["|" + prefix, ref(f"PrivateRouteTables{Z}")]}]]},
                    ]
                },
            }
        )
    if failover:
        tag_cond = {"StringEquals": {f"ec2:ResourceTag/{FAILOVER_TAG}": group_name(zone, member)}}
        statements.append(
            {
                "Sid": "NatFailoverRoutes",
                "Effect": "Allow",
                "Action": routes,
                "Resource": [arn("route-table", "*")],
                "Condition": tag_cond,
            }
        )
        statements.append(
            {
                "Sid": "NatFailoverElasticIps",
                "Effect": "Allow",
                "Action": ["ec2:AssociateAddress"],
                "Resource": [arn("elastic-ip", "*")],
                "Condition": tag_cond,
            }
        )
    eni = ["ec2:ModifyNetworkInterfaceAttribute"]
    if eip or failover:
        eni.append("ec2:AssociateAddress")
    if failover:
        eni.append("ec2:AssignPrivateIpAddresses")
    statements.append(
        {
            "Sid": "NatOwnInterface",
            "Effect": "Allow",
            "Action": eni,
            "Resource": [arn("network-interface", "*")],
            "Condition": {"StringEquals": {f"ec2:ResourceTag/{ENI_TAG}": ref("AWS::StackName")}},
        }
    )
    if eip:
        statements.append(
            {
                "Sid": "NatElasticIps",
                "Effect": "Allow",
                "Action": ["ec2:AssociateAddress"],
                "Resource": [{"Fn::Join": ["", [arn("elastic-ip", ""), eip_id(zone)]]}],
            }
        )
    statements.append(
        {
            "Sid": "NatPublishMetrics",
            "Effect": "Allow",
            "Action": ["cloudwatch:PutMetricData"],
            "Resource": ["*"],
            "Condition": {"StringEquals": {"cloudwatch:namespace": ref("MetricsNamespace")}},
        }
    )
    return {"Version": "2012-10-17", "Statement": statements}


def policy(zone, member):
    """What `nat-init --iam-policy --eni-tag nat:appliance=STACK` prints for the slot's user-data
    (nat-init/src/aws/iam.rs); the deploy check compares them statement by statement. Member 2
    (a pair's) is always in a group and has no Elastic IP of its own."""
    Z = zone.upper()
    if member == 2:
        return policy_variant(zone, 2, True, False)
    return if_(
        "FailoverOn",
        if_(f"Eip{Z}", policy_variant(zone, 1, True, True), policy_variant(zone, 1, True, False)),
        if_(f"Eip{Z}", policy_variant(zone, 1, False, True), policy_variant(zone, 1, False, False)),
    )


def slot_resources(zone, member):
    Z = zone.upper()
    s = slot_id(zone, member)
    cond = slot_condition(zone, member)
    r = {}
    r[f"Role{s}"] = {
        "Type": "AWS::IAM::Role",
        "Condition": cond,
        "Properties": {
            "Description": sub(f"NAT appliance {zone}{member} of ${{AWS::StackName}}: its own EC2 side and metrics"),
            "AssumeRolePolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "ec2.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            },
            "Policies": [{"PolicyName": "nat-appliance", "PolicyDocument": policy(zone, member)}],
        },
    }
    r[f"InstanceProfile{s}"] = {
        "Type": "AWS::IAM::InstanceProfile",
        "Condition": cond,
        "Properties": {"Roles": [ref(f"Role{s}")]},
    }
    if member == 1:
        r[f"ElasticIp{Z}1"] = {
            "Type": "AWS::EC2::EIP",
            "Condition": f"NewEip{Z}",
            "Properties": {
                "Domain": "vpc",
                "Tags": [
                    {"Key": "Name", "Value": nat_name(zone, 1)},
                    # A failover peer may take it over only with this tag (iam.rs).
                    {"Key": FAILOVER_TAG, "Value": group_name(zone, 1)},
                ],
            },
        }
    tags = [
        {"Key": "Name", "Value": nat_name(zone, member)},
        {"Key": ENI_TAG, "Value": ref("AWS::StackName")},
    ]
    # The whole list under the condition: moto keeps an AWS::NoValue element as a null.
    instance_tags = when_failover(member, tags + [{"Key": FAILOVER_TAG, "Value": group_name(zone, member)}], tags)
    r[f"LaunchTemplate{s}"] = {
        "Type": "AWS::EC2::LaunchTemplate",
        "Condition": cond,
        "Properties": {
            "LaunchTemplateData": {
                "ImageId": if_("HasAmiId", ref("AmiId"), sub("{{resolve:ssm:${AmiSsmParameter}}}")),
                "InstanceType": ref("InstanceType"),
                "IamInstanceProfile": {"Arn": {"Fn::GetAtt": [f"InstanceProfile{s}", "Arn"]}},
                "UserData": user_data(zone, member),
                "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled", "HttpPutResponseHopLimit": 1},
                "Monitoring": {"Enabled": False},
                "NetworkInterfaces": [
                    {
                        "DeviceIndex": 0,
                        # The hairpin heartbeats and the appliance's own EC2 calls leave from it.
                        "AssociatePublicIpAddress": True,
                        "Groups": [ref("SecurityGroup")],
                        "DeleteOnTermination": True,
                    }
                ],
                "InstanceMarketOptions": if_(
                    "Spot", {"MarketType": "spot", "SpotOptions": {"SpotInstanceType": "one-time"}}
                ),
                "TagSpecifications": [
                    {"ResourceType": "instance", "Tags": instance_tags},
                    # The role's ENI statement is scoped by this tag (--eni-tag).
                    {"ResourceType": "network-interface", "Tags": tags},
                ],
            }
        },
    }
    r[f"Group{s}"] = {
        "Type": "AWS::AutoScaling::AutoScalingGroup",
        "Condition": cond,
        # Instance refresh on a new AMI or user-data: the new instance comes up first (MaxSize 2)
        # and claims the routes and addresses at boot; the old one is then terminated.
        "UpdatePolicy": {
            "AutoScalingRollingUpdate": {
                "MinInstancesInService": 1,
                "MaxBatchSize": 1,
                "PauseTime": "PT3M",
            }
        },
        "Properties": {
            "MinSize": "1",
            "MaxSize": "2",
            "DesiredCapacity": "1",
            "VPCZoneIdentifier": [ref(f"PublicSubnet{Z}")],
            "LaunchTemplate": {
                "LaunchTemplateId": ref(f"LaunchTemplate{s}"),
                "Version": {"Fn::GetAtt": [f"LaunchTemplate{s}", "LatestVersionNumber"]},
            },
            "HealthCheckType": "EC2",
            "HealthCheckGracePeriod": 120,
            "Tags": [
                {"Key": "Name", "Value": nat_name(zone, member), "PropagateAtLaunch": True},
            ],
        },
    }
    for key, metric, stat, comparison, threshold, periods, points, missing in ALARMS:
        name = "".join(w.capitalize() for w in key.split("-"))
        r[f"Alarm{name}{s}"] = {
            "Type": "AWS::CloudWatch::Alarm",
            "Condition": cond,
            "Properties": {
                "AlarmName": sub(f"${{AWS::StackName}}-{zone}" + ("" if member == 1 else "-2") + f"-{key}"),
                "AlarmDescription": sub(f"NAT {zone}{member} of ${{AWS::StackName}}: {metric} ({key})"),
                "Namespace": ref("MetricsNamespace"),
                "MetricName": metric,
                "Dimensions": [{"Name": "NatName", "Value": nat_name(zone, member)}],
                "Statistic": stat,
                "Period": 60,
                "EvaluationPeriods": periods,
                "DatapointsToAlarm": points,
                "Threshold": ref(threshold) if isinstance(threshold, str) else threshold,
                "ComparisonOperator": comparison,
                "TreatMissingData": missing,
                "AlarmActions": if_("HasAlarmTopic", [ref("AlarmTopicArn")]),
                "OKActions": if_("HasAlarmTopic", [ref("AlarmTopicArn")]),
            },
        }
    return drop_empty_conditions(r)


def resources():
    r = {
        "SecurityGroup": {
            "Type": "AWS::EC2::SecurityGroup",
            "Properties": {
                "GroupDescription": "NAT appliance: the VPC in, nothing from the internet",
                "VpcId": ref("VpcId"),
                # TCP, UDP and ICMP: all the NAT forwards (masquerade translates nothing else);
                # the VPC's range only. Failover heartbeats (UDP 7471) and conntrack sync
                # (TCP 7472) between members are within it.
                "SecurityGroupIngress": [
                    {
                        "Description": f"{proto} from the VPC",
                        "IpProtocol": proto,
                        "FromPort": lo,
                        "ToPort": hi,
                        "CidrIp": ref("VpcCidr"),
                    }
                    for proto, lo, hi in PROTOCOLS
                ],
                "SecurityGroupEgress": [
                    {
                        "Description": f"{proto}: forwarded traffic and the appliance's AWS calls",
                        "IpProtocol": proto,
                        "FromPort": lo,
                        "ToPort": hi,
                        "CidrIp": "0.0.0.0/0",
                    }
                    for proto, lo, hi in PROTOCOLS
                ],
                "Tags": [{"Key": "Name", "Value": sub("${AWS::StackName}-nat")}],
            },
        }
    }
    for z in ZONES:
        for m in MEMBERS:
            r.update(slot_resources(z, m))
    return r


def outputs():
    o = {
        "SecurityGroupId": {"Description": "The NAT instances' security group.", "Value": ref("SecurityGroup")},
    }
    for z in ZONES:
        Z = z.upper()
        for m in MEMBERS:
            s = slot_id(z, m)
            group = ref(f"Group{s}")
            o[f"AutoScalingGroup{s}"] = {
                "Condition": slot_condition(z, m),
                "Description": f"Zone {z}, member {m}: its Auto Scaling group (of one).",
                "Value": group,
            }
            o[f"InstanceAndEniCommand{s}"] = {
                "Condition": slot_condition(z, m),
                "Description": f"Zone {z}, member {m}: prints its instance id, ENI id and public address "
                "(an Auto Scaling group's instance has no id before launch).",
                "Value": sub(
                    "aws ec2 describe-instances --region ${AWS::Region} --filters "
                    f"Name=tag:aws:autoscaling:groupName,Values=${{Group{s}}} Name=instance-state-name,Values=running "
                    "--query 'Reservations[].Instances[].[InstanceId,NetworkInterfaces[0].NetworkInterfaceId,PublicIpAddress]' --output text"
                ),
            }
            o[f"ConsoleLogCommand{s}"] = {
                "Condition": slot_condition(z, m),
                "Description": f"Zone {z}, member {m}: reads its serial console (look for nat-init: ready and aws ready).",
                "Value": sub(
                    "aws ec2 get-console-output --region ${AWS::Region} --latest --output text --instance-id "
                    "$(aws autoscaling describe-auto-scaling-groups --region ${AWS::Region} "
                    f"--auto-scaling-group-names ${{Group{s}}} --query 'AutoScalingGroups[0].Instances[0].InstanceId' --output text)"
                ),
            }
        o[f"EgressAddress{Z}"] = {
            "Condition": f"Eip{Z}",
            "Description": f"Zone {z}: the Elastic IP its private subnets leave from.",
            "Value": if_(f"GivenEip{Z}", ref(f"ElasticIp{Z}"), ref(f"ElasticIp{Z}1")),
        }
    return drop_empty_conditions(o)


def template():
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "nat-appliance: NAT instances (arm64, Graviton) in Auto Scaling groups of one per "
        "zone (or a pair), configured by user-data; the appliance points the private route tables at "
        "itself. Generated by deploy/cloudformation/generate.py.",
        "Parameters": parameters(),
        "Conditions": conditions(),
        "Resources": resources(),
        "Outputs": outputs(),
    }


HEADER = """\
# GENERATED by deploy/cloudformation/generate.py: edit that, then regenerate (see its doc).
#
# The NAT appliance on AWS: per zone, a NAT instance in an Auto Scaling group of one (two with
# Failover=pair), each with its launch template (user-data: a nat-init TOML document), its
# instance role (the least-privilege policy `nat-init --iam-policy` prints for that user-data,
# scoped by ids and tags), the CloudWatch alarms of a NAT Gateway on its metrics; one security
# group (the VPC in, nothing from the internet); optional Elastic IPs.
#
# Routes: the template creates no AWS::EC2::Route. An Auto Scaling group's instance has no id
# when the stack is written, and a route to a static ENI would tie the NAT to one instance; so
# the template passes the private route tables' ids in user-data (route_tables) and the
# appliance points their 0.0.0.0/0 at its own ENI once it is ready, and again after each
# replacement.
#
# IAM eventual consistency: a new role's policy takes a while to reach EC2; the appliance
# retries AccessDenied (2 s doubling to 5 minutes) and says so on its console, so the first
# deploy needs no second run.
#
# Failover: the group's route tables (and any Elastic IP you pass) must carry the tag
# nat:failover-group=<group> (the stack name, or <stack>-<zone> for a pair), which the roles'
# failover statements require; Elastic IPs this stack allocates carry it already. The security
# group opens nothing to the internet, so the heartbeats' hairpin path (UDP 7471 to the peer's
# public address) is closed: members hear each other on the direct path only.
"""


def main():
    class Dumper(yaml.SafeDumper):
        pass

    # Multi-line strings stay readable; no anchors (CloudFormation refuses YAML aliases).
    Dumper.ignore_aliases = lambda self, data: True
    sys.stdout.write(HEADER)
    sys.stdout.write(yaml.dump(template(), Dumper=Dumper, sort_keys=False, width=100, default_flow_style=False))


if __name__ == "__main__":
    main()
