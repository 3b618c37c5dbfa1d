"""``bincounter-aws pipeline ...`` and ``bincounter-aws registry ...``: the subcommands of the
pipeline and the Model Registry, registered on ``cli.build_parser``'s subparsers by
``add_commands`` (one call, so the parser module only gains one line).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from ..errors import UserError

TERMINAL = ("Succeeded", "Failed", "Stopped")


def _settings(args: argparse.Namespace) -> Any:
    from .inputs import parse_assignments
    from .pipeline import PARAMETERS, PipelineSettings

    defaults: dict[str, Any] = {}
    for name, text in parse_assignments(args.parameter).items():
        kind = PARAMETERS.get(name, ("string", None))[0]
        try:
            defaults[name] = {"integer": int, "float": float}.get(kind, str)(text)
        except ValueError:
            raise UserError(f"pipeline parameter {name}={text!r} is not a {kind}") from None
        if kind == "boolean":
            defaults[name] = text.lower() in ("1", "true", "yes")
    return PipelineSettings(
        name=args.name,
        group=args.group,
        hyperparameters=parse_assignments(args.hp),
        layout=args.layout,
        resize=args.resize,
        source_uri=args.source_uri,
        parameter_defaults=defaults,
    )


def _pipeline(args: argparse.Namespace, config: Any) -> Any:
    from sagemaker.core.workflow.pipeline_context import PipelineSession

    from .pipeline import build_pipeline

    session = PipelineSession(boto_session=config.boto_session(), default_bucket=config.bucket)
    return build_pipeline(config, _settings(args), session=session)


def cmd_definition(args: argparse.Namespace, config: Any) -> int:
    print(json.dumps(json.loads(_pipeline(args, config).definition()), indent=2))
    return 0


def cmd_upsert(args: argparse.Namespace, config: Any) -> int:
    from .registry import ensure_group

    pipeline = _pipeline(args, config)
    ensure_group(config.boto_session().client("sagemaker"), args.group)
    answer = pipeline.upsert(role_arn=config.require_role(), description="bincounter pipeline")
    print(f"pipeline: {answer['PipelineArn']}")
    return 0


def gate_baseline(config: Any, group: str, margin_accuracy: float, margin_rmse: float) -> dict:
    """The baseline parameters from the group's latest approved package (none: no baseline)."""
    from .registry import latest_approved

    approved = latest_approved(config, group)
    if approved is None or "test_accuracy" not in approved.metrics:
        return {}
    return {
        "BaselineAccuracyFloor": float(approved.metrics["test_accuracy"]) - margin_accuracy,
        "BaselineRmseCeiling": float(approved.metrics["test_rmse"]) + margin_rmse,
    }


def cmd_start(args: argparse.Namespace, config: Any) -> int:
    from .inputs import parse_assignments
    from .pipeline import PARAMETERS

    parameters: dict[str, Any] = dict(parse_assignments(args.parameter))
    unknown = [n for n in parameters if n not in PARAMETERS and not n.startswith("Hp_")]
    if unknown:
        raise UserError(f"unknown pipeline parameter(s) {unknown}; known: {sorted(PARAMETERS)}")
    if not args.plan_uri.startswith("s3://"):
        raise UserError(f"--plan-uri {args.plan_uri!r} must be the s3:// prefix of a plan")
    parameters["PlanUri"] = args.plan_uri
    parameters.update(gate_baseline(config, args.group, args.margin_accuracy, args.margin_rmse))
    client = config.boto_session().client("sagemaker")
    answer = client.start_pipeline_execution(
        PipelineName=args.name,
        PipelineParameters=[{"Name": k, "Value": str(v)} for k, v in parameters.items()],
    )
    print(f"execution: {answer['PipelineExecutionArn']}")
    for name, value in sorted(parameters.items()):
        print(f"  {name} = {value}")
    return 0


def step_table(client: Any, execution_arn: str) -> tuple[str, list[tuple[str, str, str]]]:
    """The execution's status and one (step, status, failure reason) row per step."""
    status = client.describe_pipeline_execution(PipelineExecutionArn=execution_arn)[
        "PipelineExecutionStatus"
    ]
    rows = []
    paginator = client.get_paginator("list_pipeline_execution_steps")
    for page in paginator.paginate(PipelineExecutionArn=execution_arn, SortOrder="Ascending"):
        for step in page.get("PipelineExecutionSteps", []):
            rows.append((step["StepName"], step["StepStatus"], step.get("FailureReason", "")))
    return status, rows


def cmd_status(args: argparse.Namespace, config: Any) -> int:
    client = config.boto_session().client("sagemaker")
    while True:
        status, rows = step_table(client, args.execution)
        if not args.wait or status in TERMINAL:
            break
        time.sleep(args.poll)
    print(f"execution {args.execution}: {status}")
    for name, step_status, reason in rows:
        print(f"  {name:24} {step_status:12} {reason}")
    return 0 if status != "Failed" else 1


def cmd_list(args: argparse.Namespace, config: Any) -> int:
    client = config.boto_session().client("sagemaker")
    for item in client.list_pipeline_executions(PipelineName=args.name).get(
        "PipelineExecutionSummaries", []
    ):
        print(f"{item['PipelineExecutionArn']}\t{item.get('PipelineExecutionStatus', '?')}")
    return 0


