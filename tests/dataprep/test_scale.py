"""Pure logic of preparation at scale: listing ranges, id selection, plan parts, tar shards.

Milliseconds each: no network, no photos decoded (shards hold made-up bytes).
"""

from __future__ import annotations

import io
import random
import tarfile
from collections import Counter
from pathlib import Path

import pytest

from bincounter import shards
from bincounter.dataprep.listing import in_range, key_ranges, select_by_count, split_points
from bincounter.dataprep.parts import plan_entries, read_part, split_parts, write_plan
from bincounter.dataprep.records import PlannedId
from bincounter.errors import PrepareError

KEYS = [
    "metadata/1.json",
    "metadata/00014.json",
    "metadata/523.json",
    "metadata/00523.json",
    "metadata/10.json",
    "metadata/100000.json",
    "metadata/536434.json",
    "metadata/99999.json",
    "metadata/9.json",
    "metadata/abc.json",  # not a digit: must still be listed once
    "metadata/-1.json",
    "metadata/.json",
]


@pytest.mark.parametrize("depth", [0, 1, 2, 3])
def test_key_ranges_cover_every_key_exactly_once(depth):
    ranges = key_ranges("metadata/", depth)
    assert len(ranges) == (10**depth + 1 if depth else 1)
    rng = random.Random(depth)
    keys = KEYS + [
        f"metadata/{rng.randrange(10**7):0{rng.randrange(1, 8)}d}.json" for _ in range(300)
    ]
    for key in keys:
        assert sum(in_range(key, a, b) for a, b in ranges) == 1, key


def test_split_points_are_never_keys_and_sorted():
    points = split_points("metadata/", 2)
    assert points == sorted(points) and len(points) == 100
    assert points[0] == "metadata/00" and points[-1] == "metadata/99"
    assert not any(p.endswith(".json") for p in points)
    with pytest.raises(ValueError):
        split_points("metadata/", -1)


def test_select_by_count_takes_smallest_ids_whatever_the_order():
    counts = {"9": 1, "10": 1, "00010": 1, "2": 2, "7": 0, "8": 6, "3": 5}
    items = list(counts.items())
    random.Random(1).shuffle(items)
    assert select_by_count(dict(items), 2) == [
        PlannedId("00010", 1),
        PlannedId("10", 1),
        PlannedId("2", 2),
        PlannedId("3", 5),
    ]
    assert len(select_by_count(counts)) == 5  # counts 0 and 6 are never predicted


def _entries(n: int) -> list[dict]:
    items = [PlannedId(f"{i:05d}", 1 + i % 5) for i in range(n)]
    return plan_entries(items, (0.8, 0.1, 0.1), seed=3)


@pytest.mark.parametrize(("n", "parts"), [(100, 1), (100, 4), (101, 7), (3, 8), (1000, 16)])
def test_split_parts_is_complete_disjoint_balanced_and_order_free(n, parts):
    entries = _entries(n)
    got = split_parts(entries, parts)
    assert len(got) == min(parts, n)
    ids = [e["id"] for p in got for e in p]
    assert sorted(ids) == sorted(e["id"] for e in entries) and len(ids) == len(set(ids))
    sizes = [len(p) for p in got]
    assert max(sizes) - min(sizes) <= 1
    for split in ("train", "validation", "test"):  # every part gets its share of each split
        per_part = [sum(e["split"] == split for e in p) for p in got]
        assert max(per_part) - min(per_part) <= 1
    shuffled = list(entries)
    random.Random(0).shuffle(shuffled)
    assert split_parts(shuffled, parts) == got


def test_split_parts_rejects_zero():
    with pytest.raises(PrepareError, match="parts=0"):
        split_parts(_entries(10), 0)


def test_plan_parts_round_trip_and_stale_parts_go(tmp_path: Path):
    parts = split_parts(_entries(50), 5)
    write_plan(tmp_path, parts)
    paths = write_plan(tmp_path, [*parts[:3], parts[3] + parts[4]])
    assert sorted(p.name for p in (tmp_path / "plan").glob("part-*")) == [p.name for p in paths]
    assert read_part(paths[0]) == parts[0]
    assert all(isinstance(e["id"], str) for e in read_part(paths[0]))


def test_plan_part_errors_name_file_and_line(tmp_path: Path):
    bad = tmp_path / "part-00000.jsonl"
    bad.write_text('{"id": "1", "count": 1, "split": "train"}\n{"id": "2"}\n')
    with pytest.raises(PrepareError, match="line 2"):
        read_part(bad)
    bad.write_text('{"id": "1", "count": 1, "split": "holdout"}\n')
    with pytest.raises(PrepareError, match="holdout"):
        read_part(bad)


# --------------------------------------------------------------------------- shards


def _write(
    folder: Path, n: int, max_bytes: int = 1 << 20, meta: bool = True
) -> list[shards.ShardInfo]:
    writer = shards.ShardWriter(folder, "train-p0", max_bytes)
    for i in range(n):
        writer.write(
            f"{i:05d}", bytes([i % 256]) * (700 + i), 1 + i % 5, b'{"x": 1}' if meta else None
        )
    return writer.close()


def _read(path: Path) -> tuple[list[str], list[str]]:
    got = list(shards.read_shard(path))
    return (
        [x.key for x in got if isinstance(x, shards.ShardSample)],
        [x.reason for x in got if isinstance(x, shards.Problem)],
    )


