"""Stage 2: reject policies that parse but are wrong, and warn about dead rules.

Errors (raised together as :class:`~policy_dsl.errors.PolicyCheckError`):
unknown attributes, operands of the wrong type, invalid globs, CIDRs and
timestamps, selectors reading anything but ``destination.*``, duplicate policy
or rule names, conflicting ``default`` declarations. Warnings (kept on the
result): rules that can never match, rules shadowed by another rule, and allow
rules that admit any caller (always true, or no condition on ``source.*`` or
``request.jwt.*``).
"""

from __future__ import annotations

from dataclasses import dataclass

from policy_dsl import ast
from policy_dsl.attributes import (
    BOOL, DYNAMIC, ENUMS, GRPC_MESSAGE, NUMBER, OBJECT, STRING, TIME, parse_network, parse_timestamp, resolve,
)
from policy_dsl.compiler import attributes_of
from policy_dsl.errors import Diagnostic, PolicyCheckError
from policy_dsl.glob import compile_glob, glob_error
from policy_dsl.paths import canonical_host

__all__ = ["CheckedPolicies", "check", "conjuncts"]

LIST = "list"
CONDITION = "condition"
_ORDERED = (NUMBER, STRING, TIME)
_METHODS_NOTE = "HTTP methods are upper-case"
_HOSTS_NOTE = "request.host is lower-case, without a trailing dot or a port (the port is request.port)"


@dataclass(frozen=True, slots=True)
class CheckedPolicies:
    """Files that passed the checker, the effective default and the warnings."""

    files: tuple[ast.PolicyFile, ...]
    default: str
    warnings: tuple[Diagnostic, ...]


def conjuncts(expr: ast.Expr | None) -> tuple[ast.Expr, ...]:
    """The top-level ``and`` operands of ``expr``, in order, without repeats."""
    if expr is None:
        return ()
    if isinstance(expr, ast.And):
        out: dict = {}
        for operand in expr.operands:
            out.update(dict.fromkeys(conjuncts(operand)))
        return tuple(out)
    return (expr,)


