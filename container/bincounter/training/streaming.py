"""Training on tar shards: each rank streams its own shards, every sample once per epoch.

A channel of ``*.tar`` files (``bincounter.shards``, what ``prepare --layout shards`` writes)
is read sequentially instead of one file per photo, which is what lets a job train on all of
ABID from a File or FastFile channel. The folder layout's guarantees are kept:

* **Verified once, before the first step.** Every shard is read and every photo decoded
  (the same ``imaging`` path as folders) into an index of the good samples per shard. A
  truncated or corrupt archive, a member without a label, a duplicate id or an undecodable
  photo is logged by shard and key, skipped, and counted against ``max_bad_fraction`` (the job
  fails before training when the share is exceeded). Training then yields only indexed
  samples, so every epoch sees the same set and every rank knows the sizes; nothing found bad
  can stop an epoch midway. A damaged archive counts as one problem: how many samples followed
  the damage cannot be known from a cut file.
* **Every sample once per epoch across ranks.** ``shards.assign_shards`` gives each process
  its shards of the epoch's seeded order (by global rank on a ``FullyReplicated`` channel, by
  local rank within the host's share on a ``ShardedByS3Key`` one); a process splits them over
  its DataLoader workers. Ranks get unequal counts; DDP's ``Join`` absorbs the tail, and the
  SIGTERM vote (a collective) is only taken on the steps all ranks still run.
* **Shuffled within a bound.** Shard order changes every epoch, and samples pass a shuffle
  buffer of ``SHUFFLE_BUFFER`` undecoded photos, seeded by (seed, epoch, rank, worker). The
  order therefore differs from the folder layout's full permutation by design; the set of
  samples per epoch is the same.
* **Resume.** The stream is a pure function of (seed, epoch, rank, worker), so a restart at
  an epoch boundary is exact. Mid-epoch, each worker skips the samples the DataLoader's
  in-order round-robin over workers had taken from it (replayed in ``skips``, workers that ran
  dry included), so the photos are exactly those not yet trained on; the augmentation draws
  differ from the stopped run's, as for folders. The number skipped is what the loop passes to
  ``set_epoch``, the same figure the folder sampler gets.

**Pipe mode** (``PipeChannel``, ``PipeStream``): SageMaker streams the channel's objects, the
tar shards back to back, into a FIFO ``<channel>_<n>``, a fresh one for each pass. Pass 0 is the
index (every sample read and decoded, as above, so problems are counted before the first step);
each later pass is one epoch of training or one evaluation, in the order the job reads them.
A FIFO has one reader, so one process per host reads it (several processes per host are
refused with the reason: use File or FastFile there) through one loader worker. Under
``FullyReplicated`` every host receives the whole stream and keeps the samples whose key hashes
to its rank; under ``ShardedByS3Key`` it keeps all of its share. Shuffling is the buffer's only
(plus S3's ``ShuffleConfig`` if the channel sets one); a mid-epoch resume skips the first
samples of the rank's shuffled stream, exact when the stream comes in the same order (no
``ShuffleConfig``). A damaged object in a stream costs the rest of that pass: a tar stream
cannot resynchronise after a bad header, so the index counts what it lost.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, IterableDataset, Sampler, get_worker_info

from .. import CLASSES, IMAGE_SUFFIXES
from .. import shards as tar_shards
from ..errors import DataError
from ..imaging import ImageError, augment, load_and_preprocess
from .data import ChannelPhoto, CountDataset, discover_channel, make_loader, verify_samples
from .distributed import DistContext, all_reduce_sum, processes_per_host
from .environment import TrainingEnvironment
from .hyperparameters import HyperParameters
from .sampler import ShardSampler

log = logging.getLogger(__name__)

#: Undecoded photos held for shuffling per loader worker (a few tens of MB of JPEG bytes).
SHUFFLE_BUFFER = 1000
#: Problems named one by one in the log before the rest are summed up.
_NAMED_PROBLEMS = 20


class ShardChannel(list[ChannelPhoto]):
    """The verified samples of a shard channel (``ChannelPhoto.path`` is the shard file), plus what
    streaming needs: the good (key, count) pairs of each shard in archive order, and who
    holds which shards.

    A list of ``ChannelPhoto`` so class counts, class weights and sizes work as for folders; under
    ``ShardedByS3Key`` it holds this host's share only.
    """

    def __init__(
        self,
        name: str,
        files: dict[str, Path],
        good: dict[str, list[tuple[str, int]]],
        distribution: str = tar_shards.FULLY_REPLICATED,
        local_world: int = 1,
    ) -> None:
        super().__init__(
            ChannelPhoto(key, files[shard], count)
            for shard in sorted(good)
            for key, count in good[shard]
        )
        self.name = name
        self.files = files
        self.good = good
        self.distribution = distribution
        self.local_world = local_world

    def sizes(self, shard_names: list[str]) -> list[int]:
        return [len(self.good[s]) for s in shard_names]

    def read(self, shard_names: list[str]) -> Iterator[tuple[str, int, bytes]]:
        """(key, count, photo bytes) of the indexed samples of these shards, in archive order.

        What the index found bad is skipped silently (it was counted then); a shard that can no
        longer be opened, or has lost indexed samples since, is logged and read past.
        """
        for name in shard_names:
            wanted = dict(self.good[name])
            try:
                f = open(self.files[name], "rb")  # noqa: SIM115 - closed below
            except OSError as exc:
                log.warning("shard %s: cannot open: %s; its samples are skipped", name, exc)
                continue
            with f:
                for item in tar_shards.read_samples(f, name, wanted=set(wanted)):
                    if isinstance(item, tar_shards.Problem) or item.key not in wanted:
                        continue  # found and counted by the index
                    image = item.image
                    if image:
                        yield item.key, wanted.pop(item.key), image
            if wanted:  # the shard changed since it was indexed
                log.warning("shard %s: %d indexed samples not found", name, len(wanted))


def _scan(path: Path, name: str, image_size: int) -> tuple[list[tuple[str, int]], list]:
    """Good (key, count) pairs of one shard in order, and its problems."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        return [], [tar_shards.Problem(name, None, f"cannot open: {exc}")]
    with f:
        return _check_all(tar_shards.read_samples(f, name), name, image_size)