def test_shards_round_trip_in_webdataset_convention(tmp_path: Path):
    infos = _write(tmp_path, 30, max_bytes=16 * 1024)
    assert len(infos) > 1 and sum(len(s.ids) for s in infos) == 30
    assert all(p.stat().st_size <= 16 * 1024 + 10240 for p in tmp_path.glob("*.tar"))
    with tarfile.open(tmp_path / infos[0].name) as tar:
        assert tar.getnames()[:3] == ["00000.jpg", "00000.cls", "00000.json"]
    samples = [s for info in infos for s in shards.read_shard(tmp_path / info.name)]
    assert [s.key for s in samples] == [f"{i:05d}" for i in range(30)]
    assert [s.count() for s in samples] == [1 + i % 5 for i in range(30)]
    assert samples[3].image == bytes([3]) * 703
    assert shards.is_shard_channel(tmp_path) and not shards.is_shard_channel(tmp_path / "none")


def test_shards_are_reproducible(tmp_path: Path):
    a = _write(tmp_path / "a", 12)
    b = _write(tmp_path / "b", 12)
    assert [s.sha256 for s in a] == [s.sha256 for s in b]


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.85])
def test_truncated_shard_yields_what_came_before_and_one_problem(tmp_path: Path, cut):
    (info,) = _write(tmp_path, 20)
    path = tmp_path / info.name
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut)])
    keys, problems = _read(path)
    assert len(problems) == 1 and ("truncated" in problems[0] or "corrupt" in problems[0])
    assert keys == [f"{i:05d}" for i in range(len(keys))] and len(keys) < 20


def test_garbage_and_missing_file_are_problems_not_exceptions(tmp_path: Path):
    (tmp_path / "junk.tar").write_bytes(b"not a tar" * 200)
    assert _read(tmp_path / "junk.tar")[0] == [] and len(_read(tmp_path / "junk.tar")[1]) == 1
    assert "cannot open" in _read(tmp_path / "gone.tar")[1][0]


def test_member_without_label_and_bad_label_raise_value_error(tmp_path: Path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in [("1.jpg", b"x"), ("2.jpg", b"y"), ("2.cls", b"three")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    one, two = shards.read_samples(buffer, "t.tar")
    with pytest.raises(ValueError, match=r"no \.cls"):
        one.count()
    with pytest.raises(ValueError, match="not a count"):
        two.count()


def test_concatenated_shards_read_as_one_stream_like_pipe_mode(tmp_path: Path):
    infos = _write(tmp_path, 25, max_bytes=8 * 1024)
    stream = io.BytesIO(b"".join((tmp_path / s.name).read_bytes() for s in infos))
    got = list(shards.read_samples(stream, "train_0", stream=True))
    assert Counter(type(x).__name__ for x in got) == {"ShardSample": 25}


def test_split_key_follows_webdataset():
    assert shards.split_key("a/b/00523.jpg") == ("a/b/00523", "jpg")
    assert shards.split_key("00523.seg.png") == ("00523", "seg.png")
    assert shards.split_key("README") == ("README", "")


# --------------------------------------------------------------------------- who reads what

NAMES = [f"train/part-{p:05d}-{i:06d}.tar" for p in range(5) for i in range(3)]


@pytest.mark.parametrize("world", [1, 2, 3, 4, 16])
@pytest.mark.parametrize("epoch", [0, 1, 7])
def test_fully_replicated_every_shard_read_once_per_epoch(world, epoch):
    got = [
        shards.assign_shards(
            NAMES, seed=3, epoch=epoch, rank=r, world=world, local_rank=0, local_world=1
        )
        for r in range(world)
    ]
    flat = [n for g in got for n in g]
    assert sorted(flat) == sorted(NAMES)
    assert max(map(len, got)) - min(map(len, got)) <= 1


@pytest.mark.parametrize(("hosts", "per_host"), [(2, 1), (2, 2), (3, 4)])
def test_sharded_by_key_splits_each_hosts_share_among_its_processes(hosts, per_host):
    shares = [NAMES[h::hosts] for h in range(hosts)]  # what SageMaker hands each host
    flat = [
        n
        for h in range(hosts)
        for lr in range(per_host)
        for n in shards.assign_shards(
            shares[h],
            seed=1,
            epoch=2,
            rank=h * per_host + lr,
            world=hosts * per_host,
            local_rank=lr,
            local_world=per_host,
            distribution="ShardedByS3Key",
        )
    ]
    assert sorted(flat) == sorted(NAMES)


def test_shard_order_changes_per_epoch_and_is_seeded():
    a = shards.epoch_order(NAMES, 5, 0)
    assert a == shards.epoch_order(list(reversed(NAMES)), 5, 0)
    assert a != shards.epoch_order(NAMES, 5, 1) and sorted(a) == sorted(NAMES)
    with pytest.raises(ValueError, match="rank 2"):
        shards.assign_shards(NAMES, seed=0, epoch=0, rank=2, world=2, local_rank=0, local_world=1)
    with pytest.raises(ValueError, match="distribution"):
        shards.assign_shards(
            NAMES, seed=0, epoch=0, rank=0, world=1, local_rank=0, local_world=1,
            distribution="Replicated",
        )  # fmt: skip


@pytest.mark.parametrize("size", [0, 1, 10, 1000])
def test_shuffle_buffer_keeps_every_item_once(size):
    items = list(range(300))
    out = list(shards.shuffled(iter(items), size, random.Random(0)))
    assert sorted(out) == items
    assert (out == items) == (size <= 1)
