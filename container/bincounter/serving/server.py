"""``serve``: start gunicorn with the flask app, as SageMaker's ``docker run IMAGE serve`` needs.

gunicorn runs in this process (it becomes the arbiter, PID 1 in the container, so SIGTERM
reaches it directly). Before starting it, the knobs and the model directory are checked here:
a bad ``SAGEMAKER_*`` value or a missing/mismatched model ends the container at once with one
clear log line instead of a server that boots workers in a loop.
"""

from __future__ import annotations

import logging
import sys

from .. import logs
from ..errors import UserError
from .config import ServingConfig

log = logging.getLogger("bincounter.serving")

CONFIG_MODULE = "python:bincounter.serving.gunicorn_conf"
APP_SPEC = "bincounter.serving.app:create_app()"


def preflight(config: ServingConfig) -> None:
    """Cheap checks of the model directory in the arbiter (raises ``ModelLoadError``).

    The card and the weights' checksum are verified here; building the network happens in the
    worker, whose failure also stops the server (gunicorn's ``APP_LOAD_ERROR``).
    """
    from ..errors import ModelLoadError
    from ..model import verify_model_files

    if not config.model_dir.is_dir():
        raise ModelLoadError(
            f"model directory {config.model_dir} does not exist: SageMaker extracts model.tar.gz "
            "there; on a host set SAGEMAKER_BASE_DIR to the tree 'train' wrote"
        )
    verify_model_files(config.model_dir)


def run_server(argv: list[str] | None = None) -> int:
    """Run the model server until it is stopped; returns the process exit status.

    ``argv`` are extra gunicorn options (e.g. ``--bind 127.0.0.1:8080``); they override the
    settings derived from the environment.
    """
    logs.configure()
    try:
        config = ServingConfig.from_environment()
        preflight(config)
    except UserError as exc:
        log.critical("cannot serve: %s", exc.reason)
        return 1

    from gunicorn.app.wsgiapp import WSGIApplication

    saved = sys.argv
    sys.argv = ["bincounter serve", "-c", CONFIG_MODULE, *(argv or []), APP_SPEC]
    try:
        WSGIApplication("%(prog)s [OPTIONS]", prog="bincounter serve").run()
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(run_server(sys.argv[1:]))
