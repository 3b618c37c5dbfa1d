"""What gunicorn is given: settings from the one ``ServingConfig``, options on top, and hooks.

Built in-process (gunicorn parses its options here, nothing is started): milliseconds each.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from flask import Flask

from bincounter.serving.batcher import Batcher
from bincounter.serving.config import ServingConfig
from bincounter.serving.gunicorn_conf import settings
from bincounter.serving.server import ModelServer


@pytest.fixture
def config(tmp_path: Path) -> ServingConfig:
    return ServingConfig.from_environment(
        {
            "BINCOUNTER_MODEL_DIR": str(tmp_path),
            "SAGEMAKER_MODEL_SERVER_WORKERS": "2",
            "SAGEMAKER_MODEL_SERVER_TIMEOUT": "30",
            "BINCOUNTER_HTTP_THREADS": "5",
            "BINCOUNTER_ACCESS_LOG": "true",
        }
    )


def gunicorn_config(config: ServingConfig, argv: list[str], monkeypatch, tmp_path: Path):
    monkeypatch.chdir(tmp_path)  # gunicorn would read a gunicorn.conf.py found there
    monkeypatch.setattr(sys, "path", list(sys.path))  # and puts the directory on sys.path
    monkeypatch.setattr(sys, "argv", ["bincounter serve", *argv])
    monkeypatch.delenv("GUNICORN_CMD_ARGS", raising=False)
    return ModelServer(config).cfg


def test_gunicorn_settings_come_from_the_config(config, monkeypatch, tmp_path):
    cfg = gunicorn_config(config, [], monkeypatch, tmp_path)
    assert cfg.bind == ["0.0.0.0:8080"]
    assert (cfg.workers, cfg.threads, cfg.timeout) == (2, 5, 30)
    assert (
        cfg.worker_class_str == "bincounter.serving.draining.DrainingWorker" and not cfg.preload_app
    )
    assert cfg.graceful_timeout == 20 and cfg.keepalive == 5
    assert cfg.accesslog == "-" and cfg.loglevel == "info"


@pytest.mark.parametrize(
    ("argv", "setting", "value"),
    [
        (["--bind", "127.0.0.1:9000"], "bind", ["127.0.0.1:9000"]),
        (["--threads", "3"], "threads", 3),
        (["-w", "1"], "workers", 1),
    ],
)
def test_command_line_options_override_the_config(
    config, monkeypatch, tmp_path, argv, setting, value
):
    cfg = gunicorn_config(config, argv, monkeypatch, tmp_path)
    assert getattr(cfg, setting) == value
    assert cfg.timeout == 30  # the rest still comes from the config


class Ones:
    def predict_pixels(self, images):
        return np.ones((len(images), 5)) / 5


def test_worker_exit_closes_the_batcher(config):
    worker_exit = settings(config)["worker_exit"]
    app = Flask(__name__)
    batcher = Batcher(Ones)
    app.extensions["bincounter"] = {"batcher": batcher}
    worker_exit(None, SimpleNamespace(pid=1, wsgi=app))
    assert batcher.closed
    worker_exit(None, SimpleNamespace(pid=2))  # a worker whose app never loaded
