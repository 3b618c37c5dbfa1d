"""SageMaker local mode: train and serve the locally built image with the SDK's own runner.

What the container tests (``tests/container/``) call; signatures are stable:

``local_train(image, channels, hyperparameters=None, *, instance_count=1, container_root=None,
environment=None, base_job_name="bincounter-local", instance_type="local") -> LocalTraining``
    Runs ``ModelTrainer(training_mode=Mode.LOCAL_CONTAINER)``: ``docker compose`` with one
    service per host (``algo-1``...), channels mounted from local folders (``{"train": path,
    "validation": path, "test": path}``; ``s3://`` URIs are downloaded by the SDK first).
    Hyperparameters are validated as the container parses them. Returns the job name and the
    path of the ``model.tar.gz`` the SDK assembled under ``container_root``.

``local_deploy(image, model_data, *, name="bincounter-local", port=8080, environment=None,
instance_type="local", region="us-east-1") -> LocalEndpoint``
    Runs the image with ``serve`` through ``sagemaker.core.local.LocalSession`` (the SDK's
    ModelBuilder local mode only knows its built-in servers). ``model_data`` is a local
    ``model.tar.gz`` (or ``file://`` URI, or a folder holding one). Blocks until ``/ping``
    answers 200. ``LocalEndpoint.url`` is ``http://localhost:<port>``;
    ``LocalEndpoint.invoke(body, content_type)`` -> bytes; ``LocalEndpoint.delete()`` stops it.

``docker_problem() -> str | None``
    Why local mode cannot run here (no docker binary, no compose v2, no daemon), or None. The
    SDK's own errors for these are uncaught ``FileNotFoundError``/``ImportError``/
    ``RuntimeError``; the functions above raise ``LocalModeError`` with this message first.

The SDK starts training containers with no ``train`` argument (``docker run IMAGE``), so the
image must default to training (``CMD ["train"]``); real SageMaker passes ``train``.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import LocalModeError
from ..params import REQUIRED_CHANNELS
from .endpoints import VARIANT
from .inputs import validate_hyperparameters

log = logging.getLogger(__name__)

#: ``local_deploy``'s endpoint name and port unless told otherwise (``bincounter-aws deploy
#: --local`` takes its defaults here).
LOCAL_ENDPOINT = "bincounter-local"
LOCAL_PORT = 8080


def docker_problem() -> str | None:
    """None when ``docker``, ``docker compose`` v2 and a daemon are all usable."""
    if shutil.which("docker") is None:
        return "local mode needs docker: no 'docker' on PATH (install Docker Engine)"
    try:
        out = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"'docker compose version' failed: {exc}"
    if out.returncode != 0 and shutil.which("docker-compose") is None:
        return (
            "local mode needs docker compose v2 ('docker compose version' failed: "
            f"{(out.stderr or out.stdout).strip()[:200]}); install the compose plugin"
        )
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"'docker info' failed: {exc}"
    if info.returncode != 0:
        return (
            "the docker daemon is not reachable ('docker info' failed: "
            f"{(info.stderr or info.stdout).strip()[:200]}); start it or set DOCKER_HOST"
        )
    return None


def _require_docker() -> None:
    problem = docker_problem()
    if problem:
        raise LocalModeError(problem)


@dataclass(frozen=True)
class LocalTraining:
    """A finished local-mode run: its artefact is a file on this machine, inside the run's
    ``container_root`` (the SDK assembles ``model.tar.gz`` there), not an S3 URI."""

    job_name: str
    model_artifact: Path
    container_root: Path
    hyperparameters: dict[str, str]


def local_train(
    image: str,
    channels: Mapping[str, str | Path],
    hyperparameters: Mapping[str, Any] | None = None,
    *,
    instance_count: int = 1,
    container_root: str | Path | None = None,
    environment: Mapping[str, str] | None = None,
    base_job_name: str = "bincounter-local",
    instance_type: str = "local",
) -> LocalTraining:
    """Train with the SDK's local container mode; see the module docstring."""
    from sagemaker.core.training.configs import Compute, InputData
    from sagemaker.train import ModelTrainer
    from sagemaker.train.model_trainer import Mode

    missing = [c for c in REQUIRED_CHANNELS if c not in channels]
    if missing:
        raise LocalModeError(f"channel(s) {missing} missing: give train and validation folders")
    inputs = []
    for name, source in channels.items():
        text = str(source)
        if not text.startswith("s3://"):
            path = Path(text).resolve()
            if not path.is_dir():
                raise LocalModeError(f"channel {name}: {path} is not a folder")
            text = str(path)
        inputs.append(InputData(channel_name=name, data_source=text))
    strings = validate_hyperparameters(hyperparameters or {})
    _require_docker()
    root = Path(container_root or tempfile.mkdtemp(prefix="bincounter-local-")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    trainer = ModelTrainer(
        training_mode=Mode.LOCAL_CONTAINER,
        training_image=image,
        base_job_name=base_job_name,
        compute=Compute(instance_type=instance_type, instance_count=instance_count),
        hyperparameters=strings,
        environment=dict(environment or {}),
        local_container_root=str(root),
    )
    try:
        trainer.train(input_data_config=inputs, wait=True, logs=True)
    except RuntimeError as exc:
        raise LocalModeError(f"local training failed: {exc}") from exc
    artifact = root / "compressed_artifacts" / "model.tar.gz"
    if not artifact.is_file():
        raise LocalModeError(f"local training ended without {artifact}")
    job = trainer._latest_training_job
    name = str(getattr(job, "training_job_name", "") or base_job_name)
    return LocalTraining(name, artifact, root, strings)


@dataclass
class LocalEndpoint:
    """A running local endpoint (``docker compose`` service serving on ``port``)."""

    name: str
    port: int
    session: Any = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://localhost:{self.port}"

    def invoke(
        self, body: bytes, content_type: str = "image/jpeg", accept: str = "application/json"
    ) -> bytes:
        response = self.session.sagemaker_runtime_client.invoke_endpoint(
            EndpointName=self.name, Body=body, ContentType=content_type, Accept=accept
        )
        return response["Body"].read()

    def delete(self) -> None:
        client = self.session.sagemaker_client
        client.delete_endpoint(EndpointName=self.name)
        client.delete_endpoint_config(EndpointConfigName=self.name)
        client.delete_model(ModelName=self.name)


def _model_url(model_data: str | Path) -> str:
    text = str(model_data)
    if text.startswith(("s3://", "file://")):
        return text
    path = Path(text).resolve()
    if path.is_dir():
        path = path / "model.tar.gz"
    if not path.is_file():
        raise LocalModeError(f"no model archive at {path}")
    return f"file://{path}"


def local_deploy(
    image: str,
    model_data: str | Path,
    *,
    name: str = LOCAL_ENDPOINT,
    port: int = LOCAL_PORT,
    environment: Mapping[str, str] | None = None,
    instance_type: str = "local",
    region: str = "us-east-1",
) -> LocalEndpoint:
    """Serve ``model_data`` with the image locally; see the module docstring."""
    import boto3
    from sagemaker.core.local.local_session import LocalSession

    url = _model_url(model_data)
    _require_docker()
    session = LocalSession(boto_session=boto3.Session(region_name=region))
    session.config = {"local": {"local_code": True, "serving_port": int(port)}}
    client = session.sagemaker_client
    client.create_model(
        ModelName=name,
        PrimaryContainer={
            "Image": image,
            "ModelDataUrl": url,
            "Environment": dict(environment or {}),
        },
    )
    client.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": VARIANT,
                "ModelName": name,
                "InitialInstanceCount": 1,
                "InstanceType": instance_type,
            }
        ],
    )
    try:
        client.create_endpoint(EndpointName=name, EndpointConfigName=name)
    except RuntimeError as exc:
        endpoint = LocalEndpoint(name, int(port), session)
        with contextlib.suppress(Exception):  # best effort: the first error is the one to report
            endpoint.delete()
        raise LocalModeError(f"local endpoint did not become healthy: {exc}") from exc
    return LocalEndpoint(name, int(port), session)
