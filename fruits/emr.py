"""Amazon EMR: a cluster for `fruits` Spark steps, from `fruits emr up` to `fruits emr down`.

The cluster is ``env/cluster.json``: a RunJobFlow request body with
``${placeholder}`` strings (string.Template) that `fruits emr up` fills from its
options. `up` also uploads the code (wheel, requirements.txt, step entry
script) to s3://B/code/ and the bootstrap action to s3://B/bootstrap/, creates
the project's IAM roles (``env/iam/*.json``: the instance role reaches only
this bucket) and a security group that lets SSH in from one address range
only. Every AWS call goes through `fruits.aws.client`, inside `user_errors`.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import shutil
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fruits import argtypes, aws
from fruits.aws import AwsTarget, add_aws_options, error_code, parse_s3_uri, user_errors
from fruits.config import ConfigError, cache_dir

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_SPEC = ROOT / "env" / "cluster.json"
IAM_DIR = ROOT / "env" / "iam"
PRICES = ROOT / "env" / "prices.json"
BOOTSTRAP_SCRIPT = ROOT / "bootstrap" / "install-python-deps.sh"
REQUIREMENTS = ROOT / "requirements.txt"
ENTRY_SCRIPT = Path(__file__).with_name("emr_step.py")
ENTRY_KEY = "code/emr_step.py"
BOOTSTRAP_KEY = "bootstrap/install-python-deps.sh"
VENV_PYTHON = "/opt/fruits/venv/bin/python"  # made by the bootstrap action on every node

SERVICE_ROLE = "fruits-emr-service"
INSTANCE_ROLE = "fruits-emr-ec2"  # the EC2 role and its instance profile share the name
SSH_GROUP = "fruits-emr-ssh"
BUCKET_POLICY = "fruits-bucket-access"
PASS_ROLE_POLICY = "fruits-pass-instance-role"
EMR_SERVICE_POLICY = "arn:{partition}:iam::aws:policy/service-role/AmazonEMRServicePolicy_v2"
# AmazonEMRServicePolicy_v2 lets EMR use only subnets and security groups with this tag.
EMR_MANAGED_TAG = {"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"}
PROJECT_TAG = {"Key": "project", "Value": "fruits"}

POLL_SECONDS = 30.0  # between describe calls while waiting
IAM_RETRY_SECONDS = 10.0  # new roles take a few seconds to reach EMR
IAM_RETRIES = 6
TERMINAL = ("TERMINATED", "TERMINATED_WITH_ERRORS")
STEP_FAILED = ("FAILED", "CANCELLED", "INTERRUPTED")
FRUITS_SPARK_COMMANDS = ("run", "featurize", "pca")
# ~60 images/s per core measured end to end (onnx engine, fp32) on a 2-core x86
# VM; 50 leaves room for S3 reads and YARN overhead.
DEFAULT_IMAGES_PER_VCPU_SECOND = 50.0
DEFAULT_STARTUP_MINUTES = 15.0  # provisioning + bootstrap (pip installs the stack) + applications
UI_PORTS = (
    ("Spark History Server", 18080, "http"),
    ("YARN ResourceManager", 8088, "http"),
    ("JupyterHub", 9443, "https"),
    ("Livy", 8998, "http"),
)
_WHOLE_PLACEHOLDER = re.compile(r"\$\{(\w+)\}")


# --- the cluster spec -------------------------------------------------------


def load_spec(path: str | Path | None = None) -> dict:
    spec_path = Path(path).expanduser() if path else CLUSTER_SPEC
    if not spec_path.is_file():
        where = "" if path else " (run `fruits emr` from a checkout of the project)"
        raise ConfigError(f"cluster spec not found: {spec_path}{where}")
    try:
        spec = json.loads(spec_path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{spec_path} is not valid JSON: {exc}") from None
    if not isinstance(spec, dict) or "Instances" not in spec:
        raise ConfigError(f"{spec_path} is not a RunJobFlow request (no Instances)")
    return spec


_DROP = object()


def render(node, values: dict):
    """Fill ``${name}`` placeholders in a JSON-like tree. A string that is one
    placeholder takes the value as is (a number stays a number; None drops the
    key or list item); placeholders inside longer strings are substituted."""
    if isinstance(node, dict):
        filled = {key: render(value, values) for key, value in node.items()}
        return {key: value for key, value in filled.items() if value is not _DROP}
    if isinstance(node, list):
        return [item for item in (render(value, values) for value in node) if item is not _DROP]
    if not isinstance(node, str):
        return node
    whole = _WHOLE_PLACEHOLDER.fullmatch(node)
    if whole and whole.group(1) in values:
        value = values[whole.group(1)]
        return _DROP if value is None else value
    try:
        return string.Template(node).substitute({key: value for key, value in values.items() if value is not None})
    except KeyError as exc:
        raise ConfigError(f"cluster spec: no value for ${{{exc.args[0]}}} in {node!r}") from None
    except ValueError as exc:
        raise ConfigError(f"cluster spec: {exc} in {node!r}") from None


def placeholder_free(value) -> str | None:
    return value if isinstance(value, str) and "${" not in value else None


def spec_bucket(spec: dict) -> str | None:
    """The bucket a concrete spec (from `clone`) logs to, None for a template."""
    log_uri = placeholder_free(spec.get("LogUri"))
    return parse_s3_uri(log_uri)[0] if log_uri else None


def groups_by_role(request: dict) -> dict[str, dict]:
    return {group["InstanceRole"]: group for group in request["Instances"].get("InstanceGroups", [])}


def apply_options(request: dict, args) -> dict:
    """Options given on the command line win over the spec."""
    if getattr(args, "name", None):
        request["Name"] = args.name
    if getattr(args, "release", None):
        request["ReleaseLabel"] = args.release
    if getattr(args, "key_name", None):
        request["Instances"]["Ec2KeyName"] = args.key_name
    _apply_node_options(request, args)
    if getattr(args, "spot", False):
        for group in request["Instances"]["InstanceGroups"]:
            if group["InstanceRole"] in ("CORE", "TASK"):
                group["Market"] = "SPOT"
    if args.idle_timeout == 0:
        request.pop("AutoTerminationPolicy", None)
    elif args.idle_timeout is not None:
        request["AutoTerminationPolicy"] = {"IdleTimeout": args.idle_timeout}
    return request


def _apply_node_options(request: dict, args) -> None:
    groups = groups_by_role(request)
    if "MASTER" not in groups or "CORE" not in groups:
        raise ConfigError("cluster spec needs MASTER and CORE instance groups (instance fleets are not supported)")
    if args.master_type:
        groups["MASTER"]["InstanceType"] = args.master_type
    if args.core_type:
        groups["CORE"]["InstanceType"] = args.core_type
    if args.core_count is not None:
        groups["CORE"]["InstanceCount"] = args.core_count
    task_count = args.task_count
    if task_count and "TASK" not in groups:
        groups["TASK"] = {"Name": "Task", "InstanceRole": "TASK", "Market": "ON_DEMAND", "InstanceCount": task_count}
        groups["TASK"]["InstanceType"] = groups["CORE"]["InstanceType"]
        request["Instances"]["InstanceGroups"].append(groups["TASK"])
    elif task_count == 0 and "TASK" in groups:
        request["Instances"]["InstanceGroups"].remove(groups.pop("TASK"))
    elif task_count:
        groups["TASK"]["InstanceCount"] = task_count
    if args.task_type and "TASK" in groups:
        groups["TASK"]["InstanceType"] = args.task_type


def validate_request(request: dict) -> None:
    """Check the request against botocore's RunJobFlow input shape, offline."""
    import botocore.session
    from botocore.validate import ParamValidator

    model = botocore.session.get_session().get_service_model("emr")
    report = ParamValidator().validate(request, model.operation_model("RunJobFlow").input_shape)
    if report.has_errors():
        problems = "; ".join(line.strip() for line in report.generate_report().splitlines())
        raise ConfigError(f"the cluster spec is not a valid RunJobFlow request: {problems}")


