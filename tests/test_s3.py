"""`fruits s3 ...` against moto's server, through boto3 and the CLI."""

from __future__ import annotations

import json

import boto3
import pytest

from fruits import s3
from fruits.aws import AwsTarget
from tests.iam_policy import decision
from tests.test_cli import assert_usage_error, run_cli


@pytest.fixture
def bucket(moto_endpoint, request) -> str:
    return f"fruits-{request.node.name.lower().replace('_', '-')[:40]}"


def s3_client(endpoint):
    return boto3.client("s3", endpoint_url=endpoint)


def test_init_creates_a_private_encrypted_bucket_with_the_layout(moto_endpoint, bucket, capsys):
    code, out, _ = run_cli(capsys, "s3", "init", "--bucket", bucket, "--endpoint-url", moto_endpoint)
    assert code == 0
    assert f"created bucket s3://{bucket} in eu-west-1" in out
    client = s3_client(moto_endpoint)
    assert client.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"] == s3.BLOCK_PUBLIC_ACCESS
    rule = client.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert client.get_bucket_location(Bucket=bucket)["LocationConstraint"] == "eu-west-1"
    keys = {item["Key"] for item in client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert keys == set(s3.LAYOUT)
    assert client.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    rules = {rule["ID"]: rule for rule in client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    assert rules["fruits-expire-noncurrent-versions"]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 30}
    assert rules["fruits-expire-noncurrent-versions"]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}
    assert rules["fruits-expire-logs"]["Expiration"] == {"Days": 90}
    assert rules["fruits-expire-logs"]["Filter"] == {"Prefix": "logs/"}


def test_init_denies_every_request_without_tls(moto_endpoint, bucket):
    """moto stores the bucket policy but enforces none of it: evaluated here."""
    s3.init_bucket(bucket, AwsTarget())
    policy = json.loads(s3_client(moto_endpoint).get_bucket_policy(Bucket=bucket)["Policy"])
    for action, resource in (
        ("s3:GetObject", f"arn:aws:s3:::{bucket}/raw/x.jpg"),
        ("s3:PutObject", f"arn:aws:s3:::{bucket}/processed/r/part-0.parquet"),
        ("s3:ListBucket", f"arn:aws:s3:::{bucket}"),
        ("s3:DeleteObject", f"arn:aws:s3:::{bucket}/logs/j-1/x"),
    ):
        assert decision(policy, action, resource, {"aws:SecureTransport": "false"}) == "Deny"
        assert decision(policy, action, resource, {"aws:SecureTransport": "true"}) == "ImplicitDeny"  # roles allow
    assert decision(policy, "s3:GetObject", "arn:aws:s3:::other/x", {"aws:SecureTransport": "false"}) == "ImplicitDeny"


def test_init_keeps_the_bucket_policy_and_lifecycle_rules_of_others(moto_endpoint, bucket):
    client = s3_client(moto_endpoint)
    client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    theirs = {"Sid": "TheirAuditRole", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}}
    theirs |= {"Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/*"}
    client.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [theirs]}))
    their_rule = {"ID": "theirs", "Filter": {"Prefix": "tmp/"}, "Status": "Enabled", "Expiration": {"Days": 1}}
    client.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [their_rule]})
    changes = s3.init_bucket(bucket, AwsTarget())
    assert "bucket policy: requests without TLS are denied" in changes
    statements = json.loads(client.get_bucket_policy(Bucket=bucket)["Policy"])["Statement"]
    assert [statement["Sid"] for statement in statements] == ["TheirAuditRole", s3.TLS_ONLY_SID]
    rules = [rule["ID"] for rule in client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]]
    assert rules == ["theirs", "fruits-expire-noncurrent-versions", "fruits-expire-logs"]
    assert s3.init_bucket(bucket, AwsTarget()) == []


def test_init_twice_changes_nothing(moto_endpoint, bucket, capsys):
    assert run_cli(capsys, "s3", "init", "--bucket", bucket)[0] == 0
    code, out, _ = run_cli(capsys, "s3", "init", "--bucket", bucket)
    assert code == 0
    assert out.strip() == f"s3://{bucket} already set up: nothing changed"


def test_init_with_a_kms_key_uses_sse_kms(moto_endpoint, bucket):
    changes = s3.init_bucket(bucket, AwsTarget(), kms_key="alias/fruits")
    assert "default encryption aws:kms" in changes
    rule = s3_client(moto_endpoint).get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
    assert rule["Rules"][0]["ApplyServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": "alias/fruits",
    }


