"""SPIFFE IDs and trust domains as immutable, strictly parsed values.

The rules are those of the SPIFFE-ID standard (spiffe/spiffe
``standards/SPIFFE-ID.md``), in the wording of go-spiffe's ``spiffeid``
package where it has one:

* the scheme is exactly ``spiffe://``;
* the trust domain is non-empty, at most 255 characters of ``[a-z0-9.-_]``,
  with no userinfo (``user@``) and no port (``:8443``);
* the path is empty or a sequence of ``/segment`` where each segment is
  non-empty, is not ``.`` or ``..`` and uses only ``[a-zA-Z0-9.-_]``; there is
  no trailing slash;
* no query, fragment or percent-encoding anywhere;
* the whole ID is at most 2048 bytes.

Every failure raises :class:`~sdk.errors.SpiffeIdError` whose ``rule`` names
the broken rule, for example::

    >>> SpiffeId.parse("spiffe://Example.org/web")
    Traceback (most recent call last):
    ...
    sdk.errors.SpiffeIdError: trust domain characters are limited to lowercase \
letters, numbers, dots, dashes, and underscores: 'spiffe://Example.org/web'

Values are built only by :meth:`TrustDomain.parse`, :meth:`SpiffeId.parse`
and :meth:`SpiffeId.from_segments`, so holding one means it is valid.
"""

from __future__ import annotations

from typing import Any, NoReturn

from sdk.errors import SpiffeIdError

__all__ = ["MAX_ID_BYTES", "MAX_TRUST_DOMAIN_CHARS", "SpiffeId", "TrustDomain"]

SCHEME_PREFIX = "spiffe://"
MAX_ID_BYTES = 2048
MAX_TRUST_DOMAIN_CHARS = 255

_TD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-_")
_SEGMENT_CHARS = _TD_CHARS | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")

# Only parse() and from_segments() may construct values.
_PRIVATE = object()

_MESSAGES = {
    "empty": "cannot be empty",
    "too_long": f"SPIFFE ID is longer than {MAX_ID_BYTES} bytes",
    "scheme": "scheme is missing or invalid",
    "missing_trust_domain": "trust domain is missing",
    "trust_domain_too_long": (
        f"trust domain is longer than {MAX_TRUST_DOMAIN_CHARS} characters"
    ),
    "trust_domain_chars": (
        "trust domain characters are limited to lowercase letters, numbers, "
        "dots, dashes, and underscores"
    ),
    "trust_domain_has_path": "a trust domain cannot have a path",
    "userinfo": "user info is not allowed",
    "port": "port is not allowed",
    "query": "query is not allowed",
    "fragment": "fragment is not allowed",
    "percent_encoding": "percent-encoding is not allowed",
    "no_leading_slash": "path must have a leading slash",
    "empty_segment": "path cannot contain empty segments",
    "dot_segment": "path cannot contain dot segments",
    "trailing_slash": "path cannot have a trailing slash",
    "segment_chars": (
        "path segment characters are limited to letters, numbers, dots, "
        "dashes, and underscores"
    ),
}


def _fail(rule: str, value: object) -> NoReturn:
    raise SpiffeIdError(f"{_MESSAGES[rule]}: {value!r}", rule=rule)


def _check_no_uri_extras(text: str, original: str) -> None:
    """Reject URI parts a SPIFFE ID never has, naming the part found."""
    if "?" in text:
        _fail("query", original)
    if "#" in text:
        _fail("fragment", original)
    if "%" in text:
        _fail("percent_encoding", original)


def _check_trust_domain(name: str, original: str) -> None:
    if not name:
        _fail("missing_trust_domain", original)
    if "@" in name:
        _fail("userinfo", original)
    if ":" in name:
        _fail("port", original)
    if not _TD_CHARS.issuperset(name):
        _fail("trust_domain_chars", original)
    if len(name) > MAX_TRUST_DOMAIN_CHARS:
        _fail("trust_domain_too_long", original)


def _check_segment(segment: str, original: str) -> None:
    if not segment:
        _fail("empty_segment", original)
    if segment in (".", ".."):
        _fail("dot_segment", original)
    if not _SEGMENT_CHARS.issuperset(segment):
        _fail("segment_chars", original)


def _check_path(path: str, original: str) -> None:
    """Check a non-empty path ("/a/b")."""
    if not path.startswith("/"):
        _fail("no_leading_slash", original)
    segments = path[1:].split("/")
    for index, segment in enumerate(segments):
        if not segment and index == len(segments) - 1:
            _fail("trailing_slash", original)
        _check_segment(segment, original)


class _Frozen:
    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")