class _Checker:
    def __init__(self) -> None:
        self.errors: list[Diagnostic] = []
        self.warnings: list[Diagnostic] = []
        self.file: ast.PolicyFile | None = None

    def _at(self, node, message: str, severity: str = "error", column: int | None = None) -> None:
        assert self.file is not None
        diagnostic = Diagnostic(
            self.file.filename, node.line, column or node.column, message,
            self.file.source_line(node.line), severity,
        )
        (self.errors if severity == "error" else self.warnings).append(diagnostic)

    # -- types -------------------------------------------------------------------
    def type_of(self, expr: ast.Expr, *, selector: bool) -> str | None:
        """The operand type of ``expr``; None after reporting an error."""
        if isinstance(expr, ast.Attribute):
            return self.attribute(expr, selector=selector, for_has=False)
        if isinstance(expr, ast.Literal):
            if isinstance(expr.value, bool):
                return BOOL
            return NUMBER if isinstance(expr.value, (int, float)) else STRING
        if isinstance(expr, ast.ListLiteral):
            return LIST
        self.condition(expr, selector=selector)
        return CONDITION

    def attribute(self, attr: ast.Attribute, *, selector: bool, for_has: bool) -> str | None:
        if selector and attr.path[0] != "destination":
            self._at(attr, f'a policy selector reads only destination.* (the protected workload), not "{attr.dotted}"')
            return None
        found = resolve(attr.path)
        if found.error:
            column = attr.column + len(".".join(attr.path[: found.bad_index])) + (1 if found.bad_index else 0)
            self._at(attr, found.error, column=column)
            return None
        if found.type == OBJECT and not for_has:
            self._at(attr, f'"{attr.dotted}" is a group of attributes; name one of its fields or use "has"')
            return None
        return found.type

    # -- conditions --------------------------------------------------------------
    def condition(self, expr: ast.Expr, *, selector: bool) -> None:
        if isinstance(expr, (ast.And, ast.Or)):
            for operand in expr.operands:
                self.condition(operand, selector=selector)
        elif isinstance(expr, ast.Not):
            self.condition(expr.operand, selector=selector)
        elif isinstance(expr, ast.Has):
            self.attribute(expr.attribute, selector=selector, for_has=True)
        elif isinstance(expr, ast.Comparison):
            self.comparison(expr, selector=selector)
        elif isinstance(expr, ast.Attribute):
            kind = self.attribute(expr, selector=selector, for_has=False)
            if kind not in (None, BOOL, DYNAMIC):
                self._at(expr, f'"{expr.dotted}" is a {kind}, not a condition; compare it with an operator')
        elif isinstance(expr, ast.Literal):
            if not isinstance(expr.value, bool):
                self._at(expr, f"a {self.type_of(expr, selector=selector)} constant is not a condition")
        else:
            self._at(expr, "a list is not a condition")

    def comparison(self, cmp: ast.Comparison, *, selector: bool) -> None:
        left = self.type_of(cmp.left, selector=selector)
        right = self.type_of(cmp.right, selector=selector)
        if left is None or right is None:
            return
        for side, kind in ((cmp.left, left), (cmp.right, right)):
            if kind == CONDITION:
                self._at(side, f'a condition cannot be an operand of "{cmp.op}"; combine conditions with and/or/not')
                return
        op = cmp.op
        if op == "in":
            self._in(cmp, left, right)
        elif op == "in_cidr":
            self._in_cidr(cmp, left)
        elif op in ("startswith", "endswith", "contains", "matches"):
            self._string_op(cmp, left, right)
        elif LIST in (left, right):
            self._at(cmp, f'"{op}" cannot compare a list; use "in" for membership')
        elif TIME in (left, right):
            self._time(cmp, left, right)
        elif op in ("==", "!="):
            if DYNAMIC not in (left, right) and left != right:
                self._at(cmp, f'"{op}" compares a {left} with a {right}; they can never be equal')
            self._enum(cmp)
        else:  # ordering
            if BOOL in (left, right):
                self._at(cmp, f'"{op}" does not order booleans')
            elif DYNAMIC not in (left, right) and left != right:
                self._at(cmp, f'"{op}" compares a {left} with a {right}')

    def _in(self, cmp, left, right) -> None:
        if right == DYNAMIC:
            return
        if right != LIST:
            self._at(cmp.right, f'the right side of "in" must be a [list] or a JSON/claim attribute, not a {right}')
            return
        if left == TIME or left == LIST:
            self._at(cmp, f'"in" cannot test a {left}')
            return
        for item in cmp.right.items:
            kind = self.type_of(item, selector=False)
            if left != DYNAMIC and kind != left:
                self._at(item, f"list item is a {kind} but {_describe(cmp.left)} is a {left}")
        if not cmp.right.items:
            self._at(cmp.right, "an empty list never contains anything: this test is always false", "warning")
        for item in cmp.right.items:
            self._enum_value(cmp.left, item)

    def _in_cidr(self, cmp, left) -> None:
        if left not in (STRING, DYNAMIC):
            self._at(cmp.left, f'"in_cidr" needs an IP address on the left, not a {left}')
        items = cmp.right.items if isinstance(cmp.right, ast.ListLiteral) else (cmp.right,)
        if not isinstance(cmp.right, (ast.ListLiteral, ast.Literal)) or not items:
            self._at(cmp.right, '"in_cidr" needs a CIDR string or a non-empty list of them, e.g. "10.0.0.0/8"')
            return
        for item in items:
            if not isinstance(item.value, str) or isinstance(item.value, bool):
                self._at(item, f"not a CIDR string: {item.value!r}")
                continue
            try:
                parse_network(item.value)
            except ValueError as err:
                self._at(item, f"invalid CIDR {item.value!r}: {err}")

    def _string_op(self, cmp, left, right) -> None:
        op = cmp.op
        if op == "contains":
            if left not in (STRING, DYNAMIC):
                self._at(cmp.left, f'"contains" needs a string or a JSON/claim list on the left, not a {left}')
            elif left == STRING and right not in (STRING, DYNAMIC):
                self._at(cmp.right, f'"contains" on a string needs a string on the right, not a {right}')
            elif right == LIST:
                self._at(cmp.right, '"contains" takes one value; use "in" to test against a list')
            return
        if left not in (STRING, DYNAMIC):
            self._at(cmp.left, f'"{op}" needs a string on the left, not a {left}')
        if op == "matches":
            if not (isinstance(cmp.right, ast.Literal) and right == STRING):
                self._at(cmp.right, '"matches" needs a glob pattern string such as "/reports/**"')
                return
            problem = glob_error(cmp.right.value)
            if problem:
                self._at(cmp.right, f"invalid glob: {problem}")
        elif right not in (STRING, DYNAMIC):
            self._at(cmp.right, f'"{op}" needs a string on the right, not a {right}')

    def _time(self, cmp, left, right) -> None:
        other_side, other = (cmp.right, right) if left == TIME else (cmp.left, left)
        if other == TIME:
            return
        if not (isinstance(other_side, ast.Literal) and other == STRING):
            self._at(other_side, 'context.time compares only with a timestamp string like "2026-01-31T12:00:00Z"')
        elif parse_timestamp(other_side.value) is None:
            self._at(other_side, f'invalid timestamp {other_side.value!r}; expected UTC like "2026-01-31T12:00:00Z"')

    def _enum(self, cmp) -> None:
        if isinstance(cmp.left, ast.Attribute) and isinstance(cmp.right, ast.Literal):
            self._enum_value(cmp.left, cmp.right)
        elif isinstance(cmp.right, ast.Attribute) and isinstance(cmp.left, ast.Literal):
            self._enum_value(cmp.right, cmp.left)

    def _enum_value(self, attr, literal) -> None:
        if not isinstance(attr, ast.Attribute):
            return
        allowed = ENUMS.get(attr.path)
        if allowed and literal.value not in allowed:
            self._at(literal, f'{attr.dotted} is one of {", ".join(allowed)}; {literal.value!r} never matches')
        if attr.path == ("request", "method") and isinstance(literal.value, str) and literal.value != literal.value.upper():
            self._at(literal, f"{_METHODS_NOTE}: {literal.value!r} never matches", "warning")
        if attr.path == ("request", "host") and isinstance(literal.value, str) and not _is_canonical_host(literal.value):
            self._at(literal, f"{_HOSTS_NOTE}: {literal.value!r} never matches", "warning")

    def message_fields(self, rule: ast.Rule, reads: tuple[tuple[str, ...], ...]) -> None:
        """Warn that a rule reading gRPC message fields (``reads``: the paths its condition
        reads) depends on the sidecar's descriptors."""
        fields = [".".join(p) for p in reads if p[: len(GRPC_MESSAGE)] == GRPC_MESSAGE]
        if fields:
            self._at(
                rule, f'rule "{rule.name}" reads {", ".join(fields)}: the sidecar decodes gRPC messages only with '
                "the service's descriptors (grpc.descriptors in its config); without them this rule fails closed",
                "warning",
            )

    # -- dead rules --------------------------------------------------------------
    def never_matches(self, rule: ast.Rule, parts: tuple) -> None:
        equal: dict[tuple, object] = {}
        for part in parts:
            if isinstance(part, ast.Literal) and part.value is False:
                self._at(rule, f'rule "{rule.name}" can never match: it requires false', "warning")
                return
            if isinstance(part, ast.Comparison) and part.op == "==" and isinstance(part.left, ast.Attribute) and isinstance(part.right, ast.Literal):
                seen = equal.setdefault(part.left.path, part.right.value)
                if seen != part.right.value:
                    self._at(
                        rule, f'rule "{rule.name}" can never match: {part.left.dotted} cannot equal both '
                        f"{seen!r} and {part.right.value!r}", "warning",
                    )
                    return

    def open_door(self, rule: ast.Rule, parts: tuple, reads: tuple[tuple[str, ...], ...]) -> None:
        """Warn about an allow rule that admits every caller of its policy's workloads
        (``parts``: its conjuncts, ``reads``: the paths its condition reads)."""
        if all(isinstance(part, ast.Literal) and part.value is True for part in parts):
            self._at(rule, f'allow rule "{rule.name}" is always true: it admits every request', "warning")
        elif not any(path[0] == "source" or path[:2] == ("request", "jwt") for path in reads):
            self._at(
                rule, f'allow rule "{rule.name}" has no condition on the caller (source.* or request.jwt.*): '
                "it admits any caller, even an unauthenticated one", "warning",
            )


