"""Tar shards in the WebDataset convention: what preparation writes and training streams.

One file per photo is what S3, EBS and FastFile handle worst at half a million photos (a
request and a file-system entry per 50 KB), so preparation can pack photos into tar files of a
few hundred MB instead, read sequentially at disk or network speed. Members follow the
WebDataset convention, so any WebDataset-aware tool reads them too: ``<id>.jpg`` (the photo),
``<id>.cls`` (the count as decimal text) and optionally ``<id>.json`` (the photo's ABID
metadata), consecutive in the archive. Archives are reproducible (fixed mtime, owner, mode) so a
rerun writes byte-identical shards and an unchanged shard is not uploaded again.

The standard library's ``tarfile`` does both sides: writing needs no more, and reading needs
control a pipeline library hides (a truncated archive reported by name, concatenated archives
from a Pipe-mode FIFO). No torch here: the launch side and preparation import it too.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

from .ids import ID_RULE, check_photo_id, is_photo_id

T = TypeVar("T")

SUFFIX = ".tar"
IMAGE_EXT = "jpg"
LABEL_EXT = "cls"
META_EXT = "json"
#: The size real shards aim for: large enough for sequential reads, small enough to spread
#: over hosts and to shuffle in shard order.
DEFAULT_SHARD_BYTES = 256 * 1024 * 1024
#: The most bytes a member may hold, by extension, checked from its header before it is read:
#: an ABID photo is ~50 KB (32 MiB leaves room for any bin photo at full resolution), a label
#: a few digits, ABID metadata a few KB (a bin listing many products a few tens). A bigger
#: member is broken or hostile and costs its sample instead of the reader's memory.
MEMBER_CAPS = {
    IMAGE_EXT: 32 << 20,
    "jpeg": 32 << 20,
    "png": 32 << 20,
    LABEL_EXT: 4 << 10,
    "txt": 4 << 10,
    META_EXT: 256 << 10,
}
#: Members of any other extension (never used by training).
OTHER_MEMBER_CAP = 4 << 10
_BLOCK = tarfile.BLOCKSIZE


@dataclass
class ShardInfo:
    """One written shard: its file name, the ids and counts in order, size and checksum."""

    name: str
    ids: list[str] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    bytes: int = 0
    sha256: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "samples": len(self.ids),
            "ids": self.ids,
            "counts": self.counts,
            "bytes": self.bytes,
            "sha256": self.sha256,
        }


def split_key(member_name: str) -> tuple[str, str]:
    """``"dir/00523.jpg"`` -> ``("dir/00523", "jpg")``: the key ends at the basename's first dot."""
    folder, _, base = member_name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), (ext if dot else "")


