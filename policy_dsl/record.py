"""The replayable part of an access-log record: the attribute values an evaluation read.

A record (format version :data:`VERSION`, see docs/access-log.md) carries, besides what
happened, ``attrs``: a flat map from an attribute's canonical spelling
(``request.json.appname``, ``request.headers["x-b3-traceid"]``) to its value, for every path
the policy in force can read plus a fixed base set (who called whom, method, path). Paths that
the request did not have are listed in ``absent``; paths left out on purpose (privacy, or a
value over the size bound) in ``withheld``. ``source.trust_domain``, ``source.path``,
``source.attrs.*`` and ``destination.attrs.*`` are not written: they follow from the IDs
(:func:`policy_dsl.identity.identity_attributes`), and ``context.time`` is the record's
``time``.

The policy knows its paths statically (:attr:`PolicySet.reads`), so recording never touches the
evaluator: a :class:`Recorder` is built once per policy set.

    >>> from policy_dsl import load_policy
    >>> recorder = Recorder(load_policy('policy "p" protects all { allow "a" { '
    ...     'source.authenticated and request.json.appname == "web" } }').reads, omit=["source.ip"])
    >>> recorder.record({"source": {"id": "spiffe://x.example/app/web", "authenticated": True, "ip": "10.0.0.1"},
    ...                  "request": {"method": "POST", "path": "/v1/fetch", "json": {"appname": "web"}}})
    {'attrs': {'source.id': 'spiffe://x.example/app/web', 'source.authenticated': True, 'request.method': 'POST', 'request.path': '/v1/fetch', 'request.json.appname': 'web'}, 'absent': ['destination.id', 'destination.port', 'request.host', 'context.protocol'], 'withheld': ['source.ip']}
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from policy_dsl.compiler import MISSING, getter
from policy_dsl.identity import identity_attributes

__all__ = [
    "BASE_PATHS",
    "VERSION",
    "Recorder",
    "RecordError",
    "attribute_text",
    "known",
    "parse_attribute_text",
    "nested_attributes",
    "read_flat",
    "read_record",
]

VERSION = 1
# Always recorded (present, absent or withheld): enough to say who called whom with what.
BASE_PATHS = (
    ("source", "id"), ("source", "authenticated"), ("source", "ip"),
    ("destination", "id"), ("destination", "port"),
    ("request", "method"), ("request", "path"), ("request", "host"),
    ("context", "protocol"),
)
MAX_VALUE = 1024  # characters of JSON for one value; a longer one is withheld
MAX_LINE = 1 << 20  # a log line longer than this is refused unread
_DERIVED = {("source", "trust_domain"), ("source", "path"), ("source", "attrs"), ("destination", "attrs")}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
_TOKEN = re.compile(r'\.([A-Za-z_][A-Za-z0-9_-]*)|\["((?:[^"\\]|\\.)*)"\]')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n", "\\t": "\t"}


class RecordError(ValueError):
    """A log line that is not a replayable record; the message says why."""


def attribute_text(path: tuple[str, ...]) -> str:
    """The canonical spelling of an attribute path, as the policy language writes it."""
    head, *rest = path
    return head + "".join(f".{s}" if _NAME.match(s) else f"[{_quote(s)}]" for s in rest)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'


_PARSED: dict[str, tuple[str, ...]] = {}


def parse_attribute_text(text: str) -> tuple[str, ...]:
    """The path that :func:`attribute_text` spelled (ValueError if it spells none)."""
    known = _PARSED.get(text)
    if known is not None:
        return known
    head = re.match(r"[A-Za-z_][A-Za-z0-9_]*", text)
    if head is None:
        raise ValueError(f"not an attribute: {text!r}")
    path, at = [head.group()], head.end()
    while at < len(text):
        match = _TOKEN.match(text, at)
        if match is None:
            raise ValueError(f"not an attribute: {text!r} (at character {at + 1})")
        name, quoted = match.groups()
        path.append(name if name is not None else re.sub(r"\\.", lambda m: _UNESCAPE.get(m.group(), m.group()[1]), quoted))
        at = match.end()
    if len(_PARSED) < 65536:
        _PARSED[text] = tuple(path)
    return tuple(path)


def _covered(path: tuple[str, ...], names: Iterable[str]) -> bool:
    """Whether ``path`` or one of its prefixes is spelled in ``names``."""
    names = set(names)
    return any(attribute_text(path[:end]) in names for end in range(1, len(path) + 1))


class Recorder:
    """Picks the values to record for one policy set's paths (plus :data:`BASE_PATHS`).

    ``omit``: attribute spellings (a path or a prefix of paths) never written, for privacy;
    they are listed in ``withheld`` so a replay knows it does not know them.
    """

    def __init__(self, paths: Iterable[tuple[str, ...]], *, omit: Iterable[str] = (), max_value: int = MAX_VALUE) -> None:
        omitted = set(omit)
        wanted = dict.fromkeys(BASE_PATHS)
        for path in sorted(paths):
            if path[:2] in _DERIVED or path[0] == "context" and path != ("context", "protocol"):
                continue  # follows from the IDs, or is the record's own time
            wanted[path] = None
        self._read = tuple(
            (attribute_text(path), getter(path), _covered(path, omitted)) for path in wanted
        )
        self.max_value = max_value

    def record(self, attrs: Mapping) -> dict[str, Any]:
        """``{"attrs": {...}, "absent": [...], "withheld": [...]}`` (empty lists left out)."""
        values: dict[str, Any] = {}
        absent: list[str] = []
        withheld: list[str] = []
        for text, get, omitted in self._read:
            if omitted:
                withheld.append(text)
                continue
            value = get(attrs)
            if value is MISSING:
                absent.append(text)
            elif type(value) is str and len(value) <= self.max_value or type(value) in (bool, int, float):
                values[text] = value
            elif _fits(value, self.max_value):
                values[text] = value
            else:
                withheld.append(text)
        out: dict[str, Any] = {"attrs": values}
        if absent:
            out["absent"] = absent
        if withheld:
            out["withheld"] = withheld
        return out


def _fits(value: Any, bound: int) -> bool:
    try:
        return len(json.dumps(value, separators=(",", ":"))) <= bound
    except (TypeError, ValueError):  # not JSON (a datetime, ...): withheld rather than guessed
        return False


# -- reading records back ----------------------------------------------------------
_IDENTITIES: dict[str, dict[str, Any]] = {}


def _identity(spiffe_id: str) -> dict[str, Any]:
    found = _IDENTITIES.get(spiffe_id)
    if found is None:
        found = identity_attributes(spiffe_id)
        if len(_IDENTITIES) < 65536:
            _IDENTITIES[spiffe_id] = found
    return found


def _checked_identity(text: str, spiffe_id: str) -> dict[str, Any]:
    try:
        return _identity(spiffe_id)
    except ValueError as err:
        raise RecordError(f"{text}: {err}") from None


_MOMENTS: dict[str, datetime] = {}


def _moment(text: str) -> datetime:
    found = _MOMENTS.get(text)
    if found is None:
        try:
            found = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise RecordError(f"bad time {text!r}") from None
        if found.tzinfo is None:
            found = found.replace(tzinfo=timezone.utc)
        if len(_MOMENTS) >= 4096:
            _MOMENTS.clear()
        _MOMENTS[text] = found
    return found


_PLANS: dict[tuple[str, ...], tuple] = {}
_NO_NAMES: list[str] = []


def _plan(keys: tuple[str, ...]) -> tuple:
    """How to nest a flat map with these keys, once: ((text, first, second or None, rest) per
    key, whether one key lies inside another or names a whole section that nesting extends,
    such that only building the document tells whether it holds together)."""
    plan = _PLANS.get(keys)
    if plan is None:
        steps, paths = [], set()
        for text in keys:
            try:
                path = parse_attribute_text(text)
            except ValueError as err:
                raise RecordError(str(err)) from None
            steps.append((text, path[0], path[1] if len(path) > 1 else None, path[2:]))
            paths.add(path)
        entangled = any(path[:end] in paths for path in paths for end in range(1, len(path))) or any(
            len(path) == 1 and path[0] in ("source", "destination", "context") for path in paths
        )
        plan = (tuple(steps), entangled)
        if len(_PLANS) >= 4096:
            _PLANS.clear()
        _PLANS[keys] = plan
    return plan


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    """The evaluator's nested attribute document from a record's flat ``attrs``."""
    nested: dict[str, Any] = {}
    for text, first, second, rest in _plan(tuple(flat))[0]:
        value = flat[text]
        if second is None:
            nested[first] = value
            continue
        node = nested.get(first)
        if node is None:
            node = nested[first] = {}
        for key in (second, *rest[:-1]) if rest else ():
            if not isinstance(node, dict):
                break
            node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise RecordError(f"attribute {text!r} lies inside another recorded value")
        node[rest[-1] if rest else second] = value
    return nested


_FAST: list = []  # [decode, its error class], once a log is read


def _fast_decoder() -> Any:
    """msgspec's JSON decoder, imported only by readers of logs (the sidecar writes them with
    the stdlib); None without msgspec (a dependency: the stdlib alone reads the same, slower)."""
    try:
        import msgspec
    except ImportError:  # pragma: no cover
        _FAST[:] = [None, ()]
    else:
        _FAST[:] = [msgspec.json.Decoder().decode, msgspec.MsgspecError]
    return _FAST[0]


def _decode(line: str | bytes) -> Any:
    """The JSON value of one line. msgspec (when installed) parses it; a line msgspec refuses
    is parsed again by the stdlib, so the lines accepted and the values read are exactly the
    stdlib's (``NaN``, lone surrogates and a BOM, which only the stdlib takes, included)."""
    if len(line) > MAX_LINE:
        raise RecordError(f"line of {len(line)} bytes is over the {MAX_LINE}-byte limit; not read")
    fast = _FAST[0] if _FAST else _fast_decoder()
    if fast is not None:
        try:
            return fast(line)
        except (_FAST[1], RecursionError):
            pass  # the stdlib's verdict (and message) decides
    try:
        return json.loads(line)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise RecordError(f"not JSON ({err or 'nested too deeply'}); a truncated line?") from None


