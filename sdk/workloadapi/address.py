"""Where the Workload API is: ``SPIFFE_ENDPOINT_SOCKET`` as the standard defines it.

``unix:///abs/path`` (or ``unix:/abs/path``) for a Unix socket, or
``tcp://<ip>:<port>`` with an IP address, never a host name; nothing else
(no query, fragment, user info or path after a TCP port).
"""

from __future__ import annotations

import ipaddress
import os
from urllib.parse import urlsplit

from sdk.workloadapi.errors import EndpointAddressError

__all__ = ["ENV_VAR", "grpc_target"]

ENV_VAR = "SPIFFE_ENDPOINT_SOCKET"


def grpc_target(address: str | None = None) -> str:
    """The gRPC channel target for ``address`` (default: ``$SPIFFE_ENDPOINT_SOCKET``)."""
    if address is None:
        address = os.environ.get(ENV_VAR)
        if not address:
            raise EndpointAddressError(
                f"no Workload API address given and {ENV_VAR} is not set"
            )
    try:
        parts = urlsplit(address)
        port = parts.port if parts.scheme == "tcp" else None
    except ValueError as err:
        raise EndpointAddressError(f"{address!r}: {err}") from err
    if parts.query or parts.fragment or parts.username or parts.password:
        raise EndpointAddressError(
            f"{address!r}: query, fragment and user info are not allowed"
        )
    if parts.scheme == "unix":
        if parts.netloc:
            raise EndpointAddressError(
                f"{address!r}: a unix address has no authority; write unix:///absolute/path"
            )
        if not parts.path.startswith("/"):
            raise EndpointAddressError(f"{address!r}: the socket path must be absolute")
        return f"unix:{parts.path}"
    if parts.scheme == "tcp":
        if parts.path:
            raise EndpointAddressError(f"{address!r}: a tcp address has no path")
        try:
            ip = ipaddress.ip_address(parts.hostname or "")
        except ValueError as err:
            raise EndpointAddressError(
                f"{address!r}: the host must be an IP address, not a name"
            ) from err
        if port is None:
            raise EndpointAddressError(f"{address!r}: a tcp address needs a port")
        return f"ipv4:{ip}:{port}" if ip.version == 4 else f"ipv6:[{ip}]:{port}"
    raise EndpointAddressError(
        f"{address!r}: the scheme must be unix or tcp, not {parts.scheme or 'missing'!r}"
    )
