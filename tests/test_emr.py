"""`fruits emr`: the cluster lifecycle against moto's server, through the CLI.

moto keeps most of a cluster (configurations, bootstrap actions, groups, log
URI) but drops the auto-termination policy and never runs steps, so the
requests are also read as sent (botocore's before-send event), moto's missing
GetAutoTerminationPolicy is answered from the RunJobFlow request, and step
outcomes are set on DescribeStep's answer.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import json
import os
import re
import shlex
import subprocess
import sys
import zipfile
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.stub import ANY, Stubber

from fruits import aws, engines
from fruits.cli import main
from fruits.config import ConfigError
from fruits.emr import cluster as emr_cluster
from fruits.emr import code as emr_code
from fruits.emr import iam as emr_iam
from fruits.emr import memory as emr_memory
from fruits.emr import network as emr_network
from fruits.emr import spec as emr_spec
from fruits.features import file_sha256
from tests import emr_policy_facts
from tests.conftest import ROOT, SAMPLE, WEIGHTS, without_tensorflow
from tests.iam_policy import allowed
from tests.test_cli import assert_usage_error, run_cli

BUCKET = "fruits-emr-test"
CIDR = "203.0.113.7/32"
KEY = "fruits-key"
ACCOUNT = "123456789012"  # moto's
VENV_PYTHON = "/opt/fruits/venv/bin/python"
BOOTSTRAP_KEY = "bootstrap/install-python-deps.sh"


class Recorder:
    """Wraps `fruits.aws.client`: records EMR requests as sent."""

    def __init__(self) -> None:
        self.sent: dict[str, list[dict]] = defaultdict(list)
        self.requests: dict[str, dict] = {}  # cluster id -> its RunJobFlow request
        self.step_status: dict | None = None  # replaces DescribeStep's Status when set
        self.real_client = aws.client

    def client(self, service: str, target):
        client = self.real_client(service, target)
        if service == "emr":
            events = client.meta.events
            events.register("before-send.emr", self._record)
            events.register("after-call.emr.RunJobFlow", self._started)
            events.register("before-call.emr.GetAutoTerminationPolicy", self._auto_termination)
            events.register("after-call.emr.DescribeStep", self._step)
        return client

    def _record(self, request, **_):
        operation = request.headers["X-Amz-Target"]
        operation = (operation.decode() if isinstance(operation, bytes) else operation).split(".")[-1]
        self.sent[operation].append(json.loads(request.body))

    def _started(self, parsed, **_):
        if "JobFlowId" in parsed:
            self.requests[parsed["JobFlowId"]] = self.sent["RunJobFlow"][-1]

    def _auto_termination(self, params, **_):
        cluster_id = json.loads(params["body"])["ClusterId"]  # params: the serialized request
        policy = self.requests[cluster_id].get("AutoTerminationPolicy")
        return AWSResponse("", 200, {}, None), ({"AutoTerminationPolicy": policy} if policy else {})

    def _step(self, parsed, **_):
        if self.step_status and "Step" in parsed:
            parsed["Step"]["Status"] = self.step_status


def give_the_default_vpc_an_internet_gateway() -> None:
    """AWS's default VPC routes 0.0.0.0/0 to an internet gateway (its subnets are
    public); moto's has no gateway, which would make every default subnet private."""
    ec2 = boto3.client("ec2")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    main = ec2.describe_route_tables(
        Filters=[{"Name": "vpc-id", "Values": [vpc]}, {"Name": "association.main", "Values": ["true"]}]
    )["RouteTables"][0]
    if not any(route.get("GatewayId", "").startswith("igw-") for route in main["Routes"]):
        gateway = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
        ec2.attach_internet_gateway(InternetGatewayId=gateway, VpcId=vpc)
        ec2.create_route(RouteTableId=main["RouteTableId"], DestinationCidrBlock="0.0.0.0/0", GatewayId=gateway)


@pytest.fixture(scope="module")
def calls(moto_endpoint):
    recorder = Recorder()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(aws, "client", recorder.client)
        # AWS managed policies (AmazonEMRServicePolicy_v2): moto loads them only when asked,
        # as its IAM backend starts (the server runs in this process).
        patch.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
        patch.setattr(emr_cluster, "POLL_SECONDS", 0.01)
        patch.setattr(emr_cluster, "IAM_RETRY_SECONDS", 0.01)
        give_the_default_vpc_an_internet_gateway()
        yield recorder


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return emr_code.build_wheel(tmp_path_factory.mktemp("wheel"))


