#!/usr/bin/env python3
"""Static checks of the deploy templates: `cargo xtask test --only deploy` runs one subcommand
per named check.

    static.py generated   nat.yaml is what generate.py writes
    static.py terraform   the module parses (HCL2) and every reference is declared
    static.py parity      CloudFormation and Terraform: inputs, resources per NAT, IAM policy,
                          alarms, user-data keys

Terraform cannot run here (no binary, no providers), so the module is never evaluated: the
parity of its IAM policy is checked per statement Sid on what the expressions can produce (the
actions, ARN patterns and condition keys they name, over all branches), against the same in
the CloudFormation template; the CloudFormation side is then checked exactly against nat-init
in moto (cfn_moto.py iam).
"""

import glob
import io
import os
import re
import subprocess
import sys

import hcl2
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
DEPLOY = os.path.join(HERE, "..")
CFN = os.path.join(DEPLOY, "cloudformation", "nat.yaml")
TF = os.path.join(DEPLOY, "terraform")


class Fail(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


def cfn():
    with open(CFN) as f:
        return yaml.safe_load(f)


def tf():
    out = {}
    for path in sorted(glob.glob(os.path.join(TF, "*.tf"))):
        with open(path) as f:
            try:
                doc = hcl2.load(f)
            except Exception as e:  # the parser's own error types vary by release
                raise Fail(f"{path}: does not parse as HCL2: {e}")
        for k, v in doc.items():
            out.setdefault(k, []).extend(v)
    return out


def generated():
    p = subprocess.run([sys.executable, os.path.join(DEPLOY, "cloudformation", "generate.py")], capture_output=True, text=True)
    check(p.returncode == 0, f"generate.py failed:\n{p.stderr}")
    with open(CFN) as f:
        committed = f.read()
    check(
        committed == p.stdout,
        "deploy/cloudformation/nat.yaml is not generate.py's output: edit generate.py and run "
        "python3 deploy/cloudformation/generate.py > deploy/cloudformation/nat.yaml",
    )
    print("nat.yaml is generate.py's output")


def variables(t):
    return {name: spec for v in t.get("variable", []) for name, spec in v.items()}


def locals_(t):
    # The parser wraps some values in a one-element list.
    unwrap = lambda v: v[0] if isinstance(v, list) and len(v) == 1 else v
    return {k: unwrap(v) for block in t.get("locals", []) for k, v in block.items()}


def resources(t):
    return {(kind, name): spec for r in t.get("resource", []) for kind, named in r.items() for name, spec in named.items()}


def terraform():
    t = tf()
    vars_ = variables(t)
    check(vars_, "no variables")
    for name, spec in vars_.items():
        check(spec.get("description"), f"variable {name}: no description")
        check(spec.get("type"), f"variable {name}: no type")
    text = "".join(open(p).read() for p in glob.glob(os.path.join(TF, "*.tf")))
    used = set(re.findall(r"\bvar\.([a-z_]+)", text))
    check(used <= set(vars_), f"undeclared variables: {sorted(used - set(vars_))}")
    check(set(vars_) <= used, f"unused variables: {sorted(set(vars_) - used)}")
    locs = locals_(t)
    used = set(re.findall(r"\blocal\.([a-z_]+)", text))
    check(used <= set(locs), f"undeclared locals: {sorted(used - set(locs))}")
    res = resources(t)
    data = {(kind, name) for d in t.get("data", []) for kind, named in d.items() for name in named}
    for prefix, kind, name in re.findall(r"\b(data\.)?(aws_[a-z_0-9]+)\.([a-z_]+)\[", text):
        known = data if prefix else res
        check((kind, name) in known, f"reference to undeclared {prefix}{kind}.{name}")
    # The user-data template names only what the module passes it.
    with open(os.path.join(TF, "user_data.toml.tftpl")) as f:
        tpl = f.read()
    passed = set(re.findall(r"^\s+([a-z_]+)\s+=", text.split("templatefile(")[1].split("}))")[0], re.M))
    named = set(re.findall(r"\$\{(?:jsonencode\()?([a-z_]+)", tpl)) | set(re.findall(r"%\{ if ([a-z_]+)", tpl))
    check(named <= passed, f"user_data.toml.tftpl uses {sorted(named - passed)}, not passed by templatefile")
    check(not any(k == "aws_route" for k, _ in res), "the module creates routes")
    print(f"{len(vars_)} variables, {len(res)} resources, {len(locs)} locals; references declared")


def one(v):
    """This HCL2 parser gives an attribute's value as a one-element list."""
    return v[0] if isinstance(v, list) and len(v) == 1 else v


def snake(name):
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


# CloudFormation resource types and the Terraform ones that do the same.
KINDS = {
    "AWS::IAM::Role": ["aws_iam_role", "aws_iam_role_policy"],  # the inline policy is its own resource there
    "AWS::IAM::InstanceProfile": ["aws_iam_instance_profile"],
    "AWS::EC2::LaunchTemplate": ["aws_launch_template"],
    "AWS::AutoScaling::AutoScalingGroup": ["aws_autoscaling_group"],
    "AWS::CloudWatch::Alarm": ["aws_cloudwatch_metric_alarm"],
    "AWS::EC2::EIP": ["aws_eip"],
    "AWS::EC2::SecurityGroup": ["aws_security_group"],
}


def tokens(text):
    """What a policy statement can contain, whatever its branches: actions, ARN patterns
    (ids and interpolations cut off) and condition keys."""
    actions = set(re.findall(r"\b(?:ec2|cloudwatch):[A-Z][A-Za-z]+", text))
    arns = set(re.findall(r"arn:aws:ec2:\*:\*:[a-z-]+/", text))
    keys = set(re.findall(r"(?:ec2:ResourceTag/[a-z:-]+|cloudwatch:namespace)", text))
    conds = set(re.findall(r"\b(StringEquals|ArnEquals)\b", text))
    return actions, arns, keys, conds


def split_by_sid(text):
    parts = re.split(r"""[\\'"]*Sid[\\'"]*\s*[:=]\s*[\\'"]+([A-Za-z]+)""", text)
    out = {}
    for i in range(1, len(parts), 2):
        a, r, k, c = tokens(parts[i + 1].split("Sid")[0])
        prev = out.get(parts[i], (set(), set(), set(), set()))
        out[parts[i]] = (prev[0] | a, prev[1] | r, prev[2] | k, prev[3] | c)
    return out


def parity():
    c, t = cfn(), tf()
    problems = []

    # Inputs: every parameter is a variable (snake_case), the per-zone ones fold into `zones`.
    vars_ = variables(t)
    zone_fields = {"PublicSubnet": "public_subnet_id", "PrivateRouteTables": "private_route_table_ids", "ElasticIp": "elastic_ip_allocation_id"}
    zones_type = str(vars_["zones"]["type"])
    expect = {"name"}  # the stack name
    for p, spec in c["Parameters"].items():
        m = re.fullmatch(r"(PublicSubnet|PrivateRouteTables|ElasticIp)([A-C])", p)
        if m:
            if zone_fields[m.group(1)] not in zones_type:
                problems.append(f"input {p}: no {zone_fields[m.group(1)]} in the zones variable")
            expect.add("zones")
            continue
        v = snake(p).replace("packet_drop_threshold", "packet_drop_threshold")
        expect.add(v)
        if v not in vars_:
            problems.append(f"input {p}: no variable {v}")
            continue
        d_cfn, d_tf = spec.get("Default"), one(vars_[v].get("default"))
        if d_cfn is not None and str(d_cfn).lower() != str(d_tf).lower():
            problems.append(f"input {p}: default {d_cfn!r} here, {d_tf!r} in Terraform")
        for allowed in spec.get("AllowedValues", []):
            if allowed not in ("true", "false") and f"'{allowed}'" not in str(vars_[v].get("validation")) and f'"{allowed}"' not in str(vars_[v].get("validation")):
                problems.append(f"input {p}: value {allowed} not in Terraform's validation")
    if set(vars_) != expect:
        problems.append(f"variables without a CloudFormation parameter: {sorted(set(vars_) - expect)}; parameters without a variable: {sorted(expect - set(vars_))}")

    # Resources per NAT: zone a's member 1 in CloudFormation, a for_each over slots in Terraform.
    res = resources(t)
    cfn_kinds = {r["Type"] for k, r in c["Resources"].items() if k.endswith("A1")}
    tf_per_slot = {k for (k, _), spec in res.items() if "local.slots" in str(spec.get("for_each")) or "local.slot_alarms" in str(spec.get("for_each"))}
    want = {x for kind in cfn_kinds - {"AWS::EC2::EIP"} for x in KINDS[kind]}
    if tf_per_slot != want:
        problems.append(f"resources per NAT: Terraform has {sorted(tf_per_slot)}, CloudFormation's map to {sorted(want)}")
    shared_cfn = {r["Type"] for k, r in c["Resources"].items() if not re.search(r"[A-C][12]$", k)}
    tf_kinds = {k for k, _ in res}
    for kind in shared_cfn | {"AWS::EC2::EIP"}:
        if not set(KINDS[kind]) <= tf_kinds:
            problems.append(f"{kind}: no {KINDS[kind]} in Terraform")
    if any(k == "aws_route" for k, _ in res) or any(r["Type"] == "AWS::EC2::Route" for r in c["Resources"].values()):
        problems.append("a template creates routes (the appliance claims the tables)")

    # ASG sizes and refresh.
    g_cfn = c["Resources"]["GroupA1"]["Properties"]
    g_tf = res[("aws_autoscaling_group", "nat")]
    sizes_cfn = (int(g_cfn["MinSize"]), int(g_cfn["DesiredCapacity"]), int(g_cfn["MaxSize"]))
    sizes_tf = (one(g_tf["min_size"]), one(g_tf["desired_capacity"]), one(g_tf["max_size"]))
    if sizes_cfn != sizes_tf:
        problems.append(f"Auto Scaling sizes: {sizes_cfn} vs {sizes_tf}")
    if "instance_refresh" not in g_tf:
        problems.append("Terraform's Auto Scaling group has no instance_refresh")

    # IAM: per Sid, what each can contain.
    role = c["Resources"]["RoleA1"]["Properties"]["Policies"][0]["PolicyDocument"]
    role2 = c["Resources"]["RoleA2"]["Properties"]["Policies"][0]["PolicyDocument"]
    cfn_sids = split_by_sid(repr(role) + repr(role2))
    tf_sids = split_by_sid(str(locals_(t)["policies"]))
    if set(cfn_sids) != set(tf_sids):
        problems.append(f"policy statements: CloudFormation {sorted(cfn_sids)}, Terraform {sorted(tf_sids)}")
    for sid in sorted(set(cfn_sids) & set(tf_sids)):
        for what, a, b in zip(["actions", "ARNs", "condition keys", "condition operators"], cfn_sids[sid], tf_sids[sid]):
            if a != b:
                problems.append(f"policy {sid} {what}: CloudFormation {sorted(a)}, Terraform {sorted(b)}")

    # Alarms.
    tf_alarms = locals_(t)["alarms"]
    cfn_alarms = {}
    for k, r in c["Resources"].items():
        if r["Type"] == "AWS::CloudWatch::Alarm" and k.endswith("A1"):
            p = r["Properties"]
            key = p["AlarmName"]["Fn::Sub"].split("-a-", 1)[1]
            th = p["Threshold"]
            cfn_alarms[key] = {
                "metric": p["MetricName"],
                "statistic": p["Statistic"],
                "comparison": p["ComparisonOperator"],
                "threshold": f"var.{snake(th['Ref'])}" if isinstance(th, dict) else th,
                "periods": p["EvaluationPeriods"],
                "datapoints": p["DatapointsToAlarm"],
                "missing": p["TreatMissingData"],
            }
    tf_norm = {k: {f: (re.sub(r"^\$\{(.*)\}$", r"\1", v) if isinstance(v, str) else v) for f, v in spec.items()} for k, spec in tf_alarms.items()}
    if cfn_alarms != tf_norm:
        for k in sorted(set(cfn_alarms) | set(tf_norm)):
            if cfn_alarms.get(k) != tf_norm.get(k):
                problems.append(f"alarm {k}: CloudFormation {cfn_alarms.get(k)}, Terraform {tf_norm.get(k)}")
    a_tf = res[("aws_cloudwatch_metric_alarm", "nat")]
    if "NatName" not in str(a_tf.get("dimensions")) or "var.metrics_namespace" not in str(a_tf.get("namespace")):
        problems.append(f"Terraform alarms: dimensions {a_tf.get('dimensions')}, namespace {a_tf.get('namespace')}")

    # User-data keys.
    cfn_ud = repr(c["Resources"]["LaunchTemplateA1"]["Properties"]["LaunchTemplateData"]["UserData"])
    cfn_ud += repr(c["Resources"]["LaunchTemplateA2"]["Properties"]["LaunchTemplateData"]["UserData"])
    cfn_keys = set(re.findall(r"""['"\\n]([a-z_]+) = """, cfn_ud))
    with open(os.path.join(TF, "user_data.toml.tftpl")) as f:
        tf_keys = set(re.findall(r"^([a-z_]+) = ", f.read(), re.M))
    if cfn_keys != tf_keys:
        problems.append(f"user-data keys: CloudFormation {sorted(cfn_keys)}, Terraform {sorted(tf_keys)}")
    for fixed in ['metrics_dimensions = ["NatName"]', "metrics = true", "metrics_period = 60", "disable_source_dest_check = true"]:
        with open(os.path.join(TF, "user_data.toml.tftpl")) as f:
            if fixed not in f.read() or fixed.replace('"', '\\"') not in cfn_ud and fixed not in cfn_ud:
                problems.append(f"user-data line {fixed!r} not in both")

    check(not problems, "CloudFormation and Terraform differ:\n  " + "\n  ".join(problems))
    print(f"inputs ({len(vars_)}), resources per NAT ({len(tf_per_slot)}), {len(cfn_sids)} policy statements, {len(cfn_alarms)} alarms, {len(cfn_keys)} user-data keys alike")


def main():
    try:
        {"generated": generated, "terraform": terraform, "parity": parity}[sys.argv[1]]()
    except Fail as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
