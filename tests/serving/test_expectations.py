"""Issue 22's request options: ``min_accuracy``, ``expected_quantity`` (+ ``mismatch_rate``,
``bin_id``) from the custom-attributes header or a JSON instance, in-process and on the real
server whose model a real ``./train`` calibrated."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
import requests

from bincounter import verification
from bincounter.model import CARD_FILE
from bincounter.serving.expectations import CUSTOM_ATTRIBUTES, parse_attributes

from .inputs import photo_bytes

ATTRS = CUSTOM_ATTRIBUTES


def test_attributes_are_key_value_pairs_and_other_keys_are_kept_apart() -> None:
    assert parse_attributes("expected_quantity=3, bin_id=A-1;trace=xyz; junk") == {
        "expected_quantity": "3",
        "bin_id": "A-1",
        "trace": "xyz",
    }


def test_an_uncalibrated_card_refuses_the_options_it_cannot_honour(client) -> None:
    answer = client.post(
        "/invocations",
        data=photo_bytes(0),
        content_type="image/jpeg",
        headers={ATTRS: "expected_quantity=3"},
    )
    assert answer.status_code == 400
    assert "no 'verification' section" in answer.get_json()["message"]
    plain = client.post(
        "/invocations", data=photo_bytes(0), content_type="image/jpeg", headers={ATTRS: "x=1"}
    )
    assert plain.status_code == 200 and "verdict" not in plain.get_json()


def post(url: str, body: bytes, content_type: str = "image/jpeg", **headers: str):
    return requests.post(
        f"{url}/invocations",
        data=body,
        headers={"Content-Type": content_type, **headers},
        timeout=60,
    )


def instances(*items: dict) -> bytes:
    return json.dumps(
        {"instances": [{**rest, "b64": base64.b64encode(photo).decode()} for photo, rest in items]}
    ).encode()


@pytest.mark.slow
def test_the_real_server_answers_the_options_with_the_cards_calibration(
    trained_server, trained_model_dir: Path
) -> None:
    card = json.loads((trained_model_dir / CARD_FILE).read_text())
    url = trained_server.url
    plain = post(url, photo_bytes(1)).json()
    assert "verdict" not in plain and "abstained" not in plain
    probs = np.array(list(plain["probabilities"].values()))

    for quantity in (1, 3, 5):
        got = post(url, photo_bytes(1), **{ATTRS: f"expected_quantity={quantity}, bin_id=B-7"})
        assert got.status_code == 200, got.text
        answer = got.json()
        match, verdicts = verification.verify(probs[None], [quantity], card["verification"])
        assert answer["match_probability"] == pytest.approx(match[0], abs=1e-6)
        assert answer["verdict"] == verdicts[0] and answer["verdict"] in verification.VERDICTS
        assert answer["bin_id"] == "B-7" and answer["expected_quantity"] == quantity
        assert answer["count"] == plain["count"]  # verification does not change the count

    # a request's mismatch rate moves the match probability the way the prior says
    low = post(url, photo_bytes(1), **{ATTRS: "expected_quantity=2,mismatch_rate=0.01"}).json()
    high = post(url, photo_bytes(1), **{ATTRS: "expected_quantity=2,mismatch_rate=0.6"}).json()
    assert low["match_probability"] > high["match_probability"]

    # min_accuracy: a level no threshold reaches abstains; a reachable one answers above it
    thresholds = card["calibration"]["confidence_thresholds"]
    unreachable = [k for k, v in thresholds.items() if v is None]
    level = unreachable[0] if unreachable else "1"
    abstain = post(url, photo_bytes(1), **{ATTRS: f"min_accuracy={level}"}).json()
    assert abstain["count"] is None and abstain["abstained"] is True
    assert abstain["probabilities"] == plain["probabilities"]  # still told, for the record

    # per photo in a JSON batch, over the header's default
    body = instances(
        (photo_bytes(1), {"expected_quantity": 4, "bin_id": "X"}), (photo_bytes(2), {})
    )
    batch = post(url, body, "application/json", **{ATTRS: "expected_quantity=2"}).json()
    first, second = batch["predictions"]
    assert first["expected_quantity"] == 4 and first["bin_id"] == "X"
    assert second["expected_quantity"] == 2 and "bin_id" not in second

    # out-of-range quantities: 400 naming the range and why
    for value, words in (("0", "no items"), ("6", "more than 5"), ("two", "not a number")):
        bad = post(url, photo_bytes(1), **{ATTRS: f"expected_quantity={value}"})
        assert bad.status_code == 400, bad.text
        assert bad.json()["error"] == "bad_request_option"
        assert "1..5" in bad.json()["message"] and words in bad.json()["message"]
    bad = post(url, instances((photo_bytes(1), {"expected_quantity": 9})), "application/json")
    assert bad.status_code == 400 and bad.json()["message"].startswith("instances[0]: ")
    for bad_option in ("min_accuracy=1.5", "mismatch_rate=0", "bin_id=a b"):
        assert post(url, photo_bytes(1), **{ATTRS: bad_option}).status_code == 400
    assert post(url, photo_bytes(1)).status_code == 200  # and the server lives on
