"""What one request may cost a worker: a deadline, a decode slot, a bound on every socket read.

A worker has a few HTTP threads and one memory; a hostile client can spend either by sending
slowly or by sending a small photo that is huge once decoded (issue 21). Three bounds, all
kept here so that the codec, the app and the worker apply the same ones:

* ``Deadline``: one per request, from the moment the app is called (its headers are in, its
  body starts arriving) to the answer. Reading the body, waiting for a decode slot, decoding
  each photo and waiting for the batcher all check it; past it the request is answered 503
  (408 while its body was still arriving) and what it queued is cancelled.
* ``DecodeSlots``: at most ``decode_threads`` photos decode at once in a worker, so its peak
  memory is bounded by slots x the largest photo allowed, not by how many requests arrive.
* ``TimedSocket``: every ``recv`` on a client connection waits at most the read timeout and
  never past the request's deadline, so a client that stops sending releases its thread. A
  read that runs out returns end-of-stream, which gunicorn handles quietly (a stalled header
  is a "premature disconnection"); ``read_expired`` tells the codec why a body ended early.
  The bound lives in a thread-local: a connection is served by one thread at a time.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import InvocationError
from . import parameters

_bounds = threading.local()

#: Where ``StartClock`` leaves the request's ``Deadline`` in the WSGI environ.
DEADLINE_KEY = "bincounter.deadline"


class Deadline:
    """A request's time limit: ``seconds`` from its creation, on the monotonic clock."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def check(self, doing: str) -> None:
        """Raise ``exceeded`` if the request's time is up."""
        if self.remaining() <= 0:
            raise self.exceeded(doing)

    def exceeded(self, doing: str) -> InvocationError:
        """The 503 for a request whose time ran out while it was ``doing`` something."""
        return InvocationError(
            503,
            "timeout",
            f"no answer within {self.seconds:g} s ({parameters.MODEL_SERVER_TIMEOUT}): "
            f"the time ran out while {doing}; retry later",
        )


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


#: glibc's ``malloc_trim``: gives the heap's free pages back to the system (None elsewhere).
MALLOC_TRIM = _malloc_trim()


class DecodeSlots:
    """At most ``slots`` photos decoding at once in this worker, waited for within a deadline.

    When the last decode ends the C heap is trimmed: each HTTP thread decodes in its own glibc
    arena, which otherwise keeps a large photo's freed pages, and a worker that served a few
    large photos would stay hundreds of MiB above its idle size (measured: ``docs/serving.md``).
    """

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._semaphore = threading.BoundedSemaphore(slots)
        self._lock = threading.Lock()
        self._busy = 0

    @contextmanager
    def hold(self, deadline: Deadline | None) -> Iterator[None]:
        timeout = None if deadline is None else max(0.0, deadline.remaining())
        if not self._semaphore.acquire(timeout=timeout):
            raise deadline.exceeded("waiting for a decode slot")
        with self._lock:
            self._busy += 1
        try:
            yield
        finally:
            with self._lock:
                self._busy -= 1
                idle = self._busy == 0
            self._semaphore.release()
            if idle and MALLOC_TRIM is not None:
                MALLOC_TRIM(0)


def bound_reads(idle_s: float, deadline: Deadline | None = None) -> None:
    """From now on this thread's socket reads wait at most ``idle_s`` each, and end at
    ``deadline``; ``read_expired`` is reset."""
    _bounds.idle_s = idle_s
    _bounds.until = math.inf if deadline is None else deadline.at
    _bounds.expired = ""


def bound_idle_s() -> float:
    """The per-read bound this thread runs under (``inf`` outside a bounded request)."""
    return getattr(_bounds, "idle_s", math.inf)


def read_expired() -> str:
    """Why this thread's last socket read gave up ("" if none did): ``idle`` or ``deadline``."""
    return getattr(_bounds, "expired", "")


class TimedSocket(socket.socket):
    """A client socket whose ``recv`` obeys the thread's bounds (``bound_reads``).

    gunicorn's worker made the socket; ``adopt`` switches its class in place (no new slots,
    so the layout is the same), because gunicorn's parser and body readers hold the object.
    """

    __slots__ = ()

    @classmethod
    def adopt(cls, sock: socket.socket) -> None:
        if type(sock) is socket.socket:
            sock.__class__ = cls

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        idle_s = getattr(_bounds, "idle_s", None)
        if idle_s is None:
            return super().recv(bufsize, flags)
        if _bounds.expired:
            return b""
        left = _bounds.until - time.monotonic()
        if left <= 0:
            _bounds.expired = "deadline"
            return b""
        previous = self.gettimeout()
        self.settimeout(min(idle_s, left) if previous is None else min(idle_s, left, previous))
        try:
            return super().recv(bufsize, flags)
        except TimeoutError:
            _bounds.expired = "idle" if idle_s < left else "deadline"
            return b""
        finally:
            self.settimeout(previous)


class StartClock:
    """WSGI middleware, outermost: start the request's ``Deadline`` and bound its reads.

    Called once the request's headers are in, as its body starts arriving; from here every
    socket read of this request waits at most ``read_timeout_s`` and ends at the deadline.
    """

    def __init__(self, app: Any, timeout_s: float, read_timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s
        self.read_timeout_s = read_timeout_s

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        deadline = Deadline(self.timeout_s)
        environ[DEADLINE_KEY] = deadline
        bound_reads(self.read_timeout_s, deadline)
        return self.app(environ, start_response)
