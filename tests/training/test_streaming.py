"""Training from tar shards: who reads what, the index of good samples, and the same epochs as
folders (one process, two hosts over gloo, a real ``./train``)."""

from __future__ import annotations

import io
import json
import logging
import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, get_worker_info

from bincounter.errors import DataError
from bincounter.imaging import load_and_preprocess
from bincounter.shards import SHARDED_BY_S3_KEY, ShardWriter
from bincounter.training.channels import (
    ChannelInput,
    FolderChannel,
    ShardChannel,
    ShardStream,
    index_shards,
    load_channel,
    make_reader,
)
from bincounter.training.data import discover_channel, verify_samples
from bincounter.training.distributed import DistContext
from bincounter.training.hyperparameters import parse_hyperparameters
from bincounter.training.sampler import FolderSampler

from support import QUICK_HPS, build_channel, build_tree, free_port, run_train, single_host_env


def _channel(sizes: list[int], distribution: str = "FullyReplicated", local_world: int = 1):
    """A channel index without files: enough for the bookkeeping."""
    names = [f"train-{i:06d}.tar" for i in range(len(sizes))]
    good = {
        n: [(f"{n}/{j}", 1 + j % 5) for j in range(k)] for n, k in zip(names, sizes, strict=True)
    }
    return ShardChannel("train", {n: Path(n) for n in names}, good, distribution, local_world)


def _keys(stream: ShardStream, workers: int) -> list[str]:
    return [
        key
        for name in stream.rank_shards()
        for w in range(max(1, workers))
        if name in stream.worker_shards(w, workers)
        for key, _ in stream.channel.good[name]
    ]


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("workers", [0, 1, 3])
@pytest.mark.parametrize("epoch", [0, 1])
def test_every_sample_once_per_epoch_across_ranks_and_workers(world, workers, epoch):
    channel = _channel([5, 1, 7, 3, 0, 4, 6])
    seen: list[str] = []
    total = 0
    for rank in range(world):
        stream = ShardStream(channel, 8, rank=rank, world=world, workers=workers, batch_size=2)
        stream.set_epoch(epoch)
        per_worker = [stream.worker_shards(w, max(1, workers)) for w in range(max(1, workers))]
        assert sorted(n for share in per_worker for n in share) == sorted(stream.rank_shards())
        seen += _keys(stream, max(1, workers))
        total += len(stream)
        assert stream.size == len(channel) == 26
    assert sorted(seen) == sorted(s.id for s in channel) and total == 26


def test_sharded_by_s3_key_splits_each_hosts_share_by_local_rank():
    hosts = [_channel([3, 4, 5], SHARDED_BY_S3_KEY, 2), _channel([2, 2], SHARDED_BY_S3_KEY, 2)]
    for host, channel in enumerate(hosts):
        shares = []
        for local in range(2):
            stream = ShardStream(channel, 8, rank=2 * host + local, world=4, local_rank=local)
            stream.set_epoch(1)
            shares.append(stream.rank_shards())
        assert sorted(shares[0] + shares[1]) == sorted(channel.good)
        assert not set(shares[0]) & set(shares[1])


def test_shard_order_changes_per_epoch_but_evaluation_reads_sorted():
    channel = _channel([1] * 12)
    train = ShardStream(channel, 8, seed=3)
    orders = []
    for epoch in range(3):
        train.set_epoch(epoch)
        orders.append(train.rank_shards())
    assert len({tuple(o) for o in orders}) == 3
    evaluation = ShardStream(channel, 8, train=False, rank=1, world=2)
    assert evaluation.rank_shards() == sorted(channel.good)[1::2]
    assert evaluation.buffer == 0


@pytest.mark.parametrize(
    ("start", "skips"),
    [
        (0, [0, 0]),
        (4, [4, 0]),
        (7, [4, 3]),  # worker 1 ran dry after a partial batch of 3
        (11, [8, 3]),
        (15, [12, 3]),
        (16, [13, 3]),  # worker 0's last, partial batch
    ],
)
def test_resume_skips_replay_the_loaders_round_robin(start, skips):
    stream = ShardStream(_channel([13, 3]), 8, workers=2, batch_size=4, train=False)
    stream.set_epoch(0, start)
    assert stream.skips() == skips
    assert len(stream) == 16 - start
    assert stream.batches() == sum(
        math.ceil((s - k) / 4) for s, k in zip([13, 3], skips, strict=True)
    )


