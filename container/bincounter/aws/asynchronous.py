"""Asynchronous endpoints: the endpoint config's ``AsyncInferenceConfig``, scale to zero, and
what the container is told.

An asynchronous endpoint queues requests whose bodies wait in S3 (up to 1 GB) and gives each up
to an hour (``InvokeEndpointAsync``'s ``InvocationTimeoutSeconds``, 1..3600 s, 900 s by
default); answers land in ``S3OutputPath`` as ``<inference id>.out``, failures in
``S3FailurePath``, each optionally announced on an SNS topic. Unlike real-time endpoints it can
scale to zero instances (AWS docs "Autoscale an asynchronous endpoint"): a scalable target with
``MinCapacity`` 0, a target-tracking policy on ``ApproximateBacklogSizePerInstance``, and,
because that metric says nothing while no instance runs, a step policy that adds an instance
when the ``HasBacklogWithoutCapacity`` alarm fires.

The container is told (``ASYNC_ENVIRONMENT``): bodies up to 64 MB, up to 1000 photos per JSON
request, 3600 s per request. 64 MB, not the service's 1 GB, because the container holds a body
in memory several times over while it parses it (the bytes, the JSON text, each photo decoded
from base64); ABID photos are 30-100 KB, about 40-135 KB in base64, so 64 MB carries roughly
500-1000 of them, the "whole aisle" a scanning station sends, while a worker's peak stays near
a quarter of a GB. The batcher then runs them ``BINCOUNTER_MAX_BATCH_SIZE`` at a time, so the
compute memory does not grow with the body.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import LaunchError
from ..serving import parameters
from .config import AwsConfig

#: AWS's limits for asynchronous inference.
PAYLOAD_LIMIT_BYTES = 1024**3
INVOCATION_SECONDS = 3600
MAX_CONCURRENT_INVOCATIONS_RANGE = (1, 1000)

#: What the container of an asynchronous endpoint is told (see the module docstring).
ASYNC_PAYLOAD_MB = 64
ASYNC_MAX_INSTANCES = 1000
ASYNC_ENVIRONMENT = {
    parameters.MAX_PAYLOAD_IN_MB: str(ASYNC_PAYLOAD_MB),
    parameters.MAX_INSTANCES: str(ASYNC_MAX_INSTANCES),
    parameters.MODEL_SERVER_TIMEOUT: str(INVOCATION_SECONDS),
}

SNS_ARN_PREFIX = "arn:aws"

#: The alarm that scales an endpoint up from zero: requests queued and no instance, 2 minutes.
BACKLOG_WITHOUT_CAPACITY_ALARM: dict[str, Any] = {
    "MetricName": "HasBacklogWithoutCapacity",
    "Namespace": "AWS/SageMaker",
    "Statistic": "Average",
    "Period": 60,
    "EvaluationPeriods": 2,
    "DatapointsToAlarm": 2,
    "Threshold": 1,
    "ComparisonOperator": "GreaterThanOrEqualToThreshold",
    "TreatMissingData": "missing",
}


@dataclass
class AsyncSettings:
    """``deploy --async``'s shape; its flags take their defaults here. ``failure_uri`` defaults
    to ``<output_uri>/failures``; autoscaling (``--max-instances``) scales down to
    ``min_instances`` (0: scale to zero) on ``target_backlog`` queued requests per instance."""

    output_uri: str | None = None
    failure_uri: str | None = None
    sns_success: str | None = None
    sns_error: str | None = None
    max_concurrent_invocations: int | None = None
    min_instances: int = 0
    target_backlog: float = 5.0

    @property
    def failure_path(self) -> str:
        return self.failure_uri or f"{(self.output_uri or '').rstrip('/')}/failures"

    def check(self) -> None:
        if not self.output_uri:
            raise LaunchError("asynchronous endpoints need --output s3://... for their answers")
        for label, uri in (("output", self.output_uri), ("failure output", self.failure_path)):
            if not uri.startswith("s3://") or len(uri) <= len("s3://"):
                raise LaunchError(f"asynchronous {label} {uri!r} must be an s3:// URI")
        for label, arn in (("--sns-success", self.sns_success), ("--sns-error", self.sns_error)):
            if arn is not None and not (arn.startswith(SNS_ARN_PREFIX) and ":sns:" in arn):
                raise LaunchError(f"{label} {arn!r} is not an SNS topic ARN (arn:aws:sns:...)")
        low, high = MAX_CONCURRENT_INVOCATIONS_RANGE
        value = self.max_concurrent_invocations
        if value is not None and not low <= value <= high:
            raise LaunchError(
                f"max concurrent invocations per instance {value}: allowed {low}..{high}"
            )
        if self.min_instances < 0:
            raise LaunchError(f"async min instances {self.min_instances}: allowed >= 0")
        if self.target_backlog <= 0:
            raise LaunchError(f"target backlog per instance {self.target_backlog:g}: must be > 0")

    def inference_config(self) -> Any:
        from sagemaker.core import shapes

        output = shapes.AsyncInferenceOutputConfig(
            s3_output_path=self.output_uri, s3_failure_path=self.failure_path
        )
        if self.sns_success or self.sns_error:
            topics = {"success_topic": self.sns_success, "error_topic": self.sns_error}
            output.notification_config = shapes.AsyncInferenceNotificationConfig(
                **{k: v for k, v in topics.items() if v}
            )
        config = shapes.AsyncInferenceConfig(output_config=output)
        if self.max_concurrent_invocations:
            config.client_config = shapes.AsyncInferenceClientConfig(
                max_concurrent_invocations_per_instance=self.max_concurrent_invocations
            )
        return config


def register_backlog_scaling(
    config: AwsConfig,
    endpoint: str,
    settings: AsyncSettings,
    max_instances: int,
    *,
    resource_id: str,
    dimension: str,
) -> None:
    """Scale the endpoint's variant between ``settings.min_instances`` (0: to zero) and
    ``max_instances`` on its queue, as AWS documents for asynchronous endpoints."""
    session = config.boto_session()
    scaling = session.client("application-autoscaling")
    common = {
        "ServiceNamespace": "sagemaker",
        "ResourceId": resource_id,
        "ScalableDimension": dimension,
    }
    scaling.register_scalable_target(
        **common, MinCapacity=settings.min_instances, MaxCapacity=max_instances
    )
    dimensions = [{"Name": "EndpointName", "Value": endpoint}]
    scaling.put_scaling_policy(
        PolicyName=f"{endpoint}-backlog",
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": float(settings.target_backlog),
            "CustomizedMetricSpecification": {
                "MetricName": "ApproximateBacklogSizePerInstance",
                "Namespace": "AWS/SageMaker",
                "Dimensions": dimensions,
                "Statistic": "Average",
            },
            "ScaleInCooldown": 600,
            "ScaleOutCooldown": 300,
        },
        **common,
    )
    if settings.min_instances:
        return
    step = scaling.put_scaling_policy(
        PolicyName=f"{endpoint}-from-zero",
        PolicyType="StepScaling",
        StepScalingPolicyConfiguration={
            "AdjustmentType": "ChangeInCapacity",
            "MetricAggregationType": "Average",
            "Cooldown": 300,
            "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}],
        },
        **common,
    )
    session.client("cloudwatch").put_metric_alarm(
        AlarmName=alarm_name(endpoint),
        Dimensions=dimensions,
        AlarmActions=[step["PolicyARN"]],
        **BACKLOG_WITHOUT_CAPACITY_ALARM,
    )


def alarm_name(endpoint: str) -> str:
    """The scale-from-zero alarm ``register_backlog_scaling`` creates (``delete`` removes it)."""
    return f"{endpoint}-has-backlog-without-capacity"


def check_async_body(size: int) -> None:
    if size > PAYLOAD_LIMIT_BYTES:
        raise LaunchError(
            f"request body {size} bytes: asynchronous requests are limited to 1 GB "
            f"({PAYLOAD_LIMIT_BYTES} bytes)"
        )
