"""Where ABID photos and metadata come from: the public bucket, another S3 API, or a folder.

The rest of the preparation asks a source for keys in ABID's layout (``bin-images/<id>.jpg``,
``metadata/<id>.json``) and never learns where they live, so the same run works on a laptop with
a local copy, against the public bucket ``aft-vbi-pds`` without an AWS account (unsigned
requests), and against a local moto server in the tests. A source says "this object does not
exist" (``MissingObject``, which excludes the photo) apart from any other failure (which the
fetch step may retry). boto3 is imported only when an S3 source is built, so the image and
local runs work without the ``aws`` extra.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import abid
from ..errors import MissingObject, PrepareError

ABID_BUCKET = abid.BUCKET
ABID_REGION = "us-east-1"


class PhotoSource:
    """Where photos and metadata come from. ``get`` raises ``MissingObject`` for a 404."""

    description = "?"
    images_prefix = abid.IMAGES_PREFIX
    metadata_prefix = abid.METADATA_PREFIX

    def get(self, key: str) -> bytes:
        raise NotImplementedError

    def list_metadata_ids(self) -> Iterator[str]:
        """Ids of every ``metadata/<id>.json``, in the source's listing order."""
        raise NotImplementedError

    def list_metadata_range(self, start: str | None, end: str | None) -> Iterator[str]:
        """Ids whose metadata key ``k`` has ``start < k < end`` (``None``: open), so a full
        listing can run as many independent ranges (``dataprep.listing``). This generic form
        filters the whole listing; sources that can start mid-listing override it."""
        for image_id in self.list_metadata_ids():
            key = self.metadata_key(image_id)
            if (start is None or key > start) and (end is None or key < end):
                yield image_id

    def image_key(self, image_id: str) -> str:
        return f"{self.images_prefix}{image_id}.jpg"

    def metadata_key(self, image_id: str) -> str:
        return f"{self.metadata_prefix}{image_id}.json"


class S3Source(PhotoSource):
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
        return self.list_metadata_range(None, None)

    def list_metadata_range(self, start: str | None, end: str | None) -> Iterator[str]:
        # S3 lists in key order from StartAfter, so a range costs only its own pages.
        paginator = self.client.get_paginator("list_objects_v2")
        extra = {"StartAfter": start} if start else {}
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.metadata_prefix, **extra):
            for obj in page.get("Contents", []):
                if end is not None and obj["Key"] >= end:
                    return
                name = obj["Key"][len(self.metadata_prefix) :]
                if name.endswith(".json") and "/" not in name:
                    yield name[: -len(".json")]


class LocalSource(PhotoSource):
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
        self._keys: list[str] | None = None

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

    def list_metadata_range(self, start: str | None, end: str | None) -> Iterator[str]:
        # One directory read, then a bisection per range (not a full listing per range).
        if self._keys is None:
            self._keys = sorted(self.metadata_key(i) for i in self.list_metadata_ids())
        keys = self._keys
        lo = bisect.bisect_right(keys, start) if start is not None else 0
        hi = bisect.bisect_left(keys, end) if end is not None else len(keys)
        for key in keys[lo:hi]:
            yield key[len(self.metadata_prefix) : -len(".json")]


def open_source(
    *,
    source_dir: str | None,
    bucket: str | None,
    images_dir: str = "bin-images",
    metadata_dir: str = "metadata",
    signed: bool = False,
    endpoint_url: str | None = None,
    workers: int = 16,
) -> PhotoSource:
    """The source a command line names: a folder with ``source_dir``, else a bucket.

    The launch CLI and the Processing job's entry both build their source here, so a flag
    means the same on a laptop and in the job (one connection per worker, plus a few spare).
    """
    if source_dir:
        return LocalSource(source_dir, images_dir, metadata_dir)
    return S3Source(
        bucket or ABID_BUCKET,
        unsigned=not signed,
        endpoint_url=endpoint_url,
        max_connections=workers + 4,
        images_prefix=images_dir.strip("/") + "/",
        metadata_prefix=metadata_dir.strip("/") + "/",
    )
