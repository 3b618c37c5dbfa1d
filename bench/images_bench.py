"""The two serving images side by side, in one run (issue 24.5): what the slim one saves.

For the full image (``docker build .``) and the torch-free CPU serving image (``docker build
--target serve-cpu .``), serving the same model from the same read-only ``/opt/ml``:

1. image size (``docker image inspect``);
2. cold start: ``docker run --init ... serve`` to the first answered photo (not just ``/ping``),
   ``--cold-starts`` times each, the images alternating so that neither gets a warmer page
   cache; the local image is already pulled, so an endpoint adds the pull of the size above;
3. RSS of each gunicorn worker (default workers: one per core), idle after start and after the
   load below (``VmRSS`` and peak ``VmHWM`` from ``/proc``; the containers share this kernel);
4. images/s, p50 and p99 at concurrency 1, 4 and 16 with the original-size ABID photos
   (``../shared/abid/original``), keep-alive clients on this machine (``serve_bench.load``);
5. top-1 agreement between the two images on the 730 photos of the shared test split (read,
   never trained or tuned on), at the default precision (``auto``: the card's int8 where the
   CPU has no bf16) and at fp32: both must be 100%.

Prints the CPU model and flags, and every figure as slim / full in the same run. Needs a docker
engine (``tests/container/engine.sh up``); builds both images from the checkout the way the
container tests do (local wheel index; cached layers make it seconds), unless ``--no-build``.
The model: ``--model-dir`` (a ``./train`` output with its OpenVINO files), else a quick
``./train`` at 96 px on part of the train split.

    .venv/bin/python bench/images_bench.py [--model-dir runs/q96/opt_ml/model] [--out F]
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import requests

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "container"), str(HERE.parent / "tests"), str(HERE)]
sys.path.insert(0, str(HERE.parent / "tests" / "container"))

from conftest import build_image, docker, image_size_bytes  # noqa: E402
from serve_bench import bench_arguments, cpu_description, load  # noqa: E402

from support import ABID, EXPORTING_HPS, build_tree, free_port, run_train  # noqa: E402

IMAGES = {
    "full": ("bincounter:test", ()),
    "slim": ("bincounter:test-cpu-serve", ("--target", "serve-cpu")),
}
LEVELS = {1: 150, 4: 400, 16: 480}


def ensure_image(tag: str, build_args: tuple[str, ...], work: Path, build: bool) -> None:
    """Build ``tag`` from the checkout (cached layers make a rebuild seconds), or, with
    ``build`` off, use the one there is."""
    if not build and docker("image", "inspect", tag, check=False).returncode == 0:
        return
    print(f"building {tag} ({' '.join(build_args) or 'full image'}) ...", flush=True)
    result = build_image(tag, work, list(build_args))
    if result.returncode != 0:
        raise SystemExit(f"docker build of {tag} failed:\n{result.log[-4000:]}")
    print(f"  built in {result.elapsed:.0f} s", flush=True)


def model_tree(model_dir: Path | None, work: Path) -> tuple[Path, str]:
    """An ``/opt/ml`` holding ``model/``: a copy of ``model_dir``, or a fresh quick model."""
    base = work / "opt_ml"
    if model_dir is not None:
        shutil.copytree(model_dir, base / "model")
        return base, f"given: {model_dir}"
    hps = {**EXPORTING_HPS, "image_size": "96", "epochs": "3"}
    build_tree(base, hps, {"train": 60, "validation": 12})
    result = run_train(base)
    if result.returncode != 0:
        raise SystemExit(f"./train failed:\n{result.stderr[-3000:]}")
    return base, f"./train {hps} on 60 photos per count"


class Container:
    """``docker run -d --init IMAGE serve`` on a loopback port, removed by ``stop``."""

    def __init__(self, tag: str, base: Path, *env: str) -> None:
        self.name = f"images-bench-{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env_args = [a for e in env for a in ("-e", e)]
        self.started = time.monotonic()
        docker("run", "-d", "--init", "--name", self.name, "-p", f"127.0.0.1:{self.port}:8080",
               "-v", f"{base}:/opt/ml:ro", *env_args, tag, "serve")  # fmt: skip

    def first_answer_s(self, photo: bytes, timeout: float = 180) -> float:
        """Seconds from ``docker run`` to the first 200 on ``/invocations``."""
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            try:
                answer = requests.post(
                    f"{self.url}/invocations",
                    photo,
                    headers={"Content-Type": "image/jpeg"},
                    timeout=30,
                )
                if answer.status_code == 200:
                    return time.monotonic() - self.started
            except requests.RequestException:
                pass
            state = json.loads(docker("inspect", self.name).stdout)[0]["State"]
            if not state["Running"]:
                raise SystemExit(f"{self.name} exited:\n{self.logs()}")
            time.sleep(0.05)
        raise SystemExit(f"{self.name}: no answer within {timeout} s:\n{self.logs()}")

    def worker_memory_mib(self) -> list[dict[str, float]]:
        """VmRSS and VmHWM of each gunicorn worker (children of the arbiter), from the host."""
        top = docker("top", self.name, "-eo", "pid,ppid,args").stdout.splitlines()[1:]
        rows = [line.split(None, 2) for line in top]
        pythons = {pid for pid, _, args in rows if "python" in args}
        # The arbiter is the python process started by tini; its python children are workers.
        workers = [pid for pid, ppid, _ in rows if pid in pythons and ppid in pythons]
        if not workers:
            raise SystemExit(f"no gunicorn workers in {self.name}: {top}")
        out = []
        for pid in workers:
            status = dict(
                line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            )
            out.append({k: int(status[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM")})
        return out

    def logs(self) -> str:
        result = docker("logs", self.name, check=False)
        return (result.stdout + result.stderr)[-3000:]

    def stop(self) -> None:
        docker("rm", "-f", self.name, check=False)


def test_split() -> list[tuple[str, bytes]]:
    with open(ABID / "labels.csv", newline="") as f:
        ids = [row["id"] for row in csv.DictReader(f) if row["split"] == "test"]
    return [(i, (ABID / "images" / f"{i}.jpg").read_bytes()) for i in ids]


def top1(container: Container, photos: list[tuple[str, bytes]]) -> np.ndarray:
    """Each photo's most probable count from the server, in order (through 8 clients)."""
    result = load(container.port, [p for _, p in photos], 8, len(photos))
    if result["errors"]:
        raise SystemExit(f"{result['errors']} errors: {result['first_error']}")
    answers = result["_answers"]
    probs = [[answers[i]["probabilities"][str(c)] for c in range(1, 6)] for i in range(len(photos))]
    return np.asarray(probs).argmax(1) + 1


