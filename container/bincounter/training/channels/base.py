"""What a training channel offers the loop, whatever its layout: the ``Channel`` protocol.

The loop never asks which layout a channel has. Photo folders (``folders.FolderChannel``),
tar shards (``shard_index.ShardChannel``) and a Pipe stream of shards (``pipe.PipeChannel``)
each give their verified samples (class counts, class weights and sizes work on them alike),
what a loader reads with its epoch control (``Feed``, made into a loader by ``make_reader``),
and their photos as files for the export.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from ... import shards as tar_shards
from ..data import make_loader
from ..distributed import DistContext
from ..hyperparameters import HyperParameters

if TYPE_CHECKING:
    from ..data import ChannelPhoto


@dataclass(frozen=True)
class ChannelInput:
    """Where a channel is and how SageMaker delivers it: ``S3DistributionType`` from
    ``inputdataconfig.json`` and how many training processes share this host's copy."""

    name: str
    root: Path
    distribution: str = tar_shards.FULLY_REPLICATED
    local_world: int = 1


class EpochReader(Protocol):
    """A channel's epoch control for the loop (a sampler for folders, the dataset itself for
    shards): which epoch, and how many samples a stopped job already trained on."""

    #: Samples in the epoch on all ranks.
    size: int

    def set_epoch(self, epoch: int, start: int = 0) -> None: ...

    def __len__(self) -> int:
        """This rank's samples left in the epoch."""
        ...

    def batches(self) -> int:
        """The batches the loader gives this rank this epoch."""
        ...


class Feed(NamedTuple):
    """What a channel gives the loader for one rank: the dataset, its epoch control, the
    sampler (``None`` where the dataset is iterable and orders itself) and the loader
    workers it can use."""

    dataset: Dataset
    reader: EpochReader
    sampler: Sampler[int] | None
    workers: int


class Channel(Protocol):
    """One verified training channel, whatever its layout."""

    name: str

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[ChannelPhoto]: ...

    def feed(self, hp: HyperParameters, ctx: DistContext, workers: int, train: bool) -> Feed:
        """What this rank's loader reads. Collective under ``ShardedByS3Key``: call it on
        every rank."""
        ...

    def photo_files(self, folder: Path) -> list[ChannelPhoto]:
        """The good photos as files anything can open by path (the OpenVINO export reads
        validation and test photos so), written into ``folder`` when they are not files yet;
        ``DataError`` where they cannot be had."""
        ...


def make_reader(
    channel: Channel,
    hp: HyperParameters,
    ctx: DistContext,
    workers: int,
    *,
    train: bool,
    generator: torch.Generator | None = None,
) -> tuple[DataLoader, EpochReader]:
    """The loader for one channel and its epoch control (``set_epoch``, ``len``), whatever
    the layout. Collective under ``ShardedByS3Key``: call it on every rank."""
    feed = channel.feed(hp, ctx, workers, train)
    return make_loader(feed.dataset, feed.sampler, hp, ctx, feed.workers, generator), feed.reader


def lockstep_batches(reader: EpochReader, ctx: DistContext) -> int:
    """Batches every rank runs this epoch (the fewest any rank has): a collective taken once
    per step, such as the SIGTERM vote, is only safe on those; past them a rank may have
    joined."""
    mine = reader.batches()
    if not ctx.enabled:
        return mine
    value = torch.tensor([mine], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return int(value.item())
