"""Real-time endpoints for a trained ``model.tar.gz``: create, autoscale, delete.

* ``deploy(config, model_data, DeploySettings(...))`` creates a Model, an EndpointConfig and an
  Endpoint, all with the same name, through ``sagemaker.core.resources`` (SDK v3), with optional
  data capture to S3 (for Model Monitor), optional target-tracking autoscaling on invocations
  per instance, and the container start-up health-check timeout; or a serverless endpoint
  (``serverless.py``) or an asynchronous one with scale to zero (``asynchronous.py``).
* ``delete(config, name)`` removes the endpoint, its config and its model(s), and the
  autoscaling target (and an asynchronous endpoint's scale-from-zero alarm) if one was
  registered: an endpoint bills per hour until deleted.
* ``create_model`` is the Model alone, which batch transform (``transform.py``) uses too.

Sending photos to an endpoint is ``invoke.py``; batch transform is ``transform.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import LaunchError
from .asynchronous import ASYNC_ENVIRONMENT, AsyncSettings, alarm_name, register_backlog_scaling
from .config import AwsConfig
from .jobs import timestamped
from .serverless import (
    SERVERLESS_ENVIRONMENT,
    ServerlessSettings,
    check_image_size,
    check_serverless,
)

log = logging.getLogger(__name__)


VARIANT = "AllTraffic"
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"


@dataclass
class ModelHosts:
    """The instances that run a model's serving container, for an endpoint or a transform
    job alike (CPU instances: the serving container answers one photo at a time)."""

    instance_type: str = "ml.m5.xlarge"
    instance_count: int = 1


@dataclass
class DeploySettings(ModelHosts):
    """Endpoint shape. Autoscaling is on when ``max_instances`` > ``instance_count``."""

    name: str | None = None
    startup_health_check_timeout: int = 600
    model_download_timeout: int | None = None
    data_capture_uri: str | None = None
    data_capture_percent: int = 100
    max_instances: int | None = None
    target_invocations_per_instance: float = 100.0
    scale_in_cooldown: int = 300
    scale_out_cooldown: int = 60
    environment: dict[str, str] = field(default_factory=dict)

    def check(self) -> None:
        if self.instance_count < 1:
            raise LaunchError("instance count must be >= 1")
        if not 60 <= self.startup_health_check_timeout <= 3600:
            raise LaunchError("the container start-up health-check timeout must be 60..3600 s")
        if not 0 < self.data_capture_percent <= 100:
            raise LaunchError("data capture percentage must be 1..100")
        if self.data_capture_uri and not self.data_capture_uri.startswith("s3://"):
            raise LaunchError(f"data capture destination {self.data_capture_uri!r} must be s3://")
        if self.max_instances is not None and self.max_instances < self.instance_count:
            raise LaunchError(
                f"autoscaling max instances ({self.max_instances}) < instance count "
                f"({self.instance_count})"
            )
        if self.target_invocations_per_instance <= 0:
            raise LaunchError("target invocations per instance must be > 0")


@dataclass(frozen=True)
class Deployment:
    endpoint_name: str
    endpoint_config_name: str
    model_name: str
    status: str
    autoscaling: bool


def resource_kwargs(config: AwsConfig) -> dict[str, Any]:
    """The session and region every ``sagemaker.core.resources`` call of this config takes."""
    return {"session": config.boto_session(), "region": config.require_region()}


def create_model(
    config: AwsConfig, model_data: str, name: str, environment: Mapping[str, str] | None = None
) -> str:
    """A SageMaker Model: the image plus ``model.tar.gz`` (used by endpoints and transform)."""
    from sagemaker.core import shapes
    from sagemaker.core.resources import Model

    if not model_data.startswith("s3://"):
        raise LaunchError(f"model data {model_data!r} must be an s3:// URI of a model.tar.gz")
    Model.create(
        model_name=name,
        primary_container=shapes.ContainerDefinition(
            image=config.require_image(),
            model_data_url=model_data,
            environment=dict(environment or {}),
        ),
        execution_role_arn=config.require_role(),
        **resource_kwargs(config),
    )
    return name


def _capture_config(settings: DeploySettings) -> Any:
    """Data capture of requests and responses to S3 (for Model Monitor), or None."""
    from sagemaker.core import shapes

    if not settings.data_capture_uri:
        return None
    return shapes.DataCaptureConfig(
        enable_capture=True,
        initial_sampling_percentage=settings.data_capture_percent,
        destination_s3_uri=settings.data_capture_uri,
        capture_options=[
            shapes.CaptureOption(capture_mode="Input"),
            shapes.CaptureOption(capture_mode="Output"),
        ],
        capture_content_type_header=shapes.CaptureContentTypeHeader(
            json_content_types=["application/json"]
        ),
    )


def _variant(name: str, settings: DeploySettings) -> Any:
    """The one production variant on instances."""
    from sagemaker.core import shapes

    variant = shapes.ProductionVariant(
        variant_name=VARIANT,
        model_name=name,
        initial_instance_count=settings.instance_count,
        instance_type=settings.instance_type,
        container_startup_health_check_timeout_in_seconds=settings.startup_health_check_timeout,
    )
    if settings.model_download_timeout:
        variant.model_data_download_timeout_in_seconds = settings.model_download_timeout
    return variant


def check_modes(
    config: AwsConfig,
    settings: DeploySettings,
    serverless: ServerlessSettings | None,
    asynchronous: AsyncSettings | None,
) -> dict[str, str]:
    """Check a serverless or asynchronous request against its limits; the container's
    environment (the mode's limits, then the user's ``--env`` on top)."""
    if serverless is not None and asynchronous is not None:
        raise LaunchError("an endpoint is either serverless or asynchronous, not both")
    if serverless is not None:
        check_serverless(serverless, settings, DeploySettings())
        log.info(check_image_size(config, config.require_image()))
        return {**SERVERLESS_ENVIRONMENT, **settings.environment}
    if asynchronous is not None:
        asynchronous.check()
        return {**ASYNC_ENVIRONMENT, **settings.environment}
    return dict(settings.environment)


def deploy(
    config: AwsConfig,
    model_data: str,
    settings: DeploySettings | None = None,
    *,
    wait: bool = True,
    serverless: ServerlessSettings | None = None,
    asynchronous: AsyncSettings | None = None,
) -> Deployment:
    """Model + EndpointConfig + Endpoint from ``model_data`` (an ``s3://.../model.tar.gz``):
    real-time on instances by default, or serverless, or asynchronous (``serverless.py``,
    ``asynchronous.py``), every limit checked before the first request."""
    from sagemaker.core.resources import Endpoint, EndpointConfig

    settings = settings or DeploySettings()
    settings.check()
    environment = check_modes(config, settings, serverless, asynchronous)
    autoscale = settings.max_instances is not None and (
        settings.max_instances > 1 or asynchronous is not None
    )
    if autoscale and not wait:
        raise LaunchError("autoscaling is registered once the endpoint is InService: keep --wait")
    name = settings.name or timestamped("bincounter")
    create_model(config, model_data, name, environment)
    if serverless is not None:  # see ServerlessSettings.variant_request for why not the SDK
        config.boto_session().client("sagemaker").create_endpoint_config(
            EndpointConfigName=name, ProductionVariants=[serverless.variant_request(VARIANT, name)]
        )
    else:
        config_kwargs: dict[str, Any] = {"production_variants": [_variant(name, settings)]}
        capture = _capture_config(settings)
        if capture is not None:
            config_kwargs["data_capture_config"] = capture
        if asynchronous is not None:
            config_kwargs["async_inference_config"] = asynchronous.inference_config()
        EndpointConfig.create(endpoint_config_name=name, **config_kwargs, **resource_kwargs(config))
    endpoint = Endpoint.create(
        endpoint_name=name, endpoint_config_name=name, **resource_kwargs(config)
    )
    status = str(endpoint.endpoint_status)
    if wait:
        endpoint.wait_for_status("InService")
        status = "InService"
        if autoscale and asynchronous is not None:
            register_backlog_scaling(
                config,
                name,
                asynchronous,
                int(settings.max_instances or 1),
                resource_id=f"endpoint/{name}/variant/{VARIANT}",
                dimension=SCALABLE_DIMENSION,
            )
        elif autoscale:
            register_autoscaling(config, name, settings)
    return Deployment(name, name, name, status, autoscale)


def register_autoscaling(config: AwsConfig, endpoint: str, settings: DeploySettings) -> None:
    """Target tracking on SageMakerVariantInvocationsPerInstance for the endpoint's variant."""
    client = config.boto_session().client("application-autoscaling")
    resource_id = f"endpoint/{endpoint}/variant/{VARIANT}"
    client.register_scalable_target(
        ServiceNamespace="sagemaker",
        ResourceId=resource_id,
        ScalableDimension=SCALABLE_DIMENSION,
        MinCapacity=settings.instance_count,
        MaxCapacity=int(settings.max_instances or settings.instance_count),
    )
    client.put_scaling_policy(
        PolicyName=f"{endpoint}-invocations",
        ServiceNamespace="sagemaker",
        ResourceId=resource_id,
        ScalableDimension=SCALABLE_DIMENSION,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": float(settings.target_invocations_per_instance),
            "PredefinedMetricSpecification": {
                "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
            },
            "ScaleInCooldown": settings.scale_in_cooldown,
            "ScaleOutCooldown": settings.scale_out_cooldown,
        },
    )


