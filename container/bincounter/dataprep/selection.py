"""Which ABID ids to prepare: the ids a capstone ``file_list.json`` names, or a bounded scan.

A file list fixes the sample (and claims a count per id, which the fetch step checks against
the metadata); without one, the source's ``metadata/`` is walked in listing order and the walk
stops once every count 1..5 has N ids, so a small sample of the 500k-photo bucket costs a few
thousand requests, not a listing and a download of everything. Ids stay strings throughout:
``00523`` and ``523`` are different photos.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from .. import CLASSES
from ..errors import PrepareError
from .records import Candidate
from .sources import PhotoSource

if TYPE_CHECKING:
    from .fetch import Fetcher

log = logging.getLogger(__name__)


def read_file_list(path: str | Path) -> dict[int, list[str]]:
    """Ids per count from a capstone ``file_list.json``; ids keep their leading zeros."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise PrepareError(f"cannot read file list {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise PrepareError(f"file list {path} must map counts to lists of paths")
    out: dict[int, list[str]] = {}
    for key, paths in raw.items():
        try:
            count = int(key)
        except ValueError:
            raise PrepareError(f"file list {path}: key {key!r} is not a count") from None
        if not isinstance(paths, list):
            raise PrepareError(f"file list {path}: value of {key!r} is not a list")
        # "data/metadata/00523.json" -> "00523": the stem, as a string, never int().
        out[count] = [Path(str(p)).stem for p in paths]
    return out


def candidates_from_file_list(
    file_list: dict[int, list[str]], max_per_count: int | None = None
) -> list[Candidate]:
    """The first ``max_per_count`` ids of each count 1..5 (in list order), duplicates once."""
    seen: set[str] = set()
    out: list[Candidate] = []
    for count in sorted(file_list):
        if count not in CLASSES:
            log.warning("file list: ignoring count %s (only 1..5 are predicted)", count)
            continue
        taken = 0
        for image_id in file_list[count]:
            if max_per_count is not None and taken >= max_per_count:
                break
            if image_id in seen:
                log.warning("file list: id %s listed twice; keeping the first", image_id)
                continue
            seen.add(image_id)
            out.append(Candidate(image_id, count))
            taken += 1
    return out


def scan_candidates(
    source: PhotoSource,
    fetcher: Fetcher,
    max_per_count: int,
    workers: int,
    progress: bool,
    chunk: int = 512,
) -> list[Candidate]:
    """Walk the source's metadata in listing order, keeping up to N ids per count 1..5.

    Metadata is fetched in parallel chunks (and cached), and the walk stops as soon as every
    count is full, so a small subset of the 500k-photo bucket costs a few thousand requests.
    """
    kept: dict[int, list[str]] = defaultdict(list)

    def count_of(image_id: str) -> int | None:
        try:
            return fetcher.metadata_count(image_id)
        except Exception as exc:
            log.warning("scan: skipping %s: %s", image_id, exc)
            return None

    def full() -> bool:
        return all(len(kept[c]) >= max_per_count for c in CLASSES)

    batch: list[str] = []

    def flush() -> None:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for image_id, count in zip(batch, pool.map(count_of, batch), strict=True):
                if count in CLASSES and len(kept[count]) < max_per_count:
                    kept[count].append(image_id)
        batch.clear()

    for image_id in source.list_metadata_ids():
        batch.append(image_id)
        if len(batch) >= chunk:
            flush()
            if progress:
                log.info("scan: %s", {c: len(kept[c]) for c in CLASSES})
            if full():
                break
    if batch and not full():
        flush()
    return [Candidate(i, c) for c in CLASSES for i in kept[c]]
