"""files.atomic_path: a reader sees the old file or the whole new one, and nothing is left behind."""

import pytest

from bincounter.files import atomic_path, atomic_write_bytes


def test_atomic_path_renames_onto_the_target_on_success(tmp_path):
    target = tmp_path / "sub" / "model.pt"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_bytes(b"new")
        assert not target.exists()
    assert target.read_bytes() == b"new"
    assert oct(target.stat().st_mode & 0o777) == oct(0o644)
    assert [p.name for p in target.parent.iterdir()] == ["model.pt"]


def test_atomic_path_keeps_the_old_file_and_removes_the_temp_on_error(tmp_path):
    target = tmp_path / "card.json"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target, suffix=".json") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["card.json"]


def test_atomic_write_bytes_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "x.bin"
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
