"""Choosing HTTP/1.1 or HTTP/2 per connection: the preface in plaintext (real loopback sockets)."""

from __future__ import annotations

import asyncio

import pytest

from sidecar.config import Limits
from sidecar.detect import Detect, is_h2_preface
from sidecar.exchange import ConnInfo
from sidecar.h2frames import PREFACE
from sidecar.listener import ConnectionTable


@pytest.mark.parametrize(("data", "verdict"), [
    (b"", None), (b"P", None), (b"PRI * HTTP/2.0\r\n", None), (PREFACE, True), (PREFACE + b"\x00\x00", True),
    (b"G", False), (b"POST / HTTP/1.1\r\n", False), (b"PRI * HTTP/1.1\r\n\r\n", False),
])
def test_preface(data, verdict):
    assert is_h2_preface(data) is verdict


class _Recorder(asyncio.Protocol):
    def __init__(self, kind: str, seen: list) -> None:
        self.kind = kind
        self.seen = seen
        self.data = b""

    def connection_made(self, transport) -> None:
        self.seen.append(self)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data += data
        if self.data.endswith(b"END"):
            self.transport.write(self.kind.encode())
            self.transport.close()


class _Listener:
    def __init__(self) -> None:
        self.connections = ConnectionTable()


@pytest.mark.parametrize(("chunks", "kind"), [
    ([b"GET / HTTP/1.1\r\n\r\nEND"], "http1"),
    ([b"P", b"RI * HTTP/2.0\r\n", b"\r\nSM\r\n\r\nxyzEND"], "http2"),  # the preface split across reads
    ([b"PRI * HTTP/1.1\r\n", b"END"], "http1"),
])
async def test_the_chosen_protocol_gets_every_byte(chunks, kind):
    seen: list[_Recorder] = []
    listener = _Listener()

    def factory() -> Detect:
        info = ConnInfo("127.0.0.1", 0)
        return Detect(info, listener, Limits(), lambda: _Recorder("http1", seen), lambda: _Recorder("http2", seen))

    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for chunk in chunks:
        writer.write(chunk)
        await writer.drain()
        await asyncio.sleep(0.01)  # separate reads on the server (not relied on for the outcome)
    assert await asyncio.wait_for(reader.read(), 10) == kind.encode()
    (chosen,) = seen
    assert chosen.kind == kind and chosen.data == b"".join(chunks)
    assert len(listener.connections) == 0  # the undecided connection left the table
    writer.close()
    server.close()
    await server.wait_closed()
