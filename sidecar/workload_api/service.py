"""The five SPIFFE Workload API RPCs, served from an :class:`IdentitySource`.

Every call must carry the metadata ``workload.spiffe.io: true`` or it is
refused with InvalidArgument (SSRF hardening, Workload Endpoint standard §3).
The three streams send the full current state at once and again every time
the source's generation moves. Errors become gRPC status codes in one place,
:func:`_status_for`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import grpc

from sdk.errors import AuthorizationError, BundleError, JwtSvidError, SpiffeIdError
from sdk.jwtsvid import validate_jwt_svid
from sdk.proto import workload as pb
from sdk.spiffeid import SpiffeId
from sidecar.errors import IdentityUnavailableError
from sidecar.workload_api import _convert
from sidecar.workload_api.jwt_cache import JwtSvidCache
from sidecar.workload_api.source import IdentitySource

__all__ = ["WorkloadApiService", "generic_handler"]

log = logging.getLogger(__name__)

# Longest audience string accepted, and most audiences per request.
_MAX_AUDIENCE_LEN = 1024
_MAX_AUDIENCES = 16


class _Refused(Exception):
    """A request refused with a precise status and message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def _status_for(err: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and caller-facing message for an error raised while serving."""
    if isinstance(err, _Refused):
        return err.code, str(err)
    if isinstance(err, IdentityUnavailableError):
        return grpc.StatusCode.PERMISSION_DENIED, f"no identity available: {err}"
    if isinstance(err, (AuthorizationError, PermissionError)):
        return grpc.StatusCode.PERMISSION_DENIED, str(err)
    if isinstance(err, (JwtSvidError, SpiffeIdError)):
        return grpc.StatusCode.INVALID_ARGUMENT, str(err)
    if isinstance(err, BundleError):
        return grpc.StatusCode.UNAVAILABLE, f"trust bundle unavailable: {err}"
    if isinstance(err, (OSError, TimeoutError)):
        return grpc.StatusCode.UNAVAILABLE, f"identity provider unavailable: {err}"
    return grpc.StatusCode.INTERNAL, "internal error"


def _check_header(context: grpc.aio.ServicerContext) -> None:
    for key, value in context.invocation_metadata() or ():
        if key == pb.HEADER_KEY and value == pb.HEADER_VALUE:
            return
    raise _Refused(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"security header missing from request: metadata {pb.HEADER_KEY!r} must be "
        f"{pb.HEADER_VALUE!r}",
    )


def _audiences(values: Any) -> tuple[str, ...]:
    audiences = tuple(values)
    if not audiences:
        raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, "audience must be specified")
    if len(audiences) > _MAX_AUDIENCES:
        raise _Refused(
            grpc.StatusCode.INVALID_ARGUMENT, f"at most {_MAX_AUDIENCES} audiences are allowed"
        )
    for i, audience in enumerate(audiences):
        if not audience or len(audience) > _MAX_AUDIENCE_LEN:
            raise _Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"audience[{i}] must be 1 to {_MAX_AUDIENCE_LEN} characters",
            )
    return audiences


class WorkloadApiService:
    """Handlers for the SpiffeWorkloadAPI service over one identity source."""

    def __init__(
        self,
        source: IdentitySource,
        *,
        jwt_ttl: timedelta | None = None,
        jwt_cache: JwtSvidCache | None = None,
    ) -> None:
        self._source = source
        self._jwt_ttl = jwt_ttl
        self._jwt_cache = jwt_cache if jwt_cache is not None else JwtSvidCache()
        self._cache_generation = source.generation

    # -- X.509-SVID profile ------------------------------------------------

    async def FetchX509SVID(self, request: Any, context: Any) -> AsyncIterator[Any]:
        async for message in self._stream(context, "FetchX509SVID", self._x509_svid):
            yield message

    async def FetchX509Bundles(self, request: Any, context: Any) -> AsyncIterator[Any]:
        async for message in self._stream(context, "FetchX509Bundles", self._x509_bundles):
            yield message

    def _x509_svid(self) -> Any:
        return _convert.x509_svid_response(
            self._source.get_x509_svid(), self._source.get_bundle_set()
        )

    def _x509_bundles(self) -> Any:
        return _convert.x509_bundles_response(self._source.get_bundle_set())

    # -- JWT-SVID profile --------------------------------------------------

    async def FetchJWTSVID(self, request: Any, context: Any) -> Any:
        try:
            _check_header(context)
            audiences = _audiences(request.audience)
            svid = self._source.get_x509_svid()
            own_id = str(svid.spiffe_id)
            if self._source.generation != self._cache_generation:
                # new SVID or bundles (e.g. a JWT key rotation): mint afresh
                self._jwt_cache.clear()
                self._cache_generation = self._source.generation
            if request.spiffe_id:
                wanted = str(SpiffeId.parse(request.spiffe_id))
                if wanted != own_id:
                    raise _Refused(
                        grpc.StatusCode.PERMISSION_DENIED,
                        f"this workload is not entitled to {wanted}",
                    )
            token = await self._jwt_cache.get(
                own_id,
                audiences,
                lambda: self._source.mint_jwt_svid(audiences, self._jwt_ttl),
            )
            return pb.JWTSVIDResponse(svids=[pb.JWTSVID(spiffe_id=own_id, svid=token)])
        except Exception as err:
            await self._abort(context, "FetchJWTSVID", err)

    async def FetchJWTBundles(self, request: Any, context: Any) -> AsyncIterator[Any]:
        async for message in self._stream(context, "FetchJWTBundles", self._jwt_bundles):
            yield message

    def _jwt_bundles(self) -> Any:
        return _convert.jwt_bundles_response(self._source.get_bundle_set())

    async def ValidateJWTSVID(self, request: Any, context: Any) -> Any:
        try:
            _check_header(context)
            if not request.audience:
                raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, "audience must be specified")
            if not request.svid:
                raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, "svid must be specified")
            try:
                svid = validate_jwt_svid(
                    request.svid, self._source.get_bundle_set(), request.audience
                )
            except BundleError as err:  # no bundle for the token's trust domain
                raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, str(err)) from err
            response = pb.ValidateJWTSVIDResponse(spiffe_id=str(svid.spiffe_id))
            _convert.claims_struct(response, svid.claims)
            return response
        except Exception as err:
            await self._abort(context, "ValidateJWTSVID", err)

    # -- shared ------------------------------------------------------------

    async def _stream(
        self, context: Any, name: str, build: Callable[[], Any]
    ) -> AsyncIterator[Any]:
        """Send ``build()`` now and after every change of the source, until cancelled."""
        try:
            _check_header(context)
            generation = self._source.generation
            while True:
                yield build()
                generation = await self._source.changed(generation)
        except Exception as err:
            await self._abort(context, name, err)

    async def _abort(self, context: Any, method: str, err: Exception) -> None:
        code, message = _status_for(err)
        if code is grpc.StatusCode.INTERNAL:
            log.exception("workload API %s failed", method, exc_info=err)
        else:
            log.info("workload API %s refused: %s: %s", method, code.name, err)
        await context.abort(code, message)


def generic_handler(service: WorkloadApiService) -> grpc.GenericRpcHandler:
    """The gRPC handler that routes ``/SpiffeWorkloadAPI/*`` to ``service``."""
    handlers = {}
    for name, method in pb.METHODS.items():
        make = (
            grpc.unary_stream_rpc_method_handler
            if method.server_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        handlers[name] = make(
            getattr(service, name),
            request_deserializer=method.request.FromString,
            response_serializer=method.response.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(pb.SERVICE_NAME, handlers)
