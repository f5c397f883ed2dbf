"""Strict HTTP/1.1 request parsing and response framing, without I/O.

The sidecar sits on the security boundary, so requests are parsed more
strictly than RFC 9112 requires a recipient to: every construct that two
parsers could frame differently (the raw material of request smuggling) is
refused with an :class:`~sidecar.errors.HttpError` carrying the status to
answer (400, 431, 501 or 505) — the connection is then closed.

Refused: bare LF or bare CR anywhere in the head, NUL or other control
characters in a header value, whitespace between a field name and the colon,
obs-fold (continuation lines), a malformed, negative, huge or repeated
``Content-Length``, ``Transfer-Encoding`` other than a single ``chunked``,
``Content-Length`` together with ``Transfer-Encoding``, malformed chunk sizes
or chunk framing, a missing ``Host`` in HTTP/1.1, a repeated ``Host``, a
method with lower-case letters, a request target that is not in origin form,
and heads over the size or count limits, and a field name sent both with ``-``
and with ``_``. A field repeated on several lines is joined into one (what the
policy judges is then exactly what the app reads).

Example::

    reader = RequestReader(max_head_bytes=16384, max_headers=100)
    reader.feed(b"GET /a HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
    head = reader.next_event()          # RequestHead(method="GET", target="/a", ...)
    assert reader.next_event() is END   # no body

Responses from a peer we already trust are only framed (where does this
message end, may the connection be reused), by :class:`ResponseFramer`, so
that their bytes can be forwarded untouched.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Hashable
from dataclasses import dataclass

from sidecar.errors import HttpError
from sidecar.identity_headers import is_identity_header, strip_identity_headers

__all__ = [
    "RequestHead",
    "RequestReader",
    "ResponseFramer",
    "END",
    "NEED_DATA",
    "encode_chunk",
    "LAST_CHUNK",
    "HOP_BY_HOP",
    "serialize_head",
    "without_identity_headers",
]

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/(1\.[01])")
_FIELD = re.compile(
    rb"(" + _TOKEN + rb"):[ \t]*((?:[\x21-\x7e\x80-\xff](?:[\x20-\x7e\x80-\xff\t]*[\x21-\x7e\x80-\xff])?)?)[ \t]*"
)
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})(?:[ \t]*;[\x20-\x7e\t]*)?")
_DIGITS = re.compile(rb"[0-9]{1,18}")
_FIELD_LINE = _TOKEN + rb":[ \t]*(?:[\x21-\x7e\x80-\xff](?:[\x20-\x7e\x80-\xff\t]*[\x21-\x7e\x80-\xff])?)?[ \t]*"
_HEAD = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/(1\.[01])((?:\r\n" + _FIELD_LINE + rb")*)")
# a response field that decides where the response ends or whether the connection is reused
_RESPONSE_FRAMING = re.compile(rb"\r\n(content-length|transfer-encoding|connection):([^\r]*(?:\r(?!\n)[^\r]*)*)")
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"host", b"connection"})
_MAX_CHUNK_LINE = 4096


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA = _Marker("NEED_DATA")
"""Returned by :meth:`RequestReader.next_event` when more bytes are needed."""
END = _Marker("END")
"""Returned by :meth:`RequestReader.next_event` once a request's body is complete."""
LAST_CHUNK = b"0\r\n\r\n"


def encode_chunk(data: bytes) -> bytes:
    """One chunk of a chunked body."""
    return b"%x\r\n%b\r\n" % (len(data), data)


