"""Launch scripts against the recording moto server: tune, best, train, deploy, delete,
transform, invoke. Every check reads what the server received: ``describe_*`` on moto where it
stores the field, and the recorded request bodies where moto keeps a placeholder instead (it
stores no MetricDefinitions of training jobs, see ``motoserver.py``).

What moto cannot do, and so is not tested here: run a job (jobs report ``Completed`` at once,
no ``model.tar.gz``, no logs), pick a real best training job (its tuning job names a
placeholder), run a serving container behind an endpoint (``InvokeEndpoint`` is answered by the
recording server), and ``ListTrainingJobsForHyperParameterTuningJob``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import boto3
import pytest

from bincounter.aws.cli import main
from bincounter.aws.inputs import write_hyperparameters_file
from bincounter.aws.jobs import best_from_descriptions
from bincounter.training.hyperparameters import parse_hyperparameters
from bincounter.training.metrics import METRIC_DEFINITIONS, OBJECTIVE_METRIC

from .conftest import BUCKET, IMAGE, REGION, ROLE
from .motoserver import RecordingMotoServer
from support import ABID, REPO

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

CONFIG_FLAGS = ["--region", REGION, "--role", ROLE, "--bucket", BUCKET, "--image", IMAGE]
CONFIG_FLAGS += ["--prefix", "bc"]
DATA = f"s3://{BUCKET}/bc/data"


def _sm():
    return boto3.client("sagemaker", region_name=REGION)


def scalable_target(endpoint: str) -> tuple[str, dict]:
    """The endpoint variant's autoscaling resource id and its one registered scalable target."""
    resource = f"endpoint/{endpoint}/variant/AllTraffic"
    scaling = boto3.client("application-autoscaling", region_name=REGION)
    (target,) = scaling.describe_scalable_targets(
        ServiceNamespace="sagemaker", ResourceIds=[resource]
    )["ScalableTargets"]
    return resource, target


def _run(argv: list[str], capsys) -> str:
    status = main(argv)
    captured = capsys.readouterr()
    assert status == 0, captured.out + captured.err
    return captured.out


def _photos(n: int) -> list[Path]:
    return sorted((ABID / "original").glob("*.jpg"))[:n]


def _hp_flags(values: dict[str, str]) -> list[str]:
    return [a for k, v in values.items() for a in ("--hp", f"{k}={v}")]


def _train(server: RecordingMotoServer, capsys, *argv: str) -> tuple[dict, str]:
    """``train`` with the test configuration and ``--data``: the one CreateTrainingJob request
    the server received, and what the command printed."""
    before = len(server.calls("CreateTrainingJob"))
    out = _run(["train", *CONFIG_FLAGS, "--data", DATA, *argv], capsys)
    (request,) = server.calls("CreateTrainingJob")[before:]
    return request, out


def _recorded_metrics(definitions: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{"Name": m["Name"], "Regex": m["Regex"]} for m in definitions]


# --------------------------------------------------------------------------- tune + train


