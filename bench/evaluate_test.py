"""Evaluate one trained model on the shared test split, once: the last step of a recipe choice.

Candidate recipes are trained with ``bench/quality.py --no-test`` and compared on validation
only; the chosen model dir is then scored here on ``test`` with the decision rule its model card
records (the rule the endpoint applies, after the card's calibration), with and without 8-fold test-time augmentation, through
the same ``evaluate`` the training job runs at its end. The figures land in
``<out>/test.json`` with the confusion matrix and per-count recall.

    .venv/bin/python bench/evaluate_test.py --model runs/qA96/opt_ml/model --out runs/qA96
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "container"))
sys.path.insert(0, str(REPO / "tests"))

from bincounter.training.channels import FolderChannel  # noqa: E402
from bincounter.training.data import discover_channel  # noqa: E402
from bincounter.training.precision import cpu_model  # noqa: E402
from bincounter.training.scoring import load_trained  # noqa: E402
from bincounter.training.train import evaluate  # noqa: E402

from support import build_channel  # noqa: E402

FIGURES = ("n", "accuracy", "rmse", "mae", "off_by_one")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a training job's model dir")
    parser.add_argument("--out", type=Path, required=True, help="where test.json goes")
    parser.add_argument(
        "--split",
        default="test",
        choices=("test", "validation"),
        help="validation only to check this script: it must reproduce the job's own figures",
    )
    args = parser.parse_args()
    split = args.split
    out = args.out / f"{split}.json"
    if out.exists():
        raise SystemExit(f"{out} exists: the test split is evaluated once per model")
    model, card, hp, ctx, precision = load_trained(args.model)
    channel = args.out / f"{split}_channel"
    if not channel.exists():
        build_channel(channel, split, None, "folders")
    samples = FolderChannel(split, discover_channel(split, channel))
    rule = card["decision"]
    workers = 1
    _, plain = evaluate(model, samples, hp, ctx, workers, precision, 1)
    _, tta = evaluate(model, samples, hp, ctx, workers, precision, 8)
    result = {
        "model": str(args.model),
        "weights_sha256": card["weights_sha256"],
        "decision": rule,
        "precision": precision.describe(),
        "cpu": cpu_model(),
        "torch": torch.__version__,
        "split": split,
        split: {k: plain[rule][k] for k in FIGURES},
        f"{split}_tta8": {k: tta[rule][k] for k in FIGURES},
        f"{split}_by_rule": {r: {k: s[k] for k in FIGURES} for r, s in plain.items()},
        "confusion_matrix": plain[rule]["confusion_matrix"],
        "per_count": plain[rule]["per_count"],
    }
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