def ssh_cidr(text: str) -> str:
    """The one address range SSH is allowed from; never the whole internet."""
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ConfigError(f"--ssh-cidr {text!r} is not an address range such as 203.0.113.7/32") from None
    if network.prefixlen == 0:
        raise ConfigError(
            f"--ssh-cidr {text} would open SSH to the whole internet: give your own address, "
            "e.g. $(curl -s https://checkip.amazonaws.com)/32"
        )
    return str(network)


# --- code, roles, network ---------------------------------------------------


def build_wheel(out_dir: Path) -> Path:
    """The project's wheel, built from a copy of the sources (no build/ left in the checkout)."""
    if not (ROOT / "pyproject.toml").is_file():
        raise ConfigError(f"no pyproject.toml in {ROOT}: run `fruits emr up` from a checkout, or pass --wheel")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fruits-wheel-") as tmp:
        source = Path(tmp) / "fruits"
        shutil.copytree(ROOT / "fruits", source / "fruits", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(ROOT / name, source / name)
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet"]
        result = subprocess.run(
            [*command, "-w", str(out_dir), str(source)], capture_output=True, text=True, check=False
        )
    wheels = sorted(out_dir.glob("fruits-*.whl"), key=lambda path: path.stat().st_mtime)
    if result.returncode or not wheels:
        detail = (result.stderr.strip().splitlines() or ["no wheel written"])[-1]
        raise ConfigError(f"building the fruits wheel failed: {detail}")
    return wheels[-1]


def upload_code(s3, bucket: str, wheel: Path) -> list[str]:
    """s3://B/code/: one fruits-*.whl, requirements.txt, the step entry script;
    s3://B/bootstrap/: the bootstrap action."""
    for path in (REQUIREMENTS, ENTRY_SCRIPT, BOOTSTRAP_SCRIPT):
        if not path.is_file():
            raise ConfigError(f"{path} not found: run `fruits emr up` from a checkout of the project")
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="code/fruits-").get("Contents", [])
    for item in listed:
        if item["Key"].endswith(".whl") and item["Key"] != f"code/{wheel.name}":
            s3.delete_object(Bucket=bucket, Key=item["Key"])  # the bootstrap installs the one wheel there
    uploads = (
        (wheel, f"code/{wheel.name}"),
        (REQUIREMENTS, "code/requirements.txt"),
        (ENTRY_SCRIPT, ENTRY_KEY),
        (BOOTSTRAP_SCRIPT, BOOTSTRAP_KEY),
    )
    for path, key in uploads:
        s3.upload_file(str(path), bucket, key)
    return [f"s3://{bucket}/{key}" for _, key in uploads]


def iam_document(name: str, values: dict) -> dict:
    return render(json.loads((IAM_DIR / name).read_text()), values)


def _missing(exc: Exception) -> bool:
    return error_code(exc) in ("NoSuchEntity", "NoSuchEntityException")


def _ensure_role(iam, name: str, trust: dict, description: str, changes: list[str]) -> bool:
    """Create the role, or bring its trust policy up to date; True when created."""
    try:
        current = iam.get_role(RoleName=name)["Role"].get("AssumeRolePolicyDocument")
    except Exception as exc:
        if not _missing(exc):
            raise
        iam.create_role(
            RoleName=name, AssumeRolePolicyDocument=json.dumps(trust), Description=description, Tags=[PROJECT_TAG]
        )
        changes.append(f"created IAM role {name}")
        return True
    if isinstance(current, str):
        current = json.loads(current)
    if current != trust:
        iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(trust))
        changes.append(f"updated the trust policy of IAM role {name}")
    return False


def _ensure_inline_policy(iam, role: str, name: str, document: dict, *, changes: list[str], what: str) -> None:
    try:
        current = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
    except Exception as exc:
        if not _missing(exc):
            raise
        current = None
    if isinstance(current, str):
        current = json.loads(current)
    if current != document:
        iam.put_role_policy(RoleName=role, PolicyName=name, PolicyDocument=json.dumps(document))
        changes.append(f"IAM role {role}: {what}")