@pytest.mark.slow
def test_tune_request_then_best_file_read_by_train(
    moto_server: RecordingMotoServer, tmp_path: Path, capsys
):
    best_file = tmp_path / "best.json"
    _run(
        [
            "tune",
            *CONFIG_FLAGS,
            "--data",
            DATA,
            "--job-name",
            "bc-tune-launch",
            "--hp",
            "arch=resnet34",
            "--hp",
            "image_size=160",
            "--max-jobs",
            "8",
            "--max-parallel-jobs",
            "2",
            "--early-stopping",
            "--instance-type",
            "ml.g5.xlarge",
            "--no-wait",
        ],
        capsys,
    )
    described = _sm().describe_hyper_parameter_tuning_job(
        HyperParameterTuningJobName="bc-tune-launch"
    )
    tuning = described["HyperParameterTuningJobConfig"]
    assert tuning["HyperParameterTuningJobObjective"] == {
        "Type": "Maximize",
        "MetricName": OBJECTIVE_METRIC,
    }
    assert tuning["ResourceLimits"]["MaxNumberOfTrainingJobs"] == 8
    assert tuning["ResourceLimits"]["MaxParallelTrainingJobs"] == 2
    assert tuning["TrainingJobEarlyStoppingType"] == "Auto"
    ranges = tuning["ParameterRanges"]
    (lr,) = ranges["ContinuousParameterRanges"]
    assert (lr["Name"], float(lr["MinValue"]), float(lr["MaxValue"]), lr["ScalingType"]) == (
        "lr",
        0.001,
        0.1,
        "Logarithmic",
    )
    (epochs,) = ranges["IntegerParameterRanges"]
    assert (epochs["Name"], int(epochs["MinValue"]), int(epochs["MaxValue"])) == ("epochs", 2, 6)
    (batch,) = ranges["CategoricalParameterRanges"]
    assert (batch["Name"], batch["Values"]) == ("batch_size", ["16", "32", "64"])

    definition = described["TrainingJobDefinition"]
    algorithm = definition["AlgorithmSpecification"]
    assert algorithm["TrainingImage"] == IMAGE
    assert _recorded_metrics(algorithm["MetricDefinitions"]) == METRIC_DEFINITIONS
    assert definition["RoleArn"] == ROLE
    assert definition["ResourceConfig"]["InstanceType"] == "ml.g5.xlarge"
    channels = {c["ChannelName"]: c for c in definition["InputDataConfig"]}
    assert set(channels) == {"train", "validation"}  # test data is never shown to the tuner
    for name, channel in channels.items():
        assert channel["DataSource"]["S3DataSource"]["S3Uri"].rstrip("/") == f"{DATA}/{name}"
    static = {
        k: v
        for k, v in definition["StaticHyperParameters"].items()
        if not k.startswith(("_", "sagemaker_"))
    }
    assert static == {"arch": "resnet34", "image_size": "160"}
    assert not {"lr", "batch_size", "epochs"} & set(static)

    # moto's tuning job names a placeholder best job ("FakeTrainingJobName", tuned values
    # {"string": "string"}): `best` refuses values the container would reject.
    assert (
        main(["best", *CONFIG_FLAGS, "--tuning-job", "bc-tune-launch", "--out", str(best_file)])
        == 2
    )
    assert "the container rejects" in capsys.readouterr().err
    assert not best_file.exists()

    # Stand in for the job the service would pick: a real training job on the server with
    # tuned values, named as the tuning job's best; then best -> JSON file -> train.
    tuned = {"lr": "0.0123", "batch_size": "32", "epochs": "5"}
    request, _ = _train(
        moto_server,
        capsys,
        "--no-test",
        "--base-job-name",
        "bc-tune-launch-003",
        *_hp_flags({"arch": "resnet34", "image_size": "160", **tuned}),
    )
    child = request["TrainingJobName"]
    described["BestTrainingJob"] = {
        "TrainingJobName": child,
        "TunedHyperParameters": tuned,
        "FinalHyperParameterTuningJobObjectiveMetric": {
            "MetricName": OBJECTIVE_METRIC,
            "Value": 0.41,
        },
    }
    best = best_from_descriptions(described, _sm().describe_training_job(TrainingJobName=child))
    write_hyperparameters_file(best_file, best)
    written = json.loads(best_file.read_text())
    assert written["best_training_job"] == child
    assert written["objective"] == {"name": OBJECTIVE_METRIC, "value": 0.41}
    assert written["hyperparameters"] == {
        "arch": "resnet34",
        "image_size": "160",
        "lr": "0.0123",
        "batch_size": "32",
        "epochs": "5",
    }

    request, out = _train(
        moto_server,
        capsys,
        "--hyperparameters-file",
        str(best_file),
        "--hp",
        "seed=7",
        "--base-job-name",
        "bc-best",
    )
    sent = parse_hyperparameters(request["HyperParameters"])
    assert (sent.lr, sent.batch_size, sent.epochs, sent.arch, sent.image_size, sent.seed) == (
        0.0123,
        32,
        5,
        "resnet34",
        160,
        7,
    )
    assert f"training job: {request['TrainingJobName']}" in out


