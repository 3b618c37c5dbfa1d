"""Number formats and memory layout: autocast, gradient scaling, channels-last, on every device.

Everything that depends on the ``precision`` and ``channels_last`` hyperparameters lives here,
so the rest of training stays the same whatever the precision: the loop calls ``to_device`` and
``TrainStep.run``, evaluation calls ``autocast``; ``resolve`` decides once and says why.

Why bf16 on CPU too: users rent CPU instances, and the ones with AMX (Sapphire Rapids and later)
or AVX512_BF16 run bf16 convolutions natively, several times faster than fp32 (``docs/quality.md``
has the figures). Where bf16 is only emulated it is correct but slower, so ``auto`` keeps fp32
there. Weights, optimizer state, loss and metrics stay fp32 (autocast only lowers the
matmuls and convolutions), which is also why a checkpoint resumes under another precision.
Channels-last helps convolutions on CUDA and the oneDNN bf16 kernels on CPU; with fp32 on CPU it
is not known to help, so ``auto`` leaves the layout alone there.
"""

from __future__ import annotations

import contextlib
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..model import unwrap
from .distributed import DistContext
from .hyperparameters import HyperParameters

#: The CPU capabilities (names as ``torch.cpu.get_capabilities()`` reports them) that make bf16
#: native, in the order they are named in the reason.
NATIVE_BF16_CPU = ("amx_bf16", "avx512_bf16")


def cpu_capabilities() -> dict[str, Any]:
    """What torch reports about this CPU (``{}`` where it cannot tell)."""
    try:
        return dict(torch.cpu.get_capabilities())
    except Exception:  # an older torch or an exotic platform: assume nothing
        return {}


def cpu_model() -> str:
    """The CPU's marketing name (Linux), else what ``platform`` knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


@dataclass(frozen=True)
class Precision:
    """What ``resolve`` chose: ``dtype`` None means fp32 (no autocast)."""

    device: str
    dtype: torch.dtype | None
    channels_last: bool
    reason: str

    @property
    def grad_scaler(self) -> bool:
        """fp16's narrow range underflows small gradients without loss scaling; bf16's does not."""
        return self.dtype == torch.float16

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def describe(self) -> dict[str, Any]:
        """For the log and the model card."""
        out = asdict(self)
        out["dtype"] = self.name
        return out


def resolve(
    hp: HyperParameters,
    device: torch.device,
    capabilities: dict[str, Any] | None = None,
    cuda_bf16: bool | None = None,
) -> Precision:
    """The precision and layout to train with on ``device``, and why.

    ``capabilities`` (CPU) and ``cuda_bf16`` default to what this machine reports; tests pass
    them to see every branch on any machine.
    """
    kind = device.type
    if kind == "cuda":
        has_bf16 = torch.cuda.is_bf16_supported() if cuda_bf16 is None else cuda_bf16
        name = torch.cuda.get_device_name(device) if cuda_bf16 is None else "CUDA device"
        if hp.precision == "fp32":
            dtype, reason = None, "precision=fp32 asked"
        elif hp.precision == "bf16" or has_bf16:
            dtype = torch.bfloat16
            reason = f"{name} has bf16" if has_bf16 else f"precision=bf16 asked ({name})"
        else:
            dtype, reason = torch.float16, f"{name} has no bf16: fp16 with a gradient scaler"
    else:
        caps = cpu_capabilities() if capabilities is None else capabilities
        native = [c for c in NATIVE_BF16_CPU if caps.get(c)]
        where = f"CPU {cpu_model()}" + (
            f" reports {', '.join(native)}"
            if native
            else " reports neither amx_bf16 nor avx512_bf16"
        )
        if hp.precision == "fp32":
            dtype, reason = None, f"precision=fp32 asked; {where}"
        elif hp.precision == "bf16":
            dtype = torch.bfloat16
            reason = f"precision=bf16 asked; {where}" + ("" if native else " (emulated: slower)")
        elif native:
            dtype, reason = torch.bfloat16, f"{where}: bf16 is native"
        else:
            dtype, reason = None, f"{where}: bf16 would be emulated, so fp32"
        if kind != "cpu":  # mps and others: autocast support varies, stay safe
            dtype, reason = None, f"device {kind}: fp32"
    if hp.channels_last == "auto":
        channels_last = kind == "cuda" or (kind == "cpu" and dtype is not None)
    else:
        channels_last = hp.channels_last == "true"
    return Precision(kind, dtype, channels_last, reason)


def autocast(precision: Precision):
    if precision.dtype is None:
        return torch.autocast("cpu", enabled=False)
    return torch.autocast(precision.device, dtype=precision.dtype)


def model_to_device(model: nn.Module, precision: Precision, ctx: DistContext) -> nn.Module:
    model = model.to(ctx.device)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def to_device(images, labels, precision: Precision, ctx: DistContext):
    images = images.to(ctx.device, non_blocking=True)
    labels = labels.to(ctx.device, non_blocking=True)
    if precision.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, labels


class TrainStep:
    """One optimisation step; float16 autocast gets a gradient scaler, bfloat16 needs none.

    ``ema`` (``recipe.make_ema``), if given, takes in the new weights after every step.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        criterion: nn.Module,
        precision: Precision,
        ema: torch.optim.swa_utils.AveragedModel | None = None,
    ) -> None:
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.criterion, self.precision, self.ema = criterion, precision, ema
        self.scaler = torch.amp.GradScaler(
            precision.device if precision.device == "cuda" else "cpu",
            enabled=precision.grad_scaler,
        )

    def run(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward, loss, backward, optimizer and schedule step, weight average; (loss, outputs)."""
        with autocast(self.precision):
            outputs = self.model(images)
        loss = self.criterion(outputs.float(), labels)  # the loss in fp32, outside autocast
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(unwrap(self.model))
        return loss, outputs
