"""Send one request to an asynchronous endpoint and wait for its answer in S3.

``invoke_async`` puts the body in S3 (a photo as sent, a JSON file as is, several photos as one
``{"instances": [{"b64": ...}]}`` batch), calls ``InvokeEndpointAsync`` with its location, then
polls the output and failure locations the service answered until one appears or the wait
times out. The endpoint is described first: one without an ``AsyncInferenceConfig`` is refused,
and so is a body larger than its container accepts (``SAGEMAKER_MAX_PAYLOAD_IN_MB`` in the
model's environment) or than the service's 1 GB, before anything is uploaded.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import LaunchError
from ..serving import parameters
from .asynchronous import INVOCATION_SECONDS, check_async_body
from .config import AwsConfig, parse_s3_uri
from .invoke import collect_images, content_type_of

#: What the container accepts when the model's environment does not say (serving's default).
DEFAULT_CONTAINER_PAYLOAD_MB = 6.0


@dataclass(frozen=True)
class AsyncEndpoint:
    """What ``invoke_async`` needs to know about the endpoint before sending anything."""

    name: str
    output_path: str
    container_payload_mb: float


@dataclass(frozen=True)
class AsyncAnswer:
    inference_id: str
    input_location: str
    output_location: str
    failure_location: str | None
    failed: bool
    body: bytes

    def decoded(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return self.body.decode("utf-8", "replace")


def describe_async_endpoint(session: Any, endpoint: str) -> AsyncEndpoint:
    """The endpoint's async output path and its container's body limit; refuses an endpoint
    that does not exist or is not asynchronous."""
    from botocore.exceptions import ClientError

    sm = session.client("sagemaker")
    try:
        config_name = sm.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"]
        described = sm.describe_endpoint_config(EndpointConfigName=config_name)
    except ClientError as exc:
        raise LaunchError(f"endpoint {endpoint!r} not found: {exc}") from None
    async_config = described.get("AsyncInferenceConfig")
    if not async_config:
        raise LaunchError(
            f"endpoint {endpoint!r} is not asynchronous (deploy it with --async --output s3://...)"
        )
    limit = DEFAULT_CONTAINER_PAYLOAD_MB
    variants = described.get("ProductionVariants") or []
    if variants:
        try:
            model = sm.describe_model(ModelName=variants[0]["ModelName"])
        except ClientError:
            model = {}
        environment = model.get("PrimaryContainer", {}).get("Environment", {})
        with contextlib.suppress(ValueError):  # the container itself refuses a bad value
            limit = float(environment.get(parameters.MAX_PAYLOAD_IN_MB, limit))
    return AsyncEndpoint(endpoint, async_config["OutputConfig"]["S3OutputPath"], limit)


def build_body(paths: Sequence[str | Path]) -> tuple[bytes, str, str]:
    """(body, content type, file suffix): one JSON file as is, one photo as is, or several
    photos (files or folders) as one JSON batch of base64 photos."""
    if len(paths) == 1 and Path(paths[0]).suffix.lower() == ".json":
        path = Path(paths[0])
        if not path.is_file():
            raise LaunchError(f"{path} is not a file")
        return path.read_bytes(), "application/json", ".json"
    photos = collect_images(paths)
    if len(photos) == 1:
        return photos[0].read_bytes(), content_type_of(photos[0]), photos[0].suffix.lower()
    batch = {"instances": [{"b64": base64.b64encode(p.read_bytes()).decode()} for p in photos]}
    return json.dumps(batch).encode(), "application/json", ".json"


def _s3_size(s3: Any, uri: str) -> int:
    from botocore.exceptions import ClientError

    bucket, key = parse_s3_uri(uri)
    try:
        return int(s3.head_object(Bucket=bucket, Key=key)["ContentLength"])
    except ClientError as exc:
        raise LaunchError(f"input {uri} cannot be read: {exc}") from None


def _check_size(size: int, target: AsyncEndpoint) -> None:
    check_async_body(size)
    limit = int(target.container_payload_mb * 1024 * 1024)
    if size > limit:
        raise LaunchError(
            f"request body {size} bytes: endpoint {target.name}'s container accepts up to "
            f"{target.container_payload_mb:g} MB ({parameters.MAX_PAYLOAD_IN_MB}); send fewer photos"
        )


def wait_for_answer(
    s3: Any, output: str, failure: str | None, *, timeout: float, interval: float
) -> tuple[bool, bytes]:
    """(failed, body) from whichever of ``output`` / ``failure`` appears first in S3."""
    from botocore.exceptions import ClientError

    deadline = time.monotonic() + timeout
    locations = [(False, output)] + ([(True, failure)] if failure else [])
    while True:
        for failed, uri in locations:
            bucket, key = parse_s3_uri(uri)
            try:
                return failed, s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404"):
                    raise
        if time.monotonic() >= deadline:
            raise LaunchError(
                f"no answer at {output}" + (f" or {failure}" if failure else "") + f" within "
                f"{timeout:g} s; the request may still be queued: read the output location later"
            )
        time.sleep(interval)


def invoke_async(
    config: AwsConfig,
    endpoint: str,
    paths: Sequence[str | Path] = (),
    *,
    input_location: str | None = None,
    input_prefix: str | None = None,
    wait_timeout: float = 900.0,
    poll_interval: float = 5.0,
    invocation_timeout: int | None = None,
) -> AsyncAnswer:
    """Upload (unless ``input_location`` is given), invoke, wait; see the module docstring."""
    if bool(paths) == bool(input_location):
        raise LaunchError("give either local files to upload or --input-location s3://...")
    if invocation_timeout is not None and not 1 <= invocation_timeout <= INVOCATION_SECONDS:
        raise LaunchError(
            f"invocation timeout {invocation_timeout} s: allowed 1..{INVOCATION_SECONDS}"
        )
    session = config.boto_session()
    s3 = session.client("s3")
    target = describe_async_endpoint(session, endpoint)
    content_type = "application/json"
    if input_location:
        if not input_location.startswith("s3://"):
            raise LaunchError(f"--input-location {input_location!r} must be an s3:// URI")
        _check_size(_s3_size(s3, input_location), target)
        if input_location.lower().endswith((".jpg", ".jpeg", ".png")):
            content_type = content_type_of(Path(input_location))
    else:
        body, content_type, suffix = build_body(paths)
        _check_size(len(body), target)
        prefix = (input_prefix or config.s3_uri("async-input", endpoint)).rstrip("/")
        input_location = f"{prefix}/{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}{suffix}"
        bucket, key = parse_s3_uri(input_location)
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)
    request: dict[str, Any] = {
        "EndpointName": endpoint,
        "InputLocation": input_location,
        "ContentType": content_type,
        "Accept": "application/json",
    }
    if invocation_timeout is not None:
        request["InvocationTimeoutSeconds"] = invocation_timeout
    response = session.client("sagemaker-runtime").invoke_endpoint_async(**request)
    output, failure = response["OutputLocation"], response.get("FailureLocation")
    failed, body = wait_for_answer(
        s3, output, failure, timeout=wait_timeout, interval=poll_interval
    )
    return AsyncAnswer(response["InferenceId"], input_location, output, failure, failed, body)
