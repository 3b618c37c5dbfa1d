"""Serving without torch (issue 24.1): the real server, with ``import torch`` made impossible.

A ``sitecustomize`` on the server's ``PYTHONPATH`` puts a finder first on ``sys.meta_path`` that
refuses torch, in the arbiter and in every worker forked from it: exactly what the torch-free
CPU serving image gives. The model is the session's real ``./train`` output (OpenVINO export
on), whose check set records the trained network's outputs. Also: a JSON batch of hundreds of
photos (an asynchronous endpoint's body) answered with the worker's peak memory measured.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import requests

from bincounter import openvino_ir
from bincounter.model import CARD_FILE

from .inputs import b64_batch, original_paths
from .launcher import Server, launch, start_server

pytestmark = pytest.mark.slow

BLOCK_TORCH = '''
import sys


class _NoTorch:
    """Refuses torch as an image without it would: ModuleNotFoundError."""

    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch.") or name == "torchvision":
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None


sys.meta_path.insert(0, _NoTorch())
'''


@pytest.fixture(scope="module")
def no_torch_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("no_torch")
    (folder / "sitecustomize.py").write_text(BLOCK_TORCH)
    from support import REPO

    return {"PYTHONPATH": f"{folder}:{REPO / 'container'}", "SAGEMAKER_MODEL_SERVER_WORKERS": "1"}


@pytest.fixture(scope="module")
def torch_free_server(trained_model_dir: Path, no_torch_env, tmp_path_factory):
    card = json.loads((trained_model_dir / CARD_FILE).read_text())
    assert openvino_ir.section(card)["check_set"]["reference"] == openvino_ir.REFERENCE_KEY
    server = start_server(
        {
            **no_torch_env,
            "SAGEMAKER_BASE_DIR": str(trained_model_dir.parent),
            # Async limits, as the launch side sets them for an asynchronous endpoint.
            "SAGEMAKER_MAX_PAYLOAD_IN_MB": "100",
            "SAGEMAKER_MODEL_SERVER_TIMEOUT": "600",
            "BINCOUNTER_MAX_INSTANCES": "1000",
        },
        tmp_path_factory.mktemp("torch_free_log"),
    )
    try:
        yield server
    finally:
        server.stop()


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_the_server_answers_real_photos_without_torch(torch_free_server: Server):
    log = torch_free_server.log()
    assert "ready on openvino-" in log, log[-3000:]
    (worker,) = torch_free_server.live_worker_pids()
    maps = Path(f"/proc/{worker}/maps").read_text()
    assert "libtorch" not in maps and "model.pt" not in maps
    for path in original_paths()[:8]:
        answer = requests.post(
            f"{torch_free_server.url}/invocations",
            data=path.read_bytes(),
            headers={"Content-Type": "image/jpeg"},
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        assert 1 <= answer.json()["count"] <= 5


def test_hundreds_of_photos_in_one_body_are_answered_in_chunks(torch_free_server: Server):
    """300 original-size photos: the worker's peak RSS grows by about the body, not by the
    300 decoded photos it would hold if it decoded all before inferring."""
    (worker,) = torch_free_server.live_worker_pids()
    photos = [p.read_bytes() for p in (original_paths() * 2)[:300]]
    body = b64_batch(*photos)
    before = peak_rss_mb(worker)
    answer = requests.post(
        f"{torch_free_server.url}/invocations",
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=600,
    )
    assert answer.status_code == 200, answer.text[:500]
    predictions = answer.json()["predictions"]
    assert len(predictions) == 300
    assert all(1 <= p["count"] <= 5 for p in predictions)
    growth = peak_rss_mb(worker) - before
    body_mb = len(body) / 2**20
    # Copies of about the body each: the intake's buffer (let go as it is read), the body the
    # app reads, its JSON text and the photos' bytes (measured +94 MB for a 23.5 MB body;
    # +163 MB when gunicorn's unreader held copies of it); plus one chunk's pixels and the
    # engine's working memory.
    print(f"300 photos, body {body_mb:.1f} MB: worker peak RSS +{growth:.1f} MB")
    assert growth < 4 * body_mb + 64, (growth, body_mb)


def test_a_model_without_openvino_files_is_refused_naming_the_full_image(
    trained_model_dir: Path, no_torch_env, tmp_path: Path
):
    model = Path(shutil.copytree(trained_model_dir, tmp_path / "model"))
    card = json.loads((model / CARD_FILE).read_text())
    card.pop(openvino_ir.CARD_KEY)
    (model / CARD_FILE).write_text(json.dumps(card))
    server = launch({**no_torch_env, "SAGEMAKER_BASE_DIR": str(tmp_path)}, tmp_path)
    try:
        assert server.process.wait(60) == 1
    finally:
        server.stop()
    log = server.log()
    assert "has no OpenVINO files" in log and "full bincounter image" in log, log[-2000:]
    assert "Traceback" not in log
