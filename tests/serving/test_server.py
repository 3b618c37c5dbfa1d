"""The real server: ``./serve`` -> gunicorn -> flask, on loopback, with real photos.

A model trained by ``./train`` in this test run answers real ABID photos at their native sizes,
exactly as the in-process model does; every bad-input class is a 4xx after which the server
still answers; a few hundred fuzzed bodies and a 16-client load leave the worker alive; SIGTERM
drains; a model that cannot load stops the container.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import random
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from PIL import Image

from bincounter.decision import decide
from bincounter.imaging import load_and_preprocess
from bincounter.model import CARD_FILE, load_model, sha256_file
from bincounter.serving.codec import SUPPORTED_TYPES
from bincounter.serving.config import ServingConfig, cpu_count

from .conftest import make_model_dir
from .inputs import b64_batch, bad_inputs, encode, original_paths, photo_bytes
from .launcher import Server, launch, start_server
from .test_app import check_prediction

pytestmark = pytest.mark.slow

#: The issue's target for ./serve start -> first /ping 200.


def post(server: Server, body, content_type: str | None = "image/jpeg", **headers):
    if content_type:
        headers["Content-Type"] = content_type
    return requests.post(f"{server.url}/invocations", data=body, headers=headers, timeout=60)


def assert_alive(server: Server) -> None:
    """``/ping`` is 200, a valid photo still answers, and every worker ever booted still runs."""
    ping = requests.get(f"{server.url}/ping", timeout=2)
    assert ping.status_code == 200 and ping.content == b""
    answer = post(server, photo_bytes(7))
    assert answer.status_code == 200 and 1 <= answer.json()["count"] <= 5
    assert server.live_worker_pids() == sorted(server.worker_pids()), server.log()[-3000:]


def in_process_probabilities(model_dir: Path, photos: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """What the trained model says in-process: eager PyTorch, the training preprocessing; the
    network's probabilities (the rule's counts come from them) and the card's calibration of
    them (logits over the temperature, plus the biases: the probabilities answered)."""
    model, card = load_model(model_dir)
    batch = torch.stack([load_and_preprocess(p, card["image_size"]) for p in photos])
    temperature = card["calibration"]["temperature"]
    bias = torch.tensor(card["calibration"]["bias"], dtype=torch.float64)
    with torch.inference_mode():
        logits = model(batch).double()
    raw = torch.softmax(logits, dim=1).numpy()
    return raw, torch.softmax(logits / temperature + bias, dim=1).numpy()


def test_ping_and_execution_parameters(trained_server, trained_model_dir):
    ping = requests.get(f"{trained_server.url}/ping", timeout=2)
    assert ping.status_code == 200 and ping.content == b""
    response = requests.get(f"{trained_server.url}/execution-parameters", timeout=2)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    config = ServingConfig.from_environment(
        {**os.environ, "SAGEMAKER_BASE_DIR": str(trained_model_dir.parent)}
    )
    assert response.json() == {
        "MaxConcurrentTransforms": config.max_concurrent_transforms,
        "BatchStrategy": "SINGLE_RECORD",
        "MaxPayloadInMB": 6,
    }
    assert config.max_concurrent_transforms >= 1


def test_real_photos_answer_as_the_trained_model_does(trained_server, trained_model_dir):
    paths = original_paths()[::10]  # 50 photos, 300-870 px wide, as the camera took them
    photos = [p.read_bytes() for p in paths]
    sizes = {Image.open(io.BytesIO(p)).size for p in photos}
    assert len(sizes) > 20 and max(w for w, _ in sizes) > 600  # native sizes, not 224 px copies
    raw, expected = in_process_probabilities(trained_model_dir, photos)
    card = json.loads((trained_model_dir / CARD_FILE).read_text())
    for photo, network, probs in zip(photos, raw, expected, strict=True):
        answer = post(trained_server, photo)
        assert answer.status_code == 200, answer.text
        got = answer.json()
        check_prediction(got, card["weights_sha256"][:12])  # the full response schema
        # the card's rule on the network's probabilities; the calibrated one's confidence
        count = int(decide(network, card["decision"])[0]) + 1
        assert got["count"] == count
        assert got["confidence"] == pytest.approx(probs[count - 1], abs=1e-4)
        np.testing.assert_allclose(list(got["probabilities"].values()), probs, atol=1e-4)
        assert abs(sum(got["probabilities"].values()) - 1) < 1e-9
        assert got["model_version"] == card["weights_sha256"][:12]

    batch = post(trained_server, b64_batch(*photos[:4]), "application/json")
    assert batch.status_code == 200, batch.text
    predictions = batch.json()["predictions"]
    assert [p["count"] for p in predictions] == [
        int(i) + 1 for i in decide(raw[:4], card["decision"])
    ]
    for got, probs in zip(predictions, expected[:4], strict=True):
        check_prediction(got, card["weights_sha256"][:12])
        np.testing.assert_allclose(list(got["probabilities"].values()), probs, atol=1e-4)


@pytest.mark.parametrize("case", bad_inputs(), ids=lambda c: c.name)
def test_bad_input_is_a_4xx_and_the_server_lives_on(trained_server, case):
    response = post(trained_server, case.body, case.content_type, **case.headers)
    assert response.status_code == case.status, response.text
    assert response.headers["Content-Type"] == "application/json"
    error = response.json()
    assert set(error) >= {"error", "message", "request_id"}
    assert case.message.lower() in error["message"].lower()
    assert "Traceback" not in response.text
    assert response.headers["X-Request-Id"] == error["request_id"]
    assert f"request_id={error['request_id']}" in trained_server.log()
    if case.status == 415:
        assert error["supported"] == list(SUPPORTED_TYPES)
        assert all(t in error["message"] for t in SUPPORTED_TYPES)
    assert_alive(trained_server)


def test_chunked_body_over_the_limit_is_413(trained_server):
    def chunks():
        yield photo_bytes(0)
        for _ in range(7):
            yield b"\x00" * (1 << 20)

    response = post(trained_server, chunks())
    assert response.status_code == 413
    small = post(trained_server, iter([photo_bytes(3)]))  # chunked, under the limit: served
    assert small.status_code == 200
    assert_alive(trained_server)


@pytest.mark.parametrize("size_mb", [7, 30])
def test_a_client_that_sends_all_before_reading_gets_its_413(trained_server, size_mb):
    # http.client (and many SDKs) write the whole body before reading: the server must read
    # on after answering, or the client's send fails with a broken pipe and it never sees why.
    port = int(trained_server.url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        body = photo_bytes(0) + b"\x00" * (size_mb * 1024 * 1024)
        connection.request("POST", "/invocations", body, {"Content-Type": "image/jpeg"})
        response = connection.getresponse()
        error = json.loads(response.read())
    finally:
        connection.close()
    assert response.status == 413 and error["error"] == "payload_too_large"
    assert "6 MB" in error["message"] and error["request_id"]
    assert_alive(trained_server)


def test_refused_bodies_on_kept_alive_connections_do_not_pin_threads(trained_server):
    # More kept-alive connections than the worker has HTTP threads, each refused before its
    # 64 kB body was read (415), each left open and silent, as a client's connection pool does.
    # gunicorn alone would park a thread on each, waiting for a next request (gunicorn#3301).
    port = int(trained_server.url.rsplit(":", 1)[1])
    connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(12)]
    try:
        for connection in connections:
            connection.request("POST", "/invocations", b"x" * 65536, {"Content-Type": "text/csv"})
            response = connection.getresponse()
            assert response.status == 415 and response.getheader("Connection") != "close"
            response.read()
        started = time.monotonic()
        assert_alive(trained_server)
        assert time.monotonic() - started < 2
        # Every refused connection is still usable: the whole body was read, nothing is left.
        for connection in connections[:3]:
            connection.request(
                "POST", "/invocations", photo_bytes(2), {"Content-Type": "image/jpeg"}
            )
            response = connection.getresponse()
            assert response.status == 200 and json.loads(response.read())["count"] in range(1, 6)
    finally:
        for connection in connections:
            connection.close()


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One random corruption of a real photo: truncation, bit flips, header damage, splices."""
    body = bytearray(data)
    kind = rng.choice(["truncate", "bitflip", "header", "splice", "zero_run", "duplicate"])
    if kind == "truncate":
        return bytes(body[: rng.randrange(0, len(body))])
    if kind == "bitflip":
        for _ in range(rng.randint(1, 50)):
            i = rng.randrange(len(body))
            body[i] ^= 1 << rng.randrange(8)
    elif kind == "header":
        for _ in range(rng.randint(1, 8)):
            body[rng.randrange(min(700, len(body)))] = rng.randrange(256)
    elif kind == "splice":
        i, j = sorted(rng.randrange(len(body)) for _ in range(2))
        body[i:j] = rng.randbytes(rng.randint(0, 64))
    elif kind == "zero_run":
        i = rng.randrange(len(body))
        body[i : i + rng.randint(1, 4096)] = b"\x00" * len(body[i : i + 4096])
    else:
        i = rng.randrange(len(body))
        body[i:i] = body[max(0, i - 2048) : i]
    return bytes(body)


