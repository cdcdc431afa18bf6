"""`fruits emr clone`: a RunJobFlow request that recreates a running
cluster, for `fruits emr up --spec`."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from fruits import aws
from fruits.aws import error_code, user_errors
from fruits.config import ConfigError
from fruits.emr.spec import validate_request


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
    """A RunJobFlow request that recreates the cluster, its tags included (the one
    AmazonEMRServicePolicy_v2 requires); `up --spec` makes or finds the groups again."""
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
    for key in (
        "Ec2KeyName",
        "Ec2SubnetId",
        "EmrManagedMasterSecurityGroup",
        "EmrManagedSlaveSecurityGroup",
        "ServiceAccessSecurityGroup",
        "AdditionalMasterSecurityGroups",
        "AdditionalSlaveSecurityGroups",
    ):
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