def cli(*argv) -> SimpleNamespace:
    """Run the CLI, capturing its output (module fixtures cannot use capsys)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(arg) for arg in argv])
        except SystemExit as exit_:
            code = exit_.code
    return SimpleNamespace(code=code, out=out.getvalue(), err=err.getvalue())


def boto(service: str):
    return boto3.client(service)  # AWS_ENDPOINT_URL and the region come from the moto fixture


@pytest.fixture(scope="module")
def cluster(calls, wheel) -> SimpleNamespace:
    assert cli("s3", "init", "--bucket", BUCKET).code == 0
    result = cli("emr", "up", "--bucket", BUCKET, "--ssh-cidr", CIDR, "--key-name", KEY, "--wheel", wheel)
    assert result.code == 0, result.err
    result.id = result.out.strip()
    result.request = calls.requests[result.id]
    result.described = boto("emr").describe_cluster(ClusterId=result.id)["Cluster"]  # before any test adds steps
    return result


def by_classification(configurations: list[dict]) -> dict[str, dict]:
    return {item["Classification"]: item for item in configurations}


def test_the_spec_renders_to_a_valid_run_job_flow_request():
    values = {
        "bucket": BUCKET,
        "name": "fruits",
        "key_name": None,
        "subnet_id": "subnet-1",
        "ssh_security_group": "sg-1",
        "primary_security_group": "sg-2",
        "core_security_group": "sg-3",
        "service_access_security_group": None,
        "service_role": emr_iam.SERVICE_ROLE,
        "instance_profile": emr_iam.INSTANCE_ROLE,
    }
    request = emr_spec.render(emr_spec.load_spec(), values)
    emr_spec.validate_request(request)  # botocore's RunJobFlow input shape: unknown or mistyped fields fail
    assert "${" not in json.dumps(request)
    assert "Ec2KeyName" not in request["Instances"]  # None drops the key
    assert request["ReleaseLabel"].startswith("emr-7.")
    assert [app["Name"] for app in request["Applications"]] == [
        "Spark",
        "Hadoop",
        "JupyterEnterpriseGateway",
        "Livy",
    ]
    assert request["Instances"]["AdditionalMasterSecurityGroups"] == ["sg-1"]
    broken = json.loads(json.dumps(request))
    broken["Instances"]["InstanceGroups"][1]["InstanceCount"] = "two"
    with pytest.raises(ConfigError, match="InstanceCount"):
        emr_spec.validate_request(broken)


def test_dry_run_prints_the_request_and_calls_nothing(capsys, monkeypatch):
    def no_aws(*_):
        raise AssertionError("--dry-run called AWS")

    monkeypatch.setattr(aws, "client", no_aws)
    code, out, _ = run_cli(
        capsys, "emr", "up", "--dry-run", "--bucket", BUCKET, "--ssh-cidr", CIDR, "--spot", "--idle-timeout", "1800"
    )
    assert code == 0
    request = json.loads(out)
    emr_spec.validate_request(request)
    groups = emr_spec.groups_by_role(request)
    assert (groups["MASTER"]["Market"], groups["CORE"]["Market"]) == ("ON_DEMAND", "SPOT")
    assert groups["CORE"]["InstanceCount"] == 2
    assert request["AutoTerminationPolicy"] == {"IdleTimeout": 1800}
    assert request["Instances"]["AdditionalMasterSecurityGroups"] == ["${ssh_security_group}"]


def test_up_sends_bootstrap_configurations_auto_termination_and_log_uri(cluster):
    request = cluster.request
    assert cluster.id.startswith("j-")
    assert "WAITING" in cluster.err  # waited with progress
    assert request["AutoTerminationPolicy"] == {"IdleTimeout": 3600}  # as sent: moto drops it
    assert request["LogUri"] == f"s3://{BUCKET}/logs/"
    assert request["BootstrapActions"][0]["ScriptBootstrapAction"] == {
        "Path": f"s3://{BUCKET}/bootstrap/install-python-deps.sh",
        "Args": [f"s3://{BUCKET}/code/"],
    }
    configurations = by_classification(request["Configurations"])
    defaults = configurations["spark-defaults"]["Properties"]
    assert defaults["spark.sql.execution.arrow.maxRecordsPerBatch"] == "256"
    assert defaults["spark.pyspark.python"] == defaults["spark.pyspark.driver.python"] == VENV_PYTHON
    assert configurations["spark-env"]["Configurations"][0]["Properties"]["PYSPARK_PYTHON"] == VENV_PYTHON
    assert "jupyter-s3-conf" not in configurations  # no JupyterHub (default password): EMR Studio instead
    assert (defaults["spark.executor.cores"], defaults["spark.executor.memory"]) == ("2", "1536m")
    assert defaults["spark.executor.memoryOverhead"] == "3072m"  # 512 MB + 1280 MB per task's Python worker
    assert "spark.executor.pyspark.memory" not in defaults  # an RLIMIT_AS an ONNX Runtime worker would hit
    assert {"Key": "project", "Value": "fruits"} in request["Tags"]
    assert {"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"} in request["Tags"]
    instances = request["Instances"]
    assert "ServiceAccessSecurityGroup" not in instances  # a public default subnet
    groups = boto("ec2").describe_security_groups(
        GroupIds=[instances["EmrManagedMasterSecurityGroup"], instances["EmrManagedSlaveSecurityGroup"]]
    )["SecurityGroups"]
    assert sorted(group["GroupName"] for group in groups) == sorted([emr_network.PRIMARY_GROUP, emr_network.CORE_GROUP])
    assert all(group["IpPermissions"] == [] for group in groups)  # EMR adds the rules between the nodes
    assert (request["ServiceRole"], request["JobFlowRole"]) == (emr_iam.SERVICE_ROLE, emr_iam.INSTANCE_ROLE)

    client = boto("emr")
    described = cluster.described
    assert described["Status"]["State"] == "WAITING"
    assert described["LogUri"] == f"s3://{BUCKET}/logs/"
    assert described["Configurations"] == request["Configurations"]
    assert described["VisibleToAllUsers"] is True
    assert described["Ec2InstanceAttributes"]["Ec2KeyName"] == KEY
    assert described["Ec2InstanceAttributes"]["IamInstanceProfile"] == emr_iam.INSTANCE_ROLE
    actions = client.list_bootstrap_actions(ClusterId=cluster.id)["BootstrapActions"]
    assert [(a["ScriptPath"], a["Args"]) for a in actions] == [
        (f"s3://{BUCKET}/bootstrap/install-python-deps.sh", [f"s3://{BUCKET}/code/"])
    ]
    groups = {g["InstanceGroupType"]: g for g in client.list_instance_groups(ClusterId=cluster.id)["InstanceGroups"]}
    assert {role: (g["InstanceType"], g["RequestedInstanceCount"]) for role, g in groups.items()} == {
        "MASTER": ("m5.xlarge", 1),
        "CORE": ("m5.xlarge", 2),
    }


def test_up_uploads_the_code_and_the_bootstrap_action(cluster, wheel):
    s3 = boto("s3")
    keys = {item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert {f"code/{wheel.name}", "code/requirements-emr.lock", emr_code.ENTRY_KEY, emr_code.BOOTSTRAP_KEY} <= keys
    assert [key for key in keys if key.startswith("code/fruits-")] == [f"code/{wheel.name}"]  # one wheel
    requirements = s3.get_object(Bucket=BUCKET, Key="code/requirements-emr.lock")["Body"].read()
    assert requirements == emr_code.NODES_LOCK.read_bytes()
    names = zipfile.ZipFile(wheel).namelist()
    assert {"fruits/emr/cluster.py", "fruits/emr_step.py", "fruits/spark_args.py", "fruits/cli.py"} <= set(names)


def world(permission: dict) -> bool:
    cidrs = [r["CidrIp"] for r in permission.get("IpRanges", [])] + [
        r["CidrIpv6"] for r in permission.get("Ipv6Ranges", [])
    ]
    return any(ipaddress.ip_network(cidr).prefixlen == 0 for cidr in cidrs)


def opens(permission: dict, port: int) -> bool:
    if permission["IpProtocol"] == "-1":
        return True
    return permission.get("FromPort", 0) <= port <= permission.get("ToPort", 65535)


def test_no_rule_opens_ssh_or_jupyter_to_the_internet(cluster):
    ec2 = boto("ec2")
    groups = ec2.describe_security_groups()["SecurityGroups"]
    for group in groups:
        for permission in group["IpPermissions"]:
            for port in (22, 8443, 9443):
                assert not (world(permission) and opens(permission, port)), (group["GroupName"], permission)
    ssh_group_id = cluster.request["Instances"]["AdditionalMasterSecurityGroups"][0]
    ssh = next(group for group in groups if group["GroupId"] == ssh_group_id)
    assert ssh["GroupName"] == emr_network.SSH_GROUP
    assert [(p["IpProtocol"], p["FromPort"], p["ToPort"], emr_network._ranges(p)) for p in ssh["IpPermissions"]] == [
        ("tcp", 22, 22, [CIDR])
    ]
    assert emr_network.EMR_MANAGED_TAG in ssh["Tags"]
    subnet = ec2.describe_subnets(SubnetIds=[cluster.request["Instances"]["Ec2SubnetId"]])["Subnets"][0]
    assert emr_network.EMR_MANAGED_TAG in subnet["Tags"]


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "::/0"])
def test_ssh_open_to_the_world_is_refused_and_creates_nothing(calls, capsys, cidr):
    ec2, client = boto("ec2"), boto("emr")
    before = (len(ec2.describe_security_groups()["SecurityGroups"]), len(client.list_clusters()["Clusters"]))
    code, _, err = run_cli(capsys, "emr", "up", "--bucket", "another-bucket", "--ssh-cidr", cidr)
    assert_usage_error(code, err, "whole internet")
    after = (len(ec2.describe_security_groups()["SecurityGroups"]), len(client.list_clusters()["Clusters"]))
    assert after == before


def test_the_instance_role_reaches_only_the_bucket(cluster):
    iam = boto("iam")
    policy = iam.get_role_policy(RoleName=emr_iam.INSTANCE_ROLE, PolicyName=emr_iam.BUCKET_POLICY)["PolicyDocument"]
    resources = [
        r for s in policy["Statement"] for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])
    ]
    assert f"arn:aws:s3:::{BUCKET}" in resources
    assert f"arn:aws:s3:::{BUCKET}/*" in resources
    assert all(r == f"arn:aws:s3:::{BUCKET}" or r.startswith(f"arn:aws:s3:::{BUCKET}/") for r in resources)
    actions = [a for s in policy["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])]
    assert all(action.startswith("s3:") and "*" not in action for action in actions)
    assert {s["Effect"] for s in policy["Statement"]} == {"Allow"}
    bucket = f"arn:aws:s3:::{BUCKET}"
    assert allowed(policy, "s3:ListBucket", bucket)
    for prefix in ("processed", "logs", "notebooks"):  # what steps, clusters and notebooks write
        for action in ("s3:PutObject", "s3:DeleteObject", "s3:GetObject"):
            assert allowed(policy, action, f"{bucket}/{prefix}/run1/part-0.parquet"), (action, prefix)
    for key in (
        "raw/fruits/Test/Kiwi/1.jpg",
        "code/emr_step.py",
        BOOTSTRAP_KEY,
        "processed",
        "processedx/a",
        "jupyter/x",
    ):
        assert allowed(policy, "s3:GetObject", f"{bucket}/{key}")
        for action in ("s3:PutObject", "s3:DeleteObject"):  # inputs, code and the bootstrap stay read-only
            assert not allowed(policy, action, f"{bucket}/{key}"), (action, key)
    for action in ("s3:DeleteBucket", "s3:PutBucketPolicy", "s3:PutBucketAcl", "s3:PutObjectAcl"):
        assert not allowed(policy, action, bucket)
        assert not allowed(policy, action, f"{bucket}/processed/a")
    for action in ("s3:GetObject", "s3:PutObject", "s3:ListBucket"):  # no other bucket
        assert not allowed(policy, action, "arn:aws:s3:::another-bucket/processed/a")
        assert not allowed(policy, action, "arn:aws:s3:::another-bucket")

    ec2_trust = iam.get_role(RoleName=emr_iam.INSTANCE_ROLE)["Role"]["AssumeRolePolicyDocument"]
    assert ec2_trust["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    service = iam.get_role(RoleName=emr_iam.SERVICE_ROLE)["Role"]["AssumeRolePolicyDocument"]["Statement"][0]
    assert service["Principal"] == {"Service": "elasticmapreduce.amazonaws.com"}
    assert service["Condition"]["StringEquals"] == {"aws:SourceAccount": ACCOUNT}
    attached = iam.list_attached_role_policies(RoleName=emr_iam.SERVICE_ROLE)["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == ["arn:aws:iam::aws:policy/service-role/AmazonEMRServicePolicy_v2"]
    pass_role = iam.get_role_policy(RoleName=emr_iam.SERVICE_ROLE, PolicyName=emr_iam.PASS_ROLE_POLICY)[
        "PolicyDocument"
    ]
    assert pass_role["Statement"][0]["Action"] == "iam:PassRole"
    assert pass_role["Statement"][0]["Resource"] == f"arn:aws:iam::{ACCOUNT}:role/{emr_iam.INSTANCE_ROLE}"
    profile = iam.get_instance_profile(InstanceProfileName=emr_iam.INSTANCE_ROLE)["InstanceProfile"]
    assert [role["RoleName"] for role in profile["Roles"]] == [emr_iam.INSTANCE_ROLE]


def expected_step_args(cluster_id: str, fruits_args: list[str]) -> list[str]:
    confs = [
        f"spark.pyspark.python={VENV_PYTHON}",
        f"spark.pyspark.driver.python={VENV_PYTHON}",
        f"spark.yarn.appMasterEnv.PYSPARK_PYTHON={VENV_PYTHON}",
        f"spark.executorEnv.PYSPARK_PYTHON={VENV_PYTHON}",
        "spark.yarn.maxAppAttempts=1",
    ]
    args = ["spark-submit", "--deploy-mode", "cluster"]
    for conf in confs:
        args += ["--conf", conf]
    return [*args, f"s3://{BUCKET}/code/emr_step.py", *fruits_args]


FRUITS_ARGS = ["run", "--input", f"s3://{BUCKET}/raw/fruits", "--output", f"s3://{BUCKET}/processed/r1"]
FRUITS_ARGS += ["--weights", str(WEIGHTS)]  # converted to ONNX here; the nodes have no TensorFlow


def test_run_adds_a_spark_step_with_the_model_converted_here(cluster, weights):
    result = cli("emr", "run", "--cluster-id", cluster.id, "--", *FRUITS_ARGS)
    assert result.code == 0, result.err
    step_id = result.out.strip()
    step = boto("emr").describe_step(ClusterId=cluster.id, StepId=step_id)["Step"]
    assert step["ActionOnFailure"] == "CONTINUE"
    assert step["Config"]["Jar"] == "command-runner.jar"
    model_key = f"code/models/{file_sha256(weights)}.onnx"
    expected = expected_step_args(cluster.id, [*FRUITS_ARGS, "--onnx-model", f"s3://{BUCKET}/{model_key}"])
    assert step["Config"]["Args"] == expected
    uploaded = boto("s3").get_object(Bucket=BUCKET, Key=model_key)["Body"].read()
    assert engines.weights_sha256_of(uploaded, model_key) == file_sha256(weights)
    again = cli("emr", "run", "--cluster-id", cluster.id, "--", *FRUITS_ARGS, "--mode", "overwrite")
    assert again.code == 0, again.err
    versions = boto("s3").list_object_versions(Bucket=BUCKET, Prefix=model_key)["Versions"]
    assert len(versions) == 1  # uploaded once per weights (the bucket keeps every version)
    pca_only = cli("emr", "run", "--cluster-id", cluster.id, "--", "pca", "--input", f"s3://{BUCKET}/processed/r1")
    pca_step = boto("emr").describe_step(ClusterId=cluster.id, StepId=pca_only.out.strip())["Step"]
    assert "--onnx-model" not in pca_step["Config"]["Args"]
    listed = [s["Id"] for s in boto("emr").list_steps(ClusterId=cluster.id)["Steps"]]
    assert {step_id, again.out.strip(), pca_only.out.strip()} <= set(listed)


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--engine", "keras"], "on EMR --engine must be onnx"),
        (["--onnx-model", "/local/model.onnx"], "on EMR --onnx-model must be an s3:// URI"),
    ],
)
def test_run_refuses_what_the_nodes_cannot_do(cluster, capsys, extra, fragment):
    code, _, err = run_cli(capsys, "emr", "run", "--cluster-id", cluster.id, "--", *FRUITS_ARGS, *extra)
    assert_usage_error(code, err, fragment)


def test_run_wait_reports_a_failed_step_with_its_logs(cluster, calls, capsys):
    log = f"s3://{BUCKET}/logs/{cluster.id}/steps/s-1/stderr.gz"
    calls.step_status = {
        "State": "FAILED",
        "FailureDetails": {"Reason": "Unknown Error.", "Message": "exit code 2", "LogFile": log},
    }
    try:
        code, _, err = run_cli(capsys, "emr", "run", "--cluster-id", cluster.id, "--wait", "--", *FRUITS_ARGS)
    finally:
        calls.step_status = None
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert "FAILED: Unknown Error.: exit code 2" in last
    assert f"(logs: {log}; the Spark driver's: s3://{BUCKET}/logs/{cluster.id}/containers/)" in last


def test_run_wait_succeeds_when_the_step_completes(cluster, calls, capsys):
    calls.step_status = {"State": "COMPLETED"}
    try:
        code, out, err = run_cli(capsys, "emr", "run", "--cluster-id", cluster.id, "--wait", "--", *FRUITS_ARGS)
    finally:
        calls.step_status = None
    assert code == 0
    assert out.strip().startswith("s-")
    assert "COMPLETED" in err


def test_run_refuses_local_paths_and_adds_no_step(cluster, capsys):
    before = len(boto("emr").list_steps(ClusterId=cluster.id)["Steps"])
    code, _, err = run_cli(
        capsys, "emr", "run", "--cluster-id", cluster.id, "--", "run", "--input", "data", "--output", "out"
    )
    assert_usage_error(code, err, "--input must be an s3:// URI")
    assert len(boto("emr").list_steps(ClusterId=cluster.id)["Steps"]) == before


def test_status_shows_state_steps_and_logs(cluster, capsys):
    for _ in range(2):
        assert cli("emr", "run", "--cluster-id", cluster.id, "--", *FRUITS_ARGS).code == 0
    code, out, _ = run_cli(capsys, "emr", "status", "--cluster-id", cluster.id)
    assert code == 0
    state = boto("emr").describe_cluster(ClusterId=cluster.id)["Cluster"]["Status"]["State"]
    assert state == "RUNNING"  # moto: running its (never ending) steps
    assert out.splitlines()[0] == f"cluster {cluster.id} (fruits): RUNNING"
    assert f"logs      s3://{BUCKET}/logs/{cluster.id}/" in out
    assert "core m5.xlarge x2 (on_demand)" in out
    steps = boto("emr").list_steps(ClusterId=cluster.id)["Steps"]
    assert len(steps) >= 2
    assert f"steps ({len(steps)}, newest first):" in out
    for step in steps:
        assert f"{step['Id']}  {step['Status']['State']:<11} {step['Name']}" in out


def test_ui_prints_the_tunnel_to_the_primary_node(cluster, capsys):
    code, out, _ = run_cli(capsys, "emr", "ui", "--cluster-id", cluster.id)
    assert code == 0
    host = boto("emr").describe_cluster(ClusterId=cluster.id)["Cluster"]["MasterPublicDnsName"]
    forwards = "-L 18080:localhost:18080 -L 8088:localhost:8088 -L 8998:localhost:8998"
    assert f"ssh -i ~/.ssh/{KEY}.pem -N {forwards} hadoop@{host}" in out
    for url in ("http://localhost:18080", "http://localhost:8088", "http://localhost:8998"):
        assert url in out
    assert "persistent application UIs" in out


def test_clone_then_up_round_trips_to_the_same_request(cluster, calls, wheel, tmp_path):
    spec = tmp_path / "spec.json"
    result = cli("emr", "clone", cluster.id, "--output", spec)
    assert result.code == 0, result.err
    cloned = json.loads(spec.read_text())
    emr_spec.validate_request(cloned)
    assert cloned["AutoTerminationPolicy"] == {"IdleTimeout": 3600}
    again = cli("emr", "up", "--spec", spec, "--ssh-cidr", CIDR, "--wheel", wheel, "--no-wait")
    assert again.code == 0, again.err
    assert "created" not in again.err  # roles and security group were there already
    assert calls.requests[again.out.strip()] == cluster.request


def test_down_terminates_then_refuses_a_terminated_cluster(cluster, wheel, capsys):
    started = cli("emr", "up", "--bucket", BUCKET, "--ssh-cidr", CIDR, "--wheel", wheel, "--no-wait")
    assert started.code == 0, started.err
    cluster_id = started.out.strip()
    code, out, _ = run_cli(capsys, "emr", "down")  # the remembered cluster
    assert code == 0
    assert out.strip() == f"cluster {cluster_id} TERMINATED"
    assert boto("emr").describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["State"] == "TERMINATED"
    code, _, err = run_cli(capsys, "emr", "down", "--cluster-id", cluster_id)
    assert_usage_error(code, err, f"cluster {cluster_id} is already TERMINATED")
    code, _, err = run_cli(capsys, "emr", "run", "--cluster-id", cluster_id, "--", *FRUITS_ARGS)
    assert_usage_error(code, err, "already TERMINATED")


def test_unknown_bucket_is_one_line(calls, wheel, capsys):
    code, _, err = run_cli(capsys, "emr", "up", "--bucket", "no-such-bucket-here", "--ssh-cidr", CIDR, "--wheel", wheel)
    assert_usage_error(code, err, "bucket s3://no-such-bucket-here not found")


def test_unknown_cluster_is_one_line(calls, capsys):
    code, _, err = run_cli(capsys, "emr", "status", "--cluster-id", "j-NOSUCHCLUSTER")
    assert_usage_error(code, err, "j-NOSUCHCLUSTER")


def test_missing_credentials_are_one_line(calls, wheel, capsys, monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    runs = len(calls.sent["RunJobFlow"])
    code, _, err = run_cli(capsys, "emr", "status", "--cluster-id", "j-ANY")
    assert_usage_error(code, err, "no AWS credentials found")
    code, _, err = run_cli(capsys, "emr", "up", "--bucket", BUCKET, "--ssh-cidr", CIDR, "--wheel", wheel)
    assert_usage_error(code, err, "no AWS credentials found")
    assert len(calls.sent["RunJobFlow"]) == runs


def write_manifest(path: Path, **fields) -> Path:
    path.write_text(json.dumps({"parameters": {"master": fields.pop("master", None)}, **fields}))
    return path


def test_cost_from_a_known_manifest(capsys, tmp_path):
    manifest = write_manifest(tmp_path / "manifest.json", images_per_second=120.0, master="local[2]")
    code, out, _ = run_cli(capsys, "emr", "cost", "--images", 432000, "--manifest", manifest, "--region", "eu-west-1")
    assert code == 0
    # 60 img/s per vCPU x 8 core vCPUs = 480 img/s: 900 s; + 15 min start-up + 1 h idle = 1.5 h
    # at 3 x m5.xlarge (0.214 EC2 + 0.048 EMR) = 0.786 $/h
    assert "hours: start-up 0.25 + featurize 0.25 + idle timeout 1.00 = 1.50 h" in out
    assert "estimated cost: $1.18 for 432000 images; $0.39 if you run `fruits emr down`" in out
    assert "0.786" in out
    assert "as of 2024-06-01" in out


def test_cost_needs_the_cores_of_a_run_that_does_not_record_them(capsys, tmp_path):
    manifest = write_manifest(tmp_path / "manifest.json", images_per_second=120.0, master="local[*]")
    code, _, err = run_cli(capsys, "emr", "cost", "--images", 1000, "--manifest", manifest)
    assert_usage_error(code, err, "--vcpus-of-run")
    code, out, _ = run_cli(
        capsys, "emr", "cost", "--images", 1000, "--manifest", manifest, "--vcpus-of-run", 4, "--core-count", 4
    )
    assert code == 0
    assert "30.0 images/s per vCPU" in out
    assert "x 16 worker vCPUs = 480 images/s" in out


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--images", "0"], "must be >= 1"),
        (["--images", "10", "--images-per-vcpu-second", "-1"], "must be > 0"),
        (["--images", "10", "--vcpus-of-run", "0"], "must be >= 1"),
    ],
)
def test_cost_refuses_numbers_that_make_no_sense(capsys, args, fragment):
    assert_usage_error(*run_cli(capsys, "emr", "cost", *args)[::2], fragment)


def test_cost_default_throughput_is_the_conservative_one(capsys):
    code, out, _ = run_cli(capsys, "emr", "cost", "--images", 100, "--region", "us-east-1", "--idle-timeout", 0)
    assert code == 0
    assert "50.0 images/s per vCPU (conservative default" in out
    assert "idle timeout 0.00" in out
    assert "0.720" in out  # 3 x (0.192 + 0.048) in us-east-1


def managed_policy_document(name: str) -> dict:
    """An AWS managed policy's document, as moto's IAM (loaded with AWS's own) serves it."""
    iam = boto("iam")
    arn = f"arn:aws:iam::aws:policy/service-role/{name}"
    version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    return iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]


