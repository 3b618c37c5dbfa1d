"""How five probabilities become the one ``count`` a client gets: the decision rules.

Counts are ordered, and an error of two items is worse than an error of one, which the most
probable count (``argmax``) ignores. The median of the distribution minimises the expected
absolute error, the rounded mean (``expected``) the squared error. Which one serves is decided
on validation at the end of training (``choose_rule``) and recorded in the model card as
``decision``; the server applies the card's rule. numpy only: the server's HTTP side imports
this without torch.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike

from . import CLASSES

#: The ``decision`` rules: probabilities -> count.
RULES: tuple[str, ...] = ("argmax", "expected", "median")

#: The heads a model card can name (``head``): five softmax logits, or CORAL's four cumulative
#: logits ``P(count > k)`` (``counting`` builds them and their losses).
HEADS: tuple[str, ...] = ("softmax", "coral")

#: Test-time augmentation: 1 (the photo as it is) or its 8 flips and quarter turns, averaged.
TTA_CHOICES: tuple[int, ...] = (1, 8)


def decide(p: ArrayLike, rule: str) -> np.ndarray:
    """Probabilities ``[N, 5]`` -> class indices ``[N]`` (index i is count ``CLASSES[i]``).

    ``argmax``: the most probable count (ties to the smaller). ``expected``: the mean count,
    rounded half up. ``median``: the smallest count whose cumulative probability reaches 1/2.
    """
    p = np.atleast_2d(np.asarray(p, dtype=np.float64))
    last = len(CLASSES) - 1
    if rule == "argmax":
        return p.argmax(1)
    if rule == "expected":
        mean = p @ np.arange(len(CLASSES), dtype=np.float64)
        return np.clip(np.floor(mean + 0.5), 0, last).astype(np.int64)
    if rule == "median":
        # A tiny tolerance so a cumulative sum of exactly 1/2 in float64 counts as reaching it.
        return np.minimum((np.cumsum(p, axis=1) < 0.5 - 1e-12).sum(1), last).astype(np.int64)
    raise ValueError(f"unknown decision rule {rule!r}; allowed: {', '.join(RULES)}")


#: Two rules whose validation RMSE differs by less than this are taken as equal (the split
#: has hundreds of photos, not millions), and the more accurate one wins.
RMSE_TIE = 0.01


def choose_rule(summaries: Mapping[str, Mapping[str, float]]) -> str:
    """The rule the endpoint will apply, from each rule's validation figures.

    Lowest RMSE: a count two items off is worse than one off, which accuracy cannot see.
    Among rules within ``RMSE_TIE`` of the lowest, the most accurate (the tuning objective);
    the order of ``RULES`` breaks exact ties.
    """
    best = min(s["rmse"] for s in summaries.values())
    close = [r for r in RULES if r in summaries and summaries[r]["rmse"] <= best + RMSE_TIE]
    return max(close, key=lambda r: (summaries[r]["accuracy"], -summaries[r]["rmse"]))


def head_probabilities(outputs: ArrayLike, head: str) -> np.ndarray:
    """Head outputs ``[N, K]`` -> probabilities ``float64 [N, 5]``, rows summing to 1 to ~1e-15.

    ``counting.probabilities64`` in numpy, for the torch-free server: computed in float64 from
    the same formulas (softmax; CORAL's clipped differences of cumulative sigmoids).
    """
    z = np.atleast_2d(np.asarray(outputs, dtype=np.float64))
    if head == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
    elif head == "coral":
        above = 1.0 / (1.0 + np.exp(-z))
        ones, zeros = np.ones_like(above[:, :1]), np.zeros_like(above[:, :1])
        cumulative = np.concatenate([ones, above, zeros], axis=1)
        p = np.clip(cumulative[:, :-1] - cumulative[:, 1:], 0.0, None)
        p = p / np.maximum(p.sum(axis=1, keepdims=True), 1e-12)
    else:
        raise ValueError(f"unknown head {head!r}; allowed: {', '.join(HEADS)}")
    return p / p.sum(axis=1, keepdims=True)