def delete(config: AwsConfig, name: str, *, keep_model: bool = False) -> list[str]:
    """Delete the endpoint ``name``, its endpoint config and its model(s); returns what went.

    Works from what exists: a half-created deployment (model but no endpoint) is cleaned up
    too, because config and model share the endpoint's name when ``deploy`` made them.
    """
    from botocore.exceptions import ClientError

    session = config.boto_session()
    sm = session.client("sagemaker")
    removed: list[str] = []
    config_names = {name}
    model_names = {name}
    try:
        described = sm.describe_endpoint(EndpointName=name)
        config_names.add(described["EndpointConfigName"])
    except ClientError:
        described = None
    for config_name in list(config_names):
        try:
            ec = sm.describe_endpoint_config(EndpointConfigName=config_name)
            model_names.update(v["ModelName"] for v in ec.get("ProductionVariants", []))
        except ClientError:
            pass

    def attempt(label: str, call: Callable[[], object]) -> None:
        """Delete one resource; one that is already gone is not an error."""
        try:
            call()
            removed.append(label)
        except ClientError:
            pass

    scaling = session.client("application-autoscaling")
    attempt(
        f"autoscaling target endpoint/{name}/variant/{VARIANT}",
        lambda: scaling.deregister_scalable_target(
            ServiceNamespace="sagemaker",
            ResourceId=f"endpoint/{name}/variant/{VARIANT}",
            ScalableDimension=SCALABLE_DIMENSION,
        ),
    )
    cloudwatch = session.client("cloudwatch")
    alarm = alarm_name(name)
    if cloudwatch.describe_alarms(AlarmNames=[alarm])["MetricAlarms"]:
        attempt(f"alarm {alarm}", lambda: cloudwatch.delete_alarms(AlarmNames=[alarm]))
    if described is not None:
        sm.delete_endpoint(EndpointName=name)
        removed.append(f"endpoint {name}")
    for config_name in sorted(config_names):
        attempt(
            f"endpoint config {config_name}",
            lambda n=config_name: sm.delete_endpoint_config(EndpointConfigName=n),
        )
    if not keep_model:
        for model_name in sorted(model_names):
            attempt(f"model {model_name}", lambda n=model_name: sm.delete_model(ModelName=n))
    if not removed:
        raise LaunchError(f"nothing named {name!r} found: no endpoint, endpoint config or model")
    return removed
