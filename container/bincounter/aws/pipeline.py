"""From a plan to a registered model: a SageMaker Pipeline (SDK v3, ``sagemaker-mlops``).

Steps, all on the one bincounter image: ``prepare`` (the existing Processing job over an
uploaded plan) -> ``train`` (the image's ``train``, spot and checkpoints as ``train_job``), or
with ``PipelineSettings.tune`` a ``tune`` step (a tuning job over the same training job
definition, maximising ``validation:accuracy``; its best job's model goes on) ->
``evaluate`` (a Processing job running ``bincounter.training.scoring``: training's own
``evaluate`` on the test channel; ``evaluation.json`` is its property file) -> four gate checks
(``ConditionStep``), each refusing with its own ``FailStep`` whose message names the metric,
the bar and the value -> ``register`` (a model package, ``PendingManualApproval`` by default).

Why requests and not ``processor.run()``/``trainer.train()`` under a ``PipelineSession``: the
step requests are the API's own shapes, built here from the same pieces as the launch commands
(``processing.processing_request``, ``METRIC_DEFINITIONS``, validated hyperparameters) with
pipeline parameters in the fields a run may change; ``JobRequestStep`` hands them to the SDK's
``Pipeline``, whose definition and local executor take any ``Step`` by its type.

The gate compares with the latest *approved* package of the group: Pipelines cannot query the
registry, so ``start`` reads it and passes ``BaselineAccuracyFloor`` (its accuracy less the
margin) and ``BaselineRmseCeiling`` (its RMSE plus the margin) as parameters.

Why tuning is chosen when the pipeline is built and not by a run-time parameter: a
``ConditionStep`` on a ``Tune`` parameter could run ``tune`` in one branch and ``train`` in the
other, but the evaluate step after them must name the model of the branch that ran, and
Pipelines has no function that picks whichever of two step properties exists (only ``Join``,
``JsonGet``): a step that reads a property of a step in the branch not taken does not run
(the SDK's local executor blocks every step downstream of the skipped branch,
``_ConditionStepExecutor._block_all_downstream_steps``, as the service does). Putting evaluate,
gate and register into both branches would double the graph (each name used once) for no
other gain, so ``--tune`` builds the pipeline with a ``tune`` step instead of ``train``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..training.metrics import METRIC_DEFINITIONS, OBJECTIVE_METRIC
from ..training.scoring import EVALUATION_FILE, EVALUATION_OUTPUT, MODEL_INPUT, TEST_INPUT
from .config import AwsConfig
from .inputs import LaunchError, validate_hyperparameters
from .jobs import TuningSettings
from .processing import ProcessingSettings, container_arguments, processing_request
from .ranges import build_ranges, validate_ranges
from .registry import METADATA_SOURCES, check_group, package_request

log = logging.getLogger(__name__)

PIPELINE_NAME = re.compile(r"^[A-Za-z0-9](-*[A-Za-z0-9]){0,255}$")
HP_PARAMETER = re.compile(r"^[a-z][a-z0-9_]*$")
#: Source photos as a processing input (a folder in ABID layout) instead of the public bucket.
SOURCE_INPUT = "/opt/ml/processing/input/source"
EVALUATE_ENTRYPOINT = ["/usr/bin/tini", "--", "python", "-m", "bincounter.training.scoring"]
SPLITS = ("train", "validation", "test")
#: The Describe response each request step's properties follow.
STEP_SHAPES = {
    "Training": "DescribeTrainingJobResponse",
    "Processing": "DescribeProcessingJobResponse",
    "Tuning": "DescribeHyperParameterTuningJobResponse",
    "RegisterModel": "DescribeModelPackageOutput",
}

#: Pipeline parameters: name -> (kind, default). Instance types, counts, spot, the plan's
#: location and the gate's bars; hyperparameters are added per pipeline as ``Hp_<name>``.
PARAMETERS: dict[str, tuple[str, Any]] = {
    "PlanUri": ("string", ""),
    "ProcessingInstanceType": ("string", "ml.m5.2xlarge"),
    "ProcessingInstanceCount": ("integer", 1),
    "TrainingInstanceType": ("string", "ml.g4dn.xlarge"),
    "TrainingInstanceCount": ("integer", 1),
    "TrainingSpot": ("boolean", True),
    "TrainingMaxRunSeconds": ("integer", 6 * 3600),
    "EvaluationInstanceType": ("string", "ml.m5.xlarge"),
    "MinAccuracy": ("float", 0.0),
    "MaxRmse": ("float", 100.0),
    "BaselineAccuracyFloor": ("float", 0.0),
    "BaselineRmseCeiling": ("float", 100.0),
    "ModelApprovalStatus": ("string", "PendingManualApproval"),
}

#: The gate: (check name, metric in evaluation.json, comparison, bar parameter, words).
GATE: tuple[tuple[str, str, str, str, str], ...] = (
    ("accuracy", "accuracy", ">=", "MinAccuracy", "below the minimum"),
    ("rmse", "rmse", "<=", "MaxRmse", "above the maximum"),
    (
        "baseline-accuracy",
        "accuracy",
        ">=",
        "BaselineAccuracyFloor",
        "below the approved model's less the margin",
    ),
    (
        "baseline-rmse",
        "rmse",
        "<=",
        "BaselineRmseCeiling",
        "above the approved model's plus the margin",
    ),
)


@dataclass
class PipelineSettings:
    """What is fixed when the pipeline is defined (a run changes only the parameters)."""

    name: str = "bincounter"
    group: str = "bincounter"
    hyperparameters: dict[str, str] = field(default_factory=dict)
    layout: str = "folders"
    resize: int | None = None
    seed: int = 42
    source_bucket: str | None = None
    #: S3 prefix of photos in ABID layout, given to ``prepare`` as an input (``--source-dir``).
    source_uri: str | None = None
    volume_size_gb: int = 30
    register: bool = True
    parameter_defaults: dict[str, Any] = field(default_factory=dict)
    #: A ``tune`` step (tuning job, best job's model evaluated) instead of ``train``.
    tune: bool = False
    #: ``NAME=SPEC`` overrides of the default ranges (``ranges.build_ranges``), with ``tune``.
    ranges: dict[str, str] = field(default_factory=dict)
    tuning: TuningSettings = field(default_factory=TuningSettings)

    def check(self) -> None:
        if not PIPELINE_NAME.match(self.name):
            raise LaunchError(f"pipeline name {self.name!r}: letters, digits and hyphens only")
        check_group(self.group)
        unknown = sorted(set(self.parameter_defaults) - set(PARAMETERS))
        if unknown:
            raise LaunchError(
                f"unknown pipeline parameter(s) {unknown}; known: {sorted(PARAMETERS)}"
            )
        for name in self.hyperparameters:
            if not HP_PARAMETER.match(name):
                raise LaunchError(f"hyperparameter name {name!r} cannot be a pipeline parameter")
        validate_hyperparameters(self.hyperparameters)
        if self.tune:
            self.tuning.check()
            validate_ranges(build_ranges(self.ranges), self.hyperparameters)
        elif self.ranges:
            raise LaunchError("tuning ranges given without tune: add --tune or drop --range")


def _parameters(settings: PipelineSettings) -> dict[str, Any]:
    from sagemaker.core.workflow.parameters import (
        ParameterBoolean,
        ParameterFloat,
        ParameterInteger,
        ParameterString,
    )

    kinds = {
        "string": ParameterString,
        "integer": ParameterInteger,
        "float": ParameterFloat,
        "boolean": ParameterBoolean,
    }
    made = {
        name: kinds[kind](name=name, default_value=settings.parameter_defaults.get(name, default))
        for name, (kind, default) in PARAMETERS.items()
    }
    for name, value in validate_hyperparameters(settings.hyperparameters).items():
        made[f"Hp_{name}"] = ParameterString(name=f"Hp_{name}", default_value=value)
    return made


def _job_step_class() -> type:
    """``JobRequestStep``: a pipeline step that sends a request built here (made lazily so the
    module imports without the SDK)."""
    from sagemaker.core.workflow.properties import Properties
    from sagemaker.mlops.workflow.steps import ConfigurableRetryStep

    class JobRequestStep(ConfigurableRetryStep):
        def __init__(self, name, step_type, request, property_files=None, depends_on=None):
            super().__init__(name, step_type, None, None, depends_on, None)
            self.request = request
            self.property_files = property_files or []
            self._properties = Properties(
                step_name=name, step=self, shape_name=STEP_SHAPES[step_type.value]
            )

        @property
        def arguments(self):
            return self.request

        @property
        def properties(self):
            return self._properties

        def to_request(self):
            request = super().to_request()
            if self.property_files:
                request["PropertyFiles"] = [f.expr for f in self.property_files]
            return request

    return JobRequestStep


def _prepare_request(
    config: AwsConfig, settings: PipelineSettings, p: Mapping[str, Any], data_uri: Any
) -> dict[str, Any]:
    """The ``prepare`` launch's own CreateProcessingJob request, its run-time fields made
    parameters; with ``source_uri`` the photos come in as an input folder."""
    arguments = container_arguments(
        layout=settings.layout,
        shard_size_mb=256.0,
        resize=settings.resize,
        seed=settings.seed,
        with_metadata=True,
        source_bucket=None if settings.source_uri else settings.source_bucket,
        images_dir="bin-images",
        metadata_dir="metadata",
        workers=16,
    )
    if settings.source_uri:
        arguments += ["--source-dir", SOURCE_INPUT]
    request = processing_request(
        job_name="prepare",
        image=config.require_image(),
        role=config.require_role(),
        plan_uri="s3://plan/",
        output_uri="s3://data/",
        arguments=arguments,
        settings=ProcessingSettings(),
    )
    request.pop("ProcessingJobName")
    request["ProcessingInputs"][0]["S3Input"]["S3Uri"] = p["PlanUri"]
    request["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"] = data_uri
    cluster = request["ProcessingResources"]["ClusterConfig"]
    cluster["InstanceType"] = p["ProcessingInstanceType"]
    cluster["InstanceCount"] = p["ProcessingInstanceCount"]
    if settings.source_uri:
        request["ProcessingInputs"].append(_s3_input("source", settings.source_uri, SOURCE_INPUT))
    return request


def _s3_input(name: str, uri: Any, local_path: str) -> dict[str, Any]:
    return {
        "InputName": name,
        "S3Input": {
            "S3Uri": uri,
            "LocalPath": local_path,
            "S3DataType": "S3Prefix",
            "S3InputMode": "File",
            "S3DataDistributionType": "FullyReplicated",
        },
    }


def _training_request(
    config: AwsConfig, settings: PipelineSettings, p: Mapping[str, Any], channels: Mapping[str, Any]
) -> dict[str, Any]:
    """CreateTrainingJob for the image's ``train``: spot with checkpoints, as ``train_job``."""
    from sagemaker.core.workflow.execution_variables import ExecutionVariables
    from sagemaker.core.workflow.functions import Join

    hyperparameters = {
        name: p[f"Hp_{name}"] for name in validate_hyperparameters(settings.hyperparameters)
    }
    return {
        "AlgorithmSpecification": {
            "TrainingImage": config.require_image(),
            "TrainingInputMode": "File",
            "MetricDefinitions": [dict(m) for m in METRIC_DEFINITIONS],
        },
        "RoleArn": config.require_role(),
        "HyperParameters": hyperparameters,
        "InputDataConfig": [
            {
                "ChannelName": name,
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": uri,
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
            }
            for name, uri in channels.items()
        ],
        "OutputDataConfig": {"S3OutputPath": config.s3_uri("pipelines", settings.name, "output")},
        "ResourceConfig": {
            "InstanceType": p["TrainingInstanceType"],
            "InstanceCount": p["TrainingInstanceCount"],
            "VolumeSizeInGB": settings.volume_size_gb,
        },
        "StoppingCondition": {
            "MaxRuntimeInSeconds": p["TrainingMaxRunSeconds"],
            "MaxWaitTimeInSeconds": 2 * 24 * 3600,
        },
        "EnableManagedSpotTraining": p["TrainingSpot"],
        "CheckpointConfig": {
            "S3Uri": Join(
                on="/",
                values=[
                    config.s3_uri("pipelines", settings.name, "checkpoints"),
                    ExecutionVariables.PIPELINE_EXECUTION_ID,
                ],
            ),
            "LocalPath": "/opt/ml/checkpoints",
        },
    }