def measure(tag: str, base: Path, photos: list[bytes], scale: float) -> dict[str, Any]:
    """Workers' RSS idle and after load, and images/s at each concurrency."""
    container = Container(tag, base)
    try:
        container.first_answer_s(photos[0])
        idle = container.worker_memory_mib()
        rows = []
        for concurrency, requests_n in LEVELS.items():
            load(container.port, photos, concurrency, 4 * concurrency)  # warm-up
            row = load(container.port, photos, concurrency, max(8, int(requests_n * scale)))
            row.pop("_answers")
            rows.append(row)
            print(
                f"  c={concurrency:<2d} {row['images_per_s']:6.1f} images/s  p50 "
                f"{row['p50_ms']:6.1f} ms  p99 {row['p99_ms']:6.1f} ms  errors {row['errors']}",
                flush=True,
            )
        return {"workers_idle_mib": idle, "workers_after_mib": container.worker_memory_mib(),
                "load": rows, "ready_line": next((line for line in container.logs().splitlines()
                                                  if "ready on" in line), "")}  # fmt: skip
    finally:
        container.stop()


def main(argv: list[str] | None = None) -> int:
    parser = bench_arguments(__doc__.splitlines()[0], "images_bench.json")
    parser.add_argument("--cold-starts", type=int, default=3, help="cold starts per image")
    parser.add_argument(
        "--no-build",
        dest="build",
        action="store_false",
        help="use the images already tagged instead of building them from the checkout",
    )
    args = parser.parse_args(argv)

    cpu = cpu_description()
    print(f"CPU {cpu['model']}, {os.cpu_count()} cores, flags {' '.join(cpu['flags'])}")
    print(f"load average at start {os.getloadavg()}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="images_bench_"))
    for tag, build_args in IMAGES.values():
        ensure_image(tag, build_args, work, args.build)
    base, model_note = model_tree(args.model_dir, work)
    photos = [p.read_bytes() for p in sorted((ABID / "original").glob("*.jpg"))]
    results: dict[str, Any] = {"cpu": cpu, "model": model_note, "images": {}}

    sizes = {which: image_size_bytes(tag) for which, (tag, _) in IMAGES.items()}
    cold: dict[str, list[float]] = {which: [] for which in IMAGES}
    print("cold starts (docker run -> first answered photo)", flush=True)
    for attempt in range(args.cold_starts):
        for which, (tag, _) in IMAGES.items():
            container = Container(tag, base)
            try:
                cold[which].append(container.first_answer_s(photos[attempt % len(photos)]))
            finally:
                container.stop()
            print(f"  {which} #{attempt + 1}: {cold[which][-1]:.2f} s", flush=True)

    for which, (tag, _) in IMAGES.items():
        print(f"{which} ({tag}): load at c=1/4/16", flush=True)
        results["images"][which] = {
            "tag": tag,
            "size_gb": sizes[which] / 1e9,
            "cold_start_s": cold[which],
            "cold_start_median_s": statistics.median(cold[which]),
            **measure(tag, base, photos, args.scale),
        }

    print("top-1 agreement on the test split, at the default precision and at fp32", flush=True)
    test = test_split()
    agreement = {}
    for precision in ("auto", "fp32"):
        top = {}
        for which, (tag, _) in IMAGES.items():
            container = Container(tag, base, f"BINCOUNTER_PRECISION={precision}")
            try:
                container.first_answer_s(photos[0])
                top[which] = top1(container, test)
            finally:
                container.stop()
        agreement[precision] = {
            "photos": len(test),
            "top1": float((top["full"] == top["slim"]).mean()),
        }
        print(f"  {precision}: {agreement[precision]}", flush=True)
    results["top1_agreement"] = agreement
    results["loadavg_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print_summary(results)
    print(f"wrote {args.out}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


def print_summary(results: dict[str, Any]) -> None:
    full, slim = results["images"]["full"], results["images"]["slim"]

    def worst_rss(r: dict[str, Any]) -> float:
        return max(w["VmHWM"] for w in r["workers_after_mib"])

    lines = [
        ("image size (GB)", full["size_gb"], slim["size_gb"]),
        ("cold start, median (s)", full["cold_start_median_s"], slim["cold_start_median_s"]),
        ("worker RSS idle, max (MiB)", max(w["VmRSS"] for w in full["workers_idle_mib"]),
         max(w["VmRSS"] for w in slim["workers_idle_mib"])),
        ("worker peak RSS after load (MiB)", worst_rss(full), worst_rss(slim)),
    ]  # fmt: skip
    for f_row, s_row in zip(full["load"], slim["load"], strict=True):
        lines.append((f"images/s at c={f_row['concurrency']}", f_row["images_per_s"],
                      s_row["images_per_s"]))  # fmt: skip
    print("\nsummary (same run, same model, same photos)")
    print(f"  {'what':36s} {'full':>9s} {'slim':>9s} {'slim/full':>10s}")
    for label, f_value, s_value in lines:
        print(f"  {label:36s} {f_value:9.2f} {s_value:9.2f} {s_value / f_value:9.2f}x")
    for precision, a in results["top1_agreement"].items():
        print(f"  top-1 agreement at {precision}: {100 * a['top1']:.1f}% of {a['photos']} photos")

    def engine(r: dict[str, Any]) -> str:
        line = r["ready_line"]
        return line[line.find("ready on") :].split(" in ")[0] if "ready on" in line else "?"

    print(f"  engines: full {engine(full)} | slim {engine(slim)}")


if __name__ == "__main__":
    sys.exit(main())
