"""The emulated VPC's control plane: moto (a local stand-in for AWS) served over HTTPS, plus a
reconciler that reports the data plane moto's EC2 state implies.

Started by xtask/src/vpc/aws.rs with the moto venv's python inside the internet namespace. It
talks to xtask on its standard streams, one JSON object per line:
- stdout: {"event": "seeded", ...ids} once, then {"event": "state", "gen": N, ...} whenever
  the data plane changes, and {"reply": id, "ok": bool, ...} for each command;
- stdin: commands {"id": N, "cmd": ...}: "call" (a boto3 call as the test's admin user, or
  "as" given credentials),
  "credentials" (the instance role's session credentials, with a chosen lifetime), "requests"
  (what the API was asked, by whom), "sync" (report the state now).
Diagnostics go to stderr. Nothing here reaches beyond the namespaces the test created.
"""

import datetime
import gzip
import io
import json
import os
import sys
import threading
import urllib.parse

SEED = json.loads(sys.argv[1])
ACCOUNT = "123456789012"
REGION = "us-east-1"

import boto3  # noqa: E402
import botocore.config  # noqa: E402
from moto import settings  # noqa: E402
from moto.ec2.exceptions import EC2ClientError, InvalidParameterValueError  # noqa: E402
from moto.ec2.models import ec2_backends  # noqa: E402
from moto.ec2.models import elastic_ip_addresses as eip_models  # noqa: E402
from moto.ec2.models import elastic_network_interfaces as eni_models  # noqa: E402
from moto.iam import access_control  # noqa: E402
from moto.moto_server.werkzeug_app import (  # noqa: E402
    DomainDispatcherApplication,
    create_backend_app,
)
from moto.sts.models import sts_backends  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

OUT = threading.Lock()
LOCAL = threading.local()
REQUESTS = []
REQ_LOCK = threading.Lock()
# Requests are checked (signature, session token, role policy) once seeding is over.
settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")
AUTH_ON = False
MAX_SKEW = 300


def emit(obj):
    with OUT:
        sys.stdout.write(json.dumps(obj, sort_keys=True, default=str) + "\n")
        sys.stdout.flush()


def log(msg):
    sys.stderr.write(f"aws-double: {msg}\n")
    sys.stderr.flush()


# moto picks secondary and unspecified private addresses at random in the subnet; the
# namespaces own some (router, NAT, hosts, DHCP range), so only a free pool is handed out.
_orig_random_private_ip = eni_models.random_private_ip


def _pool_private_ip(cidr=None, ipv6=False):
    if ipv6 or not cidr:
        return _orig_random_private_ip(cidr, ipv6) if cidr else _orig_random_private_ip()
    base = cidr.split("/")[0].rsplit(".", 1)[0]
    used = set()
    for eni in ec2().enis.values():
        used.update(p.get("PrivateIpAddress") for p in eni.private_ip_addresses)
    for host in range(SEED["pool_first"], SEED["pool_last"] + 1):
        ip = f"{base}.{host}"
        if ip not in used:
            return ip
    raise RuntimeError(f"no free private address left in {cidr}'s pool")


eni_models.random_private_ip = _pool_private_ip

# moto ignores AssociateAddress's PrivateIpAddress (it maps an EIP to the ENI's primary
# address); EC2 maps it to the named one, which the 1:1 mapping needs for several EIPs.
PRIVATE_OF_ASSOCIATION = {}
_orig_associate = eip_models.ElasticAddressBackend.associate_address


def _associate(self, *args, **kwargs):
    eip = _orig_associate(self, *args, **kwargs)
    params = getattr(LOCAL, "params", {})
    private = params.get("PrivateIpAddress")
    if private and eip.association_id:
        PRIVATE_OF_ASSOCIATION[eip.association_id] = private
    fix_public_ips()
    return eip


eip_models.ElasticAddressBackend.associate_address = _associate

