"""``ServingConfig.from_environment``: every knob's default, parsing, bounds and error message.

Pure logic on a dict standing in for the environment: milliseconds each.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from bincounter.errors import ConfigError
from bincounter.paths import DEFAULT_BASE_DIR
from bincounter.serving import parameters
from bincounter.serving.config import (
    ENGINES,
    MAX_CPU_WORKERS,
    ServingConfig,
    cpu_count,
    gpu_present,
)
from bincounter.serving.engines import BUILDERS

from support import REPO


def read(**env: str) -> ServingConfig:
    return ServingConfig.from_environment(env)


def test_defaults():
    config = read(BINCOUNTER_ENGINE="openvino")
    workers = min(cpu_count(), MAX_CPU_WORKERS)
    assert config == ServingConfig(
        model_dir=Path("/opt/ml/model"),
        host="0.0.0.0",
        port=8080,
        workers=workers,
        http_threads=8,
        compute_threads=max(1, cpu_count() // workers),
        timeout=60,
        graceful_timeout=20,
        keepalive=5,
        max_payload_mb=6.0,
        max_batch_size=8,
        batch_wait_ms=5.0,
        max_instances=64,
        engine="openvino",
        precision="auto",
        tta=1,
        access_log=False,
        log_level="info",
    )
    assert config.bind == "0.0.0.0:8080"
    assert config.max_payload_bytes == 6 * 1024 * 1024
    assert config.max_concurrent_transforms == 8 * workers


def test_one_worker_shares_a_gpu():
    """On a GPU, one worker's batches share the device; more would split them."""
    assert read(BINCOUNTER_ENGINE="cuda").workers == 1
    assert read(BINCOUNTER_ENGINE="cuda").compute_threads == cpu_count()
    assert read(BINCOUNTER_ENGINE="auto").workers == (
        1 if gpu_present() else min(cpu_count(), MAX_CPU_WORKERS)
    )


KNOBS = [f for f in fields(ServingConfig) if f.name != "model_dir"]


def a_valid_value(knob) -> tuple[str, object]:
    """A value other than the default that the knob accepts: (as set, as read)."""
    meta, default = knob.metadata, knob.default
    if meta["choices"]:
        value = next(c for c in reversed(meta["choices"]) if c != default)
        return str(value), value
    if isinstance(default, bool):
        return "yes", True
    if isinstance(default, str):
        return "127.0.0.1", "127.0.0.1"
    return str(meta["high"]), meta["high"]


@pytest.mark.parametrize("knob", KNOBS, ids=lambda f: f.metadata["variable"])
def test_each_knob_is_read(knob):
    raw, value = a_valid_value(knob)
    variable = knob.metadata["variable"]
    assert getattr(read(**{variable: raw}), knob.name) == value
    # Surrounding blanks are ignored; an empty value means the default, as an unset one does.
    assert getattr(read(**{variable: f" {raw.upper()} "}), knob.name) == value
    assert getattr(read(**{variable: "  "}), knob.name) == getattr(read(), knob.name)


@pytest.mark.parametrize(
    ("name", "raw", "field", "value"),
    [
        ("SAGEMAKER_BIND_TO_PORT", "1", "port", 1),
        ("SAGEMAKER_MAX_PAYLOAD_IN_MB", "0.5", "max_payload_mb", 0.5),
        ("BINCOUNTER_BATCH_WAIT_MS", "0", "batch_wait_ms", 0.0),
        ("BINCOUNTER_ACCESS_LOG", "Off", "access_log", False),
        ("BINCOUNTER_MODEL_DIR", "/srv/model", "model_dir", Path("/srv/model")),
        ("SAGEMAKER_BASE_DIR", "/tmp/ml", "model_dir", Path("/tmp/ml/model")),
    ],
)
def test_more_values_are_read(name, raw, field, value):
    assert getattr(read(**{name: raw}), field) == value


