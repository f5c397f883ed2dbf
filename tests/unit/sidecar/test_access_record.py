"""The access-log record (format v1, docs/access-log.md): the deciding rule and why, audit and
dry-run matches, the attribute values read, privacy, and what the caller is told.

Sans-I/O: the real router with a real policy store and access log, no sockets. The records are
then read back with the replay reader, as ``trustmesh policy replay`` does.
"""

from __future__ import annotations

import io
import json

from policy_dsl import PolicyStore
from policy_dsl.replay import Replay
from sdk.spiffeid import SpiffeId
from sidecar.accesslog import AccessLog
from sidecar.attributes import PolicyAuthorizer
from sidecar.exchange import Answer, ConnInfo, Forward
from sidecar.http1 import parse_request_head
from sidecar.inbound import InboundRouter
from sidecar.metrics import Metrics
from sidecar.pool import Pool
from tests.support.sidecar_fakes import FixedIdentity, refuse_connections

OWN = "spiffe://demo.example/ns/demo/app/config"
WEB = "spiffe://demo.example/ns/demo/app/web"
POLICY = '''
policy "config" protects destination.attrs.app == "config" {
  allow "fetch-own-config" {
    source.trust_domain == "demo.example"
    and request.method == "POST"
    and request.json.appname == source.attrs.app
  }
  deny "no-admin-api" { request.path matches "/v1/admin/**" }
  audit "big-fetch" { request.json.size > 100 }
  dry-run deny "no-posts" { request.method == "POST" and request.headers.x-team == "red" }
}
'''


def _setup(policy: str = POLICY, omit=()):
    store = PolicyStore()
    assert store.load_text(policy, "config.policy")
    stream, metrics = io.StringIO(), Metrics()
    router = InboundRouter(FixedIdentity(OWN), PolicyAuthorizer(store), Pool(refuse_connections), metrics=metrics,
                           access_log=AccessLog(stream, omit))
    return router, stream, metrics


def _call(router, raw: bytes, body: bytes | None = None):
    conn = ConnInfo("10.0.0.9", 4000, peer_id=SpiffeId.parse(WEB), tls=True, target_port=8080)
    head = parse_request_head(raw, 100)
    result = router.route(conn, head, body)
    router.done(conn, head, result.status if isinstance(result, Answer) else 200, result.log, 0.0)
    return result


def _post(router, appname: str, extra: bytes = b""):
    body = json.dumps({"appname": appname, "size": 500}).encode()
    raw = (b"POST /v1/fetch HTTP/1.1\r\nHost: config\r\nContent-Type: application/json\r\n" + extra
           + b"Content-Length: " + str(len(body)).encode())
    return _call(router, raw, body)


def _records(stream):
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_default_deny_is_explained_in_the_log_and_not_to_the_caller():
    router, stream, _ = _setup()
    answer = _post(router, "billing")
    assert isinstance(answer, Answer) and (answer.status, answer.text) == (403, "forbidden")
    (record,) = _records(stream)
    assert list(record)[:3] == ["v", "time", "duration_ms"] and record["v"] == 1
    assert (record["decision"], record["rule"]) == ("deny", None)
    (candidate,) = record["explain"]["candidates"]
    assert candidate == {
        "rule": "config/fetch-own-config", "condition": "request.json.appname == source.attrs.app",
        "result": "false", "values": {"request.json.appname": "billing", "source.attrs.app": "web"},
    }
    assert record["attrs"]["request.json.appname"] == "billing" and record["attrs"]["source.id"] == WEB


def test_a_deny_rule_is_named_with_its_policy_and_an_allow_carries_no_explanation():
    router, stream, _ = _setup()
    _call(router, b"GET /v1/admin/users HTTP/1.1\r\nHost: config")
    assert isinstance(_post(router, "web"), Forward)
    denied, allowed = _records(stream)
    assert (denied["policy"], denied["rule"], denied["explain"]["rule"]) == ("config", "no-admin-api", "config/no-admin-api")
    assert (allowed["decision"], allowed["policy"], allowed["rule"]) == ("allow", "config", "fetch-own-config")
    assert "explain" not in allowed


def test_audit_and_dry_run_matches_are_logged_and_counted_and_change_nothing():
    router, stream, metrics = _setup()
    assert isinstance(_post(router, "web", b"X-Team: red\r\n"), Forward)
    (record,) = _records(stream)
    assert record["audit"] == [
        {"policy": "config", "rule": "big-fetch", "would": "audit"},
        {"policy": "config", "rule": "no-posts", "would": "deny"},
    ]
    from prometheus_client import generate_latest

    scrape = generate_latest(metrics.registry).decode()
    assert 'trustmesh_authz_audit_total{policy="config",rule="no-posts",would="deny"} 1.0' in scrape
    assert 'trustmesh_authz_audit_total{policy="config",rule="big-fetch",would="audit"} 1.0' in scrape