def make_images(folder, count: int) -> list:
    paths = []
    for i in range(count):
        path = folder / "Training" / f"Class {i % 3}" / f"{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes([i]) * (100 + i))
        paths.append(path)
    return paths


def test_upload_skips_objects_already_there_and_resumes(moto_endpoint, bucket, tmp_path, capsys):
    s3.init_bucket(bucket, AwsTarget())
    local = tmp_path / "images"
    paths = make_images(local, 9)
    uri = f"s3://{bucket}/raw/demo/"
    client = s3_client(moto_endpoint)
    # An interrupted upload: 4 of 9 files made it, one of them only partly (wrong size).
    for path in paths[:4]:
        client.put_object(Bucket=bucket, Key=f"raw/demo/{path.relative_to(local).as_posix()}", Body=path.read_bytes())
    client.put_object(Bucket=bucket, Key=f"raw/demo/{paths[3].relative_to(local).as_posix()}", Body=b"cut")

    code, out, _ = run_cli(capsys, "s3", "upload", local, uri, "--quiet")
    assert code == 0
    assert "uploaded 6 files" in out
    assert "skipped 3 already there" in out
    listed = {
        item["Key"]: item["Size"] for item in client.list_objects_v2(Bucket=bucket, Prefix="raw/demo/")["Contents"]
    }
    assert listed == {f"raw/demo/{p.relative_to(local).as_posix()}": p.stat().st_size for p in paths}

    code, out, _ = run_cli(capsys, "s3", "upload", local, uri, "--quiet")
    assert (code, out.split(",")[0]) == (0, "uploaded 0 files (0.0 MB)")


def test_upload_replaces_an_object_of_the_same_size_but_other_content(moto_endpoint, bucket, tmp_path):
    s3.init_bucket(bucket, AwsTarget())
    local = tmp_path / "images"
    (path,) = make_images(local, 1)
    key = f"raw/demo/{path.relative_to(local).as_posix()}"
    client = s3_client(moto_endpoint)
    client.put_object(Bucket=bucket, Key=key, Body=b"x" * path.stat().st_size)
    transfer = s3.upload(str(local), f"s3://{bucket}/raw/demo", AwsTarget(), progress=False)
    assert (transfer.done, transfer.skipped) == (1, 0)
    assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == path.read_bytes()


def test_download_writes_the_prefix_and_skips_what_is_there(moto_endpoint, bucket, tmp_path, capsys):
    s3.init_bucket(bucket, AwsTarget())
    local = tmp_path / "images"
    paths = make_images(local, 5)
    s3.upload(str(local), f"s3://{bucket}/processed/run-1", AwsTarget(), progress=False)
    target = tmp_path / "back"
    code, out, _ = run_cli(capsys, "s3", "download", f"s3://{bucket}/processed/run-1/", target, "--quiet")
    assert (code, out.split(",")[0]) == (0, f"downloaded 5 files ({sum(p.stat().st_size for p in paths) / 1e6:.1f} MB)")
    for path in paths:
        assert (target / path.relative_to(local)).read_bytes() == path.read_bytes()
    (target / "notes.txt").write_text("mine")
    code, out, _ = run_cli(capsys, "s3", "download", f"s3://{bucket}/processed/run-1/", target, "--quiet")
    assert "skipped 5 already there" in out
    assert (target / "notes.txt").read_text() == "mine"  # local files are never deleted


def test_download_replaces_a_local_file_of_the_same_size_but_other_content(moto_endpoint, bucket, tmp_path):
    """An earlier run's manifest.json in the same folder: same size, other run id."""
    client = s3_client(moto_endpoint)
    client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    client.put_object(Bucket=bucket, Key="run-2/manifest.json", Body=b'{"run_id": "run-2"}')
    stale = tmp_path / "back" / "manifest.json"
    stale.parent.mkdir()
    stale.write_bytes(b'{"run_id": "run-1"}')
    transfer = s3.download(f"s3://{bucket}/run-2/", str(stale.parent), AwsTarget(), progress=False)
    assert (transfer.done, transfer.skipped) == (1, 0)
    assert stale.read_bytes() == b'{"run_id": "run-2"}'


