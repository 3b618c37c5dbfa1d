#!/usr/bin/env python3
"""Thin wrapper: `bincounter-aws registry ...` (see docs/aws.md; logic in bincounter.aws)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "container"))  # uninstalled checkout

from bincounter.aws.cli import main

sys.exit(main(["registry", *sys.argv[1:]]))
