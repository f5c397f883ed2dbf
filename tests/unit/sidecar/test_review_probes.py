"""Adversarial review of the health port (15021), which anyone in the cluster can reach:
the kubelet's rewritten app probes must not be made to fail by other callers.
Real sidecar, real aiohttp app on loopback."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from aiohttp import web

from sidecar.app_probes import AppProbes, parse_probers
from tests.unit.sidecar.conftest import config


async def test_concurrent_callers_cannot_make_the_kubelets_liveness_probe_fail(mesh):
    # Failing liveness probes get the pod restarted: a caller flooding /app-health/.../livez
    # must not turn the kubelet's probe into a 503 while the app itself is healthy.
    probes_seen = 0

    async def live(request: web.Request) -> web.Response:
        nonlocal probes_seen
        probes_seen += 1
        await asyncio.sleep(0.3)  # a liveness check that takes a moment (a database ping, say)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/live", live)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        port = runner.addresses[0][1]
        sidecar = await mesh(config(1))
        probers = {"/app-health/web/livez": {"httpGet": {"path": "/live", "port": port, "scheme": "HTTP"}, "timeoutSeconds": 2}}
        sidecar.admin.app_probes = AppProbes(parse_probers(json.dumps(probers)))
        url = f"http://127.0.0.1:{sidecar.ports['health']}/app-health/web/livez"

        async def get(session: aiohttp.ClientSession) -> int:
            async with session.get(url) as r:
                return r.status

        async with aiohttp.ClientSession() as flood, aiohttp.ClientSession() as kubelet:
            attackers = [asyncio.create_task(get(flood)) for _ in range(20)]
            await asyncio.sleep(0.1)  # the flood is in flight
            kubelet_status = await get(kubelet)
            await asyncio.gather(*attackers)
        await sidecar.admin.app_probes.close()
    finally:
        await runner.cleanup()
    assert kubelet_status == 200
    assert probes_seen <= 2  # concurrent callers share the probe in flight; the app is not flooded either
