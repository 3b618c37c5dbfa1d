"""Engines: what runs the network when the server answers, and the check that it answers right.

An engine is a callable ``uint8 [N, 3, S, S] -> logits [N, 5]`` (torch tensors, CPU). Eager
PyTorch in float32 is the reference. A faster engine is served only if, on the model's check
photos (``exported``; a fixed photo-like input for models without them), it answers as eager
PyTorch does, within what its precision can promise: in float32 every logit within
``ENGINE_TOLERANCE`` and every top-1 identical; in bf16, fp16 or int8 no logit bound holds (the
arithmetic itself differs), so at least ``MIN_AGREEMENT`` of the check photos must get the same
top-1 and every logit must be finite. An engine that cannot be built or fails its check gives
way, with a warning, to the next one down its plan (int8 -> bf16 -> fp32 -> eager): serving
slower beats serving different answers.

Which engine by default (``auto``): OpenVINO on a CPU, because it has the CPU kernels torch's
path lacks here (bf16 on AMX/AVX512_BF16, int8; ``docs/serving.md`` has the figures), and the
torch path (``cuda``: autocast, batched) on a machine with a GPU. ``torchscript`` (frozen graph,
float32) and ``eager`` stay selectable.

Which precision (``BINCOUNTER_PRECISION``, ``resolve_plan``): ``auto`` is bf16 where the device
does it natively, else float32 (fp16 on a GPU without bf16). ``int8`` is served only when the
model directory holds the int8 IR the training job quantized and its card shows int8 within
half a point of float32 accuracy on validation; otherwise the reason is logged and the next
best precision is served.

Adding an engine is one builder function and one entry in ``BUILDERS``, under the name
``BINCOUNTER_ENGINE`` selects; that name is also listed in ``config.ENGINES``, which is read in
gunicorn's arbiter where torch is never imported (a test keeps the two in step).
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import openvino_ir
from ..calibration import calibrated_probabilities
from ..decision import decide

log = logging.getLogger(__name__)

#: Largest |logit difference| between a float32 engine and eager PyTorch that we accept.
ENGINE_TOLERANCE = 1e-3
#: Least top-1 agreement with eager float32 on the check photos, per reduced precision.
MIN_AGREEMENT = {"bf16": 0.95, "fp16": 0.95, "int8": 0.90}
#: Synthetic check photos for a model that ships none (an older model).
SYNTHETIC_CHECK_PHOTOS = 8

#: The engine the others are checked against and fall back to.
REFERENCE = "eager"

Engine = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class EngineSpec:
    """What a builder builds from: the eval-mode module and, when served, its model directory."""

    model: nn.Module
    image_size: int
    model_dir: Path | None = None
    card: dict[str, Any] = field(default_factory=dict)
    threads: int = 1


#: ``(source, precision) -> engine``; raises if the engine cannot be built.
Builder = Callable[[EngineSpec, str], Engine]


def softmax64(logits: torch.Tensor) -> np.ndarray:
    """Row-wise softmax in float64, so each row sums to 1 to ~1e-15 in the JSON."""
    z = logits.detach().to(torch.float64).numpy()
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def check_input(image_size: int, n: int = 2) -> torch.Tensor:
    """A fixed, photo-like uint8 batch (smooth gradients plus noise) for checks and warm-up."""
    g = torch.Generator().manual_seed(1234)
    ramp = torch.linspace(0, 255, image_size)
    base = (ramp.view(1, 1, -1) + ramp.view(1, -1, 1)) / 2
    noise = torch.randint(-40, 40, (n, 3, image_size, image_size), generator=g)
    return (base + noise).clamp(0, 255).to(torch.uint8)


def top1(outputs: torch.Tensor) -> np.ndarray:
    """The answer of a softmax head read by argmax: the class of the largest logit."""
    return outputs.argmax(1).numpy()


def disagreement(
    expected: torch.Tensor,
    got: torch.Tensor,
    precision: str = "fp32",
    answers: Callable[[torch.Tensor], np.ndarray] = top1,
) -> str | None:
    """Why ``got`` does not answer as ``expected`` (eager float32) does, or ``None`` if it does.

    Agreement is on ``answers``, the counts a client would get (the card's head and decision
    rule), not on raw outputs: a CORAL head's largest cumulative logit says nothing.
    """
    if tuple(got.shape) != tuple(expected.shape):
        return f"logits of shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
    got = got.float()
    diff = float((expected - got).abs().max())
    agreement = float((answers(expected) == answers(got)).sum()) / max(1, len(expected))
    if not math.isfinite(diff):
        return "non-finite logits"
    if precision in MIN_AGREEMENT:
        if agreement < MIN_AGREEMENT[precision]:
            return (
                f"top-1 agreement {agreement:.3f} on {len(expected)} check photos, below "
                f"{MIN_AGREEMENT[precision]:g} (max |logit diff| {diff:.3g})"
            )
        return None
    if diff > ENGINE_TOLERANCE or agreement < 1.0:
        return f"max |logit diff| {diff:.3g}, top-1 agreement {agreement:.3f}"
    return None


# --------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class Device:
    """What the machine offers, as far as choosing an engine goes (faked in unit tests)."""

    cuda: bool = False
    #: bf16 in hardware where the engine runs: AMX or AVX512_BF16 on a CPU, sm80+ on a GPU.
    native_bf16: bool = False


def probe_device(kind: str) -> Device:
    """The machine's ``Device``; asks OpenVINO about the CPU only when OpenVINO may serve."""
    if torch.cuda.is_available() and kind in ("auto", "cuda"):
        return Device(cuda=True, native_bf16=torch.cuda.is_bf16_supported())
    if kind not in ("auto", "openvino"):
        return Device()
    try:
        return Device(native_bf16=cpu_has_native_bf16())
    except Exception:  # no openvino: the plan's openvino step fails and says so
        return Device()


