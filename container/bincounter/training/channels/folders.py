"""Photo-folder channels as a ``Channel``: the verified photos of ``training.data``, sampled
per rank by ``FolderSampler`` and decoded by ``CountDataset``."""

from __future__ import annotations

from pathlib import Path

from ..data import ChannelPhoto, CountDataset, discover_channel, verify_samples
from ..distributed import DistContext
from ..hyperparameters import HyperParameters
from ..sampler import FolderSampler
from .base import Feed


class FolderChannel(list[ChannelPhoto]):
    """The verified photos of a folder channel (``<count>/<id>.jpg`` or ABID's own layout)."""

    def __init__(self, name: str, samples: list[ChannelPhoto]) -> None:
        super().__init__(samples)
        self.name = name

    def feed(self, hp: HyperParameters, ctx: DistContext, workers: int, train: bool) -> Feed:
        """``CountDataset`` in ``FolderSampler``'s order."""
        sampler = FolderSampler(len(self), ctx, hp.seed, shuffle=train, batch_size=hp.batch_size)
        dataset = CountDataset(self, hp.image_size, hp.augment if train else "none")
        return Feed(dataset, sampler, sampler, workers)

    def photo_files(self, folder: Path) -> list[ChannelPhoto]:
        """Its photos already are files: ``folder`` is not used."""
        return list(self)


def load_folders(
    name: str, root: Path, image_size: int, max_bad_fraction: float, workers: int
) -> FolderChannel:
    """A folder channel found and every photo decoded once (``training.data``)."""
    found = discover_channel(name, root)
    return FolderChannel(name, verify_samples(name, found, image_size, max_bad_fraction, workers))
