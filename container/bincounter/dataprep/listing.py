"""The full metadata scan: every ``metadata/<id>.json`` of the bucket and its count, in parallel.

Selecting from all of ABID means reading all 536,434 metadata objects, since the count is only
inside each one. One ``ListObjectsV2`` walk is sequential (a page of 1,000 keys per request,
each page needing the previous page's last key), so the key space is cut into ranges at fixed
split points (``metadata/000``, ``metadata/001``, ...) and every range is listed and read on its
own thread. A range's result is saved when it completes, so a killed scan resumes with the
ranges it had not finished; the metadata files themselves land in the fetch cache, where the
fetch step finds them again. Split points are never keys themselves (keys end in ``.json``),
so each key falls in exactly one range, whatever characters ids use.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .. import CLASSES
from ..errors import MissingObject
from ..files import atomic_write_json
from .fetch import Fetcher
from .records import PlannedId
from .sources import PhotoSource

log = logging.getLogger(__name__)

DIGITS = "0123456789"
STATE_DIR = "scan"


def split_points(prefix: str, depth: int = 3, alphabet: str = DIGITS) -> list[str]:
    """``prefix`` + every string of ``depth`` characters of ``alphabet``, sorted."""
    if depth < 0:
        raise ValueError(f"depth {depth} must be >= 0")
    return sorted(prefix + "".join(p) for p in itertools.product(sorted(alphabet), repeat=depth))


def key_ranges(
    prefix: str, depth: int = 3, alphabet: str = DIGITS
) -> list[tuple[str | None, str | None]]:
    """Ranges ``(after, before)`` (both exclusive, ``None`` open) covering every key once.

    ``depth=3`` over digits gives 1,001 ranges: the first (keys before ``<prefix>000``), one
    per three-digit prefix, and the last. ABID's ids are five or six digits with leading
    zeros, so each non-empty range holds about one list page (1,000 keys).
    """
    points = split_points(prefix, depth, alphabet) if depth else []
    bounds: list[str | None] = [None, *points, None]
    return list(itertools.pairwise(bounds))


def in_range(key: str, after: str | None, before: str | None) -> bool:
    return (after is None or key > after) and (before is None or key < before)


@dataclass
class ScanResult:
    """Counts of every id the scan read, ids it could not read (with why), and what it cost."""

    counts: dict[str, int] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)
    ranges: int = 0
    resumed_ranges: int = 0
    listed: int = 0


def scan_metadata(
    source: PhotoSource,
    fetcher: Fetcher,
    state_dir: Path,
    *,
    depth: int = 3,
    workers: int = 32,
    progress: bool = True,
) -> ScanResult:
    """List and read every metadata object of ``source``, one range per task; resumable.

    Completed ranges are saved as ``<state_dir>/scan/range-NNNN.json`` and not scanned again.
    A metadata object that is missing or unreadable is recorded with its reason, not fatal.
    """
    ranges = key_ranges(source.metadata_prefix, depth)
    folder = Path(state_dir) / STATE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    result = ScanResult(ranges=len(ranges))
    lock = threading.Lock()
    done = [0]

    def one(index: int) -> None:
        after, before = ranges[index]
        path = folder / f"range-{index:04d}.json"
        saved = _load_range(path, after, before)
        if saved is None:
            counts: dict[str, int] = {}
            problems: dict[str, str] = {}
            for image_id in source.list_metadata_range(after, before):
                try:
                    counts[image_id] = fetcher.metadata_count(image_id)
                except MissingObject as exc:
                    problems[image_id] = f"metadata missing ({exc})"
                except (ValueError, KeyError, TypeError) as exc:
                    problems[image_id] = f"metadata unreadable: {exc}"
                except Exception as exc:  # retried in the fetcher already
                    problems[image_id] = f"metadata download failed: {exc}"
            atomic_write_json(
                path, {"after": after, "before": before, "counts": counts, "problems": problems}, 0
            )
            resumed = False
        else:
            counts, problems = saved
            resumed = True
        with lock:
            result.counts.update(counts)
            result.problems.update(problems)
            result.listed += len(counts) + len(problems)
            result.resumed_ranges += resumed
            done[0] += 1
            if progress and done[0] % 10 == 0:
                log.info("scan: %d/%d ranges, %d ids", done[0], len(ranges), result.listed)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(one, range(len(ranges))))
    log.info(
        "scan: %d ids in %d ranges (%d resumed), %d unreadable",
        result.listed,
        len(ranges),
        result.resumed_ranges,
        len(result.problems),
    )
    return result


def _load_range(
    path: Path, after: str | None, before: str | None
) -> tuple[dict[str, int], dict[str, str]] | None:
    """A saved range, if it is complete and for the same bounds (else scan it again)."""
    try:
        saved = json.loads(path.read_text())
        if saved["after"] != after or saved["before"] != before:
            return None
        return {str(k): int(v) for k, v in saved["counts"].items()}, dict(saved["problems"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def select_by_count(counts: dict[str, int], max_per_count: int | None = None) -> list[PlannedId]:
    """Ids of counts 1..5, at most ``max_per_count`` each (the smallest ids, so the choice
    does not depend on the listing's order); sorted by count then id."""
    by_count: dict[int, list[str]] = {c: [] for c in CLASSES}
    for image_id, count in counts.items():
        if count in by_count:
            by_count[count].append(image_id)
    out: list[PlannedId] = []
    for count in CLASSES:
        ids = sorted(by_count[count])
        out += [PlannedId(i, count) for i in ids[:max_per_count]]
    return out
