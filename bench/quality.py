"""Model quality on real photos: train the default recipe on the shared ABID split, report on test.

Builds a SageMaker ``/opt/ml`` tree of symlinks from ``../shared/abid`` (``labels.csv``: train,
validation and test splits; the photos are never copied), runs the repo's ``./train`` on it exactly
as SageMaker would, and prints the test-split figures the job wrote. ``train`` selects the best
epoch on validation only; the test channel is evaluated once, after training, by that model.

    .venv/bin/python bench/quality.py --out runs/quality [--image-size 96 --epochs 24 ...]

Every ``--name value`` pair the script does not know is passed to ``train`` as a hyperparameter,
so the command line is the whole recipe. The summary lands in ``<out>/quality.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "container"))
sys.path.insert(0, str(REPO / "tests"))

from support import build_tree  # noqa: E402


def _hyperparameters(extra: list[str]) -> dict[str, str]:
    if len(extra) % 2:
        raise SystemExit(f"hyperparameters come in --name value pairs, got {extra}")
    pairs = zip(extra[::2], extra[1::2], strict=True)
    return {name.removeprefix("--").replace("-", "_"): value for name, value in pairs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "quality")
    parser.add_argument(
        "--per-count", type=int, default=None, help="cap photos per count and split (default all)"
    )
    parser.add_argument(
        "--no-test",
        action="store_true",
        help="train on train, pick on validation, leave test alone (for comparing candidates: "
        "test the chosen one later with bench/evaluate_test.py)",
    )
    args, extra = parser.parse_known_args()
    hps = _hyperparameters(extra)
    base = args.out / "opt_ml"
    if base.exists():
        raise SystemExit(f"{base} exists: pick a fresh --out (a run never overwrites another)")
    n = args.per_count
    channels = (
        {"train": n, "validation": n} if args.no_test else {"train": n, "validation": n, "test": n}
    )
    build_tree(base, hps, channels)
    log_path = args.out / "train.log"
    started = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "train")],
            env={**os.environ, "SAGEMAKER_BASE_DIR": str(base)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for line in proc.stdout:
            log.write(line)
            log.flush()
            if ("=" in line and ("epoch=" in line or "test:" in line)) or "ERROR" in line:
                print(line, end="", flush=True)
        rc = proc.wait()
    elapsed = time.monotonic() - started
    if rc != 0:
        raise SystemExit(f"train exited {rc}; see {log_path}")
    out = base / "output" / "data"
    final = json.loads((out / "metrics.json").read_text())["final"]
    test = None if args.no_test else json.loads((out / "evaluation_test.json").read_text())
    import torch  # after the run: the import is slow and the run does not need it here

    card = json.loads((base / "model" / "model_card.json").read_text())
    summary = {
        "hyperparameters": hps,
        "best_epoch": final["best_epoch"],
        "epochs_run": final["epochs_run"],
        "head": card["head"],
        "decision": final["decision"],
        "precision": card["precision"],
        "validation": final["validation"],
        "validation_by_rule": final["validation_by_rule"],
        **(
            {}
            if test is None
            else {
                "test": {k: test[k] for k in ("n", "accuracy", "rmse", "mae", "off_by_one")},
                "test_tta8": final["test_tta8"],
                "test_confusion_matrix": test["confusion_matrix"],
                "test_per_count": test["per_count"],
            }
        ),
        "train_seconds": round(elapsed),
        "hardware": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores"
        + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"),
        "torch": torch.__version__,
    }
    (args.out / "quality.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
