"""gRPC through two real sidecar processes, with real grpcio clients and a real grpcio server.

Topology: grpcio client --h2c (prior knowledge)--> sidecar A (explicit upstream, auto)
--mTLS, ALPN h2--> sidecar B (STRICT, policy reading request.grpc.message.appname,
descriptors from resource.binpb) --h2c--> grpcio server. The client is
spiffe://example.org/app/billing; the service is trustmesh.demo.v1.DynamicResourceService.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess

import aiohttp
import grpc
import pytest

from sdk.proto.trustmesh.demo.v1 import resource_pb2 as pb
from sdk.proto.trustmesh.demo.v1 import resource_pb2_grpc as pbg
from tests.integration.sidecar.helpers import ROOT, Pki, SidecarProcess, sidecar_config

pytestmark = pytest.mark.slow

CLIENT = "spiffe://example.org/app/billing"
SERVER = "spiffe://example.org/app/config"
DESCRIPTORS = ROOT / "sdk/proto/trustmesh/demo/v1/resource.binpb"
POLICY = (ROOT / "policy_dsl/examples/grpc-fetch-resource.policy").read_text() + '''
policy "config-streams" protects destination.attrs.app == "config" {
  allow "list-own" {
    request.grpc.method == "ListResources" and request.grpc.message.appname == source.attrs.app
  }
  allow "put-own" {
    request.grpc.method == "PutResources" and request.grpc.message.appname == source.attrs.app
  }
  allow "slow-own" {
    request.grpc.method == "FetchResource" and request.grpc.message.appname == "slow"
  }
}
'''


class ConfigService(pbg.DynamicResourceServiceServicer):
    """Records every request message and the metadata each call arrived with."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str, str]] = []  # (method, appname, resource_id)
        self.metadata: list[dict[str, str]] = []
        self.cancelled = asyncio.Event()
        self.slow_started = asyncio.Event()

    def _seen(self, context, method: str, request) -> None:
        self.messages.append((method, request.appname, request.resource_id if hasattr(request, "resource_id") else ""))

    async def FetchResource(self, request, context):
        self.metadata.append({k: v for k, v in context.invocation_metadata()})
        self._seen(context, "FetchResource", request)
        if request.appname == "slow":
            self.slow_started.set()
            try:
                await asyncio.sleep(float(request.resource_id or 30))
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        return pb.Resource(appname=request.appname, resource_id=request.resource_id, content=b"c" * 1024)

    async def ListResources(self, request, context):
        self._seen(context, "ListResources", request)
        size = int(request.prefix or "1024")
        for i in range(4):
            yield pb.Resource(appname=request.appname, resource_id=str(i), content=b"r" * size)

    async def PutResources(self, request_iterator, context):
        stored = 0
        async for request in request_iterator:
            self.messages.append(("PutResources", request.appname, request.resource.resource_id))
            stored += 1
        return pb.PutResourcesSummary(stored=stored)

    async def WatchResources(self, request_iterator, context):
        async for request in request_iterator:
            self._seen(context, "WatchResources", request)
            yield pb.Resource(appname=request.appname, resource_id=request.resource_id)


@pytest.fixture
async def mesh(tmp_path):
    pki = Pki()
    service = ConfigService()
    server = grpc.aio.server()
    pbg.add_DynamicResourceServiceServicer_to_server(service, server)
    app_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    (tmp_path / "policy.policy").write_text(POLICY)
    b = SidecarProcess(
        sidecar_config(
            identity=pki.write(tmp_path, "server", "/app/config"),
            inbound={"app_port": app_port},
            policy={"file": str(tmp_path / "policy.policy")},
            grpc={"descriptors": [str(DESCRIPTORS)]},
            access_log=str(tmp_path / "b-access.log"),
        ),
        tmp_path,
        "b",
    )
    await b.start()
    a = SidecarProcess(
        sidecar_config(
            identity=pki.write(tmp_path, "client", "/app/billing"),
            outbound={"port": 0, "upstreams": [{"listen": 0, "address": f"127.0.0.1:{b.ports['inbound']}", "spiffe_id": SERVER}]},
            access_log=str(tmp_path / "a-access.log"),
        ),
        tmp_path,
        "a",
    )
    await a.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{a.ports['upstream-0']}")
    yield {"service": service, "stub": pbg.DynamicResourceServiceStub(channel), "a": a, "b": b, "tmp": tmp_path}
    await channel.close()
    for proc in (a, b):
        assert await proc.stop() == 0, proc.stderr()
    await server.stop(None)


