"""Data preparation against a moto S3 holding real ABID photos: download, verify, split,
resume after a killed run, a corrupt object reported, upload that skips unchanged objects."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from PIL import Image

from bincounter.aws.s3data import upload_prepared
from bincounter.dataprep.layout import SPLITS, stratified_split
from bincounter.dataprep.pipeline import prepare
from bincounter.dataprep.sources import S3Source
from bincounter.training.data import discover_channel

from .conftest import BUCKET, PER_COUNT, REGION, AbidSeed
from support import REPO

#: Every test here goes through a moto server seeded with real photos.
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def prepared(abid: AbidSeed, tmp_path_factory: pytest.TempPathFactory):
    """One full run from the fake public bucket (unsigned requests), shared by the checks."""
    out = tmp_path_factory.mktemp("prepared")
    result = prepare(S3Source(), out, file_list=abid.file_list, workers=4, progress=False)
    return result


def test_selected_photos_are_downloaded_verified_and_laid_out_per_count(prepared, abid: AbidSeed):
    out = prepared.out_dir
    assert {p.id for p in prepared.photos} == abid.good_ids
    for split in SPLITS:
        # The training container's own reader accepts every channel as written.
        samples = discover_channel(split, out / split)
        for sample in samples:
            assert sample.path == out / split / str(sample.count) / f"{sample.id}.jpg"
            assert sample.id in abid.good[sample.count]
    leading_zero = sorted(i for i in abid.good_ids if i.startswith("0"))
    assert leading_zero, "the seed should include ids with leading zeros"
    found = {p.stem for p in out.rglob("*.jpg") if ".cache" not in p.parts}
    assert set(leading_zero) <= found  # ids stay strings: "00014", never 14


def test_split_is_stratified_and_separate(prepared, abid: AbidSeed):
    splits = prepared.splits
    ids = [p.id for s in SPLITS for p in splits[s]]
    assert len(ids) == len(set(ids)) == len(abid.good_ids)
    for count in abid.good:
        per_split = {s: sum(p.count == count for p in splits[s]) for s in SPLITS}
        assert per_split["validation"] >= 1 and per_split["test"] >= 1
        assert per_split["train"] >= PER_COUNT * 0.6
    assert prepared.report["totals"] == {s: len(splits[s]) for s in SPLITS}


def test_manifest_checksums_match_files(prepared):
    manifest = json.loads(prepared.manifest.read_text())
    assert manifest["layout"] == "<split>/<count>/<id>.jpg"
    assert len(manifest["files"]) == len(prepared.photos)
    for entry in manifest["files"]:
        path = prepared.out_dir / entry["path"]
        assert path.stat().st_size == entry["bytes"]
        assert _sha(path) == entry["sha256"] == entry["source_sha256"]  # no resize: a copy
        assert entry["path"] == f"{entry['split']}/{entry['count']}/{entry['id']}.jpg"


def test_bad_and_missing_objects_are_reported_and_excluded(prepared, abid: AbidSeed):
    reasons = {x.id: x.reason for x in prepared.excluded}
    assert set(reasons) == {abid.corrupt_id, abid.imageless_id, *abid.missing_ids}
    assert reasons[abid.corrupt_id].startswith("corrupt image")
    assert reasons[abid.imageless_id].startswith("image missing")
    for missing in abid.missing_ids:
        assert reasons[missing].startswith("metadata missing")
    report = json.loads(prepared.report_json.read_text())
    assert {x["id"] for x in report["excluded"]} == set(reasons)
    assert report["excluded_by_reason"]["corrupt image"] == 1
    assert report["source_images"]["width"]["max"] > 224  # native-size originals
    assert prepared.report_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Nothing of the corrupt object is left anywhere a job could read it.
    assert not list(prepared.out_dir.rglob(f"{abid.corrupt_id}.jpg"))


def test_same_seed_same_split_other_seed_other_split(prepared):
    again = stratified_split(prepared.photos[::-1], (0.8, 0.1, 0.1), 42)
    assert {s: [p.id for p in again[s]] for s in SPLITS} == {
        s: [p.id for p in prepared.splits[s]] for s in SPLITS
    }
    other = stratified_split(prepared.photos, (0.8, 0.1, 0.1), 7)
    assert [p.id for p in other["test"]] != [p.id for p in prepared.splits["test"]]


def test_resume_after_killed_run_fetches_only_missing_or_damaged(abid: AbidSeed, tmp_path: Path):
    out = tmp_path / "out"
    cache = out / ".cache" / "bin-images"
    command = [
        sys.executable,
        str(REPO / "scripts" / "prepare_data.py"),
        "--file-list",
        str(abid.file_list),
        "--out",
        str(out),
        "--workers",
        "1",
        "--no-progress",
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy()
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if cache.is_dir() and len(list(cache.glob("*.jpg"))) >= 8:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    cached = sorted(cache.glob("*.jpg"))
    assert 8 <= len(cached) < len(abid.good_ids), "the first run should die part-way"
    assert not (out / "manifest.json").exists()
    # Damage one finished download, as a bad disk or a partial copy would.
    damaged = cached[0]
    damaged.write_bytes(damaged.read_bytes()[:500])

    result = prepare(S3Source(), out, file_list=abid.file_list, workers=4, progress=False)
    stats = result.stats
    assert {p.id for p in result.photos} == abid.good_ids
    assert stats.refetched_damaged == 1
    assert stats.reused_images == len(cached) - 1
    # Everything else fetched once: the good ones not cached yet, the damaged one, and the
    # corrupt object (never cached, since it fails verification).
    assert stats.fetched_images == len(abid.good_ids) - len(cached) + 1 + 1
    assert _sha(damaged) == next(p.sha256 for p in result.photos if p.id == damaged.stem)

    third = prepare(S3Source(), out, file_list=abid.file_list, workers=4, progress=False)
    assert third.stats.fetched_images == 1  # only the corrupt object is tried again
    assert third.stats.reused_images == len(abid.good_ids)
    # Verified files are not decoded twice; the re-fetched corrupt object is decoded to verify it.
    assert third.stats.decoded == 1
    assert third.stats.written == 0 and third.stats.kept == len(abid.good_ids)


def test_scan_of_metadata_takes_up_to_n_per_count(abid: AbidSeed, tmp_path: Path):
    result = prepare(S3Source(), tmp_path / "scan", max_per_count=3, workers=4, progress=False)
    counts = result.report["per_count"]
    assert counts == {str(c): 3 for c in abid.good}
    assert abid.corrupt_id not in {p.id for p in result.photos}
    assert all(p.id in abid.good_ids for p in result.photos)


def test_resize_caps_the_longer_side(abid: AbidSeed, tmp_path: Path):
    result = prepare(
        S3Source(),
        tmp_path / "small",
        file_list=abid.file_list,
        resize=160,
        workers=4,
        progress=False,
    )
    # Only the channels: pathlib's "*" also matches the hidden ".cache" of native originals.
    sizes = [
        Image.open(p).size for split in SPLITS for p in (tmp_path / "small" / split).glob("*/*.jpg")
    ]
    assert len(sizes) == len(abid.good_ids)
    assert sizes and max(max(s) for s in sizes) == 160
    written = result.report["written_images"]["total_bytes"]
    assert written < result.report["source_images"]["total_bytes"] / 3


def test_upload_skips_unchanged_objects_and_prints_channels(prepared, tmp_path: Path):
    s3 = boto3.client("s3", region_name=REGION)
    base = f"s3://{BUCKET}/up/data"
    first = upload_prepared(prepared.out_dir, base, workers=4, progress=False)
    assert first.channels == {s: f"{base}/{s}/" for s in SPLITS}
    assert len(first.uploaded) == len(prepared.photos) + 3 and not first.skipped
    manifest = json.loads(prepared.manifest.read_text())
    entry = manifest["files"][0]
    head = s3.head_object(Bucket=BUCKET, Key=f"up/data/{entry['path']}")
    assert head["Metadata"]["sha256"] == entry["sha256"]
    assert head["ContentLength"] == entry["bytes"]
    assert head["ContentType"] == "image/jpeg"

    second = upload_prepared(prepared.out_dir, base, workers=4, progress=False)
    assert not second.uploaded and len(second.skipped) == len(first.uploaded)

    # A changed object of the same size is found by its checksum, and goes multipart when
    # above the threshold (S3 marks multipart ETags with "-<parts>").
    other = s3.get_object(Bucket=BUCKET, Key=f"up/data/{entry['path']}")["Body"].read()
    s3.put_object(Bucket=BUCKET, Key=f"up/data/{entry['path']}", Body=b"x" * len(other))
    third = upload_prepared(
        prepared.out_dir, base, workers=4, progress=False, multipart_threshold=1024
    )
    assert third.uploaded == [f"up/data/{entry['path']}"]
    head = s3.head_object(Bucket=BUCKET, Key=f"up/data/{entry['path']}")
    assert head["ETag"].strip('"').endswith("-1")
    body = s3.get_object(Bucket=BUCKET, Key=f"up/data/{entry['path']}")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == entry["sha256"]


def test_cli_prepare_and_upload_prints_channel_uris(abid: AbidSeed, tmp_path: Path, capsys):
    from bincounter.aws.cli import main

    status = main(
        [
            "prepare",
            "--file-list",
            str(abid.file_list),
            "--out",
            str(tmp_path / "cli"),
            "--workers",
            "4",
            "--no-progress",
            "--resize",
            "256",
            "--region",
            REGION,
            "--bucket",
            BUCKET,
            "--prefix",
            "cli",
            "--upload",
        ]
    )
    out = capsys.readouterr().out
    assert status == 0, out
    for split in SPLITS:
        assert f"channel {split}: s3://{BUCKET}/cli/data/{split}/" in out
    assert "excluded: 5" in out
    keys = boto3.client("s3", region_name=REGION).list_objects_v2(Bucket=BUCKET, Prefix="cli/data/")
    names = {o["Key"] for o in keys["Contents"]}
    assert "cli/data/manifest.json" in names and "cli/data/report.png" in names
