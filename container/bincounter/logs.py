"""Logging, configured in one place for every entry point.

Training logs go to stdout (SageMaker ships them to CloudWatch, where the metric regexes read the
same stream); serving and the launch side log to stderr, beside gunicorn's own lines. One format
everywhere, with the process id, so a line from a gunicorn worker or a DDP rank says who wrote it.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"

#: Libraries whose INFO lines drown ours (every S3 request, every font lookup).
QUIET_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer", "PIL", "matplotlib")


def configure(level: int | str = logging.INFO, stream: TextIO | None = None) -> None:
    """Plain timestamped lines a person can read; safe to call again (it replaces handlers)."""
    if isinstance(level, str):
        level = level.upper()
    logging.basicConfig(level=level, format=FORMAT, stream=stream or sys.stderr, force=True)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
