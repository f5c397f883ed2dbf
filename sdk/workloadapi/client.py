"""An async client of the SPIFFE Workload API (the standard gRPC service).

One client holds one gRPC channel; every call carries the security header
``workload.spiffe.io: true``. Server errors become :class:`WorkloadApiError`
with the gRPC status name in ``code``; answers are checked and converted to
sdk values (:class:`X509Svid`, :class:`BundleSet`, :class:`JwtSvid`)::

    async with WorkloadApiClient() as client:          # $SPIFFE_ENDPOINT_SOCKET
        ctx = await client.fetch_x509_context()
        token = await client.fetch_jwt_svid("spiffe://example.org/ns/prod/sa/db")
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc

from sdk.bundle import BundleSet
from sdk.errors import TrustmeshError
from sdk.jwtsvid import JwtSvid, parse_insecure
from sdk.proto import workload as pb
from sdk.spiffeid import SpiffeId
from sdk.workloadapi import _wire
from sdk.workloadapi.address import grpc_target
from sdk.workloadapi.errors import WorkloadApiError

__all__ = ["WorkloadApiClient"]

T = TypeVar("T")
_METADATA = ((pb.HEADER_KEY, pb.HEADER_VALUE),)


def _translate(err: grpc.aio.AioRpcError, method: str) -> WorkloadApiError:
    code = err.code()
    name = code.name if code is not None else "UNKNOWN"
    return WorkloadApiError(f"Workload API {method}: {name}: {err.details()}", name)


class WorkloadApiClient:
    """An async SPIFFE Workload API client over one gRPC channel."""

    def __init__(self, address: str | None = None, *, timeout: float = 10.0) -> None:
        self.target = grpc_target(address)
        self.timeout = timeout
        self._channel = grpc.aio.insecure_channel(self.target)
        self._calls = {
            name: (
                self._channel.unary_stream
                if method.server_streaming
                else self._channel.unary_unary
            )(
                method.path,
                request_serializer=method.request.SerializeToString,
                response_deserializer=method.response.FromString,
            )
            for name, method in pb.METHODS.items()
        }

    async def close(self) -> None:
        """Close the channel (cancels open streams)."""
        await self._channel.close()

    async def __aenter__(self) -> WorkloadApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- X.509-SVID profile --------------------------------------------------

    async def fetch_x509_context(self) -> _wire.X509Context:
        """The current X.509-SVIDs and bundles."""
        return await self._first("FetchX509SVID", _wire.x509_context)

    def watch_x509_context(self) -> AsyncIterator[_wire.X509Context]:
        """Every X.509 context the server pushes, starting with the current one."""
        return self._watch("FetchX509SVID", _wire.x509_context)

    async def fetch_x509_bundles(self) -> BundleSet:
        """The X.509 authorities of every trust domain the workload trusts."""
        return await self._first("FetchX509Bundles", _x509_bundles)

    def watch_x509_bundles(self) -> AsyncIterator[BundleSet]:
        """Every X.509 bundle set the server pushes."""
        return self._watch("FetchX509Bundles", _x509_bundles)

    # -- JWT-SVID profile ----------------------------------------------------

    async def fetch_jwt_svid(
        self, audience: str, *more_audiences: str, subject: SpiffeId | None = None
    ) -> JwtSvid:
        """A JWT-SVID for the audience(s); the server caches and renews it."""
        audiences = (audience, *more_audiences)
        if not all(audiences):
            raise WorkloadApiError("audience must be a non-empty string", "INVALID_ARGUMENT")
        request = pb.JWTSVIDRequest(
            audience=audiences, spiffe_id=str(subject) if subject else ""
        )
        response = await self._unary("FetchJWTSVID", request)
        if not response.svids:
            raise WorkloadApiError("malformed Workload API response: no JWT-SVID", "BAD_RESPONSE")
        try:
            svid = parse_insecure(response.svids[0].svid)
        except TrustmeshError as err:
            raise WorkloadApiError(
                f"malformed Workload API response: {err}", "BAD_RESPONSE"
            ) from err
        return svid

    async def fetch_jwt_bundles(self) -> BundleSet:
        """The JWT authorities of every trust domain the workload trusts."""
        return await self._first("FetchJWTBundles", _jwt_bundles)

    def watch_jwt_bundles(self) -> AsyncIterator[BundleSet]:
        """Every JWT bundle set the server pushes."""
        return self._watch("FetchJWTBundles", _jwt_bundles)

    async def validate_jwt_svid(self, token: str, audience: str) -> JwtSvid:
        """Have the server validate ``token`` for ``audience``; the token, parsed.

        A refused token raises :class:`WorkloadApiError` with code
        ``INVALID_ARGUMENT`` and the server's reason.
        """
        if not token or not audience:
            raise WorkloadApiError("token and audience must be non-empty", "INVALID_ARGUMENT")
        request = pb.ValidateJWTSVIDRequest(audience=audience, svid=token)
        response = await self._unary("ValidateJWTSVID", request)
        svid = parse_insecure(token)
        if str(svid.spiffe_id) != response.spiffe_id:
            raise WorkloadApiError(
                "malformed Workload API response: validated SPIFFE ID differs from the token's",
                "BAD_RESPONSE",
            )
        return svid

    # -- plumbing ------------------------------------------------------------

    async def _unary(self, name: str, request: Any) -> Any:
        try:
            return await self._calls[name](request, metadata=_METADATA, timeout=self.timeout)
        except grpc.aio.AioRpcError as err:
            raise _translate(err, name) from err

    async def _first(self, name: str, convert: Callable[[Any], T]) -> T:
        call = self._calls[name](
            pb.METHODS[name].request(), metadata=_METADATA, timeout=self.timeout
        )
        try:
            async for message in call:
                return convert(message)
        except grpc.aio.AioRpcError as err:
            raise _translate(err, name) from err
        finally:
            call.cancel()
        raise WorkloadApiError(f"Workload API {name}: stream ended without a message")

    async def _watch(self, name: str, convert: Callable[[Any], T]) -> AsyncIterator[T]:
        call = self._calls[name](pb.METHODS[name].request(), metadata=_METADATA)
        try:
            async for message in call:
                yield convert(message)
        except grpc.aio.AioRpcError as err:
            raise _translate(err, name) from err
        finally:
            call.cancel()
        raise WorkloadApiError(f"Workload API {name}: the server closed the stream")


def _x509_bundles(message: Any) -> BundleSet:
    if not message.bundles:
        raise WorkloadApiError("malformed Workload API response: no X.509 bundles", "BAD_RESPONSE")
    return _wire.x509_bundle_set(message.bundles)


def _jwt_bundles(message: Any) -> BundleSet:
    if not message.bundles:
        raise WorkloadApiError("malformed Workload API response: no JWT bundles", "BAD_RESPONSE")
    return _wire.jwt_bundle_set(message.bundles)
