"""What each request leaves behind: one access-log record per request with exactly these
fields, and the request/decision/latency metrics (issue 16 pins them before making them cheaper).
Real mTLS between two sidecars, a real app."""

from __future__ import annotations

import io
import json
import re

import aiohttp
from prometheus_client import generate_latest

from sidecar.accesslog import AccessLog
from sidecar.config import Upstream
from tests.unit.sidecar.conftest import config, rule_authorizer

SERVER = "spiffe://example.org/ns/b/sa/server"
CLIENT = "spiffe://example.org/ns/a/sa/client"


async def _chain(mesh, pki, app, allowed=frozenset({CLIENT})):
    logs = {"a": io.StringIO(), "b": io.StringIO()}
    b = await mesh(config(app.port), pki.identity("/ns/b/sa/server"), rule_authorizer(set(allowed), "clients"),
                   access_log=AccessLog(logs["b"]))
    a = await mesh(config(upstreams=(Upstream(0, "127.0.0.1", b.ports["inbound"], SERVER, "http"),)),
                   pki.identity("/ns/a/sa/client"), access_log=AccessLog(logs["a"]))
    return a, b, logs


def _records(sidecar, log: io.StringIO) -> list[dict]:
    sidecar.access_log.flush()
    records = [json.loads(line) for line in log.getvalue().splitlines()]
    for record in records:
        assert record.pop("v") == 1
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record.pop("time"))
        assert isinstance(record.pop("duration_ms"), (int, float))
        # the attribute values the evaluation could read: their format is docs/access-log.md's
        for name in ("attrs", "absent", "withheld"):
            assert isinstance(record.pop(name, {}), (dict, list))
    return records


def _samples(sidecar, name: str) -> dict[tuple, float]:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(generate_latest(sidecar.metrics.registry).decode()):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


async def test_each_request_leaves_one_exact_record_and_its_metrics(mesh, pki, app):
    a, b, logs = await _chain(mesh, pki, app)
    base = f"http://127.0.0.1:{a.ports['upstream-0']}"
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{base}/orders/7?page=2", headers={"X-Request-Id": "r-1"}) as r:
            assert r.status == 200
        async with s.post(f"{base}/orders", json={"n": 1}) as r:
            assert r.status == 200
    inbound = _records(b, logs["b"])
    assert inbound == [
        {"direction": "inbound", "source": CLIENT, "destination": f"127.0.0.1:{app.port}", "method": "GET",
         "path": "/orders/7", "status": 200, "decision": "allow", "rule": "clients"},
        {"direction": "inbound", "source": CLIENT, "destination": f"127.0.0.1:{app.port}", "method": "POST",
         "path": "/orders", "status": 200, "decision": "allow", "rule": "clients"},
    ]
    outbound = _records(a, logs["a"])
    assert outbound == [
        {"direction": "outbound", "source": CLIENT, "destination": f"127.0.0.1:{b.ports['inbound']}",
         "expected_id": SERVER, "method": "GET", "path": "/orders/7?page=2", "status": 200, "decision": "forward",
         "rule": None},
        {"direction": "outbound", "source": CLIENT, "destination": f"127.0.0.1:{b.ports['inbound']}",
         "expected_id": SERVER, "method": "POST", "path": "/orders", "status": 200, "decision": "forward",
         "rule": None},
    ]
    assert _samples(b, "trustmesh_sidecar_requests_total") == {
        (("decision", "allow"), ("direction", "inbound"), ("status", "200")): 2.0,
    }
    assert _samples(b, "trustmesh_sidecar_authz_decisions_total") == {(("decision", "allow"), ("rule", "clients")): 2.0}
    assert _samples(b, "trustmesh_sidecar_request_duration_seconds_count") == {(("direction", "inbound"),): 2.0}
    assert _samples(a, "trustmesh_sidecar_requests_total") == {
        (("decision", "forward"), ("direction", "outbound"), ("status", "200")): 2.0,
    }


async def test_a_denied_and_a_refused_request_are_recorded_as_such(mesh, pki, app):
    a, b, logs = await _chain(mesh, pki, app, allowed=frozenset())
    base = f"http://127.0.0.1:{a.ports['upstream-0']}"
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{base}/orders/7") as r:
            assert r.status == 403
        async with s.get(f"{base}/a%2fb") as r:  # a path the normaliser refuses
            assert r.status == 400
    assert _records(b, logs["b"]) == [
        {"direction": "inbound", "source": CLIENT, "destination": f"127.0.0.1:{app.port}", "method": "GET",
         "path": "/orders/7", "status": 403, "decision": "deny", "rule": None},
        {"direction": "inbound", "source": CLIENT, "destination": f"127.0.0.1:{app.port}", "method": "GET",
         "path": "/a%2Fb", "status": 400, "decision": "error", "rule": None,
         "error": "rejected request target: encoded '/' (%2F) at offset 2"},
    ]
    assert _samples(b, "trustmesh_sidecar_requests_total") == {
        (("decision", "deny"), ("direction", "inbound"), ("status", "403")): 1.0,
        (("decision", "error"), ("direction", "inbound"), ("status", "400")): 1.0,
    }
    assert _samples(b, "trustmesh_sidecar_authz_decisions_total") == {(("decision", "deny"), ("rule", "(default)")): 1.0}
    assert app.seen == []


def test_the_record_time_is_the_utc_second_of_the_write(monkeypatch):
    import sidecar.accesslog as accesslog

    log = AccessLog(io.StringIO())
    for now in (1_767_225_599.2, 1_767_225_599.9, 1_767_225_600.0, 1_767_225_661.5):
        monkeypatch.setattr(accesslog.time, "time", lambda now=now: now)
        log.write(direction="inbound", status=200)
    stamps = [json.loads(line)["time"] for line in log.stream.getvalue().splitlines()]
    assert stamps == ["2025-12-31T23:59:59Z", "2025-12-31T23:59:59Z", "2026-01-01T00:00:00Z", "2026-01-01T00:01:01Z"]
