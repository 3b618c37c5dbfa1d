"""scripts/push.sh against a real registry on loopback, with the ECR API served by moto.

Debian's ``docker-registry`` listens on 127.0.0.1; ``moto_server`` answers ECR and STS on
127.0.0.1 (``AWS_ENDPOINT_URL``). push.sh's registry override points docker at the loopback
registry; everything else (repository creation, ``aws ecr get-login-password | docker login``,
tag, push) is what a user runs against AWS.

What is pushed is a small image of two layers and labels (``small_image``), not the project's
6.7 GB image: push.sh's logic does not depend on what the image holds, and a round trip of the
whole image cost six minutes on a 2-core machine to prove what a few kilobytes prove (docker
moves layers the same way whatever their size).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO, REPORT, background_server, docker, unavailable

from support import free_port

pytestmark = [pytest.mark.container, pytest.mark.slow]

PUSH = REPO / "scripts" / "push.sh"
BASH = shutil.which("bash") or "/bin/bash"  # absolute: some tests run push.sh with a bare PATH
REGION = "us-east-1"


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with background_server(argv, f"{url}/moto-api/", log, timeout=60):
        yield url


@pytest.fixture(scope="module")
def registry(engine, tmp_path_factory: pytest.TempPathFactory):
    """Debian's docker-registry (distribution 2.x) on 127.0.0.1, storage in a temp folder."""
    binary = shutil.which("docker-registry")
    if binary is None:
        unavailable("docker-registry not installed (tests/container/engine.sh up installs it)")
    tmp = tmp_path_factory.mktemp("registry")
    port = free_port()
    config = tmp / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    host = f"127.0.0.1:{port}"
    argv = [binary, "serve", str(config)]
    with background_server(argv, f"http://{host}/v2/", tmp / "registry.log", timeout=30):
        yield host


