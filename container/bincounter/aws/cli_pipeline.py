"""``bincounter-aws`` pipeline and registry commands: the SageMaker Pipeline (definition,
upsert, start, status/wait with a per-step table, list) and the Model Registry (list, approve,
reject, register). ``--model-package`` on deploy/transform is ``cli_hosting``'s.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time
from typing import Any

from ..errors import UserError
from .cli_jobs import TUNING_FLAGS
from .cli_shared import SettingFlag, add_flags, config_from_args, settings_from_args
from .config import AwsConfig
from .inputs import parse_assignments
from .jobs import TuningSettings
from .pipeline import PARAMETERS, PipelineSettings
from .registry import APPROVAL_STATUSES

TERMINAL = ("Succeeded", "Failed", "Stopped")


def parameter_values(items: list[str] | None) -> dict[str, Any]:
    """``NAME=VALUE`` pipeline parameter defaults, each converted to its parameter's kind."""
    values: dict[str, Any] = {}
    for name, text in parse_assignments(items).items():
        kind = PARAMETERS.get(name, ("string", None))[0]
        if kind == "boolean":
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise UserError(f"pipeline parameter {name}={text!r} is not a boolean")
            values[name] = text.lower() in ("1", "true", "yes")
            continue
        try:
            values[name] = {"integer": int, "float": float}.get(kind, str)(text)
        except ValueError:
            raise UserError(f"pipeline parameter {name}={text!r} is not a {kind}") from None
    return values


#: ``--name``/``--group``: every pipeline and registry command that names them.
NAME_FLAGS = (
    SettingFlag("--name", "name", {"help": "pipeline name"}),
    SettingFlag("--group", "group", {"help": "model package group"}),
)

#: What is fixed when the pipeline is defined (``definition`` and ``upsert``).
DEFINE_FLAGS = (
    *NAME_FLAGS,
    SettingFlag(
        "--hp",
        "hyperparameters",
        {"action": "append", "metavar": "NAME=VALUE", "help": "hyperparameter (a parameter)"},
        parse_assignments,
    ),
    SettingFlag(
        "--parameter",
        "parameter_defaults",
        {"action": "append", "metavar": "NAME=VALUE", "help": "pipeline parameter default"},
        parameter_values,
    ),
    SettingFlag("--layout", "layout", {"choices": ["folders", "shards"]}),
    SettingFlag("--resize", "resize", {"type": int, "help": "longer side of prepared photos"}),
    SettingFlag(
        "--source-uri",
        "source_uri",
        {"help": "S3 prefix of photos in ABID layout (default: the public ABID bucket)"},
    ),
    SettingFlag(
        "--tune",
        "tune",
        {
            "action": "store_true",
            "help": "a tuning step instead of train; its best job's model is evaluated "
            "(a build-time choice: see docs/aws.md)",
        },
    ),
    SettingFlag(
        "--range",
        "ranges",
        {
            "action": "append",
            "metavar": "NAME=SPEC",
            "help": "with --tune: low:high[:log] or a,b,c (defaults as bincounter-aws tune)",
        },
        parse_assignments,
    ),
)
#: ``tune``'s own search flags (max jobs, parallel jobs, strategy, early stopping).
SEARCH_FLAGS = tuple(flag for flag in TUNING_FLAGS if flag.field is not None)


def pipeline_settings(args: argparse.Namespace) -> PipelineSettings:
    tuning = settings_from_args(TuningSettings, args, SEARCH_FLAGS)
    make = functools.partial(PipelineSettings, tuning=tuning)
    return settings_from_args(make, args, DEFINE_FLAGS)


def _pipeline(args: argparse.Namespace, config: AwsConfig) -> Any:
    settings = pipeline_settings(args)
    settings.check()
    # sagemaker-mlops imports sagemaker.serve, which makes a boto3 client at import time and
    # fails there without a default region, whatever --region says.
    os.environ.setdefault("AWS_DEFAULT_REGION", config.require_region())
    from sagemaker.core.workflow.pipeline_context import PipelineSession

    from .pipeline import build_pipeline

    session = PipelineSession(boto_session=config.boto_session(), default_bucket=config.bucket)
    return build_pipeline(config, settings, session=session)


def cmd_definition(args: argparse.Namespace) -> int:
    definition = _pipeline(args, config_from_args(args)).definition()
    print(json.dumps(json.loads(definition), indent=2))
    return 0


def cmd_upsert(args: argparse.Namespace) -> int:
    from .registry import ensure_group

    config = config_from_args(args)
    pipeline = _pipeline(args, config)
    ensure_group(config.boto_session().client("sagemaker"), args.group)
    answer = pipeline.upsert(role_arn=config.require_role(), description="bincounter pipeline")
    print(f"pipeline: {answer['PipelineArn']}")
    return 0


def gate_baseline(
    config: AwsConfig, group: str, margin_accuracy: float, margin_rmse: float
) -> dict:
    """The baseline parameters from the group's latest approved package (none: no baseline)."""
    from .registry import latest_approved

    approved = latest_approved(config, group)
    if approved is None or "test_accuracy" not in approved.metrics:
        return {}
    return {
        "BaselineAccuracyFloor": float(approved.metrics["test_accuracy"]) - margin_accuracy,
        "BaselineRmseCeiling": float(approved.metrics["test_rmse"]) + margin_rmse,
    }