@pytest.mark.slow
def test_train_request_carries_image_channels_hps_metrics_spot_and_checkpoints(
    moto_server: RecordingMotoServer, capsys
):
    hps = {
        "lr": "0.02",
        "batch_size": "64",
        "epochs": "3",
        "pretrained": "false",
        "optimizer": "sgd",
        "warmup_epochs": "0.5",
    }
    request, out = _train(
        moto_server,
        capsys,
        *_hp_flags(hps),
        "--instance-type",
        "ml.g4dn.12xlarge",
        "--instance-count",
        "2",
        "--spot",
        "--max-run",
        "7200",
        "--max-wait",
        "10800",
        "--base-job-name",
        "bc-spot",
    )
    name = request["TrainingJobName"]
    job = _sm().describe_training_job(TrainingJobName=name)

    assert job["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert job["RoleArn"] == ROLE
    assert job["ResourceConfig"]["InstanceType"] == "ml.g4dn.12xlarge"
    assert job["ResourceConfig"]["InstanceCount"] == 2
    assert job["EnableManagedSpotTraining"] is True
    assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 7200, "MaxWaitTimeInSeconds": 10800}
    assert job["CheckpointConfig"] == {
        "S3Uri": f"s3://{BUCKET}/bc/checkpoints/bc-spot",
        "LocalPath": "/opt/ml/checkpoints",
    }
    channels = {
        c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"].rstrip("/")
        for c in job["InputDataConfig"]
    }
    assert channels == {s: f"{DATA}/{s}" for s in ("train", "validation", "test")}
    assert job["OutputDataConfig"]["S3OutputPath"].rstrip("/") == f"s3://{BUCKET}/bc/output"

    # Hyperparameters as the container will parse them: the same values, nothing lost.
    stored = {k: v for k, v in job["HyperParameters"].items() if not k.startswith("sagemaker_")}
    parsed = parse_hyperparameters(stored)
    assert parsed == parse_hyperparameters(hps)
    assert (parsed.lr, parsed.batch_size, parsed.pretrained, parsed.optimizer) == (
        0.02,
        64,
        False,
        "sgd",
    )
    # moto describes a placeholder instead of MetricDefinitions: read the request itself.
    metrics = request["AlgorithmSpecification"]["MetricDefinitions"]
    assert _recorded_metrics(metrics) == METRIC_DEFINITIONS
    assert f"model artifact: s3://{BUCKET}/bc/output/{name}/output/model.tar.gz" in out


@pytest.mark.slow
def test_bad_hyperparameter_or_spot_settings_fail_before_any_request(
    moto_server: RecordingMotoServer, capsys
):
    before = len(moto_server.calls("CreateTrainingJob"))
    assert main(["train", *CONFIG_FLAGS, "--data", DATA, "--hp", "batch_size=lots"]) == 2
    assert "batch_size" in capsys.readouterr().err
    assert main(["train", *CONFIG_FLAGS, "--data", DATA, "--max-wait", "100"]) == 2
    assert "spot" in capsys.readouterr().err
    assert len(moto_server.calls("CreateTrainingJob")) == before


# --------------------------------------------------------------------------- deploy + delete


@pytest.mark.slow
def test_deploy_creates_model_config_endpoint_and_delete_removes_all_three(
    moto_server: RecordingMotoServer, capsys
):
    model_data = f"s3://{BUCKET}/bc/output/job-1/output/model.tar.gz"
    capture = f"s3://{BUCKET}/bc/capture"
    out = _run(
        [
            "deploy",
            *CONFIG_FLAGS,
            "--model-data",
            model_data,
            "--name",
            "bc-endpoint",
            "--instance-type",
            "ml.c5.large",
            "--instance-count",
            "2",
            "--startup-timeout",
            "900",
            "--data-capture",
            capture,
            "--capture-percent",
            "20",
        ],
        capsys,
    )
    assert "endpoint: bc-endpoint (InService)" in out
    sm = _sm()
    model = sm.describe_model(ModelName="bc-endpoint")
    assert model["PrimaryContainer"]["Image"] == IMAGE
    assert model["PrimaryContainer"]["ModelDataUrl"] == model_data
    assert model["ExecutionRoleArn"] == ROLE
    config = sm.describe_endpoint_config(EndpointConfigName="bc-endpoint")
    (variant,) = config["ProductionVariants"]
    assert variant["ModelName"] == "bc-endpoint"
    assert variant["InstanceType"] == "ml.c5.large"
    assert variant["InitialInstanceCount"] == 2
    assert variant["ContainerStartupHealthCheckTimeoutInSeconds"] == 900
    data_capture = config["DataCaptureConfig"]
    assert data_capture["EnableCapture"] is True
    assert data_capture["InitialSamplingPercentage"] == 20
    assert data_capture["DestinationS3Uri"] == capture
    assert {o["CaptureMode"] for o in data_capture["CaptureOptions"]} == {"Input", "Output"}
    endpoint = sm.describe_endpoint(EndpointName="bc-endpoint")
    assert endpoint["EndpointConfigName"] == "bc-endpoint"

    # Invoke through sagemaker-runtime: the server records the raw JPEG bytes it was sent.
    photos = _photos(2)
    before = len(moto_server.invocations())
    out = _run(["invoke", *CONFIG_FLAGS, "--endpoint", "bc-endpoint", *map(str, photos)], capsys)
    sent = moto_server.invocations()[before:]
    assert [r.body for r in sent] == [p.read_bytes() for p in photos]
    assert all(r.headers["content-type"] == "image/jpeg" for r in sent)
    assert all(r.path == "/endpoints/bc-endpoint/invocations" for r in sent)
    assert out.count('"count": 3') == 2

    out = _run(["delete", *CONFIG_FLAGS, "--name", "bc-endpoint"], capsys)
    for line in ("endpoint bc-endpoint", "endpoint config bc-endpoint", "model bc-endpoint"):
        assert f"deleted {line}" in out
    for call, kwargs in (
        (sm.describe_endpoint, {"EndpointName": "bc-endpoint"}),
        (sm.describe_endpoint_config, {"EndpointConfigName": "bc-endpoint"}),
        (sm.describe_model, {"ModelName": "bc-endpoint"}),
    ):
        with pytest.raises(sm.exceptions.ClientError):
            call(**kwargs)
    assert main(["delete", *CONFIG_FLAGS, "--name", "bc-endpoint"]) == 2
    assert "nothing named 'bc-endpoint'" in capsys.readouterr().err


