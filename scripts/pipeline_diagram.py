#!/usr/bin/env python3
"""Draw docs/pipeline.png: the pipeline's steps as ``bincounter.aws.pipeline`` defines them."""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "container"))

from bincounter.aws.pipeline import GATE  # noqa: E402


def main() -> None:
    fig, ax = plt.subplots(figsize=(15, 4.2))
    ax.set_axis_off()
    main_steps = [
        "prepare\n(Processing)",
        "train\n(Training, spot)\nor tune (--tune)",
        "evaluate\n(Processing)",
    ]
    main_steps += [f"gate-{c}\n{m} {op}\n{bar}" for c, m, op, bar, _ in GATE]
    main_steps.append("register\n(model package,\nPendingManualApproval)")
    xs = [i * 1.9 for i in range(len(main_steps))]
    for i, (x, text) in enumerate(zip(xs, main_steps, strict=True)):
        color = "#cfe2f3" if i < 3 else "#fff2cc" if i < len(main_steps) - 1 else "#d9ead3"
        ax.text(
            x,
            1,
            text,
            ha="center",
            va="center",
            fontsize=8,
            bbox={"boxstyle": "round", "fc": color, "ec": "gray"},
        )
        if i:
            ax.annotate("", (x - 0.55, 1), (xs[i - 1] + 0.55, 1), arrowprops={"arrowstyle": "->"})
    for i, (check, *_rest) in enumerate(GATE):
        x = xs[3 + i]
        ax.text(
            x,
            0,
            f"refused-{check}\n(Fail: metric,\nbar, value)",
            ha="center",
            va="center",
            fontsize=7,
            bbox={"boxstyle": "round", "fc": "#f4cccc", "ec": "gray"},
        )
        ax.annotate("", (x, 0.25), (x, 0.75), arrowprops={"arrowstyle": "->", "color": "firebrick"})
    ax.text(xs[2], 0.3, "evaluation.json\n(property file)", ha="center", fontsize=7, style="italic")
    ax.set_xlim(-0.8, xs[-1] + 0.8)
    ax.set_ylim(-0.5, 1.5)
    ax.set_title("bincounter pipeline (SageMaker Pipelines, one image)", fontsize=10)
    fig.tight_layout()
    fig.savefig(REPO / "docs" / "pipeline.png", dpi=110)


if __name__ == "__main__":
    main()
