"""Issue 22's measurements on one trained model: calibration, selective answers, verification.

On the validation and test channels (folders of ``<count>/<photo>.jpg``; built from
``../shared/abid`` when missing), with the model card's calibration and verdict thresholds (the
ones the endpoint applies), it measures: ECE (15 bins), NLL and Brier before/after calibration;
accuracy of the most confident 10/20/30/50/100%; AUROC of the mismatch probability for records
whose expected quantity is the true count or (uniformly) one of the other four, overall and for
records off by two or more; and the precision, recall and lift of ``mismatch`` verdicts at
mismatch rates of 50, 10 and 5%. Records are weighted exactly (every photo with each of the five
expected quantities), so there is no sampling noise beyond the photos themselves. Both served
settings are measured from one read of each split: one pass (``tta1``, the endpoint's default)
and the mean of the eight flips and quarter turns (``tta8``, the audit job's default), each with
the card's calibration for it (``card.served_card``). Writes ``<out>/audit_quality.json`` and,
per setting, ``audit_reliability_tta<N>.png`` and ``audit_risk_coverage_tta<N>.png``.

    .venv/bin/python bench/audit_quality.py --model runs/q/opt_ml/model --out runs/q/audit
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "container"))
sys.path.insert(0, str(REPO / "tests"))

from train_pipeline import machine  # noqa: E402

from bincounter import calibration, verification  # noqa: E402
from bincounter.card import served_card  # noqa: E402
from bincounter.training import reports  # noqa: E402
from bincounter.training.calibrate import TTAS, collect_probabilities, split_report  # noqa: E402
from bincounter.training.channels import FolderChannel  # noqa: E402
from bincounter.training.data import discover_channel  # noqa: E402
from bincounter.training.scoring import load_trained  # noqa: E402

from support import build_channel  # noqa: E402

MISMATCH_RATES = (0.5, 0.1, 0.05)


def weighted_auroc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> float:
    """P(a positive scores above a negative), ties half, each record with its weight."""
    neg_scores, neg_w = scores[~positive], weights[~positive]
    order = np.argsort(neg_scores)
    neg_scores, cum = neg_scores[order], np.r_[0.0, np.cumsum(neg_w[order])]
    below = cum[np.searchsorted(neg_scores, scores[positive], side="left")]
    upto = cum[np.searchsorted(neg_scores, scores[positive], side="right")]
    wins = (below + (upto - below) / 2) * weights[positive]
    return float(wins.sum() / (weights[positive].sum() * neg_w.sum()))


def verification_figures(p: np.ndarray, labels: np.ndarray, section: dict) -> dict:
    """AUROC (all wrong counts; off by two or more) and flag figures per mismatch rate."""
    out: dict[str, object] = {}
    match, wrong, weights = verification.simulated_records(p, labels, section["mismatch_rate"])
    n = len(labels)
    expected = np.tile(np.arange(p.shape[1]), n)
    off = np.abs(expected - np.repeat(labels, p.shape[1]))
    score = 1.0 - match
    out["auroc"] = weighted_auroc(score, wrong, weights)
    far = (off >= 2) | ~wrong
    out["auroc_off_by_two_or_more"] = weighted_auroc(score[far], wrong[far], weights[far])
    for rate in MISMATCH_RATES:
        m, w_wrong, w = verification.simulated_records(p, labels, rate)
        out[f"mismatch_rate_{rate:g}"] = verification.flag_figures(
            m, w_wrong, w, section["thresholds"]["mismatch"], rate
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a training job's model dir")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--validation", type=Path, help="validation channel (default: built)")
    parser.add_argument("--test", type=Path, help="test channel (default: built)")
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model, card, hp, ctx, precision = load_trained(args.model)
    if "calibration" not in card:
        raise SystemExit(
            f"{args.model}: the card has no calibration (a model trained before calibration existed)"
        )
    head, rule = card["head"], card["decision"]
    result: dict[str, Any] = {
        "model": str(args.model),
        "weights_sha256": card["weights_sha256"],
        "cpu": machine(),
        "torch": torch.__version__,
        "decision": rule,
    }
    probabilities, labels = {}, {}
    for split in ("validation", "test"):
        channel = getattr(args, split) or args.out / f"{split}_channel"
        if not channel.exists():
            build_channel(channel, split, None, "folders")
        samples = FolderChannel(split, discover_channel(split, channel))
        probabilities[split], labels[split] = collect_probabilities(
            model, samples, hp, ctx, head=head, workers=args.workers, precision=precision
        )
    for tta in TTAS:
        served = served_card(card, tta)
        section = served["calibration"]
        out: dict[str, Any] = {
            "temperature": section["temperature"],
            "bias": section.get("bias"),
            "thresholds": served["verification"]["thresholds"],
            "confidence_thresholds": section["confidence_thresholds"],
        }
        splits = {}
        for split in ("validation", "test"):
            p_net, y = probabilities[split][tta], labels[split]
            splits[split] = split_report(p_net, y, section, rule)
            out[split] = {
                when: {k: v for k, v in figures.items() if k not in ("curve", "reliability")}
                for when, figures in splits[split].items()
            }
            out[split]["refit"] = calibration.fit(p_net, y)
            # The usual definition, for comparison: the most probable count's probability
            # against its accuracy (above: the count the endpoint returns, by its rule).
            out[split]["top1_ece"] = {
                when: calibration.scores(p_net, y, applied)["ece"]
                for when, applied in (("before", None), ("after", section))
            }
            p = calibration.calibrated(p_net, section)
            out[split]["verification"] = verification_figures(p, y, served["verification"])
        reports.plot_reliability(splits, args.out / f"audit_reliability_tta{tta}.png")
        reports.plot_risk_coverage(splits, args.out / f"audit_risk_coverage_tta{tta}.png")
        result[f"tta{tta}"] = out
    (args.out / "audit_quality.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
