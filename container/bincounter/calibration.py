"""Calibrated probabilities and selective answers: numpy only, shared by training and serving.

A network trained by cross-entropy is rarely calibrated: when it says 0.6, it is right more or
less often than 60% of the time, and not equally so for every count (the default recipe's
network says "1" and "5" too often against "2" to "4"). After the best epoch is chosen, the
training job fits a temperature ``T`` and one bias per count on validation, by the negative
log-likelihood of the true counts, and the calibrated probabilities are
``softmax(log(p) / T + bias)`` of the head's five probabilities ``p`` (for the softmax head,
its logits over ``T`` plus the biases; the CORAL head's five probabilities are calibrated the
same way). The biases are held to a standard
normal prior (a MAP fit), so a small validation split, or a count it lacks, cannot push one far.

Calibration changes what the answer *says about itself*, never the count: the card's decision
rule, chosen on validation for RMSE and accuracy, picks the count from the network's own
probabilities, and ``confidence`` is the calibrated probability of that count (``served``, the
one definition of an answer, used by the server and the training job's reports; what needs the
counts alone, evaluation and the int8 check, applies the rule and nothing else). A temperature
and biases applied before the rule would move the ``expected`` rule's counts: on the default
recipe's model that cost 1.3 to 2.7 points of validation accuracy.

The same section of the card holds ``confidence_thresholds``: for each stated accuracy level,
the smallest confidence whose photos were right at least that often on validation, which is how
a client's ``min_accuracy`` becomes "answer, or abstain".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .decision import decide

#: Bins of the expected calibration error (the usual 15, as in Guo et al. 2017).
ECE_BINS = 15

#: Accuracy levels a card stores confidence thresholds for (``min_accuracy``).
ACCURACY_LEVELS: tuple[float, ...] = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

#: Coverages the reports tabulate: accuracy of the most confident x of photos.
COVERAGES: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5, 1.0)

#: A threshold must keep at least this many validation photos (and 2% of them) to be trusted.
MIN_KEPT = 10

#: A threshold's promise (an accuracy for ``min_accuracy``, a precision for ``mismatch`` and
#: ``match`` verdicts) must hold in this share of bootstrap resamples of validation.
PROMISE_CONFIDENCE = 0.8

#: Bootstrap resamples behind each promise, and at most this many candidate cuts tested.
BOOTSTRAP_DRAWS = 200
_MAX_ENDS = 2000

#: The card's ``calibration.method``: one temperature and a bias per count.
METHOD = "temperature_bias"

#: The temperatures ``fit`` may choose (outside them the fit is not to be trusted).
T_RANGE = (np.exp(-3.0), np.exp(3.0))

#: Probabilities are floored here before their log (the CORAL head's can be exactly 0).
_FLOOR = 1e-12


def parameters(section: Mapping[str, Any] | None) -> tuple[float, np.ndarray]:
    """The card's temperature and biases; a card without calibration (or from before the biases)
    gives ``T = 1`` and zero biases where missing."""
    section = section or {}
    bias = np.asarray(section.get("bias", np.zeros(5)), dtype=np.float64)
    return float(section.get("temperature", 1.0)), bias


def calibrated(p: ArrayLike, section: Mapping[str, Any] | None) -> np.ndarray:
    """The network's probabilities ``[N, 5]`` under the card's calibration (rows sum to 1);
    exactly ``p`` without one."""
    p = np.atleast_2d(np.asarray(p, dtype=np.float64))
    t, bias = parameters(section)
    return p if t == 1.0 and not bias.any() else _scaled(p, 1.0 / t, bias)


def _scaled(p: np.ndarray, inverse_t: float, bias: np.ndarray) -> np.ndarray:
    z = np.log(np.clip(p, _FLOOR, None)) * inverse_t + bias
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def served(
    p: ArrayLike, section: Mapping[str, Any] | None, rule: str
) -> tuple[np.ndarray, np.ndarray]:
    """What the endpoint answers for the network's probabilities ``[N, 5]``: the calibrated
    probabilities and the counts (class indices) the card's ``rule`` picks from ``p`` itself."""
    p = np.atleast_2d(np.asarray(p, dtype=np.float64))
    return calibrated(p, section), decide(p, rule)


# --------------------------------------------------------------------------- scores


