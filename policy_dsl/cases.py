"""Policy test cases: a request's attributes and the decision expected for it.

Used by ``trustmesh policy test`` and by the shipped examples' tests. A case
file (YAML or JSON) holds ``cases:``, a list of mappings:

``name``
    what the case shows (optional);
``request``
    the attributes, shaped like :meth:`PolicySet.evaluate`'s argument;
    ``request.target`` (a raw request target) is normalised into
    ``request.path`` and ``request.query`` exactly as the sidecar does,
    ``request.host`` is canonicalised as the sidecar does (``INTERNAL.example:8080``
    is host ``internal.example``, ``request.port`` 8080 unless ``port`` is given),
    ``source.trust_domain``, ``source.path`` and ``source.attrs`` (and
    ``destination.attrs``) are derived from ``source.id`` (``destination.id``)
    with the sidecar's own function, and ``context.time`` may be an RFC 3339
    string;
``expect``
    ``ALLOW`` or ``DENY``;
``rule`` (optional)
    the deciding rule as ``policy/rule``, or null for "the default decided";
``audit``, ``dry_run`` (optional)
    the exact list of audit / dry-run matches, as ``policy/rule``;
``dry_run_effect`` (optional)
    the outcome if dry-run rules were enforced.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

from policy_dsl.errors import PathError, PolicyError
from policy_dsl.evaluator import PolicySet
from policy_dsl.identity import identity_attributes
from policy_dsl.paths import canonical_host, normalize_path, parse_query

__all__ = ["CaseResult", "parse_cases", "request_attrs", "run_cases"]

_EFFECTS = ("ALLOW", "DENY")
_KEYS = {"name", "request", "expect", "rule", "audit", "dry_run", "dry_run_effect"}


@dataclass(frozen=True, slots=True)
class CaseResult:
    """The outcome of one case: ``problems`` is empty when it passed."""

    name: str
    problems: tuple[str, ...]
    attrs: dict | None = None  # the evaluated attributes (None: the request was refused)

    @property
    def passed(self) -> bool:
        return not self.problems


def parse_cases(document, source: str = "cases") -> list[dict]:
    """Validate a loaded case document; raise PolicyError naming the bad case."""
    cases = document.get("cases") if isinstance(document, Mapping) else document
    if not isinstance(cases, list) or not cases:
        raise PolicyError(f"{source}: expected a non-empty list under 'cases:'")
    out = []
    for number, case in enumerate(cases, 1):
        where = f"{source}: case {number}"
        if not isinstance(case, Mapping):
            raise PolicyError(f"{where}: expected a mapping, got {type(case).__name__}")
        unknown = set(case) - _KEYS
        if unknown:
            raise PolicyError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; expected {', '.join(sorted(_KEYS))}")
        if not isinstance(case.get("request"), Mapping):
            raise PolicyError(f"{where}: 'request' must be a mapping of attributes")
        expect = str(case.get("expect", "")).upper()
        if expect not in _EFFECTS:
            raise PolicyError(f"{where}: 'expect' must be ALLOW or DENY, got {case.get('expect')!r}")
        for key in ("audit", "dry_run"):
            if key in case and not isinstance(case[key], list):
                raise PolicyError(f"{where}: '{key}' must be a list of policy/rule names")
        name = str(case.get("name") or f"case {number}")
        out.append({**case, "name": name, "expect": expect})
    return out


def request_attrs(raw: Mapping) -> dict:
    """Turn a case's ``request`` into evaluator attributes (see module doc)."""
    attrs = copy.deepcopy(dict(raw))
    request = attrs.get("request")
    if isinstance(request, dict) and "target" in request:
        target = normalize_path(request.pop("target"))
        request["path"] = target.path
        request["query"] = parse_query(target.query)
    if isinstance(request, dict) and isinstance(request.get("host"), str):
        host, port = canonical_host(request["host"])
        request["host"] = host
        request.setdefault("port", port)
    for side, keys in (("source", ("trust_domain", "path", "attrs")), ("destination", ("attrs",))):
        section = attrs.get(side)
        if isinstance(section, dict) and "id" in section:
            _derive_identity(side, section, keys)
    context = attrs.get("context")
    if isinstance(context, dict) and "time" in context:
        context["time"] = _utc(context["time"])
    return attrs


def _derive_identity(side: str, section: dict, keys: tuple[str, ...]) -> None:
    """Fill ``keys`` of ``section`` from its ``id`` as the sidecar does; a value written in the
    case that the ID contradicts is an error (it could never occur at run time)."""
    try:
        derived = identity_attributes(section["id"])
    except ValueError as err:
        raise PolicyError(f"{side}.id: {err}") from None
    for key in keys:
        given = section.get(key)
        if given is None:
            section[key] = derived[key]
        elif key == "attrs" and isinstance(given, Mapping):
            wrong = {k: v for k, v in given.items() if derived["attrs"].get(k) != v}
            if wrong:
                raise PolicyError(f"{side}.attrs {wrong} disagree with {side}.id {section['id']!r}, "
                                  f"which gives {derived['attrs']}; leave {side}.attrs out")
            section[key] = derived[key]
        elif given != derived[key]:
            raise PolicyError(f"{side}.{key} {given!r} disagrees with {side}.id {section['id']!r}, "
                              f"which gives {derived[key]!r}; leave {side}.{key} out")
    if side == "source":
        section.setdefault("authenticated", True)  # only a verified peer has an ID


def _utc(value):
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise PolicyError(f"context.time: not an RFC 3339 timestamp: {value!r}") from None
    if isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value


def run_cases(policy_set: PolicySet, cases: list[dict]) -> list[CaseResult]:
    """Evaluate each (validated) case and compare with what it expects."""
    results = []
    for case in cases:
        try:
            attrs = request_attrs(case["request"])
        except (PathError, PolicyError) as err:
            results.append(CaseResult(case["name"], (f"bad request: {err}",)))
            continue
        decision = policy_set.evaluate(attrs)
        problems = []
        if decision.effect != case["expect"]:
            problems.append(f"expected {case['expect']}, got {decision.effect} ({decision.reason})")
        if "rule" in case:
            got = decision.rule.qualified_name if decision.rule else None
            if got != case["rule"]:
                problems.append(f"expected deciding rule {case['rule'] or 'none (default)'}, got {got or 'none (default)'}")
        for key, refs in (("audit", decision.audit_matches), ("dry_run", decision.dry_run_matches)):
            if key in case:
                got = sorted(r.qualified_name for r in refs)
                if got != sorted(case[key]):
                    problems.append(f"expected {key} matches {sorted(case[key])}, got {got}")
        if "dry_run_effect" in case and decision.dry_run_effect != str(case["dry_run_effect"]).upper():
            problems.append(f"expected dry-run effect {case['dry_run_effect']}, got {decision.dry_run_effect}")
        results.append(CaseResult(case["name"], tuple(problems), attrs))
    return results
