"""Serverless and asynchronous endpoints (issue 24): the limits refused before any request, the
CreateModel / CreateEndpointConfig requests the moto server recorded, async scale to zero, and
``invoke --async``'s upload, invocation and S3 polling against the same server."""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import urllib.request
from pathlib import Path

import boto3
import pytest

from bincounter.aws.asynchronous import AsyncSettings
from bincounter.aws.cli import main
from bincounter.aws.config import AwsConfig
from bincounter.aws.endpoints import DeploySettings, check_modes
from bincounter.aws.invoke_async import wait_for_answer
from bincounter.aws.serverless import ServerlessSettings, check_serverless
from bincounter.errors import LaunchError
from bincounter.serving.config import ServingConfig

from .conftest import BUCKET, IMAGE, REGION
from .motoserver import RecordingMotoServer
from .test_launch import CONFIG_FLAGS, _photos, _run, scalable_target

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

MODEL_DATA = f"s3://{BUCKET}/bc/output/job-9/output/model.tar.gz"
SNS_OK = "arn:aws:sns:us-east-1:123456789012:bincounter-ok"
SNS_BAD = "arn:aws:sns:us-east-1:123456789012:bincounter-bad"


# --------------------------------------------------------------------------- limits, no AWS


@pytest.mark.parametrize(
    ("serverless", "deploy", "fragment"),
    [
        (ServerlessSettings(), DeploySettings(), "serverless needs --memory MB: one of 1024"),
        (ServerlessSettings(512), DeploySettings(), "allowed 1024..6144 MB in 1024 MB steps"),
        (ServerlessSettings(1536), DeploySettings(), "allowed 1024..6144 MB in 1024 MB steps"),
        (ServerlessSettings(7168), DeploySettings(), "allowed 1024..6144 MB in 1024 MB steps"),
        (ServerlessSettings(2048, 0), DeploySettings(), "max concurrency 0: allowed 1..200"),
        (ServerlessSettings(2048, 201), DeploySettings(), "max concurrency 201: allowed 1..200"),
        (
            ServerlessSettings(2048),
            DeploySettings(instance_type="ml.g4dn.xlarge"),
            "ml.g4dn.xlarge: serverless endpoints run on CPU only",
        ),
        (
            ServerlessSettings(2048),
            DeploySettings(instance_type="ml.p3.2xlarge"),
            "run on CPU only",
        ),
        (
            ServerlessSettings(2048),
            DeploySettings(environment={"BINCOUNTER_ENGINE": "cuda"}),
            "BINCOUNTER_ENGINE=cuda: serverless endpoints run on CPU only",
        ),
        (
            ServerlessSettings(2048),
            DeploySettings(instance_type="ml.c5.large"),
            "do not support --instance-type",
        ),
        (ServerlessSettings(2048), DeploySettings(instance_count=2), "--instance-count"),
        (ServerlessSettings(2048), DeploySettings(max_instances=3), "no instance autoscaling"),
        (
            ServerlessSettings(2048),
            DeploySettings(data_capture_uri="s3://b/capture"),
            "no data capture / Model Monitor on serverless",
        ),
        (
            ServerlessSettings(2048),
            DeploySettings(startup_health_check_timeout=900),
            "fixed at 3 minutes",
        ),
        (
            ServerlessSettings(2048),
            DeploySettings(environment={"SAGEMAKER_MAX_PAYLOAD_IN_MB": "6"}),
            "serverless bodies are limited to 4 MB",
        ),
    ],
)
def test_serverless_refusals_name_the_limit(serverless, deploy, fragment):
    with pytest.raises(LaunchError, match=fragment.replace(".", r"\.").replace("(", r"\(")):
        check_serverless(serverless, deploy, DeploySettings())