def resolve_plan(
    kind: str, precision: str, device: Device, card: dict[str, Any]
) -> tuple[list[tuple[str, str]], list[str]]:
    """The ``(engine, precision)`` steps to try in order, ending with eager, and why not better.

    ``kind`` and ``precision`` are the configured names (``auto`` included); the notes say why
    what was asked is not the first step (no native bf16, int8 not vouched for by the card...).
    """
    notes: list[str] = []
    if kind == "auto":
        kind = "cuda" if device.cuda else "openvino"
    reference = (REFERENCE, "fp32")
    if kind not in ("openvino", "cuda"):  # eager, torchscript: float32 only
        if precision not in ("auto", "fp32"):
            notes.append(f"{kind} runs fp32 only; BINCOUNTER_PRECISION={precision} ignored")
        return ([reference] if kind == REFERENCE else [(kind, "fp32"), reference]), notes
    if kind == "cuda":
        best = "bf16" if device.native_bf16 else "fp16"
        if precision == "int8":
            notes.append(f"int8 is served by the CPU engine (openvino) only; serving cuda {best}")
        if precision == "bf16" and not device.native_bf16:
            notes.append("this GPU has no native bf16; serving fp16")
        first = "fp32" if precision == "fp32" else best
        steps = [first] if first == "fp32" else [first, "fp32"]
        return [("cuda", p) for p in steps] + [reference], notes
    # openvino
    best = "bf16" if device.native_bf16 else "fp32"
    first = best if precision == "auto" else precision
    if first == "bf16" and not device.native_bf16:
        notes.append(
            "the CPU has no native bf16 (neither AMX nor AVX512_BF16), where OpenVINO would "
            "emulate it slowly; serving fp32"
        )
        first = "fp32"
    if first == "int8":
        refusal = openvino_ir.int8_refusal(card)
        if refusal is not None:
            notes.append(f"int8 not served: {refusal}; serving {best}")
            first = best
    steps = {"int8": ["int8", best, "fp32"], "bf16": ["bf16", "fp32"], "fp32": ["fp32"]}[first]
    return [("openvino", p) for p in dict.fromkeys(steps)] + [reference], notes


def served_name(kind: str, precision: str) -> str:
    """What ``ModelInfo.engine`` says: ``openvino-bf16``, ``cuda-fp16``, ``torchscript``..."""
    return f"{kind}-{precision}" if kind in ("openvino", "cuda") else kind


# --------------------------------------------------------------------------- builders


def eager(source: EngineSpec, precision: str) -> Engine:
    """The module itself: the reference every other engine must agree with."""
    return source.model


def torchscript(source: EngineSpec, precision: str) -> Engine:
    """Traced, frozen and optimised for inference (float32)."""
    example = check_input(source.image_size, 1)
    with warnings.catch_warnings(), torch.inference_mode():
        # TorchScript is deprecated upstream (FutureWarning) but the pinned torch has it; a
        # removal lands in the eager fallback.
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(source.model, example, check_trace=False)
        return torch.jit.optimize_for_inference(torch.jit.freeze(traced))


def cpu_has_native_bf16() -> bool:
    """OpenVINO's own view of the CPU: ``BF16`` among its capabilities (AMX or AVX512_BF16)."""
    import openvino as ov
    import openvino.properties as props

    return "BF16" in ov.Core().get_property("CPU", props.device.capabilities)


