"""The pipeline run locally: the SDK's local pipeline support runs the real image under docker
for prepare -> train -> evaluate -> gate, on real ABID photos, with S3 served by moto on
127.0.0.1. One execution passes the gate; one is refused by a bar no model can meet, and its
Fail step names the metric, the bar and the value that evaluate wrote.

Kept small (40 photos of the ``train`` split, 1 epoch at 64 px, no OpenVINO export): the point
is the wiring between the steps (outputs -> channels -> model -> property file -> gate), not
the model.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from pathlib import Path

import pytest
from conftest import REPORT, docker

from support import ABID, QUICK_HPS, free_port

pytestmark = [pytest.mark.container, pytest.mark.slow]

BUCKET = "bincounter-local"
ROLE = "arn:aws:iam::123456789012:role/SageMakerExecution"
PER_COUNT = 8
LOCAL = {
    "ProcessingInstanceType": "local",
    "TrainingInstanceType": "local",
    "EvaluationInstanceType": "local",
    "TrainingSpot": False,
}
TELEMETRY_OFF = (
    "SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n"
)


@pytest.fixture
def local_s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """moto's S3 on loopback, fake credentials, no telemetry: nothing may reach AWS."""
    pytest.importorskip("moto.server", reason="needs the aws extra (scripts/setup.sh)")
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    (tmp_path / "sagemaker.yaml").write_text(TELEMETRY_OFF)
    for key in [k for k in os.environ if k.startswith(("AWS_", "BINCOUNTER_"))]:
        if key != "BINCOUNTER_ABID_DIR":
            monkeypatch.delenv(key)
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "SAGEMAKER_USER_CONFIG_OVERRIDE": str(tmp_path / "sagemaker.yaml"),
        "SAGEMAKER_VALIDATE_ROLE": "false",
        "BINCOUNTER_AWS_CONFIG": "",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # (after the region is set: sagemaker.serve makes a boto3 client at import time)
    pytest.importorskip("sagemaker.mlops", reason="needs the aws extra (scripts/setup.sh)")
    import boto3

    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    yield s3
    server.stop()


def _source(folder: Path) -> Path:
    """An ABID-layout folder of ``PER_COUNT`` originals per count, all from the ``train``
    split of ../shared/abid (the test split is never trained on)."""
    with open(ABID / "labels.csv") as f:
        train = {row["id"] for row in csv.DictReader(f) if row["split"] == "train"}
    picked: dict[str, list[str]] = {}
    with open(ABID / "original.csv") as f:
        for row in csv.DictReader(f):
            ids = picked.setdefault(row["count"], [])
            if row["id"] in train and len(ids) < PER_COUNT:
                ids.append(row["id"])
    for sub in ("bin-images", "metadata"):
        (folder / sub).mkdir(parents=True)
    for ids in picked.values():
        for i in ids:
            shutil.copyfile(ABID / "original" / f"{i}.jpg", folder / "bin-images" / f"{i}.jpg")
            shutil.copyfile(ABID / "metadata" / f"{i}.json", folder / "metadata" / f"{i}.json")
    assert sum(map(len, picked.values())) == 5 * PER_COUNT
    return folder


def _upload_tree(s3, folder: Path, prefix: str) -> str:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(folder).as_posix()}")
    return f"s3://{BUCKET}/{prefix}"


def _read(s3, uri: str) -> dict:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def test_local_pipeline_passes_then_refuses_at_the_gate(image, local_s3, tmp_path, request):
    from bincounter.aws.config import resolve_config
    from bincounter.aws.local_pipeline import run_local
    from bincounter.aws.pipeline import PipelineSettings
    from bincounter.aws.processing import upload_plan
    from bincounter.dataprep.pipeline import plan
    from bincounter.dataprep.sources import LocalSource

    request.addfinalizer(
        lambda: [
            docker("rm", "-f", n, check=False)
            for n in docker("ps", "-aq", "--filter", f"ancestor={image}").stdout.split()
        ]
    )
    source = _source(tmp_path / "abid")
    planned = plan(LocalSource(source), tmp_path / "plan", parts=1, workers=2, progress=False)
    plan_uri = f"s3://{BUCKET}/bc/plan"
    upload_plan(local_s3, planned.parts, plan_uri)
    config = resolve_config(
        {"region": "us-east-1", "role": ROLE, "bucket": BUCKET, "image": image, "prefix": "bc"}
    )
    settings = PipelineSettings(
        name="bc-local",
        group="bc",
        hyperparameters={**QUICK_HPS, "epochs": "1"},
        resize=96,
        source_uri=_upload_tree(local_s3, source, "abid"),
    )

    runs = {}
    for label, bars in (("passed", {}), ("refused", {"MinAccuracy": 1.01})):
        started = time.monotonic()
        runs[label] = run_local(
            config,
            settings,
            {"PlanUri": plan_uri, **LOCAL, **bars},
            container_root=tmp_path / f"root-{label}",
        )
        REPORT[f"local pipeline ({label}): prepare+train+evaluate+gate"] = (
            f"{time.monotonic() - started:.0f} s"
        )

    passed = runs["passed"]
    if passed.status != "Succeeded":
        pytest.fail(f"{passed.failure_reason}\n{passed.steps}", pytrace=False)
    for step in ("prepare", "train", "evaluate", "gate-accuracy", "gate-baseline-rmse"):
        assert passed.step_status(step) == "Succeeded", passed.steps
    assert not any(name.startswith("refused-") for name, *_ in passed.steps)
    outputs = passed.properties["evaluate"]["ProcessingOutputConfig"]["Outputs"]
    evaluation = _read(local_s3, outputs["evaluation"]["S3Output"]["S3Uri"] + "/evaluation.json")
    assert evaluation["split"] == "test" and 0 < evaluation["metrics"]["n"] <= 5 * PER_COUNT
    assert evaluation["model"]["weights_sha256"]
    model = passed.properties["train"]["ModelArtifacts"]["S3ModelArtifacts"]
    assert model.startswith(f"s3://{BUCKET}/bc/pipelines/bc-local/output/")

    refused = runs["refused"]
    assert refused.status == "Failed"
    assert refused.step_status("gate-accuracy") == "Succeeded"  # the condition ran: its outcome
    (reason,) = [r for name, status, r in refused.steps if name == "refused-accuracy"]
    outputs = refused.properties["evaluate"]["ProcessingOutputConfig"]["Outputs"]
    value = _read(local_s3, outputs["evaluation"]["S3Output"]["S3Uri"] + "/evaluation.json")[
        "metrics"
    ]["accuracy"]
    assert reason == f"test accuracy {value} is below the minimum bar MinAccuracy=1.01"
    assert "refused-accuracy" in (refused.failure_reason or "")
