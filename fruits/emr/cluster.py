"""The cluster's lifecycle: `up` (checks, code, network, roles, then
RunJobFlow), `ui` (SSH tunnel commands), `down`; the cluster of the last `up`
is remembered, so the other commands need no --cluster-id."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from fruits import aws
from fruits.aws import AwsTarget, error_code, user_errors
from fruits.config import ConfigError, cache_dir
from fruits.emr.code import build_wheel, upload_code
from fruits.emr.iam import INSTANCE_ROLE, SERVICE_ROLE, ensure_roles
from fruits.emr.network import SSH_GROUP, choose_subnet, ensure_emr_managed_groups, ensure_ssh_group, ssh_cidr
from fruits.emr.spec import MANAGED_GROUPS, build_request, load_spec, placeholder_free, spec_bucket

POLL_SECONDS = 30.0  # between describe calls while waiting
IAM_RETRY_SECONDS = 10.0  # new roles take a few seconds to reach EMR
IAM_RETRIES = 6
TERMINAL = ("TERMINATED", "TERMINATED_WITH_ERRORS")
UI_PORTS = (
    ("Spark History Server", 18080, "http"),
    ("YARN ResourceManager", 8088, "http"),
    ("Livy", 8998, "http"),
)


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
    """Poll ``describe()`` (-> an object with Status.State) until a state in ``done``,
    printing each new state. Not botocore's waiters (ClusterRunning, StepComplete,
    ClusterTerminated): they poll at the same 30 s but say nothing for the 10-15
    minutes a cluster takes to start, and StepComplete never ends on INTERRUPTED."""
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


def log_location(cluster: dict, step_id: str | None = None) -> str:
    base = (cluster.get("LogUri") or "").replace("s3n://", "s3://", 1).rstrip("/")
    return f"{base}/{cluster['Id']}/" + (f"steps/{step_id}/" if step_id else "")


# --- up ---------------------------------------------------------------------


def request_values(bucket: str, args, subnet_id: str | None, groups: dict[str, str | None]) -> dict:
    """``groups``: the SSH group and the EMR-managed groups (network.ensure_*)."""
    return {
        "bucket": bucket,
        "name": args.name or "fruits",
        "key_name": args.key_name,
        "subnet_id": subnet_id,
        **groups,
        "service_role": SERVICE_ROLE,
        "instance_profile": INSTANCE_ROLE,
    }


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
    groups = ensure_emr_managed_groups(ec2, subnet, changes)
    groups["ssh_security_group"] = ensure_ssh_group(ec2, subnet["VpcId"], cidr, changes)
    request = build_request(spec, request_values(bucket, args, subnet["SubnetId"], groups), args)
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
    if args.dry_run:  # nothing is called: a real `up` finds or makes the subnet and groups
        names = ("ssh_security_group", *MANAGED_GROUPS)
        values = request_values(bucket, args, "${subnet_id}", {name: f"${{{name}}}" for name in names})
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


# --- ui, down ---------------------------------------------------------------


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
        f"SSH is open only to the --ssh-cidr given to `fruits emr up` (security group {SSH_GROUP}); "
        "the UIs are not open to the internet.",
        "Notebooks: EMR Studio, through JupyterEnterpriseGateway and Livy (JupyterHub, whose default user has "
        "a well-known password, is not installed).",
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
