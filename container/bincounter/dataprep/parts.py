"""The plan as manifest parts, and the final manifest assembled from what each part produced.

To spread the heavy work (download, verify, resize, pack) over the N instances of a SageMaker
Processing job, the seeded stratified split is decided first, on the ids and counts the scan
found, and written as ``plan/part-NNNNN.jsonl`` files. The job's input is that prefix with
``ShardedByS3Key``, so SageMaker hands each instance its own parts; run locally, every part is
processed in-process by the same code. Parts are dealt round-robin from the plan sorted by
split, count and id, so each holds the same mix of splits and counts and instances finish
together. Every processed part leaves a fragment (``_parts/part-NNNNN.json``: its photos,
shards and exclusions); ``assemble`` turns the fragments into the one ``manifest.json`` and
report the folder layout also ends with.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import PrepareError
from ..files import atomic_write_bytes, atomic_write_json
from ..ids import ID_RULE, is_photo_id
from .layout import SPLITS, stratified_split, write_manifest
from .records import Excluded, PlannedId, VerifiedPhoto
from .report import build_report, write_report

PLAN_DIR = "plan"
#: The plan's seed, shares and selection, read back when the manifest is assembled.
PLAN_SETTINGS = "settings.json"
FRAGMENTS_DIR = "_parts"


def part_name(index: int) -> str:
    return f"part-{index:05d}"


def plan_entries(
    items: Iterable[PlannedId], fractions: tuple[float, float, float], seed: int
) -> list[dict[str, Any]]:
    """``{"id", "count", "split"}`` per id: the seeded stratified split of ``prepare``."""
    return split_entries(stratified_split(list(items), fractions, seed))


def split_entries(
    splits: Mapping[str, Sequence[PlannedId | VerifiedPhoto]],
) -> list[dict[str, Any]]:
    """A split as plan entries, in split order, then as the split sorted them."""
    return [{"id": x.id, "count": x.count, "split": s} for s in SPLITS for x in splits[s]]


def split_parts(entries: Sequence[dict[str, Any]], n_parts: int) -> list[list[dict[str, Any]]]:
    """Deal entries round-robin into ``n_parts`` (fewer if there are fewer entries).

    Sorted by (split, count, id) first, so every part gets its share of each split and count
    and the result depends only on the entries, not their order.
    """
    if n_parts < 1:
        raise PrepareError(f"parts={n_parts} must be >= 1")
    ordered = sorted(entries, key=lambda e: (SPLITS.index(e["split"]), e["count"], e["id"]))
    n = max(1, min(n_parts, len(ordered)))
    return [ordered[i::n] for i in range(n)]


def write_plan(out_dir: Path, parts: list[list[dict[str, Any]]]) -> list[Path]:
    """``<out_dir>/plan/part-NNNNN.jsonl`` (stale parts of an earlier plan removed)."""
    folder = Path(out_dir) / PLAN_DIR
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, part in enumerate(parts):
        path = folder / f"{part_name(i)}.jsonl"
        atomic_write_bytes(path, "".join(json.dumps(e) + "\n" for e in part).encode(), False)
        paths.append(path)
    for old in folder.glob("part-*.jsonl"):
        if old not in paths:
            old.unlink()
    return paths


def read_part(path: Path) -> list[dict[str, Any]]:
    """Entries of one plan part; a malformed line, or an id that is not a photo id
    (``bincounter.ids``), names the file and line."""
    entries = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            entries.append(
                {"id": str(entry["id"]), "count": int(entry["count"]), "split": entry["split"]}
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise PrepareError(f"plan part {path} line {n} is malformed: {exc}") from None
        if entries[-1]["split"] not in SPLITS:
            raise PrepareError(f"plan part {path} line {n}: unknown split {entry['split']!r}")
        if not is_photo_id(entry["id"]):
            # a tampered part: the id would become paths outside the source and output
            raise PrepareError(
                f"plan part {path} line {n}: id {entry['id']!r} is not a photo id ({ID_RULE})"
            )
    return entries


def write_fragment(out_dir: Path, part: str, fragment: dict[str, Any]) -> Path:
    path = Path(out_dir) / FRAGMENTS_DIR / f"{part}.json"
    atomic_write_json(path, {"part": part, **fragment}, indent=0)
    return path


def read_fragments(out_dir: Path) -> list[dict[str, Any]]:
    """The processed parts' fragments; when ``out_dir`` holds the plan, only its parts' (a
    fragment left by an earlier plan with more parts is not this run's)."""
    folder = Path(out_dir) / FRAGMENTS_DIR
    planned = {p.stem for p in (Path(out_dir) / PLAN_DIR).glob("part-*.jsonl")}
    paths = [p for p in sorted(folder.glob("part-*.json")) if not planned or p.stem in planned]
    return [json.loads(p.read_text()) for p in paths]


def assemble(
    out_dir: Path,
    source: str,
    settings: dict[str, Any],
    chart: bool = True,
    excluded_before: Sequence[Excluded] = (),
) -> tuple[Path, dict[str, Any]]:
    """``manifest.json`` and the report from every part's fragment in ``out_dir``.

    ``excluded_before``: ids dropped before the plan was made (a local run verifies before it splits),
    listed ahead of those the parts dropped.
    """
    fragments = read_fragments(out_dir)
    if not fragments:
        raise PrepareError(f"no processed parts under {Path(out_dir) / FRAGMENTS_DIR}")
    photos = sorted(
        (p for f in fragments for p in f["photos"]), key=lambda e: (e["split"], e["count"], e["id"])
    )
    shards = sorted((s for f in fragments for s in f.get("shards", [])), key=lambda s: s["path"])
    excluded = [*excluded_before, *(Excluded(**x) for f in fragments for x in f["excluded"])]
    seen: set[str] = set()
    for photo in photos:
        if photo["id"] in seen:
            raise PrepareError(f"id {photo['id']} was processed by two parts: plan parts overlap")
        seen.add(photo["id"])
    path = write_manifest(Path(out_dir), source, settings, photos, shards, excluded, len(fragments))
    report = build_report(photos, excluded, source, settings)
    if shards:
        report["shards"] = {
            s: {
                "files": sum(x["split"] == s for x in shards),
                "bytes": sum(x["bytes"] for x in shards if x["split"] == s),
            }
            for s in SPLITS
        }
    write_report(Path(out_dir), report, chart)
    return path, report
