"""Stage 1: policy text → frozen AST (:mod:`policy_dsl.ast`).

The grammar lives in ``grammar.lark`` and lark's LALR parser
(:mod:`policy_dsl.larkparse`) defines the language and reports every mistake
with file, line, column, the source line, a caret and what was expected.
Well-formed text takes a faster hand-written path first
(:mod:`policy_dsl.fastparse`: the same AST, checked against lark in the
tests); anything it is not sure of goes to lark, which is imported only then.
Nesting deeper than :data:`MAX_DEPTH` is refused.
"""

from __future__ import annotations

from policy_dsl import ast
from policy_dsl.errors import Diagnostic, PolicySyntaxError
from policy_dsl.fastparse import DEFAULT_MODES, parse_fast

__all__ = ["DEFAULT_MODES", "MAX_DEPTH", "MAX_SOURCE_CHARS", "line_of", "parse", "parse_with_lark"]

MAX_DEPTH = 64
MAX_SOURCE_CHARS = 4 * 1024 * 1024


def parse(text: str, filename: str = "<string>") -> ast.PolicyFile:
    """Parse one policy file into its AST; raise PolicySyntaxError on any mistake."""
    _refuse_unparsable(text, filename)
    tree = parse_fast(text, filename, MAX_DEPTH)
    return tree if tree is not None else parse_with_lark(text, filename)


def parse_with_lark(text: str, filename: str = "<string>") -> ast.PolicyFile:
    """:func:`parse` with lark alone: the reference that defines the language and reports every
    mistake (:func:`parse` tries the fast path first)."""
    _refuse_unparsable(text, filename)
    from policy_dsl.larkparse import parse_tree

    return parse_tree(text, filename)


def _refuse_unparsable(text: str, filename: str) -> None:
    """Refuse what no parser is given: a non-str, a text too long, a NUL character."""
    if not isinstance(text, str):
        raise PolicySyntaxError(Diagnostic(filename, 1, 1, "policy text must be a str"))
    if len(text) > MAX_SOURCE_CHARS:
        raise PolicySyntaxError(
            Diagnostic(filename, 1, 1, f"policy text longer than {MAX_SOURCE_CHARS} characters")
        )
    bad = text.find("\x00")
    if bad >= 0:
        line = text.count("\n", 0, bad) + 1
        column = bad - (text.rfind("\n", 0, bad) + 1) + 1
        raise PolicySyntaxError(
            Diagnostic(filename, line, column, "NUL character in policy text", line_of(text, line))
        )


def line_of(source: str, line: int) -> str:
    """Line ``line`` (1-based) as lark counts lines: split on "\n" only."""
    lines = source.split("\n")
    return lines[line - 1].rstrip("\r") if 0 < line <= len(lines) else ""
