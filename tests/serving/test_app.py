"""The flask app in-process (no gunicorn): the contract, every bad-input class, conversions.

Fast: a seeded 64 px model, flask's test client. The same cases run against the real server in
``test_server.py``.
"""

from __future__ import annotations

import io
import math
import threading

import numpy as np
import pytest
import torch

from bincounter.imaging import load_and_preprocess
from bincounter.serving.app import close_app, create_app
from bincounter.serving.batcher import Batcher
from bincounter.serving.codec import SUPPORTED_TYPES, decode_photo
from bincounter.serving.predictor import Predictor

from .batching import network_thread_id, submit
from .inputs import b64_batch, bad_inputs, converted_photos, photo_bytes


def post(client, body: bytes, content_type: str | None = "image/jpeg", **headers):
    if content_type:
        headers["Content-Type"] = content_type
    return client.post("/invocations", data=body, headers=headers)


def check_prediction(prediction: dict, version: str) -> None:
    assert set(prediction) == {
        "count",
        "probabilities",
        "confidence",
        "expected_count",
        "model_version",
    }
    assert isinstance(prediction["count"], int) and 1 <= prediction["count"] <= 5
    probs = prediction["probabilities"]
    assert list(probs) == ["1", "2", "3", "4", "5"]
    assert math.isclose(sum(probs.values()), 1.0, abs_tol=1e-9)
    assert all(0.0 <= p <= 1.0 for p in probs.values())
    # The count follows the card's decision rule (argmax for the seeded test models; other
    # rules in test_codec), and the confidence is that count's probability.
    assert prediction["confidence"] == probs[str(prediction["count"])]
    assert math.isclose(
        prediction["expected_count"], sum(int(k) * p for k, p in probs.items()), rel_tol=1e-9
    )
    assert prediction["model_version"] == version


def test_ping_is_200_with_empty_body(client):
    response = client.get("/ping")
    assert response.status_code == 200 and response.data == b""


def test_execution_parameters(client, serving_config):
    response = client.get("/execution-parameters")
    assert response.status_code == 200
    assert response.get_json() == {
        "MaxConcurrentTransforms": serving_config.max_concurrent_transforms,
        "BatchStrategy": "SINGLE_RECORD",
        "MaxPayloadInMB": 6,
    }


@pytest.mark.parametrize("content_type", ["image/jpeg", "image/png", "application/x-image"])
@pytest.mark.parametrize("accept", [None, "application/json", "*/*", "application/*"])
def test_one_photo_any_image_type_any_json_accept(client, predictor, content_type, accept):
    # The declared image type does not matter: the format is sniffed from the bytes.
    headers = {"Accept": accept} if accept else {}
    response = post(client, photo_bytes(0), content_type, **headers)
    assert response.status_code == 200, response.data
    assert response.mimetype == "application/json"
    check_prediction(response.get_json(), predictor.info.version)


def test_answer_equals_the_in_process_model(client, predictor):
    photos = [photo_bytes(i) for i in range(6)]
    batch = torch.stack([load_and_preprocess(p, predictor.info.image_size) for p in photos])
    expected = predictor.predict_batch(batch)
    for photo, probs in zip(photos, expected, strict=True):
        got = post(client, photo).get_json()["probabilities"]
        np.testing.assert_allclose(list(got.values()), probs, atol=1e-5)


def test_json_batch_answers_in_order(client, predictor):
    photos = [photo_bytes(i) for i in (3, 0, 5)]
    response = post(client, b64_batch(*photos), "application/json")
    assert response.status_code == 200, response.data
    predictions = response.get_json()["predictions"]
    assert len(predictions) == 3
    for photo, prediction in zip(photos, predictions, strict=True):
        check_prediction(prediction, predictor.info.version)
        single = post(client, photo).get_json()
        np.testing.assert_allclose(
            list(prediction["probabilities"].values()),
            list(single["probabilities"].values()),
            atol=1e-5,
        )


