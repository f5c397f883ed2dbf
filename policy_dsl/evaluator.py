"""Stage 4: evaluate a compiled policy set against one request's attributes.

Combining rules: any matching enforced ``deny`` → DENY; otherwise any matching
enforced ``allow`` → ALLOW; otherwise the default (``deny``, or
``allow-authenticated``: ALLOW exactly when ``source.authenticated`` is true).
``audit`` and dry-run rules are reported and never change the outcome. Any
unexpected error during evaluation yields DENY, never an exception.

Enforce off: when the default would deny a request to a destination that a
``dry-run policy`` protects (its selector is true) and no enforced policy with
allow rules protects, the request is allowed, and the decision says it would
have been denied (``dry_run_effect`` DENY, reason naming the dry-run policy).
Enforced deny rules still deny. This is the migration mode: write the policy,
run it dry, watch the would-deny records, then drop the mark.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from policy_dsl.compiler import MISSING, CompiledRule, getter
from policy_dsl.decision import Decision, RuleRef, TraceStep
from policy_dsl.errors import Diagnostic
from policy_dsl.index import RuleIndex

if TYPE_CHECKING:
    from policy_dsl.explain import Explainer, Explanation

__all__ = ["PolicySet"]

_CACHE_LIMIT = 4096
_TRI = {True: "true", False: "false", None: "unknown"}
_authenticated = getter(("source", "authenticated"))


class PolicySet:
    """An immutable, compiled set of policies; :meth:`evaluate` is the hot path."""

    def __init__(
        self,
        rules: list[CompiledRule] | tuple[CompiledRule, ...] = (),
        *,
        default: str = "deny",
        policies: tuple[str, ...] = (),
        files: tuple[str, ...] = (),
        warnings: tuple[Diagnostic, ...] = (),
    ) -> None:
        self._rules = tuple(sorted(rules, key=lambda r: r.order))
        self._index = RuleIndex(self._rules)
        self.default = default
        self.policies = policies
        self.files = files
        self.warnings = warnings
        self._cache: dict[tuple, Decision] = {}
        reads = {path for rule in self._rules for path in rule.reads}
        if default == "allow-authenticated":
            reads.add(("source", "authenticated"))
        self.reads: frozenset[tuple[str, ...]] = frozenset(reads)
        """Every attribute path an evaluation can read (rule selectors and conditions, the
        default): attributes outside it never change a decision, so a caller may leave them out."""
        self._explainer: Explainer | None = None
        # enforce off: (name, selector) of dry-run policies; selectors of enforced policies with allow rules
        first = {}
        for rule in self._rules:
            first.setdefault(rule.ref.policy, rule)
        self._dry_policies = tuple((r.ref.policy, r.selector_tri) for r in first.values() if r.policy_dry_run)
        self._enforcing = tuple({
            r.ref.policy: r.selector_tri for r in self._rules if r.effect == "allow" and not r.policy_dry_run
        }.values()) if self._dry_policies else ()
        self._enforce_off: dict[tuple[int, str], tuple[Decision, Decision]] = {}
        self._reads_under: dict[tuple[str, ...], frozenset[tuple[str, ...]]] = {}
        self._defaults = {
            False: _outcome([], default_allows=False, default=default),
            True: _outcome([], default_allows=True, default=default),
        }

    @classmethod
    def deny_all(cls) -> PolicySet:
        """A set with no rules and the deny default: every request is denied."""
        return cls()

    @property
    def rules(self) -> tuple[RuleRef, ...]:
        """Every rule, in source order."""
        return tuple(r.ref for r in self._rules)

    def reads_under(self, prefix: tuple[str, ...]) -> frozenset[tuple[str, ...]]:
        """The rest of every attribute path under ``prefix`` that an evaluation can read:
        ``reads_under(("request", "grpc", "message"))`` names the message fields a caller must
        decode, and nothing else (``()`` when a rule reads ``prefix`` itself)."""
        known = self._reads_under.get(prefix)
        if known is None:
            size = len(prefix)
            known = self._reads_under[prefix] = frozenset(path[size:] for path in self.reads if path[:size] == prefix)
        return known

    def __repr__(self) -> str:
        return f"<PolicySet {len(self.policies)} policies, {len(self._rules)} rules, default {self.default}>"

    def evaluate(self, attrs: Mapping, *, trace: bool = False) -> Decision:
        """Decide one request. Never raises: an internal error is a DENY."""
        try:
            if trace:
                return self._traced(attrs)
            default_allows = self.default == "allow-authenticated" and _authenticated(attrs) is True
            matched = [rule for rule in self._index.candidates(attrs) if rule.check(attrs)]
            if not matched:
                decision = self._defaults[default_allows]
            else:
                if len(matched) > 1:
                    matched.sort(key=_order)
                key = (default_allows, *matched)
                decision = self._cache.get(key)
                if decision is None:
                    decision = _outcome(matched, default_allows=default_allows, default=self.default)
                    if len(self._cache) < _CACHE_LIMIT:
                        self._cache[key] = decision
            if self._dry_policies and decision.rule is None and not decision.allowed:
                return self._dry_run_default(decision, attrs)
            return decision
        except Exception as err:  # fail closed: an evaluation error is a DENY
            return Decision(
                False, "DENY", None, (), (), (), f"evaluation error (fail closed): {type(err).__name__}", "DENY",
                [] if trace else None,
            )

    def _dry_run_default(self, decision: Decision, attrs: Mapping) -> Decision:
        """``decision`` (the default denied) allowed instead when only dry-run policies protect
        the destination (see the module doc)."""
        if any(selector(attrs) is True for selector in self._enforcing):
            return decision
        name = next((name for name, selector in self._dry_policies if selector(attrs) is True), None)
        if name is None:
            return decision
        if decision.trace is not None:
            return replace(decision, allowed=True, effect="ALLOW", reason=_enforce_off(name, decision), enforce_off=name)
        kept = self._enforce_off.get((id(decision), name))  # decisions without a trace are kept by the set
        if kept is not None and kept[0] is decision:
            return kept[1]
        found = replace(decision, allowed=True, effect="ALLOW", reason=_enforce_off(name, decision), enforce_off=name)
        if len(self._enforce_off) < _CACHE_LIMIT:
            self._enforce_off[(id(decision), name)] = (decision, found)
        return found

    def explain(self, attrs: Mapping, decision: Decision | None = None) -> Explanation:
        """Why ``attrs`` are denied (see :mod:`policy_dsl.explain`); ``decision`` is
        :meth:`evaluate`'s result for them when the caller has it. Costs a walk over the rules,
        so callers build it only for denials."""
        if self._explainer is None:
            from policy_dsl.explain import Explainer

            self._explainer = Explainer(self._rules)
        return self._explainer.explain(decision if decision is not None else self.evaluate(attrs), attrs)

    def _traced(self, attrs: Mapping) -> Decision:
        """Evaluate every rule (no index) with three-valued logic and record each step."""
        steps, matched = [], []
        for rule in self._rules:
            selector = rule.selector_tri(attrs)
            condition = rule.condition_tri(attrs)
            both = _kleene_and(selector, condition)
            hit = both is True if rule.effect != "deny" else both is not False
            missing = tuple(name for name, get in rule.attributes if get(attrs) is MISSING)
            steps.append(TraceStep(rule.ref, _TRI[selector], _TRI[condition], hit, missing))
            if hit:
                matched.append(rule)
        default_allows = self.default == "allow-authenticated" and _authenticated(attrs) is True
        plain = _outcome(matched, default_allows=default_allows, default=self.default)
        traced = Decision(
            plain.allowed, plain.effect, plain.rule, plain.matches, plain.dry_run_matches,
            plain.audit_matches, plain.reason, plain.dry_run_effect, steps,
        )
        if self._dry_policies and traced.rule is None and not traced.allowed:
            return self._dry_run_default(traced, attrs)
        return traced


def _enforce_off(policy: str, decision: Decision) -> str:
    if decision.dry_run_effect == "DENY":
        return f'dry-run policy "{policy}" (enforce off) would deny: {decision.reason}'
    allows = [r for r in decision.dry_run_matches if r.effect == "allow"]
    return f'dry-run policy "{policy}" (enforce off) would allow: dry-run allow rule "{allows[0].name}" in policy "{allows[0].policy}"'


def _order(rule: CompiledRule) -> int:
    return rule.order


def _kleene_and(a: bool | None, b: bool | None) -> bool | None:
    if a is False or b is False:
        return False
    if a is None or b is None:
        return None
    return True


def _settle(denies: list[RuleRef], allows: list[RuleRef], default_allows: bool, default: str):
    """(allowed, effect, deciding rule, reason) for these matches."""
    if denies:
        return False, "DENY", denies[0], f'deny rule "{denies[0].name}" in policy "{denies[0].policy}"'
    if allows:
        return True, "ALLOW", allows[0], f'allow rule "{allows[0].name}" in policy "{allows[0].policy}"'
    if default == "allow-authenticated":
        if default_allows:
            return True, "ALLOW", None, "no rule matched (default allow-authenticated: caller authenticated)"
        return False, "DENY", None, "no rule matched (default allow-authenticated: caller not authenticated)"
    return False, "DENY", None, "no rule matched (default deny)"


def _outcome(matched: list[CompiledRule], *, default_allows: bool, default: str) -> Decision:
    enforced = [r.ref for r in matched if not r.dry_run and r.effect != "audit"]
    dry = [r.ref for r in matched if r.dry_run]
    audit = [r.ref for r in matched if r.effect == "audit"]
    denies = [r for r in enforced if r.effect == "deny"]
    allows = [r for r in enforced if r.effect == "allow"]
    allowed, effect, rule, reason = _settle(denies, allows, default_allows, default)
    would_deny = denies + [r for r in dry if r.effect == "deny"]
    would_allow = allows + [r for r in dry if r.effect == "allow"]
    dry_effect = _settle(would_deny, would_allow, default_allows, default)[1]
    return Decision(allowed, effect, rule, tuple(enforced), tuple(dry), tuple(audit), reason, dry_effect)
