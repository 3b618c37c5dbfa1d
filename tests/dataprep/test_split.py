"""The seeded, stratified split and the layout writer, on made-up photos (no network)."""

from __future__ import annotations

import hashlib
import io
import random
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

# The resize decodes with the container's imaging module; import it (and torch) at collection,
# once, rather than inside the first test that resizes.
import bincounter.imaging  # noqa: F401
from bincounter.dataprep.layout import (
    SPLITS,
    read_manifest_entries,
    remove_unlisted,
    stratified_split,
    write_manifest,
    write_part,
)
from bincounter.dataprep.records import Stats, VerifiedPhoto
from bincounter.errors import PrepareError
from bincounter.shards import DEFAULT_SHARD_BYTES


def _photos(per_count: dict[int, int]) -> list[VerifiedPhoto]:
    # Leading zeros on purpose: "00042" and "42" are different photos.
    out = []
    for count, n in per_count.items():
        for i in range(n):
            image_id = f"{count}{i:04d}" if i % 2 else f"0{count}{i:04d}"
            out.append(
                VerifiedPhoto(image_id, count, Path(f"/x/{image_id}.jpg"), "0" * 64, 1, 1, 1)
            )
    return out


def _ids(splits: dict[str, list[VerifiedPhoto]]) -> dict[str, list[str]]:
    return {s: [p.id for p in splits[s]] for s in SPLITS}


SIZES = [
    {1: 10, 2: 10, 3: 10, 4: 10, 5: 10},
    {1: 3, 2: 7, 3: 31, 4: 100, 5: 1},
    {1: 2, 3: 4},
]


@pytest.mark.parametrize("per_count", SIZES)
@pytest.mark.parametrize("fractions", [(0.8, 0.1, 0.1), (0.6, 0.2, 0.2), (0.5, 0.5, 0.0)])
def test_split_is_stratified_separate_and_complete(per_count, fractions):
    photos = _photos(per_count)
    splits = stratified_split(photos, fractions, seed=7)
    ids = [p.id for s in SPLITS for p in splits[s]]
    assert len(ids) == len(set(ids)) == len(photos)  # no id in two splits, none lost
    assert all(isinstance(i, str) for i in ids)
    for count, n in per_count.items():
        got = {s: sum(p.count == count for p in splits[s]) for s in SPLITS}
        for split, share in zip(SPLITS[1:], fractions[1:], strict=True):
            want = n * share
            if n >= 3 and share > 0:
                want = max(want, 1)  # each count gives validation and test a photo
            assert abs(got[split] - want) <= 1, (count, split, got)
        if fractions[2] == 0:
            assert got["test"] == 0


@pytest.mark.parametrize("seed", [0, 1, 42])
def test_same_seed_same_split_whatever_the_input_order(seed):
    photos = _photos(SIZES[1])
    shuffled = photos[:]
    random.Random(99).shuffle(shuffled)
    first = _ids(stratified_split(photos, (0.8, 0.1, 0.1), seed))
    assert _ids(stratified_split(shuffled, (0.8, 0.1, 0.1), seed)) == first
    assert _ids(stratified_split(photos, (0.8, 0.1, 0.1), seed + 1)) != first
    for split in SPLITS:  # sorted by (count, id) within each split
        assert first[split] == [
            p.id
            for p in sorted(
                stratified_split(photos, (0.8, 0.1, 0.1), seed)[split],
                key=lambda p: (p.count, p.id),
            )
        ]


def test_ids_stay_strings_with_their_zeros():
    photos = [
        VerifiedPhoto(i, 1, Path(f"/x/{i}.jpg"), "0" * 64, 1, 1, 1)
        for i in ("00523", "523", "0523")
    ]
    splits = stratified_split(photos, (1.0, 0.0, 0.0), seed=1)
    assert sorted(p.id for p in splits["train"]) == ["00523", "0523", "523"]


