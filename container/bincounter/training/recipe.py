"""How the hyperparameters become an optimizer, a learning-rate schedule and loss weights.

These are the choices that decide what the model learns, as opposed to how the loop runs: kept
apart from the loop as plain functions of ``HyperParameters`` (and the train counts) so each can
be checked on its own, without a training run.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..model import unwrap
from .data import ChannelPhoto, class_counts
from .hyperparameters import HyperParameters


def make_optimizer(model: nn.Module, hp: HyperParameters) -> torch.optim.Optimizer:
    # No weight decay on norms and biases: decaying them only hurts (standard practice).
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": hp.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if hp.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=hp.lr, momentum=hp.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=hp.lr, betas=(hp.momentum, 0.999))


def lr_lambda(hp: HyperParameters, steps_per_epoch: int) -> Callable[[int], float]:
    """Linear warm-up, then cosine / step (x0.1 at 1/2 and 3/4) / constant, per step.

    One closed-form factor per step rather than ``SequentialLR(LinearLR, CosineAnnealingLR)``:
    those compute each step's rate from the last (chainable form), which drifts from these
    values in the last bits (6e-6 at lr 3e-3 over 40 steps), and checkpoints keep a
    ``LambdaLR``'s state. The same values, bit for bit, keep runs and resumes reproducible.
    """
    warmup = int(hp.warmup_epochs * steps_per_epoch)
    total = max(1, hp.epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        if hp.lr_schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        if hp.lr_schedule == "step":
            return 0.1 ** sum(progress >= m for m in (0.5, 0.75))
        return 1.0

    return factor


def make_scheduler(
    optimizer: torch.optim.Optimizer, hp: HyperParameters, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """The per-step learning-rate schedule of ``lr_lambda`` (stepped after every batch)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(hp, steps_per_epoch))


def class_weights(samples: list[ChannelPhoto], mode: str) -> torch.Tensor | None:
    """Loss weight per class from the train counts: 1/n (balanced), 1/sqrt(n), or none.

    Scaled so the mean weight per training sample is 1: the loss keeps its scale, and the
    learning rate means the same whichever weighting is chosen.
    """
    if mode == "none":
        return None
    counts = torch.tensor(class_counts(samples), dtype=torch.float64)
    raw = 1.0 / counts if mode == "balanced" else 1.0 / counts.sqrt()
    return (raw / (raw * counts).sum() * counts.sum()).float()


def make_ema(model: nn.Module, hp: HyperParameters) -> AveragedModel | None:
    """The moving average of ``model``'s weights that ``ema_decay`` asks for, or ``None``.

    From scratch on a few thousand photos, validation accuracy swings by several points from one
    epoch to the next (the last epochs' weights still move with AdamW's noise), so the best
    epoch is partly picked for luck. An average over the last few hundred steps is a smoother
    model to select and to ship, as torchvision's references do with ``--model-ema``. Buffers
    (BatchNorm statistics) are averaged with the weights, so the average is a model of its own.
    Every rank updates it from the same synchronised weights, so it needs no communication.
    """
    if hp.ema_decay <= 0:
        return None
    return AveragedModel(
        unwrap(model), multi_avg_fn=get_ema_multi_avg_fn(hp.ema_decay), use_buffers=True
    )