# ... and so does DescribeAddresses' privateIpAddress (always the ENI's primary in moto), which
# the appliance reads back after associating.
_orig_eip_private = eip_models.ElasticAddress.private_ip_address


def _eip_private(self):
    return PRIVATE_OF_ASSOCIATION.get(self.association_id) or _orig_eip_private.fget(self)


eip_models.ElasticAddress.private_ip_address = property(_eip_private)


# moto ignores AssignPrivateIpAddresses' AllowReassignment: it adds the address to the new ENI
# and leaves it on the old one (or assigns an address in use without it). EC2 moves it, with
# any Elastic IP associated with it, or refuses when reassignment is not allowed.
_orig_assign = eni_models.NetworkInterfaceBackend.assign_private_ip_addresses


def _assign(self, eni_id, private_ip_addresses=None, secondary_ips_count=None):
    params = getattr(LOCAL, "params", {})
    allow = str(params.get("AllowReassignment", "false")).lower() == "true"
    for ip in private_ip_addresses or []:
        for other in list(self.enis.values()):
            if other.id == eni_id:
                continue
            held = [p for p in other.private_ip_addresses if p.get("PrivateIpAddress") == ip]
            if not held:
                continue
            if held[0].get("Primary") or ip == other.private_ip_address:
                raise InvalidParameterValueError(f"{ip} (the primary address of {other.id})")
            if not allow:
                raise EC2ClientError(
                    "PrivateIpAddressInUse",
                    f"{ip} is assigned to {other.id}; pass AllowReassignment to move it",
                )
            other.private_ip_addresses = [
                p for p in other.private_ip_addresses if p.get("PrivateIpAddress") != ip
            ]
            MOVED_TO[ip] = eni_id
    eni = _orig_assign(self, eni_id, private_ip_addresses, secondary_ips_count)
    for eip in list(self.addresses):
        if eip.eni is None:
            continue
        private = PRIVATE_OF_ASSOCIATION.get(eip.association_id)
        if private and MOVED_TO.get(private) == eni_id and eip.eni.id != eni_id:
            eip.eni = eni
            eip.instance = eni.instance
    MOVED_TO.clear()
    fix_public_ips()
    return eni


MOVED_TO = {}
eni_models.NetworkInterfaceBackend.assign_private_ip_addresses = _assign


def fix_public_ips():
    """An ENI's public address (DescribeInstances' PublicIpAddress) is the Elastic IP on its
    primary address, else its auto-assigned one: moto sets it to any EIP associated with any
    of its addresses and never gives it back."""
    on_primary = {}
    for eip in list(ec2().addresses):
        if eip.eni is None:
            continue
        private = PRIVATE_OF_ASSOCIATION.get(eip.association_id) or eip.eni.private_ip_address
        if private == eip.eni.private_ip_address:
            on_primary[eip.eni.id] = eip.public_ip
    for eni_id, public in AUTO_PUBLIC.items():
        eni = ec2().enis.get(eni_id)
        if eni is not None:
            eni.public_ip = on_primary.get(eni_id, public)


def ec2():
    return ec2_backends[ACCOUNT][REGION]


def assumed_roles():
    return sts_backends[ACCOUNT]["aws"].assumed_roles


def aws_error(start_response, code, message):
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
        f"<Code>{code}</Code><Message>{message}</Message></Error></Errors>"
        "<RequestID>aws-double</RequestID></Response>"
    ).encode()
    start_response(
        "400 Bad Request",
        [("Content-Type", "text/xml"), ("Content-Length", str(len(body)))],
    )
    return [body]


def parse_amz_date(value):
    return datetime.datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(
        tzinfo=datetime.timezone.utc
    )