def cmd_packages(args: argparse.Namespace, config: Any) -> int:
    from .registry import list_packages

    for p in list_packages(config, args.group, args.approval):
        metrics = " ".join(f"{k}={v}" for k, v in sorted(p.metrics.items()))
        print(f"{p.version}\t{p.approval}\t{p.arn}\t{metrics}")
    return 0


def cmd_approval(args: argparse.Namespace, config: Any) -> int:
    from .registry import set_approval

    status = "Approved" if args.registry_command == "approve" else "Rejected"
    summary = set_approval(config, args.arn, status, args.description)
    print(f"{summary.arn}: {summary.approval}")
    return 0


def cmd_register(args: argparse.Namespace, config: Any) -> int:
    from .registry import register_from_evaluation

    arn = register_from_evaluation(
        config, args.group, args.model_data, args.evaluation, approval=args.approval
    )
    print(f"model package: {arn}")
    return 0


def _with_config(func: Any, resolve: Any) -> Any:
    return lambda args: func(args, resolve(args))


def add_commands(sub: Any, config_parent: argparse.ArgumentParser, resolve: Any) -> None:
    """``pipeline`` and ``registry`` command groups; ``resolve(args)`` gives the AwsConfig."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--name", default="bincounter", help="pipeline name")
    common.add_argument("--group", default="bincounter", help="model package group")
    define = argparse.ArgumentParser(add_help=False)
    define.add_argument("--hp", action="append", metavar="NAME=VALUE", help="hyperparameter")
    define.add_argument(
        "--parameter", action="append", metavar="NAME=VALUE", help="pipeline parameter default"
    )
    define.add_argument("--layout", choices=["folders", "shards"], default="folders")
    define.add_argument("--resize", type=int)
    define.add_argument("--source-uri", help="S3 prefix of photos in ABID layout (else the bucket)")

    pipeline = sub.add_parser("pipeline", help="SageMaker Pipeline: prepare->train->gate->register")
    psub = pipeline.add_subparsers(dest="pipeline_command", required=True)
    for name, func, parents, text in (
        ("definition", cmd_definition, [define], "print the pipeline definition JSON"),
        ("upsert", cmd_upsert, [define], "create or update the pipeline (and the group)"),
    ):
        p = psub.add_parser(name, parents=[config_parent, common, *parents], help=text)
        p.set_defaults(func=_with_config(func, resolve))
    p = psub.add_parser("start", parents=[config_parent, common], help="start an execution")
    p.add_argument("--plan-uri", required=True, help="s3:// prefix of the plan parts")
    p.add_argument("--parameter", action="append", metavar="NAME=VALUE")
    p.add_argument("--margin-accuracy", type=float, default=0.01, help="vs. latest approved")
    p.add_argument("--margin-rmse", type=float, default=0.05, help="vs. latest approved")
    p.set_defaults(func=_with_config(cmd_start, resolve))
    for name, wait in (("status", False), ("wait", True)):
        p = psub.add_parser(name, parents=[config_parent], help="per-step table")
        p.add_argument("--execution", required=True, help="execution ARN")
        p.add_argument("--poll", type=float, default=60.0)
        p.set_defaults(func=_with_config(cmd_status, resolve), wait=wait)
    p = psub.add_parser("list", parents=[config_parent, common], help="executions")
    p.set_defaults(func=_with_config(cmd_list, resolve))

    registry = sub.add_parser("registry", help="Model Registry: list, approve, reject, register")
    rsub = registry.add_subparsers(dest="registry_command", required=True)
    p = rsub.add_parser("list", parents=[config_parent, common], help="packages with metrics")
    p.add_argument("--approval", choices=["PendingManualApproval", "Approved", "Rejected"])
    p.set_defaults(func=_with_config(cmd_packages, resolve))
    for name in ("approve", "reject"):
        p = rsub.add_parser(name, parents=[config_parent], help=f"{name} one package")
        p.add_argument("arn")
        p.add_argument("--description", default="", help="why (kept with the package)")
        p.set_defaults(func=_with_config(cmd_approval, resolve))
    p = rsub.add_parser("register", parents=[config_parent, common], help="register a model")
    p.add_argument("--model-data", required=True, help="s3://.../model.tar.gz")
    p.add_argument("--evaluation", required=True, help="s3:// folder of evaluation.json")
    p.add_argument("--approval", default="PendingManualApproval")
    p.set_defaults(func=_with_config(cmd_register, resolve))


def model_package_flag(*parsers: argparse.ArgumentParser) -> None:
    """``--model-package ARN|latest:GROUP`` on ``deploy`` and ``transform``."""
    for parser in parsers:
        parser.add_argument(
            "--model-package",
            metavar="ARN|latest:GROUP",
            help="deploy an approved model package (or the newest approved in GROUP) "
            "instead of --model-data",
        )


def resolving_model_package(func: Any, resolve: Any) -> Any:
    """Wrap a command so ``--model-package`` becomes ``--model-data`` (and the image) first."""

    def run(args: argparse.Namespace) -> int:
        reference = getattr(args, "model_package", None)
        if reference:
            if getattr(args, "model_data", None):
                raise UserError("give --model-data or --model-package, not both")
            from .registry import resolve_package

            package = resolve_package(resolve(args), reference)
            args.model_data = package.model_data
            args.image = args.image or package.image
        elif args.command == "deploy" and not args.model_data:
            raise UserError("give --model-data s3://.../model.tar.gz or --model-package")
        return func(args)

    return run
