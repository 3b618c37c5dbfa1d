"""Metric names, the stdout line SageMaker's regexes read, and count-aware evaluation.

The training container prints one ``name=value`` line per epoch; SageMaker (and the tuner)
extract metrics from CloudWatch logs with the regexes below. The launch scripts import
``METRIC_DEFINITIONS`` from here, so the container and the jobs can never disagree on a name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from .. import CLASSES

#: A float as Python prints it, scientific notation included (``1e-05``, ``-3.2E+01``, ``nan``).
NUMBER_REGEX = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf)"

METRIC_NAMES: tuple[str, ...] = (
    "epoch",
    "lr",
    "train:loss",
    "train:accuracy",
    "validation:loss",
    "validation:accuracy",
    "validation:rmse",
    "validation:mae",
    "validation:off_by_one",
    "test:accuracy",
    "test:rmse",
    "test:mae",
    "test:off_by_one",
    "train:images_per_second",
)


def _metric_regex(name: str) -> str:
    # Anchored on a word boundary so "train:loss" never matches inside "pretrain:loss".
    return r"(?:^|\s)" + re.escape(name) + "=" + NUMBER_REGEX


#: SageMaker MetricDefinitions (``{"Name", "Regex"}``), for training and tuning jobs.
METRIC_DEFINITIONS: list[dict[str, str]] = [
    {"Name": name, "Regex": _metric_regex(name)} for name in METRIC_NAMES
]

#: The tuning objective: what model selection on ``validation`` maximises.
OBJECTIVE_METRIC = "validation:accuracy"


def format_metrics(values: Mapping[str, float | int]) -> str:
    """One log line of ``name=value`` tokens, in a form every regex above parses."""
    unknown = set(values) - set(METRIC_NAMES)
    if unknown:
        raise ValueError(f"metric(s) {sorted(unknown)} have no MetricDefinition")
    parts = []
    for name, value in values.items():
        text = str(int(value)) if isinstance(value, int) else f"{float(value):.6g}"
        parts.append(f"{name}={text}")
    return " ".join(parts)


def summarize_confusion(matrix: Sequence[Sequence[int]]) -> dict[str, object]:
    """Accuracy, RMSE and MAE in items, off-by-one accuracy, per-count precision/recall, and
    the matrix, from a confusion matrix (rows true, columns predicted; what distributed
    evaluation reduces).

    RMSE and MAE are in items (counts), not class indices, so they read as "off by about N
    items". Precision of a count never predicted, or recall of a count absent from the labels,
    is ``None`` (JSON ``null``): undefined, not zero, and never a NaN that strict JSON parsers
    reject.
    """
    matrix = np.asarray(matrix, dtype=np.int64)
    n = int(matrix.sum())
    if n == 0:
        return {"n": 0}
    k = len(CLASSES)
    error = np.arange(k)[None, :] - np.arange(k)[:, None]  # predicted - true, per cell
    per_count = {}
    for i, count in enumerate(CLASSES):
        predicted = int(matrix[:, i].sum())
        actual = int(matrix[i, :].sum())
        per_count[str(count)] = {
            "precision": float(matrix[i, i] / predicted) if predicted else None,
            "recall": float(matrix[i, i] / actual) if actual else None,
            "support": actual,
        }
    return {
        "n": n,
        "accuracy": float(np.trace(matrix) / n),
        "rmse": float(np.sqrt((matrix * error**2).sum() / n)),
        "mae": float((matrix * np.abs(error)).sum() / n),
        "off_by_one": float(matrix[np.abs(error) <= 1].sum() / n),
        "per_count": per_count,
        "confusion_matrix": matrix.tolist(),
        "classes": list(CLASSES),
    }