@pytest.mark.parametrize(
    "fractions", [(0.8, 0.1), (0.8, 0.1, 0.2), (1.1, -0.05, -0.05), (0.5, 0.25, 0.2)]
)
def test_bad_fractions_are_named(fractions):
    with pytest.raises(PrepareError) as info:
        stratified_split(_photos({1: 3}), fractions, seed=1)  # type: ignore[arg-type]
    assert str(fractions) in info.value.reason


def _jpeg(path: Path, size: tuple[int, int]) -> VerifiedPhoto:
    buffer = io.BytesIO()
    Image.new("RGB", size, (120, 30, 200)).save(buffer, format="JPEG")
    path.write_bytes(buffer.getvalue())
    digest = hashlib.sha256(buffer.getvalue()).hexdigest()
    return VerifiedPhoto(path.stem, int(path.stem[0]), path, digest, len(buffer.getvalue()), *size)


def _write(out: Path, splits, resize: int | None, stats: Stats) -> list[dict]:
    """The one writer, as a plan part of folders, then the manifest a run ends with."""
    photos, shards = write_part(
        out, "part-00000", splits, stats, layout="folders", resize=resize,
        shard_bytes=DEFAULT_SHARD_BYTES, metadata=None, workers=2,
    )  # fmt: skip
    assert shards == []
    write_manifest(out, "test", {"seed": 3}, photos, shards, [], parts=1)
    return sorted(photos, key=lambda e: e["path"])


def _six_photos(tmp_path: Path) -> tuple[Path, Path, dict[str, list[VerifiedPhoto]]]:
    """Six real JPEGs in a cache, split seeded; the folder to write them to."""
    cache = tmp_path / "cache"
    cache.mkdir()
    photos = [_jpeg(cache / f"{c}00{i}.jpg", (80, 60)) for c in (1, 2) for i in range(3)]
    return cache, tmp_path / "out", stratified_split(photos, (0.4, 0.3, 0.3), seed=3)


def test_layout_writes_keeps_and_removes_stale(tmp_path):
    cache, out, splits = _six_photos(tmp_path)
    stats = Stats()
    entries = _write(out, splits, None, stats)
    assert stats.written == 6 and stats.kept == 0
    for e in entries:
        assert e["path"] == f"{e['split']}/{e['count']}/{e['id']}.jpg"
        assert (out / e["path"]).read_bytes() == (cache / f"{e['id']}.jpg").read_bytes()
    assert set(read_manifest_entries(out)) == {e["path"] for e in entries}

    stale = out / "train" / "5" / "999.jpg"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    again = Stats()
    assert _write(out, splits, None, again) == entries
    remove_unlisted(out, set(read_manifest_entries(out)), again)
    assert (again.written, again.kept, again.removed_stale) == (0, 6, 1)
    assert not stale.exists()


def test_layout_resize_caps_the_longer_side_and_rewrites(tmp_path):
    _, out, splits = _six_photos(tmp_path)
    entries = _write(out, splits, None, Stats())
    resized = Stats()
    small = _write(out, splits, 40, resized)
    assert resized.written == 6  # another resize: written again
    assert {(e["width"], e["height"]) for e in small} == {(40, 30)}
    assert Counter(e["split"] for e in small) == Counter(e["split"] for e in entries)


def test_unknown_layout_is_named(tmp_path):
    with pytest.raises(PrepareError, match="layout 'zip'"):
        write_part(
            tmp_path, "part-00000", {s: [] for s in SPLITS}, Stats(), layout="zip",
            resize=None, shard_bytes=DEFAULT_SHARD_BYTES, metadata=None, workers=1,
        )  # fmt: skip


def test_manifest_missing_or_damaged_is_no_previous_run(tmp_path):
    assert read_manifest_entries(tmp_path) == {}
    (tmp_path / "manifest.json").write_text('{"files": [{"no_path": 1}]}')
    assert read_manifest_entries(tmp_path) == {}
    (tmp_path / "manifest.json").write_text("{cut sho")
    assert read_manifest_entries(tmp_path) == {}
