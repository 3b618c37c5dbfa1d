"""``serve``: start gunicorn with the flask app, as SageMaker's ``docker run IMAGE serve`` needs.

gunicorn runs in this process (it becomes the arbiter, PID 1 in the container, so SIGTERM
reaches it directly). Before starting it, the knobs and the model directory are checked here:
a bad ``SAGEMAKER_*`` value or a missing/mismatched model ends the container at once with one
clear log line instead of a server that boots workers in a loop.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from gunicorn.app.base import Application

from .. import logs
from ..errors import UserError
from . import parameters
from .config import ServingConfig
from .gunicorn_conf import settings

log = logging.getLogger(__name__)


def preflight(config: ServingConfig) -> None:
    """Cheap checks of the model directory in the arbiter (raises ``ModelLoadError``).

    The card and the checksums of the weights and of any OpenVINO files are verified here;
    building the engine happens in the worker, whose failure also stops the server (gunicorn's
    ``APP_LOAD_ERROR``). Where torch is absent (the CPU serving image), a model or an engine
    that needs it is refused here, naming the full image. No torch is imported here.
    """
    from ..card import verify_model_files
    from ..errors import ModelLoadError
    from ..openvino_ir import verify_exported
    from .predictor import NEEDS_FULL_IMAGE, needs_torch, torch_available

    if not config.model_dir.is_dir():
        raise ModelLoadError(
            f"model directory {config.model_dir} does not exist: SageMaker extracts model.tar.gz "
            "there; on a host set SAGEMAKER_BASE_DIR to the tree 'train' wrote"
        )
    card, _ = verify_model_files(config.model_dir)
    verify_exported(config.model_dir, card)
    if not torch_available():
        if config.engine not in ("auto", "openvino"):
            why = f"{parameters.ENGINE}={config.engine} runs on torch"
        elif "reference" not in ((card.get("openvino") or {}).get("check_set") or {}):
            why = f"the model in {config.model_dir} needs torch ({needs_torch(card)})"
        else:
            return
        raise ModelLoadError(NEEDS_FULL_IMAGE.format(why=why))


class ModelServer(Application):
    """gunicorn, configured from the ``ServingConfig`` this process read, serving ``create_app``.

    gunicorn's custom-application form rather than a config module and an app import string, so
    the config is read once, here in the arbiter: the settings come from it
    (``gunicorn_conf.settings``), and each worker, forked from this process, builds its app from
    the same object. As with any gunicorn, a ``gunicorn.conf.py`` in the working directory (the
    image's has none), ``GUNICORN_CMD_ARGS`` and the options after ``serve`` apply on top.
    """

    def __init__(self, config: ServingConfig) -> None:
        self.serving_config = config
        super().__init__("%(prog)s [OPTIONS]", prog="bincounter serve")

    def init(self, parser: Any, opts: Any, args: Any) -> dict[str, Any]:
        # The defaults; gunicorn applies a config file, GUNICORN_CMD_ARGS and options on top.
        return settings(self.serving_config)

    def load(self) -> Any:
        from .app import create_app

        return create_app(self.serving_config)


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

    saved = sys.argv
    sys.argv = ["bincounter serve", *(argv or [])]
    try:
        ModelServer(config).run()
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(run_server(sys.argv[1:]))
