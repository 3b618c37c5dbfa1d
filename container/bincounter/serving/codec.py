"""What ``/invocations`` accepts and answers: request bodies in, JSON out, refusals as 4xx.

Everything that decides whether a request is well formed lives here, so the routes read as the
contract and every refusal is an ``InvocationError`` (``errors``) with a status, a stable ``error`` name and a
message that names the fault (the tests match on both). A photo's real format is sniffed from
its bytes, never trusted from ``Content-Type``. Decoding stops at ``uint8`` numpy pixels: this
code runs on HTTP threads, which must not run torch (see ``batcher``).

Every answer, good or bad, is JSON; an error body is ``{"error", "message", "request_id"}`` and
is logged with the same request id, so a client's report leads to its log line.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from flask import Response, g, request
from werkzeug.exceptions import RequestEntityTooLarge

from .. import CLASSES
from ..calibration import served as calibrated_answer
from ..errors import InvocationError
from ..imaging import MAX_PIXELS, ImageError, ImageTooLarge, load_image, preprocess_array
from . import budget, parameters
from .budget import Deadline, DecodeSlots

log = logging.getLogger(__name__)

#: Single-photo content types; the real format is sniffed from the bytes (JPEG or PNG).
IMAGE_TYPES = ("image/jpeg", "image/png", "application/x-image")
JSON_TYPE = "application/json"
SUPPORTED_TYPES = (*IMAGE_TYPES, JSON_TYPE)


# --------------------------------------------------------------------------- requests


def negotiate() -> str:
    """The request's content type, or 415/406 if we cannot read it or cannot answer in JSON."""
    content_type = request.mimetype
    if content_type not in SUPPORTED_TYPES:
        raise InvocationError(
            415,
            "unsupported_content_type",
            f"Content-Type {content_type or '(none)'!r} is not supported; "
            f"use one of {', '.join(SUPPORTED_TYPES)}",
            supported=list(SUPPORTED_TYPES),
        )
    if request.headers.get("Accept", "").strip() and not request.accept_mimetypes.best_match(
        [JSON_TYPE]
    ):
        raise InvocationError(
            406,
            "not_acceptable",
            f"Accept {request.headers['Accept']!r} cannot be served; responses are {JSON_TYPE}",
            supported=[JSON_TYPE],
        )
    return content_type


def read_body(limit: int, deadline: Deadline | None = None) -> bytearray:
    """The request body, or 413 once it is known to exceed ``limit`` bytes.

    With ``Content-Length`` that is decided before reading. A chunked body has no length, and
    werkzeug would silently cut it at the limit (a truncated photo, reported as corrupt), so it
    is read here from the server's stream (gunicorn de-chunks it) up to one byte past the limit.
    Under gunicorn each read is bounded (``budget.TimedSocket``): a body that stops arriving,
    or is not in by the ``deadline``, is a 408 naming which bound it ran into.
    """
    length = request.content_length
    if length is not None and length > limit:
        raise RequestEntityTooLarge()
    wanted = limit + 1 if length is None else length
    stream = request.environ["wsgi.input"]
    # One buffer the body is read into (sized up front when the length is known), not a list
    # of parts joined at the end: the join would hold the body twice at its peak.
    body = bytearray(length or 0)
    size = 0
    while size < wanted:
        part = stream.read(min(1 << 20, wanted - size))
        if not part:
            break
        if size + len(part) <= len(body):
            body[size : size + len(part)] = part
        else:
            body += part
        size += len(part)
    if size > limit:
        raise RequestEntityTooLarge()
    if budget.read_expired():
        raise _body_timeout(budget.read_expired(), deadline)
    del body[size:]
    return body


def _body_timeout(why: str, deadline: Deadline | None) -> InvocationError:
    if why == "deadline" and deadline is not None:
        bound = f"was not in within {deadline.seconds:g} s ({parameters.MODEL_SERVER_TIMEOUT})"
    else:
        bound = f"stopped arriving for {budget.bound_idle_s():g} s ({parameters.READ_TIMEOUT})"
    return InvocationError(408, "body_timeout", f"the request body {bound}")