def _access_log(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def _b_log(mesh, count: int) -> list[dict]:
    """B's access log once it holds ``count`` lines (the sidecar flushes it every second)."""
    for _ in range(100):
        lines = _access_log(mesh["tmp"] / "b-access.log")
        if len(lines) >= count:
            return lines
        await asyncio.sleep(0.1)
    raise AssertionError(f"access log has {len(lines)} lines, expected {count}")


async def test_own_appname_allowed_other_denied_with_permission_denied(mesh):
    stub, service = mesh["stub"], mesh["service"]
    reply = await stub.FetchResource(pb.FetchResourceRequest(appname="billing", resource_id="db"), timeout=10)
    assert (reply.appname, reply.resource_id, len(reply.content)) == ("billing", "db", 1024)
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await stub.FetchResource(pb.FetchResourceRequest(appname="payments", resource_id="db"), timeout=10)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert denied.value.details() == "permission denied"  # generic: no rule name to the caller
    assert service.messages == [("FetchResource", "billing", "db")]  # the denied call never reached the app
    # the app learns the caller from the sidecar, not from what the caller claimed
    assert service.metadata[0]["x-forwarded-client-cert"] == f"By={SERVER};URI={CLIENT}"
    # the channel goes on after a denial
    again = await stub.FetchResource(pb.FetchResourceRequest(appname="billing", resource_id="x"), timeout=10)
    assert again.resource_id == "x"
    lines = await _b_log(mesh, 3)
    assert [(l["protocol"], l["grpc_method"], l["grpc_status"], l["decision"], l["rule"]) for l in lines] == [
        ("grpc", "FetchResource", "0", "allow", "fetch-own"),
        ("grpc", "FetchResource", "7", "deny", None),
        ("grpc", "FetchResource", "0", "allow", "fetch-own"),
    ]
    assert {l["grpc_service"] for l in lines} == {"trustmesh.demo.v1.DynamicResourceService"}
    assert {l["source"] for l in lines} == {CLIENT}
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{mesh['b'].ports['admin']}/metrics") as response:
            metrics = await response.text()
    series = 'trustmesh_sidecar_h2_streams_total{direction="inbound",grpc_method="FetchResource",' \
        'grpc_service="trustmesh.demo.v1.DynamicResourceService",grpc_status="%s",protocol="grpc"}'
    assert series % "0" + " 2.0" in metrics and series % "7" + " 1.0" in metrics


async def test_caller_sent_identity_metadata_is_replaced(mesh):
    stub, service = mesh["stub"], mesh["service"]
    forged = (("x-forwarded-client-cert", "By=x;URI=spiffe://example.org/app/admin"), ("x-trustmesh-source", "admin"))
    await stub.FetchResource(pb.FetchResourceRequest(appname="billing"), metadata=forged, timeout=10)
    (seen,) = service.metadata
    assert seen["x-forwarded-client-cert"] == f"By={SERVER};URI={CLIENT}"
    assert "x-trustmesh-source" not in seen


async def test_server_streaming_with_responses_over_the_flow_control_windows(mesh):
    stub = mesh["stub"]
    # 4 responses of 3 MB each: far beyond the 64 KiB default and 256 KiB stream windows
    replies = [r async for r in stub.ListResources(pb.ListResourcesRequest(appname="billing", prefix=str(3_000_000)), timeout=60)]
    assert [len(r.content) for r in replies] == [3_000_000] * 4
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        [r async for r in stub.ListResources(pb.ListResourcesRequest(appname="payments"), timeout=10)]
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_stream_nobody_reads_does_not_stall_the_others(mesh):
    stub = mesh["stub"]
    stalled = stub.ListResources(pb.ListResourcesRequest(appname="billing", prefix=str(3_000_000)), timeout=60)
    first = await stalled.read()  # the call is under way; its other 9 MB wait on flow control
    assert len(first.content) == 3_000_000
    for i in range(5):  # meanwhile other calls on the same connections go through
        reply = await stub.FetchResource(pb.FetchResourceRequest(appname="billing", resource_id=str(i)), timeout=10)
        assert reply.resource_id == str(i)
    rest = [await stalled.read() for _ in range(3)]
    assert [len(r.content) for r in rest] == [3_000_000] * 3
    assert await stalled.read() is grpc.aio.EOF
    assert await stalled.code() == grpc.StatusCode.OK


async def test_large_request_message_is_inspected_and_forwarded(mesh):
    stub, service = mesh["stub"], mesh["service"]
    big_id = "k" * 900_000  # under grpc.max_message (1 MiB), over every window
    reply = await stub.FetchResource(pb.FetchResourceRequest(appname="billing", resource_id=big_id), timeout=30)
    assert reply.resource_id == big_id
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await stub.FetchResource(pb.FetchResourceRequest(appname="payments", resource_id=big_id), timeout=30)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    too_big = "k" * 1_100_000  # over grpc.max_message: refused, never forwarded unread
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.FetchResource(pb.FetchResourceRequest(appname="billing", resource_id=too_big), timeout=30)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert [m[2] for m in service.messages] == [big_id]


async def test_client_streaming_every_message_is_checked(mesh):
    stub, service = mesh["stub"], mesh["service"]

    def puts(*apps):
        return iter([pb.PutResourceRequest(appname=app, resource=pb.Resource(resource_id=f"{app}-{i}")) for i, app in enumerate(apps)])

    summary = await stub.PutResources(puts("billing", "billing", "billing"), timeout=10)
    assert summary.stored == 3
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await stub.PutResources(puts("billing", "payments", "billing"), timeout=10)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # the allowed first message may have reached the app; nothing of the denied one nor after it
    ids = [m[2] for m in service.messages]
    assert ids[:3] == ["billing-0", "billing-1", "billing-2"]
    assert "payments-1" not in ids and ids.count("billing-2") == 1
    assert set(ids[3:]) <= {"billing-0"}


async def test_bidi_streaming(mesh):
    stub = mesh["stub"]
    call = stub.WatchResources(timeout=10)
    for i in range(5):
        await call.write(pb.FetchResourceRequest(appname="billing", resource_id=str(i)))
        reply = await call.read()
        assert reply.resource_id == str(i)
    await call.write(pb.FetchResourceRequest(appname="payments", resource_id="x"))
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await call.read()
        await call.read()
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert ("WatchResources", "payments", "x") not in mesh["service"].messages


async def test_deadline_crosses_the_proxy_and_cancels_the_app_call(mesh):
    stub, service = mesh["stub"], mesh["service"]
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await stub.FetchResource(pb.FetchResourceRequest(appname="slow"), timeout=1.0)
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await asyncio.wait_for(service.cancelled.wait(), 20)  # the reset reached the app's handler


async def test_sigterm_drains_with_goaway_and_in_flight_calls_complete(mesh):
    stub, service = mesh["stub"], mesh["service"]
    in_flight = asyncio.ensure_future(stub.FetchResource(pb.FetchResourceRequest(appname="slow", resource_id="2"), timeout=30))
    await asyncio.wait_for(service.slow_started.wait(), 20)
    mesh["b"].proc.send_signal(signal.SIGTERM)
    reply = await in_flight  # B sent GOAWAY and let the stream finish
    assert reply.appname == "slow"
    assert await asyncio.wait_for(mesh["b"].proc.wait(), 20) == 0
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await stub.FetchResource(pb.FetchResourceRequest(appname="billing"), timeout=10)
    assert gone.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_many_concurrent_calls_on_one_connection(mesh):
    stub = mesh["stub"]
    calls = [stub.FetchResource(pb.FetchResourceRequest(appname="billing", resource_id=str(i)), timeout=60) for i in range(300)]
    denied = [stub.FetchResource(pb.FetchResourceRequest(appname="payments", resource_id=str(i)), timeout=60) for i in range(20)]
    results = await asyncio.gather(*calls, *denied, return_exceptions=True)
    assert [r.resource_id for r in results[:300]] == [str(i) for i in range(300)]
    assert all(isinstance(r, grpc.aio.AioRpcError) and r.code() == grpc.StatusCode.PERMISSION_DENIED for r in results[300:])


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_prior_knowledge_plain_h2_http1_and_upgrade_on_the_same_port(mesh):
    port = mesh["a"].ports["upstream-0"]
    # no rule allows plain HTTP here: B answers 403, over the version the client spoke;
    # an Upgrade to h2c is refused by A itself (never a tunnel, never a silent downgrade)
    for flags, expected in ((["--http2-prior-knowledge"], "403 2"), (["--http1.1"], "403 1.1"), (["--http2"], "400 1.1")):
        done = await asyncio.to_thread(
            subprocess.run,
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{http_version}", *flags, f"http://127.0.0.1:{port}/status"],
            capture_output=True, text=True, timeout=30,
        )
        assert done.stdout == expected, (flags, done.stderr)
