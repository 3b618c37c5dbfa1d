"""Split photos with a seed, write them as the channels the training container reads, and the
manifest that lists them: the one writer and the one manifest builder of every preparation path.

The container reads ``<channel>/<count>/<id>.jpg`` or WebDataset tar shards, so that is what
``write_part`` writes, one folder per split (``train``, ``validation``, ``test``: separate
channels, so a test photo can never reach training). The split is stratified per count and
depends only on the set of ids and the seed, not on download order, so a rerun or another
machine gets the same split. The manifest records every written file with its split, count,
sizes and SHA-256; a rerun keeps a photo the manifest says it wrote identically, rewrites what
changed, and ``remove_unlisted`` removes what is no longer selected.
"""

from __future__ import annotations

import io
import json
import random
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..errors import PrepareError
from ..files import atomic_write_bytes, atomic_write_json, sha256_bytes, sha256_file
from ..shards import ShardWriter
from .records import Excluded, Stats, VerifiedPhoto

SPLITS = ("train", "validation", "test")
LAYOUTS = ("folders", "shards")
FOLDER_LAYOUT = "<split>/<count>/<id>.jpg"
SHARD_LAYOUT = "<split>/<part>-NNNNNN.tar (WebDataset: <id>.jpg, <id>.cls[, <id>.json])"
MANIFEST = "manifest.json"
JPEG_QUALITY = 90
#: Photos resized/read at once when writing: bounds memory whatever the part's size.
CHUNK = 256


def stratified_split(
    photos: Iterable[VerifiedPhoto], fractions: tuple[float, float, float], seed: int
) -> dict[str, list[VerifiedPhoto]]:
    """Seeded split per count, so each split keeps the class balance.

    Ids are sorted before shuffling, so the split depends only on the set of ids and the seed,
    not on download order. Each count gives at least one photo to validation and test when it
    has three or more photos.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise PrepareError(
            f"split fractions {fractions} must be three non-negative shares summing to 1"
        )
    by_count: dict[int, list[VerifiedPhoto]] = defaultdict(list)
    for photo in photos:
        by_count[photo.count].append(photo)
    rng = random.Random(seed)
    out: dict[str, list[VerifiedPhoto]] = {s: [] for s in SPLITS}
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
    photo: VerifiedPhoto,
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


def _reusable(
    old: dict[str, Any] | None, photo: VerifiedPhoto, resize: int | None, target: Path
) -> bool:
    """A previous run wrote this photo at this size and the file still has those bytes."""
    return bool(
        old
        and old.get("source_sha256") == photo.sha256
        and old.get("resize") == resize
        and target.is_file()
        and target.stat().st_size == old.get("bytes")
        and sha256_file(target) == old.get("sha256")
    )


class _FolderWriter:
    """``<split>/<count>/<id>.jpg``; a photo a previous run wrote identically is kept as is."""

    def __init__(self, out_dir: Path, previous: dict[str, dict[str, Any]], resize: int | None):
        self.out_dir, self.previous, self.resize = out_dir, previous, resize

    def kept(self, split: str, photo: VerifiedPhoto) -> dict[str, Any] | None:
        rel = f"{split}/{photo.count}/{photo.id}.jpg"
        old = self.previous.get(rel)
        if old is None or not _reusable(old, photo, self.resize, self.out_dir / rel):
            return None
        entry = photo_entry(
            photo, split, old["sha256"], old["bytes"], old["width"], old["height"], self.resize
        )
        return {**entry, "path": rel}

    def write(self, split: str, photo: VerifiedPhoto, data: bytes, entry: dict[str, Any]) -> None:
        entry["path"] = f"{split}/{photo.count}/{photo.id}.jpg"
        atomic_write_bytes(self.out_dir / entry["path"], data, fsync=False)


def write_part(
    out_dir: Path,
    part: str,
    by_split: dict[str, list[VerifiedPhoto]],
    stats: Stats,
    *,
    layout: str,
    resize: int | None,
    shard_bytes: int,
    metadata: Callable[[str], bytes] | None,
    workers: int,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Write one part's photos as folders or as ``<split>/<part>-NNNNNN.tar`` shards.

    Returns the photos' manifest entries and the shards' (empty for folders). Shards carry
    each photo's metadata when ``metadata`` gives it. Folders reuse what the manifest already
    in ``out_dir`` says was written identically.
    """
    if layout not in LAYOUTS:
        raise PrepareError(f"layout {layout!r} is not one of {LAYOUTS}")
    folders = _FolderWriter(out_dir, read_manifest_entries(out_dir), resize)

    def encoded(photo: VerifiedPhoto) -> tuple[bytes, int, int]:
        if resize:
            return resized_jpeg(photo.path, resize)
        return photo.path.read_bytes(), photo.width, photo.height

    photos: list[dict[str, Any]] = []
    shards: list[dict[str, Any]] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for split in SPLITS:
            group = by_split[split]
            if layout == "folders":
                kept = [(p, folders.kept(split, p)) for p in group]
                photos += [entry for _, entry in kept if entry is not None]
                stats.kept += sum(entry is not None for _, entry in kept)
                group = [p for p, entry in kept if entry is None]
            sharded = layout == "shards" and group
            writer = ShardWriter(out_dir / split, part, shard_bytes) if sharded else None
            with writer or nullcontext():  # an error leaves no temporary shard behind
                for start in range(0, len(group), CHUNK):
                    chunk = group[start : start + CHUNK]
                    for photo, (data, width, height) in zip(
                        chunk, pool.map(encoded, chunk), strict=True
                    ):
                        entry = photo_entry(
                            photo, split, sha256_bytes(data), len(data), width, height, resize
                        )
                        if writer is None:
                            folders.write(split, photo, data, entry)
                        else:
                            meta = metadata and metadata(photo.id)
                            writer.write(photo.id, data, photo.count, meta)
                            entry["shard"] = f"{split}/{writer.shards[-1].name}"
                        stats.written += 1
                        photos.append(entry)
            if writer is not None:
                shards += [
                    {"path": f"{split}/{info.name}", "split": split, **info.as_json()}
                    for info in writer.shards
                ]
    return photos, shards


def remove_unlisted(out_dir: Path, wanted: set[str], stats: Stats) -> None:
    """Remove files under the split folders that the manifest no longer lists."""
    for split in SPLITS:
        for path in (out_dir / split).rglob("*") if (out_dir / split).is_dir() else []:
            if path.is_file() and path.relative_to(out_dir).as_posix() not in wanted:
                path.unlink()
                stats.removed_stale += 1


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
    photos: list[dict[str, Any]],
    shards: list[dict[str, Any]],
    excluded: list[Excluded],
    parts: int,
) -> Path:
    """``<out_dir>/manifest.json``: every written file, the settings and the excluded ids.

    Shards: ``files`` lists the shards (what is uploaded and checksummed) and ``photos`` every
    photo with its shard; folders: ``files`` lists the photos.
    """
    manifest: dict[str, Any] = {
        "version": 1,
        "source": source,
        "layout": SHARD_LAYOUT if shards else FOLDER_LAYOUT,
        "settings": settings,
        "files": shards or photos,
        "excluded": [asdict(x) for x in excluded],
        "parts": parts,
    }
    if shards:
        manifest["photos"] = photos
    path = out_dir / MANIFEST
    atomic_write_json(path, manifest, indent=1)  # thousands of entries: keep it compact
    return path