def nll(p: ArrayLike, labels: ArrayLike) -> float:
    """Mean negative log-likelihood of the true counts (class indices), probabilities >= 1e-12."""
    p = np.asarray(p, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    return float(-np.log(np.clip(p[np.arange(len(labels)), labels], 1e-12, None)).mean())


def brier(p: ArrayLike, labels: ArrayLike) -> float:
    """Mean over photos of the squared distance between the probabilities and the one-hot truth."""
    p = np.asarray(p, dtype=np.float64)
    onehot = np.eye(p.shape[1])[np.asarray(labels, dtype=np.int64)]
    return float(((p - onehot) ** 2).sum(axis=1).mean())


def confidence_and_correct(
    p: ArrayLike, labels: ArrayLike, section: Mapping[str, Any] | None = None, rule: str = "argmax"
) -> tuple[np.ndarray, np.ndarray]:
    """The served ``confidence`` (calibrated probability of the count ``rule`` picks from the
    network's probabilities ``p``) and whether that count was right."""
    p_served, chosen = served(p, section, rule)
    return p_served[np.arange(len(chosen)), chosen], chosen == np.asarray(labels, dtype=np.int64)


def reliability(
    confidence: ArrayLike, correct: ArrayLike, bins: int = ECE_BINS
) -> list[dict[str, float]]:
    """Equal-width confidence bins: photos, mean confidence and accuracy of each non-empty bin."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    index = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    rows = []
    for b in range(bins):
        mask = index == b
        if mask.any():
            rows.append(
                {
                    "low": b / bins,
                    "high": (b + 1) / bins,
                    "n": int(mask.sum()),
                    "confidence": float(confidence[mask].mean()),
                    "accuracy": float(correct[mask].mean()),
                }
            )
    return rows


def expected_calibration_error(
    confidence: ArrayLike, correct: ArrayLike, bins: int = ECE_BINS
) -> float:
    """ECE: the photo-weighted mean gap between confidence and accuracy over ``bins`` bins."""
    rows = reliability(confidence, correct, bins)
    total = sum(r["n"] for r in rows)
    return float(sum(r["n"] * abs(r["confidence"] - r["accuracy"]) for r in rows) / max(1, total))


def ece_noise_floor(confidence: ArrayLike, bins: int = ECE_BINS, draws: int = 1000) -> float:
    """The ECE a perfectly calibrated model with these confidences would show on this many
    photos, on average: each photo right with probability its confidence, ``draws`` times.

    Binned ECE is biased upwards on small splits (a bin of 100 photos at 0.35 misses by 0.04
    by chance alone), so a report's ECE is read against this figure: on 730 photos of the
    default recipe's confidences it is about 0.03, and an ECE near it is no evidence of
    miscalibration.
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    if len(confidence) == 0:
        return 0.0
    index = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    said = np.bincount(index, weights=confidence, minlength=bins)
    rng = np.random.default_rng(0)
    total = 0.0
    for _ in range(draws):  # one draw at a time: memory stays O(photos) on a large split
        right = rng.random(len(confidence)) < confidence
        total += np.abs(said - np.bincount(index, weights=right, minlength=bins)).sum()
    return float(total / draws / len(confidence))


def risk_coverage(confidence: ArrayLike, correct: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Coverage ``k/N`` and accuracy of the ``k`` most confident photos, for k = 1..N.

    Ties in confidence are broken by a stable sort, so equal inputs give equal curves.
    """
    order = np.argsort(-np.asarray(confidence, dtype=np.float64), kind="stable")
    hits = np.cumsum(np.asarray(correct, dtype=np.float64)[order])
    k = np.arange(1, len(order) + 1)
    return k / len(order), hits / k


def accuracy_at_coverage(
    confidence: ArrayLike, correct: ArrayLike, coverages: Sequence[float] = COVERAGES
) -> dict[str, float]:
    """Accuracy of the most confident ``x`` of photos, for each coverage ``x`` (keys ``"0.2"``)."""
    coverage, accuracy = risk_coverage(confidence, correct)
    n = len(coverage)
    return {f"{c:g}": float(accuracy[max(1, round(c * n)) - 1]) for c in coverages}


def scores(
    p: ArrayLike, labels: ArrayLike, section: Mapping[str, Any] | None = None, rule: str = "argmax"
) -> dict[str, Any]:
    """Every figure a calibration report gives for the network's probabilities ``p`` answered
    under ``section`` (None: as they are) and ``rule``."""
    confidence, correct = confidence_and_correct(p, labels, section, rule)
    p_served = calibrated(p, section)
    return {
        "n": len(correct),
        "accuracy": float(correct.mean()) if len(correct) else 0.0,
        "ece": expected_calibration_error(confidence, correct),
        "ece_noise_floor": ece_noise_floor(confidence),
        "nll": nll(p_served, labels),
        "brier": brier(p_served, labels),
        "accuracy_at_coverage": accuracy_at_coverage(confidence, correct),
    }


# --------------------------------------------------------------------------- fitting


def fit(p: ArrayLike, labels: ArrayLike) -> dict[str, Any]:
    """The temperature and biases that minimise the NLL of the true counts on ``labels``.

    The calibrated log-odds are linear in ``(1 / T, bias)``, so the NLL is convex in them and
    L-BFGS finds its one minimum (with the exact gradient). The biases carry a standard normal
    prior (a MAP fit: ``0.5 |b|^2`` against the split's summed NLL, so ``/ N`` on the mean).
    """
    from scipy.optimize import minimize  # training only: the server never fits

    log_p = np.log(np.clip(np.atleast_2d(np.asarray(p, dtype=np.float64)), _FLOOR, None))
    labels = np.asarray(labels, dtype=np.int64)
    n, k = len(labels), log_p.shape[1]
    if n == 0:
        raise ValueError("cannot fit a calibration on no photos")
    onehot = np.eye(k)[labels]

    def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
        inverse_t, bias = w[0], w[1:]
        z = log_p * inverse_t + bias
        z = z - z.max(axis=1, keepdims=True)
        log_q = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        loss = -log_q[np.arange(n), labels].mean() + 0.5 * bias @ bias / n
        error = np.exp(log_q) - onehot
        return loss, np.r_[(error * log_p).sum() / n, error.sum(axis=0) / n + bias / n]

    bounds = [(1.0 / T_RANGE[1], 1.0 / T_RANGE[0])] + [(None, None)] * k
    result = minimize(objective, np.r_[1.0, np.zeros(k)], jac=True, bounds=bounds)
    return {"temperature": float(1.0 / result.x[0]), "bias": [float(b) for b in result.x[1:]]}


def promised_cut(
    good: np.ndarray, weights: np.ndarray, groups: np.ndarray, allowed: np.ndarray, target: float
) -> int | None:
    """The furthest end of a prefix (an index into arrays already in cut order) whose weighted
    share of ``good`` holds at ``target`` with ``PROMISE_CONFIDENCE``, among ``allowed`` ends.

    A threshold placed where the validation figure just reaches its level is as likely to miss
    it on new photos as to keep it (on the default recipe's model, half of held-out halves
    missed a lift of 3). So the promise must hold in ``PROMISE_CONFIDENCE`` of bootstrap
    resamples of the validation photos (``groups``: which photo each element is; a photo's
    elements are drawn together). Deterministic: the draws are seeded.
    """
    point = np.cumsum(weights * good) / np.maximum(np.cumsum(weights), 1e-300)
    ends = np.flatnonzero(allowed & (point >= target))  # a bound never beats its estimate
    if len(ends) > _MAX_ENDS:  # long validation splits: test a spread of candidate ends
        ends = ends[np.linspace(0, len(ends) - 1, _MAX_ENDS).astype(np.int64)]
    if len(ends) == 0:
        return None
    rng = np.random.default_rng(0)
    draws = np.empty((BOOTSTRAP_DRAWS, len(ends)))
    for b in range(BOOTSTRAP_DRAWS):  # one draw at a time: memory stays O(elements)
        w = weights * rng.poisson(1.0, int(groups.max()) + 1)[groups]
        draws[b] = np.cumsum(w * good)[ends] / np.maximum(np.cumsum(w)[ends], 1e-300)
    held = ends[np.quantile(draws, 1.0 - PROMISE_CONFIDENCE, axis=0) >= target]
    return int(held[-1]) if len(held) else None


def confidence_thresholds(
    confidence: ArrayLike, correct: ArrayLike, levels: Sequence[float] = ACCURACY_LEVELS
) -> dict[str, float | None]:
    """For each accuracy level, the lowest confidence whose photos reach it (``promised_cut``).

    The photos at or above the threshold were right at least ``level`` of the time, with
    ``PROMISE_CONFIDENCE`` over resamples of validation, and number at least ``MIN_KEPT`` (and
    2% of the split), so a threshold is never set by a handful of lucky photos. ``None`` where
    no such threshold exists: abstain on everything.
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    order = np.argsort(-confidence, kind="stable")
    conf_sorted = confidence[order]
    # Only cut between distinct confidences: a threshold keeps every photo at its value.
    last_of_value = np.r_[conf_sorted[1:] != conf_sorted[:-1], True]
    enough = np.arange(1, len(order) + 1) >= max(MIN_KEPT, int(np.ceil(0.02 * len(order))))
    ones, photos = np.ones(len(order)), np.arange(len(order))
    out: dict[str, float | None] = {}
    for level in levels:
        end = promised_cut(correct[order], ones, photos, last_of_value & enough, level)
        out[f"{level:g}"] = None if end is None else float(conf_sorted[end])
    return out


def threshold_for(min_accuracy: float, thresholds: Mapping[str, float | None]) -> float | None:
    """The confidence a ``min_accuracy`` request needs: the stored level at or above it.

    Conservative between levels (0.65 uses the 0.7 threshold). ``None``: no stored level can
    promise it, so every answer abstains.
    """
    levels = sorted((float(k), v) for k, v in thresholds.items())
    for level, threshold in levels:
        if level >= min_accuracy - 1e-9:
            return threshold
    return None


def card_section(
    p: ArrayLike, labels: ArrayLike, fitted: Mapping[str, Any], head: str, rule: str
) -> dict[str, Any]:
    """The card's ``calibration`` section from the network's validation probabilities, true
    class indices and the parameters ``fit`` found on them, with the confidence thresholds of
    the answers under the served ``rule``."""
    section: dict[str, Any] = {
        "method": METHOD,
        "temperature": float(fitted["temperature"]),
        "bias": [float(b) for b in fitted["bias"]],
        "head": head,
        "fitted_on": "validation",
        "n": len(np.asarray(labels)),
    }
    confidence, correct = confidence_and_correct(p, labels, section, rule)
    section["confidence_thresholds"] = confidence_thresholds(confidence, correct)
    return section
