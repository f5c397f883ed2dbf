"""Replay recorded requests against a candidate policy set and say what would change.

Each access-log record (see :mod:`policy_dsl.record`) is evaluated again under the new set and
compared with the decision it got: ``allow->deny`` and ``deny->allow`` changes are grouped by
source, destination, method and path pattern (:func:`policy_dsl.flows.path_pattern`), each
group with a count and one example. A record is *undetermined* when the new set would read an
attribute the record does not tell (never recorded, or withheld) in a rule that could still
match; those are grouped the same way, naming the attributes. Lines that are not records are
reported with ``file:line`` and skipped. Pure: the caller hands in lines.

    >>> from policy_dsl import load_policy
    >>> replay = Replay(load_policy('policy "p" protects all { allow "get" { '
    ...     'source.authenticated and request.method == "GET" } }'))
    >>> line = ('{"v":1,"time":"2026-12-05T10:00:00Z","decision":"allow","attrs":{"source.id":'
    ...         '"spiffe://x.example/app/web","source.authenticated":true,"request.method":"POST",'
    ...         '"request.path":"/v1/orders/17"}}')
    >>> replay.add_line(line, "access.log", 1)
    >>> [(c.kind, c.source, c.method, c.pattern, c.count) for c in replay.changes()]
    [('allow->deny', 'spiffe://x.example/app/web', 'POST', '/v1/orders/*', 1)]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from policy_dsl.checker import conjuncts
from policy_dsl.compiler import attributes_of, compile_pred, compile_tri, getter
from policy_dsl.evaluator import PolicySet
from policy_dsl.flows import path_pattern
from policy_dsl.record import RecordError, attribute_text, known, read_record

__all__ = ["Change", "Replay", "LineError"]

ALLOW_TO_DENY = "allow->deny"
DENY_TO_ALLOW = "deny->allow"
UNDETERMINED = "undetermined"
_KINDS = (ALLOW_TO_DENY, DENY_TO_ALLOW, UNDETERMINED)
_MAX_ERRORS_KEPT = 100
_SEEN_KEPT = 1 << 17
_HEAD = b'{"v":1,"time":"'
_TIME_END = len(_HEAD) + 20  # "2026-12-05T10:00:00Z"
_DURATION = b'","duration_ms":'
_DEST_ID = getter(("destination", "id"))
_DEST_PORT = getter(("destination", "port"))


@dataclass(frozen=True, slots=True)
class LineError:
    """A line that could not be replayed, and why."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


@dataclass(slots=True)
class Change:
    """One group of records whose decision changes (or cannot be told) under the new set."""

    kind: str
    source: str
    destination: str
    method: str
    pattern: str
    count: int = 0
    example: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "source": self.source, "destination": self.destination,
            "method": self.method, "path": self.pattern, "count": self.count, "example": self.example,
        }


class _Needs:
    """For one destination: the rules that could apply and, per rule, its top-level
    conditions with the paths each reads (to tell whether an unknown path matters)."""

    __slots__ = ("paths", "rules", "policy_set", "_untold")

    def __init__(self, policy_set: PolicySet, rules, attrs: Mapping) -> None:
        self.rules = []
        paths: dict[tuple[str, ...], None] = {}
        for rule in rules:
            if rule.selector_tri(attrs) is False:  # never matches at this destination, allow or deny
                continue
            parts = tuple((compile_tri(part), attributes_of(part)) for part in conjuncts(rule.condition))
            self.rules.append((rule, parts))
            paths.update(dict.fromkeys(rule.reads))
        if policy_set.default == "allow-authenticated":
            paths[("source", "authenticated")] = None
        self.paths = tuple((path, getter(path)) for path in paths)
        self._untold: dict[tuple, tuple] = {}
        # the same decisions for this destination, from only the rules that can apply here, and
        # without testing again a selector already known to hold here
        self.policy_set = PolicySet(
            [_at_destination(rule, attrs) for rule, _ in self.rules], default=policy_set.default,
            policies=policy_set.policies, files=policy_set.files,
        )

    def unknown(self, attrs: Mapping, record: Mapping) -> tuple[str, ...]:
        """Spellings of the attributes the decision needs but the record does not tell."""
        # what a record tells depends only on which names it records (every value in the
        # attribute document comes from them): decide once per set of names
        shape = (tuple(record["attrs"]), tuple(record.get("absent", ())), "time" in record)
        missing = self._untold.get(shape)
        if missing is None:
            missing = tuple(path for path, _get in self.paths if not known(path, record))
            if len(self._untold) >= 1024:
                self._untold.clear()
            self._untold[shape] = missing
        if not missing:
            return ()
        lacking = set(missing)
        needed: dict[str, None] = {}
        for _rule, parts in self.rules:
            reads = [p for _tri, paths in parts for p in paths if p in lacking]
            if not reads:
                continue
            # the rule cannot match whatever the unknown values are if a condition reading only
            # told attributes is false
            if any(tri(attrs) is False for tri, paths in parts if not lacking.intersection(paths)):
                continue
            needed.update(dict.fromkeys(attribute_text(p) for p in reads))
        return tuple(needed)


