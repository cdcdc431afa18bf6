"""`fruits emr cost`: hours and list-price cost of featurizing N images on the
spec's nodes, from the dated price table ``env/prices.json``."""

from __future__ import annotations

import json
import re
from pathlib import Path

from fruits import aws
from fruits.config import ConfigError
from fruits.emr.spec import ROOT, apply_options, groups_by_role, load_spec

PRICES = ROOT / "env" / "prices.json"
# ~60 images/s per core measured end to end (onnx engine, fp32) on a 2-core x86
# VM; 50 leaves room for S3 reads and YARN overhead.
DEFAULT_IMAGES_PER_VCPU_SECOND = 50.0
DEFAULT_STARTUP_MINUTES = 15.0  # provisioning + bootstrap (pip installs the stack) + applications


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
