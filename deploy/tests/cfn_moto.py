#!/usr/bin/env python3
"""The CloudFormation template deployed into moto (the local AWS stand-in, on loopback) and
read back: `cargo xtask test --only deploy` runs one subcommand per named check.

    cfn_moto.py deploy   ENDPOINT MOTO_LOG         stacks created, nothing moto ignored
    cfn_moto.py iam      ENDPOINT NAT_INIT         roles, profiles, policy == nat-init's
    cfn_moto.py userdata ENDPOINT NAT_INIT         user-data parses with nat-init's loader
    cfn_moto.py network  ENDPOINT                  security group, ASGs of one, EIPs, AMI
    cfn_moto.py alarms   ENDPOINT CATALOGUE_RS     alarms on the right metrics and dimensions
    cfn_moto.py outputs  ENDPOINT                  outputs per zone

moto is not AWS. What it lacks, and what this does instead (each said where it happens):
- its CloudFormation has no AWS::CloudWatch::Alarm: the alarms are created from the template's
  own alarm resources with the stack's parameters and conditions (a small resolver below), then
  read back from moto's CloudWatch;
- it stores an inline role policy as Python's repr of the document: read back with
  ast.literal_eval;
- it keeps no dynamic reference ({{resolve:ssm:...}}) resolved in a launch template: the
  reference is checked to name the SSM parameter that exists;
- it applies no UpdatePolicy and drops EIP tags: those are checked in the template.
Any other resource type moto's CloudFormation skips fails the deploy check.
"""

import ast
import base64
import json
import os
import re
import subprocess
import sys
import tempfile

import boto3
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATE = os.path.join(HERE, "..", "cloudformation", "nat.yaml")
REGION = "us-east-1"
AMI_PARAMETER = "/nat-appliance/nat-t4g/ami-id"
ENI_TAG = "nat:appliance"
# What moto's CloudFormation skips that this harness creates itself.
HANDLED_HERE = {"AWS::CloudWatch::Alarm"}

# The stacks deployed: every failover mode, Elastic IPs given, created and absent, 1 to 3
# zones, spot and on-demand.
STACKS = {
    "natpair": {"zones": "ab", "Failover": "pair", "CreateElasticIps": "true", "CapacityType": "spot"},
    "natzones": {"zones": "abc", "Failover": "across-zones", "given_eips": "a", "CapacityType": "on-demand"},
    "natplain": {"zones": "a", "Failover": "none", "PacketDropThreshold": "250", "alarm_topic": True},
}


class Fail(Exception):
    pass


