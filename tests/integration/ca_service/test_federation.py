"""Two CA services on loopback, each federated with the other, in each endpoint profile.

Each fetches the other's bundle from its bundle endpoint, hands it out beside its
own on FetchBundle / WatchBundle, follows the other's CA rotation (including the
endpoint SVID re-issued by the new authority, for https_spiffe), and answers
operators on its ops port.
"""

from __future__ import annotations

import asyncio
import json
import ssl

import aiohttp
import pytest

from ca.service.ca_store import MemoryCaStore
from sdk.bundle import Bundle
from sdk.ca_client import CaClient
from sdk.spiffeid import TrustDomain
from sdk.x509svid import verify_chain
from sdk.workloadapi.tls import peer_chain
from tests.integration.ca_service.conftest import utc_now
from tests.integration.ca_service.federation_support import free_port, make_ca

A, B = TrustDomain.parse("a.org"), TrustDomain.parse("b.org")


def _relationship(peer: str, port: int, profile: str, bootstrap, roots) -> dict:
    rel = {"trust_domain": peer, "bundle_endpoint_url": f"https://127.0.0.1:{port}/", "profile": profile}
    if profile == "https_spiffe":
        rel.update(endpoint_spiffe_id=f"spiffe://{peer}/trustmesh/bundle-endpoint", bundle_file=str(bootstrap))
    else:
        rel.update(endpoint_ca_file=str(roots))
    return rel


@pytest.fixture
async def pair(start_service, tmp_path):
    """pair(profile) -> (service of a.org, service of b.org), each federated with the other."""

    async def make(profile: str):
        cas = {"a.org": make_ca("a.org"), "b.org": make_ca("b.org")}
        ports = {"a.org": free_port(), "b.org": free_port()}
        for td, ca in cas.items():
            (tmp_path / f"{td}.jwks").write_bytes(ca.bundle().to_jwks())
            (tmp_path / f"{td}.pem").write_bytes(ca.bundle().to_pem())
        services = []
        for td, peer in (("a.org", "b.org"), ("b.org", "a.org")):
            federation = {
                "bundle_endpoint": {"profile": profile},
                "refresh": {"min_seconds": 1, "timeout_seconds": 5},
                "federates_with": [
                    _relationship(peer, ports[peer], profile, tmp_path / f"{peer}.jwks", tmp_path / f"{peer}.pem")
                ],
            }
            services.append(
                await start_service(
                    trust_domain=td,
                    ca_store=MemoryCaStore(cas[td]),
                    listen={"bundle_endpoint": f"127.0.0.1:{ports[td]}"},
                    federation=federation,
                    **({"bundle": {}} if td == "b.org" else {}),  # one ConfigMap publisher is enough
                )
            )
        for service in services:
            # The refreshers run on their own schedule; the test refreshes explicitly.
            await service.federation.stop()
        return services

    return make


