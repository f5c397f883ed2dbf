"""The ``trustmesh`` command: argument parsing only.

Each component owns its subcommands in its own ``cli`` module, which exposes
``register(subparsers)``; this module wires them together and turns errors
into exit codes: 0 success, 1 validation failure or runtime error, 2 usage
error. Nothing imports this module.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from sdk.errors import TrustmeshError, UsageError

# Component command modules, in the order their commands are listed.
_COMPONENTS = (
    "ca.cli",
    "sdk.cli",
    "policy_dsl.cli",
    "sidecar.cli",
    "injector.cli",
    "trustmesh.demo",
    "trustmesh.flows",
)


_DESCRIPTION = """\
trustmesh gives every workload a short-lived SPIFFE identity (X.509-SVIDs and
JWT-SVIDs) and mutual TLS, and checks every request against attribute-based
policy before it reaches the application.

First steps: `trustmesh demo` runs a CA, five workloads with their sidecars and
a policy on this machine and shows which calls are allowed and why; `trustmesh
ca init --help` starts a CA of your own. `trustmesh COMMAND --help` tells more.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one clear line, exit 2
        self.exit(2, f"trustmesh: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="trustmesh", description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in _COMPONENTS:
        importlib.import_module(name).register(sub)
    return parser


def _version() -> str:
    from trustmesh import __version__

    return f"trustmesh {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UsageError as err:
        print(f"trustmesh: error: {err}", file=sys.stderr)
        return 2
    except TrustmeshError as err:
        print(f"trustmesh: {err}", file=sys.stderr)
        return 1
    except ValueError as err:  # policy_dsl's own error root is a ValueError
        print(f"trustmesh: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `trustmesh policy replay ... | head`: the reader left, nothing more to say
        _silence_stdout()
        return 1


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's final flush of what is still
    buffered does not fail a second time on the closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
