"""Tuning ranges: every accepted form, every rejected one with the parameter named (no AWS)."""

from __future__ import annotations

import pytest

from bincounter.aws.ranges import (
    DEFAULT_RANGES,
    RangeSpec,
    build_ranges,
    parse_range,
    validate_ranges,
)
from bincounter.errors import HyperparameterError, LaunchError, UserError
from bincounter.training.hyperparameters import HyperParameters


@pytest.mark.parametrize(
    ("name", "spec", "expected"),
    [
        ("lr", "0.001:0.1:log", RangeSpec("lr", "continuous", 0.001, 0.1, scaling="Logarithmic")),
        ("lr", "0.001:0.1", RangeSpec("lr", "continuous", 0.001, 0.1)),
        ("lr", "1e-4:1e-1", RangeSpec("lr", "continuous", 0.0001, 0.1)),
        (
            "lr",
            "0.01:0.1:reverselog",
            RangeSpec("lr", "continuous", 0.01, 0.1, (), "ReverseLogarithmic"),
        ),
        ("lr", "0.01:0.1:auto", RangeSpec("lr", "continuous", 0.01, 0.1, scaling="Auto")),
        ("epochs", "2:6", RangeSpec("epochs", "integer", 2, 6)),
        ("epochs", " 2:6 ", RangeSpec("epochs", "integer", 2, 6)),
        ("epochs", "2:6:linear", RangeSpec("epochs", "integer", 2, 6, scaling="Linear")),
        ("epochs", "2:64:LOG", RangeSpec("epochs", "integer", 2, 64, scaling="Logarithmic")),
        ("num_workers", "-1:4", RangeSpec("num_workers", "integer", -1, 4)),
        ("warmup_epochs", "2.0:6.0", RangeSpec("warmup_epochs", "continuous", 2.0, 6.0)),
        (
            "batch_size",
            "16,32,64",
            RangeSpec("batch_size", "categorical", values=("16", "32", "64")),
        ),
        (
            "arch",
            " resnet18, resnet34 ,",
            RangeSpec("arch", "categorical", values=("resnet18", "resnet34")),
        ),
        ("arch", "resnet50", RangeSpec("arch", "categorical", values=("resnet50",))),
    ],
)
def test_accepted_forms(name, spec, expected):
    parsed = parse_range(name, spec)
    assert parsed == expected
    # 2 == 2.0 in Python: the kind decides what SageMaker samples, so check the types too.
    assert (type(parsed.low), type(parsed.high)) == (type(expected.low), type(expected.high))
    validate_ranges({name: parsed}, {})  # and the container takes both ends / every choice


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("1:2:log:x", "use low:high[:log|linear|auto]"),
        ("0.1:1:cubic", "scale must be one of ['auto', 'linear', 'log', 'reverselog']"),
        ("a:b", "bounds must be numbers"),
        ("0.1:", "bounds must be numbers"),
        ("6:2", "low must be below high"),
        ("3:3", "low must be below high"),
        ("0.5:0.1:log", "low must be below high"),
        ("0:1:log", "a log scale needs low > 0"),
        ("-0.1:0.1:log", "a log scale needs low > 0"),
        ("", "is empty"),
        (" , ,", "is empty"),
    ],
)
def test_malformed_spec_names_the_parameter(spec, fragment):
    with pytest.raises(LaunchError) as info:
        parse_range("lr", spec)
    assert info.value.reason.startswith(f"range lr={spec.strip()!r}")
    assert fragment in info.value.reason


@pytest.mark.parametrize(
    ("name", "spec", "value"),
    [
        ("lr", "0.001:20", "20.0"),
        ("lr", "-1:0.1", "-1.0"),
        ("epochs", "0:5", "0"),
        ("image_size", "16:224", "16"),
        ("momentum", "0.5:1.0", "1.0"),
        ("seed", "-3:3", "-3"),
        ("batch_size", "16,lots", "'lots'"),
        ("arch", "resnet18,resnet101", "'resnet101'"),
        ("epochs", "2.5:6.0", "2.5"),
    ],
)
def test_bounds_the_container_rejects_name_parameter_and_value(name, spec, value):
    with pytest.raises(HyperparameterError) as info:
        validate_ranges({name: parse_range(name, spec)}, {})
    assert info.value.reason.startswith(f"hyperparameter {name}={value} is invalid")


def test_unknown_name_is_named_with_the_known_ones():
    with pytest.raises(HyperparameterError) as info:
        validate_ranges(build_ranges({"learning_rate": "0.1:1"}), {})
    reason = info.value.reason
    assert "['learning_rate'] are not hyperparameters" in reason
    assert all(field in reason for field in HyperParameters.model_fields)


@pytest.mark.parametrize(
    ("ranges", "static", "fragment"),
    [
        ({}, {}, "no hyperparameter ranges to tune"),
        ({"lr": "0.01:0.1"}, {"lr": "0.05"}, "['lr'] are both tuned and fixed"),
    ],
)
def test_inconsistent_request_is_a_launch_error(ranges, static, fragment):
    with pytest.raises(LaunchError) as info:
        validate_ranges(build_ranges(ranges, defaults=False), static)
    assert fragment in info.value.reason


def test_static_values_take_part_in_the_check():
    # Each bound is checked together with the fixed hyperparameters the jobs will also get.
    validate_ranges(build_ranges({"epochs": "2:6"}, defaults=False), {"patience": "1"})
    with pytest.raises(UserError):
        validate_ranges(build_ranges({"epochs": "2:6"}, defaults=False), {"patience": "-1"})


def test_defaults_parse_and_validate():
    ranges = build_ranges()
    assert set(ranges) == set(DEFAULT_RANGES) == {"lr", "batch_size", "epochs"}
    assert ranges["lr"].scaling == "Logarithmic"
    assert ranges["batch_size"].kind == "categorical"
    assert ranges["epochs"].kind == "integer"
    validate_ranges(ranges, {})


@pytest.mark.parametrize(
    ("overrides", "defaults", "names"),
    [
        ({"lr": "0.01:0.05"}, True, {"lr", "batch_size", "epochs"}),
        ({"momentum": "0.8:0.95"}, True, {"lr", "batch_size", "epochs", "momentum"}),
        ({"batch_size": ""}, True, {"lr", "epochs"}),
        ({"batch_size": "none", "epochs": " off "}, True, {"lr"}),
        ({"momentum": "0.8:0.95"}, False, {"momentum"}),
        ({"lr": "none"}, False, set()),
    ],
)
def test_overrides_replace_extend_or_drop_defaults(overrides, defaults, names):
    ranges = build_ranges(overrides, defaults=defaults)
    assert set(ranges) == names
    if "lr" in overrides and "lr" in names:
        assert (ranges["lr"].low, ranges["lr"].high) == (0.01, 0.05)


def test_continuous_range_on_integer_field_is_rejected():
    with pytest.raises(UserError, match="epochs is an integer hyperparameter"):
        validate_ranges({"epochs": parse_range("epochs", "2.0:6.0")}, {})


@pytest.mark.parametrize(("spec", "low", "high"), [("1:5", 1.0, 5.0), ("0:3:linear", 0.0, 3.0)])
def test_whole_bounds_on_a_float_field_make_a_continuous_range(spec, low, high):
    parsed = parse_range("warmup_epochs", spec)
    assert (parsed.kind, parsed.low, parsed.high) == ("continuous", low, high)
    assert isinstance(parsed.low, float)
