"""What a person hands the launch commands, checked on the laptop before any request is sent.

``NAME=VALUE`` items (``--hp``, ``--env``, ``--range``), hyperparameter files (``tune``'s
output, read back by ``train``) and hyperparameter values, which are validated with the
container's own ``parse_hyperparameters``: a typo fails here in a second, with the parameter's
name, instead of in a paid job minutes later. ``bincounter.errors.LaunchError`` is the error
every launch step raises for such a mistake. Pure: no SDK, no AWS call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import LaunchError
from ..training.hyperparameters import own_hyperparameters, parse_hyperparameters

#: How channels reach the container. Pipe streams tar shards into one FIFO per pass, read by
#: one process per host (``bincounter.training.channels``); File and FastFile suit any layout.
INPUT_MODES = ("File", "FastFile", "Pipe")


def validate_hyperparameters(raw: Mapping[str, Any]) -> dict[str, str]:
    """Check ``raw`` as the container will, and return it as the strings SageMaker carries.

    Only the keys given are returned (the rest keep the image's defaults); values are in the
    canonical form ``HyperParameters.to_strings`` writes (``"0.01"``, ``"true"``), so what
    CreateTrainingJob carries parses back to the same values in the container.
    """
    own = own_hyperparameters(raw)
    parsed = parse_hyperparameters(own)  # HyperparameterError names the parameter
    strings = parsed.to_strings()
    return {k: strings[k] for k in own}


def parse_assignments(items: list[str] | None) -> dict[str, str]:
    """``["lr=0.01", "epochs=3"]`` -> ``{"lr": "0.01", "epochs": "3"}``."""
    out: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise LaunchError(f"{item!r} is not NAME=VALUE")
        out[name.strip()] = value.strip()
    return out


def read_hyperparameters_file(path: str | Path) -> dict[str, str]:
    """Hyperparameters from a JSON file: ``tune``'s output (``{"hyperparameters": {...}}``)
    or a plain ``{"name": value}`` mapping."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise LaunchError(f"cannot read hyperparameters file {path}: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("hyperparameters"), dict):
        data = data["hyperparameters"]
    if not isinstance(data, dict):
        raise LaunchError(f"{path} must hold a JSON object of hyperparameters")
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in data.items()}


def write_hyperparameters_file(path: str | Path, best: Mapping[str, Any]) -> Path:
    """Write ``best`` (as ``best_hyperparameters`` returns it) for ``train`` to read."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(best, indent=2, sort_keys=True) + "\n")
    return out
