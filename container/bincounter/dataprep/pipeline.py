"""The whole preparation in one call: plan -> process each part -> assemble, on this machine.

``prepare`` is what ``bincounter-aws prepare`` and the quickstart run: it selects, fetches and
verifies, splits the verified photos, and then goes the Processing job's way with one plan
part (``worker.process_part``, ``parts.assemble``), so both paths write channels and manifest
with the same code. ``prepare_parts`` is that way with a scan-and-split plan of many parts,
in-process. A second run after a crash redoes only what is missing: each step is resumable on
its own (see ``fetch``, ``layout`` and ``worker``). It holds no state between calls; everything a run learns is on disk
(the cache, the manifest) or in the returned ``PrepareResult``. Nothing is written to S3 here:
upload is ``bincounter.aws.s3data``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict, Unpack

from .. import CLASSES
from ..errors import PrepareError
from ..files import atomic_write_json
from ..shards import DEFAULT_SHARD_BYTES
from .fetch import Cache, Fetcher
from .layout import SPLITS, read_manifest_entries, remove_unlisted, stratified_split
from .listing import scan_metadata, select_by_count
from .parts import (
    PLAN_DIR,
    PLAN_SETTINGS,
    assemble,
    plan_entries,
    split_entries,
    split_parts,
    write_plan,
)
from .pool import parallel
from .records import Excluded, PlannedId, Stats, VerifiedPhoto
from .report import REPORT_JSON, REPORT_PNG
from .selection import candidates_from_file_list, read_file_list, scan_candidates
from .sources import PhotoSource
from .worker import process_part

log = logging.getLogger(__name__)


class Selection(TypedDict, total=False):
    """Which ids and how they split (``plan``'s options of that name), passed on as one."""

    file_list: str | Path | dict[int, list[str]] | None
    max_per_count: int | None
    cache_dir: str | Path | None
    seed: int
    fractions: tuple[float, float, float]


def _check_resize(resize: int | None) -> None:
    if resize is not None and resize < 32:
        raise PrepareError(f"resize={resize} is too small: keep the longer side >= 32 pixels")


def _cache(out: Path, cache_dir: str | Path | None) -> Cache:
    """The download cache: ``cache_dir``, else ``<out>/.cache`` (never uploaded)."""
    return Cache(Path(cache_dir) if cache_dir else out / ".cache")


@dataclass
class PrepareResult:
    out_dir: Path
    photos: list[VerifiedPhoto]
    excluded: list[Excluded]
    splits: dict[str, list[VerifiedPhoto]]
    stats: Stats
    manifest: Path
    report_json: Path
    report_png: Path | None
    seconds: float = 0.0
    report: dict[str, Any] = field(default_factory=dict)


def prepare(
    source: PhotoSource,
    out_dir: str | Path,
    *,
    file_list: str | Path | dict[int, list[str]] | None = None,
    max_per_count: int | None = None,
    cache_dir: str | Path | None = None,
    seed: int = 42,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    resize: int | None = None,
    workers: int = 16,
    progress: bool = True,
    chart: bool = True,
) -> PrepareResult:
    """Run the whole preparation; safe to rerun after a crash.

    ``file_list`` selects ids (a path or an already-read mapping); without it the source's
    metadata is scanned and ``max_per_count`` is required. ``cache_dir`` defaults to
    ``<out_dir>/.cache`` (never uploaded). ``resize`` shrinks every photo so its longer side
    is at most that many pixels.
    """
    started = time.monotonic()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_resize(resize)
    cache = _cache(out, cache_dir)
    stats = Stats()
    fetcher = Fetcher(source, cache, stats)

    if file_list is not None:
        listing = file_list if isinstance(file_list, dict) else read_file_list(file_list)
        candidates = candidates_from_file_list(listing, max_per_count)
    else:
        if not max_per_count:
            raise PrepareError("without a file list, give max_per_count to bound the scan")
        candidates = scan_candidates(source, fetcher, max_per_count, workers, progress)
    if not candidates:
        raise PrepareError("no ids selected: the file list or the scan found nothing")
    log.info("preparing %d ids from %s", len(candidates), source.description)

    results = parallel(fetcher.process, candidates, workers, "fetch+verify", progress)
    photos = [r for r in results if isinstance(r, VerifiedPhoto)]
    excluded = [r for r in results if isinstance(r, Excluded)]
    if not photos:
        first = excluded[0].reason if excluded else "nothing selected"
        raise PrepareError(f"no usable photo among {len(candidates)} ids; first problem: {first}")

    splits = stratified_split(photos, fractions, seed)
    settings = {
        "seed": seed,
        "fractions": list(fractions),
        "resize": resize,
        "max_per_count": max_per_count,
        "selection": "file_list" if file_list is not None else "scan",
    }
    part = _write_plan(out, split_entries(splits), 1, source, settings)
    manifest_path, report = _process_and_assemble(
        source, out, cache, part, settings, stats, layout="folders", resize=resize,
        shard_bytes=DEFAULT_SHARD_BYTES, with_metadata=False, seed=seed, workers=workers,
        progress=progress, chart=chart, excluded_before=excluded,
    )  # fmt: skip
    return PrepareResult(
        out_dir=out,
        photos=photos,
        excluded=excluded,
        splits=splits,
        stats=stats,
        manifest=manifest_path,
        report_json=out / REPORT_JSON,
        report_png=out / REPORT_PNG if chart else None,
        seconds=time.monotonic() - started,
        report=report,
    )


def summary_text(result: PrepareResult) -> str:
    """What a person reads after a run: per-split counts, exclusions, what was reused."""
    report = result.report
    lines = [f"prepared {report['photos']} photos in {result.out_dir} ({result.seconds:.1f} s)"]
    lines.append("split        " + " ".join(f"{c:>6}" for c in CLASSES) + "   total")
    for split in SPLITS:
        row = report["counts"][split]
        lines.append(
            f"{split:12} "
            + " ".join(f"{row[str(c)]:>6}" for c in CLASSES)
            + f"  {report['totals'][split]:>6}"
        )
    src = report["source_images"]
    if src.get("width"):
        lines.append(
            f"source photos: width {src['width']['min']}-{src['width']['max']}, height "
            f"{src['height']['min']}-{src['height']['max']}, {src['total_bytes'] / 1e6:.1f} MB; "
            f"written: {report['written_images']['total_bytes'] / 1e6:.1f} MB"
        )
    lines.append(f"excluded: {len(result.excluded)} {report['excluded_by_reason'] or ''}")
    for x in result.excluded[:10]:
        lines.append(f"  {x.id}: {x.reason}")
    if len(result.excluded) > 10:
        lines.append(f"  ... {len(result.excluded) - 10} more in {result.report_json}")
    s = result.stats
    lines.append(
        f"fetched {s.fetched_images} images + {s.fetched_metadata} metadata, reused "
        f"{s.reused_images} images, re-fetched {s.refetched_damaged} damaged, retries {s.retries}; "
        f"wrote {s.written}, kept {s.kept}, removed {s.removed_stale} stale"
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------- plan -> parts


@dataclass
class PlanResult:
    """A plan written as parts, ready to process here or in a Processing job."""

    out_dir: Path
    parts: list[Path]
    entries: int
    settings: dict[str, Any]
    scan: Any = None


def select_labelled(
    source: PhotoSource,
    out_dir: Path,
    cache: Cache,
    *,
    file_list: str | Path | dict[int, list[str]] | None = None,
    max_per_count: int | None = None,
    depth: int = 3,
    workers: int = 32,
    progress: bool = True,
) -> tuple[list[PlannedId], Any]:
    """Ids with counts: from a file list (its claimed counts, checked when fetched), or from
    the full partitioned metadata scan (every count read; ``max_per_count`` optional)."""
    if file_list is not None:
        listing = file_list if isinstance(file_list, dict) else read_file_list(file_list)
        chosen = candidates_from_file_list(listing, max_per_count)
        return [PlannedId(c.id, c.listed) for c in chosen if c.listed is not None], None
    scan = scan_metadata(
        source, Fetcher(source, cache, Stats()), cache.root, depth=depth, workers=workers,
        progress=progress,
    )  # fmt: skip
    return select_by_count(scan.counts, max_per_count), scan


def plan(
    source: PhotoSource,
    out_dir: str | Path,
    *,
    parts: int,
    file_list: str | Path | dict[int, list[str]] | None = None,
    max_per_count: int | None = None,
    cache_dir: str | Path | None = None,
    seed: int = 42,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    depth: int = 3,
    workers: int = 32,
    progress: bool = True,
) -> PlanResult:
    """Select ids (file list or full scan), split them seeded, write ``plan/part-*.jsonl``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache = _cache(out, cache_dir)
    items, scan = select_labelled(
        source, out, cache, file_list=file_list, max_per_count=max_per_count, depth=depth,
        workers=workers, progress=progress,
    )  # fmt: skip
    if not items:
        raise PrepareError("no ids selected: the file list or the scan found nothing")
    entries = plan_entries(items, fractions, seed)
    settings = {
        "seed": seed,
        "fractions": list(fractions),
        "max_per_count": max_per_count,
        "selection": "file_list" if file_list is not None else "full_scan",
    }
    paths = _write_plan(out, entries, parts, source, settings)
    return PlanResult(out, paths, len(entries), {**settings, "parts": len(paths)}, scan)


def _write_plan(
    out: Path, entries: list[dict[str, Any]], parts: int, source: PhotoSource, settings: dict
) -> list[Path]:
    """``plan/part-*.jsonl`` and ``plan/settings.json`` (what ``assemble`` reads back)."""
    paths = write_plan(out, split_parts(entries, parts))
    plan_settings = {"source": source.description, **settings, "parts": len(paths)}
    atomic_write_json(out / PLAN_DIR / PLAN_SETTINGS, plan_settings)
    log.info("plan: %d ids in %d parts under %s", len(entries), len(paths), out / PLAN_DIR)
    return paths


def _process_and_assemble(
    source: PhotoSource,
    out: Path,
    cache: Cache,
    parts: list[Path],
    settings: dict[str, Any],
    stats: Stats,
    *,
    chart: bool,
    excluded_before: list[Excluded] | tuple[()] = (),
    **options: Any,
) -> tuple[Path, dict[str, Any]]:
    """Every plan part (``process_part`` with ``options``), the manifest, and no stale file."""
    for path in parts:
        process_part(path, source, out, cache, stats=stats, **options)
    manifest, report = assemble(out, source.description, settings, chart, excluded_before)
    remove_unlisted(out, set(read_manifest_entries(out)), stats)
    return manifest, report


def prepare_parts(
    source: PhotoSource,
    out_dir: str | Path,
    *,
    parts: int = 4,
    layout: str = "shards",
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    with_metadata: bool = True,
    resize: int | None = None,
    depth: int = 3,
    workers: int = 16,
    progress: bool = True,
    chart: bool = True,
    **selection: Unpack[Selection],
) -> tuple[Path, dict[str, Any]]:
    """The Processing job's path, run in-process: plan, every part, then the manifest.

    Returns the manifest's path and the report; ends with the same files a Processing job
    and ``assemble`` leave (channels under ``<out>/<split>/``, ``manifest.json``, report).
    """
    _check_resize(resize)
    result = plan(
        source, out_dir, parts=parts, depth=depth, workers=workers, progress=progress, **selection
    )
    settings = {**result.settings, "resize": resize, "layout": layout}
    if layout == "shards":
        settings["shard_bytes"] = shard_bytes
    cache = _cache(result.out_dir, selection.get("cache_dir"))
    return _process_and_assemble(
        source, result.out_dir, cache, result.parts, settings, Stats(), layout=layout,
        resize=resize, shard_bytes=shard_bytes, with_metadata=with_metadata,
        seed=result.settings["seed"], workers=workers, progress=progress, chart=chart,
    )  # fmt: skip
