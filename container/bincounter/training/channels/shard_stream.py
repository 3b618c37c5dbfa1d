"""One rank's samples of a shard channel for one epoch, streamed and shuffled within a bound.

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
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch.utils.data import IterableDataset, get_worker_info

from ... import CLASSES
from ... import shards as tar_shards
from ...imaging import ImageError, augment, load_and_preprocess

if TYPE_CHECKING:
    from .shard_index import ShardChannel

log = logging.getLogger(__name__)

#: Undecoded photos held for shuffling per loader worker (a few tens of MB of JPEG bytes).
SHUFFLE_BUFFER = 1000


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