def _check_all(items, name: str, image_size: int) -> tuple[list[tuple[str, int]], list]:
    """Good (key, count) pairs in order, and the problems, of what one archive or stream
    yields: a sample is good when its label is a count 1..5 and its photo decodes."""
    good: list[tuple[str, int]] = []
    problems: list[tar_shards.Problem] = []
    for item in items:
        if isinstance(item, tar_shards.Problem):
            problems.append(item)
            continue
        reason = None
        try:
            count = item.count()
            if count not in CLASSES:
                reason = f"count {count} outside 1..5"
            elif item.image is None:
                reason = f"no .{tar_shards.IMAGE_EXT} member (photo)"
            else:
                load_and_preprocess(item.image, image_size)
        except ValueError as exc:
            reason = str(exc)
        except ImageError as exc:
            reason = f"photo: {exc.reason}"
        except OSError as exc:  # what a decoder may still raise on damaged bytes
            reason = f"photo: unreadable: {exc}"
        if reason is None:
            good.append((item.key, count))
        else:
            problems.append(tar_shards.Problem(name, item.key, reason))
    return good, problems


def index_shards(
    name: str,
    root: Path,
    image_size: int,
    max_bad_fraction: float,
    *,
    distribution: str = tar_shards.FULLY_REPLICATED,
    local_world: int = 1,
    workers: int = 4,
) -> ShardChannel:
    """Read and decode every shard of a channel once: the index training streams from.

    Fails when photo files sit beside the shards (one channel, one layout) or when the
    problems exceed ``max_bad_fraction`` of the samples met.
    """
    photos = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    if photos:
        raise DataError(
            f"channel '{name}' ({root}) mixes tar shards with {len(photos)} photo files (first "
            f"{photos[0]}): a channel holds one layout, shards or folders"
        )
    paths = tar_shards.shard_files(root)
    files = {str(p.relative_to(root)): p for p in paths}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        scanned = list(pool.map(lambda n: _scan(files[n], n, image_size), files))
    good = _accept(name, dict(zip(files, scanned, strict=True)), max_bad_fraction)
    channel = ShardChannel(name, files, good, distribution, local_world)
    if not channel:
        raise DataError(f"channel '{name}' ({root}): its shards hold no readable samples")
    return channel


