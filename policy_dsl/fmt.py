"""Canonical layout for policy files (``trustmesh policy fmt``).

Two-space indentation, one blank line between rules and between policies,
short single-test rules on one line, compound conditions in a block, and
chains broken before each ``and``/``or`` when too long for one line or when
the author had broken them,
the fewest parentheses that keep the same tree. Every comment is kept: a
comment that sat inside a rule (after its code, or between lines of its
condition) moves to the lines just above that rule. Formatting never changes
meaning: the result parses to the same syntax tree.
"""

from __future__ import annotations

import re

from policy_dsl import ast
from policy_dsl.parser import parse

__all__ = ["format_file", "format_text"]

_WIDTH = 88
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
_PREC = {ast.Or: 1, ast.And: 2, ast.Not: 3}


def format_text(text: str, filename: str = "<string>") -> str:
    """Parse ``text`` and return it in canonical layout (raises PolicySyntaxError)."""
    return format_file(parse(text, filename))


def _string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"'


def _literal(value) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, float):
        text = repr(value)
        return text if "e" not in text and "inf" not in text else f"{value:.17f}".rstrip("0")
    return str(value)


def _attribute(attr: ast.Attribute) -> str:
    head, *rest = attr.path
    return head + "".join(f".{s}" if _NAME.match(s) else f"[{_string(s)}]" for s in rest)


def expression(expr: ast.Expr, need: int = 0) -> str:
    """``expr`` as text, in parentheses when its precedence is below ``need``."""
    prec = _PREC.get(type(expr), 4)
    if isinstance(expr, ast.Or):
        text = " or ".join(expression(o, 2) for o in expr.operands)
    elif isinstance(expr, ast.And):
        text = " and ".join(expression(o, 3) for o in expr.operands)
    elif isinstance(expr, ast.Not):
        inner = expr.operand
        text = "not " + (f"({expression(inner)})" if isinstance(inner, ast.Comparison) else expression(inner, 3))
    elif isinstance(expr, ast.Comparison):
        text = f"{_operand(expr.left)} {expr.op} {_operand(expr.right)}"
    elif isinstance(expr, ast.Has):
        text = f"has {_attribute(expr.attribute)}"
    elif isinstance(expr, ast.Attribute):
        text = _attribute(expr)
    elif isinstance(expr, ast.ListLiteral):
        text = "[" + ", ".join(_literal(i.value) for i in expr.items) + "]"
    else:
        text = _literal(expr.value)
    return f"({text})" if prec < need else text


def _operand(expr: ast.Expr) -> str:
    if isinstance(expr, (ast.Attribute, ast.Literal, ast.ListLiteral)):
        return expression(expr)
    return f"({expression(expr)})"


def _condition_lines(expr: ast.Expr, indent: str) -> list[str]:
    """A long condition, broken before each top-level ``and``/``or``."""
    if isinstance(expr, (ast.And, ast.Or)):
        word, need = ("and", 3) if isinstance(expr, ast.And) else ("or", 2)
        first, *rest = expr.operands
        return [indent + expression(first, need)] + [f"{indent}{word} {expression(o, need)}" for o in rest]
    return [indent + expression(expr)]


def _rule_lines(rule: ast.Rule, indent: str) -> list[str]:
    """One line for a short simple rule; otherwise a block, split when too long."""
    head = f'{indent}{"dry-run " if rule.dry_run else ""}{rule.effect} {_string(rule.name)} {{'
    condition = expression(rule.condition)
    compound = isinstance(rule.condition, (ast.And, ast.Or))
    if not compound and len(f"{head} {condition} }}") <= _WIDTH:
        return [f"{head} {condition} }}"]
    inner = indent + "  "
    author_split = compound and rule.end_line - rule.line >= 3  # the condition spanned lines
    if len(inner + condition) <= _WIDTH and not author_split:
        return [head, inner + condition, indent + "}"]
    return [head, *_condition_lines(rule.condition, inner), indent + "}"]


class _Comments:
    """Assigns each comment to the item it is printed above."""

    def __init__(self, file: ast.PolicyFile) -> None:
        self.above: dict[int, list[str]] = {}  # id(item) -> comment texts
        self.closing: dict[int, list[str]] = {}  # id(policy) -> comments before its "}"
        self.end: list[str] = []
        top = sorted([*file.defaults, *file.policies], key=lambda item: item.line)
        for comment in file.comments:
            self._place(comment, top)

    def _place(self, comment: ast.Comment, top: list) -> None:
        line = comment.line
        for item in top:
            if isinstance(item, ast.Policy) and item.line < line <= item.end_line:
                for rule in item.rules:
                    if rule.line <= line <= rule.end_line or rule.line > line:
                        self.above.setdefault(id(rule), []).append(comment.text)
                        return
                self.closing.setdefault(id(item), []).append(comment.text)
                return
            if item.line >= line:
                self.above.setdefault(id(item), []).append(comment.text)
                return
        self.end.append(comment.text)

    def lines(self, item, indent: str = "") -> list[str]:
        return [indent + text.rstrip() for text in self.above.get(id(item), [])]


def format_file(file: ast.PolicyFile) -> str:
    """``file`` in canonical layout, comments included."""
    comments = _Comments(file)
    out: list[str] = []
    items = sorted([*file.defaults, *file.policies], key=lambda item: item.line)
    for index, item in enumerate(items):
        if index and (isinstance(item, ast.Policy) or isinstance(items[index - 1], ast.Policy)):
            out.append("")
        out += comments.lines(item)
        if isinstance(item, ast.DefaultDecl):
            out.append(f"default {item.mode}")
            continue
        selector = "all" if item.selector is None else expression(item.selector)
        mark = "dry-run " if item.dry_run else ""
        out.append(f"{mark}policy {_string(item.name)} protects {selector} {{")
        for number, rule in enumerate(item.rules):
            if number:
                out.append("")
            out += comments.lines(rule, "  ")
            out += _rule_lines(rule, "  ")
        closing = [f"  {text.rstrip()}" for text in comments.closing.get(id(item), [])]
        if closing and item.rules:
            out.append("")
        out += closing
        out.append("}")
    if comments.end:
        if out:
            out.append("")
        out += [text.rstrip() for text in comments.end]
    return "\n".join(out) + "\n" if out else ""
