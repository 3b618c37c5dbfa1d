"""WSGI middleware that finishes reading every request body, so refusals cannot pin threads.

gunicorn's gthread worker keeps a connection alive even when the app answered without reading
the body (a 415, 406, 413 or 400 decided before the read). The unread bytes make the socket
readable, so a worker thread takes it, skips them and then blocks waiting for a next request
the client may never send (benoitc/gunicorn#3301). Each such connection holds one of the
worker's HTTP threads; a handful of them and ``/ping`` hangs, and SIGTERM waits out the whole
graceful timeout.

A body beyond that bound (a 7 MB photo against the 6 MB limit) is answered first and then
*lingered on*, as nginx's lingering close does: up to ``LINGER_BYTES`` more are read and thrown
away, for at most ``LINGER_S``, before the connection closes. A client that sends its whole
body before reading (Python's ``http.client``, many SDKs) is still sending when the 413 is
written; closing a socket with unread input makes the kernel answer with a reset, and that
client would see a broken pipe instead of the 413 that explains it.

A module of its own rather than part of ``codec``: the codec decides what a request means and
works on flask's request; this works on the raw WSGI environ and gunicorn's socket, after the
response is decided, and exists only for a flaw of one server. It goes when that flaw does.
"""

from __future__ import annotations

import contextlib
import socket
import time
from typing import Any

from .budget import read_expired

#: A client that stalls mid-body cannot hold an HTTP thread longer than this per read.
DRAIN_TIMEOUT_S = 5.0
#: After answering an over-limit body: at most this much more is read and discarded...
LINGER_BYTES = 64 * 1024 * 1024
#: ...for at most this long, then the read side is shut.
LINGER_S = 10.0


class FinishBody:
    """Read what is left of every request body before the response goes out.

    At most ``budget`` bytes, with at most ``DRAIN_TIMEOUT_S`` per read; a body beyond that or a
    stalled client gets the read side of its socket shut, on which gunicorn sends the response
    and closes. Outside gunicorn (flask's test client) there is no socket and nothing to do.
    """

    def __init__(self, app: Any, budget: int) -> None:
        self.app = app
        self.budget = budget

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        try:
            body = self.app(environ, start_response)
        except BaseException:
            self.finish(environ)
            raise
        if self._over_budget(environ) and environ.get("gunicorn.socket") is not None:
            return _Lingering(body, environ)  # answer first, then read what the client sends
        self.finish(environ)
        return body

    def _over_budget(self, environ: dict[str, Any]) -> bool:
        try:
            return int(environ.get("CONTENT_LENGTH") or 0) > self.budget
        except ValueError:
            return False

    def finish(self, environ: dict[str, Any]) -> None:
        sock = environ.get("gunicorn.socket")
        stream = environ.get("wsgi.input")
        if sock is None or stream is None:
            return
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > self.budget or read_expired():  # too big, or it stopped coming
            self._stop_reading(sock)
            return
        try:
            sock.settimeout(DRAIN_TIMEOUT_S)
            left = self.budget
            while left > 0:
                data = stream.read(min(1 << 16, left))
                if not data:
                    return  # the whole body is read: the connection stays reusable
                left -= len(data)
            self._stop_reading(sock)
        except Exception:  # timeout, reset, a broken chunk: this connection is done
            self._stop_reading(sock)
        finally:
            with contextlib.suppress(OSError):
                sock.settimeout(None)

    @staticmethod
    def _stop_reading(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RD)


class _Lingering:
    """The response, with a ``close`` that gunicorn calls once it is written: linger, then stop."""

    def __init__(self, body: Any, environ: dict[str, Any]) -> None:
        self.body = body
        self.environ = environ

    def __iter__(self) -> Any:
        return iter(self.body)

    def close(self) -> None:
        try:
            if hasattr(self.body, "close"):
                self.body.close()
        finally:
            linger(self.environ["gunicorn.socket"], self.environ["wsgi.input"])


def linger(sock: socket.socket, stream: Any) -> None:
    """Read and discard up to ``LINGER_BYTES`` for up to ``LINGER_S``, then shut the read side."""
    deadline = time.monotonic() + LINGER_S
    left = LINGER_BYTES
    try:
        while left > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            sock.settimeout(min(remaining, DRAIN_TIMEOUT_S))
            data = stream.read(min(1 << 16, left))
            if not data:
                return  # the client sent it all: the close that follows is a clean one
            left -= len(data)
    except Exception:  # timeout, reset: this connection is done either way
        pass
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(None)
    FinishBody._stop_reading(sock)
