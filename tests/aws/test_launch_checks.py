"""The launch side's pure checks: job names, settings, channels, best job, photo collection."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from bincounter.aws.cli import build_parser
from bincounter.aws.cli_shared import channels_from_args
from bincounter.aws.config import AwsConfig
from bincounter.aws.endpoints import DeploySettings
from bincounter.aws.invoke import collect_images, content_type_of
from bincounter.aws.jobs import (
    JOB_NAME_MAX,
    TUNING_NAME_MAX,
    JobSettings,
    TuningSettings,
    best_from_descriptions,
    timestamped,
)
from bincounter.aws.s3data import channel_uris
from bincounter.errors import LaunchConfigError, LaunchError
from bincounter.training.metrics import OBJECTIVE_METRIC

STAMP = r"\d{6}-\d{6}"


@pytest.mark.parametrize(
    ("base", "max_length", "kept"),
    [
        ("bincounter", JOB_NAME_MAX, "bincounter"),
        ("b" * 100, JOB_NAME_MAX, "b" * 49),
        ("bincounter-tuning-xyz"[:17], TUNING_NAME_MAX, "bincounter-tuning"),  # as launch_tuning
        ("c" * 40, TUNING_NAME_MAX, "c" * 18),
    ],
)
def test_timestamped_names_fit_sagemakers_limits(base, max_length, kept):
    name = timestamped(base, max_length)
    assert len(name) <= max_length
    assert re.fullmatch(f"{re.escape(kept)}-{STAMP}", name)


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        (JobSettings(instance_count=0), "instance_count=0 must be >= 1"),
        (JobSettings(max_wait_seconds=7200), "max wait time applies to managed spot only"),
        (
            JobSettings(spot=True, max_run_seconds=3600, max_wait_seconds=3599),
            "max wait (3599 s) must be >= max run (3600 s)",
        ),
        (JobSettings(base_job_name="b" * 49), "is too long (max 48)"),
        (DeploySettings(instance_count=0), "instance count must be >= 1"),
        (DeploySettings(startup_health_check_timeout=59), "60..3600 s"),
        (DeploySettings(startup_health_check_timeout=3601), "60..3600 s"),
        (DeploySettings(data_capture_percent=0), "data capture percentage must be 1..100"),
        (DeploySettings(data_capture_percent=101), "data capture percentage must be 1..100"),
        (DeploySettings(data_capture_uri="/tmp/capture"), "'/tmp/capture' must be s3://"),
        (
            DeploySettings(instance_count=3, max_instances=2),
            "autoscaling max instances (2) < instance count (3)",
        ),
        (DeploySettings(target_invocations_per_instance=0), "must be > 0"),
        (TuningSettings(max_jobs=0), "max jobs and max parallel jobs must be >= 1"),
        (TuningSettings(max_jobs=2, max_parallel_jobs=3), "max parallel jobs (3) > max jobs (2)"),
    ],
)
def test_settings_rejected(settings, fragment):
    with pytest.raises(LaunchError) as info:
        settings.check()
    assert fragment in info.value.reason


@pytest.mark.parametrize(
    "settings",
    [
        JobSettings(),
        JobSettings(spot=True),
        JobSettings(spot=True, max_run_seconds=3600, max_wait_seconds=3600),
        JobSettings(base_job_name="b" * 48, instance_count=4),
        DeploySettings(),
        DeploySettings(startup_health_check_timeout=60, data_capture_percent=1),
        DeploySettings(startup_health_check_timeout=3600, data_capture_uri="s3://b/capture"),
        DeploySettings(instance_count=2, max_instances=2),
        TuningSettings(),
        TuningSettings(max_jobs=1, max_parallel_jobs=1),
    ],
)
def test_settings_accepted(settings):
    settings.check()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.jpg", "image/jpeg"),
        ("a.JPEG", "image/jpeg"),
        ("a.png", "image/png"),
        ("a.PNG", "image/png"),
        ("a.gif", "image/jpeg"),  # the server decodes what it can; jpeg is the default
        ("noext", "image/jpeg"),
    ],
)
def test_content_type_of(name, expected):
    assert content_type_of(Path(name)) == expected


def test_collect_images_expands_folders_and_keeps_files(tmp_path):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for rel in ("b.jpg", "a.PNG", "sub/c.jpeg", "notes.txt"):
        (folder / rel).write_bytes(b"x")
    single = tmp_path / "one.txt"
    single.write_bytes(b"x")
    found = collect_images([folder, str(single)])
    assert found == [folder / "a.PNG", folder / "b.jpg", folder / "sub" / "c.jpeg", single]


@pytest.mark.parametrize(
    ("make", "fragment"), [(False, "neither a file nor a folder"), (True, "no photos")]
)
def test_collect_images_rejects(tmp_path, make, fragment):
    folder = tmp_path / "empty"
    if make:
        folder.mkdir()
        (folder / "notes.txt").write_text("x")
    with pytest.raises(LaunchError, match=fragment):
        collect_images([folder])


@pytest.mark.parametrize("base", ["s3://b/p", "s3://b/p/"])
def test_channel_uris_are_prefixes(base):
    assert channel_uris(base) == {
        "train": "s3://b/p/train/",
        "validation": "s3://b/p/validation/",
        "test": "s3://b/p/test/",
    }


CONFIG = AwsConfig(bucket="b", prefix="p")
DEFAULT = {s: f"s3://b/p/data/{s}/" for s in ("train", "validation", "test")}


def _args(*argv: str):
    return build_parser().parse_args(["train", *argv])


@pytest.mark.parametrize(
    ("argv", "test", "expected"),
    [
        ([], True, DEFAULT),
        ([], False, {k: v for k, v in DEFAULT.items() if k != "test"}),
        (["--no-test"], True, {k: v for k, v in DEFAULT.items() if k != "test"}),
        (["--data", "s3://x/y/"], True, channel_uris("s3://x/y")),
        (["--train", "s3://t/"], True, {**DEFAULT, "train": "s3://t/"}),
        (
            ["--data", "s3://x/y", "--test", "s3://z/"],
            True,
            {**channel_uris("s3://x/y"), "test": "s3://z/"},
        ),
        # both required channels given: no default prefix, so no test channel either
        (
            ["--train", "s3://t/", "--validation", "s3://v/"],
            True,
            {"train": "s3://t/", "validation": "s3://v/"},
        ),
    ],
)
def test_cloudchannels_from_args(argv, test, expected):
    assert channels_from_args(_args(*argv), CONFIG, test=test) == expected


def test_cloud_channels_need_a_bucket_only_for_the_default_prefix():
    explicit = _args("--train", "s3://t/", "--validation", "s3://v/")
    assert channels_from_args(explicit, AwsConfig(), test=True) == {
        "train": "s3://t/",
        "validation": "s3://v/",
    }
    with pytest.raises(LaunchConfigError, match="no S3 bucket configured"):
        channels_from_args(_args(), AwsConfig(), test=True)


@pytest.mark.parametrize(
    ("folders", "argv", "expected"),
    [
        (
            ["train", "validation", "test"],
            [],
            {"train": "train", "validation": "validation", "test": "test"},
        ),
        (
            ["train", "validation"],
            [],
            {"train": "train", "validation": "validation"},
        ),  # what it holds
        (
            ["train", "validation", "test"],
            ["--no-test"],
            {"train": "train", "validation": "validation"},
        ),
        (["train"], ["--validation", "/v"], {"train": "train", "validation": "/v"}),  # flags win
    ],
)
def test_local_channels_are_the_prepared_folders(tmp_path, folders, argv, expected):
    for name in folders:
        (tmp_path / name).mkdir()
    channels = channels_from_args(
        _args("--data", str(tmp_path), *argv), AwsConfig(), test=True, local=True
    )
    assert channels == {k: str(tmp_path / v) for k, v in expected.items()}  # "/v" stays absolute


def test_local_channels_without_data_are_the_flags_only():
    args = _args("--train", "/t", "--validation", "/v", "--test", "/x", "--no-test")
    assert channels_from_args(args, AwsConfig(), test=True, local=True) == {
        "train": "/t",
        "validation": "/v",
    }
    assert channels_from_args(_args(), AwsConfig(), test=True, local=True) == {}


TUNING = {
    "HyperParameterTuningJobName": "bc-tune",
    "HyperParameterTuningJobStatus": "Completed",
    "TrainingJobDefinition": {
        "StaticHyperParameters": {
            "epochs": "3",
            "_tuning_objective_metric": "validation:accuracy",
            "sagemaker_estimator_module": "x",
        }
    },
    "BestTrainingJob": {
        "TrainingJobName": "bc-tune-002",
        "TunedHyperParameters": {"lr": '"0.01"', "batch_size": '"32"'},
        "FinalHyperParameterTuningJobObjectiveMetric": {
            "MetricName": "validation:accuracy",
            "Value": 0.4,
        },
    },
}


def _with_best(**changes):
    return {**TUNING, "BestTrainingJob": {**TUNING["BestTrainingJob"], **changes}}


@pytest.mark.parametrize(
    ("tuning", "best_job", "hps", "objective"),
    [
        (TUNING, None, {"epochs": "3", "lr": "0.01", "batch_size": "32"}, 0.4),
        (
            TUNING,
            {"HyperParameters": {"lr": "0.05", "sagemaker_region": '"x"'}},
            {"lr": "0.05"},
            0.4,
        ),
        (TUNING, {"HyperParameters": {}}, {"epochs": "3", "lr": "0.01", "batch_size": "32"}, 0.4),
        (
            _with_best(FinalHyperParameterTuningJobObjectiveMetric={"Value": math.nan}),
            None,
            None,
            None,
        ),
        (_with_best(FinalHyperParameterTuningJobObjectiveMetric=None), None, None, None),
    ],
)
def test_best_from_descriptions(tuning, best_job, hps, objective):
    best = best_from_descriptions(tuning, best_job)
    assert best["tuning_job"] == "bc-tune"
    assert best["best_training_job"] == "bc-tune-002"
    if hps is not None:
        assert best["hyperparameters"] == hps
    assert best["objective"]["value"] == objective
    assert best["objective"]["name"] == OBJECTIVE_METRIC


@pytest.mark.parametrize(
    ("tuning", "fragment"),
    [
        (
            {**TUNING, "BestTrainingJob": None, "HyperParameterTuningJobStatus": "InProgress"},
            "has no best training job yet (status InProgress)",
        ),
        ({**TUNING, "BestTrainingJob": {"TrainingJobName": ""}}, "has no best training job yet"),
        (
            _with_best(TunedHyperParameters={"lr": "-1"}),
            "best job bc-tune-002 reports hyperparameters the container rejects",
        ),
    ],
)
def test_best_from_descriptions_rejects(tuning, fragment):
    with pytest.raises(LaunchError) as info:
        best_from_descriptions(tuning)
    assert fragment in info.value.reason


def test_input_modes_are_checked_before_launch():
    """Pipe is accepted (the container streams shards from its FIFOs); a typo fails here."""
    JobSettings(input_mode="Pipe").check()
    with pytest.raises(LaunchError, match="input mode 'pipe' is not one of"):
        JobSettings(input_mode="pipe").check()
