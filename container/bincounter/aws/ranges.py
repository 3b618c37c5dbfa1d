"""Hyperparameter tuning ranges: parsed from ``NAME=SPEC`` text and checked against the container.

A range names a ``HyperParameters`` field and says how to search it: ``low:high`` (integer when
both bounds are integers, else continuous), ``low:high:log`` (or ``linear``, ``auto``,
``reverselog``) for the scale, or ``a,b,c`` for a categorical choice. Both bounds and every
choice are run through the container's own ``parse_hyperparameters`` together with the static
hyperparameters, so a range the container would reject fails on the laptop before a tuning job
starts many training jobs that would each fail. Pure: turning a ``RangeSpec`` into the SDK's
parameter objects is ``jobs``'s business.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import HyperparameterError, LaunchError
from ..training.hyperparameters import HyperParameters, parse_hyperparameters

#: The capstone's search space; ``--range`` overrides or extends it.
DEFAULT_RANGES: dict[str, str] = {
    "lr": "0.001:0.1:log",
    "batch_size": "16,32,64",
    "epochs": "2:6",
}
#: ``low:high:<scale>`` words -> SageMaker's ``ScalingType``.
SCALES = {
    "log": "Logarithmic",
    "linear": "Linear",
    "auto": "Auto",
    "reverselog": "ReverseLogarithmic",
}


@dataclass(frozen=True)
class RangeSpec:
    """One tuning range: continuous/integer ``low:high[:log]`` or categorical ``a,b,c``."""

    name: str
    kind: str  # "continuous" | "integer" | "categorical"
    low: float | int | None = None
    high: float | int | None = None
    values: tuple[str, ...] = ()
    scaling: str = "Auto"


def parse_range(name: str, spec: str) -> RangeSpec:
    """``"0.001:0.1:log"`` continuous (log scale), ``"2:6"`` integer, ``"16,32,64"`` categorical.

    A float hyperparameter always gets a continuous range (``warmup_epochs=0:3`` searches
    fractions too); otherwise whole bounds make an integer range. ``validate_ranges`` refuses a
    continuous range on an integer hyperparameter.
    """
    spec = spec.strip()
    if ":" in spec:
        parts = spec.split(":")
        if len(parts) not in (2, 3):
            raise LaunchError(f"range {name}={spec!r}: use low:high[:log|linear|auto]")
        scaling = "Auto"
        if len(parts) == 3:
            if parts[2].lower() not in SCALES:
                raise LaunchError(f"range {name}={spec!r}: scale must be one of {sorted(SCALES)}")
            scaling = SCALES[parts[2].lower()]
        whole = all(p.strip().lstrip("-").isdigit() for p in parts[:2])
        try:
            if whole and _field_type(name) is not float:
                low, high = int(parts[0]), int(parts[1])
                kind = "integer"
            else:
                low, high = float(parts[0]), float(parts[1])
                kind = "continuous"
        except ValueError:
            raise LaunchError(f"range {name}={spec!r}: bounds must be numbers") from None
        if not low < high:
            raise LaunchError(f"range {name}={spec!r}: low must be below high")
        if scaling == "Logarithmic" and low <= 0:
            raise LaunchError(f"range {name}={spec!r}: a log scale needs low > 0")
        return RangeSpec(name, kind, low, high, scaling=scaling)
    values = tuple(v.strip() for v in spec.split(",") if v.strip())
    if not values:
        raise LaunchError(f"range {name}={spec!r} is empty")
    return RangeSpec(name, "categorical", values=values)


def _field_type(name: str) -> type | None:
    field = HyperParameters.model_fields.get(name)
    return field.annotation if field is not None and field.annotation in (int, float) else None


def build_ranges(
    overrides: Mapping[str, str] | None = None, *, defaults: bool = True
) -> dict[str, RangeSpec]:
    """Default capstone ranges updated by ``overrides``; an empty spec drops a default."""
    specs = dict(DEFAULT_RANGES) if defaults else {}
    for name, spec in (overrides or {}).items():
        if spec.strip() in ("", "none", "off"):
            specs.pop(name, None)
        else:
            specs[name] = spec
    return {name: parse_range(name, spec) for name, spec in specs.items()}


def validate_ranges(ranges: Mapping[str, RangeSpec], static: Mapping[str, str]) -> None:
    """Every range names a ``HyperParameters`` field, and every bound/value is one the
    container accepts together with the static hyperparameters (fail before launching)."""
    if not ranges:
        raise LaunchError("no hyperparameter ranges to tune")
    unknown = sorted(set(ranges) - set(HyperParameters.model_fields))
    if unknown:
        raise HyperparameterError(
            f"tuning range(s) {unknown} are not hyperparameters; known: "
            + ", ".join(HyperParameters.model_fields)
        )
    overlap = sorted(set(ranges) & set(static))
    if overlap:
        raise LaunchError(
            f"{overlap} are both tuned and fixed: give each either a range or a value"
        )
    for name, spec in ranges.items():
        samples = spec.values if spec.kind == "categorical" else (spec.low, spec.high)
        for value in samples:
            parse_hyperparameters({**static, name: str(value)})
        if spec.kind == "continuous" and _field_type(name) is int:
            raise LaunchError(
                f"range {name}={spec.low:g}:{spec.high:g} is continuous but {name} is an integer "
                "hyperparameter; give whole bounds (e.g. 2:6) so the tuner never samples a "
                "fraction the container rejects"
            )
