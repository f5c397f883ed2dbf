"""Flows seen in access-log records: who called whom, with which method, on which path pattern.

Shared by ``trustmesh policy replay`` (to group changes) and ``trustmesh policy suggest`` (to
write rules). A path segment whose values vary in kind — a number, a UUID, a long hex string —
is generalised to ``*``, the policy language's one-segment glob.

    >>> path_pattern("/v1/orders/12345/items/3f2b8c1e-1d2a-4b7e-9c3d-2a1b0c9d8e7f")
    '/v1/orders/*/items/*'
"""

from __future__ import annotations

import re

__all__ = ["GENERIC", "generic_segment", "path_pattern"]

GENERIC = "*"
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
_HEX = re.compile(r"[0-9a-fA-F]{16,}\Z")
_NUMBER = re.compile(r"[0-9]+\Z")


def generic_segment(segment: str) -> str | None:
    """What kind of identifier ``segment`` is (``number``, ``uuid``, ``hex``), or None."""
    if _NUMBER.match(segment):
        return "number"
    if _UUID.match(segment):
        return "uuid"
    if _HEX.match(segment):
        return "hex"
    return None


def path_pattern(path: str) -> str:
    """``path`` with identifier-like segments replaced by ``*``."""
    return "/".join(GENERIC if segment and generic_segment(segment) else segment for segment in path.split("/"))
