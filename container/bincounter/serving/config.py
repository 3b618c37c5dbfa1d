"""Every serving knob, read from the environment in one place.

SageMaker configures a bring-your-own model server through environment variables only
(``SAGEMAKER_*`` on the model or the transform job); ``BINCOUNTER_*`` are our own knobs for the
rest. Reading them once, here, into a frozen object means gunicorn's config, the flask app and
the ``/execution-parameters`` answer can never disagree on a value, and a typo in a variable's
value fails the container at start with the variable's name instead of somewhere deep inside a
worker.

Defaults fit the machine. On a CPU: one gunicorn worker per core (at most ``MAX_CPU_WORKERS``),
each with one batching thread that runs the network on cores / workers compute threads
(OpenVINO's, or torch's intra-op). On a GPU: one worker, whose batches share the device. Requests
are decoded in a worker's HTTP threads and queued; its batching thread runs whatever has queued
up as one batch. So the threads that compute (workers x compute threads) equal the cores, and
the HTTP threads, which mostly wait on the batcher, do not oversubscribe them. One worker per
core beat one worker on all cores by 1.8-2x at concurrency 4 with the OpenVINO engine, whose
idle compute threads spin on the cores the decoding needs; see ``docs/serving.md``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..decision import TTA_CHOICES
from ..errors import ConfigError
from ..openvino_ir import PRECISIONS
from ..paths import DEFAULT_BASE_DIR, Paths

#: ``auto``: OpenVINO on a CPU, the torch path on a GPU (``engines``).
ENGINES = ("auto", "openvino", "cuda", "torchscript", "eager")


#: Workers per server at most by default: each holds its own model and interpreter in memory.
MAX_CPU_WORKERS = 16


def gpu_present() -> bool:
    """Whether an NVIDIA GPU is visible, read from the driver's ``/proc`` tree.

    The arbiter must not initialise CUDA before it forks the workers, so this asks the kernel
    driver rather than torch.
    """
    gpus = Path("/proc/driver/nvidia/gpus")
    try:
        return gpus.is_dir() and any(gpus.iterdir())
    except OSError:
        return False


def cpu_count() -> int:
    """Cores this process may run on (the container's CPU set, not the host's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer ({low}..{high})") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={value} is outside {low}..{high}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number ({low:g}..{high:g})") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={value:g} is outside {low:g}..{high:g}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (true/false)")


@dataclass(frozen=True)
class ServingConfig:
    """What the server runs with; build it with ``from_environment``."""

    model_dir: Path
    host: str = "0.0.0.0"
    port: int = 8080
    workers: int = 1
    #: gunicorn threads per worker: concurrent requests a worker reads, decodes and waits on.
    http_threads: int = 8
    #: Threads per worker that actually compute (OpenVINO's or torch's intra-op).
    compute_threads: int = 1
    timeout: int = 60
    graceful_timeout: int = 20
    keepalive: int = 5
    max_payload_mb: float = 6.0
    max_batch_size: int = 8
    #: Longest wait for a request known to be decoding to join a batch (never for nobody).
    batch_wait_ms: float = 5.0
    max_instances: int = 64
    engine: str = "auto"
    #: ``auto``, ``fp32``, ``bf16`` or ``int8``; the engine serves the best it can vouch for.
    precision: str = "auto"
    tta: int = 1
    access_log: bool = False
    log_level: str = "info"

    @property
    def max_payload_bytes(self) -> int:
        return int(self.max_payload_mb * 1024 * 1024)

    @property
    def bind(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def max_concurrent_transforms(self) -> int:
        """Concurrent requests batch transform should send: enough to fill the batches."""
        return self.workers * min(self.max_batch_size, self.http_threads)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> ServingConfig:
        """Read the knobs (see ``docs/serving.md``); raises ``ConfigError`` naming a bad one."""
        env = os.environ if environ is None else environ
        cores = cpu_count()
        engine = env.get("BINCOUNTER_ENGINE", "auto").strip().lower() or "auto"
        on_gpu = engine == "cuda" or (engine == "auto" and gpu_present())
        default_workers = 1 if on_gpu else min(cores, MAX_CPU_WORKERS)
        workers = _int(env, "SAGEMAKER_MODEL_SERVER_WORKERS", default_workers, 1, 64)
        # Never more computing threads than cores, whatever the worker count.
        compute_default = max(1, cores // workers)
        timeout = _int(env, "SAGEMAKER_MODEL_SERVER_TIMEOUT", 60, 1, 3600)
        if engine not in ENGINES:
            raise ConfigError(f"BINCOUNTER_ENGINE={engine!r}: allowed {', '.join(ENGINES)}")
        precision = env.get("BINCOUNTER_PRECISION", "auto").strip().lower() or "auto"
        if precision not in PRECISIONS:
            raise ConfigError(
                f"BINCOUNTER_PRECISION={precision!r}: allowed {', '.join(PRECISIONS)}"
            )
        log_level = env.get("BINCOUNTER_LOG_LEVEL", "info").strip().lower() or "info"
        if log_level not in ("debug", "info", "warning", "error", "critical"):
            raise ConfigError(f"BINCOUNTER_LOG_LEVEL={log_level!r} is not a log level")
        tta = _int(env, "BINCOUNTER_TTA", 1, 1, 8)
        if tta not in TTA_CHOICES:
            raise ConfigError(
                f"BINCOUNTER_TTA={tta}: allowed 1 (the photo as sent) or 8 (its flips and "
                "quarter turns, averaged: about 8x the compute)"
            )
        model_dir = env.get("BINCOUNTER_MODEL_DIR", "").strip()
        if not model_dir:
            base = env.get("SAGEMAKER_BASE_DIR", "").strip() or str(DEFAULT_BASE_DIR)
            model_dir = str(Paths(Path(base)).model_dir)
        return cls(
            model_dir=Path(model_dir),
            host=env.get("BINCOUNTER_BIND_HOST", "0.0.0.0").strip() or "0.0.0.0",
            port=_int(env, "SAGEMAKER_BIND_TO_PORT", 8080, 1, 65535),
            workers=workers,
            http_threads=_int(env, "BINCOUNTER_HTTP_THREADS", 8, 1, 256),
            compute_threads=_int(env, "BINCOUNTER_COMPUTE_THREADS", compute_default, 1, 256),
            timeout=timeout,
            # SageMaker kills a container 30 s after SIGTERM: drain well inside that.
            graceful_timeout=_int(env, "BINCOUNTER_GRACEFUL_TIMEOUT", 20, 1, 3600),
            keepalive=_int(env, "BINCOUNTER_KEEPALIVE", 5, 0, 3600),
            max_payload_mb=_float(env, "SAGEMAKER_MAX_PAYLOAD_IN_MB", 6.0, 0.001, 1024.0),
            max_batch_size=_int(env, "BINCOUNTER_MAX_BATCH_SIZE", 8, 1, 256),
            batch_wait_ms=_float(env, "BINCOUNTER_BATCH_WAIT_MS", 5.0, 0.0, 1000.0),
            max_instances=_int(env, "BINCOUNTER_MAX_INSTANCES", 64, 1, 10_000),
            engine=engine,
            precision=precision,
            tta=tta,
            access_log=_bool(env, "BINCOUNTER_ACCESS_LOG", False),
            log_level=log_level,
        )