def clients(endpoint):
    kw = dict(
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    return {n: boto3.client(n, **kw) for n in ["ec2", "cloudformation", "ssm", "iam", "autoscaling", "cloudwatch", "sns"]}


def template():
    with open(TEMPLATE) as f:
        return yaml.safe_load(f)


def check(cond, msg):
    if not cond:
        raise Fail(msg)


# --- a resolver for the intrinsics the template uses (alarms only: moto resolves the rest) ---


class Resolver:
    def __init__(self, tmpl, params, stack, physical):
        self.t = tmpl
        self.params = params
        self.stack = stack
        self.physical = physical
        self.conds = {}

    def cond(self, name):
        if name not in self.conds:
            self.conds[name] = self.cond_expr(self.t["Conditions"][name])
        return self.conds[name]

    def cond_expr(self, e):
        (k, v), = e.items()
        if k == "Condition":
            return self.cond(v)
        if k == "Fn::Equals":
            return self.value(v[0]) == self.value(v[1])
        if k == "Fn::Not":
            return not self.cond_expr(v[0])
        if k == "Fn::And":
            return all(self.cond_expr(x) for x in v)
        if k == "Fn::Or":
            return any(self.cond_expr(x) for x in v)
        raise Fail(f"resolver: unknown condition function {k}")

    def value(self, e):
        if isinstance(e, list):
            out = [self.value(x) for x in e]
            return [x for x in out if x is not NOVALUE]
        if not isinstance(e, dict):
            return e
        if len(e) != 1:
            return {k: self.value(v) for k, v in e.items()}
        (k, v), = e.items()
        if k == "Ref":
            if v == "AWS::NoValue":
                return NOVALUE
            if v == "AWS::StackName":
                return self.stack
            if v == "AWS::Region":
                return REGION
            if v in self.params:
                return self.params[v]
            return self.physical[v]
        if k == "Fn::Sub":
            return re.sub(r"\$\{([^}]+)\}", lambda m: str(self.value({"Ref": m.group(1)})), v)
        if k == "Fn::If":
            return self.value(v[1] if self.cond(v[0]) else v[2])
        if k == "Fn::Join":
            return v[0].join(str(x) for x in self.value(v[1]))
        if k.startswith("Fn::"):
            raise Fail(f"resolver: unknown function {k}")
        return {k: self.value(v)}


NOVALUE = object()


def parameters_of(c, name):
    st = c["cloudformation"].describe_stacks(StackName=name)["Stacks"][0]
    def value(v):
        # moto answers a CommaDelimitedList parameter as Python's repr of the list.
        if v.startswith("["):
            return ",".join(ast.literal_eval(v))
        return v

    return {p["ParameterKey"]: value(p["ParameterValue"]) for p in st.get("Parameters", [])}, st


def physical_ids(c, name):
    res = c["cloudformation"].list_stack_resources(StackName=name)["StackResourceSummaries"]
    return {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in res}


def active_slots(tmpl, resolver):
    """Logical slot ids (A1, A2, ...) whose resources the stack has."""
    out = []
    for logical, r in tmpl["Resources"].items():
        m = re.fullmatch(r"Group([A-C][12])", logical)
        if m and ("Condition" not in r or resolver.cond(r["Condition"])):
            out.append(m.group(1))
    return sorted(out)


# --- deploy ---


def deploy(endpoint, moto_log):
    c = clients(endpoint)
    ec2 = c["ec2"]
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnets = {
        z: ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.20.{i}.0/24", AvailabilityZone=REGION + z)["Subnet"]["SubnetId"]
        for i, z in enumerate("abc")
    }
    ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    c["ssm"].put_parameter(Name=AMI_PARAMETER, Value=ami, Type="String", Overwrite=True)
    topic = c["sns"].create_topic(Name="nat-alarms")["TopicArn"]
    body = open(TEMPLATE).read()
    tmpl = yaml.safe_load(body)
    for name, spec in STACKS.items():
        params = {"VpcId": vpc, "VpcCidr": "10.20.0.0/16"}
        for z in spec["zones"]:
            Z = z.upper()
            params[f"PublicSubnet{Z}"] = subnets[z]
            # Zone a gets two private tables, the others one.
            tables = [ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"] for _ in range(2 if z == "a" else 1)]
            params[f"PrivateRouteTables{Z}"] = ",".join(tables)
            if z in spec.get("given_eips", ""):
                params[f"ElasticIp{Z}"] = ec2.allocate_address(Domain="vpc")["AllocationId"]
        for k in ["Failover", "CreateElasticIps", "CapacityType", "PacketDropThreshold"]:
            if k in spec:
                params[k] = spec[k]
        if spec.get("alarm_topic"):
            params["AlarmTopicArn"] = topic
        c["cloudformation"].create_stack(
            StackName=name,
            TemplateBody=body,
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()],
            Capabilities=["CAPABILITY_IAM"],
        )
        st = c["cloudformation"].describe_stacks(StackName=name)["Stacks"][0]
        check(st["StackStatus"] == "CREATE_COMPLETE", f"{name}: {st['StackStatus']} {st.get('StackStatusReason')}")
        # The alarms moto's CloudFormation skips, from the template's own definitions.
        params_all, _ = parameters_of(c, name)
        resolver = Resolver(tmpl, params_all, name, physical_ids(c, name))
        for logical, r in tmpl["Resources"].items():
            if r["Type"] != "AWS::CloudWatch::Alarm":
                continue
            if "Condition" in r and not resolver.cond(r["Condition"]):
                continue
            p = resolver.value(r["Properties"])
            p = {k: v for k, v in p.items() if v is not NOVALUE}
            p["Threshold"] = float(p["Threshold"])
            c["cloudwatch"].put_metric_alarm(**p)
        print(f"{name}: CREATE_COMPLETE, {len(physical_ids(c, name))} resources")
    with open(moto_log) as f:
        skipped = set(re.findall(r"No Moto CloudFormation support for (\S+)", f.read()))
    unexpected = skipped - HANDLED_HERE
    check(not unexpected, f"moto's CloudFormation ignored resource types: {sorted(unexpected)}")
    used = {r["Type"] for r in tmpl["Resources"].values()}
    print(f"resource types: {sorted(used)}; created here instead of by moto: {sorted(skipped)}")


# --- read back ---


def each_slot(c):
    """(stack, params, slot, physical ids) for every slot of every stack."""
    tmpl = template()
    for name in STACKS:
        params, _ = parameters_of(c, name)
        phys = physical_ids(c, name)
        r = Resolver(tmpl, params, name, phys)
        for slot in active_slots(tmpl, r):
            yield name, params, slot, phys, r


def launch_data(c, lt_id):
    v = c["ec2"].describe_launch_template_versions(LaunchTemplateId=lt_id)["LaunchTemplateVersions"]
    return max(v, key=lambda x: x["VersionNumber"])["LaunchTemplateData"]


def user_data_text(c, lt_id):
    return base64.b64decode(launch_data(c, lt_id)["UserData"]).decode()


def nat_init_policy(nat_init, user_data, stack):
    """The policy nat-init prints for this user-data, parsed; Fail with its error otherwise."""
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(user_data)
        path = f.name
    try:
        p = subprocess.run(
            [nat_init, "--iam-policy", "--user-data", path, "--eni-tag", f"{ENI_TAG}={stack}"],
            capture_output=True,
            text=True,
        )
    finally:
        os.unlink(path)
    if p.returncode != 0:
        raise Fail(f"nat-init's loader refused the user-data:\n{p.stderr.strip()}\n--- user-data ---\n{user_data}")
    return json.loads(p.stdout)


def normalise(policy):
    """Statements by Sid, with actions and resources as sorted lists: order and formatting aside."""
    out = {}
    for s in policy["Statement"]:
        sid = s.get("Sid", "")
        as_list = lambda x: sorted([x] if isinstance(x, str) else x)
        out[sid] = {
            "Effect": s["Effect"],
            "Action": as_list(s["Action"]),
            "Resource": as_list(s["Resource"]),
            "Condition": s.get("Condition", {}),
        }
    return out


def role_policy_doc(c, role):
    names = c["iam"].list_role_policies(RoleName=role)["PolicyNames"]
    check(names == ["nat-appliance"], f"role {role}: inline policies {names}, expected nat-appliance only")
    doc = c["iam"].get_role_policy(RoleName=role, PolicyName="nat-appliance")["PolicyDocument"]
    if isinstance(doc, str):
        # moto stores the CloudFormation-given document as Python's repr of it.
        try:
            doc = json.loads(doc)
        except json.JSONDecodeError:
            doc = ast.literal_eval(doc)
    return doc


def iam(endpoint, nat_init):
    c = clients(endpoint)
    n = 0
    for stack, params, slot, phys, _ in each_slot(c):
        role = phys[f"Role{slot}"]
        r = c["iam"].get_role(RoleName=role)["Role"]
        trust = r["AssumeRolePolicyDocument"]
        if isinstance(trust, str):
            trust = json.loads(trust)
        principals = [s["Principal"]["Service"] for s in trust["Statement"]]
        check(principals == ["ec2.amazonaws.com"], f"{stack}/{slot}: role trusts {principals}")
        check(not c["iam"].list_attached_role_policies(RoleName=role)["AttachedPolicies"], f"{stack}/{slot}: managed policies attached")
        profile = phys[f"InstanceProfile{slot}"]
        roles = [x["RoleName"] for x in c["iam"].get_instance_profile(InstanceProfileName=profile)["InstanceProfile"]["Roles"]]
        check(roles == [role], f"{stack}/{slot}: instance profile {profile} has roles {roles}")
        lt = launch_data(c, phys[f"LaunchTemplate{slot}"])
        check(lt["IamInstanceProfile"]["Arn"].endswith(f"instance-profile/{profile}"), f"{stack}/{slot}: launch template's profile {lt['IamInstanceProfile']}")
        have = normalise(role_policy_doc(c, role))
        want = normalise(nat_init_policy(nat_init, user_data_text(c, phys[f"LaunchTemplate{slot}"]), stack))
        if have != want:
            lines = [f"{stack}/{slot}: the role's policy is not what nat-init --iam-policy prints for its user-data"]
            for sid in sorted(set(have) | set(want)):
                if have.get(sid) != want.get(sid):
                    lines.append(f"  {sid}:\n    template: {json.dumps(have.get(sid))}\n    nat-init: {json.dumps(want.get(sid))}")
            raise Fail("\n".join(lines))
        n += 1
    print(f"{n} roles: trust, instance profile and policy statement by statement as nat-init prints them")


def userdata(endpoint, nat_init):
    c = clients(endpoint)
    n = 0
    for stack, params, slot, phys, r in each_slot(c):
        text = user_data_text(c, phys[f"LaunchTemplate{slot}"])
        nat_init_policy(nat_init, text, stack)  # the loader, as at boot
        # What the stack asked for is what the document says.
        zone, member = slot[0], int(slot[1])
        lines = dict(l.split(" = ", 1) for l in text.splitlines() if " = " in l and not l.startswith("#"))
        check(lines.get("disable_source_dest_check") == "true", f"{stack}/{slot}: source/dest check not turned off")
        tables = params[f"PrivateRouteTables{zone}"].split(",")
        if member == 1:
            check(json.loads(lines["route_tables"]) == tables, f"{stack}/{slot}: route_tables {lines.get('route_tables')}, stack has {tables}")
        else:
            check("route_tables" not in lines, f"{stack}/{slot}: a pair's member 2 owns no route table")
        mode = params["Failover"]
        group = {"none": None, "across-zones": stack, "pair": f"{stack}-{zone.lower()}"}[mode]
        check(json.loads(lines["failover_group"]) == group if group else "failover_group" not in lines, f"{stack}/{slot}: failover_group {lines.get('failover_group')}, expected {group}")
        check(lines.get("metrics") == "true" and lines.get("metrics_dimensions") == '["NatName"]', f"{stack}/{slot}: metrics keys {lines}")
        want_name = f"{stack}-{zone.lower()}" + ("" if member == 1 else "-2")
        check(json.loads(lines["nat_name"]) == want_name, f"{stack}/{slot}: nat_name {lines['nat_name']}, expected {want_name}")
        n += 1
    print(f"{n} launch templates' user-data parse with nat-init's loader and say what the stack asked")


def network(endpoint):
    c = clients(endpoint)
    tmpl = template()
    n = 0
    for stack in STACKS:
        params, st = parameters_of(c, stack)
        phys = physical_ids(c, stack)
        sg = c["ec2"].describe_security_groups(GroupIds=[phys["SecurityGroup"]])["SecurityGroups"][0]
        check(sg["VpcId"] == params["VpcId"], f"{stack}: security group in {sg['VpcId']}")
        for perm in sg["IpPermissions"]:
            cidrs = [x["CidrIp"] for x in perm["IpRanges"]]
            check(cidrs == [params["VpcCidr"]], f"{stack}: ingress {perm['IpProtocol']} from {cidrs}, expected the VPC's {params['VpcCidr']} only")
            check(not perm["UserIdGroupPairs"] and not perm["Ipv6Ranges"] and not perm["PrefixListIds"], f"{stack}: ingress from other than the VPC: {perm}")
        protos = sorted(p["IpProtocol"] for p in sg["IpPermissions"])
        check(protos == ["icmp", "tcp", "udp"], f"{stack}: ingress protocols {protos}")
        r = Resolver(tmpl, params, stack, phys)
        slots = active_slots(tmpl, r)
        zones = sorted({s[0] for s in slots})
        want_zones = sorted(z for z in "ABC" if params.get(f"PublicSubnet{z}"))
        check(zones == want_zones, f"{stack}: NATs in zones {zones}, expected {want_zones}")
        per_zone = 2 if params["Failover"] == "pair" else 1
        check(len(slots) == per_zone * len(zones), f"{stack}: {len(slots)} NATs for {len(zones)} zones, {per_zone} each")
        for slot in slots:
            g = c["autoscaling"].describe_auto_scaling_groups(AutoScalingGroupNames=[phys[f"Group{slot}"]])["AutoScalingGroups"][0]
            check((g["MinSize"], g["DesiredCapacity"], g["MaxSize"]) == (1, 1, 2), f"{stack}/{slot}: min/desired/max {g['MinSize']}/{g['DesiredCapacity']}/{g['MaxSize']}")
            check(g["VPCZoneIdentifier"] == params[f"PublicSubnet{slot[0]}"], f"{stack}/{slot}: subnet {g['VPCZoneIdentifier']}")
            check(g["LaunchTemplate"]["LaunchTemplateId"] == phys[f"LaunchTemplate{slot}"], f"{stack}/{slot}: launch template {g['LaunchTemplate']}")
            check(len(g["Instances"]) == 1, f"{stack}/{slot}: {len(g['Instances'])} instances")
            # moto applies no UpdatePolicy: the template's, which replaces before it terminates.
            up = tmpl["Resources"][f"Group{slot}"]["UpdatePolicy"]["AutoScalingRollingUpdate"]
            check(up["MinInstancesInService"] == 1 and up["MaxBatchSize"] == 1, f"{slot}: rolling update {up}")
            lt = launch_data(c, phys[f"LaunchTemplate{slot}"])
            check(lt["InstanceType"] == params["InstanceType"], f"{stack}/{slot}: instance type {lt['InstanceType']}")
            check(lt["MetadataOptions"]["HttpTokens"] == "required", f"{stack}/{slot}: IMDSv1 allowed")
            ni = lt["NetworkInterfaces"][0]
            check(ni["AssociatePublicIpAddress"] and ni["Groups"] == [phys["SecurityGroup"]], f"{stack}/{slot}: interface {ni}")
            spot = lt.get("InstanceMarketOptions", {}).get("MarketType") == "spot"
            check(spot == (params["CapacityType"] == "spot"), f"{stack}/{slot}: spot={spot} for {params['CapacityType']}")
            # moto keeps the dynamic reference as written: it must name the parameter that exists.
            m = re.fullmatch(r"\{\{resolve:ssm:(.+)\}\}", lt["ImageId"])
            check(m and c["ssm"].get_parameter(Name=m.group(1))["Parameter"]["Value"].startswith("ami-"), f"{stack}/{slot}: image {lt['ImageId']}")
            tags = {t["ResourceType"]: {x["Key"]: x["Value"] for x in t["Tags"]} for t in lt["TagSpecifications"]}
            check(tags["network-interface"].get(ENI_TAG) == stack, f"{stack}/{slot}: ENI tag {tags}")
            group = tags["instance"].get("nat:failover-group")
            check((group is not None) == (params["Failover"] != "none"), f"{stack}/{slot}: instance failover tag {group}")
            n += 1
        # Elastic IPs: given ones kept, created ones only when asked and none given.
        for z in zones:
            created = f"ElasticIp{z}1" in phys
            want = params.get("CreateElasticIps") == "true" and not params.get(f"ElasticIp{z}")
            check(created == want, f"{stack}/{z}: Elastic IP created={created}, expected {want}")
            if created:
                alloc = [a for a in c["ec2"].describe_addresses()["Addresses"] if a["PublicIp"] == phys[f"ElasticIp{z}1"]]
                check(len(alloc) == 1 and alloc[0]["Domain"] == "vpc", f"{stack}/{z}: Elastic IP {alloc}")
        # moto drops EIP tags; the template must tag them for failover takeovers.
        for z in "ABC":
            tags = {t["Key"] for t in tmpl["Resources"][f"ElasticIp{z}1"]["Properties"]["Tags"]}
            check("nat:failover-group" in tags, f"ElasticIp{z}1 lacks the failover tag")
        # No route resource: the appliance claims the tables itself.
        check(not any(r["Type"] == "AWS::EC2::Route" for r in tmpl["Resources"].values()), "template creates routes")
    print(f"{n} NATs: security group VPC-only, ASGs of one per zone, launch templates as asked")


def alarms(endpoint, catalogue_rs):
    c = clients(endpoint)
    with open(catalogue_rs) as f:
        metrics = set(re.findall(r'^\s*"([A-Z][A-Za-z]+)",\s*$', f.read(), re.M))
    check(len(metrics) >= 20, f"read only {len(metrics)} metric names from {catalogue_rs}")
    got = c["cloudwatch"].describe_alarms()["MetricAlarms"]
    by_name = {a["AlarmName"]: a for a in got}
    kinds = None
    n = 0
    for stack, params, slot, phys, r in each_slot(c):
        name = f"{stack}-{slot[0].lower()}" + ("" if slot[1] == "1" else "-2")
        mine = {k: a for k, a in by_name.items() if k.startswith(name + "-") and not k[len(name) + 1 :].startswith("2-")}
        keys = sorted(k[len(name) + 1 :] for k in mine)
        if kinds is None:
            kinds = keys
        check(keys == kinds and len(keys) >= 8, f"{stack}/{slot}: alarms {keys}")
        for a in mine.values():
            check(a["MetricName"] in metrics, f"{a['AlarmName']}: {a['MetricName']} is not a metric nat-init publishes")
            check(a["Namespace"] == params["MetricsNamespace"], f"{a['AlarmName']}: namespace {a['Namespace']}")
            check(a["Dimensions"] == [{"Name": "NatName", "Value": name}], f"{a['AlarmName']}: dimensions {a['Dimensions']}, expected NatName={name} (the user-data's nat_name)")
            check(a["Period"] == 60, f"{a['AlarmName']}: period {a['Period']} (metrics_period is 60)")
            topic = params.get("AlarmTopicArn", "")
            check(a.get("AlarmActions", []) == ([topic] if topic else []), f"{a['AlarmName']}: actions {a.get('AlarmActions')}")
            n += 1
        want = {
            "port-allocation": "ErrorPortAllocation",
            "packet-drops": "PacketsDropCount",
            "no-data": "ConntrackMax",
            "pps-allowance": "PpsAllowanceExceeded",
        }
        for key, metric in want.items():
            check(mine[f"{name}-{key}"]["MetricName"] == metric, f"{name}-{key}: {mine[f'{name}-{key}']['MetricName']}")
        check(mine[f"{name}-no-data"]["TreatMissingData"] == "breaching", f"{name}-no-data: missing data not breaching")
        check(mine[f"{name}-packet-drops"]["Threshold"] == float(params["PacketDropThreshold"]), f"{name}-packet-drops: threshold")
    print(f"{n} alarms on nat-init's metrics, NatName per NAT, namespace and actions as asked")


def outputs(endpoint):
    c = clients(endpoint)
    for stack in STACKS:
        params, st = parameters_of(c, stack)
        out = {o["OutputKey"]: o["OutputValue"] for o in st.get("Outputs", [])}
        phys = physical_ids(c, stack)
        for slot in [k[len("Group") :] for k in phys if re.fullmatch(r"Group[A-C][12]", k)]:
            check(out.get(f"AutoScalingGroup{slot}") == phys[f"Group{slot}"], f"{stack}/{slot}: outputs {sorted(out)}")
            check(f"get-console-output" in out.get(f"ConsoleLogCommand{slot}", ""), f"{stack}/{slot}: no console command")
            check(phys[f"Group{slot}"] in out.get(f"InstanceAndEniCommand{slot}", ""), f"{stack}/{slot}: no instance/ENI command")
        for z in "ABC":
            eip = params.get(f"ElasticIp{z}") or (phys.get(f"ElasticIp{z}1"))
            if eip:
                check(out.get(f"EgressAddress{z}") == eip, f"{stack}/{z}: egress output {out.get(f'EgressAddress{z}')}, expected {eip}")
            else:
                check(f"EgressAddress{z}" not in out, f"{stack}/{z}: egress output without an Elastic IP")
    print("outputs: groups, instance/ENI and console commands, egress addresses")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    try:
        {"deploy": deploy, "iam": iam, "userdata": userdata, "network": network, "alarms": alarms, "outputs": outputs}[cmd](*args)
    except Fail as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
