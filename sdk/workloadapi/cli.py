"""``trustmesh api``: ask the SPIFFE Workload API from a shell (like ``spire-agent api``).

    trustmesh api fetch-x509 [--write DIR]          # SVID and bundles; files with --write
    trustmesh api fetch-jwt --audience A [--audience B]   # prints the token
    trustmesh api fetch-bundles [--jwt]             # PEM (or JWKS) of every trust domain
    trustmesh api validate-jwt --audience A TOKEN   # server-side validation

The endpoint is ``--socket`` or ``$SPIFFE_ENDPOINT_SOCKET``. Exit codes: 0
success, 1 the API refused (e.g. an invalid token: the reason is printed), 2
usage error (bad address, unwritable directory).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from sdk.errors import UsageError

__all__ = ["register"]

T = TypeVar("T")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``api fetch-x509|fetch-jwt|fetch-bundles|validate-jwt``."""
    api = subparsers.add_parser("api", help="query the SPIFFE Workload API (SVIDs, bundles, JWTs)")
    sub = api.add_subparsers(dest="api_command", metavar="ACTION", parser_class=type(api))
    sub.required = True

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--socket", metavar="ADDR", help="unix:///path or tcp://ip:port (default $SPIFFE_ENDPOINT_SOCKET)"
        )
        parser.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")

    x509 = sub.add_parser("fetch-x509", help="show the X.509-SVID and bundles; --write saves them")
    common(x509)
    x509.add_argument("--write", metavar="DIR", help="write svid.pem, svid.key (0600), bundle.pem")
    x509.set_defaults(func=_fetch_x509)

    jwt = sub.add_parser("fetch-jwt", help="print a JWT-SVID for the audience(s)")
    common(jwt)
    jwt.add_argument("--audience", action="append", required=True, metavar="AUD",
                     help="the audience the token is for (repeatable)")
    jwt.set_defaults(func=_fetch_jwt)

    bundles = sub.add_parser("fetch-bundles", help="print every trust domain's bundle")
    common(bundles)
    bundles.add_argument("--jwt", action="store_true", help="JWT bundles (JWKS) instead of X.509 (PEM)")
    bundles.set_defaults(func=_fetch_bundles)

    validate = sub.add_parser("validate-jwt", help="have the Workload API validate a JWT-SVID")
    common(validate)
    validate.add_argument("--audience", required=True, metavar="AUD", help="the audience the token must be for")
    validate.add_argument("token", metavar="TOKEN", help="the token, or '-' for stdin")
    validate.set_defaults(func=_validate_jwt)


def _run(args: argparse.Namespace, call: Callable[[Any], Awaitable[T]]) -> T:
    from sdk.workloadapi.client import WorkloadApiClient
    from sdk.workloadapi.errors import EndpointAddressError

    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")

    async def main() -> T:
        try:
            client = WorkloadApiClient(args.socket, timeout=args.timeout)
        except EndpointAddressError as err:
            raise UsageError(str(err)) from err
        async with client:
            return await call(client)

    return asyncio.run(main())


def _fetch_x509(args: argparse.Namespace) -> int:
    context = _run(args, lambda c: c.fetch_x509_context())
    svid = context.default_svid
    print(f"SPIFFE ID:     {svid.spiffe_id}")
    print(f"Expires:       {svid.expires_at:%Y-%m-%dT%H:%M:%SZ}")
    print(f"Chain length:  {len(svid.cert_chain)}")
    print(f"Trust domains: {', '.join(str(td) for td in context.bundles.trust_domains())}")
    if args.write:
        out = Path(args.write)
        if not out.is_dir():
            raise UsageError(f"--write: {out} is not a directory")
        bundle = context.bundles.get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
        (out / "svid.pem").write_bytes(svid.cert_chain_pem())
        key_path = out / "svid.key"
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(svid.private_key_pem())
        (out / "bundle.pem").write_bytes(bundle.to_pem())
        print(f"Wrote:         {out / 'svid.pem'}, {key_path}, {out / 'bundle.pem'}")
    return 0


def _fetch_jwt(args: argparse.Namespace) -> int:
    svid = _run(args, lambda c: c.fetch_jwt_svid(*args.audience))
    print(svid.token)
    return 0


def _fetch_bundles(args: argparse.Namespace) -> int:
    if args.jwt:
        bundles = _run(args, lambda c: c.fetch_jwt_bundles())
        for bundle in bundles.bundles():
            print(f"# {bundle.trust_domain.id()}")
            sys.stdout.write(bundle.to_jwks().decode())
    else:
        bundles = _run(args, lambda c: c.fetch_x509_bundles())
        for bundle in bundles.bundles():
            print(f"# {bundle.trust_domain.id()}")
            sys.stdout.write(bundle.to_pem().decode())
    return 0


def _validate_jwt(args: argparse.Namespace) -> int:
    from sdk.workloadapi.errors import WorkloadApiError

    token = sys.stdin.read(1024 * 1024).strip() if args.token == "-" else args.token.strip()
    try:
        svid = _run(args, lambda c: c.validate_jwt_svid(token, args.audience))
    except WorkloadApiError as err:
        if err.code != "INVALID_ARGUMENT":
            raise
        print(f"INVALID: {err}")
        return 1
    print(f"VALID {svid.spiffe_id}")
    print(f"  audience: {', '.join(svid.audience)}")
    print(f"  expires:  {svid.expiry:%Y-%m-%dT%H:%M:%SZ}")
    return 0
