"""``bincounter-aws`` hosting commands: deploy (cloud or local), delete, invoke, transform."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from ..errors import LaunchError, LocalModeError, UserError
from ..serving import parameters
from .asynchronous import AsyncSettings
from .cli_shared import SettingFlag, add_flags, config_from_args, local_image, settings_from_args
from .endpoints import DeploySettings
from .inputs import parse_assignments
from .local import LOCAL_ENDPOINT, LOCAL_PORT
from .serverless import ServerlessSettings
from .transform import TransformSettings

# ---- model packages: ``--model-package`` (the registry) instead of ``--model-data``
MODEL_PACKAGE = SettingFlag(
    "--model-package",
    None,
    {
        "metavar": "ARN|latest:GROUP",
        "help": "an approved model package, or the newest approved in GROUP (registry list), "
        "instead of --model-data",
    },
)


def resolve_model_source(args: argparse.Namespace, *, alternatives: str = "") -> None:
    """Turn ``--model-package`` into ``args.model_data`` (and the package's image unless
    ``--image`` names one); exactly one model source, else a clear error."""
    given = [f for f in ("model_data", "model_package", "model_name") if getattr(args, f, None)]
    flags = "--model-data or --model-package" + (f" or {alternatives}" if alternatives else "")
    if len(given) != 1:
        raise UserError(f"give one of {flags}" + (f" (got {len(given)})" if given else ""))
    if not args.model_package:
        return
    if getattr(args, "local", False):
        raise UserError("--local serves a model.tar.gz on this machine: give --model-data PATH")
    from .registry import resolve_package

    package = resolve_package(config_from_args(args), args.model_package)
    args.model_data = package.model_data
    args.image = args.image or package.image


WAIT = SettingFlag("--wait", None, {"action": argparse.BooleanOptionalAction, "default": True})

DEPLOY_FLAGS = (
    SettingFlag("--model-data", None, {"help": "s3://.../model.tar.gz (local: a path)"}),
    SettingFlag("--name", "name", {"help": "endpoint/config/model name (default timestamped)"}),
    SettingFlag("--instance-type", "instance_type"),
    SettingFlag("--instance-count", "instance_count", {"type": int}),
    SettingFlag(
        "--startup-timeout",
        "startup_health_check_timeout",
        {"type": int, "help": "health-check timeout s"},
    ),
    SettingFlag(
        "--data-capture",
        "data_capture_uri",
        {"metavar": "S3_URI", "help": "capture requests/responses here"},
    ),
    SettingFlag("--capture-percent", "data_capture_percent", {"type": int}),
    SettingFlag(
        "--max-instances", "max_instances", {"type": int, "help": "autoscale up to N instances"}
    ),
    SettingFlag(
        "--target-invocations",
        "target_invocations_per_instance",
        {"type": float, "help": "per instance/min"},
    ),
    SettingFlag(
        "--env",
        "environment",
        {"action": "append", "metavar": "KEY=VALUE", "help": "serving environment"},
        parse_assignments,
    ),
    MODEL_PACKAGE,
    WAIT,
    SettingFlag(
        "--local", None, {"action": "store_true", "help": "serve locally with SDK local mode"}
    ),
    SettingFlag("--port", None, {"type": int, "default": LOCAL_PORT, "help": "local mode port"}),
)

# ---- serverless and asynchronous endpoints
SERVERLESS_FLAGS = (
    SettingFlag(
        "--memory", "memory_mb", {"type": int, "metavar": "MB", "help": "1024..6144, 1 GB steps"}
    ),
    SettingFlag("--max-concurrency", "max_concurrency", {"type": int, "help": "1..200"}),
)
ASYNC_FLAGS = (
    SettingFlag("--output", "output_uri", {"metavar": "S3_URI", "help": "answers land here"}),
    SettingFlag(
        "--failure-output",
        "failure_uri",
        {"metavar": "S3_URI", "help": "default <output>/failures"},
    ),
    SettingFlag("--sns-success", "sns_success", {"metavar": "ARN"}),
    SettingFlag("--sns-error", "sns_error", {"metavar": "ARN"}),
    SettingFlag(
        "--max-concurrent-invocations",
        "max_concurrent_invocations",
        {"type": int, "help": "requests per instance at once, 1..1000 (default: SageMaker's)"},
    ),
    SettingFlag(
        "--min-instances",
        "min_instances",
        {"type": int, "help": "autoscaling floor with --max-instances (0: scale to zero)"},
    ),
    SettingFlag(
        "--target-backlog", "target_backlog", {"type": float, "help": "queued requests/instance"}
    ),
)


def _mode_settings(
    cls: Any, args: argparse.Namespace, flags: tuple[SettingFlag, ...], on: bool, mode: str
) -> Any:
    """The mode's settings when its flag is given; its flags without it are an error."""
    settings = settings_from_args(cls, args, flags)
    if on:
        return settings
    defaults = cls()
    for flag in flags:
        if getattr(settings, str(flag.field)) != getattr(defaults, str(flag.field)):
            raise LaunchError(f"{flag.flag} applies to {mode} endpoints only: add {mode}")
    return None


