"""`trustmesh redirect` (not built yet)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``redirect`` command (none yet)."""