@pytest.mark.slow
def test_transform_request(moto_server: RecordingMotoServer, capsys):
    model_data = f"s3://{BUCKET}/bc/output/job-2/output/model.tar.gz"
    _run(
        [
            "transform",
            *CONFIG_FLAGS,
            "--input",
            f"s3://{BUCKET}/bc/batch/",
            "--model-data",
            model_data,
            "--job-name",
            "bc-transform",
            "--instance-type",
            "ml.m5.2xlarge",
            "--instance-count",
            "3",
        ],
        capsys,
    )
    sm = _sm()
    assert sm.describe_model(ModelName="bc-transform")["PrimaryContainer"]["ModelDataUrl"] == (
        model_data
    )
    job = sm.describe_transform_job(TransformJobName="bc-transform")
    assert job["ModelName"] == "bc-transform"
    source = job["TransformInput"]["DataSource"]["S3DataSource"]
    assert (source["S3DataType"], source["S3Uri"]) == ("S3Prefix", f"s3://{BUCKET}/bc/batch/")
    assert job["TransformInput"]["ContentType"] == "image/jpeg"
    assert job["TransformOutput"]["S3OutputPath"] == f"s3://{BUCKET}/bc/transform/bc-transform"
    assert job["TransformOutput"]["Accept"] == "application/json"
    assert job["TransformResources"] == {"InstanceType": "ml.m5.2xlarge", "InstanceCount": 3}
    assert job["BatchStrategy"] == "SingleRecord"


# --------------------------------------------------------------------------- invoke --local


