"""Frozen syntax-tree nodes of the policy language.

Every node records the 1-based ``line`` and ``column`` where it starts, so the
checker can point at it. Nodes compare by value (positions excluded), which the
checker uses to find duplicated and shadowed conditions.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Union

__all__ = [
    "And",
    "Attribute",
    "Comment",
    "Comparison",
    "DefaultDecl",
    "Expr",
    "Has",
    "ListLiteral",
    "Literal",
    "Not",
    "Or",
    "Policy",
    "PolicyFile",
    "Rule",
]

_POS = {"compare": False, "repr": False}


@dataclass(frozen=True, slots=True)
class Attribute:
    """A dotted attribute reference such as ``source.attrs.app``."""

    path: tuple[str, ...]
    line: int = field(default=0, **_POS)
    column: int = field(default=0, **_POS)

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


@dataclass(frozen=True, slots=True)
class Literal:
    """A string, number or boolean constant. Constants of different kinds never compare equal
    (``true`` is not ``1``, though Python's ``True == 1``)."""

    value: str | int | float | bool
    line: int = field(default=0, **_POS)
    column: int = field(default=0, **_POS)
    kind: str = field(default="", init=False, repr=False)

    def __post_init__(self) -> None:  # a builtin type's __name__ is a new string each time: share one
        object.__setattr__(self, "kind", sys.intern(type(self.value).__name__))


@dataclass(frozen=True, slots=True)
class ListLiteral:
    """A bracketed list of constants, ``["GET", "HEAD"]``."""

    items: tuple[Literal, ...]
    line: int = field(default=0, **_POS)
    column: int = field(default=0, **_POS)


@dataclass(frozen=True, slots=True)
class Comparison:
    """``left OP right`` for every binary operator of the language."""

    op: str
    left: Expr
    right: Expr
    line: int = field(default=0, **_POS)
    column: int = field(default=0, **_POS)


@dataclass(frozen=True, slots=True)
class Has:
    """``has ATTRIBUTE``: true when the attribute is present."""

    attribute: Attribute
    line: int = field(default=0, **_POS)
    column: int = field(default=0, **_POS)


@dataclass(frozen=True, slots=True)
class Not:
    operand: Expr
    line: int = field(default=0, **_POS)
    column: int = field(default=0, **_POS)


@dataclass(frozen=True, slots=True)
class And:
    operands: tuple[Expr, ...]
    line: int = field(default=0, **_POS)
    column: int = field(default=0, **_POS)


@dataclass(frozen=True, slots=True)
class Or:
    operands: tuple[Expr, ...]
    line: int = field(default=0, **_POS)
    column: int = field(default=0, **_POS)


Expr = Union[Attribute, Literal, ListLiteral, Comparison, Has, Not, And, Or]


@dataclass(frozen=True, slots=True)
class Rule:
    """One named ``allow``, ``deny`` or ``audit`` rule and its condition."""

    effect: str
    name: str
    condition: Expr
    dry_run: bool = False
    line: int = field(default=0, **_POS)
    column: int = field(default=0, **_POS)
    end_line: int = field(default=0, **_POS)


@dataclass(frozen=True, slots=True)
class Policy:
    """A named group of rules protecting the workloads its selector matches.

    ``selector`` is ``None`` for ``protects all``.
    """

    name: str
    selector: Expr | None
    rules: tuple[Rule, ...]
    dry_run: bool = False
    line: int = field(default=0, **_POS)
    column: int = field(default=0, **_POS)
    end_line: int = field(default=0, **_POS)


@dataclass(frozen=True, slots=True)
class Comment:
    """A ``# ...`` comment and where it was (kept only for the formatter)."""

    text: str
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class DefaultDecl:
    """``default deny`` or ``default allow-authenticated``."""

    mode: str
    line: int = field(default=0, **_POS)
    column: int = field(default=0, **_POS)


@dataclass(frozen=True, slots=True)
class PolicyFile:
    """One parsed file: its defaults and policies, plus the text for error carets."""

    filename: str
    defaults: tuple[DefaultDecl, ...]
    policies: tuple[Policy, ...]
    source: str = field(default="", compare=False, repr=False)
    comments: tuple[Comment, ...] = field(default=(), compare=False, repr=False)

    def source_line(self, line: int) -> str:
        """Line ``line`` (1-based), split on "\n" only, as the parser counts."""
        lines = self.source.split("\n")
        return lines[line - 1].rstrip("\r") if 0 < line <= len(lines) else ""
