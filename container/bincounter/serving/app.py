"""The flask app: SageMaker's ``/ping``, ``/invocations`` and ``/execution-parameters``.

An application factory with no module-level state: gunicorn builds the app once per worker
process, after the fork, so each worker loads and warms up its own model before it accepts a
connection. That is what makes ``/ping`` mean "ready": until the app exists there is nobody to
answer, and once it exists the model has run a forward pass. A model that cannot load makes the
worker exit with ``APP_LOAD_ERROR``, on which gunicorn stops the whole server: a container that
exits with one clear log line, not one that answers 500 forever.

Every client mistake is a 4xx (``codec``); a bug is a 500 whose body says only where to look
(the log has the traceback, the response never does).
"""

from __future__ import annotations

import logging
import re
import uuid
from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np
from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from ..errors import InvocationError, ModelLoadError
from . import budget, codec, expectations
from .batcher import Batcher
from .bodies import FinishBody
from .budget import Deadline, DecodeSlots
from .config import ServingConfig
from .predictor import Predictor

log = logging.getLogger(__name__)

#: Exit status gunicorn treats as "the app cannot load": it stops the arbiter, not just the worker.
APP_LOAD_ERROR = 4

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def start_batcher(config: ServingConfig, predictor: Predictor | None = None) -> Batcher:
    """The worker's batcher, which loads and warms up the model on its own thread.

    The batcher thread is the only one that runs torch, so the model is loaded there too; a
    given ``predictor`` (tests, tools) is used as it is.
    """
    if predictor is not None:
        return Batcher(lambda: predictor, config.max_batch_size, config.batch_wait_ms)

    def load() -> Predictor:
        return Predictor.load(
            config.model_dir,
            engine=config.engine,
            precision=config.precision,
            tta=config.tta,
            compute_threads=config.compute_threads,
            warmup_batch_sizes=sorted({1, 2, 4, config.max_batch_size}),
        )

    try:
        return Batcher(load, config.max_batch_size, config.batch_wait_ms)
    except ModelLoadError as exc:
        log.critical("cannot serve: model could not be loaded: %s", exc.reason)
        raise SystemExit(APP_LOAD_ERROR) from None


def create_app(
    config: ServingConfig | None = None,
    predictor: Predictor | None = None,
) -> Flask:
    """Build the app; loads the model (from ``config.model_dir``) unless ``predictor`` is given.

    The server passes the ``config`` its arbiter read; without one it is read from the
    environment. Under gunicorn a model that fails to load ends the worker with
    ``APP_LOAD_ERROR``, which stops the server. ``close_app`` stops the batcher.
    """
    config = config or ServingConfig.from_environment()
    batcher = start_batcher(config, predictor)
    info = batcher.model.info

    app = Flask("bincounter.serving")
    app.config["MAX_CONTENT_LENGTH"] = config.max_payload_bytes
    app.wsgi_app = FinishBody(app.wsgi_app, config.max_payload_bytes + (1 << 20))
    app.wsgi_app = budget.StartClock(app.wsgi_app, config.timeout, config.read_timeout)
    slots = DecodeSlots(config.decode_threads)
    app.extensions["bincounter"] = {"config": config, "info": info, "batcher": batcher}

    @app.before_request
    def assign_request_id() -> None:
        given = request.headers.get("X-Request-Id", "")
        g.request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex

    @app.after_request
    def echo_request_id(response: Response) -> Response:
        response.headers["X-Request-Id"] = g.get("request_id", "")
        return response

    @app.errorhandler(InvocationError)
    def client_error(exc: InvocationError) -> Response:
        return codec.error_response(exc.status, exc.error, exc.message, **exc.extra)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        if isinstance(exc, RequestEntityTooLarge):
            return codec.error_response(
                413,
                "payload_too_large",
                f"body is larger than the {config.max_payload_mb:g} MB limit "
                "(SAGEMAKER_MAX_PAYLOAD_IN_MB)",
            )
        name = (exc.name or "error").lower().replace(" ", "_")
        return codec.error_response(exc.code or 500, name, exc.description or name)

    @app.errorhandler(Exception)
    def internal_error(exc: Exception) -> Response:
        log.exception("request_id=%s unexpected error", g.get("request_id"))
        return codec.error_response(
            500, "internal_error", "internal server error; the server log has the request id"
        )

    @app.get("/ping")
    def ping() -> Response:
        # The app exists only after the model loaded and ran warm-up batches: ready.
        return Response(status=200)

    @app.get("/execution-parameters")
    def execution_parameters() -> Response:
        return codec.json_response(
            {
                "MaxConcurrentTransforms": config.max_concurrent_transforms,
                # One photo per request: JPEG/PNG records cannot be concatenated.
                "BatchStrategy": "SINGLE_RECORD",
                "MaxPayloadInMB": max(1, int(config.max_payload_mb)),
            }
        )

    @app.post("/invocations")
    def invocations() -> Response:
        deadline = request.environ.get(budget.DEADLINE_KEY) or Deadline(config.timeout)
        content_type = codec.negotiate()
        batch = content_type == codec.JSON_TYPE
        options = expectations.request_options(request.headers, info.card)
        photos = codec.read_photos(
            content_type, config.max_payload_bytes, config.max_instances, deadline
        )
        per_photo = expectations.instance_options(
            g.get("instance_fields"), info.card, options, len(photos)
        )
        size, answers = info.image_size, []
        # A JSON batch goes through in chunks of the batcher's batch size: at most one chunk's
        # pixels are held at a time, so memory follows the batcher, not the body (async bodies
        # of hundreds of photos). Each chunk's photos bytes are dropped once decoded.
        for start in range(0, len(photos), config.max_batch_size):
            chunk = range(start, min(start + config.max_batch_size, len(photos)))

            def decode(chunk: range = chunk) -> list:
                pixels = codec.decode_photos(
                    [photos[i] for i in chunk],
                    size,
                    batch,
                    config.max_image_pixels,
                    slots,
                    deadline,
                    first=chunk.start,
                )
                for i in chunk:
                    photos[i] = b""
                return pixels

            try:
                answers.append(batcher.predict(decode, timeout=max(0.0, deadline.remaining())))
            except FutureTimeout:
                raise deadline.exceeded("waiting for the model") from None
        probabilities = np.concatenate(answers)
        return expectations.answer(probabilities, per_photo, info.card, info.version, batch)

    return app


def close_app(app: Flask) -> None:
    """Stop the app's batcher: queued requests are answered, then its thread ends."""
    app.extensions["bincounter"]["batcher"].close()
