"""WatchBundle needs no credential, so one client may hold only so many streams.

Real gRPC over TLS on loopback; the Kubernetes API is the in-process double
(tests/support/k8s_double.py), unused here beyond the service's start-up.
"""

from __future__ import annotations

import asyncio

import pytest

from sdk.ca_client import CaClient, CaClientError


async def _open(client: CaClient):
    """Open a WatchBundle stream and read its first bundle (so the server holds the slot)."""
    watch = client.watch_bundle()
    await asyncio.wait_for(anext(watch), 5)
    return watch


async def _refused(client: CaClient) -> CaClientError:
    watch = client.watch_bundle()
    with pytest.raises(CaClientError) as info:
        await asyncio.wait_for(anext(watch), 5)
    await watch.aclose()
    return info.value


async def test_one_client_cannot_take_more_than_its_share_of_streams_by_default(start_service, audit_stream):
    service = await start_service()
    # Several connections from the same address still count as one client.
    clients = [CaClient(f"127.0.0.1:{service.grpc_port}", service.ca.bundle(), lambda: "") for _ in range(4)]
    watches = [await _open(clients[i % 4]) for i in range(16)]
    try:
        err = await _refused(clients[0])
        assert err.code == "RESOURCE_EXHAUSTED"
        assert "client 127.0.0.1 already holds 16 bundle streams" in str(err)
        assert "limits.max_bundle_watchers_per_client" in str(err)
        refusal = audit_stream.last()
        assert refusal["rpc"] == "WatchBundle" and refusal["code"] == "RESOURCE_EXHAUSTED"
        assert refusal["peer"].startswith("ipv4:127.0.0.1:")
        # The bundle itself stays reachable without a stream.
        assert (await clients[0].fetch_bundle()).sequence == 1
    finally:
        for watch in watches:
            await watch.aclose()
        for client in clients:
            await client.close()


async def test_the_slot_comes_back_when_a_stream_ends(start_service, client_for):
    service = await start_service(limits={"max_bundle_watchers_per_client": 2})
    client = client_for(service, "")
    first, second = await _open(client), await _open(client)
    assert (await _refused(client)).code == "RESOURCE_EXHAUSTED"

    await first.aclose()  # the client cancels; the server's stream ends and frees the slot
    third = None
    for _ in range(50):  # the cancellation reaches the server asynchronously: bounded retries
        try:
            third = await _open(client)
            break
        except CaClientError as err:
            assert err.code == "RESOURCE_EXHAUSTED"
            await asyncio.sleep(0.05)
    assert third is not None, "the slot of a closed stream was never released"
    assert (await _refused(client)).code == "RESOURCE_EXHAUSTED"
    await second.aclose()
    await third.aclose()
