"""The project's S3 bucket: a private, encrypted layout, and resumable transfers.

Layout (raw inputs apart from processed results)::

    s3://B/raw/<dataset>/...       input images, as uploaded
    s3://B/processed/<run-id>/...  features, pca, manifest of each run
    s3://B/code/                   the package wheel, entry script, the nodes' lock file, models/
    s3://B/bootstrap/              the EMR bootstrap action
    s3://B/logs/                   EMR logs (the cluster's LogUri)
    s3://B/notebooks/              notebooks and their executed copies
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from fruits.argtypes import positive_int
from fruits.aws import AwsTarget, add_aws_options, client, error_code, parse_s3_uri, target_from_args, user_errors
from fruits.config import ConfigError
from fruits.output import MANIFEST

LAYOUT = ("raw/", "processed/", "code/", "bootstrap/", "logs/", "notebooks/")
BLOCK_PUBLIC_ACCESS = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}


# AWS's S3 security guidance, beyond Block Public Access and default encryption:
# no request without TLS, versions kept (an overwrite or a bad run loses nothing),
# and lifecycle rules so that kept versions and logs do not grow without end.
TLS_ONLY_SID = "FruitsDenyRequestsWithoutTls"
NONCURRENT_DAYS = 30
LOG_DAYS = 90
LIFECYCLE_RULES = (
    {
        "ID": "fruits-expire-noncurrent-versions",
        "Filter": {"Prefix": ""},
        "Status": "Enabled",
        "NoncurrentVersionExpiration": {"NoncurrentDays": NONCURRENT_DAYS},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
    },
    {"ID": "fruits-expire-logs", "Filter": {"Prefix": "logs/"}, "Status": "Enabled", "Expiration": {"Days": LOG_DAYS}},
)


def partition_of(region: str) -> str:
    return "aws-cn" if region.startswith("cn-") else "aws-us-gov" if region.startswith("us-gov-") else "aws"


def tls_only_statement(bucket: str, partition: str = "aws") -> dict:
    arn = f"arn:{partition}:s3:::{bucket}"
    return {
        "Sid": TLS_ONLY_SID,
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [arn, f"{arn}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


def _ensure_tls_only(s3, bucket: str, partition: str) -> bool:
    """Add (or correct) the TLS-only statement, keeping the policy's other statements."""
    try:
        policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    except Exception as exc:
        if error_code(exc) != "NoSuchBucketPolicy":
            raise
        policy = {"Version": "2012-10-17", "Statement": []}
    wanted = tls_only_statement(bucket, partition)
    others = [statement for statement in policy["Statement"] if statement.get("Sid") != TLS_ONLY_SID]
    if wanted in policy["Statement"]:
        return False
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({**policy, "Statement": [*others, wanted]}))
    return True


def _ensure_lifecycle(s3, bucket: str) -> bool:
    """The project's lifecycle rules, keeping rules of other IDs."""
    try:
        rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    except Exception as exc:
        if error_code(exc) != "NoSuchLifecycleConfiguration":
            raise
        rules = []
    ours = {rule["ID"] for rule in LIFECYCLE_RULES}
    current = {rule["ID"]: rule for rule in rules if rule.get("ID") in ours}
    if all(current.get(rule["ID"], {}).items() >= rule.items() for rule in LIFECYCLE_RULES):
        return False
    others = [rule for rule in rules if rule.get("ID") not in ours]
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [*others, *LIFECYCLE_RULES]})
    return True


