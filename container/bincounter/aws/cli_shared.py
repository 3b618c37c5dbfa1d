"""What the ``bincounter-aws`` command groups share: the configuration, channel and compute
flags (argparse parents), and flags that fill a settings dataclass.

A flag that fills a field of a settings class (``JobSettings``, ``DeploySettings``, ...) is
declared once as a ``SettingFlag``: its default is read from the class, and the class is built
back from the parsed arguments by the same declaration, so neither the default nor the
flag-to-field mapping is written a second time.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from .config import AwsConfig, resolve_config
from .inputs import INPUT_MODES, parse_assignments
from .jobs import JobSettings

Settings = TypeVar("Settings")

#: The image local mode runs when neither ``--image`` nor the configuration names one.
LOCAL_IMAGE = "bincounter:latest"


@dataclasses.dataclass(frozen=True)
class SettingFlag:
    """One command-line flag; ``field`` names the settings field it fills (its default comes
    from there), or is None for a flag the command reads itself (``options`` then carry any
    default). ``convert`` turns the parsed value into the field's value."""

    flag: str
    field: str | None = None
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    convert: Callable[[Any], Any] | None = None

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


def _field_default(cls: type, name: str) -> Any:
    """The field's plain default; None for a field made by a factory (an empty dict)."""
    for item in dataclasses.fields(cls):
        if item.name == name:
            return None if item.default is dataclasses.MISSING else item.default
    raise AttributeError(f"{cls.__name__} has no field {name!r}")


def add_flags(group: Any, cls: type, flags: Iterable[SettingFlag]) -> None:
    """Add ``flags`` to a parser or argument group, in order, defaults from ``cls``."""
    for flag in flags:
        options = dict(flag.options)
        if flag.field is not None:
            options["default"] = _field_default(cls, flag.field)
        group.add_argument(flag.flag, **options)


def settings_from_args(
    cls: Callable[..., Settings], args: argparse.Namespace, flags: Iterable[SettingFlag]
) -> Settings:
    """``cls`` filled from the parsed flags that name one of its fields."""
    values = {}
    for flag in flags:
        if flag.field is not None:
            value = getattr(args, flag.dest)
            values[flag.field] = flag.convert(value) if flag.convert else value
    return cls(**values)


def local_image(args: argparse.Namespace, config: AwsConfig) -> str:
    """The image local mode runs: ``--image``, the configured one, or the local build."""
    return args.image or config.image or LOCAL_IMAGE


# --------------------------------------------------------------------------- configuration


def config_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    g = parent.add_argument_group("configuration (flag > environment > config file)")
    g.add_argument("--config", help="TOML/JSON config file (default ~/.config/bincounter/aws.toml)")
    g.add_argument("--region", help="AWS region (BINCOUNTER_REGION, AWS_REGION)")
    g.add_argument("--role", help="SageMaker execution role ARN (BINCOUNTER_ROLE_ARN)")
    g.add_argument("--bucket", help="S3 bucket for data, outputs, checkpoints (BINCOUNTER_BUCKET)")
    g.add_argument("--image", help="ECR image URI of bincounter (BINCOUNTER_IMAGE_URI)")
    g.add_argument("--prefix", help=f"S3 key prefix in the bucket (default {AwsConfig.prefix})")
    g.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parent


def config_from_args(args: argparse.Namespace) -> AwsConfig:
    flags = {k: getattr(args, k, None) for k in ("region", "role", "bucket", "image", "prefix")}
    return resolve_config(flags, config_file=args.config)


# --------------------------------------------------------------------------- data channels


def channels_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    g = parent.add_argument_group("data channels")
    g.add_argument(
        "--data",
        help="S3 prefix holding train/ validation/ test/ (default s3://<bucket>/<prefix>/data)",
    )
    g.add_argument("--train", help="train channel URI (overrides --data)")
    g.add_argument("--validation", help="validation channel URI (overrides --data)")
    g.add_argument("--test", help="test channel URI (overrides --data)")
    g.add_argument("--no-test", action="store_true", help="do not pass a test channel")
    return parent


def channels_from_args(
    args: argparse.Namespace, config: AwsConfig, test: bool, *, local: bool = False
) -> dict[str, str]:
    """Channel name -> URI from ``--data`` and the per-channel flags (which win).

    For a cloud job ``--data`` is an S3 prefix (default ``s3://<bucket>/<prefix>/data``) and
    names all three channels; for local mode it is a prepared folder, and only the channels it
    holds are passed.
    """
    from ..dataprep.layout import SPLITS
    from .s3data import channel_uris

    explicit = {c: getattr(args, c) for c in SPLITS if getattr(args, c)}
    base = args.data
    if local:
        folder = Path(base) if base else None
        channels = {s: str(folder / s) for s in SPLITS if folder and (folder / s).is_dir()}
    else:
        if base is None and not {"train", "validation"} <= explicit.keys():
            base = config.s3_uri("data")
        channels = channel_uris(base) if base else {}
    channels.update(explicit)
    if not test or args.no_test:
        channels.pop("test", None)
    return channels


# --------------------------------------------------------------------------- compute

JOB_FLAGS = (
    SettingFlag("--instance-type", "instance_type"),
    SettingFlag(
        "--instance-count", "instance_count", {"type": int, "help": "hosts per training job"}
    ),
    SettingFlag("--volume-size", "volume_size_gb", {"type": int, "help": "EBS GB per host"}),
    SettingFlag(
        "--spot",
        "spot",
        {"action": "store_true", "help": "managed spot training (checkpoints to S3)"},
    ),
    SettingFlag("--max-run", "max_run_seconds", {"type": int, "help": "max run seconds per job"}),
    SettingFlag(
        "--max-wait",
        "max_wait_seconds",
        {"type": int, "help": "max seconds incl. waiting for spot (>= max run)"},
    ),
    SettingFlag(
        "--checkpoint-uri",
        "checkpoint_uri",
        {
            "help": "S3 URI synced with /opt/ml/checkpoints (default with --spot: "
            "s3://<bucket>/<prefix>/checkpoints/<base job name>)"
        },
    ),
    SettingFlag(
        "--output-uri", "output_uri", {"help": "S3 prefix for model.tar.gz (default .../output)"}
    ),
    SettingFlag("--base-job-name", "base_job_name"),
    SettingFlag(
        "--env",
        "environment",
        {"action": "append", "metavar": "KEY=VALUE", "help": "container environment"},
        parse_assignments,
    ),
    SettingFlag(
        "--hp",
        None,
        {"action": "append", "metavar": "NAME=VALUE", "help": "hyperparameter (repeatable)"},
    ),
    SettingFlag(
        "--input-mode",
        "input_mode",
        {
            "choices": INPUT_MODES,
            "help": "how channels reach the container: File (copied first), FastFile (streamed "
            "from S3 as read; best with tar shards) or Pipe (tar shards only, one FIFO per pass, "
            "one process per host)",
        },
    ),
    SettingFlag(
        "--distribution",
        "distribution",
        {
            "action": "append",
            "metavar": "CHANNEL=TYPE",
            "help": "FullyReplicated (default) or ShardedByS3Key per channel, "
            "e.g. train=ShardedByS3Key",
        },
        parse_assignments,
    ),
)


def jobs_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    add_flags(parent.add_argument_group("compute"), JobSettings, JOB_FLAGS)
    return parent


def job_settings(args: argparse.Namespace) -> JobSettings:
    return settings_from_args(JobSettings, args, JOB_FLAGS)
