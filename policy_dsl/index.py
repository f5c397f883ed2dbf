"""Rule index: pick the few rules that can match a request without testing all.

Each rule is filed under at most one *discriminator* taken from the top-level
``and`` of its condition: an exact ``request.path``, an exact ``source.id``, a
``request.path`` prefix (from ``startswith`` or a glob's literal head), a
``request.method`` (``==`` or ``in``) or a ``source.trust_domain``. If that
conjunct is false the whole condition is false, so the rule can be skipped.
When the request lacks the attribute, allow and audit rules filed under it are
skipped too (their condition cannot be definitely true) but deny rules are
kept, because a missing attribute counts against the caller.
"""

from __future__ import annotations

from collections.abc import Mapping

from policy_dsl import ast
from policy_dsl.compiler import CompiledRule, getter
from policy_dsl.glob import literal_prefix

__all__ = ["RuleIndex"]

_EXACT_KINDS = (
    ("path", ("request", "path")),
    ("source_id", ("source", "id")),
    ("method", ("request", "method")),
    ("trust_domain", ("source", "trust_domain")),
)
_PREFERENCE = {"path": 0, "source_id": 1, "prefix": 2, "method": 3, "trust_domain": 4}


def _discriminators(condition: ast.Expr):
    """Yield (kind, keys) for each indexable conjunct of ``condition``."""
    operands = condition.operands if isinstance(condition, ast.And) else (condition,)
    for part in operands:
        if not isinstance(part, ast.Comparison) or not isinstance(part.left, ast.Attribute):
            continue
        path, right = part.left.path, part.right
        literal = right.value if isinstance(right, ast.Literal) and type(right.value) is str else None
        for kind, kind_path in _EXACT_KINDS:
            if path != kind_path:
                continue
            if part.op == "==" and literal is not None:
                yield kind, (literal,)
            elif part.op == "in" and isinstance(right, ast.ListLiteral) and right.items and all(
                type(i.value) is str for i in right.items
            ):
                yield kind, tuple(i.value for i in right.items)
        if path == ("request", "path") and literal is not None and literal:
            if part.op == "startswith":
                yield "prefix", (literal,)
            elif part.op == "matches" and literal_prefix(literal):
                yield "prefix", (literal_prefix(literal),)


def _choose(condition: ast.Expr):
    found = sorted(_discriminators(condition), key=lambda d: (_PREFERENCE[d[0]], -len(d[1][0])))
    return found[0] if found else None


class RuleIndex:
    """Maps a request to the candidate rules worth evaluating."""

    def __init__(self, rules: list[CompiledRule] | tuple[CompiledRule, ...]) -> None:
        self._unindexed: list[CompiledRule] = []
        # kind -> (getter, {key: [rules]}, [deny rules kept when the attribute is missing])
        exact: dict[str, tuple] = {}
        prefixes: dict[int, dict[str, list[CompiledRule]]] = {}
        prefix_denies: list[CompiledRule] = []
        for rule in rules:
            chosen = _choose(rule.condition)
            if chosen is None:
                self._unindexed.append(rule)
                continue
            kind, keys = chosen
            if kind == "prefix":
                (prefix,) = keys
                prefixes.setdefault(len(prefix), {}).setdefault(prefix, []).append(rule)
                if rule.effect == "deny":
                    prefix_denies.append(rule)
                continue
            path = dict(_EXACT_KINDS)[kind]
            _get, table, denies = exact.setdefault(kind, (getter(path), {}, []))
            for key in keys:
                table.setdefault(key, []).append(rule)
            if rule.effect == "deny":
                denies.append(rule)
        self._exact = tuple(exact.values())
        self._prefixes = tuple(sorted(prefixes.items()))
        self._prefix_denies = prefix_denies
        self._path = getter(("request", "path"))
        self.size = len(rules)

    def candidates(self, attrs: Mapping) -> list[CompiledRule]:
        """Rules that may match ``attrs`` (a superset of those that do), unordered."""
        out = list(self._unindexed)
        for get, table, denies in self._exact:
            value = get(attrs)
            if type(value) is str:
                found = table.get(value)
                if found:
                    out += found
            elif denies:  # absent or not a string: a deny rule may still match
                out += denies
        if self._prefixes:
            path = self._path(attrs)
            if type(path) is str:
                size = len(path)
                for length, table in self._prefixes:
                    if length > size:
                        break
                    found = table.get(path[:length])
                    if found:
                        out += found
            else:
                out += self._prefix_denies
        return out
