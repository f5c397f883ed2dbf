"""``trustmesh ca``: create a CA directory, issue SVIDs, print the bundle, rotate.

Commands (exit 0 success, 1 failure, 2 usage error; one line on stderr)::

    trustmesh ca init --trust-domain TD --dir DIR [--key-type ec-p256|rsa-2048|rsa-3072]
                      [--ttl 8760h] [--upstream-cert F --upstream-key F]
    trustmesh ca issue --dir DIR --spiffe-id ID [--ttl 1h] [--dns NAME]... --out PREFIX
    trustmesh ca issue --dir DIR --spiffe-id ID --jwt --audience AUD [--ttl 5m]
    trustmesh ca bundle --dir DIR [--format jwks|pem]
    trustmesh ca rotate prepare|activate|taint --dir DIR [--force (taint only)]

If ``TRUSTMESH_CA_PASSPHRASE`` is set, the CA's keys are encrypted with it
(and it unlocks them, and an encrypted ``--upstream-key``).
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime, timedelta, timezone

from sdk.errors import SpiffeIdError, UsageError

__all__ = ["register", "parse_duration"]

PASSPHRASE_ENV = "TRUSTMESH_CA_PASSPHRASE"
_DIR_HELP = "the CA directory (keys and state, as written by `ca init`)"
_ROTATE_STEPS = {
    "prepare": "create the next authority in the standby slot; it joins the bundle but does not sign yet",
    "activate": "make the prepared authority the signer; the old one retires and stays in the bundle",
    "taint": "remove the retired authority from the bundle; what it signed stops validating",
}
def parse_duration(text: str) -> timedelta:
    """Parse ``8760h``, ``1h30m``, ``5m``, ``45s``, ``30d`` into a positive timedelta."""
    from sdk.config import duration_seconds

    try:
        seconds = duration_seconds(text)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if seconds <= 0:
        raise UsageError(f"duration {text!r} must be positive")
    return timedelta(seconds=seconds)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ca init|issue|bundle|rotate`` (and the service's ``ca serve``)."""
    ca = subparsers.add_parser("ca", help="the certificate authority: init, issue, bundle, rotate")
    sub = ca.add_subparsers(dest="ca_command", metavar="ACTION", parser_class=type(ca))
    sub.required = True

    init = sub.add_parser("init", help="create a CA directory (self-signed root or upstream intermediate)")
    init.add_argument("--trust-domain", required=True, metavar="TD",
                      help="the trust domain the CA signs for, e.g. example.org (lower case, no scheme)")
    init.add_argument("--dir", required=True, help=_DIR_HELP + "; created, and must not already hold a CA")
    init.add_argument("--key-type", default="ec-p256", choices=["ec-p256", "rsa-2048", "rsa-3072"],
                      help="the CA's key algorithm (default ec-p256)")
    init.add_argument("--ttl", default="8760h", help="CA lifetime (default 8760h)")
    init.add_argument("--upstream-cert", metavar="F", help="upstream CA certificate, then its chain to the root")
    init.add_argument("--upstream-key", metavar="F", help="the upstream CA's private key (PEM)")
    init.set_defaults(func=_init)

    issue = sub.add_parser("issue", help="issue an X509-SVID (files) or a JWT-SVID (stdout)")
    issue.add_argument("--dir", required=True, help=_DIR_HELP)
    issue.add_argument("--spiffe-id", required=True, metavar="ID",
                       help="the SVID's SPIFFE ID, in the CA's trust domain (spiffe://TD/path)")
    issue.add_argument("--ttl", help="lifetime (default 1h, or 5m with --jwt); capped by the CA")
    issue.add_argument("--dns", action="append", default=[], metavar="NAME", help="DNS SAN (repeatable)")
    issue.add_argument("--out", metavar="PREFIX", help="write PREFIX.crt, PREFIX.key, PREFIX.bundle.pem")
    issue.add_argument("--jwt", action="store_true", help="mint a JWT-SVID and print it")
    issue.add_argument("--audience", action="append", default=[], metavar="AUD", help="JWT audience (repeatable)")
    issue.set_defaults(func=_issue)

    bundle = sub.add_parser(
        "bundle", help="print the trust bundle",
        description="Print the trust bundle of a CA directory (--dir) or of a running CA service (--ops, its "
        "loopback operations address). --format spiffe (or jwks) is the SPIFFE bundle format, with "
        "spiffe_sequence and spiffe_refresh_hint: what another trust domain configures as the bootstrap "
        "bundle (federates_with[].bundle_file) of a federation relationship with this one.",
    )
    source = bundle.add_mutually_exclusive_group(required=True)
    source.add_argument("--dir", help=_DIR_HELP)
    source.add_argument("--ops", metavar="URL", help="a running service's operations address, e.g. http://127.0.0.1:15014")
    bundle.add_argument("--format", default="jwks", choices=["spiffe", "jwks", "pem"],
                        help="spiffe or jwks: the SPIFFE bundle (X.509 and JWT authorities); pem: X.509 authorities only")
    bundle.set_defaults(func=_bundle)

    rotate = sub.add_parser("rotate", help="rotate the CA: prepare, activate, taint",
                            description="Rotate the CA in three steps: prepare a new authority (it joins "
                            "the bundle), activate it (it signs from now on; the old one is retired but "
                            "still trusted), taint the retired one (it leaves the bundle).")
    steps = rotate.add_subparsers(dest="step", metavar="STEP", parser_class=type(ca))
    steps.required = True
    for step, text in _ROTATE_STEPS.items():
        parser = steps.add_parser(step, help=text, description=text[0].upper() + text[1:] + ".")
        parser.add_argument("--dir", required=True, help=_DIR_HELP)
        if step == "taint":
            parser.add_argument("--force", action="store_true",
                                help="taint even while SVIDs signed by the retired authority may still be "
                                "valid (they stop validating at once): for a compromised key")
        parser.set_defaults(func=_rotate)

    from ca.service import cli as service_cli

    service_cli.register(sub)


