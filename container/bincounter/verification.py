"""Does this bin hold the quantity the records say? One function decides, for server and audit.

The network's calibrated probabilities answer "how many items does this photo show". An audit
asks something else: the records expect ``e`` items, and records are usually right. The model
of a wrong record: the true count is what the photo shows (the network's probabilities, whose
count mix is the photos' own), and the record matches it with probability ``1 - mismatch_rate``
or names one of the other four counts otherwise, each equally likely. Bayes' rule then gives

    P(true == e | photo, record e) = (1 - r) p_e / ((1 - r) p_e + r / 4 (1 - p_e)),

the ``match_probability``. (The converse model, a true count drawn around the record, would
divide the network's probabilities by the training split's count mix: on the default recipe's
model that ranked wrong records worse, AUROC 0.650 against 0.695 on validation; the audits
this product is measured on draw wrong records the way modelled here.)

Verdicts compare it with two thresholds chosen on validation (``choose_thresholds``, promised
over resamples of it) at the card's default mismatch rate: ``mismatch`` when it is low enough
that flagged records were wrong ``LIFT_TARGET`` times as often as records at random, ``match``
when high enough that records called right were wrong ``LIFT_TARGET`` times less often than at
random, ``review`` between.
The thresholds are posterior probabilities, so a request's own mismatch rate moves the
probability and with it the verdict.

Expected quantities outside 1..5 are refused: the model was never shown an empty bin or one
with more than five items, so it cannot say whether a photo holds 0 or 7.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from . import CLASSES
from .calibration import promised_cut
from .errors import VerificationError

#: The verdicts, from "records right" to "records wrong".
VERDICTS: tuple[str, ...] = ("match", "review", "mismatch")

#: The card's default rate at which records are wrong (a request may override it).
DEFAULT_MISMATCH_RATE = 0.1

#: How much better than auditing at random the verdicts aim to be, on validation.
LIFT_TARGET = 3.0

#: Threshold search keeps at least this share of the (weighted) validation records flagged.
_MIN_SHARE = 0.005


def check_expected(value: Any, where: str = "expected_quantity") -> int:
    """An expected quantity as an int in 1..5, or ``VerificationError`` naming the range."""
    low, high = CLASSES[0], CLASSES[-1]
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise VerificationError(
            f"{where}={value!r} is not a number; expected an integer {low}..{high}"
        ) from None
    if isinstance(value, bool) or not number.is_integer():
        raise VerificationError(f"{where}={value!r} is not an integer; expected {low}..{high}")
    quantity = int(number)
    if quantity < low or quantity > high:
        raise VerificationError(
            f"{where}={quantity} is outside {low}..{high}: the model was trained on bins of "
            f"{low} to {high} items only, so it cannot tell whether a bin holds "
            f"{'no items' if quantity < low else f'more than {high}'}"
        )
    return quantity


def check_rate(value: Any, where: str = "mismatch_rate") -> float:
    """A mismatch rate strictly between 0 and 1, or ``VerificationError``."""
    try:
        rate = float(value)
    except (TypeError, ValueError):
        raise VerificationError(f"{where}={value!r} is not a number in (0, 1)") from None
    if not 0.0 < rate < 1.0:
        raise VerificationError(f"{where}={value!r} must be strictly between 0 and 1")
    return rate


def match_probabilities(p: ArrayLike, expected: ArrayLike, mismatch_rate: float) -> np.ndarray:
    """``P(true count == expected | photo)`` for each row of ``p`` ``[N, 5]``, ``expected`` ``[N]``
    (the module's formula)."""
    p = np.atleast_2d(np.asarray(p, dtype=np.float64))
    index = np.asarray(expected, dtype=np.int64).reshape(-1) - CLASSES[0]
    p_e = p[np.arange(len(p)), index]
    right = (1.0 - mismatch_rate) * p_e
    wrong = mismatch_rate / (len(CLASSES) - 1) * np.clip(1.0 - p_e, 0.0, None)
    return right / np.clip(right + wrong, 1e-300, None)


def verdicts_for(match_probability: ArrayLike, thresholds: Mapping[str, float]) -> list[str]:
    """``mismatch`` at or below ``thresholds["mismatch"]``, ``match`` at or above
    ``thresholds["match"]``, ``review`` between."""
    m = np.asarray(match_probability, dtype=np.float64).reshape(-1)
    out = np.where(m >= thresholds["match"], "match", "review")
    return [str(v) for v in np.where(m <= thresholds["mismatch"], "mismatch", out)]


def verify(
    p: ArrayLike,
    expected: ArrayLike,
    section: Mapping[str, Any],
    mismatch_rate: float | None = None,
) -> tuple[np.ndarray, list[str]]:
    """THE verdict function: calibrated probabilities ``[N, 5]`` and expected quantities ``[N]``
    -> (match probabilities, verdicts), with the card's ``verification`` section.

    ``mismatch_rate`` overrides the card's default. Raises ``VerificationError`` for an
    expected quantity outside 1..5 or a rate outside (0, 1).
    """
    quantities = [check_expected(e) for e in np.asarray(expected, dtype=object).reshape(-1)]
    rate = check_rate(section["mismatch_rate"] if mismatch_rate is None else mismatch_rate)
    match = match_probabilities(p, quantities, rate)
    return match, verdicts_for(match, section["thresholds"])


def simulated_records(
    p: ArrayLike, labels: ArrayLike, mismatch_rate: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (photo, expected quantity) pair of a labelled split, weighted as an audit sees them.

    The expected quantity is the true count with weight ``1 - mismatch_rate`` and each other
    count with ``mismatch_rate / 4``: the exact expectation of drawing records at random, with
    no sampling noise. Returns match probabilities, whether the record is wrong, and weights.
    """
    p = np.atleast_2d(np.asarray(p, dtype=np.float64))
    labels = np.asarray(labels, dtype=np.int64)
    n, k = p.shape
    expected = np.tile(np.arange(k), n) + CLASSES[0]
    rows = np.repeat(np.arange(n), k)
    wrong = expected - CLASSES[0] != labels[rows]
    weights = np.where(wrong, mismatch_rate / (k - 1), 1.0 - mismatch_rate)
    match = match_probabilities(p[rows], expected, mismatch_rate)
    return match, wrong, weights


def flag_figures(
    match: np.ndarray, wrong: np.ndarray, weights: np.ndarray, threshold: float, rate: float
) -> dict[str, float]:
    """Precision, recall and lift (precision / rate) of ``mismatch`` at ``threshold``."""
    flagged = match <= threshold
    caught = float((weights * (flagged & wrong)).sum())
    flagged_weight = float((weights * flagged).sum())
    precision = caught / flagged_weight if flagged_weight > 0 else 0.0
    recall = caught / max(1e-300, float((weights * wrong).sum()))
    return {
        "precision": precision,
        "recall": recall,
        "lift": precision / rate,
        "flagged": flagged_weight / float(weights.sum()),
    }


def _cut(
    values: np.ndarray, good: np.ndarray, weights: np.ndarray, photos: np.ndarray, target: float
) -> float | None:
    """The value cutting furthest into sorted ``values`` whose prefix has precision >= target,
    promised over resamples of the photos (``calibration.promised_cut``)."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    distinct = np.r_[sorted_values[1:] != sorted_values[:-1], True]
    mass = np.cumsum(weights[order])
    allowed = distinct & (mass >= _MIN_SHARE * mass[-1])
    end = promised_cut(good[order], weights[order], photos[order], allowed, target)
    return None if end is None else float(sorted_values[end])


def choose_thresholds(
    p: ArrayLike, labels: ArrayLike, mismatch_rate: float = DEFAULT_MISMATCH_RATE
) -> dict[str, Any]:
    """The card's ``verification`` section, chosen on validation probabilities and labels.

    ``mismatch``: the highest match probability whose flags were wrong records at least
    ``LIFT_TARGET x mismatch_rate`` of the time (at most 0.9). ``match``: the lowest whose
    "match" verdicts were wrong at most ``mismatch_rate / LIFT_TARGET`` of the time. Each with
    ``calibration.PROMISE_CONFIDENCE`` over resamples of the validation photos, so the stated
    lift holds on new photos too. A target no threshold reaches gives 0 (never ``mismatch``) or
    1 (never ``match``) and ``target_met``.
    """
    match, wrong, weights = simulated_records(p, labels, mismatch_rate)
    photos = np.repeat(np.arange(len(np.asarray(labels))), len(CLASSES))
    flag_target = min(0.9, LIFT_TARGET * mismatch_rate)
    mismatch_cut = _cut(match, wrong, weights, photos, flag_target)
    right_target = 1.0 - mismatch_rate / LIFT_TARGET
    match_cut = _cut(-match, ~wrong, weights, photos, right_target)
    thresholds = {
        "mismatch": 0.0 if mismatch_cut is None else mismatch_cut,
        "match": 1.0 if match_cut is None else -match_cut,
    }
    thresholds["match"] = max(thresholds["match"], thresholds["mismatch"] + 1e-9)
    return {
        "mismatch_rate": mismatch_rate,
        "thresholds": thresholds,
        "targets": {"mismatch_precision": flag_target, "match_precision": right_target},
        "target_met": {"mismatch": mismatch_cut is not None, "match": match_cut is not None},
        "validation": flag_figures(match, wrong, weights, thresholds["mismatch"], mismatch_rate),
    }
