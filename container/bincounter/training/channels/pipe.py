"""Pipe-mode shard channels: SageMaker streams the channel's objects, the tar shards back to
back, into a FIFO ``<channel>_<n>``, a fresh one for each pass.

Pass 0 is the index (every sample read and decoded, as for shard files, so problems are
counted before the first step); each later pass is one epoch of training or one evaluation, in
the order the job reads them. A FIFO has one reader, so one process per host reads it (several
processes per host are refused with the reason: use File or FastFile there) through one loader
worker. Under ``FullyReplicated`` every host receives the whole stream and keeps the samples
whose key hashes to its rank; under ``ShardedByS3Key`` it keeps all of its share. Shuffling is
the buffer's only (plus S3's ``ShuffleConfig`` if the channel sets one); a mid-epoch resume
skips the first samples of the rank's shuffled stream, exact when the stream comes in the same
order (no ``ShuffleConfig``). A damaged object in a stream costs the rest of that pass: a tar
stream cannot resynchronise after a bad header, so the index counts what it lost.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ... import shards as tar_shards
from ...errors import DataError
from ..data import ChannelPhoto
from .base import ChannelInput
from .shard_index import Pairs, ShardChannel, accept, check_samples, indexed
from .shard_stream import ShardStream

log = logging.getLogger(__name__)

#: How long to wait for SageMaker to create the next pass's FIFO before failing.
PIPE_WAIT_S = 600.0
#: The name the whole stream goes by in the index (``ShardChannel.good``) and in problems.
STREAM = "stream"


def pipe_path(root: Path, n: int) -> Path:
    """SageMaker's FIFO for the ``n``-th pass over a Pipe channel: ``<channel dir>_<n>``."""
    return Path(f"{root}_{n}")


def open_pipe(root: Path, n: int, wait_s: float = PIPE_WAIT_S) -> IO[bytes]:
    """Open pass ``n``'s FIFO, waiting for SageMaker to create it (it appears once the
    previous pass was read to its end and closed)."""
    path = pipe_path(root, n)
    deadline = time.monotonic() + wait_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise DataError(
                f"Pipe channel: {path} did not appear within {wait_s:.0f} s (pass {n} of the "
                "channel); was the previous pass read to its end?"
            )
        time.sleep(0.05)
    return open(path, "rb")


class PipeChannel(ShardChannel):
    """A Pipe channel's index (the good samples of pass 0, in stream order) and which pass
    comes next. ``take_pass`` is called in the main process, once per epoch or evaluation."""

    def __init__(
        self,
        name: str,
        root: Path,
        good: Pairs,
        distribution: str = tar_shards.FULLY_REPLICATED,
    ) -> None:
        super().__init__(name, {STREAM: root}, {STREAM: good}, distribution, 1)
        self.root = root
        self.next_pass = 1

    def take_pass(self) -> int:
        n, self.next_pass = self.next_pass, self.next_pass + 1
        return n

    def stream(self, **options) -> PipeStream:
        return PipeStream(self, **options)

    def photo_files(self, folder: Path) -> list[ChannelPhoto]:
        """The stream has gone by and cannot be read again: ``DataError`` says so."""
        raise DataError(
            f"channel '{self.name}' is a Pipe stream, read once per pass: its photos are not "
            "on disk after training (give the channel in FastFile or File mode to have them)"
        )