def _is_canonical_host(text: str) -> bool:
    try:
        return canonical_host(text).host == text
    except ValueError:  # HostError: no request ever has this host
        return False


def _literal(expr) -> tuple | None:
    """(type, value) of a constant, so that ``1`` and ``true`` stay apart."""
    return (type(expr.value), expr.value) if isinstance(expr, ast.Literal) else None


def _implies(a: ast.Expr, b: ast.Expr) -> bool:
    """Whether condition ``a`` being true makes ``b`` true (about one attribute; conservative)."""
    if a == b:
        return True
    if not (isinstance(a, ast.Comparison) and isinstance(b, ast.Comparison)):
        return False
    if not (isinstance(a.left, ast.Attribute) and isinstance(b.left, ast.Attribute) and a.left.path == b.left.path):
        return False
    value = _literal(a.right)
    if a.op == "==" and value is not None:
        if b.op == "in" and isinstance(b.right, ast.ListLiteral):
            return value in {(type(i.value), i.value) for i in b.right.items}
        if value[0] is str and b.op in ("startswith", "matches") and isinstance(b.right, ast.Literal) and isinstance(b.right.value, str):
            return value[1].startswith(b.right.value) if b.op == "startswith" else compile_glob(b.right.value)(value[1])
    if a.op == "in" and b.op == "in" and isinstance(a.right, ast.ListLiteral) and isinstance(b.right, ast.ListLiteral):
        return a.right.items != () and {_literal(i) for i in a.right.items} <= {_literal(i) for i in b.right.items}
    if a.op == b.op == "startswith" and value is not None and value[0] is str and isinstance(b.right, ast.Literal):
        return isinstance(b.right.value, str) and value[1].startswith(b.right.value)
    return False


