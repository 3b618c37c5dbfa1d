"""gunicorn settings, in gunicorn's config-file style (``-c python:bincounter.serving.gunicorn_conf``).

Values come from ``ServingConfig`` (the environment), so this file only says how they map onto
gunicorn and why:

* ``gthread`` workers: a worker's HTTP threads read and decode requests concurrently and wait on
  the worker's batching thread, which is the only one that computes. A sync worker would serve
  one request at a time and could never batch.
* ``workers`` defaults to 1 and torch threads per worker to cores / workers, so the computing
  threads never outnumber the cores (more workers only duplicate the model in memory and
  fight over the same cores).
* ``graceful_timeout`` 20 s: on SIGTERM gunicorn stops accepting, lets in-flight requests
  finish and exits, well inside the 30 s SageMaker waits before SIGKILL.
* The model is loaded in each worker after the fork (no ``preload_app``): OpenMP thread pools do
  not survive ``fork``, and a worker that cannot load the model ends the whole server.
"""

from __future__ import annotations

import logging
import os

from bincounter import logs
from bincounter.serving.config import ServingConfig

_config = ServingConfig.from_environment()

bind = [_config.bind]
workers = _config.workers
worker_class = "gthread"
threads = _config.http_threads
timeout = _config.timeout
graceful_timeout = _config.graceful_timeout
keepalive = _config.keepalive
preload_app = False
# The heartbeat file lives in memory: a slow overlay /tmp can stall it into false timeouts.
worker_tmp_dir = (
    "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
)
errorlog = "-"
loglevel = _config.log_level
accesslog = "-" if _config.access_log else None
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms rid=%({x-request-id}o)s'
proc_name = "bincounter-serve"


def on_starting(server) -> None:
    logs.configure(_config.log_level)
    logging.getLogger("bincounter.serving").info(
        "serving %s on %s: %d worker(s) x %d torch thread(s), %d HTTP threads each, engine %s, "
        "max batch %d, payload limit %g MB",
        _config.model_dir,
        _config.bind,
        _config.workers,
        _config.compute_threads,
        _config.http_threads,
        _config.engine,
        _config.max_batch_size,
        _config.max_payload_mb,
    )


def post_fork(server, worker) -> None:
    logs.configure(_config.log_level)
