"""`trustmesh` subcommands that belong to `sidecar`."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this component's subcommands (none yet)."""
