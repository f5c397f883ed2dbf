"""Audit lines and the JWT-SVID expiry after the per-call trims.

The audit line of an issuance is assembled from pre-encoded parts (the
caller's part once per caller); it must read exactly like one JSON object
with the documented keys in order, whatever the caller's fields contain.
The Kubernetes API, where used, is the in-process double.
"""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone

import jwt

from ca.service.audit import AuditLog
from ca.service.identity import Caller
from sdk.spiffeid import SpiffeId

WHEN = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def _line(caller: Caller, **kwargs) -> tuple[str, dict]:
    stream = io.StringIO()
    AuditLog(stream, clock=lambda: WHEN).issued("SignX509SVID", caller, **kwargs)
    text = stream.getvalue()
    assert text.endswith("\n") and text.count("\n") == 1
    return text, json.loads(text)


def test_issued_line_has_every_field_in_order_and_escapes_odd_values():
    caller = Caller(
        spiffe_id=SpiffeId.parse("spiffe://example.org/ns/prod/sa/web"),
        kind="kubernetes",
        namespace="prod",
        service_account="web",
        pod_name='web-"0"\\ é',  # not a valid pod name, but the line must stay one JSON object
        pod_uid="u-1",
        credential_id="JTI=abc",
    )
    text, record = _line(
        caller,
        serial=0xABC,
        not_after=WHEN,
        audiences=("a", 'b"'),
        dns_names=("web.prod.svc",),
        peer="ipv4:127.0.0.1:5000",
    )
    expected = {
        "time": "2030-01-02T03:04:05Z",
        "event": "issued",
        "rpc": "SignX509SVID",
        "caller_kind": "kubernetes",
        "namespace": "prod",
        "service_account": "web",
        "pod": 'web-"0"\\ é',
        "pod_uid": "u-1",
        "credential_id": "JTI=abc",
        "spiffe_id": "spiffe://example.org/ns/prod/sa/web",
        "serial": "abc",
        "not_after": "2030-01-02T03:04:05Z",
        "audiences": ["a", 'b"'],
        "dns_names": ["web.prod.svc"],
        "peer": "ipv4:127.0.0.1:5000",
    }
    assert list(record.items()) == list(expected.items())
    assert text == json.dumps(expected, separators=(",", ":")) + "\n"


def test_issued_line_for_a_token_caller_without_optional_fields():
    caller = Caller(spiffe_id=SpiffeId.parse("spiffe://example.org/edge"), kind="join-token", token_id="1a2b")
    text, record = _line(caller)
    assert list(record) == ["time", "event", "rpc", "caller_kind", "token_id", "spiffe_id"]
    assert record["token_id"] == "1a2b" and record["spiffe_id"] == "spiffe://example.org/edge"


async def test_jwt_expiry_in_response_and_audit_is_the_tokens_exp(kube, start_service, client_for, audit_stream):
    service = await start_service(jwt_svid={"default_ttl": 120, "max_ttl": 600})
    kube.add_pod("prod", "web-0", service_account="web")
    client = client_for(service, kube.issue_token("prod", "web", pod_name="web-0"))
    token = await client.mint_jwt_svid(["api"])
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    line = audit_stream.last()
    assert line["event"] == "issued" and line["rpc"] == "MintJWTSVID"
    assert line["not_after"] == datetime.fromtimestamp(exp, timezone.utc).isoformat().replace("+00:00", "Z")
    assert exp - datetime.now(timezone.utc).timestamp() <= 121
