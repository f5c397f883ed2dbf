"""`trustmesh ca serve --config FILE` runs the CA service;
`trustmesh ca join-token` adds a single-use join token to a service's token file."""

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

    join = ca_subparsers.add_parser(
        "join-token",
        help="create a single-use join token for the CA service (local mode)",
        description="Add a join token to FILE (the service's authentication.join_tokens_file; "
        "it sees new tokens without a restart) and print the token once. The file keeps only its hash.",
    )
    join.add_argument("--tokens-file", required=True, metavar="FILE")
    join.add_argument("--spiffe-id", required=True, help="the ID the token's user will receive")
    join.add_argument("--ttl", type=int, default=3600, help="seconds the token stays usable (default 3600)")
    join.set_defaults(func=_join_token)


def _serve(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from ca.service.config import load_config

    config = load_config(args.config)  # ConfigError (a UsageError) -> exit 2, one line
    if args.check:
        print(f"config ok: trust domain {config.trust_domain}")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if config.workers > 1:
        from ca.service.workers import run_workers

        return run_workers(config)
    from ca.service.app import CaService

    asyncio.run(CaService(config).run())
    return 0


def _join_token(args: argparse.Namespace) -> int:
    from ca.service.local_auth import JoinTokens
    from sdk.errors import SpiffeIdError, UsageError
    from sdk.spiffeid import SpiffeId

    try:
        sid = SpiffeId.parse(args.spiffe_id)
    except SpiffeIdError as err:
        raise UsageError(f"--spiffe-id: {err}") from err
    if not sid.path:
        raise UsageError("--spiffe-id: a workload ID needs a path")
    if args.ttl <= 0:
        raise UsageError("--ttl must be positive")
    print(JoinTokens(sid.trust_domain, path=args.tokens_file).create(sid, args.ttl))
    return 0
