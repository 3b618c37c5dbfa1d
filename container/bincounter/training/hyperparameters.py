"""Typed, validated training hyperparameters.

SageMaker hands every hyperparameter over as a string, and SDKs since 2.110 JSON-encode them a
second time (``"\\"0.01\\""``). The tuner adds ``_tuning_objective_metric`` and the SDK adds
``sagemaker_*`` keys. This module turns that into one frozen, validated object and refuses
anything it does not know, naming the parameter and what it accepts: a typo in a tuning range
must fail the job at once, not silently train with the default.

pydantic does the coercion and range checks: it is the well-kept tool for exactly this, and its
lax mode accepts the string forms SageMaker sends ("0.01", "true", "32").
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .. import ARCHITECTURES
from ..counting import LOSSES, RULES
from ..errors import HyperparameterError
from ..params import INT8_MIN_AGREEMENT

#: Keys SageMaker or its SDKs add to a job's hyperparameters (the tuner's objective, the SDK's
#: ``sagemaker_*``): not ours to validate, send or keep.
FOREIGN_PREFIXES = ("sagemaker_", "_tuning_objective_metric", "_sagemaker")


def own_hyperparameters(raw: Mapping[str, Any]) -> dict[str, Any]:
    """``raw`` without the keys SageMaker or its SDKs added."""
    return {k: v for k, v in raw.items() if not str(k).startswith(FOREIGN_PREFIXES)}


class HyperParameters(BaseModel):
    """The training recipe. Defaults are a sound from-scratch recipe for ABID counts 1..5."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    arch: Literal[ARCHITECTURES] = Field("resnet18", description="torchvision ResNet depth")
    pretrained: bool = Field(
        False, description="start from ImageNet weights in the torch cache (baked into the image)"
    )
    epochs: int = Field(40, ge=1, le=1000, description="passes over the train channel")
    batch_size: int = Field(
        64, ge=1, le=4096, description="images per step per process (global = x world size)"
    )
    lr: float = Field(2e-3, gt=0, le=10, description="peak learning rate after warm-up")
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="optimizer")
    weight_decay: float = Field(0.05, ge=0, le=1, description="decoupled weight decay")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (AdamW beta1)")
    lr_schedule: Literal["cosine", "step", "constant"] = Field(
        "cosine", description="decay after warm-up"
    )
    warmup_epochs: float = Field(1.0, ge=0, le=100, description="linear warm-up length")
    image_size: int = Field(
        96, ge=32, le=1024, description="square side the whole photo is resized to (no crop)"
    )
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="cross-entropy smoothing")
    ema_decay: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="exponential moving average of the weights, updated every step (decay per "
        "step; averages about 1/(1-decay) steps); validation, selection and the saved model use "
        "the average; 0: off",
    )
    class_weighting: Literal["none", "balanced", "sqrt"] = Field(
        "sqrt", description="loss weights from train counts: 1/n (balanced), 1/sqrt(n), or none"
    )
    augment: Literal["none", "flip", "full"] = Field(
        "full",
        description="none; flip (flips + 90-degree rotations); full (flip + colour jitter)",
    )
    seed: int = Field(42, ge=0, le=2**31 - 1, description="seed for weights, split, shuffling")
    num_workers: int = Field(
        -1, ge=-1, le=64, description="data-loader processes; -1 picks from the CPU count"
    )
    patience: int = Field(
        0,
        ge=0,
        le=1000,
        description="stop after this many epochs without validation gain; 0 never stops early",
    )
    max_bad_fraction: float = Field(
        0.05, ge=0, le=1, description="share of unreadable photos per channel that fails the job"
    )
    loss: Literal[LOSSES] = Field(
        "ce",
        description="ce (cross-entropy); coral (ordinal, P(count > k)); ce_mse (CE + squared "
        "error of the expected count)",
    )
    mse_weight: float = Field(
        0.5, ge=0, le=100, description="weight of the squared-error term of loss=ce_mse"
    )
    decision: Literal[("auto", *RULES)] = Field(
        "auto",
        description="probabilities -> count: auto picks argmax / expected (rounded mean) / "
        "median on validation (lowest RMSE, ties to accuracy)",
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="auto: bf16 autocast on CUDA (fp16 + grad scaler without bf16) and on CPUs "
        "with native bf16 (AMX, AVX512_BF16), else fp32",
    )
    channels_last: Literal["auto", "true", "false"] = Field(
        "auto", description="channels-last memory format; auto: on CUDA and with bf16 on CPU"
    )
    export_openvino: bool = Field(
        True,
        description="write the OpenVINO IR and check photos next to model.pt, for a fast server",
    )
    int8_calibration_photos: int = Field(
        300,
        ge=0,
        le=100_000,
        description="validation photos that calibrate the int8 model (with export_openvino); "
        "0: no int8",
    )
    int8_min_agreement: float = Field(
        INT8_MIN_AGREEMENT,
        ge=0.5,
        le=1,
        description="share of validation photos on which int8 must return float32's count; "
        "layers stay in float until it does (lower: faster int8 whose answers move more)",
    )

    @field_validator("channels_last", mode="before")
    @classmethod
    def _bool_to_text(cls, value: Any) -> Any:
        # Older jobs pass channels_last=true/false, which arrives JSON-decoded as a bool.
        return str(value).lower() if isinstance(value, bool) else value

    def to_strings(self) -> dict[str, str]:
        """The form SageMaker's CreateTrainingJob carries (all strings), as the SDK writes it."""
        return {k: json.dumps(v) if isinstance(v, bool) else str(v) for k, v in self}


