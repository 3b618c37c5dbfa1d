"""Hostile shards: crafted headers, repeated ids and oversized members, as real tar files.

Each case is a file an attacker (or a broken writer) could hand a training job; each must end
in a bounded time and memory as a problem naming the shard and the member, counted against
``max_bad_fraction`` like any other bad sample.
"""

from __future__ import annotations

import io
import itertools
import tarfile
import tracemalloc
from pathlib import Path

import pytest
from PIL import Image

from bincounter.errors import DataError
from bincounter.shards import MEMBER_CAPS, Problem, ShardWriter, read_samples, read_shard
from bincounter.training.channels import ChannelInput, ShardStream, index_shards

#: More items than any of these one- or few-sample shards can honestly yield.
BOUND = 100


def _jpeg(seed: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 12), (seed * 40 % 256, 90, 200)).save(out, "JPEG")
    return out.getvalue()


def _good_shard(folder: Path, stem: str, n: int) -> None:
    with ShardWriter(folder, stem, 10 * 1024 * 1024) as w:
        for i in range(n):
            w.write(f"{stem}{i}", _jpeg(i), 1 + i % 5)


def _negative_size_shard(path: Path) -> Path:
    """One member, ``00001.jpg``, behind a pax header, whose size field is edited to -512
    (base-256) with the checksum fixed: tarfile then computes the next header's offset as
    the member's own header and reads it again, forever."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("00001.jpg")
        info.size = 1
        info.pax_headers = {"comment": "crafted"}
        tar.addfile(info, io.BytesIO(b"x"))
    raw = bytearray(buffer.getvalue())
    header = next(
        off
        for off in range(0, len(raw), tarfile.BLOCKSIZE)
        if raw[off : off + 9] == b"00001.jpg" and raw[off + 257 : off + 262] == b"ustar"
    )
    raw[header + 124 : header + 136] = b"\xff" * 10 + b"\xfe\x00"  # -512
    raw[header + 148 : header + 156] = b" " * 8
    raw[header + 148 : header + 156] = b"%06o\0 " % sum(raw[header : header + 512])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(raw))
    return path


def _sparse_shard(path: Path, members: list[tuple[str, int]]) -> Path:
    """A shard whose members have these sizes, written sparse: a 300 MiB member costs a few
    blocks of disk, and every byte of it reads back as zero."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for name, size in members:
            info = tarfile.TarInfo(name)
            info.size = size
            f.write(info.tobuf(tarfile.USTAR_FORMAT))
            data = b"3" if name.endswith(".cls") and size == 1 else b""
            f.write(data)
            f.seek(-(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE - len(data), io.SEEK_CUR)
        f.write(bytes(2 * tarfile.BLOCKSIZE))
    return path


def _problems(items) -> list[str]:
    return [str(i) for i in items if isinstance(i, Problem)]


# --------------------------------------------------------------------------- negative size


@pytest.mark.parametrize("wanted", [None, set(), {"00001"}], ids=["index", "other", "wanted"])
def test_a_negative_size_member_ends_the_read_with_one_problem(tmp_path, wanted):
    path = _negative_size_shard(tmp_path / "neg.tar")
    items = list(itertools.islice(read_shard(path, wanted=wanted), BOUND))
    assert _problems(items) == [
        "neg.tar: corrupt or truncated archive (member 00001.jpg has a negative size -512); "
        "rest skipped"
    ]
    with open(path, "rb") as f:  # as a Pipe-mode stream
        items = list(
            itertools.islice(read_samples(f, "neg.tar", stream=True, wanted=wanted), BOUND)
        )
    assert len(items) == 1 and "00001.jpg has a negative size" in str(items[0])


def test_a_negative_size_member_counts_against_max_bad_fraction(tmp_path):
    root = tmp_path / "train"
    _good_shard(root, "a", 4)
    _negative_size_shard(root / "b-neg.tar")
    channel = index_shards(ChannelInput("train", root), 16, 0.5)
    assert len(channel) == 4 and len(ShardStream(channel, 16, train=False)) == 4
    assert sum(1 for _ in ShardStream(channel, 16, train=False)) == 4
    with pytest.raises(DataError) as info:
        index_shards(ChannelInput("train", root), 16, 0.1)
    assert "1 problems in 5 samples" in info.value.reason
    assert "b-neg.tar" in info.value.reason and "00001.jpg has a negative size" in info.value.reason


# --------------------------------------------------------------------------- repeated ids


def test_a_repeated_id_whose_first_copy_is_bad_is_not_indexed_nor_streamed(tmp_path, caplog):
    """Index and stream read the same copy: the epoch's length is what the stream yields."""
    root = tmp_path / "train"
    with ShardWriter(root, "rep", 10 * 1024 * 1024) as w:
        w.write("r1", b"not a photo", 2)  # the first copy: bad
        for i in range(3):
            w.write(f"g{i}", _jpeg(i), 1 + i)
        w.write("r1", _jpeg(9), 2)  # the second copy: good
    channel = index_shards(ChannelInput("train", root), 16, 0.9)
    assert sorted(s.id for s in channel) == ["g0", "g1", "g2"]
    stream = ShardStream(channel, 16, train=False)
    assert len(stream) == sum(1 for _ in stream) == 3
    assert "rep-000000.tar: r1: duplicate id: member r1.jpg repeats an id" in caplog.text


def test_a_member_repeated_within_its_sample_costs_the_sample(tmp_path):
    root = tmp_path / "train"
    with ShardWriter(root, "twice", 10 * 1024 * 1024) as w:
        w.write("t0", _jpeg(0), 1)
        w._add("t1.jpg", _jpeg(1))
        w._add("t1.jpg", b"not a photo")
        w._add("t1.cls", b"2")
    items = list(read_shard(root / "twice-000000.tar"))
    assert [i.key for i in items if not isinstance(i, Problem)] == ["t0"]
    assert _problems(items) == [
        "twice-000000.tar: t1: member t1.jpg appears twice in a row; the sample is skipped"
    ]


# --------------------------------------------------------------------------- member caps


def _peak_bytes(items_of) -> tuple[list, int]:
    tracemalloc.start()
    try:
        items = list(itertools.islice(items_of(), BOUND))
        return items, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("wanted", [None, {"00003"}], ids=["index", "stream"])
def test_a_300_mib_label_is_refused_from_its_header_never_read(tmp_path, wanted):
    path = _sparse_shard(
        tmp_path / "big.tar", [("00001.cls", 1), ("00002.cls", 300 << 20), ("00003.cls", 1)]
    )
    items, peak = _peak_bytes(lambda: read_shard(path, wanted=wanted))
    assert peak < 4 << 20, f"{peak} bytes allocated reading a shard of a 300 MiB member"
    assert [i.key for i in items if not isinstance(i, Problem)] == ["00001", "00003"]
    assert _problems(items) == [
        f"big.tar: 00002: member 00002.cls holds {300 << 20} bytes, above the "
        f"{MEMBER_CAPS['cls']}-byte cap for .cls members (shards.MEMBER_CAPS); not read; "
        "the sample is skipped"
    ]


@pytest.mark.slow
def test_a_pipe_stream_skips_a_300_mib_label_in_blocks_not_whole(tmp_path):
    path = _sparse_shard(
        tmp_path / "big.tar", [("00001.cls", 1), ("00002.cls", 300 << 20), ("00003.cls", 1)]
    )
    for wanted in (None, {"00003"}):
        with open(path, "rb") as f:
            items, peak = _peak_bytes(
                lambda f=f, w=wanted: read_samples(f, "s", stream=True, wanted=w)
            )
        assert peak < 4 << 20, f"{peak} bytes allocated streaming a 300 MiB member"
        assert len(_problems(items)) == 1 and "00002.cls holds" in _problems(items)[0]


def test_an_oversized_photo_counts_against_max_bad_fraction_naming_shard_and_member(tmp_path):
    root = tmp_path / "train"
    _good_shard(root, "a", 3)
    _sparse_shard(root / "b-huge.tar", [("h1.jpg", MEMBER_CAPS["jpg"] + 1), ("h1.cls", 1)])
    assert len(index_shards(ChannelInput("train", root), 16, 0.3)) == 3
    with pytest.raises(DataError) as info:
        index_shards(ChannelInput("train", root), 16, 0.2)
    assert "b-huge.tar: h1: member h1.jpg holds 33554433 bytes, above the" in info.value.reason


# --------------------------------------------------------------------------- keys as ids


def test_a_key_that_is_not_a_photo_id_is_a_problem_and_never_written(tmp_path):
    root = tmp_path / "train"
    _good_shard(root, "a", 2)
    with tarfile.open(root / "b-evil.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in (("../evil.jpg", _jpeg(1)), ("../evil.cls", b"1")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    channel = index_shards(ChannelInput("train", root), 16, 0.5)
    assert sorted(s.id for s in channel) == ["a0", "a1"]
    with pytest.raises(DataError, match=r"b-evil.tar: ../evil: member ../evil.jpg: the key is"):
        index_shards(ChannelInput("train", root), 16, 0.2)
    with pytest.raises(ValueError, match=r"id '../x' is not a photo id"):
        ShardWriter(tmp_path / "out", "w").write("../x", _jpeg(0), 1)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- the writer


def test_shard_writer_leaves_no_temporary_file_on_an_error(tmp_path):
    folder = tmp_path / "out"
    with pytest.raises(RuntimeError, match="stopped"), ShardWriter(folder, "w", 10 * _KIB) as w:
        for i in range(4):
            w.write(f"k{i}", _jpeg(i) + bytes(3 * _KIB), 1)  # a shard of its own each
        raise RuntimeError("stopped")
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["w-000000.tar", "w-000001.tar", "w-000002.tar"]  # finished ones stay
    assert [s.name for s in w.shards] == names


_KIB = 1024
