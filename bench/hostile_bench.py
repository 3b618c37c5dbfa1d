"""Hostile-clients benchmark: the worst bodies and the slowest clients against one ``./serve``.

Starts ``./serve`` (one worker, the default config otherwise, as the issue's attacker found
it) on 127.0.0.1 unless ``--url`` and ``--arbiter-pid`` name one already running, then for a
bounded number of rounds, all at once:

* ``--attackers`` threads post the costliest photos the server still accepts (a palette PNG
  with transparency, a 16-bit greyscale PNG and a half-transparent RGBA PNG, each a square just
  under the server's pixel cap, a few kB to 170 kB on the wire), ``--rounds`` each;
* ``--stalled`` connections send the headers and half the body of a photo, then nothing;
* one client posts a real ABID photo in a loop and counts the answers that are 200;
* one client times ``GET /ping`` in a loop;
* a sampler reads the worker's resident memory every 10 ms.

Then one JSON batch of eight heavy photos, timed (the model-server timeout is
``--timeout``), and the worker's memory once the server has been idle for two seconds. Prints
the CPU model and flags, the worker's idle / peak / after RSS, the /ping latencies, the share
of valid requests answered 200 and what each attack got back.

Usage: ``PYTHONPATH=container .venv/bin/python bench/hostile_bench.py [--rounds 3]``
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import socket
import sys
import tempfile
import threading
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_bench import cpu_description, json_batch, start_serve
from serving.inputs import hostile_photos, photo_bytes

from bincounter import imaging
from bincounter.model import build_model, save_model
from bincounter.serving.config import ServingConfig


def server_pixel_cap() -> int:
    """The pixel cap the server runs with by default (the module constant before the knob)."""
    knobs = {f.name: f for f in fields(ServingConfig)}
    if "max_image_pixels" in knobs:
        return int(ServingConfig.from_environment(os.environ).max_image_pixels)
    return imaging.MAX_PIXELS


#: Every client request of the benchmark gives up after this long (counted as a failure).
REQUEST_TIMEOUT_S = 30


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def worker_pid(arbiter: int) -> int:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields_ = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields_[1]) == arbiter:
            return int(stat.parent.name)
    raise RuntimeError(f"no worker under arbiter {arbiter}")


class Sampler(threading.Thread):
    """Peak resident memory of one process, sampled every 10 ms until ``stop``."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.halt = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            self.peak = max(self.peak, rss_kib(self.pid))
            self.halt.wait(0.01)


