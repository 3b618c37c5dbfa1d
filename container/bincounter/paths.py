"""SageMaker's ``/opt/ml`` tree: where training and serving read and write.

A bring-your-own container gets files, not ``SM_*`` variables, at fixed places under one base
directory. Both sides derive every location from ``Paths`` so they can never disagree on one.
``SAGEMAKER_BASE_DIR`` relocates the whole tree, as in AWS's own toolkit, so the same ``./train``
and ``./serve`` run on a laptop. The variables are read by ``from_environment``, once, from the
mapping the entry point hands over: nothing here looks at ``os.environ`` itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .params import BASE_DIR_ENV, CHECKPOINT_DIR_ENV, DEFAULT_BASE_DIR

__all__ = ["DEFAULT_BASE_DIR", "Paths", "base_dir"]


def base_dir(environ: Mapping[str, str]) -> Path:
    """The root of the SageMaker tree: ``$SAGEMAKER_BASE_DIR`` or ``/opt/ml``."""
    return Path(environ.get(BASE_DIR_ENV, str(DEFAULT_BASE_DIR)))


@dataclass(frozen=True)
class Paths:
    """Every location of the contract, derived from one base directory.

    ``checkpoint_root`` is where ``BINCOUNTER_CHECKPOINT_DIR`` moved the checkpoints, if it did.
    """

    base: Path
    checkpoint_root: Path | None = None

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
        return self.checkpoint_root or self.base / "checkpoints"

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Paths:
        """The tree ``environ`` (the process's variables, read at start) points at."""
        checkpoints = environ.get(CHECKPOINT_DIR_ENV)
        return cls(base_dir(environ), Path(checkpoints) if checkpoints is not None else None)
