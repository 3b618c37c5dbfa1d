"""Training and tuning jobs on the bincounter image, with SageMaker Python SDK v3.

This is the one module that turns checked launch inputs into SDK objects and requests, so the
SDK's sharp edges are handled in one place (see ``shared/notes/sagemaker-sdk-v3.md``): the
tuner ignores the trainer's metric definitions, so they go to the tuner; channels go to
``tuner.tune(inputs=...)``; tuning jobs get an explicit name (the default has minute
resolution); a cloud trainer constructs offline only with a region, a role ARN and an explicit
output config. Every training job of a tuning job gets the same checkpoint S3 URI: the
container keeps each job's checkpoints under its ``TRAINING_JOB_NAME`` inside
``/opt/ml/checkpoints``, so parallel jobs never resume each other.

* ``launch_training(config, channels, hyperparameters, settings)`` -> ``TrainingLaunch``
  (job name, model artifact URI), with ``ModelTrainer`` from ``sagemaker.train``.
* ``launch_tuning(config, channels, ranges, static, settings, tuning)`` -> ``TuningLaunch``, with
  ``HyperparameterTuner`` from ``sagemaker.train.tuner``; objective ``validation:accuracy``
  maximised, metric definitions from ``bincounter.training.metrics`` (the regexes the
  container's log lines were written for).
* ``best_hyperparameters(config, tuning_job)`` -> the best job's hyperparameters, which
  ``inputs.write_hyperparameters_file`` writes for ``train`` to read back.

Hyperparameters and ranges are checked first (``inputs``, ``ranges``), so a mistake fails
before any request is sent.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import HyperparameterError, LaunchError
from ..params import REQUIRED_CHANNELS
from ..training.hyperparameters import own_hyperparameters
from ..training.metrics import METRIC_DEFINITIONS, OBJECTIVE_METRIC
from .config import AwsConfig
from .inputs import INPUT_MODES, validate_hyperparameters
from .ranges import RangeSpec, validate_ranges

log = logging.getLogger(__name__)

TUNING_NAME_MAX = 32
DISTRIBUTIONS = ("FullyReplicated", "ShardedByS3Key")
STRATEGIES = ("Bayesian", "Random", "Hyperband", "Grid")
JOB_NAME_MAX = 63


# --------------------------------------------------------------------------- settings


@dataclass
class JobSettings:
    """Compute, spot and stopping settings shared by training and tuning jobs."""

    instance_type: str = "ml.g4dn.xlarge"
    instance_count: int = 1
    volume_size_gb: int = 30
    spot: bool = False
    max_run_seconds: int = 24 * 3600
    max_wait_seconds: int | None = None
    checkpoint_uri: str | None = None
    output_uri: str | None = None
    base_job_name: str = "bincounter"
    environment: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    #: How every channel reaches the container: ``File`` (copied before the start),
    #: ``FastFile`` (S3 mounted, read on demand: tar shards stream at S3's sequential speed) or
    #: ``Pipe`` (tar shards only, streamed into a FIFO per pass; one process per host).
    input_mode: str = "File"
    #: Channel -> ``FullyReplicated`` (default) or ``ShardedByS3Key`` (each host gets its share
    #: of the objects; the container reads its own shards either way).
    distribution: dict[str, str] = field(default_factory=dict)

    def check(self) -> None:
        if self.instance_count < 1:
            raise LaunchError(f"instance_count={self.instance_count} must be >= 1")
        if self.input_mode not in INPUT_MODES:
            raise LaunchError(f"input mode {self.input_mode!r} is not one of {INPUT_MODES}")
        for channel, kind in self.distribution.items():
            if kind not in DISTRIBUTIONS:
                raise LaunchError(
                    f"distribution of channel {channel}: {kind!r} is not one of {DISTRIBUTIONS}"
                )
        if self.max_wait_seconds is not None and not self.spot:
            raise LaunchError("max wait time applies to managed spot only: add --spot or drop it")
        if (
            self.spot
            and self.max_wait_seconds is not None
            and (self.max_wait_seconds < self.max_run_seconds)
        ):
            raise LaunchError(
                f"max wait ({self.max_wait_seconds} s) must be >= max run "
                f"({self.max_run_seconds} s): it includes the time spent waiting for spot capacity"
            )
        if len(self.base_job_name) > JOB_NAME_MAX - 15:
            raise LaunchError(f"base job name {self.base_job_name!r} is too long (max 48)")


@dataclass
class TuningSettings:
    """How a tuning job searches: how many jobs, how many at once, which strategy."""

    max_jobs: int = 12
    max_parallel_jobs: int = 3
    early_stopping: bool = False
    strategy: str = "Bayesian"

    def check(self) -> None:
        if self.max_jobs < 1 or self.max_parallel_jobs < 1:
            raise LaunchError("max jobs and max parallel jobs must be >= 1")
        if self.max_parallel_jobs > self.max_jobs:
            raise LaunchError(
                f"max parallel jobs ({self.max_parallel_jobs}) > max jobs ({self.max_jobs})"
            )


def timestamped(base: str, max_length: int = JOB_NAME_MAX) -> str:
    """``<base>-YYMMDD-HHMMSS`` within SageMaker's name limit."""
    stamp = time.strftime("%y%m%d-%H%M%S", time.gmtime())
    return f"{base[: max_length - len(stamp) - 1]}-{stamp}"


