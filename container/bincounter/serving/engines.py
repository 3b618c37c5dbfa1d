"""Engines: what runs the network when the server answers, and the check that it answers right.

An engine is a callable ``uint8 [N, 3, S, S] -> logits [N, K]`` (numpy arrays). Eager PyTorch
in float32 is the reference: the training job records its outputs on the model's check photos
(``exported``), and a faster engine is served only if, on those photos, it answers as they say
(a model without them is checked against eager PyTorch built now, on a fixed photo-like input
when it has no check photos either), within what its precision can promise: in float32 every
logit within ``ENGINE_TOLERANCE`` of the reference, relative to the largest reference logit (a
model whose logits reach 5e7 is as exact as one whose logits are near 1), and every top-1
identical; in bf16, fp16 or int8 no logit bound holds (the
arithmetic itself differs), so at least ``MIN_AGREEMENT`` of the check photos must get the same
top-1 and every logit must be finite. An engine that cannot be built or fails its check gives
way, with a warning, to the next one down its plan (int8 -> bf16 -> fp32 -> eager): serving
slower beats serving different answers.

Which engine by default (``auto``): OpenVINO on a CPU, because it has the CPU kernels torch's
path lacks here (bf16 on AMX/AVX512_BF16, int8; ``docs/serving.md`` has the figures), and the
torch path (``cuda``: autocast, batched) on a machine with a GPU. ``torchscript`` (frozen graph,
float32) and ``eager`` stay selectable.

Which precision (``BINCOUNTER_PRECISION``, ``resolve_plan``): ``auto`` is bf16 where the device
does it natively; on a CPU without native bf16 (AVX2-only AMD EPYC, say) it is int8 where the
card vouches for it, else float32 (fp16 on a GPU without bf16). ``int8`` is served only when the
model directory holds the int8 IR the training job quantized and its card shows int8 within
half a point of float32 accuracy on validation; otherwise the reason is logged and the next
best precision is served.

torch is imported only by the engines that run it and by a check that has no recorded
reference: a CPU server answering from the OpenVINO files never imports it (the torch-free
serving image has none), and then the network itself is never built (``EngineSpec.model``).

Adding an engine is one builder function and one entry in ``BUILDERS``, under the name
``BINCOUNTER_ENGINE`` selects; that name is also listed in ``config.ENGINES``, which is read in
gunicorn's arbiter where torch is never imported (a test keeps the two in step).
"""

from __future__ import annotations

import copy
import functools
import itertools
import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import openvino_ir
from ..decision import decide, head_probabilities
from .config import gpu_present

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)

#: Largest |logit difference| between a float32 engine and eager PyTorch that we accept, as a
#: share of the largest |reference logit| (or absolute, where that is below 1).
ENGINE_TOLERANCE = 1e-3
#: Least top-1 agreement with eager float32 on the check photos, per reduced precision.
MIN_AGREEMENT = {"bf16": 0.95, "fp16": 0.95, "int8": 0.90}
#: Synthetic check photos for a model that ships none (an older model).
SYNTHETIC_CHECK_PHOTOS = 8

#: The engine the others are checked against and fall back to.
REFERENCE = "eager"

#: ``uint8 [N, 3, S, S]`` -> float32 outputs ``[N, K]``, numpy in and out.
Engine = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class EngineSpec:
    """What a builder builds from: the eval-mode module (built on first use: ``load_module``)
    and, when served, its model directory; ``threads``: the compute threads of this worker."""

    load_module: Callable[[], nn.Module]
    image_size: int
    model_dir: Path | None = None
    card: dict[str, Any] = field(default_factory=dict)
    threads: int = 1

    @property
    def model(self) -> nn.Module:
        return self.load_module()


#: ``(source, precision) -> engine``; raises if the engine cannot be built.
Builder = Callable[[EngineSpec, str], Engine]


