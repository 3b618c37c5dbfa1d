"""Hostile preparation inputs: tampered plan parts and ids that would become paths elsewhere,
and a part that fails halfway through packing. Real files, real ABID photos."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bincounter.dataprep.fetch import Cache, Fetcher
from bincounter.dataprep.layout import write_part
from bincounter.dataprep.parts import read_part
from bincounter.dataprep.records import Candidate, Excluded, Stats, VerifiedPhoto
from bincounter.dataprep.sources import LocalSource
from bincounter.dataprep.worker import process_part
from bincounter.errors import PrepareError
from bincounter.ids import is_photo_id

from support import ABID

BAD_IDS = ["../../../stolen", "../x", "a/b", "/etc/hostname", "", ".hidden", "x.jpg", "-rf", "a\nb"]


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def _box(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A source folder in ABID layout, with a photo and metadata two levels above its own
    folders (what ``../../../stolen`` reaches from ``metadata/``), and a plan folder."""
    src = tmp_path / "box" / "src"
    for d in ("bin-images", "metadata"):
        (src / d).mkdir(parents=True)
    (tmp_path / "stolen.json").write_text(json.dumps({"EXPECTED_QUANTITY": 1}))
    shutil.copy(ABID / "images" / "00004.jpg", tmp_path / "stolen.jpg")
    plan = tmp_path / "box" / "plan"
    plan.mkdir()
    return src, plan, tmp_path / "box" / "out"


@pytest.mark.parametrize("bad", BAD_IDS)
def test_a_tampered_plan_fails_naming_part_and_id_before_reading_or_writing(tmp_path, bad):
    src, plan, out = _box(tmp_path)
    part = plan / "part-00000.jsonl"
    lines = [
        {"id": "00004", "count": 1, "split": "train"},
        {"id": bad, "count": 1, "split": "train"},
    ]
    part.write_text("".join(json.dumps(line) + "\n" for line in lines))
    cache = Cache(tmp_path / "box" / "cache")
    before = _files(tmp_path)
    with pytest.raises(PrepareError) as info:
        process_part(part, LocalSource(src), out, cache, layout="folders", workers=1)
    assert f"plan part {part} line 2: id {bad!r} is not a photo id" in info.value.reason
    assert _files(tmp_path) == before  # nothing written: no output, no cache entry


def test_ids_the_product_uses_are_photo_ids(tmp_path):
    good = ["00523", "523", "9", "100000", "g003", "abc", "b_1-2"]
    assert all(is_photo_id(i) for i in good) and not any(is_photo_id(i) for i in BAD_IDS)
    part = tmp_path / "part-00000.jsonl"
    part.write_text(
        "".join(json.dumps({"id": i, "count": 2, "split": "test"}) + "\n" for i in good)
    )
    assert [e["id"] for e in read_part(part)] == good


def test_a_listed_id_that_is_not_a_photo_id_is_excluded_not_fetched(tmp_path):
    """Ids from a file list or a bucket listing go through the fetcher, which names the cache
    paths: it excludes them with the reason instead."""
    src, _, _ = _box(tmp_path)
    cache = Cache(tmp_path / "box" / "cache")
    before = _files(tmp_path)
    result = Fetcher(LocalSource(src), cache, Stats()).process(Candidate("../../../stolen", 1))
    assert isinstance(result, Excluded) and "is not a photo id" in result.reason
    assert _files(tmp_path) == before


def test_a_part_failing_while_packing_leaves_no_temporary_shard(tmp_path):
    ids = ["00004", "00005", "00006"]
    photos = [VerifiedPhoto(i, 1, ABID / "images" / f"{i}.jpg", "x", 1, 1, 1) for i in ids]

    def metadata(image_id: str) -> bytes:
        if image_id == ids[2]:
            raise FileNotFoundError(f"metadata of {image_id} gone from the cache")
        return b"{}"

    with pytest.raises(FileNotFoundError, match="00006"):
        write_part(
            tmp_path, "part-00000", {"train": photos, "validation": [], "test": []}, Stats(),
            layout="shards", resize=None, shard_bytes=10 << 20, metadata=metadata, workers=1,
        )  # fmt: skip
    assert list((tmp_path / "train").iterdir()) == []
