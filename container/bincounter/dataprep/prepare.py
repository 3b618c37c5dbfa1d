"""Data preparation: ABID photos -> verified, split, folder-per-count channels and a manifest.

Pipeline (``prepare``), each step written so that a second run redoes only what is missing:

1. **Select** ids: a capstone ``file_list.json`` (``{"1": ["data/metadata/<id>.json", ...]}``)
   or a scan of the source's ``metadata/`` for counts 1..5, up to N per count. Ids stay
   strings: ``00523`` and ``523`` are different photos.
2. **Fetch** ``metadata/<id>.json`` and ``bin-images/<id>.jpg`` into a cache folder, in
   parallel with retries, from the public bucket ``aft-vbi-pds`` (unsigned requests) or a local
   folder. A file already in the cache is not fetched again unless it is damaged.
3. **Verify** every JPEG by decoding it once with the same code the training container uses
   (``bincounter.imaging.load_image``), so a photo that passes here also passes in the job. A
   verified file's size and SHA-256 are appended to ``verified.jsonl``; on a later run a file
   with the same size and checksum is not decoded again, and one that differs (a run killed
   mid-write, a flipped byte) is fetched again.
4. **Exclude and report** what cannot be used: missing objects, corrupt photos, counts outside
   1..5, a file-list count that disagrees with the metadata. Nothing here raises for one bad
   photo; the report lists each with its reason.
5. **Split** with a seed, stratified by count, into separate ``train``, ``validation`` and
   ``test`` channels laid out ``<split>/<count>/<id>.jpg`` (what the training container reads),
   optionally shrinking every photo so its longer side is at most ``resize`` pixels.
6. **Manifest** (``manifest.json``: every file with split, count, SHA-256, sizes) and a **data
   report** (``report.json`` + ``report.png``).

Upload is in ``s3data.py``; this module never writes to S3.
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
import shutil
import statistics
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import CLASSES, abid
from ..abid import parse_expected_quantity
from ..errors import UserError
from ..files import atomic_write_bytes, atomic_write_json, sha256_bytes, sha256_file

log = logging.getLogger(__name__)

ABID_BUCKET = abid.BUCKET
ABID_REGION = "us-east-1"
SPLITS = ("train", "validation", "test")
MANIFEST = "manifest.json"
REPORT_JSON = "report.json"
REPORT_PNG = "report.png"
VERIFIED_LOG = "verified.jsonl"
JPEG_QUALITY = 90


class PrepareError(UserError):
    """The preparation cannot go on (bad file list, bad fractions, no usable photo)."""


class MissingObject(Exception):
    """The source has no object under this key (a 404, not a transient failure)."""


# --------------------------------------------------------------------------- sources


class Source:
    """Where photos and metadata come from. ``get`` raises ``MissingObject`` for a 404."""

    description = "?"
    images_prefix = abid.IMAGES_PREFIX
    metadata_prefix = abid.METADATA_PREFIX

    def get(self, key: str) -> bytes:
        raise NotImplementedError

    def list_metadata_ids(self) -> Iterator[str]:
        """Ids of every ``metadata/<id>.json``, in the source's listing order."""
        raise NotImplementedError

    def image_key(self, image_id: str) -> str:
        return f"{self.images_prefix}{image_id}.jpg"

    def metadata_key(self, image_id: str) -> str:
        return f"{self.metadata_prefix}{image_id}.json"


