"""The codec's pure logic: JSON batch bodies, body limits, negotiation, the prediction object.

No model and no server: a flask request context at most, milliseconds each.
"""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from flask import Flask, g
from PIL import Image
from werkzeug.exceptions import RequestEntityTooLarge

from bincounter import CLASSES
from bincounter.errors import InvocationError
from bincounter.serving.codec import (
    SUPPORTED_TYPES,
    decode_photo,
    decode_photos,
    error_response,
    negotiate,
    parse_instances,
    probabilities_to_prediction,
    read_body,
)

PHOTO = b"\xff\xd8\xff" * 100


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def body(document) -> bytes:
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (body({"instances": [{"b64": b64(PHOTO)}]}), [PHOTO]),
        (body({"instances": [{"b64": b64(b"a")}, {"b64": b64(b"bc")}]}), [b"a", b"bc"]),
        # MIME line breaks (76-column base64) are tolerated; extra keys are ignored.
        (body({"instances": [{"b64": base64.encodebytes(PHOTO).decode(), "id": 1}]}), [PHOTO]),
        (body({"instances": [{"b64": b64(PHOTO)}] * 4}), [PHOTO] * 4),
    ],
    ids=["one", "two_in_order", "mime_line_breaks", "at_the_limit"],
)
def test_parse_instances_returns_the_photos_in_order(raw, expected):
    assert parse_instances(raw, max_instances=4) == expected


@pytest.mark.parametrize(
    ("raw", "error", "message"),
    [
        (b"", "empty_body", "empty body"),
        (b'{"instances": [', "malformed_json", "not valid JSON"),
        (b"\xff\xfe{}", "malformed_json", "not valid JSON"),
        (b"[" * 100_000, "malformed_json", "not valid JSON"),
        (b"[]", "bad_json_schema", "no 'instances' list"),
        (b'{"images": []}', "bad_json_schema", "no 'instances' list"),
        (b'{"instances": {"b64": ""}}', "bad_json_schema", "no 'instances' list"),
        (b'{"instances": []}', "bad_json_schema", "'instances' is empty"),
        (b'{"instances": ["abc"]}', "bad_json_schema", "instances[0] must be an object"),
        (b'{"instances": [{"b64": 1}]}', "bad_json_schema", "string 'b64'"),
        (b'{"instances": [{"B64": "AA=="}]}', "bad_json_schema", "string 'b64'"),
        (b'{"instances": [{"b64": "not base64!!"}]}', "malformed_base64", "instances[0].b64"),
        (b'{"instances": [{"b64": "AA=="}, {"b64": "AAA"}]}', "malformed_base64", "instances[1]"),
        (body({"instances": [{"b64": "AA=="}] * 5}), "too_many_instances", "limit is 4"),
    ],
    ids=lambda v: v if isinstance(v, str) and " " not in v else None,
)
def test_parse_instances_refuses_with_a_400_naming_the_fault(raw, error, message):
    with pytest.raises(InvocationError) as caught:
        parse_instances(raw, max_instances=4)
    assert (caught.value.status, caught.value.error) == (400, error)
    assert message in caught.value.message


@pytest.mark.parametrize(
    "probabilities",
    [[0.1, 0.2, 0.4, 0.2, 0.1], [1.0, 0.0, 0.0, 0.0, 0.0], np.array([0.0, 0.0, 0.0, 0.3, 0.7])],
)
def test_probabilities_to_prediction(probabilities):
    prediction = probabilities_to_prediction(probabilities, "abc123")
    probs = [float(p) for p in probabilities]
    best = int(np.argmax(probs))
    assert prediction == {
        "count": CLASSES[best],
        "probabilities": {str(c): p for c, p in zip(CLASSES, probs, strict=True)},
        "confidence": probs[best],
        "expected_count": pytest.approx(sum(c * p for c, p in zip(CLASSES, probs, strict=True))),
        "model_version": "abc123",
    }
    assert type(prediction["count"]) is int and type(prediction["confidence"]) is float
    json.dumps(prediction, allow_nan=False)  # plain JSON types only


