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
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
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


class EngineUnavailable(Exception):
    """``engine.sh up`` could not give a running engine; the message says why."""


def engine_up(running: list[subprocess.Popen]) -> tuple[dict[str, str], str]:
    """``engine.sh up``: the engine's state (KEY=VALUE lines) and a line for the report."""
    if sys.platform != "linux":
        raise EngineUnavailable("container tests need Linux (Debian's docker.io engine)")
    started = time.monotonic()
    try:
        process = subprocess.Popen(
            ["bash", str(ENGINE_SH), "up"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        running.append(process)
        stdout, stderr = process.communicate(timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EngineUnavailable(
            f"could not set up the docker engine with {ENGINE_SH}: {exc}"
        ) from None
    if process.returncode != 0:
        raise EngineUnavailable(
            f"could not set up the docker engine with {ENGINE_SH} up "
            f"(exit {process.returncode}):\n{stderr[-3000:]}"
        )
    steps = re.findall(r"^\[engine\] (.+) took (\d+ s)$", stderr, re.M)
    report = f"{time.monotonic() - started:.0f} s" + (
        f" ({', '.join(f'{what} {took}' for what, took in steps)})" if steps else ""
    )
    return dict(line.split("=", 1) for line in stdout.splitlines() if "=" in line), report


@pytest.fixture(scope="session")
def engine() -> dict[str, str]:
    """A running docker engine with compose v2 and the base image (installed when missing)."""
    try:
        state, report = preparation().engine.result()
    except EngineUnavailable as exc:
        unavailable(str(exc))
    REPORT["engine setup"] = report
    yield state
    preparation().stop()  # a build still running for tests that were not run
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
    running: list[subprocess.Popen] | None = None,
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
            process = subprocess.Popen(["docker", *args], stdout=out, stderr=subprocess.STDOUT)
            if running is not None:  # so that a session ending first can stop it
                running.append(process)
            try:
                returncode = process.wait(timeout=3000)
            except subprocess.TimeoutExpired:
                process.kill()
                returncode = process.wait()
        elapsed = time.monotonic() - started
    return Build(returncode, elapsed, log.read_text())


def image_size_bytes(tag: str) -> int:
    return int(docker("image", "inspect", "-f", "{{.Size}}", tag).stdout.strip())


#: The images the container tests share: fixture name -> (tag, variable naming a built one,
#: ``docker build`` arguments).
SHARED_IMAGES = {
    "image": (TEST_TAG, "BINCOUNTER_TEST_IMAGE", ()),
    "cpu_serve_image": ("bincounter:test-cpu-serve", "BINCOUNTER_TEST_CPU_SERVE_IMAGE",
                        ("--target", "serve-cpu")),
}  # fmt: skip


class Preparation:
    """The engine and the shared images, made in one background thread.

    Started as soon as collection ends (``pytest_collection_finish``) when container tests are
    selected, and those tests run last (``tests/conftest.py``): the minutes of an engine
    install, a debootstrap and a cold 6.7 GB build (388 s on a 2-core AVX2 machine) overlap
    with the CPU-bound tests instead of adding to them. Fixtures wait for their part. Only the
    images a selected test uses are built.
    """

    def __init__(self, needed: set[str] | None = None) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="bincounter-container-prep-"))
        self.running: list[subprocess.Popen] = []
        self.stopped = False
        pool = ThreadPoolExecutor(1, thread_name_prefix="container-preparation")
        self.engine = pool.submit(engine_up, self.running)
        self.images = {
            name: pool.submit(self._image, *SHARED_IMAGES[name])
            for name in SHARED_IMAGES
            if needed is None or name in needed
        }
        pool.shutdown(wait=False)

    def _image(
        self, tag: str, given_by: str, build_args: tuple[str, ...]
    ) -> tuple[str, Build | None]:
        self.engine.result()  # raises EngineUnavailable: the fixture says so
        given = os.environ.get(given_by)
        if given:
            docker("image", "inspect", given)
            return given, None
        if self.stopped:
            return tag, Build(1, 0.0, "not built: the session ended first")
        folder = Path(tempfile.mkdtemp(prefix="build-", dir=self.folder))
        return tag, build_image(tag, folder, list(build_args), running=self.running)

    def image(self, name: str) -> tuple[str, float | None]:
        """The tag of a shared image (waiting for its build) and its build's seconds (``None``
        for one given by its variable); a failed build fails the test, with its log."""
        if name not in self.images:  # a test the collection did not foresee
            pool = ThreadPoolExecutor(1)
            self.images[name] = pool.submit(self._image, *SHARED_IMAGES[name])
            pool.shutdown(wait=False)
        try:
            tag, build = self.images[name].result()
        except EngineUnavailable as exc:
            unavailable(str(exc))
        if build is not None and build.returncode != 0:
            what = " ".join(("docker build", *SHARED_IMAGES[name][2]))
            pytest.fail(f"{what} failed:\n{build.log[-6000:]}", pytrace=False)
        return tag, None if build is None else build.elapsed

    def stop(self) -> None:
        """Stop what is still running (the session is ending)."""
        self.stopped = True
        for process in self.running:
            if process.poll() is None:
                process.terminate()


_PREPARATION: Preparation | None = None


def preparation(needed: set[str] | None = None) -> Preparation:
    global _PREPARATION
    if _PREPARATION is None:
        _PREPARATION = Preparation(needed)
    return _PREPARATION


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the engine and the builds the selected container tests need, in the background."""
    container = [item for item in session.items if item.get_closest_marker("container")]
    if container and not session.config.option.collectonly:
        preparation({name for item in container for name in getattr(item, "fixturenames", ())})


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _PREPARATION is not None:
        _PREPARATION.stop()


@pytest.fixture(scope="session")
def image(engine) -> str:
    """The project's image, built once per session (or ``$BINCOUNTER_TEST_IMAGE``)."""
    tag, elapsed = preparation().image("image")
    if elapsed is None:
        return tag
    if SERVED:
        REPORT["wheels from local folders"] = (
            f"{len(SERVED)} files, {sum(SERVED.values()) / 1e9:.2f} GB not downloaded"
        )
    REPORT["image build"] = (
        f"{elapsed:.0f} s, in the background during the other tests "
        "(cached layers are reused across sessions)"
    )
    REPORT["image size"] = f"{image_size_bytes(tag) / 1e9:.2f} GB ({tag}, no ImageNet weights)"
    return tag


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
