"""Stand-ins for the unit tests of the sidecar's routers, which never reach a socket."""

from __future__ import annotations

from sdk.spiffeid import SpiffeId


class FixedIdentity:
    """The sidecar's identity as a router reads it: ``own`` as its SPIFFE ID, always valid, no
    bundles (a JWT-SVID cannot verify). Tests bump ``generation`` as an SVID rotation would."""

    def __init__(self, own: str) -> None:
        self.generation = 1
        self.spiffe_id = SpiffeId.parse(own)

    def valid(self, now: object = None) -> bool:
        return True

    def get_bundle_set(self) -> object:
        raise LookupError("no bundles in this test")


async def refuse_connections(pool: object, key: object) -> None:
    """A pool opener for routers that decide without connecting."""
    raise OSError("no connections in this test")
