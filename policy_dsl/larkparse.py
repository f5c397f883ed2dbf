"""lark's LALR parser for the policy language: the reference that defines it and the source of
every syntax error (:func:`policy_dsl.parser.parse` tries :mod:`policy_dsl.fastparse` first).

Imported on first use, so that a process whose policies are well formed never loads lark
(≈ 6 MB). The tree is built directly into AST nodes while parsing (no recursion, so deep
nesting cannot exhaust the stack), and nesting deeper than ``MAX_DEPTH`` is refused. Every
lark error becomes a :class:`~policy_dsl.errors.PolicySyntaxError` with file, line, column,
the source line, a caret and what was expected.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from importlib import resources

from lark import Lark, Token, Transformer
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from policy_dsl import ast
from policy_dsl.errors import Diagnostic, PolicySyntaxError
from policy_dsl.fastparse import DEFAULT_MODES, shared_path, unescape, unknown_escape
from policy_dsl.parser import MAX_DEPTH, line_of

__all__ = ["parse_tree"]

_TERMINAL_NAMES = {
    "NAME": "an attribute or name",
    "STRING": "a quoted string",
    "NUMBER": "a number",
    "OP": "an operator (==, !=, <, <=, >, >=, in, in_cidr, startswith, endswith, contains, matches)",
    "EFFECT": "a rule (allow, deny or audit)",
    "DRY_RUN": "dry-run",
    "ALL": "all",
    "TRUE": "true",
    "FALSE": "false",
    "$END": "end of file",
}
# Terminals that can start a condition: reported together as "a condition".
_CONDITION_START = {"NAME", "STRING", "NUMBER", "TRUE", "FALSE", "LPAR", "LSQB", "NOT", "HAS"}


_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _lark() -> tuple[Lark, _Builder]:
    """The LALR parser (built once) and the builder it reduces into."""
    grammar = resources.files("policy_dsl").joinpath("grammar.lark").read_text("utf-8")
    builder = _Builder()
    parser = Lark(
        grammar, parser="lalr", lexer="contextual", maybe_placeholders=True, transformer=builder,
        lexer_callbacks={"COMMENT": builder.comment},
    )
    return parser, builder


class _Builder(Transformer):
    """Builds AST nodes while the LALR parser reduces (lark's inline transformer)."""

    def __init__(self) -> None:
        super().__init__()
        self.reset("", "")

    def reset(self, filename: str, source: str) -> None:
        """Point the builder at the next file (called under the parser lock)."""
        self._filename = filename
        self._source = source
        self._depth: dict[int, int] = {}
        self._comments: list[ast.Comment] = []

    def comment(self, token: Token) -> Token:
        """Lexer callback: keep comments (for the formatter)."""
        self._comments.append(ast.Comment(token.value, token.line, token.column))
        return token

    # -- helpers ---------------------------------------------------------------
    def _fail(self, line: int, column: int, message: str) -> PolicySyntaxError:
        return PolicySyntaxError(
            Diagnostic(self._filename, line, column, message, line_of(self._source, line))
        )

    def _nest(self, node, *children):
        depth = 1 + max((self._depth.get(id(c), 0) for c in children), default=0)
        if depth > MAX_DEPTH:
            raise self._fail(node.line, node.column, f"expression nested deeper than {MAX_DEPTH} levels")
        self._depth[id(node)] = depth
        return node

    def _string(self, token: Token) -> str:
        raw = token.value[1:-1]
        if "\\" not in raw:
            return raw
        bad = unknown_escape(raw)
        if bad >= 0:
            raise self._fail(
                token.line, token.column + bad + 1,
                f'unknown escape "\\{raw[bad + 1]}" in string; expected one of \\" \\\\ \\n \\t \\/',
            )
        return unescape(raw)

    # -- file structure --------------------------------------------------------
    def start(self, items):
        defaults = tuple(i for i in items if isinstance(i, ast.DefaultDecl))
        policies = tuple(i for i in items if isinstance(i, ast.Policy))
        return ast.PolicyFile(self._filename, defaults, policies, self._source, tuple(self._comments))

    def default_decl(self, children):
        (mode,) = children
        if mode.value not in DEFAULT_MODES:
            raise self._fail(
                mode.line, mode.column,
                f'unknown default "{mode.value}"; expected deny or allow-authenticated',
            )
        return ast.DefaultDecl(mode.value, mode.line, mode.column)

    def policy(self, children):
        dry_run, name, selector, *rules, close = children
        first = dry_run or name
        return ast.Policy(
            self._string(name), selector, tuple(rules), dry_run is not None, first.line, first.column,
            close.line,
        )

    def select_all(self, _children):
        return None

    def select_where(self, children):
        return children[0]

    def rule(self, children):
        dry_run, effect, name, condition, close = children
        first = dry_run or effect
        return ast.Rule(
            effect.value, self._string(name), condition, dry_run is not None, first.line, first.column,
            close.line,
        )

    # -- expressions -----------------------------------------------------------
    def or_expr(self, children):
        operands = tuple(c for c in children if not isinstance(c, Token))
        first = operands[0]
        return self._nest(ast.Or(operands, first.line, first.column), *operands)

    def and_expr(self, children):
        operands = tuple(c for c in children if not isinstance(c, Token))
        first = operands[0]
        return self._nest(ast.And(operands, first.line, first.column), *operands)

    def negation(self, children):
        keyword, operand = children
        return self._nest(ast.Not(operand, keyword.line, keyword.column), operand)

    def comparison(self, children):
        left, op, right = children
        return self._nest(ast.Comparison(op.value, left, right, op.line, op.column), left, right)

    def has(self, children):
        keyword, attribute = children
        return ast.Has(attribute, keyword.line, keyword.column)

    def attribute(self, children):
        first = children[0]
        path = []
        for token in children:
            if token.type == "NAME":
                path.append(token.value)
            elif token.type == "STRING":
                path.append(self._string(token))
        return ast.Attribute(shared_path(tuple(path)), first.line, first.column)

    def list(self, children):
        bracket, *items = children
        values = tuple(i for i in items if isinstance(i, ast.Literal))
        return ast.ListLiteral(values, bracket.line, bracket.column)

    def string(self, children):
        (token,) = children
        return ast.Literal(self._string(token), token.line, token.column)

    def number(self, children):
        (token,) = children
        text = token.value
        value = float(text) if "." in text else int(text)
        return ast.Literal(value, token.line, token.column)

    def true(self, children):
        return ast.Literal(True, children[0].line, children[0].column)

    def false(self, children):
        return ast.Literal(False, children[0].line, children[0].column)


def _describe(expected: set[str]) -> tuple[str, ...]:
    names = set(expected)
    described = []
    if "NAME" in names and names & {"NOT", "HAS", "LPAR"}:
        names -= _CONDITION_START
        described.append("a condition")
    elif {"NAME", "STRING", "NUMBER"} <= names:
        names -= _CONDITION_START
        described.append("a value")
    terminals = {t.name: t for t in _lark()[0].terminals}
    for name in sorted(names):
        if name in _TERMINAL_NAMES:
            described.append(_TERMINAL_NAMES[name])
        elif name in terminals:
            described.append(f'"{terminals[name].pattern.value}"')
        else:
            described.append(name)
    return tuple(described)


def _one_of(expected: tuple[str, ...]) -> str:
    if len(expected) == 1:
        return expected[0]
    return "one of: " + ", ".join(expected) if expected else "nothing more"


def _token_text(token: Token) -> str:
    if token.type == "$END":
        return "end of file"
    if token.type == "STRING":
        return f"string {token.value}"
    return f'"{token.value}"'


def _translate(err: UnexpectedInput, filename: str, source: str) -> PolicySyntaxError:
    line = err.line if isinstance(err.line, int) and err.line > 0 else 1
    column = err.column if isinstance(err.column, int) and err.column > 0 else 1
    if isinstance(err, UnexpectedCharacters):
        char = source[err.pos_in_stream] if err.pos_in_stream < len(source) else ""
        if char == '"':
            message = "unterminated string (strings end with \" on the same line)"
            expected: tuple[str, ...] = ('"',)
        else:
            expected = _describe(set(err.allowed or ()))
            message = f"unexpected character {char!r}; expected {_one_of(expected)}"
    elif isinstance(err, UnexpectedToken):
        expected = _describe(set(err.expected or ()))
        message = f"unexpected {_token_text(err.token)}; expected {_one_of(expected)}"
    else:
        expected = ()
        message = "unexpected end of file"
    return PolicySyntaxError(
        Diagnostic(filename, line, column, message, line_of(source, line)), expected
    )


def parse_tree(text: str, filename: str) -> ast.PolicyFile:
    """Parse ``text`` (which passed the parser's own checks) with lark."""
    parser, builder = _lark()
    try:
        with _LOCK:
            builder.reset(filename, text)
            try:
                return parser.parse(text)
            finally:
                builder.reset("", "")
    except PolicySyntaxError:
        raise
    except UnexpectedInput as err:
        raise _translate(err, filename, text) from None
    except LarkError as err:  # e.g. a VisitError wrapping one of ours
        inner = getattr(err, "orig_exc", None)
        if isinstance(inner, PolicySyntaxError):
            raise inner from None
        raise PolicySyntaxError(Diagnostic(filename, 1, 1, f"cannot parse: {err}")) from None
