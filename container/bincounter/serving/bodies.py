"""WSGI middleware that finishes reading every request body, so refusals cannot pin threads.

gunicorn's gthread worker keeps a connection alive even when the app answered without reading
the body (a 415, 406, 413 or 400 decided before the read). The unread bytes make the socket
readable, so a worker thread takes it, skips them and then blocks waiting for a next request
the client may never send (benoitc/gunicorn#3301). Each such connection holds one of the
worker's HTTP threads; a handful of them and ``/ping`` hangs, and SIGTERM waits out the whole
graceful timeout.

A module of its own rather than part of ``codec``: the codec decides what a request means and
works on flask's request; this works on the raw WSGI environ and gunicorn's socket, after the
response is decided, and exists only for a flaw of one server. It goes when that flaw does.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

#: A client that stalls mid-body cannot hold an HTTP thread longer than this per read.
DRAIN_TIMEOUT_S = 5.0


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
            return self.app(environ, start_response)
        finally:
            self.finish(environ)

    def finish(self, environ: dict[str, Any]) -> None:
        sock = environ.get("gunicorn.socket")
        stream = environ.get("wsgi.input")
        if sock is None or stream is None:
            return
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > self.budget:
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
