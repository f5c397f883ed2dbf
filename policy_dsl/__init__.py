"""trustmesh's ABAC policy language: parse → check → compile → evaluate.

Pure: no I/O in the evaluator and no imports from the other trustmesh
packages. See docs/policy.md for the language.

    >>> from policy_dsl import load_policy
    >>> policies = load_policy('''
    ... policy "deathstar" protects destination.attrs.app == "deathstar" {
    ...   allow "empire-lands" {
    ...     request.method == "POST" and request.path == "/v1/request-landing"
    ...     and source.attrs.org == "empire"
    ...   }
    ... }''')
    >>> policies.evaluate({
    ...     "source": {"attrs": {"org": "empire"}},
    ...     "destination": {"attrs": {"app": "deathstar"}},
    ...     "request": {"method": "POST", "path": "/v1/request-landing"},
    ... }).effect
    'ALLOW'
"""

from policy_dsl.decision import Decision, RuleRef, TraceStep
from policy_dsl.errors import (
    Diagnostic,
    HostError,
    PathError,
    PolicyCheckError,
    PolicyError,
    PolicySyntaxError,
)
from policy_dsl.evaluator import PolicySet
from policy_dsl.loader import load_files, load_policy, load_texts
from policy_dsl.paths import HostPort, NormalizedTarget, canonical_host, normalize_path, parse_query
from policy_dsl.store import PolicyStore

__all__ = [
    "Decision",
    "Diagnostic",
    "HostError",
    "HostPort",
    "NormalizedTarget",
    "PathError",
    "PolicyCheckError",
    "PolicyError",
    "PolicySet",
    "PolicyStore",
    "PolicySyntaxError",
    "RuleRef",
    "canonical_host",
    "TraceStep",
    "load_files",
    "load_policy",
    "load_texts",
    "normalize_path",
    "parse_query",
]
