"""The training job's calibration step: fit on validation, report before/after, fill the card.

Called from ``train.calibrate_selected`` on every rank after the best epoch's weights are
restored (reading a channel is collective), in two parts. ``fit_on_validation`` runs the model
over validation once, keeping the network's probabilities for one pass and TTA x8, and fits
the temperature and biases; training chooses the decision rule on the same probabilities.
``calibrate`` fits the confidence thresholds under the rule (``bincounter.calibration``) and the verdict thresholds on the calibrated validation
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
from ..card import served_card
from ..counting import dihedral_variants
from ..decision import head_probabilities
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


#: The test-time augmentations a card is calibrated for: one pass, and the mean of the eight
#: flips and quarter turns (``BINCOUNTER_TTA=8``, what an audit can afford), whose averaged
#: probabilities are less sure and need their own temperature, biases and thresholds.
TTAS: tuple[int, ...] = (1, 8)

#: A split read once: the network's probabilities per TTA, and the true class indices.
SplitProbabilities = tuple[dict[int, np.ndarray], np.ndarray]


@torch.no_grad()
def collect_probabilities(
    model: nn.Module,
    channel: Channel,
    hp: HyperParameters,
    ctx: DistContext,
    *,
    head: str,
    workers: int,
    precision: Precision,
) -> SplitProbabilities:
    """The network's probabilities ``float64 [N, 5]`` of a whole channel for each of ``TTAS``
    (one read: the first of the eight variants is the photo as it is), and class indices.

    Each rank reads its slice (the same reader as evaluation); the slices are gathered to every
    rank. The order is the readers' order, which is all calibration needs.
    """
    net = unwrap(model).eval()
    loader, _ = make_reader(channel, hp, ctx, workers, train=False)
    variants = max(TTAS)
    probabilities: list[np.ndarray] = []
    labels = []
    for images, batch_labels in loader:
        images, batch_labels = to_device(dihedral_variants(images), batch_labels, precision, ctx)
        with autocast(precision):
            out = net(images)
        p = head_probabilities(out.float().cpu().double().numpy(), head)
        probabilities.append(p.reshape(variants, len(batch_labels), -1))
        labels.append(batch_labels.cpu().numpy())
    mine = (
        np.concatenate(probabilities, axis=1) if probabilities else np.zeros((variants, 0, 0)),
        np.concatenate(labels) if labels else np.zeros(0, np.int64),
    )
    if ctx.enabled:
        gathered: list[Any] = [None] * ctx.world_size
        dist.all_gather_object(gathered, mine)
        parts = [g for g in gathered if len(g[1])]
        mine = (
            np.concatenate([g[0] for g in parts], axis=1),
            np.concatenate([g[1] for g in parts]),
        )
    stacked, all_labels = mine
    return {tta: stacked[:tta].mean(axis=0) for tta in TTAS}, all_labels


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
    """The network's validation probabilities for each of ``TTAS``, the true class indices, and
    the temperature and biases fitted on each (``calibrate`` reuses them, not reading again)."""

    probabilities: dict[int, np.ndarray]
    labels: np.ndarray
    head: str
    parameters: dict[int, dict[str, Any]]


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
    """The temperature and biases that minimise the validation NLL, per TTA (on every rank)."""
    p, labels = collect_probabilities(
        model, channels["validation"], hp, ctx, head=head, workers=workers, precision=precision
    )
    return ValidationFit(p, labels, head, {t: calibration.fit(p[t], labels) for t in TTAS})


def calibrate(
    fitted: ValidationFit,
    test: SplitProbabilities | None,
    ctx: DistContext,
    *,
    decision: str,
    out_dir: Path,
) -> dict[str, Any]:
    """Thresholds and reports; the card's ``calibration`` and ``verification`` sections (on
    every rank), for the served ``decision`` rule, each with a ``tta8`` part for servers that
    average the eight variants (``card.served_card``). ``test`` (its probabilities, read by
    the job once) is reported, never fitted on. Reports are written by rank 0 only."""
    labels = fitted.labels
    sections, checks, splits = {}, {}, {}
    for tta in TTAS:
        p = fitted.probabilities[tta]
        sections[tta] = calibration.card_section(
            p, labels, fitted.parameters[tta], fitted.head, decision
        )
        checks[tta] = verification.choose_thresholds(
            calibration.calibrated(p, sections[tta]), labels
        )
        splits[tta] = {"validation": split_report(p, labels, sections[tta], decision)}
        if test is not None:
            splits[tta]["test"] = split_report(test[0][tta], test[1], sections[tta], decision)
    section, check = nest(sections), nest(checks)
    if ctx.is_master:
        write_reports(out_dir, section, check, splits)
    return {"calibration": section, "verification": check}


def nest(by_tta: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """One card section from one per TTA: the single pass's, with each other's whole under
    ``tta<N>`` (``card.served_card`` puts it in place for a server with that TTA)."""
    return {**by_tta[1], **{f"tta{t}": other for t, other in by_tta.items() if t != 1}}


def write_reports(
    out_dir: Path,
    section: dict[str, Any],
    checks: dict[str, Any],
    splits: dict[int, dict[str, Any]],
) -> None:
    """``calibration.json`` (figures without the long curves: ``splits`` for one pass,
    ``splits_tta8`` for the mean of eight), the two PNGs (one pass), one log line each."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summaries = {
        tta: {
            split: {
                when: {k: v for k, v in figures.items() if k not in ("curve", "reliability")}
                for when, figures in report.items()
            }
            for split, report in by_split.items()
        }
        for tta, by_split in splits.items()
    }
    atomic_write_json(
        out_dir / REPORT_FILE,
        {
            "calibration": section,
            "verification": checks,
            "splits": summaries[1],
            **{f"splits_tta{t}": summary for t, summary in summaries.items() if t != 1},
            "reliability": {s: {w: r[w]["reliability"] for w in r} for s, r in splits[1].items()},
        },
    )
    reports.plot_reliability(splits[1], out_dir / RELIABILITY_PNG)
    reports.plot_risk_coverage(splits[1], out_dir / RISK_COVERAGE_PNG)
    for tta, summary in summaries.items():
        fitted = served_card({"calibration": section}, tta)["calibration"]
        for split, report in summary.items():
            before, after = report["before"], report["after"]
            log.info(
                "%s calibration, TTA x%d (T=%.3f, biases %s): ECE %.4f -> %.4f (%.4f by chance "
                "alone), NLL %.4f -> %.4f, Brier %.4f -> %.4f; accuracy of the most confident "
                "10/20/30/50/100%%: %s",
                split,
                tta,
                fitted["temperature"],
                " ".join(f"{b:+.2f}" for b in fitted["bias"]),
                before["ece"],
                after["ece"],
                after["ece_noise_floor"],
                before["nll"],
                after["nll"],
                before["brier"],
                after["brier"],
                " / ".join(f"{v:.3f}" for v in after["accuracy_at_coverage"].values()),
            )
