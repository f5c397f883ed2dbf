"""Stage 3: checked AST → Python closures.

Conditions use three-valued logic: a test whose attribute is missing (or has
the wrong type at run time) is *unknown*. ``and``/``or``/``not`` follow
Kleene's rules, and a rule reads unknown the fail-closed way: an ``allow`` or
``audit`` rule matches only when its condition is definitely true, a ``deny``
rule whenever it is not definitely false. Rather than carry three values at
run time, every condition is compiled twice into plain boolean closures:
``definitely(e)`` and ``possibly(e)``, with ``not`` swapping the two. The
three-valued closure (``tri``) is also built, for traces.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from policy_dsl import ast
from policy_dsl.attributes import TIME, parse_network, parse_timestamp, resolve
from policy_dsl.decision import RuleRef
from policy_dsl.operators import BINARY, Incomparable, glob_test, ip_test

__all__ = ["MISSING", "CompiledRule", "compile_rule", "getter"]

MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING", "__slots__": ()})()
_ABSENT = (KeyError, TypeError, IndexError)

Pred = Callable[[Mapping], bool]
Tri = Callable[[Mapping], "bool | None"]


# -- attribute access --------------------------------------------------------------
@functools.lru_cache(maxsize=4096)
def getter(path: tuple[str, ...]) -> Callable[[Mapping], Any]:
    """Read ``path`` from the nested attribute dict; MISSING if absent or null.

    A getter is a pure function of ``path``: one is shared by every rule that reads it."""
    if len(path) == 2:
        k1, k2 = path

        def get2(a):
            try:
                v = a[k1][k2]
            except _ABSENT:
                return MISSING
            return MISSING if v is None else v

        return get2
    if len(path) == 3:
        k1, k2, k3 = path

        def get3(a):
            try:
                v = a[k1][k2][k3]
            except _ABSENT:
                return MISSING
            return MISSING if v is None else v

        return get3

    def get_n(a):
        v = a
        try:
            for key in path:
                if isinstance(v, (str, list)):  # JSON strings and arrays have no fields
                    return MISSING
                v = v[key]
        except _ABSENT:
            return MISSING
        return MISSING if v is None else v

    return get_n


# -- leaves ------------------------------------------------------------------------
def _operand(expr: ast.Expr, other: ast.Expr):
    """(getter or None, constant) for one side of a comparison."""
    if isinstance(expr, ast.Attribute):
        return getter(expr.path), None
    if isinstance(expr, ast.ListLiteral):
        return None, tuple(item.value for item in expr.items)
    value = expr.value
    if isinstance(other, ast.Attribute) and resolve(other.path).type == TIME:
        value = parse_timestamp(value)
    return None, value


def _comparison_tri(cmp: ast.Comparison) -> Tri:
    if cmp.op == "in_cidr":
        items = cmp.right.items if isinstance(cmp.right, ast.ListLiteral) else (cmp.right,)
        op = ip_test(tuple(parse_network(i.value) for i in items))
    elif cmp.op == "matches":
        op = glob_test(cmp.right.value)
    else:
        op = BINARY[cmp.op]
    lget, lconst = _operand(cmp.left, cmp.right)
    rget, rconst = _operand(cmp.right, cmp.left)
    if lget is not None and rget is None:

        def tri_attr_const(a):
            l = lget(a)
            if l is MISSING:
                return None
            try:
                return op(l, rconst)
            except (Incomparable, TypeError):
                return None

        return tri_attr_const

    def tri(a):
        l = lconst if lget is None else lget(a)
        r = rconst if rget is None else rget(a)
        if l is MISSING or r is MISSING:
            return None
        try:
            return op(l, r)
        except (Incomparable, TypeError):
            return None

    return tri


def _leaf_tri(expr: ast.Expr) -> Tri:
    if isinstance(expr, ast.Comparison):
        return _comparison_tri(expr)
    if isinstance(expr, ast.Has):
        get = getter(expr.attribute.path)
        return lambda a: get(a) is not MISSING
    if isinstance(expr, ast.Attribute):
        get = getter(expr.path)

        def boolean(a):
            v = get(a)
            return v if type(v) is bool else None

        return boolean
    value = bool(expr.value)
    return lambda a: value


def _fast_equality(expr: ast.Expr, definitely: bool) -> Pred | None:
    """Specialised closures for ``attribute == "string"``, ``attribute in [strings]`` and
    ``attribute startswith "string"``."""
    if not (isinstance(expr, ast.Comparison) and isinstance(expr.left, ast.Attribute)):
        return None
    get = getter(expr.left.path)
    if expr.op == "startswith" and isinstance(expr.right, ast.Literal) and type(expr.right.value) is str:
        prefix = expr.right.value
        if definitely:

            def definitely_starts(a):
                v = get(a)
                return type(v) is str and v.startswith(prefix)

            return definitely_starts

        def possibly_starts(a):  # MISSING or a value of another kind: unknown
            v = get(a)
            return type(v) is not str or v.startswith(prefix)

        return possibly_starts
    if expr.op == "==" and isinstance(expr.right, ast.Literal) and type(expr.right.value) is str:
        want = expr.right.value
        if definitely:
            return lambda a: get(a) == want

        def possibly_eq(a):  # a value of another kind is unknown, so possibly equal
            v = get(a)
            return type(v) is not str or v == want

        return possibly_eq
    if expr.op == "in" and isinstance(expr.right, ast.ListLiteral) and expr.right.items and all(
        type(i.value) is str for i in expr.right.items
    ):
        options = frozenset(i.value for i in expr.right.items)
        if definitely:

            def definitely_in(a):
                v = get(a)
                return type(v) is str and v in options

            return definitely_in

        def possibly_in(a):  # MISSING or a value of another kind: unknown
            v = get(a)
            return type(v) is not str or v in options

        return possibly_in
    return None


# -- connectives -------------------------------------------------------------------
def compile_pred(expr: ast.Expr, definitely: bool) -> Pred:
    """A boolean closure: is ``expr`` definitely (or possibly) true?"""
    if isinstance(expr, ast.Not):
        inner = compile_pred(expr.operand, not definitely)
        return lambda a: not inner(a)
    if isinstance(expr, (ast.And, ast.Or)):
        parts = tuple(compile_pred(o, definitely) for o in expr.operands)
        return _all(parts) if isinstance(expr, ast.And) else _any(parts)
    return _leaf_pred(expr, definitely)


@functools.lru_cache(maxsize=4096)
def _leaf_pred(expr: ast.Expr, definitely: bool) -> Pred:
    """A test, attribute or constant, compiled once for every rule that has an equal one
    (closures are pure functions of the AST, which compares by value)."""
    fast = _fast_equality(expr, definitely)
    if fast is not None:
        return fast
    tri = _leaf_tri(expr)
    if definitely:
        return lambda a: tri(a) is True
    return lambda a: tri(a) is not False


def _all(parts: tuple[Pred, ...]) -> Pred:
    if len(parts) == 2:
        p, q = parts
        return lambda a: p(a) and q(a)
    if len(parts) == 3:
        p, q, r = parts
        return lambda a: p(a) and q(a) and r(a)

    def all_of(a):
        for part in parts:
            if not part(a):
                return False
        return True

    return all_of


def _any(parts: tuple[Pred, ...]) -> Pred:
    if len(parts) == 2:
        p, q = parts
        return lambda a: p(a) or q(a)

    def any_of(a):
        for part in parts:
            if part(a):
                return True
        return False

    return any_of


def compile_tri(expr: ast.Expr) -> Tri:
    """The three-valued (Kleene) closure: True, False or None for unknown."""
    if isinstance(expr, ast.Not):
        inner = compile_tri(expr.operand)

        def negate(a):
            v = inner(a)
            return None if v is None else not v

        return negate
    if isinstance(expr, (ast.And, ast.Or)):
        parts = tuple(compile_tri(o) for o in expr.operands)
        decisive = not isinstance(expr, ast.And)  # the value that settles the connective

        def connective(a):
            unknown = False
            for part in parts:
                v = part(a)
                if v is decisive:
                    return decisive
                if v is None:
                    unknown = True
            return None if unknown else not decisive

        return connective
    return _leaf_tri(expr)


# -- rules -------------------------------------------------------------------------
def attributes_of(expr: ast.Expr | None) -> tuple[tuple[str, ...], ...]:
    """Every attribute path ``expr`` reads, in first-use order."""
    found: dict[tuple[str, ...], None] = {}
    stack = [expr] if expr is not None else []
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Attribute):
            found[node.path] = None
        elif isinstance(node, ast.Has):
            found[node.attribute.path] = None
        elif isinstance(node, ast.Comparison):
            stack.extend((node.right, node.left))
        elif isinstance(node, ast.Not):
            stack.append(node.operand)
        elif isinstance(node, (ast.And, ast.Or)):
            stack.extend(reversed(node.operands))
    return tuple(found)


@dataclass(frozen=True, slots=True, eq=False)
class CompiledRule:
    """A rule ready to evaluate. ``check`` already applies the policy selector
    and the fail-closed reading for the rule's effect."""

    ref: RuleRef
    order: int
    effect: str
    dry_run: bool
    check: Pred
    selector_tri: Tri
    condition_tri: Tri
    attributes: tuple[tuple[str, Callable[[Mapping], Any]], ...]
    condition: ast.Expr
    reads: tuple[tuple[str, ...], ...] = ()  # every attribute path the selector and condition read
    policy_dry_run: bool = False  # the whole policy is dry-run (enforce off)


