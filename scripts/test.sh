#!/usr/bin/env bash
# The project's test command (CI runs exactly this): set up .venv, lint, then every test,
# container tests included. Extra arguments go to pytest, e.g. `scripts/test.sh -m "not container"`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
