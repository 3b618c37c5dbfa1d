"""Launch inputs checked on the laptop: NAME=VALUE items, hyperparameter files and values."""

from __future__ import annotations

import json

import pytest

from bincounter.aws.inputs import (
    parse_assignments,
    read_hyperparameters_file,
    validate_hyperparameters,
    write_hyperparameters_file,
)
from bincounter.errors import HyperparameterError, LaunchError


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        (None, {}),
        ([], {}),
        (["lr=0.01", "epochs=3"], {"lr": "0.01", "epochs": "3"}),
        ([" lr = 0.01 "], {"lr": "0.01"}),
        (["JAVA_OPTS=-Da=b"], {"JAVA_OPTS": "-Da=b"}),  # only the first = splits
        (["batch_size="], {"batch_size": ""}),  # an empty value: how --range drops a default
        (["lr=0.1", "lr=0.2"], {"lr": "0.2"}),  # the last one wins
    ],
)
def test_assignments(items, expected):
    assert parse_assignments(items) == expected


@pytest.mark.parametrize("item", ["lr", "=0.1", " =0.1", ""])
def test_bad_assignment_is_named(item):
    with pytest.raises(LaunchError) as info:
        parse_assignments(["epochs=3", item])
    assert info.value.reason == f"{item!r} is not NAME=VALUE"


def test_best_file_round_trip(tmp_path):
    best = {
        "tuning_job": "bc-tune",
        "best_training_job": "bc-tune-003",
        "objective": {"name": "validation:accuracy", "value": 0.5},
        "hyperparameters": {"lr": "0.01", "batch_size": "32"},
    }
    path = write_hyperparameters_file(tmp_path / "sub" / "best.json", best)
    assert json.loads(path.read_text()) == best
    assert read_hyperparameters_file(path) == {"lr": "0.01", "batch_size": "32"}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"lr": "0.01"}', {"lr": "0.01"}),
        (
            '{"epochs": 3, "lr": 0.5, "pretrained": true}',
            {"epochs": "3", "lr": "0.5", "pretrained": "true"},
        ),
        ('{"hyperparameters": {"arch": "resnet34"}, "other": 1}', {"arch": "resnet34"}),
        # not tune's output after all: read as a plain mapping (and rejected by validation)
        ('{"hyperparameters": "not a mapping"}', {"hyperparameters": "not a mapping"}),
        ('{"hyperparameters": ["lr"]}', {"hyperparameters": '["lr"]'}),
        ("{}", {}),
    ],
)
def test_plain_mapping_or_tune_output(tmp_path, content, expected):
    path = tmp_path / "hp.json"
    path.write_text(content)
    assert read_hyperparameters_file(path) == expected


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "cannot read hyperparameters file"),
        ("{not json", "cannot read hyperparameters file"),
        ('["lr", "0.1"]', "must hold a JSON object of hyperparameters"),
    ],
)
def test_unreadable_hyperparameters_file_names_it(tmp_path, content, fragment):
    path = tmp_path / "hp.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(LaunchError) as info:
        read_hyperparameters_file(path)
    assert str(path) in info.value.reason and fragment in info.value.reason


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({}, {}),
        (
            {"lr": "1e-2", "pretrained": "True", "epochs": 3},
            {"lr": "0.01", "pretrained": "true", "epochs": "3"},
        ),
        ({"arch": '"resnet34"'}, {"arch": "resnet34"}),  # SDK-style JSON-encoded string
        ({"lr": "0.1", "sagemaker_region": "x", "_tuning_objective_metric": "y"}, {"lr": "0.1"}),
    ],
)
def test_hyperparameters_are_canonical_strings_of_the_given_keys(raw, expected):
    assert validate_hyperparameters(raw) == expected


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ({"batch_size": "lots"}, "batch_size"),
        ({"lr": "0"}, "lr"),
        ({"learning_rate": "0.1"}, "learning_rate"),
    ],
)
def test_bad_hyperparameter_is_named(raw, name):
    with pytest.raises(HyperparameterError) as info:
        validate_hyperparameters(raw)
    assert name in info.value.reason