@pytest.mark.parametrize("memory", [1024, 2048, 3072, 4096, 5120, 6144])
def test_serverless_memory_sizes_accepted(memory):
    check_serverless(ServerlessSettings(memory, 200), DeploySettings(), DeploySettings())
    check_serverless(ServerlessSettings(memory, 1), DeploySettings(), DeploySettings())


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        (AsyncSettings(), "need --output s3://"),
        (AsyncSettings(output_uri="bucket/out"), "output 'bucket/out' must be an s3:// URI"),
        (
            AsyncSettings(output_uri="s3://b/out", failure_uri="/tmp/f"),
            "failure output '/tmp/f' must be an s3:// URI",
        ),
        (AsyncSettings(output_uri="s3://b/o", sns_success="topic"), "--sns-success 'topic'"),
        (AsyncSettings(output_uri="s3://b/o", sns_error="arn:aws:sqs:x"), "--sns-error"),
        (
            AsyncSettings(output_uri="s3://b/o", max_concurrent_invocations=1001),
            "per instance 1001: allowed 1..1000",
        ),
        (AsyncSettings(output_uri="s3://b/o", min_instances=-1), "allowed >= 0"),
        (AsyncSettings(output_uri="s3://b/o", target_backlog=0), "must be > 0"),
    ],
)
def test_async_refusals_name_the_limit(settings, fragment):
    with pytest.raises(LaunchError, match=fragment.replace("(", r"\(").replace(".", r"\.")):
        settings.check()


def test_serverless_and_async_together_refused():
    both = (ServerlessSettings(2048), AsyncSettings(output_uri="s3://b/o"))
    with pytest.raises(LaunchError, match="either serverless or asynchronous, not both"):
        check_modes(AwsConfig(), DeploySettings(), *both)


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--memory", "2048"], "--memory applies to --serverless endpoints only"),
        (["--output", "s3://b/o"], "--output applies to --async endpoints only"),
        (["--min-instances", "1"], "--min-instances applies to --async endpoints only"),
        (
            ["--serverless", "--memory", "2048", "--local"],
            "--local serves a real-time container only",
        ),
        (["--async", "--output", "s3://b/o", "--local"], "--local serves a real-time container"),
    ],
)
def test_mode_flags_refused_before_any_request(argv, fragment, capsys):
    assert main(["deploy", "--model-data", "model.tar.gz", *argv]) == 2
    assert fragment in capsys.readouterr().err


def test_mode_environments_are_what_the_server_reads():
    """The variable names the launch side sets are the ones serving's config reads."""
    from bincounter.aws.asynchronous import ASYNC_ENVIRONMENT
    from bincounter.aws.serverless import SERVERLESS_ENVIRONMENT

    serverless = ServingConfig.from_environment(SERVERLESS_ENVIRONMENT)
    assert (serverless.max_payload_mb, serverless.timeout) == (4.0, 60)
    asynchronous = ServingConfig.from_environment(ASYNC_ENVIRONMENT)
    assert asynchronous.max_payload_mb == 64.0
    assert asynchronous.timeout == 3600
    assert asynchronous.max_instances == 1000


# --------------------------------------------------------------------------- serverless, moto


def _push_fake_image(repository: str, tag: str, size: int) -> str:
    """An ECR image whose size moto reports as ``size`` (moto reads the manifest's config)."""
    ecr = boto3.client("ecr", region_name=REGION)
    with contextlib.suppress(ecr.exceptions.RepositoryAlreadyExistsException):
        ecr.create_repository(repositoryName=repository)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": size},
        "layers": [{"digest": "sha256:" + f"{size:064x}"[-64:], "size": size}],
    }
    ecr.put_image(repositoryName=repository, imageManifest=json.dumps(manifest), imageTag=tag)
    return f"123456789012.dkr.ecr.{REGION}.amazonaws.com/{repository}:{tag}"


