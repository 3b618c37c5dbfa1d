"""Command line: ``train``, ``serve`` and ``process`` (what SageMaker calls) plus small helpers.

Each subcommand imports only what it needs, so ``serve`` never loads the training code and
``--help`` starts at once.
"""

from __future__ import annotations

import argparse
import logging
import sys

from . import ARCHITECTURES, logs

log = logging.getLogger(__name__)


def train_command(args: argparse.Namespace) -> int:
    from .training.job import run_job

    return run_job()


def serve_command(args: argparse.Namespace) -> int:
    from .serving.server import run_server

    return run_server(args.rest)


def process_command(args: argparse.Namespace) -> int:
    from .dataprep.worker import run_processing_job

    logs.configure(stream=sys.stdout)
    return run_processing_job([*args.extra, *args.rest])


def hyperparameters_command(args: argparse.Namespace) -> int:
    from .training.hyperparameters import describe_all

    print(describe_all())
    return 0


def download_weights_command(args: argparse.Namespace) -> int:
    from .model import download_pretrained

    logs.configure(stream=sys.stdout)
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
    process = sub.add_parser(
        "process", help="data preparation as a SageMaker Processing job", add_help=False
    )
    process.add_argument("rest", nargs=argparse.REMAINDER)
    process.set_defaults(func=process_command)
    sub.add_parser("hyperparameters", help="list hyperparameters").set_defaults(
        func=hyperparameters_command
    )
    weights = sub.add_parser("download-weights", help="cache ImageNet weights (image build)")
    weights.add_argument("arch", nargs="+", choices=ARCHITECTURES)
    weights.set_defaults(func=download_weights_command)
    # ``process`` passes its own flags through (argparse's REMAINDER stops at a leading "--x")
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "process":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