def read_flat(line: str | bytes) -> dict[str, Any]:
    """One log line as a record dict, checked as :func:`read_record` checks it (the same
    errors for the same lines), without building the nested attribute document; pass the
    result to :func:`nested_attributes` for that. Cheaper when only some records need it."""
    if len(line) <= MAX_LINE and _FAST and _FAST[0] is not None:
        try:
            record = _FAST[0](line)
        except (_FAST[1], RecursionError):
            record = _decode(line)
    else:
        record = _decode(line)
    if record.__class__ is not dict:
        raise RecordError("not a JSON object")
    version = record.get("v")
    if version != VERSION:
        if version is None:
            raise RecordError(f"no version field 'v' (written before format {VERSION}?); cannot replay")
        raise RecordError(f"record version {version!r}; this trustmesh reads version {VERSION}")
    flat = record.get("attrs")
    if flat is None and record.get("decision") not in ("allow", "deny"):
        return record  # no policy decision (outbound, errors): nothing to replay
    if not isinstance(flat, dict):
        raise RecordError("no 'attrs' object: the record holds no attribute values")
    for key in ("absent", "withheld"):
        if not isinstance(record.get(key, _NO_NAMES), list):
            raise RecordError(f"'{key}' must be a list of attribute names")
    plan = _PLANS.get(tuple(flat)) or _plan(tuple(flat))
    if plan[1]:  # one name inside another: only building the document tells
        nested_attributes(record)
    for text in ("source.id", "destination.id"):
        spiffe_id = flat.get(text)
        if spiffe_id.__class__ is str and spiffe_id not in _IDENTITIES:
            _checked_identity(text, spiffe_id)
    time = record.get("time")
    if time.__class__ is str and time not in _MOMENTS:
        _moment(time)
    return record


