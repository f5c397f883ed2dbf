"""`trustmesh ca serve --config FILE`: run the CA service."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(ca_subparsers: argparse._SubParsersAction) -> None:
    """Add ``ca serve`` to the ``ca`` command's subparsers."""
    serve = ca_subparsers.add_parser(
        "serve",
        help="run the CA service (gRPC issuance, bundle endpoint, metrics)",
        description="Run the CA service. The config file (YAML) names the trust domain, key store, "
        "identity template, authentication modes, limits and ports; see docs/ca-service.md. "
        "An invalid config is reported with the field at fault and nothing is started.",
    )
    serve.add_argument("--config", required=True, metavar="FILE", help="service configuration (YAML)")
    serve.add_argument("--check", action="store_true", help="validate the config and exit")
    serve.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from ca.service.config import load_config

    config = load_config(args.config)  # ConfigError (a UsageError) -> exit 2, one line
    if args.check:
        print(f"config ok: trust domain {config.trust_domain}")
        return 0
    from ca.service.app import CaService

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(CaService(config).run())
    return 0