class S3Source(Source):
    """An S3 bucket in ABID's layout; by default the public ``aft-vbi-pds`` without signing.

    Unsigned requests need no AWS account at all. ``endpoint_url`` (or ``AWS_ENDPOINT_URL``,
    which boto3 reads itself) points it at another S3 API, such as a local moto server.
    """

    def __init__(
        self,
        bucket: str = ABID_BUCKET,
        *,
        region: str = ABID_REGION,
        unsigned: bool = True,
        endpoint_url: str | None = None,
        max_connections: int = 32,
        images_prefix: str = abid.IMAGES_PREFIX,
        metadata_prefix: str = abid.METADATA_PREFIX,
        client: Any = None,
    ) -> None:
        self.bucket = bucket
        self.images_prefix = images_prefix
        self.metadata_prefix = metadata_prefix
        self.description = f"s3://{bucket}"
        if client is None:
            import boto3
            from botocore import UNSIGNED
            from botocore.config import Config

            config = Config(
                signature_version=UNSIGNED if unsigned else None,
                retries={"max_attempts": 5, "mode": "standard"},
                max_pool_connections=max_connections,
            )
            client = boto3.client(
                "s3", region_name=region, endpoint_url=endpoint_url, config=config
            )
        self.client = client

    def get(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise MissingObject(f"s3://{self.bucket}/{key}") from None
            raise

    def list_metadata_ids(self) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.metadata_prefix):
            for obj in page.get("Contents", []):
                name = obj["Key"][len(self.metadata_prefix) :]
                if name.endswith(".json") and "/" not in name:
                    yield name[: -len(".json")]


