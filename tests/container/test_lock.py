"""The image's pinned requirements agree with pyproject.toml and the Dockerfile (no docker needed)."""

from __future__ import annotations

import re
import tomllib

from conftest import REPO
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

LOCKS = ("torch.lock", "image.lock")
REGENERATE = "regenerate with: .venv/bin/python tests/container/make_lock.py"


def pins() -> dict[str, str]:
    found: dict[str, str] = {}
    for lock in LOCKS:
        for line in (REPO / "requirements" / lock).read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                name, version = line.split("==")
                assert canonicalize_name(name) not in found, f"{name} pinned twice"
                found[canonicalize_name(name)] = version.strip()
    return found


def test_image_lock_covers_pyproject() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pinned = pins()
    for text in [*project["dependencies"], *project["optional-dependencies"]["container"]]:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in pinned, (
            f"{req.name} (pyproject.toml) is not in requirements/*.lock: {REGENERATE}"
        )
        assert req.specifier.contains(pinned[name], prereleases=True), (
            f"{req.name}=={pinned[name]} in the lock does not satisfy pyproject's '{text}': {REGENERATE}"
        )


def test_torch_lock_holds_torch_and_its_cuda_wheels() -> None:
    torch_lock = (REPO / "requirements" / "torch.lock").read_text()
    assert re.search(r"^torch==", torch_lock, re.M) and re.search(
        r"^torchvision==", torch_lock, re.M
    )
    assert re.search(r"^nvidia-cuda-runtime==13\.0\.", torch_lock, re.M), (
        "the CUDA runtime changed: update docs/image.md (CUDA version, minimum driver)"
    )


def test_dockerfile_version_label_default_matches_pyproject() -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    dockerfile = (REPO / "Dockerfile").read_text()
    assert f"ARG VERSION={version}\n" in dockerfile, "bump ARG VERSION in the Dockerfile too"


def test_dockerignore_keeps_the_context_small() -> None:
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in ignore, "an allow-list: everything is ignored but what the image needs"
    for needed in ("!requirements/*.lock", "!pyproject.toml", "!train", "!serve", "!container/"):
        assert needed in ignore
