"""Start the real server (``./serve`` -> gunicorn) on a free loopback port, and stop it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from support import REPO, free_port


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    log_path: Path
    started_in: float = 0.0

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        """Every worker gunicorn has booted so far, from its log (a restart adds one)."""
        return [int(p) for p in re.findall(r"Booting worker with pid: (\d+)", self.log())]

    def live_worker_pids(self) -> list[int]:
        """The arbiter's child processes right now, from ``/proc`` (a dead worker is gone)."""
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                # "pid (comm) state ppid ...": comm may hold spaces, so split after the ')'.
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:  # the process ended while we looked
                continue
            if int(fields[1]) == self.process.pid:
                children.append(int(stat.parent.name))
        return sorted(children)

    def wait_ready(self, timeout: float = 90.0) -> float:
        """Poll ``/ping`` until 200; returns seconds waited. Fails if the server exits."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if requests.get(f"{self.url}/ping", timeout=2).status_code == 200:
                    return time.monotonic() - start
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise AssertionError(f"server not ready after {timeout} s:\n{self.log()}")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (what SageMaker sends), then SIGKILL if it does not exit in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def launch(env: dict[str, str], log_dir: Path) -> Server:
    """Start ``./serve`` bound to 127.0.0.1 on a free port; does not wait for readiness."""
    port = free_port()
    log_path = log_dir / f"serve-{port}.log"
    environ = {
        **os.environ,
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "BINCOUNTER_BIND_HOST": "127.0.0.1",
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(REPO / "serve")],
            env=environ,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    return Server(process, f"http://127.0.0.1:{port}", log_path)


def start_server(env: dict[str, str], log_dir: Path, timeout: float = 90.0) -> Server:
    server = launch(env, log_dir)
    try:
        server.started_in = server.wait_ready(timeout)
    except BaseException:
        server.stop()
        raise
    return server
