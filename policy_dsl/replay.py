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

import json
from collections.abc import Mapping
from operator import itemgetter
from dataclasses import dataclass, field, replace
from typing import Any

from policy_dsl import ast
from policy_dsl.checker import conjuncts
from policy_dsl.compiler import attributes_of, compile_pred, compile_tri, getter
from policy_dsl.evaluator import PolicySet
from policy_dsl.flows import path_pattern
from policy_dsl.record import RecordError, attribute_text, known, nested_attributes, parse_attribute_text, read_flat

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
_PROJECTIONS_KEPT = 1 << 16
_AFTER_DURATION = _TIME_END + len(_DURATION)
_SKIPPED, _UNCHANGED = "skipped", "unchanged"  # outcomes of a line, besides its Change
_IDENTITY = {"source": "source.id", "destination": "destination.id"}


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

    __slots__ = ("paths", "rules", "policy_set", "_untold", "_projectors", "outcomes", "reads_time", "_path_tests")

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
        self._projectors: dict[_Shape, tuple] = {}
        self.outcomes: dict[tuple, Any] = {}  # projection -> (kind or None, decision, unknown)
        self.reads_time = ("context", "time") in paths
        self._path_tests = _path_tests(rule.condition for rule, _ in self.rules)
        # the same decisions for this destination, from only the rules that can apply here, and
        # without testing again a selector already known to hold here
        self.policy_set = PolicySet(
            [_at_destination(rule, attrs) for rule, _ in self.rules], default=policy_set.default,
            policies=policy_set.policies, files=policy_set.files,
        )

    def projection(self, shape: _Shape, flat: Mapping) -> tuple:
        """The recorded values that can reach a decision here (see :meth:`projector`), with a
        string ``request.path`` replaced by what the rules can tell of it (:func:`_path_tests`)."""
        found = self._projectors.get(shape)
        if found is None:
            found = self.projector(shape)
        values, path_tested = found
        if not path_tested:
            return values(flat)
        path = flat["request.path"]
        if type(path) is str:
            document = {"request": {"path": path}}
            try:
                path = (_PATH_TESTED, *[test(document) for test in self._path_tests])
            except Exception:  # noqa: BLE001, S110 - the evaluator denies on it: the raw path is the key
                pass
        return values(flat), path

    def projector(self, shape: _Shape) -> tuple:
        """For records of ``shape`` (which names they record): (a function picking the values
        whose names spell a path the rules here read, a prefix of one or a part of one, or the
        ID for the attributes that follow from it; whether ``request.path`` is projected apart
        as its test results)."""
        wanted = set()
        for path, _get in self.paths:
            wanted.add(_IDENTITY[path[0]] if path[:2] in _FROM_ID else attribute_text(path))
        names = []
        for text in shape.names:
            recorded = parse_attribute_text(text)
            if text in wanted or any(
                path[: len(recorded)] == recorded or recorded[: len(path)] == path for path, _get in self.paths
            ):
                names.append(text)
        path_tested = self._path_tests is not None and "request.path" in names
        if path_tested:
            names.remove("request.path")
        found = (_picker(names), path_tested)
        if len(self._projectors) >= 1024:
            self._projectors.clear()
        self._projectors[shape] = found
        return found

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


_FROM_ID = {("source", "trust_domain"), ("source", "path"), ("source", "attrs"), ("destination", "attrs")}
_REQUEST_PATH = ("request", "path")
_PATH_TESTED = object()  # marks a projected path as its test results, never equal to a value


def _path_tests(conditions) -> tuple | None:
    """The three-valued closures of the distinct tests that ``conditions`` apply to
    ``request.path``, when every test reading it reads nothing else (a comparison with a
    constant, ``has``): then, for a string path, the decisions depend on the path only through
    their results, and paths with equal results (``/v1/orders/17`` and ``/v1/orders/18``
    under ``matches "/v1/orders/*"``) are decided once. None when a test also reads another
    attribute (``request.path == request.headers.x``), or when no rule reads the path."""
    leaves: dict = {}
    stack = list(conditions)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.And, ast.Or)):
            stack.extend(node.operands)
        elif isinstance(node, ast.Not):
            stack.append(node.operand)
        else:
            reads = attributes_of(node)
            if _REQUEST_PATH in reads:
                if reads != (_REQUEST_PATH,):
                    return None
                leaves.setdefault(node, None)
    return tuple(compile_tri(leaf) for leaf in leaves) or None


def _at_destination(rule, attrs: Mapping):
    """``rule`` for requests to the destination of ``attrs``: its condition alone decides
    where its selector is true (a selector reads only ``destination.*``)."""
    if rule.selector_tri(attrs) is not True:
        return rule
    return replace(rule, check=compile_pred(rule.condition, rule.effect != "deny"))


def _picker(names: list[str]):
    """A function from a flat record to the values of ``names`` (a tuple, whatever their count)."""
    if not names:
        return lambda flat: ()
    if len(names) == 1:
        (name,) = names
        return lambda flat: (flat[name],)
    return itemgetter(*names)


class _Shape:
    """Records that record the same names (and list the same absent ones, and have a time or
    not): the key under which what depends only on that is kept (hashed by identity)."""

    __slots__ = ("names", "destination")

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self.destination = _picker([name for name in names if parse_attribute_text(name)[0] == "destination"])


