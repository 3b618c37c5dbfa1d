"""Number formats and memory layout on the accelerator: autocast, gradient scaling, channels-last.

Everything that depends on the ``amp`` and ``channels_last`` hyperparameters lives here, so the
rest of training stays the same whatever the precision: the loop calls ``to_device`` and
``TrainStep.run``, evaluation calls ``autocast``. On CPU every piece is a no-op.
"""

from __future__ import annotations

import torch
from torch import nn

from .distributed import DistContext
from .hyperparameters import HyperParameters


def amp_dtype(ctx: DistContext, hp: HyperParameters) -> torch.dtype | None:
    """bfloat16 where the GPU has it (A10G, A100, H100), float16 otherwise (T4, V100)."""
    if ctx.device.type == "cuda" and hp.amp:
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


def autocast(ctx: DistContext, hp: HyperParameters):
    dtype = amp_dtype(ctx, hp)
    if dtype is None:
        return torch.autocast("cpu", enabled=False)
    return torch.autocast("cuda", dtype=dtype)


def model_to_device(model: nn.Module, hp: HyperParameters, ctx: DistContext) -> nn.Module:
    model = model.to(ctx.device)
    if ctx.device.type == "cuda" and hp.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def to_device(images, labels, hp: HyperParameters, ctx: DistContext):
    images = images.to(ctx.device, non_blocking=True)
    labels = labels.to(ctx.device, non_blocking=True)
    if ctx.device.type == "cuda" and hp.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, labels


class TrainStep:
    """One optimisation step; float16 autocast gets a gradient scaler, bfloat16 needs none."""

    def __init__(self, model, optimizer, scheduler, criterion, hp, ctx) -> None:
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.criterion, self.hp, self.ctx = criterion, hp, ctx
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype(ctx, hp) == torch.float16)

    def run(self, images: torch.Tensor, labels: torch.Tensor):
        with autocast(self.ctx, self.hp):
            logits = self.model(images)
            loss = self.criterion(logits.float(), labels)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss, logits
