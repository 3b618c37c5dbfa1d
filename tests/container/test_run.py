"""SageMaker's container contract, run for real: ``docker run IMAGE train`` then ``serve``.

Training runs on real ABID photos in a ``/opt/ml`` tree mounted as SageMaker mounts it, with no
network (as a job with network isolation). Its ``/opt/ml/model`` is packed the way SageMaker
packs it (``tar czf model.tar.gz -C model .``), extracted into a fresh tree and served on a
loopback port.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import REPORT, docker, materialize, wait_for

from support import ABID, QUICK_HPS, build_tree, free_port

pytestmark = [pytest.mark.container, pytest.mark.slow]

#: Seconds from ``docker run ... serve`` to the first 200 on /ping. SageMaker allows minutes;
#: anything near this bound on a 2-core runner is worth a look.
STARTUP_BUDGET_S = 60
#: ``docker stop`` sends SIGTERM, then SIGKILL after 10 s: signals must reach gunicorn (an
#: exit status of 0, not 137) and an idle server must be gone well before the SIGKILL.
STOP_BUDGET_S = 8


def http(method: str, url: str, body: bytes | None = None, content_type: str | None = None):
    """(status, body bytes) of one request; HTTP errors are answers too."""
    request = urllib.request.Request(url, data=body, method=method)
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def original_photo() -> tuple[bytes, int]:
    """A full-size photo, as an endpoint receives it, and its count."""
    line = (ABID / "original.csv").read_text().splitlines()[1]
    image_id, count = line.split(",")[:2]
    return (ABID / "original" / f"{image_id}.jpg").read_bytes(), int(count)


@pytest.fixture(scope="module")
def trained(image: str, tmp_path_factory: pytest.TempPathFactory, request) -> dict:
    """One ``docker run -v tree:/opt/ml IMAGE train`` on real photos (shared by the module)."""
    tree = tmp_path_factory.mktemp("opt_ml_train")
    build_tree(tree, QUICK_HPS, {"train": 12, "validation": 6})
    materialize(tree / "input" / "data")
    name = f"bincounter-test-train-{time.monotonic_ns()}"
    request.addfinalizer(lambda: docker("rm", "-f", name, check=False, timeout=60))
    started = time.monotonic()
    result = docker(
        "run", "--name", name, "--network", "none", "-v", f"{tree}:/opt/ml", image, "train",
        timeout=1200, check=False,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    REPORT["docker run train (60 photos, 2 epochs)"] = f"{elapsed:.0f} s"
    return {"tree": tree, "result": result}


def test_train_writes_a_model_with_network_isolation(trained: dict) -> None:
    tree, result = trained["tree"], trained["result"]
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert not (tree / "output" / "failure").exists()
    model = tree / "model"
    assert (model / "model.pt").stat().st_size > 1_000_000
    card = json.loads((model / "model_card.json").read_text())
    assert card["hyperparameters"]["epochs"] == 2
    assert (tree / "output" / "data" / "metrics.json").is_file()
    # metric lines reach docker's log unbuffered, as CloudWatch would read them
    assert "validation:accuracy=" in result.stdout + result.stderr


def test_train_failure_is_reported_in_the_failure_file(
    image: str, tmp_path: Path, container_names
) -> None:
    tree = tmp_path / "opt_ml"
    build_tree(tree, {**QUICK_HPS, "epochs": "0"}, {"train": 1, "validation": 1})
    materialize(tree / "input" / "data")
    result = docker(
        "run", "--name", container_names("fail"), "--network", "none",
        "-v", f"{tree}:/opt/ml", image, "train", check=False, timeout=300,
    )  # fmt: skip
    assert result.returncode != 0
    reason = (tree / "output" / "failure").read_text().splitlines()[0]
    assert "epochs" in reason
    assert not (tree / "model" / "model.pt").exists()


@pytest.fixture(scope="module")
def model_tar(trained: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``/opt/ml/model`` packed as SageMaker packs it."""
    assert trained["result"].returncode == 0, "training failed: see the training test"
    out = tmp_path_factory.mktemp("artifact") / "model.tar.gz"
    subprocess.run(["tar", "czf", str(out), "-C", str(trained["tree"] / "model"), "."], check=True)
    return out


