"""The operators of the language, applied to two present values.

Each returns a bool, or raises :class:`Incomparable` when the operands are of
a kind the operator cannot handle (a JSON string compared with ``>`` to a
number, say); the compiler turns that into *unknown*, like a missing value.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from policy_dsl.glob import compile_glob

__all__ = ["BINARY", "Incomparable", "glob_test", "ip_test"]


class Incomparable(Exception):
    """Operands of a kind the operator cannot handle: the test is unknown."""


def _kind(v) -> type:
    if type(v) is bool:
        return bool
    if isinstance(v, (int, float)):
        return float
    return type(v)


def _eq(l, r) -> bool:
    return l == r and (type(l) is bool) == (type(r) is bool)


def _equal(l, r) -> bool:
    """``==``: values of different kinds are not comparable, so the test is unknown.

    A caller-chosen JSON value such as ``["admin"]`` must not read as
    "certainly not equal to \"admin\"" and so escape a deny rule.
    """
    if _kind(l) is not _kind(r):
        raise Incomparable
    return l == r


def _ordered(l, r) -> None:
    kind = _kind(l)
    if kind is bool or kind != _kind(r) or kind not in (float, str) and not hasattr(l, "tzinfo"):
        raise Incomparable


def _lt(l, r):
    _ordered(l, r)
    return l < r


def _le(l, r):
    _ordered(l, r)
    return l <= r


def _gt(l, r):
    _ordered(l, r)
    return l > r


def _ge(l, r):
    _ordered(l, r)
    return l >= r


def _strings(l, r) -> None:
    if type(l) is not str or type(r) is not str:
        raise Incomparable


def _startswith(l, r):
    _strings(l, r)
    return l.startswith(r)


def _endswith(l, r):
    _strings(l, r)
    return l.endswith(r)


def _contains(l, r):
    if type(l) is str:
        if type(r) is not str:
            raise Incomparable
        return r in l
    if isinstance(l, list):
        return any(_eq(item, r) for item in l)
    raise Incomparable


def _in(l, r):
    """Membership; unknown when no element of a non-empty list is of ``l``'s kind."""
    if not isinstance(r, (list, tuple)):
        raise Incomparable
    kind, comparable = _kind(l), False
    for item in r:
        if _kind(item) is kind:
            if l == item:
                return True
            comparable = True
    if r and not comparable:
        raise Incomparable
    return False


BINARY = {
    "==": _equal,
    "!=": lambda l, r: not _equal(l, r),
    "<": _lt,
    "<=": _le,
    ">": _gt,
    ">=": _ge,
    "startswith": _startswith,
    "endswith": _endswith,
    "contains": _contains,
    "in": _in,
}


def ip_test(networks: tuple) -> Callable[[Any, Any], bool]:
    def in_cidr(l, _r):
        if type(l) is not str:
            raise Incomparable
        try:
            address = ipaddress.ip_address(l)
        except ValueError:
            raise Incomparable from None
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in net for net in networks)

    return in_cidr


def glob_test(pattern: str) -> Callable[[Any, Any], bool]:
    match = compile_glob(pattern)

    def matches(l, _r):
        if type(l) is not str:
            raise Incomparable
        return match(l)

    return matches
