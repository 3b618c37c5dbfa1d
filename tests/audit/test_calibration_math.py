"""The calibration and verification math on synthetic data whose right answers are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bincounter import calibration, verification
from bincounter.counting import probabilities64
from bincounter.errors import VerificationError


def sample_labels(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One label per row drawn from that row's probabilities: calibrated by construction."""
    u = rng.random(len(p))[:, None]
    return np.minimum((np.cumsum(p, axis=1) < u).sum(1), p.shape[1] - 1)


@pytest.mark.parametrize("head", ["softmax", "coral"])
def test_numpy_probabilities_agree_with_torch(head: str) -> None:
    outputs = np.random.default_rng(0).normal(0, 3, (64, 5 if head == "softmax" else 4))
    ours = calibration.head_probabilities(outputs, head)
    theirs = probabilities64(torch.from_numpy(outputs), head)
    np.testing.assert_allclose(ours, theirs, atol=1e-12)
    np.testing.assert_allclose(ours.sum(1), 1.0, atol=1e-12)


@pytest.mark.parametrize("head,true_t", [("softmax", 2.5), ("softmax", 0.5), ("coral", 2.0)])
def test_temperature_recovers_a_known_temperature(head: str, true_t: float) -> None:
    rng = np.random.default_rng(1)
    k = 5 if head == "softmax" else 4
    z = rng.normal(0, 2, (20000, k))
    if head == "coral":
        z = np.sort(z, axis=1)[:, ::-1] + np.linspace(2, -2, 4)
    labels = sample_labels(calibration.head_probabilities(z, head), rng)
    # The network's outputs are the true logits scaled by T: dividing by T calibrates them.
    fitted = calibration.fit_temperature(z * true_t, labels, head)
    assert fitted == pytest.approx(true_t, rel=0.05)


def test_ece_of_calibrated_data_is_near_zero_and_of_overconfident_data_is_not() -> None:
    rng = np.random.default_rng(2)
    p = calibration.head_probabilities(rng.normal(0, 1.5, (50000, 5)), "softmax")
    labels = sample_labels(p, rng)
    conf, correct = calibration.confidence_and_correct(p, labels)
    assert calibration.expected_calibration_error(conf, correct) < 0.01
    sharp = calibration.head_probabilities(np.log(p) * 3, "softmax")
    conf, correct = calibration.confidence_and_correct(sharp, labels)
    assert calibration.expected_calibration_error(conf, correct) > 0.1


def test_scores_nll_brier_and_coverage() -> None:
    p = np.array([[0.9, 0.1, 0, 0, 0], [0.2, 0.8, 0, 0, 0], [0.6, 0.4, 0, 0, 0]])
    labels = np.array([0, 0, 0])
    s = calibration.scores(p, labels)
    assert s["nll"] == pytest.approx(-(np.log(0.9) + np.log(0.2) + np.log(0.6)) / 3)
    assert s["brier"] == pytest.approx((0.02 + 1.28 + 0.32) / 3)
    assert s["accuracy"] == pytest.approx(2 / 3)
    # most confident first: 0.9 (right), 0.8 (wrong), 0.6 (right)
    _, accuracy = calibration.risk_coverage(*calibration.confidence_and_correct(p, labels))
    np.testing.assert_allclose(accuracy, [1.0, 0.5, 2 / 3])
    assert s["accuracy_at_coverage"]["1"] == pytest.approx(2 / 3)


def test_confidence_thresholds_keep_the_promised_accuracy() -> None:
    rng = np.random.default_rng(3)
    p = calibration.head_probabilities(rng.normal(0, 1.5, (5000, 5)), "softmax")
    labels = sample_labels(p, rng)
    conf, correct = calibration.confidence_and_correct(p, labels)
    thresholds = calibration.confidence_thresholds(conf, correct)
    for level, t in thresholds.items():
        assert t is not None
        assert correct[conf >= t].mean() >= float(level)
    assert thresholds["0.9"] > thresholds["0.5"]
    assert calibration.threshold_for(0.65, thresholds) == thresholds["0.7"]
    assert calibration.threshold_for(0.95, thresholds) is None
    # an unreachable level is None, not a threshold set by a few lucky photos
    none = calibration.confidence_thresholds(np.linspace(0, 1, 100), np.zeros(100, bool))
    assert set(none.values()) == {None}


def test_match_probability_combines_likelihood_and_prior() -> None:
    prior = [0.4, 0.3, 0.15, 0.1, 0.05]
    # the network says exactly the train prior: the photo carries no evidence
    m = verification.match_probabilities([prior], [3], 0.1, prior)
    assert m[0] == pytest.approx(0.9)
    # evidence for 3 items, records say 3; a lower mismatch rate raises the match probability
    p = np.array([[0.1, 0.2, 0.5, 0.15, 0.05]])
    likelihood = p[0] / prior
    expected = (
        0.9 * likelihood[2] / (0.9 * likelihood[2] + 0.025 * (likelihood.sum() - likelihood[2]))
    )
    assert verification.match_probabilities(p, [3], 0.1, prior)[0] == pytest.approx(expected)
    assert verification.match_probabilities(p, [3], 0.01, prior)[0] > expected
    assert verification.match_probabilities(p, [5], 0.1, prior)[0] < 0.9


def test_verdicts_and_thresholds_chosen_on_validation() -> None:
    rng = np.random.default_rng(4)
    prior = np.array([0.3, 0.25, 0.2, 0.15, 0.1])
    logits = rng.normal(0, 1.2, (4000, 5)) + np.log(prior)
    p = calibration.head_probabilities(logits, "softmax")
    labels = sample_labels(p, rng)
    section = verification.choose_thresholds(p, labels, prior, 0.1)
    t = section["thresholds"]
    assert 0 < t["mismatch"] < t["match"] <= 1
    assert section["target_met"]["mismatch"]
    assert section["validation"]["precision"] >= 0.3 - 1e-9
    assert section["validation"]["lift"] == pytest.approx(section["validation"]["precision"] / 0.1)
    match, verdicts = verification.verify(p[:200], labels[:200] + 1, section)
    for value, verdict in zip(match, verdicts, strict=True):
        expected = (
            "mismatch" if value <= t["mismatch"] else "match" if value >= t["match"] else "review"
        )
        assert verdict == expected
    # a request's own (higher) mismatch rate lowers every match probability
    higher, _ = verification.verify(p[:200], labels[:200] + 1, section, mismatch_rate=0.5)
    assert (higher < match).all()


@pytest.mark.parametrize(
    "value,words",
    [(0, "no items"), (6, "more than 5"), (2.5, "not an integer"), ("x", "not a number")],
)
def test_expected_quantity_outside_the_range_names_it(value, words: str) -> None:
    with pytest.raises(VerificationError, match=r"1\.\.5") as info:
        verification.check_expected(value)
    assert words in info.value.reason


def test_rate_must_be_inside_zero_one() -> None:
    with pytest.raises(VerificationError, match="between 0 and 1"):
        verification.check_rate(1.0)
    assert verification.check_expected("3") == 3