def _input_data(
    channels: Mapping[str, str], distribution: Mapping[str, str] | None = None
) -> list[Any]:
    """One ``InputData`` per channel; a channel with a distribution type gets an explicit
    ``S3DataSource`` (the SDK makes plain URIs ``FullyReplicated``)."""
    from sagemaker.core.training.configs import InputData, S3DataSource

    distribution = distribution or {}
    unknown = sorted(set(distribution) - set(channels))
    if unknown:
        raise LaunchError(f"distribution given for channel(s) {unknown} that are not passed")
    for name, uri in channels.items():
        if not uri.startswith("s3://"):
            raise LaunchError(f"channel {name}={uri!r} must be an s3:// prefix for a cloud job")
    return [
        InputData(
            channel_name=name,
            data_source=S3DataSource(
                s3_data_type="S3Prefix", s3_uri=uri, s3_data_distribution_type=distribution[name]
            )
            if name in distribution
            else uri,
        )
        for name, uri in channels.items()
    ]


def _check_channels(channels: Mapping[str, str]) -> None:
    missing = [c for c in REQUIRED_CHANNELS if c not in channels]
    if missing:
        raise LaunchError(f"channel(s) {missing} missing: the container needs train and validation")


def build_trainer(
    config: AwsConfig, hyperparameters: Mapping[str, str], settings: JobSettings
) -> Any:
    """A cloud ``ModelTrainer`` for the image; no AWS call beyond the SDK's session set-up."""
    from sagemaker.core.helper.session_helper import Session
    from sagemaker.core.training.configs import (
        CheckpointConfig,
        Compute,
        OutputDataConfig,
        StoppingCondition,
        Tag,
    )
    from sagemaker.train import ModelTrainer

    settings.check()
    checkpoint_uri = settings.checkpoint_uri
    if settings.spot and not checkpoint_uri:
        checkpoint_uri = config.s3_uri("checkpoints", settings.base_job_name)
    output_uri = settings.output_uri or config.s3_uri("output")
    max_wait = settings.max_wait_seconds
    if settings.spot and max_wait is None:
        max_wait = 2 * settings.max_run_seconds
    trainer = ModelTrainer(
        training_image=config.require_image(),
        role=config.require_role(),
        sagemaker_session=Session(boto_session=config.boto_session()),
        base_job_name=settings.base_job_name,
        compute=Compute(
            instance_type=settings.instance_type,
            instance_count=settings.instance_count,
            volume_size_in_gb=settings.volume_size_gb,
            enable_managed_spot_training=settings.spot,
        ),
        stopping_condition=StoppingCondition(
            max_runtime_in_seconds=settings.max_run_seconds,
            max_wait_time_in_seconds=max_wait,
        ),
        output_data_config=OutputDataConfig(s3_output_path=output_uri),
        checkpoint_config=(
            CheckpointConfig(s3_uri=checkpoint_uri, local_path="/opt/ml/checkpoints")
            if checkpoint_uri
            else None
        ),
        hyperparameters=dict(hyperparameters),
        training_input_mode=settings.input_mode,
        environment=dict(settings.environment),
        tags=[Tag(key=k, value=v) for k, v in settings.tags.items()] or None,
    )
    return trainer