def test_model_dir_overrides_base_dir():
    config = read(BINCOUNTER_MODEL_DIR="/srv/model", SAGEMAKER_BASE_DIR="/tmp/ml")
    assert config.model_dir == Path("/srv/model")


@pytest.mark.parametrize("workers", [1, 2, 64])
def test_compute_threads_follow_cores_per_worker(workers):
    config = read(SAGEMAKER_MODEL_SERVER_WORKERS=str(workers))
    assert config.compute_threads == max(1, cpu_count() // workers)
    assert config.max_concurrent_transforms == workers * 8


def bad_values(knob) -> list[tuple[str, str]]:
    """Values the knob refuses, each with what the refusal must say."""
    meta = knob.metadata
    if meta["choices"] and isinstance(knob.default, str):
        allowed = ", ".join(meta["choices"])
        return [("loud", f"'loud': allowed {allowed}")]
    if isinstance(knob.default, bool):
        return [("maybe", "'maybe' is not a boolean (true/false)")]
    if isinstance(knob.default, str):
        return []
    low, high = meta["low"], meta["high"]
    below, above = (
        (low - 1, high + 1) if isinstance(knob.default, int) else (low / 2 or -1, high * 2)
    )
    bounds = f"{low}..{high}" if isinstance(knob.default, int) else f"{low:g}..{high:g}"
    # Integers as written (40000001, not 4e+07, which is no integer); numbers as %g.
    below, above = (str(v) if isinstance(knob.default, int) else f"{v:g}" for v in (below, above))
    return [
        ("many", f"'many' is not {'an integer' if isinstance(knob.default, int) else 'a number'}"),
        (below, f"{below} is outside {bounds}"),
        (above, f"{above} is outside {bounds}"),
    ]


CASES = [(f.metadata["variable"], raw, message) for f in KNOBS for raw, message in bad_values(f)]


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        *CASES,
        ("SAGEMAKER_MODEL_SERVER_WORKERS", "1.5", "'1.5' is not an integer (1..64)"),
        ("SAGEMAKER_MAX_PAYLOAD_IN_MB", "nan", "nan is outside 0.001..1024"),
        ("BINCOUNTER_TTA", "4", "4: allowed 1, 8"),
    ],
)
def test_bad_value_names_the_variable_and_what_is_allowed(name, raw, message):
    with pytest.raises(ConfigError) as caught:
        read(**{name: raw})
    assert str(caught.value.reason).startswith(f"{name}=")
    assert message in caught.value.reason


def documented_knobs() -> dict[str, str]:
    """``docs/serving.md``'s table of knobs: variable -> default, as written."""
    text = (REPO / "docs" / "serving.md").read_text()
    table = text.split("## Knobs (environment)", 1)[1].split("\n\n", 2)[1]
    rows = [line.split(" | ") for line in table.splitlines()[2:]]
    return {row[0].strip("| `"): row[1] for row in rows}


def shown_default(knob) -> str:
    """A default as the table writes it: a number, ``on``/``off``, or a name in backticks."""
    default = knob.default
    if knob.metadata["computed"]:
        return knob.metadata["computed"]
    if isinstance(default, bool):
        return "on" if default else "off"
    return f"`{default}`" if isinstance(default, str) else f"{default:g}"


def test_the_documented_knobs_are_the_config_class():
    # The table in docs/serving.md cannot drift from the names and defaults the server reads.
    expected = {f.metadata["variable"]: shown_default(f) for f in fields(ServingConfig)}
    expected[parameters.BASE_DIR] = f"`{DEFAULT_BASE_DIR}`"
    assert documented_knobs() == expected


def test_every_engine_name_has_a_builder():
    # config.ENGINES is read in gunicorn's arbiter without torch; engines.BUILDERS builds them.
    # "auto" is not a builder: engines.resolve_plan turns it into one.
    assert set(ENGINES) == {"auto", *BUILDERS}
