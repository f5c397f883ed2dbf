"""HTTP/2 header-section rules (RFC 9113 §8.2 and §8.3), checked strictly.

Each function takes a decoded header list (``(name, value)`` bytes pairs, in
order) and returns its parts, or raises :class:`Malformed` — which the
connection answers with a stream error PROTOCOL_ERROR (§8.1.1), without ever
announcing the stream to the application.

Refused, everywhere: a field name that is not a lower-case token (upper case,
a colon outside a leading pseudo-header, control characters, empty), a value
with NUL, CR, LF or another control character, or with leading or trailing
whitespace; the connection-specific fields ``connection``, ``keep-alive``,
``proxy-connection``, ``transfer-encoding`` and ``upgrade``; ``te`` other than
``trailers``; a malformed or repeated ``content-length``.
Requests: pseudo-headers other than ``:method :scheme :path :authority``, one
repeated, placed after a regular field, or missing (``:method``, ``:scheme``
and a non-empty ``:path``; only ``:method`` and ``:authority`` for CONNECT);
a lower-case method (as HTTP/1.1 does: servers that upper-case it would serve
what policy never saw); a ``:path`` that is not origin form (or ``*`` for
OPTIONS) or has characters outside visible ASCII; userinfo in ``:authority``;
a ``host`` that differs from ``:authority``, or repeated. Responses: anything
but exactly one three-digit ``:status`` (101 included, §8.6). Trailers: any
pseudo-header.
"""

from __future__ import annotations

import re

from sidecar.h2errors import Malformed

__all__ = ["Malformed", "parse_request", "parse_response", "parse_trailers", "RequestParts"]

Header = tuple[bytes, bytes]
RequestParts = tuple[str, str, "str | None", str, list[Header], "int | None"]
"""method, scheme, authority, path, regular headers, content-length."""

_TOKEN_LOWER = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"  # tchar (RFC 9110 §5.6.2), lower case
_NAME_BYTES = bytes(0 if c in _TOKEN_LOWER else 1 for c in range(256))
_VALUE_BYTES = bytes(0 if c == 0x09 or 0x20 <= c != 0x7F else 1 for c in range(256))  # field-vchar, SP, HTAB
_SP_HTAB = (0x20, 0x09)
_VALUE = rb"(?:[\x21-\x7e\x80-\xff](?:[\x20-\x7e\x80-\xff\t]*[\x21-\x7e\x80-\xff])?)?"
_ONE_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")
_ONE_VALUE = re.compile(_VALUE)
_DIGITS = re.compile(rb"[0-9]{1,18}")
_METHOD = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_SCHEME = re.compile(rb"[a-z][a-z0-9+.\-]*")
_PATH = re.compile(rb"[\x21-\x7e]+")
_AUTHORITY = re.compile(rb"[\x21-\x3f\x41-\x7e]+")  # visible ASCII without "@"
_STATUS = re.compile(rb"[1-5][0-9][0-9]")

_CONNECTION_SPECIFIC = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"})
_SPECIAL = _CONNECTION_SPECIFIC | {b"te", b"content-length", b"host"}
_REQUEST_PSEUDO = frozenset({b":method", b":scheme", b":path", b":authority"})


def _check_regular(fields: list[Header], request: bool = False) -> tuple[int | None, bytes | None]:
    """Check regular fields (names, values, connection-specific, te); return content-length
    and, for a request, ``host`` (refused when repeated)."""
    valid = _VALID_FIELDS
    unchecked = [field for field in fields if field not in valid]
    if not unchecked:
        return None, None
    for name, value in unchecked:
        # a name of token characters only, a value of visible characters, spaces and tabs with
        # none of the latter two at either end (each table maps an allowed byte to 0, others to 1)
        if (
            not name or 1 in name.translate(_NAME_BYTES) or 1 in value.translate(_VALUE_BYTES)
            or (value and (value[0] in _SP_HTAB or value[-1] in _SP_HTAB))
        ):
            _diagnose(unchecked)
    content_length = host = None
    for field in unchecked:
        name, value = field
        if name in _SPECIAL:
            if name in _CONNECTION_SPECIFIC:
                raise Malformed(f"connection-specific header field {name.decode()}")
            if name == b"content-length":
                if content_length is not None:
                    raise Malformed("repeated content-length")
                if _DIGITS.fullmatch(value) is None:
                    raise Malformed("malformed content-length")
                content_length = int(value)
                continue
            if name == b"host":
                if request:
                    if host is not None:
                        raise Malformed("repeated host")
                    host = value
                continue
            if value != b"trailers":  # te
                raise Malformed("te other than trailers")
        if len(valid) >= _VALID_FIELDS_MAX:
            valid.clear()
        valid.add(field)
    return content_length, host


# Regular fields that passed every check above, so that a field seen before skips them; never
# content-length or host, which are counted in every list (a repeat is refused). Bounded.
_VALID_FIELDS: set[Header] = set()
_VALID_FIELDS_MAX = 4096


