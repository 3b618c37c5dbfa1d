"""Selection and fetch+verify against an in-memory source: every exclusion reason, retries, reuse."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

import bincounter.imaging  # noqa: F401  (torch, once at collection: the verify step decodes)
from bincounter.dataprep.fetch import Cache, Fetcher, is_transient
from bincounter.dataprep.records import Candidate, Excluded, Stats, VerifiedPhoto
from bincounter.dataprep.selection import candidates_from_file_list, read_file_list, scan_candidates
from bincounter.dataprep.sources import LocalSource, PhotoSource
from bincounter.errors import MissingObject, PrepareError


class Flaky(Exception):
    """A botocore-like error with an HTTP answer."""

    def __init__(self, code: str, status: int) -> None:
        super().__init__(code)
        self.response = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}


class MemorySource(PhotoSource):
    description = "memory"

    def __init__(
        self, objects: dict[str, bytes], failures: dict[str, list[Exception]] | None = None
    ):
        self.objects = objects
        self.failures = failures or {}
        self.gets: list[str] = []

    def get(self, key: str) -> bytes:
        self.gets.append(key)
        if self.failures.get(key):
            raise self.failures[key].pop(0)
        if key not in self.objects:
            raise MissingObject(key)
        return self.objects[key]

    def list_metadata_ids(self):
        for key in self.objects:
            if key.startswith("metadata/"):
                yield key[len("metadata/") : -len(".json")]


def _jpeg(size=(64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 90)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _meta(count) -> bytes:
    return json.dumps({"EXPECTED_QUANTITY": count}).encode()


def _fetcher(tmp_path: Path, source: PhotoSource) -> Fetcher:
    return Fetcher(source, Cache(tmp_path / "cache"), Stats())


@pytest.mark.parametrize(
    ("objects", "listed", "reason"),
    [
        ({}, None, "metadata missing from source (metadata/7.json)"),
        ({"metadata/7.json": b"{}"}, None, "metadata unreadable"),
        ({"metadata/7.json": _meta(2.5)}, None, "metadata unreadable"),
        ({"metadata/7.json": _meta(0)}, None, "count 0 outside 1..5"),
        ({"metadata/7.json": _meta(6)}, None, "count 6 outside 1..5"),
        ({"metadata/7.json": _meta(3)}, 2, "file list says 2 items, metadata says 3"),
        ({"metadata/7.json": _meta(3)}, None, "image missing from source (bin-images/7.jpg)"),
        ({"metadata/7.json": _meta(3), "bin-images/7.jpg": _jpeg()[:200]}, None, "corrupt image"),
        ({"metadata/7.json": _meta(3), "bin-images/7.jpg": b"not a photo"}, 3, "corrupt image"),
    ],
)
def test_each_problem_excludes_with_its_reason(tmp_path, objects, listed, reason):
    result = _fetcher(tmp_path, MemorySource(objects)).process(Candidate("7", listed))
    assert isinstance(result, Excluded)
    assert (result.id, result.listed) == ("7", listed)
    assert result.reason.startswith(reason)
    assert not (tmp_path / "cache" / "bin-images" / "7.jpg").exists()


def test_good_photo_is_verified_cached_and_reused(tmp_path):
    source = MemorySource({"metadata/007.json": _meta(4), "bin-images/007.jpg": _jpeg((64, 48))})
    first = _fetcher(tmp_path, source)
    photo = first.process(Candidate("007", 4))
    assert isinstance(photo, VerifiedPhoto)
    assert (photo.id, photo.count, photo.width, photo.height) == ("007", 4, 64, 48)
    assert photo.path.read_bytes() == source.objects["bin-images/007.jpg"]
    assert (first.stats.fetched_images, first.stats.fetched_metadata, first.stats.decoded) == (
        1,
        1,
        1,
    )

    source.gets.clear()
    second = _fetcher(tmp_path, source)  # a later run over the same cache
    assert second.process(Candidate("007", 4)) == photo
    assert source.gets == []
    assert (second.stats.reused_images, second.stats.reused_metadata, second.stats.decoded) == (
        1,
        1,
        0,
    )


def test_damaged_cache_file_is_fetched_again(tmp_path):
    source = MemorySource({"metadata/9.json": _meta(1), "bin-images/9.jpg": _jpeg()})
    photo = _fetcher(tmp_path, source).process(Candidate("9"))
    photo.path.write_bytes(photo.path.read_bytes()[:100])  # a run killed mid-write
    (tmp_path / "cache" / "metadata" / "9.json").write_text("{")
    again = _fetcher(tmp_path, source)
    assert again.process(Candidate("9")) == photo
    assert (
        again.stats.refetched_damaged,
        again.stats.fetched_images,
        again.stats.fetched_metadata,
    ) == (1, 1, 1)


@pytest.mark.parametrize(
    ("failures", "outcome", "retries"),
    [
        ([Flaky("SlowDown", 503), ConnectionError("reset")], VerifiedPhoto, 2),
        ([Flaky("InternalError", 500)] * 3, VerifiedPhoto, 3),
        ([Flaky("InternalError", 500)] * 4, Excluded, 3),  # out of attempts
        ([Flaky("AccessDenied", 403)], Excluded, 0),  # stays so: no retry
    ],
)
def test_transient_errors_are_retried(tmp_path, monkeypatch, failures, outcome, retries):
    monkeypatch.setattr("bincounter.dataprep.fetch.time.sleep", lambda s: None)
    source = MemorySource(
        {"metadata/5.json": _meta(5), "bin-images/5.jpg": _jpeg()},
        {"bin-images/5.jpg": list(failures)},
    )
    fetcher = _fetcher(tmp_path, source)
    result = fetcher.process(Candidate("5"))
    assert isinstance(result, outcome)
    assert fetcher.stats.retries == retries
    if outcome is Excluded:
        assert result.reason.startswith("image download failed")


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (ConnectionError("reset"), True),
        (Flaky("SlowDown", 503), True),
        (Flaky("Throttling", 400), True),
        (Flaky("RequestTimeout", 400), True),
        (Flaky("", 502), True),
        (Flaky("AccessDenied", 403), False),
        (Flaky("InvalidRequest", 400), False),
    ],
)
def test_is_transient(exc, transient):
    assert is_transient(exc) is transient


def test_file_list_ids_keep_zeros_and_order(tmp_path):
    path = tmp_path / "file_list.json"
    path.write_text(
        json.dumps(
            {
                "2": ["data/metadata/00523.json", "data/metadata/523.json", "x/7.json"],
                "1": ["data/metadata/00523.json", "11.json"],
                "6": ["data/metadata/1.json"],
            }
        )
    )
    listing = read_file_list(path)
    assert listing == {2: ["00523", "523", "7"], 1: ["00523", "11"], 6: ["1"]}
    assert candidates_from_file_list(listing) == [
        Candidate("00523", 1),
        Candidate("11", 1),
        Candidate("523", 2),  # 00523 was taken by count 1; count 6 is not predicted
        Candidate("7", 2),
    ]
    assert candidates_from_file_list(listing, max_per_count=1) == [
        Candidate("00523", 1),
        Candidate("523", 2),
    ]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "cannot read file list"),
        ("{", "cannot read file list"),
        ('["a.json"]', "must map counts to lists of paths"),
        ('{"one": []}', "key 'one' is not a count"),
        ('{"1": "a.json"}', "value of '1' is not a list"),
    ],
)
def test_bad_file_list_is_named(tmp_path, content, fragment):
    path = tmp_path / "file_list.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(PrepareError) as info:
        read_file_list(path)
    assert str(path) in info.value.reason and fragment in info.value.reason


def test_scan_stops_once_every_count_is_full(tmp_path):
    counts = [1, 2, 3, 4, 5, 9, 1, 2, 3, 4, 5, 1, 1] + [2] * 50
    objects = {f"metadata/{i:03d}.json": _meta(c) for i, c in enumerate(counts)}
    objects["metadata/bad.json"] = b"{"
    source = MemorySource(objects)
    candidates = scan_candidates(
        source, _fetcher(tmp_path, source), 2, workers=2, progress=False, chunk=4
    )
    assert candidates == [
        Candidate(i, c)
        for c, ids in {
            1: ["000", "006"],
            2: ["001", "007"],
            3: ["002", "008"],
            4: ["003", "009"],
            5: ["004", "010"],
        }.items()
        for i in ids
    ]
    assert len(source.gets) == 12  # three chunks of four, not all 64


def test_local_source(tmp_path):
    (tmp_path / "original").mkdir()
    (tmp_path / "metadata").mkdir()
    (tmp_path / "metadata" / "02.json").write_bytes(_meta(1))
    (tmp_path / "metadata" / "01.json").write_bytes(_meta(2))
    (tmp_path / "original" / "01.jpg").write_bytes(b"jpg")
    source = LocalSource(tmp_path, images_dir="/original/")
    assert list(source.list_metadata_ids()) == ["01", "02"]
    assert source.get(source.image_key("01")) == b"jpg"
    with pytest.raises(MissingObject):
        source.get(source.image_key("02"))
    with pytest.raises(PrepareError, match="does not exist"):
        LocalSource(tmp_path / "nope")
