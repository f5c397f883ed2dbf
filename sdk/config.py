"""One typed layer for trustmesh's configuration files: YAML in, frozen dataclasses out.

Each service declares its file once, as frozen dataclasses whose fields carry
their types, defaults and constraints (``Annotated[int, Meta(ge=1)]``);
:func:`convert` has msgspec check a decoded document against them, refuses
keys no dataclass declares, and turns every failure into one
:class:`~sdk.errors.ConfigError` (or the service's subclass) naming the field
as the file spells it, what was expected and what was found::

    config /etc/trustmesh/sidecar.yaml: limits.idle_timeout: expected `float`, got `str` 'soon'

What msgspec cannot say is said by the declarations themselves: a value type
(a ``str`` subclass such as :class:`HostPort`) parses its text in a
``from_config`` class method, and a dataclass checks rules across its fields
in ``__post_init__``, raising :class:`Invalid` with the field at fault.
Either way the error lands on the right path.

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Limits:
...     max_headers: Count = 100
>>> convert({"max_headers": 0}, Limits, ConfigError)
Traceback (most recent call last):
...
sdk.errors.ConfigError: config: max_headers: expected `int` >= 1, got 0
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import re
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from sdk.errors import ConfigError

__all__ = [
    "AnyPort",
    "ConfigError",
    "Count",
    "HostPort",
    "Invalid",
    "ListenAddress",
    "NonEmpty",
    "Port",
    "PortKey",
    "Positive",
    "Seconds",
    "convert",
    "duration_seconds",
    "load",
    "parse_yaml",
]

T = TypeVar("T")

NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
AnyPort = Annotated[int, msgspec.Meta(ge=0, le=65535)]  # 0: any free port
Count = Annotated[int, msgspec.Meta(ge=1)]
Positive = Annotated[float, msgspec.Meta(gt=0)]


class Invalid(ValueError):
    """A rule across fields (raised in ``__post_init__``) or a value's own rule was broken.

    ``field`` is relative to the dataclass that raised it (``token_file``,
    ``federates_with[1].trust_domain``); empty names the dataclass itself.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"expected {what} (a non-empty string), got {value!r}")
    return value


class HostPort(str):
    """``host:port`` (``[::1]:8080`` for IPv6) with a port in 1-65535; the text is kept as written."""

    lowest_port = 1

    @classmethod
    def from_config(cls, value: Any) -> HostPort:
        text = _text(value, "HOST:PORT")
        host, sep, port = text.rpartition(":")
        low = cls.lowest_port
        if not sep or not host.strip("[]") or not (port.isascii() and port.isdigit()) or not low <= int(port) <= 65535:
            raise ValueError(f"expected HOST:PORT with a port in {low}-65535, got {text!r}")
        return cls(text)

    @property
    def host(self) -> str:
        return self.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.rpartition(":")[2])


class ListenAddress(HostPort):
    """``host:port`` to listen on; port 0 picks any free port."""

    lowest_port = 0


class PortKey(int):
    """A port number used as a mapping key: ``8080`` or ``"8080"`` (YAML keys are often quoted)."""

    @classmethod
    def from_config(cls, value: Any) -> PortKey:
        if isinstance(value, str) and value.isascii() and value.isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            raise ValueError(f"expected a port number in 1-65535, got {value!r}")
        return cls(value)


