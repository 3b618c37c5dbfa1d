"""``scripts/audit.py`` without ``--local``: real photos on S3 (moto), counted by a batch
transform, the answers joined with the records' expected quantities.

moto records the CreateTransformJob request and completes the job at once but runs no
container, so the test writes the transform's outputs where SageMaker would (one
``<photo key>.out`` per photo under the job's output path), as the serving container answers
them (``codec.probabilities_to_prediction``). Nothing is patched: the script talks HTTP to moto.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import numpy as np
import pytest

from bincounter import CLASSES, audit, verification
from bincounter.card import served_card
from bincounter.serving.codec import probabilities_to_prediction

from .conftest import BUCKET, IMAGE, REGION, ROLE
from .motoserver import RecordingMotoServer
from support import ABID, REPO

pytestmark = pytest.mark.slow

JOB = "bc-audit"
PHOTOS = f"s3://{BUCKET}/audit-photos/"
OUTPUT = f"bc/transform/{JOB}"


def card_section() -> dict:
    """A real ``verification`` section: thresholds chosen on synthetic validation outputs, with
    a ``tta8`` part chosen on flatter ones (as averaged variants are)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 400)
    logits = rng.normal(size=(400, 5)) + 2.5 * np.eye(5)[labels]
    section = verification.choose_thresholds(softmax(logits), labels)
    averaged = verification.choose_thresholds(softmax(logits / 2), labels)
    section["tta8"] = {k: averaged[k] for k in ("thresholds", "validation")}
    assert section["tta8"]["thresholds"] != section["thresholds"]
    return section


def softmax(z: np.ndarray) -> np.ndarray:
    return np.exp(z) / np.exp(z).sum(1, keepdims=True)


def test_transform_audit_joins_the_outputs_with_the_records(
    moto_server: RecordingMotoServer, tmp_path: Path
) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    photos = sorted((ABID / "original").glob("*.jpg"))[:5]
    rng = np.random.default_rng(1)
    rows, answers = [], {}
    for k, photo in enumerate(photos):
        key = f"audit-photos/{'sub/' if k == 4 else ''}{photo.name}"
        s3.put_object(Bucket=BUCKET, Key=key, Body=photo.read_bytes())
        uri = f"s3://{BUCKET}/{key}"
        expected = k % 5 + 1
        rows.append((uri, expected, f"bin-{k}"))
        if k == 3:
            continue  # this photo's output never lands: its row is an error, not a guess
        p = rng.dirichlet(np.ones(5) * 0.7)
        answers[uri] = probabilities_to_prediction(p, "v1", "argmax")
        relative = key.removeprefix("audit-photos/")
        body = json.dumps(answers[uri]).encode()
        s3.put_object(Bucket=BUCKET, Key=f"{OUTPUT}/{relative}.out", Body=body)
    records = tmp_path / "bins.csv"
    with open(records, "w", newline="") as f:
        csv.writer(f).writerows([("photo", "expected_quantity", "bin_id"), *rows])
    section = card_section()
    card = tmp_path / "model_card.json"
    card.write_text(json.dumps({"verification": section}))
    model_data = f"s3://{BUCKET}/bc/output/job-1/output/model.tar.gz"
    out = tmp_path / "audit"
    env = {
        **os.environ,
        "BINCOUNTER_REGION": REGION,
        "BINCOUNTER_ROLE_ARN": ROLE,
        "BINCOUNTER_BUCKET": BUCKET,
        "BINCOUNTER_IMAGE_URI": IMAGE,
        "BINCOUNTER_S3_PREFIX": "bc",
    }
    command = [sys.executable, str(REPO / "scripts" / "audit.py"), str(records), "--out", str(out)]
    command += ["--model-data", model_data, "--card", str(card), "--job-name", JOB]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    (job,) = moto_server.calls("CreateTransformJob")
    assert job["TransformJobName"] == JOB and job["ModelName"] == JOB
    # the audit's default: each photo's eight variants averaged, and the card's verdicts for it
    assert job["Environment"] == {"BINCOUNTER_TTA": "8"}
    section = served_card({"verification": section}, 8)["verification"]
    assert section["thresholds"] == section["tta8"]["thresholds"]
    source = job["TransformInput"]["DataSource"]["S3DataSource"]
    assert (source["S3DataType"], source["S3Uri"]) == ("S3Prefix", PHOTOS)
    assert job["TransformOutput"]["S3OutputPath"] == f"s3://{BUCKET}/{OUTPUT}"
    (model,) = moto_server.calls("CreateModel")
    assert model["PrimaryContainer"]["ModelDataUrl"] == model_data

    table = list(csv.DictReader((out / audit.CSV_FILE).open()))
    assert [r["bin_id"] for r in table] == [bin_id for _, _, bin_id in rows]
    for row, (uri, expected, _) in zip(table, rows, strict=True):
        assert row["photo"] == uri and int(row["expected_quantity"]) == expected
        if uri not in answers:
            assert row["verdict"] == "error" and f"{OUTPUT}/" in row["error"]
            continue
        answer = answers[uri]
        p = np.array([[answer["probabilities"][str(c)] for c in CLASSES]])
        match, verdicts = verification.verify(p, [expected], section, None)
        assert int(row["count"]) == answer["count"]
        assert float(row["match_probability"]) == pytest.approx(match[0], abs=1e-6)
        assert row["verdict"] == verdicts[0]
    summary = json.loads((out / audit.JSON_FILE).read_text())
    assert (summary["photos"], summary["answered"], summary["errors"]) == (5, 4, 1)
    assert summary["flagged"] == sum(r["verdict"] == "mismatch" for r in table)
    assert summary["thresholds"] == section["thresholds"]
    assert (out / audit.PNG_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
