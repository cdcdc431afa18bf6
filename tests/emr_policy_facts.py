"""What AmazonEMRServicePolicy_v2 requires of the resources a cluster launch touches.

Facts as of 2026-12-02, from the AWS Managed Policy Reference page
"AmazonEMRServicePolicy_v2" (policy version v4, edited 2025-03-03; moto 5.2.1
bundles v6, edited 2026-02-12, with the same EC2 statements) and the EMR
Management Guide, "Service role for Amazon EMR (EMR role)" and "Tagging
resources to use managed policies": the cluster request must carry the user tag
``for-use-with-amazon-emr-managed-policies=true``, which EMR propagates to what
it creates; subnets and security groups that EMR did not create must carry it
themselves.

moto enforces none of this: tests/test_emr.py evaluates the policy document
(read back from the moto server) against the subnet, security groups, VPC and
request tags that `fruits emr up` uses or creates.
"""

from __future__ import annotations

from dataclasses import dataclass

TAG = "for-use-with-amazon-emr-managed-policies"


@dataclass(frozen=True)
class Fact:
    actions: tuple[str, ...]
    resource: str  # the EC2 resource type in the ARN
    needs: str  # "ResourceTag": on the existing resource; "RequestTag": on the request (the cluster's tags)


LAUNCH = (
    Fact(
        ("ec2:RunInstances", "ec2:CreateFleet", "ec2:CreateLaunchTemplate", "ec2:CreateNetworkInterface"),
        "subnet",
        "ResourceTag",
    ),
    Fact(
        ("ec2:RunInstances", "ec2:CreateFleet", "ec2:CreateLaunchTemplate", "ec2:CreateNetworkInterface"),
        "security-group",
        "ResourceTag",
    ),
    Fact(("ec2:CreateLaunchTemplate",), "launch-template", "RequestTag"),
    Fact(("ec2:RunInstances", "ec2:CreateFleet"), "instance", "RequestTag"),
    Fact(("ec2:RunInstances", "ec2:CreateFleet"), "volume", "RequestTag"),
    Fact(("ec2:CreateNetworkInterface",), "network-interface", "RequestTag"),
    Fact(
        (
            "ec2:AuthorizeSecurityGroupIngress",
            "ec2:AuthorizeSecurityGroupEgress",
            "ec2:RevokeSecurityGroupIngress",
            "ec2:RevokeSecurityGroupEgress",
        ),
        "security-group",
        "ResourceTag",
    ),
)
# Only when EMR has to create its default managed security groups in the VPC
# (`fruits emr up` passes its own, so it does not): the VPC must carry the tag.
DEFAULT_GROUPS_IN_VPC = Fact(("ec2:CreateSecurityGroup",), "vpc", "ResourceTag")