def test_request_id_is_echoed_or_made(client):
    given = post(client, b"", **{"X-Request-Id": "abc-123"})
    assert given.headers["X-Request-Id"] == "abc-123"
    assert given.get_json()["request_id"] == "abc-123"
    made = post(client, b"")
    assert len(made.headers["X-Request-Id"]) == 32
    hostile = post(client, b"", **{"X-Request-Id": "x\u00e9" * 200})
    assert hostile.headers["X-Request-Id"] != "x\u00e9" * 200


@pytest.mark.parametrize("case", bad_inputs(), ids=lambda c: c.name)
def test_bad_input_is_a_clear_4xx(client, case, caplog):
    response = post(client, case.body, case.content_type, **case.headers)
    assert response.status_code == case.status, response.data
    error = response.get_json()
    assert set(error) >= {"error", "message", "request_id"}
    assert case.message.lower() in error["message"].lower()
    assert "Traceback" not in response.get_data(as_text=True)
    assert error["request_id"] in caplog.text  # logged with the same id
    if case.status == 415:
        assert error["supported"] == list(SUPPORTED_TYPES)


def test_chunked_body_over_the_limit_is_413_not_truncated(client, serving_config):
    # Without Content-Length werkzeug would cut the body at the limit; we must refuse it.
    body = photo_bytes(0) + b"\x00" * serving_config.max_payload_bytes

    response = client.post(
        "/invocations",
        input_stream=io.BytesIO(body),  # no Content-Length, as with Transfer-Encoding: chunked
        headers={"Content-Type": "image/jpeg"},
        environ_overrides={"wsgi.input_terminated": True},  # what gunicorn sets for chunked
    )
    assert response.status_code == 413


@pytest.mark.parametrize("name", list(converted_photos()))
def test_modes_are_converted_and_served(client, predictor, name):
    response = post(client, converted_photos()[name], "image/png")
    assert response.status_code == 200, response.data
    check_prediction(response.get_json(), predictor.info.version)


def test_exif_orientation_is_applied(client):
    photos = converted_photos()
    upright = post(client, photos["png"], "image/png").get_json()["probabilities"]
    rotated = post(client, photos["exif_rotated_jpeg"]).get_json()["probabilities"]
    # Same picture once upright; only JPEG re-encoding differs.
    np.testing.assert_allclose(list(rotated.values()), list(upright.values()), atol=0.05)


def test_unknown_route_and_method_are_json_4xx(client):
    assert client.get("/nope").status_code == 404
    response = client.get("/invocations")
    assert response.status_code == 405 and response.get_json()["error"]


def test_only_the_batcher_thread_runs_the_network(serving_config, predictor):
    # HTTP threads (here: the test client's) stop at numpy pixels; torch runs on one thread.
    threads: set[int] = set()

    def engine(batch):
        threads.add(threading.get_ident())
        return predictor._engine(batch)

    app = create_app(serving_config, Predictor(engine, predictor.info))
    batcher = app.extensions["bincounter"]["batcher"]
    try:
        client = app.test_client()
        assert post(client, photo_bytes(0)).status_code == 200
        batch = b64_batch(photo_bytes(1), photo_bytes(2))
        assert post(client, batch, "application/json").status_code == 200
    finally:
        close_app(app)
    assert threads == {network_thread_id(batcher)} and threading.get_ident() not in threads
    assert batcher.closed  # close_app stopped the thread


def test_batcher_answers_as_the_predictor_does(predictor):
    batcher = Batcher(lambda: predictor, max_batch_size=4, wait_ms=50)
    size = predictor.info.image_size
    pixels = [decode_photo(photo_bytes(i), size) for i in range(6)]
    try:
        got = np.stack([f.result(30) for f in submit(batcher, pixels)])
    finally:
        batcher.close()
    expected = predictor.predict_batch(
        torch.stack([load_and_preprocess(photo_bytes(i), size) for i in range(6)])
    )
    np.testing.assert_allclose(got, expected, atol=1e-5)


