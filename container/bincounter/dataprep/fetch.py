"""Fetch each selected photo and its metadata into a cache, and verify the photo by decoding it.

A run over thousands of photos from a public bucket gets killed, throttled and cut off, so this
step is written to be rerun: a file already in the cache is not fetched again, a verified
photo's size and SHA-256 go to ``verified.jsonl`` so a later run skips its decode, and a file
that no longer matches (a run killed mid-write, a flipped byte) is fetched again. Transient
errors (no answer, throttling, 5xx) are retried with backoff; a 404 or a photo that does not
decode becomes an ``Excluded`` with its reason, never an exception that stops the run. Photos
are decoded with the training container's own decoder (``bincounter.imaging.load_image``), so a
photo that passes here also passes in the job.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from pathlib import Path
from typing import Any

from .. import CLASSES
from ..abid import parse_expected_quantity
from ..errors import MissingObject
from ..files import atomic_write_bytes, sha256_bytes, sha256_file
from ..ids import check_photo_id
from .records import Candidate, Excluded, Stats, VerifiedPhoto
from .sources import PhotoSource

log = logging.getLogger(__name__)

VERIFIED_LOG = "verified.jsonl"
#: Error codes S3 answers with when asking again later may succeed.
RETRY_CODES = {"Throttling", "ThrottlingException", "SlowDown", "RequestTimeout", "InternalError"}


class Cache:
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


def verify_image(data: bytes) -> tuple[int, int]:
    """Decode fully with the training container's decoder; (width, height) or ImageError."""
    from ..imaging import load_image

    image = load_image(data)
    return image.size


def is_transient(exc: Exception) -> bool:
    """Worth retrying: connection trouble, throttling, 5xx. Not: 403, 400 (they stay so)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return True  # no HTTP answer at all: a connection or read error
    code = response.get("Error", {}).get("Code", "")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return code in RETRY_CODES or status >= 500


class Fetcher:
    """Per-id work: metadata then image, from cache when valid, else from the source."""

    def __init__(self, source: PhotoSource, cache: Cache, stats: Stats, attempts: int = 4) -> None:
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
                if attempt == self.attempts or not is_transient(exc):
                    raise
                self._count("retries")
                log.info("retrying %s after %s (attempt %d)", key, exc, attempt)
                time.sleep(delay * random.uniform(0.5, 1.5))
                delay *= 2
        raise AssertionError("unreachable")

    def metadata_count(self, image_id: str) -> int:
        """EXPECTED_QUANTITY, from the cached metadata when it parses, else fetched;
        ``ValueError`` for an id that is not a photo id (it would name paths elsewhere)."""
        check_photo_id(image_id)
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

    def image(self, image_id: str, count: int) -> VerifiedPhoto:
        """A verified photo; raises MissingObject or ImageError (after one re-fetch), and
        ``ValueError`` for an id that is not a photo id."""
        from ..imaging import ImageError

        check_photo_id(image_id)
        path = self.cache.images / f"{image_id}.jpg"
        known = self.cache.verified.get(image_id)
        if path.exists():
            size = path.stat().st_size
            if known and known.get("bytes") == size and known.get("sha256") == sha256_file(path):
                self._count("reused_images")
                return VerifiedPhoto(
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
            return verify_image(data)
        finally:
            self._count("decoded")

    def _record(
        self, image_id: str, count: int, path: Path, data: bytes, width: int, height: int
    ) -> VerifiedPhoto:
        digest = sha256_bytes(data)
        self.cache.record(
            {"id": image_id, "sha256": digest, "bytes": len(data), "width": width, "height": height}
        )
        return VerifiedPhoto(image_id, count, path, digest, len(data), width, height)

    def process(self, candidate: Candidate) -> VerifiedPhoto | Excluded:
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
