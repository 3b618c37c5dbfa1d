"""Serving benchmark: bare pipeline vs a plain eager flask handler vs ``./serve``, on real photos.

Measures, in one run on this machine, with the real ABID photos at their native sizes
(``../shared/abid/original``):

1. the bare in-process pipeline (``load_image`` + ``preprocess`` + forward), one photo at a
   time, with eager PyTorch and with the OpenVINO engine in each precision (fp32, auto = bf16
   where the CPU has it, int8) at batches of 1, 4 and 8, and the milliseconds per photo of each
   step a request takes (decode, resize, engine, encode);
2. the usual baseline, ``bench/eager_app.py``: gunicorn sync workers (one per core), eager
   PyTorch, one photo per request, at concurrency 1 and 4;
3. this server (``./serve``, defaults) at concurrency 1, 4 and 16, and batch transform's shape
   of load: JSON bodies of 8 photos at the ``MaxConcurrentTransforms`` it advertises;
4. unless ``--no-variants``, other settings of this server (``VARIANTS``): fp32 and int8
   instead of bf16, the TorchScript engine, one compute thread, no batch wait;

plus the time from starting ``./serve`` to its first ``/ping`` 200, and top-1 agreement between
each served precision and eager PyTorch, and each one's accuracy, on the whole shared test split
(in-process, and through the server for the default). Prints the CPU model and flags and the
load average. Prints a table and writes JSON (``--out``).

The model: ``--model-dir`` if given, else a ResNet-18 at ``--image-size`` (96 px, the training
default) that ``./train`` fits for a few epochs on part of the train split (never the test split). The load
generator runs on the same cores as the server (keep-alive ``http.client`` threads), which
costs every server a little; nothing else should run during a measurement.

Usage: ``.venv/bin/python bench/serve_bench.py [--model-dir DIR] [--out runs/serve_bench.json]``
"""

from __future__ import annotations

import argparse
import base64
import csv
import http.client
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from bincounter.decision import decide, head_probabilities
from bincounter.imaging import load_and_preprocess, load_image, preprocess, preprocess_array
from bincounter.model import build_model, load_model, save_model
from bincounter.serving.codec import probabilities_to_prediction
from bincounter.serving.config import cpu_count
from bincounter.serving.predictor import Predictor

from support import ABID, REPO, free_port

TRAIN_HPS = {
    "arch": "resnet18",
    "epochs": "3",
    "batch_size": "32",
    "num_workers": "0",
    "warmup_epochs": "0",
    "lr": "0.002",
}


# --------------------------------------------------------------------------- model


def labels(split: str) -> list[tuple[str, int]]:
    with open(ABID / "labels.csv", newline="") as f:
        return [(r["id"], int(r["count"])) for r in csv.DictReader(f) if r["split"] == split]