def deploy_modes(
    args: argparse.Namespace,
) -> tuple[ServerlessSettings | None, AsyncSettings | None]:
    serverless = _mode_settings(
        ServerlessSettings, args, SERVERLESS_FLAGS, args.serverless, "--serverless"
    )
    asynchronous = _mode_settings(AsyncSettings, args, ASYNC_FLAGS, args.asynchronous, "--async")
    if args.local and (serverless or asynchronous):
        raise LocalModeError(
            "--local serves a real-time container only: serverless and asynchronous endpoints "
            f"exist on SageMaker alone (locally, --env {parameters.MAX_PAYLOAD_IN_MB}=4 gives "
            "the serverless body limit)"
        )
    return serverless, asynchronous


def add_mode_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("serverless endpoint (CPU, pay per use)")
    g.add_argument("--serverless", action="store_true", help="serverless endpoint")
    add_flags(g, ServerlessSettings, SERVERLESS_FLAGS)
    g = p.add_argument_group("asynchronous endpoint (queued, S3 bodies, scale to zero)")
    g.add_argument("--async", dest="asynchronous", action="store_true", help="async endpoint")
    add_flags(g, AsyncSettings, ASYNC_FLAGS)


def _print_scaling(args: argparse.Namespace, asynchronous: AsyncSettings | None) -> None:
    if asynchronous is not None:
        print(
            f"autoscaling: {asynchronous.min_instances}..{args.max_instances} instances on "
            f"ApproximateBacklogSizePerInstance {asynchronous.target_backlog:g}"
            + (" (scales to zero)" if asynchronous.min_instances == 0 else "")
        )
    else:
        print(f"autoscaling: {args.instance_count}..{args.max_instances} instances")


def invoke_async_command(args: argparse.Namespace) -> int:
    from .invoke_async import invoke_async

    if not args.endpoint:
        raise UserError("give --endpoint NAME of an asynchronous endpoint")
    names = ("input_location", "input_prefix", "wait_timeout", "invocation_timeout")
    options = {name: getattr(args, name) for name in names}
    config = config_from_args(args)
    answer = invoke_async(config, args.endpoint, args.paths, poll_interval=args.poll, **options)
    print(f"inference {answer.inference_id}: input {answer.input_location}")
    where = answer.failure_location if answer.failed else answer.output_location
    print(f"{'failure' if answer.failed else 'output'} {where}")
    decoded = answer.decoded()
    print(decoded if isinstance(decoded, str) else json.dumps(decoded))
    return 1 if answer.failed else 0


def add_invoke_async_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("asynchronous endpoints")
    g.add_argument("--async", dest="asynchronous", action="store_true", help="async endpoint")
    g.add_argument("--input-location", metavar="S3_URI", help="a body already in S3")
    g.add_argument(
        "--input-prefix", metavar="S3_URI", help="upload here (default .../async-input/<endpoint>)"
    )
    g.add_argument("--wait-timeout", type=float, default=900.0, help="seconds to wait (900)")
    g.add_argument("--poll", type=float, default=5.0, help="seconds between S3 polls (5)")
    g.add_argument("--invocation-timeout", type=int, help="1..3600 s (SageMaker default 900)")


