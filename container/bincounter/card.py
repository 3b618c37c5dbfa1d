"""The model card's schema, checked as a whole before anything it names is opened.

A model folder comes from outside the server (an S3 ``model.tar.gz``, a registry, a hand
edit), so its card is input like any other: a field of the wrong type must be a
``ModelLoadError`` naming the field, never a ``KeyError`` traceback at start or a model served
at ``image_size="big"``, and every file it names must be a plain name inside the model folder
(``weights_file: "../../etc/hostname"`` with a matching sha256 passes a checksum). Fields the
card carries besides these (metrics, hyperparameters, versions) are kept as they are.

What is checked here, once: the fields ``save_model`` writes that loading relies on, and the
file entries of the OpenVINO section (``bincounter.openvino_ir``); what the values mean (the
weights' checksum, the IR's accuracy) stays with their owners. Reading the card and checking the
weights' sha256 live here too, apart from ``model``, so that a server answering from the
OpenVINO files does both without importing torch (the CPU serving image has none).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
)

from . import ARCHITECTURES, CLASSES
from .decision import HEADS, RULES
from .errors import ModelLoadError
from .files import sha256_file
from .params import CARD_DEFAULTS

WEIGHTS_FILE = "model.pt"
CARD_FILE = "model_card.json"

#: Larger than any input the product trains at (224-512): a card asking more is broken.
MAX_IMAGE_SIZE = 4096


def _plain_file_name(value: str) -> str:
    if value in ("", ".", "..") or any(c in value for c in "/\\\0"):
        raise ValueError(f"{value!r} is not a plain file name in the model folder")
    return value


FileName = Annotated[StrictStr, AfterValidator(_plain_file_name)]
Sha256 = Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{64}$")]


class _Section(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class IRFileEntry(_Section):
    xml: FileName
    bin: FileName
    xml_sha256: Sha256
    bin_sha256: Sha256


class CheckSetEntry(_Section):
    file: FileName
    sha256: Sha256
    photos: StrictInt | None = None


class IRFiles(_Section):
    fp32: IRFileEntry | None = None
    int8: IRFileEntry | None = None


class OpenVINOSection(_Section):
    files: IRFiles | None = None
    check_set: CheckSetEntry | None = None


Finite = Annotated[float, Field(allow_inf_nan=False)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class CalibrationFit(_Section):
    """What the server applies to every answer: a card asking for a zero temperature or four
    biases would turn every request into a 500, so it is refused at start-up instead."""

    temperature: Finite = Field(default=1.0, gt=0.0)
    bias: list[Finite] | None = Field(default=None, min_length=5, max_length=5)
    confidence_thresholds: dict[str, Probability | None] | None = None


class CalibrationSection(CalibrationFit):
    tta8: CalibrationFit | None = None


class VerdictThresholds(_Section):
    mismatch: Probability
    match: Probability


class VerificationFit(_Section):
    mismatch_rate: float = Field(default=0.1, gt=0.0, lt=1.0)
    thresholds: VerdictThresholds | None = None


class VerificationSection(VerificationFit):
    tta8: VerificationFit | None = None


class ModelCard(_Section):
    """The card's fields that loading and serving rely on; cards from before count-aware
    heads have neither ``head`` nor ``decision``: a softmax head read by argmax."""

    format: StrictStr | None = None
    arch: Literal[ARCHITECTURES]  # type: ignore[valid-type]
    classes: list[StrictInt]
    head: Literal[HEADS] = CARD_DEFAULTS["head"]  # type: ignore[valid-type]
    decision: Literal[RULES] = CARD_DEFAULTS["decision"]  # type: ignore[valid-type]
    image_size: StrictInt = Field(gt=0, le=MAX_IMAGE_SIZE)
    weights_file: FileName
    weights_sha256: Sha256
    openvino: OpenVINOSection | None = None
    calibration: CalibrationSection | None = None
    verification: VerificationSection | None = None


def card_files(card: dict[str, Any]) -> dict[str, str]:
    """Every file a (validated) card names, by the field that names it."""
    files = {"weights_file": card["weights_file"]}
    section = card.get("openvino") or {}
    for which, entry in (section.get("files") or {}).items():
        if entry:
            files[f"openvino.files.{which}.xml"] = entry["xml"]
            files[f"openvino.files.{which}.bin"] = entry["bin"]
    if section.get("check_set"):
        files["openvino.check_set.file"] = section["check_set"]["file"]
    return files


def validate_card(raw: Any, model_dir: Path, card_path: Path) -> dict[str, Any]:
    """The card as a dict with defaults filled in, once it fits ``ModelCard`` and every file
    it names resolves inside ``model_dir`` (a symlink out of it is refused too).

    ``ModelLoadError`` names the card, the first field that is wrong and why.
    """
    if not isinstance(raw, dict):
        raise ModelLoadError(f"model card {card_path} holds a {type(raw).__name__}, not an object")
    try:
        ModelCard.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "(card)"
        shown = error["type"] not in ("missing", "value_error")
        value = f" (got {error['input']!r:.80})" if shown else ""
        more = f"; and {exc.error_count() - 1} more" if exc.error_count() > 1 else ""
        raise ModelLoadError(
            f"model card {card_path}: field '{field}': "
            f"{error['msg'].removeprefix('Value error, ')}{value}{more}"
        ) from None
    card = {**CARD_DEFAULTS, **raw}
    if list(card["classes"]) != list(CLASSES):
        raise ModelLoadError(
            f"model card {card_path}: field 'classes' is {card['classes']}, not {list(CLASSES)}"
        )
    root = model_dir.resolve()
    for field, name in card_files(card).items():
        if not (model_dir / name).resolve().is_relative_to(root):
            raise ModelLoadError(
                f"model card {card_path}: field '{field}': {name!r} resolves outside the model "
                f"folder {model_dir}"
            )
    return card


def load_card(model_dir: Path) -> dict[str, Any]:
    """The model card of ``model_dir``, checked whole (``validate_card``), without torch: a
    server answering from the OpenVINO files reads it in an image that has none."""
    card_path = model_dir / CARD_FILE
    if not card_path.is_file():
        raise ModelLoadError(
            f"no model card at {card_path}: is {model_dir} the extracted model.tar.gz of a "
            "bincounter training job?"
        )
    try:
        card = json.loads(card_path.read_text())
    except (ValueError, RecursionError) as exc:
        raise ModelLoadError(f"model card {card_path} is not valid JSON: {exc}") from None
    return validate_card(card, model_dir, card_path)


def served_card(card: dict[str, Any], tta: int) -> dict[str, Any]:
    """The card as a server averaging ``tta`` variants answers from: its ``calibration`` and
    ``verification`` sections replaced by their ``tta<N>`` parts (fitted by the training job on
    those averaged probabilities, which are less sure than one pass's). A card without them
    (trained before) is returned as it is: its single-pass calibration.
    """
    if tta == 1:
        return card
    key = f"tta{tta}"
    served = dict(card)
    for name in ("calibration", "verification"):
        section = card.get(name)
        if isinstance(section, dict) and isinstance(section.get(key), dict):
            served[name] = {**section, **section[key]}
    return served


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
