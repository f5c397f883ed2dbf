"""The sidecar's HTTP/2 path under attack, end to end.

A real sidecar PROCESS (``trustmesh sidecar run``, STRICT, policy and gRPC descriptors) sits in
front of a recording app: an HTTP/2 (h2c) server built on python-hyper's ``h2`` that records every
stream it is sent. The attacker speaks to the sidecar's inbound port over mutual TLS with ALPN
``h2``, and to its outbound (explicit upstream) port as an app with prior-knowledge h2c; the
outbound upstream leads back to the same sidecar's inbound port, so one process carries both
directions and its RSS is read from /proc.

Well-formed frames come from python-hyper (``hpack`` for header blocks, ``h2`` for the bystander
clients); what ``h2`` refuses to send is built byte by byte. The answers are read with
``hyperframe`` and ``hpack``, never with our own codec. Each case checks:

- the error the RFC (or the sidecar's contract) names: GOAWAY code, RST_STREAM code, HTTP status,
  or ``grpc-status``;
- that nothing of the attack reached the app (no stream, or no completed one);
- that the others carry on: a bystander connection opened before the attack, and a new one,
  both get answers afterwards;
- for floods, that the sidecar's RSS grows by less than 20 MB.

Every wait is bounded by an event (the answer, the peer's close) with a deadline.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import re
import select
import socket
import ssl
import struct
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import hpack
import pytest
import yaml
from hyperframe.frame import Frame

from sdk.proto.trustmesh.demo.v1 import resource_pb2 as pb
from tests.integration.sidecar.helpers import PYTHON, ROOT, Pki, free_port, sidecar_config

pytestmark = pytest.mark.slow

CLIENT = "spiffe://example.org/app/billing"
SERVER = "spiffe://example.org/app/config"
DESCRIPTORS = ROOT / "sdk/proto/trustmesh/demo/v1/resource.binpb"
SERVICE = "/trustmesh.demo.v1.DynamicResourceService"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
POLICY = '''
policy "h2review" protects destination.attrs.app == "config" {
  allow "fetch-own" {
    request.grpc.method == "FetchResource" and request.grpc.message.appname == source.attrs.app
  }
  allow "watch-own" {
    request.grpc.method == "WatchResources" and request.grpc.message.appname == source.attrs.app
  }
  allow "plain" { request.protocol == "h2" and request.path startswith "/ok/" }
  allow "forged-source" { request.headers.x-trustmesh-source == "admin" }
  allow "forged-xfcc" { request.headers.x-forwarded-client-cert contains "app/admin" }
  # CONNECT passes policy here, so what stops a tunnel is the sidecar itself
  allow "connect" { request.method == "CONNECT" }
}
'''
# how long a wait for what must happen may take: far beyond what it takes, so that a slow, busy
# machine only delays a test (a wait ends as soon as its condition holds)
PATIENCE = 60.0
MB = 1 << 20
RSS_BOUND = 20 * MB

# frame types and error codes (RFC 9113 §6, §7)
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT, STREAM_CLOSED, FRAME_SIZE_ERROR, \
    REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, CONNECT_ERROR, ENHANCE_YOUR_CALM = range(12)


def raw(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return struct.pack(">HBBBL", n >> 8, n & 0xFF, ftype, flags, sid) + payload


def u32(value: int) -> bytes:
    return struct.pack(">L", value)


def block(fields: list[tuple[bytes, bytes]]) -> bytes:
    """A header block from a fresh python-hyper encoder (no dynamic table: each block stands alone)."""
    encoder = hpack.Encoder()
    encoder.header_table_size = 0
    return encoder.encode(fields)


def req(path: str = "/ok/x", method: str = "GET", drop=(), add=(), authority: str = "config") -> list[tuple[bytes, bytes]]:
    fields = [(b":method", method.encode()), (b":scheme", b"https"), (b":authority", authority.encode()),
              (b":path", path.encode())]
    return [f for f in fields if f[0] not in drop] + list(add)


def grpc_req(method: str = "FetchResource", add=()) -> list[tuple[bytes, bytes]]:
    return req(f"{SERVICE}/{method}", "POST", add=[(b"content-type", b"application/grpc"), (b"te", b"trailers"), *add])


def message(appname: str, resource_id: str = "r", flag: int = 0, payload: bytes | None = None) -> bytes:
    body = pb.FetchResourceRequest(appname=appname, resource_id=resource_id).SerializeToString() if payload is None else payload
    return bytes([flag]) + struct.pack(">L", len(body)) + body


def headers(sid: int, fields, end_stream: bool = True) -> bytes:
    return raw(HEADERS, 0x4 | (0x1 if end_stream else 0), sid, block(fields))


# ---- the recording app ------------------------------------------------------------------------


@dataclass
class Seen:
    """One stream as the app received it."""

    path: str
    headers: list[tuple[bytes, bytes]]
    data: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset: bool = False
    sent: int = 0  # response DATA bytes the app wrote
    blocked: bool = False  # the response waits on the sidecar's flow-control window


class RecordingApp:
    """An h2c server (python-hyper h2) in its own thread that records every stream and answers it.

    ``/ok/big?n=N`` answers N bytes, as fast as flow control lets it; gRPC calls get one empty
    message and ``grpc-status: 0``; anything else ``200 ok``.
    """

    def __init__(self) -> None:
        self.streams: list[Seen] = []
        self.errors: list[str] = []
        self.blocked = threading.Event()  # a response waited on the sidecar's flow-control window
        self.lock = threading.Lock()
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.AbstractServer | None = None

    def start(self) -> RecordingApp:
        ready = threading.Event()
        self._ready = ready
        self._thread.start()
        assert ready.wait(10), "the recording app did not start"
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._server = self.loop.run_until_complete(
            self.loop.create_server(lambda: _AppConnection(self), "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()

    def stop(self) -> None:
        def close() -> None:
            assert self._server is not None
            self._server.close()
            self.loop.stop()

        self.loop.call_soon_threadsafe(close)
        self._thread.join(10)

    def mark(self) -> int:
        with self.lock:
            return len(self.streams)

    def since(self, mark: int) -> list[Seen]:
        with self.lock:
            return list(self.streams[mark:])


class _AppConnection(asyncio.Protocol):
    def __init__(self, app: RecordingApp) -> None:
        self.app = app
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None, validate_inbound_headers=True))
        self.seen: dict[int, Seen] = {}
        self.pending: dict[int, int] = {}  # stream -> response bytes still to send
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.conn.initiate_connection()
        transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as err:  # the sidecar sent the app something invalid
            self.app.errors.append(repr(err))
            self.transport.write(self.conn.data_to_send())
            self.transport.close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                fields = [(bytes(n), bytes(v)) for n, v in event.headers]
                seen = Seen(dict(fields).get(b":path", b"").decode("latin-1"), fields)
                self.seen[event.stream_id] = seen
                with self.app.lock:
                    self.app.streams.append(seen)
            elif isinstance(event, h2.events.DataReceived):
                self.seen[event.stream_id].data += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self.seen[event.stream_id].ended = True
                try:
                    self._respond(event.stream_id)
                except h2.exceptions.ProtocolError:  # reset (and forgotten) in the same read
                    self.seen[event.stream_id].reset = True
            elif isinstance(event, h2.events.StreamReset):
                if event.stream_id in self.seen:
                    self.seen[event.stream_id].reset = True
                self.pending.pop(event.stream_id, None)
            elif isinstance(event, h2.events.WindowUpdated):
                for seen in self.seen.values():
                    seen.blocked = False
                self._push()
        self.transport.write(self.conn.data_to_send())

    def _respond(self, sid: int) -> None:
        seen = self.seen[sid]
        fields = dict(seen.headers)
        if fields.get(b"content-type", b"").startswith(b"application/grpc"):
            self.conn.send_headers(sid, [(b":status", b"200"), (b"content-type", b"application/grpc")])
            self.conn.send_data(sid, b"\0\0\0\0\0")
            status = fields.get(b"x-reply-grpc-status", b"0")  # what a (misbehaving) server may answer
            self.conn.send_headers(sid, [(b"grpc-status", status)], end_stream=True)
        elif seen.path.startswith("/ok/big"):
            self.conn.send_headers(sid, [(b":status", b"200")])
            self.pending[sid] = int(seen.path.split("n=")[1])
            self._push()
        else:
            self.conn.send_headers(sid, [(b":status", b"200"), (b"content-length", b"2")])
            self.conn.send_data(sid, b"ok", end_stream=True)

    def _push(self) -> None:
        for sid in list(self.pending):
            left = self.pending[sid]
            while left:
                try:
                    window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size, left)
                    if window <= 0:
                        self.seen[sid].blocked = True
                        self.app.blocked.set()
                        break
                    self.conn.send_data(sid, b"x" * window, end_stream=window == left)
                except h2.exceptions.StreamClosedError:
                    # reset by the sidecar in the read being handled: h2 read the whole read before
                    # giving its events, so a WINDOW_UPDATE handled first may find the stream closed
                    self.seen[sid].reset = True
                    left = 0
                    break
                self.seen[sid].sent += window
                left -= window
            if left:
                self.pending[sid] = left
            else:
                del self.pending[sid]

    def connection_lost(self, exc) -> None:
        for seen in self.seen.values():
            if not seen.ended:
                seen.reset = True


# ---- the sidecar process ----------------------------------------------------------------------


class Sidecar:
    def __init__(self, tmp: Path, pki: Pki, app_port: int, max_message: int = 4096, policy: str = POLICY,
                 limits: dict[str, Any] | None = None) -> None:
        (tmp / "policy.policy").write_text(policy)
        inbound = free_port()
        config = sidecar_config(
            identity=pki.write(tmp, "server", "/app/config"),
            inbound={"port": inbound, "app_port": app_port},
            outbound={"port": 0, "upstreams": [{"listen": 0, "address": f"127.0.0.1:{inbound}", "spiffe_id": SERVER}]},
            policy={"file": str(tmp / "policy.policy")},
            grpc={"descriptors": [str(DESCRIPTORS)], "max_message": max_message},
            access_log=str(tmp / "access.log"),
            limits={"header_timeout": 5, "drain_grace": 2, **(limits or {})},
        )
        path = tmp / "sidecar.yaml"
        path.write_text(yaml.safe_dump(config))
        self.stderr_path = tmp / "sidecar.stderr"
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "trustmesh", "sidecar", "run", "--config", str(path)],
            stdout=subprocess.PIPE, stderr=open(self.stderr_path, "wb"), cwd=str(ROOT),
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            self.proc.kill()
            raise AssertionError(f"the sidecar did not start: {self.stderr()}")
        self.ports = json.loads(line)["ports"]
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()

    def stderr(self) -> str:
        return self.stderr_path.read_text()[-3000:]

    def rss(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def stop(self) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


# ---- the peers ----------------------------------------------------------------------------------


class Peer:
    """A raw HTTP/2 client: sends whatever bytes it is given, reads frames with hyperframe and
    header blocks with python-hyper's hpack. It acknowledges the server's SETTINGS (unless told
    not to) and otherwise only does what the test says."""

    def __init__(self, sock: socket.socket, ack_settings: bool = True) -> None:
        self.sock = sock
        self.ack_settings = ack_settings
        self.buffer = b""
        self.decoder = hpack.Decoder()
        self.decoder.max_header_list_size = 1 << 20
        self.frames: list[Frame] = []
        self.heads: dict[int, list[list[tuple[bytes, bytes]]]] = {}  # stream -> header blocks
        self.body: dict[int, bytes] = {}
        self._block = b""
        self.closed = False

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.closed = True

    def start(self, settings: bytes = b"") -> Peer:
        self.send(PREFACE + raw(SETTINGS, 0, 0, settings))
        return self

    def until(self, done: Callable[[Peer], bool], timeout: float = PATIENCE) -> bool:
        """Read until ``done(self)``, the peer closes, or ``timeout``; whether ``done`` held."""
        deadline = time.monotonic() + timeout
        while not done(self):
            left = deadline - time.monotonic()
            if self.closed or left <= 0:
                return done(self)
            self.sock.settimeout(min(left, 1.0))
            try:
                data = self.sock.recv(1 << 16)
            except (socket.timeout, TimeoutError):
                continue
            except (ConnectionResetError, ssl.SSLError, OSError):
                data = b""
            if not data:
                self.closed = True
                continue
            self._feed(data)
        return True

    def _feed(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self.buffer[:9]))
            if len(self.buffer) < 9 + length:
                return
            frame.parse_body(memoryview(self.buffer[9 : 9 + length]))
            self.buffer = self.buffer[9 + length :]
            self.frames.append(frame)
            if frame.type == SETTINGS and "ACK" not in frame.flags and self.ack_settings:
                self.send(raw(SETTINGS, 0x1, 0))
            if frame.type in (HEADERS, CONTINUATION):
                self._block += frame.data
                if "END_HEADERS" in frame.flags:
                    fields = [(bytes(n), bytes(v)) for n, v in self.decoder.decode(self._block, raw=True)]
                    self.heads.setdefault(frame.stream_id, []).append(fields)
                    self._block = b""
            if frame.type == DATA:
                self.body[frame.stream_id] = self.body.get(frame.stream_id, b"") + frame.data

    # what came back

    def goaway(self) -> int | None:
        codes = [f.error_code for f in self.frames if f.type == GOAWAY]
        return codes[-1] if codes else None

    def reset(self, sid: int) -> int | None:
        codes = [f.error_code for f in self.frames if f.type == RST_STREAM and f.stream_id == sid]
        return codes[0] if codes else None

    def status(self, sid: int) -> int | None:
        blocks = self.heads.get(sid)
        return int(dict(blocks[0])[b":status"]) if blocks else None

    def grpc_status(self, sid: int) -> tuple[str, str] | None:
        for fields in self.heads.get(sid, ()):
            found = dict(fields)
            if b"grpc-status" in found:
                return found[b"grpc-status"].decode(), found.get(b"grpc-message", b"").decode()
        return None

    def ended(self, sid: int) -> bool:
        return any(f.stream_id == sid and "END_STREAM" in f.flags for f in self.frames if f.type in (HEADERS, DATA))

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class Bystander:
    """A well-behaved client on python-hyper's h2 state machine: one connection, many requests."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())

    def get(self, path: str, extra=(), timeout: float = 10.0) -> tuple[int, bytes]:
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, req(path) + list(extra), end_stream=True)
        self.sock.sendall(self.conn.data_to_send())
        return self.answer(sid, path, timeout)

    def answer(self, sid: int, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
        """(status, body) of the response on stream ``sid``, read within ``timeout`` seconds."""
        status, body = 0, b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, min(1.0, deadline - time.monotonic())))
            try:
                data = self.sock.recv(1 << 16)
            except (socket.timeout, TimeoutError):
                continue
            if not data:
                raise AssertionError(f"the bystander's connection was closed while asking for {path}")
            for event in self.conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id == sid:
                    status = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived) and event.stream_id == sid:
                    body += event.data
                    self.conn.acknowledge_received_data(event.flow_controlled_length, sid)
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == sid:
                    self.sock.sendall(self.conn.data_to_send())
                    return status, body
                elif isinstance(event, h2.events.ConnectionTerminated):
                    raise AssertionError(f"the bystander got GOAWAY {event.error_code}")
            self.sock.sendall(self.conn.data_to_send())
        raise AssertionError(f"no answer to the bystander's {path} within {timeout}s")

    def close(self) -> None:
        self.sock.close()


