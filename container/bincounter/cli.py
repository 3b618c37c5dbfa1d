"""Command line: ``train`` and ``serve`` (what SageMaker calls) plus small helpers.

SageMaker's contract for failures is a file: ``/opt/ml/output/failure``, whose first 1024
characters the console shows. Every failure here writes one, first line a reason a person can
act on, then the detail; the exit status is non-zero; nothing half-written is left in
``/opt/ml/model``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from pathlib import Path

from .environment import Paths
from .errors import UserError

log = logging.getLogger("bincounter")


def setup_logging() -> None:
    """Plain lines with timestamps on stdout: what CloudWatch shows a person."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
        force=True,
    )


def write_failure(paths: Paths, reason: str, detail: str = "") -> None:
    """Write the failure file unless an earlier (more specific) one exists, e.g. from rank 0."""
    from .files import atomic_write_bytes

    reason = " ".join(reason.split())  # SageMaker shows the start: keep it one line
    try:
        if paths.failure_file.exists():
            return
        atomic_write_bytes(paths.failure_file, (reason + "\n" + detail).encode())
    except OSError as exc:  # a read-only tree must not hide the real error
        log.error("could not write failure file %s: %s", paths.failure_file, exc)


def remove_incomplete_model(model_dir: Path) -> None:
    """A model without its card (the card is written last) is half-written: remove it."""
    from .model import CARD_FILE, WEIGHTS_FILE

    if not (model_dir / CARD_FILE).exists():
        for leftover in [model_dir / WEIGHTS_FILE, *model_dir.glob(".*.tmp")]:
            leftover.unlink(missing_ok=True)


def _train_process(local_rank: int, env) -> None:
    """One training process (per GPU, or the only one); turns errors into the failure file."""
    from .train import EXIT_STOPPED, StopRequested, run

    setup_logging()
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


def train_command(args: argparse.Namespace) -> int:
    from .environment import load_training_environment

    setup_logging()
    paths = Paths.from_environment()
    try:
        env = load_training_environment()
    except UserError as exc:
        log.error("training failed: %s", exc.reason)
        write_failure(paths, exc.reason, exc.detail)
        return 1
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


def serve_command(args: argparse.Namespace) -> int:
    from .serving.server import run_server

    return run_server(args.rest)


def hyperparameters_command(args: argparse.Namespace) -> int:
    from .hyperparameters import describe_all

    print(describe_all())
    return 0


def download_weights_command(args: argparse.Namespace) -> int:
    from .model import download_pretrained

    setup_logging()
    for arch in args.arch:
        log.info("ImageNet weights for %s: %s", arch, download_pretrained(arch))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bincounter", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("train", help="run a training job on the SageMaker tree").set_defaults(
        func=train_command
    )
    serve = sub.add_parser("serve", help="start the model server (gunicorn + flask)")
    serve.add_argument("rest", nargs=argparse.REMAINDER)
    serve.set_defaults(func=serve_command)
    sub.add_parser("hyperparameters", help="list hyperparameters").set_defaults(
        func=hyperparameters_command
    )
    weights = sub.add_parser("download-weights", help="cache ImageNet weights (image build)")
    weights.add_argument("arch", nargs="+", choices=("resnet18", "resnet34", "resnet50"))
    weights.set_defaults(func=download_weights_command)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
