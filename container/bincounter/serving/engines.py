"""Engines: what runs the network when the server answers, and the check that it answers right.

An engine is a callable ``uint8 [N, 3, S, S] -> logits [N, 5]`` built from the trained module.
Eager PyTorch is the reference; a faster engine is served only if, on a fixed photo-like input,
its logits match eager PyTorch within ``ENGINE_TOLERANCE`` and its top-1 answers are identical.
A faster engine that cannot be built, or that disagrees, falls back to eager with a warning:
serving slower beats serving different answers.

Why a frozen TorchScript graph is the default (``torch.jit.freeze`` + ``optimize_for_inference``:
BatchNorm folded into the convolutions, oneDNN kernels with pre-packed weights): on CPU it is
measurably faster than eager PyTorch, most of all on batches, without adding a dependency
(``docs/serving.md`` has the figures). ONNX Runtime would bring the same kind of graph
optimisation as a new dependency, so it was not adopted.

Adding an engine is one builder function and one entry in ``BUILDERS``, under the name
``BINCOUNTER_ENGINE`` selects; that name is also listed in ``config.ENGINES``, which is read in
gunicorn's arbiter where torch is never imported (a test keeps the two in step).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

log = logging.getLogger("bincounter.serving")

#: Largest |logit difference| between the served engine and eager PyTorch that we accept.
ENGINE_TOLERANCE = 1e-3

#: The engine the others are checked against and fall back to.
REFERENCE = "eager"

Engine = Callable[[torch.Tensor], torch.Tensor]
#: ``(model in eval mode, image size) -> engine``; raises if the engine cannot be built.
Builder = Callable[[nn.Module, int], Engine]


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


def disagreement(expected: torch.Tensor, got: torch.Tensor) -> float | None:
    """The max |logit difference| if ``got`` is too far from ``expected``, else ``None``.

    Too far: a difference above ``ENGINE_TOLERANCE``, a non-finite one, or any other top-1.
    """
    diff = float((expected - got).abs().max())
    if (
        not math.isfinite(diff)
        or diff > ENGINE_TOLERANCE
        or not torch.equal(expected.argmax(1), got.argmax(1))
    ):
        return diff
    return None


def eager(model: nn.Module, image_size: int) -> Engine:
    """The module itself: the reference every other engine must agree with."""
    return model


def torchscript(model: nn.Module, image_size: int) -> Engine:
    """Traced, frozen and optimised for inference."""
    example = check_input(image_size, 1)
    with warnings.catch_warnings(), torch.inference_mode():
        # TorchScript is deprecated upstream (FutureWarning) but the pinned torch has it, and it
        # is measurably the fastest CPU path here; a removal lands in the eager fallback.
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(model, example, check_trace=False)
        return torch.jit.optimize_for_inference(torch.jit.freeze(traced))


#: Engine name (``ServingConfig.engine``) -> builder.
BUILDERS: dict[str, Builder] = {"torchscript": torchscript, REFERENCE: eager}


def build_engine(model: nn.Module, kind: str, image_size: int) -> tuple[Engine, str]:
    """The callable that runs the network, and the name of what it really is.

    ``kind`` names a builder in ``BUILDERS``; anything but the reference is verified against
    eager PyTorch on ``check_input`` and replaced by eager if it fails to build or disagrees.
    """
    build = BUILDERS[kind]  # an unknown name is a bug: config.ENGINES admits only these
    reference = BUILDERS[REFERENCE](model, image_size)
    if kind == REFERENCE:
        return reference, REFERENCE
    example = check_input(image_size)
    try:
        engine = build(model, image_size)
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore", FutureWarning)
            expected = reference(example)
            got = engine(example)
    except Exception as exc:  # any failure to build means: serve eager, correctly
        log.warning(
            "%s engine unavailable (%s: %s); serving eager PyTorch", kind, type(exc).__name__, exc
        )
        return reference, REFERENCE
    diff = disagreement(expected, got)
    if diff is not None:
        log.warning(
            "%s engine differs from eager PyTorch (max |logit diff| %.3g); serving eager",
            kind,
            diff,
        )
        return reference, REFERENCE
    return engine, kind