@functools.lru_cache(maxsize=4096)
def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(path)


@functools.lru_cache(maxsize=4096)
def _shared_reads(reads: tuple[tuple[str, ...], ...]) -> tuple[tuple[str, ...], ...]:
    return reads  # one tuple for the rules that read the same paths


@functools.lru_cache(maxsize=4096)
def _named_getters(reads: tuple[tuple[str, ...], ...]) -> tuple[tuple[str, Callable[[Mapping], Any]], ...]:
    return tuple((_dotted(path), getter(path)) for path in reads)  # one tuple per distinct reads


def _ALWAYS(a: Mapping) -> bool:
    return True


@functools.lru_cache(maxsize=64)
def _compile_selector(selector: ast.Expr, definitely: bool) -> tuple[Pred, Tri]:
    """A policy's selector, compiled once for all its rules (closures are pure functions of
    the AST, which compares by value)."""
    return compile_pred(selector, definitely), compile_tri(selector)


def compile_rule(policy: ast.Policy, rule: ast.Rule, filename: str, order: int) -> CompiledRule:
    """Compile one rule of ``policy`` (defined in ``filename``)."""
    dry_run = rule.dry_run or (policy.dry_run and rule.effect != "audit")
    ref = RuleRef(policy.name, rule.name, filename, rule.line, rule.effect, dry_run)
    definitely = rule.effect != "deny"
    condition = compile_pred(rule.condition, definitely)
    if policy.selector is None:
        check = condition
        selector_tri: Tri = _ALWAYS
    else:
        selector, selector_tri = _compile_selector(policy.selector, definitely)
        check = lambda a: selector(a) and condition(a)
    reads = _shared_reads(tuple(dict.fromkeys(attributes_of(policy.selector) + attributes_of(rule.condition))))
    attributes = _named_getters(reads)
    return CompiledRule(
        ref, order, rule.effect, dry_run, check, selector_tri, _traced_later(rule.condition),
        attributes, rule.condition, reads, policy.dry_run,
    )


class _traced_later:
    """:func:`compile_tri` of ``expr``, compiled on the first call: only traced evaluations
    use the three-valued closures, and a large policy need not hold them for every rule."""

    __slots__ = ("_expr", "_compiled")

    def __init__(self, expr: ast.Expr) -> None:
        self._expr = expr
        self._compiled: Tri | None = None

    def __call__(self, a: Mapping) -> bool | None:
        if self._compiled is None:
            self._compiled = compile_tri(self._expr)
        return self._compiled(a)