@pytest.mark.slow
def test_serverless_deploy_request(moto_server: RecordingMotoServer, capsys):
    image = _push_fake_image("bincounter-slim", "serverless", 700 * 1024**2)
    flags = [*CONFIG_FLAGS, "--image", image, "--model-data", MODEL_DATA]
    before = len(moto_server.calls("CreateEndpointConfig"))
    mode = ["--serverless", "--memory", "3072", "--max-concurrency", "12"]
    out = _run(["deploy", *flags, "--name", "bc-serverless", *mode], capsys)
    assert "endpoint: bc-serverless (InService)" in out
    (request,) = moto_server.calls("CreateEndpointConfig")[before:]
    assert request["ProductionVariants"] == [
        {
            "VariantName": "AllTraffic",
            "ModelName": "bc-serverless",
            "ServerlessConfig": {"MemorySizeInMB": 3072, "MaxConcurrency": 12},
        }
    ]
    assert "DataCaptureConfig" not in request and "AsyncInferenceConfig" not in request
    (model,) = [m for m in moto_server.calls("CreateModel") if m["ModelName"] == "bc-serverless"]
    environment = model["PrimaryContainer"]["Environment"]
    assert environment == {
        "SAGEMAKER_MAX_PAYLOAD_IN_MB": "4",
        "SAGEMAKER_MODEL_SERVER_TIMEOUT": "60",
    }
    assert ServingConfig.from_environment(environment).max_payload_bytes == 4 * 1024 * 1024
    stored = boto3.client("sagemaker", region_name=REGION).describe_endpoint_config(
        EndpointConfigName="bc-serverless"
    )
    assert stored["ProductionVariants"][0]["ServerlessConfig"]["MemorySizeInMB"] == 3072


@pytest.mark.slow
def test_serverless_image_over_10_gb_or_missing_is_refused_before_any_request(
    moto_server: RecordingMotoServer, capsys
):
    big = _push_fake_image("bincounter", "huge", 11 * 1024**3)
    missing = f"123456789012.dkr.ecr.{REGION}.amazonaws.com/nothing-here:1"
    before = len(moto_server.calls("CreateModel"))
    cases = (
        (big, "11.00 GB compressed in ECR: serverless images are limited to 10 GB"),
        (missing, "is not in ECR (RepositoryNotFoundException): push it first"),
    )
    for image, fragment in cases:
        argv = ["deploy", *CONFIG_FLAGS, "--image", image, "--model-data", MODEL_DATA]
        assert main([*argv, "--serverless", "--memory", "2048"]) == 2
        assert fragment in capsys.readouterr().err
    assert len(moto_server.calls("CreateModel")) == before


# --------------------------------------------------------------------------- async, moto


def _async_deploy(name: str, capsys, *extra: str) -> str:
    output = f"s3://{BUCKET}/bc/async-out/{name}"
    flags = ["--model-data", MODEL_DATA, "--name", name, "--async", "--output", output]
    return _run(["deploy", *CONFIG_FLAGS, *flags, *extra], capsys)


