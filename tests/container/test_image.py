"""The built image honours SageMaker's bring-your-own-container contract (metadata and layout)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from conftest import REPO, REPORT, build_image, docker

pytestmark = [pytest.mark.container, pytest.mark.slow]

INSPECT_SCRIPT = r"""
set -u
for exe in train serve; do
    path=$(command -v "$exe") || { echo "missing $exe"; exit 1; }
    [ -x "$path" ] || { echo "$path not executable"; exit 1; }
    echo "$exe=$path"
done
[ -x /opt/venv/bin/train ] && echo "toolkit_train=/opt/venv/bin/train"
for cc in gcc cc c++ g++ make; do
    command -v "$cc" >/dev/null 2>&1 && echo "compiler=$cc"
done
[ -e /opt/ml ] && echo "optml=present"
for f in /root/.aws /root/.docker/config.json /root/.netrc /root/.pip/pip.conf; do
    [ -e "$f" ] && echo "secret=$f"
done
env | grep -E '^AWS_' | sed 's/=.*//; s/^/awsenv=/'
python - <<'PY'
import json, os, sys
import torch, torchvision, sagemaker_training, gethostname  # gethostname: the C extension
import bincounter
print("facts=" + json.dumps({
    "python": sys.executable,
    "torch": torch.__version__,
    "cuda": torch.version.cuda,
    "torchvision": torchvision.__version__,
    "bincounter": bincounter.__version__,
    "torch_home": os.environ.get("TORCH_HOME"),
    "unbuffered": os.environ.get("PYTHONUNBUFFERED"),
}))
PY
"""


@pytest.fixture(scope="module")
def config(image: str) -> dict:
    return json.loads(docker("image", "inspect", "-f", "{{json .Config}}", image).stdout)


@pytest.fixture(scope="module")
def inside(image: str) -> dict[str, list[str]]:
    """What a shell inside the image finds (one container for all the checks)."""
    out = docker(
        "run", "--rm", "--network", "none", "--entrypoint", "bash", image, "-c", INSPECT_SCRIPT
    )
    facts: dict[str, list[str]] = {}
    for line in out.stdout.splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            facts.setdefault(key, []).append(value)
    return facts


def test_labels(config: dict) -> None:
    labels = config["Labels"]
    assert labels["com.amazonaws.sagemaker.capabilities.accept-bind-to-port"] == "true"
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert labels["org.opencontainers.image.version"] == version
    for key in ("source", "revision", "title"):
        assert f"org.opencontainers.image.{key}" in labels


def test_entrypoint_defaults_to_training_in_exec_form(config: dict) -> None:
    # exec form (lists): no /bin/sh -c swallowing SIGTERM; tini forwards it and reaps children.
    assert config["Entrypoint"] == ["/usr/bin/tini", "--"]
    # SageMaker passes `train`/`serve`; the SDK's local trainer passes nothing.
    assert config["Cmd"] == ["train"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"].startswith("/opt/program:/opt/venv/bin:")


def test_train_and_serve_are_ours_and_on_path(inside: dict) -> None:
    # sagemaker-training installs its own `train` console script into /opt/venv/bin: ours wins.
    assert inside["toolkit_train"] == ["/opt/venv/bin/train"], "the shadowed script is gone?"
    assert inside["train"] == ["/opt/program/train"]
    assert inside["serve"] == ["/opt/program/serve"]


def test_runtime(inside: dict) -> None:
    facts = json.loads(inside["facts"][0])
    assert facts["python"].startswith("/opt/venv/")
    assert facts["torch"].startswith("2.14.1")
    assert facts["cuda"] == "13.0", "docs/image.md states CUDA 13.0 (driver >= 580): update both"
    assert facts["torch_home"] == "/opt/torch"
    assert facts["unbuffered"] == "1"


def test_no_compiler_no_opt_ml_no_secrets(inside: dict) -> None:
    assert "compiler" not in inside, f"compilers in the final image: {inside['compiler']}"
    assert "optml" not in inside, "/opt/ml is baked into the image (SageMaker mounts it)"
    assert "secret" not in inside, f"credential files in the image: {inside['secret']}"
    assert "awsenv" not in inside, f"AWS variables baked into the image: {inside['awsenv']}"


def test_history_carries_no_credentials(image: str) -> None:
    history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    assert not re.search(r"AWS_(SECRET|ACCESS|SESSION)|aws_secret|://[^/\s:@]+:[^/\s@]+@", history)


def test_pretrained_weights_location_matches_the_code(image: str) -> None:
    """The Dockerfile bakes weights where bincounter.model looks for them."""
    out = docker(
        "run", "--rm", "--network", "none", "--entrypoint", "python", image, "-c",
        "from bincounter.model import pretrained_weights_path as p; print(p('resnet18'))",
    )  # fmt: skip
    assert out.stdout.strip().startswith("/opt/torch/hub/checkpoints/")


def test_shell_scripts_pass_shellcheck(engine) -> None:
    scripts = [*sorted((REPO / "scripts").glob("*.sh")), REPO / "tests" / "container" / "engine.sh"]
    result = subprocess.run(["shellcheck", *map(str, scripts)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_code_change_rebuilds_only_the_code_layers(image: str, tmp_path: Path) -> None:
    """Layer order: a change under container/ reuses every dependency layer (seconds)."""
    context = tmp_path / "context"
    context.mkdir()
    for name in (
        "Dockerfile",
        ".dockerignore",
        "pyproject.toml",
        "README.md",
        "train",
        "serve",
        "process",
    ):
        shutil.copy2(REPO / name, context / name)
    shutil.copytree(REPO / "requirements", context / "requirements")
    shutil.copytree(
        REPO / "container", context / "container", ignore=shutil.ignore_patterns("__pycache__")
    )
    init = context / "container" / "bincounter" / "__init__.py"
    init.write_text(init.read_text() + "\n# a code change\n")
    tag = f"{image}-codechange"
    build = build_image(tag, tmp_path, context=context)
    try:
        assert build.returncode == 0, build.log[-6000:]
        steps = re.split(r"^Step \d+/\d+ : ", build.log, flags=re.M)[1:]
        rebuilt = [s.splitlines()[0] for s in steps if "Using cache" not in s and "RUN" in s]
        # The code layers: the full image's install of the package and, where the builder
        # builds every stage (the classic builder), the serve-cpu stage's copy of it.
        code_layers = ("pip install --no-deps", "mv /tmp/src/bincounter")
        assert all(any(c in s for c in code_layers) for s in rebuilt), rebuilt
        assert any(code_layers[0] in s for s in rebuilt), rebuilt
        REPORT["rebuild after a code change"] = f"{build.elapsed:.0f} s"
        assert build.elapsed < 120
    finally:
        docker("rmi", tag, check=False)


def test_imagenet_weights_at_build_time_or_a_clear_way_out(image: str, tmp_path: Path) -> None:
    """DOWNLOAD_WEIGHTS=1 bakes verified weights in; where download.pytorch.org cannot be
    reached (as on this project's CI) the build fails saying to use DOWNLOAD_WEIGHTS=0."""
    tag = f"{image}-weights"
    build = build_image(
        tag, tmp_path, ["--build-arg", "WEIGHTS_ARCHS=resnet18"], download_weights=True
    )
    try:
        if build.returncode == 0:
            out = docker(
                "run", "--rm", "--network", "none", "--entrypoint", "ls", tag,
                "/opt/torch/hub/checkpoints",
            )  # fmt: skip
            assert re.search(r"^resnet18-[0-9a-f]+\.pth$", out.stdout, re.M), out.stdout
        else:
            assert "could not download the ImageNet weights" in build.log, build.log[-4000:]
            assert "DOWNLOAD_WEIGHTS=0" in build.log
    finally:
        docker("rmi", tag, check=False)