def check_input(image_size: int, n: int = 2) -> np.ndarray:
    """A fixed, photo-like uint8 batch (smooth gradients plus noise) for checks and warm-up."""
    rng = np.random.default_rng(1234)
    ramp = np.linspace(0, 255, image_size)
    base = (ramp.reshape(1, 1, -1) + ramp.reshape(1, -1, 1)) / 2
    noise = rng.integers(-40, 40, (n, 3, image_size, image_size))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def top1(outputs: np.ndarray) -> np.ndarray:
    """The answer of a softmax head read by argmax: the class of the largest logit."""
    return np.asarray(outputs).argmax(1)


def logit_bound(expected: np.ndarray) -> float:
    """The float32 bound on |logit difference|: ``ENGINE_TOLERANCE`` relative to the logits.

    float32 arithmetic keeps about 7 significant digits whatever the magnitude, so an engine
    that sums in another order differs by a share of the logits, not by a fixed amount.
    """
    scale = float(np.abs(expected).max()) if np.size(expected) else 0.0
    return ENGINE_TOLERANCE * max(1.0, scale) if math.isfinite(scale) else ENGINE_TOLERANCE


def disagreement(
    expected: np.ndarray,
    got: np.ndarray,
    precision: str = "fp32",
    answers: Callable[[np.ndarray], np.ndarray] = top1,
) -> str | None:
    """Why ``got`` does not answer as ``expected`` (eager float32) does, or ``None`` if it does.

    Agreement is on ``answers``, the counts a client would get (the card's head and decision
    rule), not on raw outputs: a CORAL head's largest cumulative logit says nothing.
    """
    expected = np.asarray(expected, dtype=np.float32)
    got = np.asarray(got, dtype=np.float32)
    if tuple(got.shape) != tuple(expected.shape):
        return f"logits of shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
    with np.errstate(invalid="ignore"):
        diff = float(np.abs(expected - got).max())
    if not math.isfinite(diff):
        return "non-finite logits"
    agreement = float((answers(expected) == answers(got)).sum()) / max(1, len(expected))
    if precision in MIN_AGREEMENT:
        if agreement < MIN_AGREEMENT[precision]:
            return (
                f"top-1 agreement {agreement:.3f} on {len(expected)} check photos, below "
                f"{MIN_AGREEMENT[precision]:g} (max |logit diff| {diff:.3g})"
            )
        return None
    bound = logit_bound(expected)
    if diff > bound or agreement < 1.0:
        return f"max |logit diff| {diff:.3g} (bound {bound:.3g}), top-1 agreement {agreement:.3f}"
    return None


# --------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class Device:
    """What the machine offers, as far as choosing an engine goes (faked in unit tests)."""

    cuda: bool = False
    #: bf16 in hardware where the engine runs: AMX or AVX512_BF16 on a CPU, sm80+ on a GPU.
    native_bf16: bool = False


def probe_device(kind: str) -> Device:
    """The machine's ``Device``; asks OpenVINO about the CPU only when OpenVINO may serve.

    torch is asked about CUDA only where the driver shows a GPU (``gpu_present``).
    """
    if kind in ("auto", "cuda") and (kind == "cuda" or gpu_present()):
        import torch

        if torch.cuda.is_available():
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
    if precision == "auto" and not device.native_bf16 and openvino_ir.int8_refusal(card) is None:
        first = "int8"  # without bf16, the int8 the card vouches for is the fast CPU path
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


def torch_engine(module: Any, threads: int) -> Engine:
    """A CPU torch module (or TorchScript) as an ``Engine``, on ``threads`` intra-op threads.

    The threads are set here, on the thread that builds and runs the engine (the batcher's):
    torch's OpenMP pool size is per calling thread, and a fallback must use the worker's share
    of the cores like the engine it replaces.
    """
    import torch

    torch.set_num_threads(max(1, int(threads)))

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(np.ascontiguousarray(batch))).float().numpy()

    return run


def eager(source: EngineSpec, precision: str) -> Engine:
    """The module itself: the reference every other engine must agree with."""
    return torch_engine(source.model, source.threads)


