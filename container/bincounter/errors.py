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


class PrepareError(UserError):
    """The data preparation cannot go on (bad file list, bad fractions, no usable photo)."""


class MissingObject(Exception):
    """A photo source has no object under this key (a 404, not a transient failure)."""


class LaunchConfigError(UserError):
    """A launch setting (region, role, bucket, image) is missing or malformed."""


class LaunchError(UserError):
    """A launch request is inconsistent (spot without wait time, bad range, ...)."""


class LocalModeError(UserError):
    """Local mode cannot run: docker or compose missing, or the local job failed."""


class InvocationError(Exception):
    """A request the model server refuses: the HTTP status, a stable ``error`` name, a message.

    Raised by ``serving.codec`` and ``serving.app``; the app's error handler writes it as the
    JSON error body with its status (as the inference toolkit's errors carry theirs).
    """

    def __init__(self, status: int, error: str, message: str, **extra: object) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.extra = extra


class StopRequested(Exception):
    """SIGTERM arrived (SageMaker stop or spot interruption); a checkpoint was written.

    Not a ``UserError``: the job is not failed, it exits with ``EXIT_STOPPED`` and a rerun
    resumes.
    """


class VerificationError(UserError, ValueError):
    """An expected quantity or mismatch rate a verdict cannot be decided with (the server: 400)."""