def ensure_roles(iam, bucket: str, account: str, partition: str, region: str) -> tuple[list[str], bool]:
    """The EC2 instance role (+ profile) and the EMR service role; idempotent.
    Returns the changes and whether anything was created (IAM needs a moment)."""
    values = {
        "bucket": bucket,
        "account": account,
        "partition": partition,
        "region": region,
        "instance_role": INSTANCE_ROLE,
    }
    changes: list[str] = []
    created = _ensure_role(
        iam, INSTANCE_ROLE, iam_document("ec2-trust.json", values), "fruits EMR nodes: the project bucket only", changes
    )
    _ensure_inline_policy(
        iam,
        INSTANCE_ROLE,
        BUCKET_POLICY,
        iam_document("ec2-bucket-policy.json", values),
        changes=changes,
        what=f"access to s3://{bucket} only",
    )
    try:
        profile = iam.get_instance_profile(InstanceProfileName=INSTANCE_ROLE)["InstanceProfile"]
    except Exception as exc:
        if not _missing(exc):
            raise
        profile = iam.create_instance_profile(InstanceProfileName=INSTANCE_ROLE, Tags=[PROJECT_TAG])["InstanceProfile"]
        changes.append(f"created instance profile {INSTANCE_ROLE}")
        created = True
    if INSTANCE_ROLE not in [role["RoleName"] for role in profile.get("Roles", [])]:
        iam.add_role_to_instance_profile(InstanceProfileName=INSTANCE_ROLE, RoleName=INSTANCE_ROLE)
        changes.append(f"added role {INSTANCE_ROLE} to its instance profile")
        created = True
    created |= _ensure_role(
        iam, SERVICE_ROLE, iam_document("emr-trust.json", values), "fruits EMR service role", changes
    )
    managed = EMR_SERVICE_POLICY.format(partition=partition)
    attached = iam.list_attached_role_policies(RoleName=SERVICE_ROLE)["AttachedPolicies"]
    if managed not in [policy["PolicyArn"] for policy in attached]:
        iam.attach_role_policy(RoleName=SERVICE_ROLE, PolicyArn=managed)
        changes.append(f"IAM role {SERVICE_ROLE}: attached AmazonEMRServicePolicy_v2")
    _ensure_inline_policy(
        iam,
        SERVICE_ROLE,
        PASS_ROLE_POLICY,
        iam_document("emr-pass-role-policy.json", values),
        changes=changes,
        what=f"may pass only role {INSTANCE_ROLE}",
    )
    return changes, created


def choose_subnet(ec2, subnet_id: str | None, changes: list[str]) -> dict:
    """The given subnet, else the region's first default subnet; tagged for
    AmazonEMRServicePolicy_v2."""
    if subnet_id:
        subnets = ec2.describe_subnets(SubnetIds=[subnet_id])["Subnets"]
    else:
        subnets = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]
        subnets.sort(key=lambda subnet: subnet["AvailabilityZone"])
    if not subnets:
        raise ConfigError("no default VPC subnet in this region: pass --subnet-id (a public subnet)")
    subnet = subnets[0]
    if EMR_MANAGED_TAG not in subnet.get("Tags", []):
        ec2.create_tags(Resources=[subnet["SubnetId"]], Tags=[EMR_MANAGED_TAG])
        changes.append(f"tagged subnet {subnet['SubnetId']} {EMR_MANAGED_TAG['Key']}=true (needed by EMR's v2 policy)")
    return subnet


def _ranges(permission: dict) -> list[str]:
    return sorted(
        [item["CidrIp"] for item in permission.get("IpRanges", [])]
        + [item["CidrIpv6"] for item in permission.get("Ipv6Ranges", [])]
    )


def ensure_ssh_group(ec2, vpc_id: str, cidr: str, changes: list[str]) -> str:
    """A security group whose only inbound rule is SSH from ``cidr``; returns its id."""
    found = ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [SSH_GROUP]}, {"Name": "vpc-id", "Values": [vpc_id]}]
    )["SecurityGroups"]
    if found:
        group = found[0]
        if EMR_MANAGED_TAG not in group.get("Tags", []):
            ec2.create_tags(Resources=[group["GroupId"]], Tags=[EMR_MANAGED_TAG, PROJECT_TAG])
    else:
        group_id = ec2.create_security_group(
            GroupName=SSH_GROUP,
            Description="fruits EMR primary node: SSH from one address range only",
            VpcId=vpc_id,
            TagSpecifications=[{"ResourceType": "security-group", "Tags": [EMR_MANAGED_TAG, PROJECT_TAG]}],
        )["GroupId"]
        group = {"GroupId": group_id, "IpPermissions": []}
        changes.append(f"created security group {SSH_GROUP} ({group_id}) in {vpc_id}")
    wanted = [("tcp", 22, 22, [cidr])]
    current = [(p.get("IpProtocol"), p.get("FromPort"), p.get("ToPort"), _ranges(p)) for p in group["IpPermissions"]]
    extra = [p for p in group["IpPermissions"] if p.get("UserIdGroupPairs") or p.get("PrefixListIds")]
    if current != wanted or extra:
        if group["IpPermissions"]:
            ec2.revoke_security_group_ingress(GroupId=group["GroupId"], IpPermissions=group["IpPermissions"])
        key, item = ("Ipv6Ranges", "CidrIpv6") if ":" in cidr else ("IpRanges", "CidrIp")
        permission = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, key: [{item: cidr, "Description": "ssh"}]}
        ec2.authorize_security_group_ingress(GroupId=group["GroupId"], IpPermissions=[permission])
        changes.append(f"security group {SSH_GROUP}: SSH (22) from {cidr} only")
    return group["GroupId"]


# --- remembering the cluster, waiting ---------------------------------------


def state_file() -> Path:
    return Path(cache_dir()) / "emr-cluster.json"


def remember(cluster_id: str, bucket: str, region: str) -> None:
    path = state_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"cluster_id": cluster_id, "bucket": bucket, "region": region}) + "\n")


def remembered() -> dict:
    try:
        return json.loads(state_file().read_text())
    except (OSError, ValueError):
        return {}


def cluster_target(args) -> tuple[str, AwsTarget]:
    """--cluster-id, else the cluster of the last `fruits emr up` (and its region)."""
    last = remembered()
    cluster_id = args.cluster_id or last.get("cluster_id")
    if not cluster_id:
        raise ConfigError("no --cluster-id given and no cluster remembered from `fruits emr up`")
    region = args.region or (last.get("region") if cluster_id == last.get("cluster_id") else None)
    return cluster_id, AwsTarget(region=region, endpoint_url=args.endpoint_url)


