"""The Workload API server over a real Unix socket and real gRPC.

Calls are made with a raw gRPC channel so that the tests control the
metadata; identity material is really issued and signed by the CA library (ca/).
"""

import asyncio
import json
import os
import socket
import stat

import grpc
import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from google.protobuf import json_format
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from sdk.bundle import BundleSet
from sdk.proto import workload as pb
from sidecar.workload_api import (
    MemoryIdentitySource,
    WorkloadApiServer,
    WorkloadApiServerError,
    serve_workload_api,
)
from tests.integration.workload_api.support import memory_source

HEADER = ((pb.HEADER_KEY, pb.HEADER_VALUE),)


def _call(channel, name):
    method = pb.METHODS[name]
    make = channel.unary_stream if method.server_streaming else channel.unary_unary
    return make(
        method.path,
        request_serializer=method.request.SerializeToString,
        response_deserializer=method.response.FromString,
    )


async def _first(channel, name, request=None, metadata=HEADER):
    call = _call(channel, name)(request or pb.METHODS[name].request(), metadata=metadata, timeout=5)
    if pb.METHODS[name].server_streaming:
        try:
            async for message in call:
                return message
        finally:
            call.cancel()
    return await call


@pytest.fixture
async def served(domain, other_domain, sock_dir):
    source = memory_source(domain, "/ns/prod/sa/web", other_domain)
    async with serve_workload_api(source, sock_dir / "agent.sock") as server:
        async with grpc.aio.insecure_channel(f"unix:{server.socket_path}") as channel:
            yield source, server, channel


@pytest.mark.parametrize("name", sorted(pb.METHODS))
@pytest.mark.parametrize(
    "metadata",
    [(), (("workload.spiffe.io", "True"),), (("workload.spiffe.io", "false"),)],
    ids=["absent", "wrong-case", "false"],
)
async def test_requests_without_the_security_header_are_invalid_argument(served, name, metadata):
    _, _, channel = served
    request = pb.METHODS[name].request()
    if name == "FetchJWTSVID":
        request.audience.append("spiffe://example.org/db")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _first(channel, name, request, metadata=metadata)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "workload.spiffe.io" in caught.value.details()


async def test_x509_svid_response_carries_svid_key_and_bundles(served, domain, other_domain):
    source, _, channel = served
    response = await _first(channel, "FetchX509SVID")
    svid = source.get_x509_svid()
    assert [s.spiffe_id for s in response.svids] == ["spiffe://example.org/ns/prod/sa/web"]
    entry = response.svids[0]
    assert entry.x509_svid == b"".join(c.public_bytes(Encoding.DER) for c in svid.cert_chain)
    assert entry.bundle == domain.root_der
    assert dict(response.federated_bundles) == {"spiffe://other.org": other_domain.root_der}


async def test_x509_bundles_include_own_and_federated(served, domain, other_domain):
    _, _, channel = served
    response = await _first(channel, "FetchX509Bundles")
    assert dict(response.bundles) == {
        "spiffe://example.org": domain.root_der,
        "spiffe://other.org": other_domain.root_der,
    }


async def test_jwt_bundles_hold_only_jwt_keys(served, domain):
    _, _, channel = served
    response = await _first(channel, "FetchJWTBundles")
    assert sorted(response.bundles) == ["spiffe://example.org", "spiffe://other.org"]
    keys = json.loads(response.bundles["spiffe://example.org"])["keys"]
    assert [(k["use"], k["kid"]) for k in keys] == [("jwt-svid", domain.kid)]


async def test_stream_pushes_every_change(served, domain):
    source, _, channel = served
    call = _call(channel, "FetchX509SVID")(pb.X509SVIDRequest(), metadata=HEADER, timeout=10)
    seen = []
    try:
        async for message in call:
            seen.append(message.svids[0].x509_svid)
            if len(seen) == 1:
                await source.update(svid=domain.svid("/ns/prod/sa/web"))
            elif len(seen) == 2:
                await source.update(svid=domain.svid("/ns/prod/sa/web"))
            else:
                break
    finally:
        call.cancel()
    assert len(set(seen)) == 3


