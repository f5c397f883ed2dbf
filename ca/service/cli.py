"""`trustmesh ca serve --config FILE` runs the CA service;
`trustmesh ca join-token` adds a single-use join token to a service's token file;
`trustmesh ca federation list|show TD|refresh TD` asks a running service about its federation
relationships, over its loopback operations address (``listen.metrics``)."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any

__all__ = ["register", "ops_bundle"]

DEFAULT_OPS = "http://127.0.0.1:15014"


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
    join.add_argument("--tokens-file", required=True, metavar="FILE",
                      help="the join tokens file (created if missing; it keeps only hashes)")
    join.add_argument("--spiffe-id", required=True, help="the ID the token's user will receive")
    join.add_argument("--ttl", type=int, default=3600, help="seconds the token stays usable (default 3600)")
    join.set_defaults(func=_join_token)

    federation = ca_subparsers.add_parser(
        "federation",
        help="the trust domains a running CA service federates with: list, show, refresh",
        description="Ask a running CA service (its loopback operations address, listen.metrics) about the "
        "federation relationships of its config: list them with their bundle sequence, last success and "
        "failures; show one with its bundle; refresh one now (exit 1 if the refresh was refused).",
    )
    federation.add_argument("--ops", default=DEFAULT_OPS, metavar="URL", help=f"operations address (default {DEFAULT_OPS})")
    fed = federation.add_subparsers(dest="federation_command", metavar="ACTION", parser_class=type(federation))
    fed.required = True
    fed.add_parser("list", help="every relationship, one line each").set_defaults(func=_federation_list)
    for name, helptext, func in (
        ("show", "one relationship and its current bundle (JSON)", _federation_show),
        ("refresh", "fetch the trust domain's bundle now", _federation_refresh),
    ):
        cmd = fed.add_parser(name, help=helptext)
        cmd.add_argument("trust_domain", metavar="TD", help="the federated trust domain, e.g. partner.example")
        cmd.set_defaults(func=func)


def _ops(base: str, path: str, *, method: str = "GET") -> Any:
    """JSON (or text) from the service's operations server; errors name the address."""
    from sdk.errors import TrustmeshError

    url = base.rstrip("/") + path
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - an operator-given URL
            body = response.read()
    except urllib.error.HTTPError as err:
        raise TrustmeshError(f"{url}: {err.code}: {err.read().decode(errors='replace').strip()}") from err
    except (urllib.error.URLError, OSError) as err:
        raise TrustmeshError(f"cannot reach the CA service at {url}: {getattr(err, 'reason', err)}") from err
    return json.loads(body) if path.startswith("/federation") else body


def ops_bundle(base: str):  # type: ignore[no-untyped-def]
    """The own bundle of a running service (``GET /bundle`` on its operations server)."""
    from sdk.bundle import Bundle
    from sdk.errors import BundleError, TrustmeshError
    from sdk.spiffeid import TrustDomain

    data = _ops(base, "/bundle")
    try:
        doc = json.loads(data)
        td = doc.pop("trust_domain")
        return Bundle.parse_jwks(json.dumps(doc), TrustDomain.parse(td))
    except (ValueError, KeyError, BundleError) as err:
        raise TrustmeshError(f"{base}/bundle: not a bundle: {err}") from err


def _federation_list(args: argparse.Namespace) -> int:
    rows = _ops(args.ops, "/federation")
    if not rows:
        print("no federation relationships configured")
        return 0
    print(f"{'TRUST DOMAIN':24} {'PROFILE':13} {'SEQUENCE':>8} {'SOURCE':9} {'LAST SUCCESS':21} {'FAILURES':>8}  LAST ERROR")
    for r in rows:
        sequence = "-" if r["sequence"] is None else str(r["sequence"])
        print(f"{r['trust_domain']:24} {r['profile']:13} {sequence:>8} {r['source']:9} "
              f"{r['last_success'] or 'never':21} {r['failures']:>8}  {r['last_error'] or '-'}")
    return 0


def _federation_show(args: argparse.Namespace) -> int:
    json.dump(_ops(args.ops, f"/federation/{args.trust_domain}"), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def _federation_refresh(args: argparse.Namespace) -> int:
    state = _ops(args.ops, f"/federation/{args.trust_domain}/refresh", method="POST")
    if state["last_error"]:
        print(f"{args.trust_domain}: refresh refused, keeping sequence {state['sequence']}: {state['last_error']}")
        return 1
    print(f"{args.trust_domain}: bundle sequence {state['sequence']} ({state['source']}), next refresh {state['next_refresh']}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from ca.service.config import load_config

    from ca.service.errors import ConfigError

    config = load_config(args.config)  # ConfigError (a UsageError) -> exit 2, one line
    try:
        if args.check:
            from ca.service.federation import read_bootstrap_bundles

            read_bootstrap_bundles(config.federation)  # a missing or malformed bootstrap bundle is a config error too
            print(f"config ok: trust domain {config.trust_domain}")
            return 0
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        if config.workers > 1:
            from ca.service.workers import run_workers

            return run_workers(config)
        from ca.service.app import CaService

        asyncio.run(CaService(config).run())
    except ConfigError as err:  # found after loading (a file it names, the store): still this config's error
        if not err.file:
            err.in_file(args.config)
        raise
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