def answer_from(model_dir, predictor: Predictor, photo: bytes) -> dict:
    """One photo's JSON answer from an app built on ``predictor`` (closed afterwards)."""
    from bincounter.serving.config import ServingConfig

    config = ServingConfig.from_environment({"BINCOUNTER_MODEL_DIR": str(model_dir)})
    app = create_app(config, predictor)
    try:
        return post(app.test_client(), photo).get_json()
    finally:
        close_app(app)


def test_a_coral_model_with_tta_serves_its_cards_rule(tmp_path):
    """head=coral and decision=median from the card; TTA x8 is the mean of the eight variants."""
    from bincounter.counting import dihedral_variants
    from bincounter.model import build_model, save_model

    torch.manual_seed(0)
    model_dir = tmp_path / "model"
    save_model(
        build_model("resnet18", head="coral"),
        model_dir,
        arch="resnet18",
        image_size=32,
        extra={},
        head="coral",
        decision="median",
    )
    plain = Predictor.load(model_dir, engine="eager", warmup_batch_sizes=(1,))
    tta = Predictor.load(model_dir, engine="eager", tta=8, warmup_batch_sizes=(1,))
    assert (tta.info.head, tta.info.decision, tta.info.tta) == ("coral", "median", 8)
    pixels = [decode_photo(photo_bytes(i), 32) for i in range(2)]
    averaged = tta.predict_pixels(pixels)
    variants = plain.predict_pixels(list(dihedral_variants(np.stack(pixels), channels_last=True)))
    np.testing.assert_allclose(averaged, variants.reshape(8, 2, 5).mean(0), atol=1e-6)
    np.testing.assert_allclose(averaged.sum(1), 1.0, atol=1e-12)

    answer = answer_from(model_dir, tta, photo_bytes(0))
    probs = [answer["probabilities"][str(c)] for c in range(1, 6)]
    assert math.isclose(sum(probs), 1.0, abs_tol=1e-9)
    median = next(c for c in range(1, 6) if sum(probs[:c]) >= 0.5 - 1e-12)
    assert answer["count"] == median


@pytest.mark.parametrize("tta", [1, 8])
def test_answers_use_the_cards_calibration_for_the_servers_tta(tmp_path, tta):
    """Averaged variants are less sure than one pass, so the card carries a calibration for
    each: a server with ``BINCOUNTER_TTA=8`` answers with the ``tta8`` one. The count is the
    rule's on the network's (averaged) probabilities either way."""
    from bincounter import calibration
    from bincounter.decision import decide
    from bincounter.model import build_model, save_model

    torch.manual_seed(0)
    model_dir = tmp_path / "model"
    single = {"temperature": 0.5, "bias": [0.3, 0, 0, 0, -0.3], "confidence_thresholds": {}}
    averaged = {"temperature": 0.25, "bias": [-1.0, 0.5, 0, 0.5, 0.0]}
    save_model(
        build_model("resnet18"),
        model_dir,
        arch="resnet18",
        image_size=32,
        extra={"calibration": {**single, "tta8": averaged}},
        decision="expected",
    )
    predictor = Predictor.load(model_dir, engine="eager", tta=tta, warmup_batch_sizes=(1,))
    section = {**single, **averaged} if tta == 8 else single
    assert {k: predictor.info.card["calibration"][k] for k in section} == section
    network = predictor.predict_pixels([decode_photo(photo_bytes(3), 32)])
    answer = answer_from(model_dir, predictor, photo_bytes(3))
    expected = calibration.calibrated(network, section)[0]
    np.testing.assert_allclose([answer["probabilities"][str(c)] for c in range(1, 6)], expected)
    count = int(decide(network, "expected")[0])
    assert answer["count"] == count + 1
    assert answer["confidence"] == pytest.approx(expected[count])
    # the other setting's calibration would have answered otherwise
    other = {**single, **averaged} if tta == 1 else single
    assert not np.allclose(calibration.calibrated(network, other)[0], expected, atol=1e-3)
