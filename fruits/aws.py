"""boto3 clients and the one place AWS errors become one-line user errors.

Every AWS call of the project goes through `client()`, so pointing
``--endpoint-url`` (or AWS_ENDPOINT_URL) at another endpoint, such as moto's
server in the tests, exercises exactly the code path a user runs against AWS.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

from fruits.config import ConfigError

DEFAULT_REGION = "eu-west-1"


@dataclass(frozen=True)
class AwsTarget:
    """Where AWS calls go: a region, and an endpoint URL for non-AWS endpoints."""

    region: str | None = None
    endpoint_url: str | None = None

    @property
    def resolved_region(self) -> str:
        return self.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION


def client(service: str, target: AwsTarget):
    try:
        import boto3
    except ImportError:
        raise ConfigError("AWS commands need boto3 (pip install boto3)") from None
    endpoint = target.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
    session = boto3.session.Session()  # not boto3's global one: credentials are looked up afresh
    return session.client(service, region_name=target.resolved_region, endpoint_url=endpoint)


def error_code(exc: Exception) -> str:
    return getattr(exc, "response", {}).get("Error", {}).get("Code", "")


@contextlib.contextmanager
def user_errors(what: str) -> Iterator[None]:
    """Turn credential, endpoint and permission errors into one-line ConfigErrors."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, NoRegionError

    try:
        yield
    except S3UploadFailedError as exc:  # upload_file wraps the ClientError in its message
        raise ConfigError(f"{what}: {str(exc).strip().splitlines()[0]}") from None
    except NoCredentialsError:
        raise ConfigError(
            "no AWS credentials found: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(or run `aws configure`)"
        ) from None
    except NoRegionError:
        raise ConfigError("no AWS region: pass --region or set AWS_REGION") from None
    except EndpointConnectionError as exc:
        raise ConfigError(f"cannot reach AWS endpoint {exc.kwargs.get('endpoint_url', '')}") from None
    except ClientError as exc:
        code = error_code(exc)
        message = exc.response.get("Error", {}).get("Message", "") or code
        if code in ("NoSuchBucket", "404", "NotFound"):
            raise ConfigError(f"{what}: bucket or object not found ({message})") from None
        if code in ("AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise ConfigError(f"{what}: access denied ({message})") from None
        raise ConfigError(f"{what}: {code}: {message}") from None


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """'s3://bucket/some/prefix' -> ('bucket', 'some/prefix')."""
    if not uri.startswith("s3://") or len(uri) <= len("s3://"):
        raise ConfigError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ConfigError(f"no bucket in {uri!r}")
    return bucket, key


def add_aws_options(parser) -> None:
    group = parser.add_argument_group("aws")
    group.add_argument("--region", help=f"AWS region (default: $AWS_REGION, else {DEFAULT_REGION})")
    group.add_argument(
        "--endpoint-url",
        help="send AWS calls to this endpoint instead of AWS, e.g. a moto server (default: $AWS_ENDPOINT_URL)",
    )
    group.add_argument("--debug", action="store_true", help="show full tracebacks")


def target_from_args(args) -> AwsTarget:
    return AwsTarget(region=args.region, endpoint_url=args.endpoint_url)
