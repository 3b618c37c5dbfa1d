"""The environment variables the model server reads: each name written once, here.

As sagemaker-inference-toolkit's ``parameters.py``: ``SAGEMAKER_*`` are what SageMaker sets on a
model or a transform job, ``BINCOUNTER_*`` our own knobs. Their defaults and allowed values are
the fields of ``config.ServingConfig``, which reads them; ``docs/serving.md``'s table of knobs is
tested against that class.
"""

from __future__ import annotations

BIND_TO_PORT = "SAGEMAKER_BIND_TO_PORT"
MODEL_SERVER_WORKERS = "SAGEMAKER_MODEL_SERVER_WORKERS"
MODEL_SERVER_TIMEOUT = "SAGEMAKER_MODEL_SERVER_TIMEOUT"
MAX_PAYLOAD_IN_MB = "SAGEMAKER_MAX_PAYLOAD_IN_MB"
#: The ``/opt/ml`` tree whose ``model/`` is served (``paths``), unless ``MODEL_DIR`` is set.
BASE_DIR = "SAGEMAKER_BASE_DIR"

MODEL_DIR = "BINCOUNTER_MODEL_DIR"
BIND_HOST = "BINCOUNTER_BIND_HOST"
HTTP_THREADS = "BINCOUNTER_HTTP_THREADS"
COMPUTE_THREADS = "BINCOUNTER_COMPUTE_THREADS"
GRACEFUL_TIMEOUT = "BINCOUNTER_GRACEFUL_TIMEOUT"
KEEPALIVE = "BINCOUNTER_KEEPALIVE"
MAX_BATCH_SIZE = "BINCOUNTER_MAX_BATCH_SIZE"
BATCH_WAIT_MS = "BINCOUNTER_BATCH_WAIT_MS"
MAX_INSTANCES = "BINCOUNTER_MAX_INSTANCES"
ENGINE = "BINCOUNTER_ENGINE"
PRECISION = "BINCOUNTER_PRECISION"
TTA = "BINCOUNTER_TTA"
ACCESS_LOG = "BINCOUNTER_ACCESS_LOG"
LOG_LEVEL = "BINCOUNTER_LOG_LEVEL"