TRANSFORM_FLAGS = (
    SettingFlag("--input", None, {"required": True, "help": "s3:// prefix of photos"}),
    SettingFlag("--model-name", None, {"help": "existing SageMaker model (e.g. from deploy)"}),
    SettingFlag("--model-data", None, {"help": "or s3://.../model.tar.gz to create one"}),
    MODEL_PACKAGE,
    SettingFlag("--output", None, {"help": "S3 prefix for answers (default .../transform/<job>)"}),
    SettingFlag("--instance-type", "instance_type"),
    SettingFlag("--instance-count", "instance_count", {"type": int}),
    SettingFlag("--job-name"),
    SettingFlag(
        "--env", "environment", {"action": "append", "metavar": "KEY=VALUE"}, parse_assignments
    ),
    WAIT,
)


def _serve_locally(args: argparse.Namespace, settings: DeploySettings) -> int:
    """Serve until Ctrl-C, then remove the local endpoint."""
    from .local import local_deploy

    config = config_from_args(args)
    endpoint = local_deploy(
        local_image(args, config),
        args.model_data,
        name=args.name or LOCAL_ENDPOINT,
        port=args.port,
        environment=settings.environment,
    )
    print(f"local endpoint {endpoint.name} serving at {endpoint.url} (Ctrl-C stops it)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        endpoint.delete()
        print("stopped")
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    resolve_model_source(args)
    settings = settings_from_args(DeploySettings, args, DEPLOY_FLAGS)
    serverless, asynchronous = deploy_modes(args)
    if args.local:
        return _serve_locally(args, settings)

    from .endpoints import deploy

    deployment = deploy(
        config_from_args(args),
        args.model_data,
        settings,
        wait=args.wait,
        serverless=serverless,
        asynchronous=asynchronous,
    )
    print(f"endpoint: {deployment.endpoint_name} ({deployment.status})")
    if deployment.autoscaling:
        _print_scaling(args, asynchronous)
    print(f"delete with: bincounter-aws delete --name {deployment.endpoint_name}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from .endpoints import delete

    for item in delete(config_from_args(args), args.name, keep_model=args.keep_model):
        print(f"deleted {item}")
    return 0


def cmd_invoke(args: argparse.Namespace) -> int:
    from .invoke import invoke_endpoint, invoke_local

    if args.asynchronous:
        return invoke_async_command(args)
    if not args.paths:
        raise UserError("give photos or folders of photos to send")
    if args.local:
        answers = invoke_local(args.local, args.paths)
    else:
        if not args.endpoint:
            raise UserError("give --endpoint NAME (or --local URL for a local server)")
        answers = invoke_endpoint(config_from_args(args), args.endpoint, args.paths)
    failures = 0
    for path, answer in answers:
        print(f"{path}\t{json.dumps(answer) if not isinstance(answer, str) else answer}")
        failures += isinstance(answer, dict) and "error" in answer
    return 1 if failures else 0


def cmd_transform(args: argparse.Namespace) -> int:
    from .transform import transform

    resolve_model_source(args, alternatives="--model-name")
    config = config_from_args(args)
    launch = transform(
        config,
        args.input,
        settings_from_args(TransformSettings, args, TRANSFORM_FLAGS),
        model_name=args.model_name,
        model_data=args.model_data,
        output_uri=args.output,
        job_name=args.job_name,
        wait=args.wait,
    )
    print(f"transform job: {launch.job_name} ({launch.status}) model {launch.model_name}")
    print(f"output: {launch.output_uri}")
    return 0


def add_parsers(sub: Any, config: argparse.ArgumentParser) -> None:
    """The hosting group's subcommands, each with the configuration flags of ``config``."""
    p = sub.add_parser("deploy", parents=[config], help="real-time endpoint")
    add_flags(p, DeploySettings, DEPLOY_FLAGS)
    add_mode_flags(p)
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("delete", parents=[config], help="delete endpoint, config and model")
    p.add_argument("--name", required=True)
    p.add_argument("--keep-model", action="store_true")
    p.set_defaults(func=cmd_delete)

    p = sub.add_parser("invoke", parents=[config], help="send photos to an endpoint")
    p.add_argument("paths", nargs="*", help="photos or folders of photos (--async: or a .json)")
    p.add_argument("--endpoint", help="SageMaker endpoint name")
    p.add_argument("--local", metavar="URL", help="local server, e.g. http://localhost:8080")
    add_invoke_async_flags(p)
    p.set_defaults(func=cmd_invoke)

    p = sub.add_parser("transform", parents=[config], help="batch transform over S3 photos")
    add_flags(p, TransformSettings, TRANSFORM_FLAGS)
    p.set_defaults(func=cmd_transform)