def _decode(value: Any) -> Any:
    """Undo SageMaker's string (and possibly JSON-in-string) encoding of one value."""
    for _ in range(2):  # at most: JSON string holding a JSON string
        if not isinstance(value, str):
            break
        try:
            value = json.loads(value)
        except ValueError:
            break
    return value


def _describe(name: str) -> str:
    field = HyperParameters.model_fields[name]
    meta = field.metadata
    bounds = ", ".join(
        f"{label} {getattr(m, attr)}"
        for m in meta
        for attr, label in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
        if getattr(m, attr, None) is not None
    )
    annotation = field.annotation
    if getattr(annotation, "__origin__", None) is Literal:
        allowed = "one of " + ", ".join(repr(a) for a in annotation.__args__)
    else:
        allowed = getattr(annotation, "__name__", str(annotation)) + (
            f" {bounds}" if bounds else ""
        )
    return f"{allowed} ({field.description}; default {field.default!r})"


def parse_hyperparameters(raw: dict[str, Any] | None) -> HyperParameters:
    """Validate ``hyperparameters.json`` as SageMaker or its SDK wrote it.

    Raises ``HyperparameterError`` whose reason names the offending parameter and its allowed
    values; several problems are all listed.
    """
    values = {key: _decode(value) for key, value in own_hyperparameters(raw or {}).items()}

    unknown = sorted(set(values) - set(HyperParameters.model_fields))
    if unknown:
        known = ", ".join(HyperParameters.model_fields)
        raise HyperparameterError(
            f"unknown hyperparameter(s) {', '.join(repr(u) for u in unknown)}; known: {known}"
        )
    try:
        return HyperParameters(**values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = str(err["loc"][0]) if err["loc"] else "?"
            got = values.get(name, err.get("input"))
            problems.append(
                f"hyperparameter {name}={got!r} is invalid: {err['msg']}; allowed: {_describe(name)}"
                if name in HyperParameters.model_fields
                else f"{name}: {err['msg']}"
            )
        raise HyperparameterError(problems[0], "\n".join(problems)) from None


def describe_all() -> str:
    """A table of every hyperparameter for ``bincounter hyperparameters`` and the README."""
    return "\n".join(f"{name:18} {_describe(name)}" for name in HyperParameters.model_fields)