def parse_instances(
    body: bytes | bytearray, max_instances: int, fields: list[dict[str, Any]] | None = None
) -> list[bytes]:
    """``{"instances": [{"b64": "..."}, ...]}`` -> the photos' bytes, or a 400 naming the fault."""
    if not body:
        raise InvocationError(
            400, "empty_body", "empty body: expected a JSON object with 'instances'"
        )
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise InvocationError(400, "malformed_json", f"body is not valid JSON: {exc}") from None
    shape = 'expected {"instances": [{"b64": "<base64 JPEG or PNG>"}, ...]}'
    if not isinstance(document, dict) or not isinstance(document.get("instances"), list):
        raise InvocationError(400, "bad_json_schema", f"{shape}; got no 'instances' list")
    instances = document["instances"]
    if not instances:
        raise InvocationError(400, "bad_json_schema", f"{shape}; 'instances' is empty")
    if len(instances) > max_instances:
        raise InvocationError(
            400,
            "too_many_instances",
            f"{len(instances)} instances in one request; the limit is {max_instances}",
        )
    photos = []
    for i, instance in enumerate(instances):
        if not isinstance(instance, dict) or not isinstance(instance.get("b64"), str):
            raise InvocationError(
                400, "bad_json_schema", f"instances[{i}] must be an object with a string 'b64'"
            )
        # Popped, so each photo's text is freed as its bytes are made (MIME line breaks
        # tolerated, nothing else).
        text = "".join(instance.pop("b64").split())
        try:
            photos.append(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise InvocationError(
                400, "malformed_base64", f"instances[{i}].b64 is not valid base64: {exc}"
            ) from None
    if fields is not None:  # each instance's other fields (serving.expectations reads them)
        fields.extend(dict(x) for x in instances)
    return photos


def read_photos(
    content_type: str, limit: int, max_instances: int, deadline: Deadline | None = None
) -> list[bytes | bytearray]:
    """The photos a request carries: its body, or each instance of a JSON batch."""
    body = read_body(limit, deadline)
    log.debug("request_id=%s body of %d bytes read", g.get("request_id"), len(body))
    if content_type == JSON_TYPE:
        g.instance_fields = []
        return parse_instances(body, max_instances, g.instance_fields)
    return [body]


def decode_photo(
    photo: bytes | bytearray, image_size: int, where: str = "", max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """Photo bytes -> ``uint8 [S, S, 3]`` (the training preprocessing), or 400 ``bad_image``.

    ``where`` prefixes the message (``"instances[1]: "``) so a batch says which photo failed;
    a photo over ``max_pixels`` is refused before decoding, naming the knob that sets it.
    """
    try:
        return preprocess_array(load_image(photo, image_size, max_pixels), image_size)
    except ImageTooLarge as exc:
        raise InvocationError(
            400, "bad_image", f"{where}{exc.reason}; set by {parameters.MAX_IMAGE_PIXELS}"
        ) from None
    except ImageError as exc:
        raise InvocationError(400, "bad_image", f"{where}{exc.reason}") from None
    except Exception as exc:  # a decoder failing on hostile bytes is still bad input
        log.warning(
            "request_id=%s decoder raised %s",
            g.get("request_id"),
            type(exc).__name__,
            exc_info=True,
        )
        raise InvocationError(
            400, "bad_image", f"{where}image could not be decoded ({type(exc).__name__})"
        ) from None


def decode_photos(
    photos: Sequence[bytes | bytearray],
    image_size: int,
    batch: bool,
    max_pixels: int = MAX_PIXELS,
    slots: DecodeSlots | None = None,
    deadline: Deadline | None = None,
    first: int = 0,
) -> list[np.ndarray]:
    """Every photo decoded in order; in a JSON ``batch`` a failure names its instance
    (``first`` is the index of ``photos[0]`` in the request, for a chunk of a batch).

    Each photo waits for one of the worker's decode ``slots`` (bounded memory), and the
    ``deadline`` is checked before each, so a batch whose time ran out stops decoding.
    """
    pixels = []
    for i, photo in enumerate(photos, start=first):
        where = f"instances[{i}]: " if batch else ""
        if deadline is not None:
            deadline.check(f"decoding {where or 'the photo'}".rstrip(": "))
        if slots is None:
            pixels.append(decode_photo(photo, image_size, where, max_pixels))
            continue
        with slots.hold(deadline):
            pixels.append(decode_photo(photo, image_size, where, max_pixels))
    return pixels


# --------------------------------------------------------------------------- responses


def probabilities_to_prediction(
    probabilities: Sequence[float],
    version: str,
    decision: str = "argmax",
    calibration: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One photo's answer, from the network's probabilities: the JSON object ``/invocations``
    returns for it.

    ``count`` follows the model card's ``decision`` rule, chosen on validation, applied to the
    network's probabilities; ``probabilities`` are the card's ``calibration`` of them, and
    ``confidence`` is the calibrated probability of that count (``calibration.served``).
    """
    served, chosen = calibrated_answer(
        np.asarray([probabilities], dtype=np.float64), calibration, decision
    )
    probs = [float(p) for p in served[0]]
    best = int(chosen[0])
    return {
        "count": int(CLASSES[best]),
        "probabilities": {str(c): p for c, p in zip(CLASSES, probs, strict=True)},
        "confidence": probs[best],
        # The mean count under the model's distribution: what inventory sums want.
        "expected_count": float(sum(c * p for c, p in zip(CLASSES, probs, strict=True))),
        "model_version": version,
    }


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload), status=status, mimetype=JSON_TYPE)


def error_response(status: int, error: str, message: str, **extra: Any) -> Response:
    """The JSON error body, logged with the request id (5xx as errors, 4xx as warnings)."""
    request_id = g.get("request_id")
    level = logging.ERROR if status >= 500 else logging.WARNING
    log.log(
        level, "request_id=%s status=%d error=%s message=%s", request_id, status, error, message
    )
    response = json_response(
        {"error": error, "message": message, "request_id": request_id, **extra}, status
    )
    if status in (408, 413):
        # The rest of the body is never read (too big, or it stopped coming): close.
        response.headers["Connection"] = "close"
    return response
