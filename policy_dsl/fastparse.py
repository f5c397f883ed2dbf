"""The parser's fast path: a tokenizer and a recursive-descent parser for well-formed policy text.

lark's LALR parser (:mod:`policy_dsl.parser`) is the reference: it defines the language and
reports every mistake. This module accepts only text it is sure lark accepts, builds the very
same AST (nodes, positions, comments), and gives up, returning None, on anything else: a
syntax error, an unknown escape or default, nesting deeper than ``MAX_DEPTH``, a keyword used
where lark's contextual lexer might read it as a name. :func:`policy_dsl.parser.parse` then
runs lark, which raises the precise error. A 10,000-rule policy parses about ten times faster
this way; tests/unit/policy_dsl/test_fastparse.py compares both parsers on every example,
the test policies and generated and mutated text.
"""

from __future__ import annotations

import re
import sys
from functools import lru_cache

from policy_dsl import ast

__all__ = ["DEFAULT_MODES", "parse_fast", "shared_path", "unescape", "unknown_escape"]

_TOKEN = re.compile(  # whitespace, then one token (or the end of the text)
    r'[ \t\f\r\n]*(?:(?P<comment>#[^\n]*)|(?P<word>[A-Za-z_][A-Za-z0-9_-]*)'
    r'|(?P<string>"(?:[^"\\\n\r]|\\[^\n\r])*")|(?P<number>-?[0-9]+(?:\.[0-9]+)?)'
    r"|(?P<punct>==|!=|<=|>=|[<>{}()\[\],.])|(?P<end>\Z))"
)
_WORD_OPS = frozenset({"in_cidr", "in", "startswith", "endswith", "contains", "matches"})
_PUNCT_OPS = frozenset({"==", "!=", "<=", ">=", "<", ">"})
# Every word the grammar gives a meaning: where lark's contextual lexer could read one of
# these as a name and this parser as a keyword (or the reverse), the fast path gives up.
_KEYWORDS = frozenset({
    "default", "policy", "protects", "dry-run", "allow", "deny", "audit", "all", "or", "and",
    "not", "has", "true", "false",
}) | _WORD_OPS
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "/": "/"}
_ESCAPE = re.compile(r"\\(.)")
DEFAULT_MODES = ("deny", "allow-authenticated")
_MAX_NESTING = 100  # parentheses and "not"s: deeper text goes to lark (no deep recursion here)


def unknown_escape(raw: str) -> int:
    """Where the first unknown escape of a string's body starts (its backslash), or -1."""
    return next((m.start() for m in _ESCAPE.finditer(raw) if m.group(1) not in _ESCAPES), -1)


def unescape(raw: str) -> str:
    """A string's body with its escapes (all known) replaced."""
    return _ESCAPE.sub(lambda m: _ESCAPES[m.group(1)], raw)


class _GiveUp(Exception):
    """The text is not one this parser is sure about; lark decides."""


def parse_fast(text: str, filename: str, max_depth: int) -> ast.PolicyFile | None:
    """The AST lark would build for ``text``, or None when lark must parse it."""
    try:
        return _Parser(text, filename, max_depth).file()
    except (_GiveUp, RecursionError):  # RecursionError: called already deep in a stack
        return None


