"""The records the preparation steps hand each other, and the one error they raise.

They live apart from every step so that a step can run on its own (a Processing job shard
fetches and verifies, another machine splits and writes) and still speak the same types,
without importing the steps that produce them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError


class PrepareError(UserError):
    """The preparation cannot go on (bad file list, bad fractions, no usable photo)."""


@dataclass(frozen=True)
class Candidate:
    """An id to prepare; ``listed`` is the count a file list claims for it (None on a scan)."""

    id: str
    listed: int | None = None


@dataclass(frozen=True)
class Photo:
    """A verified photo in the cache."""

    id: str
    count: int
    path: Path
    sha256: str
    bytes: int
    width: int
    height: int


@dataclass(frozen=True)
class Excluded:
    id: str
    reason: str
    listed: int | None = None


@dataclass
class Stats:
    """What a run did; a resumed run shows few fetches and many reuses."""

    fetched_images: int = 0
    fetched_metadata: int = 0
    reused_images: int = 0
    reused_metadata: int = 0
    decoded: int = 0
    refetched_damaged: int = 0
    retries: int = 0
    written: int = 0
    kept: int = 0
    removed_stale: int = 0


@dataclass(frozen=True)
class Labelled:
    """An id and its count from the metadata, before the photo is fetched (a plan entry)."""

    id: str
    count: int
