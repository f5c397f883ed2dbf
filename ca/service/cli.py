"""`trustmesh ca serve` (not built yet)."""

from __future__ import annotations

import argparse


def register(ca_subparsers: argparse._SubParsersAction) -> None:
    """Add ``ca serve`` to the ``ca`` command's subparsers (none yet)."""
