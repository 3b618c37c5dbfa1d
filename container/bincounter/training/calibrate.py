"""The training job's calibration step: fit on validation, report before/after, fill the card.

Called from ``train.calibrate_selected`` on every rank after the best epoch's weights are
restored and its decision rule is chosen (it reads the channels, which is collective), in two
parts. ``fit_on_validation`` runs the model over validation keeping the network's probabilities
and fits the temperature and biases. ``calibrate`` fits the confidence thresholds under the
rule (``bincounter.calibration``) and the verdict thresholds on the calibrated validation
probabilities (``bincounter.verification``), and on rank 0 writes ``calibration.json``,
``reliability.png`` and ``risk_coverage.png`` to the output folder. The returned sections go
into the model card, which is how the server learns them. Test is reported, never fitted on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .. import calibration, verification
from ..files import atomic_write_json
from ..model import unwrap
from . import reports
from .channels import Channel, make_reader
from .distributed import DistContext
from .hyperparameters import HyperParameters
from .precision import Precision, autocast, to_device

log = logging.getLogger(__name__)

REPORT_FILE = "calibration.json"
RELIABILITY_PNG = "reliability.png"
RISK_COVERAGE_PNG = "risk_coverage.png"


@torch.no_grad()
def collect_outputs(
    model: nn.Module,
    channel: Channel,
    hp: HyperParameters,
    ctx: DistContext,
    *,
    workers: int,
    precision: Precision,
) -> tuple[np.ndarray, np.ndarray]:
    """The head's raw outputs ``float64 [N, K]`` and class indices ``[N]`` of a whole channel.

    Each rank reads its slice (the same reader as evaluation); the slices are gathered to every
    rank. The order is the readers' order, which is all calibration needs.
    """
    net = unwrap(model).eval()
    loader, _ = make_reader(channel, hp, ctx, workers, train=False)
    outputs, labels = [], []
    for images, batch_labels in loader:
        images, batch_labels = to_device(images, batch_labels, precision, ctx)
        with autocast(precision):
            out = net(images)
        outputs.append(out.float().cpu().double().numpy())
        labels.append(batch_labels.cpu().numpy())
    mine = (
        np.concatenate(outputs) if outputs else np.zeros((0, 0)),
        np.concatenate(labels) if labels else np.zeros(0, np.int64),
    )
    if not ctx.enabled:
        return mine
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, mine)
    parts = [g for g in gathered if len(g[1])]
    return np.concatenate([g[0] for g in parts]), np.concatenate([g[1] for g in parts])


def split_report(
    p: np.ndarray, labels: np.ndarray, section: dict[str, Any], rule: str
) -> dict[str, Any]:
    """Scores of the network's probabilities ``p`` as they are and calibrated by ``section``
    (the same counts, the rule's; their confidences differ), and the risk-coverage curves."""
    out: dict[str, Any] = {}
    for name, applied in (("before", None), ("after", section)):
        figures = calibration.scores(p, labels, applied, rule)
        confidence, correct = calibration.confidence_and_correct(p, labels, applied, rule)
        figures["reliability"] = calibration.reliability(confidence, correct)
        coverage, accuracy = calibration.risk_coverage(confidence, correct)
        figures["curve"] = {"coverage": coverage.tolist(), "accuracy": accuracy.tolist()}
        out[name] = figures
    return out


@dataclass(frozen=True)
class ValidationFit:
    """The network's validation probabilities, the true class indices, and the temperature and
    biases fitted on them (``calibrate`` reuses the probabilities rather than reading again)."""

    probabilities: np.ndarray
    labels: np.ndarray
    head: str
    parameters: dict[str, Any]


def fit_on_validation(
    model: nn.Module,
    channels: dict[str, Channel],
    hp: HyperParameters,
    ctx: DistContext,
    *,
    workers: int,
    precision: Precision,
    head: str,
) -> ValidationFit:
    """The temperature and biases that minimise the validation NLL (on every rank)."""
    outputs, labels = collect_outputs(
        model, channels["validation"], hp, ctx, workers=workers, precision=precision
    )
    p = calibration.head_probabilities(outputs, head)
    return ValidationFit(p, labels, head, calibration.fit(p, labels))


def calibrate(
    model: nn.Module,
    channels: dict[str, Channel],
    hp: HyperParameters,
    ctx: DistContext,
    fitted: ValidationFit,
    *,
    workers: int,
    precision: Precision,
    decision: str,
    out_dir: Path,
) -> dict[str, Any]:
    """Thresholds and reports; the card's ``calibration`` and ``verification`` sections (on
    every rank), for the served ``decision`` rule. The reports are written by rank 0 only."""
    p_val, labels = fitted.probabilities, fitted.labels
    section = calibration.card_section(p_val, labels, fitted.parameters, fitted.head, decision)
    checks = verification.choose_thresholds(calibration.calibrated(p_val, section), labels)
    splits = {"validation": split_report(p_val, labels, section, decision)}
    if "test" in channels:
        test_outputs, test_labels = collect_outputs(
            model, channels["test"], hp, ctx, workers=workers, precision=precision
        )
        p_test = calibration.head_probabilities(test_outputs, fitted.head)
        splits["test"] = split_report(p_test, test_labels, section, decision)
    if ctx.is_master:
        write_reports(out_dir, section, checks, splits)
    return {"calibration": section, "verification": checks}


def write_reports(
    out_dir: Path, section: dict[str, Any], checks: dict[str, Any], splits: dict[str, Any]
) -> None:
    """``calibration.json`` (figures without the long curves), the two PNGs, one log line each."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {
        split: {
            when: {k: v for k, v in figures.items() if k not in ("curve", "reliability")}
            for when, figures in report.items()
        }
        for split, report in splits.items()
    }
    atomic_write_json(
        out_dir / REPORT_FILE,
        {
            "calibration": section,
            "verification": checks,
            "splits": summary,
            "reliability": {s: {w: r[w]["reliability"] for w in r} for s, r in splits.items()},
        },
    )
    reports.plot_reliability(splits, out_dir / RELIABILITY_PNG)
    reports.plot_risk_coverage(splits, out_dir / RISK_COVERAGE_PNG)
    for split, report in summary.items():
        before, after = report["before"], report["after"]
        log.info(
            "%s calibration (T=%.3f, biases %s): ECE %.4f -> %.4f (%.4f by chance alone), NLL %.4f -> %.4f, Brier %.4f -> %.4f; "
            "accuracy of the most confident 10/20/30/50/100%%: %s",
            split,
            section["temperature"],
            " ".join(f"{b:+.2f}" for b in section["bias"]),
            before["ece"],
            after["ece"],
            after["ece_noise_floor"],
            before["nll"],
            after["nll"],
            before["brier"],
            after["brier"],
            " / ".join(f"{v:.3f}" for v in after["accuracy_at_coverage"].values()),
        )
