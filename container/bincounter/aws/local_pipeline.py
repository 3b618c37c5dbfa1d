"""Run the pipeline on this machine with the SDK's local pipeline support and docker.

``run_local(config, settings, parameters)`` builds the same ``Pipeline`` as ``upsert`` (same
requests, same gate) and runs it with ``sagemaker.mlops.local.LocalPipelineSession``: every
Processing and Training step is the image under ``docker compose``, S3 inputs and outputs go
through the session's boto3 (``AWS_ENDPOINT_URL`` points them at a local S3 such as moto's),
and the gate's ``JsonGet`` reads ``evaluation.json`` back from there. It returns the
execution's status and per-step table, as ``bincounter-aws pipeline status`` prints it.

What the SDK (sagemaker-mlops 1.27.0) lacks, and what is done instead:

* ``Pipeline.create()``/``start()`` in local mode call ``session.sagemaker_client
  .create_pipeline(...)``, but mlops' ``LocalPipelineSession`` has ``create_pipeline`` and
  ``start_pipeline_execution`` on the *session*; its client is sagemaker-core's
  ``LocalSagemakerClient``, which has neither: the AttributeError of
  aws/sagemaker-python-sdk#2990, back with the v3 split of local pipelines between core and
  mlops (#6163). sagemaker-core's own ``workflow.pipeline_context.LocalPipelineSession`` defers
  job calls correctly but has the same client. The session's methods are called directly
  here (``create()`` also wants an IAM role check that means nothing locally).
* The local executor runs Processing, Training, Transform, CreateModel, Condition and Fail steps
  only: no Tuning step (#4313, a duplicate of #1960) and no model registration (#4253).
  ``run_local`` therefore
  builds the pipeline without ``register`` and refuses ``tune``: the definition tests and the
  moto tests cover those two steps.
* Local mode refuses ``S3DataDistributionType: ShardedByS3Key`` ("not currently supported in
  Local Mode"), which ``prepare`` uses to give each instance its own plan parts. A local job is
  one instance, for which sharding by key and full replication hand over the same files, so
  the local run sends ``FullyReplicated`` and refuses ``ProcessingInstanceCount`` > 1.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import LaunchError
from .config import AwsConfig
from .pipeline import PipelineSettings, build_pipeline

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalRun:
    """A finished local execution: ``steps`` are (name, status, failure reason) in run order."""

    execution_id: str
    status: str
    failure_reason: str | None
    steps: list[tuple[str, str, str]]
    properties: dict[str, dict[str, Any]]

    def step_status(self, name: str) -> str | None:
        return next((status for step, status, _ in self.steps if step == name), None)


def run_local(
    config: AwsConfig,
    settings: PipelineSettings,
    parameters: Mapping[str, Any],
    *,
    container_root: str | Path | None = None,
) -> LocalRun:
    """Build the pipeline (no register step) and run one execution locally; see the module
    docstring. ``parameters`` are typed values (``{"MinAccuracy": 0.5, "PlanUri": "s3://..."}``)."""
    from sagemaker.mlops.local import LocalPipelineSession

    from .local import docker_problem

    if settings.tune:
        raise LaunchError("the SDK's local pipelines cannot run a tuning step (SDK issue 4313)")
    if int(parameters.get("ProcessingInstanceCount", 1)) != 1:
        raise LaunchError("a local run prepares on one instance: ProcessingInstanceCount=1")
    problem = docker_problem()
    if problem:
        raise LaunchError(problem)
    root = Path(container_root or tempfile.mkdtemp(prefix="bincounter-pipeline-")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    session = LocalPipelineSession(boto_session=config.boto_session())
    session.config = {"local": {"local_code": True, "container_root": str(root)}}
    pipeline = build_pipeline(config, dataclasses.replace(settings, register=False), session)
    for step in pipeline.steps:
        _replicate_inputs(getattr(step, "request", {}))
    session.create_pipeline(pipeline, "bincounter (local)")
    execution = session.start_pipeline_execution(pipeline.name, PipelineParameters=dict(parameters))
    described = execution.describe()
    steps = [
        (s["StepName"], s["StepStatus"], s.get("FailureReason", ""))
        for s in execution.list_steps()["PipelineExecutionSteps"]
    ]
    properties = {name: dict(s.properties or {}) for name, s in execution.step_execution.items()}
    return LocalRun(
        execution_id=execution.pipeline_execution_name,
        status=described["PipelineExecutionStatus"],
        failure_reason=described.get("FailureReason"),
        steps=steps,
        properties=properties,
    )


def _replicate_inputs(request: dict[str, Any]) -> None:
    """``ShardedByS3Key`` -> ``FullyReplicated`` in a request's inputs (one local instance)."""
    for item in request.get("ProcessingInputs", []):
        s3 = item.get("S3Input", {})
        if s3.get("S3DataDistributionType") == "ShardedByS3Key":
            s3["S3DataDistributionType"] = "FullyReplicated"
    for channel in request.get("InputDataConfig", []):
        s3 = channel.get("DataSource", {}).get("S3DataSource", {})
        if s3.get("S3DataDistributionType") == "ShardedByS3Key":
            s3["S3DataDistributionType"] = "FullyReplicated"


__all__ = ["LocalRun", "run_local"]
