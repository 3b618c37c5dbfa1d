"""The README's promises: its layout table, its hyperparameter table and its first command."""

import json
import os
import re
import subprocess
import sys

import pytest

from bincounter.training.hyperparameters import HyperParameters

from support import REPO, build_channel


def test_readme_documents_every_hyperparameter_with_its_default():
    readme = (REPO / "README.md").read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \| `([^`]*)` \|", readme, re.M))
    for name, field in HyperParameters.model_fields.items():
        assert name in rows, f"README lacks hyperparameter {name}"
        assert rows[name] == repr(field.default), f"README default of {name} is stale"


def test_readme_layout_table_matches_the_package_tree():
    """Every subpackage is in the table with its own row, and every row names a real folder."""
    readme = (REPO / "README.md").read_text()
    layout = readme.split("## Repository layout", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `container/bincounter/(\w+)/` \|", layout, re.M))
    package = REPO / "container" / "bincounter"
    subpackages = {p.parent.name for p in package.glob("*/__init__.py")}
    assert listed == subpackages
    modules = {p.stem for p in package.glob("*.py")} - {"__init__"}
    shared_row = next(line for line in layout.splitlines() if "container/bincounter/*.py" in line)
    assert set(re.findall(r"`(\w+)`", shared_row)) == modules


def test_every_subpackage_module_is_in_its_module_map():
    """The ``__init__`` docstring of each subpackage names each of its modules."""
    import importlib

    package = REPO / "container" / "bincounter"
    for init in package.glob("*/__init__.py"):
        doc = importlib.import_module(f"bincounter.{init.parent.name}").__doc__ or ""
        for module in init.parent.glob("*.py"):
            if module.stem != "__init__":
                named = re.search(rf"``{module.stem}(``|\.)", doc)
                assert named, f"{module} missing from {init}'s module map"


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    assert "scripts/test.sh" in readme.split("## Quick start", 1)[1].split("##", 1)[0]
    assert "scripts/test.sh" in (REPO / ".ci" / "run").read_text()


@pytest.mark.slow
def test_quickstart_trains_serves_and_counts(tmp_path):
    """README command 1 on a folder-per-count DATA folder of real photos."""
    data = tmp_path / "photos"
    for split in ("train", "validation"):
        build_channel(data, split, 6)
    result = subprocess.run(
        [sys.executable, "-m", "scripts.quickstart", "--out", str(tmp_path / "run")],
        cwd=REPO,  # scripts/quickstart.sh runs it from the repository root
        env={**os.environ, "DATA": str(data)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    answers = re.findall(
        r"^(\S+\.jpg): (\d) item\(s\) in the bin, endpoint counted (\d)", result.stdout, re.M
    )
    assert sorted(int(truth) for _, truth, _ in answers) == [1, 2, 3, 4, 5]
    assert all(1 <= int(counted) <= 5 for _, _, counted in answers)
    assert "SMOKE-TEST model" in result.stdout and "bench/quality.py" in result.stdout
    assert (tmp_path / "run" / "opt_ml" / "model" / "model_card.json").is_file()
    summary_path = tmp_path / "run" / "audit" / "audit.json"
    assert f"(half the expected quantities wrong): {summary_path}" in result.stdout
    summary = json.loads(summary_path.read_text())
    bins = (summary_path.parent / "bins.csv").read_text().splitlines()[1:]
    assert len(bins) >= 5 and summary["photos"] == summary["answered"] == len(bins)
    assert summary["flagged"] + summary["review"] + summary["match"] == len(bins)
