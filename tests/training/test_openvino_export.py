"""``training.openvino_export``: which photos it picks, what it records, and that it never fails a job."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from bincounter.training.openvino_export import compare, export_openvino, pick, record_skipped


@dataclass(frozen=True)
class Photo:
    path: Path
    label: int


PHOTOS = [Photo(Path(f"{i}.jpg"), label) for i, label in enumerate([0] * 10 + [1] * 3 + [4] * 7)]


def test_pick_spreads_over_the_classes_and_is_seeded():
    picked = pick(PHOTOS, 9, seed=3)
    assert sorted(p.label for p in picked) == [0, 0, 0, 1, 1, 1, 4, 4, 4]
    assert pick(PHOTOS, 9, seed=3) == picked and pick(PHOTOS, 9, seed=4) != picked
    assert len(pick(PHOTOS, 100, seed=0)) == len(PHOTOS)  # never more than there are


def test_compare_records_both_precisions_and_their_agreement():
    fp32 = {"photos": 4, "accuracy": 0.75, "rmse": 0.5, "predictions": np.array([0, 1, 2, 3])}
    int8 = {"photos": 4, "accuracy": 0.5, "rmse": 1.0, "predictions": np.array([0, 1, 2, 0])}
    assert compare(fp32, int8) == {
        "photos": 4,
        "fp32_accuracy": 0.75,
        "int8_accuracy": 0.5,
        "fp32_rmse": 0.5,
        "int8_rmse": 1.0,
        "top1_agreement": 0.75,
    }


@pytest.mark.slow
def test_without_openvino_the_job_keeps_its_model_and_says_why(tmp_path, monkeypatch):
    from bincounter.model import build_model, save_model

    model_dir = tmp_path / "model"
    save_model(build_model("resnet18"), model_dir, arch="resnet18", image_size=32, extra={})
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    section = export_openvino(model_dir, PHOTOS, None, calibration_photos=10)
    assert section["skipped"].startswith("openvino or nncf not importable")
    card = json.loads((model_dir / "model_card.json").read_text())
    assert card["openvino"] == section and "files" not in section
    assert sorted(p.name for p in model_dir.iterdir()) == ["model.pt", "model_card.json"]


def test_a_crash_of_the_export_process_costs_the_export_not_the_model(tmp_path, monkeypatch):
    """The export runs in a child process: one that dies of a signal (as a native fault in
    OpenVINO or NNCF would) leaves the model, and the card says what happened."""
    from bincounter.model import build_model, save_model

    model_dir = tmp_path / "model"
    save_model(build_model("resnet18"), model_dir, arch="resnet18", image_size=32, extra={})
    crashing = tmp_path / "python"
    crashing.write_text("#!/bin/sh\nkill -SEGV $$\n")
    crashing.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(crashing))
    section = export_openvino(model_dir, PHOTOS, None, calibration_photos=10)
    assert section == {"skipped": "the export process ended with signal SIGSEGV; its log is above"}
    card = json.loads((model_dir / "model_card.json").read_text())
    assert card["openvino"] == section
    assert sorted(p.name for p in model_dir.iterdir()) == ["model.pt", "model_card.json"]


def test_a_skipped_export_is_recorded_with_its_reason(tmp_path):
    from bincounter.model import build_model, save_model

    model_dir = tmp_path / "model"
    save_model(build_model("resnet18"), model_dir, arch="resnet18", image_size=32, extra={})
    record_skipped(model_dir, "channel 'validation' is a Pipe stream")
    card = json.loads((model_dir / "model_card.json").read_text())
    assert card["openvino"] == {"skipped": "channel 'validation' is a Pipe stream"}
    assert card["weights_sha256"]  # the rest of the card is kept
