"""Pipe-mode shard channels: a FIFO per pass, fed as SageMaker feeds it (``PipeFeeder``), read
by the index (pass 0), by each epoch and by each evaluation; ranks split the stream by key."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
from PIL import Image

from bincounter.errors import DataError
from bincounter.shards import SHARDED_BY_S3_KEY, ShardWriter, shard_files
from bincounter.training.channels import (
    ChannelInput,
    PipeChannel,
    PipeStream,
    index_pipe,
    load_channel,
    make_reader,
    open_pipe,
)
from bincounter.training.distributed import DistContext
from bincounter.training.hyperparameters import parse_hyperparameters

from support import QUICK_HPS, PipeFeeder, build_channel, build_tree, run_train, single_host_env


def _jpeg(seed: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 12), (seed * 40 % 256, 90, 200)).save(out, "JPEG")
    return out.getvalue()


def _objects(folder: Path, shards: dict[str, list[tuple[str, int]]]) -> list[Path]:
    """Shards holding (key, count) samples, one per prefix: the channel's S3 objects."""
    for prefix, samples in shards.items():
        w = ShardWriter(folder, prefix, 10 * 1024 * 1024)
        for i, (key, count) in enumerate(samples):
            w.write(key, _jpeg(i), count)
        w.close()
    return shard_files(folder)


def _good(n: int, prefix: str = "g") -> list[tuple[str, int]]:
    return [(f"{prefix}{i:03d}", 1 + i % 5) for i in range(n)]


@pytest.fixture
def feeders():
    started: list[PipeFeeder] = []

    def feed(root: Path, files: list[Path]) -> PipeFeeder:
        feeder = PipeFeeder(root, files)
        feeder.start()
        started.append(feeder)
        return feeder

    yield feed
    for feeder in started:
        feeder.stop()


def test_index_reads_pass_zero_and_each_epoch_reads_the_next_pass_once(tmp_path, feeders):
    files = _objects(tmp_path / "s3", {"a": _good(20), "b": _good(15, "h")})
    root = tmp_path / "data" / "train"
    root.parent.mkdir()
    feeders(root, files)
    channel = index_pipe(ChannelInput("train", root), 16, 0.0)
    assert isinstance(channel, PipeChannel) and len(channel) == 35
    stream = PipeStream(channel, 16, seed=3, buffer=8, train=True)
    orders = []
    for epoch in range(3):
        stream.set_epoch(epoch)
        assert stream.pass_number == epoch + 1
        orders.append([key for key, _, _ in stream.plan()])
        assert sorted(orders[-1]) == sorted(s.id for s in channel)
    assert orders[0] != orders[1] != orders[2]
    assert len(stream) == 35 and stream.batches() == 35


def test_bad_samples_in_the_stream_are_named_and_counted(tmp_path, feeders, caplog):
    folder = tmp_path / "s3"
    _objects(folder, {"a": _good(6)})
    w = ShardWriter(folder, "b", 10 * 1024 * 1024)
    w.write("g003", _jpeg(3), 4)  # duplicate id
    w.write("b1", b"not a photo", 3)
    w.write("b2", _jpeg(8), 9)
    w.close()
    root = tmp_path / "train"
    feeders(root, shard_files(folder))
    with caplog.at_level(logging.WARNING, logger="bincounter.training"):
        channel = index_pipe(ChannelInput("train", root), 16, 0.5)
    assert sorted(s.id for s in channel) == [f"g{i:03d}" for i in range(6)]
    problems = {p.key: p.reason for p in channel.problems}
    assert set(problems) == {"g003", "b1", "b2"}
    assert problems["g003"].startswith("duplicate id")
    assert problems["b1"].startswith("photo:") and problems["b2"] == "count 9 outside 1..5"
    assert all(str(p) in caplog.text for p in channel.problems)  # named in the log too


def test_a_cut_object_costs_the_rest_of_the_pass_and_counts_against_the_limit(
    tmp_path, feeders, caplog
):
    """tarfile finds no aligned header after a cut object and would skip the rest quietly:
    the lost bytes are measured, named, and fail the job above ``max_bad_fraction``."""
    files = _objects(tmp_path / "s3", {"a": _good(6), "b": _good(4, "c"), "d": _good(6, "d")})
    files[1].write_bytes(files[1].read_bytes()[:1600])  # inside the first photo
    feeders(tmp_path / "strict", files)
    with pytest.raises(DataError) as info:
        index_pipe(ChannelInput("train", tmp_path / "strict"), 16, 0.3)
    assert "of the Pipe stream's bytes could not be read" in info.value.reason
    assert "truncated or corrupt object in the stream" in info.value.reason
    feeders(tmp_path / "lenient", files)
    with caplog.at_level(logging.WARNING, logger="bincounter.training"):
        channel = index_pipe(ChannelInput("train", tmp_path / "lenient"), 16, 0.9)
    assert [s.id for s in channel] == [k for k, _ in _good(6)]
    (lost,) = [p for p in channel.problems if p.lost_bytes]
    assert 0 < lost.lost_bytes < lost.stream_bytes
    assert "bytes after byte" in lost.reason and "unreadable" in lost.reason
    assert str(lost) in caplog.text