def _tuning_request(settings: PipelineSettings, training: dict[str, Any]) -> dict[str, Any]:
    """CreateHyperParameterTuningJob over ``training`` (the train step's own request, its
    hyperparameters made static), maximising the objective ``tune`` maximises."""
    definition = {k: v for k, v in training.items() if k != "HyperParameters"}
    definition["StaticHyperParameters"] = training["HyperParameters"]
    definition["HyperParameterRanges"] = _range_request(build_ranges(settings.ranges))
    tuning = settings.tuning
    return {
        "HyperParameterTuningJobConfig": {
            "Strategy": tuning.strategy,
            "HyperParameterTuningJobObjective": {
                "Type": "Maximize",
                "MetricName": OBJECTIVE_METRIC,
            },
            "ResourceLimits": {
                "MaxNumberOfTrainingJobs": tuning.max_jobs,
                "MaxParallelTrainingJobs": tuning.max_parallel_jobs,
            },
            "TrainingJobEarlyStoppingType": "Auto" if tuning.early_stopping else "Off",
        },
        "TrainingJobDefinition": definition,
    }


def _range_request(ranges: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """``HyperParameterRanges`` in the API's shape, from ``ranges.RangeSpec``s."""
    shaped: dict[str, list[dict[str, Any]]] = {
        "IntegerParameterRanges": [],
        "ContinuousParameterRanges": [],
        "CategoricalParameterRanges": [],
    }
    for name, spec in ranges.items():
        if spec.kind == "categorical":
            shaped["CategoricalParameterRanges"].append({"Name": name, "Values": list(spec.values)})
            continue
        key = "IntegerParameterRanges" if spec.kind == "integer" else "ContinuousParameterRanges"
        shaped[key].append(
            {
                "Name": name,
                "MinValue": str(spec.low),
                "MaxValue": str(spec.high),
                "ScalingType": spec.scaling,
            }
        )
    return {k: v for k, v in shaped.items() if v}


def _evaluate_request(
    config: AwsConfig, p: Mapping[str, Any], model_data: Any, test_uri: Any, out_uri: Any
) -> dict[str, Any]:
    """CreateProcessingJob for ``bincounter.training.scoring`` (one instance: test is small)."""
    model = _s3_input("model", model_data, str(MODEL_INPUT))
    return {
        "RoleArn": config.require_role(),
        "AppSpecification": {
            "ImageUri": config.require_image(),
            "ContainerEntrypoint": list(EVALUATE_ENTRYPOINT),
        },
        "ProcessingInputs": [model, _s3_input("test", test_uri, str(TEST_INPUT))],
        "ProcessingOutputConfig": {
            "Outputs": [
                {
                    "OutputName": "evaluation",
                    "S3Output": {
                        "S3Uri": out_uri,
                        "LocalPath": str(EVALUATION_OUTPUT),
                        "S3UploadMode": "EndOfJob",
                    },
                }
            ]
        },
        "ProcessingResources": {
            "ClusterConfig": {
                "InstanceCount": 1,
                "InstanceType": p["EvaluationInstanceType"],
                "VolumeSizeInGB": 30,
            }
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
    }


def _gate(evaluate: Any, evaluation: Any, p: Mapping[str, Any], then: list[Any]) -> Any:
    """Nested condition steps, one per check, each with its FailStep; ``then`` runs last."""
    from sagemaker.core.workflow.conditions import (
        ConditionGreaterThanOrEqualTo,
        ConditionLessThanOrEqualTo,
    )
    from sagemaker.core.workflow.functions import Join, JsonGet
    from sagemaker.mlops.workflow import ConditionStep, FailStep

    comparisons = {">=": ConditionGreaterThanOrEqualTo, "<=": ConditionLessThanOrEqualTo}
    inner = then
    for check, metric, op, bar, words in reversed(GATE):
        value = JsonGet(
            step_name=evaluate.name, property_file=evaluation, json_path=f"metrics.{metric}"
        )
        fail = FailStep(
            name=f"refused-{check}",
            error_message=Join(
                on="", values=[f"test {metric} ", value, f" is {words} bar {bar}=", p[bar]]
            ),
        )
        step = ConditionStep(
            name=f"gate-{check}",
            conditions=[comparisons[op](left=value, right=p[bar])],
            if_steps=inner,
            else_steps=[fail],
        )
        inner = [step]
    return inner[0]


def build_pipeline(config: AwsConfig, settings: PipelineSettings, session: Any = None) -> Any:
    """The SDK ``Pipeline`` (nothing is sent). ``session``: a ``PipelineSession`` or a local one."""
    from sagemaker.core.workflow.execution_variables import ExecutionVariables
    from sagemaker.core.workflow.functions import Join
    from sagemaker.core.workflow.properties import PropertyFile
    from sagemaker.mlops.workflow import Pipeline
    from sagemaker.mlops.workflow.steps import StepTypeEnum

    settings.check()
    step_class = _job_step_class()
    p = _parameters(settings)
    run_prefix = config.s3_uri("pipelines", settings.name, "runs")

    def run_uri(*parts: str) -> Any:
        return Join(on="/", values=[run_prefix, ExecutionVariables.PIPELINE_EXECUTION_ID, *parts])

    prepare = step_class(
        "prepare", StepTypeEnum.PROCESSING, _prepare_request(config, settings, p, run_uri("data"))
    )
    data = prepare.properties.ProcessingOutputConfig.Outputs["data"].S3Output.S3Uri
    channels = {s: Join(on="/", values=[data, s]) for s in SPLITS}
    training = _training_request(config, settings, p, channels)
    if settings.tune:
        train = step_class("tune", StepTypeEnum.TUNING, _tuning_request(settings, training))
        best = train.properties.BestTrainingJob.TrainingJobName
        output = training["OutputDataConfig"]["S3OutputPath"]
        model_data = Join(on="/", values=[output, best, "output", "model.tar.gz"])
    else:
        train = step_class("train", StepTypeEnum.TRAINING, training)
        model_data = train.properties.ModelArtifacts.S3ModelArtifacts
    evaluation = PropertyFile(name="evaluation", output_name="evaluation", path=EVALUATION_FILE)
    out_uri = run_uri("evaluation")
    evaluate = step_class(
        "evaluate",
        StepTypeEnum.PROCESSING,
        _evaluate_request(config, p, model_data, channels["test"], out_uri),
        property_files=[evaluation],
    )
    then = []
    if settings.register:
        then.append(
            _register_step(step_class, settings, config, p, evaluate, evaluation, model_data)
        )
    gate = _gate(evaluate, evaluation, p, then)
    return Pipeline(
        name=settings.name,
        parameters=list(p.values()),
        steps=[prepare, train, evaluate, gate],
        sagemaker_session=session,
    )


def _register_step(step_class, settings, config, p, evaluate, evaluation, model_data) -> Any:
    """CreateModelPackage with the metadata read from the evaluate step's files (JsonGet)."""
    from sagemaker.core.workflow.functions import Join, JsonGet
    from sagemaker.mlops.workflow.steps import StepTypeEnum

    out = evaluate.properties.ProcessingOutputConfig.Outputs["evaluation"].S3Output.S3Uri
    metadata = {}
    for key, (name, path) in METADATA_SOURCES.items():
        if name == EVALUATION_FILE:
            value = JsonGet(step_name=evaluate.name, property_file=evaluation, json_path=path)
        else:
            value = JsonGet(s3_uri=Join(on="/", values=[out, name]), json_path=path)
        metadata[key] = Join(on="", values=[value])
    container = {"Image": config.require_image(), "ModelDataUrl": model_data}
    evaluation_uri = Join(on="/", values=[out, EVALUATION_FILE])
    approval = p["ModelApprovalStatus"]
    request = package_request(settings.group, container, evaluation_uri, metadata, approval)
    return step_class("register", StepTypeEnum.REGISTER_MODEL, request)


__all__ = ["GATE", "PARAMETERS", "PipelineSettings", "build_pipeline"]
