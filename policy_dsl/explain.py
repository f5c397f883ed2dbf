"""Why a request was denied: the deciding rule, or each allow rule that could have let it in.

Built only for denials (:meth:`PolicySet.explain`), so the allow path pays nothing. For a deny
rule the explanation names it and the values it read. For the default deny it names every
allow rule of the policies that protect the destination (their selector is true) and, for
each, the first top-level condition that was not true: its text, the attribute values it
compared and the attributes that were missing.

    >>> from policy_dsl import load_policy
    >>> policy_set = load_policy('''
    ... policy "config" protects destination.attrs.app == "config" {
    ...   allow "own" { request.method == "POST" and request.json.appname == source.attrs.app }
    ... }''', "config.policy")
    >>> attrs = {"source": {"attrs": {"app": "web"}}, "destination": {"attrs": {"app": "config"}},
    ...          "request": {"method": "POST", "json": {"appname": "billing"}}}
    >>> print(policy_set.explain(attrs))
    DENY: no rule matched (default deny)
      allow rule "own" in policy "config" (config.policy:3): request.json.appname == source.attrs.app is false (request.json.appname = "billing", source.attrs.app = "web")
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from policy_dsl import ast
from policy_dsl.checker import conjuncts
from policy_dsl.compiler import MISSING, CompiledRule, attributes_of, compile_tri, getter
from policy_dsl.decision import Decision, RuleRef
from policy_dsl.fmt import expression

__all__ = ["Explainer", "Explanation", "FailedRule"]

_VALUE_CHARS = 120  # a value longer than this (as JSON) is cut in the explanation
_TRI = {True: "true", False: "false", None: "unknown"}


@dataclass(frozen=True, slots=True)
class FailedRule:
    """An allow rule that did not match: its first condition that was not true.

    ``result`` is ``"false"`` or ``"unknown"`` (an attribute missing or of the wrong type);
    ``values`` are the attributes that condition read, with the values they had.
    """

    rule: RuleRef
    condition: str
    result: str
    values: tuple[tuple[str, Any], ...]
    missing: tuple[str, ...]

    def __str__(self) -> str:
        text = f"{self.rule}: {self.condition} is {self.result}"
        shown = [f"{name} = {_show(value)}" for name, value in self.values]
        shown += [f"{name} missing" for name in self.missing]
        return f"{text} ({', '.join(shown)})" if shown else text

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.rule.qualified_name, "condition": self.condition, "result": self.result}
        if self.values:
            out["values"] = {name: _bounded(value) for name, value in self.values}
        if self.missing:
            out["missing"] = list(self.missing)
        return out


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why ``decision`` denied: ``rule`` decided (a deny rule, with the ``values`` it read), or
    the default did and ``candidates`` says why each allow rule of ``policies`` (those whose
    selector matched the destination) did not match."""

    decision: Decision
    policies: tuple[str, ...] = ()
    candidates: tuple[FailedRule, ...] = ()
    values: tuple[tuple[str, Any], ...] = ()

    def __str__(self) -> str:
        lines = [f"{self.decision.effect}: {self.decision.reason}"]
        if self.decision.rule is not None:
            shown = ", ".join(f"{name} = {_show(value)}" for name, value in self.values)
            lines.append(f"  {self.decision.rule}" + (f" ({shown})" if shown else ""))
        elif not self.policies and self.decision.reason.endswith("(default deny)"):
            lines.append("  no policy protects this destination")
        elif self.policies and not self.candidates and not self.decision.allowed:
            lines.append(f"  policy {', '.join(self.policies)} has no allow rule")
        lines.extend(f"  {failed}" for failed in self.candidates)
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """The explanation as a JSON object (the access log's ``explain`` field)."""
        out: dict[str, Any] = {"reason": self.decision.reason}
        if self.decision.rule is not None:
            out["rule"] = self.decision.rule.qualified_name
            if self.values:
                out["values"] = {name: _bounded(value) for name, value in self.values}
        else:
            out["policies"] = list(self.policies)
            out["candidates"] = [failed.to_json() for failed in self.candidates]
        return out


class _RuleParts:
    """The top-level conditions of one allow rule, compiled for explaining (built on first use)."""

    __slots__ = ("parts",)

    def __init__(self, condition: ast.Expr) -> None:
        self.parts = tuple(
            (expression(part), compile_tri(part), tuple((".".join(p), getter(p)) for p in attributes_of(part)))
            for part in conjuncts(condition)
        )

    def first_failure(self, ref: RuleRef, attrs: Mapping) -> FailedRule | None:
        for text, tri, reads in self.parts:
            result = tri(attrs)
            if result is True:
                continue
            values, missing = _read(reads, attrs)
            return FailedRule(ref, text, _TRI[result], values, missing)
        return None


def _read(reads, attrs: Mapping) -> tuple[tuple[tuple[str, Any], ...], tuple[str, ...]]:
    values, missing = [], []
    for name, get in reads:
        value = get(attrs)
        if value is MISSING:
            missing.append(name)
        else:
            values.append((name, value))
    return tuple(values), tuple(missing)


class Explainer:
    """Explains denials for one compiled rule list (kept by the :class:`PolicySet`)."""

    def __init__(self, rules: tuple[CompiledRule, ...]) -> None:
        self._rules = rules
        self._parts: dict[int, _RuleParts] = {}

    def explain(self, decision: Decision, attrs: Mapping) -> Explanation:
        if decision.allowed and not (decision.rule is None and decision.dry_run_effect == "DENY"):
            return Explanation(decision)  # allowed, and not only because enforcement is off
        if decision.rule is not None:
            rule = next((r for r in self._rules if r.ref is decision.rule), None)
            reads = rule.attributes if rule is not None else ()
            return Explanation(decision, (decision.rule.policy,), (), _read(reads, attrs)[0])
        policies: dict[str, None] = {}
        candidates = []
        for rule in self._rules:
            if rule.effect != "allow" or rule.selector_tri(attrs) is not True:
                continue
            if rule.dry_run and not (decision.allowed and rule.policy_dry_run):  # enforce off: its rules
                continue
                continue
            policies[rule.ref.policy] = None
            parts = self._parts.get(rule.order)
            if parts is None:
                parts = self._parts[rule.order] = _RuleParts(rule.condition)
            failed = parts.first_failure(rule.ref, attrs)
            if failed is not None:
                candidates.append(failed)
        if not policies:  # policies without allow rules still protect the destination
            policies = {r.ref.policy: None for r in self._rules if r.selector_tri(attrs) is True}
        return Explanation(decision, tuple(policies), tuple(candidates))


def _show(value: Any) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= _VALUE_CHARS else text[: _VALUE_CHARS - 1] + "…"


def _bounded(value: Any) -> Any:
    """``value`` itself when small, else its JSON text cut to the bound."""
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    if isinstance(value, str):
        return value if len(value) <= _VALUE_CHARS else value[: _VALUE_CHARS - 1] + "…"
    text = _show(value)
    return text if text.endswith("…") else json.loads(text)
