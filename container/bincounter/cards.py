"""The model card and the weights' checksum, read without torch.

A model directory is ``model.pt`` (torch's ``state_dict``) and ``model_card.json``, which says
how to rebuild and feed the network and carries the weights' sha256 (``model`` writes both).
Reading and checking them lives here, apart from ``model``, because a server answering from the
OpenVINO files (``exported``) must do both without importing torch: the torch-free CPU serving
image has none.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import CLASSES
from .decision import HEADS, RULES
from .errors import ModelLoadError
from .files import sha256_file

WEIGHTS_FILE = "model.pt"
CARD_FILE = "model_card.json"


def load_card(model_dir: Path) -> dict[str, Any]:
    card_path = model_dir / CARD_FILE
    if not card_path.is_file():
        raise ModelLoadError(
            f"no model card at {card_path}: is {model_dir} the extracted model.tar.gz of a "
            "bincounter training job?"
        )
    try:
        card = json.loads(card_path.read_text())
    except ValueError as exc:
        raise ModelLoadError(f"model card {card_path} is not valid JSON: {exc}") from None
    missing = {"arch", "classes", "image_size", "weights_file", "weights_sha256"} - set(card)
    if missing:
        raise ModelLoadError(f"model card {card_path} lacks {sorted(missing)}")
    if list(card["classes"]) != list(CLASSES):
        raise ModelLoadError(f"model card {card_path} has classes {card['classes']}, not {CLASSES}")
    # Cards from before count-aware heads have neither key: a softmax head read by argmax.
    card.setdefault("head", "softmax")
    card.setdefault("decision", "argmax")
    if card["head"] not in HEADS or card["decision"] not in RULES:
        raise ModelLoadError(
            f"model card {card_path} has head {card['head']!r} / decision {card['decision']!r}; "
            f"this server knows heads {', '.join(HEADS)} and decisions {', '.join(RULES)}"
        )
    return card


def verify_model_files(model_dir: Path) -> tuple[dict[str, Any], Path]:
    """The card and the weights' path, once the weights are known to be the card's own.

    A card and weights from different runs would serve plausible but wrong answers, so the
    sha256 is checked before anything is built (and by a server before it binds its port).
    """
    card = load_card(model_dir)
    weights = model_dir / card["weights_file"]
    if not weights.is_file():
        raise ModelLoadError(f"model weights {weights} named by the card are missing")
    if sha256_file(weights) != card["weights_sha256"]:
        raise ModelLoadError(
            f"model weights {weights} do not match the card's sha256: the files come from "
            "different training runs or the download is damaged"
        )
    return card, weights
