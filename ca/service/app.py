"""The CA service process: wiring, lifecycle, rotation and shutdown.

:class:`CaService` builds everything from a :class:`ServiceConfig`, starts
the gRPC server (TLS with the CA-issued serving certificate), the bundle
endpoint and the operations server, and runs the rotation schedule: each
check re-reads the CA from its store (another replica may have rotated),
and when a new authority is prepared it is published (in-process watchers,
the ConfigMap) and only activated at a later check, so relying parties have
the new bundle before anything is signed with the new key.

With ``federation.federates_with`` it also keeps the bundles of other trust
domains (:class:`ca.service.federation.Federation`, worker 0 refreshing them)
and hands them out beside its own on ``FetchBundle`` / ``WatchBundle``.

Example (tests use ephemeral ports and an injected Kubernetes client)::

    service = CaService(config, kube_api_client=kube.api_client())
    await service.start()
    ...
    await service.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from ca.manager import CaConfig, CertificateAuthority
from ca.service.audit import AuditLog, open_audit_log
from ca.service.auth import Authenticator
from ca.service.ca_store import CaStore, DirectoryCaStore, MemoryCaStore, SecretCaStore
from ca.service.config import ServiceConfig
from ca.service.dns_policy import DnsNamePolicy
from ca.service.errors import ConfigError, StartupError
from ca.service.federation import Federation, read_bootstrap_bundles, scope_for
from ca.service.grpc_server import MAX_WATCHERS, CaServicer
from ca.service.http_server import start_bundle_endpoint, start_ops_server
from ca.service.issuance import Issuance
from ca.service.k8s_auth import JwksVerifier, KubernetesAuthenticator
from ca.service.kube import KubeApi, api_client_for
from ca.service.local_auth import JoinTokens, StaticTokens
from ca.service.metrics import ServiceMetrics
from ca.service.publisher import BundleHub, ConfigMapPublisher
from ca.service.ratelimit import RateLimiter
from ca.service.renewal import SvidRenewal
from ca.service.schedule import rotate_once
from ca.service.serving import SERVING_PATH, ServingCertificate
from sdk.spiffeid import SpiffeId
from sdk.tlsprofile import restrict_groups
from sdk.proto import ca_pb2_grpc

__all__ = ["CaService"]

log = logging.getLogger(__name__)


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class CaService:
    """One CA service instance. ``start()``, then ``stop()`` (or ``run()``)."""

    def __init__(
        self,
        config: ServiceConfig,
        *,
        kube_api_client: Any = None,
        ca_store: CaStore | None = None,
        audit: AuditLog | None = None,
        clock: Callable[[], datetime] = _utc_now,
        rotation_loop: bool = True,
        worker: int = 0,
    ) -> None:
        self.config = config
        self.worker = worker  # 0 serves HTTP, publishes and rotates; see ca/service/workers.py
        self.clock = clock
        self._epoch = lambda: clock().timestamp()
        self._kube_client = kube_api_client
        self._store = ca_store
        self.audit = audit or open_audit_log(config.audit_log)
        self.metrics = ServiceMetrics()
        self._rotation_loop = rotation_loop
        self.kube: KubeApi | None = None
        self.join_tokens: JoinTokens | None = None
        self.hub: BundleHub | None = None
        self.publisher: ConfigMapPublisher | None = None
        self.serving = ServingCertificate(config.serving_dns_names, config.serving_ip_addresses)
        endpoint_id = config.federation.endpoint_spiffe_id
        # https_spiffe: the bundle endpoint presents an X.509-SVID of its own (renewed like the serving one).
        self.endpoint_svid = (
            ServingCertificate((), (), path=tuple(endpoint_id.path.strip("/").split("/"))) if endpoint_id else None
        )
        self.federation: Federation | None = None
        self.federation_options: dict[str, Any] = {}  # tests inject sleep / rng / fetch
        self._ca: CertificateAuthority | None = None
        self._grpc: grpc.aio.Server | None = None
        self._runners: list[Any] = []
        self._tasks: list[asyncio.Task] = []
        self._tls: ssl.SSLContext | None = None
        self._serving_generation_sent = 0
        self._ready = False
        self.grpc_port = self.bundle_port = self.ops_port = 0

    # -- reading ---------------------------------------------------------------

    @property
    def ca(self) -> CertificateAuthority:
        assert self._ca is not None, "service not started"
        return self._ca

    @property
    def ready(self) -> bool:
        return self._ready

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Load the CA and open every port; on failure, close what was opened and raise."""
        try:
            await self._start()
        except BaseException:
            await self.stop(grace=0)
            raise

    async def _start(self) -> None:
        cfg = self.config
        now = self.clock()
        read_bootstrap_bundles(cfg.federation)  # a bad bootstrap bundle file fails before anything is opened
        if cfg.kubernetes is not None:
            k8s = cfg.kubernetes
            client = self._kube_client or api_client_for(
                k8s.api_host, token_file=k8s.api_token_file, ca_file=k8s.api_ca_file)
            self.kube = KubeApi(client, timeout=cfg.kubernetes.api_timeout)
        self._store = self._store or self._make_store()
        ca_config = CaConfig(
            cfg.trust_domain,
            x509_svid_max_ttl=timedelta(seconds=cfg.x509_ttl.maximum),
            jwt_svid_max_ttl=timedelta(seconds=cfg.jwt_ttl.maximum),
        )
        self._ca = await self._store.load_or_create(ca_config, now)
        if self._ca.trust_domain != cfg.trust_domain:
            raise ConfigError(
                "trust_domain",
                f"is {cfg.trust_domain}, but the CA in the configured store is for {self._ca.trust_domain}",
            )
        self.hub = BundleHub(self._ca.bundle())
        if cfg.publish_configmap and self.kube is not None and self.worker == 0:
            self.publisher = ConfigMapPublisher(self.kube, cfg.bundle_configmap_namespace, cfg.bundle_configmap_name)
            await self.publisher.publish(self._ca.bundle())
        self._observe_bundle()
        self.serving.issue(self._ca, now)
        if self.endpoint_svid is not None:
            self.endpoint_svid.issue(self._ca, now)
        if cfg.federation.federates_with:
            self.federation = Federation(
                cfg.federation, lambda: self.ca.bundle(), audit=self.audit, on_change=self.hub.publish_federated,
                clock=self.clock, **self.federation_options,
            )
            self.federation.load()
            self.metrics.add_collector(self.federation)

        # Limits are for the whole service: each of N workers enforces its 1/N share.
        share = cfg.workers
        limits = replace(
            cfg.limits,
            rate_per_second=cfg.limits.rate_per_second / share,
            burst=max(1, cfg.limits.burst // share),
            max_bundle_watchers_per_client=max(1, cfg.limits.max_bundle_watchers_per_client // share),
        )
        servicer = CaServicer(
            issuance=Issuance(lambda: self.ca, x509_ttl=cfg.x509_ttl, jwt_ttl=cfg.jwt_ttl, clock=self.clock),
            authenticator=await self._make_authenticator(),
            limiter=RateLimiter(limits.rate_per_second, limits.burst),
            hub=self.hub,
            audit=self.audit,
            metrics=self.metrics,
            limits=limits,
            max_watchers=MAX_WATCHERS // share,
            renewal=SvidRenewal(
                lambda: self.ca.bundle(),
                self.clock,
                refused=[SpiffeId.from_segments(cfg.trust_domain, *SERVING_PATH)],
            )
            if cfg.svid_renewal
            else None,
            dns_policy=DnsNamePolicy(cfg.serving_certificates),
            federation_scope=(lambda sid: scope_for(cfg.federation, sid)) if cfg.federation.federates_with else None,
        )
        self._grpc = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", cfg.limits.max_request_bytes),
                ("grpc.max_send_message_length", 4 * 1024 * 1024),
                ("grpc.max_concurrent_streams", 1000),
                # Workers share the port; a lone process refuses to share it by accident.
                ("grpc.so_reuseport", 1 if cfg.workers > 1 else 0),
            ]
        )
        ca_pb2_grpc.add_CAServicer_to_server(servicer, self._grpc)
        try:
            self.grpc_port = self._grpc.add_secure_port(cfg.listen.grpc, self._grpc_credentials())
        except RuntimeError as err:
            raise StartupError(f"listen.grpc: cannot listen on {cfg.listen.grpc}: {err}") from err
        if self.grpc_port == 0:
            raise StartupError(f"listen.grpc: cannot listen on {cfg.listen.grpc}")
        await self._grpc.start()
        if self.worker == 0:
            await self._start_http()
            if self.federation is not None:
                self.federation.start()
        if self._rotation_loop:
            self._tasks.append(asyncio.create_task(self._rotate_forever(), name="ca-rotation"))
        self._ready = True
        log.info("CA for %s serving gRPC on %s, bundle on %s (worker %d)",
                 cfg.trust_domain, self.grpc_port, self.bundle_port, self.worker)

    async def _start_http(self) -> None:
        """The bundle endpoint and the metrics/health server (worker 0 only)."""
        cfg = self.config
        self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        restrict_groups(self._tls)  # X25519/P-256/P-384, as every trustmesh endpoint (and the federation standard)
        (self.endpoint_svid or self.serving).load_into(self._tls)
        host, port = _split(cfg.listen.bundle_endpoint)
        try:
            runner, self.bundle_port = await start_bundle_endpoint(self.hub, self._tls, host, port)
        except OSError as err:
            raise StartupError(f"listen.bundle_endpoint: cannot listen on {cfg.listen.bundle_endpoint}: {err.strerror or err}") from err
        self._runners.append(runner)
        host, port = _split(cfg.listen.metrics)
        try:
            runner, self.ops_port = await start_ops_server(
                self.metrics, lambda: self._ready, host, port, hub=self.hub, federation=self.federation
            )
        except OSError as err:
            raise StartupError(f"listen.metrics: cannot listen on {cfg.listen.metrics}: {err.strerror or err}") from err
        self._runners.append(runner)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting calls, let in-flight calls finish (up to ``grace`` s), then close."""
        self._ready = False
        if self.federation is not None:
            await self.federation.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.hub is not None:
            self.hub.close()
        if self._grpc is not None:
            await self._grpc.stop(grace)
            self._grpc = None
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        if self._kube_client is None and self.kube is not None:
            self.kube.close()

    async def run(self) -> None:
        """Start, serve until SIGTERM or SIGINT, then stop gracefully."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()

    # -- rotation ----------------------------------------------------------------

    async def rotate(self, now: datetime | None = None) -> tuple[str, ...]:
        """One rotation check at ``now``; returns the steps taken."""
        now = now or self.clock()
        assert self._store is not None
        ca = await self._store.reload()
        done: tuple[str, ...] = ()
        if ca.due(now):
            # apply() re-reads the latest CA, so a step another replica took is not repeated.
            steps: list[tuple[str, ...]] = []
            ca = await self._store.apply(lambda latest: steps.append(rotate_once(latest, now)))
            done = steps[0] if steps else ()
        await self._install(ca, now)
        return done

    async def follow(self, now: datetime | None = None) -> None:
        """Pick up what the rotating worker changed in the store (workers other than 0)."""
        assert self._store is not None
        await self._install(await self._store.reload(), now or self.clock())
        if self.federation is not None:
            self.federation.reload_state()  # the bundles worker 0 accepted

    async def _install(self, ca: CertificateAuthority, now: datetime) -> None:
        self._ca = ca
        assert self.hub is not None
        bundle = ca.bundle()
        if self.publisher is not None:
            await self.publisher.publish(bundle)
        self.hub.publish(bundle)
        self._observe_bundle()
        if self.serving.due(ca, now):
            self.serving.issue(ca, now)
            if self._tls is not None and self.endpoint_svid is None:
                self.serving.load_into(self._tls)
        if self.endpoint_svid is not None and self.endpoint_svid.due(ca, now):
            self.endpoint_svid.issue(ca, now)
            if self._tls is not None:
                self.endpoint_svid.load_into(self._tls)

    async def _rotate_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.rotation_check_seconds)
            try:
                await (self.rotate() if self.worker == 0 else self.follow())
            except Exception:  # noqa: BLE001 - keep serving; the next check retries
                log.exception("CA rotation check failed")

    # -- construction helpers --------------------------------------------------------

    def _make_store(self) -> CaStore:
        store = self.config.store
        if store.kind == "directory":
            return DirectoryCaStore(store.path)
        if store.kind == "secret":
            assert self.kube is not None
            return SecretCaStore(self.kube, store.namespace, store.name)
        return MemoryCaStore()

    async def _make_authenticator(self) -> Authenticator:
        cfg = self.config
        kubernetes = None
        if cfg.kubernetes is not None:
            assert self.kube is not None
            jwks = None
            if cfg.kubernetes.verify == "jwks" and not cfg.kubernetes.jwks_file:
                discovery = await self.kube.issuer_discovery()
                issuer = cfg.kubernetes.issuer or str(discovery.get("issuer") or "")
                if not issuer:
                    raise StartupError("the API server's issuer discovery document names no issuer")
                jwks = JwksVerifier(await self.kube.issuer_keys(), issuer, self._epoch)
            elif cfg.kubernetes.verify == "jwks":
                where = "authentication.kubernetes.jwks_file"
                try:
                    jwks = JwksVerifier(Path(cfg.kubernetes.jwks_file).read_text(), cfg.kubernetes.issuer, self._epoch)
                except OSError as err:
                    raise ConfigError(where, f"cannot read {cfg.kubernetes.jwks_file}: {err.strerror or err}") from err
                except ValueError as err:
                    raise ConfigError(where, str(err)) from err
            kubernetes = KubernetesAuthenticator(
                cfg.kubernetes, self.kube, cfg.trust_domain, cfg.template, cluster=cfg.cluster, jwks=jwks, clock=self._epoch
            )
        if cfg.join_tokens:
            self.join_tokens = JoinTokens(cfg.trust_domain, path=cfg.join_tokens_file, clock=self._epoch)
        static = StaticTokens.load(cfg.trust_domain, cfg.static_tokens_file) if cfg.static_tokens_file else None
        return Authenticator(kubernetes=kubernetes, join_tokens=self.join_tokens, static_tokens=static)

    def _grpc_credentials(self) -> grpc.ServerCredentials:
        def current() -> grpc.ServerCertificateConfiguration:
            self._serving_generation_sent = self.serving.generation
            return grpc.ssl_server_certificate_configuration([(self.serving.key_pem, self.serving.chain_pem)])

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            if self.serving.generation != self._serving_generation_sent:
                return current()
            return None

        return grpc.dynamic_ssl_server_credentials(current(), fetch, require_client_authentication=False)

    def _observe_bundle(self) -> None:
        self.metrics.set_bundle(self.ca.bundle())