def torchscript(source: EngineSpec, precision: str) -> Engine:
    """Traced, frozen and optimised for inference (float32)."""
    import torch

    example = torch.from_numpy(check_input(source.image_size, 1))
    with warnings.catch_warnings(), torch.inference_mode():
        # TorchScript is deprecated upstream (FutureWarning) but the pinned torch has it; a
        # removal lands in the eager fallback.
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(source.model, example, check_trace=False)
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
    return torch_engine(frozen, source.threads)


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

    def run(batch: np.ndarray) -> np.ndarray:
        request.infer({0: np.ascontiguousarray(batch)}, share_inputs=True)
        return request.get_output_tensor(0).data.copy()

    return run


def cuda(source: EngineSpec, precision: str) -> Engine:
    """The torch module on the GPU, in channels-last, under bf16/fp16 autocast or in fp32."""
    import torch

    device = torch.device("cuda")
    model = copy.deepcopy(source.model).to(device, memory_format=torch.channels_last).eval()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if dtype is None:  # fp32 means fp32: TF32 convolutions would miss the float32 bound
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False

    def run(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(device, non_blocking=True)
        x = x.contiguous(memory_format=torch.channels_last)
        with (
            torch.inference_mode(),
            torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None),
        ):
            return model(x).float().cpu().numpy()

    return run


#: Engine name (``ServingConfig.engine``, less ``auto``) -> builder.
BUILDERS: dict[str, Builder] = {
    "openvino": openvino,
    "cuda": cuda,
    "torchscript": torchscript,
    REFERENCE: eager,
}


def reference_check(source: EngineSpec, reference: Engine | None) -> tuple[np.ndarray, np.ndarray]:
    """The check photos and the reference outputs on them, the recorded ones if the card has
    them; else eager PyTorch's, computed now (``reference`` or built: this imports torch)."""
    check = recorded = None
    if source.model_dir is not None:
        check = openvino_ir.load_check_set(source.model_dir, source.card)
        recorded = openvino_ir.load_reference_outputs(source.model_dir, source.card)
    example = check if check is not None else check_input(source.image_size, SYNTHETIC_CHECK_PHOTOS)
    if recorded is not None:
        return example, recorded
    return example, (reference or BUILDERS[REFERENCE](source, "fp32"))(example)


def build_engine(
    model: nn.Module | Callable[[], nn.Module],
    kind: str,
    image_size: int,
    *,
    precision: str = "auto",
    model_dir: Path | None = None,
    card: dict[str, Any] | None = None,
    threads: int = 1,
    device: Device | None = None,
) -> tuple[Engine, str]:
    """The callable that runs the network, and the name of what it really is.

    ``model`` is the eval-mode module or a function that builds it, called only if an engine
    or the check needs it (never when the model directory has the IR and recorded reference
    outputs). ``kind`` is ``auto`` or names a builder in ``BUILDERS``; each step of
    ``resolve_plan`` but the reference is checked (``reference_check``) and replaced by the next
    if it fails to build or disagrees. ``device`` is probed unless given.
    """
    card = card or {}
    if kind != "auto" and kind not in BUILDERS:  # a bug: config.ENGINES admits only these
        raise KeyError(kind)
    device = device if device is not None else probe_device(kind)
    plan, notes = resolve_plan(kind, precision, device, card)
    for note in notes:
        log.warning("%s", note)
    load = functools.cache(model if not hasattr(model, "state_dict") else lambda: model)
    source = EngineSpec(load, image_size, model_dir, card, max(1, int(threads)))
    if plan[0][0] == REFERENCE:
        return BUILDERS[REFERENCE](source, "fp32"), REFERENCE
    example, expected = reference_check(source, None)
    head, rule = card.get("head", "softmax"), card.get("decision", "argmax")

    def answers(outputs: np.ndarray) -> np.ndarray:
        """The counts served: the card's rule on the head's probabilities (as the server)."""
        return decide(head_probabilities(outputs, head), rule)

    for (name, prec), (next_name, next_prec) in itertools.pairwise(plan):
        what = served_name(name, prec)
        instead = served_name(next_name, next_prec)
        try:
            engine = BUILDERS[name](source, prec)
            with warnings.catch_warnings():
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
    return BUILDERS[REFERENCE](source, "fp32"), REFERENCE
