"""The batcher: one thread per worker that owns the network and runs queued photos as batches.

Batches only help if concurrent requests share one forward pass, so HTTP threads never run the
network: they read and decode their photo to ``uint8`` pixels (numpy and Pillow, which releases
the GIL) and hand the arrays over with ``Batcher.predict``; the batcher takes everything queued
when it is free and answers each request's future.

Only this thread may run torch. Every thread that runs a parallel torch op keeps its own OpenMP
pool, and once pools outnumber the cores libgomp stops spinning at its barriers, which makes
every forward pass slower (``docs/serving.md`` has the measurement). That rule is kept by
structure, not by care: this module does not import torch, ``predict`` accepts numpy arrays
only, and the one place that turns arrays into a tensor is the predictor's ``predict_pixels``,
which nothing but this thread calls. The model is even loaded and warmed up here (``load``).

Batching never waits for nobody. ``predict`` takes the request's decoding as a callable: the
batcher counts the request as *decoding* while that runs on the calling thread, and a batch
being formed waits for decoding requests (up to ``wait_ms``, since their pixels arrive within a
millisecond or two and a bigger batch is cheaper per photo). A lone request is never held back,
and under load batches fill without a fixed delay. Counting in and out lives here alone, so a
request can neither be forgotten nor counted twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)

_Item = tuple[np.ndarray, "Future[np.ndarray]"]


class PixelModel(Protocol):
    """What the batcher runs: ``Predictor`` or, in tests, a fake."""

    def predict_pixels(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """``uint8 [S, S, 3]`` arrays -> probabilities ``float64 [N, 5]``."""
        ...


def check_pixels(images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The images as a list, or ``TypeError`` for anything but ``uint8 [S, S, 3]`` arrays.

    A torch tensor is refused too: a thread that made one has already run torch.
    """
    images = list(images)
    for image in images:
        if not (
            isinstance(image, np.ndarray)
            and image.dtype == np.uint8
            and image.ndim == 3
            and image.shape[2] == 3
        ):
            raise TypeError(
                f"the batcher takes uint8 [S, S, 3] numpy arrays, got {type(image).__name__} "
                f"{getattr(image, 'dtype', '')} {tuple(getattr(image, 'shape', ()))}"
            )
    return images


class Batcher:
    """The worker's network thread; ``predict`` from any thread, ``close`` when done."""

    def __init__(
        self,
        load: Callable[[], PixelModel],
        max_batch_size: int = 8,
        wait_ms: float = 0.0,
    ) -> None:
        """Start the thread, which calls ``load`` (load and warm up the model) before serving.

        ``load``'s exception (e.g. ``ModelLoadError``) is raised here, in the caller.
        """
        self.model: PixelModel | None = None
        self.max_batch_size = max_batch_size
        self.wait_s = wait_ms / 1000.0
        self._cond = threading.Condition()
        self._items: deque[_Item] = deque()
        self._decoding = 0
        self._closed = False
        self._ready = threading.Event()
        self._load_error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(load,), name="bincounter-batcher", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        if self._load_error is not None:
            raise self._load_error

    def predict(
        self,
        decode: Callable[[], Sequence[np.ndarray]],
        timeout: float | None = None,
    ) -> np.ndarray:
        """One request: ``decode()`` on this thread, then its images through the network.

        While ``decode`` runs, the request counts as decoding, so a batch being formed waits
        for it; if ``decode`` raises, the request withdraws and the exception propagates. Returns
        probabilities ``[N, 5]`` in the order of the images; raises
        ``concurrent.futures.TimeoutError`` after ``timeout`` seconds without an answer, having
        cancelled its images still queued: the batcher drops them instead of running them for
        nobody.
        """
        self._count_decoding(+1)
        try:
            images = check_pixels(decode())
        except BaseException:
            self._count_decoding(-1)
            raise
        futures = self._enqueue(images, decoded=1)
        ends = None if timeout is None else time.monotonic() + timeout
        try:
            return np.stack(
                [
                    f.result(None if ends is None else max(0.0, ends - time.monotonic()))
                    for f in futures
                ]
            )
        except FutureTimeout:
            for f in futures:
                f.cancel()
            raise

    def close(self, timeout: float = 10.0) -> None:
        """Refuse new work, answer what is queued, and stop the thread (idempotent)."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)

    @property
    def closed(self) -> bool:
        return self._closed and not self._thread.is_alive()

    def _count_decoding(self, requests: int) -> None:
        with self._cond:
            self._decoding = max(0, self._decoding + requests)
            self._cond.notify()

    def _enqueue(self, images: list[np.ndarray], decoded: int) -> list[Future[np.ndarray]]:
        """Queue ``images``; ``decoded`` decoding requests arrive with them (one atomic step)."""
        futures: list[Future[np.ndarray]] = [Future() for _ in images]
        with self._cond:
            self._decoding = max(0, self._decoding - decoded)
            if self._closed:
                self._cond.notify()
                raise RuntimeError("the batcher is closed")
            self._items.extend(zip(images, futures, strict=True))
            self._cond.notify()
        return futures

    def _next_batch(self) -> list[_Item] | None:
        with self._cond:
            while not self._items and not self._closed:
                self._cond.wait()
            if not self._items:
                return None  # closed, nothing left
            deadline = time.monotonic() + self.wait_s
            while len(self._items) < self.max_batch_size and self._decoding > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    break
                self._cond.wait(remaining)
            n = min(len(self._items), self.max_batch_size)
            return [self._items.popleft() for _ in range(n)]

    def _run(self, load: Callable[[], PixelModel]) -> None:
        try:
            self.model = load()
        except BaseException as exc:  # handed to the constructor's caller
            self._load_error = exc
            self._closed = True
            self._ready.set()
            return
        self._ready.set()
        model = self.model
        while (items := self._next_batch()) is not None:
            live = [(image, f) for image, f in items if f.set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                probs = model.predict_pixels([image for image, _ in live])
            except Exception as exc:  # a bug, not bad input: fail these requests, keep serving
                log.exception("forward pass failed for a batch of %d", len(live))
                for _, f in live:
                    f.set_exception(exc)
                continue
            for (_, f), p in zip(live, probs, strict=True):
                f.set_result(p)