def tag_context(prefix: str, tags: list[dict]) -> dict[str, str]:
    return {f"aws:{prefix}/{tag['Key']}": tag["Value"] for tag in tags}


def launch_requests(request: dict) -> list[tuple[str, str, dict]]:
    """(action, resource ARN, condition context) of every EC2 call EMR makes with the
    service role to launch this cluster (tests/emr_policy_facts.py), with the tags
    the subnet and security groups really carry on the moto server."""
    ec2, region = boto("ec2"), "eu-west-1"
    instances = request["Instances"]
    subnet = ec2.describe_subnets(SubnetIds=[instances["Ec2SubnetId"]])["Subnets"][0]
    group_ids = [instances[field] for field in emr_spec.MANAGED_GROUPS.values() if field in instances]
    group_ids += instances.get("AdditionalMasterSecurityGroups", [])
    groups = ec2.describe_security_groups(GroupIds=group_ids)["SecurityGroups"]
    existing = {
        "subnet": [(subnet["SubnetId"], subnet.get("Tags", []))],
        "security-group": [(group["GroupId"], group.get("Tags", [])) for group in groups],
    }
    calls = []
    for fact in emr_policy_facts.LAUNCH:
        for action in fact.actions:
            if fact.needs == "ResourceTag":
                for resource_id, tags in existing[fact.resource]:
                    arn = f"arn:aws:ec2:{region}:{ACCOUNT}:{fact.resource}/{resource_id}"
                    calls.append((action, arn, tag_context("ResourceTag", tags)))
            else:  # a resource being created: the request's tags, which EMR propagates
                arn = f"arn:aws:ec2:{region}:{ACCOUNT}:{fact.resource}/new"
                calls.append((action, arn, tag_context("RequestTag", request.get("Tags", []))))
    return calls


