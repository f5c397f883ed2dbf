"""`trustmesh` subcommands that belong to `sdk`: ``svid inspect`` and ``jwt validate``.

Exit codes: 0 valid, 1 invalid (the reason is printed), 2 usage error (a
missing file, a bad option value).
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from sdk.errors import TrustmeshError, UsageError

if TYPE_CHECKING:
    from cryptography import x509

    from sdk.bundle import Bundle
    from sdk.spiffeid import TrustDomain

_MAX_INPUT_BYTES = 1024 * 1024


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``svid inspect``, ``jwt validate`` and the Workload API client ``api``."""
    svid = subparsers.add_parser("svid", help="inspect X.509-SVIDs")
    svid_sub = svid.add_subparsers(dest="svid_command", metavar="ACTION")
    svid_sub.required = True
    inspect = svid_sub.add_parser(
        "inspect",
        help="show an X.509-SVID's ID, validity and chain, and whether it validates",
        description="Show the SPIFFE ID, validity window and chain of a certificate file "
        "(PEM or DER, leaf first), check the X509-SVID leaf rules and, with --bundle, "
        "verify the chain against that bundle. The bundle's trust domain is the one its CA "
        "certificates name (or --trust-domain), never the leaf's own claim.",
    )
    inspect.add_argument("file", metavar="FILE", help="certificate chain, PEM or DER, leaf first")
    inspect.add_argument("--bundle", metavar="F", help="trust bundle: SPIFFE JWKS or PEM")
    inspect.add_argument(
        "--trust-domain", metavar="TD",
        help="trust domain of --bundle (default: the one its CA certificates name; never the leaf's own claim)",
    )
    inspect.set_defaults(func=_svid_inspect)

    jwt_parser = subparsers.add_parser("jwt", help="validate JWT-SVIDs")
    jwt_sub = jwt_parser.add_subparsers(dest="jwt_command", metavar="ACTION")
    jwt_sub.required = True
    validate = jwt_sub.add_parser(
        "validate",
        help="validate a JWT-SVID against a bundle for an audience",
        description="Validate a JWT-SVID: header rules, signature by a key of the bundle, "
        "subject, audience and expiry.",
    )
    validate.add_argument("token", metavar="TOKEN", help="the token, '-' for stdin, or @FILE")
    validate.add_argument("--bundle", metavar="F", required=True, help="trust bundle (SPIFFE JWKS)")
    validate.add_argument("--audience", metavar="A", required=True, help="the audience you expect")
    validate.add_argument(
        "--trust-domain", metavar="TD",
        help="trust domain of --bundle (default: the one its CA certificates name; never the token's own sub)",
    )
    validate.set_defaults(func=_jwt_validate)

    from sdk.workloadapi import cli as api_cli

    api_cli.register(subparsers)


# -- svid inspect ----------------------------------------------------------------


def _svid_inspect(args: argparse.Namespace) -> int:
    from sdk.errors import X509SvidError
    from sdk.x509svid import parse_certificates, validate_leaf, verify_chain

    chosen_td = _trust_domain(args.trust_domain) if args.trust_domain else None
    chain = parse_certificates(_read(args.file, "certificate file"), source=args.file)
    now = datetime.now(timezone.utc)
    leaf = chain[0]
    out = sys.stdout
    try:
        spiffe_id = validate_leaf(leaf)
        leaf_problem = None
    except X509SvidError as err:
        spiffe_id = None
        leaf_problem = str(err)
    print(f"SPIFFE ID:  {spiffe_id if spiffe_id else _uri_sans(leaf) or '(none)'}", file=out)
    print(
        f"Valid:      {_when(leaf.not_valid_before_utc)} to {_when(leaf.not_valid_after_utc)}"
        f" ({_remaining(leaf, now)})",
        file=out,
    )
    print("Chain:", file=out)
    for index, cert in enumerate(chain):
        print(f"  [{index}] {_describe(cert, index)}", file=out)
    if leaf_problem:
        print(f"Result:     INVALID: {leaf_problem}", file=out)
        return 1
    assert spiffe_id is not None
    if not args.bundle:
        print("Result:     leaf passes the X509-SVID rules; chain not verified (no --bundle)", file=out)
        return 0
    bundle = _load_bundle(args.bundle, chosen_td)
    td = bundle.trust_domain
    try:
        verify_chain(chain, bundle, now=now)
    except X509SvidError as err:
        print(f"Result:     INVALID: {err}", file=out)
        return 1
    print(f"Result:     VALID against the bundle for '{td}'", file=out)
    return 0


