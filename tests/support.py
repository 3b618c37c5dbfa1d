"""Test support: real ABID photos from ../shared/abid laid out as SageMaker channels.

The photos are never copied into the repo; channels are trees of symlinks built per test run.
Without the photos (a fresh clone with no ``../shared/abid``) every test that reaches for them
skips saying so, and fails under CI (``CI=true``), which always has them: see ``require_abid``.
"""

from __future__ import annotations

import csv
import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: CI always has its prerequisites (../shared/abid, a docker engine): there a missing one is an
#: error, so a green run means everything ran; elsewhere the tests that need it skip.
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def unavailable(message: str) -> None:
    """Fail in CI (a green run must mean every test ran), skip on a laptop."""
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message, allow_module_level=True)


class _AbidFolder(type(Path())):
    """The ABID folder: any path taken under it first checks that the photos are there, so a
    test (or test module) that needs them skips with the reason instead of failing on a missing
    file deep inside."""

    def __truediv__(self, key):
        require_abid()
        return super().__truediv__(key)

    def joinpath(self, *keys):
        require_abid()
        return super().joinpath(*keys)


#: Where the tests look for the photos: ../shared/abid next to the checkout, or $BINCOUNTER_ABID_DIR.
ABID_ROOT = Path(os.environ.get("BINCOUNTER_ABID_DIR", REPO.parent / "shared" / "abid"))


def require_abid() -> None:
    """Skip (fail under CI) unless the ABID photos (``labels.csv``) are where the tests look."""
    root = ABID_ROOT
    if not (root / "labels.csv").is_file():
        unavailable(
            f"needs the ABID photos: no {root / 'labels.csv'} (put the shared photos at "
            "../shared/abid next to the checkout, or point BINCOUNTER_ABID_DIR at them)"
        )


ABID = _AbidFolder(ABID_ROOT)


def parse_metrics(line: str) -> dict[str, float]:
    """Read a log line back exactly as SageMaker would, one regex per metric."""
    from bincounter.training.metrics import METRIC_DEFINITIONS

    found = {}
    for definition in METRIC_DEFINITIONS:
        match = re.search(definition["Regex"], line)
        if match:
            found[definition["Name"]] = float(match.group(1))
    return found


def summarize(labels: list[int], predictions: list[int]) -> dict[str, object]:
    """``summarize_confusion`` of the confusion matrix of class indices ``labels`` (rows)
    against ``predictions`` (columns)."""
    import numpy as np

    from bincounter import CLASSES
    from bincounter.training.metrics import summarize_confusion

    matrix = np.zeros((len(CLASSES), len(CLASSES)), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predictions)), 1)
    return summarize_confusion(matrix)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def abid_labels(split: str | None = None) -> list[tuple[str, int, str]]:
    """(id, count, split) rows of labels.csv; ids stay strings."""
    require_abid()
    with open(ABID / "labels.csv", newline="") as f:
        rows = [(r["id"], int(r["count"]), r["split"]) for r in csv.DictReader(f)]
    return [r for r in rows if split is None or r[2] == split]


#: Shard size for test channels: a few ABID photos per shard, so a channel has several shards.
TEST_SHARD_BYTES = 64 * 1024


def single_host_env(base: Path, input_data_config: dict):
    """A one-host, CPU ``TrainingEnvironment`` under ``base`` with this channel config."""
    from bincounter.paths import Paths
    from bincounter.training.environment import TrainingEnvironment

    return TrainingEnvironment(
        paths=Paths(base),
        hyperparameters={},
        channels={},
        hosts=["algo-1"],
        current_host="algo-1",
        input_data_config=input_data_config,
    )


