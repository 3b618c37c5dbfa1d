"""The calibration and verification math on synthetic data whose right answers are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bincounter import calibration, verification
from bincounter.counting import probabilities64
from bincounter.decision import head_probabilities
from bincounter.errors import VerificationError


def sample_labels(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One label per row drawn from that row's probabilities: calibrated by construction."""
    u = rng.random(len(p))[:, None]
    return np.minimum((np.cumsum(p, axis=1) < u).sum(1), p.shape[1] - 1)


@pytest.mark.parametrize("head", ["softmax", "coral"])
def test_numpy_probabilities_agree_with_torch(head: str) -> None:
    outputs = np.random.default_rng(0).normal(0, 3, (64, 5 if head == "softmax" else 4))
    ours = head_probabilities(outputs, head)
    theirs = probabilities64(torch.from_numpy(outputs), head)
    np.testing.assert_allclose(ours, theirs, atol=1e-12)
    np.testing.assert_allclose(ours.sum(1), 1.0, atol=1e-12)


@pytest.mark.parametrize("true_t", [2.5, 0.5])
def test_fit_recovers_a_known_temperature_and_biases(true_t: float) -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, (20000, 5))
    labels = sample_labels(head_probabilities(z, "softmax"), rng)
    # The network's logits are the true ones less a bias per count, scaled by T: dividing by T
    # and adding the biases back calibrates them (biases are defined up to a constant).
    true_bias = np.array([0.8, 0.0, -0.5, 0.2, -0.5])
    network = head_probabilities((z - true_bias) * true_t, "softmax")
    fitted = calibration.fit(network, labels)
    assert fitted["temperature"] == pytest.approx(true_t, rel=0.05)
    bias = np.array(fitted["bias"])
    np.testing.assert_allclose(bias - bias.mean(), true_bias - true_bias.mean(), atol=0.08)
    served = calibration.calibrated(network, {"temperature": fitted["temperature"], **fitted})
    assert calibration.nll(served, labels) < calibration.nll(network, labels) - 0.01


def test_fit_on_the_coral_heads_probabilities_with_exact_zeros_stays_finite() -> None:
    rng = np.random.default_rng(5)
    cumulative = np.sort(rng.normal(0, 2, (3000, 4)), axis=1)[:, ::-1] + np.linspace(2, -2, 4)
    # an over-confident network whose cumulative outputs are not always in order
    p = head_probabilities(cumulative * 3 + rng.normal(0, 2, (3000, 4)), "coral")
    assert (p == 0).any()  # clipped differences: what a log must survive
    labels = sample_labels(head_probabilities(cumulative, "coral"), rng)
    fitted = calibration.fit(p, labels)
    assert 1.0 < fitted["temperature"] < 20 and np.isfinite(fitted["bias"]).all()
    assert calibration.nll(calibration.calibrated(p, fitted), labels) < calibration.nll(p, labels)


def test_a_count_the_validation_split_lacks_gets_a_bounded_bias() -> None:
    """The biases' prior keeps a missing count answerable (no -inf bias from a small split)."""
    rng = np.random.default_rng(6)
    p = head_probabilities(rng.normal(0, 1, (40, 5)), "softmax")
    labels = rng.integers(0, 4, 40)  # never count 5
    fitted = calibration.fit(p, labels)
    assert -5 < fitted["bias"][4] < 0
    assert calibration.calibrated(p, fitted)[:, 4].min() > 1e-4


def test_calibration_changes_the_confidence_never_the_count() -> None:
    p = np.array([[0.05, 0.15, 0.35, 0.35, 0.10], [0.40, 0.30, 0.20, 0.05, 0.05]])
    section = {"temperature": 1.5, "bias": [0.0, 0.0, 0.0, 0.0, 2.0]}
    for rule in ("argmax", "expected", "median"):
        served, chosen = calibration.served(p, section, rule)
        np.testing.assert_array_equal(chosen, calibration.decide(p, rule))
        # ...although the same rule on the calibrated probabilities would answer otherwise
        assert rule == "argmax" or (calibration.decide(served, rule) != chosen).any()
        np.testing.assert_allclose(served.sum(1), 1.0)
    confidence, _ = calibration.confidence_and_correct(p, [2, 0], section, "argmax")
    np.testing.assert_allclose(confidence, served[[0, 1], [2, 0]])
    # a card without calibration answers the network's probabilities as they are
    np.testing.assert_allclose(calibration.calibrated(p, None), p)


def test_ece_of_calibrated_data_is_near_zero_and_of_overconfident_data_is_not() -> None:
    rng = np.random.default_rng(2)
    p = head_probabilities(rng.normal(0, 1.5, (50000, 5)), "softmax")
    labels = sample_labels(p, rng)
    conf, correct = calibration.confidence_and_correct(p, labels)
    assert calibration.expected_calibration_error(conf, correct) < 0.01
    sharp = head_probabilities(np.log(p) * 3, "softmax")
    conf, correct = calibration.confidence_and_correct(sharp, labels)
    assert calibration.expected_calibration_error(conf, correct) > 0.1


