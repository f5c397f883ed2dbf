"""Identity templates: how a workload's SPIFFE ID path is built from its pod.

A template is a path whose segments hold literals and ``{field}``
placeholders. Fields are ``namespace``, ``service_account``, ``cluster``,
``pod_name`` and ``labels.<key>`` (any Kubernetes label key, prefixed ones
such as ``labels.app.kubernetes.io/name`` included)::

    >>> t = IdentityTemplate.parse("cluster/{cluster}/app/{labels.app}/env/{labels.env}")
    >>> t.required_labels
    ('app', 'env')
    >>> str(t.render(TrustDomain.parse("example.org"), namespace="prod",
    ...              service_account="web", cluster="c1",
    ...              labels={"app": "web", "env": "prod"}))
    'spiffe://example.org/cluster/c1/app/web/env/prod'

The template text is checked when parsed (at most one field per path
segment, so that no two workloads render the same ID); a missing value, or a value that is
not a valid SPIFFE ID path segment, fails :meth:`IdentityTemplate.render`
with a :class:`~sdk.errors.TemplateError` whose ``field`` names it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from sdk.errors import SpiffeIdError, TemplateError
from sdk.spiffeid import SpiffeId, TrustDomain

__all__ = ["DEFAULT_TEMPLATE", "IdentityTemplate"]

DEFAULT_TEMPLATE = "ns/{namespace}/sa/{service_account}"

_PLAIN_FIELDS = ("namespace", "service_account", "cluster", "pod_name")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_SEGMENT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")
# Kubernetes label key: optional DNS-subdomain prefix and "/", then a name.
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_EMPTY: Mapping[str, str] = MappingProxyType({})

# A segment is a tuple of parts; a part is ("text", literal) or ("field", name).
_Part = tuple[str, str]


@dataclass(frozen=True)
class IdentityTemplate:
    """A parsed identity template; build with :meth:`parse`."""

    text: str
    _segments: tuple[tuple[_Part, ...], ...]

    @classmethod
    def parse(cls, text: str) -> IdentityTemplate:
        """Parse template ``text`` such as ``"ns/{namespace}/sa/{service_account}"``."""
        if not isinstance(text, str):
            raise TypeError(f"template must be a str, not {type(text).__name__}")
        body = text[1:] if text.startswith("/") else text
        if not body:
            raise TemplateError("identity template is empty")
        segments: list[list[_Part]] = [[]]
        position = 0
        for match in _PLACEHOLDER.finditer(body):
            _add_literal(segments, body[position : match.start()], text)
            segments[-1].append(("field", _check_field(match.group(1), text)))
            position = match.end()
        _add_literal(segments, body[position:], text)
        for index, segment in enumerate(segments):
            if not segment:
                where = "a trailing slash" if index == len(segments) - 1 else "an empty segment"
                raise TemplateError(f"identity template {text!r} has {where}")
            if all(kind == "text" for kind, _ in segment) and "".join(v for _, v in segment) in (".", ".."):
                raise TemplateError(f"identity template {text!r} has a dot segment")
            names = [value for kind, value in segment if kind == "field"]
            if len(names) > 1:
                # Values may contain "-", "." and "_": "a" + "b-c" and "a-b" + "c"
                # would render the same segment, so two workloads one ID.
                raise TemplateError(
                    f"identity template {text!r}: {', '.join(names)} share a path segment; "
                    "use one field per path segment so that no two workloads get the same ID",
                    field=names[1],
                )
        return cls(text, tuple(tuple(s) for s in segments))

    @property
    def fields(self) -> tuple[str, ...]:
        """Every field the template uses, in order of first use."""
        seen = (value for segment in self._segments for kind, value in segment if kind == "field")
        return tuple(dict.fromkeys(seen))

    @property
    def required_labels(self) -> tuple[str, ...]:
        """The pod label keys the template needs, in order of first use."""
        return tuple(f[len("labels.") :] for f in self.fields if f.startswith("labels."))

    def render(
        self,
        trust_domain: TrustDomain,
        *,
        namespace: str,
        service_account: str,
        labels: Mapping[str, str] = _EMPTY,
        cluster: str = "",
        pod_name: str = "",
    ) -> SpiffeId:
        """The SPIFFE ID of a workload with these attributes."""
        plain = {
            "namespace": namespace,
            "service_account": service_account,
            "cluster": cluster,
            "pod_name": pod_name,
        }
        rendered: list[str] = []
        for segment in self._segments:
            pieces: list[str] = []
            for kind, value in segment:
                if kind == "text":
                    pieces.append(value)
                    continue
                if value.startswith("labels."):
                    key = value[len("labels.") :]
                    if key not in labels:
                        raise TemplateError(
                            f"the pod has no label '{key}', which the identity template requires",
                            field=value,
                        )
                    pieces.append(_check_value(labels[key], value))
                else:
                    pieces.append(_check_value(plain[value], value))
            text = "".join(pieces)
            if text in (".", ".."):
                names = [v for k, v in segment if k == "field"]
                raise TemplateError(
                    f"{', '.join(names)} renders the path segment {text!r}, which is not allowed",
                    field=names[0],
                )
            rendered.append(text)
        try:
            return SpiffeId.from_segments(trust_domain, *rendered)
        except SpiffeIdError as err:
            raise TemplateError(f"identity template {self.text!r} renders an invalid SPIFFE ID: {err}") from err

    def __str__(self) -> str:
        return self.text


def _add_literal(segments: list[list[_Part]], literal: str, text: str) -> None:
    if "{" in literal or "}" in literal:
        raise TemplateError(f"identity template {text!r} has an unbalanced brace")
    pieces = literal.split("/")
    for index, piece in enumerate(pieces):
        if index:
            segments.append([])
        if piece:
            if not _SEGMENT_CHARS.issuperset(piece):
                raise TemplateError(
                    f"identity template {text!r}: literal {piece!r} may only use letters, numbers, "
                    "dots, dashes, and underscores"
                )
            segments[-1].append(("text", piece))


def _check_field(name: str, text: str) -> str:
    if name in _PLAIN_FIELDS:
        return name
    if name.startswith("labels."):
        key = name[len("labels.") :]
        if _LABEL_KEY.match(key) and len(key) <= 317:
            return name
        raise TemplateError(f"identity template {text!r}: {key!r} is not a valid label key", field=name)
    known = ", ".join([*_PLAIN_FIELDS, "labels.<key>"])
    raise TemplateError(f"identity template {text!r}: unknown field {{{name}}}; known: {known}", field=name)


def _check_value(value: object, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise TemplateError(f"{field} is empty, but the identity template requires it", field=field)
    if not _SEGMENT_CHARS.issuperset(value):
        raise TemplateError(
            f"{field} value {value!r} is not a valid SPIFFE ID path segment: only letters, numbers, "
            "dots, dashes, and underscores are allowed",
            field=field,
        )
    return value
