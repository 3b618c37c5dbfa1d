"""A moto server on 127.0.0.1 that also records what it was sent.

moto 5.2.5 in server mode is a real HTTP endpoint for S3, STS, ECR, SageMaker and Application
Auto Scaling, but (see ``shared/notes/sagemaker-sdk-v3.md``) it:

* stores no MetricDefinitions of training jobs (DescribeTrainingJob returns a placeholder), so
  tests read the request bodies recorded here, which are exactly what the SDK put on the wire;
* returns ``VpcConfig: {}`` / ``DataCaptureConfig: {}`` in Describe responses, which
  sagemaker-core's resource classes reject; empty top-level objects are dropped from SageMaker
  Describe responses here (the real service omits fields that are not set);
* echoes the endpoint config's ``DataCaptureConfig`` in DescribeEndpoint where the service
  answers a ``DataCaptureConfigSummary``; it is rewritten to that shape here;
* answers a binary ``InvokeEndpoint`` body with a 500 (it decodes bodies as UTF-8); runtime
  invocations are answered here instead, with a JSON body built by ``invoke_answer``, and the
  raw bytes are recorded.

``InvokeEndpointAsync`` is moto's own (recorded here, headers included): it writes its answer
at once to a fresh ``sagemaker-output-<uuid>`` bucket, not to the endpoint's ``S3OutputPath``,
and does not check that the endpoint exists. Every request's method and path is kept in
``seen`` so a test can wait for a client to have polled an object (``wait_seen``).

Nothing in the code under test is patched: it talks HTTP to this server via
``AWS_ENDPOINT_URL``.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server


class _QuietHandler(MotoRequestHandler):
    """No access log line per request (hundreds per test run)."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


@dataclass(frozen=True)
class Recorded:
    """One SageMaker API call (``action``: ``CreateTrainingJob``...) or runtime invocation."""

    action: str
    body: bytes
    headers: dict[str, str]
    path: str

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body) if self.body else {}


def default_answer(endpoint: str, body: bytes, content_type: str) -> dict[str, Any]:
    """A stand-in for the serving container's answer (the tests check the request side)."""
    return {"endpoint": endpoint, "bytes": len(body), "content_type": content_type, "count": 3}


def _endpoint_capture_summary(data: dict[str, Any]) -> dict[str, Any]:
    """moto echoes the endpoint config's DataCaptureConfig in DescribeEndpoint; the service
    answers a DataCaptureConfigSummary (with CaptureStatus and CurrentSamplingPercentage),
    which is what sagemaker-core's ``Endpoint`` requires."""
    capture = data.get("DataCaptureConfig")
    if isinstance(capture, dict) and "CaptureStatus" not in capture:
        data["DataCaptureConfig"] = {
            "EnableCapture": bool(capture.get("EnableCapture")),
            "CaptureStatus": "Started" if capture.get("EnableCapture") else "Stopped",
            "CurrentSamplingPercentage": capture.get("InitialSamplingPercentage", 0),
            "DestinationS3Uri": capture.get("DestinationS3Uri", ""),
            "KmsKeyId": capture.get("KmsKeyId", ""),
        }
    return data


class RecordingMotoServer:
    """``moto`` as a WSGI app, behind a thin recorder, served by werkzeug in a thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.records: list[Recorded] = []
        self.invoke_answer: Callable[[str, bytes, str], dict[str, Any]] = default_answer
        self.seen: list[tuple[str, str]] = []
        self._lock = threading.Condition()
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # --- recording helpers -------------------------------------------------------------
    def calls(self, action: str) -> list[dict[str, Any]]:
        """JSON bodies of every recorded call of ``action``, oldest first."""
        with self._lock:
            return [r.json for r in self.records if r.action == action]

    def wait_seen(self, method: str, path: str, timeout: float = 30) -> bool:
        """Block until a ``method`` request for ``path`` has arrived (True) or ``timeout``."""
        with self._lock:
            return self._lock.wait_for(lambda: (method, path) in self.seen, timeout)

    def invocations(self) -> list[Recorded]:
        with self._lock:
            return [r for r in self.records if r.action == "InvokeEndpoint"]

    # --- WSGI --------------------------------------------------------------------------
    def _app(self, inner: Callable) -> Callable:
        def app(environ: dict[str, Any], start_response: Callable) -> Any:
            target = environ.get("HTTP_X_AMZ_TARGET", "")
            path = environ.get("PATH_INFO", "")
            auth = environ.get("HTTP_AUTHORIZATION", "")
            with self._lock:
                self.seen.append((environ.get("REQUEST_METHOD", ""), path))
                self._lock.notify_all()
            is_runtime = (
                "/sagemaker/" in auth
                and path.startswith("/endpoints/")
                and path.endswith("/invocations")
            )
            is_async = "/sagemaker/" in auth and path.endswith("/async-invocations")
            if not (target.startswith("SageMaker.") or is_runtime or is_async):
                return inner(environ, start_response)  # S3, STS, ...: untouched
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length) if length else b""
            environ["wsgi.input"] = io.BytesIO(body)
            headers = {
                k[5:].replace("_", "-").lower(): v
                for k, v in environ.items()
                if k.startswith("HTTP_")
            }
            headers["content-type"] = environ.get("CONTENT_TYPE", "")
            if is_runtime or is_async:
                action = "InvokeEndpoint" if is_runtime else "InvokeEndpointAsync"
            else:
                action = target.split(".", 1)[1]
            with self._lock:
                self.records.append(Recorded(action, body, headers, path))
            if is_async:
                return inner(environ, start_response)
            if is_runtime:
                endpoint = path.split("/")[2]
                answer = json.dumps(
                    self.invoke_answer(endpoint, body, headers["content-type"])
                ).encode()
                start_response(
                    "200 OK",
                    [("Content-Type", "application/json"), ("Content-Length", str(len(answer)))],
                )
                return [answer]
            if not action.startswith("Describe"):
                return inner(environ, start_response)
            captured: dict[str, Any] = {}

            def capture(status: str, response_headers: list, exc_info: Any = None) -> Any:
                captured["status"] = status
                captured["headers"] = response_headers
                return lambda data: None

            chunks = inner(environ, capture)
            try:
                raw = b"".join(chunks)
            finally:
                if hasattr(chunks, "close"):
                    chunks.close()
            if captured["status"].startswith("200"):
                try:
                    data = json.loads(raw)
                    data = {k: v for k, v in data.items() if v != {}}
                    if action == "DescribeEndpoint":
                        data = _endpoint_capture_summary(data)
                    raw = json.dumps(data).encode()
                except ValueError:
                    pass
            response_headers = [
                (k, v) for k, v in captured["headers"] if k.lower() != "content-length"
            ]
            response_headers.append(("Content-Length", str(len(raw))))
            start_response(captured["status"], response_headers)
            return [raw]

        return app

    def start(self) -> RecordingMotoServer:
        inner = DomainDispatcherApplication(create_backend_app)
        self._server = make_server(
            self.host, self.port, self._app(inner), threaded=True, request_handler=_QuietHandler
        )
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=10)