def test_model_tar_has_the_files_at_its_root(model_tar: Path) -> None:
    with tarfile.open(model_tar) as tar:
        names = {Path(n).as_posix().removeprefix("./") for n in tar.getnames()}
    assert {"model.pt", "model_card.json"} <= names


@pytest.fixture(scope="module")
def server(image: str, model_tar: Path, tmp_path_factory: pytest.TempPathFactory, request):
    """``docker run -p 127.0.0.1:<port>:8080 IMAGE serve`` on a fresh tree holding the model."""
    tree = tmp_path_factory.mktemp("opt_ml_serve")
    (tree / "model").mkdir()
    with tarfile.open(model_tar) as tar:
        tar.extractall(tree / "model", filter="data")
    port = free_port()
    name = f"bincounter-test-serve-{time.monotonic_ns()}"
    request.addfinalizer(lambda: docker("rm", "-f", name, check=False, timeout=60))
    started = time.monotonic()
    docker(
        "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080",
        # SageMaker mounts the extracted model read-only
        "-v", f"{tree / 'model'}:/opt/ml/model:ro", image, "serve",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def pinged() -> bool:
        try:
            return http("GET", f"{url}/ping")[0] == 200
        except OSError:
            return False

    up = wait_for(pinged, timeout=STARTUP_BUDGET_S, interval=0.2)
    startup = time.monotonic() - started
    logs = docker("logs", name, check=False).stdout + docker("logs", name, check=False).stderr
    assert up, f"/ping not 200 within {STARTUP_BUDGET_S} s; container log:\n{logs[-4000:]}"
    REPORT["serve: docker run to first /ping 200"] = f"{startup:.1f} s"
    return {"name": name, "url": url, "startup": startup}


def test_ping_within_the_startup_budget(server: dict) -> None:
    status, _ = http("GET", f"{server['url']}/ping")
    assert status == 200
    assert server["startup"] < STARTUP_BUDGET_S


def test_invocations_answer_a_real_photo(server: dict) -> None:
    photo, _ = original_photo()
    status, body = http("POST", f"{server['url']}/invocations", photo, "image/jpeg")
    assert status == 200, body
    answer = json.loads(body)
    assert answer["count"] in {1, 2, 3, 4, 5}
    assert abs(sum(answer["probabilities"].values()) - 1) < 1e-6


@pytest.mark.parametrize(
    ("body", "content_type", "status", "error"),
    [
        (b"these bytes are not a photo", "image/jpeg", 400, "bad_image"),
        (b'{"instances": "nope"}', "application/json", 400, "bad_json_schema"),
        (b"x", "text/csv", 415, "unsupported_content_type"),
    ],
    ids=["not-a-jpeg", "bad-json", "unsupported-type"],
)
def test_bad_body_gets_its_4xx(
    server: dict, body: bytes, content_type: str, status: int, error: str
) -> None:
    got, answer = http("POST", f"{server['url']}/invocations", body, content_type)
    assert got == status, answer
    assert json.loads(answer)["error"] == error
    assert http("GET", f"{server['url']}/ping")[0] == 200, "the server must live on"


def test_docker_stop_returns_in_seconds(server: dict) -> None:
    """Last in the module: SIGTERM reaches gunicorn through tini and it exits promptly."""
    started = time.monotonic()
    docker("stop", server["name"], timeout=60)
    elapsed = time.monotonic() - started
    REPORT["serve: docker stop"] = f"{elapsed:.1f} s"
    assert elapsed < STOP_BUDGET_S, f"docker stop took {elapsed:.1f} s (SIGKILL after 10 s)"
    state = json.loads(docker("inspect", "-f", "{{json .State}}", server["name"]).stdout)
    assert state["ExitCode"] == 0, state
