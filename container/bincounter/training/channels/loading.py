"""The one place that tells a channel's layout: a Pipe stream of shards, shard files, or photo
folders, each verified into its ``Channel``."""

from __future__ import annotations

from pathlib import Path

from ... import shards as tar_shards
from ..distributed import processes_per_host
from ..environment import TrainingEnvironment
from ..hyperparameters import HyperParameters
from .base import Channel, ChannelInput
from .folders import load_folders
from .pipe import index_pipe, pipe_path
from .shard_index import index_shards


def load_channel(
    name: str, root: Path, env: TrainingEnvironment, hp: HyperParameters, workers: int
) -> Channel:
    """One channel, verified: a Pipe stream of shards, shards when it holds ``*.tar`` files,
    photo folders otherwise."""
    config = env.input_data_config.get(name, {})
    source = ChannelInput(
        name,
        root,
        distribution=config.get("S3DistributionType", tar_shards.FULLY_REPLICATED),
        local_world=processes_per_host(env),
    )
    if config.get("TrainingInputMode", "File") == "Pipe" or (
        not root.exists() and pipe_path(root, 0).exists()
    ):
        return index_pipe(source, hp.image_size, hp.max_bad_fraction)
    if tar_shards.is_shard_channel(root):
        return index_shards(source, hp.image_size, hp.max_bad_fraction, workers=workers)
    return load_folders(name, root, hp.image_size, hp.max_bad_fraction, workers)
