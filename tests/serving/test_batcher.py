"""The batcher's protocol with a fake model (no torch, no photos): milliseconds each.

Batching of concurrent work, the wait for requests still decoding (and only for them), order,
failures, close, and the rule that only the batcher thread runs the model.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from bincounter.serving.batcher import Batcher

from .batching import network_thread_id, submit


def image(k: int) -> np.ndarray:
    """A tiny ``uint8 [S, S, 3]`` image whose pixels say which one it is."""
    return np.full((2, 2, 3), k, dtype=np.uint8)


class FakeModel:
    """Answers row ``[k, 0, 0, 0, 0]`` for image ``k``; records batch sizes and threads."""

    def __init__(self, hold_first: bool = False, fail_first: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.threads: set[int] = set()
        self.running = threading.Event()
        self.release = threading.Event()
        self.hold_first = hold_first
        self.fail_first = fail_first
        if not hold_first:
            self.release.set()

    def predict_pixels(self, images):
        self.threads.add(threading.get_ident())
        self.batches.append([int(i[0, 0, 0]) for i in images])
        self.running.set()
        first = len(self.batches) == 1
        if first:
            assert self.release.wait(10)
        if first and self.fail_first:
            raise RuntimeError("boom")
        out = np.zeros((len(images), 5))
        out[:, 0] = [i[0, 0, 0] for i in images]
        return out


@pytest.fixture
def make():
    batchers: list[Batcher] = []

    def make(model: FakeModel, max_batch_size: int = 4, wait_ms: float = 2000.0) -> Batcher:
        batcher = Batcher(lambda: model, max_batch_size, wait_ms)
        batchers.append(batcher)
        return batcher

    yield make
    for batcher in batchers:
        batcher.close()


def ids(futures) -> list[int]:
    return [int(f.result(5)[0]) for f in futures]


def test_a_lone_request_never_waits(make):
    model = FakeModel()
    batcher = make(model, wait_ms=5000)
    started = time.monotonic()
    probs = batcher.predict(lambda: [image(7)], timeout=5)
    assert time.monotonic() - started < 1.0
    assert probs.shape == (1, 5) and probs[0, 0] == 7
    assert model.batches == [[7]] and model.threads == {network_thread_id(batcher)}


@pytest.mark.parametrize(
    ("queued", "max_batch_size", "batches"),
    [
        (1, 4, [[1]]),
        (4, 4, [[1, 2, 3, 4]]),
        (6, 4, [[1, 2, 3, 4], [5, 6]]),
        (3, 1, [[1], [2], [3]]),
    ],
)
def test_work_queued_while_busy_runs_as_batches_in_order(make, queued, max_batch_size, batches):
    model = FakeModel(hold_first=True)
    batcher = make(model, max_batch_size)
    first = submit(batcher, [image(0)])
    assert model.running.wait(5)  # the network is busy with image 0
    futures = [f for k in range(1, queued + 1) for f in submit(batcher, [image(k)])]
    model.release.set()
    assert ids(first) == [0] and ids(futures) == list(range(1, queued + 1))
    assert model.batches == [[0], *batches]


def test_concurrent_requests_share_a_forward_pass(make):
    model = FakeModel(hold_first=True)
    batcher = make(model, max_batch_size=8)
    first = submit(batcher, [image(0)])
    assert model.running.wait(5)
    results: dict[int, np.ndarray] = {}

    def request(k: int) -> None:
        results[k] = batcher.predict(lambda: [image(k), image(k + 10)], timeout=5)

    threads = [threading.Thread(target=request, args=(k,)) for k in (1, 2, 3)]
    for t in threads:
        t.start()
    while len(batcher._items) < 6 and any(t.is_alive() for t in threads):
        time.sleep(0.001)  # all three requests (six images) are queued behind image 0
    model.release.set()
    for t in threads:
        t.join(5)
    ids(first)
    assert {k: list(r[:, 0]) for k, r in results.items()} == {k: [k, k + 10] for k in (1, 2, 3)}
    assert len(model.batches) == 2 and sorted(model.batches[1]) == [1, 2, 3, 11, 12, 13]
    assert model.threads == {network_thread_id(batcher)}


class Decoding:
    """A request's decode step that blocks until told to finish (or fail)."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.started = threading.Event()
        self.finish = threading.Event()
        self.fail = False
        self.outcome: object = None

    def __call__(self):
        self.started.set()
        assert self.finish.wait(10)
        if self.fail:
            raise ValueError("not a photo")
        return [image(self.k)]

    def run(self, batcher: Batcher) -> threading.Thread:
        def target() -> None:
            try:
                self.outcome = batcher.predict(self, timeout=5)
            except Exception as exc:
                self.outcome = exc

        thread = threading.Thread(target=target)
        thread.start()
        assert self.started.wait(5)
        return thread