def encryption_rule(kms_key: str | None) -> dict:
    default = {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": kms_key} if kms_key else {"SSEAlgorithm": "AES256"}
    return {"ApplyServerSideEncryptionByDefault": default, "BucketKeyEnabled": bool(kms_key)}


def init_bucket(bucket: str, target: AwsTarget, kms_key: str | None = None) -> list[str]:
    """Create or bring ``bucket`` to the project's settings and layout; returns
    what changed (nothing on a second run)."""
    s3 = client("s3", target)
    changes = []
    with user_errors(f"s3 init {bucket}"):
        try:
            s3.head_bucket(Bucket=bucket)
        except Exception as exc:
            if error_code(exc) not in ("404", "NoSuchBucket", "NotFound"):
                raise
            region = target.resolved_region
            location = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
            s3.create_bucket(Bucket=bucket, **location)
            changes.append(f"created bucket s3://{bucket} in {region}")
        try:
            current = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        except Exception as exc:
            if error_code(exc) != "NoSuchPublicAccessBlockConfiguration":
                raise
            current = {}
        if current != BLOCK_PUBLIC_ACCESS:
            s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=BLOCK_PUBLIC_ACCESS)
            changes.append("blocked all public access")
        rule = encryption_rule(kms_key)
        rules = encryption_rules(s3, bucket)
        wanted = rule["ApplyServerSideEncryptionByDefault"]
        if not rules or rules[0].get("ApplyServerSideEncryptionByDefault") != wanted:
            s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": [rule]})
            changes.append(f"default encryption {wanted['SSEAlgorithm']}")
        if s3.get_bucket_versioning(Bucket=bucket).get("Status") != "Enabled":
            s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
            changes.append("versioning enabled (overwritten or deleted objects stay recoverable)")
        if _ensure_tls_only(s3, bucket, partition_of(target.resolved_region)):
            changes.append("bucket policy: requests without TLS are denied")
        if _ensure_lifecycle(s3, bucket):
            changes.append(f"lifecycle: old versions expire after {NONCURRENT_DAYS} days, logs/ after {LOG_DAYS} days")
        for prefix in LAYOUT:
            if not s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("KeyCount"):
                s3.put_object(Bucket=bucket, Key=prefix, Body=b"")
                changes.append(f"created s3://{bucket}/{prefix}")
    return changes


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def same_object(path: Path, remote: dict, *, etag_is_md5: bool = True) -> bool:
    """Same size, and same MD5 where the ETag is one (single-part, and not
    encrypted with SSE-KMS, whose ETags are not MD5s)."""
    if path.stat().st_size != remote["Size"]:
        return False
    etag = remote.get("ETag", "").strip('"')
    if not etag_is_md5 or "-" in etag or len(etag) != 32:
        return True
    return file_md5(path) == etag


def encryption_rules(s3, bucket: str) -> list[dict]:
    """The bucket's default-encryption rules ([] if it has none)."""
    try:
        return s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    except Exception as exc:
        if error_code(exc) != "ServerSideEncryptionConfigurationNotFoundError":
            raise
        return []


def etags_are_md5s(s3, bucket: str) -> bool:
    """Whether the bucket's single-part ETags are MD5s: not under default SSE-KMS.
    Without s3:GetEncryptionConfiguration (a read-only role), assumed: at worst an
    ETag that is no MD5 fails to match and the file is transferred again."""
    try:
        rules = encryption_rules(s3, bucket)
    except Exception as exc:
        if error_code(exc) != "AccessDenied":
            raise
        return True
    defaults = [rule["ApplyServerSideEncryptionByDefault"] for rule in rules]
    return not any(default["SSEAlgorithm"].startswith("aws:kms") for default in defaults)


def list_objects(s3, bucket: str, prefix: str) -> dict[str, dict]:
    objects = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            objects[item["Key"]] = item
    return objects


@dataclass
class Transfer:
    """Counts of one upload or download, updated from worker threads."""

    done: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)
    bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, *, size: int = 0, skipped: bool = False, failure: str | None = None) -> None:
        with self._lock:
            if failure:
                self.failed.append(failure)
            elif skipped:
                self.skipped += 1
            else:
                self.done += 1
                self.bytes += size

    def summary(self, verb: str) -> str:
        text = f"{verb} {self.done} files ({self.bytes / 1e6:.1f} MB), skipped {self.skipped} already there"
        return text + (f", {len(self.failed)} failed (first: {self.failed[0]})" if self.failed else "")


def _run(jobs: list[Callable[[], None]], transfer: Transfer, workers: int, label: str, progress: bool) -> None:
    last = 0.0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for finished, _ in enumerate(as_completed(pool.submit(job) for job in jobs), 1):
            now = time.monotonic()
            if progress and (now - last > 1 or finished == len(jobs)):
                last = now
                width = 30
                filled = width * finished // max(len(jobs), 1)
                bar = "#" * filled + "." * (width - filled)
                print(f"\r{label} [{bar}] {finished}/{len(jobs)}", end="", file=sys.stderr, flush=True)
    if progress and jobs:
        print(file=sys.stderr)


def upload(local: str, uri: str, target: AwsTarget, workers: int = 16, progress: bool = True) -> Transfer:
    """Upload a folder's files under an s3:// prefix, skipping the ones already
    there; re-running after an interruption uploads only what is missing."""
    source = Path(local).expanduser()
    if not source.is_dir():
        raise ConfigError(f"not a folder: {local}")
    bucket, prefix = parse_s3_uri(uri)
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    files = sorted(path for path in source.rglob("*") if path.is_file())
    s3 = client("s3", target)
    with user_errors(f"s3 upload to {uri}"):
        existing = list_objects(s3, bucket, prefix)
        etag_is_md5 = etags_are_md5s(s3, bucket)
    transfer = Transfer()

    def send(path: Path) -> Callable[[], None]:
        key = prefix + path.relative_to(source).as_posix()

        def job() -> None:
            remote = existing.get(key)
            if remote and same_object(path, remote, etag_is_md5=etag_is_md5):
                transfer.count(skipped=True)
                return
            try:
                s3.upload_file(str(path), bucket, key)
                transfer.count(size=path.stat().st_size)
            except Exception as exc:  # counted and reported; the rest goes on
                transfer.count(failure=f"{path}: {error_code(exc) or type(exc).__name__}")

        return job

    _run([send(path) for path in files], transfer, workers, "uploading", progress)
    return transfer


