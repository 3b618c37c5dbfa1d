"""The inference engine: model dir -> warmed-up network -> probabilities, in batches.

Why it looks like this (measured on 2 CPU cores, ResNet-18 at 224 px, see ``docs/serving.md``):

* A frozen TorchScript graph (``torch.jit.freeze`` + ``optimize_for_inference``: conv+BN folded,
  oneDNN convolutions with pre-packed weights) is ~1.6x faster than eager PyTorch per image
  once it sees batches of 4 or more (``bench/serve_bench.py``). ONNX Runtime would add a
  dependency for the same kind of graph optimisation, so it was not adopted.
* Batches only help if concurrent requests share one forward pass, so each worker has one
  ``Batcher`` thread that owns the network: HTTP threads decode and preprocess their photo
  (Pillow releases the GIL) and queue the tensor; the batcher takes everything queued when it is
  free, waits a few milliseconds more only for requests it knows are still decoding (so a lone
  request never waits), and answers each request's future.
* The served graph must answer like the trained model: after building it, the predictor checks
  it against eager PyTorch on a fixed input and falls back to eager if they disagree (or if
  TorchScript is unavailable), with a warning. Serving slower beats serving different answers.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import CLASSES
from ..imaging import load_and_preprocess, load_image, preprocess_array
from ..model import load_model

log = logging.getLogger("bincounter.serving")

#: Largest |logit difference| between the served graph and eager PyTorch that we accept.
ENGINE_TOLERANCE = 1e-3

Engine = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ModelInfo:
    """What a client needs to know about the model that answered."""

    arch: str
    image_size: int
    weights_sha256: str
    engine: str
    card: dict[str, Any] = field(repr=False, compare=False)

    @property
    def version(self) -> str:
        """Short, stable id of the weights: the card's sha256, shortened like a git hash."""
        return self.weights_sha256[:12]


def probabilities_to_prediction(probabilities: Sequence[float], version: str) -> dict[str, Any]:
    """One photo's answer: the JSON object ``/invocations`` returns for it."""
    probs = [float(p) for p in probabilities]
    best = max(range(len(probs)), key=probs.__getitem__)
    return {
        "count": int(CLASSES[best]),
        "probabilities": {str(c): p for c, p in zip(CLASSES, probs, strict=True)},
        "confidence": probs[best],
        # The mean count under the model's distribution: what inventory sums want.
        "expected_count": float(sum(c * p for c, p in zip(CLASSES, probs, strict=True))),
        "model_version": version,
    }


def softmax64(logits: torch.Tensor) -> np.ndarray:
    """Row-wise softmax in float64, so each row sums to 1 to ~1e-15 in the JSON."""
    z = logits.detach().to(torch.float64).numpy()
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _check_input(image_size: int, n: int = 2) -> torch.Tensor:
    """A fixed, photo-like uint8 batch (smooth gradients plus noise) for checks and warm-up."""
    g = torch.Generator().manual_seed(1234)
    ramp = torch.linspace(0, 255, image_size)
    base = (ramp.view(1, 1, -1) + ramp.view(1, -1, 1)) / 2
    noise = torch.randint(-40, 40, (n, 3, image_size, image_size), generator=g)
    return (base + noise).clamp(0, 255).to(torch.uint8)


def build_engine(model: nn.Module, kind: str, image_size: int) -> tuple[Engine, str]:
    """The callable that runs the network, and the name of what it really is.

    ``torchscript``: traced, frozen and optimised for inference; verified against eager on a
    fixed input, else eager is used. ``eager``: the module itself.
    """
    if kind == "eager":
        return model, "eager"
    example = _check_input(image_size)
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            # TorchScript is deprecated upstream (FutureWarning) but the pinned torch has it,
            # and it is measurably the fastest CPU path here; a removal lands in the fallback.
            warnings.simplefilter("ignore", FutureWarning)
            traced = torch.jit.trace(model, example[:1], check_trace=False)
            graph = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
            expected = model(example)
            got = graph(example)
    except Exception as exc:  # any failure to build means: serve eager, correctly
        log.warning(
            "TorchScript engine unavailable (%s: %s); serving eager PyTorch",
            type(exc).__name__,
            exc,
        )
        return model, "eager"
    diff = float((expected - got).abs().max())
    if (
        not math.isfinite(diff)
        or diff > ENGINE_TOLERANCE
        or not torch.equal(expected.argmax(1), got.argmax(1))
    ):
        log.warning(
            "TorchScript engine differs from eager PyTorch (max |logit diff| %.3g); serving eager",
            diff,
        )
        return model, "eager"
    return graph, "torchscript"


