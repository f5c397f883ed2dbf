"""A request-making helper that runs inside one network namespace (netns demo mode).

The demo (in the host's namespace) cannot open connections inside a
workload's namespace itself, so it starts one of these there with
``nsenter`` and sends it one JSON request per line on stdin::

    {"host": "10.99.0.12", "port": 8080, "method": "GET", "path": "/", "body": null, "headers": {}}

and reads one JSON answer per line on stdout: ``{"status", "body", "error", "grpc_status"}``
(see :func:`trustmesh.demo.calls.http_request`). A request with ``"grpc": {...}`` instead
of a method is a gRPC ``FetchResource`` with that message (:func:`~trustmesh.demo.calls.grpc_fetch`). It starts by printing
``{"event": "ready"}`` and exits when stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import sys

from trustmesh.demo.calls import grpc_fetch, http_request

__all__ = ["main"]


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(json.dumps({"event": "ready"}), flush=True)
    while line := await reader.readline():
        try:
            ask = json.loads(line)
            body = ask.get("body")
            if isinstance(ask.get("grpc"), dict):
                response = await grpc_fetch(str(ask["host"]), int(ask["port"]), dict(ask["grpc"]), float(ask.get("timeout", 5.0)))
            else:
                response = await http_request(
                    str(ask["host"]),
                    int(ask["port"]),
                    str(ask["method"]),
                    str(ask["path"]),
                    body=body.encode() if isinstance(body, str) else None,
                    headers=dict(ask.get("headers") or {}),
                    timeout=float(ask.get("timeout", 5.0)),
                )
            answer = {"status": response.status, "body": response.body.decode("utf-8", "replace"),
                      "error": response.error, "grpc_status": response.grpc_status}
        except (ValueError, KeyError, TypeError) as err:
            answer = {"status": 0, "body": "", "error": f"bad request to the agent: {err}"}
        print(json.dumps(answer), flush=True)


def main() -> int:
    asyncio.run(_serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