def test_the_service_role_may_make_every_ec2_call_of_the_launch(cluster):
    """moto enforces no IAM condition: AmazonEMRServicePolicy_v2's are evaluated here."""
    policy = managed_policy_document("AmazonEMRServicePolicy_v2")
    calls = launch_requests(cluster.request)
    assert len(calls) >= 20
    assert [
        (action, resource) for action, resource, context in calls if not allowed(policy, action, resource, context)
    ] == []
    # EMR creates no default security group: in this untagged VPC it may not, so the request names its groups.
    assert {"EmrManagedMasterSecurityGroup", "EmrManagedSlaveSecurityGroup"} <= set(cluster.request["Instances"])
    ec2 = boto("ec2")
    subnet = ec2.describe_subnets(SubnetIds=[cluster.request["Instances"]["Ec2SubnetId"]])["Subnets"][0]
    vpc = ec2.describe_vpcs(VpcIds=[subnet["VpcId"]])["Vpcs"][0]
    fact = emr_policy_facts.DEFAULT_GROUPS_IN_VPC
    vpc_arn = f"arn:aws:ec2:eu-west-1:{ACCOUNT}:{fact.resource}/{vpc['VpcId']}"
    assert not allowed(policy, fact.actions[0], vpc_arn, tag_context("ResourceTag", vpc.get("Tags", [])))
    # The managed policy passes only EMR_EC2_DefaultRole; the inline policy passes the project's role.
    role = f"arn:aws:iam::{ACCOUNT}:role/{emr_iam.INSTANCE_ROLE}"
    to_ec2 = {"iam:PassedToService": "ec2.amazonaws.com"}
    pass_role = boto("iam").get_role_policy(RoleName=emr_iam.SERVICE_ROLE, PolicyName=emr_iam.PASS_ROLE_POLICY)
    assert not allowed(policy, "iam:PassRole", role, to_ec2)
    assert allowed(pass_role["PolicyDocument"], "iam:PassRole", role, to_ec2)
    assert not allowed(
        pass_role["PolicyDocument"], "iam:PassRole", role, {"iam:PassedToService": "lambda.amazonaws.com"}
    )


