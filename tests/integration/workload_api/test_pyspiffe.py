"""py-spiffe 0.3.2, unmodified, against the sidecar's Workload API socket.

py-spiffe is an independent implementation of the client side of the
standard: if its WorkloadApiClient, X509Source and JwtSource work against our
server, unmodified SPIFFE clients do. py-spiffe is blocking, so its calls run
in a worker thread while the server runs on the test's event loop. Identity
material is issued and signed by trustmesh's CA library (ca/).
"""

import asyncio
import shutil
import tempfile
import threading
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from spiffe import JwtSource, WorkloadApiClient, X509Source
from spiffe._proto import workload_pb2, workload_pb2_grpc
from spiffe.spiffe_id.spiffe_id import TrustDomain as RefTrustDomain
from spiffe.svid.jwt_svid import JwtSvid as RefJwtSvid
from spiffe.workloadapi.errors import ValidateJwtSvidError

from sdk.bundle import BundleSet
from sidecar.workload_api import serve_workload_api
from tests.integration.workload_api.support import Domain, memory_source

WEB = "/ns/prod/sa/web"


@pytest.fixture(scope="module")
def domains():
    return Domain("example.org"), Domain("partner.org")


@pytest.fixture
async def served(domains):
    home, partner = domains
    sock_dir = Path(tempfile.mkdtemp(prefix="wlapi-", dir="/tmp"))
    source = memory_source(home, WEB, partner)
    try:
        async with serve_workload_api(source, sock_dir / "agent.sock") as server:
            yield source, server.address
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)


def _in_thread(fn, *args):
    return asyncio.wait_for(asyncio.to_thread(fn, *args), 30)


async def test_client_fetches_svid_bundles_and_jwt(served, domains):
    source, address = served
    home, partner = domains

    def use_client():
        with WorkloadApiClient(socket_path=address, default_timeout=10) as client:
            svid = client.fetch_x509_svid()
            context = client.fetch_x509_context()
            x509_bundles = client.fetch_x509_bundles()
            jwt_bundles = client.fetch_jwt_bundles()
            token = client.fetch_jwt_svid(audience={"spiffe://example.org/ns/prod/sa/db"})
            validated = client.validate_jwt_svid(
                home.sign(home.id("/ns/prod/sa/api"), ["me"]), "me"
            )
            return svid, context, x509_bundles, jwt_bundles, token, validated

    svid, context, x509_bundles, jwt_bundles, token, validated = await _in_thread(use_client)

    ours = source.get_x509_svid()
    assert str(svid.spiffe_id) == "spiffe://example.org/ns/prod/sa/web"
    assert [c.public_bytes(Encoding.DER) for c in svid.cert_chain] == [
        c.public_bytes(Encoding.DER) for c in ours.cert_chain
    ]
    assert svid.leaf.public_key() == ours.private_key.public_key()
    assert len(context.x509_svids) == 1

    for bundle_set in (context.x509_bundle_set, x509_bundles):
        for domain in (home, partner):
            bundle = bundle_set.get_bundle_for_trust_domain(RefTrustDomain(domain.name))
            assert [c.public_bytes(Encoding.DER) for c in bundle.x509_authorities] == [
                domain.root_der
            ]

    home_jwt = jwt_bundles.get_bundle_for_trust_domain(RefTrustDomain("example.org"))
    assert list(home_jwt.jwt_authorities) == [home.kid]

    assert str(token.spiffe_id) == "spiffe://example.org/ns/prod/sa/web"
    assert token.audience == {"spiffe://example.org/ns/prod/sa/db"}
    # the token really verifies against the JWT bundle the server handed out
    RefJwtSvid.parse_and_validate(token.token, home_jwt, {"spiffe://example.org/ns/prod/sa/db"})

    assert str(validated.spiffe_id) == "spiffe://example.org/ns/prod/sa/api"


async def test_client_validation_refuses_bad_tokens(served, domains):
    _, address = served
    home, _ = domains
    stranger = Domain("stranger.org")
    tokens = [
        home.sign(home.id("/a"), ["someone-else"]),  # wrong audience
        stranger.sign(stranger.id("/a"), ["me"]),  # trust domain not trusted
        home.sign(home.id("/a"), ["me"], key=stranger.jwt_key),  # forged signature
    ]

    def validate(token):
        with WorkloadApiClient(socket_path=address, default_timeout=10) as client:
            client.validate_jwt_svid(token, "me")

    for token in tokens:
        with pytest.raises(ValidateJwtSvidError):
            await _in_thread(validate, token)


async def test_x509_source_sees_a_rotation(served, domains):
    source, address = served
    home, _ = domains
    rotated = threading.Event()

    def open_source():
        return X509Source(socket_path=address, timeout_in_seconds=10)

    x509_source = await _in_thread(open_source)
    try:
        before = x509_source.get_x509_context().default_svid.leaf.serial_number
        x509_source.subscribe_for_updates(rotated.set)
        new_svid = home.svid(WEB)
        await source.update(svid=new_svid)
        assert await _in_thread(rotated.wait, 10)
        after = x509_source.get_x509_context().default_svid.leaf.serial_number
        assert after != before
        assert after == new_svid.leaf.serial_number
    finally:
        await _in_thread(x509_source.close)


async def test_jwt_source_fetches_and_validates(served, domains):
    _, address = served
    home, _ = domains

    def use_source():
        with JwtSource(socket_path=address, timeout_in_seconds=10) as jwt_source:
            svid = jwt_source.fetch_svid(audience={"db"})
            bundle = jwt_source.get_bundle_for_trust_domain(RefTrustDomain("example.org"))
            return svid, RefJwtSvid.parse_and_validate(svid.token, bundle, {"db"})

    svid, validated = await _in_thread(use_source)
    assert str(validated.spiffe_id) == str(svid.spiffe_id) == "spiffe://example.org/ns/prod/sa/web"


async def test_request_without_the_security_header_is_invalid_argument(served):
    _, address = served

    def call_without_header():
        # py-spiffe's own stubs on a plain channel: no header interceptor
        with grpc.insecure_channel(address.replace("unix://", "unix:")) as channel:
            stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                next(stub.FetchX509SVID(workload_pb2.X509SVIDRequest(), timeout=10))
            return caught.value.code()

    assert await _in_thread(call_without_header) == grpc.StatusCode.INVALID_ARGUMENT


async def test_jwt_source_sees_a_jwt_authority_rotation(served, domains):
    source, address = served
    home, partner = domains
    rotated = threading.Event()
    jwt_source = await _in_thread(lambda: JwtSource(socket_path=address, timeout_in_seconds=10))
    try:
        jwt_source.subscribe_for_updates(rotated.set)
        # the CA adds a new JWT signing key; tokens signed with it must validate
        new_key = Domain("example.org")  # fresh key material, same trust domain
        bundle = home.bundle().with_jwt_authority(new_key.kid, new_key.jwt_key.public_key())
        await source.update(bundles=BundleSet([bundle, partner.bundle()]))
        assert await _in_thread(rotated.wait, 10)
        token = new_key.sign(home.id("/ns/prod/sa/api"), ["web"])
        ref_bundle = jwt_source.get_bundle_for_trust_domain(RefTrustDomain("example.org"))
        assert sorted(ref_bundle.jwt_authorities) == sorted([home.kid, new_key.kid])
        checked = RefJwtSvid.parse_and_validate(token, ref_bundle, {"web"})
        assert str(checked.spiffe_id) == "spiffe://example.org/ns/prod/sa/api"
    finally:
        await _in_thread(jwt_source.close)
