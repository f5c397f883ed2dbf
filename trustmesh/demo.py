"""`trustmesh demo`: the whole mission on one machine (not built yet)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` command (none yet)."""
