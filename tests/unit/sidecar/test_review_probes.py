"""Adversarial review of the health port (15021), which anyone in the cluster can reach:
the kubelet's rewritten app probes must not be made to fail by other callers.
Real sidecar, real aiohttp app on loopback."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from aiohttp import web

from sidecar.app_probes import AppProbes, parse_probers
from tests.support.waits import until
from tests.unit.sidecar.conftest import config


async def test_concurrent_callers_cannot_make_the_kubelets_liveness_probe_fail(mesh):
    # Failing liveness probes get the pod restarted: a caller flooding /app-health/.../livez
    # must not turn the kubelet's probe into a 503 while the app itself is healthy.
    # The app's check is held open until every caller's request has reached the sidecar
    # (events, not a race against a sleep), so a slow machine sees the same overlap.
    probes_seen = 0
    release = asyncio.Event()

    async def live(request: web.Request) -> web.Response:
        nonlocal probes_seen
        probes_seen += 1
        await release.wait()  # a liveness check that takes a moment (a database ping, say)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/live", live)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        port = runner.addresses[0][1]
        sidecar = await mesh(config(1))
        probers = {"/app-health/web/livez": {"httpGet": {"path": "/live", "port": port, "scheme": "HTTP"},
                                             "timeoutSeconds": 60}}
        probes = sidecar.admin.app_probes = AppProbes(parse_probers(json.dumps(probers)))
        asked = 0
        answer = probes.answer

        async def counted(path: str) -> tuple[int, str]:  # observes the calls, changes nothing
            nonlocal asked
            asked += 1
            return await answer(path)

        probes.answer = counted
        url = f"http://127.0.0.1:{sidecar.ports['health']}/app-health/web/livez"

        async def get(session: aiohttp.ClientSession) -> int:
            async with session.get(url) as r:
                return r.status

        async with aiohttp.ClientSession() as flood, aiohttp.ClientSession() as kubelet:
            attackers = [asyncio.create_task(get(flood)) for _ in range(20)]
            await until(lambda: asked == 20)  # the flood is in flight
            kubelet_probe = asyncio.create_task(get(kubelet))
            await until(lambda: asked == 21)
            release.set()
            kubelet_status = await asyncio.wait_for(kubelet_probe, 60)
            await asyncio.gather(*attackers)
        await probes.close()
    finally:
        release.set()
        await runner.cleanup()
    assert kubelet_status == 200
    assert probes_seen == 1  # concurrent callers share the probe in flight; the app is not flooded either
