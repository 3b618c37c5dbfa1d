"""Writing files so that nothing is ever half-written, and checksumming them.

Models, checkpoints, reports, the failure file and prepared data all go through here: a reader
(SageMaker packing ``/opt/ml/model``, a resumed job, a second ``prepare`` run) sees either the
old file or the whole new one, never a part of one. No torch here, so the launch side can use it
without importing it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def atomic_path(path: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on a clean exit rename it onto ``path``.

    For writers that want a file name rather than bytes (``torch.save``, ``np.savez``,
    ``shutil.copyfile``, OpenVINO): readers see the old file or the whole new one, and on any
    exception the temporary file is removed, never left behind. ``suffix`` keeps the extension
    some writers insist on (``np.savez`` appends ``.npz`` to a name without it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the file from a serving user
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes, fsync: bool = True) -> None:
    """Write ``path`` so that readers see the old file or the whole new one, never a part.

    ``fsync=False`` skips the flush to disk for bulk data that a later run re-verifies by
    checksum anyway (thousands of photos); the rename is atomic either way. Safe to call from
    several threads at once: every call writes its own temporary file.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())


def strict_json_value(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by ``None``.

    Python's json writes NaN as a bare ``NaN`` token that JavaScript, jq and most JSON parsers
    reject; a diverged loss must not make a report or a model card unreadable downstream.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json_value(v) for v in value]
    return value


def atomic_write_json(path: Path, payload: Any, indent: int = 2) -> None:
    """``payload`` as strict, indented JSON (non-finite floats become ``null``), atomically."""
    text = json.dumps(strict_json_value(payload), indent=indent, allow_nan=False)
    atomic_write_bytes(path, text.encode())
