"""``request.json`` on HTTP/2, and the per-connection budget of held request data, end to end.

A real sidecar process (STRICT, a policy reading ``request.json``) in front of the recording h2c
app of ``test_h2_attacks``; the caller is python-hyper's ``h2`` client over mutual TLS (ALPN
``h2``) to the inbound port, or over h2c to the outbound (explicit upstream) port, which leads
through the same sidecar's mutual-TLS HTTP/2 path back to its inbound port. A JSON body is held
up to ``limits.max_json_body`` and decided on as HTTP/1.1 decides on it: over the limit or not
JSON, ``request.json`` is missing (rules reading it fail closed); a repeated key is 400.
"""

from __future__ import annotations

import socket
import struct

import pytest

from tests.integration.sidecar.helpers import Pki
from tests.integration.sidecar.test_h2_attacks import (
    DATA, SETTINGS, WINDOW_UPDATE, Bystander, Peer, RecordingApp, Sidecar, connect_mtls, grpc_req, headers, raw, req,
)

pytestmark = pytest.mark.slow

POLICY = '''
policy "orders" protects destination.attrs.app == "config" {
  allow "own-order" {
    request.protocol == "h2" and request.path == "/ok/orders" and request.json.appname == source.attrs.app
  }
  allow "plain" { request.protocol == "h2" and request.path startswith "/ok/plain" }
  allow "fetch-own" {
    request.grpc.method == "FetchResource" and request.grpc.message.appname == source.attrs.app
  }
}
'''
JSON = (b"content-type", b"application/json")
MAX_JSON = 4096


class Client(Bystander):
    """python-hyper's h2 client on one connection: POSTs a body in the DATA frames given."""

    def post(self, path: str, parts: list[bytes], ctype: tuple[bytes, bytes] = JSON) -> tuple[int, bytes]:
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, req(path, "POST", add=[ctype]), end_stream=not parts)
        for i, part in enumerate(parts):
            self.conn.send_data(sid, part, end_stream=i == len(parts) - 1)
        self.sock.sendall(self.conn.data_to_send())
        return self.answer(sid, path)


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("h2json")
    pki = Pki()
    app = RecordingApp().start()
    sidecar = Sidecar(tmp, pki, app.port, max_message=1 << 20, policy=POLICY,
                      limits={"max_json_body": MAX_JSON, "max_held_per_connection": 300_000})
    files = pki.write(tmp, "client", "/app/billing")
    clients = {
        "inbound": Client(connect_mtls(files, sidecar.ports["inbound"])),
        "through-two-hops": Client(socket.create_connection(("127.0.0.1", sidecar.ports["upstream-0"]), timeout=10)),
    }
    yield {"app": app, "sidecar": sidecar, "clients": clients, "files": files}
    for client in clients.values():
        client.close()
    assert sidecar.stop() == 0, sidecar.stderr()
    app.stop()
    assert app.errors == []
    assert "Traceback" not in sidecar.stderr()


def _posted(rig, path: str, parts: list[bytes], via: str, ctype=JSON) -> tuple[int, list]:
    app = rig["app"]
    mark = app.mark()
    status, _ = rig["clients"][via].post(path, parts, ctype)
    return status, [s for s in app.since(mark) if s.path == path]


VIA = ["inbound", "through-two-hops"]
# the caller's app: billing over mutual TLS; through two hops the sidecar calls itself (app config)
CALLER = {"inbound": b"billing", "through-two-hops": b"config"}


@pytest.mark.parametrize("via", VIA)
@pytest.mark.parametrize("frames", [1, 3])
def test_a_json_body_the_policy_allows_reaches_the_app_whole(rig, via, frames):
    own = b'{"appname": "%b", "id": 7}' % CALLER[via]
    parts = [own] if frames == 1 else [own[:5], own[5:9], own[9:]]
    status, seen = _posted(rig, "/ok/orders", parts, via)
    assert status == 200
    [stream] = seen
    assert bytes(stream.data) == own and stream.ended