def test_batches_count_each_workers_partial_tail():
    stream = ShardStream(_channel([5, 5, 5]), 8, workers=2, batch_size=4, train=False)
    # worker 0 reads two shards (10 samples: 3 batches), worker 1 one shard (5: 2 batches)
    assert stream.batches() == 5 and len(stream) == 15


# --------------------------------------------------------------------------- the index


def _jpeg(seed: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 12), (seed * 40 % 256, 90, 200)).save(out, "JPEG")
    return out.getvalue()


def _shards(folder: Path) -> Path:
    """Three small shards: the first whole, the second with four kinds of bad sample, the
    third cut short."""
    w = ShardWriter(folder, "a-good", 10 * 1024 * 1024)
    for i in range(6):
        w.write(f"g{i}", _jpeg(i), 1 + i % 5)
    w.close()
    w = ShardWriter(folder, "b-bad", 10 * 1024 * 1024)
    w.write("b0", _jpeg(7), 2)
    w.write("g3", _jpeg(3), 4)  # duplicate id
    w.write("b1", b"not a photo", 3)  # undecodable
    w.write("b2", _jpeg(8), 9)  # count outside 1..5
    w._add("b3.jpg", _jpeg(9))  # a photo with no label
    w.shards[-1].ids.append("b3")
    w.close()
    w = ShardWriter(folder, "c-cut", 10 * 1024 * 1024)
    for i in range(3):
        w.write(f"c{i}", _jpeg(i), 5)
    (info,) = w.close()
    path = folder / info.name
    path.write_bytes(path.read_bytes()[: info.bytes // 2])  # into the second sample
    return folder


def test_index_skips_and_names_each_kind_of_bad_sample(tmp_path, caplog):
    root = _shards(tmp_path / "train")
    with caplog.at_level(logging.WARNING, logger="bincounter.training"):
        channel = index_shards(ChannelInput("train", root), 16, 0.5)
    assert sorted(s.id for s in channel) == ["b0", "c0", *(f"g{i}" for i in range(6))]
    problems = {(p.shard, p.key): p.reason for p in channel.problems}
    assert problems[("b-bad-000000.tar", "g3")] == "duplicate id, first in a-good-000000.tar"
    assert problems[("b-bad-000000.tar", "b1")].startswith("photo:")
    assert problems[("b-bad-000000.tar", "b2")] == "count 9 outside 1..5"
    assert problems[("b-bad-000000.tar", "b3")] == "no .cls member (label)"
    cut = [reason for (shard, _), reason in problems.items() if shard == "c-cut-000000.tar"]
    assert len(cut) == 1 and "truncated" in cut[0]
    assert len(problems) == 5
    # ... and each is named in the job's log, where a person reads it.
    assert all(str(p) in caplog.text for p in channel.problems)


def test_index_fails_above_max_bad_fraction_naming_the_first_problem(tmp_path):
    root = _shards(tmp_path / "train")
    with pytest.raises(DataError) as info:
        index_shards(ChannelInput("train", root), 16, 0.2)
    assert "5 problems in 13 samples" in info.value.reason
    assert "max_bad_fraction=0.2" in info.value.reason and "b-bad-000000.tar" in info.value.reason


def test_stream_yields_each_indexed_sample_once_in_a_shuffled_order(tmp_path):
    channel = index_shards(ChannelInput("train", _shards(tmp_path / "train")), 16, 0.5)
    stream = ShardStream(channel, 16, seed=1, buffer=4)
    orders = []
    for epoch in range(2):
        stream.set_epoch(epoch)
        orders.append([key for key, _, _ in stream.plan()])
        assert sorted(orders[-1]) == sorted(s.id for s in channel)
    assert orders[0] != orders[1]
    images = list(stream)
    assert len(images) == len(channel)
    assert images[0][0].shape == (3, 16, 16) and images[0][0].dtype == torch.uint8


def test_mixed_layouts_fail_with_a_reason(tmp_path):
    hp = parse_hyperparameters({})
    root = _shards(tmp_path / "train")
    (root / "1").mkdir()
    (root / "1" / "x.jpg").write_bytes(_jpeg(1))
    with pytest.raises(DataError, match="mixes tar shards with 1 photo"):
        load_channel("train", root, single_host_env(tmp_path, {}), hp, 1)


# --------------------------------------------------------------------------- real photos


class _KeyStream(ShardStream):
    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        for key, _, _ in self.plan(worker, workers):
            yield key


@pytest.mark.slow
def test_mid_epoch_resume_yields_exactly_the_rest_with_loader_workers():
    channel = _channel([9, 2, 6, 5])
    channel.files = {}  # plan() is replaced below: no file is opened

    def plan_keys(self, worker, workers):
        import random

        from bincounter.shards import shuffled

        rng = random.Random(f"{self.seed}:{self.epoch}:{self.rank}:{worker}")
        keys = [k for n in self.worker_shards(worker, workers) for k, _ in self.channel.good[n]]
        for i, key in enumerate(shuffled(keys, self.buffer, rng)):
            if i >= self.skips()[worker]:
                yield key, 0, b""

    _KeyStream.plan = plan_keys
    stream = _KeyStream(channel, 8, workers=3, batch_size=4, seed=5, buffer=3)
    stream.set_epoch(2)
    full = [k for batch in DataLoader(stream, batch_size=4, num_workers=3) for k in batch]
    assert sorted(full) == sorted(s.id for s in channel)
    position = 0
    for batch in DataLoader(stream, batch_size=4, num_workers=3):
        position += len(batch)
        resumed = _KeyStream(channel, 8, workers=3, batch_size=4, seed=5, buffer=3)
        resumed.set_epoch(2, position)
        rest = [k for b in DataLoader(resumed, batch_size=4, num_workers=3) for k in b]
        # the same photos; the order may differ (the new loader's round-robin restarts at worker 0)
        assert sorted(rest) == sorted(full[position:]), position
        if position > 12:
            break


@pytest.mark.slow
def test_shards_hold_the_same_samples_and_evaluate_exactly_as_folders(tmp_path):
    hp = parse_hyperparameters({**QUICK_HPS, "image_size": "48"})
    ctx = DistContext()
    for split, per_count in (("train", 4), ("validation", 2)):
        folders = build_channel(tmp_path / "folders" / split, split, per_count)
        shards = build_channel(tmp_path / "shards" / split, split, per_count, layout="shards")
        assert len(list(shards.glob("*.tar"))) > 1
        from_folders = FolderChannel(
            split, verify_samples(split, discover_channel(split, folders), 48, 0.0)
        )
        from_shards = index_shards(ChannelInput(split, shards), 48, 0.0)
        assert sorted((s.id, s.count) for s in from_folders) == sorted(
            (s.id, s.count) for s in from_shards
        )
        # one process: each epoch, both layouts train on exactly the same photos
        _, stream = make_reader(from_shards, hp, ctx, 0, train=True)
        sampler = FolderSampler(len(from_folders), ctx, hp.seed)
        for epoch in range(2):
            stream.set_epoch(epoch)
            sampler.set_epoch(epoch)
            assert sorted(k for k, _, _ in stream.plan()) == sorted(
                from_folders[i].id for i in sampler
            )
    # evaluation sums over the channel, so the order does not matter: identical metrics
    from bincounter.model import build_model
    from bincounter.training.precision import resolve
    from bincounter.training.train import evaluate

    torch.manual_seed(0)
    model = build_model("resnet18")
    precision = resolve(hp, ctx.device)
    a = evaluate(model, from_folders, hp, ctx, 0, precision)
    b = evaluate(model, from_shards, hp, ctx, 0, precision)
    assert a[1] and {rule: s["n"] for rule, s in a[1].items()} == {rule: 10 for rule in b[1]}
    assert a[1] == b[1] and a[0] == pytest.approx(b[0], rel=1e-5)


def _epoch_lines(text: str) -> list[dict]:
    from support import parse_metrics

    return [parse_metrics(line) for line in text.splitlines() if line.startswith("epoch=")]


@pytest.mark.slow
def test_train_on_a_shard_channel_matches_folders(tmp_path):
    """A real ``./train``: the same photos per epoch as folders; the order differs by design
    (shuffle buffer and shard order, not one permutation), so losses agree only roughly."""
    hps = {**QUICK_HPS, "image_size": "48", "augment": "none"}
    counts = {"train": 4, "validation": 2}
    folders = build_tree(tmp_path / "folders", hps, counts)
    # The shard run also exports: the export reads photos by path, so the job writes the
    # shard channel's photos out for it.
    shards = build_tree(
        tmp_path / "shards", {**hps, "export_openvino": "true"}, counts, layout="shards"
    )
    results = [run_train(folders), run_train(shards)]
    for result in results:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
        assert result.stdout.count("20 training images across 1 rank(s)") == 2
    assert "4 shards, 20 samples, 0 problems" in results[1].stdout
    a, b = (_epoch_lines(r.stdout) for r in results)
    assert [e["epoch"] for e in a] == [e["epoch"] for e in b] == [1, 2]
    for x, y in zip(a, b, strict=True):
        assert abs(x["train:loss"] - y["train:loss"]) < 0.5 * max(x["train:loss"], 0.5)
    metrics = json.loads((shards / "output" / "data" / "metrics.json").read_text())
    assert metrics["final"]["validation"]["accuracy"] >= 0
    openvino = json.loads((shards / "model" / "model_card.json").read_text())["openvino"]
    assert set(openvino["files"]) == {"fp32", "int8"}, openvino
    assert openvino["int8"]["validation"]["photos"] == 10


@pytest.mark.slow
def test_two_hosts_ddp_on_shards_see_every_sample_once_per_epoch(tmp_path):
    import os
    import subprocess
    import sys

    from support import REPO

    hosts = ["127.0.0.1", "localhost"]
    port = str(free_port())
    procs = []
    for host in hosts:
        tree = build_tree(
            tmp_path / host,
            {**QUICK_HPS, "epochs": "2", "batch_size": "4", "image_size": "48"},
            {"train": 5, "validation": 2},
            layout="shards",
            resource_config={"current_host": host, "hosts": hosts, "network_interface_name": "lo"},
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, str(REPO / "train")],
                env={**os.environ, "SAGEMAKER_BASE_DIR": str(tree), "BINCOUNTER_MASTER_PORT": port},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out[-3000:]
    master = outputs[0]
    assert "rank 0 of 2" in master and "rank 1 of 2" in outputs[1]
    assert master.count("25 training images across 2 rank(s)") == 2
    assert [e["epoch"] for e in _epoch_lines(master)] == [1, 2]


@pytest.mark.slow
def test_corrupt_shard_is_skipped_and_counted_or_fails_the_job(tmp_path):
    hps = {**QUICK_HPS, "epochs": "1", "image_size": "48", "max_bad_fraction": "0.3"}
    base = build_tree(tmp_path, hps, {"train": 3, "validation": 1}, layout="shards")
    good = sorted((base / "input" / "data" / "train").glob("*.tar"))[0]
    shard = good.with_name("train-extra.tar")  # the first shard, cut short under a new name
    shard.write_bytes(good.read_bytes()[:3000])
    result = run_train(base)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert f"skipping {shard.name}" in result.stdout and "1 problems skipped" in result.stdout
    assert result.stdout.count("15 training images across 1 rank(s)") == 1

    (base / "input" / "config" / "hyperparameters.json").write_text(
        json.dumps({**hps, "max_bad_fraction": "0"})
    )
    failed = run_train(base, TRAINING_JOB_NAME="strict")
    assert failed.returncode != 0
    reason = (base / "output" / "failure").read_text()
    assert "max_bad_fraction=0" in reason and shard.name in reason


def test_a_shard_channel_s_photos_are_written_out_as_files_with_their_counts(tmp_path):
    channel = index_shards(ChannelInput("train", _shards(tmp_path / "train")), 16, 0.5)
    photos = channel.photo_files(tmp_path / "photos")
    assert sorted(p.id for p in photos) == sorted(s.id for s in channel)
    counts = {s.id: s.count for s in channel}
    for photo in photos:
        assert photo.path.parent == tmp_path / "photos" and photo.count == counts[photo.id]
        assert load_and_preprocess(photo.path, 16).shape == (3, 16, 16)
    folders = FolderChannel(
        "train", discover_channel("train", build_channel(tmp_path / "folders", "train", 1))
    )
    assert folders.photo_files(tmp_path / "unused") == folders
    assert not (tmp_path / "unused").exists()


def test_a_shard_gone_after_indexing_is_logged_not_raised(tmp_path, caplog):
    channel = index_shards(ChannelInput("train", _shards(tmp_path / "train")), 16, 0.5)
    (tmp_path / "train" / "a-good-000000.tar").unlink()
    with caplog.at_level(logging.WARNING, logger="bincounter.training"):
        keys = [key for key, _, _ in ShardStream(channel, 16).plan()]
    assert sorted(keys) == ["b0", "c0"] and "a-good-000000.tar: cannot open" in caplog.text