def build_channel(dest: Path, split: str, per_count: int | None, layout: str = "folders") -> Path:
    """A channel of the first ``per_count`` photos of each count of ``split`` (symlinks; with
    ``layout="shards"`` the same photos packed into ``<split>-NNNNNN.tar`` shards)."""
    by_count: dict[int, list[str]] = defaultdict(list)
    for image_id, count, _ in abid_labels(split):
        by_count[count].append(image_id)
    dest.mkdir(parents=True, exist_ok=True)
    if layout == "shards":
        from bincounter.shards import ShardWriter

        writer = ShardWriter(dest, split, TEST_SHARD_BYTES)
        for count, ids in sorted(by_count.items()):
            for image_id in ids[:per_count]:
                writer.write(image_id, (ABID / "images" / f"{image_id}.jpg").read_bytes(), count)
        writer.close()
        return dest
    for count, ids in sorted(by_count.items()):
        for image_id in ids[:per_count]:
            src = ABID / "images" / f"{image_id}.jpg"
            if layout == "folders":
                (dest / str(count)).mkdir(exist_ok=True)
                (dest / str(count) / f"{image_id}.jpg").symlink_to(src)
            else:
                (dest / "bin-images").mkdir(exist_ok=True)
                (dest / "metadata").mkdir(exist_ok=True)
                (dest / "bin-images" / f"{image_id}.jpg").symlink_to(src)
                (dest / "metadata" / f"{image_id}.json").write_text(
                    json.dumps({"EXPECTED_QUANTITY": count})
                )
    return dest


def build_tree(
    base: Path,
    hyperparameters: dict[str, str],
    per_count: dict[str, int | None],
    layout: str = "folders",
    resource_config: dict | None = None,
) -> Path:
    """A SageMaker ``/opt/ml`` tree with config files written as SageMaker writes them."""
    config = base / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    (config / "resourceconfig.json").write_text(
        json.dumps(resource_config or {"current_host": "algo-1", "hosts": ["algo-1"]})
    )
    (config / "inputdataconfig.json").write_text(
        json.dumps(
            {c: {"TrainingInputMode": "File", "ContentType": "image/jpeg"} for c in per_count}
        )
    )
    for channel, n in per_count.items():
        split = {"train": "train", "validation": "validation", "test": "test"}[channel]
        build_channel(base / "input" / "data" / channel, split, n, layout)
    return base


def run_train(base: Path, timeout: float = 900, **env: str) -> subprocess.CompletedProcess:
    """Run the repo's ``./train`` executable on a tree, as SageMaker would (fresh process)."""
    environ = {**os.environ, "SAGEMAKER_BASE_DIR": str(base), **env}
    return subprocess.run(
        [sys.executable, str(REPO / "train")],
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


#: A tiny but real recipe: CPU-friendly, seconds per epoch.
QUICK_HPS = {
    "arch": "resnet18",
    "epochs": "2",
    "batch_size": "16",
    "image_size": "64",
    "num_workers": "0",
    "lr": "0.002",
    "warmup_epochs": "0",
    # The OpenVINO export (conversion + NNCF int8) costs more than such a training itself: the
    # tests of the export and of serving it turn it on (``EXPORTING_HPS``).
    "export_openvino": "false",
}

#: ``QUICK_HPS`` with the end-of-job OpenVINO export, as the image's default recipe runs it.
EXPORTING_HPS = {**QUICK_HPS, "export_openvino": "true"}


class PipeFeeder(threading.Thread):
    """What SageMaker does for a Pipe-mode channel, on this machine: for each pass ``n`` it
    creates the FIFO ``<root>_<n>``, writes the channel's objects (``files``, in key order)
    into it back to back and closes it; the next FIFO appears once a reader has drained the
    previous one. ``stop`` releases a writer still waiting for its reader."""

    def __init__(self, root: Path, files: list[Path], passes: int = 1000) -> None:
        super().__init__(daemon=True)
        self.root, self.files, self.passes = Path(root), list(files), passes
        self.opened = 0
        self._stopping = False

    def run(self) -> None:
        for n in range(self.passes):
            path = Path(f"{self.root}_{n}")
            os.mkfifo(path)
            try:
                with open(path, "wb") as f:  # blocks until the reader opens it
                    if self._stopping:
                        return
                    self.opened += 1
                    for file in self.files:
                        f.write(file.read_bytes())
            except BrokenPipeError:
                pass  # the reader stopped early; SageMaker moves on to the next pass too

    def stop(self) -> None:
        self._stopping = True
        path = Path(f"{self.root}_{self.opened}")
        if path.exists():
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # lets a waiting writer through
            os.close(fd)
        self.join(timeout=5)
