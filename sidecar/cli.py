"""`trustmesh` subcommands that belong to `sidecar`: `redirect` and `sidecar`."""

from __future__ import annotations

import argparse

from sidecar import run_cli
from sidecar.redirect import cli as redirect_cli


def register(subparsers: argparse._SubParsersAction) -> None:
    redirect_cli.register(subparsers)
    run_cli.register(subparsers)
