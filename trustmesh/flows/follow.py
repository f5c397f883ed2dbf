"""Reading access logs for the flow page, once or following them as they grow (``serve``)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from trustmesh.flows.model import Flows
from trustmesh.flows.page import build_page

__all__ = ["LogFollower", "serve"]

_CHUNK = 1 << 20


class LogFollower:
    """Reads complete lines appended to each log since the last :meth:`read` (``-``: stdin, once)."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        self.flows = Flows()
        self._offsets = {path: 0 for path in paths}
        self._lines = {path: 0 for path in paths}
        self._stdin_done = False

    def read(self) -> None:
        for path in self.paths:
            if path == "-":
                if not self._stdin_done:
                    for number, line in enumerate(sys.stdin.buffer, 1):
                        self.flows.add_line(line, "<stdin>", number)
                    self._stdin_done = True
                continue
            self._read_file(path)

    def _read_file(self, path: str) -> None:
        try:
            with open(path, "rb") as handle:
                if Path(path).stat().st_size < self._offsets[path]:  # rotated or truncated: start over
                    self._offsets[path] = self._lines[path] = 0
                handle.seek(self._offsets[path])
                while True:
                    line = handle.readline(_CHUNK)
                    if not line.endswith(b"\n"):
                        break  # a line still being written (or over the limit) waits for the next read
                    self._offsets[path] += len(line)
                    self._lines[path] += 1
                    self.flows.add_line(line, path, self._lines[path])
        except OSError as err:
            if f"{path}: {err.strerror}" not in self.flows.errors:
                self.flows.errors.append(f"{path}: {err.strerror or err}")


async def serve(paths: list[str], host: str, port: int) -> None:
    """Serve ``/`` (the page, polling) and ``/data.json`` until interrupted."""
    from aiohttp import web

    follower = LogFollower(paths)

    async def page(request: web.Request) -> web.Response:
        follower.read()
        return web.Response(text=build_page(follower.flows.data(), live=True), content_type="text/html")

    async def data(request: web.Request) -> web.Response:
        follower.read()
        return web.json_response(follower.flows.data())

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/data.json", data)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0]
    print(f"serving the flow map on http://{bound[0]}:{bound[1]}/ (Ctrl-C stops)", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
