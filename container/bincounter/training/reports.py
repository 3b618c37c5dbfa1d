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


def plot_reliability(splits: dict[str, Any], path: Path) -> None:
    """One panel per split: accuracy against confidence per bin, before and after calibration.

    ``splits[split][when]["reliability"]`` are ``calibration.reliability`` rows; the marker
    area follows the photos in the bin, and the diagonal is perfect calibration.
    """
    fig, axes = plt.subplots(1, len(splits), figsize=(5 * len(splits), 4.5), squeeze=False)
    for ax, (split, report) in zip(axes[0], splits.items(), strict=True):
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
        for when, style in (("before", "o--"), ("after", "s-")):
            rows = report[when]["reliability"]
            total = max(1, sum(r["n"] for r in rows))
            ax.plot(
                [r["confidence"] for r in rows],
                [r["accuracy"] for r in rows],
                style,
                label=f"{when}: ECE {report[when]['ece']:.3f}",
            )
            ax.scatter(
                [r["confidence"] for r in rows],
                [r["accuracy"] for r in rows],
                s=[400 * r["n"] / total for r in rows],
                alpha=0.25,
            )
        ax.set(xlabel="confidence (15 bins)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
        ax.set_title(f"{split}: reliability", fontsize=10)
        ax.legend(fontsize="small", loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_risk_coverage(splits: dict[str, Any], path: Path) -> None:
    """Accuracy of the most confident share of photos, per split, calibrated probabilities.

    ``splits[split]["after"]["curve"]`` holds the coverage and accuracy arrays.
    """
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for split, report in splits.items():
        curve = report["after"]["curve"]
        table = report["after"]["accuracy_at_coverage"]
        ax.plot(
            curve["coverage"],
            curve["accuracy"],
            label=f"{split} (20%: {table['0.2']:.2f}, all: {table['1']:.2f})",
        )
    for c in (0.1, 0.2, 0.3, 0.5):
        ax.axvline(c, color="grey", linestyle=":", linewidth=0.8)
    ax.set(
        xlabel="coverage (share of photos answered)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1)
    )
    ax.set_title("Risk-coverage: answering only the most confident photos", fontsize=10)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