def test_without_the_tag_the_launch_would_be_refused(cluster):
    """The same evaluation fails on a request without the tag, and on an untagged subnet."""
    policy = managed_policy_document("AmazonEMRServicePolicy_v2")
    untagged = json.loads(json.dumps(cluster.request))
    untagged["Tags"] = [tag for tag in untagged["Tags"] if tag["Key"] != emr_policy_facts.TAG]
    refused = {
        (action, resource.split(":")[-1].split("/")[0])
        for action, resource, context in launch_requests(untagged)
        if not allowed(policy, action, resource, context)
    }
    assert ("ec2:RunInstances", "instance") in refused
    assert ("ec2:CreateLaunchTemplate", "launch-template") in refused
    subnet_id = cluster.request["Instances"]["Ec2SubnetId"]
    context = tag_context("ResourceTag", [])
    assert not allowed(policy, "ec2:RunInstances", f"arn:aws:ec2:eu-west-1:{ACCOUNT}:subnet/{subnet_id}", context)
    assert emr_network.EMR_MANAGED_TAG["Key"] == emr_policy_facts.TAG


@pytest.mark.parametrize(
    ("core_type", "fragment"),
    [("t3.micro", "no YARN memory figure for t3.micro"), ("c5.large", "no YARN memory figure")],
)
def test_up_refuses_node_types_it_cannot_size(capsys, core_type, fragment):
    code, _, err = run_cli(
        capsys, "emr", "up", "--dry-run", "--bucket", BUCKET, "--ssh-cidr", CIDR, "--core-type", core_type
    )
    assert_usage_error(code, err, fragment)


