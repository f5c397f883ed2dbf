"""Renewal by the current SVID in local mode (join/static tokens), against a real CA service
(gRPC over TLS, in this process) with ``svid_renewal`` on or off."""

import os
import random

import pytest
import yaml

from sdk.ca_client import CaClient
from sdk.spiffeid import SpiffeId, TrustDomain
from sidecar.config import parse_config
from sidecar.identity import IdentityManager

TD = TrustDomain.parse("example.org")
WEB = "spiffe://example.org/ns/prod/sa/web"
STATIC = "static-token-web-0123456789"


async def _ca(tmp_path, svid_renewal: bool):
    from ca.service.app import CaService
    from ca.service.audit import AuditLog
    from ca.service.config import parse_config as ca_config

    (tmp_path / "static.yaml").write_text(yaml.safe_dump({STATIC: WEB}))
    cfg = ca_config({
        "trust_domain": "example.org",
        "authentication": {"join_tokens": True, "svid_renewal": svid_renewal,
                           "static_tokens_file": str(tmp_path / "static.yaml")},
        "listen": {"grpc": "127.0.0.1:0", "bundle_endpoint": "127.0.0.1:0", "metrics": "127.0.0.1:0"},
        "serving": {"ip_addresses": ["127.0.0.1"]},
    })
    service = CaService(cfg, audit=AuditLog(open(os.devnull, "w")), rotation_loop=False)
    await service.start()
    return service


@pytest.fixture
async def ca_factory(tmp_path):
    services, clients = [], []

    async def make(svid_renewal: bool, token: str | None = None):
        service = await _ca(tmp_path, svid_renewal)
        services.append(service)
        token = token or service.join_tokens.create(SpiffeId.parse(WEB), ttl=60)
        client = CaClient(f"127.0.0.1:{service.grpc_port}", service.ca.bundle(), lambda: token)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()
    for service in services:
        await service.stop(grace=0.5)


async def test_a_one_time_join_token_is_enough_when_the_ca_renews_by_svid(ca_factory):
    client = await ca_factory(svid_renewal=True)
    manager = IdentityManager(client, TD, rng=random.Random(3), renew_with_svid=True)
    first = await manager.renew()  # the join token: now used up
    second = await manager.renew()  # proved by the first SVID
    third = await manager.renew()  # and by the second
    assert manager.renewals_by_svid == 2
    assert str(second.spiffe_id) == str(third.spiffe_id) == WEB
    assert len({first.leaf.serial_number, second.leaf.serial_number, third.leaf.serial_number}) == 3
    assert second.private_key.public_key() != first.private_key.public_key()  # a fresh key every time


async def test_without_svid_renewal_the_used_join_token_is_refused(ca_factory):
    """The reason the feature exists: the same sequence with token-only renewal fails."""
    client = await ca_factory(svid_renewal=True)
    manager = IdentityManager(client, TD, rng=random.Random(3), renew_with_svid=False)
    await manager.renew()
    with pytest.raises(OSError, match="UNAUTHENTICATED"):
        await manager.renew()


async def test_a_ca_without_svid_renewal_means_the_token_from_then_on(ca_factory, caplog):
    client = await ca_factory(svid_renewal=False, token=STATIC)
    manager = IdentityManager(client, TD, rng=random.Random(3), renew_with_svid=True)
    await manager.renew()
    second = await manager.renew()  # refused by SVID -> asked again with the token
    assert str(second.spiffe_id) == WEB
    assert manager.renewals_by_svid == 0 and manager.renew_with_svid is False
    assert "refused renewal by SVID" in caplog.text
    caplog.clear()
    await manager.renew()
    assert "refused renewal by SVID" not in caplog.text  # not asked by SVID again


def test_renew_with_svid_defaults_to_local_mode_only(tmp_path):
    def ca(**kw):
        return parse_config({"trust_domain": "example.org", "ca": {"address": "127.0.0.1:15012", "bundle_file": "b.pem", **kw}}).ca

    assert ca(token="join-or-static").renew_with_svid is True
    assert ca(token_file="/var/run/secrets/token").renew_with_svid is False
    assert ca(token="t", renew_with_svid=False).renew_with_svid is False
    assert ca(token_file="/t", renew_with_svid=True).renew_with_svid is True
