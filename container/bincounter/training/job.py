"""``train``: one SageMaker training job, start to failure file.

SageMaker's contract for failures is a file: ``/opt/ml/output/failure``, whose first 1024
characters the console shows. Every failure here writes one, first line a reason a person can
act on, then the detail; the exit status is non-zero; nothing half-written is left in
``/opt/ml/model``. With several GPUs one process is spawned per GPU; each turns its own errors
into the failure file (the first one written wins).
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path

from .. import logs
from ..errors import StopRequested, UserError
from ..files import atomic_write_bytes
from ..model import CARD_FILE, WEIGHTS_FILE
from ..paths import Paths
from .environment import (
    TrainingEnvironment,
    export_library_variables,
    load_training_environment,
)

log = logging.getLogger(__name__)


def write_failure(paths: Paths, reason: str, detail: str = "") -> None:
    """Write the failure file unless an earlier (more specific) one exists, e.g. from rank 0."""
    reason = " ".join(reason.split())  # SageMaker shows the start: keep it one line
    try:
        if paths.failure_file.exists():
            return
        atomic_write_bytes(paths.failure_file, (reason + "\n" + detail).encode())
    except OSError as exc:  # a read-only tree must not hide the real error
        log.error("could not write failure file %s: %s", paths.failure_file, exc)


def remove_incomplete_model(model_dir: Path) -> None:
    """A model without its card (the card is written last) is half-written: remove it."""
    if not (model_dir / CARD_FILE).exists():
        for leftover in [model_dir / WEIGHTS_FILE, *model_dir.glob(".*.tmp")]:
            leftover.unlink(missing_ok=True)


def _train_process(local_rank: int, env: TrainingEnvironment) -> None:
    """One training process (per GPU, or the only one); turns errors into the failure file."""
    from .train import EXIT_STOPPED, run

    logs.configure(stream=sys.stdout)
    try:
        run(env, local_rank)
    except StopRequested:
        log.warning("training stopped by SIGTERM after checkpointing; a rerun resumes")
        sys.exit(EXIT_STOPPED)
    except UserError as exc:
        log.error("training failed: %s", exc.reason)
        if exc.detail:
            log.error("%s", exc.detail)
        write_failure(env.paths, exc.reason, exc.detail)
        remove_incomplete_model(env.paths.model_dir)
        sys.exit(1)
    except Exception as exc:
        detail = traceback.format_exc()
        log.error("training failed with an unexpected error:\n%s", detail)
        write_failure(
            env.paths, f"unexpected error in training: {type(exc).__name__}: {exc}", detail
        )
        remove_incomplete_model(env.paths.model_dir)
        sys.exit(1)


def run_job() -> int:
    """Read the tree, then train in this process or one process per GPU; the exit status.

    The process's variables are read here, once, into the environment object; the ones
    libraries need are set from it before any training process starts.
    """
    logs.configure(stream=sys.stdout)
    paths = Paths.from_environment(os.environ)
    try:
        env = load_training_environment(os.environ)
    except UserError as exc:
        log.error("training failed: %s", exc.reason)
        write_failure(paths, exc.reason, exc.detail)
        return 1
    export_library_variables(env)
    from .distributed import processes_per_host

    per_host = processes_per_host(env)
    if per_host > 1:
        import torch.multiprocessing as mp

        log.info("starting %d training processes, one per GPU", per_host)
        try:
            mp.spawn(_train_process, args=(env,), nprocs=per_host, join=True)
        except mp.ProcessExitedException as exc:
            return exc.exit_code or 1
        return 0
    try:
        _train_process(0, env)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
