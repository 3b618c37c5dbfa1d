"""Which photos of a folder channel each rank sees, in which order: one permutation per epoch,
rebuilt on resume (a shard channel's ``ShardStream`` plays this part for shards).

A spot interruption can stop a job mid-epoch. For the restarted job to see exactly the photos
the stopped one had not, the order must be a pure function of (seed, epoch) and a position in
it, not of any state that dies with the process. Ranks take interleaved slices of that order
with no padding, so every photo counts exactly once per epoch across ranks; DDP's ``Join``
absorbs the uneven tail that leaves.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from .distributed import DistContext


class FolderSampler(Sampler[int]):
    """This rank's share of one epoch's permutation of a folder channel, resumable at any step.

    ``set_epoch(epoch, start)`` rebuilds the epoch's order and skips the first ``start`` of
    this rank's indices (those a stopped job already trained on). ``size`` is the epoch's
    photos on all ranks and ``batches()`` this rank's batches of ``batch_size``: what the loop
    asks of any channel's reader.
    """

    def __init__(
        self, size: int, ctx: DistContext, seed: int, shuffle: bool = True, batch_size: int = 1
    ) -> None:
        self.size, self.ctx, self.seed, self.shuffle = size, ctx, seed, shuffle
        self.batch_size = batch_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        return order[self.ctx.rank :: self.ctx.world_size][self.start :]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices())

    def __len__(self) -> int:
        return len(self.indices())

    def batches(self) -> int:
        return math.ceil(len(self) / self.batch_size)