class ShardWriter:
    """Packs samples into ``<stem>-000000.tar``, ``<stem>-000001.tar``... of at most
    ``max_bytes`` each (a single bigger sample still gets its own shard).

    Each shard is written to a temporary name and renamed when complete, so a killed run leaves
    no half shard under a final name; used as a context manager, an exception also removes the
    temporary file (``abort``), and a clean exit closes the last shard.
    """

    def __init__(self, folder: Path, stem: str, max_bytes: int = DEFAULT_SHARD_BYTES) -> None:
        if max_bytes < 10 * _BLOCK:
            raise ValueError(f"shard size {max_bytes} bytes is too small")
        self.folder = Path(folder)
        self.stem = stem
        self.max_bytes = max_bytes
        self.shards: list[ShardInfo] = []
        self._tar: tarfile.TarFile | None = None
        self._file: IO[bytes] | None = None
        self._tmp: Path | None = None
        self._size = 0

    def _open(self) -> None:
        name = f"{self.stem}-{len(self.shards):06d}{SUFFIX}"
        self.folder.mkdir(parents=True, exist_ok=True)
        self._tmp = self.folder / f".{name}.part"
        self._file = open(self._tmp, "wb")  # noqa: SIM115 - closed in _close
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115
        self.shards.append(ShardInfo(name))
        self._size = 0

    def _close(self) -> None:
        if self._tar is None:
            return
        assert self._file is not None and self._tmp is not None
        self._tar.close()
        self._file.close()
        info = self.shards[-1]
        final = self.folder / info.name
        os.replace(self._tmp, final)
        info.bytes = final.stat().st_size
        digest = hashlib.sha256()
        with open(final, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        info.sha256 = digest.hexdigest()
        self._tar = self._file = self._tmp = None

    def _add(self, name: str, data: bytes) -> None:
        assert self._tar is not None
        member = tarfile.TarInfo(name)
        member.size = len(data)
        member.mtime = 0
        member.mode = 0o444
        member.uname = member.gname = "bincounter"
        self._tar.addfile(member, io.BytesIO(data))

    def abort(self) -> None:
        """Drop the shard being written (its temporary file); finished shards stay."""
        tar, file, tmp = self._tar, self._file, self._tmp
        self._tar = self._file = self._tmp = None
        if tar is not None and file is not None and tmp is not None:
            self.shards.pop()
            file.close()
            tmp.unlink(missing_ok=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, key: str, image: bytes, count: int, metadata: bytes | None = None) -> None:
        """Add one sample; ``ValueError`` when ``key`` is not a photo id (``bincounter.ids``):
        it becomes member names, and file names wherever the shard is unpacked."""
        check_photo_id(key)
        size = sum(_BLOCK + -(-len(d) // _BLOCK) * _BLOCK for d in (image, b"0", metadata or b""))
        if self._tar is not None and self._size and self._size + size > self.max_bytes:
            self._close()
        if self._tar is None:
            self._open()
        self._add(f"{key}.{IMAGE_EXT}", image)
        self._add(f"{key}.{LABEL_EXT}", str(count).encode())
        if metadata is not None:
            self._add(f"{key}.{META_EXT}", metadata)
        self._size += size
        self.shards[-1].ids.append(key)
        self.shards[-1].counts.append(count)

    def close(self) -> list[ShardInfo]:
        self._close()
        return self.shards


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class ShardSample:
    """One complete sample of a shard as read: its key, the raw members by extension (photo,
    label, metadata), and the shard it came from."""

    key: str
    members: dict[str, bytes]
    shard: str

    @property
    def image(self) -> bytes | None:
        return self.members.get(IMAGE_EXT)

    def count(self) -> int:
        """The count in ``<key>.cls``; ``ValueError`` when missing or not an integer."""
        raw = self.members.get(LABEL_EXT)
        if raw is None:
            raise ValueError(f"no .{LABEL_EXT} member (label)")
        text = raw.decode("ascii", "replace").strip()
        if not text.lstrip("-").isdigit():
            raise ValueError(f".{LABEL_EXT} holds {text[:20]!r}, not a count")
        return int(text)


@dataclass(frozen=True)
class Problem:
    """Something unreadable in a shard, by shard and (when known) sample key."""

    shard: str
    key: str | None
    reason: str
    #: For a stream: bytes that could not be read as samples, of how many in all (a stream
    #: cannot resynchronise after a damaged object, so this is the share of the data lost).
    lost_bytes: int = 0
    stream_bytes: int = 0

    def __str__(self) -> str:
        return f"{self.shard}: {self.key + ': ' if self.key else ''}{self.reason}"


#: What may follow an archive's last member when nothing is wrong: the two zero blocks of the
#: end-of-archive marker and padding up to tar's default record size.
_CLEAN_TAIL = tarfile.RECORDSIZE + 2 * _BLOCK


class _CountingReader:
    """A read-only byte stream that counts what was read from it (a FIFO has no ``tell``)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw, self.count = raw, 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.count += len(data)
        return data

    def drain(self) -> int:
        while self.read(1 << 20):
            pass
        return self.count


def _has_end_marker(fileobj: IO[bytes], offset: int) -> bool:
    """A complete archive has a zero block where ``tarfile`` stopped reading headers."""
    try:
        fileobj.seek(offset)
        block = fileobj.read(_BLOCK)
    except (OSError, ValueError):
        return True  # not seekable: cannot tell, trust the reader
    return len(block) == _BLOCK and block == bytes(_BLOCK)


def member_cap(ext: str) -> int:
    """The most bytes a member with this extension may hold (``MEMBER_CAPS``, else
    ``OTHER_MEMBER_CAP``); ``"seg.png"`` is capped as ``png``."""
    return MEMBER_CAPS.get(ext.rpartition(".")[2].lower(), OTHER_MEMBER_CAP)


class _Groups:
    """Members gathered into samples by key, and what makes a sample unreadable, judged from
    each member's header before any of its bytes are read.

    A key met again after other keys, a member repeated within its sample, a key that is not
    a photo id and a member above its cap each cost the sample (one ``Problem``); for a
    repeated key, the first copy is the one read, by the index and by the stream alike.
    """

    def __init__(self, shard: str) -> None:
        self.shard = shard
        self.key: str | None = None
        self.members: dict[str, bytes] = {}
        self.skip = False
        self.seen: set[str] = set()

    def done(self) -> ShardSample | None:
        """The sample gathered so far, when there is one and it is not skipped."""
        if self.key is None or self.skip:
            return None
        return ShardSample(self.key, self.members, self.shard)

    def start(self, key: str, member: str) -> Problem | None:
        self.key, self.members, self.skip = key, {}, True
        if key in self.seen:
            return Problem(
                self.shard,
                key,
                f"duplicate id: member {member} repeats an id met earlier in this shard; "
                "only the first copy is read",
            )
        self.seen.add(key)
        if not is_photo_id(key):
            return Problem(
                self.shard, key, f"member {member}: the key is not a photo id ({ID_RULE})"
            )
        self.skip = False
        return None

    def judge(self, member: tarfile.TarInfo, ext: str) -> Problem | None:
        """Why this member's sample is skipped, or None when the member may be read."""
        cap = member_cap(ext)
        if ext in self.members:
            reason = f"member {member.name} appears twice in a row"
        elif member.size > cap:
            reason = (
                f"member {member.name} holds {member.size} bytes, above the {cap}-byte cap for "
                f".{ext} members (shards.MEMBER_CAPS); not read"
            )
        else:
            return None
        self.skip = True
        return Problem(self.shard, self.key, f"{reason}; the sample is skipped")


def _check_header(member: tarfile.TarInfo, previous: int) -> None:
    """Stop at a header that would make tarfile read backwards or in place (a negative size
    or an offset that does not advance): it would re-read the same header forever."""
    if member.size < 0:
        raise tarfile.ReadError(f"member {member.name} has a negative size {member.size}")
    if member.offset <= previous:
        raise tarfile.ReadError(
            f"member {member.name} at byte {member.offset} does not advance past byte {previous}"
        )


def read_samples(
    fileobj: IO[bytes], shard: str, *, stream: bool = False, wanted: set[str] | None = None
) -> Iterator[ShardSample | Problem]:
    """Samples of one archive in order, and a ``Problem`` for whatever cannot be read.

    Never raises on bad data: a truncated or corrupt archive yields the samples before the
    damage, then one ``Problem`` naming the shard, and stops. ``stream=True`` reads a FIFO of
    several archives back to back (SageMaker Pipe mode) without seeking. With ``wanted`` the
    contents of other keys are skipped without being read into memory (they are still named).
    Members are judged from their headers first (``_Groups``), so nothing above its cap and
    nothing of a skipped sample is ever read.
    """
    groups = _Groups(shard)
    counted = _CountingReader(fileobj) if stream else None
    last_end, last_offset = 0, -1
    try:
        mode = "r|" if stream else "r:"
        with tarfile.open(fileobj=counted or fileobj, mode=mode, ignore_zeros=stream) as tar:
            for member in tar:
                _check_header(member, last_offset)
                last_offset = member.offset
                if not member.isfile():
                    continue
                last_end = member.offset_data + member.size
                key, ext = split_key(member.name)
                if key != groups.key:
                    sample = groups.done()
                    if sample is not None:
                        yield sample
                    problem = groups.start(key, member.name)
                    if problem is not None:
                        yield problem
                if groups.skip:
                    continue
                problem = groups.judge(member, ext)
                if problem is not None:
                    yield problem
                    continue
                if wanted is not None and key not in wanted:
                    groups.members[ext] = b""
                    continue
                handle = tar.extractfile(member)
                data = handle.read() if handle else b""
                if len(data) != member.size:
                    raise tarfile.ReadError(f"member {member.name} cut short")
                groups.members[ext] = data
            end = tar.offset
        if groups.key is not None and not stream and not _has_end_marker(fileobj, end):
            # tarfile ends quietly where a file was cut between two members
            yield Problem(shard, None, "truncated: no end-of-archive marker")
            return
    except (tarfile.TarError, EOFError, OSError, UnicodeDecodeError) as exc:
        reason = f"corrupt or truncated archive ({exc}); rest skipped"
        if counted is None:
            yield Problem(shard, groups.key, reason)
            return
        total = counted.drain()
        yield Problem(shard, groups.key, reason, lost_bytes=total - last_end, stream_bytes=total)
        return
    sample = groups.done()
    if sample is not None:
        yield sample
    if counted is not None:
        # Concatenated archives: after a cut or corrupt object tarfile finds no aligned header
        # again and skips the rest quietly. Whatever follows the last member beyond a clean
        # end of archive was lost.
        total = counted.drain()
        lost = total - last_end
        if lost > _CLEAN_TAIL:
            yield Problem(
                shard,
                None,
                f"{lost} of {total} bytes after byte {last_end} unreadable: a truncated or "
                "corrupt object in the stream; the samples in it and after it are lost",
                lost_bytes=lost,
                stream_bytes=total,
            )


def read_shard(
    path: Path, name: str | None = None, *, wanted: set[str] | None = None
) -> Iterator[ShardSample | Problem]:
    """``read_samples`` of one shard file, named ``name`` (its file name by default) in what
    it yields; a file that cannot be opened is one ``Problem``."""
    name = path.name if name is None else name
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below, also when the consumer stops early
    except OSError as exc:
        yield Problem(name, None, f"cannot open: {exc}")
        return
    with f:
        yield from read_samples(f, name, wanted=wanted)


def shard_files(folder: Path) -> list[Path]:
    """The ``*.tar`` files of a channel folder (any depth), sorted by relative path."""
    return sorted(p for p in folder.rglob(f"*{SUFFIX}") if p.is_file())


def is_shard_channel(folder: Path) -> bool:
    """A channel holding ``*.tar`` files is read as shards; photos beside them are an error
    the caller reports (one channel, one layout)."""
    return folder.is_dir() and any(p.is_file() for p in folder.rglob(f"*{SUFFIX}"))


# --------------------------------------------------------------------------- who reads what

FULLY_REPLICATED = "FullyReplicated"
SHARDED_BY_S3_KEY = "ShardedByS3Key"


def epoch_order(names: list[str], seed: int, epoch: int) -> list[str]:
    """The shards in this epoch's order: a seeded permutation, the same on every rank."""
    order = sorted(names)
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return order


def assign_shards(
    names: list[str],
    *,
    seed: int,
    epoch: int,
    rank: int,
    world: int,
    local_rank: int,
    local_world: int,
    distribution: str = FULLY_REPLICATED,
) -> list[str]:
    """The shards one process reads this epoch, so that every shard is read exactly once.

    ``FullyReplicated``: every host holds every shard; global rank ``r`` of ``world`` takes
    every ``world``-th shard of the epoch's order. ``ShardedByS3Key``: SageMaker already gave
    each host a disjoint share, so only the processes of this host split it, by local rank.
    Ranks may get unequal sample counts; the training loop's ``Join`` absorbs the tail, as it
    does for the folder layout.
    """
    if distribution not in (FULLY_REPLICATED, SHARDED_BY_S3_KEY):
        raise ValueError(f"unknown distribution {distribution!r}")
    if distribution == SHARDED_BY_S3_KEY:
        rank, world = local_rank, local_world
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside world of {world}")
    return epoch_order(names, seed, epoch)[rank::world]


def shuffled(items: Iterable[T], size: int, rng: random.Random) -> Iterator[T]:
    """Items in a shuffled order using at most ``size`` in memory (a shuffle buffer).

    ``size <= 1`` keeps the order. A buffer as large as the stream is a full uniform shuffle.
    """
    if size <= 1:
        yield from items
        return
    buffer: list[T] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        i = rng.randrange(size)
        yield buffer[i]
        buffer[i] = item
    rng.shuffle(buffer)
    yield from buffer