class Replay:
    """Accumulates the replay of many records under ``policy_set``."""

    def __init__(self, policy_set: PolicySet) -> None:
        self.policy_set = policy_set
        self._rules = policy_set._rules
        self._needs: dict[Any, _Needs] = {}
        self._shapes: dict[tuple, _Shape] = {}
        self._groups: dict[tuple, Change] = {}
        self.records = 0
        self.unchanged = 0
        self.skipped = 0  # records of requests no policy decided (errors, unavailable)
        self.errors: list[LineError] = []
        self.error_count = 0
        self._seen: dict[bytes, Any] = {}  # line key -> _UNCHANGED, _SKIPPED or its Change
        self._last: Any = None
        self._reads_time = ("context", "time") in policy_set.reads

    def add_line(self, line: str | bytes, file: str, number: int) -> None:
        """Replay one log line; a bad one is noted (``errors``) and skipped.

        The outcome of a line is a function of its content except ``time`` (unless the policy
        reads ``context.time``) and ``duration_ms``, which the sidecar writes first: a line
        equal to an earlier one past them counts in the same group without being parsed again.
        """
        if line.__class__ is not bytes:
            line = line.encode()
        # the line key, when the line starts as the sidecar writes it:
        # {"v":1,"time":"<20 characters>","duration_ms":<number>,
        key = None
        if line.startswith(_HEAD) and line.startswith(_DURATION, _TIME_END):
            comma = line.find(b",", _AFTER_DURATION)
            if comma >= 0:
                key = line[comma:] if not self._reads_time else line[len(_HEAD) : _TIME_END] + line[comma:]
                outcome = self._seen.get(key)
                if outcome is not None:
                    if outcome is _SKIPPED:
                        self.skipped += 1
                        return
                    self.records += 1
                    if outcome is _UNCHANGED:
                        self.unchanged += 1
                    else:
                        outcome.count += 1
                    return
        if not line or line.isspace():
            return
        self._last = None
        try:
            record = read_flat(line)
        except RecordError as err:
            self.error_count += 1
            if len(self.errors) < _MAX_ERRORS_KEPT:
                self.errors.append(LineError(file, number, str(err)))
            return
        self._add(record, file, number)
        if key is not None and self._last is not None:
            if len(self._seen) >= _SEEN_KEPT:
                self._seen.clear()
            self._seen[key] = self._last

    def add(self, record: dict[str, Any], where: str) -> None:
        """Replay one record (from :func:`~policy_dsl.record.read_flat` or ``read_record``).

        Its outcome is a function of the destination, of which names it records, of its old
        decision and of the recorded values the new set can read there (its projection): each
        distinct projection is evaluated once, later records with it only counted."""
        self._add(record, where, None)

    def _add(self, record: dict[str, Any], file: str, number: int | None) -> None:
        old = record.get("decision")
        if old != "allow" and old != "deny":
            self.skipped += 1
            self._last = _SKIPPED
            return
        self.records += 1
        flat = record["attrs"]
        attrs = record.get("_attrs")
        names = (tuple(flat), tuple(record.get("absent", ())), "time" in record)
        shape = self._shapes.get(names)
        if shape is None:
            if len(self._shapes) >= 1024:
                self._shapes.clear()
            shape = self._shapes[names] = _Shape(names[0])
        destination = shape.destination(flat)
        try:
            needs = self._needs.get(destination)
        except TypeError:  # an object or a list among them
            destination = json.dumps(destination, sort_keys=True, default=str)
            needs = self._needs.get(destination)
        if needs is None:
            attrs = attrs or nested_attributes(record)
            needs = self._needs[destination] = _Needs(self.policy_set, self._rules, attrs)
        projection: Any = (shape, old, needs.projection(shape, flat), record.get("time") if needs.reads_time else None)
        try:
            outcome = needs.outcomes.get(projection)
        except TypeError:  # an object or a list among the values: evaluated every time
            outcome = projection = None
        if outcome is None:
            attrs = attrs or nested_attributes(record)
            outcome = self._outcome(needs, attrs, record, old)
            if projection is not None:
                if len(needs.outcomes) >= _PROJECTIONS_KEPT:
                    needs.outcomes.clear()
                needs.outcomes[projection] = outcome
        kind, decision, unknown = outcome
        if kind is None:
            self.unchanged += 1
            self._last = _UNCHANGED
            return
        self._note(kind, record, attrs, file if number is None else f"{file}:{number}", decision, unknown)

    @staticmethod
    def _outcome(needs: _Needs, attrs: Mapping, record: Mapping, old: str) -> tuple:
        """(kind of change or None, the new decision, attributes the record does not tell)."""
        unknown = needs.unknown(attrs, record)
        if unknown:
            return UNDETERMINED, None, unknown
        decision = needs.policy_set.evaluate(attrs)
        if decision.allowed == (old == "allow"):
            return None, decision, ()
        return ALLOW_TO_DENY if old == "allow" else DENY_TO_ALLOW, decision, ()

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
            change.example = self._example(record, attrs or nested_attributes(record), where, decision, unknown)
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
