"""``ServingConfig.from_environment``: every knob's default, parsing, bounds and error message.

Pure logic on a dict standing in for the environment: milliseconds each.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bincounter.errors import ConfigError
from bincounter.serving.config import (
    ENGINES,
    MAX_CPU_WORKERS,
    ServingConfig,
    cpu_count,
    gpu_present,
)
from bincounter.serving.engines import BUILDERS


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


@pytest.mark.parametrize(
    ("name", "raw", "field", "value"),
    [
        ("SAGEMAKER_BIND_TO_PORT", "9090", "port", 9090),
        ("SAGEMAKER_BIND_TO_PORT", " 1 ", "port", 1),
        ("SAGEMAKER_MODEL_SERVER_WORKERS", "4", "workers", 4),
        ("SAGEMAKER_MODEL_SERVER_TIMEOUT", "3600", "timeout", 3600),
        ("SAGEMAKER_MAX_PAYLOAD_IN_MB", "0.5", "max_payload_mb", 0.5),
        ("BINCOUNTER_BIND_HOST", "127.0.0.1", "host", "127.0.0.1"),
        ("BINCOUNTER_HTTP_THREADS", "256", "http_threads", 256),
        ("BINCOUNTER_COMPUTE_THREADS", "3", "compute_threads", 3),
        ("BINCOUNTER_GRACEFUL_TIMEOUT", "1", "graceful_timeout", 1),
        ("BINCOUNTER_KEEPALIVE", "0", "keepalive", 0),
        ("BINCOUNTER_MAX_BATCH_SIZE", "1", "max_batch_size", 1),
        ("BINCOUNTER_BATCH_WAIT_MS", "0", "batch_wait_ms", 0.0),
        ("BINCOUNTER_MAX_INSTANCES", "10000", "max_instances", 10_000),
        ("BINCOUNTER_ENGINE", " Eager ", "engine", "eager"),
        ("BINCOUNTER_ENGINE", "openvino", "engine", "openvino"),
        ("BINCOUNTER_PRECISION", " INT8 ", "precision", "int8"),
        ("BINCOUNTER_PRECISION", "bf16", "precision", "bf16"),
        ("BINCOUNTER_TTA", "8", "tta", 8),
        ("BINCOUNTER_TTA", "1", "tta", 1),
        ("BINCOUNTER_ACCESS_LOG", "yes", "access_log", True),
        ("BINCOUNTER_ACCESS_LOG", "Off", "access_log", False),
        ("BINCOUNTER_LOG_LEVEL", "DEBUG", "log_level", "debug"),
        ("BINCOUNTER_MODEL_DIR", "/srv/model", "model_dir", Path("/srv/model")),
        ("SAGEMAKER_BASE_DIR", "/tmp/ml", "model_dir", Path("/tmp/ml/model")),
        # An empty value means the default, as an unset one does.
        ("SAGEMAKER_BIND_TO_PORT", "", "port", 8080),
        ("BINCOUNTER_ENGINE", "  ", "engine", "auto"),
        ("BINCOUNTER_PRECISION", "", "precision", "auto"),
    ],
)
def test_each_knob_is_read(name, raw, field, value):
    assert getattr(read(**{name: raw}), field) == value


def test_model_dir_overrides_base_dir():
    config = read(BINCOUNTER_MODEL_DIR="/srv/model", SAGEMAKER_BASE_DIR="/tmp/ml")
    assert config.model_dir == Path("/srv/model")


@pytest.mark.parametrize("workers", [1, 2, 64])
def test_compute_threads_follow_cores_per_worker(workers):
    config = read(SAGEMAKER_MODEL_SERVER_WORKERS=str(workers))
    assert config.compute_threads == max(1, cpu_count() // workers)
    assert config.max_concurrent_transforms == workers * 8


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("SAGEMAKER_BIND_TO_PORT", "http", "'http' is not an integer (1..65535)"),
        ("SAGEMAKER_BIND_TO_PORT", "0", "0 is outside 1..65535"),
        ("SAGEMAKER_BIND_TO_PORT", "65536", "65536 is outside 1..65535"),
        ("SAGEMAKER_MODEL_SERVER_WORKERS", "many", "'many' is not an integer (1..64)"),
        ("SAGEMAKER_MODEL_SERVER_WORKERS", "65", "65 is outside 1..64"),
        ("SAGEMAKER_MODEL_SERVER_WORKERS", "1.5", "not an integer"),
        ("SAGEMAKER_MODEL_SERVER_TIMEOUT", "0", "0 is outside 1..3600"),
        ("SAGEMAKER_MAX_PAYLOAD_IN_MB", "six", "'six' is not a number (0.001..1024)"),
        ("SAGEMAKER_MAX_PAYLOAD_IN_MB", "0", "0 is outside 0.001..1024"),
        ("SAGEMAKER_MAX_PAYLOAD_IN_MB", "nan", "nan is outside 0.001..1024"),
        ("BINCOUNTER_HTTP_THREADS", "0", "0 is outside 1..256"),
        ("BINCOUNTER_COMPUTE_THREADS", "257", "257 is outside 1..256"),
        ("BINCOUNTER_GRACEFUL_TIMEOUT", "-1", "-1 is outside 1..3600"),
        ("BINCOUNTER_KEEPALIVE", "3601", "3601 is outside 0..3600"),
        ("BINCOUNTER_MAX_BATCH_SIZE", "0", "0 is outside 1..256"),
        ("BINCOUNTER_BATCH_WAIT_MS", "-1", "-1 is outside 0..1000"),
        ("BINCOUNTER_BATCH_WAIT_MS", "soon", "not a number"),
        ("BINCOUNTER_MAX_INSTANCES", "10001", "10001 is outside 1..10000"),
        ("BINCOUNTER_ENGINE", "onnx", "'onnx': allowed auto, openvino, cuda, torchscript, eager"),
        ("BINCOUNTER_PRECISION", "fp16", "'fp16': allowed auto, fp32, bf16, int8"),
        ("BINCOUNTER_ACCESS_LOG", "maybe", "'maybe' is not a boolean"),
        ("BINCOUNTER_LOG_LEVEL", "loud", "'loud' is not a log level"),
        ("BINCOUNTER_TTA", "4", "allowed 1 (the photo as sent) or 8"),
        ("BINCOUNTER_TTA", "9", "9 is outside 1..8"),
    ],
)
def test_bad_value_names_the_variable_and_what_is_allowed(name, raw, message):
    with pytest.raises(ConfigError) as caught:
        read(**{name: raw})
    assert str(caught.value.reason).startswith(f"{name}=")
    assert message in caught.value.reason


def test_every_engine_name_has_a_builder():
    # config.ENGINES is read in gunicorn's arbiter without torch; engines.BUILDERS builds them.
    # "auto" is not a builder: engines.resolve_plan turns it into one.
    assert set(ENGINES) == {"auto", *BUILDERS}
