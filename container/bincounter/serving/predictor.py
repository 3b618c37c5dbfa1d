"""The predictor: a model directory -> a warmed-up engine -> probabilities.

Loading ends with warm-up passes at the batch sizes the server will run, because the first
passes allocate and (for a graph engine) specialise: done at start, they cost the first
requests nothing, and ``/ping`` answers only once they are over. In the server all of this runs
on the batcher thread (``batcher``), which is why the predictor takes pixels as numpy arrays.

From a model directory with its OpenVINO files and recorded reference outputs, loading imports
no torch and never builds the network (``engines``): only the card, the IR and the check set
are read. Where torch is needed and absent (the torch-free CPU serving image), loading fails
with a ``ModelLoadError`` that names the full image.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..card import served_card, verify_model_files
from ..decision import TTA_CHOICES, head_probabilities
from ..errors import ModelLoadError
from ..imaging import load_image, preprocess_array
from ..openvino_ir import verify_exported
from .config import cpu_count
from .engines import Engine, build_engine, check_input

log = logging.getLogger(__name__)

#: What a server without torch says when a model needs it (no OpenVINO files, no reference).
NEEDS_FULL_IMAGE = (
    "this image serves from OpenVINO files only and has no torch (the CPU serving image, tagged "
    "<version>-cpu-serve); {why}: serve this model with the full bincounter image, or re-export "
    "it (bench/reexport.py) so it ships its OpenVINO IR and reference outputs"
)


def torch_available() -> bool:
    """Whether torch can be imported here (it cannot in the CPU serving image)."""
    import importlib.util

    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


@dataclass(frozen=True)
class ModelInfo:
    """What a client needs to know about the model that answered."""

    arch: str
    image_size: int
    weights_sha256: str
    engine: str
    card: dict[str, Any] = field(repr=False, compare=False)
    tta: int = 1

    @property
    def head(self) -> str:
        """How the network's outputs become probabilities (``counting.HEADS``)."""
        return str(self.card.get("head", "softmax"))

    @property
    def decision(self) -> str:
        """How probabilities become the ``count`` (``counting.RULES``), as the card says."""
        return str(self.card.get("decision", "argmax"))

    @property
    def version(self) -> str:
        """Short, stable id of the weights: the card's sha256, shortened like a git hash."""
        return self.weights_sha256[:12]


