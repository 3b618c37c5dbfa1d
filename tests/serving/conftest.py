"""Fixtures for the serving tests: models, an in-process app, and real gunicorn servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from bincounter.model import build_model, save_model
from bincounter.serving.app import close_app, create_app
from bincounter.serving.config import ServingConfig
from bincounter.serving.predictor import Predictor

from .launcher import Server, start_server


def make_model_dir(dest: Path, image_size: int, seed: int = 0) -> Path:
    """A model directory as ``train`` writes it, with seeded (untrained) weights: fast to make."""
    torch.manual_seed(seed)
    save_model(build_model("resnet18"), dest, arch="resnet18", image_size=image_size, extra={})
    return dest


@pytest.fixture(scope="session")
def small_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("small_model") / "model", 64)


@pytest.fixture(scope="session")
def predictor(small_model_dir: Path) -> Predictor:
    # Eager: the in-process tests check the HTTP contract, and freezing a ResNet graph costs
    # seconds. The frozen graph is checked in test_engines.py and served in test_server.py.
    return Predictor.load(small_model_dir, engine="eager", warmup_batch_sizes=(1, 2))


@pytest.fixture(scope="session")
def serving_config(small_model_dir: Path) -> ServingConfig:
    return ServingConfig.from_environment({"BINCOUNTER_MODEL_DIR": str(small_model_dir)})


@pytest.fixture(scope="session")
def client(serving_config: ServingConfig, predictor: Predictor):
    app = create_app(serving_config, predictor)
    app.testing = True
    yield app.test_client()
    close_app(app)


@pytest.fixture(scope="module")
def trained_server(
    trained_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The real server (``./serve``, gunicorn) on the model a real ``./train`` wrote."""
    # fp32: these tests compare the served probabilities with eager PyTorch's to 1e-4; bf16 and
    # int8 are checked by agreement in test_openvino.py.
    server = start_server(
        {"SAGEMAKER_BASE_DIR": str(trained_model_dir.parent), "BINCOUNTER_PRECISION": "fp32"},
        tmp_path_factory.mktemp("server_log"),
    )
    try:
        yield server
    finally:
        server.stop()
