"""Reading access logs for the flow page, once (``html``) or following them as they grow
(``serve``), and the loopback server.

A log is read by complete lines (:func:`policy_dsl.loglines.read_lines`, which ``policy replay``
uses too: a line over the record size limit is named and the rest of it skipped without being
held); a last line without its newline is read as it is at the end of a one-time read (a
truncated record says so), and waits for its newline when following. A file that shrank or was
replaced (rotation) is read again from its start.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

from policy_dsl.loglines import LinePosition, read_lines
from trustmesh.flows.model import Flows
from trustmesh.flows.page import build_page

__all__ = ["LogFollower", "LogReadError", "check_loopback", "serve"]


class LogReadError(OSError):
    """A log that cannot be opened or read."""


@dataclass
class _Position(LinePosition):
    inode: int | None = None  # of the file read: another one (rotation) is read from its start


class LogFollower:
    """Feeds each log's complete lines, from where the last :meth:`read` stopped, to ``flows``.

    ``on_error`` gets each bad line's ``file:line: why`` (the CLI prints it on stderr).
    ``-`` is standard input: read to its end by a final read, else by a thread of its own as
    lines come (``kubectl logs -f ... | trustmesh flows serve -``).
    """

    def __init__(self, paths: list[str], flows: Flows, on_error: Callable[[str], None] = lambda error: None) -> None:
        self.paths, self.flows, self.on_error = list(paths), flows, on_error
        self._positions = {path: _Position() for path in self.paths}
        self._stdin_started = False
        self._lock = threading.Lock()  # the stdin thread and the readers of data() share flows

    def data(self) -> dict:
        """:meth:`Flows.data`, consistent while standard input is being read."""
        with self._lock:
            return self.flows.data()

    def read(self, *, final: bool = False) -> list[LogReadError]:
        """Read what was appended. ``final``: nothing more will come, so a last line without its
        newline is read too. Returns the logs that could not be read (the others were)."""
        unreadable = []
        for path in self.paths:
            if path == "-":
                if not self._stdin_started:
                    self._stdin_started = True
                    if final:
                        self._read(sys.stdin.buffer, "<stdin>", _Position(), final=True)
                    else:
                        threading.Thread(target=self._read, args=(sys.stdin.buffer, "<stdin>", _Position()),
                                         kwargs={"final": True}, name="flows-stdin", daemon=True).start()
                continue
            try:
                with open(path, "rb") as handle:
                    stat = os.fstat(handle.fileno())
                    position = self._positions[path]
                    if stat.st_ino != position.inode or stat.st_size < position.offset:  # new, rotated, truncated
                        position = self._positions[path] = _Position(inode=stat.st_ino)
                    handle.seek(position.offset)
                    self._read(handle, path, position, final=final)
            except OSError as err:
                unreadable.append(LogReadError(f"{path}: cannot read log: {err.strerror or err}"))
        return unreadable

    def _read(self, handle, name: str, position: LinePosition, *, final: bool) -> None:
        for number, line in read_lines(handle, position, final=final):
            with self._lock:
                error = self.flows.add_line(line, name, number)
            if error is not None:
                self.on_error(error)


def check_loopback(host: str) -> None:
    """ValueError unless ``host`` is a loopback address (the page shows what the logs hold)."""
    if host == "localhost":
        return
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"--host {host!r}: give a loopback address such as 127.0.0.1 or ::1") from None
    if not address.is_loopback:
        raise ValueError(f"--host {host}: not a loopback address; the flow map serves only on loopback "
                         "(127.0.0.0/8, ::1): it shows what the access logs hold")


_POLL_SECONDS = 2


async def serve(follower: LogFollower, host: str, port: int, *, ready: Callable[[str], None] = print) -> None:
    """Serve ``/`` (the page, polling) and ``/data.json`` (the follower's flows, read again on
    each request) on loopback until cancelled. Requests naming another Host are refused, so a
    web page whose name was rebound to 127.0.0.1 cannot read the logs."""
    from aiohttp import web

    check_loopback(host)
    lock = asyncio.Lock()
    allowed_hosts: set[str] = set()
    reported: set[str] = set()

    async def refresh() -> dict:
        async with lock:
            for error in await asyncio.to_thread(follower.read):
                if str(error) not in reported:  # say once that a log is missing, not every poll
                    reported.add(str(error))
                    follower.on_error(str(error))
            return follower.data()

    @web.middleware
    async def guard(request: web.Request, handler):
        if request.host not in allowed_hosts:
            raise web.HTTPMisdirectedRequest(text="unexpected Host\n")
        response = await handler(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-store"
        return response

    async def page(request: web.Request) -> web.Response:
        html = build_page(await refresh(), poll_seconds=_POLL_SECONDS)
        return web.Response(text=html, content_type="text/html",
                            headers={"Content-Security-Policy": "frame-ancestors 'none'"})

    async def data(request: web.Request) -> web.Response:
        return web.json_response(await refresh())

    app = web.Application(middlewares=[guard])
    app.router.add_get("/", page)
    app.router.add_get("/data.json", data)
    await refresh()  # read what the logs hold (and start on standard input) before listening
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        allowed_hosts.update({f"{shown}:{bound_port}", f"localhost:{bound_port}"})
        ready(f"serving the flow map on http://{shown}:{bound_port}/ (Ctrl-C stops)")
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
