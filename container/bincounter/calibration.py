"""Calibrated probabilities and selective answers: numpy only, shared by training and serving.

A network trained by cross-entropy is rarely calibrated: when it says 0.6, it is right more or
less often than 60% of the time. One number, a temperature ``T`` fitted on validation after the
best epoch is chosen, divides the head's outputs before they become probabilities: the softmax
head's five logits, or the CORAL head's four cumulative logits (``P(count > k)``, which then
give the five probabilities as in ``counting.probabilities``). ``T`` is fitted by the negative
log-likelihood of the resulting five-class probabilities, so both heads are judged the same way.
A temperature keeps the order of the logits, so the softmax head's most probable count and the
CORAL head's median count do not change; only how sure the model says it is.

The server applies the card's ``calibration`` in one place (``calibrated_probabilities``, called
by the predictor for every engine and precision), so every answer carries the same meaning.

The same section of the card holds ``confidence_thresholds``: for each stated accuracy level,
the smallest confidence whose photos were right at least that often on validation, which is how
a client's ``min_accuracy`` becomes "answer, or abstain".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from . import decision
from .decision import decide

#: Bins of the expected calibration error (the usual 15, as in Guo et al. 2017).
ECE_BINS = 15

#: Accuracy levels a card stores confidence thresholds for (``min_accuracy``).
ACCURACY_LEVELS: tuple[float, ...] = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

#: Coverages the reports tabulate: accuracy of the most confident x of photos.
COVERAGES: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5, 1.0)

#: A threshold must keep at least this many validation photos (and 2% of them) to be trusted.
MIN_KEPT = 10

#: The range ``fit_temperature`` searches, in log T.
_LOG_T_RANGE = (-3.0, 3.0)


def head_probabilities(outputs: ArrayLike, head: str, temperature: float = 1.0) -> np.ndarray:
    """Head outputs ``[N, K]`` / ``temperature`` -> ``float64 [N, 5]`` probabilities summing to 1
    (``decision.head_probabilities`` of the scaled outputs: one mapping for both)."""
    scaled = np.atleast_2d(np.asarray(outputs, dtype=np.float64)) / float(temperature)
    return decision.head_probabilities(scaled, head)


def temperature_of(calibration: Mapping[str, Any] | None) -> float:
    """The card's temperature; 1 (outputs as they are) for a card without calibration."""
    if not calibration:
        return 1.0
    return float(calibration.get("temperature", 1.0))


def calibrated_probabilities(
    outputs: ArrayLike, head: str, calibration: Mapping[str, Any] | None
) -> np.ndarray:
    """What the server answers with: the card's calibration applied, then the head's mapping."""
    return head_probabilities(outputs, head, temperature_of(calibration))


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
    p: ArrayLike, labels: ArrayLike, decision: str = "argmax"
) -> tuple[np.ndarray, np.ndarray]:
    """The served ``confidence`` (probability of the decided count) and whether it was right."""
    p = np.asarray(p, dtype=np.float64)
    chosen = decide(p, decision)
    return p[np.arange(len(p)), chosen], chosen == np.asarray(labels, dtype=np.int64)


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


def scores(p: ArrayLike, labels: ArrayLike, decision: str = "argmax") -> dict[str, Any]:
    """Every figure a calibration report gives for one set of probabilities."""
    confidence, correct = confidence_and_correct(p, labels, decision)
    return {
        "n": len(correct),
        "accuracy": float(correct.mean()) if len(correct) else 0.0,
        "ece": expected_calibration_error(confidence, correct),
        "nll": nll(p, labels),
        "brier": brier(p, labels),
        "accuracy_at_coverage": accuracy_at_coverage(confidence, correct),
    }


# --------------------------------------------------------------------------- fitting


def fit_temperature(outputs: ArrayLike, labels: ArrayLike, head: str) -> float:
    """The temperature that minimises the NLL of the head's five probabilities on ``labels``.

    A coarse grid over log T in [-3, 3], then golden-section search around its best point: for
    the softmax head the NLL is convex in 1/T, and the grid keeps the CORAL head's (clipped)
    probabilities from trapping the search in a far-off local minimum.
    """
    outputs = np.asarray(outputs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        raise ValueError("cannot fit a temperature on no photos")

    def loss(log_t: float) -> float:
        return nll(head_probabilities(outputs, head, float(np.exp(log_t))), labels)

    grid = np.linspace(*_LOG_T_RANGE, 61)
    best = int(np.argmin([loss(g) for g in grid]))
    lo, hi = grid[max(0, best - 1)], grid[min(len(grid) - 1, best + 1)]
    ratio = (np.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = loss(a), loss(b)
    for _ in range(40):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = loss(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = loss(b)
    return float(np.exp((lo + hi) / 2))


def confidence_thresholds(
    confidence: ArrayLike, correct: ArrayLike, levels: Sequence[float] = ACCURACY_LEVELS
) -> dict[str, float | None]:
    """For each accuracy level, the lowest confidence whose photos reached it on validation.

    "Reached": the photos at or above the threshold were right at least ``level`` of the time
    and number at least ``MIN_KEPT`` (and 2% of the split), so a threshold is never set by a
    handful of lucky photos. ``None`` where no such threshold exists: abstain on everything.
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    order = np.argsort(-confidence, kind="stable")
    conf_sorted = confidence[order]
    accuracy = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
    # Only cut between distinct confidences: a threshold keeps every photo at its value.
    last_of_value = np.r_[conf_sorted[1:] != conf_sorted[:-1], True]
    enough = np.arange(1, len(order) + 1) >= max(MIN_KEPT, int(np.ceil(0.02 * len(order))))
    out: dict[str, float | None] = {}
    for level in levels:
        ok = np.flatnonzero(last_of_value & enough & (accuracy >= level))
        out[f"{level:g}"] = float(conf_sorted[ok[-1]]) if len(ok) else None
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


def section(
    outputs: ArrayLike, labels: ArrayLike, head: str, temperature: float, decision: str = "argmax"
) -> dict[str, Any]:
    """The card's ``calibration`` section from validation outputs, true class indices and the
    temperature fitted on them (``fit_temperature``), with the confidence thresholds of the
    served ``decision`` rule."""
    p = head_probabilities(outputs, head, temperature)
    confidence, correct = confidence_and_correct(p, labels, decision)
    return {
        "method": "temperature",
        "temperature": temperature,
        "head": head,
        "fitted_on": "validation",
        "n": len(correct),
        "confidence_thresholds": confidence_thresholds(confidence, correct),
    }


def class_prior(counts: ArrayLike) -> list[float]:
    """Each count's share of a split from its photos per count, every share at least 1e-6."""
    counts = np.asarray(counts, dtype=np.float64)
    prior = np.maximum(counts / max(1.0, float(counts.sum())), 1e-6)
    return [float(v) for v in prior / prior.sum()]
