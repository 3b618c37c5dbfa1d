"""``FolderSampler``: every photo once per epoch across ranks, a fixed order per (seed, epoch),
and a resume that skips exactly what a stopped job had trained on."""

import pytest

from bincounter.training.distributed import DistContext
from bincounter.training.sampler import FolderSampler

SIZES = [1, 2, 7, 10, 33]
WORLD_SIZES = [1, 2, 3, 4]


def _shards(size, world_size, seed=42, epoch=0, shuffle=True):
    shards = []
    for rank in range(world_size):
        sampler = FolderSampler(size, DistContext(rank=rank, world_size=world_size), seed, shuffle)
        sampler.set_epoch(epoch)
        shards.append(list(sampler))
    return shards


@pytest.mark.parametrize("world_size", WORLD_SIZES)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("shuffle", [True, False])
def test_one_epoch_over_all_ranks_is_every_index_exactly_once(size, world_size, shuffle):
    shards = _shards(size, world_size, shuffle=shuffle)
    union = [i for shard in shards for i in shard]
    assert sorted(union) == list(range(size))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1  # no padding, a tail of one


def test_without_shuffle_the_order_is_the_dataset_order_interleaved():
    assert _shards(7, 2, shuffle=False) == [[0, 2, 4, 6], [1, 3, 5]]


def test_epochs_give_different_orders_and_seed_and_epoch_fix_the_order():
    orders = [_shards(33, 1, epoch=epoch)[0] for epoch in range(4)]
    assert len({tuple(order) for order in orders}) == 4
    assert _shards(33, 3, seed=7, epoch=2) == _shards(33, 3, seed=7, epoch=2)
    assert _shards(33, 1, seed=7, epoch=2) != _shards(33, 1, seed=8, epoch=2)


@pytest.mark.parametrize("world_size", WORLD_SIZES)
@pytest.mark.parametrize("start", [0, 1, 3, 8])
def test_set_epoch_with_start_skips_exactly_that_many_of_this_ranks_indices(world_size, start):
    full = _shards(33, world_size, epoch=5)
    for rank in range(world_size):
        sampler = FolderSampler(33, DistContext(rank=rank, world_size=world_size), seed=42)
        sampler.set_epoch(5, start)
        assert list(sampler) == full[rank][start:]
        assert len(sampler) == len(full[rank][start:])
