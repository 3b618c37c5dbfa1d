"""Serverless endpoints: the variant's ``ServerlessConfig`` and SageMaker's documented limits,
checked before anything is created.

SageMaker Serverless Inference (``ProductionVariantServerlessConfig``; AWS docs
"Deploy models with Amazon SageMaker Serverless Inference" and "Invoke a serverless endpoint"):

* ``MemorySizeInMB`` 1024..6144 in 1024 MB steps; ``MaxConcurrency`` 1..200 per endpoint;
* CPU only: no GPU, no instance type or count (memory sets the size);
* not supported with serverless: data capture (Model Monitor), instance autoscaling (only
  provisioned concurrency scales, which ``deploy`` does not offer), asynchronous inference,
  VPC / network isolation, multi-model or several variants;
* 4 MB request and response bodies, 60 s per invocation, 3 minutes from start to a passing
  ``/ping`` (fixed by the service: no start-up timeout setting), image up to 10 GB.

The container learns the 4 MB limit through ``SAGEMAKER_MAX_PAYLOAD_IN_MB`` (its default is the
real-time 6 MB), so a 5 MB body is refused by the container with its 413, not cut by the service.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import LaunchError
from ..serving import parameters
from .config import AwsConfig

log = logging.getLogger(__name__)

MEMORY_SIZES_MB = (1024, 2048, 3072, 4096, 5120, 6144)
MAX_CONCURRENCY_RANGE = (1, 200)
PAYLOAD_MB = 4
INVOCATION_SECONDS = 60
IMAGE_LIMIT_BYTES = 10 * 1024**3

#: What a serverless container is told: SageMaker's own body and time limits.
SERVERLESS_ENVIRONMENT = {
    parameters.MAX_PAYLOAD_IN_MB: str(PAYLOAD_MB),
    parameters.MODEL_SERVER_TIMEOUT: str(INVOCATION_SECONDS),
}

#: Instance families with accelerators (GPU, Inferentia, Trainium): never serverless.
ACCELERATED = re.compile(r"^ml\.(p\d|g\d|inf\d|trn\d)")
ECR_IMAGE = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/"
    r"(?P<repository>[^:@]+)(?::(?P<tag>[\w.-]+)|@(?P<digest>sha256:[0-9a-f]{64}))?$"
)


@dataclass
class ServerlessSettings:
    """``deploy --serverless``'s shape; its flags take their defaults here."""

    memory_mb: int | None = None
    max_concurrency: int = 5

    def variant_request(self, variant: str, model: str) -> dict[str, Any]:
        """The production variant as the API takes it (a plain request: sagemaker-core 2.27.0
        sends ``memory_size_in_mb`` as ``MemorySizeInMb``, which the API rejects)."""
        return {
            "VariantName": variant,
            "ModelName": model,
            "ServerlessConfig": {
                "MemorySizeInMB": self.memory_mb,
                "MaxConcurrency": self.max_concurrency,
            },
        }


def check_serverless(settings: ServerlessSettings, deploy: Any, defaults: Any) -> None:
    """Refuse what a serverless endpoint cannot do, naming the setting and its allowed values.

    ``deploy`` is the ``DeploySettings`` asked for and ``defaults`` a ``DeploySettings()``:
    a setting that differs from its default was asked for, and serverless has no such knob.
    """
    if settings.memory_mb is None:
        raise LaunchError(
            "serverless needs --memory MB: one of " + ", ".join(map(str, MEMORY_SIZES_MB))
        )
    if settings.memory_mb not in MEMORY_SIZES_MB:
        raise LaunchError(
            f"serverless memory {settings.memory_mb} MB: allowed 1024..6144 MB in 1024 MB steps "
            f"({', '.join(map(str, MEMORY_SIZES_MB))})"
        )
    low, high = MAX_CONCURRENCY_RANGE
    if not low <= settings.max_concurrency <= high:
        raise LaunchError(
            f"serverless max concurrency {settings.max_concurrency}: allowed {low}..{high}"
        )
    if ACCELERATED.match(deploy.instance_type):
        raise LaunchError(
            f"instance type {deploy.instance_type}: serverless endpoints run on CPU only "
            "(no GPU or accelerator); drop --instance-type, --memory sizes the endpoint"
        )
    if deploy.environment.get(parameters.ENGINE, "").strip().lower() == "cuda":
        raise LaunchError(f"{parameters.ENGINE}=cuda: serverless endpoints run on CPU only")
    unsupported = {
        "instance_type": "--instance-type (memory sets the size)",
        "instance_count": "--instance-count (SageMaker scales serverless endpoints itself)",
        "max_instances": "--max-instances (no instance autoscaling on serverless)",
        "data_capture_uri": "--data-capture (no data capture / Model Monitor on serverless)",
        "startup_health_check_timeout": "--startup-timeout (fixed at 3 minutes on serverless)",
        "model_download_timeout": "a model download timeout (fixed on serverless)",
    }
    for name, flag in unsupported.items():
        if getattr(deploy, name) != getattr(defaults, name):
            raise LaunchError(f"serverless endpoints do not support {flag}")
    _check_payload_env(deploy.environment)


def _check_payload_env(environment: Mapping[str, str]) -> None:
    raw = environment.get(parameters.MAX_PAYLOAD_IN_MB)
    if raw is None:
        return
    try:
        value = float(raw)
    except ValueError:
        raise LaunchError(f"{parameters.MAX_PAYLOAD_IN_MB}={raw!r} is not a number") from None
    if value > PAYLOAD_MB:
        raise LaunchError(
            f"{parameters.MAX_PAYLOAD_IN_MB}={raw}: serverless bodies are limited to {PAYLOAD_MB} MB "
            f"(allowed up to {PAYLOAD_MB})"
        )


def check_image_size(config: AwsConfig, image: str) -> str:
    """Refuse an ECR image over serverless's 10 GB; returns what was found, for the log.

    ECR's ``imageSizeInBytes`` is the compressed size (the sum of the pushed layers): an image
    over 10 GB compressed is over the limit for sure; one under it may still unpack past it,
    which only the service can tell. An image outside ECR cannot be sized from here.
    """
    from botocore.exceptions import ClientError

    match = ECR_IMAGE.match(image)
    if match is None:
        return f"image {image} is not an ECR URI: its size (limit 10 GB) is not checked"
    image_id = (
        {"imageDigest": match["digest"]}
        if match["digest"]
        else {"imageTag": match["tag"] or "latest"}
    )
    ecr = config.boto_session().client("ecr", region_name=match["region"])
    try:
        described = ecr.describe_images(
            registryId=match["account"], repositoryName=match["repository"], imageIds=[image_id]
        )
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("RepositoryNotFoundException", "ImageNotFoundException"):
            raise LaunchError(
                f"image {image} is not in ECR ({code}): push it first with scripts/push.sh"
            ) from None
        return f"image {image}: its size (limit 10 GB) could not be read from ECR ({code})"
    size = described["imageDetails"][0].get("imageSizeInBytes")
    if size is None:
        return f"image {image}: ECR reports no size (limit 10 GB not checked)"
    if size > IMAGE_LIMIT_BYTES:
        raise LaunchError(
            f"image {image} is {size / 1024**3:.2f} GB compressed in ECR: serverless images are "
            "limited to 10 GB (use the slim CPU serving image)"
        )
    return f"image {image}: {size / 1024**3:.2f} GB compressed in ECR (serverless limit 10 GB)"
