"""The failure file SageMaker shows, and no half-written model left behind."""

import pytest

from bincounter.model import CARD_FILE, WEIGHTS_FILE
from bincounter.paths import Paths
from bincounter.training.job import remove_incomplete_model, write_failure


def test_failure_file_first_line_is_the_one_line_reason_then_the_detail(tmp_path):
    paths = Paths(tmp_path)
    write_failure(paths, "channel 'train'\n  holds   no photos", "Traceback ...\n  line 2")
    lines = paths.failure_file.read_text().splitlines()
    assert lines == ["channel 'train' holds no photos", "Traceback ...", "  line 2"]


def test_an_earlier_failure_file_is_never_overwritten(tmp_path):
    paths = Paths(tmp_path)
    write_failure(paths, "rank 0: the specific reason")
    write_failure(paths, "rank 1: collective timed out", "detail")
    assert paths.failure_file.read_text() == "rank 0: the specific reason\n"


def test_an_unwritable_tree_does_not_hide_the_real_error(tmp_path, caplog):
    (tmp_path / "output").write_text("a file where the folder should be")
    write_failure(Paths(tmp_path), "the real error")  # must not raise
    assert "could not write failure file" in caplog.text


@pytest.mark.parametrize("with_card", [False, True], ids=["no-card", "card"])
def test_a_model_without_its_card_is_removed(tmp_path, with_card):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for name in (WEIGHTS_FILE, f".{WEIGHTS_FILE}.tmp", ".model_card.json.abc.tmp"):
        (model_dir / name).write_bytes(b"x")
    (model_dir / "keep.txt").write_text("not ours to remove")
    if with_card:
        (model_dir / CARD_FILE).write_text("{}")
    remove_incomplete_model(model_dir)
    left = sorted(p.name for p in model_dir.iterdir())
    if with_card:
        expected = [f".{WEIGHTS_FILE}.tmp", ".model_card.json.abc.tmp", WEIGHTS_FILE, CARD_FILE]
        assert left == sorted([*expected, "keep.txt"])
    else:
        assert left == ["keep.txt"]


def test_no_model_folder_is_fine(tmp_path):
    remove_incomplete_model(tmp_path / "model")
    assert not (tmp_path / "model").exists()
