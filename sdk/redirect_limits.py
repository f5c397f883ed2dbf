"""The limits of ``trustmesh redirect apply``, in the one place both sides read.

The redirect command (``sidecar.redirect``) enforces them on its arguments;
the injector, which renders those arguments into every injected pod's init
container, checks the lists it renders against the same values at
admission, so a pod it admits never sits in ``Init:Error`` for a list the
redirect then refuses. They live here because the injector may not import
the sidecar (see the layering contract in pyproject).

>>> too_long(range(MAX_LIST)) is None
True
>>> too_long(range(MAX_LIST + 1))
'257 entries; at most 256'
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["ALWAYS_EXCLUDED_INBOUND", "MAX_LIST", "too_long"]

#: The sidecar's admin and health ports: never captured inbound, never a capture port.
ALWAYS_EXCLUDED_INBOUND: tuple[int, ...] = (15000, 15021)
#: Longest accepted port or CIDR list (distinct entries): bounds the rule count and the eBPF maps.
MAX_LIST = 256


def too_long(items: Iterable[object]) -> str | None:
    """Why the redirect refuses this list (counted without duplicates), or None."""
    count = len(set(items))
    return f"{count} entries; at most {MAX_LIST}" if count > MAX_LIST else None
