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
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..decision import TTA_CHOICES
from ..errors import ConfigError
from ..imaging import MAX_PIXELS
from ..openvino_ir import PRECISIONS
from ..paths import DEFAULT_BASE_DIR, Paths
from . import parameters

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


#: Log levels ``BINCOUNTER_LOG_LEVEL`` accepts.
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def knob(
    variable: str,
    low: float | None = None,
    high: float | None = None,
    choices: tuple[Any, ...] = (),
    computed: str = "",
) -> dict[str, Any]:
    """A ``ServingConfig`` field's metadata: the variable it is read from and what it allows.

    Numbers must lie in ``low..high``; a string or number with ``choices`` must be one of them
    (strings compared lower-cased). ``computed`` says what replaces the field's default at start
    when the machine decides it (cores, a GPU); ``docs/serving.md``'s table shows it.
    """
    return {
        "variable": variable,
        "low": low,
        "high": high,
        "choices": choices,
        "computed": computed,
    }


def _read(env: Mapping[str, str], knob_field: Field, default: Any = None) -> Any:
    """The knob's value from ``env`` (empty or unset: ``default``, else the field's default)."""
    meta = knob_field.metadata
    name, low, high, choices = meta["variable"], meta["low"], meta["high"], meta["choices"]
    default = knob_field.default if default is None else default
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if isinstance(default, bool):
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}={raw.lower()!r} is not a boolean (true/false)")
    if isinstance(default, str):
        value = raw.lower() if choices else raw
    else:
        kind, what = (int, "an integer") if isinstance(default, int) else (float, "a number")
        bounds = f"{kind(low):g}..{kind(high):g}" if kind is float else f"{low}..{high}"
        try:
            value = kind(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not {what} ({bounds})") from None
        if not low <= value <= high:
            shown = f"{value:g}" if kind is float else str(value)
            raise ConfigError(f"{name}={shown} is outside {bounds}")
    if choices and value not in choices:
        allowed = ", ".join(str(c) for c in choices)
        raise ConfigError(f"{name}={value!r}: allowed {allowed}")
    return value


@dataclass(frozen=True)
class ServingConfig:
    """What the server runs with; build it with ``from_environment``.

    Each field is one knob: its default, and in its metadata (``knob``) the variable it is read
    from and the values it allows.
    """

    model_dir: Path = field(
        default=None,
        metadata=knob(parameters.MODEL_DIR, computed=f"`${parameters.BASE_DIR}/model`"),
    )
    host: str = field(default="0.0.0.0", metadata=knob(parameters.BIND_HOST))
    port: int = field(default=8080, metadata=knob(parameters.BIND_TO_PORT, 1, 65535))
    workers: int = field(
        default=1,
        metadata=knob(
            parameters.MODEL_SERVER_WORKERS,
            1,
            64,
            computed=f"cores (at most {MAX_CPU_WORKERS}) on a CPU, 1 on a GPU",
        ),
    )
    #: gunicorn threads per worker: concurrent requests a worker reads, decodes and waits on.
    http_threads: int = field(default=8, metadata=knob(parameters.HTTP_THREADS, 1, 256))
    #: Threads per worker that actually compute (OpenVINO's or torch's intra-op).
    compute_threads: int = field(
        default=1, metadata=knob(parameters.COMPUTE_THREADS, 1, 256, computed="cores / workers")
    )
    #: Photos decoding at once per worker: its decode memory is this x the largest photo.
    decode_threads: int = field(
        default=1, metadata=knob(parameters.DECODE_THREADS, 1, 256, computed="cores / workers")
    )
    #: Largest photo decoded, in pixels (ABID photos are under 1 Mpx); larger ones are a 400.
    max_image_pixels: int = field(
        default=4_000_000, metadata=knob(parameters.MAX_IMAGE_PIXELS, 4096, MAX_PIXELS)
    )
    #: One deadline per request, from its body's first byte to the answer (then 503, or 408).
    timeout: int = field(default=60, metadata=knob(parameters.MODEL_SERVER_TIMEOUT, 1, 3600))
    #: Longest a client may leave a request half-sent (no byte), or a new connection silent,
    #: before it is cut off.
    read_timeout: float = field(default=10.0, metadata=knob(parameters.READ_TIMEOUT, 0.1, 3600.0))
    #: SageMaker kills a container 30 s after SIGTERM: drain well inside that.
    graceful_timeout: int = field(default=20, metadata=knob(parameters.GRACEFUL_TIMEOUT, 1, 3600))
    keepalive: int = field(default=5, metadata=knob(parameters.KEEPALIVE, 0, 3600))
    max_payload_mb: float = field(
        default=6.0, metadata=knob(parameters.MAX_PAYLOAD_IN_MB, 0.001, 1024.0)
    )
    max_batch_size: int = field(default=8, metadata=knob(parameters.MAX_BATCH_SIZE, 1, 256))
    #: Longest wait for a request known to be decoding to join a batch (never for nobody).
    batch_wait_ms: float = field(default=5.0, metadata=knob(parameters.BATCH_WAIT_MS, 0.0, 1000.0))
    max_instances: int = field(default=64, metadata=knob(parameters.MAX_INSTANCES, 1, 10_000))
    engine: str = field(default="auto", metadata=knob(parameters.ENGINE, choices=ENGINES))
    #: ``auto``, ``fp32``, ``bf16`` or ``int8``; the engine serves the best it can vouch for.
    precision: str = field(default="auto", metadata=knob(parameters.PRECISION, choices=PRECISIONS))
    #: 1 (the photo as sent) or 8 (its flips and quarter turns, averaged: about 8x the compute).
    tta: int = field(default=1, metadata=knob(parameters.TTA, 1, 8, choices=TTA_CHOICES))
    access_log: bool = field(default=False, metadata=knob(parameters.ACCESS_LOG))
    log_level: str = field(default="info", metadata=knob(parameters.LOG_LEVEL, choices=LOG_LEVELS))

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
        knobs = {f.name: f for f in fields(cls)}
        values = {"engine": _read(env, knobs["engine"])}
        cores = cpu_count()
        on_gpu = values["engine"] == "cuda" or (values["engine"] == "auto" and gpu_present())
        workers = _read(env, knobs["workers"], 1 if on_gpu else min(cores, MAX_CPU_WORKERS))
        values["workers"] = workers
        # Never more computing threads than cores, whatever the worker count.
        values["compute_threads"] = _read(env, knobs["compute_threads"], max(1, cores // workers))
        values["decode_threads"] = _read(env, knobs["decode_threads"], max(1, cores // workers))
        base = env.get(parameters.BASE_DIR, "").strip() or str(DEFAULT_BASE_DIR)
        model_dir = _read(env, knobs["model_dir"], str(Paths(Path(base)).model_dir))
        values["model_dir"] = Path(model_dir)
        for name, knob_field in knobs.items():
            if name not in values:
                values[name] = _read(env, knob_field)
        return cls(**values)