def _at_destination(rule, attrs: Mapping):
    """``rule`` for requests to the destination of ``attrs``: its condition alone decides
    where its selector is true (a selector reads only ``destination.*``)."""
    if rule.selector_tri(attrs) is not True:
        return rule
    return replace(rule, check=compile_pred(rule.condition, rule.effect != "deny"))


class Replay:
    """Accumulates the replay of many records under ``policy_set``."""

    def __init__(self, policy_set: PolicySet) -> None:
        self.policy_set = policy_set
        self._rules = policy_set._rules
        self._needs: dict[tuple, _Needs] = {}
        self._groups: dict[tuple, Change] = {}
        self.records = 0
        self.unchanged = 0
        self.skipped = 0  # records of requests no policy decided (errors, unavailable)
        self.errors: list[LineError] = []
        self.error_count = 0
        self._seen: dict[bytes, Any] = {}  # line key -> "unchanged", "skipped" or its Change
        self._last: Any = None
        self._reads_time = ("context", "time") in policy_set.reads

    def add_line(self, line: str | bytes, file: str, number: int) -> None:
        """Replay one log line; a bad one is noted (``errors``) and skipped.

        The outcome of a line is a function of its content except ``time`` (unless the policy
        reads ``context.time``) and ``duration_ms``, which the sidecar writes first: a line
        equal to an earlier one past them counts in the same group without being parsed again.
        """
        if isinstance(line, str):
            line = line.encode()
        key = self._line_key(line)
        if key is not None:
            outcome = self._seen.get(key)
            if outcome is not None:
                self._count(outcome)
                return
        if not line.strip():
            return
        self._last = None
        try:
            record = read_record(line)
        except RecordError as err:
            self.error_count += 1
            if len(self.errors) < _MAX_ERRORS_KEPT:
                self.errors.append(LineError(file, number, str(err)))
            return
        self.add(record, f"{file}:{number}")
        if key is not None and self._last is not None:
            if len(self._seen) >= _SEEN_KEPT:
                self._seen.clear()
            self._seen[key] = self._last

    def _line_key(self, line: bytes) -> bytes | None:
        """The part of a line its outcome depends on, when it starts as the sidecar writes it:
        ``{"v":1,"time":"<20 characters>","duration_ms":<number>,``."""
        if not line.startswith(_HEAD) or line[_TIME_END : _TIME_END + len(_DURATION)] != _DURATION:
            return None
        comma = line.find(b",", _TIME_END + len(_DURATION))
        if comma < 0:
            return None
        return line[comma:] if not self._reads_time else line[len(_HEAD) : _TIME_END] + line[comma:]

    def _count(self, outcome) -> None:
        if outcome == "skipped":
            self.skipped += 1
            return
        self.records += 1
        if outcome == "unchanged":
            self.unchanged += 1
        else:
            outcome.count += 1

    def add(self, record: dict[str, Any], where: str) -> None:
        old = record.get("decision")
        if old not in ("allow", "deny"):
            self.skipped += 1
            self._last = "skipped"
            return
        self.records += 1
        attrs = record["_attrs"]
        key = (_DEST_ID(attrs), _DEST_PORT(attrs))
        needs = self._needs.get(key)
        if needs is None:
            needs = self._needs[key] = _Needs(self.policy_set, self._rules, attrs)
        unknown = needs.unknown(attrs, record)
        if unknown:
            self._note(UNDETERMINED, record, attrs, where, None, unknown)
            return
        decision = needs.policy_set.evaluate(attrs)
        if decision.allowed == (old == "allow"):
            self.unchanged += 1
            self._last = "unchanged"
            return
        self._note(ALLOW_TO_DENY if old == "allow" else DENY_TO_ALLOW, record, attrs, where, decision, ())

    def _note(self, kind, record, attrs, where, decision, unknown) -> None:
        flat = record["attrs"]
        source = flat.get("source.id") or "unauthenticated"
        destination = flat.get("destination.id") or str(record.get("destination", "?"))
        method = str(flat.get("request.method", record.get("protocol", "tcp")))
        path = flat.get("request.path")
        pattern = path_pattern(path) if isinstance(path, str) else "-"
        group_key = (kind, source, destination, method, pattern)
        change = self._groups.get(group_key)
        if change is None:
            change = self._groups[group_key] = Change(kind, source, destination, method, pattern)
            change.example = self._example(record, attrs, where, decision, unknown)
        change.count += 1
        self._last = change

    def _example(self, record, attrs, where, decision, unknown) -> dict[str, Any]:
        example: dict[str, Any] = {"at": where, "time": record.get("time"), "path": record["attrs"].get("request.path")}
        old_rule = record.get("rule")
        example["was"] = {"decision": record.get("decision"), "rule": old_rule}
        if decision is not None:
            now: dict[str, Any] = {"decision": "allow" if decision.allowed else "deny"}
            if decision.rule is not None:
                now["rule"] = decision.rule.qualified_name
            if not decision.allowed:
                now["explain"] = self.policy_set.explain(attrs, decision).to_json()
            example["now"] = now
        if unknown:
            example["unknown"] = list(unknown)
        return example

    def changes(self) -> list[Change]:
        """Every group, allow->deny first, then deny->allow, then undetermined; biggest first."""
        return sorted(self._groups.values(), key=lambda c: (_KINDS.index(c.kind), -c.count, c.source, c.destination, c.pattern))

    def count(self, kind: str) -> int:
        return sum(c.count for c in self._groups.values() if c.kind == kind)

    @property
    def breaks_traffic(self) -> bool:
        """Whether anything allowed before would now be denied (the CI gate)."""
        return any(c.kind == ALLOW_TO_DENY for c in self._groups.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "unchanged": self.unchanged,
            "allow_to_deny": self.count(ALLOW_TO_DENY),
            "deny_to_allow": self.count(DENY_TO_ALLOW),
            "undetermined": self.count(UNDETERMINED),
            "not_decided_by_policy": self.skipped,
            "bad_lines": self.error_count,
            "changes": [c.to_json() for c in self.changes()],
            "errors": [str(e) for e in self.errors],
        }

    def report(self) -> str:
        """The human-readable report."""
        lines = [
            f"{self.records} records replayed: {self.unchanged} unchanged, {self.count(ALLOW_TO_DENY)} allow->deny, "
            f"{self.count(DENY_TO_ALLOW)} deny->allow, {self.count(UNDETERMINED)} undetermined"
            + (f", {self.skipped} not decided by policy (outbound, errors)" if self.skipped else "")
            + (f", {self.error_count} bad lines" if self.error_count else "")
        ]
        for change in self.changes():
            example = change.example
            lines.append(
                f"{change.kind:13} {change.count:6}  {change.source} -> {change.destination}  {change.method} {change.pattern}"
            )
            was = example["was"]
            text = f"    e.g. {example['at']} {example.get('path') or ''}: was {was['decision']}"
            text += f" ({was['rule']})" if was.get("rule") else ""
            now = example.get("now")
            if now is not None:
                text += f", now {now['decision']}" + (f" ({now['rule']})" if now.get("rule") else "")
            lines.append(text)
            if now is not None and "explain" in now:
                for candidate in now["explain"].get("candidates", ()):
                    lines.append(f"      {candidate['rule']}: {candidate['condition']} is {candidate['result']}")
            if "unknown" in example:
                lines.append(f"      the log does not tell: {', '.join(example['unknown'])}")
        lines.extend(f"error: {e}" for e in self.errors)
        if self.error_count > len(self.errors):
            lines.append(f"error: ... and {self.error_count - len(self.errors)} more bad lines")
        return "\n".join(lines)
