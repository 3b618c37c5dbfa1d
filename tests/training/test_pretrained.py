"""``pretrained=true`` for real: ImageNet-format weights where torchvision caches them, a job that
loads them (never downloading) and trains from them; and without them, a clear failure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision

from bincounter.model import WEIGHTS_FILE

from support import QUICK_HPS, build_tree, run_train

pytestmark = pytest.mark.slow

#: The exact file torchvision's ``ResNet18_Weights.IMAGENET1K_V1`` is cached as.
EXPECTED_NAME = "resnet18-f37072fd.pth"


def test_pretrained_weights_from_the_torch_cache_are_loaded_and_trained(tmp_path: Path) -> None:
    torch_home = tmp_path / "torch_home"
    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    # A real torchvision resnet18 state dict (seeded init: the test has no internet), saved
    # under the name torchvision's IMAGENET1K_V1 weights have in its cache.
    torch.manual_seed(1234)
    weights = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(weights, checkpoints / EXPECTED_NAME)
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    assert Path(url).name == EXPECTED_NAME

    # lr so small that one epoch cannot move the backbone visibly: what is saved is the file.
    hps = {**QUICK_HPS, "pretrained": "true", "epochs": "1", "lr": "1e-9", "ema_decay": "0"}
    base = build_tree(tmp_path / "opt_ml", hps, {"train": 4, "validation": 2})
    result = run_train(base, TORCH_HOME=str(torch_home))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    card = json.loads((base / "model" / "model_card.json").read_text())
    assert card["hyperparameters"]["pretrained"] is True
    saved = torch.load(base / "model" / WEIGHTS_FILE, weights_only=True)
    for name in ("conv1.weight", "layer4.1.conv2.weight"):
        torch.testing.assert_close(saved[f"1.{name}"], weights[name], atol=1e-6, rtol=0)
    torch.manual_seed(0)
    fresh = torchvision.models.resnet18(weights=None).state_dict()["conv1.weight"]
    assert not torch.allclose(saved["1.conv1.weight"], fresh)


def test_pretrained_without_cached_weights_fails_naming_the_path(tmp_path: Path) -> None:
    torch_home = tmp_path / "empty_torch_home"
    hps = {**QUICK_HPS, "pretrained": "true", "epochs": "1"}
    base = build_tree(tmp_path / "opt_ml", hps, {"train": 2, "validation": 1})
    result = run_train(base, TORCH_HOME=str(torch_home))
    assert result.returncode != 0
    failure = (base / "output" / "failure").read_text()
    assert "pretrained=true" in failure and EXPECTED_NAME in failure
    assert str(torch_home / "hub" / "checkpoints" / EXPECTED_NAME) in failure
