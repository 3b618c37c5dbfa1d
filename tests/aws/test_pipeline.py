"""The pipeline's definition (steps, dependencies, property file, parameters) and its upsert and
start against the moto server, read back from the requests the server recorded."""

from __future__ import annotations

import json

import pytest

from bincounter.aws.cli import main
from bincounter.aws.inputs import LaunchError
from bincounter.aws.pipeline import GATE, PARAMETERS, PipelineSettings

from .conftest import BUCKET, IMAGE, ROLE

FLAGS = ["--region", "us-east-1", "--role", ROLE, "--bucket", BUCKET, "--image", IMAGE]
FLAGS += ["--prefix", "bc"]


def _definition(capsys, *extra: str) -> dict:
    assert main(["pipeline", "definition", *FLAGS, "--hp", "epochs=2", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def _steps(definition: dict) -> dict[str, dict]:
    """Every step by name, condition branches included."""
    found: dict[str, dict] = {}
    todo = list(definition["Steps"])
    while todo:
        step = todo.pop()
        found[step["Name"]] = step
        args = step.get("Arguments", {})
        todo += args.get("IfSteps", []) + args.get("ElseSteps", [])
    return found


def _refs(obj) -> set[str]:
    """Names of the steps an argument tree reads from (``Steps.<name>.``)."""
    text = json.dumps(obj)
    return {part.split(".")[0] for part in text.split('"Get": "Steps.')[1:]}


def test_definition_steps_dependencies_property_file_and_parameters(moto_server, capsys):
    definition = _definition(capsys)
    steps = _steps(definition)
    checks = [c for c, *_ in GATE]
    expected = {"prepare", "train", "evaluate", "register"}
    expected |= {f"gate-{c}" for c in checks} | {f"refused-{c}" for c in checks}
    assert set(steps) == expected
    assert [s["Name"] for s in definition["Steps"]] == [
        "prepare",
        "train",
        "evaluate",
        "gate-accuracy",
    ]
    assert _refs(steps["train"]["Arguments"]) == {"prepare"}
    assert _refs(steps["evaluate"]["Arguments"]) == {"prepare", "train"}
    assert _refs(steps["register"]["Arguments"]) == {"train", "evaluate"}
    (prop,) = steps["evaluate"]["PropertyFiles"]
    assert prop == {
        "PropertyFileName": "evaluation",
        "OutputName": "evaluation",
        "FilePath": "evaluation.json",
    }
    entry = steps["evaluate"]["Arguments"]["AppSpecification"]["ContainerEntrypoint"]
    assert entry[-2:] == ["-m", "bincounter.training.scoring"]
    # the gate reads evaluation.json through the property file and names metric, bar and value
    gate = steps["gate-accuracy"]["Arguments"]["Conditions"][0]
    assert gate["Type"] == "GreaterThanOrEqualTo"
    assert gate["LeftValue"]["Std:JsonGet"]["Path"] == "metrics.accuracy"
    assert gate["RightValue"] == {"Get": "Parameters.MinAccuracy"}
    message = json.dumps(steps["refused-rmse"]["Arguments"]["ErrorMessage"])
    assert "test rmse" in message and "Parameters.MaxRmse" in message and "metrics.rmse" in message
    names = {p["Name"]: p for p in definition["Parameters"]}
    assert set(names) == {*PARAMETERS, "Hp_epochs"}
    assert names["ModelApprovalStatus"]["DefaultValue"] == "PendingManualApproval"
    train = steps["train"]["Arguments"]
    assert train["HyperParameters"] == {"epochs": {"Get": "Parameters.Hp_epochs"}}
    assert train["EnableManagedSpotTraining"] == {"Get": "Parameters.TrainingSpot"}
    assert train["CheckpointConfig"]["LocalPath"] == "/opt/ml/checkpoints"
    assert {c["ChannelName"] for c in train["InputDataConfig"]} == {"train", "validation", "test"}
    register = steps["register"]["Arguments"]
    assert register["ModelApprovalStatus"] == {"Get": "Parameters.ModelApprovalStatus"}
    assert register["InferenceSpecification"]["Containers"][0]["Image"] == IMAGE
    metadata = register["CustomerMetadataProperties"]
    assert "metrics.accuracy" in json.dumps(metadata["test_accuracy"])
    assert "model_card.json" in json.dumps(metadata["model_version"])


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        (PipelineSettings(name="bad name"), "pipeline name"),
        (PipelineSettings(group="-x"), "model package group"),
        (PipelineSettings(hyperparameters={"epochs": "many"}), "epochs"),
        (PipelineSettings(parameter_defaults={"Nope": 1}), "unknown pipeline parameter"),
    ],
)
def test_bad_names_fail_before_anything_is_created(settings, words):
    with (
        pytest.raises(LaunchError, match=words)
        if words != "epochs"
        else pytest.raises(Exception, match=words)
    ):
        settings.check()