class _Parser:
    """Recursive descent over tokens read one at a time (nothing but the current token is kept)."""

    def __init__(self, text: str, filename: str, max_depth: int) -> None:
        self.text = text
        self.filename = filename
        self.max_depth = max_depth
        self.comments: list[ast.Comment] = []
        self.pos = 0
        self.line = 1
        self.line_start = 0  # offset of the current line's first character
        self.nesting = 0
        self.strings: dict[str, str] = {}  # one object per distinct string constant
        self.kind = self.value = ""
        self.at = (1, 1)  # line and column of the current token
        self._advance()

    # -- tokens ----------------------------------------------------------------------
    def _advance(self) -> None:
        """Read the next token into ``kind``, ``value`` and ``at``, collecting comments on the
        way; give up on any character no token starts with."""
        text = self.text
        while True:
            start = self.pos
            match = _TOKEN.match(text, start)
            if match is None:
                raise _GiveUp
            kind = match.lastgroup
            assert kind is not None  # every alternative is a named group
            begin = match.start(kind)
            if begin != start:
                newlines = text.count("\n", start, begin)
                if newlines:
                    self.line += newlines
                    self.line_start = text.rindex("\n", start, begin) + 1
            self.pos = match.end()
            at = (self.line, begin - self.line_start + 1)
            if kind == "comment":
                self.comments.append(ast.Comment(match.group(kind), *at))
                continue
            self.kind, self.value, self.at = kind, match.group(kind), at
            return

    def _is(self, kind: str, value: str | None = None) -> bool:
        return self.kind == kind and (value is None or self.value == value)

    def _take(self, kind: str, value: str | None = None) -> tuple[str, tuple[int, int]]:
        """The next token's text and position; it must be ``kind`` (and ``value``)."""
        if self.kind != kind or (value is not None and self.value != value):
            raise _GiveUp
        taken = self.value, self.at
        self._advance()
        return taken

    def _string(self, token: str) -> str:
        raw = token[1:-1]
        if "\\" in raw:
            if unknown_escape(raw) >= 0:
                raise _GiveUp
            raw = unescape(raw)
        return self.strings.setdefault(raw, raw)

    def _name(self) -> str:
        name, _at = self._take("word")
        if name in _KEYWORDS:
            raise _GiveUp
        return sys.intern(name)

    # -- file structure ----------------------------------------------------------------
    def file(self) -> ast.PolicyFile:
        defaults, policies = [], []
        while not self._is("end"):
            if self._is("word", "default"):
                self._advance()
                mode, at = self._take("word")
                if mode not in DEFAULT_MODES:
                    raise _GiveUp
                defaults.append(ast.DefaultDecl(mode, *at))
            else:
                policies.append(self.policy())
        return ast.PolicyFile(self.filename, tuple(defaults), tuple(policies), self.text, tuple(self.comments))

    def _dry_run(self) -> tuple[int, int] | None:
        return self._take("word")[1] if self._is("word", "dry-run") else None

    def policy(self) -> ast.Policy:
        dry_run = self._dry_run()
        self._take("word", "policy")
        name, name_at = self._take("string")
        self._take("word", "protects")
        if self._is("word", "all"):
            self._advance()
            selector = None
        else:
            selector = self.expr()[0]
        self._take("punct", "{")
        rules = []
        while not self._is("punct", "}"):
            rules.append(self.rule())
        close = self._take("punct", "}")[1]
        line, column = name_at if dry_run is None else dry_run
        return ast.Policy(self._string(name), selector, tuple(rules), dry_run is not None, line, column, close[0])

    def rule(self) -> ast.Rule:
        dry_run = self._dry_run()
        effect, effect_at = self._take("word")
        if effect not in ("allow", "deny", "audit"):
            raise _GiveUp
        name = self._take("string")[0]
        self._take("punct", "{")
        condition = self.expr()[0]
        close = self._take("punct", "}")[1]
        line, column = effect_at if dry_run is None else dry_run
        return ast.Rule(
            sys.intern(effect), self._string(name), condition, dry_run is not None, line, column, close[0]
        )

    # -- expressions: each returns (node, depth), depth as the lark builder counts it ------
    def _nest(self, depth: int) -> int:
        if depth > self.max_depth:
            raise _GiveUp
        return depth

    def _deeper(self) -> None:
        self.nesting += 1
        if self.nesting > _MAX_NESTING:
            raise _GiveUp

    def expr(self) -> tuple:
        return self._joined("or", ast.Or, self.and_expr)

    def and_expr(self) -> tuple:
        return self._joined("and", ast.And, self.not_expr)

    def _joined(self, keyword: str, node, operand) -> tuple:
        first, depth = operand()
        if not self._is("word", keyword):
            return first, depth
        operands = [first]
        while self._is("word", keyword):
            self._advance()
            part, part_depth = operand()
            operands.append(part)
            depth = max(depth, part_depth)
        return node(tuple(operands), first.line, first.column), self._nest(depth + 1)

    def not_expr(self) -> tuple:
        if not self._is("word", "not"):
            return self.condition()
        at = self._take("word")[1]
        self._deeper()
        operand, depth = self.not_expr()
        self.nesting -= 1
        return ast.Not(operand, *at), self._nest(depth + 1)

    def condition(self) -> tuple:
        if self._is("word", "has"):
            at = self._take("word")[1]
            return ast.Has(self.attribute(), *at), 0
        left, left_depth = self.value_()
        kind, text = self.kind, self.value
        if not ((kind == "punct" and text in _PUNCT_OPS) or (kind == "word" and text in _WORD_OPS)):
            return left, left_depth
        at = self._take(kind)[1]
        right, right_depth = self.value_()
        return (
            ast.Comparison(sys.intern(text), left, right, *at),
            self._nest(1 + max(left_depth, right_depth)),
        )

    def value_(self) -> tuple:
        if self.kind == "punct":
            if self.value == "(":
                self._advance()
                self._deeper()
                inner = self.expr()
                self.nesting -= 1
                self._take("punct", ")")
                return inner
            if self.value == "[":
                return self.list(), 0
            raise _GiveUp
        if self.kind == "word" and self.value not in ("true", "false"):
            return self.attribute(), 0
        return self.literal(), 0

    def literal(self) -> ast.Literal:
        kind = self.kind
        text, at = self._take(kind)
        if kind == "string":
            value: str | int | float | bool = self._string(text)
        elif kind == "number":
            value = float(text) if "." in text else int(text)
        elif kind == "word" and text in ("true", "false"):
            value = text == "true"
        else:
            raise _GiveUp
        return ast.Literal(value, *at)

    def list(self) -> ast.ListLiteral:
        at = self._take("punct", "[")[1]
        items = []
        while not self._is("punct", "]"):
            items.append(self.literal())
            if not self._is("punct", ","):
                break
            self._advance()
        self._take("punct", "]")
        return ast.ListLiteral(tuple(items), *at)

    def attribute(self) -> ast.Attribute:
        at = self.at
        path = [self._name()]
        while True:
            if self._is("punct", "."):
                self._advance()
                path.append(self._name())
            elif self._is("punct", "["):
                self._advance()
                path.append(sys.intern(self._string(self._take("string")[0])))
                self._take("punct", "]")
            else:
                break
        return ast.Attribute(shared_path(tuple(path)), *at)


@lru_cache(maxsize=4096)
def shared_path(path: tuple[str, ...]) -> tuple[str, ...]:
    """One tuple (and strings) for every equal attribute path: a large policy names the same
    few paths in every rule."""
    return tuple(sys.intern(str(segment)) for segment in path)