def cmd_start(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    parameters: dict[str, Any] = dict(parse_assignments(args.parameter))
    unknown = [n for n in parameters if n not in PARAMETERS and not n.startswith("Hp_")]
    if unknown:
        raise UserError(f"unknown pipeline parameter(s) {unknown}; known: {sorted(PARAMETERS)}")
    parameter_values(args.parameter)  # each value of its parameter's kind
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


def cmd_status(args: argparse.Namespace) -> int:
    client = config_from_args(args).boto_session().client("sagemaker")
    while True:
        status, rows = step_table(client, args.execution)
        if not args.wait or status in TERMINAL:
            break
        time.sleep(args.poll)
    print(f"execution {args.execution}: {status}")
    for name, step_status, reason in rows:
        print(f"  {name:24} {step_status:12} {reason}")
    return 0 if status != "Failed" else 1


def cmd_list(args: argparse.Namespace) -> int:
    client = config_from_args(args).boto_session().client("sagemaker")
    answer = client.list_pipeline_executions(PipelineName=args.name)
    for item in answer.get("PipelineExecutionSummaries", []):
        print(f"{item['PipelineExecutionArn']}\t{item.get('PipelineExecutionStatus', '?')}")
    return 0


def cmd_packages(args: argparse.Namespace) -> int:
    from .registry import list_packages

    for p in list_packages(config_from_args(args), args.group, args.approval):
        metrics = " ".join(f"{k}={v}" for k, v in sorted(p.metrics.items()))
        print(f"{p.version}\t{p.approval}\t{p.arn}\t{metrics}")
    return 0


def cmd_approval(args: argparse.Namespace) -> int:
    from .registry import set_approval

    status = "Approved" if args.registry_command == "approve" else "Rejected"
    summary = set_approval(config_from_args(args), args.arn, status, args.description)
    print(f"{summary.arn}: {summary.approval}")
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    from .registry import register_from_evaluation

    arn = register_from_evaluation(
        config_from_args(args), args.group, args.model_data, args.evaluation, approval=args.approval
    )
    print(f"model package: {arn}")
    return 0


def _add_pipeline_parsers(sub: Any, config: argparse.ArgumentParser) -> None:
    pipeline = sub.add_parser("pipeline", help="SageMaker Pipeline: prepare->train->gate->register")
    psub = pipeline.add_subparsers(dest="pipeline_command", required=True)
    for name, func, text in (
        ("definition", cmd_definition, "print the pipeline definition JSON"),
        ("upsert", cmd_upsert, "create or update the pipeline (and the model package group)"),
    ):
        p = psub.add_parser(name, parents=[config], help=text)
        add_flags(p, PipelineSettings, DEFINE_FLAGS)
        add_flags(p.add_argument_group("with --tune"), TuningSettings, SEARCH_FLAGS)
        p.set_defaults(func=func)

    p = psub.add_parser("start", parents=[config], help="start an execution")
    add_flags(p, PipelineSettings, NAME_FLAGS)
    p.add_argument("--plan-uri", required=True, help="s3:// prefix of the plan parts")
    p.add_argument("--parameter", action="append", metavar="NAME=VALUE")
    p.add_argument("--margin-accuracy", type=float, default=0.01, help="vs. latest approved")
    p.add_argument("--margin-rmse", type=float, default=0.05, help="vs. latest approved")
    p.set_defaults(func=cmd_start)

    for name, wait, text in (
        ("status", False, "an execution's per-step table"),
        ("wait", True, "wait for an execution to end, then its per-step table"),
    ):
        p = psub.add_parser(name, parents=[config], help=text)
        p.add_argument("--execution", required=True, help="execution ARN")
        p.add_argument("--poll", type=float, default=60.0, help="seconds between polls")
        p.set_defaults(func=cmd_status, wait=wait)

    p = psub.add_parser("list", parents=[config], help="the pipeline's executions")
    add_flags(p, PipelineSettings, NAME_FLAGS[:1])
    p.set_defaults(func=cmd_list)


def _add_registry_parsers(sub: Any, config: argparse.ArgumentParser) -> None:
    group = NAME_FLAGS[1:]
    registry = sub.add_parser("registry", help="Model Registry: list, approve, reject, register")
    rsub = registry.add_subparsers(dest="registry_command", required=True)
    p = rsub.add_parser("list", parents=[config], help="a group's packages with their metrics")
    add_flags(p, PipelineSettings, group)
    p.add_argument("--approval", choices=APPROVAL_STATUSES)
    p.set_defaults(func=cmd_packages)
    for name in ("approve", "reject"):
        p = rsub.add_parser(name, parents=[config], help=f"{name} one package")
        p.add_argument("arn", help="model package ARN")
        p.add_argument("--description", default="", help="why (kept with the package)")
        p.set_defaults(func=cmd_approval)
    p = rsub.add_parser("register", parents=[config], help="register a model with its metrics")
    add_flags(p, PipelineSettings, group)
    p.add_argument("--model-data", required=True, help="s3://.../model.tar.gz")
    p.add_argument("--evaluation", required=True, help="s3:// folder of evaluation.json")
    p.add_argument("--approval", choices=APPROVAL_STATUSES, default=APPROVAL_STATUSES[0])
    p.set_defaults(func=cmd_register)


def add_parsers(sub: Any, config: argparse.ArgumentParser) -> None:
    """The ``pipeline`` and ``registry`` groups, each with the configuration flags of ``config``."""
    _add_pipeline_parsers(sub, config)
    _add_registry_parsers(sub, config)
