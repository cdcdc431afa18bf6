"""The project's IAM roles, from the documents in ``env/iam/``: the EC2
instance role (+ profile) reaches only the project bucket; the EMR service role
may pass only that role."""

from __future__ import annotations

import json

from fruits.aws import error_code
from fruits.emr.network import PROJECT_TAG
from fruits.emr.spec import ROOT, render

IAM_DIR = ROOT / "env" / "iam"

SERVICE_ROLE = "fruits-emr-service"
INSTANCE_ROLE = "fruits-emr-ec2"  # the EC2 role and its instance profile share the name
BUCKET_POLICY = "fruits-bucket-access"
PASS_ROLE_POLICY = "fruits-pass-instance-role"
EMR_SERVICE_POLICY = "arn:{partition}:iam::aws:policy/service-role/AmazonEMRServicePolicy_v2"


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
