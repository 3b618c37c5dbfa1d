"""Training throughput: the full input pipeline against the model-only step, in one run.

Full pipeline = what ``train`` does every step: DataLoader workers decode real ABID JPEGs,
resize (no crop), augment, collate; the main process runs forward + backward + optimizer step.
Model-only = the same step on pre-made tensors already in memory. The ratio says how much the
input pipeline costs the training job; the target is >= 0.9.

``--shards`` instead compares the full pipeline reading tar shards (``training.channels``:
sequential reads, shuffle buffer, the same decode and augmentation) against reading one file per
photo, on the same photos, interleaved; the target is shards >= folders.

    .venv/bin/python bench/train_pipeline.py [--image-size 224] [--batch-size 32] [--steps 8]
    .venv/bin/python bench/train_pipeline.py --shards
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "container"))
sys.path.insert(0, str(REPO / "tests"))

from bincounter.model import build_model  # noqa: E402
from bincounter.shards import ShardWriter  # noqa: E402
from bincounter.training.channels import ChannelInput, index_shards, make_reader  # noqa: E402
from bincounter.training.data import ChannelPhoto, CountDataset, auto_workers, make_loader  # noqa: E402
from bincounter.training.distributed import DistContext  # noqa: E402
from bincounter.training.hyperparameters import HyperParameters  # noqa: E402
from bincounter.training.precision import TrainStep, model_to_device, resolve, to_device  # noqa: E402
from bincounter.training.recipe import lr_lambda, make_optimizer  # noqa: E402
from bincounter.training.sampler import FolderSampler  # noqa: E402

from support import ABID, abid_labels  # noqa: E402


def _setup(hp: HyperParameters):
    torch.manual_seed(0)
    ctx = DistContext()
    precision = resolve(hp, ctx.device)
    model = model_to_device(build_model(hp.arch), precision, ctx)
    optimizer = make_optimizer(model, hp)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(hp, 1000))
    step = TrainStep(model, optimizer, scheduler, torch.nn.CrossEntropyLoss(), precision)
    return model.train(), step, ctx


def _timed(batches, step, ctx, batch_size: int, steps: int, warmup: int, model: bool) -> float:
    """Images/s over ``steps`` batches after ``warmup``; ``model=False`` only draws batches."""
    for i in range(warmup + steps):
        if i == warmup:
            started = time.perf_counter()
        images, labels = next(batches)
        if model:
            step.run(*to_device(images, labels, step.precision, ctx))
    return steps * batch_size / (time.perf_counter() - started)


def model_only(hp: HyperParameters, steps: int, warmup: int) -> float:
    _, step, ctx = _setup(hp)
    images = torch.randint(
        0, 256, (hp.batch_size, 3, hp.image_size, hp.image_size), dtype=torch.uint8
    )
    labels = torch.randint(0, 5, (hp.batch_size,))
    for _ in range(warmup):
        step.run(*to_device(images, labels, step.precision, ctx))
    started = time.perf_counter()
    for _ in range(steps):
        step.run(*to_device(images, labels, step.precision, ctx))
    return steps * hp.batch_size / (time.perf_counter() - started)


def full_pipeline(
    hp: HyperParameters, samples: list[ChannelPhoto], steps: int, warmup: int, model: bool = True
) -> float:
    """``model=False``: the loader alone (what reading and decoding cost, without the step)."""
    _, step, ctx = _setup(hp)
    sampler = FolderSampler(len(samples), ctx, hp.seed)
    loader = make_loader(
        CountDataset(samples, hp.image_size, hp.augment), sampler, hp, ctx, auto_workers(hp, 1)
    )
    return _timed(iter(loader), step, ctx, hp.batch_size, steps, warmup, model)


def shard_pipeline(
    hp: HyperParameters, folder: Path, steps: int, warmup: int, model: bool = True
) -> float:
    """The full pipeline, reading the photos from tar shards as ``train`` does."""
    _, step, ctx = _setup(hp)
    channel = index_shards(ChannelInput("train", folder), hp.image_size, 0.0, workers=1)
    loader, stream = make_reader(channel, hp, ctx, auto_workers(hp, 1), train=True)
    stream.set_epoch(0)
    return _timed(iter(loader), step, ctx, hp.batch_size, steps, warmup, model)


def machine() -> str:
    """CPU model, its SIMD flags and the load average: what a figure depends on."""
    model, flags = "unknown CPU", []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                simd = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "amx_tile")
                flags = [f for f in value.split() if f in simd]
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{model} [{' '.join(flags)}], {os.cpu_count()} CPUs, load average {load}"


def compare_shards(hp: HyperParameters, samples: list[ChannelPhoto], args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        writer = ShardWriter(Path(tmp), "train", 16 * 1024 * 1024)
        for s in samples:
            writer.write(s.id, s.path.read_bytes(), s.count)
        writer.close()
        folders, shards, folders_loader, shards_loader = [], [], [], []
        for _ in range(args.repeats):  # alternate so a noisy neighbour hits both alike
            folders.append(full_pipeline(hp, samples, args.steps, args.warmup))
            shards.append(shard_pipeline(hp, Path(tmp), args.steps, args.warmup))
            folders_loader.append(full_pipeline(hp, samples, args.steps, args.warmup, False))
            shards_loader.append(shard_pipeline(hp, Path(tmp), args.steps, args.warmup, False))
            print(
                f"  training: folders {folders[-1]:7.1f} img/s  shards {shards[-1]:7.1f} img/s"
                f"   loader alone: folders {folders_loader[-1]:7.1f}  shards "
                f"{shards_loader[-1]:7.1f}"
            )
    print(f"  after: {machine()}")
    return {
        "folders_images_per_s": max(folders),
        "shards_images_per_s": max(shards),
        "ratio": max(shards) / max(folders),
        "loader_alone_folders_images_per_s": max(folders_loader),
        "loader_alone_shards_images_per_s": max(shards_loader),
        "loader_alone_ratio": max(shards_loader) / max(folders_loader),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="alternate runs, best of each")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--shards", action="store_true", help="shards against folders instead")
    args = parser.parse_args()

    hp = HyperParameters(arch=args.arch, image_size=args.image_size, batch_size=args.batch_size)
    needed = (args.steps + args.warmup) * args.batch_size
    rows = [r for r in abid_labels("train")][:needed]
    samples = [ChannelPhoto(i, ABID / "images" / f"{i}.jpg", c) for i, c, _ in rows]
    print(
        f"{hp.arch} {hp.image_size}px batch {hp.batch_size}, {args.steps} timed steps, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs, loader workers {auto_workers(hp, 1)}"
    )
    print(f"  before: {machine()}")
    if args.shards:
        result = compare_shards(hp, samples, args)
        print(
            f"folders {result['folders_images_per_s']:.1f} img/s, shards "
            f"{result['shards_images_per_s']:.1f} img/s, ratio {result['ratio']:.3f} "
            f"(target >= 1); loader alone ratio {result['loader_alone_ratio']:.3f}"
        )
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
        return
    bare, full = [], []
    for _ in range(args.repeats):  # alternate so a noisy neighbour hits both alike
        bare.append(model_only(hp, args.steps, args.warmup))
        full.append(full_pipeline(hp, samples, args.steps, args.warmup))
        print(f"  model-only {bare[-1]:7.1f} img/s   full pipeline {full[-1]:7.1f} img/s")
    result = {
        "model_only_images_per_s": max(bare),
        "full_pipeline_images_per_s": max(full),
        "ratio": max(full) / max(bare),
        "image_size": hp.image_size,
        "batch_size": hp.batch_size,
        "arch": hp.arch,
    }
    print(
        f"model-only {result['model_only_images_per_s']:.1f} img/s, full pipeline "
        f"{result['full_pipeline_images_per_s']:.1f} img/s, ratio {result['ratio']:.3f} "
        f"(target >= 0.9)"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
