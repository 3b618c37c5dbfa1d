"""Errors a person can act on.

A ``UserError`` carries a one-line reason that goes first into ``/opt/ml/output/failure``
(SageMaker shows its first 1024 characters in the console) and in front of any log detail.
Anything else that escapes is a bug and is reported as such, with the traceback as detail.
"""

from __future__ import annotations


class UserError(Exception):
    """A failure caused by the job's inputs (config, hyperparameters, data), not by a bug."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class HyperparameterError(UserError):
    """A hyperparameter is unknown or has a value outside its allowed set."""


class DataError(UserError):
    """A channel is missing, empty, malformed, or has too many unreadable photos."""


class ConfigError(UserError):
    """A SageMaker config file under /opt/ml/input/config is missing or unreadable."""


class ModelLoadError(UserError):
    """Model artefacts (weights, card, pretrained weights) are missing or do not match."""


class VerificationError(UserError, ValueError):
    """An expected quantity or mismatch rate a verdict cannot be decided with (the server: 400)."""