def _directory(path: str):  # type: ignore[no-untyped-def]
    from ca.store import CaDirectory

    secret = os.environ.get(PASSPHRASE_ENV)
    return CaDirectory(path, passphrase=secret.encode() if secret else None)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _init(args: argparse.Namespace) -> int:
    from ca.authority import load_upstream
    from ca.keys import KeyType, private_key_from_pem
    from ca.manager import CaConfig
    from sdk.spiffeid import TrustDomain

    try:
        td = TrustDomain.parse(args.trust_domain)
    except SpiffeIdError as err:
        raise UsageError(f"--trust-domain: {err}") from err
    ttl = parse_duration(args.ttl)
    if bool(args.upstream_cert) != bool(args.upstream_key):
        raise UsageError("--upstream-cert and --upstream-key go together")
    now = _now()
    upstream = None
    if args.upstream_cert:
        secret = os.environ.get(PASSPHRASE_ENV)
        key_data, cert_data = _read(args.upstream_key, "--upstream-key"), _read(args.upstream_cert, "--upstream-cert")
        key = private_key_from_pem(key_data, secret.encode() if secret and b"ENCRYPTED" in key_data else None,
                                   source=args.upstream_key)
        upstream = load_upstream(cert_data, key, now=now, source=args.upstream_cert)
    config = CaConfig(td, key_type=KeyType.parse(args.key_type), ca_ttl=ttl)
    ca = _directory(args.dir).init(config, now=now, upstream=upstream)
    active = ca.slots.active
    kind = "intermediate under the upstream CA" if upstream else "self-signed root"
    print(f"initialised CA for {td} in {args.dir}: authority {active.id} ({kind}), "
          f"valid until {active.expires_at.isoformat()}")
    return 0


def _read(path: str, flag: str) -> bytes:
    try:
        with open(path, "rb") as src:
            return src.read()
    except OSError as err:
        raise UsageError(f"{flag} {path}: {err.strerror or err}") from err


