"""Health (15021, reachable by the kubelet) and admin (15000, loopback only) endpoints, on the small asyncio server in :mod:`sidecar.admin_server`.

* ``GET /healthz/ready`` — 200 while the SVID is valid, the policy is loaded
  and the sidecar is not shutting down; 503 with the reason otherwise.
* ``GET /healthz/live`` — 200 while the event loop answers.
* ``GET /app-health/<container>/<livez|readyz|startupz>`` — the app's own
  probe, run by :class:`sidecar.app_probes.AppProbes` (404 for any other path).
* ``GET /metrics`` (admin) — Prometheus text format.
* ``GET /config_dump`` (admin) — the effective configuration (secrets redacted),
  the current SVID's ID and expiry, and the policy status.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sidecar import admin_server as web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sidecar.app_probes import AppProbes
from sidecar.errors import ListenError

__all__ = ["AdminServer"]


class AdminServer:
    """Runs the health site and the admin site of one sidecar."""

    def __init__(self, sidecar: Any) -> None:
        self.sidecar = sidecar
        self.runners: list[web.AppRunner] = []
        self.ports: dict[str, int] = {}
        self.app_probes = AppProbes({})

    async def start(self, health: tuple[str, int], admin: tuple[str, int]) -> None:
        app = web.Application()
        app.router.add_get("/healthz/ready", self._ready)
        app.router.add_get("/healthz/live", self._live)
        app.router.add_get("/app-health/{tail:.*}", self._app_probe)
        self.ports["health"] = await self._serve("health", app, *health)
        app = web.Application()
        app.router.add_get("/healthz/ready", self._ready)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/config_dump", self._config_dump)
        self.ports["admin"] = await self._serve("admin", app, *admin)

    async def _serve(self, name: str, app: web.Application, host: str, port: int) -> int:
        runner = web.AppRunner(app, access_log=None, on_reject=lambda reason: self.sidecar.metrics.reject(name, reason))
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as err:
            await runner.cleanup()
            raise ListenError(name, host, port, err) from err
        self.runners.append(runner)
        return runner.addresses[0][1]

    async def stop(self) -> None:
        for runner in self.runners:
            await runner.cleanup()
        self.runners = []
        await self.app_probes.close()

    async def _ready(self, request: web.Request) -> web.Response:
        ok, reason = self.sidecar.readiness()
        return web.Response(status=200 if ok else 503, text=reason + "\n")

    async def _live(self, request: web.Request) -> web.Response:
        return web.Response(text="alive\n")

    async def _app_probe(self, request: web.Request) -> web.Response:
        path = request.rel_url.raw_path.partition("?")[0]  # as sent (not percent-decoded), no query
        status, text = await self.app_probes.answer(path)
        return web.Response(status=status, text=text + "\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        self.sidecar.refresh_gauges()
        body = generate_latest(self.sidecar.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _config_dump(self, request: web.Request) -> web.Response:
        return web.Response(text=json.dumps(self.sidecar.dump(), indent=2, default=_plain), content_type="application/json")


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)  # type: ignore[arg-type]
    return str(value)


def redacted(config: Any) -> dict[str, Any]:
    """The config as plain data with the static CA token hidden."""
    data = dataclasses.asdict(config)
    if data.get("ca") and data["ca"].get("token"):
        data["ca"]["token"] = "(redacted)"
    data["destinations"] = {f"{h}:{p}": v for (h, p), v in config.destinations.items()}
    return data


Readiness = Callable[[], tuple[bool, str]]
