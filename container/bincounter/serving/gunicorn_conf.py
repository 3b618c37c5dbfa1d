"""gunicorn settings derived from ``ServingConfig``, and why they are what they are.

``server`` hands these to gunicorn as the application's defaults; command-line options and
``GUNICORN_CMD_ARGS`` still override them, as gunicorn documents.

* ``gthread`` workers: a worker's HTTP threads read and decode requests concurrently and wait on
  the worker's batching thread, which is the only one that computes. A sync worker would serve
  one request at a time and could never batch.
* ``workers`` defaults to one per core on a CPU (one on a GPU) and compute threads per worker to
  cores / workers, so the computing threads never outnumber the cores. Each worker batches its
  own requests; one worker on all cores lost half its throughput at concurrency 4 to its idle
  compute threads spinning on the cores its HTTP threads decode on.
* ``graceful_timeout`` 20 s: on SIGTERM gunicorn stops accepting, lets in-flight requests
  finish and exits, well inside the 30 s SageMaker waits before SIGKILL. The worker is
  ``draining.DrainingWorker``, gthread with one change: a connection accepted before SIGTERM
  is answered even if its request had not begun to arrive (gthread closes it unanswered).
* The model is loaded in each worker after the fork (no ``preload_app``): OpenMP thread pools do
  not survive ``fork``, and a worker that cannot load the model ends the whole server. The
  config object the arbiter read is inherited by the forked workers, so the environment is read
  once per server.
* A worker that exits closes its app's batcher (``worker_exit``): queued requests get their
  answers and the batcher thread ends before the process does.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from bincounter import logs
from bincounter.serving.config import ServingConfig

log = logging.getLogger(__name__)

ACCESS_LOG_FORMAT = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms rid=%({x-request-id}o)s'


def settings(config: ServingConfig) -> dict[str, Any]:
    """gunicorn setting name -> value, hooks included."""

    def on_starting(server: Any) -> None:
        logs.configure(config.log_level)
        log.info(
            "serving %s on %s: %d worker(s) x %d compute thread(s), %d HTTP threads each, "
            "engine %s, precision %s, max batch %d, payload limit %g MB",
            config.model_dir,
            config.bind,
            config.workers,
            config.compute_threads,
            config.http_threads,
            config.engine,
            config.precision,
            config.max_batch_size,
            config.max_payload_mb,
        )

    def post_fork(server: Any, worker: Any) -> None:
        logs.configure(config.log_level)

    def worker_exit(server: Any, worker: Any) -> None:
        app = getattr(worker, "wsgi", None)  # absent when the app failed to load
        if app is not None:
            from bincounter.serving.app import close_app

            close_app(app)
            log.info("worker %d: batcher stopped", worker.pid)

    return {
        "bind": [config.bind],
        "workers": config.workers,
        "worker_class": "bincounter.serving.draining.DrainingWorker",
        "threads": config.http_threads,
        "timeout": config.timeout,
        "graceful_timeout": config.graceful_timeout,
        "keepalive": config.keepalive,
        "preload_app": False,
        # The heartbeat file lives in memory: a slow overlay /tmp can stall it into false
        # timeouts.
        "worker_tmp_dir": (
            "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        ),
        "errorlog": "-",
        "loglevel": config.log_level,
        "accesslog": "-" if config.access_log else None,
        "access_log_format": ACCESS_LOG_FORMAT,
        "proc_name": "bincounter-serve",
        "on_starting": on_starting,
        "post_fork": post_fork,
        "worker_exit": worker_exit,
    }
