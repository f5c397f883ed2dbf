"""Authorizers over SPIFFE IDs: callables that return ``None`` or raise.

A :data:`Matcher` is called with the peer's verified SPIFFE ID. It returns
``None`` when the ID is allowed and raises
:class:`~sdk.errors.AuthorizationError` with the reason when it is not, so a
forgotten return value can never turn into an allow::

    >>> allow = match_member_of(TrustDomain.parse("example.org"))
    >>> allow(SpiffeId.parse("spiffe://example.org/web"))   # allowed: returns None
    >>> allow(SpiffeId.parse("spiffe://other.org/web"))
    Traceback (most recent call last):
    ...
    sdk.errors.AuthorizationError: unexpected trust domain 'other.org' \
for 'spiffe://other.org/web'; expected 'example.org'
"""

from __future__ import annotations

from collections.abc import Callable

from sdk.errors import AuthorizationError
from sdk.spiffeid import SpiffeId, TrustDomain

__all__ = ["Matcher", "match_any", "match_id", "match_member_of", "match_one_of"]

Matcher = Callable[[SpiffeId], None]


def _require(value: object, kind: type, what: str) -> None:
    # A str where a SpiffeId belongs would never compare equal: say so now.
    if not isinstance(value, kind):
        raise TypeError(f"{what} must be a {kind.__name__}, not {type(value).__name__}")


def match_any() -> Matcher:
    """Allow any SPIFFE ID (the chain has still been verified against a bundle)."""

    def matcher(actual: SpiffeId) -> None:
        _require(actual, SpiffeId, "peer ID")

    return matcher


def match_id(id: SpiffeId) -> Matcher:  # noqa: A002 - the agreed API name
    """Allow exactly the SPIFFE ID ``id``."""
    _require(id, SpiffeId, "expected ID")
    expected = id

    def matcher(actual: SpiffeId) -> None:
        _require(actual, SpiffeId, "peer ID")
        if actual != expected:
            raise AuthorizationError(f"unexpected ID '{actual}'; expected '{expected}'")

    return matcher


def match_one_of(*ids: SpiffeId) -> Matcher:
    """Allow any of ``ids``; with no IDs at all, allow nothing."""
    for each in ids:
        _require(each, SpiffeId, "expected ID")
    allowed = frozenset(ids)
    listed = ", ".join(f"'{each}'" for each in sorted(allowed)) or "none"

    def matcher(actual: SpiffeId) -> None:
        _require(actual, SpiffeId, "peer ID")
        if actual not in allowed:
            raise AuthorizationError(f"unexpected ID '{actual}'; expected one of {listed}")

    return matcher


def match_member_of(td: TrustDomain) -> Matcher:
    """Allow any SPIFFE ID in trust domain ``td``."""
    _require(td, TrustDomain, "trust domain")

    def matcher(actual: SpiffeId) -> None:
        _require(actual, SpiffeId, "peer ID")
        if not actual.member_of(td):
            raise AuthorizationError(
                f"unexpected trust domain '{actual.trust_domain}' for '{actual}'; expected '{td}'"
            )

    return matcher