def test_fuzzed_bodies_never_5xx_and_never_kill_a_worker(trained_server):
    rng = random.Random(20240611)
    seeds = [photo_bytes(i) for i in range(0, 500, 25)]

    seeds.append(encode(Image.open(io.BytesIO(seeds[0])).convert("RGB").resize((200, 150))))
    cases = [
        (mutate(rng, rng.choice(seeds)), rng.choice(["image/jpeg", "image/png"]))
        for _ in range(400)
    ]
    workers_before = trained_server.live_worker_pids()
    assert workers_before == trained_server.worker_pids()

    def send(case: tuple[bytes, str]) -> int:
        return post(trained_server, *case).status_code

    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(send, cases))
    assert set(statuses) <= {200, 400}, sorted(set(statuses))
    assert statuses.count(400) > 100  # the mutations really do break photos
    assert statuses.count(200) > 20  # and some survive (a flipped bit in the pixels)
    # No worker died or was replaced: same live processes, no new boot in the log.
    assert trained_server.live_worker_pids() == workers_before
    assert trained_server.worker_pids() == workers_before
    log = trained_server.log()
    assert "WORKER TIMEOUT" not in log and "Worker exiting" not in log
    assert_alive(trained_server)


def test_sixteen_concurrent_clients(trained_server):
    paths = original_paths()
    workers_before = trained_server.live_worker_pids()

    def client(k: int) -> list[int]:
        with requests.Session() as session:
            return [
                session.post(
                    f"{trained_server.url}/invocations",
                    data=paths[(k * 20 + i) % len(paths)].read_bytes(),
                    headers={"Content-Type": "image/jpeg"},
                    timeout=60,
                ).status_code
                for i in range(20)
            ]

    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        statuses = [s for batch in pool.map(client, range(16)) for s in batch]
    elapsed = time.monotonic() - started
    assert statuses == [200] * 320
    assert trained_server.live_worker_pids() == workers_before == trained_server.worker_pids()
    # /ping stays fast while the server is busy (SageMaker's timeout is 2 s).
    with ThreadPoolExecutor(16) as pool:
        load = [pool.submit(client, k) for k in range(16)]
        time.sleep(0.5)
        t = time.monotonic()
        assert requests.get(f"{trained_server.url}/ping", timeout=2).status_code == 200
        ping_s = time.monotonic() - t
        assert all(s == 200 for f in load for s in f.result())
    assert ping_s < 1.0, f"/ping took {ping_s:.2f} s under load"
    assert elapsed < 120


