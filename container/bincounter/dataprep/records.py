"""The records the preparation steps hand each other.

They live apart from every step so that a step can run on its own (a Processing job shard
fetches and verifies, another machine splits and writes) and still speak the same types,
without importing the steps that produce them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Candidate:
    """An id to prepare; ``listed`` is the count a file list claims for it (None on a scan)."""

    id: str
    listed: int | None = None


@dataclass(frozen=True)
class VerifiedPhoto:
    """A photo fetched into the cache and verified by decoding it (not yet written out)."""

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
class PlannedId:
    """An id and its count from the metadata, before the photo is fetched (a plan entry)."""

    id: str
    count: int