class TrustDomain(_Frozen):
    """A SPIFFE trust domain such as ``example.org``; build with :meth:`parse`."""

    __slots__ = ("name",)
    name: str

    def __init__(self, name: str, *, _key: object = None) -> None:
        if _key is not _PRIVATE:
            raise TypeError("build a TrustDomain with TrustDomain.parse()")
        object.__setattr__(self, "name", name)

    @classmethod
    def parse(cls, s: str) -> TrustDomain:
        """Parse ``"example.org"`` or ``"spiffe://example.org"``.

        A SPIFFE ID with a path is refused (rule ``trust_domain_has_path``):
        a trust domain setting that names a workload is a mistake.
        """
        if not isinstance(s, str):
            raise TypeError(f"trust domain must be a str, not {type(s).__name__}")
        if not s:
            _fail("missing_trust_domain", s)
        if s.startswith(SCHEME_PREFIX):
            spiffe_id = SpiffeId.parse(s)
            if spiffe_id.path:
                _fail("trust_domain_has_path", s)
            return spiffe_id.trust_domain
        if "://" in s:
            _fail("scheme", s)
        _check_no_uri_extras(s, s)
        if "/" in s:
            _fail("trust_domain_chars", s)
        _check_trust_domain(s, s)
        return cls(s, _key=_PRIVATE)

    def id(self) -> SpiffeId:
        """The trust domain's own ID, ``spiffe://<name>`` with an empty path."""
        return SpiffeId(self, "", _key=_PRIVATE)

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"TrustDomain({self.name!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TrustDomain):
            return NotImplemented
        return self.name == other.name

    def __lt__(self, other: TrustDomain) -> bool:
        if not isinstance(other, TrustDomain):
            return NotImplemented
        return self.name < other.name

    def __hash__(self) -> int:
        return hash((TrustDomain, self.name))

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (TrustDomain.parse, (self.name,))


class SpiffeId(_Frozen):
    """A SPIFFE ID such as ``spiffe://example.org/ns/prod/sa/web``.

    Build with :meth:`parse` or :meth:`from_segments`::

        >>> sid = SpiffeId.parse("spiffe://example.org/ns/prod/sa/web")
        >>> sid.trust_domain, sid.path
        (TrustDomain('example.org'), '/ns/prod/sa/web')
        >>> sid.attributes()
        {'ns': 'prod', 'sa': 'web'}
    """

    __slots__ = ("trust_domain", "path")
    trust_domain: TrustDomain
    path: str

    def __init__(self, trust_domain: TrustDomain, path: str, *, _key: object = None) -> None:
        if _key is not _PRIVATE:
            raise TypeError("build a SpiffeId with SpiffeId.parse() or from_segments()")
        object.__setattr__(self, "trust_domain", trust_domain)
        object.__setattr__(self, "path", path)

    @classmethod
    def parse(cls, s: str) -> SpiffeId:
        """Parse a SPIFFE ID, raising :class:`SpiffeIdError` naming the rule broken."""
        if not isinstance(s, str):
            raise TypeError(f"SPIFFE ID must be a str, not {type(s).__name__}")
        if not s:
            _fail("empty", s)
        if len(s.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
            raise SpiffeIdError(
                f"{_MESSAGES['too_long']}: {s[:64]!r}... ({len(s)} characters)",
                rule="too_long",
            )
        if not s.startswith(SCHEME_PREFIX):
            _fail("scheme", s)
        rest = s[len(SCHEME_PREFIX) :]
        _check_no_uri_extras(rest, s)
        name, slash, path = rest.partition("/")
        _check_trust_domain(name, s)
        if slash:
            path = "/" + path
            _check_path(path, s)
        return cls(TrustDomain(name, _key=_PRIVATE), path, _key=_PRIVATE)

    @classmethod
    def from_segments(cls, td: TrustDomain | str, *segments: str) -> SpiffeId:
        """Build ``spiffe://<td>/<seg>/<seg>...``; each segment is checked on its own.

        A segment may not contain ``/``: ``from_segments("example.org", "a/b")``
        fails (rule ``segment_chars``) rather than silently adding a level.
        """
        trust_domain = td if isinstance(td, TrustDomain) else TrustDomain.parse(td)
        for segment in segments:
            if not isinstance(segment, str):
                raise TypeError(f"path segment must be a str, not {type(segment).__name__}")
            _check_no_uri_extras(segment, segment)
            _check_segment(segment, segment)
        path = "".join("/" + segment for segment in segments)
        size = len(SCHEME_PREFIX) + len(trust_domain.name) + len(path)
        if size > MAX_ID_BYTES:
            raise SpiffeIdError(
                f"{_MESSAGES['too_long']}: {size} bytes from {len(segments)} segments",
                rule="too_long",
            )
        return cls(trust_domain, path, _key=_PRIVATE)

    @property
    def segments(self) -> tuple[str, ...]:
        """The path's segments: ``("ns", "prod", "sa", "web")``; ``()`` for a root ID."""
        return tuple(self.path[1:].split("/")) if self.path else ()

    def attributes(self) -> dict[str, str]:
        """Read the path as ``key/value`` pairs: ``ns/prod/sa/web`` -> ``{"ns": "prod", "sa": "web"}``.

        Pairs are read left to right; an odd last segment has no value and is
        left out; when a key repeats, its first value is kept.
        """
        segments = self.segments
        attrs: dict[str, str] = {}
        for index in range(0, len(segments) - 1, 2):
            attrs.setdefault(segments[index], segments[index + 1])
        return attrs

    def member_of(self, td: TrustDomain) -> bool:
        """Whether this ID belongs to trust domain ``td``."""
        return self.trust_domain == td

    def __str__(self) -> str:
        return f"{SCHEME_PREFIX}{self.trust_domain.name}{self.path}"

    def __repr__(self) -> str:
        return f"SpiffeId({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SpiffeId):
            return NotImplemented
        return self.trust_domain == other.trust_domain and self.path == other.path

    def __lt__(self, other: SpiffeId) -> bool:
        if not isinstance(other, SpiffeId):
            return NotImplemented
        return (self.trust_domain.name, self.path) < (other.trust_domain.name, other.path)

    def __hash__(self) -> int:
        return hash((SpiffeId, self.trust_domain.name, self.path))

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (SpiffeId.parse, (str(self),))
