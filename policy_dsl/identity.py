"""The attributes a SPIFFE ID gives a request: one function for the sidecar and the tools.

The sidecar calls :func:`identity_attributes` with the verified peer's ID; ``trustmesh policy
test|eval|replay`` call it with a case's or a log record's ``source.id``, so a case that gives
only the ID sees exactly what the sidecar would. Pure: the sidecar hands in an ID its ``sdk``
already parsed strictly; here only its shape is checked.

    >>> identity_attributes("spiffe://prod.example/ns/shop/sa/web")
    {'id': 'spiffe://prod.example/ns/shop/sa/web', 'trust_domain': 'prod.example', 'path': '/ns/shop/sa/web', 'attrs': {'ns': 'shop', 'sa': 'web'}}
"""

from __future__ import annotations

from typing import Any

__all__ = ["identity_attributes", "path_attributes"]

_SCHEME = "spiffe://"


def path_attributes(path: str) -> dict[str, str]:
    """A SPIFFE ID path read as ``key/value`` pairs, left to right; an odd last segment is
    left out, and a repeated key keeps its first value (as ``sdk.SpiffeId.attributes``)."""
    segments = path.split("/")[1:] if path else []
    attrs: dict[str, str] = {}
    for index in range(0, len(segments) - 1, 2):
        attrs.setdefault(segments[index], segments[index + 1])
    return attrs


def identity_attributes(spiffe_id: str) -> dict[str, Any]:
    """``id``, ``trust_domain``, ``path`` and ``attrs`` of ``spiffe_id``; ValueError if it is
    not shaped like a SPIFFE ID (scheme, lower-case trust domain, no empty segments)."""
    if not isinstance(spiffe_id, str) or not spiffe_id.startswith(_SCHEME):
        raise ValueError(f"not a SPIFFE ID (spiffe://<trust domain>/<path>): {spiffe_id!r}")
    trust_domain, slash, rest = spiffe_id[len(_SCHEME):].partition("/")
    path = slash + rest
    if not trust_domain or trust_domain != trust_domain.lower() or any(c in trust_domain for c in ":@?#"):
        raise ValueError(f"not a SPIFFE ID: bad trust domain {trust_domain!r} in {spiffe_id!r}")
    if path and ("" in path.split("/")[1:] or any(c in path for c in "?#")):
        raise ValueError(f"not a SPIFFE ID: empty path segment or query in {spiffe_id!r}")
    return {"id": spiffe_id, "trust_domain": trust_domain, "path": path, "attrs": path_attributes(path)}
