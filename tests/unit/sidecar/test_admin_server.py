"""The small health/admin HTTP server (sidecar.admin_server), over real loopback sockets."""

import asyncio

import pytest

from sidecar import admin_server as web
from tests.support.waits import until


async def _serve() -> tuple[web.AppRunner, int]:
    async def live(request: web.Request) -> web.Response:
        return web.Response(text="alive\n")

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=b"m 1\n", headers={"Content-Type": "text/plain; version=0.0.4"})

    async def probe(request: web.Request) -> web.Response:
        return web.Response(status=503, text=f"probe {request.match_info['tail']} {request.rel_url.raw_path}")

    async def empty(request: web.Request) -> web.Response:
        return web.Response(status=204, text="ignored")

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("boom")

    app = web.Application()
    app.router.add_get("/healthz/live", live)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/app-health/{tail:.*}", probe)
    app.router.add_get("/broken", broken)
    app.router.add_get("/empty", empty)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, runner.addresses[0][1]


async def _exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    data = await asyncio.wait_for(reader.read(), 5)  # the server closes after one response
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


@pytest.fixture
async def site():
    runner, port = await _serve()
    yield port
    await runner.cleanup()


async def test_routes_and_bodies(site):
    status, headers, body = await _exchange(site, b"GET /healthz/live HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, body, headers["content-type"]) == (200, b"alive\n", "text/plain; charset=utf-8")
    assert headers["content-length"] == "6" and headers["connection"] == "close"
    status, headers, body = await _exchange(site, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, body, headers["content-type"]) == (200, b"m 1\n", "text/plain; version=0.0.4")


async def test_prefix_route_gets_the_rest_and_the_raw_target(site):
    status, _, body = await _exchange(site, b"GET /app-health/web/livez?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, body) == (503, b"probe web/livez /app-health/web/livez?x=1")


async def test_no_content_has_no_body(site):
    status, headers, body = await _exchange(site, b"GET /empty HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, body) == (204, b"") and "content-length" not in headers


async def test_head_has_no_body(site):
    status, headers, body = await _exchange(site, b"HEAD /healthz/live HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, headers["content-length"], body) == (200, "6", b"")


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (b"POST /healthz/live HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405),
        (b"GET /healthz/live HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n", 400),
        (b"GET /healthz/live HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 9000, 400),
        (b"GET /broken HTTP/1.1\r\nHost: x\r\n\r\n", 500),
    ],
    ids=["unknown-path", "post", "malformed-header", "head-too-large", "handler-raises"],
)
async def test_refusals(site, raw, status):
    assert (await _exchange(site, raw))[0] == status


def test_unsupported_route_pattern_is_refused():
    with pytest.raises(ValueError, match="only a final"):
        web.Application().router.add_get("/a/{x}/b", lambda r: None)  # type: ignore[arg-type,return-value]


async def _closed_at_once(port: int, source: str) -> bool:
    """True when the server closes a fresh connection from ``source`` without reading a request."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        return await asyncio.wait_for(reader.read(), 30) == b""  # bounds a slow machine, not a failure
    except ConnectionResetError:
        return True
    except asyncio.TimeoutError:
        return False
    finally:
        writer.close()


async def test_connections_are_capped_in_all_and_per_source():
    # anyone on the pod network reaches the health port: idle connections held there must not
    # pile up without bound, and one source must not take every slot
    async def live(request: web.Request) -> web.Response:
        return web.Response(text="alive\n")

    app = web.Application()
    app.router.add_get("/healthz/live", live)
    refusals: list[str] = []
    runner = web.AppRunner(app, max_connections=6, max_per_source=3, on_reject=refusals.append)
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    held = []
    try:
        for source in ("127.0.0.2", "127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.3"):
            held.append(await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)))
        await until(lambda: runner.open.total == 5)  # the server has taken them all in
        assert await _closed_at_once(port, "127.0.0.2")  # its 4th
        status, _, body = await _exchange(port, b"GET /healthz/live HTTP/1.1\r\nHost: x\r\n\r\n")  # the 6th slot
        assert (status, body) == (200, b"alive\n")
        held.append(await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.4", 0)))
        await until(lambda: runner.open.total == 6)
        assert await _closed_at_once(port, "127.0.0.5")  # all 6 slots taken
        held.pop()[1].close()  # a slot is given back when a connection ends
        await until(lambda: runner.open.total == 5)
        status, _, _ = await _exchange(port, b"GET /healthz/live HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 200
    finally:
        for _, writer in held:
            writer.close()
        await runner.cleanup()
    assert refusals == ["max-connections-per-source", "max-connections"]
