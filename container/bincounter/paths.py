"""SageMaker's ``/opt/ml`` tree: where training and serving read and write.

A bring-your-own container gets files, not ``SM_*`` variables, at fixed places under one base
directory. Both sides derive every location from ``Paths`` so they can never disagree on one.
``SAGEMAKER_BASE_DIR`` relocates the whole tree, as in AWS's own toolkit, so the same ``./train``
and ``./serve`` run on a laptop.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_BASE_DIR = Path("/opt/ml")


def base_dir() -> Path:
    """The root of the SageMaker tree: ``$SAGEMAKER_BASE_DIR`` or ``/opt/ml``."""
    return Path(os.environ.get("SAGEMAKER_BASE_DIR", str(DEFAULT_BASE_DIR)))


@dataclass(frozen=True)
class Paths:
    """Every location of the contract, derived from one base directory."""

    base: Path

    @property
    def config_dir(self) -> Path:
        return self.base / "input" / "config"

    @property
    def data_dir(self) -> Path:
        return self.base / "input" / "data"

    @property
    def model_dir(self) -> Path:
        return self.base / "model"

    @property
    def output_dir(self) -> Path:
        return self.base / "output"

    @property
    def output_data_dir(self) -> Path:
        return self.output_dir / "data"

    @property
    def failure_file(self) -> Path:
        return self.output_dir / "failure"

    @property
    def checkpoint_dir(self) -> Path:
        # SageMaker syncs this folder with CheckpointConfig.S3Uri (managed spot training).
        return Path(os.environ.get("BINCOUNTER_CHECKPOINT_DIR", str(self.base / "checkpoints")))

    @classmethod
    def from_environment(cls) -> Paths:
        return cls(base_dir())