@pytest.mark.slow
def test_async_deploy_request_scale_to_zero_and_delete(moto_server: RecordingMotoServer, capsys):
    before = len(moto_server.calls("CreateEndpointConfig"))
    out = _async_deploy(
        "bc-async",
        capsys,
        *["--sns-success", SNS_OK, "--sns-error", SNS_BAD],
        *["--max-concurrent-invocations", "4", "--max-instances", "3"],
        *["--instance-type", "ml.c5.xlarge"],
    )
    assert (
        "autoscaling: 0..3 instances on ApproximateBacklogSizePerInstance 5 (scales to zero)" in out
    )
    (request,) = moto_server.calls("CreateEndpointConfig")[before:]
    assert request["AsyncInferenceConfig"] == {
        "OutputConfig": {
            "S3OutputPath": f"s3://{BUCKET}/bc/async-out/bc-async",
            "S3FailurePath": f"s3://{BUCKET}/bc/async-out/bc-async/failures",
            "NotificationConfig": {"SuccessTopic": SNS_OK, "ErrorTopic": SNS_BAD},
        },
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 4},
    }
    (variant,) = request["ProductionVariants"]
    assert (variant["InstanceType"], variant["InitialInstanceCount"]) == ("ml.c5.xlarge", 1)
    (model,) = [m for m in moto_server.calls("CreateModel") if m["ModelName"] == "bc-async"]
    served = ServingConfig.from_environment(model["PrimaryContainer"]["Environment"])
    assert (served.max_payload_mb, served.max_instances, served.timeout) == (64.0, 1000, 3600)

    resource, target = scalable_target("bc-async")
    scaling = boto3.client("application-autoscaling", region_name=REGION)
    assert (target["MinCapacity"], target["MaxCapacity"]) == (0, 3)
    policies = {
        p["PolicyName"]: p
        for p in scaling.describe_scaling_policies(
            ServiceNamespace="sagemaker", ResourceId=resource
        )["ScalingPolicies"]
    }
    tracking = policies["bc-async-backlog"]["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["TargetValue"] == 5.0
    assert tracking["CustomizedMetricSpecification"] == {
        "MetricName": "ApproximateBacklogSizePerInstance",
        "Namespace": "AWS/SageMaker",
        "Dimensions": [{"Name": "EndpointName", "Value": "bc-async"}],
        "Statistic": "Average",
    }
    step = policies["bc-async-from-zero"]
    assert step["StepScalingPolicyConfiguration"]["StepAdjustments"] == [
        {"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": 1}
    ]
    cloudwatch = boto3.client("cloudwatch", region_name=REGION)
    (alarm,) = cloudwatch.describe_alarms(AlarmNames=["bc-async-has-backlog-without-capacity"])[
        "MetricAlarms"
    ]
    assert alarm["MetricName"] == "HasBacklogWithoutCapacity"
    assert alarm["AlarmActions"] == [step["PolicyARN"]]

    out = _run(["delete", *CONFIG_FLAGS, "--name", "bc-async"], capsys)
    assert "deleted alarm bc-async-has-backlog-without-capacity" in out
    assert f"deleted autoscaling target {resource}" in out
    assert not cloudwatch.describe_alarms(AlarmNames=["bc-async-has-backlog-without-capacity"])[
        "MetricAlarms"
    ]


def _queue_moto_async_result(server: RecordingMotoServer, data: str, failure: bool) -> None:
    """moto's own switch for what its next InvokeEndpointAsync writes (its moto-api)."""
    request = urllib.request.Request(
        f"{server.url}/moto-api/static/sagemaker/async-endpoint-results",
        data=json.dumps({"results": [{"is_failure": failure, "data": data}]}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 201 or response.status == 200


@pytest.mark.slow
def test_invoke_async_uploads_invokes_and_prints_the_output(
    moto_server: RecordingMotoServer, capsys, tmp_path: Path
):
    _async_deploy("bc-async-io", capsys)
    s3 = boto3.client("s3", region_name=REGION)
    photos = _photos(3)
    before = len(moto_server.calls("InvokeEndpointAsync"))
    invoke = ["invoke", *CONFIG_FLAGS, "--async", "--endpoint", "bc-async-io", "--poll", "0.05"]
    out = _run([*invoke, *map(str, photos)], capsys)
    (call,) = [r for r in moto_server.records if r.action == "InvokeEndpointAsync"][before:]
    location = call.headers["x-amzn-sagemaker-inputlocation"]
    assert location.startswith(f"s3://{BUCKET}/bc/async-input/bc-async-io/")
    assert location.endswith(".json")
    assert call.headers["x-amzn-sagemaker-content-type"] == "application/json"
    assert call.path == "/endpoints/bc-async-io/async-invocations"
    key = location.split("/", 3)[3]
    uploaded = json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    assert [base64.b64decode(i["b64"]) for i in uploaded["instances"]] == [
        p.read_bytes() for p in photos
    ]
    assert "inference " in out and f"input {location}" in out
    assert out.strip().endswith('{"default": "response"}')  # moto's answer, read from S3

    # A failure lands at the failure location: printed, exit status 1.
    _queue_moto_async_result(moto_server, "model failed: bad photo", failure=True)
    assert main([*invoke, str(photos[0])]) == 1
    captured = capsys.readouterr().out
    assert "failure s3://" in captured and "model failed: bad photo" in captured

    # A body already in S3 is sent by reference, with its photo content type.
    s3.put_object(Bucket=BUCKET, Key="bc/incoming/one.jpg", Body=photos[1].read_bytes())
    before = len(moto_server.calls("InvokeEndpointAsync"))
    _run([*invoke, "--input-location", f"s3://{BUCKET}/bc/incoming/one.jpg"], capsys)
    (call,) = [r for r in moto_server.records if r.action == "InvokeEndpointAsync"][before:]
    assert call.headers["x-amzn-sagemaker-inputlocation"] == f"s3://{BUCKET}/bc/incoming/one.jpg"
    assert call.headers["x-amzn-sagemaker-content-type"] == "image/jpeg"


@pytest.mark.slow
def test_invoke_async_refusals_before_any_upload(moto_server: RecordingMotoServer, capsys):
    sm = boto3.client("sagemaker", region_name=REGION)
    sm.create_model(
        ModelName="bc-realtime-only",
        PrimaryContainer={"Image": IMAGE, "ModelDataUrl": MODEL_DATA},
        ExecutionRoleArn="arn:aws:iam::123456789012:role/SageMakerExecution",
    )
    sm.create_endpoint_config(
        EndpointConfigName="bc-realtime-only",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "bc-realtime-only",
                "InstanceType": "ml.m5.xlarge",
                "InitialInstanceCount": 1,
            }
        ],
    )
    sm.create_endpoint(EndpointName="bc-realtime-only", EndpointConfigName="bc-realtime-only")
    _async_deploy("bc-async-tiny", capsys, "--env", "SAGEMAKER_MAX_PAYLOAD_IN_MB=0.001")
    photo = str(_photos(1)[0])
    before = len(moto_server.calls("InvokeEndpointAsync"))
    cases = [
        ("bc-realtime-only", [photo], "is not asynchronous (deploy it with --async"),
        ("bc-nowhere", [photo], "endpoint 'bc-nowhere' not found"),
        (
            "bc-async-tiny",
            [photo],
            "container accepts up to 0.001 MB (SAGEMAKER_MAX_PAYLOAD_IN_MB)",
        ),
        ("bc-async-tiny", [], "give either local files to upload or --input-location"),
        ("bc-async-tiny", [photo, "--invocation-timeout", "3601"], "allowed 1..3600"),
    ]
    for endpoint, argv, fragment in cases:
        assert main(["invoke", *CONFIG_FLAGS, "--async", "--endpoint", endpoint, *argv]) == 2
        assert fragment in capsys.readouterr().err
    assert len(moto_server.calls("InvokeEndpointAsync")) == before
    listed = boto3.client("s3", region_name=REGION).list_objects_v2(
        Bucket=BUCKET, Prefix="bc/async-input/bc-async-tiny/"
    )
    assert listed.get("KeyCount", 0) == 0


@pytest.mark.slow
def test_wait_for_answer_polls_until_the_output_appears(moto_server: RecordingMotoServer):
    s3 = boto3.client("s3", region_name=REGION)
    key = "bc/async-out/late/abc.out"

    def answer_once_polled() -> None:
        if moto_server.wait_seen("GET", f"/{BUCKET}/{key}"):
            s3.put_object(Bucket=BUCKET, Key=key, Body=b'{"count": 4}')

    writer = threading.Thread(target=answer_once_polled)
    writer.start()
    failed, body = wait_for_answer(
        s3,
        f"s3://{BUCKET}/{key}",
        f"s3://{BUCKET}/bc/async-out/late/failures/abc-error.out",
        timeout=60,
        interval=0.05,
    )
    writer.join(30)
    assert (failed, json.loads(body)) == (False, {"count": 4})
    with pytest.raises(LaunchError, match=r"no answer at s3://.* within 0\.2 s"):
        wait_for_answer(s3, f"s3://{BUCKET}/bc/nothing.out", None, timeout=0.2, interval=0.05)
