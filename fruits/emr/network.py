"""Where the cluster runs: a subnet, the cluster's EMR-managed security groups,
and a group that lets SSH in from one address range only, all tagged for
AmazonEMRServicePolicy_v2 (its conditions: tests/emr_policy_facts.py)."""

from __future__ import annotations

import ipaddress

from fruits.config import ConfigError

SSH_GROUP = "fruits-emr-ssh"
PRIMARY_GROUP = "fruits-emr-primary"
CORE_GROUP = "fruits-emr-core"
SERVICE_ACCESS_GROUP = "fruits-emr-service-access"
# AmazonEMRServicePolicy_v2 lets EMR use only subnets and security groups with this tag.
EMR_MANAGED_TAG = {"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"}
PROJECT_TAG = {"Key": "project", "Value": "fruits"}


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


def _find_group(ec2, vpc_id: str, name: str) -> dict | None:
    found = ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [name]}, {"Name": "vpc-id", "Values": [vpc_id]}]
    )["SecurityGroups"]
    return found[0] if found else None


def _ensure_tagged_group(ec2, vpc_id: str, name: str, description: str, changes: list[str]) -> dict:
    """The group ``name`` in the VPC, created (or re-tagged) with the tag that
    AmazonEMRServicePolicy_v2 requires of every group EMR launches into."""
    group = _find_group(ec2, vpc_id, name)
    if group is None:
        group_id = ec2.create_security_group(
            GroupName=name,
            Description=description,
            VpcId=vpc_id,
            TagSpecifications=[{"ResourceType": "security-group", "Tags": [EMR_MANAGED_TAG, PROJECT_TAG]}],
        )["GroupId"]
        changes.append(f"created security group {name} ({group_id}) in {vpc_id}")
        return {"GroupId": group_id, "IpPermissions": []}
    if EMR_MANAGED_TAG not in group.get("Tags", []):
        ec2.create_tags(Resources=[group["GroupId"]], Tags=[EMR_MANAGED_TAG, PROJECT_TAG])
        changes.append(f"tagged security group {name} {EMR_MANAGED_TAG['Key']}=true")
    return group


def is_private(ec2, subnet: dict) -> bool:
    """EMR's test: a subnet is public when its route table (its own, else the VPC's
    main one) sends 0.0.0.0/0 to an internet gateway."""
    tables = ec2.describe_route_tables(Filters=[{"Name": "association.subnet-id", "Values": [subnet["SubnetId"]]}])
    routes = (
        tables["RouteTables"]
        or ec2.describe_route_tables(
            Filters=[{"Name": "vpc-id", "Values": [subnet["VpcId"]]}, {"Name": "association.main", "Values": ["true"]}]
        )["RouteTables"]
    )
    return not any(
        route.get("DestinationCidrBlock") == "0.0.0.0/0" and route.get("GatewayId", "").startswith("igw-")
        for table in routes
        for route in table.get("Routes", [])
    )


def ensure_emr_managed_groups(ec2, subnet: dict, changes: list[str]) -> dict[str, str | None]:
    """The cluster's EMR-managed security groups, made here rather than by EMR:
    EMR would create its default groups only in a VPC tagged for its managed
    policy, and could not use untagged default groups that already exist there.
    They start with no inbound rule; EMR adds the rules between the cluster's
    nodes (and, in a private subnet, from the service-access group) itself."""
    vpc_id = subnet["VpcId"]
    primary = _ensure_tagged_group(ec2, vpc_id, PRIMARY_GROUP, "fruits EMR primary node (EMR-managed rules)", changes)
    core = _ensure_tagged_group(ec2, vpc_id, CORE_GROUP, "fruits EMR core and task nodes (EMR-managed rules)", changes)
    service = None
    if is_private(ec2, subnet):
        service = _ensure_tagged_group(
            ec2, vpc_id, SERVICE_ACCESS_GROUP, "fruits EMR service access (private subnet)", changes
        )["GroupId"]
    return {
        "primary_security_group": primary["GroupId"],
        "core_security_group": core["GroupId"],
        "service_access_security_group": service,
    }


def _ranges(permission: dict) -> list[str]:
    return sorted(
        [item["CidrIp"] for item in permission.get("IpRanges", [])]
        + [item["CidrIpv6"] for item in permission.get("Ipv6Ranges", [])]
    )


def ensure_ssh_group(ec2, vpc_id: str, cidr: str, changes: list[str]) -> str:
    """A security group whose only inbound rule is SSH from ``cidr``; returns its id."""
    description = "fruits EMR primary node: SSH from one address range only"
    group = _ensure_tagged_group(ec2, vpc_id, SSH_GROUP, description, changes)
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