def test_ranks_on_fully_replicated_hosts_split_the_stream_each_sample_once(tmp_path, feeders):
    files = _objects(tmp_path / "s3", {"a": _good(40), "b": _good(23, "h")})
    seen = []
    for rank in range(3):  # every host receives the whole stream
        root = tmp_path / f"host{rank}" / "train"
        root.parent.mkdir()
        feeders(root, files)
        stream = PipeStream(
            index_pipe(ChannelInput("train", root), 16, 0.0), 16, rank=rank, world=3
        )
        stream.set_epoch(0)
        keys = [key for key, _, _ in stream.plan()]
        assert len(keys) == len(stream) and stream.size == 63
        seen += keys
    assert sorted(seen) == sorted([k for k, _ in _good(40)] + [k for k, _ in _good(23, "h")])


def test_sharded_hosts_keep_their_whole_share(tmp_path, feeders):
    shares = [_good(7), _good(9, "h")]
    for host, share in enumerate(shares):
        root = tmp_path / f"host{host}" / "train"
        root.parent.mkdir()
        feeders(root, _objects(tmp_path / f"s3-{host}", {"x": share}))
        channel = index_pipe(ChannelInput("train", root, SHARDED_BY_S3_KEY), 16, 0.0)
        stream = PipeStream(channel, 16, rank=host, world=2)
        stream.set_epoch(0)
        assert sorted(k for k, _, _ in stream.plan()) == [k for k, _ in share]


def test_mid_epoch_resume_reads_exactly_the_rest(tmp_path, feeders):
    root = tmp_path / "train"
    feeders(root, _objects(tmp_path / "s3", {"a": _good(30)}))
    channel = index_pipe(ChannelInput("train", root), 16, 0.0)
    full = PipeStream(channel, 16, seed=5, buffer=10, batch_size=4)
    full.set_epoch(2)
    order = [k for k, _, _ in full.plan()]
    resumed = PipeStream(channel, 16, seed=5, buffer=10, batch_size=4)
    resumed.set_epoch(2, start=12)
    assert [k for k, _, _ in resumed.plan()] == order[12:]
    assert len(resumed) == 18 and resumed.batches() == 5


def test_evaluation_takes_a_pass_of_its_own_each_time(tmp_path, feeders):
    root = tmp_path / "validation"
    feeders(root, _objects(tmp_path / "s3", {"a": _good(9)}))
    channel = index_pipe(ChannelInput("validation", root), 16, 0.0)
    hp = parse_hyperparameters({"image_size": "32", "batch_size": "4"})
    for expected_pass in (1, 2):
        loader, stream = make_reader(channel, hp, DistContext(), 1, train=False)
        assert stream.pass_number == expected_pass and stream.workers == 1
        assert sum(len(labels) for _, labels in loader) == 9


def test_load_channel_reads_pipe_mode_and_refuses_several_processes_per_host(tmp_path, feeders):
    root = tmp_path / "train"
    feeders(root, _objects(tmp_path / "s3", {"a": _good(5)}))
    hp = parse_hyperparameters({"image_size": "32"})
    env = single_host_env(tmp_path, {"train": {"TrainingInputMode": "Pipe"}})
    channel = load_channel("train", root, env, hp, 1)
    assert isinstance(channel, PipeChannel)
    with pytest.raises(DataError) as info:  # the stream has gone by: nothing to export from
        channel.photo_files(tmp_path / "photos")
    assert "is a Pipe stream, read once per pass" in info.value.reason
    with pytest.raises(DataError) as info:
        index_pipe(ChannelInput("train", root, local_world=2), 16, 0.0)
    assert "2 training processes run on each host" in info.value.reason
    assert "FastFile" in info.value.reason


def test_a_pass_that_never_appears_fails_with_its_name(tmp_path):
    with pytest.raises(DataError) as info:
        open_pipe(tmp_path / "train", 4, wait_s=0.2)
    assert "train_4 did not appear" in info.value.reason


@pytest.mark.slow
def test_train_on_pipe_channels_sees_every_photo_each_epoch(tmp_path, feeders):
    """A real ``./train`` reading train and validation from FIFOs fed with real ABID shards:
    the same photos per epoch as the File channel of the same shards, and a saved model."""
    objects = tmp_path / "objects"
    build_channel(objects / "train", "train", 12, "shards")
    build_channel(objects / "validation", "validation", 6, "shards")
    base = build_tree(tmp_path / "opt_ml", QUICK_HPS, {})
    data = base / "input" / "data"
    data.mkdir(parents=True, exist_ok=True)
    for channel in ("train", "validation"):
        feeders(data / channel, shard_files(objects / channel))
    (base / "input" / "config" / "inputdataconfig.json").write_text(
        json.dumps({c: {"TrainingInputMode": "Pipe"} for c in ("train", "validation")})
    )
    done = run_train(base, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    log = done.stdout + done.stderr
    epochs = int(QUICK_HPS["epochs"])
    for epoch in range(1, epochs + 1):
        assert f"epoch {epoch}: 60 training images across 1 rank(s)" in log
    assert (base / "model" / "model.pt").is_file()
    final = json.loads((base / "output" / "data" / "metrics.json").read_text())["final"]
    assert final["validation_by_rule"]["argmax"]["n"] == 30