def index_pipe(
    source: ChannelInput, image_size: int, max_bad_fraction: float, *, wait_s: float = PIPE_WAIT_S
) -> PipeChannel:
    """Read pass 0 of a Pipe channel to its end, decoding every photo: the index the later
    passes are read against (the same checks as ``index_shards``)."""
    name, root = source.name, source.root
    if source.local_world > 1:
        raise DataError(
            f"channel '{name}' is in Pipe mode, which gives each host one FIFO with one reader, "
            f"but {source.local_world} training processes run on each host: use File or "
            "FastFile input mode (FastFile streams the same shards), or one process per host"
        )
    with open_pipe(root, 0, wait_s) as f:
        scanned = check_samples(tar_shards.read_samples(f, STREAM, stream=True), STREAM, image_size)
    lost = sum(p.lost_bytes for p in scanned[1])
    total = max((p.stream_bytes for p in scanned[1]), default=0)
    if lost and lost / total > max_bad_fraction:
        raise DataError(
            f"channel '{name}': {100 * lost / total:.1f}% of the Pipe stream's bytes could not be "
            f"read (above max_bad_fraction={max_bad_fraction:g}): "
            f"{next(p for p in scanned[1] if p.lost_bytes)}"
        )
    good, problems = accept(name, {STREAM: scanned}, max_bad_fraction)
    channel = PipeChannel(name, root, good[STREAM], source.distribution)
    channel.problems = tuple(problems)
    if not channel:
        raise DataError(
            f"channel '{name}' ({pipe_path(root, 0)}): its Pipe stream holds no readable "
            "samples; a Pipe channel must hold tar shards (prepare --layout shards)"
        )
    return channel


def rank_of_key(key: str, world: int) -> int:
    """The rank that trains on ``key`` when every host receives the whole Pipe stream: a
    stable hash, so all hosts agree without talking and each sample has exactly one rank."""
    return zlib.crc32(key.encode()) % world


class PipeStream(ShardStream):
    """This rank's samples of a Pipe channel for one pass, read from that pass's FIFO by one
    loader worker (or the main process), through the shuffle buffer.

    Training takes the next pass in ``set_epoch``; an evaluation stream, made anew for each
    evaluation, takes its pass when made. Both happen in the main process, before the worker
    is started.
    """

    channel: PipeChannel

    def __init__(self, channel: PipeChannel, image_size: int, **kwargs) -> None:
        kwargs["workers"] = min(1, kwargs.get("workers", 0))
        super().__init__(channel, image_size, **kwargs)
        self.pass_number: int | None = None if self.train else channel.take_pass()
        if self.channel.distribution == tar_shards.SHARDED_BY_S3_KEY:
            # SageMaker gave this host a share already, and a host runs one process.
            self.keys = list(channel.good[STREAM])
        else:
            self.keys = [
                (key, count)
                for key, count in channel.good[STREAM]
                if rank_of_key(key, self.world) == self.rank
            ]

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        super().set_epoch(epoch, start)
        if self.train:
            self.pass_number = self.channel.take_pass()

    def _worker_sizes(self) -> list[int]:
        return [len(self.keys)]

    def plan(self, worker: int = 0, workers: int = 1) -> Iterator[tuple[str, int, bytes]]:
        if workers != 1:
            raise ValueError(f"a Pipe stream is read by one worker, not {workers}")
        if self.pass_number is None:
            raise RuntimeError("PipeStream read before it was given a pass (set_epoch)")
        rng = random.Random(f"{self.seed}:{self.epoch}:{self.rank}:0")
        items = tar_shards.shuffled(self._read_pass(), self.buffer, rng)
        yield from itertools.islice(items, self.skips()[0], None)

    def _read_pass(self) -> Iterator[tuple[str, int, bytes]]:
        assert self.pass_number is not None
        wanted = dict(self.keys)
        name = pipe_path(self.channel.root, self.pass_number).name
        with open_pipe(self.channel.root, self.pass_number) as f:
            # Read to the end even past the last wanted sample: SageMaker opens the next
            # pass's FIFO once this one is drained and closed.
            items = tar_shards.read_samples(f, name, stream=True, wanted=set(wanted))
            yield from indexed(items, wanted)
        if wanted:
            log.warning(
                "channel '%s' pass %d: %d indexed samples not in the stream (first %s)",
                self.channel.name,
                self.pass_number,
                len(wanted),
                next(iter(wanted)),
            )