@pytest.mark.parametrize(
    ("decision", "count"), [("argmax", 5), ("expected", 3), ("median", 5), (None, 5)]
)
def test_count_follows_the_cards_decision_rule(decision, count):
    probabilities = [0.4, 0.0, 0.0, 0.0, 0.6]  # mode 5, mean 3.4, median 5
    args = () if decision is None else (decision,)  # a card without one: argmax
    prediction = probabilities_to_prediction(probabilities, "v", *args)
    assert prediction["count"] == count
    assert prediction["confidence"] == probabilities[count - 1]
    assert prediction["expected_count"] == pytest.approx(3.4)


def test_median_and_argmax_differ_on_a_spread_distribution():
    probabilities = [0.3, 0.1, 0.25, 0.2, 0.15]  # mode 1, median 3
    assert probabilities_to_prediction(probabilities, "v", "argmax")["count"] == 1
    assert probabilities_to_prediction(probabilities, "v", "median")["count"] == 3


def test_probabilities_to_prediction_ties_go_to_the_smaller_count():
    assert probabilities_to_prediction([0.0, 0.5, 0.5, 0.0, 0.0], "v")["count"] == 2


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_decode_photo_gives_uint8_pixels_at_the_model_size():
    pixels = decode_photo(png(40, 30), 16)
    assert pixels.dtype == np.uint8 and pixels.shape == (16, 16, 3)
    assert (pixels == [10, 20, 30]).all()


@pytest.mark.parametrize(
    ("photos", "batch", "message"),
    [
        ([b"not a photo"], False, "JPEG"),
        ([png(2, 2)], False, ">= 8"),
        ([png(40, 30), b"not a photo"], True, "instances[1]: "),
    ],
    ids=["not_a_photo", "tiny", "second_of_a_batch"],
)
def test_bad_photos_are_400_bad_image(photos, batch, message):
    with pytest.raises(InvocationError) as caught:
        decode_photos(photos, 16, batch)
    assert (caught.value.status, caught.value.error) == (400, "bad_image")
    assert message in caught.value.message


APP = Flask(__name__)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Content-Type": "image/jpeg"}, None),
        ({"Content-Type": "application/json; charset=utf-8", "Accept": "*/*"}, None),
        ({"Content-Type": "application/x-image", "Accept": "application/*"}, None),
        ({}, 415),
        ({"Content-Type": "text/csv"}, 415),
        ({"Content-Type": "image/png", "Accept": "text/csv"}, 406),
    ],
)
def test_negotiate(headers, status):
    with APP.test_request_context("/invocations", method="POST", headers=headers):
        if status is None:
            assert negotiate() in SUPPORTED_TYPES
        else:
            with pytest.raises(InvocationError) as caught:
                negotiate()
            assert caught.value.status == status


@pytest.mark.parametrize("chunked", [False, True], ids=["content_length", "chunked"])
@pytest.mark.parametrize("size", [0, 100, 101, 5000])
def test_read_body_refuses_past_the_limit_and_never_truncates(chunked, size):
    data = b"x" * size
    if chunked:  # no Content-Length: werkzeug alone would cut the body at the limit
        context = APP.test_request_context(
            "/invocations",
            method="POST",
            input_stream=io.BytesIO(data),
            environ_overrides={"wsgi.input_terminated": True},
        )
    else:
        context = APP.test_request_context("/invocations", method="POST", data=data)
    with context:
        if size > 100:
            with pytest.raises(RequestEntityTooLarge):
                read_body(100)
        else:
            assert read_body(100) == data


def test_error_body_is_json_with_the_request_id(caplog):
    with APP.test_request_context("/invocations"):
        g.request_id = "rid-1"
        response = error_response(413, "payload_too_large", "too big", limit=1)
    assert response.status_code == 413 and response.mimetype == "application/json"
    assert response.headers["Connection"] == "close"
    assert response.get_json() == {
        "error": "payload_too_large",
        "message": "too big",
        "request_id": "rid-1",
        "limit": 1,
    }
    assert "request_id=rid-1 status=413" in caplog.text