def test_the_ece_noise_floor_is_what_calibrated_data_shows_by_chance() -> None:
    rng = np.random.default_rng(8)
    confidence = rng.uniform(0.2, 0.6, 730)
    draws = [
        calibration.expected_calibration_error(confidence, rng.random(730) < confidence)
        for _ in range(400)
    ]
    floor = calibration.ece_noise_floor(confidence)
    assert floor == pytest.approx(np.mean(draws), rel=0.1)
    assert 0.015 < floor < 0.05  # 730 photos: a 0.02 target sits below the noise
    assert calibration.ece_noise_floor(rng.uniform(0.2, 0.6, 40000), draws=50) < 0.005


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
    p = head_probabilities(rng.normal(0, 1.5, (5000, 5)), "softmax")
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


def test_match_probability_combines_the_photo_and_the_mismatch_rate() -> None:
    # a photo that gives the record's count one chance in five carries no evidence: the prior
    m = verification.match_probabilities([[0.2, 0.2, 0.2, 0.2, 0.2]], [3], 0.1)
    assert m[0] == pytest.approx(0.9)
    # evidence for 3 items, records say 3; a lower mismatch rate raises the match probability
    p = np.array([[0.1, 0.2, 0.5, 0.15, 0.05]])
    expected = 0.9 * 0.5 / (0.9 * 0.5 + 0.1 / 4 * 0.5)
    assert verification.match_probabilities(p, [3], 0.1)[0] == pytest.approx(expected)
    assert verification.match_probabilities(p, [3], 0.01)[0] > expected
    assert verification.match_probabilities(p, [5], 0.1)[0] < 0.9


def test_match_probability_is_calibrated_when_records_go_wrong_as_modelled() -> None:
    """Records drawn as the module says (right with 1 - r, else one of the other four at random)
    for photos whose probabilities are calibrated: of the records given match probability m,
    a share m is right."""
    rng = np.random.default_rng(7)
    p = head_probabilities(rng.normal(0, 1.5, (60000, 5)), "softmax")
    truth = sample_labels(p, rng)
    wrong = rng.random(len(truth)) < 0.3
    record = np.where(wrong, (truth + rng.integers(1, 5, len(truth))) % 5, truth)
    m = verification.match_probabilities(p, record + 1, 0.3)
    rows = calibration.reliability(m, ~wrong, bins=10)
    for row in rows:
        if row["n"] > 1000:
            assert row["accuracy"] == pytest.approx(row["confidence"], abs=0.02)


def test_verdicts_and_thresholds_chosen_on_validation() -> None:
    rng = np.random.default_rng(4)
    prior = np.array([0.3, 0.25, 0.2, 0.15, 0.1])
    logits = rng.normal(0, 1.2, (4000, 5)) + np.log(prior)
    p = head_probabilities(logits, "softmax")
    labels = sample_labels(p, rng)
    section = verification.choose_thresholds(p, labels, 0.1)
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


def test_thresholds_keep_their_promise_on_new_photos_most_of_the_time() -> None:
    """A threshold where validation just reaches the level misses it on new photos half the
    time; one promised over resamples (``PROMISE_CONFIDENCE``) keeps it most of the time."""
    rng = np.random.default_rng(9)
    fresh = head_probabilities(rng.normal(0, 1.2, (100000, 5)), "softmax")
    fresh_conf, fresh_correct = calibration.confidence_and_correct(fresh, sample_labels(fresh, rng))
    kept = []
    for _ in range(40):
        p = head_probabilities(rng.normal(0, 1.2, (600, 5)), "softmax")
        conf, correct = calibration.confidence_and_correct(p, sample_labels(p, rng))
        threshold = calibration.confidence_thresholds(conf, correct, levels=(0.6,))["0.6"]
        assert threshold is not None
        kept.append(fresh_correct[fresh_conf >= threshold].mean() >= 0.6)
    assert np.mean(kept) >= 0.7


def test_mismatch_flags_keep_their_lift_on_new_photos_most_of_the_time() -> None:
    rng = np.random.default_rng(10)
    fresh = head_probabilities(rng.normal(0, 1.0, (20000, 5)), "softmax")
    fresh_records = verification.simulated_records(fresh, sample_labels(fresh, rng), 0.1)
    lifts = []
    for _ in range(30):
        p = head_probabilities(rng.normal(0, 1.0, (500, 5)), "softmax")
        section = verification.choose_thresholds(p, sample_labels(p, rng), 0.1)
        assert section["target_met"]["mismatch"]
        lifts.append(
            verification.flag_figures(*fresh_records, section["thresholds"]["mismatch"], 0.1)[
                "lift"
            ]
        )
    assert np.mean(np.array(lifts) >= verification.LIFT_TARGET) >= 0.7
