"""Headers only the sidecar may set, and the one rule that keeps callers from sending them.

The sidecar tells the app who called with ``x-forwarded-client-cert`` (the verified peer) and
``x-trustmesh-jwt-sub`` (a verified JWT-SVID), and keeps the whole ``x-trustmesh-`` prefix for
itself. A caller's copies, in any letter case, are removed before the policy runs, so neither
the policy nor the app ever reads a forged one; a name spelled with ``_`` for ``-``
(``x_trustmesh_role``) is refused instead, because CGI-style servers (WSGI, Rack, PHP) read both
spellings as one ``HTTP_X_TRUSTMESH_ROLE``.

Protocol-neutral: the functions take field names as lower-case bytes, which is what the
HTTP/1.1 parser hands out and what HTTP/2 and gRPC carry on the wire (RFC 9113 §8.2.1: a field
name with an upper-case letter is malformed there), so every protocol applies the same rule.

    >>> strip_identity_headers([(b"host", b"b"), (b"x-trustmesh-role", b"admin")])
    [(b'host', b'b')]
"""

from __future__ import annotations

from collections.abc import Sequence

from sidecar.errors import HttpError

__all__ = [
    "IDENTITY_PREFIX",
    "JWT_SUB_HEADER",
    "XFCC",
    "is_identity_header",
    "is_identity_lookalike",
    "refuse_identity_lookalikes",
    "strip_identity_headers",
]

XFCC = b"x-forwarded-client-cert"
"""Set on every forwarded request of a verified peer: ``By=<own ID>;URI=<peer ID>``."""
IDENTITY_PREFIX = b"x-trustmesh-"
"""Every field name starting with this is the sidecar's own."""
JWT_SUB_HEADER = b"x-trustmesh-jwt-sub"
"""Set on a forwarded request that carried a JWT-SVID which verified: its SPIFFE ID (``sub``)."""


def is_identity_header(name: bytes) -> bool:
    """True for a lower-case field name only the sidecar may set."""
    return name == XFCC or name.startswith(IDENTITY_PREFIX)


def is_identity_lookalike(name: bytes) -> bool:
    """True for a name that reads as an identity header once ``_`` is taken for ``-``."""
    return b"_" in name and is_identity_header(name.replace(b"_", b"-"))


def refuse_identity_lookalikes(headers: Sequence[tuple[bytes, bytes]]) -> None:
    """Raise ``HttpError(400)`` naming the first underscore spelling of an identity header."""
    for name, _ in headers:
        if is_identity_lookalike(name):
            raise HttpError(400, f"identity header spelled with underscores: {name.decode('latin-1')}")


def strip_identity_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``headers`` without the identity headers a caller sent (the same list when it has none)."""
    for name, _ in headers:
        if is_identity_header(name):
            return [(n, v) for n, v in headers if not is_identity_header(n)]
    return headers
