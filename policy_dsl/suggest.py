"""Suggest a least-privilege policy from the allowed flows in access-log records.

One policy per destination (``destination.id``), default deny, and one allow rule per caller
and method: the caller by its SPIFFE ID (or the JWT-SVID subject; callers with neither by
their IP addresses), the ports and the paths seen. A path segment is generalised to ``*``
where its values are identifiers (numbers, UUIDs, long hex) or where, all else equal, it took
many values; every rule is commented with what was seen and how often. The text passes
``policy check`` without warnings, and replaying the same records against it changes no
allowed request into a denied one (both are tested).

    >>> suggester = Suggester()
    >>> for n in (17, 18):
    ...     suggester.add({"decision": "allow", "attrs": {
    ...         "source.id": "spiffe://x.example/ns/shop/app/web", "source.authenticated": True,
    ...         "destination.id": "spiffe://x.example/ns/shop/app/orders", "destination.port": 8080,
    ...         "request.method": "GET", "request.path": f"/v1/orders/{n}"}})
    >>> print(suggester.text(), end="")
    # Suggested by trustmesh policy suggest from 2 allowed requests. Review before use.
    default deny
    <BLANKLINE>
    # spiffe://x.example/ns/shop/app/orders: 2 requests from 1 caller(s)
    policy "orders" protects destination.id == "spiffe://x.example/ns/shop/app/orders" {
      # GET from spiffe://x.example/ns/shop/app/web: 2 requests
      #   /v1/orders/*: 2 requests; segment 3 took 2 values (number): 17, 18
      allow "web-get" {
        source.id == "spiffe://x.example/ns/shop/app/web"
        and request.method == "GET"
        and destination.port == 8080
        and request.path matches "/v1/orders/*"
      }
    }
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

from policy_dsl.flows import GENERIC, generic_segment
from policy_dsl.fmt import format_text

__all__ = ["MANY", "Suggester"]

MANY = 8  # this many distinct values of one segment (all else equal) make it a "*"
_SHOWN = 4  # values shown in a comment
_SAFE = re.compile(r"[^a-z0-9-]+")


def _string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'


def _short(spiffe_id: str) -> str:
    """A readable name for an ID: its ``app``/``sa`` attribute, else its last segment."""
    segments = spiffe_id.split("/")[3:]
    pairs = dict(zip(segments[::2], segments[1::2]))
    for key in ("app", "sa", "service", "workload"):
        if pairs.get(key):
            return pairs[key]
    return segments[-1] if segments and segments[-1] else spiffe_id.split("/")[2]


def _slug(text: str) -> str:
    return _SAFE.sub("-", text.lower()).strip("-") or "flow"


class _Flows:
    """Requests seen from one caller with one method to one destination."""

    __slots__ = ("count", "paths", "ports", "ips")

    def __init__(self) -> None:
        self.count = 0
        self.paths: Counter[str] = Counter()
        self.ports: set[int] = set()
        self.ips: set[str] = set()


def _generalise(paths: Counter[str]) -> list[tuple[str, list[str], int]]:
    """(pattern or exact path, comment notes, request count) for the paths seen."""
    patterns: dict[tuple[str, ...], Counter[str]] = {}
    for path, count in paths.items():
        segments = tuple(
            GENERIC if index and (generic_segment(s) or "*" in s) else s for index, s in enumerate(path.split("/"))
        )
        patterns.setdefault(segments, Counter())[path] += count
    # a position that, all else equal, took MANY values or more becomes "*"
    width = max((len(p) for p in patterns), default=0)
    for index in range(1, width):
        groups: dict[tuple, set[str]] = {}
        for segments in patterns:
            if index < len(segments):
                groups.setdefault((len(segments), segments[:index], segments[index + 1 :]), set()).add(segments[index])
        merged: dict[tuple[str, ...], Counter[str]] = {}
        for segments, seen in patterns.items():
            if index < len(segments) and len(groups[(len(segments), segments[:index], segments[index + 1 :])]) >= MANY:
                segments = (*segments[:index], GENERIC, *segments[index + 1 :])
            merged.setdefault(segments, Counter()).update(seen)
        patterns = merged
    out = []
    for segments, seen in sorted(patterns.items()):
        pattern = "/".join(segments)
        total = sum(seen.values())
        if GENERIC not in segments:
            out.append((pattern, [f"{pattern}: {total} requests"], total))
            continue
        notes = [f"{pattern}: {total} requests"]
        for index, segment in enumerate(segments):
            if segment != GENERIC:
                continue
            values = sorted({path.split("/")[index] for path in seen})
            kinds = sorted({generic_segment(v) or "name" for v in values})
            shown = ", ".join(values[:_SHOWN]) + (", ..." if len(values) > _SHOWN else "")
            notes.append(f"segment {index} took {len(values)} values ({'/'.join(kinds)}): {shown}")
        out.append((pattern, ["; ".join(notes)], total))
    return out


class Suggester:
    """Collects allowed flows from records (see :mod:`policy_dsl.record`), then writes policy text."""

    def __init__(self) -> None:
        # destination id -> (caller key, method or None for TCP) -> flows
        self._flows: dict[str, dict[tuple, _Flows]] = {}
        self.requests = 0
        self.ignored = 0  # denied, undecided, or without a destination ID

    def add(self, record: Mapping[str, Any]) -> None:
        attrs = record.get("attrs") or {}
        destination = attrs.get("destination.id")
        if record.get("decision") != "allow" or not isinstance(destination, str):
            self.ignored += 1
            return
        self.requests += 1
        if isinstance(attrs.get("source.id"), str):
            caller: tuple = ("id", attrs["source.id"])
        elif isinstance(attrs.get("request.jwt.sub"), str):
            caller = ("jwt", attrs["request.jwt.sub"])
        else:
            caller = ("unauthenticated", "")
        method = attrs.get("request.method")
        flows = self._flows.setdefault(destination, {}).setdefault((caller, method if isinstance(method, str) else None), _Flows())
        flows.count += 1
        path = attrs.get("request.path")
        if method is not None and isinstance(path, str):
            flows.paths[path] += 1
        if type(attrs.get("destination.port")) is int:
            flows.ports.add(attrs["destination.port"])
        if caller[0] == "unauthenticated" and isinstance(attrs.get("source.ip"), str):
            flows.ips.add(attrs["source.ip"])

    def text(self) -> str:
        """The suggested policy file, in canonical layout."""
        lines = [
            f"# Suggested by trustmesh policy suggest from {self.requests} allowed requests. Review before use.",
            "default deny",
        ]
        names: set[str] = set()
        for destination in sorted(self._flows):
            flows = self._flows[destination]
            name = _unique(_slug(_short(destination)), names)
            total = sum(f.count for f in flows.values())
            callers = len({caller for caller, _ in flows})
            lines += ["", f"# {destination}: {total} requests from {callers} caller(s)"]
            lines.append(f"policy {_string(name)} protects destination.id == {_string(destination)} {{")
            rule_names: set[str] = set()
            for (caller, method), seen in sorted(flows.items(), key=lambda item: (item[0][0], item[0][1] or "")):
                lines += _rule(caller, method, seen, rule_names)
            lines.append("}")
        return format_text("\n".join(lines) + "\n", "suggested.policy")


def _unique(name: str, taken: set[str]) -> str:
    candidate, number = name, 2
    while candidate in taken:
        candidate, number = f"{name}-{number}", number + 1
    taken.add(candidate)
    return candidate


def _rule(caller: tuple[str, str], method: str | None, seen: _Flows, taken: set[str]) -> list[str]:
    kind, who = caller
    if kind == "id":
        conditions, label, short = [f"source.id == {_string(who)}"], who, _short(who)
    elif kind == "jwt":
        conditions, label, short = [f"request.jwt.sub == {_string(who)}"], f"JWT-SVID {who}", _short(who)
    else:
        ips = ", ".join(_string(ip) for ip in sorted(seen.ips))
        conditions, label, short = ["not source.authenticated", f"source.ip in [{ips}]"], "unauthenticated callers", "unauthenticated"
    comments = [f"  # {method or 'TCP'} from {label}: {seen.count} requests"]
    if kind == "unauthenticated":
        comments.append("  # WARNING: these callers had no verified identity; only their addresses are checked")
    if method is None:
        conditions.append('context.protocol == "tcp"')
    else:
        conditions.append(f"request.method == {_string(method)}")
    if seen.ports:
        ports = sorted(seen.ports)
        conditions.append(f"destination.port == {ports[0]}" if len(ports) == 1 else f"destination.port in [{', '.join(map(str, ports))}]")
    if method is not None and seen.paths:
        exact, globs = [], []
        for pattern, notes, _count in _generalise(seen.paths):
            comments += [f"  #   {note}" for note in notes]
            (globs if GENERIC in pattern.split("/") else exact).append(pattern)
        tests = []
        if exact:
            tests.append(f"request.path == {_string(exact[0])}" if len(exact) == 1 else f"request.path in [{', '.join(map(_string, exact))}]")
        tests += [f"request.path matches {_string(glob)}" for glob in globs]
        conditions.append(tests[0] if len(tests) == 1 else "(" + " or ".join(tests) + ")")
    name = _unique(_slug(f"{short}-{(method or 'tcp')}"), taken)
    return [*comments, f"  allow {_string(name)} {{", "    " + "\n    and ".join(conditions), "  }"]