def test_executors_fit_the_node_types_with_room_for_the_driver():
    assert {t: emr_memory.executors_per_node(t) for t in ("m5.xlarge", "c5.xlarge", "m6g.2xlarge")} == {
        "m5.xlarge": 2,  # 2 x 4608 MB of 12288, and the driver's 2560 MB still fits beside them
        "c5.xlarge": 1,  # 6144 MB for YARN: memory, not cores, bounds it
        "m6g.2xlarge": 4,
    }
    assert 2 * emr_memory.EXECUTOR_CONTAINER_MB + emr_memory.DRIVER_MB + emr_memory.DRIVER_OVERHEAD_MB <= 12288


def test_notebook_step_runs_papermill_from_and_to_s3(cluster, weights, tmp_path):
    """`emr notebook` adds a papermill step; its command, run here against the moto
    server's S3 (Spark on local[2] instead of YARN), executes the notebook from
    and to s3://."""
    out = tmp_path / "out"
    params = ["-p", "input_uri", str(SAMPLE), "-p", "output_uri", str(out), "-p", "weights", str(weights)]
    result = cli("emr", "notebook", "02_featurization", "--cluster-id", cluster.id, *params)
    assert result.code == 0, result.err
    step = boto("emr").describe_step(ClusterId=cluster.id, StepId=result.out.strip())["Step"]
    bash, flag, script = step["Config"]["Args"]
    assert (step["Config"]["Jar"], bash, flag) == ("command-runner.jar", "bash", "-c")
    environment, _, command = script.partition(" exec ")
    assert "SPARK_HOME=/usr/lib/spark" in environment
    assert 'PYTHONPATH="/usr/lib/spark/python:$(ls /usr/lib/spark/python/lib/py4j-*-src.zip)"' in environment
    papermill, source, executed, *options = shlex.split(command)
    assert papermill == "/opt/fruits/venv/bin/papermill"
    assert source == f"s3://{BUCKET}/notebooks/02_featurization.ipynb"
    assert re.fullmatch(
        rf"s3://{BUCKET}/notebooks/runs/02_featurization-\d{{8}}T\d{{6}}Z/02_featurization\.ipynb", executed
    )
    assert options[options.index("spark_master") + 1] == "yarn"
    uploaded = boto("s3").get_object(Bucket=BUCKET, Key="notebooks/02_featurization.ipynb")["Body"].read()
    assert uploaded == (ROOT / "notebooks" / "02_featurization.ipynb").read_bytes()

    model_uri = options[options.index("onnx_model") + 1]  # notebook 02 gets the model converted here
    assert model_uri == f"s3://{BUCKET}/code/models/{file_sha256(weights)}.onnx"
    model = tmp_path / "model.onnx"  # this machine's Spark cannot read s3://: a local copy of the object
    model.write_bytes(
        boto("s3").get_object(Bucket=BUCKET, Key=model_uri.removeprefix(f"s3://{BUCKET}/"))["Body"].read()
    )
    options[options.index("onnx_model") + 1] = str(model)
    options[options.index("spark_master") + 1] = "local[2]"
    local = [str(Path(sys.executable).with_name("papermill")), source, executed, *options]
    lean = {
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(without_tensorflow(tmp_path / "lean")), os.environ.get("PYTHONPATH")])
        )
    }
    run = subprocess.run(
        local, cwd=tmp_path, env={**os.environ, **lean}, capture_output=True, text=True, timeout=600, check=False
    )
    assert run.returncode == 0, run.stderr[-3000:]
    bucket_key = executed.removeprefix(f"s3://{BUCKET}/")
    notebook = json.loads(boto("s3").get_object(Bucket=BUCKET, Key=bucket_key)["Body"].read())
    assert notebook["metadata"]["papermill"]["parameters"]["input_uri"] == str(SAMPLE)
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["input_files"], manifest["featurized"]) == (36, 36)