def _accept(
    name: str,
    scanned: dict[str, tuple[list[tuple[str, int]], list[tar_shards.Problem]]],
    max_bad_fraction: float,
) -> dict[str, list[tuple[str, int]]]:
    """The good samples per shard (or stream) once duplicates are dropped; logs the problems
    and fails the job when they exceed ``max_bad_fraction`` of the samples met."""
    good: dict[str, list[tuple[str, int]]] = {}
    problems: list[tar_shards.Problem] = []
    first_seen: dict[str, str] = {}
    for shard, (pairs, found) in scanned.items():
        problems.extend(found)
        kept = []
        for key, count in pairs:
            if key in first_seen:
                problems.append(
                    tar_shards.Problem(shard, key, f"duplicate id, first in {first_seen[key]}")
                )
                continue
            first_seen[key] = shard
            kept.append((key, count))
        good[shard] = kept
    met = len(first_seen) + len(problems)
    for problem in problems[:_NAMED_PROBLEMS]:
        log.warning("channel '%s': skipping %s", name, problem)
    if len(problems) > _NAMED_PROBLEMS:
        log.warning("channel '%s': ... and %d more problems", name, len(problems) - _NAMED_PROBLEMS)
    share = len(problems) / max(1, met)
    log.info(
        "channel '%s': %d shards, %d samples, %d problems skipped (%.1f%%)",
        name,
        len(scanned),
        len(first_seen),
        len(problems),
        100 * share,
    )
    if share > max_bad_fraction:
        raise DataError(
            f"channel '{name}': {len(problems)} problems in {met} samples ({100 * share:.1f}%), "
            f"above max_bad_fraction={max_bad_fraction:g}; first: {problems[0]}"
        )
    return good


# ------------------------------------------------------------------------------- Pipe mode

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
        good: list[tuple[str, int]],
        distribution: str = tar_shards.FULLY_REPLICATED,
    ) -> None:
        super().__init__(name, {STREAM: root}, {STREAM: good}, distribution, 1)
        self.root = root
        self.next_pass = 1

    def take_pass(self) -> int:
        n, self.next_pass = self.next_pass, self.next_pass + 1
        return n


def index_pipe(
    name: str,
    root: Path,
    image_size: int,
    max_bad_fraction: float,
    *,
    distribution: str = tar_shards.FULLY_REPLICATED,
    local_world: int = 1,
    wait_s: float = PIPE_WAIT_S,
) -> PipeChannel:
    """Read pass 0 of a Pipe channel to its end, decoding every photo: the index the later
    passes are read against (the same checks as ``index_shards``)."""
    if local_world > 1:
        raise DataError(
            f"channel '{name}' is in Pipe mode, which gives each host one FIFO with one reader, "
            f"but {local_world} training processes run on each host: use File or FastFile "
            "input mode (FastFile streams the same shards), or one process per host"
        )
    with open_pipe(root, 0, wait_s) as f:
        scanned = _check_all(tar_shards.read_samples(f, STREAM, stream=True), STREAM, image_size)
    lost = sum(p.lost_bytes for p in scanned[1])
    total = max((p.stream_bytes for p in scanned[1]), default=0)
    if lost and lost / total > max_bad_fraction:
        raise DataError(
            f"channel '{name}': {100 * lost / total:.1f}% of the Pipe stream's bytes could not be "
            f"read (above max_bad_fraction={max_bad_fraction:g}): "
            f"{next(p for p in scanned[1] if p.lost_bytes)}"
        )
    good = _accept(name, {STREAM: scanned}, max_bad_fraction)
    channel = PipeChannel(name, root, good[STREAM], distribution)
    if not channel:
        raise DataError(
            f"channel '{name}' ({pipe_path(root, 0)}): its Pipe stream holds no readable "
            "samples; a Pipe channel must hold tar shards (prepare --layout shards)"
        )
    return channel


def load_channel(
    name: str, root: Path, env: TrainingEnvironment, hp: HyperParameters, workers: int
) -> list[ChannelPhoto]:
    """One channel, verified: a Pipe stream of shards, shards when it holds ``*.tar`` files,
    photo folders otherwise."""
    config = env.input_data_config.get(name, {})
    mode = config.get("TrainingInputMode", "File")
    distribution = config.get("S3DistributionType", tar_shards.FULLY_REPLICATED)
    if mode == "Pipe" or (not root.exists() and pipe_path(root, 0).exists()):
        return index_pipe(
            name,
            root,
            hp.image_size,
            hp.max_bad_fraction,
            distribution=distribution,
            local_world=processes_per_host(env),
        )
    if tar_shards.is_shard_channel(root):
        return index_shards(
            name,
            root,
            hp.image_size,
            hp.max_bad_fraction,
            distribution=distribution,
            local_world=processes_per_host(env),
            workers=workers,
        )
    found = discover_channel(name, root)
    return verify_samples(name, found, hp.image_size, hp.max_bad_fraction, workers=workers)


