"""Counts are ordered: the network's heads, their losses, and how a distribution becomes a count.

Training and serving must agree on three things a model card names: the ``head`` (five softmax
logits, or CORAL's four cumulative logits ``P(count > k)``), how its outputs become five
probabilities that sum to 1, and the ``decision`` rule that turns those probabilities into the
one ``count`` a client gets. They live here, once, so the server cannot read a model differently
from the job that chose it.

The decision rules themselves live in ``decision`` (numpy only, so the server's HTTP side can
apply them without importing torch).

The eight flips and quarter turns of a photo keep its count (test-time augmentation,
``dihedral_variants``): averaging the probabilities of the eight is an option in evaluation and
serving.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import CLASSES
from .decision import HEADS, RULES, TTA_CHOICES, choose_rule, decide

__all__ = ["HEADS", "RULES", "TTA_CHOICES", "choose_rule", "decide"]  # beside the heads

#: The ``loss`` hyperparameter: plain cross-entropy, CORAL ordinal, CE + squared error of the mean.
LOSSES: tuple[str, ...] = ("ce", "coral", "ce_mse")


def head_for_loss(loss: str) -> str:
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; allowed: {', '.join(LOSSES)}")
    return "coral" if loss == "coral" else "softmax"


def head_outputs(head: str) -> int:
    """How many numbers the head gives per photo."""
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; allowed: {', '.join(HEADS)}")
    return len(CLASSES) - 1 if head == "coral" else len(CLASSES)


class CoralHead(nn.Module):
    """CORAL (rank-consistent ordinal regression): one shared projection, four ordered biases.

    Output ``k`` (k = 1..4) is the log-odds of ``P(count > k)``; sharing the projection keeps
    the four thresholds on one axis, so the cumulative probabilities cannot cross much.
    """

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, 1, bias=False)
        self.bias = nn.Parameter(torch.linspace(1.5, -1.5, len(CLASSES) - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) + self.bias


def make_head(head: str, in_features: int) -> nn.Module:
    if head_outputs(head) == len(CLASSES) - 1:
        return CoralHead(in_features)
    return nn.Linear(in_features, len(CLASSES))


def probabilities(outputs: torch.Tensor, head: str) -> torch.Tensor:
    """Head outputs ``[N, K]`` -> ``[N, 5]`` probabilities summing to 1, in fp32 (fp64 stays).

    CORAL: ``p(1) = 1 - P(>1)``, ``p(k) = P(>k-1) - P(>k)``, ``p(5) = P(>4)``; a negative
    difference (crossed thresholds) is clipped to 0 and the row renormalised.
    """
    if outputs.dtype != torch.float64:
        outputs = outputs.float()
    if head == "softmax":
        return outputs.softmax(1)
    if head != "coral":
        raise ValueError(f"unknown head {head!r}; allowed: {', '.join(HEADS)}")
    above = torch.sigmoid(outputs)
    ones, zeros = torch.ones_like(above[:, :1]), torch.zeros_like(above[:, :1])
    cumulative = torch.cat([ones, above, zeros], dim=1)
    p = (cumulative[:, :-1] - cumulative[:, 1:]).clamp_min(0)
    return p / p.sum(1, keepdim=True).clamp_min(1e-12)


def probabilities64(outputs: torch.Tensor, head: str) -> np.ndarray:
    """``probabilities`` in float64 numpy, rows summing to 1 to ~1e-15 (what the JSON carries)."""
    p = probabilities(outputs.detach().double(), head).cpu().numpy()
    return p / p.sum(axis=1, keepdims=True)


def make_loss(
    loss: str,
    weight: torch.Tensor | None,
    label_smoothing: float,
    mse_weight: float,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``(outputs, labels) -> scalar`` in float32 whatever the autocast dtype of ``outputs``.

    ``ce``: cross-entropy with smoothing and class weights. ``ce_mse``: the same plus
    ``mse_weight * (E[count] - count)^2``. ``coral``: the sum over the four thresholds of
    binary cross-entropy, each photo weighted by its class weight.
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; allowed: {', '.join(LOSSES)}")
    counts = torch.tensor(CLASSES, dtype=torch.float32)

    def ce(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        outputs = outputs.float()
        w = None if weight is None else weight.to(outputs.device)
        value = F.cross_entropy(outputs, labels, weight=w, label_smoothing=label_smoothing)
        if loss == "ce_mse":
            mean = outputs.softmax(1) @ counts.to(outputs.device)
            value = value + mse_weight * F.mse_loss(mean, counts.to(outputs.device)[labels])
        return value

    def coral(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        outputs = outputs.float()
        thresholds = torch.arange(1, len(CLASSES), device=labels.device)
        targets = (labels.unsqueeze(1) >= thresholds).float()
        per = F.binary_cross_entropy_with_logits(outputs, targets, reduction="none").sum(1)
        if weight is not None:
            per = per * weight.to(outputs.device)[labels]
        return per.mean()

    return coral if loss == "coral" else ce


def dihedral_variants(images: torch.Tensor | np.ndarray, channels_last: bool = False):
    """The 8 flips and quarter turns of a batch, stacked variant-major: ``[8 * N, ...]``.

    Tensors are ``[N, C, H, W]``; numpy arrays ``[N, H, W, C]`` when ``channels_last`` (the
    serving side's pixels). Variant ``v`` of photo ``i`` sits at ``v * N + i``.
    """
    h, w = (1, 2) if channels_last else (2, 3)
    if isinstance(images, np.ndarray):
        turns = [np.rot90(images, k, axes=(h, w)) for k in range(4)]
        return np.ascontiguousarray(
            np.concatenate(turns + [np.flip(t, axis=w) for t in turns], axis=0)
        )
    turns = [torch.rot90(images, k, dims=(h, w)) for k in range(4)]
    return torch.cat(turns + [torch.flip(t, dims=(w,)) for t in turns], dim=0)


def average_variants(p: np.ndarray | torch.Tensor, n_variants: int):
    """``[V * N, 5]`` variant-major probabilities -> their mean over the ``V`` variants ``[N, 5]``."""
    if n_variants == 1:
        return p
    return p.reshape(n_variants, -1, p.shape[1]).mean(0)
