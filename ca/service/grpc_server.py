"""The ``trustmesh.ca.v1.CA`` gRPC servicer (grpc.aio).

Each issuing call runs the same pipeline: check the
request (CSR proof of possession and key policy, audiences, DNS names) →
authenticate the bearer token → per-identity rate limit → the DNS-name
allow-list (serving certificates) → sign. Every outcome is counted
in the metrics and written to the audit log; every error becomes a status
code in :func:`ca.service.status.status_for` only.

The request is checked before authentication so that a malformed request
never uses up a single-use join token. The call's deadline (the client's,
capped by ``limits.deadline_seconds``) bounds authentication, the only step
that can wait (on the Kubernetes API); a caller already known without I/O
(a cached decision, a static token) is served without arming a timer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

from ca.service.audit import AuditLog
from ca.service.auth import Authenticator
from ca.service.config import LimitsConfig
from ca.service.csr import public_key_from_csr
from ca.service.dns_policy import DnsNamePolicy, dns_names_from_request
from ca.service.identity import Caller
from ca.service.issuance import Issuance
from ca.service.metrics import ServiceMetrics
from ca.service.publisher import BundleHub
from ca.service.errors import StreamLimitError, UnauthenticatedError
from ca.service.ratelimit import RateLimiter
from ca.service.renewal import SvidRenewal
from ca.service.status import status_for
from ca.service.watchers import WatcherSlots
from ca.service import wire
from sdk.proto import ca_pb2, ca_pb2_grpc
from sdk.spiffeid import SpiffeId

__all__ = ["CaServicer", "MAX_WATCHERS"]

# Bundle streams need no credential, so their number is capped.
MAX_WATCHERS = 10_000


class _Call:
    """One call's state: its deadline (seconds) and, once known, the authenticated caller."""

    __slots__ = ("deadline", "caller")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.caller: Caller | None = None


def _authorization(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else value.decode("ascii", "replace")
    return None


class CaServicer(ca_pb2_grpc.CAServicer):
    """Authenticated issuance and bundle distribution."""

    def __init__(
        self,
        *,
        issuance: Issuance,
        authenticator: Authenticator,
        limiter: RateLimiter,
        hub: BundleHub,
        audit: AuditLog,
        metrics: ServiceMetrics,
        limits: LimitsConfig,
        renewal: SvidRenewal | None = None,
        dns_policy: DnsNamePolicy | None = None,
        max_watchers: int = MAX_WATCHERS,
        federation_scope: Callable[[SpiffeId], tuple[str, ...]] | None = None,
    ) -> None:
        self.issuance, self.authenticator, self.limiter = issuance, authenticator, limiter
        self.hub, self.audit, self.metrics, self.limits = hub, audit, metrics, limits
        self._watchers = WatcherSlots(limits.max_bundle_watchers_per_client, max_watchers)
        self.renewal = renewal
        self.dns_policy = dns_policy or DnsNamePolicy()
        self.federation_scope = federation_scope  # which federated trust domains a workload is to trust

    async def SignX509SVID(self, request: ca_pb2.SignX509SVIDRequest, context) -> ca_pb2.SignX509SVIDResponse:
        async def run(call: _Call) -> ca_pb2.SignX509SVIDResponse:
            public_key = public_key_from_csr(request.csr, self.limits.max_csr_bytes)
            ttl = wire.ttl_from_request(request.requested_ttl_seconds)
            dns_names = dns_names_from_request(request.dns_names)
            if request.renew_chain:
                if self.renewal is None:
                    raise UnauthenticatedError("renewal by SVID is not enabled on this CA; send a token")
                caller = call.caller = self.renewal.authenticate(request.renew_chain, request.renew_signature, request.csr)
                self.limiter.check(caller.rate_key)
            else:
                caller = await self._authenticate(context, call)
            self.dns_policy.check(caller, dns_names)
            issued = self.issuance.sign_x509(caller, public_key, ttl, dns_names)
            self.audit.issued(
                "SignX509SVID", caller, serial=issued.serial, not_after=issued.not_after, dns_names=dns_names,
                peer=context.peer(),
            )
            scope = self.federation_scope(caller.spiffe_id) if self.federation_scope is not None else None
            return wire.sign_response(issued.chain, caller.spiffe_id, issued.bundle, scope)

        return await self._call("SignX509SVID", context, run)

    async def MintJWTSVID(self, request: ca_pb2.MintJWTSVIDRequest, context) -> ca_pb2.MintJWTSVIDResponse:
        async def run(call: _Call) -> ca_pb2.MintJWTSVIDResponse:
            audiences = wire.audiences_from_request(request.audiences, self.limits.max_audiences)
            ttl = wire.ttl_from_request(request.requested_ttl_seconds)
            caller = await self._authenticate(context, call)
            issued = self.issuance.mint_jwt(caller, audiences, ttl)
            self.audit.issued("MintJWTSVID", caller, not_after=issued.expires_at, audiences=audiences, peer=context.peer())
            return wire.mint_response(issued.token, caller.spiffe_id, issued.expires_at)

        return await self._call("MintJWTSVID", context, run)

    async def FetchBundle(self, request: ca_pb2.FetchBundleRequest, context) -> ca_pb2.Bundle:
        # The bundle is public (it is also served on the bundle endpoint): no credential needed.
        started = time.perf_counter()
        message = wire.trust_message(self.hub.current, self.hub.federated)
        self.metrics.observe("FetchBundle", "ok", time.perf_counter() - started)
        return message

    async def WatchBundle(self, request: ca_pb2.WatchBundleRequest, context):
        # No credential is needed, so streams are capped per client (peer address) and in total.
        peer = context.peer() or ""
        try:
            key = self._watchers.acquire(peer)
        except StreamLimitError as err:
            code, message = status_for(err)
            self.audit.refused("WatchBundle", code.name, message, None, peer=peer)
            self.metrics.count("WatchBundle", code.name)
            await context.abort(code, message)
        self.metrics.count("WatchBundle", "ok")
        try:
            async for bundle, federated in self.hub.watch():
                yield wire.trust_message(bundle, federated)
        finally:
            self._watchers.release(key)

    async def _authenticate(self, context, call: _Call) -> Caller:
        authorization = _authorization(context)
        started = self.authenticator.start(authorization)
        if isinstance(started, Caller):
            caller = started
        else:
            # The one step of the pipeline that can wait (on the Kubernetes API), so the
            # call's deadline is enforced here; every other step is CPU work that no
            # asyncio timeout could interrupt anyway.
            async with asyncio.timeout(call.deadline):
                caller = await started
        call.caller = caller
        self.limiter.check(caller.rate_key)
        return caller

    async def _call(self, rpc: str, context, run: Callable[[_Call], Awaitable[Any]]) -> Any:
        started = time.perf_counter()
        deadline = self.limits.deadline_seconds
        remaining = context.time_remaining()
        if remaining is not None:
            deadline = min(deadline, max(remaining, 0.0))
        call = _Call(deadline)
        try:
            response = await run(call)
        except Exception as err:  # noqa: BLE001 - every failure is mapped, audited and counted
            code, message = status_for(err)
            reason = str(err) or type(err).__name__
            if code is grpc.StatusCode.INTERNAL:
                reason = f"{type(err).__name__}: {reason}"
            self.audit.refused(rpc, code.name, reason, call.caller, who=getattr(err, "who", None), peer=context.peer())
            self.metrics.observe(rpc, code.name, time.perf_counter() - started)
            await context.abort(code, message)
        self.metrics.observe(rpc, "ok", time.perf_counter() - started)
        return response
