"""gunicorn's gthread worker, but a request reaches an HTTP thread only once it has arrived.

gthread hands a connection to one of its few threads as soon as a byte is readable; the
thread then blocks until the headers and the body are in. A client that sends its headers and
half a body and stops holds that thread; eight of them and ``/ping`` waits forever (issue 21).
``IntakeWorker`` reads in the worker's event loop instead, without blocking: what arrives is
kept with the connection until the headers and the whole ``Content-Length`` body are there,
and only then does a thread take it, with those bytes handed to gunicorn's parser first. A
stalled client holds a few kB of buffer and a file descriptor, never a thread, and is closed
once it has sent nothing for the read timeout (``BINCOUNTER_READ_TIMEOUT``).

Some requests go to a thread before they are complete, where ``budget.TimedSocket`` bounds
each read instead: a chunked body (no length to wait for), a ``Content-Length`` over the
payload limit (the app answers 413 without reading it), headers past gunicorn's limits, and
any request once the bytes buffered in the loop reach ``http_threads`` x the payload limit
(the memory those threads would hold anyway).

The loop is gunicorn's own (pinned in ``requirements``); this class steps in where it calls
``on_client_socket_readable``, ``enqueue_req``, ``handle`` and ``murder_keepalived``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import re
import selectors
import sys
import time
from collections import deque
from functools import partial
from typing import Any

from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers.gthread import TConn, ThreadWorker

from . import budget, parameters

#: Headers longer than this go to gunicorn's parser as they are, which refuses them.
MAX_HEAD_BYTES = 64 * 1024
_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)[ \t]*(?:\r\n|$)", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:", re.IGNORECASE)


def arrived(data: bytes | bytearray, limit: int) -> bool:
    """Whether ``data`` holds a whole request, or one a thread must take as it is.

    Whole: the headers and ``Content-Length`` bytes of body. Taken as it is: a chunked body,
    a length over ``limit`` (refused unread), or headers past ``MAX_HEAD_BYTES``.
    """
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return len(data) > MAX_HEAD_BYTES
    head = bytes(data[:end])
    if _CHUNKED.search(head):
        return True
    match = _LENGTH.search(head)
    length = int(match.group(1)) if match else 0
    return length > limit or len(data) >= end + 4 + length


class IntakeUnreader(SocketUnreader):
    """gunicorn's socket unreader, serving first the bytes the event loop already read.

    Why not gunicorn's ``unread``: it puts the bytes in a buffer that every ``read`` copies
    whole, and gunicorn's body reader asks for 1 kB at a time, so a body handed over that way
    was copied once per kB: quadratic (a 23.5 MB JSON batch took 114 s of memcpy, a 6 MB photo
    several seconds, issue 24). Here the loop's bytes come out ``max_chunk`` at a time, as they
    would from the socket, and each buffer is let go once served.
    """

    def __init__(self, sock: Any, max_chunk: int = 8192) -> None:
        super().__init__(sock, max_chunk)
        self._pending: deque[memoryview] = deque()

    def feed(self, data: bytes | bytearray) -> None:
        """Serve ``data`` before anything still to be read from the socket (no copy)."""
        if data:
            self._pending.append(memoryview(data))

    def chunk(self) -> bytes:
        while self._pending:
            view = self._pending[0]
            if not view:
                self._pending.popleft()
                continue
            piece = bytes(view[: self.mxchunk])
            self._pending[0] = view[self.mxchunk :]
            return piece
        return super().chunk()


class IntakeWorker(ThreadWorker):
    """gthread whose threads take only requests that have arrived (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: connection -> (bytes so far, monotonic time of the last byte, or of its accept)
        self.intake: dict[Any, tuple[bytearray, float]] = {}
        self.intake_bytes = 0
        # gunicorn stops polling altogether once it holds ``worker_connections``: then the
        # connections held in the loop (arriving requests, kept-alive ones) are never read nor
        # timed out, and the loop spins on an empty set of futures until a thread finishes
        # (1,000 stalled clients, or a burst of connects during a drain, froze the worker).
        # Here the loop always polls; at the limit only the listeners are paused.
        self.connection_limit = self.worker_connections
        self.worker_connections = sys.maxsize
        self.listening: dict[Any, Any] | None = None  # listener -> its address, while paused

    def accept(self, server: Any, listener: Any) -> None:
        """gunicorn's, with the connection in the intake from the start (so one that never
        sends a byte is closed after the read timeout, like one that stops mid-request), and
        the listeners paused at ``connection_limit``."""
        try:
            sock, client = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        conn = TConn(self.cfg, sock, client, server)
        if self._serving_config() is not None:
            self.intake[conn] = (bytearray(), time.monotonic())
        self.nr_conns += 1
        with self._lock:
            self.poller.register(
                conn.sock, selectors.EVENT_READ, partial(self.on_client_socket_readable, conn)
            )
        if self.nr_conns >= self.connection_limit:
            self.pause_listeners()

    def pause_listeners(self) -> None:
        """Stop accepting (the kernel queues new connections) until ``resume_listeners``."""
        if self.listening is not None:
            return
        self.listening = {}
        with self._lock:
            for listener in self.sockets:
                self.listening[listener] = listener.getsockname()
                with contextlib.suppress(KeyError, ValueError):
                    self.poller.unregister(listener)

    def resume_listeners(self) -> None:
        if self.listening is None:
            return
        with self._lock:
            for listener, server in self.listening.items():
                if listener in self.sockets:
                    self.poller.register(
                        listener, selectors.EVENT_READ, partial(self.accept, server)
                    )
        self.listening = None

    def _serving_config(self) -> Any:
        app = getattr(self, "wsgi", None)
        return getattr(app, "extensions", {}).get("bincounter", {}).get("config")

    def on_client_socket_readable(self, conn: Any, client: Any) -> None:
        """gunicorn's, but the connection stays in the loop until its request has arrived."""
        config = self._serving_config()
        if config is None:  # no app yet: gunicorn's own way
            super().on_client_socket_readable(conn, client)
            return
        if conn.initialized and conn not in self.intake:  # a kept-alive one's next request
            with self._lock:
                try:
                    self._keep.remove(conn)
                except ValueError:
                    return  # closed as idle meanwhile (gunicorn's check)
        if not self._take(conn, config):
            return  # not all there yet: stays registered, waits for more
        with self._lock:
            self.poller.unregister(client)
        self.enqueue_req(conn)

    def _take(self, conn: Any, config: Any) -> bool:
        """Read what is there; True once a thread should take the connection."""
        buffered, last = self.intake.pop(conn, (bytearray(), time.monotonic()))
        try:
            data = conn.sock.recv(1 << 16)
        except BlockingIOError:  # a spurious wake-up: nothing new, the clock runs on
            self.intake[conn] = (buffered, last)
            return False
        except OSError:
            data = b""
        self.intake_bytes -= len(buffered)
        if not data:  # end of stream: the thread finds it and closes quietly
            conn.intake_data = buffered  # no copy: the parser's unreader serves it
            return True
        buffered += data
        if (
            arrived(buffered, config.max_payload_bytes)
            or self.intake_bytes + len(buffered) > config.http_threads * config.max_payload_bytes
        ):
            conn.intake_data = buffered  # no copy: the parser's unreader serves it
            return True
        self.intake[conn] = (buffered, time.monotonic())
        self.intake_bytes += len(buffered)
        return False

    def enqueue_req(self, conn: Any) -> None:
        """gunicorn's, with the bytes read in the loop put back in front of the parser."""
        conn.init()
        data = getattr(conn, "intake_data", b"")
        if data:
            parser = conn.parser
            if not isinstance(parser.unreader, IntakeUnreader):  # a new connection's parser
                leftover = parser.unreader.buf.getvalue()  # nothing read yet: always empty
                parser.unreader = IntakeUnreader(conn.sock)
                parser.unreader.unread(leftover)
            parser.unreader.feed(data)
            conn.intake_data = b""
        future = self.tpool.submit(self.handle, conn)
        self._wrap_future(future, conn)

    def handle(self, conn: Any) -> Any:
        """gunicorn's, with every read of the connection bounded (``budget.TimedSocket``)."""
        config = self._serving_config()
        if config is not None:
            budget.TimedSocket.adopt(conn.sock)
            budget.bound_reads(config.read_timeout, budget.Deadline(config.read_timeout))
        return super().handle(conn)

    def murder_keepalived(self) -> None:
        """gunicorn's once-per-turn step, plus: close connections silent for the read timeout
        (before their first byte or mid-request), and accept again below ``connection_limit``."""
        super().murder_keepalived()
        if self.listening is not None and self.nr_conns < self.connection_limit:
            self.resume_listeners()
        config = self._serving_config()
        if config is None:
            return
        cutoff = time.monotonic() - config.read_timeout
        for conn, (buffered, last) in list(self.intake.items()):
            if last < cutoff:
                if b"\r\n\r\n" in buffered:  # its headers were in: say why it is closed
                    _answer_408(conn.sock, config.read_timeout)
                self.close_waiting(conn)

    def close_waiting(self, conn: Any) -> None:
        """Close a connection waiting in the loop (not in a thread): arriving, silent or kept
        alive."""
        self.forget_intake(conn)
        with self._lock:
            try:
                self.poller.unregister(conn.sock)
            except (KeyError, ValueError, OSError) as exc:
                if getattr(exc, "errno", None) not in (None, errno.EBADF):
                    raise
            if conn in self._keep:
                self._keep.remove(conn)
        self.nr_conns -= 1
        conn.close()

    def forget_intake(self, conn: Any) -> None:
        """Drop what was buffered for ``conn`` (it is being closed)."""
        buffered, _ = self.intake.pop(conn, (b"", 0.0))
        self.intake_bytes -= len(buffered)


def _answer_408(sock: Any, read_timeout: float) -> None:
    """Best effort, never blocking: the JSON 408 for a body that stopped arriving."""
    body = json.dumps(
        {
            "error": "body_timeout",
            "message": f"the request body stopped arriving for {read_timeout:g} s "
            f"({parameters.READ_TIMEOUT})",
            "request_id": None,
        }
    ).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with contextlib.suppress(OSError):
        sock.send(head + body)
