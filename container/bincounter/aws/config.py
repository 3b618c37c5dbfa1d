"""Launch-side configuration: region, execution role, bucket, image, S3 prefix.

Every launch command needs the same four or five values, and people keep them in different
places (a CI job sets environment variables, a laptop has a file), so each value is taken from,
in order: a command-line flag, an environment variable, one config file, and for the region
only, the AWS profile (``~/.aws/config``). A value that is still missing fails the command with
a message that names all three ways to set it, before any AWS call is made.

Config file (TOML on Python >= 3.11, or JSON by suffix), found at ``--config``,
``$BINCOUNTER_AWS_CONFIG`` or ``~/.config/bincounter/aws.toml``::

    region = "us-east-1"
    role = "arn:aws:iam::123456789012:role/SageMakerExecution"
    bucket = "my-ml-bucket"
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/bincounter:1.0"
    prefix = "bincounter"

Environment variables: ``BINCOUNTER_REGION`` (then ``AWS_REGION``, ``AWS_DEFAULT_REGION``),
``BINCOUNTER_ROLE_ARN`` (then ``SAGEMAKER_ROLE_ARN``), ``BINCOUNTER_BUCKET``,
``BINCOUNTER_IMAGE_URI``, ``BINCOUNTER_S3_PREFIX``. ``AWS_ENDPOINT_URL`` is honoured by boto3
itself (the tests point it at a local moto server).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import LaunchConfigError

DEFAULT_CONFIG_FILE = Path("~/.config/bincounter/aws.toml")
CONFIG_ENV = "BINCOUNTER_AWS_CONFIG"

#: For each setting: environment variables in order of precedence.
ENV_VARS: dict[str, tuple[str, ...]] = {
    "region": ("BINCOUNTER_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"),
    "role": ("BINCOUNTER_ROLE_ARN", "SAGEMAKER_ROLE_ARN"),
    "bucket": ("BINCOUNTER_BUCKET",),
    "image": ("BINCOUNTER_IMAGE_URI",),
    "prefix": ("BINCOUNTER_S3_PREFIX",),
}
FLAGS = {
    "region": "--region",
    "role": "--role",
    "bucket": "--bucket",
    "image": "--image",
    "prefix": "--prefix",
}
EXAMPLES = {
    "region": "us-east-1",
    "role": "arn:aws:iam::123456789012:role/SageMakerExecution",
    "bucket": "my-ml-bucket",
    "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/bincounter:1.0",
    "prefix": "bincounter",
}
ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")


@dataclass(frozen=True)
class AwsConfig:
    """Resolved settings; ``None`` means "not set anywhere" until a command requires it."""

    region: str | None = None
    role: str | None = None
    bucket: str | None = None
    image: str | None = None
    prefix: str = "bincounter"
    config_file: Path | None = None

    def how_to_set(self, name: str) -> str:
        """The three ways to set one value, for error messages."""
        where = str(self.config_file or DEFAULT_CONFIG_FILE)
        env = " or ".join(ENV_VARS[name][:2])
        return (
            f"pass {FLAGS[name]} {EXAMPLES[name]}, set {env}, or add "
            f'{name} = "{EXAMPLES[name]}" to {where} (or point {CONFIG_ENV} at a config file)'
        )

    def require_region(self) -> str:
        if not self.region:
            raise LaunchConfigError(f"no AWS region configured: {self.how_to_set('region')}")
        return self.region

    def require_role(self) -> str:
        """The SageMaker execution role ARN (SageMaker needs an ARN, not a role name)."""
        if not self.role:
            raise LaunchConfigError(
                f"no SageMaker execution role configured: {self.how_to_set('role')}"
            )
        if not ROLE_ARN.match(self.role):
            raise LaunchConfigError(
                f"role {self.role!r} is not an IAM role ARN (arn:aws:iam::<12-digit account>:"
                f"role/<name>): {self.how_to_set('role')}"
            )
        return self.role

    def require_image(self) -> str:
        if not self.image:
            raise LaunchConfigError(
                "no image URI configured (push one with scripts/push.sh): "
                + self.how_to_set("image")
            )
        return self.image

    def require_bucket(self) -> str:
        if not self.bucket:
            raise LaunchConfigError(f"no S3 bucket configured: {self.how_to_set('bucket')}")
        return self.bucket

    def s3_uri(self, *parts: str) -> str:
        """``s3://<bucket>/<prefix>/<parts...>`` (no trailing slash)."""
        keys = [p.strip("/") for p in (self.prefix, *parts) if p and p.strip("/")]
        return f"s3://{self.require_bucket()}/" + "/".join(keys)

    def boto_session(self) -> Any:
        """A boto3 session in the configured region (credentials from the usual chain)."""
        import boto3

        return boto3.Session(region_name=self.require_region())


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML or JSON config file and keep only known keys (unknown ones are an error)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise LaunchConfigError(f"cannot read config file {path}: {exc}") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except ValueError as exc:  # json.JSONDecodeError and tomllib.TOMLDecodeError
        raise LaunchConfigError(f"config file {path} is not valid: {exc}") from None
    if not isinstance(data, dict):
        raise LaunchConfigError(f"config file {path} must hold a table/object of settings")
    unknown = sorted(set(data) - set(ENV_VARS))
    if unknown:
        raise LaunchConfigError(
            f"config file {path}: unknown setting(s) {unknown}; known: {sorted(ENV_VARS)}"
        )
    return {k: str(v) for k, v in data.items() if v not in (None, "")}


def resolve_config(
    flags: Mapping[str, str | None] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
) -> AwsConfig:
    """Merge flags > environment > config file (> AWS profile for the region)."""
    env = os.environ if env is None else env
    flags = flags or {}
    path: Path | None = None
    file_values: dict[str, Any] = {}
    explicit = config_file or env.get(CONFIG_ENV)
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise LaunchConfigError(f"config file {path} does not exist")
        file_values = read_config_file(path)
    else:
        default = DEFAULT_CONFIG_FILE.expanduser()
        if default.is_file():
            path = default
            file_values = read_config_file(path)

    values: dict[str, Any] = {}
    for name, variables in ENV_VARS.items():
        value = flags.get(name)
        if not value:
            value = next((env[v] for v in variables if env.get(v)), None)
        if not value:
            value = file_values.get(name)
        if value:
            values[name] = value
    config = AwsConfig(config_file=path, **values)
    if not config.region:
        config = replace(config, region=_profile_region())
    return config


def _profile_region() -> str | None:
    """The region of the active AWS profile, if boto3 is installed and one is configured."""
    try:
        import boto3
    except ModuleNotFoundError:
        return None
    try:
        return boto3.Session().region_name
    except Exception:  # a broken profile must not hide the clearer "no region" message
        return None


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key/prefix`` -> (``bucket``, ``key/prefix``)."""
    if not uri.startswith("s3://"):
        raise LaunchConfigError(f"{uri!r} is not an s3:// URI")
    bucket, _, key = uri[5:].partition("/")
    if not bucket:
        raise LaunchConfigError(f"{uri!r} has no bucket")
    return bucket, key
