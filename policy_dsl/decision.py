"""What an evaluation returns: the decision, the rules behind it, and a trace."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Decision", "RuleRef", "TraceStep"]


@dataclass(frozen=True, slots=True)
class RuleRef:
    """Names one rule: its policy, its name, and where it is written."""

    policy: str
    name: str
    file: str
    line: int
    effect: str
    dry_run: bool = False

    def __str__(self) -> str:
        mark = "dry-run " if self.dry_run else ""
        return f'{mark}{self.effect} rule "{self.name}" in policy "{self.policy}" ({self.file}:{self.line})'

    @property
    def qualified_name(self) -> str:
        """``policy/rule``, the form case files use."""
        return f"{self.policy}/{self.name}"


@dataclass(frozen=True, slots=True)
class TraceStep:
    """How one rule evaluated for one request.

    ``selector`` and ``condition`` are ``"true"``, ``"false"`` or ``"unknown"``
    (an attribute was missing or had the wrong type); ``matched`` applies the
    fail-closed reading of unknown (true for deny, false for allow and audit).
    """

    rule: RuleRef
    selector: str
    condition: str
    matched: bool
    missing: tuple[str, ...] = ()

    def __str__(self) -> str:
        verdict = "MATCH" if self.matched else "no match"
        text = f"{verdict:8} {self.rule}: selector {self.selector}, condition {self.condition}"
        if self.missing:
            text += f" (missing: {', '.join(self.missing)})"
        return text


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of evaluating a policy set against one request.

    ``rule`` is the deciding rule (None when the default decided);
    ``matches`` are the enforced allow/deny rules that matched, in source
    order; ``dry_run_matches`` and ``audit_matches`` never change the outcome;
    ``dry_run_effect`` is what the outcome would be if dry-run rules were
    enforced; ``trace`` is a list of :class:`TraceStep` when asked for;
    ``enforce_off`` names the dry-run policy that let the request through
    when the default would have denied it (see :mod:`policy_dsl.evaluator`).
    """

    allowed: bool
    effect: str
    rule: RuleRef | None
    matches: tuple[RuleRef, ...]
    dry_run_matches: tuple[RuleRef, ...]
    audit_matches: tuple[RuleRef, ...]
    reason: str
    dry_run_effect: str
    trace: list[TraceStep] | None = None
    enforce_off: str | None = None

    def explain(self) -> str:
        """A multi-line human explanation (used by ``trustmesh policy eval --explain``)."""
        lines = [f"{self.effect}: {self.reason}"]
        for title, refs in (
            ("enforced matches", self.matches),
            ("dry-run matches", self.dry_run_matches),
            ("audit matches", self.audit_matches),
        ):
            if refs:
                lines.append(f"{title}:")
                lines.extend(f"  {ref}" for ref in refs)
        if self.dry_run_matches:
            lines.append(f"with dry-run rules enforced the effect would be {self.dry_run_effect}")
        if self.trace is not None:
            lines.append("trace:")
            lines.extend(f"  {step}" for step in self.trace)
        return "\n".join(lines)
