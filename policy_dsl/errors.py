"""The policy language's exception tree.

``policy_dsl`` imports nothing from the other trustmesh packages, so it has its
own root, :class:`PolicyError`, a ``ValueError``. Errors found while loading a
policy carry the file, line, column, the offending source line and a caret;
:class:`Diagnostic` is that located message, also used for warnings.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Diagnostic",
    "PathError",
    "PolicyCheckError",
    "PolicyError",
    "PolicySyntaxError",
]


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One located message about a policy file: an error or a warning."""

    filename: str
    line: int
    column: int
    message: str
    source_line: str = ""
    severity: str = "error"

    def __str__(self) -> str:
        head = f"{self.filename}:{self.line}:{self.column}: {self.severity}: {self.message}"
        if not self.source_line:
            return head
        text = self.source_line.rstrip("\n").expandtabs(1)
        caret = " " * (max(self.column, 1) - 1) + "^"
        return f"{head}\n    {text}\n    {caret}"


class PolicyError(ValueError):
    """Root of every error the policy language raises on purpose."""


class _LocatedError(PolicyError):
    """A policy error with one or more located diagnostics."""

    def __init__(self, diagnostics: list[Diagnostic] | tuple[Diagnostic, ...]) -> None:
        self.diagnostics = tuple(diagnostics)
        first = self.diagnostics[0]
        self.filename = first.filename
        self.line = first.line
        self.column = first.column
        self.source_line = first.source_line
        self.message = first.message
        super().__init__("\n".join(str(d) for d in self.diagnostics))


class PolicySyntaxError(_LocatedError):
    """The text is not a well-formed policy file (lexing or parsing failed).

    ``expected`` lists what the parser would have accepted at that point.
    """

    def __init__(self, diagnostic: Diagnostic, expected: tuple[str, ...] = ()) -> None:
        super().__init__([diagnostic])
        self.expected = expected


class PolicyCheckError(_LocatedError):
    """The file parses but is wrong: unknown attribute, type error, duplicate name."""


class PathError(PolicyError):
    """An HTTP request target cannot be normalised safely and must be refused."""


class HostError(PathError):
    """A ``Host`` (or ``:authority``) value is not one unambiguous host and must be refused."""