def nested_attributes(record: dict[str, Any]) -> dict[str, Any] | None:
    """The evaluator's nested attribute document of a record from :func:`read_flat` (None for
    a record no policy decided)."""
    flat = record.get("attrs")
    if flat is None:
        return None
    nested = _nest(flat)
    for side in ("source", "destination"):
        section = nested.get(side)
        if not isinstance(section, (dict, type(None))):
            raise RecordError(f"attribute {side!r} is not an object: it cannot hold {side}.id")
        if section is not None and isinstance(section.get("id"), str):
            identity = _checked_identity(f"{side}.id", section["id"])
            section.setdefault("attrs", identity["attrs"])
            if side == "source":
                section.setdefault("trust_domain", identity["trust_domain"])
                section.setdefault("path", identity["path"])
    time = record.get("time")
    if isinstance(time, str):
        context = nested.setdefault("context", {})
        if not isinstance(context, dict):
            raise RecordError("attribute 'context' is not an object: it cannot hold context.time")
        context["time"] = _moment(time)
    return nested


def read_record(line: str | bytes) -> dict[str, Any]:
    """One log line as a record dict with ``attrs`` rebuilt into the evaluator's nested shape
    (under the key ``"_attrs"``; None for a record no policy decided, such as an outbound
    one); RecordError says what is wrong with any other line."""
    record = read_flat(line)
    record["_attrs"] = nested_attributes(record)
    return record


@functools.lru_cache(maxsize=4096)
def _spellings(path: tuple[str, ...]) -> tuple[str, ...]:
    """How ``path`` and each of its prefixes are spelled, longest first."""
    return tuple(attribute_text(path[:end]) for end in range(len(path), 0, -1))


def known(path: tuple[str, ...], record: Mapping[str, Any]) -> bool:
    """Whether ``record`` tells the value (or the absence) of ``path``: it, or a prefix of it,
    was recorded or listed absent (the ID for attributes that follow from it)."""
    flat = record["attrs"]
    if path[:2] in _DERIVED:
        path = (path[0], "id")
    elif path == ("context", "time"):
        return "time" in record
    spelled = _spellings(path)
    if any(text in flat for text in spelled):
        return True
    absent = record.get("absent", ())
    return any(text in absent for text in spelled)
