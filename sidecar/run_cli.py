"""`trustmesh sidecar` (not built yet)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``sidecar`` command (none yet)."""
