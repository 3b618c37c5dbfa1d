"""Upload prepared channels to S3, skipping what is already there, and name the channel URIs.

Each object carries its SHA-256 as user metadata (``x-amz-meta-sha256``). A rerun lists the
prefix once, and for every key whose size matches asks for that checksum (one HEAD), so only
new or changed files travel again: S3's own ETag is an MD5 only for single-part uploads, so it
cannot be compared across multipart thresholds. Large files go multipart (boto3's
``TransferConfig``), and many small photos go in parallel across a thread pool, which is what
dominates for a few thousand 50 KB JPEGs.
"""

from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..dataprep.layout import MANIFEST, SPLITS
from ..dataprep.report import REPORT_JSON, REPORT_PNG
from ..errors import PrepareError
from ..files import sha256_file
from .config import AwsConfig

log = logging.getLogger(__name__)

CONTENT_TYPES = {".jpg": "image/jpeg", ".json": "application/json", ".png": "image/png"}


@dataclass
class UploadResult:
    """Channel URIs (``train``/``validation``/``test`` -> ``s3://.../``) and what moved."""

    channels: dict[str, str]
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    base_uri: str = ""


def channel_uris(base_uri: str, splits: tuple[str, ...] = SPLITS) -> dict[str, str]:
    """``s3://b/p`` -> ``{"train": "s3://b/p/train/", ...}`` (trailing slash: a prefix)."""
    base = base_uri.rstrip("/")
    return {s: f"{base}/{s}/" for s in splits}


def _files_to_upload(out_dir: Path) -> list[tuple[str, Path, str]]:
    """(relative key, path, sha256) of every manifest file plus manifest and report."""
    manifest_path = out_dir / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise PrepareError(
            f"{manifest_path} is missing or unreadable ({exc}): run the preparation first"
        ) from None
    files = []
    for entry in manifest["files"]:
        path = out_dir / entry["path"]
        if not path.is_file():
            raise PrepareError(f"{path} is in the manifest but not on disk: rerun the preparation")
        files.append((entry["path"], path, entry["sha256"]))
    for name in (MANIFEST, REPORT_JSON, REPORT_PNG):
        path = out_dir / name
        if path.is_file():
            files.append((name, path, sha256_file(path)))
    return files


def _existing_sizes(client: Any, bucket: str, prefix: str) -> dict[str, int]:
    """Key -> size of every object already under the prefix (one listing, not a HEAD per file)."""
    existing: dict[str, int] = {}
    paginator = client.get_paginator("list_objects_v2")
    list_prefix = f"{prefix}/" if prefix else ""
    for page in paginator.paginate(Bucket=bucket, Prefix=list_prefix):
        for obj in page.get("Contents", []):
            existing[obj["Key"]] = obj["Size"]
    return existing


def upload_prepared(
    out_dir: str | Path,
    base_uri: str,
    *,
    client: Any = None,
    config: AwsConfig | None = None,
    workers: int = 16,
    multipart_threshold: int = 8 * 1024 * 1024,
    multipart_chunksize: int = 8 * 1024 * 1024,
    progress: bool = True,
) -> UploadResult:
    """Upload ``<out_dir>`` (as written by ``prepare``) under ``base_uri``; idempotent."""
    import boto3
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config
    from tqdm import tqdm

    from .config import parse_s3_uri

    out = Path(out_dir)
    bucket, prefix = parse_s3_uri(base_uri.rstrip("/"))
    prefix = prefix.strip("/")
    if client is None:
        session = config.boto_session() if config else boto3.Session()
        client = session.client(
            "s3", config=Config(max_pool_connections=workers + 4, retries={"mode": "standard"})
        )
    files = _files_to_upload(out)

    existing = _existing_sizes(client, bucket, prefix)

    transfer = TransferConfig(
        multipart_threshold=multipart_threshold,
        multipart_chunksize=multipart_chunksize,
        max_concurrency=4,
        use_threads=True,
    )
    result = UploadResult(channels=channel_uris(f"s3://{bucket}/{prefix}".rstrip("/")))
    result.base_uri = f"s3://{bucket}/{prefix}".rstrip("/")
    lock = threading.Lock()

    def one(item: tuple[str, Path, str]) -> None:
        rel, path, digest = item
        key = f"{prefix}/{rel}" if prefix else rel
        size = path.stat().st_size
        if existing.get(key) == size:
            head = client.head_object(Bucket=bucket, Key=key)
            if head.get("Metadata", {}).get("sha256") == digest:
                with lock:
                    result.skipped.append(key)
                return
        client.upload_file(
            str(path),
            bucket,
            key,
            ExtraArgs={
                "Metadata": {"sha256": digest},
                "ContentType": CONTENT_TYPES.get(path.suffix.lower(), "binary/octet-stream"),
            },
            Config=transfer,
        )
        with lock:
            result.uploaded.append(key)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(
            tqdm(
                pool.map(one, files),
                total=len(files),
                desc="upload",
                unit="file",
                disable=not progress,
                dynamic_ncols=True,
            )
        )
    log.info("uploaded %d, skipped %d unchanged", len(result.uploaded), len(result.skipped))
    return result
