"""The README's first command: the whole local workflow on a small ABID sample, no AWS account.

prepare a sample -> lay it out as a SageMaker ``/opt/ml`` tree -> run ``./train`` on it ->
start ``./serve`` on the model it wrote -> count a few held-out photos over HTTP -> audit a few
more against expected quantities (half of them wrong, as records can be) -> stop.
Each step runs the same executables SageMaker runs, only relocated with ``SAGEMAKER_BASE_DIR``.

It drives a checkout (``./train``, ``./serve``, ``runs/``, ``../shared/abid``), so it lives with
the checkout's scripts, not in the image's package: ``scripts/quickstart.sh`` runs it as
``python -m scripts.quickstart`` from the repository root.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from bincounter import audit, logs
from bincounter.dataprep.layout import SPLITS
from bincounter.dataprep.pipeline import prepare
from bincounter.dataprep.sources import ABID_BUCKET, LocalSource, S3Source
from bincounter.errors import PrepareError, UserError

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]

#: Small enough for a laptop CPU in a few minutes; not the production recipe (see README).
QUICK_HYPERPARAMETERS = {
    "arch": "resnet18",
    "epochs": "4",
    "batch_size": "32",
    "image_size": "96",
    "warmup_epochs": "1",
}


#: What trains the production recipe on the shared ABID split (see README, Model quality).
REAL_RECIPE = (
    ".venv/bin/python bench/quality.py --out runs/quality --image-size 96 --epochs 40 "
    "--warmup-epochs 1"
)


def _source_for(data: Path):
    """A prepare source for a local folder in any of the layouts people have."""
    if (data / "bin-images").is_dir():
        return LocalSource(data)
    if (data / "original").is_dir() and (data / "metadata").is_dir():
        return LocalSource(data, images_dir="original")  # the ABID sample kept beside checkouts
    return None


def _channels_from_folder(data: Path, out: Path) -> bool:
    """Photos already split per count (``1/``..``5/``): split them by file order, no copy."""
    counts = [data / str(c) for c in range(1, 6)]
    if not all(c.is_dir() for c in counts):
        return False
    for folder in counts:
        for i, photo in enumerate(sorted(folder.glob("*.jp*g"))):
            split = {0: "validation", 3: "test"}.get(i % 6, "train")  # 4 : 1 : 1
            dest = out / split / folder.name / photo.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.unlink(missing_ok=True)
            dest.symlink_to(photo.resolve())
    return True


def prepare_sample(data: str | None, out: Path, per_count: int) -> Path:
    """Channels ``train/validation/test`` under ``out/data`` from DATA or the public bucket."""
    channels = out / "data"
    if data:
        folder = Path(data).expanduser().resolve()
        if not folder.is_dir():
            raise UserError(f"DATA={data} is not a folder")
        if _channels_from_folder(folder, channels):
            return channels
        source = _source_for(folder)
        if source is None:
            raise UserError(
                f"DATA={data}: expected bin-images/ + metadata/, original/ + metadata/, "
                "or one folder per count 1/..5/"
            )
        prepare(source, channels, max_per_count=per_count, workers=8)
        return channels
    try:
        log.info(
            "fetching %d photos per count from the public bucket s3://%s", per_count, ABID_BUCKET
        )
        prepare(S3Source(), channels, max_per_count=per_count, workers=16)
        return channels
    except Exception as exc:  # no network, proxy, DNS: all end the same way for a person
        local = REPO.parent / "shared" / "abid"
        reason = exc.reason if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
        if _source_for(local) is not None:
            log.warning(
                "the public bucket s3://%s cannot be reached (%s); using the local ABID copy %s",
                ABID_BUCKET,
                reason,
                local,
            )
            prepare(_source_for(local), channels, max_per_count=per_count, workers=8)
            return channels
        raise UserError(
            f"the public ABID bucket s3://{ABID_BUCKET} cannot be reached ({reason}); "
            "run with DATA=/path/to/photos (bin-images/ + metadata/, or folders 1/..5/)"
        ) from None


def make_tree(channels: Path, base: Path, hyperparameters: dict[str, str]) -> Path:
    """A fresh SageMaker tree whose channels are the prepared folders."""
    if base.exists():
        shutil.rmtree(base)
    config = base / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    (config / "resourceconfig.json").write_text(
        json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]})
    )
    (config / "inputdataconfig.json").write_text(
        json.dumps({s: {"TrainingInputMode": "File"} for s in SPLITS})
    )
    (base / "input" / "data").mkdir(parents=True)
    for split in SPLITS:
        (base / "input" / "data" / split).symlink_to(channels.resolve() / split)
    return base


def count_with_server(url: str, photos: list[Path]) -> list[dict]:
    """POST each photo to the server at ``url``; the answers in order."""
    answers = []
    for photo in photos:
        request = urllib.request.Request(
            f"{url}/invocations",
            data=photo.read_bytes(),
            headers={"Content-Type": "image/jpeg", "Accept": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as r:
            answers.append(json.loads(r.read()))
    return answers


def audit_own_photos(url: str, model_dir: Path, test: Path, out: Path) -> Path:
    """A small inventory audit of held-out photos: records right for half of them, off by two
    for the other half; ``audit.csv``/``audit.json``/``audit.png`` in ``out``, the summary path
    returned."""
    photos = [p for c in sorted(test.iterdir()) for p in sorted(c.glob("*.jpg"))[:4]]
    out.mkdir(parents=True, exist_ok=True)
    records = out / "bins.csv"
    with open(records, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["photo", "expected_quantity", "bin_id"])
        for k, photo in enumerate(photos):
            count = int(photo.parent.name)
            expected = count if k % 2 == 0 else (count + 1) % 5 + 1
            writer.writerow([photo, expected, f"bin-{k:02d}"])
    audit.run_local(audit.read_records(records), out, out, url=url, model_dir=model_dir)
    return out / audit.JSON_FILE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("DATA"), help="photo folder (or $DATA)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "quickstart")
    parser.add_argument("--per-count", type=int, default=40)
    args = parser.parse_args(argv)
    logs.configure(stream=sys.stdout)
    try:
        channels = prepare_sample(args.data, args.out, args.per_count)
        base = make_tree(channels, args.out / "opt_ml", QUICK_HYPERPARAMETERS)
        log.info("training on %s (SAGEMAKER_BASE_DIR=%s)", channels, base)
        env = {**os.environ, "SAGEMAKER_BASE_DIR": str(base)}
        if subprocess.run([sys.executable, str(REPO / "train")], env=env).returncode != 0:
            failure = base / "output" / "failure"
            reason = failure.read_text().splitlines()[0] if failure.exists() else "see log"
            raise UserError(f"train failed: {reason}")
        test = channels / "test"
        photos = [p for c in sorted(test.iterdir()) for p in sorted(c.glob("*.jpg"))[:1]]
        with audit.local_server(base / "model", REPO / "serve") as url:
            answers = count_with_server(url, photos)
            summary = audit_own_photos(url, base / "model", test, args.out / "audit")
        trained_on = sum(1 for _ in (channels / "train").rglob("*.jpg"))
        print(
            f"\nThese answers come from a SMOKE-TEST model ({trained_on} photos, "
            f"{QUICK_HYPERPARAMETERS['epochs']} epochs): it shows the workflow runs end to end, "
            "not how well bincounter counts (it may answer the same count for every photo)."
        )
        for photo, answer in zip(photos, answers, strict=True):
            print(
                f"{photo.name}: {photo.parent.name} item(s) in the bin, endpoint counted "
                f"{answer['count']} (p={answer['probabilities'][str(answer['count'])]:.2f})"
            )
        print(f"\naudit of {test} (half the expected quantities wrong): {summary}")
        print(f"\nTo train the real recipe (the default hyperparameters):\n  {REAL_RECIPE}\n")
    except (UserError, PrepareError) as exc:
        log.error("quickstart failed: %s", exc.reason)
        return 1
    print(f"done: model in {base / 'model'}, reports in {base / 'output' / 'data'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