def test_bad_parameter_is_a_user_error(moto_server, capsys):
    assert main(["pipeline", "definition", *FLAGS, "--parameter", "MinAccuracy=high"]) == 2
    assert "MinAccuracy" in capsys.readouterr().err


def test_upsert_and_start_reach_the_server(moto_server, capsys):
    assert main(["pipeline", "upsert", *FLAGS, "--name", "bc-pipe", "--group", "bc-group"]) == 0
    (created,) = [c for c in moto_server.calls("CreatePipeline") if c["PipelineName"] == "bc-pipe"]
    sent = json.loads(created["PipelineDefinition"])
    assert {s["Name"] for s in sent["Steps"]} == {"prepare", "train", "evaluate", "gate-accuracy"}
    assert created["RoleArn"] == ROLE
    assert any(
        c["ModelPackageGroupName"] == "bc-group"
        for c in moto_server.calls("CreateModelPackageGroup")
    )
    plan = f"s3://{BUCKET}/bc/prepare/plan"
    assert (
        main(
            [
                "pipeline",
                "start",
                *FLAGS,
                "--name",
                "bc-pipe",
                "--group",
                "bc-group",
                "--plan-uri",
                plan,
                "--parameter",
                "MinAccuracy=0.3",
            ]
        )
        == 0
    )
    (started,) = moto_server.calls("StartPipelineExecution")[-1:]
    values = {p["Name"]: p["Value"] for p in started["PipelineParameters"]}
    # no approved package yet: no baseline parameters
    assert values == {"PlanUri": plan, "MinAccuracy": "0.3"}
    assert main(["pipeline", "start", *FLAGS, "--name", "bc-pipe", "--plan-uri", "plan/"]) == 2


def test_tune_builds_a_tuning_step_whose_best_model_is_evaluated(moto_server, capsys):
    definition = _definition(capsys, "--tune", "--range", "epochs=", "--max-jobs", "4")
    steps = _steps(definition)
    assert "train" not in steps and [s["Name"] for s in definition["Steps"]][:3] == [
        "prepare",
        "tune",
        "evaluate",
    ]
    tune = steps["tune"]
    assert tune["Type"] == "Tuning"
    config = tune["Arguments"]["HyperParameterTuningJobConfig"]
    assert config["HyperParameterTuningJobObjective"] == {
        "Type": "Maximize",
        "MetricName": "validation:accuracy",
    }
    assert config["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 4, "MaxParallelTrainingJobs": 3}
    job = tune["Arguments"]["TrainingJobDefinition"]
    assert job["StaticHyperParameters"] == {"epochs": {"Get": "Parameters.Hp_epochs"}}
    ranges = job["HyperParameterRanges"]
    assert [r["Name"] for r in ranges["ContinuousParameterRanges"]] == ["lr"]
    assert ranges["CategoricalParameterRanges"] == [
        {"Name": "batch_size", "Values": ["16", "32", "64"]}
    ]
    assert job["EnableManagedSpotTraining"] == {"Get": "Parameters.TrainingSpot"}
    assert any(
        d["Name"] == "validation:accuracy"
        for d in job["AlgorithmSpecification"]["MetricDefinitions"]
    )
    # evaluate (and register) read the best training job's model.tar.gz
    assert _refs(steps["evaluate"]["Arguments"]) == {"prepare", "tune"}
    model = steps["evaluate"]["Arguments"]["ProcessingInputs"][0]["S3Input"]["S3Uri"]
    assert {"Get": "Steps.tune.BestTrainingJob.TrainingJobName"} in model["Std:Join"]["Values"]
    assert model["Std:Join"]["Values"][-2:] == ["output", "model.tar.gz"]
    assert _refs(steps["register"]["Arguments"]) == {"tune", "evaluate"}


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--range", "lr=0.01:0.1"], "without tune"),
        (["--tune"], "both tuned and fixed"),
        (["--tune", "--range", "epochs=", "--range", "nope=1:2"], "not hyperparameters"),
        (
            ["--tune", "--range", "epochs=", "--max-jobs", "2"],
            "max parallel jobs (3) > max jobs (2)",
        ),
    ],
)
def test_bad_tune_options_are_user_errors(moto_server, capsys, extra, words):
    assert main(["pipeline", "definition", *FLAGS, "--hp", "epochs=2", *extra]) == 2
    assert words in capsys.readouterr().err
