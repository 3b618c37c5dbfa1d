"""The counting model and its on-disk form.

A torchvision ResNet whose first layer normalises ``uint8`` pixels with ImageNet statistics and
whose head gives the count's distribution (five logits, or CORAL's four cumulative ones: see
``counting``). On disk (``/opt/ml/model``) it is two files:
``model.pt``, a plain ``state_dict`` loadable with ``torch.load(weights_only=True)`` (no pickled
classes), and ``model_card.json``, which says how to rebuild and feed the network and carries
the sha256 of the weights so a server can refuse a mismatched pair.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from . import ARCHITECTURES, CLASSES, __version__
from .card import CARD_FILE, WEIGHTS_FILE, load_card, verify_model_files
from .counting import make_head
from .errors import ModelLoadError
from .files import atomic_path, atomic_write_json, sha256_file
from .imaging import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "CARD_FILE",
    "WEIGHTS_FILE",
    "load_card",
    "verify_model_files",
]  # torch-free: bincounter.card


class Normalize(nn.Module):
    """``uint8`` RGB in [0, 255] -> float normalised with ImageNet mean and std."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std


def _imagenet_weights(arch: str) -> torchvision.models.WeightsEnum:
    return torchvision.models.get_model_weights(arch).IMAGENET1K_V1


def pretrained_weights_path(arch: str) -> Path:
    """Where torchvision caches (and the image bakes) the ImageNet weights of ``arch``."""
    url = _imagenet_weights(arch).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def download_pretrained(arch: str) -> Path:
    """Fetch ImageNet weights into the torch cache (used at image build time)."""
    _imagenet_weights(arch).get_state_dict(progress=False)
    return pretrained_weights_path(arch)


def build_model(arch: str, pretrained: bool = False, head: str = "softmax") -> nn.Module:
    """ResNet ``arch`` with a count head (``counting.HEADS``); ImageNet weights if asked.

    Pretrained weights are read from the torch cache only, never downloaded here: training
    jobs may run with network isolation, and a hidden download is a hidden failure mode.
    """
    if arch not in ARCHITECTURES:
        raise ModelLoadError(f"unknown architecture {arch!r}; allowed: {', '.join(ARCHITECTURES)}")
    backbone = torchvision.models.get_model(arch, weights=None)
    if pretrained:
        path = pretrained_weights_path(arch)
        if not path.is_file():
            raise ModelLoadError(
                f"pretrained=true but the ImageNet weights for {arch} are not in the torch cache "
                f"({path}); build the image with weights baked in (the default), run "
                f"'bincounter download-weights {arch}' where there is internet, or set "
                "pretrained=false"
            )
        try:
            backbone.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as exc:
            raise ModelLoadError(f"ImageNet weights at {path} could not be loaded: {exc}") from None
    backbone.fc = make_head(head, backbone.fc.in_features)
    return nn.Sequential(Normalize(), backbone)


def library_versions() -> dict[str, str]:
    import numpy
    import PIL

    return {
        "bincounter": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
    }


def save_model(
    model: nn.Module,
    model_dir: Path,
    *,
    arch: str,
    image_size: int,
    extra: dict[str, Any],
    head: str = "softmax",
    decision: str = "argmax",
) -> dict[str, Any]:
    """Write weights then card into ``model_dir``; the card is written last, atomically.

    A server treats a missing card as "no model", so a crash between the two leaves nothing
    that looks complete.
    """
    model_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in unwrap(model).state_dict().items()}
    # Saved through a file object: given a path, torch.save names the archive's records after
    # the (random) temporary file, and the same weights would give other bytes and checksums.
    with atomic_path(model_dir / WEIGHTS_FILE) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)
    card = {
        "format": "bincounter-model/1",
        "arch": arch,
        "classes": list(CLASSES),
        # How outputs become 5 probabilities, and those a count (bincounter.counting).
        "head": head,
        "decision": decision,
        "image_size": image_size,
        "input": "RGB uint8, whole photo resized to image_size x image_size (no crop)",
        "normalization": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "scale": 255},
        "weights_file": WEIGHTS_FILE,
        "weights_sha256": sha256_file(model_dir / WEIGHTS_FILE),
        "library_versions": library_versions(),
        **extra,
    }
    atomic_write_json(model_dir / CARD_FILE, card)
    return card


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DDP / torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def load_model(model_dir: Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network from ``model_dir`` in eval mode, verifying the weights' checksum."""
    card, weights = verify_model_files(model_dir)
    model = build_model(card["arch"], pretrained=False, head=card["head"])
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:
        raise ModelLoadError(f"model weights {weights} could not be loaded: {exc}") from None
    return model.eval(), card
