"""A real ``./train`` run calibrates: the card has the sections the server uses, the output
folder has the before/after reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bincounter import calibration
from bincounter.decision import choose_rule

pytestmark = pytest.mark.slow

PNG = b"\x89PNG\r\n\x1a\n"


def test_the_card_and_output_of_a_real_run_carry_the_calibration(trained_model_dir: Path) -> None:
    card = json.loads((trained_model_dir / "model_card.json").read_text())
    section, checks = card["calibration"], card["verification"]
    assert section["method"] == "temperature_bias" and section["fitted_on"] == "validation"
    assert 0.05 < section["temperature"] < 20.1 and section["head"] == card["head"]
    assert len(section["bias"]) == 5 and np.isfinite(section["bias"]).all()
    assert set(section["confidence_thresholds"]) == {f"{a:g}" for a in calibration.ACCURACY_LEVELS}
    assert 0 <= checks["thresholds"]["mismatch"] < checks["thresholds"]["match"]
    assert checks["mismatch_rate"] == 0.1
    out = trained_model_dir.parent / "output" / "data"
    for name in ("reliability.png", "risk_coverage.png"):
        assert (out / name).read_bytes()[:8] == PNG
    report = json.loads((out / "calibration.json").read_text())
    for split in ("validation", "test"):
        before, after = report["splits"][split]["before"], report["splits"][split]["after"]
        assert set(after["accuracy_at_coverage"]) == {"0.1", "0.2", "0.3", "0.5", "1"}
        for figures in (before, after):
            assert 0 <= figures["ece"] <= 1 and figures["nll"] > 0 and 0 <= figures["brier"] <= 2
    # fitted on validation, so validation NLL cannot get worse (the fit includes T = 1's region)
    validation = report["splits"]["validation"]
    assert validation["after"]["nll"] <= validation["before"]["nll"] + 1e-9
    assert report["calibration"] == section


def test_the_rule_and_figures_are_those_of_the_returned_counts(trained_model_dir: Path) -> None:
    """Calibration changes an answer's confidence, never its count: the card's rule, chosen on
    validation, gives the same counts before and after, and the card's figures are theirs."""
    card = json.loads((trained_model_dir / "model_card.json").read_text())
    final, rule = card["metrics"], card["decision"]
    assert card["hyperparameters"]["decision"] == "auto"
    assert final["decision"] == rule == choose_rule(final["validation_by_rule"])
    assert final["validation"]["accuracy"] == final["validation_by_rule"][rule]["accuracy"]
    out = trained_model_dir.parent / "output" / "data"
    report = json.loads((out / "calibration.json").read_text())["splits"]
    for split in ("validation", "test"):
        before, after = report[split]["before"], report[split]["after"]
        assert before["accuracy"] == after["accuracy"]
        assert final[split]["n"] == after["n"]
        assert final[split]["accuracy"] == pytest.approx(after["accuracy"], abs=1e-9)


def test_the_card_is_calibrated_for_eight_averaged_variants_too(trained_model_dir: Path) -> None:
    """A server or audit with ``BINCOUNTER_TTA=8`` answers from the mean of eight variants, which
    is less sure than one pass: the job fits its own temperature, biases and thresholds."""
    card = json.loads((trained_model_dir / "model_card.json").read_text())
    part, checks = card["calibration"]["tta8"], card["verification"]["tta8"]
    assert 0.05 < part["temperature"] < 20.1 and len(part["bias"]) == 5
    assert "thresholds" in checks and "validation" in checks
    out = trained_model_dir.parent / "output" / "data"
    report = json.loads((out / "calibration.json").read_text())
    validation = report["splits_tta8"]["validation"]
    # fitted on the averaged probabilities, not the single pass's
    assert validation["before"]["nll"] != report["splits"]["validation"]["before"]["nll"]
    assert validation["after"]["nll"] <= validation["before"]["nll"] + 1e-9
    assert set(report["splits_tta8"]) == {"validation", "test"}