def test_notebook_in_emr_studio_sends_a_valid_start_notebook_execution(calls, capsys, monkeypatch):
    """moto has no StartNotebookExecution: botocore's Stubber checks the request
    against the service model and answers it."""
    client = boto3.client("emr", region_name="eu-west-1")
    stubber = Stubber(client)
    cluster = {"Id": "j-STUDIO", "Name": "fruits", "Status": {"State": "WAITING"}, "LogUri": f"s3n://{BUCKET}/logs/"}
    stubber.add_response("describe_cluster", {"Cluster": cluster}, {"ClusterId": "j-STUDIO"})
    expected = {
        "EditorId": "e-WORKSPACE",
        "RelativePath": "03_pca.ipynb",
        "NotebookExecutionName": ANY,
        "NotebookParams": json.dumps({"output_uri": f"s3://{BUCKET}/processed/r1", "pca_variance": 0.9}),  # typed
        "ExecutionEngine": {"Id": "j-STUDIO", "Type": "EMR"},
        "ServiceRole": "EMR_Notebooks_DefaultRole",
        "Tags": [{"Key": "project", "Value": "fruits"}],
    }
    stubber.add_response("start_notebook_execution", {"NotebookExecutionId": "ex-1"}, expected)
    monkeypatch.setattr(aws, "client", lambda service, target: client)
    with stubber:
        code, out, _ = run_cli(
            capsys, "emr", "notebook", "03_pca", "--cluster-id", "j-STUDIO", "--studio-workspace", "e-WORKSPACE",
            "-p", "output_uri", f"s3://{BUCKET}/processed/r1", "-p", "pca_variance", "0.9",
        )  # fmt: skip
        stubber.assert_no_pending_responses()
    assert code == 0
    assert out.strip() == "notebook execution ex-1 started in EMR Studio workspace e-WORKSPACE"


