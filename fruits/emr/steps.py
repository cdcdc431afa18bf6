"""`fruits` Spark steps on the cluster: spark-submit in cluster mode with the
bootstrap's venv; `run` adds one, `status` lists them with why they failed."""

from __future__ import annotations

import sys

from fruits import aws
from fruits.aws import parse_s3_uri, user_errors
from fruits.config import ConfigError
from fruits.emr.cluster import cluster_target, live_cluster, log_location, reason, wait_for
from fruits.emr.code import ENTRY_KEY, upload_model
from fruits.emr.spec import VENV_PYTHON
from fruits.spark_args import spark_parser

STEP_FAILED = ("FAILED", "CANCELLED", "INTERRUPTED")
FRUITS_SPARK_COMMANDS = ("run", "featurize", "pca")


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


def check_fruits_args(fruits_args: list[str]):
    """Parse the step's `fruits` arguments here, so a typo fails now, not on the cluster."""
    if not fruits_args or fruits_args[0] not in FRUITS_SPARK_COMMANDS:
        raise ConfigError(
            "give the fruits command after --, e.g. `fruits emr run -- run --input s3://B/raw/DATASET "
            "--output s3://B/processed/RUN`"
        )
    parsed = spark_parser().parse_args(fruits_args)
    for option in ("input", "output", "onnx_model"):
        location = getattr(parsed, option, None)
        if location is not None and not location.startswith("s3://"):
            raise ConfigError(f"on EMR --{option.replace('_', '-')} must be an s3:// URI, got {location!r}")
    if getattr(parsed, "engine", "onnx") != "onnx":
        raise ConfigError("on EMR --engine must be onnx: the nodes' lean stack has no TensorFlow")
    return parsed


def with_model(s3, bucket: str, fruits_args: list[str], parsed) -> list[str]:
    """Featurizing steps get the model converted here and uploaded (--onnx-model),
    unless they name one: the nodes never convert, so never need TensorFlow."""
    if parsed.command == "pca" or parsed.onnx_model:
        return fruits_args
    return [*fruits_args, "--onnx-model", upload_model(s3, bucket, parsed.weights)]


def cluster_bucket(cluster: dict) -> str:
    log_uri = cluster.get("LogUri") or ""
    if not log_uri.startswith(("s3://", "s3n://")):
        raise ConfigError(f"cluster {cluster['Id']} has no s3:// LogUri: was it started by `fruits emr up`?")
    return parse_s3_uri(log_uri.replace("s3n://", "s3://", 1))[0]


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
    parsed = check_fruits_args(fruits_args)
    cluster_id, target = cluster_target(args)
    with user_errors(f"emr run on {cluster_id}"):
        emr = aws.client("emr", target)
        cluster = live_cluster(emr, cluster_id)
        bucket = cluster_bucket(cluster)
        fruits_args = with_model(aws.client("s3", target), bucket, fruits_args, parsed)
        step = step_request(bucket, fruits_args, args.conf)
        step_id = emr.add_job_flow_steps(JobFlowId=cluster_id, Steps=[step])["StepIds"][0]
        print(f"step {step_id} added to {cluster_id}", file=sys.stderr)
        return follow_step(emr, cluster, step_id, "run", args)


def follow_step(emr, cluster: dict, step_id: str, command: str, args) -> int:
    """Print the step id; with --wait, first follow the step to its end: exit 1,
    with the reason and the logs, unless it completed."""
    if args.wait:
        done = wait_for(
            lambda: emr.describe_step(ClusterId=cluster["Id"], StepId=step_id)["Step"],
            f"step {step_id}",
            ("COMPLETED", *STEP_FAILED),
            args.timeout,
        )
        state = done["Status"]["State"]
        if state != "COMPLETED":
            print(f"fruits emr {command}: step {step_id} {state}: {step_failure(done, cluster)}", file=sys.stderr)
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