def elapsed(started: float) -> str:
    seconds = int(time.monotonic() - started)
    return f"{seconds // 60}m{seconds % 60:02d}s"


def wait_for(describe, label: str, done: tuple[str, ...], timeout_minutes: float) -> dict:
    """Poll ``describe()`` (-> an object with Status.State) until a state in ``done``."""
    started, last = time.monotonic(), None
    while True:
        item = describe()
        state = item["Status"]["State"]
        if state != last:
            print(f"{label}: {state} ({elapsed(started)})", file=sys.stderr, flush=True)
            last = state
        if state in done:
            return item
        if time.monotonic() - started > timeout_minutes * 60:
            raise ConfigError(f"gave up waiting after {timeout_minutes:g} min: {label} is still {state}")
        time.sleep(POLL_SECONDS)


def reason(status: dict) -> str:
    change = status.get("StateChangeReason") or {}
    return ": ".join(filter(None, (change.get("Code"), change.get("Message"))))


def live_cluster(emr, cluster_id: str) -> dict:
    cluster = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
    state = cluster["Status"]["State"]
    if state in TERMINAL:
        why = reason(cluster["Status"])
        raise ConfigError(f"cluster {cluster_id} is already {state}{f' ({why})' if why else ''}")
    return cluster


# --- up ---------------------------------------------------------------------


def request_values(bucket: str, args, subnet_id: str | None, group_id: str | None) -> dict:
    return {
        "bucket": bucket,
        "name": args.name or "fruits",
        "key_name": args.key_name,
        "subnet_id": subnet_id,
        "ssh_security_group": group_id,
        "service_role": SERVICE_ROLE,
        "instance_profile": INSTANCE_ROLE,
    }


def build_request(spec: dict, values: dict, args) -> dict:
    request = apply_options(render(spec, values), args)
    instances = request["Instances"]
    if args.subnet_id:
        instances["Ec2SubnetId"] = args.subnet_id
    group_id = values.get("ssh_security_group")
    if group_id and "${" not in group_id and group_id not in instances.get("AdditionalMasterSecurityGroups", []):
        instances.setdefault("AdditionalMasterSecurityGroups", []).append(group_id)  # a spec from `clone`
    validate_request(request)
    return request


def check_bucket(s3, bucket: str) -> None:
    try:
        s3.head_bucket(Bucket=bucket)
    except Exception as exc:
        if error_code(exc) in ("404", "NoSuchBucket", "NotFound"):
            raise ConfigError(
                f"bucket s3://{bucket} not found: create it with `fruits s3 init --bucket {bucket}`"
            ) from None
        raise


def start_cluster(emr, request: dict, fresh_roles: bool) -> str:
    """run_job_flow; retried while freshly created roles are not yet visible to EMR."""
    attempt = 1
    while True:
        try:
            return emr.run_job_flow(**request)["JobFlowId"]
        except Exception as exc:
            message = str(exc).lower()
            iam_lag = error_code(exc) == "ValidationException" and ("role" in message or "profile" in message)
            if not (fresh_roles and iam_lag) or attempt >= IAM_RETRIES:
                raise
        attempt += 1
        time.sleep(IAM_RETRY_SECONDS)


def prepare(args, spec: dict, bucket: str, target: AwsTarget, *, cidr: str, wheel_dir: Path) -> tuple[dict, bool]:
    """Everything before run_job_flow: checks, wheel, network, roles, uploads.
    Returns the request and whether IAM roles were just created."""
    identity = aws.client("sts", target).get_caller_identity()  # fails first without credentials
    s3 = aws.client("s3", target)
    check_bucket(s3, bucket)
    wheel = Path(args.wheel).expanduser() if args.wheel else build_wheel(wheel_dir)
    if not wheel.is_file():
        raise ConfigError(f"wheel not found: {wheel}")
    changes: list[str] = []
    ec2 = aws.client("ec2", target)
    subnet = choose_subnet(ec2, args.subnet_id or placeholder_free(spec["Instances"].get("Ec2SubnetId")), changes)
    group_id = ensure_ssh_group(ec2, subnet["VpcId"], cidr, changes)
    request = build_request(spec, request_values(bucket, args, subnet["SubnetId"], group_id), args)
    fresh_roles = False
    if (request.get("ServiceRole"), request.get("JobFlowRole")) == (SERVICE_ROLE, INSTANCE_ROLE):
        partition = identity["Arn"].split(":")[1]
        iam = aws.client("iam", target)
        role_changes, fresh_roles = ensure_roles(iam, bucket, identity["Account"], partition, target.resolved_region)
        changes += role_changes
    changes += [f"uploaded {uri}" for uri in upload_code(s3, bucket, wheel)]
    for line in changes:
        print(line, file=sys.stderr)
    return request, fresh_roles


def up(args) -> int:
    cidr = ssh_cidr(args.ssh_cidr)  # before anything else, the dry run included
    spec = load_spec(args.spec)
    bucket, from_spec = args.bucket, spec_bucket(spec)
    if bucket and from_spec and bucket != from_spec:
        raise ConfigError(f"--bucket {bucket} but the spec {args.spec} uses s3://{from_spec}")
    bucket = bucket or from_spec
    if not bucket:
        raise ConfigError("--bucket is required")
    if args.dry_run:  # nothing is called: a real `up` finds or makes the subnet and group
        values = request_values(bucket, args, "${subnet_id}", "${ssh_security_group}")
        print(json.dumps(build_request(spec, values, args), indent=2))
        return 0
    target = aws.target_from_args(args)
    with user_errors(f"emr up on s3://{bucket}"), tempfile.TemporaryDirectory(prefix="fruits-emr-") as tmp:
        request, fresh_roles = prepare(args, spec, bucket, target, cidr=cidr, wheel_dir=Path(tmp))
        emr = aws.client("emr", target)
        cluster_id = start_cluster(emr, request, fresh_roles)
        remember(cluster_id, bucket, target.resolved_region)
        print(f"cluster {cluster_id} requested; logs in {request.get('LogUri', '')}{cluster_id}/", file=sys.stderr)
        if not args.no_wait:
            cluster = wait_for(
                lambda: emr.describe_cluster(ClusterId=cluster_id)["Cluster"],
                f"cluster {cluster_id}",
                ("WAITING", "RUNNING", *TERMINAL),
                args.timeout,
            )
            if cluster["Status"]["State"] in TERMINAL:
                print(
                    f"fruits emr up: cluster {cluster_id} failed to start: {reason(cluster['Status'])} "
                    f"(logs: {log_location(cluster)}node/)",
                    file=sys.stderr,
                )
                return 1
    print(cluster_id)
    return 0


