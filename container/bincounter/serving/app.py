"""The flask app: SageMaker's ``/ping``, ``/invocations`` and ``/execution-parameters``.

An application factory with no module-level state: gunicorn calls ``create_app()`` once per
worker process, after the fork, so each worker loads and warms up its own model before it
accepts a connection. That is what makes ``/ping`` mean "ready": until the app exists there is
nobody to answer, and once it exists the model has run a forward pass. A model that cannot load
makes the worker exit with ``APP_LOAD_ERROR``, on which gunicorn stops the whole server: a
container that exits with one clear log line, not one that answers 500 forever.

Every client mistake is a 4xx with a JSON body ``{"error", "message", "request_id"}`` and a log
line carrying the same request id; a bug is a 500 whose body says only where to look (the log
has the traceback, the response never does).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import re
import socket
import uuid
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from ..errors import ModelLoadError
from ..imaging import ImageError
from .config import ServingConfig
from .predictor import Batcher, Predictor, probabilities_to_prediction

log = logging.getLogger("bincounter.serving")

#: Single-photo content types; the real format is sniffed from the bytes (JPEG or PNG).
IMAGE_TYPES = ("image/jpeg", "image/png", "application/x-image")
JSON_TYPE = "application/json"
SUPPORTED_TYPES = (*IMAGE_TYPES, JSON_TYPE)
#: Exit status gunicorn treats as "the app cannot load": it stops the arbiter, not just the worker.
APP_LOAD_ERROR = 4

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
#: A client that stalls mid-body cannot hold an HTTP thread longer than this per read.
DRAIN_TIMEOUT_S = 5.0


class ClientError(Exception):
    """A request we refuse, with the HTTP status and a message naming the problem."""

    def __init__(self, status: int, error: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.extra = extra


def _json_response(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload), status=status, mimetype=JSON_TYPE)


def _error_response(status: int, error: str, message: str, **extra: Any) -> Response:
    request_id = getattr(g, "request_id", None)
    level = logging.ERROR if status >= 500 else logging.WARNING
    log.log(
        level, "request_id=%s status=%d error=%s message=%s", request_id, status, error, message
    )
    response = _json_response(
        {"error": error, "message": message, "request_id": request_id, **extra}, status
    )
    if status == 413:
        # The rest of an oversized body is never read: close instead of draining it.
        response.headers["Connection"] = "close"
    return response


def parse_instances(body: bytes, max_instances: int) -> list[bytes]:
    """``{"instances": [{"b64": "..."}, ...]}`` -> the photos' bytes, or a 400 naming the fault."""
    if not body:
        raise ClientError(400, "empty_body", "empty body: expected a JSON object with 'instances'")
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ClientError(400, "malformed_json", f"body is not valid JSON: {exc}") from None
    shape = 'expected {"instances": [{"b64": "<base64 JPEG or PNG>"}, ...]}'
    if not isinstance(document, dict) or not isinstance(document.get("instances"), list):
        raise ClientError(400, "bad_json_schema", f"{shape}; got no 'instances' list")
    instances = document["instances"]
    if not instances:
        raise ClientError(400, "bad_json_schema", f"{shape}; 'instances' is empty")
    if len(instances) > max_instances:
        raise ClientError(
            400,
            "too_many_instances",
            f"{len(instances)} instances in one request; the limit is {max_instances}",
        )
    photos = []
    for i, instance in enumerate(instances):
        if not isinstance(instance, dict) or not isinstance(instance.get("b64"), str):
            raise ClientError(
                400, "bad_json_schema", f"instances[{i}] must be an object with a string 'b64'"
            )
        text = "".join(instance["b64"].split())  # tolerate MIME line breaks, nothing else
        try:
            photos.append(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise ClientError(
                400, "malformed_base64", f"instances[{i}].b64 is not valid base64: {exc}"
            ) from None
    return photos


def read_body(limit: int) -> bytes:
    """The request body, or 413 once it is known to exceed ``limit`` bytes.

    With ``Content-Length`` that is decided before reading. A chunked body has no length, and
    werkzeug would silently cut it at the limit (a truncated photo, reported as corrupt), so it
    is read here from the server's stream (gunicorn de-chunks it) up to one byte past the limit.
    """
    length = request.content_length
    if length is not None:
        if length > limit:
            raise RequestEntityTooLarge()
        return request.get_data(cache=False)
    stream = request.environ["wsgi.input"]
    parts: list[bytes] = []
    size = 0
    while size <= limit:
        part = stream.read(min(1 << 20, limit + 1 - size))
        if not part:
            break
        parts.append(part)
        size += len(part)
    if size > limit:
        raise RequestEntityTooLarge()
    return b"".join(parts)


class FinishBody:
    """WSGI middleware: read what is left of every request body before the response goes out.

    gunicorn's gthread worker keeps a connection alive even when the app answered without
    reading the body (a 415, 406, 413 or 400 decided before the read). The unread bytes make
    the socket readable, so a worker thread takes it, skips them and then blocks waiting for a
    next request the client may never send (benoitc/gunicorn#3301). Each such connection holds
    one of the worker's HTTP threads; a handful of them and ``/ping`` hangs, and SIGTERM waits
    out the whole graceful timeout. So the rest of the body is read here, at most ``budget``
    bytes with at most ``DRAIN_TIMEOUT_S`` per read; a body beyond that or a stalled client
    gets the read side of its socket shut, on which gunicorn sends the response and closes.
    Outside gunicorn (flask's test client) there is no socket and nothing to do.
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


def create_app(
    config: ServingConfig | None = None,
    predictor: Predictor | None = None,
) -> Flask:
    """Build the app; loads the model (from ``config.model_dir``) unless ``predictor`` is given.

    Under gunicorn a model that fails to load ends the worker with ``APP_LOAD_ERROR``, which
    stops the server; tests and tools may pass their own ``predictor``.
    """
    config = config or ServingConfig.from_environment()
    if predictor is None:

        def load() -> Predictor:
            return Predictor.load(
                config.model_dir,
                engine=config.engine,
                compute_threads=config.compute_threads,
                warmup_batch_sizes=sorted({1, 2, 4, config.max_batch_size}),
            )

        try:
            # Loaded and warmed up on the batcher's thread: the only thread that runs torch.
            batcher = Batcher(
                max_batch_size=config.max_batch_size, wait_ms=config.batch_wait_ms, load=load
            )
        except ModelLoadError as exc:
            log.critical("cannot serve: model could not be loaded: %s", exc.reason)
            raise SystemExit(APP_LOAD_ERROR) from None
        predictor = batcher.predictor
    else:
        batcher = Batcher(predictor, config.max_batch_size, config.batch_wait_ms)
    version = predictor.info.version

    app = Flask("bincounter.serving")
    app.config["MAX_CONTENT_LENGTH"] = config.max_payload_bytes
    app.wsgi_app = FinishBody(app.wsgi_app, config.max_payload_bytes + (1 << 20))
    app.extensions["bincounter"] = {"config": config, "predictor": predictor, "batcher": batcher}

    @app.before_request
    def assign_request_id() -> None:
        given = request.headers.get("X-Request-Id", "")
        g.request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex

    @app.after_request
    def echo_request_id(response: Response) -> Response:
        response.headers["X-Request-Id"] = g.get("request_id", "")
        return response

    @app.errorhandler(ClientError)
    def client_error(exc: ClientError) -> Response:
        return _error_response(exc.status, exc.error, exc.message, **exc.extra)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        if isinstance(exc, RequestEntityTooLarge):
            return _error_response(
                413,
                "payload_too_large",
                f"body is larger than the {config.max_payload_mb:g} MB limit "
                "(SAGEMAKER_MAX_PAYLOAD_IN_MB)",
            )
        name = (exc.name or "error").lower().replace(" ", "_")
        return _error_response(exc.code or 500, name, exc.description or name)

    @app.errorhandler(Exception)
    def internal_error(exc: Exception) -> Response:
        log.exception("request_id=%s unexpected error", getattr(g, "request_id", None))
        return _error_response(
            500, "internal_error", "internal server error; the server log has the request id"
        )

    @app.get("/ping")
    def ping() -> Response:
        # The app exists only after the model loaded and ran warm-up batches: ready.
        return Response(status=200)

    @app.get("/execution-parameters")
    def execution_parameters() -> Response:
        return _json_response(
            {
                "MaxConcurrentTransforms": config.max_concurrent_transforms,
                # One photo per request: JPEG/PNG records cannot be concatenated.
                "BatchStrategy": "SINGLE_RECORD",
                "MaxPayloadInMB": max(1, int(config.max_payload_mb)),
            }
        )

    def decode(photo: bytes, where: str) -> Any:
        try:
            return predictor.pixels(photo)
        except ImageError as exc:
            raise ClientError(400, "bad_image", f"{where}{exc.reason}") from None
        except Exception as exc:  # a decoder failing on hostile bytes is still bad input
            log.warning(
                "request_id=%s decoder raised %s", g.request_id, type(exc).__name__, exc_info=True
            )
            raise ClientError(
                400, "bad_image", f"{where}image could not be decoded ({type(exc).__name__})"
            ) from None

    @app.post("/invocations")
    def invocations() -> Response:
        content_type = request.mimetype
        if content_type not in SUPPORTED_TYPES:
            raise ClientError(
                415,
                "unsupported_content_type",
                f"Content-Type {content_type or '(none)'!r} is not supported; "
                f"use one of {', '.join(SUPPORTED_TYPES)}",
                supported=list(SUPPORTED_TYPES),
            )
        if request.headers.get("Accept", "").strip() and not request.accept_mimetypes.best_match(
            [JSON_TYPE]
        ):
            raise ClientError(
                406,
                "not_acceptable",
                f"Accept {request.headers['Accept']!r} cannot be served; responses are {JSON_TYPE}",
                supported=[JSON_TYPE],
            )
        # Tell the batcher an image is on its way, so a batch being formed waits for it.
        batcher.expect(1)
        try:
            body = read_body(config.max_payload_bytes)
            if content_type == JSON_TYPE:
                photos = parse_instances(body, config.max_instances)
                tensors = [decode(p, f"instances[{i}]: ") for i, p in enumerate(photos)]
            else:
                tensors = [decode(body, "")]
        except BaseException:
            batcher.expect(-1)
            raise
        try:
            probabilities = batcher.predict(tensors, timeout=config.timeout, fulfils=1)
        except FutureTimeout:
            raise ClientError(
                503, "busy", f"no answer within {config.timeout} s; retry later"
            ) from None
        predictions = [probabilities_to_prediction(p, version) for p in probabilities]
        if content_type == JSON_TYPE:
            return _json_response({"predictions": predictions})
        return _json_response(predictions[0])

    return app
