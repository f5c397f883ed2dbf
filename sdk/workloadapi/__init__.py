"""The application side of the SPIFFE Workload API.

* :class:`WorkloadApiClient` — the five standard RPCs, async, typed results.
* :class:`JwtSource` — JWT-SVIDs cached per audience and renewed in the
  background; local validation of incoming JWT-SVIDs with the sdk's rules
  against JWT bundles that the server streams.
* :class:`X509Source` — the current X.509-SVID and bundles, for apps that
  terminate their own TLS; :class:`SpiffeTls` makes ``ssl`` contexts from it
  that follow rotations, and verifies peers' SPIFFE IDs.
* :func:`fetch_jwt_svid` / :func:`validate_jwt_svid` — one-call helpers over a
  shared source; :mod:`sdk.workloadapi.sync` has blocking versions of all this.

The endpoint defaults to ``$SPIFFE_ENDPOINT_SOCKET`` (``unix:///path``).
Names load on first use, so importing this package does not import grpc.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sdk._lazy import lazy_exports

_EXPORTS = {
    "ENV_VAR": "sdk.workloadapi.address",
    "grpc_target": "sdk.workloadapi.address",
    "EndpointAddressError": "sdk.workloadapi.errors",
    "WorkloadApiError": "sdk.workloadapi.errors",
    "X509Context": "sdk.workloadapi._wire",
    "WorkloadApiClient": "sdk.workloadapi.client",
    "JwtSource": "sdk.workloadapi.jwtsource",
    "X509Source": "sdk.workloadapi.x509source",
    "SpiffeTls": "sdk.workloadapi.tls",
    "close_default_sources": "sdk.workloadapi.default",
    "default_jwt_source": "sdk.workloadapi.default",
    "fetch_jwt_svid": "sdk.workloadapi.default",
    "validate_jwt_svid": "sdk.workloadapi.default",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from sdk.workloadapi._wire import X509Context
    from sdk.workloadapi.address import ENV_VAR, grpc_target
    from sdk.workloadapi.client import WorkloadApiClient
    from sdk.workloadapi.default import (
        close_default_sources,
        default_jwt_source,
        fetch_jwt_svid,
        validate_jwt_svid,
    )
    from sdk.workloadapi.errors import EndpointAddressError, WorkloadApiError
    from sdk.workloadapi.jwtsource import JwtSource
    from sdk.workloadapi.tls import SpiffeTls
    from sdk.workloadapi.x509source import X509Source


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
