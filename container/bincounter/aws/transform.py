"""Batch transform of a trained ``model.tar.gz`` over an S3 prefix of photos.

One JSON answer per photo lands in the output prefix as ``<photo name>.out``; the model is an
existing one (e.g. a deployment's) or is created from ``model_data`` with ``endpoints``'s
``create_model``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import LaunchError
from .config import AwsConfig
from .endpoints import ModelHosts, create_model, resource_kwargs
from .jobs import timestamped


@dataclass
class TransformSettings(ModelHosts):
    """The transform job's shape; ``bincounter-aws transform``'s flags take their defaults here."""

    max_concurrent: int | None = None
    max_payload_mb: int = 6
    environment: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TransformLaunch:
    job_name: str
    model_name: str
    output_uri: str
    status: str


def transform(
    config: AwsConfig,
    input_uri: str,
    settings: TransformSettings | None = None,
    *,
    model_name: str | None = None,
    model_data: str | None = None,
    output_uri: str | None = None,
    job_name: str | None = None,
    wait: bool = True,
) -> TransformLaunch:
    """Batch transform over every photo under ``input_uri``; one JSON answer per photo lands
    in ``output_uri`` as ``<photo name>.out``. Uses an existing model, or creates one from
    ``model_data`` (named like the job)."""
    from sagemaker.core import shapes
    from sagemaker.core.resources import TransformJob

    settings = settings or TransformSettings()
    if not input_uri.startswith("s3://"):
        raise LaunchError(f"transform input {input_uri!r} must be an s3:// prefix of photos")
    if bool(model_name) == bool(model_data):
        raise LaunchError("give exactly one of a model name or model data (s3://.../model.tar.gz)")
    name = job_name or timestamped("bincounter-transform")
    if model_data:
        model_name = create_model(config, model_data, name, settings.environment)
    output = output_uri or config.s3_uri("transform", name)
    kwargs: dict[str, Any] = {}
    if settings.max_concurrent:
        kwargs["max_concurrent_transforms"] = settings.max_concurrent
    job = TransformJob.create(
        transform_job_name=name,
        model_name=model_name,
        max_payload_in_mb=settings.max_payload_mb,
        batch_strategy="SingleRecord",
        transform_input=shapes.TransformInput(
            data_source=shapes.TransformDataSource(
                s3_data_source=shapes.TransformS3DataSource(
                    s3_data_type="S3Prefix", s3_uri=input_uri
                )
            ),
            content_type="image/jpeg",
            split_type="None",
        ),
        transform_output=shapes.TransformOutput(
            s3_output_path=output, accept="application/json", assemble_with="None"
        ),
        transform_resources=shapes.TransformResources(
            instance_type=settings.instance_type, instance_count=settings.instance_count
        ),
        environment=dict(settings.environment) or None,
        **kwargs,
        **resource_kwargs(config),
    )
    status = str(job.transform_job_status)
    if wait:
        job.wait()
        status = str(job.transform_job_status)
        if status == "Failed":
            raise LaunchError(f"transform job {name} failed: {job.failure_reason}")
    return TransformLaunch(name, str(model_name), output, status)
