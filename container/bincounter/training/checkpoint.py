"""Checkpoints that survive spot interruptions, SIGKILL and half-synced S3 folders.

SageMaker syncs ``/opt/ml/checkpoints`` to S3 and restores it when a managed-spot job restarts.
The appearance of ``ckpt-N.pt`` is the commit point: its ``.sha256`` sidecar, hashed from the
bytes in memory, is written first, then the checkpoint itself goes to a temporary file, is
fsynced and renamed into place (so a reader never sees a partial file). A kill at any moment
leaves either a complete checkpoint with its sidecar, or no checkpoint (and perhaps a sidecar
without one, which nothing reads and the next save of that number overwrites). Loading walks from the newest checkpoint
back, skipping (and reporting) any whose checksum does not match or that does not load, so a
truncated or corrupt file costs one checkpoint, never the job.

Files live under ``<checkpoint_dir>/<TRAINING_JOB_NAME>/``: a tuning job gives all its
training jobs the same checkpoint S3 URI, and they must never resume each other.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
from pathlib import Path
from typing import Any

import torch

from ..files import atomic_write_bytes, sha256_file

log = logging.getLogger(__name__)

_NAME = re.compile(r"^ckpt-(\d{6})\.pt$")


class CheckpointStore:
    """Numbered checkpoints in one folder; keeps the newest ``keep`` good ones."""

    def __init__(self, root: Path, job_name: str = "", keep: int = 2) -> None:
        safe_job = re.sub(r"[^A-Za-z0-9._-]", "_", job_name) or "local"
        self.dir = root / safe_job
        self.keep = keep

    def _checkpoints(self) -> list[Path]:
        if not self.dir.is_dir():
            return []
        found = [p for p in self.dir.iterdir() if _NAME.match(p.name)]
        return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))

    def save(self, state: dict[str, Any]) -> Path:
        existing = self._checkpoints()
        number = int(_NAME.match(existing[-1].name).group(1)) + 1 if existing else 1
        path = self.dir / f"ckpt-{number:06d}.pt"
        buffer = io.BytesIO()
        torch.save(state, buffer)
        data = buffer.getvalue()
        atomic_write_bytes(
            path.with_suffix(".pt.sha256"), hashlib.sha256(data).hexdigest().encode()
        )
        atomic_write_bytes(path, data)  # the commit point
        for old in existing[: max(0, len(existing) + 1 - self.keep)]:
            old.unlink(missing_ok=True)  # checkpoint before sidecar: never one without its hash
            old.with_suffix(".pt.sha256").unlink(missing_ok=True)
        return path

    def load_latest(self) -> tuple[dict[str, Any], Path] | None:
        """The newest checkpoint that verifies and loads, or None if there is none."""
        for path in reversed(self._checkpoints()):
            problem = self._verify(path)
            if problem is None:
                try:
                    state = torch.load(path, map_location="cpu", weights_only=True)
                except Exception as exc:  # a damaged zip, a truncated pickle, ...
                    problem = f"does not load ({type(exc).__name__}: {exc})"
                else:
                    if isinstance(state, dict) and "epoch" in state:
                        return state, path
                    problem = "is not a bincounter checkpoint"
            log.warning("checkpoint %s %s; falling back to the previous one", path, problem)
        return None

    @staticmethod
    def _verify(path: Path) -> str | None:
        sidecar = path.with_suffix(".pt.sha256")
        if not sidecar.is_file():
            return "has no .sha256 sidecar (interrupted while being written)"
        if sidecar.read_text().strip() != sha256_file(path):
            return "does not match its sha256 (truncated or corrupt)"
        return None
