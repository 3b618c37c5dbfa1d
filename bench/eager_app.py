"""The usual baseline for ``serve_bench.py``: a plain eager-PyTorch flask handler.

What most bring-your-own containers do: gunicorn sync workers (one request at a time each), the
model loaded eagerly per worker with torch's default threads, one photo per forward pass. Same
model, same decoding and preprocessing as the real server, so only the serving design differs.

Run: ``BENCH_MODEL_DIR=... gunicorn -k sync -w 2 --chdir bench 'eager_app:create_app()'``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from flask import Flask, Response, jsonify, request

from bincounter.imaging import ImageError, load_and_preprocess
from bincounter.model import load_model


def create_app() -> Flask:
    model, card = load_model(Path(os.environ["BENCH_MODEL_DIR"]))
    size = int(card["image_size"])
    app = Flask(__name__)

    @app.get("/ping")
    def ping() -> Response:
        return Response(status=200)

    @app.post("/invocations")
    def invocations():
        try:
            x = load_and_preprocess(request.get_data(), size).unsqueeze(0)
        except ImageError as exc:
            return jsonify(error=exc.reason), 400
        with torch.no_grad():
            probs = torch.softmax(model(x), dim=1)[0].tolist()
        best = max(range(5), key=probs.__getitem__)
        return jsonify(count=best + 1, probabilities={str(i + 1): p for i, p in enumerate(probs)})

    return app
