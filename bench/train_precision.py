"""Training throughput per precision: fp32 against ``precision=auto``, interleaved, in one run.

The model-only training step (forward, backward, AdamW) of the default network on pixels already
in memory, once per precision in turn, repeated, so a noisy neighbour hits both alike. Prints
the CPU model, the bf16 flags the kernel and torch report, and the load average before and
after (on a shared machine the load says how far to trust the figures). Besides images per
second of wall time it gives images per CPU-second of this process, which a busy neighbour
disturbs less.

    .venv/bin/python bench/train_precision.py [--image-size 224] [--batch-size 32] [--threads 1]
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

from bincounter.model import build_model  # noqa: E402
from bincounter.training.distributed import DistContext  # noqa: E402
from bincounter.training.hyperparameters import HyperParameters  # noqa: E402
from bincounter.training.precision import (  # noqa: E402
    NATIVE_BF16_CPU,
    TrainStep,
    cpu_capabilities,
    cpu_model,
    model_to_device,
    resolve,
    to_device,
)
from bincounter.training.recipe import make_optimizer  # noqa: E402


def _kernel_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")),
        [],
    )
    return sorted(f for f in flags if f.startswith(("amx", "avx512_bf16", "avx512f", "avx2")))


def _step(hp: HyperParameters):
    torch.manual_seed(0)
    ctx = DistContext()
    precision = resolve(hp, ctx.device)
    model = model_to_device(build_model(hp.arch), precision, ctx).train()
    optimizer = make_optimizer(model, hp)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    step = TrainStep(model, optimizer, scheduler, torch.nn.CrossEntropyLoss(), precision)
    images = torch.randint(
        0, 256, (hp.batch_size, 3, hp.image_size, hp.image_size), dtype=torch.uint8
    )
    labels = torch.randint(0, 5, (hp.batch_size,))
    return step, to_device(images, labels, precision, ctx)


def measure(hp: HyperParameters, steps: int, warmup: int) -> tuple[float, float]:
    """(images per wall second, images per CPU second of this process)."""
    step, batch = _step(hp)
    for _ in range(warmup):
        step.run(*batch)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step.run(*batch)
    n = steps * hp.batch_size
    return n / (time.perf_counter() - wall), n / (time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="alternate runs, best of each")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's choice)")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    common = {"arch": args.arch, "image_size": args.image_size, "batch_size": args.batch_size}
    settings = {
        "fp32": HyperParameters(**common, precision="fp32"),
        "auto": HyperParameters(**common),
    }
    chosen = resolve(settings["auto"], torch.device("cpu"))
    caps = cpu_capabilities()
    load_before = os.getloadavg()
    print(
        f"CPU {cpu_model()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"kernel flags: {' '.join(_kernel_flags())}")
    print(f"torch capabilities: {', '.join(f'{c}={bool(caps.get(c))}' for c in NATIVE_BF16_CPU)}")
    print(f"auto -> {chosen.name}, channels-last {chosen.channels_last}: {chosen.reason}")
    print(
        f"{args.arch} {args.image_size}px batch {args.batch_size}, {args.steps} timed steps x {args.repeats}"
    )
    print(f"load average before: {' '.join(f'{x:.2f}' for x in load_before)}")
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in settings}
    for _ in range(args.repeats):
        for name, hp in settings.items():
            figures[name].append(measure(hp, args.steps, args.warmup))
            wall, cpu = figures[name][-1]
            print(f"  {name:5} {wall:7.2f} img/s wall   {cpu:7.2f} img/CPU-s", flush=True)
    load_after = os.getloadavg()
    best = {
        name: (max(w for w, _ in runs), max(c for _, c in runs)) for name, runs in figures.items()
    }
    result = {
        "cpu": cpu_model(),
        "flags": _kernel_flags(),
        "auto": chosen.describe(),
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "images_per_s": {name: b[0] for name, b in best.items()},
        "images_per_cpu_s": {name: b[1] for name, b in best.items()},
        "speedup_wall": best["auto"][0] / best["fp32"][0],
        "speedup_cpu": best["auto"][1] / best["fp32"][1],
        "load_average": {"before": load_before, "after": load_after},
    }
    print(f"load average after: {' '.join(f'{x:.2f}' for x in load_after)}")
    print(
        f"auto/fp32: {result['speedup_wall']:.2f}x images/s (wall), "
        f"{result['speedup_cpu']:.2f}x images per CPU-second (target >= 1.8x)"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