class Predictor:
    """A loaded, warmed-up model; ``predict_*`` run the network on the calling thread.

    Build it with ``Predictor.load``.
    """

    def __init__(self, engine: Engine, info: ModelInfo) -> None:
        self._engine = engine
        self.info = info

    @classmethod
    def load(
        cls,
        model_dir: Path,
        *,
        engine: str = "auto",
        precision: str = "auto",
        tta: int = 1,
        compute_threads: int | None = None,
        warmup_batch_sizes: Sequence[int] = (1, 2, 4, 8),
    ) -> Predictor:
        """Load ``model_dir`` (raises ``ModelLoadError``), build the engine, warm it up.

        ``compute_threads`` sets the engine's threads and torch's intra-op threads for the
        process; the first call that builds a pool wins, so the server calls this before any
        other tensor work. ``tta=8`` averages each photo's eight flips and quarter turns
        (whatever the engine).
        """
        if tta not in TTA_CHOICES:
            raise ValueError(f"tta={tta}: allowed {TTA_CHOICES}")
        started = time.perf_counter()
        model_dir = Path(model_dir)
        card, _ = verify_model_files(model_dir)
        verify_exported(model_dir, card)
        image_size = int(card["image_size"])
        threads = compute_threads or cpu_count()
        loaded = time.perf_counter()
        try:
            runner, kind = build_engine(
                lambda: network(model_dir, threads),
                engine,
                image_size,
                precision=precision,
                model_dir=model_dir,
                card=card,
                threads=threads,
            )
        except ModuleNotFoundError as exc:
            if exc.name != "torch" and not str(exc.name).startswith("torch."):
                raise
            raise ModelLoadError(
                NEEDS_FULL_IMAGE.format(why=f"{model_dir} needs torch ({needs_torch(card)})")
            ) from None
        if tta > 1 and "calibration" in card and f"tta{tta}" not in card["calibration"]:
            log.warning(
                "the card of %s has no calibration for TTA x%d (trained before it was fitted): "
                "its single-pass calibration is applied to the averaged probabilities",
                model_dir,
                tta,
            )
        info = ModelInfo(
            arch=str(card["arch"]),
            image_size=image_size,
            weights_sha256=str(card["weights_sha256"]),
            engine=kind,
            card=served_card(card, tta),
            tta=tta,
        )
        predictor = cls(runner, info)
        built = time.perf_counter()
        predictor.warm_up(warmup_batch_sizes)
        log.info(
            "model %s (%s, %d px, version %s, head %s, decision %s, TTA x%d) ready on %s with "
            "%d compute threads in %.2f s (load %.2f s, engine and its check %.2f s, warm-up "
            "%.2f s)",
            model_dir,
            info.arch,
            image_size,
            info.version,
            info.head,
            info.decision,
            tta,
            kind,
            threads,
            time.perf_counter() - started,
            loaded - started,
            built - loaded,
            time.perf_counter() - built,
        )
        return predictor

    def warm_up(self, batch_sizes: Sequence[int]) -> None:
        """Run each batch size twice: the first passes allocate and (TorchScript) specialise.

        With TTA the engine sees eight times the photos, so those are the sizes warmed up.
        """
        sizes = [n * self.info.tta for n in batch_sizes]
        example = check_input(self.info.image_size, max(sizes, default=1))
        for _ in range(2):
            for n in sizes:
                self.predict_batch(example[:n])

    def preprocess(self, data: bytes) -> np.ndarray:
        """Photo bytes -> ``uint8 [S, S, 3]``: the training pipeline, unchanged.

        Raises ``bincounter.imaging.ImageError`` for anything that is not a usable photo.
        """
        return preprocess_array(load_image(data, self.info.image_size), self.info.image_size)

    def predict_batch(self, batch: np.ndarray) -> np.ndarray:
        """``uint8 [N, 3, S, S]`` -> probabilities ``float64 [N, 5]`` (rows sum to 1).

        No TTA here: this is one pass of the engine, converted by the card's head: the one place
        every engine and precision goes through. These are the network's own probabilities; the
        answer calibrates them (``calibration.served``, called by ``codec``).
        """
        outputs = self._engine(np.asarray(batch))
        return head_probabilities(outputs, self.info.head)

    def predict_pixels(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """``uint8 [S, S, 3]`` arrays (``codec.decode_photos``) -> probabilities ``[N, 5]``.

        With TTA the eight variants are made in numpy, run as one batch by whatever engine
        serves, and their probabilities averaged (rows still sum to 1).
        """
        pixels = np.stack(images)
        if self.info.tta > 1:
            pixels = dihedral(pixels)
        batch = np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))
        p = self.predict_batch(batch)
        return p if self.info.tta == 1 else p.reshape(self.info.tta, -1, p.shape[1]).mean(0)


def dihedral(pixels: np.ndarray) -> np.ndarray:
    """``[N, S, S, 3]`` -> its 8 flips and quarter turns, variant-major ``[8 * N, S, S, 3]``,
    in the order of ``counting.dihedral_variants`` (which imports torch)."""
    turns = [np.rot90(pixels, k, axes=(1, 2)) for k in range(4)]
    return np.ascontiguousarray(np.concatenate(turns + [np.flip(t, axis=2) for t in turns]))


def network(model_dir: Path, threads: int) -> Any:
    """The eval-mode torch module of ``model_dir`` (imports torch; called only when needed)."""
    import torch

    from ..model import load_model

    torch.set_num_threads(max(1, threads))
    # Inter-op parallelism is unused here; it can be set once only, hence suppress.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    return load_model(model_dir)[0]


def needs_torch(card: dict[str, Any]) -> str:
    """Why serving this model needs torch, for the message of a server that has none."""
    from .. import openvino_ir

    if openvino_ir.ir_files(card, "fp32") is None:
        return "it has no OpenVINO files"
    if "reference" not in (openvino_ir.section(card).get("check_set") or {}):
        return "its check set has no reference outputs to check the engine against"
    return "the engine asked for runs on torch"
