# bincounter: one image for SageMaker training (`docker run IMAGE train`), serving
# (`docker run IMAGE serve`, gunicorn + flask on 8080) and data preparation as a Processing job
# (ContainerEntrypoint `process`), on CPU and GPU instances.
# Build args, CUDA/driver requirements and image size: docs/image.md.
#
#   docker build -t bincounter .
#
# Layers are ordered from the least to the most often changed: system packages, torch (CUDA
# wheels, gigabytes), the other pinned dependencies, ImageNet weights, then the project's code, so
# a code change rebuilds in seconds. Works with the classic builder and with BuildKit.

# Any Debian-based CPython 3.11 image that keeps python at /usr/local/bin works here.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
# builder: wheels for the dependencies published only as source. sagemaker-training compiles a
# C extension; the compiler stays in this stage and never reaches the final image.
FROM ${BASE_IMAGE} AS builder

# Where pip looks (optional, for mirrors and for offline or test builds); empty means PyPI.
# They are recorded in the image history: never put credentials in them.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_TRUSTED_HOST

RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

COPY requirements/image.lock /tmp/req/image.lock
RUN grep -E '^(sagemaker-training|inotify-simple)==' /tmp/req/image.lock >/tmp/req/sdists.txt \
    && python -m pip wheel --no-cache-dir --disable-pip-version-check --no-deps \
        --wheel-dir /wheels -r /tmp/req/sdists.txt

# ---------------------------------------------------------------------------------------------
# runtime: what both images share: tini as PID 1 (docker stop / SageMaker's SIGTERM reach the
# server and training, and DataLoader workers are reaped), a venv at /opt/venv, and /opt/program
# first on PATH (sagemaker-training installs a console script also called `train` into
# /opt/venv/bin, and ours must win).
FROM ${BASE_IMAGE} AS runtime

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/program:/opt/venv/bin:${PATH}

RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && python -m venv /opt/venv

LABEL com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true \
      org.opencontainers.image.licenses="Apache-2.0"
WORKDIR /opt/program
ENTRYPOINT ["/usr/bin/tini", "--"]

# ---------------------------------------------------------------------------------------------
# serve-cpu: the torch-free CPU serving image: `docker build --target serve-cpu`.
# OpenVINO, flask, gunicorn, numpy, Pillow and pydantic (the model card's schema) at the full
# image's pinned versions; no torch, no CUDA, no training code's dependencies. `serve` only: it
# answers from the model's OpenVINO files and the reference outputs its check set records; a
# model without them is refused at start, naming the full image. Placed before the full image's stage, so a plain `docker build` still
# builds the full image (the last stage). Sizes and figures: docs/image.md.
FROM runtime AS serve-cpu

ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_TRUSTED_HOST

LABEL org.opencontainers.image.title="bincounter-cpu-serve" \
      org.opencontainers.image.description="Count the items (1-5) in Amazon Bin Image Dataset photos: SageMaker CPU serving image (OpenVINO, no torch); training needs the full bincounter image"

COPY requirements/image.lock requirements/torch.lock /tmp/req/
RUN printf '%s\n' flask gunicorn numpy pillow openvino pydantic >/tmp/req/serve.txt \
    && pip install --only-binary :all: -r /tmp/req/serve.txt \
        -c /tmp/req/image.lock -c /tmp/req/torch.lock \
    && pip check \
    && ! python -c 'import torch' 2>/dev/null

# The package is copied, not pip-installed: this stage has no build backend, nor needs one.
COPY container/bincounter /tmp/src/bincounter
RUN site=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') \
    && mv /tmp/src/bincounter "$site/bincounter" \
    && python -m compileall -q "$site/bincounter" \
    && rm -rf /tmp/src /tmp/req \
    && printf '#!/bin/sh\necho "bincounter: this is the CPU serving image (tag <version>-cpu-serve): it only serves (serve). Training and data preparation need the full bincounter image (tag <version>), which has torch." >&2\nexit 2\n' >/opt/program/train \
    && cp /opt/program/train /opt/program/process \
    && chmod +x /opt/program/train /opt/program/process
