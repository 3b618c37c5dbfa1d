"""What a restarted job needs to carry on as if it had never stopped, and its checkpoint form.

A checkpoint is only as good as what it restores: the loop's position (epochs done, images into
the unfinished one, that epoch's running sums), model selection so far (best score, its epoch
and weights, patience), the history the reports plot, and the random state, beside the model,
optimizer and schedule. ``checkpoint_state`` and ``restore`` are each other's inverse;
``CheckpointStore`` only stores the dict.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler
from torch.optim.swa_utils import AveragedModel

from ..model import unwrap
from .hyperparameters import HyperParameters

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    """Everything a resumed job needs beyond the model and optimizer."""

    epoch: int = 0  # epochs fully completed
    step_in_epoch: int = 0  # samples of this rank already seen in the unfinished epoch
    partial: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # loss, correct, n
    best_key: tuple[float, float] = (-1.0, -math.inf)  # (val accuracy, -val loss)
    best_epoch: int = 0
    best_weights: dict[str, torch.Tensor] | None = None
    epochs_without_gain: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def checkpoint_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler,
    state: TrainState,
    hp: HyperParameters,
    ema: AveragedModel | None = None,
) -> dict[str, Any]:
    """Everything ``restore`` needs, as plain tensors and lists (what a checkpoint holds)."""
    return {
        "ema": None if ema is None else ema.state_dict(),
        "epoch": state.epoch,
        "step_in_epoch": state.step_in_epoch,
        "partial": list(state.partial),
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "best_key": list(state.best_key),
        "best_epoch": state.best_epoch,
        "best_weights": state.best_weights,
        "epochs_without_gain": state.epochs_without_gain,
        "history": state.history,
        "hyperparameters": hp.model_dump(),
    }


def restore(
    saved: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler,
    hp: HyperParameters,
    ema: AveragedModel | None = None,
) -> TrainState:
    """Load ``saved`` into model, optimizer, schedule, RNG and weight average (``ema``); the
    loop's state to go on from.

    A checkpoint without an average (written with ``ema_decay=0`` or by an older version)
    starts ``ema`` afresh from the restored weights, with a warning.
    """
    before = saved["hyperparameters"]
    if before != hp.model_dump():
        # A checkpoint from an older version lacks newer parameters (precision, loss, ...).
        changed = sorted(k for k, v in hp.model_dump().items() if before.get(k, "absent") != v)
        log.warning("resuming with changed hyperparameters %s", changed)
    unwrap(model).load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["torch_rng"])
    if ema is not None:
        if saved.get("ema") is not None:
            ema.load_state_dict(saved["ema"])
        else:
            log.warning("the checkpoint has no weight average: it starts from the resumed weights")
            ema.module.load_state_dict(unwrap(model).state_dict())
    return TrainState(
        epoch=saved["epoch"],
        step_in_epoch=saved["step_in_epoch"],
        partial=list(saved["partial"]),
        best_key=tuple(saved["best_key"]),
        best_epoch=saved["best_epoch"],
        best_weights=saved["best_weights"],
        epochs_without_gain=saved["epochs_without_gain"],
        history=list(saved["history"]),
    )
