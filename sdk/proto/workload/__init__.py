"""The SPIFFE Workload API wire contract: message classes and method table.

``workload.proto`` matches the SPIFFE standard byte for byte on the wire; it
has no protobuf package, so its message names (``X509SVIDRequest``...) are
global. To coexist with other copies of the same definitions in one process
(py-spiffe registers its own), the file is loaded into a private
:data:`POOL` instead of protobuf's default pool. gRPC never sees descriptors,
only the method paths and (de)serializers in :data:`METHODS`; the server's
reflection service is given :data:`POOL`.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from sdk.proto.workload._descriptor import FILE_DESCRIPTOR_SET

__all__ = [
    "HEADER_KEY",
    "HEADER_VALUE",
    "JWTBundlesRequest",
    "JWTBundlesResponse",
    "JWTSVID",
    "JWTSVIDRequest",
    "JWTSVIDResponse",
    "METHODS",
    "Method",
    "POOL",
    "SERVICE_NAME",
    "ValidateJWTSVIDRequest",
    "ValidateJWTSVIDResponse",
    "X509BundlesRequest",
    "X509BundlesResponse",
    "X509SVID",
    "X509SVIDRequest",
    "X509SVIDResponse",
]

SERVICE_NAME = "SpiffeWorkloadAPI"
# The static security header every Workload API request must carry.
HEADER_KEY = "workload.spiffe.io"
HEADER_VALUE = "true"

POOL = descriptor_pool.DescriptorPool()
for _file in descriptor_pb2.FileDescriptorSet.FromString(FILE_DESCRIPTOR_SET).file:
    POOL.Add(_file)


def _message(name: str) -> type:
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName(name))


X509SVIDRequest = _message("X509SVIDRequest")
X509SVIDResponse = _message("X509SVIDResponse")
X509SVID = _message("X509SVID")
X509BundlesRequest = _message("X509BundlesRequest")
X509BundlesResponse = _message("X509BundlesResponse")
JWTSVIDRequest = _message("JWTSVIDRequest")
JWTSVIDResponse = _message("JWTSVIDResponse")
JWTSVID = _message("JWTSVID")
JWTBundlesRequest = _message("JWTBundlesRequest")
JWTBundlesResponse = _message("JWTBundlesResponse")
ValidateJWTSVIDRequest = _message("ValidateJWTSVIDRequest")
ValidateJWTSVIDResponse = _message("ValidateJWTSVIDResponse")


@dataclass(frozen=True)
class Method:
    """One RPC of the service: its name, message classes and streaming shape."""

    name: str
    request: type
    response: type
    server_streaming: bool

    @property
    def path(self) -> str:
        """The gRPC method path on the wire, e.g. ``/SpiffeWorkloadAPI/FetchX509SVID``."""
        return f"/{SERVICE_NAME}/{self.name}"


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("FetchX509SVID", X509SVIDRequest, X509SVIDResponse, True),
        Method("FetchX509Bundles", X509BundlesRequest, X509BundlesResponse, True),
        Method("FetchJWTSVID", JWTSVIDRequest, JWTSVIDResponse, False),
        Method("FetchJWTBundles", JWTBundlesRequest, JWTBundlesResponse, True),
        Method("ValidateJWTSVID", ValidateJWTSVIDRequest, ValidateJWTSVIDResponse, False),
    )
}

