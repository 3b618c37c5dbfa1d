"""Send photos to a real-time endpoint or a local serving container; parsed answers back.

The serving container answers ``POST /invocations`` with ``image/jpeg`` or ``image/png`` bodies
(the same image runs ``serve``); answers are returned as parsed JSON when they are JSON.
"""

from __future__ import annotations

import json
import mimetypes
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .. import IMAGE_SUFFIXES
from ..errors import LaunchError
from .config import AwsConfig


def collect_images(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders expanded to their photos (sorted, recursively)."""
    out: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            out += sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        elif path.is_file():
            out.append(path)
        else:
            raise LaunchError(f"{path} is neither a file nor a folder")
    if not out:
        raise LaunchError("no photos (.jpg, .jpeg, .png) to send")
    return out


def content_type_of(path: Path) -> str:
    guessed = mimetypes.guess_type(path.name)[0]
    return guessed if guessed in ("image/jpeg", "image/png") else "image/jpeg"


def _decode_answer(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")


def invoke_endpoint(
    config: AwsConfig, endpoint: str, paths: Iterable[str | Path], client: Any = None
) -> list[tuple[Path, Any]]:
    """Send each photo to a SageMaker endpoint; (path, answer) pairs in order."""
    from botocore.exceptions import ClientError

    client = client or config.boto_session().client("sagemaker-runtime")
    answers = []
    for path in collect_images(paths):
        try:
            response = client.invoke_endpoint(
                EndpointName=endpoint,
                ContentType=content_type_of(path),
                Accept="application/json",
                Body=path.read_bytes(),
            )
        except ClientError as exc:
            answers.append((path, {"error": str(exc)}))
            continue
        answers.append((path, _decode_answer(response["Body"].read())))
    return answers


def invoke_local(
    url: str, paths: Iterable[str | Path], timeout: float = 60
) -> list[tuple[Path, Any]]:
    """Send each photo to a serving container's ``<url>/invocations`` (e.g. ``./serve``)."""
    base = url.rstrip("/")
    target = base if base.endswith("/invocations") else base + "/invocations"
    answers = []
    for path in collect_images(paths):
        request = urllib.request.Request(
            target,
            data=path.read_bytes(),
            method="POST",
            headers={"Content-Type": content_type_of(path), "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                answer = _decode_answer(response.read())
        except urllib.error.HTTPError as exc:
            answer = {"error": f"HTTP {exc.code}", "body": _decode_answer(exc.read())}
        except urllib.error.URLError as exc:
            raise LaunchError(f"cannot reach {target}: {exc.reason}") from None
        answers.append((path, answer))
    return answers
