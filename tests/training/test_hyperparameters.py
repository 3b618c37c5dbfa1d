import json

import pytest

from bincounter.errors import HyperparameterError
from bincounter.training.hyperparameters import HyperParameters, describe_all, parse_hyperparameters


def test_sdk_json_encoded_strings_and_sagemaker_keys_are_accepted():
    # Exactly what SageMaker SDK >= 2.110 writes into hyperparameters.json for a tuning job.
    raw = {
        "lr": json.dumps("0.01"),
        "batch_size": json.dumps("32"),
        "arch": json.dumps("resnet34"),
        "pretrained": json.dumps("false"),
        "_tuning_objective_metric": json.dumps("validation:accuracy"),
        "sagemaker_region": json.dumps("eu-west-1"),
        "sagemaker_job_name": "x",
    }
    hp = parse_hyperparameters(raw)
    assert (hp.lr, hp.batch_size, hp.arch, hp.pretrained) == (0.01, 32, "resnet34", False)


def test_plain_strings_and_scientific_notation():
    hp = parse_hyperparameters({"lr": "1e-05", "epochs": "3", "pretrained": "True", "seed": "7"})
    assert (hp.lr, hp.epochs, hp.pretrained, hp.seed) == (1e-05, 3, True, 7)


def test_defaults_validate_and_round_trip_through_strings():
    hp = HyperParameters()
    assert parse_hyperparameters(hp.to_strings()) == hp


def test_unknown_name_is_named_with_the_known_ones():
    with pytest.raises(HyperparameterError) as info:
        parse_hyperparameters({"learning_rate": "0.1"})
    assert "'learning_rate'" in info.value.reason
    assert "lr" in info.value.reason


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("arch", "resnet101", "'resnet18', 'resnet34', 'resnet50'"),
        ("lr", "-1", "> 0"),
        ("epochs", "2.5", "int"),
        ("batch_size", "0", ">= 1"),
        ("optimizer", "rmsprop", "'adamw', 'sgd'"),
        ("pretrained", "maybe", "bool"),
        ("label_smoothing", "1.5", "< 1"),
        ("image_size", "abc", "int"),
        ("ema_decay", "1", "< 1"),
        ("int8_min_agreement", "0.2", ">= 0.5"),
    ],
)
def test_bad_value_names_parameter_and_allowed_values(name, value, fragment):
    with pytest.raises(HyperparameterError) as info:
        parse_hyperparameters({name: json.dumps(value)})
    reason = info.value.reason
    assert reason.startswith(f"hyperparameter {name}=")
    assert fragment in reason
    assert "\n" not in reason


def test_describe_all_lists_every_parameter():
    text = describe_all()
    for name in HyperParameters.model_fields:
        assert name in text
