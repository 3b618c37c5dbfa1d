"""Hostile model cards: each is refused by the start-up check (``verify_model_files``, what the
server's arbiter runs before binding its port) with a ``ModelLoadError`` naming the field, and
no file outside the model folder is ever opened. Real files, no model needed: the check runs
before anything is built."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from bincounter.errors import ModelLoadError
from bincounter.files import sha256_file
from bincounter.model import CARD_FILE, WEIGHTS_FILE, verify_model_files
from bincounter.openvino_ir import verify_exported

OUTSIDE = Path("/etc/hostname")


def _model(tmp_path: Path, **changes: Any) -> Path:
    """A model folder with stand-in weights and a card, ``changes`` applied (``None`` drops a
    field). The folder sits deep enough for ``../`` chains to reach ``/``."""
    model_dir = tmp_path / "a" / "b" / "model"
    model_dir.mkdir(parents=True)
    (model_dir / WEIGHTS_FILE).write_bytes(b"weights")
    card = {
        "format": "bincounter-model/1",
        "arch": "resnet18",
        "classes": [1, 2, 3, 4, 5],
        "head": "softmax",
        "decision": "argmax",
        "image_size": 64,
        "weights_file": WEIGHTS_FILE,
        "weights_sha256": sha256_file(model_dir / WEIGHTS_FILE),
        "val_accuracy": 0.5,
    }
    for key, value in changes.items():
        if value is None:
            card.pop(key)
        else:
            card[key] = value
    (model_dir / CARD_FILE).write_text(json.dumps(card))
    return model_dir


def _start_up_check(model_dir: Path) -> dict[str, Any]:
    card, _ = verify_model_files(model_dir)
    verify_exported(model_dir, card)
    return card


def test_a_good_card_passes_with_old_cards_defaults_and_extras_kept(tmp_path):
    card = _start_up_check(_model(tmp_path, head=None, decision=None))
    assert (card["head"], card["decision"], card["val_accuracy"]) == ("softmax", "argmax", 0.5)


@pytest.mark.skipif(not OUTSIDE.is_file(), reason="needs a file outside the model folder")
@pytest.mark.parametrize(
    ("changes", "field", "why"),
    [
        ({"weights_sha256": None}, "weights_sha256", "Field required"),
        ({"weights_sha256": "abc"}, "weights_sha256", "should match pattern"),
        ({"image_size": "big"}, "image_size", "valid integer (got 'big')"),
        ({"image_size": True}, "image_size", "valid integer"),
        ({"image_size": -3}, "image_size", "greater than 0"),
        ({"classes": 5}, "classes", "valid list"),
        ({"classes": [1, 2, 3]}, "classes", "is [1, 2, 3], not [1, 2, 3, 4, 5]"),
        ({"arch": "vgg16"}, "arch", "'resnet18', 'resnet34' or 'resnet50'"),
        ({"head": ["softmax"]}, "head", "'softmax' or 'coral'"),
        ({"weights_file": 7}, "weights_file", "valid string"),
        ({"weights_file": "../../etc/hostname"}, "weights_file", "not a plain file name"),
        ({"weights_file": str(OUTSIDE)}, "weights_file", "not a plain file name"),
        ({"weights_file": ".."}, "weights_file", "not a plain file name"),
        (
            {
                "openvino": {
                    "files": {"fp32": {"xml": "m.xml", "bin": "m.bin", "xml_sha256": "0" * 64}}
                }
            },
            "openvino.files.fp32.bin_sha256",
            "Field required",
        ),
        (
            {"openvino": {"check_set": {"file": "../../../../etc/hostname", "sha256": "0" * 64}}},
            "openvino.check_set.file",
            "not a plain file name",
        ),
        ({"calibration": {"temperature": 0}}, "calibration.temperature", "greater than 0"),
        ({"calibration": {"temperature": float("nan")}}, "calibration.temperature", "finite"),
        ({"calibration": {"bias": [1, 2]}}, "calibration.bias", "at least 5"),
        (
            {"calibration": {"tta8": {"bias": [0, 0, 0, 0, "x"]}}},
            "calibration.tta8.bias.4",
            "valid number",
        ),
        (
            {"calibration": {"confidence_thresholds": {"0.7": 1.5}}},
            "calibration.confidence_thresholds.0.7",
            "less than or equal to 1",
        ),
        (
            {"verification": {"thresholds": {"mismatch": 2, "match": 1}}},
            "verification.thresholds.mismatch",
            "less than or equal to 1",
        ),
        ({"verification": {"mismatch_rate": 1}}, "verification.mismatch_rate", "less than 1"),
    ],
)
def test_a_malformed_card_is_refused_naming_the_field(tmp_path, changes, field, why):
    if changes.get("weights_file") in ("../../etc/hostname", str(OUTSIDE)):
        changes["weights_sha256"] = sha256_file(OUTSIDE)  # a matching sha: only the name is wrong
    model_dir = _model(tmp_path, **changes)
    with pytest.raises(ModelLoadError) as info:
        _start_up_check(model_dir)
    assert f"model card {model_dir / CARD_FILE}: field '{field}'" in info.value.reason
    assert why in info.value.reason


@pytest.mark.skipif(not OUTSIDE.is_file(), reason="needs a file outside the model folder")
def test_a_card_naming_a_symlink_out_of_the_model_folder_is_refused(tmp_path):
    model_dir = _model(tmp_path, weights_file="link.pt", weights_sha256=sha256_file(OUTSIDE))
    os.symlink(OUTSIDE, model_dir / "link.pt")
    with pytest.raises(ModelLoadError, match=r"field 'weights_file': 'link\.pt' resolves outside"):
        _start_up_check(model_dir)


@pytest.mark.parametrize("text", ["[" * 100_000, "[1, 2]", "\xff"])
def test_a_card_that_is_not_a_json_object_is_refused(tmp_path, text):
    model_dir = _model(tmp_path)
    (model_dir / CARD_FILE).write_text(text, errors="surrogateescape")
    with pytest.raises(ModelLoadError, match=re.escape(f"model card {model_dir / CARD_FILE}")):
        _start_up_check(model_dir)
