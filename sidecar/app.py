"""One sidecar: listeners, pools, routers, admin endpoints and shutdown, wired from the config.

Example (in-process, as the tests do)::

    sidecar = Sidecar(config, identity, authorizer)
    await sidecar.start()
    ...                                   # sidecar.ports["inbound"] etc.
    await sidecar.shutdown()              # fail readiness, drain, close
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

from sidecar.accesslog import AccessLog
from sidecar.admin import AdminServer, redacted
from sidecar.attributes import Authorizer
from sidecar.config import SidecarConfig
from sidecar.connect import mtls_opener, open_mtls, open_plain, plain_opener
from sidecar.detect import Detect
from sidecar.exchange import ConnInfo, HttpDownstream
from sidecar.errors import ListenError
from sidecar.grpc_schema import GrpcSchema
from sidecar.h2exchange import H2Downstream, H2Upstream, H2UpstreamPool, PassThrough
from sidecar.inbound import InboundRouter, refuse_own_port
from sidecar.listener import Listener, bind
from sidecar.metrics import Metrics
from sidecar.outbound import OutboundRouter, explicit_classifier, transparent_classifier
from sidecar.pool import Pool
from sidecar.splice import TcpDownstream, UpstreamPipe
from sidecar.stream_policy import StreamPolicy
from sidecar.tls import verify_peer

__all__ = ["Sidecar"]

log = logging.getLogger("trustmesh.sidecar")


class Sidecar:
    """The data plane of one pod."""

    def __init__(
        self,
        config: SidecarConfig,
        identity: Any,
        authorizer: Authorizer,
        *,
        policy_ready: Callable[[], bool] = lambda: True,
        metrics: Metrics | None = None,
        access_log: AccessLog | None = None,
        original_destination: Callable[[socket.socket], tuple[str, int]] | None = None,
        normalize: Callable[[str], tuple[str, str, dict[str, str]]] | None = None,
    ) -> None:
        self.config = config
        self.identity = identity
        self.authorizer = authorizer
        self.policy_ready = policy_ready
        self.metrics = metrics or Metrics()
        self.access_log = access_log or AccessLog(None)
        self.original_destination = original_destination
        self.normalize = normalize
        self.listeners: dict[str, Listener] = {}
        self.ports: dict[str, int] = {}
        self.admin = AdminServer(self)
        self.shutting_down = False
        self._federation_stamps: dict[str, tuple[int, int, int]] = {}
        self._flusher: asyncio.Task[None] | None = None
        # the descriptors of the app's gRPC services (a bad file is a config error at start)
        self.grpc_schema = GrpcSchema.load(*config.grpc.descriptors) if config.grpc.descriptors else None

    # -- lifecycle

    def load_federation(self) -> None:
        """(Re)load the federated trust domains' bundle files that changed since last time."""
        from sdk.bundle import Bundle
        from sdk.spiffeid import TrustDomain

        for td, path in self.config.federation.items():
            try:
                st = path.stat()
                stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
                if self._federation_stamps.get(td) == stamp:
                    continue
                data = path.read_bytes()
                domain = TrustDomain.parse(td)
                parse = Bundle.parse_jwks if data.lstrip()[:1] == b"{" else Bundle.parse_pem
                self.identity.put_federated_bundle(parse(data, domain))
                self._federation_stamps[td] = stamp
                log.info("federated bundle for %s loaded from %s", td, path)
            except (OSError, ValueError) as err:
                log.error("federated bundle for %s not loaded from %s: %s", td, path, err)

    async def start(self) -> None:
        cfg, limits = self.config, self.config.limits
        loop = asyncio.get_running_loop()
        self.load_federation()
        self.app_pool = Pool(plain_opener(limits.connect_timeout), idle_timeout=limits.idle_timeout)
        self.mtls_pool = Pool(
            mtls_opener(self.identity, lambda: cfg.accepted_trust_domains, limits.handshake_timeout),
            idle_timeout=limits.idle_timeout,
        )
        extra = {"normalize": self.normalize} if self.normalize else {}
        self.inbound = InboundRouter(
            self.identity,
            self.authorizer,
            self.app_pool,
            max_json_body=limits.max_json_body,
            metrics=self.metrics,
            access_log=self.access_log,
            **extra,
        )
        self.outbound = OutboundRouter(self.identity, self.mtls_pool, metrics=self.metrics, access_log=self.access_log)
        self.inbound.loop_time = self.outbound.loop_time = loop.time
        # HTTP/2: one multiplexed connection per app port and per remote sidecar
        self.app_h2_pool = H2UpstreamPool(plain_opener(limits.connect_timeout, H2Upstream), idle_timeout=limits.idle_timeout)
        self.mtls_h2_pool = H2UpstreamPool(
            mtls_opener(self.identity, lambda: cfg.accepted_trust_domains, limits.handshake_timeout, H2Upstream, h2=True),
            idle_timeout=limits.idle_timeout,
        )
        self.inbound_streams = StreamPolicy(
            self.inbound, self.grpc_schema, cfg.grpc.max_message, app_pool=self.app_h2_pool,
            max_pending=limits.max_held_per_connection,
        )
        self.outbound_streams = PassThrough(
            lambda conn: (self.mtls_h2_pool, self.outbound.upstream_key(conn)), self.outbound.stream_done
        )

        self._listen(
            "inbound",
            cfg.inbound_address,
            cfg.inbound_port,
            self._inbound_factory,
            tls="require" if cfg.mode == "STRICT" else "permissive",
            classify=self._inbound_classifier(),
            max_per_source=limits.max_connections_per_source,
        )
        if cfg.transparent_outbound:
            self._listen(
                "outbound",
                "127.0.0.1",
                cfg.outbound_port,
                self._outbound_factory,
                classify=transparent_classifier(cfg.destinations, self.original_destination),
            )
        for i, up in enumerate(cfg.upstreams):
            self._listen(
                f"upstream-{i}",
                "127.0.0.1",
                up.listen,
                self._outbound_factory,
                classify=explicit_classifier(up.host, up.port, up.spiffe_id),
                protocol=up.protocol,
            )
        await self.admin.start((cfg.health_address, cfg.health_port), ("127.0.0.1", cfg.admin_port))
        self.ports.update(self.admin.ports)
        self._flusher = asyncio.create_task(self._housekeeping(), name="sidecar-housekeeping")

    def _listen(
        self, name: str, host: str, port: int, factory: Any, *, tls: str = "off", classify: Any, protocol: str | None = None,
        max_per_source: int | None = None,
    ) -> None:
        try:
            sock = bind(host, port)
        except OSError as err:
            raise ListenError(name, host, port, err) from err
        listener = Listener(
            name,
            sock,
            lambda info: factory(info, listener, protocol),
            self.config.limits,
            tls=tls,
            context=self.identity.server_context,
            verify=lambda ssl_object: verify_peer(ssl_object, self.identity.get_bundle_set()),
            classify=classify,
            on_reject=self.metrics.reject,
            max_per_source=max_per_source,
        )
        listener.start()
        self.listeners[name] = listener
        self.ports[name] = listener.port

    def _inbound_classifier(self) -> Callable[[socket.socket, Any], ConnInfo]:
        app_port = self.config.app_port
        if app_port is not None:
            return lambda sock, addr: ConnInfo(addr[0], addr[1], target_port=app_port, target_host="127.0.0.1")
        origdst = self.original_destination
        if origdst is None:
            from sidecar.redirect import original_destination as origdst

        def classify(sock: socket.socket, addr: Any) -> ConnInfo:
            _, port = origdst(sock)
            refuse_own_port(port, self.ports.values())
            return ConnInfo(addr[0], addr[1], target_port=port, target_host="127.0.0.1")

        return classify

    def _inbound_factory(self, info: ConnInfo, listener: Listener, protocol: str | None) -> Any:
        limits = self.config.limits
        proto = self.config.protocol_for(info.target_port)
        if proto == "tcp":

            async def connect(info: ConnInfo, pipe: UpstreamPipe) -> None:
                await open_plain("127.0.0.1", info.target_port, lambda: pipe, limits.connect_timeout)

            return TcpDownstream(info, listener, limits, self.inbound.authorize_tcp, connect)
        return self._http(proto, info, listener, self.inbound, self.inbound_streams)

    def _outbound_factory(self, info: ConnInfo, listener: Listener, protocol: str | None) -> Any:
        limits = self.config.limits
        proto = protocol or self.config.protocol_for(info.target_port)
        if proto == "tcp":

            async def connect(info: ConnInfo, pipe: UpstreamPipe) -> None:
                await open_mtls(
                    info.target_host,
                    info.target_port,
                    lambda: pipe,
                    self.identity,
                    self.config.accepted_trust_domains,
                    info.expected_id,
                    limits.handshake_timeout,
                )

            def authorize(info: ConnInfo) -> bool:
                ok = self.identity.valid()
                self.metrics.tcp_connection("outbound", "forward" if ok else "no-identity")
                return ok

            return TcpDownstream(info, listener, limits, authorize, connect)
        return self._http(proto, info, listener, self.outbound, self.outbound_streams)

    def _http(self, proto: str, info: ConnInfo, listener: Listener, router: Any, streams: Any) -> Any:
        """The exchange for an HTTP port: HTTP/1.1, HTTP/2, or (``auto``) whichever the connection speaks."""
        limits = self.config.limits
        if proto == "http1":
            return HttpDownstream(router, info, limits, listener)
        if proto == "http2":
            return H2Downstream(streams, info, limits, listener)
        return Detect(
            info, listener, limits,
            lambda: HttpDownstream(router, info, limits, listener),
            lambda: H2Downstream(streams, info, limits, listener),
        )

    async def _housekeeping(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(1.0)
            now = loop.time()
            self.app_pool.sweep(now)
            self.mtls_pool.sweep(now)
            self.app_h2_pool.sweep(now)
            self.mtls_h2_pool.sweep(now)
            self.access_log.flush()
            self.refresh_gauges()
            if self.config.federation:
                self.load_federation()

    async def shutdown(self, grace: float | None = None) -> None:
        """Fail readiness, stop accepting, drain in-flight requests for up to ``grace`` s, close."""
        self.shutting_down = True
        grace = self.config.limits.drain_grace if grace is None else grace
        await asyncio.gather(*(listener.drain(grace) for listener in self.listeners.values()))
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        self.app_pool.close()
        self.mtls_pool.close()
        self.app_h2_pool.close()
        self.mtls_h2_pool.close()
        await self.admin.stop()
        self.access_log.flush()

    # -- status

    def readiness(self) -> tuple[bool, str]:
        if self.shutting_down:
            return False, "shutting down"
        if not self.identity.valid():
            return False, "no valid SVID"
        if not self.policy_ready():
            return False, "no policy loaded"
        return True, "ready"

    def refresh_gauges(self) -> None:
        expires = self.identity.expires_at
        if expires is not None:
            self.metrics.svid_not_after.set(expires.timestamp())

    def dump(self) -> dict[str, Any]:
        expires = self.identity.expires_at
        return {
            "config": redacted(self.config),
            "svid": {"spiffe_id": str(self.identity.spiffe_id), "expires_at": expires.isoformat() if expires else None},
            "trust_domains": [str(td) for td in self.identity.get_bundle_set().trust_domains()],
            "bundle_sequences": {str(b.trust_domain): b.sequence for b in self.identity.get_bundle_set().bundles()},
            "ready": self.readiness()[1],
            "listeners": dict(self.ports),
        }