def openvino_config(precision: str, threads: int) -> dict[Any, Any]:
    """One stream on ``threads`` cores for the one batcher thread, float precision explicit.

    Explicit because OpenVINO's own default on a bf16-capable CPU is bf16, which would serve
    bf16 where float32 was asked for. For an int8 IR the hint is for the ops left in float.
    Threads are not pinned: several workers may share the cores.
    """
    import openvino.properties as props
    import openvino.properties.hint as hints

    return {
        hints.performance_mode: hints.PerformanceMode.LATENCY,
        props.num_streams: 1,
        props.inference_num_threads: int(threads),
        hints.inference_precision: "bf16" if precision == "bf16" else "f32",
        hints.enable_cpu_pinning: False,
    }


def openvino(source: EngineSpec, precision: str) -> Engine:
    """OpenVINO on the CPU: the model directory's IR, or the module converted now (slow)."""
    import openvino as ov

    core = ov.Core()
    files = openvino_ir.ir_files(source.card, "int8" if precision == "int8" else "fp32")
    if files and source.model_dir is not None:
        model = core.read_model(source.model_dir / files["xml"])
    elif precision == "int8":
        raise RuntimeError("the model directory has no int8 IR")
    else:
        log.info("the model directory has no OpenVINO IR: converting the network (seconds)")
        model = openvino_ir.convert(source.model, source.image_size)
    compiled = core.compile_model(model, "CPU", openvino_config(precision, source.threads))
    request = compiled.create_infer_request()  # one, reused: only the batcher thread runs it

    def run(batch: torch.Tensor) -> torch.Tensor:
        request.infer({0: np.ascontiguousarray(batch.numpy())}, share_inputs=True)
        return torch.from_numpy(request.get_output_tensor(0).data.copy())

    return run


def cuda(source: EngineSpec, precision: str) -> Engine:
    """The torch module on the GPU, in channels-last, under bf16/fp16 autocast or in fp32."""
    device = torch.device("cuda")
    model = copy.deepcopy(source.model).to(device, memory_format=torch.channels_last).eval()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if dtype is None:  # fp32 means fp32: TF32 convolutions would miss the float32 bound
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False

    def run(batch: torch.Tensor) -> torch.Tensor:
        x = batch.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            return model(x).float().cpu()

    return run


#: Engine name (``ServingConfig.engine``, less ``auto``) -> builder.
BUILDERS: dict[str, Builder] = {
    "openvino": openvino,
    "cuda": cuda,
    "torchscript": torchscript,
    REFERENCE: eager,
}


def build_engine(
    model: nn.Module,
    kind: str,
    image_size: int,
    *,
    precision: str = "auto",
    model_dir: Path | None = None,
    card: dict[str, Any] | None = None,
    threads: int | None = None,
    device: Device | None = None,
) -> tuple[Engine, str]:
    """The callable that runs the network, and the name of what it really is.

    ``kind`` is ``auto`` or names a builder in ``BUILDERS``; each step of ``resolve_plan`` but
    the reference is checked against eager PyTorch and replaced by the next if it fails to build
    or disagrees. ``device`` is probed unless given.
    """
    card = card or {}
    if kind != "auto" and kind not in BUILDERS:  # a bug: config.ENGINES admits only these
        raise KeyError(kind)
    device = device if device is not None else probe_device(kind)
    plan, notes = resolve_plan(kind, precision, device, card)
    for note in notes:
        log.warning("%s", note)
    source = EngineSpec(model, image_size, model_dir, card, threads or torch.get_num_threads())
    reference = BUILDERS[REFERENCE](source, "fp32")
    if plan[0][0] == REFERENCE:
        return reference, REFERENCE
    check = None
    if model_dir is not None:
        check = openvino_ir.load_check_set(model_dir, card)
    example = (
        torch.from_numpy(check)
        if check is not None
        else check_input(image_size, SYNTHETIC_CHECK_PHOTOS)
    )
    with torch.inference_mode():
        expected = reference(example)
    head, rule = card.get("head", "softmax"), card.get("decision", "argmax")

    def answers(outputs: torch.Tensor) -> np.ndarray:
        """The counts served: the card's calibration, then its rule (as ``Predictor``)."""
        logits = outputs.detach().cpu().double().numpy()
        return decide(calibrated_probabilities(logits, head, card.get("calibration")), rule)

    for (name, prec), (next_name, next_prec) in itertools.pairwise(plan):
        what = served_name(name, prec)
        instead = served_name(next_name, next_prec)
        try:
            engine = BUILDERS[name](source, prec)
            with warnings.catch_warnings(), torch.inference_mode():
                warnings.simplefilter("ignore", FutureWarning)
                got = engine(example)
        except Exception as exc:  # any failure to build means: try the next, correctly
            log.warning(
                "%s engine unavailable (%s: %s); trying %s", what, type(exc).__name__, exc, instead
            )
            continue
        why = disagreement(expected, got, prec, answers)
        if why is None:
            return engine, what
        log.warning("%s engine differs from eager PyTorch (%s); trying %s", what, why, instead)
    return reference, REFERENCE