def test_notebook_refuses_a_notebook_it_cannot_run_headless(capsys):
    code, _, err = run_cli(capsys, "emr", "notebook", "04_emr_run", "--cluster-id", "j-ANY")
    assert_usage_error(code, err, "choose one of: 01_local_setup, 02_featurization, 03_pca")


def test_a_spec_without_the_managed_policy_tag_gets_it(capsys, tmp_path):
    """A spec cloned before the tag existed (or edited by hand) still launches."""
    spec = emr_spec.load_spec()
    spec["Tags"] = [tag for tag in spec["Tags"] if tag["Key"] != emr_policy_facts.TAG]
    path = tmp_path / "old-spec.json"
    path.write_text(json.dumps(spec))
    code, out, _ = run_cli(capsys, "emr", "up", "--dry-run", "--spec", path, "--bucket", BUCKET, "--ssh-cidr", CIDR)
    assert code == 0
    assert {"Key": emr_policy_facts.TAG, "Value": "true"} in json.loads(out)["Tags"]


def test_a_private_subnet_gets_a_service_access_group(calls, wheel):
    """EMR tells a private subnet by its route table (no 0.0.0.0/0 to an internet
    gateway); there the EMR-managed groups need a service-access group too."""
    ec2 = boto("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.42.1.0/24")["Subnet"]["SubnetId"]
    assert cli("s3", "init", "--bucket", BUCKET).code == 0
    result = cli(
        "emr", "up", "--bucket", BUCKET, "--ssh-cidr", CIDR, "--subnet-id", subnet, "--wheel", wheel, "--no-wait"
    )
    assert result.code == 0, result.err
    instances = calls.requests[result.out.strip()]["Instances"]
    assert instances["Ec2SubnetId"] == subnet
    (group,) = ec2.describe_security_groups(GroupIds=[instances["ServiceAccessSecurityGroup"]])["SecurityGroups"]
    assert (group["GroupName"], group["VpcId"]) == (emr_network.SERVICE_ACCESS_GROUP, vpc)
    assert emr_network.EMR_MANAGED_TAG in group["Tags"]


def test_notebook_wait_reports_a_failed_step(cluster, calls, capsys):
    calls.step_status = {"State": "FAILED", "FailureDetails": {"Reason": "papermill", "Message": "cell 4 raised"}}
    try:
        code, _, err = run_cli(capsys, "emr", "notebook", "03_pca", "--cluster-id", cluster.id, "--wait")
    finally:
        calls.step_status = None
    assert code == 1
    assert "fruits emr notebook: step s-" in err
    assert "FAILED: papermill: cell 4 raised (logs: " in err.strip().splitlines()[-1]