def connect_mtls(files: dict[str, str], port: int, alpn: str = "h2") -> ssl.SSLSocket:
    """A mutual-TLS connection to the sidecar as spiffe://example.org/app/billing, ALPN ``alpn``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # an SVID names a SPIFFE ID, not a host; the chain is still verified
    ctx.load_verify_locations(files["bundle_file"])
    ctx.load_cert_chain(files["cert_file"], files["key_file"])
    ctx.set_alpn_protocols([alpn])
    tls = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10))
    assert tls.selected_alpn_protocol() == alpn
    return tls


class Rig:
    def __init__(self, tmp: Path) -> None:
        self.pki = Pki()
        self.app = RecordingApp().start()
        self.sidecar = Sidecar(tmp, self.pki, self.app.port)
        self.files = self.pki.write(tmp, "client", "/app/billing")
        self.bystander = Bystander(self.tls())
        self.outbound_bystander = Bystander(self.plain())

    def tls(self, alpn: str = "h2") -> ssl.SSLSocket:
        return connect_mtls(self.files, self.sidecar.ports["inbound"], alpn)

    def plain(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.sidecar.ports["upstream-0"]), timeout=10)

    def peer(self, outbound: bool = False, **kw: Any) -> Peer:
        return Peer(self.plain() if outbound else self.tls(), **kw)

    def others_carry_on(self, tag: str) -> None:
        """The bystanders (connections opened before the attack) and a new connection get answers."""
        tag = re.sub(r"[^a-z0-9]+", "-", tag.lower()).strip("-")
        mark = self.app.mark()
        assert self.bystander.get(f"/ok/after-{tag}") == (200, b"ok"), (self.app.errors, self.sidecar.stderr())
        assert self.outbound_bystander.get(f"/ok/after-out-{tag}") == (200, b"ok")
        fresh = Bystander(self.tls())
        try:
            assert fresh.get(f"/ok/fresh-{tag}") == (200, b"ok")
        finally:
            fresh.close()
        mine = [s.path for s in self.app.since(mark) if s.path.startswith(("/ok/after-", "/ok/fresh-"))]
        assert mine == [f"/ok/after-{tag}", f"/ok/after-out-{tag}", f"/ok/fresh-{tag}"]

    def close(self) -> int:
        self.bystander.close()
        self.outbound_bystander.close()
        rc = self.sidecar.stop()
        self.app.stop()
        return rc


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    rig = Rig(tmp_path_factory.mktemp("h2attacks"))
    yield rig
    assert rig.close() == 0, rig.sidecar.stderr()
    assert rig.app.errors == [], "the sidecar sent the app something the h2 library refused"
    log = rig.sidecar.stderr_path.read_text()
    assert "Traceback" not in log, "an attack made an exception escape in the sidecar: " + log[log.index("Traceback") - 500 :][:3000]


def attack(rig: Rig, tag: str, send: Callable[[Peer], None], done: Callable[[Peer], bool], outbound: bool = False,
           timeout: float = PATIENCE, closes: bool = False, **kw: Any) -> tuple[Peer, list[Seen]]:
    """Run one attack on a new connection; (the attacker's view, what the app saw meanwhile).
    ``closes``: the sidecar must then close the connection (``peer.closed``)."""
    mark = rig.app.mark()
    peer = rig.peer(outbound, **kw).start()
    try:
        send(peer)
        peer.until(done, timeout)
        if closes:
            peer.until(lambda p: p.closed)
    finally:
        peer.close()
    rig.others_carry_on(tag)  # its requests reach the app after anything the attack got forwarded
    seen = [s for s in rig.app.since(mark) if not s.path.startswith(("/ok/after-", "/ok/fresh-"))]
    return peer, seen


def goaway_with(code: int) -> Callable[[Peer], bool]:
    return lambda p: p.goaway() == code


# ---- floods ------------------------------------------------------------------------------------

EMPTY_HEADERS = raw(HEADERS, 0, 1, b"") + raw(CONTINUATION, 0, 1, b"") * 150
CONTINUATION_FLOOD = raw(HEADERS, 0, 1, block(req("/ok/cont"))[:3]) + b"".join(
    raw(CONTINUATION, 0, 1, b"\x40\x01a\x01b") for _ in range(2000))  # never END_HEADERS
# a 4000-byte value into the dynamic table, then 10000 one-byte references to it: ~40 MB decoded
HPACK_BOMB = b"\x40\x01x" + bytes([0x7F, (4000 - 127) & 0x7F | 0x80, (4000 - 127) >> 7]) + b"v" * 4000 + b"\xbe" * 10000

FLOODS = [
    # (name, bytes after the preface, expected GOAWAY code)
    ("rapid reset (CVE-2023-44487)",
     b"".join(headers(2 * i + 1, req("/ok/rapid"), end_stream=False) + raw(RST_STREAM, 0, 2 * i + 1, u32(CANCEL))
              for i in range(400)), ENHANCE_YOUR_CALM),
    ("CONTINUATION flood (CVE-2024-27316)", CONTINUATION_FLOOD, ENHANCE_YOUR_CALM),
    ("SETTINGS flood (CVE-2019-9515)", raw(SETTINGS, 0, 0, struct.pack(">HL", 3, 100)) * 300, ENHANCE_YOUR_CALM),
    ("PING flood (CVE-2019-9512)", raw(PING, 0, 0, bytes(8)) * 300, ENHANCE_YOUR_CALM),
    ("empty DATA flood (CVE-2019-9518)",
     headers(1, grpc_req(), end_stream=False) + raw(DATA, 0, 1) * 300, ENHANCE_YOUR_CALM),
    ("empty HEADERS/CONTINUATION flood (CVE-2019-9518)", EMPTY_HEADERS, ENHANCE_YOUR_CALM),
    ("WINDOW_UPDATE flood", raw(WINDOW_UPDATE, 0, 0, u32(1)) * 3000, ENHANCE_YOUR_CALM),
    ("PRIORITY flood (CVE-2019-9513)",
     b"".join(raw(PRIORITY, 0, 2 * i + 1, u32(0) + b"\x10") for i in range(600)), ENHANCE_YOUR_CALM),
    ("reset flood from invalid requests (CVE-2019-9514)",
     b"".join(headers(2 * i + 1, req("/ok/x", "get")) for i in range(600)), ENHANCE_YOUR_CALM),
    ("HPACK bomb", raw(HEADERS, 0x5, 1, HPACK_BOMB), ENHANCE_YOUR_CALM),
]


@pytest.mark.parametrize("outbound", [False, True], ids=["inbound-mtls", "outbound-h2c"])
@pytest.mark.parametrize("name,data,code", FLOODS, ids=[f[0] for f in FLOODS])
def test_floods_cost_the_attacker_its_connection_and_nothing_more(rig, name, data, code, outbound):
    before = rig.sidecar.rss()
    for _ in range(3):  # three rounds: memory that leaks per flood shows as growth
        peer, seen = attack(rig, name, lambda p: p.send(data), goaway_with(code), outbound, closes=True)
        assert peer.goaway() == code, (peer.frames[-5:], rig.sidecar.stderr())
        assert peer.closed, "the sidecar kept the flooding connection open"
        if outbound:  # the attack came from the app: what went on to the remote sidecar (and so the app) ...
            assert not [s for s in seen if s.ended and not s.path.startswith("/ok/after")]
        else:
            assert [s for s in seen if s.ended] == [], "a request of the flood reached the app complete"
            assert len(seen) <= 201, f"{len(seen)} streams of the flood were opened at the app"
    assert rig.sidecar.rss() - before < RSS_BOUND


def test_many_streams_over_max_concurrent_streams_are_refused(rig):
    before = rig.sidecar.rss()
    # gRPC heads wait at the sidecar for their first message: 100 open streams, then 20 more
    data = b"".join(headers(2 * i + 1, grpc_req(), end_stream=False) for i in range(120))
    peer, seen = attack(rig, "streams", lambda p: p.send(data), lambda p: p.reset(239) is not None)
    assert [peer.reset(2 * i + 1) for i in range(100, 120)] == [REFUSED_STREAM] * 20
    assert [peer.reset(2 * i + 1) for i in range(100)] == [None] * 100
    assert seen == []
    assert rig.sidecar.rss() - before < RSS_BOUND


def test_zero_window_stall_holds_at_most_the_windows(rig):
    """The peer never opens its window while large responses are pending: the app is slowed by
    flow control (it blocks on its window), the sidecar buffers no more than its windows, and
    the others go on."""
    before = rig.sidecar.rss()
    rig.app.blocked.clear()
    n = 8 * MB
    data = b"".join(headers(2 * i + 1, req(f"/ok/big?n={n}")) for i in range(20))
    peer = rig.peer().start(struct.pack(">HL", 4, 0))  # SETTINGS_INITIAL_WINDOW_SIZE = 0
    try:
        peer.send(data)
        assert peer.until(lambda p: all(p.status(2 * i + 1) for i in range(20)))
        assert rig.app.blocked.wait(10), "the app was never slowed by flow control"
        assert not [f for f in peer.frames if f.type == DATA], "DATA sent into a zero window"
        rig.others_carry_on("zero-window")
        assert rig.sidecar.rss() - before < RSS_BOUND  # 20 x 8 MB pending at the app, not in the sidecar
    finally:
        peer.close()


# ---- malformed frames ----------------------------------------------------------------------------

BAD_FRAMES = [
    # (name, bytes after the preface, expected GOAWAY code)
    ("DATA on stream 0", raw(DATA, 0, 0, b"x"), PROTOCOL_ERROR),
    ("HEADERS on stream 0", raw(HEADERS, 0x5, 0, block(req())), PROTOCOL_ERROR),
    ("RST_STREAM on stream 0", raw(RST_STREAM, 0, 0, u32(CANCEL)), PROTOCOL_ERROR),
    ("PRIORITY on stream 0", raw(PRIORITY, 0, 0, bytes(5)), PROTOCOL_ERROR),
    ("CONTINUATION on stream 0", raw(CONTINUATION, 0x4, 0, block(req())), PROTOCOL_ERROR),
    ("SETTINGS on a stream", raw(SETTINGS, 0, 1), PROTOCOL_ERROR),
    ("PING on a stream", raw(PING, 0, 1, bytes(8)), PROTOCOL_ERROR),
    ("GOAWAY on a stream", raw(GOAWAY, 0, 1, bytes(8)), PROTOCOL_ERROR),
    ("even client stream id", headers(2, req("/ok/even")), PROTOCOL_ERROR),
    ("decreasing stream ids", headers(5, req("/ok/five")) + headers(3, req("/ok/three")), STREAM_CLOSED),
    ("frame above SETTINGS_MAX_FRAME_SIZE", headers(1, grpc_req(), end_stream=False) + raw(DATA, 0, 1, b"x" * 16385),
     FRAME_SIZE_ERROR),
    ("DATA padding longer than the frame", headers(1, grpc_req(), end_stream=False) + raw(DATA, 0x8, 1, b"\x09abc"),
     PROTOCOL_ERROR),
    ("HEADERS padding longer than the frame", raw(HEADERS, 0xD, 1, b"\xff" + block(req("/ok/pad"))), PROTOCOL_ERROR),
    ("DATA on an idle stream", raw(DATA, 0, 7, b"x"), PROTOCOL_ERROR),
    ("PUSH_PROMISE from a client", raw(PUSH_PROMISE, 0x4, 1, u32(2) + block(req())), PROTOCOL_ERROR),
    ("WINDOW_UPDATE overflowing the connection window", raw(WINDOW_UPDATE, 0, 0, u32(0x7FFFFFFF)), FLOW_CONTROL_ERROR),
    ("HPACK index out of range", raw(HEADERS, 0x5, 1, b"\xbe"), COMPRESSION_ERROR),
]


@pytest.mark.parametrize("outbound", [False, True], ids=["inbound-mtls", "outbound-h2c"])
@pytest.mark.parametrize("name,data,code", BAD_FRAMES, ids=[f[0] for f in BAD_FRAMES])
def test_malformed_frames_end_the_connection(rig, name, data, code, outbound):
    peer, seen = attack(rig, name, lambda p: p.send(data), goaway_with(code), outbound, closes=True)
    assert peer.goaway() == code, peer.frames
    assert peer.closed, "the connection stayed open after GOAWAY"
    if name == "decreasing stream ids":  # stream 5 was a valid request and is answered
        assert [s.path for s in seen if not s.path.startswith("/ok/after")] in ([], ["/ok/five"])
    else:
        assert [s.path for s in seen] == [], "the app saw a stream of the malformed connection"


def test_bad_preface_over_mtls_h2(rig):
    mark = rig.app.mark()
    bad = Peer(rig.tls())
    try:
        bad.send(b"GET /ok/h1 HTTP/1.1\r\nHost: config\r\n\r\n")
        assert bad.until(lambda p: p.closed), "a bad preface left the connection open"
    finally:
        bad.close()
    assert bad.goaway() == PROTOCOL_ERROR
    rig.others_carry_on("preface")
    assert "/ok/h1" not in [s.path for s in rig.app.since(mark)]


def test_bad_preface_in_plaintext_is_not_http2(rig):
    """On the plaintext port a preface that differs in its last bytes is not HTTP/2: it is read
    as HTTP/1.1, refused, and the connection closed."""
    bad = Peer(rig.plain())
    try:
        bad.send(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + raw(SETTINGS, 0, 0))
        bad.until(lambda p: p.closed)
        assert bad.closed
        answer = bad.buffer
    finally:
        bad.close()
    assert answer.startswith(b"HTTP/1.1 4"), answer[:80]
    rig.others_carry_on("plain-preface")


STREAM_ERRORS = [
    # (name, bytes, the stream reset, expected RST_STREAM code, path the app must not see complete)
    ("DATA after END_STREAM", headers(1, req("/ok/a")) + raw(DATA, 0, 1, b"x"), 1, STREAM_CLOSED),
    ("HEADERS after END_STREAM", headers(1, grpc_req(), end_stream=True) + headers(1, [(b"x-t", b"1")]), 1,
     STREAM_CLOSED),
    ("content-length above the DATA", headers(1, req("/ok/cl", "POST", add=[(b"content-length", b"10")]),
                                              end_stream=False) + raw(DATA, 0x1, 1, b"abc"), 1, PROTOCOL_ERROR),
    ("content-length below the DATA", headers(1, req("/ok/cl", "POST", add=[(b"content-length", b"2")]),
                                              end_stream=False) + raw(DATA, 0x1, 1, b"abcdef"), 1, PROTOCOL_ERROR),
    ("content-length with END_STREAM on HEADERS", headers(1, req("/ok/cl", "POST", add=[(b"content-length", b"3")])),
     1, PROTOCOL_ERROR),
]


@pytest.mark.parametrize("outbound", [False, True], ids=["inbound-mtls", "outbound-h2c"])
@pytest.mark.parametrize("name,data,sid,code", STREAM_ERRORS, ids=[f[0] for f in STREAM_ERRORS])
def test_stream_errors_reset_the_stream_only(rig, name, data, sid, code, outbound):
    peer, seen = attack(rig, name, lambda p: p.send(data), lambda p: p.reset(sid) is not None, outbound)
    assert peer.reset(sid) == code, peer.frames
    assert peer.goaway() is None
    mine = [s for s in seen if not s.path.startswith("/ok/after") and not s.path.startswith("/ok/fresh")]
    if "content-length" in name:
        assert [s for s in mine if s.ended] == [], "a request whose length lied reached the app complete"


def test_data_on_a_stream_the_sidecar_closed(rig):
    """A denied request is answered and closed both ways; DATA sent on it afterwards is a stream
    or connection error of type STREAM_CLOSED (RFC 9113 §5.1), never forwarded."""

    def send(peer: Peer) -> None:
        peer.send(headers(1, req("/attack/denied")))
        assert peer.until(lambda p: p.ended(1))
        peer.send(raw(DATA, 0, 1, b"late"))

    peer, seen = attack(rig, "closed", send, lambda p: p.reset(1) is not None or p.goaway() is not None)
    assert peer.status(1) == 403
    assert STREAM_CLOSED in (peer.reset(1), peer.goaway())
    assert seen == []


# ---- pseudo-header and field violations ---------------------------------------------------------------

MALFORMED = [
    ("missing :method", req("/ok/m", drop={b":method"})),
    ("missing :path", req("/ok/m", drop={b":path"})),
    ("missing :scheme", req("/ok/m", drop={b":scheme"})),
    ("duplicate :path", [(b":path", b"/ok/m")] + req("/ok/m")),
    ("duplicate :method", [(b":method", b"GET")] + req("/ok/m")),
    ("pseudo-header after a regular field", req("/ok/m", drop={b":scheme"}, add=[(b"x-a", b"1"), (b":scheme", b"https")])),
    ("upper-case field name", req("/ok/m", add=[(b"X-Caller", b"a")])),
    ("upper-case identity header", req("/ok/m", add=[(b"X-Trustmesh-Source", b"admin")])),
    ("upper-case XFCC", req("/ok/m", add=[(b"X-Forwarded-Client-Cert", b"By=x;URI=spiffe://example.org/app/admin")])),
    ("connection", req("/ok/m", add=[(b"connection", b"close")])),
    ("keep-alive", req("/ok/m", add=[(b"keep-alive", b"5")])),
    ("proxy-connection", req("/ok/m", add=[(b"proxy-connection", b"keep-alive")])),
    ("transfer-encoding", req("/ok/m", add=[(b"transfer-encoding", b"chunked")])),
    ("upgrade", req("/ok/m", add=[(b"upgrade", b"h2c")])),
    ("te other than trailers", req("/ok/m", add=[(b"te", b"gzip")])),
    (":authority disagreeing with host", req("/ok/m", add=[(b"host", b"evil.example")])),
    ("CR in a value", req("/ok/m", add=[(b"x-a", b"a\rb")])),
    ("LF in a value", req("/ok/m", add=[(b"x-a", b"a\nx-trustmesh-source: admin")])),
    ("NUL in a value", req("/ok/m", add=[(b"x-a", b"a\0b")])),
    ("CR in a name", req("/ok/m", add=[(b"x-a\r", b"1")])),
    ("LF in a name", req("/ok/m", add=[(b"x-a\nx", b"1")])),
    ("NUL in a name", req("/ok/m", add=[(b"x-\0a", b"1")])),
    ("CRLF in :path", req("/ok/m\r\nx-trustmesh-source: admin")),
    ("space in :path", req("/ok/m x")),
]


@pytest.mark.parametrize("outbound", [False, True], ids=["inbound-mtls", "outbound-h2c"])
@pytest.mark.parametrize("name,fields", MALFORMED, ids=[f[0] for f in MALFORMED])
def test_malformed_requests_are_refused_with_a_stream_error(rig, name, fields, outbound):
    data = headers(1, fields) + headers(3, req("/ok/same-connection"))
    peer, seen = attack(rig, name, lambda p: p.send(data), lambda p: p.reset(1) is not None and p.ended(3), outbound)
    assert peer.reset(1) == PROTOCOL_ERROR, peer.frames
    assert peer.goaway() is None
    assert peer.status(3) == 200  # the same connection goes on
    assert [s.path for s in seen][:1] == ["/ok/same-connection"], "the malformed request reached the app"


# ---- identity --------------------------------------------------------------------------------------

FORGED = [(b"x-trustmesh-source", b"admin"), (b"x-trustmesh-jwt-sub", b"spiffe://example.org/app/admin"),
          (b"x-forwarded-client-cert", b"By=spiffe://example.org/app/config;URI=spiffe://example.org/app/admin")]


@pytest.mark.parametrize("outbound", [False, True], ids=["inbound-mtls", "outbound-h2c"])
def test_forged_identity_headers_are_stripped_and_the_app_sees_the_sidecars_xfcc(rig, outbound):
    caller = SERVER if outbound else CLIENT  # outbound: the sidecar itself is the caller of its inbound
    data = headers(1, req("/ok/forged", add=FORGED))
    peer, seen = attack(rig, "forged", lambda p: p.send(data), lambda p: p.ended(1), outbound)
    assert peer.status(1) == 200
    [forwarded] = [s for s in seen if s.path == "/ok/forged"]
    names = [n for n, _ in forwarded.headers]
    assert b"x-trustmesh-source" not in names and b"x-trustmesh-jwt-sub" not in names
    assert [v for n, v in forwarded.headers if n == b"x-forwarded-client-cert"] == [f"By={SERVER};URI={caller}".encode()]


@pytest.mark.parametrize("outbound", [False, True], ids=["inbound-mtls", "outbound-h2c"])
def test_policy_cannot_see_forged_identity_headers(rig, outbound):
    """Rules allowing on x-trustmesh-source / XFCC values would open /secret if the caller's copies
    reached the policy; they do not, so the request is denied and never forwarded."""
    data = headers(1, req("/secret", add=FORGED))
    peer, seen = attack(rig, "forged-policy", lambda p: p.send(data), lambda p: p.ended(1) or p.reset(1), outbound)
    assert peer.status(1) == 403
    assert "/secret" not in [s.path for s in seen]


def test_identity_header_spelled_with_underscores_is_refused(rig):
    data = headers(1, req("/ok/underscore", add=[(b"x_trustmesh_source", b"admin")]))
    peer, seen = attack(rig, "underscore", lambda p: p.send(data), lambda p: p.ended(1) or p.reset(1))
    assert peer.status(1) == 400
    assert "/ok/underscore" not in [s.path for s in seen]


# ---- gRPC -------------------------------------------------------------------------------------------


def grpc_call(sid: int, messages: list[bytes], add=(), method: str = "FetchResource", split: int = 0) -> bytes:
    body = b"".join(messages)
    out = headers(sid, grpc_req(method, add=add), end_stream=False)
    if split:
        chunks = [body[i : i + split] for i in range(0, len(body), split)]
        out += b"".join(raw(DATA, 0, sid, c) for c in chunks[:-1]) + raw(DATA, 0x1, sid, chunks[-1])
    else:
        out += raw(DATA, 0x1, sid, body)
    return out


def grpc_seen(seen: list[Seen], method: str = "FetchResource") -> list[Seen]:
    return [s for s in seen if s.path == f"{SERVICE}/{method}"]


def test_grpc_denied_call_gets_trailers_only_permission_denied(rig):
    data = grpc_call(1, [message("payments")]) + grpc_call(3, [message("billing")])
    peer, seen = attack(rig, "grpc-deny", lambda p: p.send(data), lambda p: p.ended(1) and p.ended(3))
    assert peer.grpc_status(1) == ("7", "permission denied")
    [answer] = peer.heads[1]  # trailers-only: one header block with END_STREAM, no DATA
    assert dict(answer)[b":status"] == b"200" and 1 not in peer.body
    assert peer.grpc_status(3) == ("0", "")  # the other call on the connection goes on
    calls = grpc_seen(seen)
    assert [bytes(s.data) for s in calls] == [message("billing")], "the denied message reached the app"


def test_grpc_stream_ends_at_the_first_message_that_fails_policy(rig):
    own, other, third = message("billing", "1"), message("payments", "2"), message("billing", "3")
    data = headers(1, grpc_req("WatchResources"), end_stream=False) + raw(DATA, 0, 1, own)
    peer = rig.peer().start()
    mark = rig.app.mark()
    try:
        peer.send(data)
        deadline = time.monotonic() + PATIENCE
        while not grpc_seen(rig.app.since(mark), "WatchResources") or not grpc_seen(rig.app.since(mark), "WatchResources")[0].data:
            assert time.monotonic() < deadline, "the first, allowed message never reached the app"
            time.sleep(0.01)
        peer.send(raw(DATA, 0, 1, other + third))
        assert peer.until(lambda p: p.ended(1) or p.reset(1) is not None)
        assert peer.grpc_status(1) == ("7", "permission denied")
        [call] = grpc_seen(rig.app.since(mark), "WatchResources")
        deadline = time.monotonic() + PATIENCE
        while not call.reset and time.monotonic() < deadline:  # the app's stream is reset
            time.sleep(0.01)
        assert call.reset and not call.ended
        assert bytes(call.data) == own, "a message after the denied one (or the denied one) reached the app"
    finally:
        peer.close()
    rig.others_carry_on("grpc-stream")


GRPC_REFUSALS = [
    ("compressed with an unknown grpc-encoding",
     grpc_call(1, [message("billing", flag=1)], add=[(b"grpc-encoding", b"snappy")]), "12"),
    ("compressed flag without grpc-encoding", grpc_call(1, [message("billing", flag=1)]), "13"),
    ("gzip bomb beyond the limit",
     grpc_call(1, [message("", flag=1, payload=gzip.compress(b"\0" * 100_000))], add=[(b"grpc-encoding", b"gzip")]),
     "8"),
    ("length prefix above the limit", grpc_call(1, [b"\0" + struct.pack(">L", 0xFFFFFFF0) + b"x" * 100]), "8"),
    ("call ending inside a message", grpc_call(1, [message("billing")[:-2]]), "13"),
    ("not protobuf", grpc_call(1, [message("", payload=b"\xff\xff\xff")]), None),
]


@pytest.mark.parametrize("name,data,code", GRPC_REFUSALS, ids=[g[0] for g in GRPC_REFUSALS])
def test_grpc_messages_the_sidecar_cannot_inspect_are_refused(rig, name, data, code):
    peer, seen = attack(rig, name, lambda p: p.send(data), lambda p: p.ended(1) or p.reset(1) is not None)
    status = peer.grpc_status(1)
    assert status is not None and status[0] != "0", peer.frames
    if code is not None:
        assert status[0] == code, status
    assert grpc_seen(seen) == [], "a message the sidecar could not inspect reached the app"


def test_grpc_message_split_across_many_data_frames(rig):
    body = message("billing", "r" * 200)
    data = grpc_call(1, [body], split=3)  # 3 bytes per DATA frame, about 70 frames
    peer, seen = attack(rig, "split", lambda p: p.send(data), lambda p: p.ended(1))
    assert peer.grpc_status(1) == ("0", "")
    [call] = grpc_seen(seen)
    assert bytes(call.data) == body and call.ended
    other = grpc_call(1, [message("payments", "r" * 200)], split=3)
    peer, seen = attack(rig, "split-deny", lambda p: p.send(other), lambda p: p.ended(1))
    assert peer.grpc_status(1) == ("7", "permission denied")
    assert grpc_seen(seen) == []


def test_duplicate_message_field_is_read_as_the_app_reads_it(rig):
    """Protobuf keeps the LAST value of a repeated scalar field; the policy must see what the
    app will (a decoder that took the first would let ``billing`` vouch for ``payments``)."""
    payload = pb.FetchResourceRequest(appname="billing").SerializeToString() + \
        pb.FetchResourceRequest(appname="payments").SerializeToString()
    data = grpc_call(1, [message("", payload=payload)])
    peer, seen = attack(rig, "dup-field", lambda p: p.send(data), lambda p: p.ended(1) or p.reset(1) is not None)
    assert peer.grpc_status(1) == ("7", "permission denied")
    assert grpc_seen(seen) == []


@pytest.mark.parametrize("appname,allowed", [("billing", True), ("payments", False)])
def test_gzip_message_is_decided_on_its_decompressed_fields(rig, appname, allowed):
    body = pb.FetchResourceRequest(appname=appname, resource_id="z").SerializeToString()
    wire = message("", flag=1, payload=gzip.compress(body))
    data = grpc_call(1, [wire], add=[(b"grpc-encoding", b"gzip")])
    peer, seen = attack(rig, "gzip", lambda p: p.send(data), lambda p: p.ended(1) or p.reset(1) is not None)
    if allowed:
        assert peer.grpc_status(1) == ("0", "")
        [call] = grpc_seen(seen)
        assert bytes(call.data) == wire  # forwarded as it came, still compressed
    else:
        assert peer.grpc_status(1) == ("7", "permission denied")
        assert grpc_seen(seen) == []


PATHS = [
    # (:path sent, what the app must see, or None: refused and never forwarded)
    ("/ok/../secret", None),
    ("/ok/%2e%2e/secret", None),
    ("/ok/%2E%2E/%2e%2e/secret", None),
    ("/ok/./a//b", "/ok/a/b"),
]


@pytest.mark.parametrize("path,forwarded", PATHS, ids=[p[0] for p in PATHS])
def test_the_app_gets_the_path_the_policy_saw(rig, path, forwarded):
    data = headers(1, req(path))
    peer, seen = attack(rig, "path", lambda p: p.send(data), lambda p: p.ended(1) or p.reset(1) is not None)
    if forwarded is None:
        assert peer.status(1) in (400, 403), peer.frames
        assert seen == []
    else:
        assert peer.status(1) == 200
        assert [s.path for s in seen] == [forwarded]


CONNECTS = [
    ("CONNECT", [(b":method", b"CONNECT"), (b":authority", b"127.0.0.1:22")]),
    ("extended CONNECT (RFC 8441)", req("/ok/ws", "CONNECT", add=[(b":protocol", b"websocket")])),
]


@pytest.mark.parametrize("name,fields", CONNECTS, ids=[c[0] for c in CONNECTS])
def test_connect_is_never_a_tunnel(rig, name, fields):
    """Even when policy allows the method, a CONNECT stream is refused (an error status or a stream
    error), and nothing reaches the app: the sidecar does not tunnel."""
    data = headers(1, fields, end_stream=False) + raw(DATA, 0, 1, b"SSH-2.0-attacker\r\n")
    peer, seen = attack(rig, name, lambda p: p.send(data), lambda p: p.ended(1) or p.reset(1) is not None)
    status = peer.status(1)
    assert (status is not None and status >= 400) or peer.reset(1) is not None, peer.frames
    assert seen == []


def test_request_trailers_end_the_request_at_the_app(rig):
    """A request may end with a trailer section (RFC 9113 §8.1); the app must get the request
    complete, and identity fields in the trailers must not reach it (the sidecar drops them all)."""
    data = (headers(1, req("/ok/trailers", "POST"), end_stream=False) + raw(DATA, 0, 1, b"body")
            + headers(1, [(b"x-checksum", b"1"), (b"x-trustmesh-source", b"admin")], end_stream=True))
    peer, seen = attack(rig, "trailers", lambda p: p.send(data), lambda p: p.ended(1) or p.reset(1) is not None)
    assert peer.status(1) == 200, peer.frames
    [call] = seen
    assert call.ended and bytes(call.data) == b"body"


@pytest.mark.parametrize("appname,status", [("billing", "0"), ("payments", "7")])
def test_grpc_call_ending_with_trailers_is_decided_on_its_message(rig, appname, status):
    data = (headers(1, grpc_req(), end_stream=False) + raw(DATA, 0, 1, message(appname))
            + headers(1, [(b"x-done", b"1")], end_stream=True))
    peer, seen = attack(rig, "grpc-trailers", lambda p: p.send(data), lambda p: p.ended(1) or p.reset(1) is not None)
    assert peer.grpc_status(1)[0] == status
    assert [bytes(s.data) for s in grpc_seen(seen) if s.ended] == ([message(appname)] if status == "0" else [])


def test_slow_reader_with_open_windows_is_bounded(rig):
    """CVE-2019-9517 (internal data buffering): the attacker opens its HTTP/2 windows wide but never
    reads the socket, and asks for large responses on every stream it may open. The sidecar must
    stop taking the app's DATA once it cannot write it, not buffer it all."""
    before = rig.sidecar.rss()
    rig.app.blocked.clear()
    window = struct.pack(">HL", 4, 0x7FFFFFFF)  # SETTINGS_INITIAL_WINDOW_SIZE: the largest there is
    sock = rig.tls()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    peer = Peer(sock).start(window)
    try:
        peer.send(raw(WINDOW_UPDATE, 0, 0, u32(0x7FFFFFFF - 65535)))
        mark = rig.app.mark()
        peer.send(b"".join(headers(2 * i + 1, req(f"/ok/big?n={4 * MB}")) for i in range(100)))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # until every response waits on the sidecar's window
            streams = rig.app.since(mark)
            if len(streams) == 100 and all(s.blocked for s in streams):
                break
            time.sleep(0.05)
        assert len(streams) == 100 and all(s.blocked for s in streams), "the app was never slowed down"
        taken = sum(s.sent for s in streams)
        grown = rig.sidecar.rss() - before
        print(f"slow reader: the sidecar took {taken / MB:.1f} MB from the app; RSS +{grown / MB:.1f} MB")
        rig.others_carry_on("slow-reader")
        assert grown < RSS_BOUND, f"one connection that reads nothing made the sidecar grow {grown / MB:.0f} MB"
    finally:
        peer.close()


def test_streams_of_a_departed_caller_are_reset_at_the_app(rig):
    """A caller that goes away with responses pending leaves no stream open at the app."""
    mark = rig.app.mark()
    peer = rig.peer().start(struct.pack(">HL", 4, 0))  # zero window: every response stays pending
    peer.send(b"".join(headers(2 * i + 1, req(f"/ok/big?n={MB}")) for i in range(10)))
    assert peer.until(lambda p: all(p.status(2 * i + 1) for i in range(10)))
    peer.close()
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline and not all(s.reset for s in rig.app.since(mark)):
        time.sleep(0.02)
    streams = rig.app.since(mark)
    assert len(streams) == 10 and all(s.reset for s in streams), [(s.path, s.reset) for s in streams]


def test_a_header_block_in_many_continuations_within_the_bounds_is_served(rig):
    """The CONTINUATION bound refuses floods, not a legitimate header section split small."""
    whole = block(req("/ok/split", add=[(b"x-long", b"v" * 2000)]))
    pieces = [whole[i : i + 100] for i in range(0, len(whole), 100)]  # about 21 frames
    data = raw(HEADERS, 0x1, 1, pieces[0]) + b"".join(raw(CONTINUATION, 0, 1, p) for p in pieces[1:-1]) \
        + raw(CONTINUATION, 0x4, 1, pieces[-1])
    peer, seen = attack(rig, "continuations", lambda p: p.send(data), lambda p: p.ended(1) or p.reset(1) is not None)
    assert peer.status(1) == 200
    [call] = seen
    assert dict(call.headers)[b"x-long"] == b"v" * 2000


def test_a_caller_without_a_dynamic_table_gets_responses_it_can_decode(rig):
    """SETTINGS_HEADER_TABLE_SIZE 0: the sidecar's encoder must not index into a table the caller
    does not keep (the responses are decoded with a table of size 0)."""
    peer = rig.peer().start(struct.pack(">HL", 1, 0))
    peer.decoder.header_table_size = 0
    peer.decoder.max_allowed_table_size = 0
    try:
        for i in range(5):
            sid = 2 * i + 1
            peer.send(headers(sid, req(f"/ok/table-{i}")))
            assert peer.until(lambda p: p.ended(sid))
            assert peer.status(sid) == 200
        assert peer.goaway() is None
    finally:
        peer.close()


def test_stalled_peers_are_let_go(rig):
    """Two peers that never move: one never opens its window while a response waits (zero-window
    stall, CVE-2019-9517), one never acknowledges the sidecar's SETTINGS. The first loses its
    connection with ENHANCE_YOUR_CALM once a stream waited 30 s (max_send_stall) and its streams
    at the app are reset; the second gets SETTINGS_TIMEOUT after 10 s. Slow by nature: ~31 s."""
    mark = rig.app.mark()
    stalled = rig.peer().start(struct.pack(">HL", 4, 0))
    mute = rig.peer(ack_settings=False).start()
    try:
        stalled.send(headers(1, req(f"/ok/big?n={MB}")))
        assert stalled.until(lambda p: p.status(1) == 200)
        assert mute.until(lambda p: p.goaway() is not None, 20)
        assert mute.goaway() == SETTINGS_TIMEOUT
        # bounds well above the 30 s stall limit and the 2 s drain grace: a busy machine only delays them
        assert stalled.until(lambda p: p.goaway() is not None, 120)
        assert stalled.goaway() == ENHANCE_YOUR_CALM
        assert stalled.until(lambda p: p.closed, 30)
    finally:
        stalled.close()
        mute.close()
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline and not all(s.reset for s in rig.app.since(mark)):
        time.sleep(0.05)
    assert [(s.path, s.reset) for s in rig.app.since(mark)] == [(f"/ok/big?n={MB}", True)]
    rig.others_carry_on("stalled")


def metrics_text(rig: Rig) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{rig.sidecar.ports['admin']}/metrics", timeout=10) as response:
        return response.read().decode()


def test_grpc_status_values_a_server_invents_do_not_grow_the_metrics(rig):
    """grpc-status comes from the far end (on outbound, another workload): values outside the
    gRPC codes must not each become a new metrics series, or a peer grows the sidecar's memory
    without bound. 1000 calls, each answered with a different invented status."""

    def series() -> int:
        lines = metrics_text(rig).splitlines()
        return sum(1 for line in lines if line.startswith("trustmesh_sidecar_h2_streams_total{"))

    before = series()
    peer = rig.peer(outbound=True).start()
    try:
        for batch in range(20):
            sids = [2 * (batch * 50 + i) + 1 for i in range(50)]
            peer.send(b"".join(grpc_call(sid, [message("config")], add=[(b"x-reply-grpc-status", str(1000 + sid).encode())])
                               for sid in sids))
            assert peer.until(lambda p: all(p.ended(sid) for sid in sids), 20), f"batch {batch} unanswered"
        assert peer.grpc_status(1) == (str(1001), "")  # the invented status reached the caller as it was sent
    finally:
        peer.close()
    assert series() - before <= 4, f"{series() - before} new series for 1000 invented grpc-status values"
    assert 'grpc_status="invalid"' in metrics_text(rig)


def test_unfinished_grpc_messages_on_every_stream_are_bounded(tmp_path):
    """Messages that never complete, on every stream a connection may open, with the default
    grpc.max_message (1 MiB): what the sidecar holds waiting to decide must stay bounded."""
    pki = Pki()
    app = RecordingApp().start()
    sidecar = Sidecar(tmp_path, pki, app.port, max_message=1 << 20)
    files = pki.write(tmp_path, "client", "/app/billing")
    try:
        before = sidecar.rss()
        peer = Peer(connect_mtls(files, sidecar.ports["inbound"])).start()
        # our SETTINGS ACK reaches the sidecar before any DATA: stream windows are 256 KiB, not 64 KiB
        assert peer.until(lambda p: any(f.type == SETTINGS and "ACK" in f.flags for f in p.frames))
        prefix = b"\0" + struct.pack(">L", (1 << 20) - 1)  # a message of 1 MiB - 1, never finished
        chunk = b"\x0a" * 16000
        sids = [2 * i + 1 for i in range(100)]
        peer.send(b"".join(headers(sid, grpc_req(), end_stream=False) + raw(DATA, 0, sid, prefix) for sid in sids))
        sent = 5

        def granted(p: Peer) -> int:  # the least window any stream has been given back
            return min(sum(f.window_increment for f in p.frames if f.type == WINDOW_UPDATE and f.stream_id == sid)
                       for sid in sids)

        for _ in range(25):  # 25 x 16000 = 400 kB per stream (beyond its 256 KiB window), within flow control
            if not peer.until(lambda p: sent + len(chunk) <= (1 << 18) + granted(p), 5):
                break  # the sidecar stopped giving window: the bound holds
            peer.send(b"".join(raw(DATA, 0, sid, chunk) for sid in sids))
            sent += len(chunk)
        peer.until(lambda p: False, 0.5)
        grown = sidecar.rss() - before
        peer.close()
        assert grown < RSS_BOUND, f"one connection's unfinished messages grew the sidecar by {grown / MB:.0f} MB"
        assert app.streams == []
    finally:
        sidecar.stop()
        app.stop()


def test_beyond_the_connection_budget_for_unfinished_messages_one_stream_is_refused_and_the_rest_go_on(tmp_path):
    """docs/sidecar.md: one connection's streams may hold max(4 x grpc.max_message, 4 MiB) of
    unfinished messages together (4 MiB here); the stream that goes beyond is refused with
    RESOURCE_EXHAUSTED, and the other streams and the connection go on."""
    pki = Pki()
    app = RecordingApp().start()
    sidecar = Sidecar(tmp_path, pki, app.port, max_message=1 << 20)
    files = pki.write(tmp_path, "client", "/app/billing")
    try:
        peer = Peer(connect_mtls(files, sidecar.ports["inbound"])).start()
        # our SETTINGS ACK reaches the sidecar before any DATA: stream windows are 256 KiB, not 64 KiB
        assert peer.until(lambda p: any(f.type == SETTINGS and "ACK" in f.flags for f in p.frames))
        prefix = b"\0" + struct.pack(">L", 900_000)  # under grpc.max_message, never finished
        chunk = b"\x0a" * 16000
        sids = [1, 3, 5, 7, 9]  # 5 x 880 kB is over 4 MiB, 4 x 880 kB under it
        peer.send(b"".join(headers(sid, grpc_req(), end_stream=False) + raw(DATA, 0, sid, prefix) for sid in sids))
        sent = dict.fromkeys(sids, 5)

        def granted(p: Peer, sid: int) -> int:
            return sum(f.window_increment for f in p.frames if f.type == WINDOW_UPDATE and f.stream_id == sid)

        def going(p: Peer) -> list[int]:
            return [sid for sid in sids if p.grpc_status(sid) is None]

        for _ in range(55):  # 55 x 16000 = 880 kB per stream, within flow control
            assert peer.until(lambda p: all(sent[sid] + len(chunk) <= (1 << 18) + granted(p, sid) for sid in going(p)))
            peer.send(b"".join(raw(DATA, 0, sid, chunk) for sid in going(peer)))
            for sid in going(peer):
                sent[sid] += len(chunk)
        peer.send(grpc_call(11, [message("billing")]))
        assert peer.until(lambda p: p.ended(11))
        refused = [sid for sid in sids if sid not in going(peer)]
        assert len(refused) == 1, f"streams refused: {refused}"
        code, text = peer.grpc_status(refused[0])
        assert code == "8" and "unfinished request data" in text
        assert not any(peer.ended(sid) for sid in going(peer))  # the others still wait for their message
        assert peer.grpc_status(11)[0] == "0"  # and the connection takes new calls
        assert peer.goaway() is None
        peer.close()
        assert len(app.streams) == 1
    finally:
        sidecar.stop()
        app.stop()


def _http1_exchange(sock: socket.socket, request: bytes) -> bytes:
    sock.sendall(request)
    answer = b""
    deadline = time.monotonic() + PATIENCE
    while b"\r\n\r\n" not in answer and time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            data = sock.recv(1 << 16)
        except (socket.timeout, TimeoutError):
            continue
        if not data:
            break
        answer += data
    sock.close()
    return answer


UPGRADE = (b"GET /ok/upgrade HTTP/1.1\r\nHost: config\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
           b"HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n")


@pytest.mark.parametrize("where", ["outbound-plaintext", "inbound-mtls-http1"])
def test_upgrade_to_h2c_is_never_a_tunnel(rig, where):
    """``Upgrade: h2c`` is not supported: no 101, and nothing but (at most) a plain HTTP/1.1
    request without the upgrade reaches the app."""
    mark = rig.app.mark()
    if where == "outbound-plaintext":
        sock = rig.plain()
    else:
        sock = rig.tls("http/1.1")
    answer = _http1_exchange(sock, UPGRADE)
    assert answer.startswith(b"HTTP/1.1 4"), answer[:200]  # an error, not 101 Switching Protocols
    assert b"upgrade" not in answer.split(b"\r\n\r\n")[0].lower(), answer[:300]
    assert rig.app.since(mark) == []  # the recording app speaks only h2c: an HTTP/1.1 request never lands
    rig.others_carry_on(f"upgrade-{where}")


def test_http2_preface_on_an_http1_alpn_connection_is_refused(rig):
    sock = rig.tls("http/1.1")
    mark = rig.app.mark()
    answer = _http1_exchange(sock, PREFACE + raw(SETTINGS, 0, 0) + headers(1, req("/ok/smuggled")))
    assert answer.startswith(b"HTTP/1.1 4") or answer.startswith(b"HTTP/1.1 505") or answer == b"", answer[:100]
    assert rig.app.since(mark) == []
    rig.others_carry_on("preface-on-http1")


def test_a_response_arriving_after_the_callers_connection_failed_harms_no_one(rig):
    """An attacker gets a request forwarded, then breaks its connection in the same write (GOAWAY
    STREAM_CLOSED) and keeps the socket open. The app's answer to the forwarded request arrives
    after the failure; another caller's stream, open at the app on the same multiplexed app
    connection, must go on."""
    mark = rig.app.mark()
    other = rig.peer().start()
    attacker = rig.peer().start()
    try:
        other.send(headers(1, req("/ok/long", "POST"), end_stream=False))  # open at the app meanwhile
        deadline = time.monotonic() + PATIENCE
        while "/ok/long" not in [s.path for s in rig.app.since(mark)]:
            assert time.monotonic() < deadline, "the other caller's stream never reached the app"
            time.sleep(0.01)
        attacker.send(headers(5, req("/ok/five")) + headers(3, req("/ok/three")))  # forwarded, then a connection error
        assert attacker.until(lambda p: p.goaway() is not None)
        assert attacker.goaway() == STREAM_CLOSED
        # the attacker's socket stays open (the sidecar's TLS close waits for our close_notify);
        # the other caller ends its request, and the app answers both on the same app connection
        other.send(raw(DATA, 0x1, 1, b"done"))
        assert other.until(lambda p: p.ended(1) or p.reset(1) is not None)
        assert other.status(1) == 200, (other.frames, rig.sidecar.stderr())
    finally:
        attacker.close()
        other.close()
    rig.others_carry_on("late-response")


def test_a_window_shrunk_below_zero_mid_response_is_honoured(rig):
    """The caller opens a large window, then shrinks SETTINGS_INITIAL_WINDOW_SIZE to 0 while a
    response is under way (its stream window goes negative, RFC 9113 §6.9.2): the sidecar sends
    nothing more until the window is positive again, and the body then arrives whole."""
    n = 2 * MB
    peer = rig.peer().start(struct.pack(">HL", 4, 1 << 20))
    try:
        peer.send(raw(WINDOW_UPDATE, 0, 0, u32(16 * MB)) + headers(1, req(f"/ok/big?n={n}")))
        assert peer.until(lambda p: len(p.body.get(1, b"")) > 0)
        peer.send(raw(SETTINGS, 0, 0, struct.pack(">HL", 4, 0)))
        acked = lambda p: sum(1 for f in p.frames if f.type == SETTINGS and "ACK" in f.flags) >= 2
        assert peer.until(acked)
        got = len(peer.body.get(1, b""))
        assert got <= 1 << 20, "more than the window was sent"
        peer.until(lambda p: False, 0.3)
        assert len(peer.body.get(1, b"")) == got, "DATA sent into a window shrunk to zero or below"
        peer.send(raw(WINDOW_UPDATE, 0, 1, u32(n)))  # now the stream window is positive again
        assert peer.until(lambda p: p.ended(1))
        assert peer.body[1] == b"x" * n and peer.goaway() is None
    finally:
        peer.close()
    rig.others_carry_on("negative-window")


def test_a_header_block_never_finished_is_given_up_after_the_header_timeout(rig):
    """Slowloris over HTTP/2: HEADERS without END_HEADERS, then nothing. The connection should be
    let go like an HTTP/1.1 head that never ends (limits.header_timeout, 5 s here)."""
    peer = rig.peer().start()
    try:
        assert peer.until(lambda p: any(f.type == SETTINGS and "ACK" in f.flags for f in p.frames))
        peer.send(raw(HEADERS, 0, 1, block(req("/ok/slowloris"))[:4]))
        # header_timeout is 5 s and idle_timeout 300 s: 60 s tells them apart on a busy machine too
        assert peer.until(lambda p: p.closed, 60), "the unfinished header block still holds its connection"
    finally:
        peer.close()


@pytest.mark.parametrize("cut", [
    pytest.param(raw(PING, 0, 0, bytes(8))[:5], id="half a frame header"),
    pytest.param(headers(1, req("/ok/partial"))[:12], id="part of a HEADERS frame"),
])
def test_a_frame_never_finished_is_given_up_after_the_header_timeout(rig, cut):
    """A peer that sends the start of a frame and stalls is let go like an unfinished header
    block (limits.header_timeout, 5 s here), with GOAWAY ENHANCE_YOUR_CALM, not after the idle timeout."""
    peer = rig.peer().start()
    try:
        assert peer.until(lambda p: any(f.type == SETTINGS and "ACK" in f.flags for f in p.frames))
        peer.send(cut)
        # header_timeout is 5 s and idle_timeout 300 s: 60 s tells them apart on a busy machine too
        assert peer.until(lambda p: p.closed, 60), "the unfinished frame still holds its connection"
        assert peer.goaway() == ENHANCE_YOUR_CALM
    finally:
        peer.close()