# --- run, status, ui, down ---------------------------------------------------


def step_request(bucket: str, fruits_args: list[str], spark_conf: list[str]) -> dict:
    """A Spark step: spark-submit in cluster mode, the bootstrap's venv python
    for the driver and executors, the entry script from s3://B/code/."""
    confs = [
        f"spark.pyspark.python={VENV_PYTHON}",
        f"spark.pyspark.driver.python={VENV_PYTHON}",
        f"spark.yarn.appMasterEnv.PYSPARK_PYTHON={VENV_PYTHON}",
        f"spark.executorEnv.PYSPARK_PYTHON={VENV_PYTHON}",
        "spark.yarn.maxAppAttempts=1",  # a second attempt would only meet the first one's output
        *spark_conf,
    ]
    command = ["spark-submit", "--deploy-mode", "cluster"]
    for conf in confs:
        command += ["--conf", conf]
    return {
        "Name": "fruits " + " ".join(fruits_args)[:200],
        "ActionOnFailure": "CONTINUE",
        "HadoopJarStep": {"Jar": "command-runner.jar", "Args": [*command, f"s3://{bucket}/{ENTRY_KEY}", *fruits_args]},
    }


def check_fruits_args(fruits_args: list[str]) -> None:
    """Parse the step's `fruits` arguments here, so a typo fails now, not on the cluster."""
    from fruits.cli import build_parser

    if not fruits_args or fruits_args[0] not in FRUITS_SPARK_COMMANDS:
        raise ConfigError(
            "give the fruits command after --, e.g. `fruits emr run -- run --input s3://B/raw/DATASET "
            "--output s3://B/processed/RUN`"
        )
    parsed = build_parser().parse_args(fruits_args)
    for option in ("input", "output"):
        location = getattr(parsed, option, None)
        if location is not None and not location.startswith("s3://"):
            raise ConfigError(f"on EMR --{option} must be an s3:// URI, got {location!r}")
    if any(arg.split("=")[0] == "--weights" for arg in fruits_args) and parsed.weights != "imagenet":
        print(f"note: --weights {parsed.weights} must be a file on the cluster's nodes", file=sys.stderr)


def cluster_bucket(cluster: dict) -> str:
    log_uri = cluster.get("LogUri") or ""
    if not log_uri.startswith(("s3://", "s3n://")):
        raise ConfigError(f"cluster {cluster['Id']} has no s3:// LogUri: was it started by `fruits emr up`?")
    return parse_s3_uri(log_uri.replace("s3n://", "s3://", 1))[0]


def log_location(cluster: dict, step_id: str | None = None) -> str:
    base = (cluster.get("LogUri") or "").replace("s3n://", "s3://", 1).rstrip("/")
    return f"{base}/{cluster['Id']}/" + (f"steps/{step_id}/" if step_id else "")


def step_failure(step: dict, cluster: dict) -> str:
    status = step["Status"]
    details = status.get("FailureDetails") or {}
    why = (
        ": ".join(filter(None, (details.get("Reason"), details.get("Message")))) or reason(status) or "no reason given"
    )
    logs = details.get("LogFile") or log_location(cluster, step["Id"])
    return f"{why} (logs: {logs}; the Spark driver's: {log_location(cluster)}containers/)"


def run(args) -> int:
    fruits_args = args.fruits_args[1:] if args.fruits_args[:1] == ["--"] else list(args.fruits_args)
    check_fruits_args(fruits_args)
    cluster_id, target = cluster_target(args)
    with user_errors(f"emr run on {cluster_id}"):
        emr = aws.client("emr", target)
        cluster = live_cluster(emr, cluster_id)
        step = step_request(cluster_bucket(cluster), fruits_args, args.conf)
        step_id = emr.add_job_flow_steps(JobFlowId=cluster_id, Steps=[step])["StepIds"][0]
        print(f"step {step_id} added to {cluster_id}", file=sys.stderr)
        if not args.wait:
            print(step_id)
            return 0
        done = wait_for(
            lambda: emr.describe_step(ClusterId=cluster_id, StepId=step_id)["Step"],
            f"step {step_id}",
            ("COMPLETED", *STEP_FAILED),
            args.timeout,
        )
    state = done["Status"]["State"]
    if state != "COMPLETED":
        print(f"fruits emr run: step {step_id} {state}: {step_failure(done, cluster)}", file=sys.stderr)
        return 1
    print(step_id)
    return 0


def status(args) -> int:
    cluster_id, target = cluster_target(args)
    with user_errors(f"emr status {cluster_id}"):
        emr = aws.client("emr", target)
        cluster = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
        groups = emr.list_instance_groups(ClusterId=cluster_id)["InstanceGroups"]
        steps = emr.list_steps(ClusterId=cluster_id)["Steps"]
    state, why = cluster["Status"]["State"], reason(cluster["Status"])
    lines = [f"cluster {cluster_id} ({cluster.get('Name', '')}): {state}" + (f" - {why}" if why else "")]
    lines.append(f"  release   {cluster.get('ReleaseLabel', '?')}")
    roles = {"MASTER": "primary", "CORE": "core", "TASK": "task"}
    nodes = ", ".join(
        f"{roles[group['InstanceGroupType']]} {group['InstanceType']} x{group.get('RequestedInstanceCount', 0)}"
        f" ({group.get('Market', 'ON_DEMAND').lower()})"
        for group in sorted(groups, key=lambda group: ("MASTER", "CORE", "TASK").index(group["InstanceGroupType"]))
    )
    lines.append(f"  nodes     {nodes}")
    if cluster.get("MasterPublicDnsName"):
        lines.append(f"  primary   {cluster['MasterPublicDnsName']}")
    lines.append(f"  logs      {log_location(cluster)}")
    lines.append(f"steps ({len(steps)}, newest first):" if steps else "steps: none")
    for step in steps:
        lines.append(f"  {step['Id']}  {step['Status']['State']:<11} {step.get('Name', '')}")
        if step["Status"]["State"] in STEP_FAILED:
            lines.append(f"      {step_failure(step, cluster)}")
    print("\n".join(lines))
    return 0


