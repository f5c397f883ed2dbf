"""The app's kubelet probes on the sidecar's health port: the injector's TRUSTMESH_APP_PROBERS
contract (docs/injector.md) run against real apps on loopback (HTTP, TCP, gRPC health)."""

import asyncio
import json

import aiohttp
import grpc
import pytest
from aiohttp import web

from sidecar.app_probes import AppProbes, GrpcProbe, HttpProbe, TcpProbe, parse_probers
from sidecar.errors import ConfigError
from tests.unit.sidecar.conftest import config


@pytest.fixture
async def probe_app():
    """An app whose /status/<code> answers that code and whose /slow answers too late for 1 s."""
    seen = []

    async def status(request):
        seen.append({"path": request.path_qs, "headers": dict(request.headers)})
        code = int(request.match_info["code"])
        if code == 302:
            raise web.HTTPFound("/elsewhere")
        return web.Response(status=code, text="app body")

    async def slow(request):
        await asyncio.sleep(1.5)  # past the probe's 1 s
        return web.Response()

    app = web.Application()
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/slow", slow)
    app.router.add_get("/elsewhere", status)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield port, seen
    await runner.cleanup()


async def _health(mesh, probers: dict):
    """The sidecar's health URL, serving ``probers``. A probe that gives no timeoutSeconds gets
    30 s here, not the kubelet's 1 s: an app that answers must not lose a race against a busy
    machine (the timeout itself is tested with an explicit 1 s)."""
    sidecar = await mesh(config(1))
    probers = {path: {"timeoutSeconds": 30, **spec} for path, spec in probers.items()}
    sidecar.admin.app_probes = AppProbes(parse_probers(json.dumps(probers)))
    return f"http://127.0.0.1:{sidecar.ports['health']}"


async def _get(url):
    async with aiohttp.ClientSession() as s:
        async with s.get(url, allow_redirects=False) as r:
            return r.status, await r.text(), r.headers


def _http(port, path, **extra):
    return {"httpGet": {"path": path, "port": port, "scheme": "HTTP", **extra}}


async def test_http_probe_forwards_path_and_headers_and_returns_the_apps_status(mesh, probe_app):
    port, seen = probe_app
    base = await _health(mesh, {
        "/app-health/web/readyz": _http(port, "/status/200?deep=1", httpHeaders=[{"name": "X-Probe", "value": "1"}]),
        "/app-health/web/livez": _http(port, "/status/500"),
        "/app-health/web/startupz": _http(port, "/status/302"),
    })
    status, text, _ = await _get(f"{base}/app-health/web/readyz")
    assert status == 200 and "app body" not in text
    assert seen[-1]["path"] == "/status/200?deep=1" and seen[-1]["headers"]["X-Probe"] == "1"
    assert (await _get(f"{base}/app-health/web/livez"))[0] == 500
    status, _, headers = await _get(f"{base}/app-health/web/startupz")
    assert status == 302 and "Location" not in headers  # not followed, and not handed to the kubelet
    assert [s["path"] for s in seen] == ["/status/200?deep=1", "/status/500", "/status/302"]


async def test_unknown_probe_paths_are_404_and_reach_nothing(mesh, probe_app):
    port, seen = probe_app
    base = await _health(mesh, {"/app-health/web/readyz": _http(port, "/status/200")})
    for path in ("/app-health/web/livez", "/app-health/other/readyz", "/app-health/web/readyz/x",
                 "/app-health/web/readyz%2F", f"/app-health/127.0.0.1:{port}/status/200", "/app-health/"):
        assert (await _get(base + path))[0] == 404, path
    assert seen == []
    assert (await _get(f"{base}/app-health/web/readyz"))[0] == 200  # the configured one still works


async def test_app_down_or_slow_is_503_within_the_probe_timeout(mesh, probe_app, unused_port):
    port, _ = probe_app
    base = await _health(mesh, {
        "/app-health/web/readyz": {**_http(port, "/slow"), "timeoutSeconds": 1},
        "/app-health/web/livez": _http(unused_port, "/"),
    })
    status, text, _ = await _get(f"{base}/app-health/web/readyz")
    assert status == 503 and "within 1 s" in text
    status, text, _ = await _get(f"{base}/app-health/web/livez")
    assert status == 503 and "probe failed" in text


async def test_tcp_socket_probe(mesh, probe_app, unused_port):
    port, _ = probe_app
    base = await _health(mesh, {
        "/app-health/db/livez": {"tcpSocket": {"port": port}},
        "/app-health/db/readyz": {"tcpSocket": {"port": unused_port, "host": "10.0.0.1"}},  # host ignored
    })
    assert (await _get(f"{base}/app-health/db/livez"))[0] == 200
    assert (await _get(f"{base}/app-health/db/readyz"))[0] == 503


@pytest.fixture
async def grpc_app():
    """A real gRPC server with grpc.health.v1.Health/Check written against the raw wire bytes."""
    requests = []
    statuses = {b"": b"\x08\x01", b"\n\x06orders": b"\x08\x02"}  # "" SERVING, "orders" NOT_SERVING

    async def check(request: bytes, context):
        requests.append(request)
        if request not in statuses:
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        return statuses[request]

    handler = grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health",
        {"Check": grpc.unary_unary_rpc_method_handler(check, request_deserializer=None, response_serializer=None)},
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield port, requests
    await server.stop(None)


