#!/usr/bin/env python3
"""Thin wrapper: `bincounter-aws pipeline ...` (see docs/aws.md; logic in bincounter.aws)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "container"))  # uninstalled checkout

from bincounter.aws.cli import main

sys.exit(main(["pipeline", *sys.argv[1:]]))
