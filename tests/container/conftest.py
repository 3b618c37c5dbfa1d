"""Session fixtures for the container tests: a docker engine, the project's image, loopback ports.

``tests/container/engine.sh up`` installs and starts what is missing (Debian's docker.io,
``docker compose`` v2, docker-registry, shellcheck, a stand-in for the base image); the session
stops dockerd at the end if it started it. The image is built from the project's Dockerfile with
ImageNet weights off and pip reading a package index on 127.0.0.1 that serves this machine's
wheel folders first and PyPI for the rest, so the build does not download gigabytes of CUDA
wheels.

Environment knobs:

- ``BINCOUNTER_TEST_IMAGE``: use this already built image instead of building one.
- ``BINCOUNTER_WHEEL_DIRS``: colon-separated folders of wheels to offer the build
  (default: whichever of /opt/pypi-more/files, /opt/pypi/files, /opt/wheels exist).
- ``BINCOUNTER_WHEEL_PORT``: the loopback index's port (default 38711; any free one if taken).
- ``BINCOUNTER_UPSTREAM_INDEX``: the index for the rest (default https://pypi.org/simple).
- ``BINCOUNTER_ENGINE_DIR``: dockerd's data root, logs and pid (engine.sh's default otherwise).
- ``BINCOUNTER_KEEP_ENGINE=1``: leave a dockerd this session started running.

When the engine cannot be set up the tests fail under CI (``CI=true``) and skip elsewhere.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import http.server
import os
import re
import shutil
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)

from support import REPO, unavailable

HERE = Path(__file__).resolve().parent
ENGINE_SH = HERE / "engine.sh"
TEST_TAG = "bincounter:test"
DEFAULT_WHEEL_DIRS = ("/opt/pypi-more/files", "/opt/pypi/files", "/opt/wheels")
#: Loopback port of the package index the test build's pip reads (stable, for layer caching).
WHEEL_SERVER_PORT = int(os.environ.get("BINCOUNTER_WHEEL_PORT", "38711"))

#: Numbers shown in the terminal summary (build time, image size, ...).
REPORT: dict[str, str] = {}


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


def http_ok(url: str) -> bool:
    """True when ``url`` answers below 500 (the server is up, whatever it thinks of the path)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status < 500
    except OSError:
        return False


