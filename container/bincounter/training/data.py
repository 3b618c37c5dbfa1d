"""Training data: find labelled photos in a channel, verify them once, feed them to PyTorch.

Two channel layouts are accepted, because both exist in the wild:

* folder per count: ``<channel>/<count>/<id>.jpg`` (what ``prepare_data`` writes and the
  capstone's S3 data used);
* ABID native: ``<channel>/bin-images/<id>.jpg`` with ``<channel>/metadata/<id>.json`` holding
  ``EXPECTED_QUANTITY`` (the public bucket's own layout).

Ids are file stems and stay strings: ``523`` and ``00523`` are different photos.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .. import CLASSES, IMAGE_SUFFIXES
from ..abid import parse_expected_quantity
from ..errors import DataError
from ..imaging import ImageError, augment, load_and_preprocess
from .distributed import DistContext
from .hyperparameters import HyperParameters
from .problems import judge_problems

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChannelPhoto:
    """One photo of a channel and its count (``path`` is the shard file for a shard channel)."""

    id: str
    path: Path
    count: int

    @property
    def label(self) -> int:
        """Class index of the count (0 for 1 item, ... 4 for 5 items)."""
        return CLASSES.index(self.count)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _read_quantity(meta_path: Path) -> int:
    try:
        return parse_expected_quantity(meta_path.read_bytes())
    except OSError as exc:
        raise DataError(f"metadata {meta_path} cannot be read: {exc}") from None
    except ValueError as exc:
        raise DataError(f"metadata {meta_path}: {exc}") from None


def discover_channel(name: str, root: Path) -> list[ChannelPhoto]:
    """Every labelled photo of counts 1..5 in one channel, in a stable order."""
    if not root.is_dir():
        raise DataError(f"channel '{name}' is missing: no folder {root}")
    samples: list[ChannelPhoto] = []
    skipped = Counter()
    native_images = root / "bin-images"
    if native_images.is_dir():
        meta_dir = root / "metadata"
        if not meta_dir.is_dir():
            raise DataError(
                f"channel '{name}' has {native_images} but no {meta_dir}: the ABID layout needs "
                "metadata/<id>.json beside bin-images/<id>.jpg"
            )
        for path in _images_in(native_images):
            meta = meta_dir / f"{path.stem}.json"
            if not meta.is_file():
                skipped["no metadata"] += 1
                continue
            count = _read_quantity(meta)
            if count in CLASSES:
                samples.append(ChannelPhoto(path.stem, path, count))
            else:
                skipped[f"count {count} outside 1..5"] += 1
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name in ("bin-images", "metadata"):
            continue
        if folder.name not in {str(c) for c in CLASSES}:
            log.warning("channel '%s': ignoring folder %s (not a count 1..5)", name, folder.name)
            continue
        samples.extend(ChannelPhoto(p.stem, p, int(folder.name)) for p in _images_in(folder))
    if skipped:
        log.info("channel '%s': skipped %s", name, dict(skipped))
    if not samples:
        raise DataError(
            f"channel '{name}' ({root}) holds no labelled photos: expected <count>/<id>.jpg "
            "folders 1..5 or bin-images/<id>.jpg with metadata/<id>.json"
        )
    return samples


def verify_samples(
    name: str,
    samples: list[ChannelPhoto],
    image_size: int,
    max_bad_fraction: float,
    workers: int = 4,
) -> list[ChannelPhoto]:
    """Decode every photo once; drop unreadable ones, failing if more than a set share are.

    Decoding here, not lazily inside the loader, means a bad file is reported by name before
    the first step, every epoch sees the same samples, and ranks agree on the dataset size.
    """

    def check(sample: ChannelPhoto) -> str | None:
        try:
            load_and_preprocess(sample.path, image_size)
        except ImageError as exc:
            return exc.reason
        except OSError as exc:
            return f"unreadable: {exc}"
        return None

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        problems = list(pool.map(check, samples))
    good = [s for s, p in zip(samples, problems, strict=True) if p is None]
    bad = [(s, p) for s, p in zip(samples, problems, strict=True) if p is not None]
    judge_problems(
        name,
        [f"{sample.path}: {problem}" for sample, problem in bad],
        len(samples),
        max_bad_fraction,
        noun="unreadable photos",
        summary=f"{len(samples)} photos, {len(bad)} unreadable skipped",
        refusal=f"{len(bad)} of {len(samples)} photos ({{percent:.1f}}%) are unreadable",
        first=f"{bad[0][0].path.name}: {bad[0][1]}" if bad else None,
    )
    return good


def class_counts(samples: list[ChannelPhoto]) -> list[int]:
    counts = Counter(s.count for s in samples)
    return [counts.get(c, 0) for c in CLASSES]


class CountDataset(Dataset):
    """(``uint8`` image tensor, class index) pairs, augmented when training."""

    def __init__(self, samples: list[ChannelPhoto], image_size: int, augment: str = "none") -> None:
        self.samples = samples
        self.image_size = image_size
        self.augment = augment

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[index]
        image = load_and_preprocess(sample.path, self.image_size)
        return augment(image, self.augment), sample.label


def auto_workers(hp: HyperParameters, per_host: int) -> int:
    if hp.num_workers >= 0:
        return hp.num_workers
    cpus = os.cpu_count() or 1
    # On CPU the model step needs the cores, and decoding a photo is cheap beside a step, so
    # one loader process keeps up. With GPUs, give each process a share of the host's cores.
    return max(1, min(8, cpus // per_host - 1)) if torch.cuda.is_available() else 1


def make_loader(
    dataset: Dataset,
    sampler: Sampler[int] | None,
    hp: HyperParameters,
    ctx: DistContext,
    workers: int,
    generator: torch.Generator | None = None,
) -> DataLoader:
    """Batches of ``uint8`` tensors; workers decode, the main process only steps."""
    return DataLoader(
        dataset,
        batch_size=hp.batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=ctx.device.type == "cuda",
        generator=generator,
        prefetch_factor=4 if workers else None,
    )
