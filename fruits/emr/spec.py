"""The cluster spec: ``env/cluster.json``, a RunJobFlow request body with
``${placeholder}`` strings (string.Template) that `fruits emr up` fills from its
options, checked offline against botocore's RunJobFlow input shape."""

from __future__ import annotations

import json
import re
import string
from pathlib import Path

from fruits.aws import parse_s3_uri
from fruits.config import ConfigError
from fruits.emr.memory import spark_memory
from fruits.emr.network import EMR_MANAGED_TAG

ROOT = Path(__file__).resolve().parents[2]  # the checkout: env/, bootstrap/
CLUSTER_SPEC = ROOT / "env" / "cluster.json"
VENV_PYTHON = "/opt/fruits/venv/bin/python"  # made by the bootstrap action on every node
_WHOLE_PLACEHOLDER = re.compile(r"\$\{(\w+)\}")


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


MANAGED_GROUPS = {  # request_values key -> the Instances field it fills
    "primary_security_group": "EmrManagedMasterSecurityGroup",
    "core_security_group": "EmrManagedSlaveSecurityGroup",
    "service_access_security_group": "ServiceAccessSecurityGroup",
}


def build_request(spec: dict, values: dict, args) -> dict:
    """The RunJobFlow request: the spec filled and changed by the options, with the
    tag AmazonEMRServicePolicy_v2 requires, and Spark's memory for the node types."""
    request = apply_options(render(spec, values), args)
    instances = request["Instances"]
    if args.subnet_id:
        instances["Ec2SubnetId"] = args.subnet_id
    group_id = values.get("ssh_security_group")
    if group_id and "${" not in group_id and group_id not in instances.get("AdditionalMasterSecurityGroups", []):
        instances.setdefault("AdditionalMasterSecurityGroups", []).append(group_id)  # a spec from `clone`
    for key, field in MANAGED_GROUPS.items():  # a spec from `clone` names the groups of its cluster
        if key in values:
            instances.pop(field, None)
            if values[key]:
                instances[field] = values[key]
    others = [tag for tag in request.get("Tags", []) if tag.get("Key") != EMR_MANAGED_TAG["Key"]]
    request["Tags"] = [dict(EMR_MANAGED_TAG), *others]  # one value per key: RunJobFlow refuses duplicates
    groups = groups_by_role(request)
    workers = [groups[role]["InstanceType"] for role in ("CORE", "TASK") if role in groups]
    configurations = request.setdefault("Configurations", [])
    defaults = next((c for c in configurations if c.get("Classification") == "spark-defaults"), None)
    if defaults is None:
        defaults = {"Classification": "spark-defaults", "Properties": {}}
        configurations.append(defaults)
    defaults.setdefault("Properties", {}).update(spark_memory(workers))
    validate_request(request)
    return request
