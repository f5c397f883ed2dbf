"""original_destination on sockets that were not redirected (no root needed)."""

from __future__ import annotations

import socket

import pytest

from sidecar.redirect import RedirectError, original_destination


def test_unconnected_socket_is_refused_precisely():
    with socket.socket() as s:
        with pytest.raises(RedirectError, match="socket is not connected"):
            original_destination(s)


@pytest.mark.parametrize(("family", "host"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_plain_loopback_connection_was_not_redirected(family, host):
    with socket.socket(family) as server:
        server.bind((host, 0))
        server.listen()
        with socket.create_connection(server.getsockname()[:2]) as client:
            accepted, _ = server.accept()
            with accepted:
                with pytest.raises(RedirectError) as info:
                    original_destination(accepted)
                assert isinstance(info.value, OSError)
                with pytest.raises(RedirectError):
                    original_destination(client)


def test_unix_sockets_are_never_redirected():
    a, b = socket.socketpair()
    with a, b:
        with pytest.raises(RedirectError):
            original_destination(a)


async def test_asyncio_transport_sockets_are_accepted():
    """The sidecar passes ``writer.get_extra_info("socket")`` (an asyncio TransportSocket)."""
    import asyncio

    seen: list[BaseException] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            original_destination(writer.get_extra_info("socket"))
        except BaseException as err:  # recorded for the assertion below
            seen.append(err)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        _, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.01)
        writer.close()
    assert len(seen) == 1 and isinstance(seen[0], RedirectError)