_DURATION = re.compile(r"(\d+)(d|h|m|s)")
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def duration_seconds(text: str) -> int:
    """Whole seconds in ``8760h``, ``1h30m``, ``5m``, ``45s`` or ``30d``; raises ValueError.

    >>> duration_seconds("1h30m"), duration_seconds("30d")
    (5400, 2592000)
    """
    pos, seconds = 0, 0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        seconds += int(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not text or pos != len(text):
        raise ValueError(f"invalid duration {text!r} (use e.g. 8760h, 1h30m, 5m, 45s)")
    return seconds


class Seconds(int):
    """A positive duration in whole seconds, written as a number (``3600``) or as text (``1h``)."""

    @classmethod
    def from_config(cls, value: Any) -> Seconds:
        if isinstance(value, str):
            seconds = duration_seconds(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            seconds = value
        else:
            raise TypeError(f"expected a duration (seconds, or text such as 90s, 5m, 1h30m, 24h), got {value!r}")
        if seconds <= 0:
            raise ValueError(f"expected a positive duration, got {value!r}")
        return cls(seconds)


def _hook(base: Path) -> Callable[[type, Any], Any]:
    """msgspec's hook for the types it does not know: the SPIFFE values, paths and value types."""
    from sdk.spiffeid import SpiffeId, TrustDomain

    parsers: dict[type, Callable[[Any], Any]] = {
        TrustDomain: lambda v: TrustDomain.parse(_text(v, "a trust domain")),
        SpiffeId: lambda v: SpiffeId.parse(_text(v, "a SPIFFE ID")),
        Path: lambda v: base / _text(v, "a path"),
    }

    def dec_hook(tp: type, value: Any) -> Any:
        if tp in parsers:
            return parsers[tp](value)
        from_config = getattr(tp, "from_config", None)
        if from_config is None:
            raise NotImplementedError(tp)
        return from_config(value)

    return dec_hook


def convert(
    data: Any,
    schema: type[T],
    error: type[ConfigError],
    *,
    base: Path = Path(),
    null_is_absent: bool = True,
    empty_is_absent: frozenset[str] = frozenset(),
) -> T:
    """``data`` (a decoded YAML document) checked against ``schema``; raises ``error``.

    A relative ``Path`` is taken relative to ``base``.
    With ``null_is_absent`` a key written without a value (``key:``) counts as
    not given, so it takes its default (or is reported as required); so does
    ``""`` for the keys named in ``empty_is_absent``.
    """
    if null_is_absent or empty_is_absent:
        data = _drop_unset(data, null_is_absent, empty_is_absent)
    _check_keys(data, schema, "", error)
    hook = _hook(base)
    try:
        return msgspec.convert(data, schema, dec_hook=hook)
    except msgspec.ValidationError as err:
        field, message = _explain(err, data, schema, hook)
        raise error(field or "(top level)", message) from None


def load(path: str | Path, parse: Callable[[Any], T], error: type[ConfigError]) -> T:
    """Read the YAML file ``path`` and ``parse`` its document; every error names the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise error("(file)", f"cannot read {path}: {reason}", file=str(path)) from err
    try:
        return parse(parse_yaml(text, error))
    except ConfigError as err:
        raise err.in_file(path) from err.__cause__


def parse_yaml(text: str, error: type[ConfigError]) -> Any:
    """The YAML document in ``text`` (``None`` when empty); a syntax error names its line and column."""
    import yaml

    try:
        return yaml.load(text, Loader=_strict_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise error("(file)", f"not valid YAML{where}: {problem}") from err


@functools.cache
def _strict_loader() -> type:
    """PyYAML's SafeLoader, refusing a mapping that gives one key twice (PyYAML keeps the last one
    silently, so a second ``port:`` further down a file would win without a word)."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: its keys may be overridden
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    if key in seen:
                        raise yaml.constructor.ConstructorError(
                            "while reading a mapping", node.start_mark, f"the key {key!r} is given twice",
                            key_node.start_mark)
                    seen.add(key)
                except TypeError:  # an unhashable key: SafeLoader refuses it just below, in its own words
                    pass
            return super().construct_mapping(node, deep)

    return StrictLoader


# -- what the declarations say ---------------------------------------------------------------


def _drop_unset(data: Any, null: bool, empty: frozenset[str]) -> Any:
    if isinstance(data, Mapping):
        return {
            k: _drop_unset(v, null, empty)
            for k, v in data.items()
            if not (null and v is None) and not (v == "" and k in empty)
        }
    if isinstance(data, list):
        return [_drop_unset(v, null, empty) for v in data]
    return data


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _shape(tp: Any, value: Any) -> Any:
    """``tp`` without ``Annotated`` and, of a union, the member that ``value``'s kind would go to."""
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        members = [_shape(t, value) for t in typing.get_args(tp) if t is not type(None)]
        for member in members:
            if isinstance(value, Mapping) and (dataclasses.is_dataclass(member) or _is_mapping(member)):
                return member
            if isinstance(value, list) and _item_type(member) is not None:
                return member
        return members[0] if len(members) == 1 else tp
    return tp


def _is_mapping(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    return isinstance(origin, type) and issubclass(origin, Mapping)


def _item_type(tp: Any) -> Any:
    if typing.get_origin(tp) in (list, tuple, set, frozenset, collections.abc.Sequence):
        return (typing.get_args(tp) or (Any,))[0]
    return None


def _join(where: str, rel: str) -> str:
    """``where`` and then ``rel`` (a name, ``[2]`` or a path relative to ``where``)."""
    if not where or not rel:
        return where or rel
    return where + rel if rel.startswith("[") else f"{where}.{rel}"


def _key(key: Any) -> str:
    """A mapping key as a path step (an empty key shows as ``""``)."""
    return str(key) or '""'


def _check_keys(data: Any, tp: Any, where: str, error: type[ConfigError]) -> None:
    """Refuse keys that the dataclass a mapping becomes does not declare (msgspec ignores them)."""
    tp = _shape(tp, data)
    if dataclasses.is_dataclass(tp) and isinstance(data, Mapping):
        hints = _hints(tp)  # type: ignore[arg-type]
        known = [f.name for f in dataclasses.fields(tp) if f.init]
        for key, value in data.items():
            if key not in known:
                raise error(_join(where, _key(key)), f"unknown key (known: {', '.join(known)})")
            _check_keys(value, hints[key], _join(where, key), error)
    elif _is_mapping(tp) and isinstance(data, Mapping):
        value_type = typing.get_args(tp)[1] if typing.get_args(tp) else Any
        for key, value in data.items():
            _check_keys(value, value_type, _join(where, _key(key)), error)
    elif (item := _item_type(tp)) is not None and isinstance(data, list):
        for i, value in enumerate(data):
            _check_keys(value, item, f"{where}[{i}]", error)


_AT = re.compile(r"(?s)(?P<message>.*?)(?: - at (?P<key>`key` in )?`\$(?P<path>[^`]*)`)?")
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")
_MISSING = re.compile(r"Object missing required field `([^`]+)`")


def _explain(err: msgspec.ValidationError, data: Any, tp: Any, hook: Callable[[type, Any], Any]) -> tuple[str, str]:
    """(field path, message) of a msgspec error, found by walking the document beside its type."""
    match = _AT.fullmatch(str(err))
    assert match is not None  # the pattern matches any text
    message, path = match["message"], match["path"] or ""
    where, value, found = "", data, True
    for name, index in _STEP.findall(path):
        tp = _shape(tp, value)
        if index == "...":  # a mapping's value: msgspec does not say which
            return _explain_entry(value, tp, where, hook, message)
        if name:
            where = _join(where, name)
            tp = _hints(tp)[name] if dataclasses.is_dataclass(tp) else Any
            found = found and isinstance(value, Mapping) and name in value
            value = value.get(name) if found else None
        else:
            where = f"{where}[{index}]"
            tp = _item_type(tp) or Any
            found = found and isinstance(value, list) and int(index) < len(value)
            value = value[int(index)] if found else None
    if match["key"]:
        return _explain_entry(value, _shape(tp, value), where, hook, message)
    cause = err.__cause__
    if isinstance(cause, Invalid):
        return (_join(where, cause.field) if cause.field else where), str(cause)
    if cause is not None:  # a value parser refused the text
        return where, str(cause)
    if missing := _MISSING.fullmatch(message):
        return _join(where, missing[1]), "is required"
    tp = _shape(tp, value)
    if typing.get_origin(tp) is Literal and found:  # msgspec says "Invalid enum value" or names the type
        return where, f"expected one of {', '.join(map(str, typing.get_args(tp)))}, got {_shown(value)}"
    message = message[:1].lower() + message[1:]
    for msgspec_word, yaml_word in (("`array`", "`list`"), ("`object`", "`mapping`")):
        message = message.replace(msgspec_word, yaml_word)
    if found and message.startswith("expected "):
        message += f" {_shown(value)}" if ", got `" in message else f", got {_shown(value)}"
    return where, message


def _shown(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _explain_entry(
    mapping: Any, tp: Any, where: str, hook: Callable[[type, Any], Any], fallback: str
) -> tuple[str, str]:
    """Find the entry of ``mapping`` (typed ``Mapping[K, V]``) that msgspec refused, and say why."""
    key_type, value_type = typing.get_args(tp) if typing.get_args(tp) else (Any, Any)
    for key, value in (mapping.items() if isinstance(mapping, Mapping) else ()):
        for is_key, item, item_type in ((True, key, key_type), (False, value, value_type)):
            try:
                msgspec.convert(item, item_type, dec_hook=hook)
            except msgspec.ValidationError as err:
                field, message = _explain(err, item, item_type, hook)
                return _join(where, _key(key)) if is_key else _join(_join(where, _key(key)), field), message
    return where, fallback
