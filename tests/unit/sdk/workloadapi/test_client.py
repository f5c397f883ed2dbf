"""sdk.workloadapi.WorkloadApiClient against the real server over a Unix socket."""

import pytest

from sdk.bundle import BundleSet
from sdk.errors import JwtSvidError
from sdk.jwtsvid import validate_jwt_svid
from sdk.spiffeid import TrustDomain
from sdk.workloadapi import WorkloadApiClient, WorkloadApiError
from sidecar.workload_api import MemoryIdentitySource, serve_workload_api


async def test_fetches_typed_values(served, domain, partner):
    source, address = served
    async with WorkloadApiClient(address) as client:
        context = await client.fetch_x509_context()
        x509_bundles = await client.fetch_x509_bundles()
        jwt_bundles = await client.fetch_jwt_bundles()
        svid = await client.fetch_jwt_svid("spiffe://example.org/ns/prod/sa/db", "extra")

    assert context.default_svid.spiffe_id == source.get_x509_svid().spiffe_id
    assert context.default_svid.cert_chain == source.get_x509_svid().cert_chain
    assert context.default_svid.private_key.public_key() == (
        source.get_x509_svid().private_key.public_key()
    )
    for bundles in (context.bundles, x509_bundles):
        assert bundles.trust_domains() == (TrustDomain.parse("example.org"), TrustDomain.parse("partner.org"))
        td = TrustDomain.parse("partner.org")
        assert bundles.get_bundle_for_trust_domain(td).x509_authorities == (partner.root_cert,)
    home = jwt_bundles.get_bundle_for_trust_domain(TrustDomain.parse("example.org"))
    assert dict(home.jwt_authorities) == {domain.kid: domain.jwt_key.public_key()}
    assert home.x509_authorities == ()
    assert set(svid.audience) == {"spiffe://example.org/ns/prod/sa/db", "extra"}
    # the fetched token verifies with the fetched bundles and the sdk's own rules
    checked = validate_jwt_svid(svid.token, jwt_bundles, "extra")
    assert str(checked.spiffe_id) == "spiffe://example.org/ns/prod/sa/web"


async def test_server_side_validation(served, domain):
    _, address = served
    async with WorkloadApiClient(address) as client:
        ok = await client.validate_jwt_svid(domain.sign(domain.id("/ns/x/sa/y"), ["me"]), "me")
        assert str(ok.spiffe_id) == "spiffe://example.org/ns/x/sa/y"
        with pytest.raises(WorkloadApiError, match="audience") as caught:
            await client.validate_jwt_svid(domain.sign(domain.id("/a"), ["me"]), "you")
        assert caught.value.code == "INVALID_ARGUMENT"


async def test_errors_carry_the_status(domain, sock_dir):
    source = MemoryIdentitySource(None, BundleSet([domain.bundle()]), domain.mint)
    async with serve_workload_api(source, sock_dir / "agent.sock") as server:
        async with WorkloadApiClient(server.address) as client:
            with pytest.raises(WorkloadApiError) as caught:
                await client.fetch_x509_context()
            assert caught.value.code == "PERMISSION_DENIED"
            with pytest.raises(WorkloadApiError) as caught:
                await client.fetch_jwt_svid("")
            assert caught.value.code == "INVALID_ARGUMENT"


async def test_nobody_listening_is_unavailable(sock_dir):
    async with WorkloadApiClient(f"unix://{sock_dir}/nobody.sock", timeout=2) as client:
        with pytest.raises(WorkloadApiError) as caught:
            await client.fetch_jwt_bundles()
    assert caught.value.code in {"UNAVAILABLE", "DEADLINE_EXCEEDED"}
    assert isinstance(caught.value, OSError)


async def test_validation_error_types_are_the_sdk_ones(served, domain):
    # A fetched token checked locally for the wrong audience fails with JwtSvidError.
    _, address = served
    async with WorkloadApiClient(address) as client:
        svid = await client.fetch_jwt_svid("a")
        bundles = await client.fetch_jwt_bundles()
    with pytest.raises(JwtSvidError):
        validate_jwt_svid(svid.token, bundles, "b")