def photo_files(channel: list[ChannelPhoto], folder: Path) -> list[ChannelPhoto]:
    """``channel``'s good photos as files that anything can open by path (the OpenVINO export
    reads validation and test photos so).

    A folder channel already is that. A shard channel's photos (this host's share) are written
    into ``folder``, one file per sample, with the count the index verified. A Pipe channel's
    stream has gone by and cannot be read again: ``DataError`` says so.
    """
    if isinstance(channel, PipeChannel):
        raise DataError(
            f"channel '{channel.name}' is a Pipe stream, read once per pass: its photos are not "
            "on disk after training (give the channel in FastFile or File mode to have them)"
        )
    if not isinstance(channel, ShardChannel):
        return list(channel)
    folder.mkdir(parents=True, exist_ok=True)
    photos: list[ChannelPhoto] = []
    for key, count, image in channel.read(sorted(channel.good)):
        path = folder / f"{len(photos):08d}.{tar_shards.IMAGE_EXT}"
        path.write_bytes(image)
        photos.append(ChannelPhoto(key, path, count))
    return photos


class ShardStream(IterableDataset):
    """This rank's samples of a shard channel for one epoch, as (``uint8`` image, class index).

    Also plays the sampler's part for the loop: ``set_epoch(epoch, start)``, ``len`` (this
    rank's samples left in the epoch), ``size`` (the epoch's samples on all ranks) and
    ``batches()`` (how many batches the DataLoader will give this rank).
    """

    def __init__(
        self,
        channel: ShardChannel,
        image_size: int,
        *,
        rank: int = 0,
        world: int = 1,
        local_rank: int = 0,
        seed: int = 0,
        train: bool = True,
        augment: str = "none",
        workers: int = 0,
        batch_size: int = 1,
        buffer: int = SHUFFLE_BUFFER,
        size: int | None = None,
    ) -> None:
        self.channel = channel
        self.image_size = image_size
        self.rank, self.world, self.local_rank = rank, world, local_rank
        self.seed, self.train, self.augment = seed, train, augment
        self.workers, self.batch_size = workers, batch_size
        self.buffer = buffer if train else 0
        self.size = len(channel) if size is None else size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start
        if start and self.train:
            log.info(
                "channel '%s': resuming epoch %d after %d samples on rank %d; per worker %s",
                self.channel.name,
                epoch + 1,
                start,
                self.rank,
                self.skips(),
            )

    # -- who reads what ------------------------------------------------------------------

    def rank_shards(self) -> list[str]:
        """This rank's shards this epoch (in sorted order, not shuffled, when evaluating)."""
        names = sorted(self.channel.good)
        if not self.train:
            if self.channel.distribution == tar_shards.SHARDED_BY_S3_KEY:
                return names[self.local_rank :: self.channel.local_world]
            return names[self.rank :: self.world]
        return tar_shards.assign_shards(
            names,
            seed=self.seed,
            epoch=self.epoch,
            rank=self.rank,
            world=self.world,
            local_rank=self.local_rank,
            local_world=self.channel.local_world,
            distribution=self.channel.distribution,
        )

    def worker_shards(self, worker: int, workers: int) -> list[str]:
        return self.rank_shards()[worker :: max(1, workers)]

    def _worker_sizes(self) -> list[int]:
        return [
            sum(self.channel.sizes(self.worker_shards(w, self.workers)))
            for w in range(max(1, self.workers))
        ]

    def skips(self) -> list[int]:
        """Samples each worker already gave before ``start``, replaying the DataLoader's
        round-robin over workers (a worker that runs dry drops out of it)."""
        sizes = self._worker_sizes()
        done = [0] * len(sizes)
        left, w = self.start, 0
        while left > 0 and any(d < s for d, s in zip(done, sizes, strict=True)):
            if done[w] < sizes[w]:
                batch = min(self.batch_size, sizes[w] - done[w], left)
                done[w] += batch
                left -= batch
            w = (w + 1) % len(sizes)
        return done

    def _left(self) -> list[int]:
        return [s - d for s, d in zip(self._worker_sizes(), self.skips(), strict=True)]

    def __len__(self) -> int:
        return sum(self._left())

    def batches(self) -> int:
        return sum(math.ceil(n / self.batch_size) for n in self._left())

    # -- reading -------------------------------------------------------------------------

    def plan(self, worker: int = 0, workers: int = 1) -> Iterator[tuple[str, int, bytes]]:
        """(key, count, photo bytes) one worker yields this epoch, undecoded, in order."""
        if workers != max(1, self.workers):
            raise ValueError(f"stream built for {self.workers} workers, read by {workers}")
        rng = random.Random(f"{self.seed}:{self.epoch}:{self.rank}:{worker}")
        skip = self.skips()[worker]
        items = tar_shards.shuffled(
            self.channel.read(self.worker_shards(worker, workers)), self.buffer, rng
        )
        for i, item in enumerate(items):
            if i >= skip:
                yield item

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        for _key, count, image in self.plan(worker, workers):
            try:
                tensor = load_and_preprocess(image, self.image_size)
            except (ImageError, OSError):
                continue  # decoded once already: cannot happen unless the file changed
            if self.train:
                tensor = augment(tensor, self.augment)
            yield tensor, CLASSES.index(count)


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
        wanted = dict(self.keys)
        name = pipe_path(self.channel.root, self.pass_number).name
        with open_pipe(self.channel.root, self.pass_number) as f:
            # Read to the end even past the last wanted sample: SageMaker opens the next
            # pass's FIFO once this one is drained and closed.
            for item in tar_shards.read_samples(f, name, stream=True, wanted=set(wanted)):
                if isinstance(item, tar_shards.Problem) or item.key not in wanted:
                    continue  # found and counted by the index
                image = item.image
                if image:
                    yield item.key, wanted.pop(item.key), image
        if wanted:
            log.warning(
                "channel '%s' pass %d: %d indexed samples not in the stream (first %s)",
                self.channel.name,
                self.pass_number,
                len(wanted),
                next(iter(wanted)),
            )


