"""The injector's HTTPS server: a thin aiohttp shell around :class:`~injector.webhook.Webhooks`.

Routes: ``POST /inject``, ``POST /validate``, ``POST /validate/require-injection``
and ``GET /healthz``. Bodies larger than ``server.max_body_bytes`` get 413; a
body not received within ``server.read_timeout_seconds`` gets 408, well
inside the API server's webhook timeout. The serving certificate and key
are read from files (a Secret written by cert-manager, or files the injector
writes itself with a certificate from the trustmesh CA, see
:mod:`injector.ca_certificate`) and re-read when they change, so a renewed
certificate is served without a restart; connections already open keep the
certificate they were made with.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from injector.config import InjectorConfig
from injector.errors import ListenError, ServingCertError
from injector.trust_bundle import TrustBundleFile
from injector.webhook import Reply, Webhooks
from sdk.tlsprofile import restrict_groups

if TYPE_CHECKING:
    from injector.ca_certificate import CaServingCertificate

__all__ = ["tls_context", "CertReloader", "build_app", "RunningServer", "start_server",
           "start_with_ca_certificate", "serve"]

log = logging.getLogger("trustmesh.injector")


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server TLS context (TLS 1.2+, key exchange over X25519/P-256/P-384 only, as every
    trustmesh TLS endpoint) with the serving certificate chain and key loaded."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    restrict_groups(context)
    _load(context, cert_file, key_file)
    return context


def _load(context: ssl.SSLContext, cert_file: str, key_file: str) -> None:
    try:
        context.load_cert_chain(cert_file, key_file)
    except FileNotFoundError as err:
        raise ServingCertError(f"serving certificate or key not found: {err.filename}") from err
    except (ssl.SSLError, OSError) as err:
        raise ServingCertError(f"cannot load serving certificate {cert_file} with key {key_file}: {err}") from err


class CertReloader:
    """Reloads the serving certificate into a live TLS context when its files change."""

    def __init__(self, context: ssl.SSLContext, cert_file: str, key_file: str) -> None:
        self.context, self.cert_file, self.key_file = context, cert_file, key_file
        self._stamp = self._current_stamp()

    def _current_stamp(self) -> tuple[float, float] | None:
        try:
            return os.stat(self.cert_file).st_mtime, os.stat(self.key_file).st_mtime
        except OSError:
            return None

    def reload(self) -> None:
        """Load the files now (raises :class:`ServingCertError` and keeps the old certificate if they are bad)."""
        stamp = self._current_stamp()
        _load(self.context, self.cert_file, self.key_file)
        self._stamp = stamp
        log.info("serving certificate reloaded from %s", self.cert_file)

    def check(self) -> bool:
        """Reload if the files changed; True if a new certificate is now served."""
        stamp = self._current_stamp()
        if stamp is None or stamp == self._stamp:
            return False
        try:
            _load(self.context, self.cert_file, self.key_file)
        except ServingCertError as err:  # half-written rotation: keep serving the old one
            log.warning("serving certificate not reloaded: %s", err)
            return False
        self._stamp = stamp
        log.info("serving certificate reloaded from %s", self.cert_file)
        return True

    async def run(self, interval: float = 30.0) -> None:
        while True:
            await asyncio.sleep(interval)
            self.check()


def build_app(webhooks: Webhooks) -> web.Application:
    """The aiohttp application serving the webhook routes."""
    settings = webhooks.config.server
    app = web.Application(client_max_size=settings.max_body_bytes)

    def route(endpoint: Callable[[bytes], Reply]):
        async def handler(request: web.Request) -> web.Response:
            if request.content_length is not None and request.content_length > settings.max_body_bytes:
                return _too_large(settings.max_body_bytes)
            try:
                async with asyncio.timeout(settings.read_timeout_seconds):
                    body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                return _too_large(settings.max_body_bytes)
            except TimeoutError:
                return web.json_response({"message": "request body not received in time"}, status=408)
            reply = endpoint(body)
            return web.json_response(reply.body, status=reply.status)

        return handler

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app.router.add_post("/inject", route(webhooks.inject))
    app.router.add_post("/validate", route(webhooks.validate))
    app.router.add_post("/validate/require-injection", route(webhooks.require_injection))
    app.router.add_get("/healthz", healthz)
    return app


def _too_large(limit: int) -> web.Response:
    return web.json_response({"message": f"request body larger than {limit} bytes"}, status=413)


@dataclass
class RunningServer:
    """A started server; ``port`` is the bound port (useful with port 0)."""

    runner: web.AppRunner
    port: int
    reloader: CertReloader
    _reload_task: asyncio.Task | None = None
    tasks: list[asyncio.Task] = field(default_factory=list)  # more background work to stop with the server

    async def close(self) -> None:
        for task in (self._reload_task, *self.tasks):
            if task is None:
                continue
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        await self.runner.cleanup()


async def start_server(config: InjectorConfig, *, reload_interval: float = 30.0) -> RunningServer:
    """Load the certificate, bind ``server.host:server.port`` over HTTPS and start serving."""
    settings = config.server
    context = tls_context(settings.cert_file, settings.key_file)
    bundle = TrustBundleFile(config.trust_bundle_file).read if config.trust_bundle_file else None
    webhooks = Webhooks(config, trust_bundle=bundle)
    runner = web.AppRunner(build_app(webhooks), access_log=None, shutdown_timeout=5)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, ssl_context=context)
    try:
        await site.start()
    except OSError as err:
        await runner.cleanup()
        raise ListenError(f"cannot listen on {settings.host}:{settings.port}: {err.strerror or err}") from err
    port = runner.addresses[0][1]
    reloader = CertReloader(context, settings.cert_file, settings.key_file)
    task = asyncio.create_task(reloader.run(reload_interval)) if reload_interval > 0 else None
    log.info("injector webhooks listening on https://%s:%d", settings.host, port)
    return RunningServer(runner, port, reloader, task)


async def start_with_ca_certificate(certificate: CaServingCertificate, **kwargs) -> RunningServer:
    """Obtain the serving certificate from the CA, start serving, and renew it in the background."""
    await certificate.start()
    server = await start_server(certificate.config, **kwargs)
    server.tasks.append(asyncio.create_task(certificate.renew_forever(server.reloader.reload),
                                            name="serving-certificate-renewal"))
    return server


async def serve(config: InjectorConfig, *, patch_ca_bundle: Callable[[], list[str]] | None = None,
                ca_certificate: CaServingCertificate | None = None) -> None:
    """Run until SIGTERM/SIGINT; first patch ``caBundle`` if asked (a failure stops start-up).

    With ``ca_certificate`` (which patches ``caBundle`` itself, after each
    new set of roots) the serving certificate comes from the trustmesh CA.
    """
    if ca_certificate is not None:
        server = await start_with_ca_certificate(ca_certificate)
    else:
        if patch_ca_bundle is not None:
            for patched in await asyncio.to_thread(patch_ca_bundle):
                log.info("caBundle patched into %s", patched)
        server = await start_server(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        log.info("stopping: finishing requests in flight")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await server.close()