@pytest.mark.parametrize("fails", [False, True], ids=["decoded", "decode_failed"])
def test_a_batch_waits_for_a_request_still_decoding(make, fails):
    model = FakeModel()
    batcher = make(model, wait_ms=5000)
    decoding = Decoding(2)
    thread = decoding.run(batcher)
    (queued,) = submit(batcher, [image(1)])
    time.sleep(0.1)
    assert not queued.done()  # held for the decoding request, not answered alone
    decoding.fail = fails
    decoding.finish.set()
    started = time.monotonic()
    assert queued.result(2)[0] == 1
    thread.join(5)
    assert time.monotonic() - started < 1.0  # released at once, long before wait_ms
    if fails:
        # The failed request withdrew: the queued image ran alone, and nobody waits later.
        assert isinstance(decoding.outcome, ValueError) and model.batches == [[1]]
        started = time.monotonic()
        batcher.predict(lambda: [image(3)], timeout=5)
        assert time.monotonic() - started < 1.0
    else:
        assert model.batches == [[1, 2]] and decoding.outcome[0, 0] == 2


def test_the_wait_for_a_decoding_request_is_bounded(make):
    model = FakeModel()
    batcher = make(model, wait_ms=50)
    decoding = Decoding(2)
    thread = decoding.run(batcher)
    started = time.monotonic()
    assert ids(submit(batcher, [image(1)])) == [1]
    assert 0.04 < time.monotonic() - started < 2.0
    decoding.finish.set()
    thread.join(5)
    assert model.batches == [[1], [2]]


@pytest.mark.parametrize(
    "bad",
    [
        torch.zeros((2, 2, 3), dtype=torch.uint8),
        np.zeros((2, 2, 3), dtype=np.float32),
        np.zeros((2, 2), dtype=np.uint8),
        np.zeros((3, 2, 2), dtype=np.uint8),
        [[0, 0, 0]],
    ],
    ids=["torch_tensor", "float_array", "2d_array", "channels_first", "list"],
)
def test_only_numpy_pixels_are_accepted(make, bad):
    model = FakeModel()
    batcher = make(model, wait_ms=5000)
    with pytest.raises(TypeError, match="uint8"):
        submit(batcher, [bad])
    with pytest.raises(TypeError, match="uint8"):
        batcher.predict(lambda: [image(1), bad], timeout=5)
    # The refused request is no longer counted as decoding: nobody waits for it.
    started = time.monotonic()
    batcher.predict(lambda: [image(2)], timeout=5)
    assert time.monotonic() - started < 1.0 and model.batches == [[2]]


def test_a_failing_batch_fails_its_requests_not_the_thread(make):
    model = FakeModel(fail_first=True)
    batcher = make(model)
    with pytest.raises(RuntimeError, match="boom"):
        batcher.predict(lambda: [image(1)], timeout=5)
    assert batcher.predict(lambda: [image(2)], timeout=5)[0, 0] == 2


def test_close_answers_queued_work_then_stops(make):
    model = FakeModel(hold_first=True)
    batcher = make(model)
    futures = submit(batcher, [image(k) for k in range(6)])
    assert model.running.wait(5)
    closing = threading.Thread(target=batcher.close)
    closing.start()
    model.release.set()
    closing.join(5)
    assert ids(futures) == list(range(6))
    assert batcher.closed
    with pytest.raises(RuntimeError, match="closed"):
        submit(batcher, [image(9)])
    with pytest.raises(RuntimeError, match="closed"):
        batcher.predict(lambda: [image(9)])
    batcher.close()  # idempotent


def test_the_model_is_loaded_on_the_batcher_thread_and_its_error_raised_here():
    loaded_on: list[int] = []

    def load() -> FakeModel:
        loaded_on.append(threading.get_ident())
        return FakeModel()

    batcher = Batcher(load)
    try:
        assert loaded_on == [network_thread_id(batcher)] != [threading.get_ident()]
    finally:
        batcher.close()

    def broken() -> FakeModel:
        raise LookupError("no model here")

    with pytest.raises(LookupError, match="no model here"):
        Batcher(broken)
