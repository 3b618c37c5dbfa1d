#!/usr/bin/env bash
# README command 1: set up .venv, then prepare a small ABID sample (DATA=folder, or the public
# bucket), train on it with ./train, serve the model with ./serve and count a few photos.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m scripts.quickstart "$@"
