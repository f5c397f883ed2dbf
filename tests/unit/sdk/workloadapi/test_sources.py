"""JwtSource and X509Source (async and blocking) against the real server.

Waits are for events (a new token minted, a stream update), each bounded.
"""

import asyncio
from datetime import timedelta

import pytest

from sdk.bundle import BundleSet
from sdk.errors import JwtSvidError
from sdk.workloadapi import (
    JwtSource,
    X509Source,
    close_default_sources,
    fetch_jwt_svid,
    sync,
    validate_jwt_svid,
)
from sidecar.workload_api import serve_workload_api
from tests.integration.workload_api.support import Domain, memory_source


async def _until(predicate, timeout=10.0):
    async def poll():
        while not predicate():
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), timeout)


async def test_jwt_source_caches_per_audience_and_validates_locally(served, domain):
    _, address = served
    async with JwtSource(address) as source:
        first = await source.fetch_jwt_svid("db")
        again = await source.fetch_jwt_svid("db")
        other = await source.fetch_jwt_svid("cache", "db")
        assert first is again
        assert other.token != first.token
        caller = source.validate_jwt_svid(domain.sign(domain.id("/ns/x/sa/api"), ["web"]), "web")
        assert str(caller.spiffe_id) == "spiffe://example.org/ns/x/sa/api"
        with pytest.raises(JwtSvidError):
            source.validate_jwt_svid(first.token, "not-db")
        stranger = Domain("stranger.org")
        with pytest.raises(JwtSvidError, match="no bundle"):
            source.validate_jwt_svid(stranger.sign(stranger.id("/a"), ["web"]), "web")


async def test_jwt_source_renews_used_tokens_in_the_background(domain, sock_dir):
    # 2-second tokens: the source renews at half life without being asked.
    source = memory_source(domain, "/ns/prod/sa/web")
    async with serve_workload_api(source, sock_dir / "a.sock", jwt_ttl=timedelta(seconds=2)) as srv:
        async with JwtSource(srv.address) as jwt_source:
            first = await jwt_source.fetch_jwt_svid("db")
            minted = len(domain.minted)
            await _until(lambda: len(domain.minted) > minted)  # renewed without a call
            renewed = await jwt_source.fetch_jwt_svid("db")
            # A token minted since, by the background renewal (or, on a machine so slow that
            # its half life passed again before this call, by the call itself): never the first.
            assert renewed.token != first.token
            assert renewed.token in domain.minted[minted:]


async def test_jwt_source_follows_bundle_updates(served, domain):
    identity, address = served
    newcomer = Domain("newcomer.org")
    token = newcomer.sign(newcomer.id("/a"), ["web"])
    async with JwtSource(address) as source:
        with pytest.raises(JwtSvidError, match="no bundle for trust domain 'newcomer.org'"):
            source.validate_jwt_svid(token, "web")
        generation = source.generation
        await identity.update(bundles=BundleSet([domain.bundle(), newcomer.bundle()]))
        await asyncio.wait_for(source.changed(generation), 10)
        assert str(source.validate_jwt_svid(token, "web").spiffe_id) == "spiffe://newcomer.org/a"


async def test_x509_source_sees_rotation_and_survives_a_server_restart(domain, sock_dir):
    path = sock_dir / "agent.sock"
    identity = memory_source(domain, "/ns/prod/sa/web")
    server = serve_workload_api(identity, path)
    await server.__aenter__()
    x509 = await X509Source(f"unix://{path}").start()
    try:
        generation = x509.generation
        await identity.update(svid=domain.svid("/ns/prod/sa/web"))
        generation = await asyncio.wait_for(x509.changed(generation), 10)
        assert x509.get_x509_svid().leaf == identity.get_x509_svid().leaf

        await server.__aexit__(None, None, None)
        rotated = memory_source(domain, "/ns/prod/sa/web")
        async with serve_workload_api(rotated, path):
            await asyncio.wait_for(x509.changed(generation), 15)
            assert x509.get_x509_svid().leaf == rotated.get_x509_svid().leaf
    finally:
        await x509.close()


async def test_one_call_helpers(served):
    _, address = served
    try:
        svid = await fetch_jwt_svid("db", address=address)
        checked = await validate_jwt_svid(svid.token, "db", address=address)
        assert checked.spiffe_id == svid.spiffe_id
    finally:
        await close_default_sources()


async def test_blocking_sources(served, domain):
    _, address = served

    def blocking():
        with sync.JwtSource(address) as source:
            token = source.fetch_jwt_svid("db")
            assert source.fetch_jwt_svid("db") is token
            checked = source.validate_jwt_svid(token.token, "db")
        with sync.X509Source(address) as x509:
            svid = x509.get_x509_svid()
        other = sync.fetch_jwt_svid("cache", address=address)
        again = sync.validate_jwt_svid(other.token, "cache", address=address)
        sync.close_default_sources()
        return checked, svid, again

    checked, svid, again = await asyncio.wait_for(asyncio.to_thread(blocking), 30)
    assert str(checked.spiffe_id) == str(svid.spiffe_id) == str(again.spiffe_id)
    assert str(svid.spiffe_id) == "spiffe://example.org/ns/prod/sa/web"
