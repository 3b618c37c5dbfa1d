"""Session fixtures for the container tests: a docker engine, the project's image, loopback ports.

``tests/container/engine.sh up`` installs and starts what is missing (Debian's docker.io,
``docker compose`` v2, docker-registry, shellcheck, a stand-in for the base image); the session
stops dockerd at the end if it started it. The image is built from the project's Dockerfile with
ImageNet weights off and pip pointed at this machine's local wheel folders (served on 127.0.0.1)
so the build does not download gigabytes of CUDA wheels.

Environment knobs:

- ``BINCOUNTER_TEST_IMAGE``: use this already built image instead of building one.
- ``BINCOUNTER_WHEEL_DIRS``: colon-separated folders of wheels to offer the build
  (default: whichever of /opt/pypi-more/files, /opt/pypi/files, /opt/wheels exist).
- ``BINCOUNTER_KEEP_ENGINE=1``: leave a dockerd this session started running.

When the engine cannot be set up the tests fail under CI (``CI=true``) and skip elsewhere.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
ENGINE_SH = HERE / "engine.sh"
TEST_TAG = "bincounter:test"
DEFAULT_WHEEL_DIRS = ("/opt/pypi-more/files", "/opt/pypi/files", "/opt/wheels")
#: Loopback port of the wheel server the test build's pip reads (kept stable for layer caching).
WHEEL_SERVER_PORT = int(os.environ.get("BINCOUNTER_WHEEL_PORT", "38711"))
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

#: Numbers shown in the terminal summary (build time, image size, ...).
REPORT: dict[str, str] = {}


def unavailable(message: str) -> None:
    """Fail in CI (a green run must mean the container was tested), skip on a laptop."""
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def docker(
    *args: str, timeout: float = 600, check: bool = True, **kw
) -> subprocess.CompletedProcess:
    """Run the docker CLI; on failure the assertion message carries its output."""
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, **kw
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"docker {' '.join(args)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
        )
    return result


def wait_for(predicate, timeout: float, interval: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


@pytest.fixture(scope="session")
def engine() -> dict[str, str]:
    """A running docker engine with compose v2 and the base image (installed when missing)."""
    if sys.platform != "linux":
        unavailable("container tests need Linux (Debian's docker.io engine)")
    started = time.monotonic()
    try:
        result = subprocess.run(
            ["bash", str(ENGINE_SH), "up"], capture_output=True, text=True, timeout=1800
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        unavailable(f"could not set up the docker engine with {ENGINE_SH}: {exc}")
    if result.returncode != 0:
        unavailable(
            f"could not set up the docker engine with {ENGINE_SH} up "
            f"(exit {result.returncode}):\n{result.stderr[-3000:]}"
        )
    REPORT["engine setup"] = f"{time.monotonic() - started:.0f} s"
    state = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    yield state
    if state.get("ENGINE_STARTED") == "1" and os.environ.get("BINCOUNTER_KEEP_ENGINE") != "1":
        subprocess.run(["bash", str(ENGINE_SH), "down"], timeout=120, check=False)


#: Files the wheel server handed out (path -> bytes), to report what the build did not download.
SERVED: dict[str, int] = {}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        if path.is_file() and path.suffix == ".whl":
            SERVED[self.path] = path.stat().st_size
        super().do_GET()


@contextlib.contextmanager
def serve_folder(root: Path, port: int = 0):
    """A static HTTP server for ``root`` on 127.0.0.1 (threaded; closed on exit).

    ``port`` is tried first (any free one when it is taken or 0)."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def wheel_dirs() -> list[Path]:
    configured = os.environ.get("BINCOUNTER_WHEEL_DIRS")
    dirs = configured.split(":") if configured else DEFAULT_WHEEL_DIRS
    return [Path(d) for d in dirs if d and Path(d).is_dir()]


@dataclasses.dataclass(frozen=True)
class Build:
    returncode: int
    elapsed: float
    log: str


def build_image(
    tag: str,
    tmp: Path,
    extra_args: list[str] | None = None,
    download_weights: bool = False,
    context: Path = REPO,
) -> Build:
    """``docker build`` the project's Dockerfile as the tests need it (ImageNet weights off
    unless asked for); returns its exit status, seconds taken and log.

    The wheel folders are served on a fixed loopback port under names derived from their
    paths: ``PIP_FIND_LINKS`` is part of the cache key of every ``RUN`` after its ``ARG``, so a
    URL that changed from one session to the next would rebuild the torch layers each time."""
    links = tmp / "wheel-links"
    links.mkdir(exist_ok=True)
    for folder in wheel_dirs():
        name = "-".join(folder.resolve().parts[1:]) or "root"
        (links / name).symlink_to(folder, target_is_directory=True)
    with serve_folder(links, WHEEL_SERVER_PORT) as url:
        find_links = " ".join(f"{url}/{p.name}/" for p in sorted(links.iterdir()))
        args = [
            "build",
            # host network: pip in the build reaches the wheel server on the host's 127.0.0.1
            "--network", "host",
            "--build-arg", f"DOWNLOAD_WEIGHTS={int(download_weights)}",
            *(["--build-arg", f"PIP_FIND_LINKS={find_links}"] if find_links else []),
            *(extra_args or []),
            "-t", tag, str(context),
        ]  # fmt: skip
        started = time.monotonic()
        log = tmp / "build.log"
        with open(log, "w") as out:
            result = subprocess.run(
                ["docker", *args], stdout=out, stderr=subprocess.STDOUT, timeout=3000
            )
        elapsed = time.monotonic() - started
    return Build(result.returncode, elapsed, log.read_text())


def image_size_bytes(tag: str) -> int:
    return int(docker("image", "inspect", "-f", "{{.Size}}", tag).stdout.strip())


@pytest.fixture(scope="session")
def image(engine, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The project's image, built once per session (or ``$BINCOUNTER_TEST_IMAGE``)."""
    given = os.environ.get("BINCOUNTER_TEST_IMAGE")
    if given:
        docker("image", "inspect", given)
        return given
    result = build_image(TEST_TAG, tmp_path_factory.mktemp("build"))
    if result.returncode != 0:
        pytest.fail(f"docker build failed:\n{result.log[-6000:]}", pytrace=False)
    elapsed = result.elapsed
    if SERVED:
        REPORT["wheels from local folders"] = (
            f"{len(SERVED)} files, {sum(SERVED.values()) / 1e9:.2f} GB not downloaded"
        )
    REPORT["image build"] = f"{elapsed:.0f} s (cached layers are reused across sessions)"
    REPORT["image size"] = (
        f"{image_size_bytes(TEST_TAG) / 1e9:.2f} GB ({TEST_TAG}, no ImageNet weights)"
    )
    return TEST_TAG


@pytest.fixture
def container_names():
    """Names handed to tests for containers; whatever is left is removed afterwards."""
    names: list[str] = []

    def make(prefix: str) -> str:
        names.append(f"bincounter-test-{prefix}-{os.getpid()}-{len(names)}")
        return names[-1]

    yield make
    for name in names:
        docker("rm", "-f", name, check=False, timeout=60)


def materialize(tree: Path) -> Path:
    """Replace the symlinks of a channel tree by copies: a container sees real files, as SageMaker's
    File mode gives it (and the photos' folder is not mounted into the container)."""
    for link in sorted(tree.rglob("*")):
        if link.is_symlink():
            target = link.resolve()
            link.unlink()
            shutil.copyfile(target, link)
    return tree


def pytest_terminal_summary(terminalreporter) -> None:
    if REPORT:
        terminalreporter.section("container image")
        for key, value in REPORT.items():
            terminalreporter.write_line(f"{key}: {value}")
