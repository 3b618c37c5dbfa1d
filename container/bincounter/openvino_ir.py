"""The model's OpenVINO forms on disk, and the card section that vouches for them.

A training job can leave, next to ``model.pt``, the network as OpenVINO IR in float32
(``model.xml`` + ``model.bin``) and post-training-quantized int8 (``model_int8.xml`` + ``.bin``),
plus a *check set*: a few dozen validation photos as ``uint8`` pixels, on which a server checks
that a reduced-precision engine still picks the same counts as eager PyTorch. Why ship files a
server could make itself: reading IR is a fraction of a second, converting the network at start
takes many seconds, and quantizing needs calibration photos a server does not have.

The card's ``"openvino"`` section names each file with its sha256, so a server refuses a
mismatched file exactly as it refuses mismatched weights; it also records int8 and float32
accuracy and RMSE on validation (and test, when given): a server serves int8 only when the
card shows it within ``INT8_MAX_ACCURACY_DROP`` of float32 on validation. A model without the
section (trained before it existed, or with the export turned off) is still served: the server
converts the network at start.

Writing needs ``openvino`` (and ``nncf`` for int8, in the training job); reading the card and
checking files needs neither, so a server's arbiter can check them without importing either.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelLoadError
from .files import atomic_path, sha256_file

CARD_KEY = "openvino"
FP32_XML = "model.xml"
INT8_XML = "model_int8.xml"
CHECK_SET_FILE = "check_photos.npz"
#: The check set's array of the trained network's float32 outputs (logits) on its photos.
REFERENCE_KEY = "fp32_outputs"
#: Names served by ``BINCOUNTER_PRECISION`` (``auto``: bf16 where the CPU has it natively).
PRECISIONS = ("auto", "fp32", "bf16", "int8")
#: int8 is served only if its validation accuracy is at most this far below float32 (0.5 points).
INT8_MAX_ACCURACY_DROP = 0.005


def section(card: dict[str, Any]) -> dict[str, Any]:
    """The card's OpenVINO section, ``{}`` when the model has none."""
    value = card.get(CARD_KEY)
    return value if isinstance(value, dict) else {}


def ir_files(card: dict[str, Any], which: str) -> dict[str, str] | None:
    """``{"xml", "bin", "xml_sha256", "bin_sha256"}`` of the ``fp32`` or ``int8`` IR, if listed."""
    entry = section(card).get("files", {}).get(which)
    return entry if isinstance(entry, dict) else None


def verify_exported(model_dir: Path, card: dict[str, Any]) -> None:
    """Every file the card's OpenVINO section lists is present and is the card's own.

    Raises ``ModelLoadError`` naming the first that is not, as ``verify_model_files`` does for
    the weights: an IR from another run would serve plausible but wrong answers.
    """
    listed: list[tuple[str, str]] = []
    for which in ("fp32", "int8"):
        entry = ir_files(card, which)
        if entry:
            listed += [(entry["xml"], entry["xml_sha256"]), (entry["bin"], entry["bin_sha256"])]
    check = section(card).get("check_set")
    if isinstance(check, dict):
        listed.append((check["file"], check["sha256"]))
    for name, digest in listed:
        path = model_dir / name
        if not path.is_file():
            raise ModelLoadError(f"{path}, listed in the model card, is missing")
        if sha256_file(path) != digest:
            raise ModelLoadError(
                f"{path} does not match the card's sha256: the files come from different "
                "training runs or the download is damaged"
            )


def load_check_set(model_dir: Path, card: dict[str, Any]) -> np.ndarray | None:
    """The card's check photos, ``uint8 [N, 3, S, S]``, or ``None`` when the model has none."""
    check = section(card).get("check_set")
    if not isinstance(check, dict):
        return None
    with np.load(model_dir / check["file"]) as data:
        images = data["images"]
    size = int(card["image_size"])
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (3, size, size):
        raise ModelLoadError(
            f"check set {check['file']} holds {images.dtype} {images.shape}, not uint8 "
            f"[N, 3, {size}, {size}]"
        )
    return images


