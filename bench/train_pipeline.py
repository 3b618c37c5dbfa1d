"""Training throughput: the full input pipeline against the model-only step, in one run.

Full pipeline = what ``train`` does every step: DataLoader workers decode real ABID JPEGs,
resize (no crop), augment, collate; the main process runs forward + backward + optimizer step.
Model-only = the same step on pre-made tensors already in memory. The ratio says how much the
input pipeline costs the training job; the target is >= 0.9.

    .venv/bin/python bench/train_pipeline.py [--image-size 224] [--batch-size 32] [--steps 8]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "container"))
sys.path.insert(0, str(REPO / "tests"))

from bincounter.model import build_model  # noqa: E402
from bincounter.training.data import CountDataset, Sample, auto_workers, make_loader  # noqa: E402
from bincounter.training.distributed import DistContext  # noqa: E402
from bincounter.training.hyperparameters import HyperParameters  # noqa: E402
from bincounter.training.precision import TrainStep, model_to_device, resolve, to_device  # noqa: E402
from bincounter.training.recipe import lr_lambda, make_optimizer  # noqa: E402
from bincounter.training.sampler import ShardSampler  # noqa: E402

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


def full_pipeline(hp: HyperParameters, samples: list[Sample], steps: int, warmup: int) -> float:
    _, step, ctx = _setup(hp)
    sampler = ShardSampler(len(samples), ctx, hp.seed)
    loader = make_loader(
        CountDataset(samples, hp.image_size, hp.augment), sampler, hp, ctx, auto_workers(hp, 1)
    )
    batches = iter(loader)
    for _ in range(warmup):
        images, labels = next(batches)
        step.run(*to_device(images, labels, step.precision, ctx))
    started = time.perf_counter()
    for _ in range(steps):
        images, labels = next(batches)
        step.run(*to_device(images, labels, step.precision, ctx))
    return steps * hp.batch_size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="alternate runs, best of each")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()

    hp = HyperParameters(arch=args.arch, image_size=args.image_size, batch_size=args.batch_size)
    needed = (args.steps + args.warmup) * args.batch_size
    rows = [r for r in abid_labels("train")][:needed]
    samples = [Sample(i, ABID / "images" / f"{i}.jpg", c) for i, c, _ in rows]
    print(
        f"{hp.arch} {hp.image_size}px batch {hp.batch_size}, {args.steps} timed steps, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs, loader workers {auto_workers(hp, 1)}"
    )
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
