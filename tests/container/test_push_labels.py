"""What ``scripts/push.sh`` records in the image's labels: the ``origin`` URL without the
credentials a CI clone URL carries. Fast (no docker): ``--print-labels`` prints the build
arguments the labels are made from, run here on a throwaway git repository."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _labels(tmp_path: Path, origin: str) -> dict[str, str]:
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "push.sh", repo / "scripts" / "push.sh")
    (repo / "pyproject.toml").write_text('version = "1.2.3"\n')
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    subprocess.run([*git, "remote", "add", "origin", origin], check=True)
    out = subprocess.run(
        ["bash", str(repo / "scripts" / "push.sh"), "--print-labels"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return dict(line.split("=", 1) for line in out.stdout.splitlines())


@pytest.mark.parametrize(
    ("origin", "recorded"),
    [
        ("https://ci-token:SECRET@host/x.git", "https://host/x.git"),
        ("https://oauth2:SECRET@git.example.com:8443/g/x.git?private_token=SECRET#SECRET",
         "https://git.example.com:8443/g/x.git"),
        ("https://SECRET@host/x.git", "https://host/x.git"),
        ("ssh://git:SECRET@host/x.git", "ssh://host/x.git"),
        ("https://github.com/org/bincounter.git", "https://github.com/org/bincounter.git"),
        ("git@github.com:org/bincounter.git", "git@github.com:org/bincounter.git"),
    ],
)  # fmt: skip
def test_push_records_the_origin_url_without_credentials(tmp_path, origin, recorded):
    labels = _labels(tmp_path, origin)
    assert labels["SOURCE"] == recorded
    assert "SECRET" not in "".join(labels.values())
    assert labels["VERSION"] == "1.2.3" and len(labels["REVISION"]) == 40
