"""``bincounter-aws`` job commands: tune, best (a tuning job's best hyperparameters), train."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .cli_shared import (
    SettingFlag,
    add_flags,
    channels_from_args,
    config_from_args,
    job_settings,
    local_image,
    settings_from_args,
)
from .jobs import STRATEGIES, TuningSettings

BEST_FILE = "best_hyperparameters.json"

TUNING_FLAGS = (
    SettingFlag(
        "--range",
        None,
        {
            "action": "append",
            "metavar": "NAME=SPEC",
            "help": "low:high[:log] or a,b,c; defaults lr=0.001:0.1:log batch_size=16,32,64 "
            "epochs=2:6; NAME= drops a default",
        },
    ),
    SettingFlag("--no-default-ranges", None, {"action": "store_true"}),
    SettingFlag("--max-jobs", "max_jobs", {"type": int}),
    SettingFlag("--max-parallel-jobs", "max_parallel_jobs", {"type": int}),
    SettingFlag(
        "--early-stopping",
        "early_stopping",
        {"action": "store_true", "help": "TrainingJobEarlyStoppingType=Auto"},
    ),
    SettingFlag("--strategy", "strategy", {"choices": list(STRATEGIES)}),
    SettingFlag("--job-name", None, {"help": "tuning job name (<= 32 chars; default timestamped)"}),
    SettingFlag("--wait", None, {"action": argparse.BooleanOptionalAction, "default": True}),
    SettingFlag("--best-out", None, {"default": BEST_FILE}),
)


def _print_best(best: dict[str, Any], path: Path) -> None:
    print(f"best job {best['best_training_job']}: {best['objective']}")
    print(f"best hyperparameters -> {path}: {json.dumps(best['hyperparameters'])}")


def cmd_tune(args: argparse.Namespace) -> int:
    from .inputs import parse_assignments, write_hyperparameters_file
    from .jobs import best_hyperparameters, launch_tuning
    from .ranges import build_ranges

    config = config_from_args(args)
    ranges = build_ranges(parse_assignments(args.range), defaults=not args.no_default_ranges)
    launch = launch_tuning(
        config,
        channels_from_args(args, config, test=False),
        ranges,
        parse_assignments(args.hp),
        job_settings(args),
        settings_from_args(TuningSettings, args, TUNING_FLAGS),
        job_name=args.job_name,
        wait=args.wait,
    )
    print(f"tuning job: {launch.job_name} ({launch.status})")
    for name, spec in launch.ranges.items():
        shown = ",".join(spec.values) if spec.kind == "categorical" else f"{spec.low}..{spec.high}"
        print(f"  range {name}: {spec.kind} {shown} {spec.scaling}")
    if args.wait:
        best = best_hyperparameters(config, launch.job_name)
        _print_best(best, write_hyperparameters_file(args.best_out, best))
    else:
        print(
            f"when it ends: bincounter-aws best --tuning-job {launch.job_name} --out {args.best_out}"
        )
    return 0


def cmd_best(args: argparse.Namespace) -> int:
    from .inputs import write_hyperparameters_file
    from .jobs import best_hyperparameters

    best = best_hyperparameters(config_from_args(args), args.tuning_job)
    _print_best(best, write_hyperparameters_file(args.out, best))
    return 0


def _hyperparameters(args: argparse.Namespace) -> dict[str, str]:
    from .inputs import parse_assignments, read_hyperparameters_file

    values: dict[str, str] = {}
    if args.hyperparameters_file:
        values.update(read_hyperparameters_file(args.hyperparameters_file))
    values.update(parse_assignments(args.hp))
    return values


def _train_locally(args: argparse.Namespace, hyperparameters: dict[str, str]) -> int:
    from .local import local_train

    config = config_from_args(args)
    result = local_train(
        local_image(args, config),
        channels_from_args(args, config, test=True, local=True),
        hyperparameters,
        instance_count=args.instance_count,
        container_root=args.container_root,
        environment=job_settings(args).environment,
    )
    print(f"local model artifact: {result.model_artifact}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    hyperparameters = _hyperparameters(args)
    if args.local:
        return _train_locally(args, hyperparameters)

    from .jobs import launch_training

    config = config_from_args(args)
    launch = launch_training(
        config,
        channels_from_args(args, config, test=True),
        hyperparameters,
        job_settings(args),
        wait=args.wait,
        logs=args.wait,
    )
    print(f"training job: {launch.job_name} ({launch.status})")
    print(f"hyperparameters: {json.dumps(launch.hyperparameters)}")
    print(f"model artifact: {launch.model_artifact}")
    return 0


def add_parsers(
    sub: Any,
    config: argparse.ArgumentParser,
    channels: argparse.ArgumentParser,
    jobs: argparse.ArgumentParser,
) -> None:
    """The jobs group's subcommands; tune and train take the channel and compute flags too."""
    p = sub.add_parser("tune", parents=[config, channels, jobs], help="hyperparameter tuning job")
    add_flags(p, TuningSettings, TUNING_FLAGS)
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("best", parents=[config], help="best hyperparameters of a tuning job")
    p.add_argument("--tuning-job", required=True)
    p.add_argument("--out", default=BEST_FILE)
    p.set_defaults(func=cmd_best)

    p = sub.add_parser("train", parents=[config, channels, jobs], help="training job")
    p.add_argument("--hyperparameters-file", help="JSON from tune/best, or a plain mapping")
    p.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--local", action="store_true", help="SDK local mode with a local image")
    p.add_argument("--container-root", help="local mode working folder")
    p.set_defaults(func=cmd_train)
