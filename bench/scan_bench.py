"""Listing and metadata-scan throughput against a moto S3 seeded with ABID-like metadata.

    PYTHONPATH=container .venv/bin/python bench/scan_bench.py [--objects 50000] [--workers 32]

A moto server runs in a child process (so its CPU does not share this process's GIL), seeded
through its backend with ``--objects`` small ``metadata/<id>.json`` objects named like ABID's
(five digits with leading zeros, six from 100000). Measured, each from a cold cache:

1. one sequential ``ListObjectsV2`` walk of the prefix (what a single-threaded lister does);
2. the partitioned listing of ``bincounter.dataprep.listing`` (ranges in parallel), list only;
3. the full scan: partitioned listing + a GET and parse of every metadata object, as
   ``prepare --full-scan`` runs it.

Each is extrapolated linearly to ABID's 536,434 objects. Loopback has no network latency, so
these are the client's and moto's CPU limits; against S3 each GET waits tens of milliseconds,
and the scan is bound by ``workers / latency`` instead (docs/aws.md gives both).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ABID_OBJECTS = 536_434
SERVER = r"""
import json, sys
from moto.server import ThreadedMotoServer
from moto.s3.models import s3_backends
n, port = int(sys.argv[1]), int(sys.argv[2])
server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
server.start()
backend = s3_backends["123456789012"]["aws"]
backend.create_bucket("aft-vbi-pds", "us-east-1")
for i in range(1, n + 1):
    image_id = f"{i:05d}"
    body = json.dumps({"EXPECTED_QUANTITY": 1 + i % 6, "BIN_FCSKU_DATA": {}}).encode()
    backend.put_object("aft-vbi-pds", f"metadata/{image_id}.json", body)
print("ready", flush=True)
sys.stdin.read()
"""


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                return " ".join(f for f in flags if f.startswith(("avx", "sse4", "amx")))
    except OSError:
        pass
    return "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=32)
    # moto answers each list page in time proportional to the whole bucket (S3 does not), so
    # on moto a deeper partition costs more list requests than it saves: 2 by default here.
    parser.add_argument("--depth", type=int, default=2)
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from support import free_port

    port = free_port()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}
    started = time.monotonic()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(args.objects), str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # werkzeug's line per request
        text=True,
        env=env,
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        seeded = time.monotonic() - started
        os.environ.update(env)
        from bincounter.dataprep.fetch import Cache, Fetcher
        from bincounter.dataprep.listing import key_ranges, scan_metadata
        from bincounter.dataprep.records import Stats
        from bincounter.dataprep.sources import S3Source

        url = f"http://127.0.0.1:{port}"
        # Signed: the fake bucket has no public policy (unsigned GETs would be answered 403).
        source = S3Source(endpoint_url=url, unsigned=False, max_connections=args.workers + 4)
        print(f"CPU: {cpu_model()} x{os.cpu_count()} ({cpu_flags()})", flush=True)
        print(f"moto server seeded with {args.objects} metadata objects in {seeded:.1f} s")

        t = time.monotonic()
        n = sum(1 for _ in source.list_metadata_ids())
        seq = time.monotonic() - t
        assert n == args.objects, n
        print(f"sequential listing: {seq:.2f} s", flush=True)

        ranges = key_ranges(source.metadata_prefix, args.depth)
        t = time.monotonic()
        with ThreadPoolExecutor(args.workers) as pool:
            got = sum(pool.map(lambda r: sum(1 for _ in source.list_metadata_range(*r)), ranges))
        par = time.monotonic() - t
        assert got == args.objects, got
        print(f"partitioned listing: {par:.2f} s", flush=True)

        with tempfile.TemporaryDirectory() as tmp:
            cache = Cache(Path(tmp) / "cache")
            t = time.monotonic()
            result = scan_metadata(
                source,
                Fetcher(source, cache, Stats()),
                Path(tmp),
                depth=args.depth,
                workers=args.workers,
                progress=False,
            )
            full = time.monotonic() - t
            print(f"full scan: {len(result.counts)} counts, {len(result.problems)} problems "
                  f"{list(result.problems.items())[:3]}", flush=True)  # fmt: skip
            t = time.monotonic()
            again = scan_metadata(
                source, Fetcher(source, cache, Stats()), Path(tmp), depth=args.depth,
                workers=args.workers, progress=False,
            )  # fmt: skip
            resumed = time.monotonic() - t
            print(f"resumed: {again.resumed_ranges}/{len(ranges)} ranges", flush=True)

        scale = ABID_OBJECTS / args.objects
        rows = [
            ("sequential listing", seq),
            (f"partitioned listing ({len(ranges)} ranges, {args.workers} threads)", par),
            (f"full scan: list + GET + parse ({args.workers} threads)", full),
            ("full scan resumed (every range saved)", resumed),
        ]
        print(f"{'step':58} {'seconds':>8} {'objects/s':>10} {'536,434 est.':>13}")
        for name, seconds in rows:
            print(
                f"{name:58} {seconds:8.2f} {args.objects / seconds:10.0f} "
                f"{seconds * scale / 60:10.1f} min"
            )
        print(json.dumps({"objects": args.objects, "workers": args.workers, "depth": args.depth,
                          "seconds": {n: round(s, 3) for n, s in rows}}))  # fmt: skip
    finally:
        if server.stdin:
            server.stdin.close()
        server.terminate()
        server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
