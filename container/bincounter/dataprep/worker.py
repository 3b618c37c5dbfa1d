"""The heavy part of preparation, one plan part at a time: fetch, verify, resize, write or pack.

This is what each instance of the SageMaker Processing job runs (``bincounter process`` in the
image, on the parts ``ShardedByS3Key`` gave it under ``/opt/ml/processing/input/plan``) and
what a local run calls in-process for every part: the same function either way, so the two
paths cannot drift. (The launch side of that job is ``bincounter.aws.processing``.) A part
writes only files named after itself (``<split>/<part>-NNNNNN.tar`` or its own photos) and one
fragment, so instances never write the same key; a part whose fragment matches its plan and
whose files are all there is skipped, which makes a rerun resume. Photos are shuffled within a
part (seeded) before packing: the plan is sorted by count, and a shard of one count would
defeat the reader's shuffle buffer.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .. import shards as tar_shards
from ..errors import PrepareError
from ..paths import base_dir
from .fetch import Cache, Fetcher
from .layout import LAYOUTS, SPLITS, write_part
from .parts import FRAGMENTS_DIR, read_part, write_fragment
from .pool import parallel
from .records import Candidate, Excluded, Stats, VerifiedPhoto
from .sources import PhotoSource, open_source

log = logging.getLogger(__name__)


def processing_dir() -> Path:
    """``/opt/ml/processing`` (relocated with ``SAGEMAKER_BASE_DIR``, like the training tree)."""
    return base_dir(os.environ) / "processing"


def _done_fragment(
    out_dir: Path, part: str, entries: list[dict[str, Any]], layout: str, resize: int | None
) -> dict[str, Any] | None:
    """The part's fragment when it covers exactly these plan entries at these settings and
    every file it lists is on disk at its size; None when the part must be processed."""
    try:
        fragment = json.loads((out_dir / FRAGMENTS_DIR / f"{part}.json").read_text())
        planned = {e["id"]: e["split"] for e in entries}
        photos = fragment["photos"]
        done = {(p["id"], p["split"]) for p in photos if p["resize"] == resize}
        done |= {(x["id"], planned.get(x["id"])) for x in fragment["excluded"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if fragment.get("layout") != layout or done != set(planned.items()):
        return None
    files = fragment.get("shards") or photos
    for f in files:
        path = out_dir / f["path"]
        if not path.is_file() or path.stat().st_size != f["bytes"]:
            return None
    return fragment


def process_part(
    plan_path: Path,
    source: PhotoSource,
    out_dir: Path,
    cache: Cache,
    *,
    layout: str = "shards",
    resize: int | None = None,
    shard_bytes: int = tar_shards.DEFAULT_SHARD_BYTES,
    with_metadata: bool = True,
    seed: int = 42,
    workers: int = 16,
    progress: bool = False,
    stats: Stats | None = None,
) -> Path:
    """Process one plan part into ``out_dir``; returns its fragment's path.

    ``stats`` (when given) gains what was written and kept; fetching counts only in the
    fragment's own stats.
    """
    if layout not in LAYOUTS:
        raise PrepareError(f"layout {layout!r} is not one of {LAYOUTS}")
    out_dir = Path(out_dir)
    part = Path(plan_path).stem
    entries = read_part(Path(plan_path))
    done = _done_fragment(out_dir, part, entries, layout, resize)
    if done is not None:
        log.info("%s: already processed, kept", part)
        if stats is not None:
            stats.kept += len(done["photos"])
        return out_dir / FRAGMENTS_DIR / f"{part}.json"
    part_stats = Stats()
    fetcher = Fetcher(source, cache, part_stats)
    candidates = [Candidate(e["id"], e["count"]) for e in entries]
    results = parallel(fetcher.process, candidates, workers, part, progress)
    excluded = [r for r in results if isinstance(r, Excluded)]
    planned = {e["id"]: e["split"] for e in entries}
    by_split: dict[str, list[VerifiedPhoto]] = {s: [] for s in SPLITS}
    for r in results:
        if isinstance(r, VerifiedPhoto):
            by_split[planned[r.id]].append(r)
    rng = random.Random(f"{seed}:{part}")
    for split in SPLITS:
        rng.shuffle(by_split[split])

    def metadata(image_id: str) -> bytes:
        return (cache.metadata / f"{image_id}.json").read_bytes()

    photos, shards = write_part(
        out_dir, part, by_split, part_stats, layout=layout, resize=resize,
        shard_bytes=shard_bytes, metadata=metadata if with_metadata else None, workers=workers,
    )  # fmt: skip
    if stats is not None:
        stats.written += part_stats.written
        stats.kept += part_stats.kept
    fragment = {
        "layout": layout,
        "photos": photos,
        "shards": shards,
        "excluded": [asdict(x) for x in excluded],
        "stats": asdict(part_stats),
    }
    path = write_fragment(out_dir, part, fragment)
    log.info("%s: %d photos, %d excluded, %d shards", part, len(photos), len(excluded), len(shards))
    return path


# --------------------------------------------------------------------------- the job's entry


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bincounter process",
        description="SageMaker Processing entry: process the plan parts under "
        "/opt/ml/processing/input/plan into /opt/ml/processing/output/data.",
    )
    p.add_argument("--source-bucket", default=None, help="ABID bucket (default aft-vbi-pds)")
    p.add_argument("--source-dir", help="a folder in ABID layout instead of a bucket")
    p.add_argument("--source-endpoint-url", help="S3 endpoint for the source bucket")
    p.add_argument("--signed", action="store_true", help="sign source requests")
    p.add_argument("--images-dir", default="bin-images")
    p.add_argument("--metadata-dir", default="metadata")
    p.add_argument("--layout", choices=LAYOUTS, default="shards")
    p.add_argument("--shard-size-mb", type=float, default=tar_shards.DEFAULT_SHARD_BYTES / 2**20)
    p.add_argument("--no-metadata", action="store_true", help="no <id>.json in shards")
    p.add_argument("--resize", type=int, help="shrink so the longer side is <= N pixels")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--workers", type=int, default=32)
    p.add_argument("--input", help="plan folder (default <processing>/input/plan)")
    p.add_argument("--output", help="output folder (default <processing>/output/data)")
    return p


def run_processing_job(argv: Sequence[str] | None = None) -> int:
    """Every plan part this instance was given, then exit 0; a part that fails stops the job
    (SageMaker marks it Failed and the rerun resumes from the fragments already uploaded)."""
    args = build_parser().parse_args(argv)
    root = processing_dir()
    plan = Path(args.input) if args.input else root / "input" / "plan"
    out = Path(args.output) if args.output else root / "output" / "data"
    parts = sorted(plan.rglob("part-*.jsonl"))
    if not parts:
        raise PrepareError(f"no plan parts (part-*.jsonl) under {plan}")
    source = open_source(
        source_dir=args.source_dir, bucket=args.source_bucket, images_dir=args.images_dir,
        metadata_dir=args.metadata_dir, signed=args.signed,
        endpoint_url=args.source_endpoint_url, workers=args.workers,
    )  # fmt: skip
    cache = Cache(root / "work" / "cache")
    log.info("processing %d plan parts from %s into %s", len(parts), source.description, out)
    for path in parts:
        process_part(
            path, source, out, cache, layout=args.layout, resize=args.resize,
            shard_bytes=int(args.shard_size_mb * 2**20), with_metadata=not args.no_metadata,
            seed=args.seed, workers=args.workers,
        )  # fmt: skip
    return 0