def _issue(args: argparse.Namespace) -> int:
    from ca.authority import chain_pem
    from ca.keys import generate_key, private_key_to_pem
    from sdk.spiffeid import SpiffeId

    try:
        spiffe_id = SpiffeId.parse(args.spiffe_id)
    except SpiffeIdError as err:
        raise UsageError(f"--spiffe-id: {err}") from err
    if args.jwt:
        if not args.audience:
            raise UsageError("--jwt needs at least one --audience")
        if args.out or args.dns:
            raise UsageError("--out and --dns apply to X509-SVIDs, not to --jwt")
        ttl = parse_duration(args.ttl or "5m")
        ca, now = _directory(args.dir).load(), _now()
        token, expiry = ca.mint_jwt_svid_with_expiry(spiffe_id, args.audience, ttl, now=now)
        print(token)
        _note_capped(args.ttl or "5m", ttl, expiry, now, ca.config.jwt_svid_max_ttl)
        return 0
    if args.audience:
        raise UsageError("--audience applies to --jwt only")
    if not args.out:
        raise UsageError("--out PREFIX is required for an X509-SVID")
    ttl = parse_duration(args.ttl or "1h")
    ca, now = _directory(args.dir).load(), _now()
    key = generate_key()
    chain = ca.issue_x509_svid(key.public_key(), spiffe_id, ttl, now=now, dns_names=args.dns)
    _write(f"{args.out}.key", private_key_to_pem(key), 0o600)
    _write(f"{args.out}.crt", chain_pem(chain), 0o644)
    _write(f"{args.out}.bundle.pem", ca.bundle().to_pem(), 0o644)
    print(f"{spiffe_id} valid until {chain[0].not_valid_after_utc.isoformat()}: "
          f"wrote {args.out}.crt, {args.out}.key, {args.out}.bundle.pem")
    _note_capped(args.ttl or "1h", ttl, chain[0].not_valid_after_utc, now, ca.config.x509_svid_max_ttl)
    return 0


def _write(path: str, data: bytes, mode: int) -> None:
    from ca.errors import CaStoreError

    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
    except OSError as err:
        raise CaStoreError(f"{path}: cannot write: {err.strerror or err}") from err


def _bundle(args: argparse.Namespace) -> int:
    if args.ops:
        from ca.service.cli import ops_bundle

        bundle = ops_bundle(args.ops)
    else:
        bundle = _directory(args.dir).load().bundle()
    data = bundle.to_pem() if args.format == "pem" else bundle.to_jwks()
    sys.stdout.write(data.decode())
    if not data.endswith(b"\n"):
        sys.stdout.write("\n")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    now = _now()
    with _directory(args.dir).update() as ca:
        if args.step == "taint":
            _check_taint(ca, now, force=args.force)
        authority = getattr(ca, args.step)(now)
        sequence = ca.sequence
    verb = {"prepare": "prepared", "activate": "activated", "taint": "tainted (removed from the bundle)"}
    print(f"{verb[args.step]} authority {authority.id}; bundle sequence {sequence}")
    return 0


def _check_taint(ca, now: datetime, *, force: bool) -> None:  # type: ignore[no-untyped-def]
    """Refuse (or, with ``force``, warn) while SVIDs signed by the retired authority may be valid.

    An SVID signed just before activation lives at most the CA's longest SVID
    lifetime after it, and never past the authority's own expiry.
    """
    from ca.errors import RotationError

    retired = ca.slots.retired
    if retired is None:
        return  # Slots.taint says there is nothing to taint
    until = retired.removable_at(ca.config.grace)
    if now >= until:
        return
    why = (f"SVIDs signed by retired authority {retired.id} may be valid until {until.isoformat(timespec='seconds')} "
           f"(retired at {retired.retired_at.isoformat(timespec='seconds') if retired.retired_at else '?'}, longest SVID "
           f"lifetime {_hours(ca.config.grace)}); tainting it now makes them fail to validate at once")
    if not force:
        raise RotationError(f"{why}: wait until then, or pass --force if its key is compromised")
    print(f"trustmesh: warning: {why}", file=sys.stderr)


def _hours(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    return f"{seconds // 60}m" if seconds % 60 == 0 else f"{seconds}s"


def _note_capped(flag_ttl: str, requested: timedelta, until: datetime, now: datetime, maximum: timedelta) -> None:
    """Say so when the CA issued a shorter lifetime than ``--ttl`` asked for."""
    granted = until - now
    if granted >= requested - timedelta(seconds=1):  # the CA's expiry is whole seconds
        return
    why = f"this CA's maximum is {_hours(maximum)}" if requested > maximum else "the CA itself expires then"
    print(f"trustmesh: note: --ttl {flag_ttl} was capped: valid until {until.isoformat(timespec='seconds')} ({why})",
          file=sys.stderr)