@pytest.mark.parametrize("via", VIA)
@pytest.mark.parametrize("body,ctype,expected", [
    (b'{"appname": "payments"}', JSON, 403),  # another app's: denied
    (b'{"appname": "billing", "appname": "config"}', JSON, 400),  # which copy wins is the parser's guess
    (b'{"appName": "billing", "appname": "config"}', JSON, 400),  # the same key in another case
    (b'{"appname": "%s"', JSON, 403),  # not JSON: request.json is missing
    (b'{"appname": "%s"}', (b"content-type", b"text/plain"), 403),  # not a JSON content type: never read as JSON
    (b'{"appname": "%s", "pad": "' + b"x" * MAX_JSON + b'"}', JSON, 403),  # over max_json_body
    (b'{"appname": "%s", "pad": "' + b"x" * MAX_JSON + b'"}', (b"content-type", b"application/problem+json"), 403),
], ids=["other app", "duplicate key", "duplicate key in another case", "not json", "not a json type", "too large",
        "too large +json"])
def test_json_bodies_are_decided_as_http1_decides_them_and_nothing_reaches_the_app(rig, via, body, ctype, expected):
    body = body.replace(b"%s", CALLER[via])  # the caller's own appname, where the case needs it
    status, seen = _posted(rig, "/ok/orders", [body[:100], body[100:]] if len(body) > 100 else [body], via, ctype)
    assert status == expected
    assert seen == []


@pytest.mark.parametrize("via", VIA)
def test_a_body_the_policy_does_not_read_goes_on_as_it_comes(rig, via):
    big = b"y" * (3 * MAX_JSON)
    status, [stream] = _posted(rig, "/ok/plain", [big[:1000], big[1000:]], via)
    assert status == 200 and bytes(stream.data) == big


def test_json_bodies_held_count_against_the_connection_budget(rig):
    """limits.max_held_per_connection (300 kB here) bounds what one connection's streams hold
    together; JSON bodies held for the decision count, and the stream that goes beyond is refused
    (503 for plain HTTP/2), while the connection goes on."""
    peer = Peer(connect_mtls(rig["files"], rig["sidecar"].ports["inbound"])).start()
    try:
        assert peer.until(lambda p: any(f.type == SETTINGS and "ACK" in f.flags for f in p.frames), 10)
        body = b'{"pad": "' + b"z" * (MAX_JSON - 20)
        sids = list(range(1, 2 * 80, 2))  # 80 x 4 kB = 320 kB > 300 kB, never finished
        peer.send(b"".join(headers(sid, req("/ok/orders", "POST", add=[JSON]), end_stream=False) + raw(DATA, 0, sid, body)
                           for sid in sids))
        beyond = sids[300_000 // len(body):]  # each stream past the budget is refused, the held ones wait
        assert peer.until(lambda p: all(p.status(sid) is not None for sid in beyond), 10), peer.frames[-5:]
        assert [peer.status(sid) for sid in sids] == [None] * (len(sids) - len(beyond)) + [503] * len(beyond)
        peer.send(headers(201, req("/ok/plain-after")))
        assert peer.until(lambda p: p.ended(201), 10) and peer.status(201) == 200
        assert peer.goaway() is None
    finally:
        peer.close()


def test_grpc_messages_held_count_against_the_configured_budget(rig):
    """With the 300 kB budget configured, one unfinished 900 kB message (under grpc.max_message,
    1 MiB) is refused with RESOURCE_EXHAUSTED; the default budget (4 MiB) would have held it."""
    peer = Peer(connect_mtls(rig["files"], rig["sidecar"].ports["inbound"])).start()
    try:
        assert peer.until(lambda p: any(f.type == SETTINGS and "ACK" in f.flags for f in p.frames), 10)
        prefix = b"\0" + struct.pack(">L", 900_000)
        peer.send(headers(1, grpc_req(), end_stream=False) + raw(DATA, 0, 1, prefix))
        sent, chunk = len(prefix), b"\x0a" * 16000

        def granted(p: Peer) -> int:
            return sum(f.window_increment for f in p.frames if f.type == WINDOW_UPDATE and f.stream_id == 1)

        for _ in range(25):  # 400 kB at most, each chunk within the stream's flow-control window
            if not peer.until(lambda p: p.grpc_status(1) is not None or sent + len(chunk) <= (1 << 18) + granted(p), 10):
                break
            if peer.grpc_status(1) is not None:
                break
            peer.send(raw(DATA, 0, 1, chunk))
            sent += len(chunk)
        assert peer.until(lambda p: p.grpc_status(1) is not None, 10)
        assert sent > 300_000  # not refused before the budget was reached
        code, text = peer.grpc_status(1)
        assert code == "8" and "unfinished request data" in text
    finally:
        peer.close()
