"""SageMaker local mode, as users test on a laptop, driven by the project's own launch code.

``bincounter.aws.local`` runs the SDK v3 ``ModelTrainer`` in ``LOCAL_CONTAINER`` mode (``docker
compose`` v2, the image started with *no* argument, so it must default to training) and the
SDK's ``LocalSession`` endpoint (the image started with ``serve``). Fake credentials, SDK
telemetry off, and every AWS endpoint pointed at a closed loopback port: nothing here may reach
AWS. One real fit + deploy + predict + delete.
"""

from __future__ import annotations

import json
import os
import tarfile
import time
from pathlib import Path

import pytest
from conftest import REPORT, docker, materialize

from support import ABID, QUICK_HPS, build_channel, free_port

pytestmark = [pytest.mark.container, pytest.mark.slow]

TELEMETRY_OFF = """\
SchemaVersion: '1.0'
SageMaker:
  PythonSDK:
    Modules:
      TelemetryOptOut: true
"""


@pytest.fixture
def offline_aws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials, no telemetry, and any AWS call sent to a closed loopback port."""
    pytest.importorskip("sagemaker.train", reason="needs the aws extra (scripts/setup.sh)")
    config = tmp_path / "sagemaker-config.yaml"
    config.write_text(TELEMETRY_OFF)
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("SAGEMAKER_USER_CONFIG_OVERRIDE", str(config))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")


def containers_of(image: str, *, running_only: bool = False) -> list[str]:
    flags = [] if running_only else ["-a"]
    out = docker("ps", *flags, "--filter", f"ancestor={image}", "--format", "{{.Names}}")
    return out.stdout.split()


def test_local_fit_deploy_predict_delete(
    image: str, offline_aws: None, tmp_path: Path, request
) -> None:
    from bincounter.aws.local import docker_problem, local_deploy, local_train

    assert docker_problem() is None
    # the compose project the SDK leaves behind on a failure is removed with the test
    request.addfinalizer(lambda: [docker("rm", "-f", n, check=False) for n in containers_of(image)])
    channels = {
        name: materialize(build_channel(tmp_path / "data" / name, name, n))
        for name, n in (("train", 8), ("validation", 4))
    }
    started = time.monotonic()
    training = local_train(
        image,
        channels,
        {**QUICK_HPS, "epochs": 1},
        container_root=tmp_path / "local",
        base_job_name="bincounter-ci-local",
    )
    REPORT["local mode: fit (ModelTrainer LOCAL_CONTAINER)"] = f"{time.monotonic() - started:.0f} s"
    with tarfile.open(training.model_artifact) as tar:
        names = {Path(n).as_posix().removeprefix("./") for n in tar.getnames()}
    assert {"model.pt", "model_card.json"} <= names, names

    port = free_port()
    started = time.monotonic()
    endpoint = local_deploy(image, training.model_artifact, name="bincounter-ci-local", port=port)
    try:
        REPORT["local mode: deploy until /ping 200"] = f"{time.monotonic() - started:.0f} s"
        assert endpoint.url == f"http://localhost:{port}"
        line = (ABID / "original.csv").read_text().splitlines()[1]
        photo = (ABID / "original" / f"{line.split(',')[0]}.jpg").read_bytes()
        answer = json.loads(endpoint.invoke(photo, "image/jpeg"))
        assert answer["count"] in {1, 2, 3, 4, 5}
        assert abs(sum(answer["probabilities"].values()) - 1) < 1e-6
    finally:
        endpoint.delete()
    assert containers_of(image, running_only=True) == [], "delete() must stop the server"
