"""Spot interruptions, stops and multi-host training, with real processes and real signals."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from bincounter.model import load_model

from support import QUICK_HPS, REPO, build_tree, free_port, parse_metrics, run_train

pytestmark = pytest.mark.slow

HPS = {**QUICK_HPS, "epochs": "3", "batch_size": "8", "image_size": "48"}


def _start(base, **env):
    return subprocess.Popen(
        [sys.executable, str(REPO / "train")],
        env={**os.environ, "SAGEMAKER_BASE_DIR": str(base), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _read_until(proc, needle, timeout=300):
    lines, deadline = [], time.monotonic() + timeout
    for line in proc.stdout:
        lines.append(line)
        if needle in line:
            return lines
        assert time.monotonic() < deadline, "".join(lines[-30:])
    raise AssertionError(f"process ended before {needle!r}:\n" + "".join(lines[-30:]))


def _epochs(text):
    return [
        int(parse_metrics(line)["epoch"]) for line in text.splitlines() if line.startswith("epoch=")
    ]


def _assert_valid_model(base, epochs_run):
    model, card = load_model(base / "model")
    assert card["metrics"]["epochs_run"] == epochs_run
    assert model(torch.zeros(1, 3, 48, 48, dtype=torch.uint8)).shape == (1, 5)
    history = json.loads((base / "output" / "data" / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == list(range(1, epochs_run + 1))


def test_sigkill_mid_epoch_resumes_losing_less_than_an_epoch(tmp_path):
    base = build_tree(tmp_path, HPS, {"train": 40, "validation": 4})
    proc = _start(base)
    before = _read_until(proc, "checkpoint written")  # epoch 1 done and saved
    time.sleep(0.5)  # now inside epoch 2
    proc.kill()
    proc.wait()
    done_before_kill = _epochs("".join(before))
    assert done_before_kill == [1]

    result = run_train(base)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "resumed from checkpoint" in result.stdout
    assert "1 epoch(s) done" in result.stdout  # nothing completed was lost
    assert _epochs(result.stdout) == [2, 3]  # and nothing is run twice
    _assert_valid_model(base, 3)


def test_sigkill_as_soon_as_a_checkpoint_appears_resumes_from_it(tmp_path):
    """The appearance of ckpt-000001.pt is its commit: killed right then, the rerun resumes."""
    base = build_tree(tmp_path, HPS, {"train": 40, "validation": 4})
    checkpoint = base / "checkpoints" / "local" / "ckpt-000001.pt"
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "train")],
        env={**os.environ, "SAGEMAKER_BASE_DIR": str(base)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 600
    while not checkpoint.exists():
        assert proc.poll() is None, "train ended before writing a checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
        time.sleep(0.005)
    proc.kill()
    proc.wait()

    result = run_train(base)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "has no .sha256 sidecar" not in result.stdout
    assert "resumed from checkpoint" in result.stdout and "1 epoch(s) done" in result.stdout
    assert _epochs(result.stdout) == [2, 3]
    _assert_valid_model(base, 3)


def test_sigterm_checkpoints_mid_epoch_and_exits_cleanly(tmp_path):
    base = build_tree(tmp_path, HPS, {"train": 40, "validation": 4})
    proc = _start(base)
    _read_until(proc, "checkpoint written")
    time.sleep(0.5)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rest = proc.communicate(timeout=60)[0]
    assert time.monotonic() - started < 30
    assert proc.returncode == 143, rest[-2000:]
    assert "SIGTERM received" in rest and "checkpoint written" in rest
    assert "Traceback" not in rest
    assert not (base / "output" / "failure").exists()

    result = run_train(base)
    assert result.returncode == 0, result.stdout[-3000:]
    resumed = next(line for line in result.stdout.splitlines() if "resumed from checkpoint" in line)
    images_in = int(resumed.split(" images into epoch")[0].rsplit(" ", 1)[1])
    assert images_in > 0  # resumed mid-epoch, not from the epoch's start
    assert _epochs(result.stdout) == [2, 3]
    _assert_valid_model(base, 3)


def test_corrupt_newest_checkpoint_falls_back_to_previous(tmp_path):
    base = build_tree(tmp_path, {**HPS, "epochs": "2"}, {"train": 4, "validation": 2})
    assert run_train(base).returncode == 0
    checkpoints = sorted((base / "checkpoints" / "local").glob("ckpt-*.pt"))
    assert len(checkpoints) == 2
    newest = checkpoints[-1]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # truncated upload

    result = run_train(base, TRAINING_JOB_NAME="")
    assert result.returncode == 0, result.stdout[-3000:]
    assert f"checkpoint {newest} does not match its sha256" in result.stdout
    assert "1 epoch(s) done" in result.stdout
    assert _epochs(result.stdout) == [2]
    _assert_valid_model(base, 2)


def test_checkpoints_are_namespaced_by_training_job(tmp_path):
    base = build_tree(tmp_path, {**HPS, "epochs": "1"}, {"train": 2, "validation": 2})
    assert run_train(base, TRAINING_JOB_NAME="tune-001").returncode == 0
    result = run_train(base, TRAINING_JOB_NAME="tune-002")
    assert "resumed" not in result.stdout  # a sibling tuning job never resumes another's state
    assert sorted(p.name for p in (base / "checkpoints").iterdir()) == ["tune-001", "tune-002"]


def test_two_hosts_ddp_on_loopback(tmp_path):
    """Two SageMaker hosts (two processes, two trees) train one model over gloo."""
    hosts = ["127.0.0.1", "localhost"]  # both resolve to loopback; sorted, the first is master
    port = str(free_port())
    trees, procs = [], []
    for host in hosts:
        tree = build_tree(
            tmp_path / host,
            {**HPS, "epochs": "2"},
            {"train": 9, "validation": 3},
            resource_config={
                "current_host": host,
                "hosts": hosts,
                "network_interface_name": "lo",
            },
        )
        trees.append(tree)
        procs.append(_start(tree, BINCOUNTER_MASTER_PORT=port))
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out[-3000:]
    master, worker = outputs
    assert "rank 0 of 2" in master and "rank 1 of 2" in worker
    # every one of the 45 training photos is seen exactly once per epoch across the two ranks
    assert master.count("45 training images across 2 rank(s)") == 2
    assert _epochs(master) == [1, 2] and _epochs(worker) == []  # only rank 0 reports
    _assert_valid_model(trees[0], 2)
    assert not (trees[1] / "model").exists() or not any((trees[1] / "model").iterdir())
    assert not (trees[1] / "checkpoints").exists()