def _sdk_range(spec: RangeSpec) -> Any:
    """The SDK's parameter object for one range."""
    from sagemaker.core.parameter import (
        CategoricalParameter,
        ContinuousParameter,
        IntegerParameter,
    )

    if spec.kind == "categorical":
        return CategoricalParameter(list(spec.values))
    cls = IntegerParameter if spec.kind == "integer" else ContinuousParameter
    return cls(spec.low, spec.high, scaling_type=spec.scaling)


def _metric_definitions() -> list[Any]:
    from sagemaker.core.training.configs import MetricDefinition

    return [MetricDefinition(name=m["Name"], regex=m["Regex"]) for m in METRIC_DEFINITIONS]


# --------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainingLaunch:
    """A started training job; ``model_artifact`` is the S3 URI its ``model.tar.gz`` gets."""

    job_name: str
    model_artifact: str
    status: str
    hyperparameters: dict[str, str]


def launch_training(
    config: AwsConfig,
    channels: Mapping[str, str],
    hyperparameters: Mapping[str, Any],
    settings: JobSettings | None = None,
    *,
    wait: bool = True,
    logs: bool = True,
) -> TrainingLaunch:
    """Start a training job; with ``wait`` block until it ends (raising if it failed).

    ``channels`` maps channel names (``train``, ``validation``, optional ``test``) to S3
    prefixes. The model artifact URI is known as soon as the job is created.
    """
    settings = settings or JobSettings()
    _check_channels(channels)
    strings = validate_hyperparameters(hyperparameters)
    trainer = build_trainer(config, strings, settings).with_metric_definitions(
        _metric_definitions()
    )
    inputs = _input_data(channels, settings.distribution)
    trainer.train(input_data_config=inputs, wait=wait, logs=logs)
    job = trainer._latest_training_job
    job_name = str(job.training_job_name)
    artifact = None
    with contextlib.suppress(AttributeError):
        artifact = job.model_artifacts.s3_model_artifacts
    if not isinstance(artifact, str) or not artifact:
        output = (settings.output_uri or config.s3_uri("output")).rstrip("/")
        artifact = f"{output}/{job_name}/output/model.tar.gz"
    status = str(getattr(job, "training_job_status", "") or "InProgress")
    if wait and status == "Failed":
        raise LaunchError(f"training job {job_name} failed: {job.failure_reason}")
    return TrainingLaunch(job_name, artifact, status, strings)


# --------------------------------------------------------------------------- tuning


@dataclass(frozen=True)
class TuningLaunch:
    job_name: str
    status: str
    static_hyperparameters: dict[str, str]
    ranges: dict[str, RangeSpec]