class LocalSource(Source):
    """A local folder in ABID's layout (``bin-images/`` and ``metadata/`` by default)."""

    def __init__(
        self, root: str | Path, images_dir: str = "bin-images", metadata_dir: str = "metadata"
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise PrepareError(f"source folder {self.root} does not exist")
        self.images_prefix = f"{images_dir.strip('/')}/"
        self.metadata_prefix = f"{metadata_dir.strip('/')}/"
        self.description = str(self.root)

    def get(self, key: str) -> bytes:
        path = self.root / key
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise MissingObject(str(path)) from None

    def list_metadata_ids(self) -> Iterator[str]:
        folder = self.root / self.metadata_prefix
        if folder.is_dir():
            for path in sorted(folder.glob("*.json")):
                yield path.stem


# --------------------------------------------------------------------------- selection


@dataclass(frozen=True)
class Candidate:
    """An id to prepare; ``listed`` is the count a file list claims for it (None on a scan)."""

    id: str
    listed: int | None = None


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


# --------------------------------------------------------------------------- results


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


@dataclass
class PrepareResult:
    out_dir: Path
    photos: list[Photo]
    excluded: list[Excluded]
    splits: dict[str, list[Photo]]
    stats: Stats
    manifest: Path
    report_json: Path
    report_png: Path | None
    seconds: float = 0.0
    report: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- cache


class _Cache:
    """``<cache>/metadata/<id>.json``, ``<cache>/bin-images/<id>.jpg`` and the verified log."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.images = root / "bin-images"
        self.metadata = root / "metadata"
        self.images.mkdir(parents=True, exist_ok=True)
        self.metadata.mkdir(parents=True, exist_ok=True)
        self.log_path = root / VERIFIED_LOG
        self._lock = threading.Lock()
        self.verified: dict[str, dict[str, Any]] = {}
        if self.log_path.exists():
            for line in self.log_path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                    self.verified[str(entry["id"])] = entry
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by a killed run

    def record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.verified[entry["id"]] = entry
            with open(self.log_path, "a") as f:
                f.write(json.dumps(entry) + "\n")

    def forget(self, image_id: str) -> None:
        with self._lock:
            self.verified.pop(image_id, None)


# --------------------------------------------------------------------------- fetch + verify


def _verify_image(data: bytes) -> tuple[int, int]:
    """Decode fully with the training container's decoder; (width, height) or ImageError."""
    from ..imaging import load_image

    image = load_image(data)
    return image.size


_RETRY_CODES = {"Throttling", "ThrottlingException", "SlowDown", "RequestTimeout", "InternalError"}


def _transient(exc: Exception) -> bool:
    """Worth retrying: connection trouble, throttling, 5xx. Not: 403, 400 (they stay so)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return True  # no HTTP answer at all: a connection or read error
    code = response.get("Error", {}).get("Code", "")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return code in _RETRY_CODES or status >= 500


class _Fetcher:
    """Per-id work: metadata then image, from cache when valid, else from the source."""

    def __init__(self, source: Source, cache: _Cache, stats: Stats, attempts: int = 4) -> None:
        self.source = source
        self.cache = cache
        self.stats = stats
        self.attempts = attempts
        self._lock = threading.Lock()

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self.stats, name, getattr(self.stats, name) + n)

    def _download(self, key: str) -> bytes:
        delay = 0.5
        for attempt in range(1, self.attempts + 1):
            try:
                return self.source.get(key)
            except MissingObject:
                raise
            except Exception as exc:  # network, throttling, 5xx: retry with backoff
                if attempt == self.attempts or not _transient(exc):
                    raise
                self._count("retries")
                log.info("retrying %s after %s (attempt %d)", key, exc, attempt)
                time.sleep(delay * random.uniform(0.5, 1.5))
                delay *= 2
        raise AssertionError("unreachable")

    def metadata_count(self, image_id: str) -> int:
        """EXPECTED_QUANTITY, from the cached metadata when it parses, else fetched."""
        path = self.cache.metadata / f"{image_id}.json"
        if path.exists():
            try:
                count = parse_expected_quantity(path.read_bytes())
                self._count("reused_metadata")
                return count
            except (OSError, ValueError, KeyError, TypeError):
                pass  # damaged: fetch again
        data = self._download(self.source.metadata_key(image_id))
        self._count("fetched_metadata")
        count = parse_expected_quantity(data)  # ValueError etc. -> caller excludes
        atomic_write_bytes(path, data, fsync=False)
        return count

    def image(self, image_id: str, count: int) -> Photo:
        """A verified photo; raises MissingObject or ImageError (after one re-fetch)."""
        from ..imaging import ImageError

        path = self.cache.images / f"{image_id}.jpg"
        known = self.cache.verified.get(image_id)
        if path.exists():
            size = path.stat().st_size
            if known and known.get("bytes") == size and known.get("sha256") == sha256_file(path):
                self._count("reused_images")
                return Photo(
                    image_id, count, path, known["sha256"], size, known["width"], known["height"]
                )
            data = path.read_bytes()
            try:
                width, height = self._decode(data)
                self._count("reused_images")
                return self._record(image_id, count, path, data, width, height)
            except ImageError:
                self._count("refetched_damaged")
                self.cache.forget(image_id)
        data = self._download(self.source.image_key(image_id))
        self._count("fetched_images")
        try:
            width, height = self._decode(data)
        except ImageError:
            path.unlink(missing_ok=True)  # the next run tries the source again
            self.cache.forget(image_id)
            raise
        atomic_write_bytes(path, data, fsync=False)
        return self._record(image_id, count, path, data, width, height)

    def _decode(self, data: bytes) -> tuple[int, int]:
        """Verify by decoding; counted whether or not the bytes turn out to be a photo."""
        try:
            return _verify_image(data)
        finally:
            self._count("decoded")

    def _record(
        self, image_id: str, count: int, path: Path, data: bytes, width: int, height: int
    ) -> Photo:
        digest = sha256_bytes(data)
        self.cache.record(
            {"id": image_id, "sha256": digest, "bytes": len(data), "width": width, "height": height}
        )
        return Photo(image_id, count, path, digest, len(data), width, height)

    def process(self, candidate: Candidate) -> Photo | Excluded:
        """One id end to end; every failure becomes an ``Excluded`` with a reason."""
        from ..imaging import ImageError

        image_id = candidate.id
        try:
            count = self.metadata_count(image_id)
        except MissingObject as exc:
            return Excluded(image_id, f"metadata missing from source ({exc})", candidate.listed)
        except (ValueError, KeyError, TypeError) as exc:
            return Excluded(image_id, f"metadata unreadable: {exc}", candidate.listed)
        except Exception as exc:
            return Excluded(image_id, f"metadata download failed: {exc}", candidate.listed)
        if count not in CLASSES:
            return Excluded(image_id, f"count {count} outside 1..5", candidate.listed)
        if candidate.listed is not None and candidate.listed != count:
            return Excluded(
                image_id,
                f"file list says {candidate.listed} items, metadata says {count}",
                candidate.listed,
            )
        try:
            return self.image(image_id, count)
        except MissingObject as exc:
            return Excluded(image_id, f"image missing from source ({exc})", candidate.listed)
        except ImageError as exc:
            return Excluded(image_id, f"corrupt image: {exc.reason}", candidate.listed)
        except Exception as exc:
            return Excluded(image_id, f"image download failed: {exc}", candidate.listed)


def _parallel(
    fn: Callable[[Any], Any], items: list[Any], workers: int, desc: str, progress: bool
) -> list[Any]:
    from tqdm import tqdm

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(
            tqdm(
                pool.map(fn, items),
                total=len(items),
                desc=desc,
                unit="photo",
                disable=not progress,
                dynamic_ncols=True,
            )
        )


def scan_candidates(
    source: Source,
    fetcher: _Fetcher,
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


# --------------------------------------------------------------------------- split + layout


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


def _resized_jpeg(path: Path, resize: int) -> tuple[bytes, int, int]:
    """The photo upright, longer side at most ``resize`` (never enlarged), as JPEG."""
    from PIL import Image

    from ..imaging import load_image

    image = load_image(path, resize)  # draft-mode decode: fast for a big shrink
    if max(image.size) > resize:
        image.thumbnail((resize, resize), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return buffer.getvalue(), image.size[0], image.size[1]


def _write_layout(
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
            data, width, height = _resized_jpeg(photo.path, resize)
            atomic_write_bytes(target, data, fsync=False)
            digest, size = sha256_bytes(data), len(data)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.part")
            shutil.copyfile(photo.path, tmp)
            os.replace(tmp, target)
            digest, size, width, height = photo.sha256, photo.bytes, photo.width, photo.height
        with lock:
            stats.written += 1
        return {
            "path": rel,
            "id": photo.id,
            "count": photo.count,
            "split": split,
            "sha256": digest,
            "bytes": size,
            "width": width,
            "height": height,
            "source_sha256": photo.sha256,
            "source_bytes": photo.bytes,
            "source_width": photo.width,
            "source_height": photo.height,
            "resize": resize,
        }

    entries = _parallel(write, jobs, workers, "write", progress)
    wanted = {e["path"] for e in entries}
    for split in SPLITS:
        for path in (out_dir / split).rglob("*") if (out_dir / split).is_dir() else []:
            if path.is_file() and path.relative_to(out_dir).as_posix() not in wanted:
                path.unlink()
                stats.removed_stale += 1
    return entries


# --------------------------------------------------------------------------- report


def _size_summary(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
        "mean": round(statistics.fmean(values), 1),
    }


def build_report(
    entries: list[dict[str, Any]], excluded: list[Excluded], source: str, settings: dict[str, Any]
) -> dict[str, Any]:
    """Counts per split and count, image sizes before/after resizing, excluded files."""
    counts = {s: {str(c): 0 for c in CLASSES} for s in SPLITS}
    for e in entries:
        counts[e["split"]][str(e["count"])] += 1
    reasons = Counter(x.reason.split(" (")[0].split(":")[0] for x in excluded)
    return {
        "source": source,
        "settings": settings,
        "photos": len(entries),
        "counts": counts,
        "totals": {s: sum(counts[s].values()) for s in SPLITS},
        "per_count": {str(c): sum(counts[s][str(c)] for s in SPLITS) for c in CLASSES},
        "source_images": {
            "width": _size_summary([e["source_width"] for e in entries]),
            "height": _size_summary([e["source_height"] for e in entries]),
            "bytes": _size_summary([e["source_bytes"] for e in entries]),
            "total_bytes": sum(e["source_bytes"] for e in entries),
        },
        "written_images": {
            "width": _size_summary([e["width"] for e in entries]),
            "height": _size_summary([e["height"] for e in entries]),
            "bytes": _size_summary([e["bytes"] for e in entries]),
            "total_bytes": sum(e["bytes"] for e in entries),
        },
        "excluded": [asdict(x) for x in excluded],
        "excluded_by_reason": dict(reasons),
    }


def plot_report(report: dict[str, Any], path: Path) -> Path:
    """Grouped bar chart: photos per count, one bar per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    width = 0.27
    xs = list(range(len(CLASSES)))
    for i, split in enumerate(SPLITS):
        values = [report["counts"][split][str(c)] for c in CLASSES]
        bars = ax.bar([x + (i - 1) * width for x in xs], values, width, label=split)
        ax.bar_label(bars, fontsize=7)
    ax.set_xticks(xs, [str(c) for c in CLASSES])
    ax.set_xlabel("items in bin (EXPECTED_QUANTITY)")
    ax.set_ylabel("photos")
    n_excluded = len(report["excluded"])
    ax.set_title(f"{report['photos']} photos from {report['source']}; {n_excluded} excluded")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- entry point


def prepare(
    source: Source,
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
    """Run the whole preparation (see the module docstring); safe to rerun after a crash.

    ``file_list`` selects ids (a path or an already-read mapping); without it the source's
    metadata is scanned and ``max_per_count`` is required. ``cache_dir`` defaults to
    ``<out_dir>/.cache`` (never uploaded).
    """
    started = time.monotonic()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if resize is not None and resize < 32:
        raise PrepareError(f"resize={resize} is too small: keep the longer side >= 32 pixels")
    cache = _Cache(Path(cache_dir) if cache_dir else out / ".cache")
    stats = Stats()
    fetcher = _Fetcher(source, cache, stats)

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

    results = _parallel(fetcher.process, candidates, workers, "fetch+verify", progress)
    photos = [r for r in results if isinstance(r, Photo)]
    excluded = [r for r in results if isinstance(r, Excluded)]
    if not photos:
        first = excluded[0].reason if excluded else "nothing selected"
        raise PrepareError(f"no usable photo among {len(candidates)} ids; first problem: {first}")

    splits = stratified_split(photos, fractions, seed)
    manifest_path = out / MANIFEST
    previous: dict[str, dict[str, Any]] = {}
    if manifest_path.exists():
        try:
            previous = {e["path"]: e for e in json.loads(manifest_path.read_text())["files"]}
        except (ValueError, KeyError, TypeError):
            previous = {}
    entries = _write_layout(out, splits, resize, previous, stats, workers, progress)

    settings = {
        "seed": seed,
        "fractions": list(fractions),
        "resize": resize,
        "max_per_count": max_per_count,
        "selection": "file_list" if file_list is not None else "scan",
    }
    manifest = {
        "version": 1,
        "source": source.description,
        "layout": "<split>/<count>/<id>.jpg",
        "settings": settings,
        "files": entries,
        "excluded": [asdict(x) for x in excluded],
    }
    atomic_write_json(manifest_path, manifest, indent=1)  # thousands of entries: keep it compact
    report = build_report(entries, excluded, source.description, settings)
    report_json = out / REPORT_JSON
    atomic_write_json(report_json, report, indent=1)
    report_png = plot_report(report, out / REPORT_PNG) if chart else None
    result = PrepareResult(
        out_dir=out,
        photos=photos,
        excluded=excluded,
        splits=splits,
        stats=stats,
        manifest=manifest_path,
        report_json=report_json,
        report_png=report_png,
        seconds=time.monotonic() - started,
        report=report,
    )
    return result


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