def test_a_dry_run_policy_lets_requests_through_and_logs_what_it_would_deny():
    router, stream, metrics = _setup(POLICY.replace('policy "config"', 'dry-run policy "config"'))
    assert isinstance(_post(router, "billing"), Forward)  # enforce off
    (record,) = _records(stream)
    assert record["decision"] == "allow" and {"policy": "config", "rule": "(default)", "would": "deny"} in record["audit"]
    assert record["explain"]["candidates"][0]["rule"] == "config/fetch-own-config"
    from prometheus_client import generate_latest

    assert 'trustmesh_authz_audit_total{policy="config",rule="(default)",would="deny"} 1.0' in generate_latest(
        metrics.registry).decode()


def test_omitted_attributes_are_withheld_and_the_records_replay_without_change():
    router, stream, _ = _setup(omit=["source.ip", "request.headers"])
    _post(router, "billing", b"X-Team: blue\r\n")
    _post(router, "web")
    _call(router, b"GET /v1/admin/x HTTP/1.1\r\nHost: config")
    records = _records(stream)
    assert all("source.ip" not in r["attrs"] and "source.ip" in r["withheld"] for r in records)
    assert "request.headers.x-team" in records[0]["withheld"]
    store = PolicyStore()
    assert store.load_text(POLICY.replace('and request.headers.x-team == "red"', ""), "same.policy")
    replay = Replay(store.current)
    for number, line in enumerate(stream.getvalue().splitlines(), 1):
        replay.add_line(line, "access.log", number)
    assert (replay.records, replay.unchanged, replay.error_count) == (3, 3, 0)
    # a policy allowing by the withheld header: the POSTs cannot be told, the admin deny can
    store = PolicyStore()
    assert store.load_text(POLICY.replace('request.json.appname == source.attrs.app',
                                          'request.headers.x-team == "blue"'), "team.policy")
    replay = Replay(store.current)
    for number, line in enumerate(stream.getvalue().splitlines(), 1):
        replay.add_line(line, "access.log", number)
    assert (replay.count("undetermined"), replay.unchanged) == (2, 1)
    assert replay.changes()[0].example["unknown"] == ["request.headers.x-team"]


def test_a_tcp_connection_record_carries_its_attributes_and_explanation():
    router, stream, _ = _setup('policy "db" protects all { allow "web-tcp" { source.attrs.app == "web" '
                               'and context.protocol == "tcp" and destination.port == 5432 } }\n')
    conn = ConnInfo("10.0.0.9", 4000, peer_id=SpiffeId.parse(WEB), tls=True, target_port=8080)
    assert router.authorize_tcp(conn) is False
    (record,) = _records(stream)
    assert (record["protocol"], record["decision"], record["attrs"]["context.protocol"]) == ("tcp", "deny", "tcp")
    (candidate,) = record["explain"]["candidates"]
    assert (candidate["condition"], candidate["values"]) == ("destination.port == 5432", {"destination.port": 8080})


def test_equal_requests_reuse_the_recorded_text_until_the_policy_changes():
    router, stream, _ = _setup()
    conn = ConnInfo("10.0.0.9", 4000, peer_id=SpiffeId.parse(WEB), tls=True, target_port=8080)
    for _ in range(2):
        head = parse_request_head(b"GET /v1/admin/x HTTP/1.1\r\nHost: config\r\nX-Team: red", 100)
        result = router.route(conn, head, None)
        router.done(conn, head, 403, result.log, 0.0)
    router.authorizer.store.load_text('policy "config" protects all { deny "d" { request.headers.x-team == "red" } }')
    head = parse_request_head(b"GET /v1/admin/x HTTP/1.1\r\nHost: config\r\nX-Team: red", 100)
    router.done(conn, head, 403, router.route(conn, head, None).log, 0.0)
    first, second, third = _records(stream)
    assert first["attrs"] == second["attrs"] and first["absent"] == second["absent"]
    assert "request.json.appname" in first["absent"]  # the first policy reads it; the request had no body
    assert third["rule"] == "d" and third["attrs"]["request.headers.x-team"] == "red"
    assert "request.json.appname" not in third.get("absent", []) + list(third["attrs"])  # the new one does not
