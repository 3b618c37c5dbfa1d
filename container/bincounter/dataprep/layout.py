"""Split verified photos with a seed and lay them out as the channels the training container reads.

The container reads ``<channel>/<count>/<id>.jpg``, so that is what this writes, one folder per
split (``train``, ``validation``, ``test``: separate channels, so a test photo can never reach
training). The split is stratified per count and depends only on the set of ids and the seed,
not on download order, so a rerun or another machine gets the same split. The manifest records
every written file with its split, count, sizes and SHA-256; a rerun keeps a file the manifest
says it wrote identically, rewrites what changed and removes what is no longer selected.
"""

from __future__ import annotations

import io
import json
import random
import shutil
import threading
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..files import atomic_path, atomic_write_bytes, atomic_write_json, sha256_bytes, sha256_file
from .pool import parallel
from .records import Excluded, Photo, PrepareError, Stats

SPLITS = ("train", "validation", "test")
LAYOUT = "<split>/<count>/<id>.jpg"
MANIFEST = "manifest.json"
JPEG_QUALITY = 90


def stratified_split(
    photos: Iterable[Photo], fractions: tuple[float, float, float], seed: int
) -> dict[str, list[Photo]]:
    """Seeded split per count, so each split keeps the class balance.

    Ids are sorted before shuffling, so the split depends only on the set of ids and the seed,
    not on download order. Each count gives at least one photo to validation and test when it
    has three or more photos.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise PrepareError(
            f"split fractions {fractions} must be three non-negative shares summing to 1"
        )
    by_count: dict[int, list[Photo]] = defaultdict(list)
    for photo in photos:
        by_count[photo.count].append(photo)
    rng = random.Random(seed)
    out: dict[str, list[Photo]] = {s: [] for s in SPLITS}
    for count in sorted(by_count):
        group = sorted(by_count[count], key=lambda p: p.id)
        rng.shuffle(group)
        n = len(group)
        n_val = round(n * fractions[1])
        n_test = round(n * fractions[2])
        if n >= 3:
            n_val = max(n_val, 1) if fractions[1] > 0 else 0
            n_test = max(n_test, 1) if fractions[2] > 0 else 0
        n_train = n - n_val - n_test
        out["train"] += group[:n_train]
        out["validation"] += group[n_train : n_train + n_val]
        out["test"] += group[n_train + n_val :]
    for split in SPLITS:
        out[split].sort(key=lambda p: (p.count, p.id))
    return out


def resized_jpeg(path: Path, resize: int) -> tuple[bytes, int, int]:
    """The photo upright, longer side at most ``resize`` (never enlarged), as JPEG."""
    from PIL import Image

    from ..imaging import load_image

    image = load_image(path, resize)  # draft-mode decode: fast for a big shrink
    if max(image.size) > resize:
        image.thumbnail((resize, resize), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return buffer.getvalue(), image.size[0], image.size[1]


def photo_entry(
    photo: Photo,
    split: str,
    sha256: str,
    size: int,
    width: int,
    height: int,
    resize: int | None,
) -> dict[str, Any]:
    """A photo's manifest record, as written (bytes, checksum, size) and as fetched (source_*)."""
    return {
        "id": photo.id,
        "count": photo.count,
        "split": split,
        "sha256": sha256,
        "bytes": size,
        "width": width,
        "height": height,
        "source_sha256": photo.sha256,
        "source_bytes": photo.bytes,
        "source_width": photo.width,
        "source_height": photo.height,
        "resize": resize,
    }


def write_layout(
    out_dir: Path,
    splits: dict[str, list[Photo]],
    resize: int | None,
    previous: dict[str, dict[str, Any]],
    stats: Stats,
    workers: int,
    progress: bool,
) -> list[dict[str, Any]]:
    """Write ``<split>/<count>/<id>.jpg``; reuse files a previous run wrote identically."""
    jobs = [(split, photo) for split in SPLITS for photo in splits[split]]
    lock = threading.Lock()

    def write(job: tuple[str, Photo]) -> dict[str, Any]:
        split, photo = job
        rel = f"{split}/{photo.count}/{photo.id}.jpg"
        target = out_dir / rel
        old = previous.get(rel)
        if (
            old
            and old.get("source_sha256") == photo.sha256
            and old.get("resize") == resize
            and target.is_file()
            and target.stat().st_size == old.get("bytes")
            and sha256_file(target) == old.get("sha256")
        ):
            with lock:
                stats.kept += 1
            return old
        if resize:
            data, width, height = resized_jpeg(photo.path, resize)
            atomic_write_bytes(target, data, fsync=False)
            digest, size = sha256_bytes(data), len(data)
        else:
            with atomic_path(target) as tmp:
                shutil.copyfile(photo.path, tmp)
            digest, size, width, height = photo.sha256, photo.bytes, photo.width, photo.height
        with lock:
            stats.written += 1
        return {"path": rel, **photo_entry(photo, split, digest, size, width, height, resize)}

    entries = parallel(write, jobs, workers, "write", progress)
    wanted = {e["path"] for e in entries}
    for split in SPLITS:
        for path in (out_dir / split).rglob("*") if (out_dir / split).is_dir() else []:
            if path.is_file() and path.relative_to(out_dir).as_posix() not in wanted:
                path.unlink()
                stats.removed_stale += 1
    return entries


def read_manifest_entries(out_dir: Path) -> dict[str, dict[str, Any]]:
    """The files a previous run's manifest lists, by relative path; empty when there is none."""
    manifest_path = out_dir / MANIFEST
    if not manifest_path.exists():
        return {}
    try:
        return {e["path"]: e for e in json.loads(manifest_path.read_text())["files"]}
    except (ValueError, KeyError, TypeError):
        return {}


def write_manifest(
    out_dir: Path,
    source: str,
    settings: dict[str, Any],
    entries: list[dict[str, Any]],
    excluded: list[Excluded],
) -> Path:
    """``<out_dir>/manifest.json``: every written file, the settings and the excluded ids."""
    manifest_path = out_dir / MANIFEST
    manifest = {
        "version": 1,
        "source": source,
        "layout": LAYOUT,
        "settings": settings,
        "files": entries,
        "excluded": [asdict(x) for x in excluded],
    }
    atomic_write_json(manifest_path, manifest, indent=1)  # thousands of entries: keep it compact
    return manifest_path
