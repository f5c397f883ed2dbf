"""A malformed chunked body never lets its head reach the app when the bad bytes were already
received at decision time; when they arrive later, the app sees the head and the well-formed
chunks, then a reset (never a complete request). Real sidecar, real socket app recording every
byte it receives."""

from __future__ import annotations

import asyncio

import pytest

from tests.unit.sidecar.conftest import config
from tests.unit.sidecar.test_review_smuggling import exchange, exchange_on

HEAD = b"POST /upload HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n"
JSON_HEAD = b"POST /upload HTTP/1.1\r\nHost: app\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"

BAD_BODIES = {
    "0x-size": b"0x5\r\nhello\r\n0\r\n\r\n",
    "lf-in-extension": b"5;ext=a\nb\r\nhello\r\n0\r\n\r\n",
    "lf-only-size-line": b"5\nhello\r\n0\r\n\r\n",
    "plus-size": b"+5\r\nhello\r\n0\r\n\r\n",
    "space-size": b" 5\r\nhello\r\n0\r\n\r\n",
    "overflowing-size": b"1" + b"0" * 16 + b"\r\nhello\r\n0\r\n\r\n",
    "bad-crlf-after-data": b"5\r\nhelloXX0\r\n\r\n",
    # the same faults after a first, well-formed chunk
    "valid-then-0x-size": b"3\r\nabc\r\n0x5\r\nhello\r\n0\r\n\r\n",
    "valid-then-bad-crlf": b"3\r\nabc\r\n5\r\nhelloXX",
    "valid-then-lf-only": b"3\r\nabc\r\n5\nhello\r\n",
}


class RecordingApp:
    """A TCP app that records every byte it receives on each connection and how it ended."""

    def __init__(self) -> None:
        self.received: list[bytearray] = []
        self.endings: list[str] = []
        self.head_seen = asyncio.Event()
        self.body_done = asyncio.Event()  # a last chunk arrived
        self._tasks: set[asyncio.Task] = set()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> RecordingApp:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)  # type: ignore[arg-type]
        buf = bytearray()
        self.received.append(buf)
        try:
            while data := await reader.read(65536):
                buf += data
                if b"\r\n\r\n" in buf:
                    self.head_seen.set()
                if buf.endswith(b"\r\n0\r\n\r\n"):
                    self.body_done.set()
            self.endings.append("eof")
        except ConnectionResetError:
            self.endings.append("reset")
        finally:
            writer.close()

    async def all_ended(self) -> None:
        """Wait (bounded) until every connection the sidecar opened has ended."""
        await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), 5)

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.server.wait_closed()


@pytest.fixture
async def recorder():
    app = await RecordingApp().start()
    yield app
    await app.stop()


@pytest.mark.parametrize("head", [HEAD, JSON_HEAD], ids=["decided-on-head", "json-collected"])
@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
async def test_nothing_reaches_the_app_when_the_bad_framing_was_buffered_at_decision_time(mesh, pki, recorder, head, body):
    b = await mesh(config(recorder.port, mode="PERMISSIVE"), pki.identity("/ns/b/sa/server"))
    response = await exchange(b.ports["inbound"], head + body)  # one write: all buffered when the policy decides
    assert response.startswith(b"HTTP/1.1 400")
    b.app_pool.close()  # any connection the sidecar opened to the app now ends
    await recorder.all_ended()
    assert b"".join(recorder.received) == b""


async def test_nothing_reaches_the_app_over_mtls_either(mesh, pki, recorder):
    b = await mesh(config(recorder.port), pki.identity("/ns/b/sa/server"))
    client = pki.identity("/ns/a/sa/client")
    reader, writer = await asyncio.open_connection("127.0.0.1", b.ports["inbound"], ssl=client.client_context())
    try:
        response = await exchange_on(reader, writer, HEAD + BAD_BODIES["valid-then-0x-size"])
    finally:
        writer.close()
    assert response.startswith(b"HTTP/1.1 400")
    b.app_pool.close()
    await recorder.all_ended()
    assert b"".join(recorder.received) == b""


async def test_a_well_formed_body_still_reaches_the_app_whole(mesh, pki, recorder):
    b = await mesh(config(recorder.port, mode="PERMISSIVE"), pki.identity("/ns/b/sa/server"))
    reader, writer = await asyncio.open_connection("127.0.0.1", b.ports["inbound"])
    try:
        writer.write(HEAD + b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n")
        await asyncio.wait_for(recorder.body_done.wait(), 5)
    finally:
        writer.close()
    (received,) = recorder.received
    assert received.endswith(b"\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")


async def test_bad_framing_arriving_after_the_head_went_out_ends_in_a_reset(mesh, pki, recorder):
    # The head (and the well-formed chunk) were forwarded before the bad bytes existed: the app
    # then sees its connection reset, never the last chunk, so it cannot take the request as whole.
    b = await mesh(config(recorder.port, mode="PERMISSIVE"), pki.identity("/ns/b/sa/server"))
    reader, writer = await asyncio.open_connection("127.0.0.1", b.ports["inbound"])
    try:
        writer.write(HEAD + b"3\r\nabc\r\n")
        await asyncio.wait_for(recorder.head_seen.wait(), 5)
        response = await exchange_on(reader, writer, b"0x5\r\nhello\r\n0\r\n\r\n")
    finally:
        writer.close()
    assert response.startswith(b"HTTP/1.1 400")
    await recorder.all_ended()
    (received,) = recorder.received
    assert received.endswith(b"\r\n\r\n3\r\nabc\r\n")  # the head and the well-formed chunk, nothing more
    assert recorder.endings == ["reset"]
