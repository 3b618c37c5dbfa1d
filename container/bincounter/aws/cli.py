"""``bincounter-aws``: prepare -> upload -> tune -> train -> deploy -> invoke -> transform -> delete.

One argparse program with a subcommand per step; ``scripts/*.py`` are thin wrappers that call
``main`` with their subcommand. Every subcommand takes the shared configuration flags
(``--config --region --role --bucket --image --prefix``; see ``config.py`` for the environment
variables and file). Errors a person can fix print one line and exit with status 2; AWS errors
exit with status 1. See ``docs/aws.md`` for the workflow with examples.

The subcommands are defined by command group: ``cli_data`` (prepare, assemble, upload),
``cli_jobs`` (tune, best, train), ``cli_hosting`` (deploy, delete, invoke, transform) and
``cli_pipeline`` (the ``pipeline`` and ``registry`` groups); the flags they share are
``cli_shared``'s.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .. import logs
from ..errors import UserError
from . import cli_data, cli_hosting, cli_jobs, cli_pipeline
from .cli_shared import channels_parent, config_parent, jobs_parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bincounter-aws",
        description="Prepare ABID data and run bincounter on SageMaker (SDK v3).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    config = config_parent()
    cli_data.add_parsers(sub, config)
    cli_jobs.add_parsers(sub, config, channels_parent(), jobs_parent())
    cli_hosting.add_parsers(sub, config)
    cli_pipeline.add_parsers(sub, config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 AWS/runtime error, 2 user error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.configure(logging.DEBUG if getattr(args, "verbose", False) else logging.INFO)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"error: {exc.reason}", file=sys.stderr)
        if exc.detail:
            print(exc.detail, file=sys.stderr)
        return 2
    except Exception as exc:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        if isinstance(exc, NoCredentialsError):
            print(
                "error: no AWS credentials: run 'aws configure' / 'aws sso login' or set "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                file=sys.stderr,
            )
            return 2
        if isinstance(exc, ClientError | BotoCoreError):
            print(f"AWS error: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