def test_a_manifest_is_downloaded_last_and_only_after_all_the_results(moto_endpoint, bucket, tmp_path, capsys):
    client = s3_client(moto_endpoint)
    client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    for key in ("run-1/features/part-0.parquet", "run-1/features/part-1.parquet", "run-1/manifest.json"):
        client.put_object(Bucket=bucket, Key=key, Body=b"x" * 10)
    target = tmp_path / "back"
    (target / "features" / "part-1.parquet").mkdir(parents=True)  # a directory in the way: that file fails
    code, out, _ = run_cli(capsys, "s3", "download", f"s3://{bucket}/run-1/", target, "--quiet")
    assert (code, "1 failed" in out) == (1, True)
    assert (target / "features" / "part-0.parquet").is_file()
    assert not (target / "manifest.json").exists()  # the local copy is not marked complete

    (target / "features" / "part-1.parquet").rmdir()
    code, out, _ = run_cli(capsys, "s3", "download", f"s3://{bucket}/run-1/", target, "--quiet")
    assert (code, out.split(",")[0]) == (0, "downloaded 2 files (0.0 MB)")
    assert (target / "manifest.json").is_file()


def test_a_role_that_cannot_read_the_encryption_settings_compares_etags_as_md5s():
    """A read-only role (the cluster's instance role) has no s3:GetEncryptionConfiguration,
    which moto, enforcing no IAM, would grant: the policy says so, and AWS answers AccessDenied."""
    from botocore.exceptions import ClientError

    from fruits.emr.iam import iam_document

    role = iam_document("ec2-bucket-policy.json", {"partition": "aws", "bucket": "bucket"})
    assert decision(role, "s3:GetEncryptionConfiguration", "arn:aws:s3:::bucket") == "ImplicitDeny"
    assert decision(role, "s3:GetObject", "arn:aws:s3:::bucket/processed/run-1/manifest.json") == "Allow"

    class ReadOnly:
        def get_bucket_encryption(self, Bucket):  # noqa: N803 -- boto3's own argument name
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "denied"}}, "GetBucketEncryption")

    assert s3.etags_are_md5s(ReadOnly(), "bucket")


def test_kms_etags_are_not_compared_as_md5s(tmp_path):
    path = tmp_path / "image.jpg"
    path.write_bytes(b"a" * 100)
    kms_object = {"Size": 100, "ETag": '"0123456789abcdef0123456789abcdef"'}  # 32 hex digits, not the MD5
    assert s3.same_object(path, kms_object, etag_is_md5=False)
    assert not s3.same_object(path, kms_object)


def test_upload_to_a_kms_bucket_skips_what_is_there(moto_endpoint, bucket, tmp_path, capsys):
    s3.init_bucket(bucket, AwsTarget(), kms_key="alias/fruits")
    make_images(tmp_path / "images", 4)
    uri = f"s3://{bucket}/raw/demo/"
    assert run_cli(capsys, "s3", "upload", tmp_path / "images", uri, "--quiet")[0] == 0
    code, out, _ = run_cli(capsys, "s3", "upload", tmp_path / "images", uri, "--quiet")
    assert (code, out.strip()) == (0, "uploaded 0 files (0.0 MB), skipped 4 already there")


@pytest.mark.parametrize(("args", "fragment"), [(["--workers", "0"], "must be >= 1"), (["--workers", "x"], "not an")])
def test_bad_transfer_options_exit_2(tmp_path, capsys, args, fragment):
    code, _, err = run_cli(capsys, "s3", "download", "s3://bucket/run-1/", tmp_path / "x", *args)
    assert_usage_error(code, err, fragment)
    assert not (tmp_path / "x").exists()


def test_unknown_bucket_is_one_line_and_exit_2(moto_endpoint, tmp_path, capsys):
    make_images(tmp_path / "images", 1)
    code, _, err = run_cli(capsys, "s3", "upload", tmp_path / "images", "s3://no-such-bucket-here/raw/x/", "--quiet")
    assert_usage_error(code, err, "bucket or object not found")


def test_missing_credentials_are_one_line_and_exit_2(moto_endpoint, bucket, monkeypatch, tmp_path, capsys):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    code, _, err = run_cli(capsys, "s3", "init", "--bucket", bucket)
    assert_usage_error(code, err, "no AWS credentials found")


@pytest.mark.parametrize("uri", ["raw/demo", "s3://", "http://bucket/x"])
def test_a_non_s3_uri_is_refused(tmp_path, capsys, uri):
    code, _, err = run_cli(capsys, "s3", "download", uri, tmp_path / "x")
    assert_usage_error(code, err, "s3://")
    assert not (tmp_path / "x").exists()