def ui(args) -> int:
    cluster_id, target = cluster_target(args)
    with user_errors(f"emr ui {cluster_id}"):
        cluster = live_cluster(aws.client("emr", target), cluster_id)
    host = cluster.get("MasterPublicDnsName")
    if not host:
        raise ConfigError(f"cluster {cluster_id} has no primary node address yet ({cluster['Status']['State']})")
    key_name = cluster.get("Ec2InstanceAttributes", {}).get("Ec2KeyName")
    key = args.key_file or (f"~/.ssh/{key_name}.pem" if key_name else "KEY.pem")
    forwards = " ".join(f"-L {port}:localhost:{port}" for _, port, _ in UI_PORTS)
    lines = [
        "Open an SSH tunnel to the primary node and keep it running:",
        f"  ssh -i {key} -N {forwards} hadoop@{host}",
        "then browse:",
        *(f"  {name:<21} {scheme}://localhost:{port}" for name, port, scheme in UI_PORTS),
        "JupyterHub has a self-signed certificate; its default user is jovyan, password jupyter: change it.",
        f"SSH is open only to the --ssh-cidr given to `fruits emr up` (security group {SSH_GROUP}); "
        "ports 8443, 9443 and the UIs are not open to the internet.",
        "Without a tunnel: the EMR console's persistent application UIs (cluster > Applications) show the "
        "Spark History Server and YARN timeline of this cluster, also for 30 days after it terminates.",
    ]
    if not key_name:
        lines.insert(0, "note: the cluster has no EC2 key pair (`fruits emr up` without --key-name): SSH needs one")
    print("\n".join(lines))
    return 0


def down(args) -> int:
    cluster_id, target = cluster_target(args)
    with user_errors(f"emr down {cluster_id}"):
        emr = aws.client("emr", target)
        live_cluster(emr, cluster_id)
        emr.terminate_job_flows(JobFlowIds=[cluster_id])
        if args.no_wait:
            print(f"cluster {cluster_id} terminating")
            return 0
        cluster = wait_for(
            lambda: emr.describe_cluster(ClusterId=cluster_id)["Cluster"],
            f"cluster {cluster_id}",
            TERMINAL,
            args.timeout,
        )
    hours = cluster.get("NormalizedInstanceHours")
    print(
        f"cluster {cluster_id} {cluster['Status']['State']}"
        + (f" ({hours} normalized instance hours)" if hours else "")
    )
    return 0


# --- clone --------------------------------------------------------------------


def _ebs_configuration(devices: list[dict]) -> dict | None:
    volumes: dict[str, dict] = {}
    for device in devices:
        spec = {key: value for key, value in device.get("VolumeSpecification", {}).items() if value is not None}
        key = json.dumps(spec, sort_keys=True)
        volumes.setdefault(key, {"VolumeSpecification": spec, "VolumesPerInstance": 0})["VolumesPerInstance"] += 1
    return {"EbsBlockDeviceConfigs": list(volumes.values())} if volumes else None


def _group_spec(group: dict) -> dict:
    spec = {
        "Name": group.get("Name") or group["InstanceGroupType"].title(),
        "InstanceRole": group["InstanceGroupType"],
        "Market": group.get("Market", "ON_DEMAND"),
        "InstanceType": group["InstanceType"],
        "InstanceCount": group["RequestedInstanceCount"],
    }
    if re.fullmatch(r"\d+(\.\d+)?", str(group.get("BidPrice", ""))):
        spec["BidPrice"] = group["BidPrice"]
    if group.get("Configurations"):
        spec["Configurations"] = group["Configurations"]
    ebs = _ebs_configuration(group.get("EbsBlockDevices", []))
    if ebs:
        spec["EbsConfiguration"] = ebs
    return spec


def auto_termination(emr, cluster_id: str) -> dict | None:
    try:
        return emr.get_auto_termination_policy(ClusterId=cluster_id).get("AutoTerminationPolicy")
    except Exception as exc:  # not every endpoint has it: the spec then has no idle timeout
        print(f"note: no auto-termination policy read ({error_code(exc) or type(exc).__name__})", file=sys.stderr)
        return None


def clone_spec(emr, cluster_id: str) -> dict:
    """A RunJobFlow request that recreates the cluster (not its EMR-managed security groups)."""
    cluster = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
    if cluster.get("InstanceCollectionType") == "INSTANCE_FLEET":
        raise ConfigError(f"cluster {cluster_id} uses instance fleets: clone supports instance groups only")
    actions = [
        a
        for page in emr.get_paginator("list_bootstrap_actions").paginate(ClusterId=cluster_id)
        for a in page["BootstrapActions"]
    ]
    groups = [
        g
        for page in emr.get_paginator("list_instance_groups").paginate(ClusterId=cluster_id)
        for g in page["InstanceGroups"]
    ]
    order = ("MASTER", "CORE", "TASK")
    attributes = cluster.get("Ec2InstanceAttributes", {})
    instances: dict = {
        "InstanceGroups": [_group_spec(g) for g in sorted(groups, key=lambda g: order.index(g["InstanceGroupType"]))]
    }
    for key in ("Ec2KeyName", "Ec2SubnetId", "AdditionalMasterSecurityGroups", "AdditionalSlaveSecurityGroups"):
        if attributes.get(key):
            instances[key] = attributes[key]
    instances["KeepJobFlowAliveWhenNoSteps"] = not cluster.get("AutoTerminate", False)
    instances["TerminationProtected"] = cluster.get("TerminationProtected", False)
    spec = {
        "Name": cluster["Name"],
        "ReleaseLabel": cluster["ReleaseLabel"],
        "LogUri": cluster.get("LogUri"),
        "Applications": [{"Name": app["Name"]} for app in cluster.get("Applications", [])],
        "Configurations": cluster.get("Configurations") or None,
        "Instances": instances,
        "BootstrapActions": [
            {"Name": a["Name"], "ScriptBootstrapAction": {"Path": a["ScriptPath"], "Args": a.get("Args", [])}}
            for a in actions
        ]
        or None,
        "AutoTerminationPolicy": auto_termination(emr, cluster_id),
    }
    for key in (
        "EbsRootVolumeSize",
        "StepConcurrencyLevel",
        "ScaleDownBehavior",
        "SecurityConfiguration",
        "AutoScalingRole",
        "CustomAmiId",
        "LogEncryptionKmsKeyId",
    ):
        spec[key] = cluster.get(key)
    spec.update(
        ServiceRole=cluster.get("ServiceRole"),
        JobFlowRole=attributes.get("IamInstanceProfile"),
        VisibleToAllUsers=cluster.get("VisibleToAllUsers", True),
        Tags=cluster.get("Tags") or None,
    )
    return {key: value for key, value in spec.items() if value is not None}