def _diagnose(fields: list[Header]) -> None:
    for name, value in fields:
        if name[:1] == b":":
            raise Malformed(f"pseudo-header {_show(name)} after a regular header field")
        if _ONE_NAME.fullmatch(name) is None:
            if name.lower() != name:
                raise Malformed(f"upper-case header field name {_show(name)}")
            raise Malformed(f"invalid header field name {_show(name)}")
        if _ONE_VALUE.fullmatch(value) is None:
            raise Malformed(f"invalid character or surrounding whitespace in the value of {_show(name)}")
    raise Malformed("invalid header field")  # not reached: one of the fields failed the joined match


def _show(name: bytes) -> str:
    return repr(name[:64])[2:-1]


def _split_pseudo(fields: list[Header]) -> int:
    """The number of leading pseudo-header fields."""
    n = 0
    for name, _ in fields:
        if name[:1] != b":":
            break
        n += 1
    return n


def parse_request(fields: list[Header]) -> RequestParts:
    """The parts of a request's header section (see the module doc), or :class:`Malformed`."""
    n = _split_pseudo(fields)
    pseudo = dict(fields[:n])
    if len(pseudo) != n or not _REQUEST_PSEUDO.issuperset(pseudo):
        for name in pseudo:
            if name not in _REQUEST_PSEUDO:
                raise Malformed(f"pseudo-header {_show(name)} not allowed in a request")
        raise Malformed("repeated pseudo-header")
    headers = fields[n:]
    content_length, host = _check_regular(headers, request=True)
    key = (pseudo.get(b":method"), pseudo.get(b":scheme"), pseudo.get(b":authority"), pseudo.get(b":path"), host)
    parts = _PSEUDO_PARTS.get(key)
    if parts is None:
        parts = _pseudo_parts(*key)
        if len(_PSEUDO_PARTS) >= _PSEUDO_PARTS_MAX:
            _PSEUDO_PARTS.clear()
        _PSEUDO_PARTS[key] = parts
    return parts[0], parts[1], parts[2], parts[3], headers, content_length


_PSEUDO_PARTS: dict[tuple[bytes | None, ...], tuple[str, str, str | None, str]] = {}  # checked, decoded
_PSEUDO_PARTS_MAX = 1024


def _pseudo_parts(
    method: bytes | None, scheme: bytes | None, authority: bytes | None, path: bytes | None, host: bytes | None
) -> tuple[str, str, str | None, str]:
    """Check a request's pseudo-headers (and ``host``); decode them (refusals are not cached)."""
    if method is None:
        raise Malformed("missing :method")
    if _METHOD.fullmatch(method) is None:
        raise Malformed("malformed :method")
    if not method.isupper():
        raise Malformed("request method must be upper-case")
    if authority is not None and _AUTHORITY.fullmatch(authority) is None:
        raise Malformed("malformed :authority (userinfo or invalid characters)")
    if host is not None:
        if authority is None:
            if _AUTHORITY.fullmatch(host) is None:
                raise Malformed("malformed host")
            authority = host
        elif host != authority:
            raise Malformed("host differs from :authority")
    if method == b"CONNECT":
        if scheme is not None or path is not None:
            raise Malformed("CONNECT request with :scheme or :path")
        if authority is None:
            raise Malformed("CONNECT request without :authority")
        return "CONNECT", "", authority.decode(), ""
    if scheme is None:
        raise Malformed("missing :scheme")
    if _SCHEME.fullmatch(scheme) is None:
        raise Malformed("malformed :scheme")
    if not path:
        raise Malformed("missing or empty :path")
    if _PATH.fullmatch(path) is None:
        raise Malformed("invalid character in :path")
    if path[0] != 0x2F and not (path == b"*" and method == b"OPTIONS"):  # "/"
        raise Malformed(":path must be in origin form")
    return method.decode(), scheme.decode(), None if authority is None else authority.decode(), path.decode()


def parse_response(fields: list[Header]) -> tuple[int, list[Header], int | None]:
    """``(status, regular headers, content-length)`` of a response header section."""
    n = _split_pseudo(fields)
    if n != 1 or fields[0][0] != b":status":
        if any(name == b":status" for name, _ in fields[:n]):
            raise Malformed("repeated :status or a request pseudo-header in a response")
        raise Malformed("response without :status" if n == 0 else "pseudo-header not allowed in a response")
    status = fields[0][1]
    if _STATUS.fullmatch(status) is None:
        raise Malformed("malformed :status")
    code = int(status)
    if code == 101:
        raise Malformed("101 (Switching Protocols) is not allowed in HTTP/2")
    headers = fields[1:]
    return code, headers, _check_regular(headers)[0]


def parse_trailers(fields: list[Header]) -> list[Header]:
    """The fields of a trailer section (no pseudo-headers)."""
    if _split_pseudo(fields):
        raise Malformed("pseudo-header in trailers")
    _check_regular(fields)
    return fields