def wait_for_log(server: Server, lines: list[str], timeout: float = 60) -> None:
    """Until every one of ``lines`` is in the server's log (fails if it exits first)."""
    deadline = time.monotonic() + timeout
    while not all(line in server.log() for line in lines):
        assert server.process.poll() is None and time.monotonic() < deadline, server.log()[-3000:]
        time.sleep(0.05)


def test_sigterm_drains_in_flight_requests(tmp_path):
    model_dir = make_model_dir(tmp_path / "model", 224)  # bigger photos: requests last longer
    # A graceful timeout long enough for a slow, busy machine to finish the work: what is
    # tested is that every request is answered and the server then exits at once.
    env = {"BINCOUNTER_LOG_LEVEL": "debug", "BINCOUNTER_GRACEFUL_TIMEOUT": "120"}
    server = start_server({"BINCOUNTER_MODEL_DIR": str(model_dir), **env}, tmp_path)
    try:
        # About 250 photos at 224 px: seconds of work even for one worker per core, so the
        # signal lands while most requests are still queued or computing.
        body = b64_batch(*[photo_bytes(i) for i in range(32)])
        ids = [f"drain-{k}" for k in range(8)]
        with ThreadPoolExecutor(8) as pool:
            futures = [
                pool.submit(post, server, body, "application/json", **{"X-Request-Id": i})
                for i in ids
            ]
            # SIGTERM once the server has read every body (its debug line), not after a guess.
            wait_for_log(server, [f"request_id={i} body of {len(body)} bytes read" for i in ids])
            in_flight = sum(not f.done() for f in futures)
            stopped_at = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            responses = [f.result() for f in futures]
            answered_s = time.monotonic() - stopped_at
        server.process.wait(30)
        exit_s = time.monotonic() - stopped_at
    finally:
        server.stop()
    assert in_flight >= 2, "requests finished before SIGTERM: nothing was drained"
    assert [r.status_code for r in responses] == [200] * 8
    assert all(len(r.json()["predictions"]) == 32 for r in responses)
    assert server.process.returncode == 0
    log = server.log()
    assert "WORKER TIMEOUT" not in log
    assert "batcher stopped" in log  # gunicorn's worker_exit closed the batcher thread
    # Answered before the worker left, which it did once they were, not at the 120 s graceful
    # timeout (seconds on 2 idle cores; processes end slowly on a loaded machine, hence 30 s).
    print(f"in flight {in_flight}, answered {answered_s:.1f} s, exited {exit_s:.1f} s")
    assert answered_s < exit_s < answered_s + 30, (
        f"answered {answered_s:.1f} s, exit {exit_s:.1f} s"
    )


