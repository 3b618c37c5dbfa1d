"""``CheckpointStore``: round trip, how many it keeps, and falling back past a damaged one."""

import logging

import pytest
import torch

from bincounter.training.checkpoint import CheckpointStore


def _state(epoch: int) -> dict:
    return {"epoch": epoch, "weights": torch.full((3,), float(epoch))}


def _saved(store: CheckpointStore) -> list[str]:
    return sorted(p.name for p in store.dir.iterdir())


def test_save_then_load_latest_round_trips(tmp_path):
    store = CheckpointStore(tmp_path, "job-1")
    path = store.save(_state(1))
    loaded, loaded_path = store.load_latest()
    assert loaded_path == path and path.parent == tmp_path / "job-1"
    assert loaded["epoch"] == 1 and torch.equal(loaded["weights"], torch.full((3,), 1.0))


def test_nothing_saved_loads_none(tmp_path):
    assert CheckpointStore(tmp_path, "job-1").load_latest() is None


def test_keeps_the_newest_two(tmp_path):
    store = CheckpointStore(tmp_path, "job-1")
    for epoch in range(1, 5):
        store.save(_state(epoch))
    assert _saved(store) == [
        "ckpt-000003.pt",
        "ckpt-000003.pt.sha256",
        "ckpt-000004.pt",
        "ckpt-000004.pt.sha256",
    ]
    assert store.load_latest()[0]["epoch"] == 4


@pytest.mark.parametrize(("job_name", "folder"), [("", "local"), ("tune/001 x", "tune_001_x")])
def test_folder_per_job_name_made_safe(tmp_path, job_name, folder):
    assert CheckpointStore(tmp_path, job_name).save(_state(1)).parent == tmp_path / folder


def _truncate(path):
    path.write_bytes(path.read_bytes()[:100])


def _drop_sidecar(path):
    path.with_suffix(".pt.sha256").unlink()


def _garbage_with_matching_sidecar(path):
    from bincounter.files import sha256_file

    path.write_bytes(b"not a torch file")
    path.with_suffix(".pt.sha256").write_text(sha256_file(path))


def _foreign_dict(path):
    from bincounter.files import sha256_file

    torch.save({"something": "else"}, path)
    path.with_suffix(".pt.sha256").write_text(sha256_file(path))


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (_truncate, "does not match its sha256"),
        (_drop_sidecar, "has no .sha256 sidecar"),
        (_garbage_with_matching_sidecar, "does not load"),
        (_foreign_dict, "is not a bincounter checkpoint"),
    ],
    ids=["truncated", "no-sidecar", "unloadable", "foreign"],
)
def test_a_damaged_newest_falls_back_to_the_previous_one(tmp_path, caplog, damage, problem):
    store = CheckpointStore(tmp_path, "job-1")
    store.save(_state(1))
    newest = store.save(_state(2))
    damage(newest)
    with caplog.at_level(logging.WARNING, logger="bincounter.training.checkpoint"):
        loaded, path = store.load_latest()
    assert loaded["epoch"] == 1 and path.name == "ckpt-000001.pt"
    assert f"checkpoint {newest} {problem}" in caplog.text


def test_sidecar_is_written_before_the_checkpoint_appears(tmp_path, monkeypatch):
    """The checkpoint's rename is the commit point: its sidecar must already be there."""
    import bincounter.training.checkpoint as checkpoint

    seen = []
    real = checkpoint.atomic_write_bytes

    def spy(path, data, **kwargs):
        seen.append((path.name, sorted(p.name for p in path.parent.glob("ckpt-*"))))
        real(path, data, **kwargs)

    monkeypatch.setattr(checkpoint, "atomic_write_bytes", spy)
    CheckpointStore(tmp_path, "job-1").save(_state(1))
    assert seen == [
        ("ckpt-000001.pt.sha256", []),
        ("ckpt-000001.pt", ["ckpt-000001.pt.sha256"]),
    ]


def test_a_stale_sidecar_without_checkpoint_is_ignored_then_overwritten(tmp_path):
    """A kill between sidecar and rename leaves a lone sidecar: no checkpoint, no harm."""
    store = CheckpointStore(tmp_path, "job-1")
    store.save(_state(1))
    (store.dir / "ckpt-000002.pt.sha256").write_text("0" * 64)  # killed before the rename
    loaded, path = store.load_latest()
    assert loaded["epoch"] == 1 and path.name == "ckpt-000001.pt"
    newest = store.save(_state(2))
    assert newest.name == "ckpt-000002.pt"
    assert store.load_latest()[0]["epoch"] == 2  # the stale hash was replaced
