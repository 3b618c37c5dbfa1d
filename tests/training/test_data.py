"""``discover_channel``: both channel layouts on tiny synthetic photos (no decoding here)."""

import json
import logging
from pathlib import Path

import pytest
from PIL import Image

from bincounter.errors import DataError
from bincounter.training.data import discover_channel


def _photo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (120, 60, 30)).save(path, "JPEG")
    return path


def _folders(channel: Path, photos: dict[str, int]) -> Path:
    for image_id, count in photos.items():
        _photo(channel / str(count) / f"{image_id}.jpg")
    return channel


def _native(channel: Path, photos: dict[str, int]) -> Path:
    for image_id, count in photos.items():
        _photo(channel / "bin-images" / f"{image_id}.jpg")
        (channel / "metadata").mkdir(exist_ok=True)
        (channel / "metadata" / f"{image_id}.json").write_text(
            json.dumps({"EXPECTED_QUANTITY": count})
        )
    return channel


@pytest.mark.parametrize("layout", [_folders, _native], ids=["folders", "native"])
def test_ids_stay_strings(tmp_path, layout):
    # "523" and "00523" are different photos of different counts: never int-parsed, never merged.
    channel = layout(tmp_path / "train", {"523": 1, "00523": 4, "7": 5})
    found = {s.id: (s.count, s.label, s.path.name) for s in discover_channel("train", channel)}
    assert found == {"523": (1, 0, "523.jpg"), "00523": (4, 3, "00523.jpg"), "7": (5, 4, "7.jpg")}


def test_native_layout_skips_photos_without_metadata_or_outside_one_to_five(tmp_path, caplog):
    channel = _native(tmp_path / "train", {"a": 2, "zero": 0, "many": 12})
    _photo(channel / "bin-images" / "orphan.jpg")
    with caplog.at_level(logging.INFO, logger="bincounter.training.data"):
        found = discover_channel("train", channel)
    assert [(s.id, s.count) for s in found] == [("a", 2)]
    assert "'no metadata': 1" in caplog.text and "'count 0 outside 1..5': 1" in caplog.text


@pytest.mark.parametrize(
    ("metadata", "fragment"),
    [
        ("{not json", "no readable EXPECTED_QUANTITY"),
        ('{"OTHER": 3}', "no readable EXPECTED_QUANTITY"),
        ('{"EXPECTED_QUANTITY": 2.5}', "EXPECTED_QUANTITY 2.5 is not an integer"),
        ('{"EXPECTED_QUANTITY": true}', "EXPECTED_QUANTITY True is not an integer"),
    ],
)
def test_bad_metadata_names_the_file_and_what_is_wrong(tmp_path, metadata, fragment):
    channel = _native(tmp_path / "train", {"0042": 2})
    bad = channel / "metadata" / "0042.json"
    bad.write_text(metadata)
    with pytest.raises(DataError) as info:
        discover_channel("train", channel)
    assert info.value.reason.startswith(f"metadata {bad}: ")
    assert fragment in info.value.reason


def test_folders_that_are_not_a_count_one_to_five_are_ignored(tmp_path, caplog):
    channel = _folders(tmp_path / "train", {"a": 1, "b": 5})
    for name in ("0", "6", "extra"):
        _photo(channel / name / "c.jpg")
    (channel / "5" / "notes.txt").write_text("not a photo")
    with caplog.at_level(logging.WARNING, logger="bincounter.training.data"):
        found = discover_channel("train", channel)
    assert sorted((s.id, s.count) for s in found) == [("a", 1), ("b", 5)]
    for name in ("0", "6", "extra"):
        assert f"ignoring folder {name} (not a count 1..5)" in caplog.text


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda root: root, "is missing: no folder"),
        (lambda root: root.mkdir() or root, "holds no labelled photos"),
        (lambda root: _photo(root / "bin-images" / "a.jpg").parents[1], "but no"),
    ],
    ids=["missing", "empty", "native-without-metadata"],
)
def test_unusable_channel_says_why(tmp_path, make, fragment):
    root = make(tmp_path / "validation")
    with pytest.raises(DataError, match="channel 'validation'") as info:
        discover_channel("validation", root)
    assert fragment in info.value.reason
