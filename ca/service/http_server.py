"""The CA's HTTP endpoints (aiohttp).

- The SPIFFE bundle endpoint (``https_web`` profile): ``GET /`` over HTTPS
  returns the trust domain's bundle as a SPIFFE JWKS document.
- Operations, on a loopback address by default: ``/metrics`` (Prometheus),
  ``/healthz`` (the process is up), ``/readyz`` (the CA is loaded and serving)
  and ``/bundle`` (the own bundle, SPIFFE format plus ``trust_domain``, for
  ``trustmesh ca bundle --ops``);
  with federation also ``GET /federation`` (every relationship),
  ``GET /federation/<trust domain>`` (one, with its bundle) and
  ``POST /federation/<trust domain>/refresh`` (refresh now), for
  ``trustmesh ca federation``.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable

from aiohttp import web

from ca.service.errors import FederationError
from ca.service.federation import Federation
from ca.service.metrics import ServiceMetrics
from ca.service.publisher import BundleHub
from sdk.errors import SpiffeIdError
from sdk.spiffeid import TrustDomain

__all__ = ["start_bundle_endpoint", "start_ops_server"]


async def _start(app: web.Application, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    return runner, runner.addresses[0][1]


async def start_bundle_endpoint(hub: BundleHub, ssl_context: ssl.SSLContext, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve the bundle on ``https://host:port/``; returns the runner and the bound port."""

    async def bundle(request: web.Request) -> web.Response:
        return web.Response(
            body=hub.current.to_jwks(),
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    app = web.Application()
    app.router.add_get("/", bundle)
    return await _start(app, host, port, ssl_context)


async def start_ops_server(
    metrics: ServiceMetrics,
    ready: Callable[[], bool],
    host: str,
    port: int,
    *,
    hub: BundleHub | None = None,
    federation: Federation | None = None,
) -> tuple[web.AppRunner, int]:
    """Serve /metrics, /healthz, /readyz (and /federation); returns the runner and the bound port."""

    async def metrics_handler(request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        return web.Response(text="ready\n") if ready() else web.Response(status=503, text="not ready\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if hub is not None:

        async def own_bundle(request: web.Request) -> web.Response:
            bundle = hub.current
            doc = {"trust_domain": str(bundle.trust_domain), **json.loads(bundle.to_jwks())}
            return web.json_response(doc, dumps=lambda d: json.dumps(d, indent=2))

        app.router.add_get("/bundle", own_bundle)
    if federation is not None:
        _add_federation_routes(app, federation)
    return await _start(app, host, port)


def _add_federation_routes(app: web.Application, federation: Federation) -> None:
    def state_of(request: web.Request):  # type: ignore[no-untyped-def]
        try:
            return federation.state(TrustDomain.parse(request.match_info["td"]))
        except (SpiffeIdError, FederationError) as err:
            raise web.HTTPNotFound(text=f"{err}\n") from err

    async def listing(request: web.Request) -> web.Response:
        return web.json_response([state.view() for _, state in sorted(federation.states.items())])

    async def show(request: web.Request) -> web.Response:
        state = state_of(request)
        bundle = state.bundle.to_jwks().decode() if state.bundle is not None else None
        return web.json_response({**state.view(), "bundle": bundle})

    async def refresh(request: web.Request) -> web.Response:
        state = state_of(request)
        await federation.refresh(state.relationship.trust_domain)
        return web.json_response(state.view())

    app.router.add_get("/federation", listing)
    app.router.add_get("/federation/{td}", show)
    app.router.add_post("/federation/{td}/refresh", refresh)