def _describe(cert: x509.Certificate, index: int) -> str:
    from cryptography import x509 as _x509

    try:
        basic = cert.extensions.get_extension_for_class(_x509.BasicConstraints).value
        role = "CA" if basic.ca else "leaf"
    except _x509.ExtensionNotFound:
        role = "no basicConstraints"
    except (_x509.UnsupportedGeneralNameType, ValueError):
        role = "unreadable extensions"
    subject = cert.subject.rfc4514_string() or "(empty subject)"
    return (
        f"{subject} [{role}] issuer {cert.issuer.rfc4514_string() or '(empty)'}; "
        f"{_when(cert.not_valid_before_utc)} to {_when(cert.not_valid_after_utc)}"
    )


def _uri_sans(cert: x509.Certificate) -> str:
    from cryptography import x509 as _x509

    try:
        sans = cert.extensions.get_extension_for_class(_x509.SubjectAlternativeName).value
    except (_x509.ExtensionNotFound, _x509.UnsupportedGeneralNameType, ValueError):
        return ""
    return ", ".join(sans.get_values_for_type(_x509.UniformResourceIdentifier))


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _remaining(cert: x509.Certificate, now: datetime) -> str:
    if now < cert.not_valid_before_utc:
        return "not yet valid"
    left = cert.not_valid_after_utc - now
    if left.total_seconds() < 0:
        return "expired"
    minutes = int(left.total_seconds() // 60)
    return f"expires in {minutes // 60}h{minutes % 60:02d}m"


# -- jwt validate ----------------------------------------------------------------


def _jwt_validate(args: argparse.Namespace) -> int:
    from sdk.jwtsvid import validate_jwt_svid

    token = _token(args.token)
    td = _trust_domain(args.trust_domain) if args.trust_domain else None
    bundle = _load_bundle(args.bundle, td)
    svid = validate_jwt_svid(token, bundle, args.audience)
    print(f"VALID {svid.spiffe_id}")
    print(f"  audience: {', '.join(svid.audience)}")
    print(f"  expires:  {_when(svid.expiry)}")
    return 0


def _token(value: str) -> str:
    if value == "-":
        return sys.stdin.read(_MAX_INPUT_BYTES).strip()
    if value.startswith("@"):
        return _read(value[1:], "token file").decode("ascii", "replace").strip()
    return value.strip()


# -- shared ----------------------------------------------------------------------


def _read(path: str, what: str) -> bytes:
    try:
        with Path(path).open("rb") as handle:
            data = handle.read(_MAX_INPUT_BYTES + 1)
    except OSError as err:
        raise UsageError(f"cannot read {what} {path}: {err.strerror or err}") from err
    if len(data) > _MAX_INPUT_BYTES:
        raise UsageError(f"{what} {path} is larger than {_MAX_INPUT_BYTES} bytes")
    return data


def _trust_domain(text: str) -> TrustDomain:
    from sdk.spiffeid import TrustDomain

    try:
        return TrustDomain.parse(text)
    except TrustmeshError as err:
        raise UsageError(f"--trust-domain: {err}") from err


def _load_bundle(path: str, td: TrustDomain | None) -> Bundle:
    """Read a bundle file: SPIFFE JWKS if it is JSON, else PEM certificates.

    Without ``--trust-domain`` the bundle's trust domain is the one its CA
    certificates name: what is checked against it (a leaf's URI SAN, a
    token's ``sub``) is the claim under test, so it cannot choose its judge.
    """
    from sdk.bundle import Bundle
    from sdk.errors import BundleError, BundleTrustDomainError

    data = _read(path, "bundle")
    parse = Bundle.parse_jwks if data.lstrip().startswith(b"{") else Bundle.parse_pem
    try:
        return parse(data, td)
    except BundleTrustDomainError as err:
        raise UsageError(f"bundle {path}: {err}; give its trust domain with --trust-domain") from err
    except BundleError as err:
        raise BundleError(f"--bundle {path}: {err}") from err