class Predictor:
    """A loaded, warmed-up model that turns photo bytes into predictions.

    ``predict_batch`` runs the network on the calling thread; ``Batcher`` runs it on its own.
    Build it with ``Predictor.load``.
    """

    def __init__(self, engine: Engine, info: ModelInfo) -> None:
        self._engine = engine
        self.info = info

    @classmethod
    def load(
        cls,
        model_dir: Path,
        *,
        engine: str = "torchscript",
        compute_threads: int | None = None,
        warmup_batch_sizes: Sequence[int] = (1, 2, 4, 8),
    ) -> Predictor:
        """Load ``model_dir`` (raises ``ModelLoadError``), build the engine, warm it up.

        ``compute_threads`` sets torch's intra-op threads for the process; the first call that
        builds a pool wins, so the server calls this before any other tensor work.
        """
        if compute_threads:
            torch.set_num_threads(compute_threads)
            # Inter-op parallelism is unused here; it can be set once only, hence suppress.
            with contextlib.suppress(RuntimeError):
                torch.set_num_interop_threads(1)
        started = time.perf_counter()
        model, card = load_model(Path(model_dir))
        image_size = int(card["image_size"])
        runner, kind = build_engine(model, engine, image_size)
        info = ModelInfo(
            arch=str(card["arch"]),
            image_size=image_size,
            weights_sha256=str(card["weights_sha256"]),
            engine=kind,
            card=card,
        )
        predictor = cls(runner, info)
        predictor.warm_up(warmup_batch_sizes)
        log.info(
            "model %s (%s, %d px, version %s) ready on %s with %d threads in %.2f s",
            model_dir,
            info.arch,
            image_size,
            info.version,
            kind,
            torch.get_num_threads(),
            time.perf_counter() - started,
        )
        return predictor

    def warm_up(self, batch_sizes: Sequence[int]) -> None:
        """Run each batch size twice: the first passes allocate and (TorchScript) specialise."""
        example = _check_input(self.info.image_size, max(batch_sizes, default=1))
        for _ in range(2):
            for n in batch_sizes:
                self.predict_batch(example[:n])

    def preprocess(self, data: bytes) -> torch.Tensor:
        """Photo bytes -> ``uint8 [3, S, S]``: the training pipeline, unchanged.

        Raises ``bincounter.imaging.ImageError`` for anything that is not a usable photo.
        """
        return load_and_preprocess(data, self.info.image_size)

    def pixels(self, data: bytes) -> np.ndarray:
        """Photo bytes -> ``uint8 [S, S, 3]``: ``preprocess`` minus the tensor conversion.

        What the server's HTTP threads run: numpy and Pillow only, so torch's OpenMP pool is
        started by the batcher thread alone (a second pool in a live thread makes libgomp
        throttle its spinning and costs ~25% per forward pass on 2 cores).
        """
        return preprocess_array(load_image(data, self.info.image_size), self.info.image_size)

    def predict_batch(self, batch: torch.Tensor) -> np.ndarray:
        """``uint8 [N, 3, S, S]`` -> probabilities ``float64 [N, 5]`` (rows sum to 1)."""
        with torch.inference_mode():
            logits = self._engine(batch)
        return softmax64(logits)

    def predict_bytes(self, images: Sequence[bytes]) -> list[dict[str, Any]]:
        """In-process convenience: photos -> predictions, one forward pass."""
        batch = torch.stack([self.preprocess(d) for d in images])
        return [
            probabilities_to_prediction(p, self.info.version) for p in self.predict_batch(batch)
        ]