class _Recorder(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((self.path, self.headers["Content-Type"], body))
        answer = json.dumps({"count": len(body) % 6, "bytes": len(body)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args) -> None:
        pass


@pytest.mark.slow
def test_invoke_local_sends_every_photo_of_a_folder(tmp_path: Path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    photos = _photos(3)
    for p in photos:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "notes.txt").write_text("not a photo")
    _Recorder.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        out = _run(["invoke", "--local", url, str(folder)], capsys)
    finally:
        server.shutdown()
        thread.join(5)
    assert [(p, t) for p, t, _ in _Recorder.received] == [("/invocations", "image/jpeg")] * 3
    assert [b for _, _, b in _Recorder.received] == [p.read_bytes() for p in photos]
    for p in photos:
        size = p.stat().st_size
        assert f'{folder / p.name}\t{{"count": {size % 6}, "bytes": {size}}}' in out


def test_invoke_local_unreachable_server_is_a_user_error(tmp_path: Path, capsys):
    photo = _photos(1)[0]
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    port = server.server_port
    server.server_close()  # nothing listens there now
    assert main(["invoke", "--local", f"http://127.0.0.1:{port}", str(photo)]) == 2
    assert "cannot reach" in capsys.readouterr().err


# --------------------------------------------------------------------------- configuration


@pytest.mark.slow
def test_missing_role_says_how_to_set_it(moto_server: RecordingMotoServer, capsys):
    before = len(moto_server.calls("CreateTrainingJob"))
    flags = ["--region", REGION, "--bucket", BUCKET, "--image", IMAGE]
    assert main(["train", *flags, "--data", DATA]) == 2
    err = capsys.readouterr().err
    assert "no SageMaker execution role" in err
    assert "--role" in err and "BINCOUNTER_ROLE_ARN" in err and "aws.toml" in err
    assert main(["train", *flags, "--role", "SageMakerExecution", "--data", DATA]) == 2
    assert "is not an IAM role ARN" in capsys.readouterr().err
    assert len(moto_server.calls("CreateTrainingJob")) == before


@pytest.mark.slow
def test_config_file_supplies_settings(moto_server: RecordingMotoServer, tmp_path: Path, capsys):
    config = tmp_path / "aws.toml"
    config.write_text(
        f'region = "{REGION}"\nrole = "{ROLE}"\nbucket = "{BUCKET}"\n'
        f'image = "{IMAGE}"\nprefix = "fromfile"\n'
    )
    before = len(moto_server.calls("CreateTrainingJob"))
    _run(["train", "--config", str(config), "--base-job-name", "bc-file"], capsys)
    (request,) = moto_server.calls("CreateTrainingJob")[before:]
    assert request["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    uris = {c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]}
    assert all(u.startswith(f"s3://{BUCKET}/fromfile/data/") for u in uris)


def _script_env(server: RecordingMotoServer, **overrides: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BINCOUNTER_")}
    env["AWS_ENDPOINT_URL"] = server.url
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _script(name: str, env: dict[str, str], *argv: str) -> subprocess.CompletedProcess:
    """``scripts/<name>`` run as a person runs it, in its own process."""
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / name), *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_scripts_end_to_end_as_subprocesses(moto_server: RecordingMotoServer, tmp_path: Path):
    """scripts/train_job.py and scripts/deploy.py as a person runs them, configured only by
    the environment; then without a region they fail saying how to set one."""
    env = _script_env(
        moto_server,
        BINCOUNTER_ROLE_ARN=ROLE,
        BINCOUNTER_BUCKET=BUCKET,
        BINCOUNTER_IMAGE_URI=IMAGE,
        BINCOUNTER_S3_PREFIX="sub",
    )
    train = _script(
        "train_job.py", env, "--hp", "epochs=4", "--base-job-name", "bc-subprocess", "--no-test"
    )
    assert train.returncode == 0, train.stderr
    name = next(
        line.split()[2] for line in train.stdout.splitlines() if line.startswith("training job:")
    )
    job = _sm().describe_training_job(TrainingJobName=name)
    assert job["HyperParameters"]["epochs"] == "4"
    assert {c["ChannelName"] for c in job["InputDataConfig"]} == {"train", "validation"}
    artifact = next(
        line.split()[-1] for line in train.stdout.splitlines() if line.startswith("model artifact")
    )
    assert artifact == f"s3://{BUCKET}/sub/output/{name}/output/model.tar.gz"

    deploy = _script("deploy.py", env, "--model-data", artifact, "--name", "bc-sub-endpoint")
    assert deploy.returncode == 0, deploy.stderr
    model = _sm().describe_model(ModelName="bc-sub-endpoint")
    assert model["PrimaryContainer"]["ModelDataUrl"] == artifact

    no_region = _script_env(
        moto_server,
        BINCOUNTER_ROLE_ARN=ROLE,
        BINCOUNTER_BUCKET=BUCKET,
        BINCOUNTER_IMAGE_URI=IMAGE,
        AWS_DEFAULT_REGION=None,
        AWS_REGION=None,
        AWS_CONFIG_FILE=str(tmp_path / "empty_aws_config"),
    )
    (tmp_path / "empty_aws_config").write_text("")
    failed = _script("train_job.py", no_region)
    assert failed.returncode == 2
    assert "no AWS region configured" in failed.stderr
    assert "--region" in failed.stderr and "BINCOUNTER_REGION" in failed.stderr


@pytest.mark.slow
def test_deploy_with_autoscaling_registers_target_tracking_and_delete_removes_it(
    moto_server: RecordingMotoServer, capsys
):
    model_data = f"s3://{BUCKET}/bc/output/job-3/output/model.tar.gz"
    out = _run(
        [
            "deploy",
            *CONFIG_FLAGS,
            "--model-data",
            model_data,
            "--name",
            "bc-scaled",
            "--max-instances",
            "4",
            "--target-invocations",
            "250",
        ],
        capsys,
    )
    assert "autoscaling: 1..4 instances" in out
    resource, target = scalable_target("bc-scaled")
    scaling = boto3.client("application-autoscaling", region_name=REGION)
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 4)
    assert target["ScalableDimension"] == "sagemaker:variant:DesiredInstanceCount"
    (policy,) = scaling.describe_scaling_policies(
        ServiceNamespace="sagemaker", ResourceId=resource
    )["ScalingPolicies"]
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert policy["PolicyType"] == "TargetTrackingScaling"
    assert tracking["TargetValue"] == 250.0
    assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == (
        "SageMakerVariantInvocationsPerInstance"
    )

    out = _run(["delete", *CONFIG_FLAGS, "--name", "bc-scaled"], capsys)
    assert f"deleted autoscaling target {resource}" in out
    assert not scaling.describe_scalable_targets(
        ServiceNamespace="sagemaker", ResourceIds=[resource]
    )["ScalableTargets"]
