"""The heavy part of preparation, one plan part at a time: fetch, verify, resize, write or pack.

This is what each instance of the SageMaker Processing job runs (``bincounter process`` in the
image, on the parts ``ShardedByS3Key`` gave it under ``/opt/ml/processing/input/plan``) and
what a local run calls in-process for every part: the same function either way, so the two
paths cannot drift. A part writes only files named after itself (``<split>/<part>-NNNNNN.tar``
or its own photos) and one fragment, so instances never write the same key; a part whose
fragment and files are already there is skipped, which makes a rerun resume. Photos are
shuffled within a part (seeded) before packing: the plan is sorted by count, and a shard of one
count would defeat the reader's shuffle buffer.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .. import shards as tar_shards
from ..files import atomic_write_bytes, sha256_bytes
from ..paths import base_dir
from .fetch import Cache, Fetcher
from .layout import SPLITS, photo_entry, resized_jpeg
from .parts import FRAGMENTS_DIR, read_part, write_fragment
from .pool import parallel
from .records import Candidate, Excluded, Photo, PrepareError, Stats
from .sources import Source

log = logging.getLogger(__name__)

LAYOUTS = ("folders", "shards")
#: Photos resized/read at once when packing: bounds memory whatever the part's size.
CHUNK = 256


def processing_dir() -> Path:
    """``/opt/ml/processing`` (relocated with ``SAGEMAKER_BASE_DIR``, like the training tree)."""
    return base_dir(os.environ) / "processing"


def _fragment_is_complete(out_dir: Path, part: str) -> bool:
    import json

    path = out_dir / FRAGMENTS_DIR / f"{part}.json"
    try:
        fragment = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    files = fragment.get("shards") or fragment.get("photos") or []
    return all(
        (out_dir / f["path"]).is_file() and (out_dir / f["path"]).stat().st_size == f["bytes"]
        for f in files
    )


def process_part(
    plan_path: Path,
    source: Source,
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
) -> Path:
    """Process one plan part into ``out_dir``; returns its fragment's path."""
    if layout not in LAYOUTS:
        raise PrepareError(f"layout {layout!r} is not one of {LAYOUTS}")
    out_dir = Path(out_dir)
    part = Path(plan_path).stem
    if _fragment_is_complete(out_dir, part):
        log.info("%s: already processed, kept", part)
        return out_dir / FRAGMENTS_DIR / f"{part}.json"
    entries = read_part(Path(plan_path))
    stats = Stats()
    fetcher = Fetcher(source, cache, stats)
    candidates = [Candidate(e["id"], e["count"]) for e in entries]
    results = parallel(fetcher.process, candidates, workers, part, progress)
    excluded = [r for r in results if isinstance(r, Excluded)]
    planned = {e["id"]: e["split"] for e in entries}
    by_split: dict[str, list[Photo]] = {s: [] for s in SPLITS}
    for r in results:
        if isinstance(r, Photo):
            by_split[planned[r.id]].append(r)
    rng = random.Random(f"{seed}:{part}")
    for split in SPLITS:
        rng.shuffle(by_split[split])

    def encoded(photo: Photo) -> tuple[bytes, int, int]:
        if resize:
            return resized_jpeg(photo.path, resize)
        return photo.path.read_bytes(), photo.width, photo.height

    photos: list[dict[str, Any]] = []
    shards: list[dict[str, Any]] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for split in SPLITS:
            group = by_split[split]
            writer = (
                tar_shards.ShardWriter(out_dir / split, part, shard_bytes)
                if layout == "shards" and group
                else None
            )
            for start in range(0, len(group), CHUNK):
                chunk = group[start : start + CHUNK]
                for photo, (data, width, height) in zip(
                    chunk, pool.map(encoded, chunk), strict=True
                ):
                    entry = photo_entry(
                        photo, split, sha256_bytes(data), len(data), width, height, resize
                    )
                    if writer is not None:
                        metadata = None
                        if with_metadata:
                            metadata = (cache.metadata / f"{photo.id}.json").read_bytes()
                        writer.write(photo.id, data, photo.count, metadata)
                        entry["shard"] = f"{split}/{writer.shards[-1].name}"
                    else:
                        entry["path"] = f"{split}/{photo.count}/{photo.id}.jpg"
                        atomic_write_bytes(out_dir / entry["path"], data, fsync=False)
                    stats.written += 1
                    photos.append(entry)
            if writer is not None:
                for info in writer.close():
                    shards.append(
                        {"path": f"{split}/{info.name}", "split": split, **info.as_json()}
                    )
    fragment = {
        "layout": layout,
        "photos": photos,
        "shards": shards,
        "excluded": [asdict(x) for x in excluded],
        "stats": asdict(stats),
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


def make_source(args: argparse.Namespace) -> Source:
    from .sources import ABID_BUCKET, LocalSource, S3Source

    if args.source_dir:
        return LocalSource(args.source_dir, args.images_dir, args.metadata_dir)
    return S3Source(
        args.source_bucket or ABID_BUCKET,
        unsigned=not args.signed,
        endpoint_url=args.source_endpoint_url,
        max_connections=args.workers + 4,
        images_prefix=args.images_dir.strip("/") + "/",
        metadata_prefix=args.metadata_dir.strip("/") + "/",
    )


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
    source = make_source(args)
    cache = Cache(root / "work" / "cache")
    log.info("processing %d plan parts from %s into %s", len(parts), source.description, out)
    for path in parts:
        process_part(
            path,
            source,
            out,
            cache,
            layout=args.layout,
            resize=args.resize,
            shard_bytes=int(args.shard_size_mb * 2**20),
            with_metadata=not args.no_metadata,
            seed=args.seed,
            workers=args.workers,
        )
    return 0
