"""Making the demo's scripted calls and reading their outcome.

Requests are written byte for byte on a plain socket (so a path like
``/v1/fetch/../admin/keys`` reaches the sidecar exactly as written) and the
answer is classified:

* an answer from the app (2xx-4xx, other than the sidecar's 403) → ``allow``,
  with the caller identity the app says it saw;
* ``403`` from the callee's sidecar → ``deny`` (the sidecar tells the caller no more than
  ``forbidden``; the demo reads the rule and why from the callee's access log);
* no HTTP answer (connection refused, reset or closed), or an error status
  from the caller's own sidecar → ``refused``.

gRPC calls (:func:`grpc_fetch`, a real grpcio client) are classified by their
status: OK → ``allow``, PERMISSION_DENIED → ``deny``, UNAVAILABLE or no answer
→ ``refused``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

__all__ = ["Response", "Outcome", "http_request", "grpc_fetch", "classify", "NO_RESPONSE"]

NO_RESPONSE = 0  # Response.status when nothing came back
_MAX_RESPONSE = 1 << 20


@dataclass(frozen=True)
class Response:
    """An HTTP answer (``status`` 0: none, ``error`` says why)."""

    status: int
    body: bytes = b""
    error: str = ""
    grpc_status: int | None = None  # a gRPC call's status code (None: not a gRPC call)

    def json(self) -> dict | None:
        try:
            value = json.loads(self.body)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None


@dataclass(frozen=True)
class Outcome:
    """What happened to one call, as the table shows it."""

    decision: str  # allow | deny | refused
    reason: str
    status: int
    caller_seen: str | None = None  # the caller identity the app reported (allowed calls)


async def http_request(
    host: str,
    port: int,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> Response:
    """One HTTP/1.1 request on a fresh connection; never raises for network trouble."""
    try:
        return await asyncio.wait_for(_exchange(host, port, method, path, body, headers or {}), timeout)
    except asyncio.TimeoutError:
        return Response(NO_RESPONSE, error=f"no answer within {timeout:.0f} s")
    except ConnectionRefusedError:
        return Response(NO_RESPONSE, error="connection refused")
    except (ConnectionError, asyncio.IncompleteReadError) as err:
        return Response(NO_RESPONSE, error=_closed(err))
    except OSError as err:
        return Response(NO_RESPONSE, error=err.strerror or str(err))


async def grpc_fetch(host: str, port: int, message: dict[str, str], timeout: float = 5.0) -> Response:
    """``DynamicResourceService.FetchResource(message)`` with grpcio over plaintext HTTP/2 (what an
    app does towards its sidecar); the reply's ``caller`` label comes back as the JSON body."""
    import grpc

    from sdk.proto.trustmesh.demo.v1 import resource_pb2, resource_pb2_grpc

    async with grpc.aio.insecure_channel(f"{host}:{port}") as channel:
        stub = resource_pb2_grpc.DynamicResourceServiceStub(channel)
        try:
            reply = await stub.FetchResource(resource_pb2.FetchResourceRequest(**message), timeout=timeout)
        except grpc.aio.AioRpcError as err:
            code = err.code()
            status = 0 if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) else 200
            return Response(status, (err.details() or "").encode(), f"{code.name}: {err.details()}", code.value[0])
    body = json.dumps({"caller": reply.labels.get("caller") or None, "appname": reply.appname}).encode()
    return Response(200, body, "", 0)


def _closed(err: BaseException) -> str:
    if isinstance(err, ConnectionResetError):
        return "connection reset without an HTTP answer"
    return "connection closed without an HTTP answer"


async def _exchange(host: str, port: int, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> Response:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            return Response(NO_RESPONSE, error=f"not an HTTP answer: {status_line[:60]!r}")
        length = None
        for line in header_lines:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length" and value.strip().isdigit():
                length = int(value.strip())
        if length is not None:
            data = await reader.readexactly(min(length, _MAX_RESPONSE))
        else:
            data = await reader.read(_MAX_RESPONSE)
        return Response(int(parts[1]), data)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass


def classify(response: Response, *, through_own_sidecar: bool) -> Outcome:
    """Turn an answer into a decision. A 403 is the callee sidecar's policy decision (the demo's
    apps never answer 403 themselves); a 502-504 came from the caller's own sidecar when
    ``through_own_sidecar``, else from the callee."""
    if response.status == NO_RESPONSE:
        return Outcome("refused", response.error, NO_RESPONSE)
    if response.grpc_status is not None and response.grpc_status != 0:
        decision = "deny" if response.grpc_status == 7 else "refused"
        return Outcome(decision, response.error, response.status)
    text = response.body.decode("utf-8", "replace").strip()
    if response.status == 403:
        return Outcome("deny", f"403 {text[:80]} (no access-log line found)", 403)
    if response.status in (502, 503, 504):
        where = "the caller's sidecar" if through_own_sidecar else "the callee"
        return Outcome("refused", f"{response.status} from {where}: {text[:80]}", response.status)
    doc = response.json() or {}
    caller = doc.get("caller")
    return Outcome("allow", "", response.status, caller if isinstance(caller, str) else None)