async def test_fetch_jwt_svid_caches_per_audience_set(served, domain):
    _, _, channel = served
    a1 = await _first(channel, "FetchJWTSVID", pb.JWTSVIDRequest(audience=["a"]))
    a2 = await _first(channel, "FetchJWTSVID", pb.JWTSVIDRequest(audience=["a"]))
    ab = await _first(channel, "FetchJWTSVID", pb.JWTSVIDRequest(audience=["b", "a"]))
    ba = await _first(channel, "FetchJWTSVID", pb.JWTSVIDRequest(audience=["a", "b"]))
    assert a1.svids[0].svid == a2.svids[0].svid
    assert ab.svids[0].svid == ba.svids[0].svid != a1.svids[0].svid
    assert a1.svids[0].spiffe_id == "spiffe://example.org/ns/prod/sa/web"
    assert len([t for t in domain.minted if t in (a1.svids[0].svid, ab.svids[0].svid)]) == 2


async def test_identity_change_empties_the_jwt_cache(served, domain):
    source, _, channel = served
    request = pb.JWTSVIDRequest(audience=["a"])
    before = (await _first(channel, "FetchJWTSVID", request)).svids[0].svid
    assert (await _first(channel, "FetchJWTSVID", request)).svids[0].svid == before
    await source.update(svid=domain.svid("/ns/prod/sa/web"))
    assert (await _first(channel, "FetchJWTSVID", request)).svids[0].svid != before


@pytest.mark.parametrize(
    ("request_fields", "code", "complaint"),
    [
        ({"audience": []}, grpc.StatusCode.INVALID_ARGUMENT, "audience must be specified"),
        ({"audience": [""]}, grpc.StatusCode.INVALID_ARGUMENT, "audience[0]"),
        ({"audience": ["x" * 1025]}, grpc.StatusCode.INVALID_ARGUMENT, "audience[0]"),
        ({"audience": ["a"], "spiffe_id": "not-an-id"}, grpc.StatusCode.INVALID_ARGUMENT, ""),
        (
            {"audience": ["a"], "spiffe_id": "spiffe://example.org/ns/prod/sa/admin"},
            grpc.StatusCode.PERMISSION_DENIED,
            "not entitled",
        ),
    ],
)
async def test_bad_jwt_svid_requests_are_refused_precisely(served, request_fields, code, complaint):
    _, _, channel = served
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _first(channel, "FetchJWTSVID", pb.JWTSVIDRequest(**request_fields))
    assert caught.value.code() == code
    assert complaint in caught.value.details()


async def test_validate_jwt_svid_returns_id_and_claims(served, domain):
    _, _, channel = served
    token = domain.sign(domain.id("/ns/prod/sa/api"), ["spiffe://example.org/ns/prod/sa/web"])
    response = await _first(
        channel,
        "ValidateJWTSVID",
        pb.ValidateJWTSVIDRequest(audience="spiffe://example.org/ns/prod/sa/web", svid=token),
    )
    assert response.spiffe_id == "spiffe://example.org/ns/prod/sa/api"
    claims = json_format.MessageToDict(response.claims)
    assert claims["sub"] == "spiffe://example.org/ns/prod/sa/api"
    assert claims["aud"] == ["spiffe://example.org/ns/prod/sa/web"]
    assert claims["exp"] > claims["iat"] > 0


async def test_validate_jwt_svid_refuses_bad_tokens(served, domain):
    _, _, channel = served
    good_for_other = domain.sign(domain.id("/a"), ["someone-else"])
    for request in (
        pb.ValidateJWTSVIDRequest(audience="me", svid=good_for_other),
        pb.ValidateJWTSVIDRequest(audience="me", svid="not.a.jwt"),
        pb.ValidateJWTSVIDRequest(audience="", svid=good_for_other),
        pb.ValidateJWTSVIDRequest(audience="me", svid=""),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _first(channel, "ValidateJWTSVID", request)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_no_svid_yet_is_permission_denied(domain, sock_dir):
    source = MemoryIdentitySource(None, BundleSet([domain.bundle()]), domain.mint)
    async with serve_workload_api(source, sock_dir / "agent.sock") as server:
        async with grpc.aio.insecure_channel(f"unix:{server.socket_path}") as channel:
            for name in ("FetchX509SVID", "FetchJWTSVID"):
                request = pb.JWTSVIDRequest(audience=["a"]) if name == "FetchJWTSVID" else None
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await _first(channel, name, request)
                assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
            # bundles are still served: a workload may validate before it has an SVID
            assert (await _first(channel, "FetchX509Bundles")).bundles


async def test_reflection_lists_the_workload_api(served):
    _, _, channel = served
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def ask(**kwargs):
        async for response in stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(**kwargs)])
        ):
            return response

    listed = await ask(list_services="")
    names = {s.name for s in listed.list_services_response.service}
    assert "SpiffeWorkloadAPI" in names
    described = await ask(file_containing_symbol="SpiffeWorkloadAPI")
    assert described.file_descriptor_response.file_descriptor_proto


