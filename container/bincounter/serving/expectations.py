"""What a request may add to "how many": a minimum accuracy, and the quantity the records expect.

A client sends them in SageMaker's ``X-Amzn-SageMaker-Custom-Attributes`` header (the one
request header SageMaker passes through to a container, for invoke and batch transform alike),
as ``key=value`` pairs separated by commas or semicolons::

    X-Amzn-SageMaker-Custom-Attributes: expected_quantity=3, mismatch_rate=0.05, bin_id=A-17

or, in a JSON batch, beside each photo's ``b64`` (which wins over the header for that photo).
Keys: ``expected_quantity`` (1..5), ``mismatch_rate`` (0..1, the card's default otherwise),
``min_accuracy`` (0..1: abstain below the confidence that was right that often on validation)
and ``bin_id`` (echoed). Other attribute keys are ignored: the header is shared with whatever
else a client's tooling puts in it. Every bad value is a 400 naming it.

The answer keeps every field it had; it gains ``abstained`` (and ``count: null`` when it
abstains), ``expected_quantity``, ``match_probability`` and ``verdict`` (from
``bincounter.verification.verify``, the one verdict function), and ``bin_id``, only when asked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from flask import Response

from .. import calibration, verification
from ..errors import InvocationError, VerificationError
from . import codec

#: The request header SageMaker passes to the container (``CustomAttributes`` in the API).
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"

#: The keys read from the header or a JSON instance.
OPTION_KEYS: tuple[str, ...] = ("expected_quantity", "mismatch_rate", "min_accuracy", "bin_id")

_BIN_ID = re.compile(r"^[\w.:/@+-]{1,128}$")


@dataclass(frozen=True)
class PhotoOptions:
    """One photo's validated options; ``None``: not asked."""

    expected_quantity: int | None = None
    mismatch_rate: float | None = None
    min_accuracy: float | None = None
    bin_id: str | None = None


def parse_attributes(value: str) -> dict[str, str]:
    """``"a=1, b=2; c=3"`` -> ``{"a": "1", ...}``; pairs without ``=`` are ignored."""
    pairs = (part.split("=", 1) for part in re.split(r"[,;]", value) if "=" in part)
    return {k.strip(): v.strip() for k, v in pairs}


def _refuse(message: str) -> InvocationError:
    return InvocationError(400, "bad_request_option", message)


def check_options(
    raw: Mapping[str, Any], card: Mapping[str, Any], base: PhotoOptions, where: str
) -> PhotoOptions:
    """``raw`` values (strings from the header, JSON values from a body) over ``base``.

    A 400 for a value out of range, or for an option the model's card cannot honour (a card
    from before calibration has no thresholds to abstain or decide verdicts with).
    """
    given = {k: raw[k] for k in OPTION_KEYS if k in raw and raw[k] is not None}
    out = base
    try:
        if "expected_quantity" in given:
            quantity = verification.check_expected(given["expected_quantity"], "expected_quantity")
            out = replace(out, expected_quantity=quantity)
        if "mismatch_rate" in given:
            out = replace(out, mismatch_rate=verification.check_rate(given["mismatch_rate"]))
    except VerificationError as exc:
        raise _refuse(f"{where}{exc.reason}") from None
    if "min_accuracy" in given:
        try:
            level = float(given["min_accuracy"])
        except (TypeError, ValueError):
            level = -1.0
        if not 0.0 < level <= 1.0:
            raise _refuse(f"{where}min_accuracy={given['min_accuracy']!r} must be in (0, 1]")
        out = replace(out, min_accuracy=level)
    if "bin_id" in given:
        if not isinstance(given["bin_id"], str) or not _BIN_ID.match(given["bin_id"]):
            raise _refuse(
                f"{where}bin_id must be 1-128 letters, digits or . _ : / @ + - characters"
            )
        out = replace(out, bin_id=given["bin_id"])
    needs = {"calibration": out.min_accuracy, "verification": out.expected_quantity}
    for section, asked in needs.items():
        if asked is not None and section not in card:
            raise _refuse(
                f"{where}this model's card has no '{section}' section (trained before issue "
                "22's calibration): retrain it to use min_accuracy and expected_quantity"
            )
    return out


def request_options(headers: Mapping[str, str], card: Mapping[str, Any]) -> PhotoOptions:
    """The header's options, the default of every photo in the request."""
    value = headers.get(CUSTOM_ATTRIBUTES, "")
    return check_options(parse_attributes(value), card, PhotoOptions(), f"{CUSTOM_ATTRIBUTES}: ")


def instance_options(
    fields: Sequence[Mapping[str, Any]] | None, card: Mapping[str, Any], base: PhotoOptions, n: int
) -> list[PhotoOptions]:
    """Each photo's options: its JSON instance's fields over the header's (``n`` photos)."""
    if not fields:
        return [base] * n
    return [check_options(f, card, base, f"instances[{i}]: ") for i, f in enumerate(fields)]


def annotate(
    prediction: dict[str, Any], options: PhotoOptions, card: Mapping[str, Any]
) -> dict[str, Any]:
    """A photo's answer with what its options asked for (unchanged when it asked nothing).

    Verdicts use the answer's own (calibrated) probabilities.
    """
    if options.min_accuracy is not None:
        thresholds = card["calibration"]["confidence_thresholds"]
        threshold = calibration.threshold_for(options.min_accuracy, thresholds)
        abstained = threshold is None or prediction["confidence"] < threshold
        prediction["abstained"] = bool(abstained)
        if abstained:
            prediction["count"] = None
    if options.expected_quantity is not None:
        match, verdicts = verification.verify(
            np.array([list(prediction["probabilities"].values())], dtype=np.float64),
            [options.expected_quantity],
            card["verification"],
            options.mismatch_rate,
        )
        prediction["expected_quantity"] = options.expected_quantity
        prediction["match_probability"] = float(match[0])
        prediction["verdict"] = verdicts[0]
    if options.bin_id is not None:
        prediction["bin_id"] = options.bin_id
    return prediction


def answer(
    probabilities: np.ndarray,
    options: Sequence[PhotoOptions],
    card: Mapping[str, Any],
    version: str,
    batch: bool,
) -> Response:
    """Each photo's answer from the network's ``probabilities`` (the card's rule and
    calibration, ``codec.probabilities_to_prediction``), with its options applied."""
    rule, section = str(card["decision"]), card.get("calibration")
    predictions = [
        annotate(codec.probabilities_to_prediction(p, version, rule, section), o, card)
        for p, o in zip(probabilities, options, strict=True)
    ]
    if batch:
        return codec.json_response({"predictions": predictions})
    return codec.json_response(predictions[0])
