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
"""

from __future__ import annotations

import string
from typing import NamedTuple
from urllib.parse import parse_qsl, unquote_to_bytes

from policy_dsl.errors import PathError

__all__ = ["NormalizedTarget", "normalize_path", "parse_query"]

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


def normalize_path(raw_target: str) -> NormalizedTarget:
    """Normalise an origin-form request target; raise PathError if it is unsafe."""
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
    try:
        pairs = parse_qsl(query, keep_blank_values=True, errors="strict", max_num_fields=_MAX_QUERY_FIELDS)
    except UnicodeDecodeError:
        raise PathError("query string is not valid UTF-8 after percent-decoding") from None
    except ValueError as err:
        raise PathError(f"query string rejected: {err}") from None
    out: dict[str, str] = {}
    for name, value in pairs:
        if name in out:
            raise PathError(f"query parameter {name!r} appears more than once")
        out[name] = value
    return out