# -- the socket ---------------------------------------------------------------


async def test_socket_mode_and_cleanup(domain, sock_dir):
    path = sock_dir / "sub" / "agent.sock"
    async with serve_workload_api(memory_source(domain), path, socket_mode=0o660):
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o660
    assert not path.exists()


async def test_stale_socket_is_replaced(domain, sock_dir):
    path = sock_dir / "agent.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens
    async with serve_workload_api(memory_source(domain), path) as server:
        async with grpc.aio.insecure_channel(f"unix:{server.socket_path}") as channel:
            assert (await _first(channel, "FetchX509Bundles")).bundles


async def test_live_socket_is_not_stolen(domain, sock_dir):
    path = sock_dir / "agent.sock"
    async with serve_workload_api(memory_source(domain), path):
        with pytest.raises(WorkloadApiServerError, match="already listening"):
            async with serve_workload_api(memory_source(domain), path):
                pass
        assert path.exists()


@pytest.mark.parametrize(
    ("make_path", "complaint"),
    [
        (lambda d: d / "regular-file", "is not a socket"),
        (lambda d: d / ("x" * 120), "longer than"),
        (lambda d: "relative/agent.sock", "must be absolute"),
    ],
)
async def test_unusable_socket_paths_are_refused(domain, sock_dir, make_path, complaint):
    path = make_path(sock_dir)
    if str(path).endswith("regular-file"):
        path.write_text("keep me")
    with pytest.raises(WorkloadApiServerError, match=complaint):
        async with serve_workload_api(memory_source(domain), path):
            pass
    if str(path).endswith("regular-file"):
        assert path.read_text() == "keep me"


def test_bad_socket_mode_is_refused(domain, sock_dir):
    with pytest.raises(WorkloadApiServerError, match="socket mode"):
        WorkloadApiServer(memory_source(domain), sock_dir / "a.sock", socket_mode=0o4777)


async def test_stop_ends_open_streams(domain, sock_dir):
    source = memory_source(domain)
    server_cm = serve_workload_api(source, sock_dir / "agent.sock", grace=0.1)
    server = await server_cm.__aenter__()
    async with grpc.aio.insecure_channel(f"unix:{server.socket_path}") as channel:
        call = _call(channel, "FetchJWTBundles")(pb.JWTBundlesRequest(), metadata=HEADER)
        await call.read()
        await server_cm.__aexit__(None, None, None)
        with pytest.raises(grpc.aio.AioRpcError):
            await asyncio.wait_for(call.read(), 5)



_CONNECT = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except PermissionError:
    print("denied")
else:
    print("connected")
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a process as another uid")
@pytest.mark.parametrize(("mode", "outcome"), [(0o666, "connected"), (0o600, "denied")])
async def test_socket_mode_decides_which_uids_can_connect(domain, sock_dir, mode, outcome):
    # An app container runs as some other uid: it reaches the socket only if the mode allows.
    sock_dir.chmod(0o755)
    path = sock_dir / "agent.sock"
    async with serve_workload_api(memory_source(domain), path, socket_mode=mode):
        proc = await asyncio.create_subprocess_exec(
            "/usr/bin/python3",
            "-c",
            _CONNECT,
            str(path),
            user=4242,
            group=4242,
            extra_groups=[],
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert out.decode().strip() == outcome
