"""Normalise an HTTP request target so the policy sees what the application will.

Sans-I/O: the sidecar calls :func:`normalize_path` on the raw origin-form
target and forwards exactly the returned path, so the path a rule matched is
the path the application serves. Anything ambiguous is refused with a
:class:`~policy_dsl.errors.PathError`:

* control characters, spaces, raw non-ASCII and backslashes (``\\``);
* percent-encoded ``/`` (``%2F``), ``\\`` (``%5C``), NUL and other control bytes;
* malformed percent-escapes and percent-encoded bytes that are not valid UTF-8
  (overlong forms such as ``%C0%AE`` included);
* path parameters (``;``), which some servers strip and others do not.

Then: percent-encoded unreserved characters (letters, digits, ``-._~``) are
decoded and all other escapes upper-cased; ``//`` is merged; ``.`` and ``..``
segments are resolved without climbing above ``/``; the query is split off and
the fragment dropped. The result is idempotent.

:func:`canonical_host` does the same for ``Host`` (HTTP/1.1) or ``:authority``
(HTTP/2): one spelling per host, so that a rule on ``request.host`` cannot be
walked past with another spelling of the same host.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import string
from typing import NamedTuple
from urllib.parse import parse_qsl, unquote_to_bytes

from policy_dsl.errors import HostError, PathError

__all__ = ["HostPort", "NormalizedTarget", "canonical_host", "normalize_path", "parse_query"]

_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_HEX = frozenset(string.hexdigits)
_MAX_QUERY_FIELDS = 256


class NormalizedTarget(NamedTuple):
    """The normalised path and the raw query string (without ``?``)."""

    path: str
    query: str

    @property
    def target(self) -> str:
        """Path and query joined again, as forwarded upstream."""
        return f"{self.path}?{self.query}" if self.query else self.path


# A target normalisation leaves as it is: a path of unreserved and sub-delim characters, ':'
# and '@' (no '%', '\\', ';', '?' or '#'), then at most a query of printable ASCII without '#'.
# With no '//' and no '/.' in the path (a dot segment, or a name starting with '.'), there is
# nothing to decode, merge or resolve.
_PLAIN_TARGET = re.compile(r"(/[A-Za-z0-9\-._~!$&'()*+,=:@/]*)(?:\?([\x21\x22\x24-\x7e]*))?")


def normalize_path(raw_target: str) -> NormalizedTarget:
    """Normalise an origin-form request target; raise PathError if it is unsafe."""
    plain = _PLAIN_TARGET.fullmatch(raw_target) if type(raw_target) is str else None
    if plain is not None:
        path = plain.group(1)
        if "//" not in path and "/." not in path:
            return NormalizedTarget(path, plain.group(2) or "")
    return _normalize(raw_target)


def _normalize(raw_target: str) -> NormalizedTarget:
    """:func:`normalize_path` for any target, character by character."""
    if not isinstance(raw_target, str):
        raise PathError(f"request target must be a str, not {type(raw_target).__name__}")
    if not raw_target:
        raise PathError("empty request target")
    for offset, ch in enumerate(raw_target):
        code = ord(ch)
        if code < 0x21 or code == 0x7F:
            raise PathError(f"control character or space (0x{code:02x}) at offset {offset}")
        if code > 0x7E:
            raise PathError(f"raw non-ASCII character at offset {offset}; it must be percent-encoded")
    target = raw_target.partition("#")[0]
    path, _, query = target.partition("?")
    if not path.startswith("/"):
        raise PathError(f"request target must start with '/' (origin-form), got {raw_target[:32]!r}")
    if "\\" in path:
        raise PathError(f"backslash in path at offset {path.index(chr(92))}")
    if ";" in path:
        raise PathError(f"path parameters (';') are not accepted, at offset {path.index(';')}")
    decoded = _decode_unreserved(path)
    return NormalizedTarget(_resolve_dots(decoded), query)


def _decode_unreserved(path: str) -> str:
    if "%" not in path:
        return path
    out = []
    i, size = 0, len(path)
    while i < size:
        ch = path[i]
        if ch != "%":
            out.append(ch)
            i += 1
            continue
        digits = path[i + 1 : i + 3]
        if len(digits) != 2 or not set(digits) <= _HEX:
            raise PathError(f"malformed percent-escape {path[i:i + 3]!r} at offset {i}")
        byte = int(digits, 16)
        if byte == 0x2F:
            raise PathError(f"encoded '/' (%{digits}) at offset {i}")
        if byte == 0x5C:
            raise PathError(f"encoded backslash (%{digits}) at offset {i}")
        if byte == 0:
            raise PathError(f"encoded NUL (%{digits}) at offset {i}")
        if byte < 0x20 or byte == 0x7F:
            raise PathError(f"encoded control character (%{digits}) at offset {i}")
        char = chr(byte)
        out.append(char if char in _UNRESERVED else "%" + digits.upper())
        i += 3
    result = "".join(out)
    try:
        unquote_to_bytes(result).decode("utf-8")
    except UnicodeDecodeError as err:
        raise PathError(f"percent-encoded bytes are not valid UTF-8 (overlong or truncated): {err.reason}") from None
    return result


def _resolve_dots(path: str) -> str:
    segments = path.split("/")[1:]
    kept: list[str] = []
    for segment in segments:
        if segment == "..":
            if kept:
                kept.pop()
        elif segment and segment != ".":
            kept.append(segment)
    trailing = segments[-1] in ("", ".", "..")
    if not kept:
        return "/"
    return "/" + "/".join(kept) + ("/" if trailing else "")


def parse_query(query: str) -> dict[str, str]:
    """Decode a query string into ``{name: value}``; refuse duplicate names.

    A repeated name is ambiguous (the policy could see one value and the
    application another), so it is an error rather than a guess.
    """
    if "%" not in query and "+" not in query and query.count("&") < _MAX_QUERY_FIELDS:
        # nothing to decode: what parse_qsl would return, without its per-field calls
        pairs = [field.partition("=")[::2] for field in query.split("&") if field]
    else:
        pairs = _decoded_pairs(query)
    out: dict[str, str] = {}
    for name, value in pairs:
        if name in out:
            raise PathError(f"query parameter {name!r} appears more than once")
        out[name] = value
    return out


class HostPort(NamedTuple):
    """A canonical host (``request.host``) and the port it names (``request.port``)."""

    host: str
    port: int


_LABEL = re.compile(r"[a-z0-9_-]{1,63}")
_PORT = re.compile(r"[1-9][0-9]{0,4}")
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")


@functools.lru_cache(maxsize=1024)
def canonical_host(value: str, default_port: int = 80) -> HostPort:
    """The one canonical spelling of a ``Host`` value, and its port; raise HostError if it is
    ambiguous.

    The host is lower-cased, loses a trailing dot and its port (``INTERNAL.example.:8080`` is
    ``internal.example`` on port 8080); an IPv6 literal keeps its brackets in its compressed
    form (``[0:0::1]`` is ``[::1]``). Without a port, the port is ``default_port`` (80: the
    app spoke plain HTTP to its sidecar). Empty (HTTP/1.0 without ``Host``) is ``""``.

    Refused, since two parsers could read them as different hosts: userinfo (``user@host``), an
    empty, signed, zero-led or out-of-range port, percent-encoding, a list (``a, b``), a bare or
    malformed IPv6 literal (zone IDs, ``IPvFuture``), empty labels (``a..b``), characters outside
    letters, digits, ``-``, ``_`` and ``.``, non-ASCII (send the ``xn--`` form), over-long names,
    and numeric names that are not a plain dotted quad (``2130706433``, ``0x7f.1``, ``127.1``:
    addresses to ``inet_aton`` and WHATWG URL parsers, names to others).
    """
    if not value:
        return HostPort("", default_port)
    if not value.isascii():
        raise _refuse(value, "non-ASCII; send the A-label (xn--) form")
    if "@" in value:
        raise _refuse(value, "userinfo ('@') is not allowed")
    if "%" in value:
        raise _refuse(value, "percent-encoding is not allowed")
    if "," in value:
        raise _refuse(value, "a list of hosts (',')")
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise _refuse(value, "IPv6 literal without ']'")
        try:
            address = ipaddress.IPv6Address(value[1:end])
        except ValueError:
            raise _refuse(value, "not an IPv6 address between '[' and ']'") from None
        host, rest = f"[{address.compressed}]", value[end + 1 :]
        if rest and not rest.startswith(":"):
            raise _refuse(value, f"{rest[:16]!r} after the IPv6 literal")
    else:
        name, colon, port_text = value.partition(":")
        if ":" in port_text:
            raise _refuse(value, "more than one ':' (an IPv6 literal needs brackets, or a second port)")
        host, rest = _canonical_name(value, name.lower()), colon + port_text
    if not rest:
        return HostPort(host, default_port)
    if rest == ":":
        raise _refuse(value, "empty port after ':'")
    if _PORT.fullmatch(rest[1:]) is None or int(rest[1:]) > 65535:
        raise _refuse(value, f"port {rest[1:16]!r} is not a number from 1 to 65535 without leading zeros")
    return HostPort(host, int(rest[1:]))


def _canonical_name(value: str, name: str) -> str:
    if name.endswith("."):
        name = name[:-1]
    if len(name) > 253:
        raise _refuse(value, "a name longer than 253 characters")
    labels = name.split(".")
    for label in labels:
        if _LABEL.fullmatch(label) is None:
            if not label:
                raise _refuse(value, "empty label ('..', or a leading or second trailing '.')")
            if len(label) > 63:
                raise _refuse(value, "a label longer than 63 characters")
            bad = next(ch for ch in label if _LABEL.fullmatch(ch) is None)
            raise _refuse(value, f"invalid character {bad!r}")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        try:
            return str(ipaddress.IPv4Address(name))
        except ValueError:
            raise _refuse(value, "a numeric name that is not a dotted-quad IPv4 address") from None
    return name


def _refuse(value: str, problem: str) -> HostError:
    return HostError(f"Host {value[:64]!r}: {problem}")


def _decoded_pairs(query: str) -> list[tuple[str, str]]:
    try:
        return parse_qsl(query, keep_blank_values=True, errors="strict", max_num_fields=_MAX_QUERY_FIELDS)
    except UnicodeDecodeError:
        raise PathError("query string is not valid UTF-8 after percent-decoding") from None
    except ValueError as err:
        raise PathError(f"query string rejected: {err}") from None
