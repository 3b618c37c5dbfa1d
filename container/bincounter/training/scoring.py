"""The pipeline's evaluate step: score a trained model on the test channel, as training does.

A SageMaker Pipeline's quality gate must judge a model by the same figures the training job
reports, so this Processing job entry calls the training code's own ``evaluate`` (one
function, imported, never copied) under the decision rule the model card records, and writes:

* ``evaluation.json``: the gate's property file. ``metrics`` holds accuracy, RMSE, MAE,
  off-by-one, per-count precision/recall and the confusion matrix on test; ``model`` holds the
  card's identity (weights sha256, training job, decision, int8 agreement), copied from
  ``model_card.json`` as the job wrote it; ``model_quality`` is the Model Registry's
  ``ModelQuality.Statistics`` shape (``{"multiclass_classification_metrics": ...}``).
* ``model_card.json``: the card itself, byte for byte, so the registered package points at the
  file the training job wrote.
* ``evaluation_test.png``: the confusion matrix (``training.reports``).

Run inside the image as a Processing job (``python -m bincounter.training.scoring``), with the
model artifact under ``/opt/ml/processing/input/model`` (``model.tar.gz`` or its contents) and
the test channel under ``/opt/ml/processing/input/test``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from .. import logs, openvino_ir
from ..errors import DataError, UserError
from ..files import atomic_write_json

log = logging.getLogger(__name__)

PROCESSING_ROOT = Path("/opt/ml/processing")
MODEL_INPUT = PROCESSING_ROOT / "input" / "model"
TEST_INPUT = PROCESSING_ROOT / "input" / "test"
EVALUATION_OUTPUT = PROCESSING_ROOT / "output" / "evaluation"
EVALUATION_FILE = "evaluation.json"
CARD_COPY = "model_card.json"
ARTIFACT = "model.tar.gz"
#: The figures of one split, as training's ``metrics.json`` records them.
FIGURES = ("n", "accuracy", "rmse", "mae", "off_by_one")


def unpack_model(folder: Path, into: Path) -> Path:
    """The model folder: ``folder`` itself when it holds the card, else its ``model.tar.gz``
    unpacked into ``into`` (members outside it are refused, as tarfile's data filter does)."""
    from ..model import CARD_FILE

    if (folder / CARD_FILE).is_file():
        return folder
    archive = folder / ARTIFACT
    if not archive.is_file():
        raise DataError(f"no {CARD_FILE} and no {ARTIFACT} in the model input {folder}")
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(into, filter="data")
        else:  # Python < 3.11.4 (Debian bookworm's 3.11.2): the data filter's main refusals
            root = into.resolve()
            for member in tar.getmembers():
                target = (root / member.name).resolve()
                if not (member.isfile() or member.isdir()) or not target.is_relative_to(root):
                    raise DataError(f"{archive}: refusing member {member.name!r}")
            tar.extractall(into)
    if not (into / CARD_FILE).is_file():
        raise DataError(f"{archive} holds no {CARD_FILE}: is it a bincounter model?")
    return into


def int8_agreement(card: dict[str, Any]) -> float | None:
    """Share of validation photos on which int8 returned float32's count (None: no int8)."""
    value = openvino_ir.section(card).get("validation", {}).get("top1_agreement")
    return float(value) if isinstance(value, int | float) else None


class TrainedModel(NamedTuple):
    """A trained model ready to run as its training job ran it: its card's hyperparameters,
    this process's (single-host) context, the precision they resolve to here."""

    model: Any
    card: dict[str, Any]
    hp: Any
    ctx: Any
    precision: Any


def load_trained(model_dir: Path) -> TrainedModel:
    """``model_dir``'s network (checksum verified) on this machine's device and precision: what
    scoring, recalibrating and the quality benches start from."""
    from ..model import load_model
    from .distributed import DistContext
    from .hyperparameters import HyperParameters
    from .precision import model_to_device, resolve

    model, card = load_model(model_dir)
    hp = HyperParameters.model_validate(card["hyperparameters"])
    ctx = DistContext()
    precision = resolve(hp, ctx.device)
    return TrainedModel(model_to_device(model, precision, ctx), card, hp, ctx, precision)


def score_model(model_dir: Path, test_dir: Path, workers: int = 1) -> dict[str, Any]:
    """``evaluation.json``'s content: training's ``evaluate`` on ``test_dir`` under the card's
    decision rule (the counts the endpoint returns), plus the card's identity."""
    from .channels import load_channel
    from .train import evaluate

    model, card, hp, ctx, precision = load_trained(model_dir)
    samples = load_channel("test", test_dir, _single_host(), hp, workers)
    rule = card["decision"]
    loss, by_rule = evaluate(model, samples, hp, ctx, workers, precision)
    summary = by_rule[rule]
    return {
        "split": "test",
        "decision": rule,
        "loss": loss,
        "metrics": summary,
        "model": {
            "weights_sha256": card["weights_sha256"],
            "training_job": card.get("training_job"),
            "arch": card["arch"],
            "image_size": card["image_size"],
            "trained_at": card.get("trained_at"),
            "int8_agreement": int8_agreement(card),
            "validation": card.get("metrics", {}).get("validation"),
        },
        "model_quality": {
            "multiclass_classification_metrics": {
                "accuracy": {"value": summary["accuracy"], "standard_deviation": "NaN"},
                "rmse": {"value": summary["rmse"], "standard_deviation": "NaN"},
                "mae": {"value": summary["mae"], "standard_deviation": "NaN"},
                "off_by_one": {"value": summary["off_by_one"], "standard_deviation": "NaN"},
                "confusion_matrix": summary["confusion_matrix"],
            }
        },
    }


def _single_host() -> Any:
    """A one-process TrainingEnvironment-shaped object: ``load_channel`` asks it for the
    channel's input mode (File) and the processes per host (one)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        input_data_config={}, hosts=["algo-1"], current_host="algo-1", num_gpus=0, num_cpus=1
    )


def write_evaluation(model_input: Path, test_dir: Path, out: Path, workers: int = 1) -> Path:
    """Score, then write ``evaluation.json``, the card copy and the confusion plot to ``out``."""
    from ..model import CARD_FILE
    from . import reports

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bincounter-model-") as tmp:
        model_dir = unpack_model(model_input, Path(tmp))
        result = score_model(model_dir, test_dir, workers)
        shutil.copyfile(model_dir / CARD_FILE, out / CARD_COPY)
    reports.plot_evaluation(result["metrics"], out / "evaluation_test.png", "test")
    path = out / EVALUATION_FILE
    atomic_write_json(path, result)
    metrics = result["metrics"]
    log.info(
        "test: accuracy %.4f, RMSE %.4f, MAE %.4f, off-by-one %.4f on %d photos (decision %s)",
        *(metrics[k] for k in ("accuracy", "rmse", "mae", "off_by_one", "n")),
        result["decision"],
    )
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Processing job entry; exit 2 with one line for bad input (no traceback)."""
    parser = argparse.ArgumentParser(prog="python -m bincounter.training.scoring")
    parser.add_argument("--model", type=Path, default=MODEL_INPUT, help="model.tar.gz folder")
    parser.add_argument("--test", type=Path, default=TEST_INPUT, help="test channel")
    parser.add_argument("--out", type=Path, default=EVALUATION_OUTPUT)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    logs.configure(stream=sys.stdout)
    try:
        print(write_evaluation(args.model, args.test, args.out, args.workers))
    except (DataError, UserError) as exc:
        print(f"error: {exc.reason}", file=sys.stderr)
        return 2
    return 0


__all__ = ["EVALUATION_FILE", "score_model", "write_evaluation"]

if __name__ == "__main__":
    sys.exit(main())