def refused(server: Server) -> bool:
    """Whether a new connection is refused: every process has closed the listening socket.

    A connect that races the listener's close is reset rather than refused (the kernel had
    begun the handshake): not accepted either, so it counts as refused."""
    try:
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
    except (ConnectionRefusedError, ConnectionResetError):
        return True
    return False


def http_request(body: bytes) -> tuple[bytes, bytes]:
    """A POST of a photo to ``/invocations``, as its head and its body."""
    head = (
        "POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode(), body


def read_response(connection: socket.socket) -> http.client.HTTPResponse:
    response = http.client.HTTPResponse(connection)
    response.begin()
    return response


def one_eager_worker(tmp_path: Path, model_dir: Path, **env: str) -> Server:
    """The server with one worker on the eager engine (quick to start), ``env`` on top."""
    return start_server(
        {
            "BINCOUNTER_MODEL_DIR": str(model_dir),
            "BINCOUNTER_ENGINE": "eager",
            "SAGEMAKER_MODEL_SERVER_WORKERS": "1",
            **env,
        },
        tmp_path,
    )


def test_sigterm_answers_connections_accepted_before_it(tmp_path, small_model_dir):
    # Two clients connected before SIGTERM: one sent nothing yet, one is halfway through its
    # body. Both send the rest only once the server has stopped accepting new connections,
    # and both must be answered: the kernel accepted them for the server.
    server = one_eager_worker(tmp_path, small_model_dir)
    silent = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    halfway = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    try:
        head, body = http_request(photo_bytes(4))
        halfway.sendall(head + body[: len(body) // 2])
        server.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while not refused(server):
            assert time.monotonic() < deadline, server.log()[-3000:]
        silent.sendall(b"".join(http_request(photo_bytes(5))))
        halfway.sendall(body[len(body) // 2 :])
        answers = [read_response(c) for c in (silent, halfway)]
        assert [a.status for a in answers] == [200, 200], server.log()[-3000:]
        assert [a.getheader("Connection") for a in answers] == ["close", "close"]
        assert all(json.loads(a.read())["count"] in range(1, 6) for a in answers)
        assert server.process.wait(15) == 0
    finally:
        silent.close()
        halfway.close()
        server.stop()


def test_sigterm_answers_every_queued_request_past_the_connection_limit(tmp_path, small_model_dir):
    # gunicorn stops reading its connections once it holds ``worker_connections``; the drain
    # accepts everything the kernel queued, so with more queued than that it used to hold
    # requests it never read, then close them unanswered (seen with a burst of connects).
    server = one_eager_worker(tmp_path, small_model_dir, GUNICORN_CMD_ARGS="--worker-connections 2")
    clients = [socket.create_connection(("127.0.0.1", server.port), timeout=30) for _ in range(6)]
    try:
        for i, client in enumerate(clients):
            client.sendall(b"".join(http_request(photo_bytes(i))))
        server.process.send_signal(signal.SIGTERM)
        answers = [read_response(c) for c in clients]
        assert [a.status for a in answers] == [200] * 6, server.log()[-3000:]
        assert all(json.loads(a.read())["count"] in range(1, 6) for a in answers)
        assert server.process.wait(15) == 0
    finally:
        for client in clients:
            client.close()
        server.stop()


def test_connections_that_never_send_cannot_hold_every_slot(tmp_path, small_model_dir):
    # gunicorn keeps a connection that never sends a byte for ever: ``worker_connections`` of
    # them and the worker accepted nothing more. They are closed after the read timeout.
    server = one_eager_worker(
        tmp_path,
        small_model_dir,
        BINCOUNTER_READ_TIMEOUT="1",
        GUNICORN_CMD_ARGS="--worker-connections 3",
    )
    silent = [socket.create_connection(("127.0.0.1", server.port), timeout=60) for _ in range(3)]
    late = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    try:
        late.sendall(b"".join(http_request(photo_bytes(1))))
        answer = read_response(late)  # waits until a slot is let go and the request is read
        assert answer.status == 200 and json.loads(answer.read())["count"] in range(1, 6)
        assert [c.recv(1) for c in silent] == [b""] * 3  # closed by the server, nothing sent
        assert_alive(server)
    finally:
        for client in (*silent, late):
            client.close()
        server.stop()


def test_environment_knobs_reach_the_server(tmp_path, small_model_dir):
    server = start_server(
        {
            "BINCOUNTER_MODEL_DIR": str(small_model_dir),
            "SAGEMAKER_MODEL_SERVER_WORKERS": "2",
            "SAGEMAKER_MODEL_SERVER_TIMEOUT": "30",
            "SAGEMAKER_MAX_PAYLOAD_IN_MB": "1",
        },
        tmp_path,
    )
    try:
        params = requests.get(f"{server.url}/execution-parameters", timeout=2).json()
        assert params == {
            "MaxConcurrentTransforms": 2 * 8,  # workers x batch size
            "BatchStrategy": "SINGLE_RECORD",
            "MaxPayloadInMB": 1,
        }
        assert len(server.live_worker_pids()) == 2
        # Two workers share the cores: compute threads per worker = cores / 2, never more.
        threads = max(1, cpu_count() // 2)
        assert f"2 worker(s) x {threads} compute thread(s)" in server.log()
        assert "payload limit 1 MB" in server.log()
        over = post(server, photo_bytes(0) + b"\x00" * (1024 * 1024))
        assert over.status_code == 413 and "1 MB" in over.json()["message"]
        assert_alive(server)
        # The refused body was drained, so no thread waits on that connection: a quick stop.
        stopping = time.monotonic()
        assert server.stop() == 0
        assert time.monotonic() - stopping < 10, server.log()[-2000:]
    finally:
        server.stop()


def wait_exit(server: Server, timeout: float = 90) -> int:
    try:
        return server.process.wait(timeout)
    finally:
        server.stop()


def test_missing_model_exits_with_a_clear_line(tmp_path):
    server = launch({"SAGEMAKER_BASE_DIR": str(tmp_path / "nothing")}, tmp_path)
    assert wait_exit(server) != 0
    assert "cannot serve: model directory" in server.log()


def test_mismatched_weights_exit_with_a_clear_line(tmp_path):
    model_dir = make_model_dir(tmp_path / "model", 64)
    (model_dir / "model.pt").write_bytes((model_dir / "model.pt").read_bytes() + b"x")
    server = launch({"BINCOUNTER_MODEL_DIR": str(model_dir)}, tmp_path)
    assert wait_exit(server) != 0
    assert "do not match the card's sha256" in server.log()


def test_weights_that_do_not_fit_the_network_stop_the_server(tmp_path):
    # Card and checksum are fine, the network is not: the worker fails, the container exits.
    model_dir = make_model_dir(tmp_path / "model", 64)
    card = json.loads((model_dir / CARD_FILE).read_text())
    card["arch"] = "resnet34"
    card["weights_sha256"] = sha256_file(model_dir / "model.pt")
    (model_dir / CARD_FILE).write_text(json.dumps(card))
    server = launch({"BINCOUNTER_MODEL_DIR": str(model_dir)}, tmp_path)
    assert wait_exit(server) != 0
    assert "cannot serve: model could not be loaded" in server.log()


def test_bad_knob_exits_naming_it(tmp_path, small_model_dir):
    server = launch(
        {"BINCOUNTER_MODEL_DIR": str(small_model_dir), "SAGEMAKER_MODEL_SERVER_WORKERS": "many"},
        tmp_path,
    )
    assert wait_exit(server) != 0
    assert "SAGEMAKER_MODEL_SERVER_WORKERS='many'" in server.log()
