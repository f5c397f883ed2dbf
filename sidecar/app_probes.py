"""The app's kubelet probes, run by the sidecar on its health port (15021).

Under STRICT mTLS the kubelet cannot probe the app itself, so the injector
points every ``httpGet``, ``tcpSocket`` and ``grpc`` probe of an app
container at ``:15021/app-health/<container>/<livez|readyz|startupz>`` and
puts the original actions in the sidecar's ``TRUSTMESH_APP_PROBERS``
environment variable (docs/injector.md, "Probe rewrite")::

    {"/app-health/web/readyz": {"httpGet": {"path": "/ready", "port": 8080, "scheme": "HTTP",
                                            "httpHeaders": [{"name": "X-Probe", "value": "1"}]},
                                "timeoutSeconds": 2}}

:func:`parse_probers` checks that document once, at start (a bad one is a
:class:`~sidecar.errors.ConfigError` naming the entry); :class:`AppProbes`
runs a probe by its exact path, always against ``127.0.0.1`` and only on the
ports the document names (never one of the sidecar's own), within the
probe's ``timeoutSeconds``:

* ``httpGet`` — a GET with the probe's path and headers; the answer is the
  app's own status code (redirects are not followed), 503 if it cannot be had;
* ``tcpSocket`` — 200 when a connection opens, else 503;
* ``grpc`` — a ``grpc.health.v1.Health/Check`` for ``service``: 200 when
  ``SERVING``, else 503.

An unknown path is 404, so the health port reaches nothing but the probes.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sidecar.errors import ConfigError
from sidecar.identity_headers import is_identity_header, is_identity_lookalike

__all__ = ["PROBERS_ENV", "HttpProbe", "TcpProbe", "GrpcProbe", "AppProbes", "parse_probers"]

PROBERS_ENV = "TRUSTMESH_APP_PROBERS"
_PATH = re.compile(r"/app-health/[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/(livez|readyz|startupz)")
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_SERVING = 1  # grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING


@dataclass(frozen=True)
class HttpProbe:
    port: int
    path: str = "/"
    scheme: str = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = 1.0


@dataclass(frozen=True)
class TcpProbe:
    port: int
    timeout: float = 1.0


@dataclass(frozen=True)
class GrpcProbe:
    port: int
    service: str = ""
    timeout: float = 1.0


Probe = HttpProbe | TcpProbe | GrpcProbe


def parse_probers(text: str | None, own_ports: Iterable[int] = ()) -> dict[str, Probe]:
    """The probes of ``TRUSTMESH_APP_PROBERS`` by health path; unset or empty means none.

    ``own_ports`` are the sidecar's listeners: a probe aimed at one is refused.
    """
    if text is None or not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as err:
        raise ConfigError(PROBERS_ENV, f"not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(PROBERS_ENV, "must be a JSON object keyed by /app-health/<container>/<kind>")
    forbidden = {p for p in own_ports if p}
    return {path: _probe(path, spec, forbidden) for path, spec in data.items()}


def _probe(path: str, spec: Any, forbidden: set[int]) -> Probe:
    where = f"{PROBERS_ENV}[{path}]"
    if not _PATH.fullmatch(path):
        raise ConfigError(where, "the key must be /app-health/<container>/<livez|readyz|startupz>")
    if not isinstance(spec, dict):
        raise ConfigError(where, "must be an object")
    unknown = set(spec) - {"httpGet", "tcpSocket", "grpc", "timeoutSeconds"}
    if unknown:
        raise ConfigError(f"{where}.{min(unknown)}", "unknown key")
    actions = [a for a in ("httpGet", "tcpSocket", "grpc") if a in spec]
    if len(actions) != 1:
        raise ConfigError(where, "needs exactly one of httpGet, tcpSocket, grpc")
    timeout = spec.get("timeoutSeconds", 1)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= 3600:
        raise ConfigError(f"{where}.timeoutSeconds", f"must be an integer from 1 to 3600, got {timeout!r}")
    action = actions[0]
    where = f"{where}.{action}"
    fields = spec[action]
    if not isinstance(fields, dict):
        raise ConfigError(where, "must be an object")
    allowed = {"httpGet": {"port", "path", "scheme", "httpHeaders", "host"}, "tcpSocket": {"port", "host"},
               "grpc": {"port", "service"}}[action]
    unknown = set(fields) - allowed
    if unknown:
        raise ConfigError(f"{where}.{min(unknown)}", "unknown key")
    port = fields.get("port")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"{where}.port", f"must be a port number (1-65535), got {port!r}")
    if port in forbidden:
        raise ConfigError(f"{where}.port", f"{port} is one of the sidecar's own ports")
    if action == "tcpSocket":
        return TcpProbe(port, float(timeout))
    if action == "grpc":
        service = fields.get("service", "")
        if not isinstance(service, str):
            raise ConfigError(f"{where}.service", "must be a string")
        return GrpcProbe(port, service, float(timeout))
    return HttpProbe(port, _http_path(fields.get("path", "/"), where), _scheme(fields, where),
                     _headers(fields.get("httpHeaders", []), where), float(timeout))


def _http_path(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.startswith("/") or any(c <= " " or c == "\x7f" for c in value):
        raise ConfigError(
            f"{where}.path", f"must be an absolute path without spaces or control characters, got {value!r}")
    return value


def _scheme(fields: Mapping[str, Any], where: str) -> str:
    scheme = fields.get("scheme", "HTTP")
    if scheme not in ("HTTP", "HTTPS"):
        raise ConfigError(f"{where}.scheme", f"must be HTTP or HTTPS, got {scheme!r}")
    return scheme


def _headers(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{where}.httpHeaders", "must be a list")
    headers = []
    for i, item in enumerate(value):
        at = f"{where}.httpHeaders[{i}]"
        if not isinstance(item, dict) or set(item) - {"name", "value"}:
            raise ConfigError(at, "must be an object with name and value")
        name, text = item.get("name"), item.get("value", "")
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise ConfigError(f"{at}.name", f"not a valid header name: {name!r}")
        lower = name.lower().encode("latin-1")
        if is_identity_header(lower) or is_identity_lookalike(lower):
            raise ConfigError(f"{at}.name", f"{name} is an identity header only the sidecar sets (x-forwarded-client-cert, x-trustmesh-*)")
        if not isinstance(text, str) or any((c < " " and c != "\t") or c == "\x7f" for c in text):
            raise ConfigError(f"{at}.value", "must be a string without control characters")
        headers.append((name, text))
    return tuple(headers)


class AppProbes:
    """Runs the configured probes against the app on loopback."""

    def __init__(self, probes: Mapping[str, Probe], host: str = "127.0.0.1") -> None:
        self.probes = dict(probes)
        self.host = host
        self._in_flight: dict[str, asyncio.Future[tuple[int, str]]] = {}
        self._session: Any = None

    async def answer(self, path: str) -> tuple[int, str]:
        """(status, text) for the kubelet's request to ``path``.

        Requests for a path whose probe is already running share that probe's outcome:
        the health port is reachable by anyone, and a caller flooding it must neither
        crowd out the kubelet's probe (a failed liveness probe restarts the pod) nor
        flood the app.
        """
        probe = self.probes.get(path)
        if probe is None:
            return 404, f"no app probe {path}"
        running = self._in_flight.get(path)
        if running is None:
            running = self._in_flight[path] = asyncio.ensure_future(self._probe(probe))
            running.add_done_callback(lambda _: self._in_flight.pop(path, None))
        return await asyncio.shield(running)  # a caller that goes away does not cancel the others' probe

    async def _probe(self, probe: Probe) -> tuple[int, str]:
        try:
            return await asyncio.wait_for(self._run(probe), probe.timeout)
        except TimeoutError:
            return 503, f"no answer from the app within {probe.timeout:g} s"
        except Exception as err:  # noqa: BLE001 - any failure to reach the app is a failed probe
            return 503, f"probe failed: {type(err).__name__}: {err}"

    async def _run(self, probe: Probe) -> tuple[int, str]:
        if isinstance(probe, HttpProbe):
            return await self._http(probe)
        if isinstance(probe, TcpProbe):
            _, writer = await asyncio.open_connection(self.host, probe.port)
            writer.close()
            return 200, f"connected to port {probe.port}"
        return await _grpc_check(self.host, probe)

    async def _http(self, probe: HttpProbe) -> tuple[int, str]:
        import aiohttp
        from yarl import URL

        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True), auto_decompress=False,
                headers={"User-Agent": "kube-probe/trustmesh", "Accept": "*/*"},
            )
        url = f"{probe.scheme.lower()}://{self.host}:{probe.port}{probe.path}"
        # like the kubelet: an HTTPS probe does not verify the app's certificate
        async with self._session.get(
            URL(url, encoded=True), headers=list(probe.headers), allow_redirects=False,
            ssl=False if probe.scheme == "HTTPS" else None,
        ) as response:
            return response.status, f"app answered {response.status}"

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _grpc_check(host: str, probe: GrpcProbe) -> tuple[int, str]:
    import grpc

    request_type, response_type = _health_messages()
    async with grpc.aio.insecure_channel(f"{host}:{probe.port}") as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_type.FromString,
        )
        try:
            reply = await check(request_type(service=probe.service), timeout=probe.timeout)
        except grpc.aio.AioRpcError as err:
            return 503, f"health check failed: {err.code().name}: {err.details()}"
    if reply.status == _SERVING:
        return 200, "SERVING"
    return 503, f"status {reply.status} (not SERVING)"


_MESSAGES: tuple[Any, Any] | None = None


def _health_messages() -> tuple[Any, Any]:
    """``grpc.health.v1`` HealthCheckRequest/Response, built from a descriptor in a private pool."""
    global _MESSAGES
    if _MESSAGES is None:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

        F = descriptor_pb2.FieldDescriptorProto
        fdp = descriptor_pb2.FileDescriptorProto(
            name="trustmesh/grpc_health.proto", package="grpc.health.v1", syntax="proto3")
        fdp.message_type.add(name="HealthCheckRequest").field.add(
            name="service", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
        fdp.message_type.add(name="HealthCheckResponse").field.add(
            name="status", number=1, type=F.TYPE_INT32, label=F.LABEL_OPTIONAL)  # an enum on the wire: a varint
        pool = descriptor_pool.DescriptorPool()
        pool.Add(fdp)
        _MESSAGES = tuple(  # type: ignore[assignment]
            message_factory.GetMessageClass(pool.FindMessageTypeByName(f"grpc.health.v1.{name}"))
            for name in ("HealthCheckRequest", "HealthCheckResponse")
        )
    assert _MESSAGES is not None
    return _MESSAGES