def train_model(work: Path, image_size: int, per_count: int = 60) -> tuple[Path, str]:
    """A real ``./train`` run (train + validation splits only); seeded weights if it fails."""
    base = work / "opt_ml"
    config = base / "input" / "config"
    config.mkdir(parents=True)
    hps = {**TRAIN_HPS, "image_size": str(image_size)}
    (config / "hyperparameters.json").write_text(json.dumps(hps))
    for channel, split, n in (("train", "train", per_count), ("validation", "validation", 12)):
        by_count: dict[int, list[str]] = defaultdict(list)
        for image_id, count in labels(split):
            by_count[count].append(image_id)
        for count, ids in by_count.items():
            folder = base / "input" / "data" / channel / str(count)
            folder.mkdir(parents=True)
            for image_id in ids[:n]:
                (folder / f"{image_id}.jpg").symlink_to(ABID / "images" / f"{image_id}.jpg")
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, str(REPO / "train")],
        env={**os.environ, "SAGEMAKER_BASE_DIR": str(base)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    if result.returncode == 0:
        print(f"trained a model with ./train in {time.perf_counter() - started:.0f} s")
        return base / "model", f"./train {hps} on {per_count}/count train photos"
    print("./train failed; benchmarking seeded untrained weights:\n" + result.stderr[-2000:])
    torch.manual_seed(0)
    model_dir = work / "seeded" / "model"
    save_model(build_model("resnet18"), model_dir, arch="resnet18", image_size=image_size, extra={})
    return model_dir, "seeded untrained resnet18 (./train failed)"


# --------------------------------------------------------------------------- in-process


def pipeline_rate(
    run_one, items: list[Any], seconds: float = 4.0, warmup: float = 2.0
) -> tuple[float, float]:
    """Items per second of ``run_one`` over ``items`` (cycled), after a timed warm-up, and the
    CPU milliseconds the process spent per item (every thread, the engine's included).

    The warm-up is timed, not counted: oneDNN builds its kernels and the allocator grows its
    pools over the first second or so, and a few calls measured 4x too slow.
    """
    started = time.perf_counter()
    while time.perf_counter() - started < warmup:
        run_one(items[0])
    done, started, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds:
        run_one(items[done % len(items)])
        done += 1
    cpu_ms = 1000 * (time.process_time() - cpu) / done
    return done / (time.perf_counter() - started), cpu_ms


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` and its live descendants:
    the server's arbiter and workers, all threads, read from ``/proc``."""
    tick = os.sysconf("SC_CLK_TCK")
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    tree, grew = {pid}, True
    while grew:
        grew = False
        for child, (parent, _) in stats.items():
            if parent in tree and child not in tree:
                tree.add(child)
                grew = True
    return sum(stats[p][1] for p in tree if p in stats) / tick


def measure_pipeline(
    model_dir: Path, photos: list[bytes], engines: dict[str, Predictor]
) -> tuple[dict[str, float], dict[str, float]]:
    """Decode alone, eager at batch 1, and each served precision at batches of 1, 4 and 8:
    images/s, and CPU milliseconds per image of each precision and batch size."""
    model, card = load_model(model_dir)
    size = int(card["image_size"])

    def eager_one(photo: bytes) -> None:
        with torch.inference_mode():
            model(load_and_preprocess(photo, size).unsqueeze(0))

    fours = [photos[i : i + 4] for i in range(0, len(photos) - 3, 4)]
    eights = [photos[i : i + 8] for i in range(0, len(photos) - 7, 8)]
    decode, _ = pipeline_rate(lambda p: load_and_preprocess(p, size), photos, 2.0)
    # The same decode without JPEG draft mode (full-size decode, then the resize): what the
    # draft decoding in ``imaging.load_image`` saves.
    full_decode, _ = pipeline_rate(lambda p: preprocess(load_image(p), size), photos, 2.0)
    rates = {
        "decode_preprocess_images_per_s": decode,
        "decode_preprocess_no_draft_images_per_s": full_decode,
        "eager_bs1_images_per_s": pipeline_rate(eager_one, photos)[0],
    }
    cpu: dict[str, float] = {}
    for name, engine in engines.items():

        def one(photo: bytes, engine=engine) -> None:
            engine.predict_batch(engine.preprocess(photo).transpose(2, 0, 1)[None])

        def group(photos: list[bytes], engine=engine) -> None:
            engine.predict_batch(
                np.stack([engine.preprocess(p).transpose(2, 0, 1) for p in photos])
            )

        for batch, run, items in ((1, one, photos), (4, group, fours), (8, group, eights)):
            per_call, cpu_ms = pipeline_rate(run, items)
            rates[f"{name}_bs{batch}_images_per_s"] = batch * per_call
            cpu[f"{name}_bs{batch}"] = cpu_ms / batch
    return rates, cpu


def time_parts(photos: list[bytes], engine: Predictor) -> dict[str, float]:
    """Milliseconds per photo of each step a request takes, one at a time, in-process."""
    size = engine.info.image_size
    parts: dict[str, list[float]] = defaultdict(list)
    for photo in photos[:60]:
        t0 = time.perf_counter()
        image = load_image(photo, size)
        t1 = time.perf_counter()
        pixels = preprocess_array(image, size)
        t2 = time.perf_counter()
        probs = engine.predict_pixels([pixels])
        t3 = time.perf_counter()
        json.dumps(probabilities_to_prediction(probs[0], engine.info.version))
        t4 = time.perf_counter()
        for key, a, b in (("decode", t0, t1), ("resize", t1, t2), ("engine_bs1", t2, t3)):
            parts[key].append(b - a)
        parts["encode"].append(t4 - t3)
    batch = [preprocess_array(load_image(p, size), size) for p in photos[:8]]
    for n in (4, 8):
        started = time.perf_counter()
        for _ in range(10):
            engine.predict_pixels(batch[:n])
        parts[f"engine_bs{n}_per_photo"].append((time.perf_counter() - started) / 10 / n)
    return {k: 1000 * float(np.median(v)) for k, v in parts.items()}


def test_split_agreement(
    model_dir: Path, engines: dict[str, Predictor]
) -> tuple[dict[str, Any], list]:
    """Top-1 of each served precision vs eager PyTorch on every test-split photo, and the
    accuracy of the count the endpoint returns (the card's decision rule, not always argmax)."""
    model, card = load_model(model_dir)
    size = int(card["image_size"])
    rule = card.get("decision", "argmax")
    rows = labels("test")
    bodies = [(ABID / "images" / f"{image_id}.jpg").read_bytes() for image_id, _ in rows]
    batches = [
        torch.stack([load_and_preprocess(b, size) for b in bodies[i : i + 8]])
        for i in range(0, len(bodies), 8)
    ]
    # The network's probabilities, as the engines' ``predict_batch`` gives them: the head's
    # mapping of the eager outputs; the rule counts on those (the card's calibration changes
    # only the confidence answered, never the count).
    with torch.inference_mode():
        eager = np.concatenate(
            [head_probabilities(model(batch).numpy(), card["head"]) for batch in batches]
        )
    truth = np.array([c for _, c in rows])
    eager_count = decide(eager, rule) + 1
    result: dict[str, Any] = {
        "photos": len(rows),
        "decision": rule,
        "eager_accuracy": float((eager_count == truth).mean()),
        "predicted_count_histogram": np.bincount(eager_count, minlength=6)[1:].tolist(),
    }
    for name, engine in engines.items():
        served = np.concatenate([engine.predict_batch(batch) for batch in batches])
        count = decide(served, rule) + 1
        result[name] = {
            "engine": engine.info.engine,
            "top1_agreement": float((eager.argmax(1) == served.argmax(1)).mean()),
            "count_agreement": float((eager_count == count).mean()),
            "max_abs_probability_diff": float(np.abs(eager - served).max()),
            "accuracy": float((count == truth).mean()),
            "rmse": float(np.sqrt(((count - truth) ** 2).mean())),
        }
    return result, [bodies, eager]


# --------------------------------------------------------------------------- servers


class Running:
    """A server subprocess on 127.0.0.1:port; ``ready_s`` is start -> first /ping 200."""

    def __init__(self, command: list[str], env: dict[str, str], port: int, log: Path) -> None:
        self.port = port
        self.log = log
        started = time.perf_counter()
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                command, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, cwd=REPO
            )
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{command} exited:\n{log.read_text()[-3000:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/ping")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.perf_counter() - started > 120:
                raise RuntimeError(f"no /ping 200 after 120 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.02)
        self.ready_s = time.perf_counter() - started

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def load(
    port: int,
    bodies: list[bytes],
    concurrency: int,
    requests: int,
    content_type: str = "image/jpeg",
    per_request: int = 1,
    server_pid: int | None = None,
) -> dict[str, Any]:
    """``concurrency`` keep-alive clients send ``requests`` bodies in all; rates and latencies.

    ``per_request`` photos per body (a JSON batch) count towards images/s. CPU milliseconds
    per image of the clients (this process) and, given ``server_pid``, of the server: the
    clients share the server's cores here, which they would not in production.
    """
    lock = threading.Lock()
    cursor = iter(range(requests))
    latencies: list[float] = []
    answers: dict[int, Any] = {}
    errors: list[str] = []

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            with lock:
                i = next(cursor, None)
            if i is None:
                break
            t = time.perf_counter()
            try:
                conn.request(
                    "POST",
                    "/invocations",
                    body=bodies[i % len(bodies)],
                    headers={"Content-Type": content_type},
                )
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                errors.append(repr(exc))
                continue
            elapsed = time.perf_counter() - t
            with lock:
                latencies.append(elapsed)
                if response.status == 200:
                    answers[i] = json.loads(data)
                else:
                    errors.append(f"{response.status} {data[:200]!r}")
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    server_cpu = tree_cpu_seconds(server_pid) if server_pid else 0.0
    client_cpu = time.process_time()
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    client_cpu = time.process_time() - client_cpu
    server_cpu = tree_cpu_seconds(server_pid) - server_cpu if server_pid else None
    images = max(1, per_request * len(answers))
    ms = np.array(latencies) * 1000
    return {
        "concurrency": concurrency,
        "requests": requests,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "images_per_s": per_request * len(answers) / wall,
        "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
        "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None,
        "client_cpu_ms_per_image": 1000 * client_cpu / images,
        "server_cpu_ms_per_image": None if server_cpu is None else 1000 * server_cpu / images,
        "_answers": answers,
    }


def ping_round_trip_ms(port: int, pings: int = 500) -> float:
    """Median milliseconds of a ``GET /ping`` on a kept-alive connection: the part of every
    request that is HTTP alone (client, loopback, gunicorn, flask), with no photo in it."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    times = []
    for _ in range(pings):
        started = time.perf_counter()
        conn.request("GET", "/ping")
        conn.getresponse().read()
        times.append(time.perf_counter() - started)
    conn.close()
    return 1000 * float(np.median(times[pings // 10 :]))


def measure_server(running: Running, photos: list[bytes], plan: dict[int, int]) -> list[dict]:
    rows = []
    for concurrency, n in plan.items():
        load(running.port, photos, concurrency, 4 * concurrency)  # warm-up: connections, batches
        row = load(running.port, photos, concurrency, n, server_pid=running.process.pid)
        row.pop("_answers")
        rows.append(row)
        print(
            f"  c={concurrency:<2d} {row['images_per_s']:6.1f} images/s  "
            f"p50 {row['p50_ms']:6.1f} ms  p99 {row['p99_ms']:6.1f} ms  errors {row['errors']}  "
            f"CPU ms/image server {row['server_cpu_ms_per_image']:.2f} "
            f"client {row['client_cpu_ms_per_image']:.2f}"
        )
    return rows


def start_serve(model_dir: Path, log: Path, **env: str) -> Running:
    """``./serve`` on a free loopback port with ``env`` on top of the defaults."""
    port = free_port()
    return Running(
        [sys.executable, str(REPO / "serve")],
        {
            "BINCOUNTER_MODEL_DIR": str(model_dir),
            "SAGEMAKER_BIND_TO_PORT": str(port),
            "BINCOUNTER_BIND_HOST": "127.0.0.1",
            **env,
        },
        port,
        log,
    )


#: Other settings of this server, to show what each choice is worth (same photos).
VARIANTS = {
    # The same code without bf16: OpenVINO in float32, and int8 (the card must vouch for it).
    "precision_fp32": ({"BINCOUNTER_PRECISION": "fp32"}, (1, 4, 16)),
    "precision_int8": ({"BINCOUNTER_PRECISION": "int8"}, (1, 4, 16)),
    # The previous default engine: frozen TorchScript, float32.
    "torchscript_engine": ({"BINCOUNTER_ENGINE": "torchscript"}, (1, 4)),
    # The previous default: one worker whose engine computes on all cores (the default is now
    # one worker per core, each computing on cores / workers threads).
    "one_worker_all_cores": ({"SAGEMAKER_MODEL_SERVER_WORKERS": "1"}, (1, 4, 16)),
    # Purely greedy batches: never wait for a request that is still decoding.
    "no_batch_wait": ({"BINCOUNTER_BATCH_WAIT_MS": "0"}, (4, 16)),
}


def cpu_description() -> dict[str, Any]:
    """The CPU model and the flags that decide the engine's precision."""
    model, flags = platform.processor() or platform.machine(), []
    try:
        info = Path("/proc/cpuinfo").read_text()
        model = next(
            line.split(":", 1)[1].strip() for line in info.splitlines() if "model name" in line
        )
        all_flags = next(
            line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")
        )
        flags = sorted(
            f
            for f in all_flags
            if f.startswith(("amx", "avx512_bf16", "avx512_vnni", "avx512f", "avx2"))
        )
    except (OSError, StopIteration):
        pass
    return {"model": model, "flags": flags}


def json_batch(photos: list[bytes]) -> bytes:
    return json.dumps(
        {"instances": [{"b64": base64.b64encode(p).decode()} for p in photos]}
    ).encode()


# --------------------------------------------------------------------------- main


def bench_arguments(description: str, out_name: str) -> argparse.ArgumentParser:
    """The options both serving benches take: the model, where the JSON goes, how many requests."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model-dir", type=Path, help="a model dir as ./train writes it")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / out_name)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply request counts")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = bench_arguments(__doc__.splitlines()[0], "serve_bench.json")
    parser.add_argument(
        "--no-variants",
        dest="variants",
        action="store_false",
        help="skip the other settings of this server (see VARIANTS)",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=96,
        help="side of the model ./train fits when no --model-dir is given (the training default)",
    )
    args = parser.parse_args(argv)

    cores = cpu_count()
    torch.set_num_threads(cores)
    cpu = cpu_description()
    print(f"CPU {cpu['model']}, {cores} cores, flags {' '.join(cpu['flags'])}")
    print(f"load average at start {os.getloadavg()}")
    photos = [p.read_bytes() for p in sorted((ABID / "original").glob("*.jpg"))]
    work = Path(tempfile.mkdtemp(prefix="serve_bench_"))
    if args.model_dir:
        model_dir, model_note = args.model_dir.resolve(), f"given: {args.model_dir}"
    else:
        model_dir, model_note = train_model(work, args.image_size)
    results: dict[str, Any] = {
        "machine": {
            "cores": cores,
            "cpu": cpu,
            "torch": torch.__version__,
            "loadavg_at_start": os.getloadavg(),
        },
        "model": model_note,
        "photos": f"{len(photos)} originals from {ABID / 'original'} at native size",
    }

    print("1. bare in-process pipeline (decode + preprocess + forward)")
    engines = {
        p: Predictor.load(model_dir, engine="openvino", precision=p, compute_threads=cores)
        for p in ("fp32", "auto", "int8")
    }
    results["engines"] = {p: e.info.engine for p, e in engines.items()}
    print(f"  engines: {results['engines']}")
    pipeline, pipeline_cpu = measure_pipeline(model_dir, photos, engines)
    results["pipeline"] = pipeline
    results["pipeline_cpu_ms_per_image"] = pipeline_cpu
    for key, value in pipeline.items():
        print(f"  {key:34s} {value:7.1f}")
    print(f"  CPU ms per image: {json.dumps({k: round(v, 2) for k, v in pipeline_cpu.items()})}")
    results["parts_ms"] = time_parts(photos, engines["auto"])
    print(f"  ms per photo: {results['parts_ms']}")
    agreement, (test_bodies, eager_test) = test_split_agreement(model_dir, engines)
    del engines

    n = lambda k: max(8, int(k * args.scale))  # noqa: E731
    print(f"2. baseline: eager flask handler, gunicorn sync x {cores} workers")
    port = free_port()
    baseline = Running(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-k",
            "sync",
            "-w",
            str(cores),
            "-b",
            f"127.0.0.1:{port}",
            "--chdir",
            str(REPO / "bench"),
            "eager_app:create_app()",
        ],
        {"BENCH_MODEL_DIR": str(model_dir)},
        port,
        work / "baseline.log",
    )
    try:
        results["baseline"] = measure_server(baseline, photos, {1: n(200), 4: n(400)})
    finally:
        baseline.stop()

    print("3. this server (./serve, defaults)")
    server = start_serve(model_dir, work / "serve.log")
    try:
        results["start_to_first_ping_s"] = server.ready_s
        print(f"  start -> first /ping 200: {server.ready_s:.2f} s")
        results["server"] = measure_server(server, photos, {1: n(200), 4: n(400), 16: n(480)})
        results["ping_round_trip_ms"] = ping_round_trip_ms(server.port)
        print(f"  GET /ping round trip (kept alive): {results['ping_round_trip_ms']:.3f} ms")
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", "/execution-parameters")
        transforms = json.loads(conn.getresponse().read())["MaxConcurrentTransforms"]
        conn.close()
        batches = [json_batch(photos[i : i + 8]) for i in range(0, len(photos) - 7, 8)]
        bt = load(server.port, batches, transforms, n(60), "application/json", per_request=8)
        bt.pop("_answers")
        results["batch_transform"] = {"max_concurrent_transforms": transforms, **bt}
        print(
            f"  batch transform: JSON bodies of 8 photos at MaxConcurrentTransforms={transforms}: "
            f"{bt['images_per_s']:.1f} images/s, errors {bt['errors']}"
        )
        through = load(server.port, test_bodies, 16, len(test_bodies))
        assert through["errors"] == 0, through["first_error"]
        answers = [through["_answers"][i] for i in range(len(test_bodies))]
        served_p = np.array([[a["probabilities"][str(c)] for c in range(1, 6)] for a in answers])
        served_count = np.array([a["count"] for a in answers])
        agreement["through_server_top1_agreement"] = float(
            (served_p.argmax(1) == eager_test.argmax(1)).mean()
        )
        agreement["through_server_count_agreement"] = float(
            (served_count == decide(eager_test, agreement["decision"]) + 1).mean()
        )
        log = (work / "serve.log").read_text()
        results["server_engine_line"] = next(
            (line for line in log.splitlines() if "ready on" in line), ""
        )
    finally:
        server.stop()
    results["test_split_agreement"] = agreement

    if args.variants:
        print("4. variants of this server (what each choice is worth)")
        results["variants"] = {}
        for name, (env, levels) in VARIANTS.items():
            print(f"  {name}: {env}")
            variant = start_serve(model_dir, work / f"serve-{name}.log", **env)
            try:
                plan = {c: n({1: 200, 4: 400, 16: 480}[c]) for c in levels}
                results["variants"][name] = {
                    "env": env,
                    "start_to_first_ping_s": variant.ready_s,
                    "rows": measure_server(variant, photos, plan),
                }
            finally:
                variant.stop()

    base_best = max(r["images_per_s"] for r in results["baseline"])
    row = {r["concurrency"]: r for r in results["server"]}
    engine_key = "auto"
    results["summary"] = {
        "server_c4_over_best_baseline": row[4]["images_per_s"] / base_best,
        "server_c4_p99_ms": row[4]["p99_ms"],
        "overhead_c1_vs_engine_bs1": 1
        - row[1]["images_per_s"] / pipeline[f"{engine_key}_bs1_images_per_s"],
        "overhead_c4_vs_engine_bs4": 1
        - row[4]["images_per_s"] / pipeline[f"{engine_key}_bs4_images_per_s"],
        # At c=1 one photo is in flight: images/s = 1 / (bare time + HTTP time), so a server
        # whose HTTP cost no more than an empty /ping would still show this overhead.
        "overhead_c1_floor_from_ping": results["ping_round_trip_ms"]
        / (results["ping_round_trip_ms"] + 1000 / pipeline[f"{engine_key}_bs1_images_per_s"]),
        "overhead_c16_vs_engine_bs8": 1
        - row[16]["images_per_s"] / pipeline[f"{engine_key}_bs8_images_per_s"],
        # The same comparison in CPU time per image: what the server adds to the engine's
        # work, free of the load clients that share these cores (they would not on SageMaker).
        "cpu_overhead_c1_vs_engine_bs1": row[1]["server_cpu_ms_per_image"]
        / pipeline_cpu[f"{engine_key}_bs1"]
        - 1,
        "cpu_overhead_c4_vs_engine_bs4": row[4]["server_cpu_ms_per_image"]
        / pipeline_cpu[f"{engine_key}_bs4"]
        - 1,
        "cpu_overhead_c16_vs_engine_bs8": row[16]["server_cpu_ms_per_image"]
        / pipeline_cpu[f"{engine_key}_bs8"]
        - 1,
        "client_cpu_share_c4": row[4]["client_cpu_ms_per_image"]
        / (row[4]["client_cpu_ms_per_image"] + row[4]["server_cpu_ms_per_image"]),
        "start_to_first_ping_s": results["start_to_first_ping_s"],
    }
    results["machine"]["loadavg_at_end"] = os.getloadavg()

    print("\nsummary")
    print(f"  {'what':44s} {'images/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s}")
    for key, value in pipeline.items():
        print(f"  pipeline {key.replace('_images_per_s', ''):35s} {value:9.1f}")
    for name in ("baseline", "server"):
        for r in results[name]:
            label = f"{name} c={r['concurrency']}"
            print(f"  {label:44s} {r['images_per_s']:9.1f} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f}")
    for name, variant in results.get("variants", {}).items():
        for r in variant["rows"]:
            label = f"variant {name} c={r['concurrency']}"
            print(f"  {label:44s} {r['images_per_s']:9.1f} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f}")
    s = results["summary"]
    print(
        f"  server c=4 / best baseline: {s['server_c4_over_best_baseline']:.2f}x (target 3x), "
        f"p99 at c=4 {s['server_c4_p99_ms']:.0f} ms (target <= 100 ms)"
    )
    print(
        f"  server overhead vs bare engine: c=1 vs bs1 {100 * s['overhead_c1_vs_engine_bs1']:.1f}%, "
        f"c=4 vs bs4 {100 * s['overhead_c4_vs_engine_bs4']:.1f}%, "
        f"c=16 vs bs8 {100 * s['overhead_c16_vs_engine_bs8']:.1f}% (target <= 15%); "
        f"c=1 floor from the /ping round trip alone "
        f"{100 * s['overhead_c1_floor_from_ping']:.1f}%"
    )
    print(
        f"  server CPU per image vs bare engine: c=1 {100 * s['cpu_overhead_c1_vs_engine_bs1']:.1f}%, "
        f"c=4 {100 * s['cpu_overhead_c4_vs_engine_bs4']:.1f}%, "
        f"c=16 {100 * s['cpu_overhead_c16_vs_engine_bs8']:.1f}%; load clients took "
        f"{100 * s['client_cpu_share_c4']:.0f}% of the CPU at c=4"
    )
    print(f"  start -> first /ping: {s['start_to_first_ping_s']:.2f} s (target < 10 s)")
    print(f"  test split ({agreement['photos']} photos): {json.dumps(agreement)}")
    print(f"  load average at end {os.getloadavg()}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