class Batcher:
    """One thread that owns the network and runs queued images as batches.

    Batching that never waits for nobody: when the network is free, the batcher takes
    everything queued (up to ``max_batch_size``). It waits for more, up to ``wait_ms``, only
    while requests it has been told about (``expect``) are still being read and decoded: their
    images will be queued within a millisecond or two, and a batch of 4 costs ~30% less per
    image than 4 batches of 1. A lone request (concurrency 1) is never held back; under load,
    batches fill without a fixed delay.
    """

    def __init__(
        self,
        predictor: Predictor | None = None,
        max_batch_size: int = 8,
        wait_ms: float = 0.0,
        *,
        load: Callable[[], Predictor] | None = None,
    ):
        """Start the thread; with ``load`` (instead of ``predictor``) the model is loaded and
        warmed up on that thread, and its exception (e.g. ``ModelLoadError``) raised here.

        One thread doing all the torch work matters on CPU: every thread that runs a parallel
        torch op keeps its own OpenMP pool, and more pool threads than cores make libgomp
        stop spinning at barriers (measured: 82 -> 61 images/s at batch 1 on 2 cores).
        """
        if (predictor is None) == (load is None):
            raise ValueError("give a predictor or a load function")
        self.predictor = predictor  # type: ignore[assignment]
        self.max_batch_size = max_batch_size
        self.wait_s = wait_ms / 1000.0
        self._cond = threading.Condition()
        self._items: deque[tuple[Any, Future[np.ndarray]]] = deque()
        self._expected = 0
        self._stopping = False
        self._ready = threading.Event()
        self._load_error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(load,), name="bincounter-batcher", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        if self._load_error is not None:
            raise self._load_error

    def expect(self, requests: int = 1) -> None:
        """``requests`` more (or, negative, fewer) requests are decoding images to submit."""
        with self._cond:
            self._expected = max(0, self._expected + requests)
            self._cond.notify()

    def submit_many(self, tensors: Sequence[Any], fulfils: int = 0) -> list[Future[np.ndarray]]:
        """Queue preprocessed images at once; ``fulfils`` expected requests arrive with them.

        An image is a ``uint8`` tensor ``[3, S, S]`` (``Predictor.preprocess``) or array
        ``[S, S, 3]`` (``Predictor.pixels``). Each future yields its probabilities ``[5]``.
        """
        futures: list[Future[np.ndarray]] = [Future() for _ in tensors]
        with self._cond:
            self._items.extend(zip(tensors, futures, strict=True))
            self._expected = max(0, self._expected - fulfils)
            self._cond.notify()
        return futures

    def submit(self, tensor: Any) -> Future[np.ndarray]:
        """Queue one preprocessed image; the future yields its probabilities ``[5]``."""
        return self.submit_many([tensor])[0]

    def predict(
        self, tensors: Sequence[Any], timeout: float | None = None, fulfils: int = 0
    ) -> np.ndarray:
        """Queue several images and wait for all: probabilities ``[N, 5]`` in order."""
        futures = self.submit_many(tensors, fulfils)
        return np.stack([f.result(timeout) for f in futures])

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout=10)

    def _next_batch(self) -> list[tuple[Any, Future[np.ndarray]]] | None:
        with self._cond:
            while not self._items and not self._stopping:
                self._cond.wait()
            if not self._items:
                return None  # stopping, nothing left
            deadline = time.monotonic() + self.wait_s
            while len(self._items) < self.max_batch_size and self._expected > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopping:
                    break
                self._cond.wait(remaining)
            n = min(len(self._items), self.max_batch_size)
            return [self._items.popleft() for _ in range(n)]

    def _run(self, load: Callable[[], Predictor] | None) -> None:
        if load is not None:
            try:
                self.predictor = load()
            except BaseException as exc:  # handed to the constructor's caller
                self._load_error = exc
                self._ready.set()
                return
        self._ready.set()
        while (items := self._next_batch()) is not None:
            live = [(t, f) for t, f in items if f.set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                batch = torch.stack(
                    [
                        torch.from_numpy(t).permute(2, 0, 1) if isinstance(t, np.ndarray) else t
                        for t, _ in live
                    ]
                )
                probs = self.predictor.predict_batch(batch)
            except Exception as exc:  # a bug, not bad input: fail these requests, keep serving
                log.exception("forward pass failed for a batch of %d", len(live))
                for _, f in live:
                    f.set_exception(exc)
                continue
            for (_, f), p in zip(live, probs, strict=True):
                f.set_result(p)
