"""gRPC on the wire, without I/O: the call's ``:path``, length-prefixed messages, status trailers.

A gRPC call is an HTTP/2 stream whose ``:path`` is ``/<package>.<Service>/<Method>``
and whose DATA carries *messages*, each framed by a 5-byte prefix: one flag byte
(1: the message is compressed with the call's ``grpc-encoding``) and a 4-byte
big-endian length. See
https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md.

Everything here is strict because it feeds policy on the security boundary:

- :func:`parse_call_path` refuses anything but exactly one service and one method
  name made of identifier characters (no percent-encoding, no ``..``, no empty part);
- :class:`MessageReader` turns DATA bytes into whole messages, refusing a message
  longer than its limit before buffering it, and decompressing ``gzip``/``deflate``
  with a bound on the *decompressed* size (a zip bomb stops at the limit); any other
  encoding, or a compressed flag without an encoding, is refused;
- :func:`status_trailers` builds the trailers-only answer the sidecar itself gives.

    >>> parse_call_path("/trustmesh.demo.v1.DynamicResourceService/FetchResource")
    GrpcCall(service='trustmesh.demo.v1.DynamicResourceService', method='FetchResource')
    >>> reader = MessageReader(max_message=1024)
    >>> [m.payload for m in reader.feed(b"\\x00\\x00\\x00\\x00\\x02hi\\x00\\x00")]
    [b'hi']
    >>> reader.pending
    2
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

from sidecar.errors import GrpcError

__all__ = [
    "GrpcCall",
    "GrpcMessage",
    "MessageReader",
    "is_grpc_content_type",
    "parse_call_path",
    "status_trailers",
    "OK",
    "CANCELLED",
    "INVALID_ARGUMENT",
    "RESOURCE_EXHAUSTED",
    "PERMISSION_DENIED",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "UNAUTHENTICATED",
]

# grpc-status codes the sidecar itself answers with (google.rpc.Code)
OK = 0
CANCELLED = 1
INVALID_ARGUMENT = 3
RESOURCE_EXHAUSTED = 8
PERMISSION_DENIED = 7
UNIMPLEMENTED = 12
INTERNAL = 13
UNAVAILABLE = 14
UNAUTHENTICATED = 16

PREFIX = 5
# A protobuf full name: dot-separated identifiers (the service may have no package).
_SERVICE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_METHOD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_PATH = 1024
_DECOMPRESSORS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


@dataclass(frozen=True, slots=True)
class GrpcCall:
    """The service (full protobuf name) and method a gRPC call names."""

    service: str
    method: str

    @property
    def full_method(self) -> str:
        """``package.Service.Method``, the method's protobuf full name."""
        return f"{self.service}.{self.method}"


@dataclass(frozen=True, slots=True)
class GrpcMessage:
    """One request message: ``payload`` is the (decompressed) protobuf bytes, ``wire`` the
    exact bytes that framed it on the stream (prefix included), forwarded unchanged."""

    payload: bytes
    wire: bytes
    compressed: bool


def parse_call_path(path: str) -> GrpcCall:
    """``/<service>/<method>`` → :class:`GrpcCall`; anything else raises :class:`GrpcError`.

    The path is taken as sent (gRPC never percent-encodes it); a query, a fragment, a
    trailing slash or extra segments are refused rather than guessed at.
    """
    if len(path) > _MAX_PATH:
        raise GrpcError(f"gRPC path longer than {_MAX_PATH} characters")
    if not path.startswith("/"):
        raise GrpcError(f"gRPC path must start with '/': {path[:80]!r}")
    parts = path[1:].split("/")
    if len(parts) != 2:
        raise GrpcError(f"gRPC path must be /<package.Service>/<Method>: {path[:80]!r}")
    service, method = parts
    if not _SERVICE.fullmatch(service):
        raise GrpcError(f"gRPC path has an invalid service name: {service[:80]!r}")
    if not _METHOD.fullmatch(method):
        raise GrpcError(f"gRPC path has an invalid method name: {method[:80]!r}")
    return GrpcCall(service, method)


def is_grpc_content_type(value: str | bytes | None) -> bool:
    """``application/grpc`` or ``application/grpc+<codec>`` (``;`` parameters allowed)."""
    if value is None:
        return False
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    media = value.split(";", 1)[0].strip().lower()
    return media == "application/grpc" or media.startswith("application/grpc+")


class MessageReader:
    """Length-prefixed gRPC messages out of a stream's DATA, bounded.

    ``encoding`` is the call's ``grpc-encoding`` header (None or ``identity``: no
    compression). ``max_message`` bounds both the framed length and the decompressed
    length. :meth:`feed` returns the messages completed by the new bytes; a violation
    raises :class:`GrpcError` and the reader must not be fed again.
    """

    __slots__ = ("_buffer", "_encoding", "_max")

    def __init__(self, max_message: int, encoding: str | None = None) -> None:
        self._max = max_message
        self._encoding = (encoding or "identity").strip().lower()
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes received that do not yet complete a message."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[GrpcMessage]:
        buffer = self._buffer
        buffer += data
        out: list[GrpcMessage] = []
        while len(buffer) >= PREFIX:
            flag = buffer[0]
            length = int.from_bytes(buffer[1:5], "big")
            if flag not in (0, 1):
                raise GrpcError(f"gRPC message has an invalid compressed flag {flag}")
            if length > self._max:
                raise GrpcError(f"gRPC message of {length} bytes is larger than the {self._max}-byte limit", RESOURCE_EXHAUSTED)
            end = PREFIX + length
            if len(buffer) < end:
                break
            wire = bytes(buffer[:end])
            del buffer[:end]
            payload = wire[PREFIX:]
            if flag:
                payload = self._decompress(payload)
            out.append(GrpcMessage(payload, wire, bool(flag)))
        return out

    def _decompress(self, payload: bytes) -> bytes:
        encoding = self._encoding
        if encoding == "identity":
            raise GrpcError("gRPC message is flagged compressed but the call has no grpc-encoding")
        wbits = _DECOMPRESSORS.get(encoding)
        if wbits is None:
            raise GrpcError(f"gRPC message compressed with {encoding!r}, which the sidecar cannot inspect", UNIMPLEMENTED)
        inflater = zlib.decompressobj(wbits)
        try:
            plain = inflater.decompress(payload, self._max + 1)
        except zlib.error as err:
            raise GrpcError(f"gRPC message is not valid {encoding}: {err}") from None
        if len(plain) > self._max or inflater.unconsumed_tail:
            raise GrpcError(f"gRPC message decompresses to more than the {self._max}-byte limit", RESOURCE_EXHAUSTED)
        if not inflater.eof or inflater.unused_data:
            raise GrpcError(f"gRPC message is not one complete {encoding} stream")
        return plain


def status_trailers(code: int, message: str) -> list[tuple[bytes, bytes]]:
    """``grpc-status``/``grpc-message`` fields (message percent-encoded as the protocol requires)."""
    encoded = "".join(c if " " <= c <= "~" and c != "%" else "".join(f"%{b:02X}" for b in c.encode()) for c in message)
    return [(b"grpc-status", str(code).encode()), (b"grpc-message", encoded.encode("ascii"))]