@pytest.mark.parametrize("profile", ["https_web", "https_spiffe"])
async def test_two_cas_federate_and_follow_each_others_rotation(pair, profile, audit_stream, tmp_path):
    a, b = await pair(profile)

    await a.federation.refresh(B)
    await b.federation.refresh(A)
    assert a.federation.state(B).bundle.to_jwks() == b.ca.bundle().to_jwks()
    assert a.hub.federated == (a.federation.state(B).bundle,)
    assert b.hub.federated[0].to_jwks() == a.ca.bundle().to_jwks()
    assert a.federation.state(B).last_error == "" and b.federation.state(A).last_error == ""

    # The federated bundle rides beside the own one on the CA's bundle stream, under its own name.
    client = CaClient(f"127.0.0.1:{a.grpc_port}", a.ca.bundle(), lambda: "unused")
    watch = client.watch_trust()
    first = await asyncio.wait_for(anext(watch), 5)
    assert first.own.trust_domain == A
    assert [f.trust_domain for f in first.federated] == [B]

    # b.org rotates: prepare (bundle grows), a.org refreshes, the stream pushes it.
    now = utc_now()
    await b._store.apply(lambda ca: ca.prepare(now))
    await b.follow(now)
    assert b.ca.bundle().sequence == 2
    await a.federation.refresh(B)
    pushed = await asyncio.wait_for(anext(watch), 5)
    assert pushed.federated[0].sequence == 2 and len(pushed.federated[0].x509_authorities) == 2
    assert any(r.get("event") == "federated_bundle_accepted" and r["sequence"] == 2 for r in audit_stream.records())

    # Activation: b.org's endpoint now presents a certificate from the new authority;
    # a.org verifies it with the latest bundle it fetched (not the bootstrap one).
    await b._store.apply(lambda ca: ca.activate(now))
    await b.follow(now)
    if profile == "https_web":
        # Web PKI roots are the operator's, not the bundle's (endpoint_ca_file is read at each fetch);
        # https_spiffe needs no such step: it follows the fetched bundle.
        (tmp_path / "b.org.pem").write_bytes(b.ca.bundle().to_pem())
    await b._store.apply(lambda ca: ca.taint(now))
    await b.follow(now)
    new_root = b.ca.bundle().x509_authorities
    assert len(new_root) == 1
    await a.federation.refresh(B)
    state = a.federation.state(B)
    assert state.last_error == "" and state.bundle.x509_authorities == new_root
    if profile == "https_spiffe":
        presented = await _endpoint_id(b.bundle_port, b.ca.bundle())
        assert str(presented) == "spiffe://b.org/trustmesh/bundle-endpoint"
    await watch.aclose()
    await client.close()


async def _endpoint_id(port: int, bundle: Bundle):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cadata=bundle.to_pem().decode())
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        return verify_chain(peer_chain(writer.get_extra_info("ssl_object")), bundle)
    finally:
        writer.close()


async def test_operators_list_show_and_refresh_over_the_ops_port(pair):
    a, b = await pair("https_spiffe")
    base = f"http://127.0.0.1:{a.ops_port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/federation") as resp:
            listing = await resp.json()
        assert [(r["trust_domain"], r["profile"], r["source"]) for r in listing] == [("b.org", "https_spiffe", "bootstrap")]
        async with http.post(f"{base}/federation/b.org/refresh") as resp:
            refreshed = await resp.json()
        assert refreshed["last_error"] == "" and refreshed["last_success"] is not None
        async with http.get(f"{base}/federation/b.org") as resp:
            shown = await resp.json()
        assert Bundle.parse_jwks(shown["bundle"], B).to_jwks() == b.ca.bundle().to_jwks()
        async with http.get(f"{base}/federation/c.org") as resp:
            assert resp.status == 404 and "does not federate with c.org" in await resp.text()
        async with http.get(f"{base}/metrics") as resp:
            text = await resp.text()
        assert 'trustmesh_ca_federation_bundle_sequence{trust_domain="b.org"} 1.0' in text


