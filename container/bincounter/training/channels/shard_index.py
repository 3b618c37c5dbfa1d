"""A shard channel verified once, before the first step: the index training streams from.

Every shard is read and every photo decoded (the same ``imaging`` path as folders) into the
good samples per shard. A truncated or corrupt archive, a member without a label, a duplicate
id or an undecodable photo is logged by shard and key, skipped, and counted against
``max_bad_fraction`` (the job fails before training when the share is exceeded). Training then
yields only indexed samples, so every epoch sees the same set and every rank knows the sizes;
nothing found bad can stop an epoch midway. A damaged archive counts as one problem: how many
samples followed the damage cannot be known from a cut file.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from ... import CLASSES, IMAGE_SUFFIXES
from ... import shards as tar_shards
from ...errors import DataError
from ...imaging import ImageError, load_and_preprocess
from ..data import ChannelPhoto
from ..distributed import DistContext, all_reduce_sum
from ..hyperparameters import HyperParameters
from ..problems import judge_problems
from .base import ChannelInput, Feed
from .shard_stream import ShardStream

log = logging.getLogger(__name__)

#: (key, count) of the good samples of one shard (or Pipe stream), in archive order.
Pairs = list[tuple[str, int]]


class ShardChannel(list[ChannelPhoto]):
    """The verified samples of a shard channel (``ChannelPhoto.path`` is the shard file), plus what
    streaming needs: the good (key, count) pairs of each shard in archive order, and who
    holds which shards.

    A list of ``ChannelPhoto`` so class counts, class weights and sizes work as for folders; under
    ``ShardedByS3Key`` it holds this host's share only. ``problems``: what the index skipped,
    each naming its shard and sample (also logged, and held against ``max_bad_fraction``).
    """

    problems: tuple[tar_shards.Problem, ...] = ()

    def __init__(
        self,
        name: str,
        files: dict[str, Path],
        good: dict[str, Pairs],
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
                yield from indexed(tar_shards.read_samples(f, name, wanted=set(wanted)), wanted)
            if wanted:  # the shard changed since it was indexed
                log.warning("shard %s: %d indexed samples not found", name, len(wanted))

    def stream(self, **options) -> ShardStream:
        """This rank's stream of the channel for one epoch (``ShardStream``'s options)."""
        return ShardStream(self, **options)

    def feed(self, hp: HyperParameters, ctx: DistContext, workers: int, train: bool) -> Feed:
        """This rank's ``ShardStream``, which orders itself and is its own epoch control."""
        stream = self.stream(
            image_size=hp.image_size,
            seed=hp.seed,
            augment=hp.augment,
            batch_size=hp.batch_size,
            train=train,
            workers=workers,
            rank=ctx.rank,
            world=ctx.world_size,
            local_rank=ctx.local_rank,
            size=self._global_size(ctx),
        )
        return Feed(stream, stream, None, stream.workers)

    def _global_size(self, ctx: DistContext) -> int:
        """Samples in the epoch on all hosts: each host's share counted once."""
        if self.distribution != tar_shards.SHARDED_BY_S3_KEY or not ctx.enabled:
            return len(self)
        mine = len(self) if ctx.local_rank == 0 else 0
        return int(all_reduce_sum(torch.tensor([mine], dtype=torch.float64), ctx).item())

    def photo_files(self, folder: Path) -> list[ChannelPhoto]:
        """This host's share of the photos written into ``folder``, one file per sample, with
        the count the index verified."""
        folder.mkdir(parents=True, exist_ok=True)
        photos: list[ChannelPhoto] = []
        for key, count, image in self.read(sorted(self.good)):
            path = folder / f"{len(photos):08d}.{tar_shards.IMAGE_EXT}"
            path.write_bytes(image)
            photos.append(ChannelPhoto(key, path, count))
        return photos


def indexed(
    items: Iterable[tar_shards.ShardSample | tar_shards.Problem], wanted: dict[str, int]
) -> Iterator[tuple[str, int, bytes]]:
    """(key, count, photo bytes) of the ``wanted`` samples among what an archive or stream
    yields, each taken out of ``wanted`` as it is found (what is left was not found)."""
    for item in items:
        if isinstance(item, tar_shards.Problem) or item.key not in wanted:
            continue  # found and counted by the index
        image = item.image
        if image:
            yield item.key, wanted.pop(item.key), image


def check_samples(
    items: Iterable[tar_shards.ShardSample | tar_shards.Problem], name: str, image_size: int
) -> tuple[Pairs, list[tar_shards.Problem]]:
    """Good (key, count) pairs in order, and the problems, of what one archive or stream
    yields: a sample is good when its label is a count 1..5 and its photo decodes."""
    good: Pairs = []
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
    source: ChannelInput, image_size: int, max_bad_fraction: float, *, workers: int = 4
) -> ShardChannel:
    """Read and decode every shard of a channel once: the index training streams from.

    Fails when photo files sit beside the shards (one channel, one layout) or when the
    problems exceed ``max_bad_fraction`` of the samples met.
    """
    name, root = source.name, source.root
    photos = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    if photos:
        raise DataError(
            f"channel '{name}' ({root}) mixes tar shards with {len(photos)} photo files (first "
            f"{photos[0]}): a channel holds one layout, shards or folders"
        )
    files = {str(p.relative_to(root)): p for p in tar_shards.shard_files(root)}

    def scan(shard: str) -> tuple[Pairs, list[tar_shards.Problem]]:
        return check_samples(tar_shards.read_shard(files[shard], shard), shard, image_size)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        scanned = list(pool.map(scan, files))
    good, problems = accept(name, dict(zip(files, scanned, strict=True)), max_bad_fraction)
    channel = ShardChannel(name, files, good, source.distribution, source.local_world)
    channel.problems = tuple(problems)
    if not channel:
        raise DataError(f"channel '{name}' ({root}): its shards hold no readable samples")
    return channel


def accept(
    name: str,
    scanned: dict[str, tuple[Pairs, list[tar_shards.Problem]]],
    max_bad_fraction: float,
) -> tuple[dict[str, Pairs], list[tar_shards.Problem]]:
    """The good samples per shard (or stream) once duplicates are dropped, and the problems
    (logged); fails the job when they exceed ``max_bad_fraction`` of the samples met."""
    good: dict[str, Pairs] = {}
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
    judge_problems(
        name,
        problems,
        met,
        max_bad_fraction,
        noun="problems",
        summary=(
            f"{len(scanned)} shards, {len(first_seen)} samples, {len(problems)} problems skipped"
        ),
        refusal=f"{len(problems)} problems in {met} samples ({{percent:.1f}}%)",
    )
    return good, problems