def _describe(expr) -> str:
    return expr.dotted if isinstance(expr, ast.Attribute) else "the left side"


def check(files: list[ast.PolicyFile] | tuple[ast.PolicyFile, ...]) -> CheckedPolicies:
    """Check parsed files together; raise PolicyCheckError listing every error."""
    checker = _Checker()
    policies_seen: dict[str, tuple[str, int]] = {}
    default: tuple[str, ast.DefaultDecl, ast.PolicyFile] | None = None
    # (file, policy, rule, selector and condition conjuncts) of allow/deny rules, in source order
    shadow_candidates: list[tuple] = []
    for file in files:
        checker.file = file
        for decl in file.defaults:
            if default is not None and default[0] != decl.mode:
                first = default[2].filename, default[1].line
                checker._at(decl, f'conflicting default "{decl.mode}": "{default[0]}" was declared at {first[0]}:{first[1]}')
            elif default is None:
                default = (decl.mode, decl, file)
        for policy in file.policies:
            if policy.name in policies_seen:
                where = policies_seen[policy.name]
                checker._at(policy, f'duplicate policy name "{policy.name}" (first defined at {where[0]}:{where[1]})')
            policies_seen.setdefault(policy.name, (file.filename, policy.line))
            if policy.selector is not None:
                checker.condition(policy.selector, selector=True)
            rules_seen: dict[str, int] = {}
            for rule in policy.rules:
                if rule.name in rules_seen:
                    checker._at(rule, f'duplicate rule name "{rule.name}" in policy "{policy.name}" (first at line {rules_seen[rule.name]})')
                rules_seen.setdefault(rule.name, rule.line)
                if rule.effect == "audit" and rule.dry_run:
                    checker._at(rule, 'audit rules are never enforced, so "dry-run" means nothing here; remove it')
                before = len(checker.errors)
                checker.condition(rule.condition, selector=False)
                if len(checker.errors) > before:
                    continue
                parts = conjuncts(rule.condition)
                checker.never_matches(rule, parts)
                reads = attributes_of(rule.condition)
                if rule.effect == "allow":
                    checker.open_door(rule, parts, reads)
                checker.message_fields(rule, reads)
                if rule.effect != "audit":
                    shadow_candidates.append((file, policy, rule, conjuncts(policy.selector) + parts))
    if default is not None and default[0] != "deny":
        for file in files:
            if not file.defaults:  # its author wrote no default: it means deny, never another file's
                checker.file = file
                checker.errors.append(Diagnostic(
                    file.filename, 1, 1,
                    f'declares no default (deny) but {default[2].filename} declares "default {default[0]}", '
                    "and files loaded together share one default: declare the same default in each file",
                    file.source_line(1),
                ))
    if checker.errors:
        raise PolicyCheckError(checker.errors)
    _shadowing(checker, shadow_candidates)
    return CheckedPolicies(tuple(files), default[0] if default else "deny", tuple(checker.warnings))