async def test_cli_lists_shows_refreshes_and_exports_the_bootstrap_bundle(pair, capsys, tmp_path):
    from trustmesh.cli import main

    a, b = await pair("https_spiffe")
    ops = ["--ops", f"http://127.0.0.1:{a.ops_port}"]

    async def run(*argv: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(main, list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = await run("ca", "federation", *ops, "refresh", "b.org")
    assert code == 0 and out.startswith("b.org: bundle sequence 1")
    code, out, _ = await run("ca", "federation", *ops, "list")
    assert code == 0
    header, row = out.splitlines()
    assert header.split()[:3] == ["TRUST", "DOMAIN", "PROFILE"]
    assert row.split()[:4] == ["b.org", "https_spiffe", "1", "bootstrap"] and row.split()[-1] == "-"  # the last refresh succeeded
    code, out, _ = await run("ca", "federation", *ops, "show", "b.org")
    assert code == 0 and json.loads(out)["endpoint_spiffe_id"] == "spiffe://b.org/trustmesh/bundle-endpoint"
    code, _, err = await run("ca", "federation", *ops, "show", "c.org")
    assert code == 1 and "this CA does not federate with c.org" in err

    # b.org's endpoint goes away: the refresh is refused, the bundle kept, exit 1.
    await b.stop(grace=0)
    code, out, _ = await run("ca", "federation", *ops, "refresh", "b.org")
    assert code == 1 and "refresh refused, keeping sequence 1: " in out and "cannot connect" in out

    # The out-of-band bootstrap: a's bundle in the SPIFFE format, read back as what b would configure.
    code, out, _ = await run("ca", "bundle", *ops, "--format", "spiffe")
    assert code == 0
    exported = Bundle.parse_jwks(out, A)
    assert exported.to_jwks() == a.ca.bundle().to_jwks() and exported.sequence == 1 and exported.refresh_hint == 300


async def test_federated_bundles_reach_only_the_workloads_a_relationship_selects(start_service, tmp_path):
    """federates_with[].workloads (SPIRE's per-entry federatesWith): the CA tells each workload, with
    its SVID, which federated domains it is to trust; the sidecar keeps only those of the stream."""
    import random

    import yaml

    from sidecar.identity import IdentityManager

    a_bundle = make_ca("a.org").bundle()
    (tmp_path / "a.jwks").write_bytes(a_bundle.to_jwks())
    tokens = {"token-billing-0123456789": "spiffe://b.org/ns/partner/sa/billing",
              "token-reports-0123456789": "spiffe://b.org/ns/partner/sa/reports"}
    (tmp_path / "tokens.yaml").write_text(yaml.safe_dump(tokens))
    b = await start_service(
        trust_domain="b.org",
        authentication={"static_tokens_file": str(tmp_path / "tokens.yaml")},
        bundle={},
        federation={"federates_with": [{
            "trust_domain": "a.org", "bundle_endpoint_url": f"https://127.0.0.1:{free_port()}/", "profile": "https_spiffe",
            "endpoint_spiffe_id": "spiffe://a.org/trustmesh/bundle-endpoint", "bundle_file": str(tmp_path / "a.jwks"),
            "workloads": ["spiffe://b.org/ns/partner/sa/billing", "spiffe://b.org/ns/finance/*"],
        }]},
    )
    await b.federation.stop()  # the endpoint is not there; the bootstrap bundle is what is held
    managers = {}
    for token, sid in tokens.items():
        client = CaClient(f"127.0.0.1:{b.grpc_port}", b.ca.bundle(), lambda token=token: token)
        managers[sid.rsplit("/", 1)[1]] = IdentityManager(client, B, rng=random.Random(1))
    try:
        for manager in managers.values():
            await manager.start()

        # Both have their SVID and have been offered the stream's federated bundles (a scoped-out
        # offer changes nothing, so there is no change to wait for: poll, bounded).
        for _ in range(500):
            if all(m.spiffe_id is not None and m.offered_federated for m in managers.values()):
                break
            await asyncio.sleep(0.02)
        billing, reports = managers["billing"], managers["reports"]
        assert billing.client.federation_scope == frozenset({A}) and A in billing.get_bundle_set()
        assert reports.client.federation_scope == frozenset() and A not in reports.get_bundle_set()
        assert [o.trust_domain for o in reports.offered_federated] == [A]  # offered on the stream, not taken
    finally:
        for manager in managers.values():
            await manager.stop()
            await manager.client.close()


@pytest.mark.parametrize(("group", "accepted"), [("X25519", True), ("P-384", True), ("X448", False), ("secp521r1", False)])
async def test_the_bundle_endpoint_offers_only_the_mesh_key_exchange_groups(pair, group, accepted, tmp_path):
    """Mozilla intermediate groups (sdk.tlsprofile), as the federation standard asks of bundle
    endpoints; `openssl s_client` offering one group alone is the independent peer."""
    a, _ = await pair("https_spiffe")
    (tmp_path / "roots.pem").write_bytes(a.ca.bundle().to_pem())
    proc = await asyncio.create_subprocess_exec(
        "openssl", "s_client", "-connect", f"127.0.0.1:{a.bundle_port}", "-tls1_3", "-groups", group,
        "-CAfile", str(tmp_path / "roots.pem"),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    text = out.decode("latin-1")
    assert ("\nNew, TLSv1.3" in text) is accepted, text
