"""Fixtures: a recording moto server on 127.0.0.1 and an ``aft-vbi-pds`` bucket seeded with real
ABID photos and metadata from ``../shared/abid`` (never copied into the repo).

Every AWS client in the code under test reaches the server through ``AWS_ENDPOINT_URL``, with
fake credentials; the SDK's telemetry is switched off by a config file, and its IAM role check
(``SimulatePrincipalPolicy``, which moto lacks) by ``SAGEMAKER_VALIDATE_ROLE=false``.
"""

from __future__ import annotations

import csv
import json
import os
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .motoserver import RecordingMotoServer
from support import ABID

ROLE = "arn:aws:iam::123456789012:role/SageMakerExecution"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/bincounter:test"
BUCKET = "bincounter-test"
REGION = "us-east-1"
#: Photos per count seeded into the fake public bucket (real originals, 30-100 KB each).
PER_COUNT = 12

TELEMETRY_OFF = """SchemaVersion: '1.0'
SageMaker:
  PythonSDK:
    Modules:
      TelemetryOptOut: true
"""


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecordingMotoServer]:
    """The server, and the process environment pointing every AWS client at it."""
    if not (ABID / "original").is_dir():
        pytest.skip(f"real ABID photos not found under {ABID}")
    home = tmp_path_factory.mktemp("aws_env")
    (home / "sagemaker.yaml").write_text(TELEMETRY_OFF)
    (home / "aws_config").write_text("")
    (home / "aws_credentials").write_text("")
    server = RecordingMotoServer().start()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": server.url,
        "AWS_CONFIG_FILE": str(home / "aws_config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws_credentials"),
        "SAGEMAKER_USER_CONFIG_OVERRIDE": str(home / "sagemaker.yaml"),
        "SAGEMAKER_VALIDATE_ROLE": "false",
        "BINCOUNTER_AWS_CONFIG": "",
    }
    saved = {k: os.environ.get(k) for k in [*env, "AWS_PROFILE", "AWS_REGION"]}
    os.environ.update(env)
    for k in ("AWS_PROFILE", "AWS_REGION"):
        os.environ.pop(k, None)
    for k in [k for k in os.environ if k.startswith("BINCOUNTER_") and k != "BINCOUNTER_ABID_DIR"]:
        saved.setdefault(k, os.environ.pop(k))
    import boto3

    boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
    yield server
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture()
def aws_config(moto_server: RecordingMotoServer):
    """Resolved launch configuration, as the CLI flags would give it."""
    from bincounter.aws.config import resolve_config

    return resolve_config(
        {"region": REGION, "role": ROLE, "bucket": BUCKET, "image": IMAGE, "prefix": "bc"},
        env={},
    )


@dataclass
class AbidSeed:
    """What the fake ``aft-vbi-pds`` holds, and a file list that names it (plus the gaps)."""

    bucket: str
    good: dict[int, list[str]]
    corrupt_id: str
    imageless_id: str
    missing_ids: list[str]
    file_list: Path
    listing: dict[int, list[str]] = field(default_factory=dict)

    @property
    def good_ids(self) -> set[str]:
        return {i for ids in self.good.values() for i in ids}


def _capstone_counts() -> dict[str, int]:
    raw = json.loads((ABID / "file_list.json").read_text())
    return {Path(p).stem: int(k) for k, paths in raw.items() for p in paths}


@pytest.fixture(scope="session")
def abid(moto_server: RecordingMotoServer, tmp_path_factory: pytest.TempPathFactory) -> AbidSeed:
    """Seed ``s3://aft-vbi-pds`` with PER_COUNT real photos per count (+ metadata), one
    truncated photo, one id with metadata but no photo; the file list adds three ids the
    bucket lacks entirely, as the capstone list does for most of its 10,441 entries."""
    import boto3

    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="aft-vbi-pds")
    # Public like the real bucket, so unsigned (anonymous) requests are allowed.
    s3.put_bucket_policy(
        Bucket="aft-vbi-pds",
        Policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": "*",
                        "Action": ["s3:GetObject", "s3:ListBucket"],
                        "Resource": ["arn:aws:s3:::aft-vbi-pds", "arn:aws:s3:::aft-vbi-pds/*"],
                    }
                ],
            }
        ),
    )
    by_count: dict[int, list[str]] = defaultdict(list)
    with open(ABID / "original.csv", newline="") as f:
        for row in csv.DictReader(f):
            by_count[int(row["count"])].append(row["id"])  # ids stay strings
    capstone = _capstone_counts()
    good = {c: ids[:PER_COUNT] for c, ids in sorted(by_count.items())}
    corrupt_id = by_count[2][PER_COUNT]
    imageless_id = by_count[4][PER_COUNT]
    for ids in good.values():
        for image_id in ids:
            s3.put_object(
                Bucket="aft-vbi-pds",
                Key=f"bin-images/{image_id}.jpg",
                Body=(ABID / "original" / f"{image_id}.jpg").read_bytes(),
            )
    for image_id in [*good_ids_of(good), corrupt_id, imageless_id]:
        s3.put_object(
            Bucket="aft-vbi-pds",
            Key=f"metadata/{image_id}.json",
            Body=(ABID / "metadata" / f"{image_id}.json").read_bytes(),
        )
    whole = (ABID / "original" / f"{corrupt_id}.jpg").read_bytes()
    s3.put_object(
        Bucket="aft-vbi-pds", Key=f"bin-images/{corrupt_id}.jpg", Body=whole[: len(whole) // 3]
    )
    seeded = good_ids_of(good) | {corrupt_id, imageless_id}
    missing = sorted(i for i in capstone if i not in seeded and i not in by_count_ids(by_count))[:3]
    listing: dict[int, list[str]] = defaultdict(list)
    for image_id in [*sorted(seeded), *missing]:
        listing[capstone[image_id]].append(image_id)
    path = tmp_path_factory.mktemp("abid") / "file_list.json"
    path.write_text(
        json.dumps(
            {str(c): [f"data/metadata/{i}.json" for i in ids] for c, ids in sorted(listing.items())}
        )
    )
    return AbidSeed("aft-vbi-pds", good, corrupt_id, imageless_id, missing, path, dict(listing))


def good_ids_of(good: dict[int, list[str]]) -> set[str]:
    return {i for ids in good.values() for i in ids}


def by_count_ids(by_count: dict[int, list[str]]) -> set[str]:
    return {i for ids in by_count.values() for i in ids}
