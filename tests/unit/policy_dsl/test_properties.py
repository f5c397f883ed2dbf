"""Property tests: the loader fails only with its own errors; evaluation never raises;
the fast path (rule index + two-valued closures) agrees with the traced three-valued
reference evaluation on every request."""

from __future__ import annotations

from datetime import datetime, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policy_dsl import PolicyError, load_policy

_TOKENS = [
    "policy", "protects", "all", "allow", "deny", "audit", "dry-run", "default", "{", "}", "(", ")",
    "[", "]", ",", ".", "and", "or", "not", "has", "==", "!=", "<", ">=", "in", "in_cidr", "matches",
    "contains", "startswith", "true", "false", '"p"', '"r"', '"/a/**"', "1", "-2.5", "source",
    "request", "destination", "context", "attrs", "method", "path", "json", "\n", "#c\n", '"', "\\",
]


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=200), st.lists(st.sampled_from(_TOKENS), max_size=40).map(" ".join)))
def test_loader_raises_only_policy_errors(text):
    try:
        load_policy(text)
    except PolicyError:
        pass


# -- random policies over a small attribute space, random requests ---------------------
ATOMS = [
    'request.method == "GET"', 'request.method == "PUT"', 'request.method in ["GET", "HEAD"]',
    'request.path == "/a"', 'request.path startswith "/a"', 'request.path matches "/b/**"',
    'request.path == "/b/c"', 'source.id == "spiffe://x/a"', 'source.trust_domain == "x"',
    'source.attrs.app == "web"', "source.attrs.app == request.json.app", "source.authenticated",
    'source.ip in_cidr "10.0.0.0/8"', "request.json.n > 3", 'request.jwt.claims.scope contains "r"',
    "has request.jwt", "destination.port == 80", 'context.protocol == "tcp"',
    'context.time < "2026-06-01T00:00:00Z"', "true", "false",
]


@st.composite
def conditions(draw, depth=0):
    if depth >= 2 or draw(st.booleans()):
        return draw(st.sampled_from(ATOMS))
    kind = draw(st.sampled_from(["and", "or", "not"]))
    if kind == "not":
        return f"not ({draw(conditions(depth + 1))})"
    parts = draw(st.lists(conditions(depth + 1), min_size=2, max_size=3))
    return "(" + f" {kind} ".join(parts) + ")"


@st.composite
def policies(draw):
    lines = []
    if draw(st.booleans()):
        lines.append("default allow-authenticated")
    for p in range(draw(st.integers(1, 3))):
        selector = draw(st.sampled_from(["all", 'destination.attrs.app == "api"', "destination.port == 80"]))
        mark = "dry-run " if draw(st.integers(0, 4)) == 0 else ""
        lines.append(f'{mark}policy "p{p}" protects {selector} {{')
        for r in range(draw(st.integers(1, 5))):
            effect = draw(st.sampled_from(["allow", "deny", "audit", "dry-run deny", "dry-run allow"]))
            lines.append(f'  {effect} "r{r}" {{ {draw(conditions())} }}')
        lines.append("}")
    return "\n".join(lines)


_VALUES = st.one_of(st.none(), st.sampled_from(["GET", "PUT", "/a", "/a/x", "/b/c/d", "web", "x", "10.1.1.1", "::1"]),
                    st.integers(-1, 100), st.booleans())


def _maybe(draw, value):
    """The value, absent (None) or a value of a random (often wrong) type."""
    choice = draw(st.integers(0, 5))
    if choice == 0:
        return None
    if choice == 1:
        return draw(_VALUES)
    return value


@st.composite
def requests(draw):
    def section(fields):
        return {k: v for k, v in ((k, _maybe(draw, v)) for k, v in fields.items()) if v is not None}

    return {
        "source": section({
            "id": draw(st.sampled_from(["spiffe://x/a", "spiffe://y/b"])),
            "trust_domain": draw(st.sampled_from(["x", "y"])),
            "attrs": {"app": draw(st.sampled_from(["web", "db"]))},
            "authenticated": draw(st.booleans()),
            "ip": draw(st.sampled_from(["10.0.0.1", "192.168.1.1", "::ffff:10.0.0.2", "bad"])),
        }),
        "destination": section({"attrs": {"app": draw(st.sampled_from(["api", "db"]))}, "port": draw(st.sampled_from([80, 443]))}),
        "request": section({
            "method": draw(st.sampled_from(["GET", "PUT", "HEAD"])),
            "path": draw(st.sampled_from(["/a", "/a/x", "/b", "/b/c", "/ab"])),
            "json": {"app": draw(st.sampled_from(["web", "db"])), "n": draw(st.sampled_from([1, 5, "5", None]))},
            "jwt": {"sub": "spiffe://z/j", "claims": {"scope": draw(st.sampled_from([["r"], ["w"], "r w"]))}},
        }),
        "context": section({
            "protocol": draw(st.sampled_from(["http", "tcp"])),
            "time": datetime(2026, draw(st.integers(1, 12)), 1, tzinfo=timezone.utc),
        }),
    }


def _summary(decision):
    return (decision.effect, decision.rule, decision.matches, decision.dry_run_matches,
            decision.audit_matches, decision.dry_run_effect)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies(), st.lists(requests(), min_size=1, max_size=6))
def test_fast_path_agrees_with_traced_reference(text, attrs_list):
    policy_set = load_policy(text)
    for attrs in attrs_list:
        fast = policy_set.evaluate(attrs)
        traced = policy_set.evaluate(attrs, trace=True)
        assert _summary(fast) == _summary(traced), text
        assert [s.rule for s in traced.trace if s.matched and not s.rule.dry_run and s.rule.effect != "audit"] == list(fast.matches)


@settings(max_examples=80, deadline=None)
@given(policies(), st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5), st.floats(allow_nan=True)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(
        ["source", "request", "destination", "context", "attrs", "json", "method", "path", "id", "jwt", "claims",
         "app", "ip", "port", "authenticated", "time", "protocol", "n", "scope", "trust_domain"]), inner, max_size=4)),
    max_leaves=20,
))
def test_evaluation_never_raises(text, attrs):
    policy_set = load_policy(text)
    decision = policy_set.evaluate(attrs)
    assert decision.effect in ("ALLOW", "DENY") and decision.allowed is (decision.effect == "ALLOW")
    assert policy_set.evaluate(attrs, trace=True).effect == decision.effect


def _only(attrs, reads):
    """``attrs`` holding only the values at the paths in ``reads`` (each copied whole)."""
    kept: dict = {}
    for path in reads:
        value = attrs
        for key in path:
            if not isinstance(value, dict) or key not in value:
                break
            value = value[key]
        else:
            node = kept
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = value
    return kept


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies(), st.lists(requests(), min_size=1, max_size=6))
def test_attributes_outside_reads_never_change_a_decision(text, attrs_list):
    """issue 16: the sidecar builds only the attributes in PolicySet.reads."""
    policy_set = load_policy(text)
    for attrs in attrs_list:
        assert _summary(policy_set.evaluate(_only(attrs, policy_set.reads))) == _summary(policy_set.evaluate(attrs)), text