def launch_tuning(
    config: AwsConfig,
    channels: Mapping[str, str],
    ranges: Mapping[str, RangeSpec],
    static_hyperparameters: Mapping[str, Any] | None = None,
    settings: JobSettings | None = None,
    tuning: TuningSettings | None = None,
    *,
    job_name: str | None = None,
    wait: bool = True,
) -> TuningLaunch:
    """Start a hyperparameter tuning job maximising ``validation:accuracy``.

    ``ranges`` come from ``build_ranges``; ``static_hyperparameters`` are sent unchanged to
    every job. The tuner receives the metric definitions itself (it ignores the trainer's).
    """
    from sagemaker.train.tuner import HyperparameterTuner

    settings = settings or JobSettings()
    tuning = tuning or TuningSettings()
    _check_channels(channels)
    tuning.check()
    static = validate_hyperparameters(static_hyperparameters or {})
    validate_ranges(ranges, static)
    name = job_name or timestamped(settings.base_job_name[:17], TUNING_NAME_MAX)
    if len(name) > TUNING_NAME_MAX:
        raise LaunchError(f"tuning job name {name!r} is longer than {TUNING_NAME_MAX} characters")
    trainer = build_trainer(config, static, settings)
    tuner = HyperparameterTuner(
        model_trainer=trainer,
        objective_metric_name=OBJECTIVE_METRIC,
        objective_type="Maximize",
        hyperparameter_ranges={n: _sdk_range(r) for n, r in ranges.items()},
        metric_definitions=[dict(m) for m in METRIC_DEFINITIONS],
        strategy=tuning.strategy,
        max_jobs=tuning.max_jobs,
        max_parallel_jobs=tuning.max_parallel_jobs,
        early_stopping_type="Auto" if tuning.early_stopping else "Off",
    )
    tuner.tune(inputs=_input_data(channels, settings.distribution), job_name=name, wait=wait)
    job = tuner.latest_tuning_job
    status = str(getattr(job, "hyper_parameter_tuning_job_status", "") or "InProgress")
    return TuningLaunch(name, status, static, dict(ranges))


def best_from_descriptions(
    tuning: Mapping[str, Any], best_job: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The best job's hyperparameters from DescribeHyperParameterTuningJob (+ the best job's
    DescribeTrainingJob when available: it holds every value the job actually ran with).

    Validated with ``parse_hyperparameters`` and returned as strings, ready for ``train``.
    """
    best = tuning.get("BestTrainingJob") or {}
    if not best.get("TrainingJobName"):
        raise LaunchError(
            f"tuning job {tuning.get('HyperParameterTuningJobName')} has no best training job yet "
            f"(status {tuning.get('HyperParameterTuningJobStatus')}): wait for a job to report "
            f"{OBJECTIVE_METRIC}"
        )
    if best_job and best_job.get("HyperParameters"):
        raw = dict(best_job["HyperParameters"])
    else:
        definition = tuning.get("TrainingJobDefinition") or {}
        raw = {
            **(definition.get("StaticHyperParameters") or {}),
            **(best.get("TunedHyperParameters") or {}),
        }
    own = own_hyperparameters(raw)
    try:
        strings = validate_hyperparameters(own)
    except HyperparameterError as exc:
        raise LaunchError(
            f"best job {best['TrainingJobName']} reports hyperparameters the container rejects: "
            f"{exc.reason}"
        ) from None
    metric = best.get("FinalHyperParameterTuningJobObjectiveMetric") or {}
    value = metric.get("Value")
    return {
        "tuning_job": tuning.get("HyperParameterTuningJobName"),
        "best_training_job": best["TrainingJobName"],
        "objective": {
            "name": metric.get("MetricName", OBJECTIVE_METRIC),
            "value": value if isinstance(value, int | float) and math.isfinite(value) else None,
        },
        "hyperparameters": strings,
    }


def best_hyperparameters(
    config: AwsConfig, tuning_job_name: str, client: Any = None
) -> dict[str, Any]:
    """Describe a tuning job and its best training job; see ``best_from_descriptions``."""
    from botocore.exceptions import ClientError

    client = client or config.boto_session().client("sagemaker")
    try:
        tuning = client.describe_hyper_parameter_tuning_job(
            HyperParameterTuningJobName=tuning_job_name
        )
    except ClientError as exc:
        raise LaunchError(f"cannot describe tuning job {tuning_job_name}: {exc}") from None
    best_job = None
    name = (tuning.get("BestTrainingJob") or {}).get("TrainingJobName")
    if name:
        try:
            best_job = client.describe_training_job(TrainingJobName=name)
        except ClientError as exc:
            log.warning(
                "cannot describe best job %s (%s); using the tuning job's record", name, exc
            )
    return best_from_descriptions(tuning, best_job)


__all__ = [
    "JobSettings",
    "TrainingLaunch",
    "TuningLaunch",
    "TuningSettings",
    "best_from_descriptions",
    "best_hyperparameters",
    "build_trainer",
    "launch_training",
    "launch_tuning",
    "timestamped",
]