@contextlib.contextmanager
def background_server(
    argv: list[str], ready_url: str, log_path: Path, timeout: float = 60
) -> Iterator[None]:
    """Run a helper server (moto, docker-registry) until the block ends; fail if it never answers."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        try:
            if not wait_for(lambda: http_ok(ready_url), timeout=timeout):
                pytest.fail(f"{argv[0]} did not answer on {ready_url} (log {log_path})")
            yield
        finally:
            proc.terminate()
            proc.wait(timeout=30)


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
    steps = re.findall(r"^\[engine\] (.+) took (\d+ s)$", result.stderr, re.M)
    REPORT["engine setup"] = f"{time.monotonic() - started:.0f} s" + (
        f" ({', '.join(f'{what} {took}' for what, took in steps)})" if steps else ""
    )
    state = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    yield state
    if state.get("ENGINE_STARTED") == "1" and os.environ.get("BINCOUNTER_KEEP_ENGINE") != "1":
        subprocess.run(["bash", str(ENGINE_SH), "down"], timeout=120, check=False)


#: Files the local index handed out (name -> bytes), to report what the build did not download.
SERVED: dict[str, int] = {}


def _local_files(folders: list[Path]) -> dict[str, dict[str, Path]]:
    """{project: {file name: path}} for the wheels and sdists in ``folders`` (first one wins)."""
    found: dict[str, dict[str, Path]] = {}
    for folder in folders:
        for path in sorted(folder.iterdir()):
            try:
                if path.name.endswith(".whl"):
                    name = parse_wheel_filename(path.name)[0]
                elif path.name.endswith((".tar.gz", ".zip")):
                    name = parse_sdist_filename(path.name)[0]
                else:
                    continue
            except (InvalidWheelFilename, InvalidSdistFilename):
                continue
            found.setdefault(name, {}).setdefault(path.name, path)
    return found


class _IndexHandler(http.server.BaseHTTPRequestHandler):
    """A PEP 503 index: ``/simple/<project>/`` lists this machine's files for the project, then
    the upstream index's files *of other names*; ``/files/<name>`` serves a local file.

    pip's ``--find-links`` is not enough: when PyPI has the same file, pip takes PyPI's copy, and
    the build downloads gigabytes of CUDA wheels it has on disk."""

    local: ClassVar[dict[str, dict[str, Path]]] = {}
    files: ClassVar[dict[str, Path]] = {}
    upstream = "https://pypi.org/simple"

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        parts = urllib.parse.unquote(self.path.split("?")[0].split("#")[0]).strip("/").split("/")
        if len(parts) == 2 and parts[0] == "simple":
            self._project(canonicalize_name(parts[1]))
        elif len(parts) == 2 and parts[0] == "files" and parts[1] in self.files:
            self._file(self.files[parts[1]])
        else:
            self.send_error(404)

    def _project(self, name: str) -> None:
        local = self.local.get(name, {})
        anchors = [f'<a href="/files/{urllib.parse.quote(f)}">{f}</a>' for f in sorted(local)]
        try:
            request = urllib.request.Request(
                f"{self.upstream}/{name}/", headers={"Accept": "text/html"}
            )
            with urllib.request.urlopen(request, timeout=60, context=_ssl_context()) as r:
                page = r.read().decode()
            for anchor, filename in re.findall(r"(<a\s[^>]*>([^<]+)</a>)", page):
                if filename.strip() not in local:
                    anchors.append(anchor)
        except urllib.error.HTTPError as exc:
            if not local:
                self.send_error(exc.code)
                return
        except OSError:
            if not local:
                self.send_error(502)
                return
        body = "<!DOCTYPE html><html><body>\n" + "<br>\n".join(anchors) + "\n</body></html>"
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _file(self, path: Path) -> None:
        size = path.stat().st_size
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        with open(path, "rb") as f:
            shutil.copyfileobj(f, self.wfile, 1 << 20)
        SERVED[path.name] = size


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    bundle = "/etc/ssl/certs/ca-certificates.crt"  # holds a TLS-intercepting proxy's CA here
    return ssl.create_default_context(cafile=bundle if os.path.exists(bundle) else None)


@contextlib.contextmanager
def local_index(folders: list[Path], port: int = 0):
    """The index above on 127.0.0.1 (``port`` first, any free one when it is taken)."""
    local = _local_files(folders)
    handler = type(
        "Handler",
        (_IndexHandler,),
        {
            "local": local,
            "files": {f: p for files in local.values() for f, p in files.items()},
            "upstream": os.environ.get("BINCOUNTER_UPSTREAM_INDEX", "https://pypi.org/simple"),
        },
    )
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple/"
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

    pip in the build reads a loopback index (``local_index``) that serves this machine's wheel
    folders and PyPI for the rest. Its URL stays the same from one session to the next: build
    arguments are part of the cache key of every ``RUN`` after their ``ARG``."""
    folders = wheel_dirs()
    with contextlib.ExitStack() as stack:
        args = [
            "build",
            # host network: pip in the build reaches the index on the host's 127.0.0.1
            "--network", "host",
            "--build-arg", f"DOWNLOAD_WEIGHTS={int(download_weights)}",
        ]  # fmt: skip
        if folders:
            url = stack.enter_context(local_index(folders, WHEEL_SERVER_PORT))
            args += ["--build-arg", f"PIP_INDEX_URL={url}"]
        args += [*(extra_args or []), "-t", tag, str(context)]
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


def session_image(
    tag: str, given_by: str, folder: Path, build_args: tuple[str, ...] = ()
) -> tuple[str, float | None]:
    """``$given_by``'s image if set (inspected), else ``tag`` built from the checkout.

    Returns the tag and the build's seconds (``None`` for a given image); a failed build fails
    the test that asked, with the end of the build log.
    """
    given = os.environ.get(given_by)
    if given:
        docker("image", "inspect", given)
        return given, None
    result = build_image(tag, folder, list(build_args))
    if result.returncode != 0:
        what = " ".join(("docker build", *build_args))
        pytest.fail(f"{what} failed:\n{result.log[-6000:]}", pytrace=False)
    return tag, result.elapsed


@pytest.fixture(scope="session")
def image(engine, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The project's image, built once per session (or ``$BINCOUNTER_TEST_IMAGE``)."""
    tag, elapsed = session_image(
        TEST_TAG, "BINCOUNTER_TEST_IMAGE", tmp_path_factory.mktemp("build")
    )
    if elapsed is None:
        return tag
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
