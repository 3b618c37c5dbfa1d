"""gunicorn's gthread worker, with a graceful stop that answers every connection it accepted.

On SIGTERM gunicorn's ``ThreadWorker`` (23.0) leaves its loop at once and closes its poller and
its copy of the listening socket. Requests already handed to a thread are answered, but two
kinds of connection are not: one the worker has accepted whose request's first bytes have not
been seen yet (it waits in the poller), and one the kernel has completed for a client but the
worker has not yet accepted (it waits in the listener's backlog). Both are closed unanswered,
and their clients, mid-upload or about to send, read "Remote end closed connection without
response" or a reset; on a slow machine, where a client takes a while between connecting and
sending, that is what SIGTERM did to one request in eight (issue 20, item 10).

``DrainingWorker`` stops differently. On SIGTERM it takes every connection the kernel has
queued, then closes its listener, so a client that connects later is refused (a clean
``ECONNREFUSED`` it can retry elsewhere; only one that connects in the microseconds between the
last ``accept`` and the ``close`` is reset). It keeps its loop running until each connection it
holds has been answered, with ``Connection: close``; an idle kept-alive connection is closed
unless its next request has arrived, and one that has sent nothing within ``SILENT_S`` is
closed. Then it leaves as gunicorn's does, all within gunicorn's ``graceful_timeout``.

The loop is gunicorn's own; this class steps in where it calls ``murder_keepalived`` once per
turn, so it follows gunicorn's internals (pinned in ``requirements``).
"""

from __future__ import annotations

import logging
import select
import time
from typing import Any

from .intake import IntakeWorker

log = logging.getLogger(__name__)

#: On a graceful stop, how long a connection that has not sent a byte is waited for.
SILENT_S = 5.0


class DrainingWorker(IntakeWorker):
    """gthread (``IntakeWorker``), but SIGTERM drains the connections it holds instead of dropping them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.draining_since: float | None = None

    def handle_exit(self, sig: int, frame: Any) -> None:
        """SIGTERM: start draining (gunicorn's own ends the loop at once)."""
        if self.draining_since is None:
            self.draining_since = time.monotonic()

    def murder_keepalived(self) -> None:
        """gunicorn's once-per-turn step, plus one step of the drain once SIGTERM has come."""
        super().murder_keepalived()
        if self.draining_since is not None:
            self._drain()

    def _drain(self) -> None:
        if self.sockets:
            self._stop_accepting()
        waiting = [key.data.args[0] for key in self.poller.get_map().values()]
        if time.monotonic() - self.draining_since > SILENT_S:
            for conn in waiting:  # connected, but no request came: nothing to answer
                self.close_waiting(conn)
            waiting = []
        if not waiting and all(f.done() for f in self.futures):
            self.alive = False  # gunicorn's loop ends; it waits for nothing more

    def _stop_accepting(self) -> None:
        """Accept what the kernel has queued, close the listeners, retire idle connections."""
        for listener in self.sockets:
            server = listener.getsockname()
            # Every queued connection, past ``connection_limit`` too: the loop polls them all.
            while select.select([listener], [], [], 0)[0]:
                self.accept(server, listener)  # another worker may win it: then not readable
        self.pause_listeners()
        for listener in self.sockets:
            listener.close()
        self.sockets = []
        self.listening = None
        # Every answer from now on closes its connection (gunicorn's handle_request forces
        # ``Connection: close`` once as many connections are kept alive as this allows).
        self.max_keepalived = 0
        with self._lock:
            for conn in self._keep:  # closed next turn unless their next request is readable
                conn.timeout = 0
        log.info(
            "worker %d: stopped accepting; answering %d open connection(s) before exit",
            self.pid,
            self.nr_conns,
        )