@dataclass(slots=True)
class RequestHead:
    """A validated request head. Header names are lower-case; order is kept."""

    method: str
    target: str
    version: str  # "1.1" or "1.0"
    headers: list[tuple[bytes, bytes]]
    content_length: int | None
    chunked: bool
    keep_alive: bool
    raw_fields: bytes | None = None  # the header lines as received, when none needs rewriting
    # equal keys, equal heads: the raw head of a small body-less HTTP/1.1 request; HTTP/2 streams
    # set a tuple of what they derive from (sidecar.stream_policy)
    key: Hashable | None = None

    def get(self, name: bytes) -> bytes | None:
        """The value of the first header called ``name`` (lower-case), if any."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)


def _split_head(buf: bytearray, max_head_bytes: int) -> bytes | None:
    """Take a complete head off the front of ``buf`` (without its final blank line)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if b"\n\n" in buf or b"\n\r\n" in buf:
            raise HttpError(400, "bare LF in request head")
        if len(buf) > max_head_bytes:
            raise HttpError(431, "request head too large")
        return None
    if end + 4 > max_head_bytes:
        raise HttpError(431, "request head too large")
    head = bytes(buf[:end])
    del buf[: end + 4]
    return head


_CACHED_HEAD_BYTES = 1024


def parse_request_head(head: bytes, max_headers: int) -> RequestHead:
    """Validate and parse a request head (request line and fields, CRLF-separated).

    One regular expression checks the whole head (every character class is
    strict, so NUL, bare CR/LF, obs-fold and whitespace before a colon cannot
    match); only a head that fails it goes through :func:`_diagnose` to name
    the problem. Parsing is a pure function of the bytes, so the results for
    small heads are kept in a bounded LRU cache (clients repeat their requests
    byte for byte); refusals are never cached, and every call gets its own
    :class:`RequestHead`. A small body-less head also carries its raw bytes as
    ``key``, so that routers can reuse what they derived from an equal head.
    """
    if len(head) <= _CACHED_HEAD_BYTES and type(head) is bytes:
        method, target, version, headers, content_length, chunked, keep_alive, raw = _parse_cached(head, max_headers)
        key = None if content_length or chunked else head
    else:
        method, target, version, headers, content_length, chunked, keep_alive, raw = _parse_head(head, max_headers)
        key = None
    return RequestHead(method, target, version, list(headers), content_length, chunked, keep_alive, raw, key)


@functools.lru_cache(maxsize=256)
def _parse_cached(head: bytes, max_headers: int) -> tuple:  # type: ignore[type-arg]
    return _parse_head(head, max_headers)


def _parse_head(head: bytes, max_headers: int) -> tuple:  # type: ignore[type-arg]
    """The fields of a :class:`RequestHead` (headers as a tuple), or :class:`HttpError`."""
    m = _HEAD.fullmatch(head)
    if m is None:
        _diagnose(head)
        raise HttpError(400, "malformed request head")
    method, target, version = m.group(1).decode(), m.group(2).decode(), m.group(3).decode()
    if not method.isupper():  # servers that upper-case it would serve `delete` as the DELETE policy never saw
        raise HttpError(400, "request method must be upper-case")
    if target[0] != "/":
        raise HttpError(400, "request target must be in origin form")
    block = m.group(4)
    lines = block.split(b"\r\n") if block else [b""]
    if len(lines) - 1 > max_headers:
        raise HttpError(431, "too many header fields")
    headers: list[tuple[bytes, bytes]] = []
    content_length: int | None = None
    transfer_encoding: bytes | None = None
    hosts = 0
    connection = b""
    sensitive = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.lower()
        value = value.strip(b" \t")
        if name in _FRAMING:
            if name == b"content-length":
                if content_length is not None:
                    raise HttpError(400, "repeated Content-Length")
                if _DIGITS.fullmatch(value) is None:
                    raise HttpError(400, "malformed Content-Length")
                content_length = int(value)
            elif name == b"transfer-encoding":
                if transfer_encoding is not None:
                    raise HttpError(400, "repeated Transfer-Encoding")
                transfer_encoding = value.lower()
                sensitive = True
            elif name == b"host":
                hosts += 1
            else:  # connection
                connection = connection + b"," + value.lower() if connection else value.lower()
                sensitive = True
        elif name in HOP_BY_HOP or is_identity_header(name):
            sensitive = True
        headers.append((name, value))
    if len({name.replace(b"_", b"-") for name, _ in headers}) != len(headers):
        headers = _merge_repeated(headers)
        sensitive = True
    if transfer_encoding is not None:
        if content_length is not None:
            raise HttpError(400, "both Content-Length and Transfer-Encoding")
        if version == "1.0":
            raise HttpError(400, "Transfer-Encoding in HTTP/1.0")
        if transfer_encoding != b"chunked":
            raise HttpError(501, "unsupported Transfer-Encoding")
    if version == "1.1" and hosts != 1:
        raise HttpError(400, "HTTP/1.1 request needs exactly one Host")
    if hosts > 1:
        raise HttpError(400, "repeated Host")
    if connection:
        tokens = {t.strip() for t in connection.split(b",")}
        keep_alive = b"close" not in tokens and (version == "1.1" or b"keep-alive" in tokens)
    else:
        keep_alive = version == "1.1"
    return (
        method, target, version, tuple(headers), content_length, transfer_encoding is not None, keep_alive,
        None if sensitive else block,
    )