def _implied_by_keys(part, part_id: int) -> list[tuple]:
    """Keys under which a rule with conjunct ``part`` looks for rules that ``part`` may imply.

    A conjunct ``b`` of another rule is filed under one key (:func:`_implication_key`); any
    ``a`` for which ``_implies(a, b)`` holds yields that key here."""
    keys: list[tuple] = [("same", part_id)]
    if isinstance(part, ast.Comparison) and isinstance(part.left, ast.Attribute):
        path, op = part.left.path, part.op
        if op in ("==", "in"):
            keys.append(("in", path))
        if op in ("==", "matches"):
            keys.append(("matches", path))
        if op in ("==", "startswith") and isinstance(part.right, ast.Literal) and type(part.right.value) is str:
            text = part.right.value
            keys += [("prefix", path, text[:end]) for end in range(len(text) + 1)]
    return keys


def _implication_key(part, part_id: int) -> tuple:
    """The key every conjunct implying ``part`` yields from :func:`_implied_by_keys`: ``==`` and
    anything unlisted are implied only by themselves, ``in`` by an equality or a sub-list on the
    same attribute, ``matches`` by an equality, ``startswith`` by a longer or equal prefix."""
    if isinstance(part, ast.Comparison) and isinstance(part.left, ast.Attribute):
        path, op = part.left.path, part.op
        if op == "in" and isinstance(part.right, ast.ListLiteral):
            return ("in", path)
        if op == "matches" and isinstance(part.right, ast.Literal) and isinstance(part.right.value, str):
            return ("matches", path)
        if op == "startswith" and isinstance(part.right, ast.Literal) and type(part.right.value) is str:
            return ("prefix", path, part.right.value)
    return ("same", part_id)


def _shadowing(checker: _Checker, rules: list) -> None:
    """Warn about rules another enforced rule makes pointless.

    ``rules`` holds (file, policy, rule, conjuncts) for every allow/deny rule
    in source order, the conjuncts of its policy's selector and its condition.
    An allow rule is dead if any enforced deny rule (before or after it)
    matches whenever it does; a rule adds nothing if an earlier enforced rule
    of the same effect matches whenever it does. "Matches whenever it does"
    means each conjunct of the other rule is one of this rule's or implied by
    one of them (``_implies``).

    Each enforced rule is filed under the implication key of one of its
    conjuncts, the one fewest rules yield; a rule then meets only the rules
    filed under the keys its own conjuncts yield, which include every rule
    that can shadow it (no rule is compared with all the others). Equal
    conjuncts are numbered once, so each distinct one is hashed and keyed once.
    """
    numbers: dict = {}  # conjunct -> its number (equal conjuncts of different rules: one number)
    coverages = [frozenset(numbers.setdefault(part, len(numbers)) for part in entry[3]) for entry in rules]
    parts = list(numbers)
    filing = [_implication_key(part, n) for n, part in enumerate(parts)]
    fileable = set(filing)
    yields = [[key for key in _implied_by_keys(part, n) if key in fileable] for n, part in enumerate(parts)]
    counts: dict = {}
    for coverage in coverages:
        for n in coverage:
            for key in yields[n]:
                counts[key] = counts.get(key, 0) + 1
    filed: dict = {}  # implication key -> [order] of the enforced rules filed under it
    for order, entry in enumerate(rules):
        if not (entry[2].dry_run or entry[1].dry_run):
            key = min((filing[n] for n in coverages[order]), key=counts.__getitem__)
            filed.setdefault(key, []).append(order)
    implied: dict = {}  # (a, b) -> whether conjunct a implies conjunct b

    def implies(a: int, b: int) -> bool:
        found = implied.get((a, b))
        if found is None:
            found = implied[(a, b)] = _implies(parts[a], parts[b])
        return found

    for index, (file, _policy, rule, _parts) in enumerate(rules):
        coverage = coverages[index]
        found = {order for n in coverage for key in yields[n] for order in filed.get(key, ())}
        found.discard(index)
        for order in sorted(found):
            _f, other_policy, other, _other_parts = rules[order]
            other_cov = coverages[order]
            if not (other_cov <= coverage or all(any(implies(a, b) for a in coverage) for b in other_cov)):
                continue
            if other.effect == "deny" and rule.effect == "allow":
                verdict = "it can never take effect"
            elif other.effect == rule.effect and order < index:
                verdict = "it adds nothing"
            else:
                continue
            checker.file = file
            checker._at(
                rule,
                f'rule "{rule.name}" is shadowed by {other.effect} rule "{other.name}" '
                f'(policy "{other_policy.name}", line {other.line}), which matches whenever it does: {verdict}',
                "warning",
            )
            break
