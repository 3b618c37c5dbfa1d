"""Training channels behind one ``Channel`` protocol: photo folders, tar shards, Pipe streams.

A channel of ``*.tar`` files (``bincounter.shards``, what ``prepare --layout shards`` writes)
is read sequentially instead of one file per photo, which is what lets a job train on all of
ABID from a File or FastFile channel; a Pipe channel streams the same shards through a FIFO.
The folder layout's guarantees are kept: every photo verified once before the first step,
every sample once per epoch across ranks, an exact resume. The modules, one concern each:

* ``base``: the ``Channel`` and ``EpochReader`` protocols the loop uses, ``make_reader``
  and ``lockstep_batches``;
* ``folders``: photo folders (``training.data``) as a ``Channel``;
* ``shard_index``: shard files verified into an index (``ShardChannel``);
* ``shard_stream``: one rank's epoch of a shard channel (``ShardStream``);
* ``pipe``: Pipe mode, a FIFO per pass (``PipeChannel``, ``PipeStream``);
* ``loading``: ``load_channel``, the one place that tells the layouts apart.
"""

from .base import Channel, ChannelInput, EpochReader, Feed, lockstep_batches, make_reader
from .folders import FolderChannel, load_folders
from .loading import load_channel
from .pipe import PipeChannel, PipeStream, index_pipe, open_pipe, pipe_path
from .shard_index import ShardChannel, index_shards
from .shard_stream import ShardStream

__all__ = [
    "Channel",
    "ChannelInput",
    "EpochReader",
    "Feed",
    "FolderChannel",
    "PipeChannel",
    "PipeStream",
    "ShardChannel",
    "ShardStream",
    "index_pipe",
    "index_shards",
    "load_channel",
    "load_folders",
    "lockstep_batches",
    "make_reader",
    "open_pipe",
    "pipe_path",
]