async def test_grpc_probe_is_a_health_check_of_the_service(mesh, grpc_app):
    port, requests = grpc_app
    base = await _health(mesh, {
        "/app-health/api/livez": {"grpc": {"port": port}},
        "/app-health/api/readyz": {"grpc": {"port": port, "service": "orders"}},
        "/app-health/api/startupz": {"grpc": {"port": port, "service": "nope"}},
    })
    assert (await _get(f"{base}/app-health/api/livez"))[0] == 200
    status, text, _ = await _get(f"{base}/app-health/api/readyz")
    assert status == 503 and "not SERVING" in text
    status, text, _ = await _get(f"{base}/app-health/api/startupz")
    assert status == 503 and "NOT_FOUND" in text
    assert requests == [b"", b"\n\x06orders", b"\n\x04nope"]


def test_the_injectors_documented_example_parses():
    text = json.dumps({
        "/app-health/web/readyz": {"httpGet": {"path": "/ready", "port": 8080, "scheme": "HTTP",
                                               "httpHeaders": [{"name": "X-Probe", "value": "1"}]},
                                   "timeoutSeconds": 2},
        "/app-health/web/livez": {"tcpSocket": {"port": 8080}},
        "/app-health/web/startupz": {"grpc": {"port": 9090, "service": "health"}},
    })
    assert parse_probers(text) == {
        "/app-health/web/readyz": HttpProbe(8080, "/ready", "HTTP", (("X-Probe", "1"),), 2.0),
        "/app-health/web/livez": TcpProbe(8080, 1.0),
        "/app-health/web/startupz": GrpcProbe(9090, "health", 1.0),
    }
    assert parse_probers(None) == {} and parse_probers("") == {} and parse_probers("{}") == {}


@pytest.mark.parametrize(
    "doc, field, message",
    [
        ("{not json", "TRUSTMESH_APP_PROBERS", "not valid JSON"),
        ("[]", "TRUSTMESH_APP_PROBERS", "JSON object"),
        ('{"/healthz/ready": {"tcpSocket": {"port": 80}}}', "[/healthz/ready]", "the key must be"),
        ('{"/app-health/web/readyz": {"exec": {"command": ["x"]}}}', ".exec", "unknown key"),
        ('{"/app-health/web/readyz": {}}', "[/app-health/web/readyz]", "exactly one"),
        ('{"/app-health/web/readyz": {"tcpSocket": {"port": 15000}}}', ".tcpSocket.port", "sidecar's own"),
        ('{"/app-health/web/readyz": {"tcpSocket": {"port": "http"}}}', ".tcpSocket.port", "port number"),
        ('{"/app-health/web/readyz": {"tcpSocket": {"port": 0}}}', ".tcpSocket.port", "port number"),
        ('{"/app-health/web/readyz": {"httpGet": {"port": 80, "path": "/a b"}}}', ".httpGet.path", "without spaces"),
        ('{"/app-health/web/readyz": {"httpGet": {"port": 80, "path": "http://evil/"}}}', ".httpGet.path", "absolute path"),
        ('{"/app-health/web/readyz": {"httpGet": {"port": 80, "scheme": "FTP"}}}', ".httpGet.scheme", "HTTP or HTTPS"),
        ('{"/app-health/web/readyz": {"httpGet": {"port": 80, "httpHeaders": [{"name": "X", "value": "a\\r\\nB: c"}]}}}',
         ".httpHeaders[0].value", "control characters"),
        ('{"/app-health/web/readyz": {"httpGet": {"port": 80, "httpHeaders": [{"name": "X Y", "value": "1"}]}}}',
         ".httpHeaders[0].name", "header name"),
        ('{"/app-health/web/readyz": {"tcpSocket": {"port": 80}, "timeoutSeconds": 0}}', ".timeoutSeconds", "1 to 3600"),
    ],
)
def test_a_bad_probers_document_is_refused_naming_the_entry(doc, field, message):
    with pytest.raises(ConfigError) as err:
        parse_probers(doc, own_ports={15000, 15001, 15006, 15021})
    assert field in err.value.field and message in str(err.value)


async def test_the_injectors_real_output_runs_against_the_app(mesh, probe_app):
    """Contract: what injector.inject_pod writes into TRUSTMESH_APP_PROBERS, and the probe it
    rewrites for the kubelet, work with the sidecar (the app's port is the only thing swapped)."""
    from injector.config import InjectorConfig
    from injector.inject import inject_pod
    from tests.support.k8s_admission_double import pod as make_pod

    port, seen = probe_app
    web = {"name": "web", "image": "web:1", "ports": [{"name": "http", "containerPort": port}],
           "readinessProbe": {"httpGet": {"path": "/status/204", "port": "http",
                                          "httpHeaders": [{"name": "X-Probe", "value": "k"}]}, "timeoutSeconds": 3},
           "livenessProbe": {"tcpSocket": {"port": port}}}
    injected = inject_pod(make_pod(containers=[web]), InjectorConfig(trust_domain="example.org")).pod
    spec = injected["spec"]
    proxy = next(c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == "trustmesh-proxy")
    env = {e["name"]: e.get("value") for e in proxy["env"]}
    app = next(c for c in spec["containers"] if c["name"] == "web")
    kubelet_path = app["readinessProbe"]["httpGet"]["path"]

    base = await _health(mesh, json.loads(env["TRUSTMESH_APP_PROBERS"]))
    assert (await _get(base + kubelet_path))[0] == 204
    assert seen[-1]["headers"]["X-Probe"] == "k"
    assert (await _get(base + app["livenessProbe"]["httpGet"]["path"]))[0] == 200