def clone(args) -> int:
    target = aws.target_from_args(args)
    with user_errors(f"emr clone {args.cluster_id}"):
        spec = clone_spec(aws.client("emr", target), args.cluster_id)
    validate_request(spec)
    output = Path(args.output).expanduser()
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(spec, indent=2) + "\n")
    print(f"wrote {output}: start a copy with `fruits emr up --spec {output} --ssh-cidr YOUR_IP/32`")
    return 0


# --- cost -------------------------------------------------------------------


def manifest_throughput(path: str, vcpus_of_run: int | None) -> tuple[float, str]:
    """Images per second per vCPU from a run's manifest.json."""
    manifest_path = Path(path).expanduser()
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read manifest {path}: {exc}") from None
    rate = manifest.get("images_per_second")
    if not rate:
        raise ConfigError(f"{path} has no images_per_second (is it the manifest of a featurize or run?)")
    master = str((manifest.get("parameters") or {}).get("master") or "")
    local = re.fullmatch(r"local(?:\[(\d+)(?:,\d+)?\])?", master)
    vcpus = vcpus_of_run or manifest.get("cores") or (int(local.group(1) or 1) if local else None)
    if not vcpus:
        raise ConfigError(
            f"{path} does not record how many cores the run had (master {master or 'unset'}): pass --vcpus-of-run"
        )
    return float(rate) / int(vcpus), f"{rate} images/s on {vcpus} vCPUs in {manifest_path.name}"


def price_of(table: dict, region: str, instance_type: str) -> dict:
    prices = table["regions"].get(region)
    if prices is None:
        raise ConfigError(f"no prices for region {region} in {PRICES.name} (has: {', '.join(table['regions'])})")
    if instance_type not in prices:
        raise ConfigError(f"no price for {instance_type} in {region} (has: {', '.join(prices)})")
    return prices[instance_type]


def estimate(args) -> dict:
    """Hours and list-price cost of featurizing ``args.images`` images."""
    table = json.loads(PRICES.read_text())
    region = aws.AwsTarget(region=args.region).resolved_region
    request = apply_options(load_spec(args.spec), args)  # the spec's nodes, with the options' changes
    names = {"MASTER": "primary", "CORE": "core", "TASK": "task"}
    rows = [
        (names[role], group["InstanceType"], group["InstanceCount"], price_of(table, region, group["InstanceType"]))
        for role, group in groups_by_role(request).items()
    ]
    idle_seconds = request.get("AutoTerminationPolicy", {}).get("IdleTimeout", 0)
    if args.images_per_vcpu_second:
        per_vcpu, source = args.images_per_vcpu_second, "--images-per-vcpu-second"
    elif args.manifest:
        per_vcpu, source = manifest_throughput(args.manifest, args.vcpus_of_run)
    else:
        per_vcpu, source = DEFAULT_IMAGES_PER_VCPU_SECOND, "conservative default; ~60 measured on a 2-core VM, onnx"
    worker_vcpus = sum(count * price["vcpus"] for role, _, count, price in rows if role != "primary")
    work_hours = args.images / (per_vcpu * worker_vcpus) / 3600
    hours = {"start-up": args.startup_minutes / 60, "featurize": work_hours, "idle timeout": idle_seconds / 3600}
    per_hour = sum(count * (price["ec2"] + price["emr"]) for _, _, count, price in rows)
    return {
        "table": table,
        "region": region,
        "rows": rows,
        "per_vcpu": per_vcpu,
        "source": source,
        "worker_vcpus": worker_vcpus,
        "hours": hours,
        "per_hour": per_hour,
        "total": per_hour * sum(hours.values()),
        "without_idle": per_hour * (hours["start-up"] + hours["featurize"]),
    }


def cost(args) -> int:
    result = estimate(args)
    table = result["table"]
    lines = [f"{'node':<8} {'type':<11} {'count':>5} {'vCPUs':>6} {'EC2 $/h':>8} {'EMR $/h':>8} {'total $/h':>10}"]
    for role, kind, count, price in result["rows"]:
        lines.append(
            f"{role:<8} {kind:<11} {count:>5} {count * price['vcpus']:>6} {count * price['ec2']:>8.3f} "
            f"{count * price['emr']:>8.3f} {count * (price['ec2'] + price['emr']):>10.3f}"
        )
    lines.append(f"{'cluster':<8} {'':<11} {'':>5} {'':>6} {'':>8} {'':>8} {result['per_hour']:>10.3f}")
    rate = result["per_vcpu"] * result["worker_vcpus"]
    lines.append(
        f"throughput: {result['per_vcpu']:.1f} images/s per vCPU ({result['source']}) x {result['worker_vcpus']} "
        f"worker vCPUs = {rate:.0f} images/s"
    )
    lines.append(
        "hours: "
        + " + ".join(f"{name} {value:.2f}" for name, value in result["hours"].items())
        + f" = {sum(result['hours'].values()):.2f} h"
    )
    lines.append(
        f"estimated cost: ${result['total']:.2f} for {args.images} images; ${result['without_idle']:.2f} "
        "if you run `fruits emr down` as soon as the step is done"
    )
    lines.append(
        f"prices: on-demand list prices in {result['region']} as of {table['as_of']} ({table['sources']['ec2']}, "
        f"{table['sources']['emr']}); Spot, S3, EBS and data transfer not included"
    )
    print("\n".join(lines))
    return 0


