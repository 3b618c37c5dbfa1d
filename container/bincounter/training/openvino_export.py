"""The end of a training job: the model's OpenVINO forms, for a server that starts in a second.

Run once, on rank 0, after ``model.pt`` and its card are written. It adds to the model
directory (file names and card section in ``bincounter.openvino_ir``):

* the float32 IR, so a server reads the network instead of converting it at start;
* a check set: ``CHECK_PHOTOS`` validation photos as ``uint8`` pixels, on which a server checks
  that its bf16 or int8 engine still picks eager PyTorch's counts;
* unless turned off, an int8 IR quantized by NNCF (post-training, calibrated on validation
  photos, with NNCF's accuracy control keeping in float the layers whose quantization changes
  float32's answer on more than ``1 - min_agreement`` of up to ``ACCURACY_CONTROL_PHOTOS``
  validation photos), and int8 beside
  float32 accuracy and RMSE on validation and, if the channel was given, test. Test is
  evaluated and recorded, never used to choose anything: it is the out-of-sample check of the
  bound that accuracy control met on validation. The server serves int8 only if validation
  shows it within half a point of float32.

The export is an optimisation of serving, never a condition of training: without ``openvino``
(or ``nncf``) importable, or on any failure (a crash of the export process included: it runs
in a child process of its own), the job still succeeds with ``model.pt``; the card says what
was skipped and why, and a server converts the network at start.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from .. import logs, openvino_ir
from ..decision import decide, head_probabilities
from ..files import atomic_write_json
from ..imaging import load_and_preprocess
from ..model import CARD_FILE, load_card, load_model
from ..params import INT8_MIN_AGREEMENT

log = logging.getLogger(__name__)

#: Photos in the check set: enough that one flipped answer is a small fraction, small on disk.
CHECK_PHOTOS = 32
#: Photos per forward pass when evaluating the IRs.
EVAL_BATCH = 16
#: Validation photos (at most) on which int8's accuracy is held within the server's bound; each
#: restore step evaluates them once, so this bounds the export's time on a big validation set.
ACCURACY_CONTROL_PHOTOS = 1000
#: Layers put back in float at most, one evaluation of the control photos each.
MAX_RESTORE_ITERATIONS = 20


class PhotoWithLabel(Protocol):
    """A photo with its class index (``training.data.ChannelPhoto``)."""

    path: Path

    @property
    def label(self) -> int: ...


def pick(samples: Sequence[PhotoWithLabel], n: int, seed: int) -> list[PhotoWithLabel]:
    """``n`` samples spread over the classes (round-robin over shuffled per-class lists)."""
    rng = random.Random(seed)
    by_class: dict[int, list[PhotoWithLabel]] = {}
    for s in samples:
        by_class.setdefault(s.label, []).append(s)
    for group in by_class.values():
        rng.shuffle(group)
    picked: list[PhotoWithLabel] = []
    while len(picked) < n and any(by_class.values()):
        for label in sorted(by_class):
            if by_class[label] and len(picked) < n:
                picked.append(by_class[label].pop())
    return picked


def pixels(samples: Sequence[PhotoWithLabel], image_size: int) -> np.ndarray:
    """``uint8 [N, 3, S, S]``: the photos as training and serving preprocess them."""
    return np.stack([load_and_preprocess(s.path, image_size).numpy() for s in samples])


def evaluate_compiled(
    compiled: Any, samples: Sequence[PhotoWithLabel], image_size: int, card: dict[str, Any]
) -> dict[str, Any]:
    """Accuracy and RMSE (in items) of a compiled OpenVINO model on ``samples``.

    Scored on the count the endpoint would return: the card's head turns outputs into
    probabilities and its decision rule picks the count, as the server does.
    """
    request = compiled.create_infer_request()
    predicted: list[np.ndarray] = []
    for start in range(0, len(samples), EVAL_BATCH):
        batch = pixels(samples[start : start + EVAL_BATCH], image_size)
        request.infer({0: batch}, share_inputs=True)
        outputs = request.get_output_tensor(0).data.astype(np.float64)
        p = head_probabilities(outputs, card["head"])
        predicted.append(decide(p, card["decision"]))
    guess = np.concatenate(predicted)
    truth = np.array([s.label for s in samples])
    return {
        "photos": len(samples),
        "accuracy": float((guess == truth).mean()),
        "rmse": float(np.sqrt(((guess - truth) ** 2).mean())),
        "predictions": guess,
    }


def compare(fp32: dict[str, Any], int8: dict[str, Any]) -> dict[str, Any]:
    """The card's record of one split: both precisions' accuracy and RMSE, and agreement."""
    return {
        "photos": fp32["photos"],
        "fp32_accuracy": fp32["accuracy"],
        "int8_accuracy": int8["accuracy"],
        "fp32_rmse": fp32["rmse"],
        "int8_rmse": int8["rmse"],
        "top1_agreement": float((fp32["predictions"] == int8["predictions"]).mean()),
    }


def export_openvino(
    model_dir: Path,
    validation: Sequence[PhotoWithLabel],
    test: Sequence[PhotoWithLabel] | None,
    *,
    calibration_photos: int,
    min_agreement: float = INT8_MIN_AGREEMENT,
    seed: int = 0,
) -> dict[str, Any]:
    """Write the IRs and check set into ``model_dir`` and record them in its card.

    The network is read back from ``model_dir`` (on the CPU, in float32, as a server has it),
    so what is exported is exactly what was saved. Returns the card's new OpenVINO section.
    Never raises for a missing library or a failed export: the section then says ``skipped``
    and why.
    """
    started = time.perf_counter()
    card = load_card(model_dir)
    request = {
        "model_dir": str(model_dir),
        "validation": _listed(validation),
        "test": _listed(test) if test else None,
        "calibration_photos": calibration_photos,
        "min_agreement": min_agreement,
        "seed": seed,
    }
    try:
        import nncf  # noqa: F401 - a missing library is said here, without starting a process
        import openvino  # noqa: F401

        section = _export_in_child(request)
    except Exception as exc:  # the trained model stands; only the faster serving is lost
        section = _failed(exc)
    _record(model_dir, card, section)
    log.info("OpenVINO export done in %.1f s", time.perf_counter() - started)
    return section


def _failed(exc: Exception) -> dict[str, Any]:
    """The card section of an export that raised ``exc`` (called in its ``except``)."""
    if isinstance(exc, ImportError):
        return {"skipped": f"openvino or nncf not importable ({exc})"}
    log.exception("OpenVINO export failed; the model is served by converting at start")
    return {"skipped": f"export failed: {type(exc).__name__}: {exc}"}


def record_skipped(model_dir: Path, reason: str) -> dict[str, Any]:
    """Record in the card that no export was made, and why."""
    section = {"skipped": reason}
    _record(model_dir, load_card(model_dir), section)
    return section


def _record(model_dir: Path, card: dict[str, Any], section: dict[str, Any]) -> None:
    if "skipped" in section:
        log.warning("OpenVINO IR skipped: %s", section["skipped"])
        for name in ("fp32", "int8"):  # nothing half-written may look listed
            section.get("files", {}).pop(name, None)
    card[openvino_ir.CARD_KEY] = section
    atomic_write_json(model_dir / CARD_FILE, card)


@dataclass(frozen=True)
class ExportPhoto:
    """A labelled photo as the export process receives it."""

    path: Path
    label: int


def _listed(samples: Sequence[PhotoWithLabel]) -> list[list[Any]]:
    return [[str(s.path), int(s.label)] for s in samples]


def _export_in_child(request: dict[str, Any]) -> dict[str, Any]:
    """``_export`` in a fresh Python process (``python -m bincounter.training.openvino_export``).

    OpenVINO and NNCF run native thread pools, and NNCF's accuracy control compiles and drops
    dozens of models: in the training process a fault there would end the job that just saved
    its model, and their state outlives the call (a later ``fork`` of DataLoader workers in the
    same process was seen to segfault). In a child the job keeps its model whatever happens,
    and a crash is reported as a skipped export. The child writes the IR files and returns the
    card section as JSON; only this process writes the card.
    """
    with tempfile.TemporaryDirectory(prefix="bincounter-export-") as tmp:
        request_file, answer_file = Path(tmp) / "request.json", Path(tmp) / "section.json"
        request_file.write_text(json.dumps({**request, "answer": str(answer_file)}))
        package_root = Path(__file__).resolve().parents[2]  # the folder holding bincounter/
        path = os.pathsep.join(filter(None, [str(package_root), os.environ.get("PYTHONPATH")]))
        result = subprocess.run(
            [sys.executable, "-m", "bincounter.training.openvino_export", str(request_file)],
            env={**os.environ, "PYTHONPATH": path},
            check=False,
        )
        if result.returncode != 0 or not answer_file.is_file():
            how = (
                f"signal {signal.Signals(-result.returncode).name}"
                if result.returncode < 0
                else f"exit status {result.returncode}"
            )
            return {"skipped": f"the export process ended with {how}; its log is above"}
        return json.loads(answer_file.read_text())


def main(argv: list[str] | None = None) -> int:
    """The export process: read the request, export, write the card section as the answer."""
    logs.configure()
    (request_file,) = argv if argv is not None else sys.argv[1:]
    request = json.loads(Path(request_file).read_text())
    model_dir = Path(request["model_dir"])
    photos = {
        split: [ExportPhoto(Path(path), label) for path, label in request[split]]
        for split in ("validation", "test")
        if request[split]
    }
    try:
        model, card = load_model(model_dir)
        section = _export(
            model,
            model_dir,
            card,
            photos["validation"],
            photos.get("test"),
            request["calibration_photos"],
            request["min_agreement"],
            request["seed"],
        )
    except Exception as exc:
        section = _failed(exc)
    atomic_write_json(Path(request["answer"]), section)
    return 0


def _export(
    model: nn.Module,
    model_dir: Path,
    card: dict[str, Any],
    validation: Sequence[PhotoWithLabel],
    test: Sequence[PhotoWithLabel] | None,
    calibration_photos: int,
    min_agreement: float,
    seed: int,
) -> dict[str, Any]:
    import openvino as ov

    image_size = int(card["image_size"])
    section: dict[str, Any] = {"openvino": ov.get_version(), "files": {}}
    ov_model = openvino_ir.convert(model.eval(), image_size)
    section["files"]["fp32"] = openvino_ir.save_ir(ov_model, model_dir, openvino_ir.FP32_XML)
    check = pick(validation, CHECK_PHOTOS, seed)
    check_pixels = pixels(check, image_size)
    with torch.inference_mode():  # the reference a server checks its engine against
        reference = model.eval()(torch.from_numpy(check_pixels)).float().numpy()
    section["check_set"] = openvino_ir.save_check_set(
        model_dir, check_pixels, np.array([s.label for s in check]), reference
    )
    log.info("OpenVINO IR and %d check photos written", len(check))
    if calibration_photos <= 0:
        section["int8"] = {"skipped": "int8_calibration_photos=0"}
        return section

    import nncf
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    calibration = pixels(pick(validation, calibration_photos, seed + 1), image_size)
    core = ov.Core()
    f32 = {"INFERENCE_PRECISION_HINT": "f32"}  # the CPU's own default may be bf16
    compiled_fp32 = core.compile_model(ov_model, "CPU", f32)
    control = pick(validation, ACCURACY_CONTROL_PHOTOS, seed + 2)
    reference = evaluate_compiled(compiled_fp32, control, image_size, card)["predictions"]

    def agreement(compiled: Any, items: Any) -> float:
        """Share of ``(photo, float32 count)`` items on which ``compiled`` gives that count."""
        photos, counts = zip(*items, strict=True)
        got = evaluate_compiled(compiled, list(photos), image_size, card)["predictions"]
        return float((got == np.array(counts)).mean())

    # Plain post-training int8 lost 1.2-1.9 points of validation accuracy on the shipped model,
    # more than the server accepts; accuracy control keeps in float the few layers whose
    # quantization changes answers on the control photos (each restore re-scores them), until
    # int8 agrees with float32 on ``min_agreement`` of them. The original model scores 1.
    quantized = nncf.quantize_with_accuracy_control(
        ov_model,
        nncf.Dataset(list(calibration), lambda image: image[None]),
        nncf.Dataset(list(zip(control, reference, strict=True))),
        validation_fn=agreement,
        max_drop=1.0 - min_agreement,
        drop_type=nncf.DropType.ABSOLUTE,
        # Symmetric activations and weights: the fastest int8 kernels on CPU.
        preset=nncf.QuantizationPreset.PERFORMANCE,
        subset_size=len(calibration),
        advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
            max_num_iterations=MAX_RESTORE_ITERATIONS
        ),
    )
    section["files"]["int8"] = openvino_ir.save_ir(quantized, model_dir, openvino_ir.INT8_XML)
    section["nncf"] = nncf.__version__
    compiled_int8 = core.compile_model(quantized, "CPU", f32)
    int8: dict[str, Any] = {
        "calibration_photos": len(calibration),
        "accuracy_control_photos": len(control),
        "min_agreement_with_fp32": min_agreement,
    }
    for split, samples in (("validation", validation), ("test", test)):
        if samples:
            int8[split] = compare(
                evaluate_compiled(compiled_fp32, samples, image_size, card),
                evaluate_compiled(compiled_int8, samples, image_size, card),
            )
            log.info(
                "int8 on %s: accuracy %.4f (fp32 %.4f), RMSE %.3f (fp32 %.3f)",
                split,
                int8[split]["int8_accuracy"],
                int8[split]["fp32_accuracy"],
                int8[split]["int8_rmse"],
                int8[split]["fp32_rmse"],
            )
    section["int8"] = int8
    return section


if __name__ == "__main__":
    sys.exit(main())