def _global_size(channel: ShardChannel, ctx: DistContext) -> int:
    """Samples in the epoch on all hosts: each host's share counted once."""
    if channel.distribution != tar_shards.SHARDED_BY_S3_KEY or not ctx.enabled:
        return len(channel)
    mine = len(channel) if ctx.local_rank == 0 else 0
    return int(all_reduce_sum(torch.tensor([mine], dtype=torch.float64), ctx).item())


def make_reader(
    samples: list[ChannelPhoto],
    hp: HyperParameters,
    ctx: DistContext,
    workers: int,
    *,
    train: bool,
    generator: torch.Generator | None = None,
) -> tuple[DataLoader, Sampler[int] | ShardStream]:
    """The loader for one channel and its epoch control (``set_epoch``, ``len``): the one
    place that chooses by layout. Folders: ``ShardSampler`` over ``CountDataset``; shards:
    a ``ShardStream``. Collective under ``ShardedByS3Key``: call it on every rank."""
    if isinstance(samples, ShardChannel):
        kind = PipeStream if isinstance(samples, PipeChannel) else ShardStream
        stream = kind(
            samples,
            hp.image_size,
            rank=ctx.rank,
            world=ctx.world_size,
            local_rank=ctx.local_rank,
            seed=hp.seed,
            train=train,
            augment=hp.augment,
            workers=workers,
            batch_size=hp.batch_size,
            size=_global_size(samples, ctx),
        )
        loader = DataLoader(
            stream,
            batch_size=hp.batch_size,
            num_workers=stream.workers,
            pin_memory=ctx.device.type == "cuda",
            generator=generator,
            prefetch_factor=4 if stream.workers else None,
        )
        return loader, stream
    sampler = ShardSampler(len(samples), ctx, hp.seed, shuffle=train)
    dataset = CountDataset(samples, hp.image_size, hp.augment if train else "none")
    return make_loader(dataset, sampler, hp, ctx, workers, generator), sampler


def lockstep_batches(reader: Sampler[int] | ShardStream, batch_size: int, ctx: DistContext) -> int:
    """Batches every rank runs this epoch (the fewest any rank has): a collective taken once
    per step, such as the SIGTERM vote, is only safe on those; past them a rank may have
    joined."""
    mine = (
        reader.batches() if isinstance(reader, ShardStream) else math.ceil(len(reader) / batch_size)
    )
    if not ctx.enabled:
        return mine
    value = torch.tensor([mine], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return int(value.item())