def load_reference_outputs(model_dir: Path, card: dict[str, Any]) -> np.ndarray | None:
    """The trained network's float32 outputs on the check photos, ``None`` if not recorded.

    Written by the training job beside the photos (``REFERENCE_KEY``), so a server checks its
    engine against them without importing torch or building the network.
    """
    check = section(card).get("check_set")
    if not isinstance(check, dict) or check.get("reference") != REFERENCE_KEY:
        return None
    with np.load(model_dir / check["file"]) as data:
        outputs = data[REFERENCE_KEY] if REFERENCE_KEY in data.files else None
    if outputs is None or outputs.ndim != 2 or len(outputs) != int(check["photos"]):
        raise ModelLoadError(
            f"check set {check['file']} lacks the reference outputs its card lists"
        )
    return outputs.astype(np.float32)


def save_check_set(
    model_dir: Path, images: np.ndarray, labels: np.ndarray, outputs: np.ndarray | None = None
) -> dict[str, Any]:
    """Write the check photos (``uint8 [N, 3, S, S]``), and the network's float32 ``outputs``
    on them when given, and return their card entry (its sha256 covers both)."""
    path = model_dir / CHECK_SET_FILE
    arrays = {"images": images.astype(np.uint8), "labels": labels.astype(np.int64)}
    if outputs is not None:
        arrays[REFERENCE_KEY] = outputs.astype(np.float32)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)
    entry = {"file": CHECK_SET_FILE, "sha256": sha256_file(path), "photos": len(images)}
    return entry if outputs is None else {**entry, "reference": REFERENCE_KEY}


def int8_refusal(card: dict[str, Any]) -> str | None:
    """Why this model's int8 IR may not be served, or ``None`` if it may."""
    if ir_files(card, "int8") is None:
        own = section(card).get("int8")
        reason = section(card).get("skipped") or (own or {}).get("skipped")
        return "the model has no int8 IR" + (f" ({reason})" if reason else "")
    validation = section(card).get("int8", {}).get("validation", {})
    try:
        fp32, int8 = float(validation["fp32_accuracy"]), float(validation["int8_accuracy"])
    except (KeyError, TypeError, ValueError):
        return "the model card records no int8 and fp32 validation accuracy"
    if fp32 - int8 > INT8_MAX_ACCURACY_DROP + 1e-12:
        return (
            f"int8 validation accuracy {int8:.4f} is {100 * (fp32 - int8):.2f} points below "
            f"fp32 {fp32:.4f} (at most {100 * INT8_MAX_ACCURACY_DROP:g} allowed)"
        )
    return None


# --------------------------------------------------------------------------- needs openvino


def convert(module: Any, image_size: int) -> Any:
    """torch module (``uint8 [N, 3, S, S]`` in, logits out) -> ``openvino.Model``, any batch.

    The model's own ``Normalize`` goes into the graph, so the IR takes ``uint8`` pixels as
    serving has them.
    """
    import warnings

    import openvino as ov
    import torch

    example = torch.zeros((1, 3, image_size, image_size), dtype=torch.uint8)
    with torch.no_grad(), warnings.catch_warnings():
        # The converter traces with TorchScript, which warns that it is deprecated upstream.
        warnings.simplefilter("ignore", FutureWarning)
        model = ov.convert_model(
            module.eval(),
            example_input=example,
            input=[(ov.PartialShape([-1, 3, image_size, image_size]), ov.Type.u8)],
        )
    model.inputs[0].get_tensor().set_names({"image"})
    model.outputs[0].get_tensor().set_names({"logits"})
    return model


def save_ir(model: Any, model_dir: Path, xml_name: str) -> dict[str, str]:
    """Write ``model`` as IR (float weights kept float32) and return its card entry.

    ``compress_to_fp16=False``: OpenVINO's default stores weights as fp16, which would change
    float32 answers. Written under a temporary name then renamed, so a crash never leaves a
    half IR that looks complete.
    """
    import openvino as ov

    xml = model_dir / xml_name
    # The .bin is renamed first: an .xml on disk always has its whole .bin beside it.
    with atomic_path(xml, suffix=".xml") as tmp:
        try:
            ov.save_model(model, tmp, compress_to_fp16=False)
            os.replace(tmp.with_suffix(".bin"), xml.with_suffix(".bin"))
        finally:
            tmp.with_suffix(".bin").unlink(missing_ok=True)
    return {
        "xml": xml.name,
        "bin": xml.with_suffix(".bin").name,
        "xml_sha256": sha256_file(xml),
        "bin_sha256": sha256_file(xml.with_suffix(".bin")),
    }