def download(uri: str, local: str, target: AwsTarget, workers: int = 16, progress: bool = True) -> Transfer:
    """Download every object under an s3:// prefix into a local folder, skipping
    files already there with the same size and MD5 (``same_object``): a stale
    file of the same size, such as an earlier run's manifest, is replaced."""
    bucket, prefix = parse_s3_uri(uri)
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    s3 = client("s3", target)
    with user_errors(f"s3 download from {uri}"):
        objects = {key: item for key, item in list_objects(s3, bucket, prefix).items() if not key.endswith("/")}
        etag_is_md5 = etags_are_md5s(s3, bucket)
    if not objects:
        raise ConfigError(f"nothing under {uri}")
    destination = Path(local).expanduser()
    transfer = Transfer()

    def fetch(key: str, item: dict) -> Callable[[], None]:
        path = destination / key[len(prefix) :]

        def job() -> None:
            if path.is_file() and same_object(path, item, etag_is_md5=etag_is_md5):
                transfer.count(skipped=True)
                return
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
                s3.download_file(bucket, key, str(partial))
                partial.replace(path)  # a file is either whole or absent
                transfer.count(size=item["Size"])
            except Exception as exc:
                transfer.count(failure=f"s3://{bucket}/{key}: {error_code(exc) or type(exc).__name__}")

        return job

    manifests = {key for key in objects if key.rsplit("/", 1)[-1] == MANIFEST}
    data = [fetch(key, item) for key, item in objects.items() if key not in manifests]
    _run(data, transfer, workers, "downloading", progress)
    if not transfer.failed:  # a manifest marks complete results: it comes last, and only after all of them
        _run([fetch(key, objects[key]) for key in sorted(manifests)], transfer, workers, "manifests", progress)
    return transfer


def add_commands(commands) -> None:
    """`fruits s3 init|upload|download`."""
    text = "the project's S3 bucket: create it, upload images, download results"
    s3 = commands.add_parser("s3", help=text, description=text)
    actions = s3.add_subparsers(dest="action", required=True, metavar="ACTION")
    init = actions.add_parser("init", help="create the bucket (private, encrypted) and its layout; idempotent")
    init.add_argument("--bucket", required=True)
    init.add_argument("--kms-key", help="SSE-KMS key id or ARN (default: SSE-S3)")
    init.set_defaults(handler=_init)
    upload_parser = actions.add_parser(
        "upload", help="upload a local folder under s3://B/raw/<dataset>/ (skips what is there; resumable)"
    )
    upload_parser.add_argument("local", help="local folder")
    upload_parser.add_argument("uri", help="s3://BUCKET/raw/DATASET/")
    download_parser = actions.add_parser("download", help="download results, e.g. s3://B/processed/<run-id>/")
    download_parser.add_argument("uri", help="s3://BUCKET/PREFIX/")
    download_parser.add_argument("local", help="local folder")
    for parser, handler in ((upload_parser, _upload), (download_parser, _download)):
        parser.add_argument(
            "--workers", type=positive_int, default=16, help="parallel transfers (default: %(default)s)"
        )
        parser.add_argument("--quiet", action="store_true", help="no progress bar")
        parser.set_defaults(handler=handler)
    for parser in (init, upload_parser, download_parser):
        add_aws_options(parser)


def _init(args) -> int:
    changes = init_bucket(args.bucket, target_from_args(args), args.kms_key)
    print("\n".join(changes) if changes else f"s3://{args.bucket} already set up: nothing changed")
    return 0


def _transfer_result(transfer: Transfer, verb: str) -> int:
    print(transfer.summary(verb))
    return 1 if transfer.failed else 0


def _upload(args) -> int:
    transfer = upload(args.local, args.uri, target_from_args(args), args.workers, not args.quiet)
    return _transfer_result(transfer, "uploaded")


def _download(args) -> int:
    transfer = download(args.uri, args.local, target_from_args(args), args.workers, not args.quiet)
    return _transfer_result(transfer, "downloaded")
