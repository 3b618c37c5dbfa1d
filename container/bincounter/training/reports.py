"""Human-readable reports written to ``/opt/ml/output/data`` (SageMaker uploads it as output.tar.gz).

Plots use matplotlib's Agg backend: no display exists in a training container.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from .. import CLASSES


def plot_training_curves(history: list[dict[str, float]], path: Path) -> None:
    """Loss and accuracy/RMSE per epoch, train vs validation."""
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("train:loss", "train"), ("validation:loss", "validation")):
        ax_loss.plot(epochs, [h.get(key) for h in history], marker="o", label=label)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    ax_loss.legend()
    for key, label in (
        ("train:accuracy", "train accuracy"),
        ("validation:accuracy", "validation accuracy"),
        ("validation:off_by_one", "validation off-by-one"),
    ):
        ax_acc.plot(epochs, [h.get(key) for h in history], marker="o", label=label)
    ax_rmse = ax_acc.twinx()
    ax_rmse.plot(
        epochs, [h.get("validation:rmse") for h in history], "k--", label="validation RMSE"
    )
    ax_rmse.set_ylabel("RMSE (items)")
    ax_acc.set(xlabel="epoch", ylabel="share", ylim=(0, 1), title="Accuracy and RMSE")
    ax_acc.legend(loc="lower left", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_evaluation(summary: dict[str, Any], path: Path, title: str) -> None:
    """Confusion matrix (counts) with per-count recall in the row labels."""
    matrix = summary["confusion_matrix"]
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    image = ax.imshow(matrix, cmap="Blues")
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            ax.text(j, i, str(value), ha="center", va="center", fontsize=9)
    recalls = [summary["per_count"][str(c)]["recall"] for c in CLASSES]
    ax.set_xticks(range(len(CLASSES)), [str(c) for c in CLASSES])
    ax.set_yticks(
        range(len(CLASSES)),
        [
            f"{c} (recall {'n/a' if r is None else f'{r:.0%}'})"
            for c, r in zip(CLASSES, recalls, strict=True)
        ],
    )
    ax.set(xlabel="predicted count", ylabel="true count")
    ax.set_title(
        f"{title}: accuracy {summary['accuracy']:.1%}, RMSE {summary['rmse']:.2f}, "
        f"off-by-one {summary['off_by_one']:.1%}",
        fontsize=9,
    )
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