def stall(host: str, port: int, body: bytes) -> socket.socket:
    """A connection that has sent the headers and half of ``body``, and will send no more."""
    sock = socket.create_connection((host, port))
    head = (
        f"POST /invocations HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/jpeg\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock.sendall(head + body[: len(body) // 2])
    return sock


def attack(
    url: str,
    pid: int,
    heavy: dict[str, bytes],
    rounds: int,
    attackers: int,
    stalled: int,
    stall_s: float,
) -> dict:
    """One phase: ``attackers`` x ``rounds`` heavy bodies, or ``stalled`` connections held for
    ``stall_s`` seconds, while a valid client and a pinger run; every request times out at 30 s.
    """
    host, port = url.split("//")[1].split(":")
    valid = photo_bytes(0)
    done = threading.Event()
    statuses: collections.Counter = collections.Counter()
    valid_statuses: collections.Counter = collections.Counter()
    pings: list[float] = []
    lock = threading.Lock()

    def attacker(i: int) -> None:
        names = sorted(heavy)
        with requests.Session() as session:
            for r in range(rounds):
                name = names[(i + r) % len(names)]
                try:
                    answer = session.post(
                        f"{url}/invocations",
                        data=heavy[name],
                        headers={"Content-Type": "image/png"},
                        timeout=REQUEST_TIMEOUT_S,
                    )
                    key = f"{name} {answer.status_code}"
                except requests.RequestException as exc:
                    key = f"{name} {type(exc).__name__}"
                with lock:
                    statuses[key] += 1

    def valid_client() -> None:
        with requests.Session() as session:
            while not done.is_set():
                try:
                    code = session.post(
                        f"{url}/invocations",
                        data=valid,
                        headers={"Content-Type": "image/jpeg"},
                        timeout=REQUEST_TIMEOUT_S,
                    ).status_code
                except requests.RequestException as exc:
                    code = type(exc).__name__
                valid_statuses[code] += 1

    def pinger() -> None:
        while not done.is_set():
            start = time.perf_counter()
            try:
                requests.get(f"{url}/ping", timeout=REQUEST_TIMEOUT_S)
                pings.append(time.perf_counter() - start)
            except requests.RequestException:
                pings.append(float("inf"))
            done.wait(0.05)

    sampler = Sampler(pid)
    sampler.start()
    held = [stall(host, int(port), valid) for _ in range(stalled)]
    helpers = [threading.Thread(target=valid_client), threading.Thread(target=pinger)]
    threads = [threading.Thread(target=attacker, args=(i,)) for i in range(attackers)]
    started = time.perf_counter()
    for thread in helpers + threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.wait(stall_s if stalled else 0)
    attack_s = time.perf_counter() - started
    done.set()
    for thread in helpers:
        thread.join()
    closed_by_server = 0
    for sock in held:
        sock.setblocking(False)
        try:
            sock.recv(1 << 16)  # an answer or the end of the stream: the server let go
            closed_by_server += 1
        except BlockingIOError:  # still open, still waiting for its body
            pass
        except OSError:
            closed_by_server += 1
        sock.close()
    sampler.halt.set()
    sampler.join()
    ok = valid_statuses.get(200, 0)
    finite = sorted(p for p in pings if p != float("inf"))
    return {
        "seconds": round(attack_s, 2),
        "peak_rss_mib": round(sampler.peak / 1024, 1),
        "heavy_answers": dict(statuses),
        "valid_requests": sum(valid_statuses.values()),
        "valid_200_share": round(ok / max(1, sum(valid_statuses.values())), 4),
        "valid_answers": {str(k): v for k, v in valid_statuses.items()},
        "pings": len(pings),
        "ping_failures": len(pings) - len(finite),
        "ping_p50_ms": round(1000 * finite[len(finite) // 2], 1) if finite else None,
        "ping_max_ms": round(1000 * finite[-1], 1) if finite else None,
        "stalled_let_go_by_server": closed_by_server if stalled else None,
    }


def heavy_batch(url: str, heavy: dict[str, bytes]) -> dict[str, Any]:
    """One JSON batch of eight heavy photos: its status and how long the answer took."""
    photos = [heavy[name] for name in sorted(heavy)] * 3
    body = json_batch(photos[:8])
    start = time.perf_counter()
    answer = requests.post(
        f"{url}/invocations", data=body, headers={"Content-Type": "application/json"}, timeout=300
    )
    return {
        "status": answer.status_code,
        "seconds": round(time.perf_counter() - start, 2),
        "error": answer.json().get("error") if answer.status_code != 200 else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running server (with --arbiter-pid)")
    parser.add_argument("--arbiter-pid", type=int)
    parser.add_argument("--rounds", type=int, default=3, help="heavy bodies per attacker")
    parser.add_argument("--attackers", type=int, default=8)
    parser.add_argument("--stalled", type=int, default=32)
    parser.add_argument("--stall-seconds", type=float, default=15.0)
    parser.add_argument("--timeout", default="5", help="SAGEMAKER_MODEL_SERVER_TIMEOUT")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)

    cap = server_pixel_cap()
    heavy = hostile_photos(cap)
    report: dict[str, Any] = {
        "cpu": cpu_description(),
        "pixel_cap": cap,
        "heavy_body_bytes": {k: len(v) for k, v in heavy.items()},
    }
    work = Path(tempfile.mkdtemp(prefix="hostile_bench-"))
    running = None
    if args.url:
        url, arbiter = args.url.rstrip("/"), args.arbiter_pid
    else:
        model_dir = work / "model"
        save_model(build_model("resnet18"), model_dir, arch="resnet18", image_size=224, extra={})
        running = start_serve(
            model_dir,
            work / "serve.log",
            SAGEMAKER_MODEL_SERVER_WORKERS="1",
            SAGEMAKER_MODEL_SERVER_TIMEOUT=args.timeout,
        )
        url, arbiter = f"http://127.0.0.1:{running.port}", running.process.pid
    try:
        pid = worker_pid(arbiter)
        for _ in range(3):
            requests.post(
                f"{url}/invocations",
                data=photo_bytes(0),
                headers={"Content-Type": "image/jpeg"},
                timeout=60,
            )
        report["idle_rss_mib"] = round(rss_kib(pid) / 1024, 1)
        report["decode_attack"] = attack(url, pid, heavy, args.rounds, args.attackers, 0, 0)
        report["stalled_attack"] = attack(url, pid, heavy, 0, 0, args.stalled, args.stall_seconds)
        report["heavy_json_batch"] = heavy_batch(url, heavy)
        time.sleep(2.0)  # a benchmark: let the worker settle before reading its memory
        report["after_rss_mib"] = round(rss_kib(pid) / 1024, 1)
    finally:
        if running is not None:
            running.stop()
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