@pytest.fixture(scope="module")
def aws_bin(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A folder holding an ``aws`` CLI: the one on PATH, or AWS CLI v1 installed from PyPI."""
    found = shutil.which("aws")
    if found:
        return str(Path(found).parent)
    target = tmp_path_factory.mktemp("awscli")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--target",
            str(target / "lib"),
            "awscli",
        ],
        check=True,
        timeout=600,
    )
    wrapper = target / "bin" / "aws"
    wrapper.parent.mkdir()
    wrapper.write_text(
        f'#!/bin/sh\nPYTHONPATH="{target / "lib"}" exec "{sys.executable}" -m awscli "$@"\n'
    )
    wrapper.chmod(0o755)
    return str(wrapper.parent)


@pytest.fixture(scope="module")
def small_image(engine, tmp_path_factory: pytest.TempPathFactory):
    """An image of two layers and a label, built from scratch (no base image, no network)."""
    context = tmp_path_factory.mktemp("small-image")
    (context / "first").write_bytes(os.urandom(4096))  # random: a layer no earlier push holds
    (context / "second").write_text("second layer\n")
    (context / "Dockerfile").write_text(
        "FROM scratch\nCOPY first /first\nCOPY second /second\n"
        'LABEL org.opencontainers.image.title="bincounter push test"\n'
    )
    tag = f"bincounter-push-test:{os.getpid()}"
    docker("build", "-t", tag, str(context))
    layers = json.loads(docker("image", "inspect", "-f", "{{json .RootFS.Layers}}", tag).stdout)
    assert len(layers) == 2, layers
    yield tag
    docker("rmi", tag, check=False)


def push_env(tmp: Path, moto: str, aws_bin: str, **extra: str) -> dict[str, str]:
    """Fake credentials, every AWS call on loopback, docker's login kept in a temp folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BINCOUNTER_"))}
    env.update(
        PATH=f"{aws_bin}:{env['PATH']}",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=REGION,
        AWS_ENDPOINT_URL=moto,
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=str(tmp / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp / "no-aws-credentials"),
        DOCKER_CONFIG=str(tmp / "docker-config"),
    )
    env.update(extra)
    return env


def run_push(env: dict[str, str], *args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run(
        [BASH, str(PUSH), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def ecr_repositories(moto: str) -> list[str]:
    import boto3

    client = boto3.client(
        "ecr",
        region_name=REGION,
        endpoint_url=moto,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    return [r["repositoryName"] for r in client.describe_repositories()["repositories"]]


def test_push_creates_repository_pushes_and_is_pullable(
    small_image: str, registry: str, moto_endpoint: str, aws_bin: str, tmp_path: Path
) -> None:
    image, repository, tag = small_image, "bincounter-ci", f"push-{os.getpid()}"
    assert repository not in ecr_repositories(moto_endpoint)
    env = push_env(tmp_path, moto_endpoint, aws_bin)

    started = time.monotonic()
    result = run_push(
        env, "--image", image, "--registry", registry, "--repository", repository, "--tag", tag
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    uri = f"{registry}/{repository}:{tag}"
    assert result.stdout.strip().splitlines()[-1] == uri, "the URI must be the last line"
    assert repository in ecr_repositories(moto_endpoint)
    # aws ecr get-login-password | docker login: the credential lands in DOCKER_CONFIG
    auths = json.loads((tmp_path / "docker-config" / "config.json").read_text())["auths"]
    assert registry in auths, auths

    with urllib.request.urlopen(f"http://{registry}/v2/{repository}/tags/list", timeout=10) as r:
        assert tag in json.load(r)["tags"]
    image_id = docker("image", "inspect", "-f", "{{.Id}}", image).stdout.strip()
    docker("rmi", uri)
    docker("pull", uri, timeout=600)
    pulled = json.loads(docker("image", "inspect", "-f", "{{json .}}", uri).stdout)
    assert pulled["Id"] == image_id  # same config, layers and label: the manifest round-trips
    assert pulled["Config"]["Labels"]["org.opencontainers.image.title"] == "bincounter push test"

    # Again: the repository exists now, and the push is a no-op upload.
    again = run_push(
        env, "--image", image, "--registry", registry, "--repository", repository, "--tag", tag
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.strip().splitlines()[-1] == uri
    assert ecr_repositories(moto_endpoint).count(repository) == 1  # found, not created twice
    docker("rmi", uri, check=False)
    REPORT["push to loopback registry"] = f"{elapsed:.0f} s (a two-layer test image)"


def _bin_with(tmp: Path, tools: list[str]) -> str:
    """A PATH folder holding only ``tools`` (symlinks), to take a prerequisite away."""
    folder = tmp / "bin"
    folder.mkdir(exist_ok=True)
    for tool in tools:
        found = shutil.which(tool)
        assert found, tool
        (folder / tool).symlink_to(found)
    return str(folder)


def test_push_without_docker_says_so(tmp_path: Path) -> None:
    env = {"PATH": _bin_with(tmp_path, ["dirname"]), "HOME": str(tmp_path)}
    result = run_push(env, "--image", "x:y", timeout=60)
    assert result.returncode != 0
    assert "docker not found" in result.stderr


def test_push_without_a_docker_daemon_says_so(engine, tmp_path: Path) -> None:
    env = {
        "PATH": _bin_with(tmp_path, ["dirname", "docker"]),
        "HOME": str(tmp_path),
        "DOCKER_HOST": f"unix://{tmp_path}/no-such.sock",
    }
    result = run_push(env, "--image", "x:y", timeout=60)
    assert result.returncode != 0
    assert "cannot talk to the docker daemon" in result.stderr


def test_push_without_aws_cli_says_so(engine, tmp_path: Path) -> None:
    env = {"PATH": _bin_with(tmp_path, ["dirname", "docker"]), "HOME": str(tmp_path)}
    result = run_push(env, "--image", "x:y", timeout=60)
    assert result.returncode != 0
    assert "aws CLI not found" in result.stderr


def test_push_without_credentials_says_so(
    engine, moto_endpoint: str, aws_bin: str, tmp_path: Path
) -> None:
    env = push_env(tmp_path, moto_endpoint, aws_bin)
    del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    result = run_push(env, "--image", "x:y", "--registry", "127.0.0.1:1", timeout=120)
    assert result.returncode != 0
    assert "no usable AWS credentials" in result.stderr


def test_push_rejects_a_missing_image(
    engine, moto_endpoint: str, aws_bin: str, tmp_path: Path
) -> None:
    env = push_env(tmp_path, moto_endpoint, aws_bin)
    result = run_push(
        env, "--image", "bincounter-no-such-image:none", "--registry", "127.0.0.1:1", timeout=120
    )
    assert result.returncode != 0
    assert "not found locally" in result.stderr