def _merge_repeated(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """One line per field name: a repeated field's values joined in order (``", "``, or
    ``"; "`` for Cookie) at its first line's place, as RFC 9110 §5.3 lets a proxy do. The
    policy judges the joined value, so the app must get that one value too, not lines of
    which it might read only the first or only the last. A name spelled once with ``-`` and
    once with ``_`` is refused (``HttpError(400)``)."""
    merged: dict[bytes, bytes] = {}
    spellings: dict[bytes, bytes] = {}
    for name, value in headers:
        first = spellings.setdefault(name.replace(b"_", b"-"), name)
        if first != name:  # CGI-style servers read both as one HTTP_X_... variable, and keep one
            raise HttpError(400, f"header {first.decode()} also sent as {name.decode()}")
        if name in merged:
            merged[name] += (b"; " if name == b"cookie" else b", ") + value
        else:
            merged[name] = value
    return list(merged.items())


def _diagnose(head: bytes) -> None:
    """Raise the precise :class:`HttpError` for a head that failed the strict pattern."""
    if b"\0" in head:
        raise HttpError(400, "NUL in request head")
    lines = head.split(b"\r\n")
    if b"\n" in head and head.count(b"\n") != len(lines) - 1:
        raise HttpError(400, "bare LF in request head")
    if b"\r" in head and head.count(b"\r") != len(lines) - 1:
        raise HttpError(400, "bare CR in request head")
    if _REQUEST_LINE.fullmatch(lines[0]) is None:
        raise HttpError(400, "malformed request line")
    for line in lines[1:]:
        if _FIELD.fullmatch(line) is None:
            raise HttpError(400, _field_problem(line))


def _field_problem(line: bytes) -> str:
    if line[:1] in (b" ", b"\t"):
        return "obs-fold (continuation line) in header"
    name, colon, value = line.partition(b":")
    if not colon:
        return "header line without a colon"
    if name[-1:] in (b" ", b"\t"):
        return "whitespace before the colon in header"
    if not re.fullmatch(_TOKEN, name):
        return "invalid header name"
    return "invalid character in header value"


class _ChunkedScanner:
    """Walks a chunked body; ``scan`` returns (decoded data, bytes consumed, done)."""

    __slots__ = ("_remaining", "_state")

    def __init__(self) -> None:
        self._remaining = 0
        self._state = "size"  # size | data | data-crlf | trailer

    def copy(self) -> _ChunkedScanner:
        twin = _ChunkedScanner()
        twin._remaining, twin._state = self._remaining, self._state
        return twin

    def scan(self, buf: bytes | bytearray, collect: bool = True) -> tuple[list[bytes], int, bool]:
        out: list[bytes] = []
        pos = start = 0
        n = len(buf)
        while pos < n:
            if self._state == "data":
                take = min(self._remaining, n - pos)
                if collect:
                    out.append(bytes(buf[pos : pos + take]))
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._state = "data-crlf"
                continue
            if self._state == "data-crlf":
                if n - pos < 2:
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    raise HttpError(400, "chunk data not followed by CRLF")
                pos += 2
                self._state = "size"
                continue
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                if b"\n" in buf[pos:] or n - pos > _MAX_CHUNK_LINE:
                    raise HttpError(400, "malformed chunk line")
                break
            line = bytes(buf[pos:eol])
            pos = eol + 2
            if self._state == "trailer":
                if not line:
                    return out, pos - start, True
                if _FIELD.fullmatch(line) is None:
                    raise HttpError(400, "malformed chunk trailer")
                continue
            m = _CHUNK_SIZE.fullmatch(line)
            if m is None:
                raise HttpError(400, "malformed chunk size")
            size = int(m.group(1), 16)
            if size == 0:
                self._state = "trailer"
            else:
                self._remaining = size
                self._state = "data"
        return out, pos - start, False


class RequestReader:
    """Turns a byte stream into request events: a head, body pieces, ``END``.

    ``next_event()`` returns a :class:`RequestHead`, ``bytes`` (decoded body
    data), ``END`` or ``NEED_DATA``, and raises :class:`HttpError` on the
    first violation. After ``END`` the next request's head follows.
    ``buffer`` holds the bytes received and not yet consumed (read it, do not change it).
    """

    def __init__(self, max_head_bytes: int = 16384, max_headers: int = 100) -> None:
        self.buffer = bytearray()
        self._max_head_bytes = max_head_bytes
        self._max_headers = max_headers
        self._body_left = 0
        self._chunked: _ChunkedScanner | None = None
        self._state = "head"  # head | length | chunked | end
        self._pending: list[bytes] = []

    @property
    def buffered(self) -> int:
        return len(self.buffer)

    @property
    def in_message(self) -> bool:
        """True from the first byte of a request until its ``END`` is returned."""
        return self._state != "head" or bool(self.buffer)

    def feed(self, data: bytes) -> None:
        self.buffer += data

    def check_buffered(self) -> None:
        """Raise :class:`HttpError` if the body bytes received so far break the framing; consumes
        nothing. A proxy calls this before it forwards the head, so that a malformed chunked body
        whose bad bytes are already here is refused before anything reaches the upstream."""
        if self._state == "chunked" and self.buffer:
            assert self._chunked is not None
            self._chunked.copy().scan(self.buffer, collect=False)

    def next_event(self) -> RequestHead | bytes | _Marker:
        if self._pending:
            return self._pending.pop(0)
        state = self._state
        if state == "head":
            while self.buffer[:2] == b"\r\n":  # tolerate CRLF between requests (RFC 9112 §2.2)
                del self.buffer[:2]
            raw = _split_head(self.buffer, self._max_head_bytes)
            if raw is None:
                return NEED_DATA
            head = parse_request_head(raw, self._max_headers)
            if head.chunked:
                self._chunked = _ChunkedScanner()
                self._state = "chunked"
            elif head.content_length:
                self._body_left = head.content_length
                self._state = "length"
            else:
                self._state = "end"
            return head
        if state == "length":
            if not self.buffer:
                return NEED_DATA
            take = min(self._body_left, len(self.buffer))
            data = bytes(self.buffer[:take])
            del self.buffer[:take]
            self._body_left -= take
            if self._body_left == 0:
                self._state = "end"
            return data
        if state == "chunked":
            assert self._chunked is not None
            pieces, used, done = self._chunked.scan(self.buffer)
            del self.buffer[:used]
            if done:
                self._state = "end"
            self._pending = pieces[1:]
            if pieces:
                return pieces[0]
            return self.next_event() if done else NEED_DATA
        self._state = "head"
        return END


class ResponseFramer:
    """Finds where one response ends in a stream of bytes forwarded as they are.

    ``feed(data)`` returns how many bytes of ``data`` belong to the current
    response and whether it is now complete (1xx interim responses are passed
    through as part of it). ``keep_alive`` tells whether the connection may be
    reused; ``status`` is the final status code once known.
    """

    def __init__(self, request_method: str, max_head_bytes: int = 65536) -> None:
        self._head_only = request_method == "HEAD"
        self._max_head_bytes = max_head_bytes
        self._buf = bytearray()
        self._state = "head"  # head | length | chunked | close | done
        self._left = 0
        self._chunked: _ChunkedScanner | None = None
        self.status = 0
        self.keep_alive = True

    def reset(self, request_method: str) -> None:
        """Frame the next response on the same connection (saves building a new framer)."""
        self._head_only = request_method == "HEAD"
        if self._buf:
            self._buf.clear()
        self._state = "head"
        self._left = 0
        self._chunked = None
        self.status = 0
        self.keep_alive = True

    def feed(self, data: bytes) -> tuple[int, bool]:
        if self._state == "head" and not self._buf:
            # common case: a whole head, and often the whole Content-Length body, in one read
            end = data.find(b"\r\n\r\n")
            if 0 <= end <= self._max_head_bytes:
                head = data[:end]
                known = None if self._head_only or end > _CACHED_HEAD_BYTES else _FRAMINGS.get(head)
                if known is None or known[2] == "chunked":
                    self._start_body(head)
                else:  # kept framing of an equal head (see _start_body), without the call
                    self.status, self.keep_alive, self._state, self._left = known
                state = self._state
                if state == "length":
                    avail = len(data) - end - 4
                    if avail >= self._left:
                        used = end + 4 + self._left
                        self._left = 0
                        self._state = "done"
                        return used, True
                    self._left -= avail
                    return len(data), False
                if state == "done":
                    return end + 4, True
                used, done = self._feed(data[end + 4 :])
                return end + 4 + used, done
        return self._feed(data)

    def _feed(self, data: bytes) -> tuple[int, bool]:
        used = 0
        n = len(data)
        while used < n and self._state != "done":
            state = self._state
            if state == "head":
                if not self._buf:  # common case: the whole head is in this read
                    end = data.find(b"\r\n\r\n", used)
                    if 0 <= end - used <= self._max_head_bytes:
                        self._start_body(data[used:end])
                        used = end + 4
                        continue
                start = len(self._buf)
                self._buf += data[used:]
                end = self._buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self._buf) > self._max_head_bytes:
                        raise HttpError(502, "response head too large")
                    return n, False
                used += end + 4 - start
                self._start_body(bytes(self._buf[:end]))
                self._buf.clear()
            elif state == "length":
                take = min(self._left, n - used)
                used += take
                self._left -= take
                if self._left == 0:
                    self._state = "done"
            elif state == "chunked":
                assert self._chunked is not None
                self._buf += data[used:]
                _, took, done = self._chunked.scan(self._buf, collect=False)
                if done:
                    extra = len(self._buf) - took
                    self._buf.clear()
                    self._state = "done"
                    return n - extra, True
                del self._buf[:took]
                return n, False
            else:  # close: everything until the peer closes
                return n, False
        return used, self._state == "done"

    @property
    def reads_until_close(self) -> bool:
        return self._state == "close"

    def _start_body(self, head: bytes) -> None:
        if self._head_only or len(head) > _CACHED_HEAD_BYTES:
            self._frame(head)
            return
        # framing is a function of the head's bytes (and of the request method: HEAD is never
        # cached), and an upstream repeats its heads byte for byte until its Date changes
        known = _FRAMINGS.get(head)
        if known is None:
            self._frame(head)
            if self._state != "head":  # a final response (an interim one leaves the framer awaiting the next head)
                if len(_FRAMINGS) >= _FRAMINGS_KEPT:
                    _FRAMINGS.clear()
                _FRAMINGS[head] = (self.status, self.keep_alive, self._state, self._left)
        else:
            self.status, self.keep_alive, self._state, self._left = known
            if self._state == "chunked":
                self._chunked = _ChunkedScanner()

    def _frame(self, head: bytes) -> None:
        eol = head.find(b"\r\n")
        status_line = head if eol < 0 else head[:eol]
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise HttpError(502, "malformed status line from upstream")
        status = int(parts[1])
        length: int | None = None
        chunked = False
        connection = b""
        if eol >= 0:
            # one C-level scan finds the (usually two) fields that decide framing and reuse
            for name, value in _RESPONSE_FRAMING.findall(head[eol:].lower()):
                value = value.strip()
                if name == b"content-length":
                    if _DIGITS.fullmatch(value) is None or (length is not None and int(value) != length):
                        raise HttpError(502, "malformed Content-Length from upstream")
                    length = int(value)
                elif name == b"transfer-encoding":
                    chunked = value.endswith(b"chunked")
                else:
                    connection = connection + b"," + value if connection else value
        if 100 <= status < 200 and status != 101:
            return  # interim response: the final one follows in the same stream
        self.status = status
        if connection and connection != b"keep-alive":
            tokens = {t.strip() for t in connection.split(b",")}
            if b"close" in tokens or (parts[0] == b"HTTP/1.0" and b"keep-alive" not in tokens):
                self.keep_alive = False
        elif parts[0] == b"HTTP/1.0":
            self.keep_alive = False
        if self._head_only or status in (204, 304):
            self._state = "done"
        elif status == 101:
            self._state = "close"
            self.keep_alive = False
        elif chunked:
            self._chunked = _ChunkedScanner()
            self._state = "chunked"
        elif length is not None:
            self._left = length
            self._state = "length" if length else "done"
        else:
            self._state = "close"
            self.keep_alive = False


