"""A small HTTP/1.1 server for the health and admin endpoints, on asyncio protocols.

The sidecar's health (15021) and admin (15000) endpoints answer a handful
of ``GET`` requests from the kubelet and Prometheus. Importing aiohttp for
them costs about 11 MB of resident memory per pod, so this module serves
them with an ``asyncio.Protocol`` and the sidecar's strict request parser
instead, behind the subset of aiohttp's ``web`` API that
:mod:`sidecar.admin` uses — switching is the one import line::

    from sidecar import admin_server as web   # instead of: from aiohttp import web

    app = web.Application()
    app.router.add_get("/healthz/live", handler)         # async handler(request) -> Response
    app.router.add_get("/app-health/{tail:.*}", probe)   # a trailing ``{name:.*}`` matches any rest
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    ...
    await runner.cleanup()

One request per connection (answered with ``connection: close``); ``GET``
and ``HEAD`` only (405 otherwise); a head larger than 8 KiB, malformed, or
not complete within 10 seconds is refused; a handler that raises gives 500.
A site holds at most ``max_connections`` connections (default 128), at most
``max_per_source`` (default 32) from one address; more are closed as they are
accepted and reported to ``on_reject(reason)``: the health port is reachable
from the pod network, and connections held open there must not exhaust the
sidecar's file descriptors or lock the kubelet's probes out entirely.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sidecar.errors import HttpError
from sidecar.http1 import parse_request_head
from sidecar.listener import SourceCounts

__all__ = ["Application", "AppRunner", "TCPSite", "Request", "Response"]

log = logging.getLogger("trustmesh.sidecar.admin")

_MAX_HEAD = 8192
_HEAD_TIMEOUT = 10.0
_REASONS = {200: "OK", 204: "No Content", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error",
            503: "Service Unavailable"}

Handler = Callable[["Request"], Awaitable["Response"]]


@dataclass(frozen=True, slots=True)
class _Url:
    raw_path: str  # the request target as received (path and query)
    path: str


@dataclass(frozen=True, slots=True)
class Request:
    """The parts of a request the admin handlers read."""

    method: str
    rel_url: _Url
    headers: dict[str, str]
    match_info: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return self.rel_url.path


class Response:
    """A complete response: ``text`` (UTF-8, text/plain unless ``content_type``) or ``body`` bytes."""

    def __init__(
        self,
        *,
        status: int = 200,
        text: str | None = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        content_type: str | None = None,
    ) -> None:
        self.status = status
        self.headers = dict(headers or {})
        if text is not None:
            self.body = text.encode()
            self.headers.setdefault("Content-Type", f"{content_type or 'text/plain'}; charset=utf-8")
        else:
            self.body = body or b""
            if content_type is not None:
                self.headers.setdefault("Content-Type", content_type)

    def encode(self, head_only: bool = False) -> bytes:
        """The response bytes; 1xx, 204 and 304 responses carry no body (RFC 9110 §6.4.1)."""
        bodiless = self.status in (204, 304) or 100 <= self.status < 200
        lines = [f"HTTP/1.1 {self.status} {_REASONS.get(self.status, 'Status')}"]
        lines += [f"{name}: {value}" for name, value in self.headers.items() if name.lower() not in ("content-length", "connection")]
        if not bodiless:
            lines.append(f"Content-Length: {len(self.body)}")
        lines += ["Connection: close", "", ""]
        return "\r\n".join(lines).encode("latin-1") + (b"" if head_only or bodiless else self.body)


class _Router:
    def __init__(self) -> None:
        self.exact: dict[str, Handler] = {}
        self.prefixes: list[tuple[str, str, Handler]] = []

    def add_get(self, path: str, handler: Handler) -> None:
        """Route ``GET`` (and ``HEAD``) of ``path``; a final ``{name:.*}`` segment matches any rest."""
        if path.endswith(":.*}") and "{" in path:
            prefix, _, name = path.rpartition("{")
            self.prefixes.append((prefix, name.split(":", 1)[0], handler))
        elif "{" in path:
            raise ValueError(f"unsupported route pattern {path!r}: only a final '{{name:.*}}' is supported")
        else:
            self.exact[path] = handler

    def resolve(self, path: str) -> tuple[Handler | None, dict[str, str]]:
        handler = self.exact.get(path)
        if handler is not None:
            return handler, {}
        for prefix, name, handler in self.prefixes:
            if path.startswith(prefix):
                return handler, {name: path[len(prefix) :]}
        return None, {}


class Application:
    """Routes of one site."""

    def __init__(self) -> None:
        self.router = _Router()


class _Connection(asyncio.Protocol):
    def __init__(self, app: Application, runner: AppRunner) -> None:
        self.app = app
        self.runner = runner
        self.tasks = runner.tasks
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.started = False
        self.source: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        source = str(peer[0]) if peer else ""
        refusal = self.runner._admit(source)
        if refusal is not None:
            self.started = True
            transport.close()
            self.runner.on_reject(refusal)
            return
        self.source = source
        self.timer = asyncio.get_running_loop().call_later(_HEAD_TIMEOUT, transport.close)

    def data_received(self, data: bytes) -> None:
        if self.started:
            return  # one request per connection; anything after its head is ignored
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > _MAX_HEAD:
                self._reply(Response(status=400, text="request head too large\n"))
            return
        self.started = True
        try:
            head = parse_request_head(bytes(self.buf[:end]), 100)
        except HttpError as err:
            self._reply(Response(status=400, text=f"{err.reason}\n"))
            return
        if head.method not in ("GET", "HEAD"):
            self._reply(Response(status=405, text="method not allowed\n", headers={"Allow": "GET, HEAD"}))
            return
        path = head.target.split("?", 1)[0]
        handler, match = self.app.router.resolve(path)
        if handler is None:
            self._reply(Response(status=404, text="not found\n"))
            return
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in head.headers}
        request = Request(head.method, _Url(head.target, path), headers, match)
        task = asyncio.get_running_loop().create_task(self._run(handler, request))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, handler: Handler, request: Request) -> None:
        try:
            response = await handler(request)
        except Exception:  # noqa: BLE001 - a failing handler is a 500, not a dead server
            log.exception("admin handler for %s failed", request.path)
            response = Response(status=500, text="internal error\n")
        self._reply(response, head_only=request.method == "HEAD")

    def _reply(self, response: Response, head_only: bool = False) -> None:
        self.started = True
        if self.timer is not None:
            self.timer.cancel()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(response.encode(head_only))
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.transport = None
        if self.source is not None:
            self.runner.open.remove(self.source)
            self.source = None


class AppRunner:
    """Holds the servers of one application (``addresses`` once a site started).

    ``max_connections`` / ``max_per_source`` cap the connections open at once (in all, and
    from one address); ``on_reject(reason)`` hears of each one closed for it
    (``max-connections`` or ``max-connections-per-source``).
    """

    def __init__(
        self,
        app: Application,
        access_log: Any = None,
        *,
        max_connections: int = 128,
        max_per_source: int = 32,
        on_reject: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self.app = app
        self.servers: list[asyncio.AbstractServer] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.max_connections = max_connections
        self.max_per_source = max_per_source
        self.on_reject = on_reject
        self.open = SourceCounts()

    def _admit(self, source: str) -> str | None:
        """Count a new connection from ``source``, or say why it is refused."""
        if self.open.total >= self.max_connections:
            return "max-connections"
        if self.open.of(source) >= self.max_per_source:
            return "max-connections-per-source"
        self.open.add(source)
        return None

    async def setup(self) -> None:
        return None

    @property
    def addresses(self) -> list[Any]:
        return [sock.getsockname() for server in self.servers for sock in server.sockets]

    async def cleanup(self) -> None:
        for server in self.servers:
            server.close()
        for task in list(self.tasks):
            task.cancel()
        for server in self.servers:
            await server.wait_closed()
        self.servers = []


class TCPSite:
    """Listens on ``host:port`` (0: any free port) for a runner's application."""

    def __init__(self, runner: AppRunner, host: str, port: int) -> None:
        self.runner = runner
        self.host = host
        self.port = port

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        runner = self.runner
        server = await loop.create_server(lambda: _Connection(runner.app, runner), self.host, self.port)
        runner.servers.append(server)
