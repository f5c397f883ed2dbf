"""The attributes a condition can read, their types, and literal conversions.

The schema mirrors the request attributes the sidecar hands to
:meth:`PolicySet.evaluate` (see docs/policy.md). ``resolve`` tells the checker
and the compiler what a dotted path means; the ``parse_*`` helpers turn
checked literals into runtime values.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime, timezone

__all__ = [
    "BOOL",
    "DYNAMIC",
    "ENUMS",
    "GRPC_MESSAGE",
    "NUMBER",
    "OBJECT",
    "STRING",
    "TIME",
    "AttributeType",
    "Resolution",
    "parse_network",
    "parse_timestamp",
    "resolve",
]

STRING = "string"
NUMBER = "number"
BOOL = "bool"
TIME = "time"
DYNAMIC = "dynamic"  # JSON body fields and JWT claims: type known only at run time
OBJECT = "object"  # a group of attributes (``request.jwt``): only ``has`` may read it

AttributeType = str


@dataclass(frozen=True, slots=True)
class _Map:
    """A string-keyed map whose values all have one type (``source.attrs``)."""

    value: AttributeType
    lower_case_keys: bool = False


_SCHEMA: dict = {
    "source": {
        "id": STRING,
        "trust_domain": STRING,
        "path": STRING,
        "attrs": _Map(STRING),
        "authenticated": BOOL,
        "ip": STRING,
    },
    "destination": {"id": STRING, "attrs": _Map(STRING), "port": NUMBER},
    "request": {
        "method": STRING,
        "path": STRING,
        "host": STRING,
        "port": NUMBER,
        "query": _Map(STRING),
        "headers": _Map(STRING, lower_case_keys=True),
        "json": DYNAMIC,
        "jwt": {"sub": STRING, "claims": DYNAMIC},
        "protocol": STRING,
        # a gRPC call: its service (full protobuf name), method, and request message fields
        "grpc": {"service": STRING, "method": STRING, "message": DYNAMIC},
    },
    "context": {"protocol": STRING, "time": TIME},
}

# Values some attributes can take; comparing with anything else never matches.
ENUMS = {
    ("context", "protocol"): ("http", "tcp"),
    ("request", "protocol"): ("http/1.1", "h2", "grpc"),
}

# Where a gRPC request message's fields are read: the sidecar decodes them only with the
# service's descriptors (its config's grpc.descriptors).
GRPC_MESSAGE = ("request", "grpc", "message")


@dataclass(frozen=True, slots=True)
class Resolution:
    """What a dotted path names: its type, or why it names nothing.

    ``bad_index`` is the index of the first wrong segment when ``error`` is set.
    """

    type: AttributeType | None
    error: str = ""
    bad_index: int = 0


def resolve(path: tuple[str, ...]) -> Resolution:
    """Look ``path`` up in the schema."""
    node = _SCHEMA
    for index, segment in enumerate(path):
        if node == DYNAMIC:
            return Resolution(DYNAMIC)
        if isinstance(node, _Map):
            if node.lower_case_keys and segment != segment.lower():
                return Resolution(None, f'header names are lower-case: write "{segment.lower()}"', index)
            if index != len(path) - 1:
                return Resolution(None, f'"{".".join(path[: index + 1])}" is a {node.value}; it has no fields', index + 1)
            return Resolution(node.value)
        if not isinstance(node, dict):
            return Resolution(None, f'"{".".join(path[:index])}" is a {node}; it has no fields', index)
        if segment not in node:
            where = ".".join(path[:index]) or "the top level"
            names = ", ".join(node)
            return Resolution(
                None, f'unknown attribute "{".".join(path[: index + 1])}"; {where} has: {names}', index
            )
        node = node[segment]
    if isinstance(node, (dict, _Map)):
        return Resolution(OBJECT)
    return Resolution(node)


def parse_timestamp(text: str) -> datetime | None:
    """An RFC 3339 UTC timestamp (``2026-01-31T12:00:00Z``), or None if it is not one."""
    if not text.endswith("Z") or "T" not in text:
        return None
    try:
        value = datetime.fromisoformat(text[:-1] + "+00:00")
    except ValueError:
        return None
    return value.astimezone(timezone.utc)


def parse_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A CIDR block; raises ValueError with the reason (host bits set, bad prefix...)."""
    return ipaddress.ip_network(text, strict=True)
