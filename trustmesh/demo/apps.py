"""The demo's small HTTP apps (aiohttp), and one gRPC app. They know nothing about trustmesh.

Each app listens on plain HTTP behind its sidecar and trusts what the sidecar
lets through; the caller's identity, when there is one, arrives in the
``x-forwarded-client-cert`` header the sidecar adds. With ``--workload-api``
the app also checks JWT-SVIDs itself with the sdk's aiohttp middleware (the
reports app does, for callers from outside the mesh), against the JWT bundles
of the Workload API at that address. Run one with::

    python -m trustmesh.demo.apps config --host 127.0.0.1 --port 0

It prints ``{"event": "listening", "port": N}`` on stdout once it accepts
connections, and exits on SIGTERM or SIGINT. The ``resources`` app is a grpcio
server of ``trustmesh.demo.v1.DynamicResourceService`` (plaintext HTTP/2 behind
its sidecar); it answers ``FetchResource`` for any appname it is asked, and says
in the resource's ``caller`` label who the sidecar said was calling.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import Any

from aiohttp import web

__all__ = ["make_app", "APPS", "GRPC_APPS", "main"]

# What the configuration service holds, per app. The sidecar's policy decides
# which caller may read which entry; the app itself does no checking.
_CONFIGS = {
    "web": {"theme": "dark", "billing_url": "http://127.0.0.1/billing"},
    "billing": {"currency": "EUR", "invoice_prefix": "INV"},
    "reports": {"retention_days": 30},
    "analytics": {"batch_size": 500},
}


def _caller(request: web.Request) -> str | None:
    """The caller's SPIFFE ID: from a JWT-SVID the app verified itself, else from the
    sidecar's ``x-forwarded-client-cert`` (``By=...;URI=...``)."""
    from sdk.app import CALLER

    if CALLER in request:
        return str(request[CALLER])
    return _xfcc_uri(request.headers.get("x-forwarded-client-cert", ""))


def _reply(request: web.Request, app: str, **payload: object) -> web.Response:
    return web.json_response({"app": app, "caller": _caller(request), **payload})


def make_app(name: str, jwt_validator: Any = None, audience: str | None = None) -> web.Application:
    """The aiohttp application for demo workload ``name``; with ``jwt_validator`` (a
    :class:`sdk.app.JwtSvidValidator`) every path but ``/healthz`` needs a JWT-SVID for ``audience``."""
    middlewares = []
    if jwt_validator is not None:
        from sdk.app import jwt_svid_middleware

        assert audience is not None
        middlewares.append(jwt_svid_middleware(jwt_validator, audience, exempt_paths=["/healthz"]))
    app = web.Application(middlewares=middlewares)

    async def healthz(request: web.Request) -> web.Response:
        return _reply(request, name, status="ok")

    app.router.add_get("/healthz", healthz)
    routes = APPS.get(name)
    if routes is None:
        raise ValueError(f"unknown demo app {name!r}; known: {', '.join(sorted(APPS))}")
    routes(app, name)
    return app


def _config_routes(app: web.Application, name: str) -> None:
    async def fetch(request: web.Request) -> web.Response:
        try:
            wanted = (await request.json())["appname"]
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": 'body must be JSON {"appname": ...}'}, status=400)
        if wanted not in _CONFIGS:
            return web.json_response({"error": f"no configuration for {wanted!r}"}, status=404)
        return _reply(request, name, appname=wanted, config=_CONFIGS[wanted])

    async def admin_keys(request: web.Request) -> web.Response:
        # What an attacker would want; the policy's deny rule keeps every caller out.
        return _reply(request, name, keys=["not-a-real-key"])

    app.router.add_post("/v1/fetch", fetch)
    app.router.add_get("/v1/admin/keys", admin_keys)


def _billing_routes(app: web.Application, name: str) -> None:
    async def invoices(request: web.Request) -> web.Response:
        month = request.match_info["month"]
        return _reply(request, name, month=month, invoices=[{"id": f"INV-{month}-001", "total": "42.00"}])

    app.router.add_get("/v1/invoices/{month}", invoices)


def _web_routes(app: web.Application, name: str) -> None:
    async def index(request: web.Request) -> web.Response:
        return _reply(request, name, page="front page")

    app.router.add_get("/", index)


def _reports_routes(app: web.Application, name: str) -> None:
    async def report(request: web.Request) -> web.Response:
        return _reply(request, name, report=request.match_info["name"], rows=3)

    app.router.add_get("/reports/{name}", report)


def _no_routes(app: web.Application, name: str) -> None:
    """The analytics job serves nothing but its health check; it only calls out."""


APPS = {
    "config": _config_routes,
    "billing": _billing_routes,
    "web": _web_routes,
    "reports": _reports_routes,
    "analytics": _no_routes,
}
GRPC_APPS = frozenset({"resources"})


# What the resources service holds, per app (the sidecar's policy decides who may read which).
_RESOURCES = {"web": b"theme=dark", "billing": b"currency=EUR", "reports": b"retention_days=30"}


async def _serve_grpc(host: str, port: int) -> None:
    import grpc

    from sdk.proto.trustmesh.demo.v1 import resource_pb2, resource_pb2_grpc

    class Resources(resource_pb2_grpc.DynamicResourceServiceServicer):
        async def FetchResource(self, request, context):  # noqa: N802 - the generated name
            metadata = {key: value for key, value in context.invocation_metadata()}
            caller = _xfcc_uri(str(metadata.get("x-forwarded-client-cert", "")))
            content = _RESOURCES.get(request.appname)
            if content is None:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"no resources of {request.appname!r}")
            return resource_pb2.Resource(
                appname=request.appname, resource_id=request.resource_id, content=content,
                labels={"caller": caller or ""},
            )

    server = grpc.aio.server()
    resource_pb2_grpc.add_DynamicResourceServiceServicer_to_server(Resources(), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    try:
        await _listening_until_stopped("resources", bound)
    finally:
        await server.stop(1)


async def _listening_until_stopped(name: str, port: int) -> None:
    """Say where the app listens (the runner waits for this line), then wait for SIGTERM or SIGINT."""
    print(json.dumps({"event": "listening", "app": name, "port": port}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def _xfcc_uri(xfcc: str) -> str | None:
    for part in xfcc.split(";"):
        key, _, value = part.partition("=")
        if key.strip().lower() == "uri":
            return value.strip()
    return None


async def _serve(name: str, host: str, port: int, workload_api: str | None, audience: str | None) -> None:
    if name in GRPC_APPS:
        await _serve_grpc(host, port)
        return
    validator = None
    if workload_api is not None:  # needs the sidecar's Workload API up: waits for its JWT bundles
        from sdk.workloadapi import JwtSource

        validator = await JwtSource(workload_api).start()
    runner = web.AppRunner(make_app(name, validator, audience), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    try:
        await _listening_until_stopped(name, runner.addresses[0][1])
    finally:
        await runner.cleanup()
        if validator is not None:
            await validator.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trustmesh.demo.apps", description=__doc__.splitlines()[0])
    parser.add_argument("app", choices=sorted({*APPS, *GRPC_APPS}))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--workload-api", metavar="ADDR", help="check JWT-SVIDs with the bundles from this Workload API")
    parser.add_argument("--audience", help="the audience JWT-SVIDs must carry (the app's SPIFFE ID)")
    args = parser.parse_args(argv)
    if (args.workload_api is None) != (args.audience is None):
        parser.error("--workload-api and --audience go together")
    asyncio.run(_serve(args.app, args.host, args.port, args.workload_api, args.audience))
    return 0


if __name__ == "__main__":
    sys.exit(main())