_FRAMINGS: dict[bytes, tuple[int, bool, str, int]] = {}  # response head -> framing (non-HEAD requests)
_FRAMINGS_KEPT = 64

_EMPTY: frozenset[bytes] = frozenset()
_NOT_HOP_BY_HOP = frozenset({b"", b"content-length", b"host"})


@functools.lru_cache(maxsize=16)
def _fast_droppable(drop: frozenset[bytes]) -> bool:
    """True when every name in ``drop`` is one the parser flags (so raw lines can be reused)."""
    return all(is_identity_header(name) for name in drop)
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade", b"transfer-encoding"}
)


def without_identity_headers(head: RequestHead) -> RequestHead:
    """``head`` without the identity headers a caller sent (see :mod:`sidecar.identity_headers`);
    ``head`` itself when it has none."""
    if head.raw_fields is not None:  # the parser saw no identity or hop-by-hop header
        return head
    headers = strip_identity_headers(head.headers)
    if headers is head.headers:
        return head
    return RequestHead(
        head.method, head.target, head.version, headers, head.content_length, head.chunked, head.keep_alive, None, head.key
    )


def serialize_head(
    head: RequestHead, target: str, drop: frozenset[bytes], add: list[tuple[bytes, bytes]]
) -> bytes:
    """The head to send upstream: ``target`` replaces the request target; headers named in
    ``drop``, hop-by-hop headers and those listed in ``Connection`` are removed (chunked
    framing is re-added when the body is chunked); ``add`` is appended. A request asking to
    ``Upgrade`` to ``h2c`` is refused (``HttpError(400)``): HTTP/2 in plaintext is spoken with
    prior knowledge only."""
    if head.raw_fields is not None and _fast_droppable(drop):  # nothing to remove: keep the lines
        extra = b"".join([b"\r\n%b: %b" % pair for pair in add])
        return b"%b %b HTTP/1.1%b%b\r\n\r\n" % (head.method.encode(), target.encode(), head.raw_fields, extra)
    connection = head.get(b"connection")
    # a Connection header may not remove the fields that frame the request for the app
    named = {t.strip() for t in connection.lower().split(b",")} - _NOT_HOP_BY_HOP if connection else _EMPTY
    parts = [b"%b %b HTTP/1.1\r\n" % (head.method.encode(), target.encode())]
    for name, value in head.headers:
        if name in drop or name in HOP_BY_HOP or name in named:
            if name == b"upgrade" and b"h2c" in value.lower():
                # never a tunnel, and not a silent downgrade either: say what works instead
                raise HttpError(400, "Upgrade: h2c is not supported; speak HTTP/2 with prior knowledge")
            continue
        parts.append(b"%b: %b\r\n" % (name, value))
    if head.chunked:
        parts.append(b"transfer-encoding: chunked\r\n")
    for name, value in add:
        parts.append(b"%b: %b\r\n" % (name, value))
    parts.append(b"\r\n")
    return b"".join(parts)