class Recorder:
    """Records each request (action, access key id, status) and checks what moto does not: the
    request's clock skew and the session credentials' expiry."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        # A compressed body (PutMetricData) is signed as sent: see _signed_as_sent.
        gzipped = environ.get("HTTP_CONTENT_ENCODING", "") == "gzip"
        LOCAL.raw_body = body if gzipped else None
        form = body
        if gzipped:
            try:
                form = gzip.decompress(body)
            except OSError:
                form = b""
        params = {}
        for source in (environ.get("QUERY_STRING", ""), form.decode("utf-8", "replace")):
            for k, v in urllib.parse.parse_qsl(source, keep_blank_values=True):
                params[k] = v
        LOCAL.params = params
        auth = environ.get("HTTP_AUTHORIZATION", "")
        akid = ""
        if "Credential=" in auth:
            akid = auth.split("Credential=", 1)[1].split("/", 1)[0]
        entry = {
            "action": params.get("Action", ""),
            "access_key_id": akid,
            "host": environ.get("HTTP_HOST", ""),
            "status": 0,
            "error": "",
        }
        with REQ_LOCK:
            REQUESTS.append(entry)
        if AUTH_ON:
            err = self.refuse(environ, akid)
            if err:
                entry["status"] = 400
                entry["error"] = err[0]
                return aws_error(start_response, *err)

        def recording_start(status, headers, exc_info=None):
            entry["status"] = int(status.split(" ", 1)[0])
            return start_response(status, headers, exc_info)

        out = self.app(environ, recording_start)
        if mutating(entry["action"]):
            WAKE.set()
        return out

    @staticmethod
    def refuse(environ, akid):
        amz_date = environ.get("HTTP_X_AMZ_DATE", "")
        if not amz_date:
            return ("MissingAuthenticationToken", "the request has no X-Amz-Date header")
        try:
            when = parse_amz_date(amz_date)
        except ValueError:
            return ("IncompleteSignature", f"bad X-Amz-Date {amz_date!r}")
        skew = abs((datetime.datetime.now(datetime.timezone.utc) - when).total_seconds())
        if skew > MAX_SKEW:
            return ("RequestExpired", f"Request has expired: X-Amz-Date {amz_date} is {skew:.0f} s off")
        for role in list(assumed_roles()):
            if role.access_key_id == akid:
                expiration = role.expiration
                if expiration.tzinfo is None:
                    expiration = expiration.replace(tzinfo=datetime.timezone.utc)
                if expiration <= datetime.datetime.now(datetime.timezone.utc):
                    return ("ExpiredToken", "The security token included in the request is expired")
        return None


_orig_create_aws_request = access_control.IAMRequestBase._create_aws_request


def _signed_as_sent(self):
    """moto checks a signature over the body after it has gunzipped it; AWS (and every SDK
    that compresses, botocore included) signs the bytes on the wire. So a compressed request
    is checked over what was sent, as AWS does."""
    request = _orig_create_aws_request(self)
    raw = getattr(LOCAL, "raw_body", None)
    if raw is not None:
        request.data = raw
    return request


access_control.IAMRequestBase._create_aws_request = _signed_as_sent

_orig_iam_request_init = access_control.IAMRequestBase.__init__


def _iam_action_names(self, *args, **kwargs):
    """moto names the IAM action after the SigV4 service (`monitoring:PutMetricData`); IAM
    names CloudWatch's actions `cloudwatch:*`, which is what a role's policy allows."""
    _orig_iam_request_init(self, *args, **kwargs)
    if self._action.startswith("monitoring:"):
        self._action = "cloudwatch:" + self._action.split(":", 1)[1]


access_control.IAMRequestBase.__init__ = _iam_action_names


def serve():
    app = Recorder(DomainDispatcherApplication(create_backend_app))
    server = make_server(
        SEED["endpoint_addr"],
        SEED["endpoint_port"],
        app,
        threaded=True,
        ssl_context=(SEED["cert"], SEED["key"]),
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()


def client(service, key=None):
    kwargs = {}
    if key:
        kwargs = {"aws_access_key_id": key[0], "aws_secret_access_key": key[1]}
    else:
        kwargs = {"aws_access_key_id": "AKIASEEDSEEDSEEDSEED", "aws_secret_access_key": "seed"}
    return boto3.client(
        service,
        region_name=REGION,
        endpoint_url=f"https://{SEED['endpoint_addr']}:{SEED['endpoint_port']}",
        verify=SEED["ca"],
        config=botocore.config.Config(retries={"max_attempts": 1}),
        **kwargs,
    )


LEAST_PRIVILEGE = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "NatAppliance",
            "Effect": "Allow",
            "Action": [
                "ec2:DescribeNetworkInterfaces",
                "ec2:DescribeRouteTables",
                "ec2:DescribeAddresses",
                "ec2:DescribeInstances",
                "ec2:ModifyNetworkInterfaceAttribute",
                "ec2:ReplaceRoute",
                "ec2:CreateRoute",
                "ec2:AssociateAddress",
                "ec2:AssignPrivateIpAddresses",
                "cloudwatch:PutMetricData",
            ],
            "Resource": "*",
        }
    ],
}

ADMIN = {}
AUTO_PUBLIC = {}
PRIVATE_TABLES = []


def seed():
    e = client("ec2")
    vpc = e.create_vpc(CidrBlock=SEED["vpc_cidr"])["Vpc"]["VpcId"]
    e.associate_vpc_cidr_block(VpcId=vpc, CidrBlock=SEED["cidr2"])
    public = e.create_subnet(VpcId=vpc, CidrBlock=SEED["public_subnet"])["Subnet"]["SubnetId"]
    e.modify_subnet_attribute(SubnetId=public, MapPublicIpOnLaunch={"Value": True})
    privates = [
        e.create_subnet(VpcId=vpc, CidrBlock=c)["Subnet"]["SubnetId"]
        for c in SEED["private_subnets"]
    ]
    igw = e.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    e.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    public_rt = e.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    e.create_route(RouteTableId=public_rt, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    e.associate_route_table(RouteTableId=public_rt, SubnetId=public)
    route_tables = {}
    if SEED.get("pair"):
        # One table per private subnet, each owned by one NAT of the pair.
        for (name, _cidr), s in zip(SEED["pair_tables"], privates):
            rt = e.create_route_table(
                VpcId=vpc,
                TagSpecifications=[
                    {"ResourceType": "route-table", "Tags": [{"Key": "Name", "Value": f"private-{name}"}]}
                ],
            )["RouteTable"]["RouteTableId"]
            e.associate_route_table(RouteTableId=rt, SubnetId=s)
            PRIVATE_TABLES.append(rt)
            route_tables[name] = rt
        private_rt = PRIVATE_TABLES[0]
    else:
        private_rt = e.create_route_table(
            VpcId=vpc,
            TagSpecifications=[
                {"ResourceType": "route-table", "Tags": [{"Key": "nat:route", "Value": "private"}]}
            ],
        )["RouteTable"]["RouteTableId"]
        for s in privates:
            e.associate_route_table(RouteTableId=private_rt, SubnetId=s)
        PRIVATE_TABLES.append(private_rt)

    iam = client("iam")
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
    role = SEED["role"]
    role_arn = iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    iam.put_role_policy(RoleName=role, PolicyName=SEED["policy"], PolicyDocument=json.dumps(LEAST_PRIVILEGE))
    iam.create_instance_profile(InstanceProfileName=role)
    iam.add_role_to_instance_profile(InstanceProfileName=role, RoleName=role)
    iam.create_user(UserName="e2e-admin")
    admin_policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    iam.put_user_policy(UserName="e2e-admin", PolicyName="all", PolicyDocument=json.dumps(admin_policy))
    key = iam.create_access_key(UserName="e2e-admin")["AccessKey"]
    ADMIN["key"] = (key["AccessKeyId"], key["SecretAccessKey"])

    instances = {}
    for name, spec in SEED["instances"].items():
        kwargs = {}
        if spec.get("profile"):
            kwargs["IamInstanceProfile"] = {"Name": role}
        inst = e.run_instances(
            ImageId="ami-12c6146b",
            MinCount=1,
            MaxCount=1,
            InstanceType="t4g.nano",
            SubnetId=public,
            PrivateIpAddress=spec["private_ip"],
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": name}]
                                + [{"Key": k, "Value": v} for k, v in spec.get("tags", {}).items()]}],
            **kwargs,
        )["Instances"][0]
        eni_id = inst["NetworkInterfaces"][0]["NetworkInterfaceId"]
        eni = ec2().enis[eni_id]
        eni.mac_address = spec["mac"]
        eni.public_ip = spec["public_ip"]
        AUTO_PUBLIC[eni_id] = spec["public_ip"]
        instances[name] = {"instance_id": inst["InstanceId"], "eni_id": eni_id}

    allocations = [
        e.allocate_address(Domain="vpc", Address=a)["AllocationId"] for a in SEED["elastic_ips"]
    ]
    owners = SEED.get("eip_owners", [])
    allocation_of = {owner: alloc for owner, alloc in zip(owners, allocations)}
    got = {a["AllocationId"]: a["PublicIp"] for a in e.describe_addresses()["Addresses"]}
    for alloc, want in zip(allocations, SEED["elastic_ips"]):
        if got.get(alloc) != want:
            raise RuntimeError(f"moto allocated {got.get(alloc)} for {want}")
    return {
        "event": "seeded",
        "account": ACCOUNT,
        "region": REGION,
        "vpc_id": vpc,
        "public_subnet_id": public,
        "private_subnet_ids": privates,
        "internet_gateway_id": igw,
        "public_route_table_id": public_rt,
        "private_route_table_id": private_rt,
        "role_name": role,
        "role_arn": role_arn,
        "policy_name": SEED["policy"],
        "instances": instances,
        "allocation_ids": allocations,
        "route_tables": route_tables,
        "eip_allocations": allocation_of,
    }


def data_plane():
    """What EC2's data plane would do now: the private tables' default route target, each
    ENI's addresses and source/dest check, and the internet gateway's 1:1 mappings."""
    b = ec2()
    routes = {}
    for rt_id in PRIVATE_TABLES:
        rt = b.route_tables.get(rt_id)
        target = None
        target_id = None
        if rt is not None:
            for r in list(rt.routes):
                if r.destination_cidr_block != "0.0.0.0/0":
                    continue
                if r.interface is not None:
                    target_id = r.interface.id
                    target = r.interface.private_ip_address
                elif r.instance is not None:
                    target_id = r.instance.id
                    target = r.instance.nics[0].private_ip_address if r.instance.nics else None
                elif r.gateway is not None:
                    target_id = r.gateway.id
                    target = "internet"
        routes[rt_id] = {"target": target, "target_id": target_id}
    enis = {}
    for eni in list(b.enis.values()):
        enis[eni.id] = {
            "mac": eni.mac_address,
            "private_ips": [p.get("PrivateIpAddress") for p in eni.private_ip_addresses],
            "primary_ip": eni.private_ip_address,
            "source_dest_check": bool(eni.source_dest_check),
        }
    mappings = {}
    eip_privates = set()
    for eip in list(b.addresses):
        if eip.eni is None:
            continue
        private = PRIVATE_OF_ASSOCIATION.get(eip.association_id) or eip.eni.private_ip_address
        if private in enis.get(eip.eni.id, {}).get("private_ips", []):
            mappings[eip.public_ip] = private
            eip_privates.add(private)
    for eni_id, public in AUTO_PUBLIC.items():
        eni = b.enis.get(eni_id)
        # As on EC2: an EIP on the primary address replaces the auto-assigned public address.
        if eni is not None and eni.private_ip_address not in eip_privates:
            mappings[public] = eni.private_ip_address
    return {
        "routes": routes,
        "enis": enis,
        "mappings": [{"public": p, "private": q} for p, q in sorted(mappings.items())],
    }


# Set after each mutating API call: the reconciler reports at once instead of at its next poll.
WAKE = threading.Event()


def mutating(action):
    return bool(action) and not action.startswith(("Describe", "Get", "List"))


class Reconciler:
    def __init__(self):
        self.lock = threading.Lock()
        self.last = None
        self.gen = 0

    def step(self):
        with self.lock:
            now = data_plane()
            if now != self.last:
                self.last = now
                self.gen += 1
                emit(dict(now, event="state", gen=self.gen))
            return self.gen

    def run(self):
        while True:
            try:
                self.step()
            except Exception as e:  # a transient read during a write: try again
                log(f"reconcile: {e!r}")
            WAKE.wait(0.2)
            WAKE.clear()


def credentials(lifetime):
    role = assumed_roles_backend().assume_role(
        region_name=REGION,
        role_session_name=SEED["instance_id_hint"],
        role_arn=f"arn:aws:iam::{ACCOUNT}:role/{SEED['role']}",
        policy=None,
        duration=int(lifetime),
        external_id=None,
    )
    now = datetime.datetime.now(datetime.timezone.utc)
    expiration = role.expiration
    if expiration.tzinfo is None:
        expiration = expiration.replace(tzinfo=datetime.timezone.utc)
    return {
        "Code": "Success",
        "LastUpdated": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "Type": "AWS-HMAC",
        "AccessKeyId": role.access_key_id,
        "SecretAccessKey": role.secret_access_key,
        "Token": role.session_token,
        "Expiration": expiration.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def assumed_roles_backend():
    return sts_backends[ACCOUNT]["aws"]


def call(service, op, args, creds=None):
    if creds:
        c = boto3.client(
            service,
            region_name=REGION,
            endpoint_url=f"https://{SEED['endpoint_addr']}:{SEED['endpoint_port']}",
            verify=SEED["ca"],
            config=botocore.config.Config(retries={"max_attempts": 1}),
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds.get("Token"),
        )
    else:
        c = client(service, ADMIN["key"])
    try:
        out = getattr(c, op)(**args)
    except c.exceptions.ClientError as e:
        err = e.response.get("Error", {})
        return {"ok": False, "error": f"{err.get('Code')}: {err.get('Message')}"}
    out.pop("ResponseMetadata", None)
    return {"ok": True, "result": out}


def handle(cmd, reconciler):
    kind = cmd.get("cmd")
    if kind == "call":
        return call(cmd["service"], cmd["op"], cmd.get("args") or {}, cmd.get("as"))
    if kind == "credentials":
        return {"ok": True, "result": credentials(cmd["lifetime_secs"])}
    if kind == "requests":
        with REQ_LOCK:
            out = [dict(r) for r in REQUESTS]
            if cmd.get("clear"):
                REQUESTS.clear()
        return {"ok": True, "result": out}
    if kind == "sync":
        return {"ok": True, "result": {"gen": reconciler.step()}}
    return {"ok": False, "error": f"unknown command {kind!r}"}


def main():
    global AUTH_ON
    serve()
    seeded = seed()
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    AUTH_ON = True
    with REQ_LOCK:
        REQUESTS.clear()
    emit(seeded)
    reconciler = Reconciler()
    reconciler.step()
    threading.Thread(target=reconciler.run, daemon=True).start()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            cmd = json.loads(line)
        except ValueError as e:
            emit({"reply": None, "ok": False, "error": f"bad command line: {e}"})
            continue
        try:
            reply = handle(cmd, reconciler)
        except Exception as e:
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        reply["reply"] = cmd.get("id")
        emit(reply)
    log("stdin closed: exiting")
    os._exit(0)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:
        log(f"failed: {type(e).__name__}: {e}")
        emit({"event": "failed", "error": f"{type(e).__name__}: {e}"})
        os._exit(1)