COPY serve /opt/program/
CMD ["serve"]

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=""
LABEL org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}"

# ---------------------------------------------------------------------------------------------
# The full image (training, serving on CPU and GPU, data preparation): the default target.
FROM runtime

ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_TRUSTED_HOST

LABEL org.opencontainers.image.title="bincounter" \
      org.opencontainers.image.description="Count the items (1-5) in Amazon Bin Image Dataset photos: SageMaker training and serving image (PyTorch)"

ENV TORCH_HOME=/opt/torch

# torch + torchvision + CUDA 13 runtime wheels: the big, stable layers, binary wheels only. Two
# layers of about 3 GB (NVIDIA libraries, then torch and the rest) rather than one of 6 GB: docker
# pushes and SageMaker pulls and unpacks layers in parallel.
COPY requirements/torch.lock /tmp/req/torch.lock
RUN grep -E '^(nvidia|cuda)-' /tmp/req/torch.lock >/tmp/req/cuda.txt \
    && pip install --only-binary :all: -r /tmp/req/cuda.txt -c /tmp/req/torch.lock
RUN pip install --only-binary :all: -r /tmp/req/torch.lock

# Everything else, pinned; the source-only packages come as wheels from the builder.
COPY --from=builder /wheels /tmp/wheels
COPY requirements/image.lock /tmp/req/image.lock
RUN pip install --only-binary :all: --find-links /tmp/wheels \
        -r /tmp/req/image.lock -c /tmp/req/torch.lock \
    && pip check \
    && rm -rf /tmp/wheels

# ImageNet weights baked in so `pretrained=true` works with network isolation; into
# $TORCH_HOME/hub/checkpoints, where torchvision (and bincounter) look, checked against the
# sha256 prefix in their file names. They come from download.pytorch.org (not PyPI): where that
# host is unreachable build with DOWNLOAD_WEIGHTS=0 (training then needs `pretrained=false`).
ARG DOWNLOAD_WEIGHTS=1
ARG WEIGHTS_ARCHS="resnet18 resnet34 resnet50"
RUN if [ "$DOWNLOAD_WEIGHTS" = "1" ]; then \
        python -c 'import socket, sys, torchvision; socket.setdefaulttimeout(60); ws = [torchvision.models.get_model_weights(a).IMAGENET1K_V1 for a in sys.argv[1:]]; [print("ImageNet weights:", w.get_state_dict(progress=False, check_hash=True) and w.url) for w in ws]' $WEIGHTS_ARCHS \
        || { echo "ERROR: could not download the ImageNet weights (above). Where download.pytorch.org is unreachable, build with --build-arg DOWNLOAD_WEIGHTS=0 (offline build: pretrained=true then fails the job saying so)." >&2; exit 1; }; \
    else \
        echo "DOWNLOAD_WEIGHTS=$DOWNLOAD_WEIGHTS: no ImageNet weights in this image"; \
    fi

# The project itself (the only layers a code change rebuilds). Nothing is written under
# /opt/ml: SageMaker mounts it.
COPY pyproject.toml README.md /tmp/src/
COPY container /tmp/src/container
RUN pip install --no-deps --no-build-isolation --no-compile /tmp/src \
    && python -m compileall -q "$(python -c 'import bincounter, os; print(os.path.dirname(bincounter.__file__))')" \
    && rm -rf /tmp/src /tmp/req
COPY train serve process /opt/program/

# SageMaker runs `docker run IMAGE train|serve`; the SDK's local mode runs the image with no
# argument, so training is the default.
CMD ["train"]

# Last, so a new version or commit does not invalidate any cached layer.
ARG VERSION=0.1.0
ARG REVISION=unknown
# The repository URL (scripts/push.sh passes git remote origin).
ARG SOURCE=""
LABEL org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}"