# --- command line ---------------------------------------------------------------


def _idle_timeout(text: str) -> int:
    value = argtypes.count(text)
    if value and not 60 <= value <= 604800:
        raise argparse.ArgumentTypeError("must be 0 (never) or 60..604800 seconds")
    return value


def _node_options(parser: argparse.ArgumentParser, defaults: str) -> None:
    group = parser.add_argument_group("nodes", f"default: {defaults}")
    group.add_argument("--master-type", help="primary node instance type")
    group.add_argument("--core-type", help="core node instance type")
    group.add_argument("--core-count", type=argtypes.positive_int, help="core nodes")
    group.add_argument("--task-type", help="task node instance type (default: the core type)")
    group.add_argument("--task-count", type=argtypes.count, help="task nodes (none by default)")
    group.add_argument(
        "--idle-timeout",
        type=_idle_timeout,
        help="seconds idle before the cluster terminates itself; 0: never (spec default: 3600)",
    )


def _cluster_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cluster-id", help="default: the cluster of the last `fruits emr up`")
    add_aws_options(parser)


def _wait_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", type=float, default=60.0, help="minutes to wait at most (default: %(default)s)")


def add_commands(commands) -> None:
    """`fruits emr up|run|status|ui|down|clone|cost`."""
    text = "an EMR cluster for fruits steps: create, run steps, watch, tunnel, terminate, clone, cost"
    emr = commands.add_parser("emr", help=text, description=text)
    actions = emr.add_subparsers(dest="action", required=True, metavar="ACTION")

    _add_up(actions)
    _add_run(actions)
    for name, handler, text in (
        ("status", status, "cluster state, steps, failures and log location"),
        ("ui", ui, "SSH tunnel commands for the Spark History Server, YARN, JupyterHub and Livy"),
        ("down", down, "terminate the cluster and wait until it is gone"),
    ):
        parser = actions.add_parser(name, help=text, description=text)
        _cluster_options(parser)
        if name == "ui":
            parser.add_argument("--key-file", help="private key for SSH (default: ~/.ssh/<key pair name>.pem)")
        if name == "down":
            parser.add_argument("--no-wait", action="store_true", help="return once termination is requested")
            _wait_option(parser)
        parser.set_defaults(handler=handler)

    clone_parser = actions.add_parser("clone", help="write a reusable spec of a cluster, for `fruits emr up --spec`")
    clone_parser.add_argument("cluster_id")
    clone_parser.add_argument("--output", required=True, help="spec file to write (JSON)")
    add_aws_options(clone_parser)
    clone_parser.set_defaults(handler=clone)

    cost_parser = actions.add_parser("cost", help="estimated hours and list-price cost of featurizing N images")
    cost_parser.add_argument("--images", type=argtypes.positive_int, required=True, help="number of images")
    cost_parser.add_argument(
        "--manifest", help="manifest.json of a local run: its images_per_second sets the throughput"
    )
    cost_parser.add_argument(
        "--vcpus-of-run", type=argtypes.positive_int, help="cores the manifest's run had, when it does not say"
    )
    cost_parser.add_argument(
        "--images-per-vcpu-second",
        type=argtypes.positive_number,
        help=f"throughput per vCPU (default {DEFAULT_IMAGES_PER_VCPU_SECOND:g})",
    )
    cost_parser.add_argument(
        "--startup-minutes", type=float, default=DEFAULT_STARTUP_MINUTES, help="cluster start-up (default: %(default)s)"
    )
    cost_parser.add_argument("--spec", default=str(CLUSTER_SPEC), help="cluster spec for the node defaults")
    _node_options(cost_parser, "the spec's nodes")
    cost_parser.add_argument("--region", help="price table region (default: $AWS_REGION, else eu-west-1)")
    cost_parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    cost_parser.set_defaults(handler=cost)


def _add_up(actions) -> None:
    up_parser = actions.add_parser(
        "up", help="upload the code, create roles and SSH group, start the cluster from env/cluster.json"
    )
    up_parser.add_argument("--bucket", help="the project bucket (made by `fruits s3 init`)")
    up_parser.add_argument(
        "--ssh-cidr", required=True, help="the only address range SSH is open to, e.g. 203.0.113.7/32"
    )
    up_parser.add_argument("--key-name", help="EC2 key pair for SSH to the primary node")
    up_parser.add_argument("--subnet-id", help="default: the region's first default subnet")
    up_parser.add_argument("--spec", help="a spec written by `fruits emr clone` instead of env/cluster.json")
    up_parser.add_argument("--name", help="cluster name (default: fruits)")
    up_parser.add_argument("--release", help="EMR release label (spec default: emr-7.5.0)")
    up_parser.add_argument("--spot", action="store_true", help="core and task nodes on Spot (primary stays on-demand)")
    _node_options(up_parser, "the spec's: m5.xlarge primary + 2 m5.xlarge core, on-demand")
    up_parser.add_argument("--wheel", help="upload this fruits wheel instead of building one")
    up_parser.add_argument("--dry-run", action="store_true", help="print the RunJobFlow request; call nothing")
    up_parser.add_argument("--no-wait", action="store_true", help="return once the cluster is requested")
    _wait_option(up_parser)
    add_aws_options(up_parser)
    up_parser.set_defaults(handler=up)


def _add_run(actions) -> None:
    run_parser = actions.add_parser(
        "run", help="add a fruits Spark step: fruits emr run [--wait] -- run --input s3://... --output s3://..."
    )
    run_parser.add_argument("--wait", action="store_true", help="wait for the step; exit 1 if it fails")
    run_parser.add_argument(
        "--conf", action="append", default=[], metavar="KEY=VALUE", help="extra spark-submit --conf"
    )
    _wait_option(run_parser)
    _cluster_options(run_parser)
    run_parser.add_argument(
        "fruits_args", nargs=argparse.REMAINDER, help="-- then the fruits run|featurize|pca arguments"
    )
    run_parser.set_defaults(handler=run)
