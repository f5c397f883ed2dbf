"""The checker's shadowing index finds exactly the warnings a comparison of every rule with
every other rule finds, and stays fast on a large policy whose rules share most conjuncts."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from policy_dsl import checker, load_policy

# conjuncts chosen so that many imply one another: equalities, lists and sub-lists,
# nested prefixes, globs, and conjuncts no other one implies
CONJUNCTS = [
    'request.method == "GET"', 'request.method == "PUT"', 'request.method in ["GET"]',
    'request.method in ["GET", "HEAD"]', 'request.method in ["GET", "HEAD", "PUT"]',
    'request.path == "/a/b"', 'request.path == "/a"', 'request.path startswith "/a"',
    'request.path startswith "/a/"', 'request.path startswith ""', 'request.path startswith "/a/b"',
    'request.path matches "/a/**"', 'request.path matches "/a/*"', 'request.path matches "/b/**"',
    'source.attrs.app == "web"', 'source.attrs.app in ["web", "db"]', 'source.attrs.app startswith "w"',
    "source.authenticated", 'source.id == "spiffe://x/a"', "request.json.n > 3", "not (request.json.n > 3)",
]
SELECTORS = ["all", 'destination.attrs.app == "api"', 'destination.attrs.app in ["api", "db"]']


@st.composite
def policies(draw) -> str:
    lines = []
    for p in range(draw(st.integers(1, 3))):
        mark = "dry-run " if draw(st.integers(0, 5)) == 0 else ""
        lines.append(f'{mark}policy "p{p}" protects {draw(st.sampled_from(SELECTORS))} {{')
        for r in range(draw(st.integers(1, 8))):
            effect = draw(st.sampled_from(["allow", "allow", "deny", "audit", "dry-run deny"]))
            parts = draw(st.lists(st.sampled_from(CONJUNCTS), min_size=1, max_size=4))
            lines.append(f'  {effect} "r{r}" {{ {" and ".join(parts)} }}')
        lines.append("}")
    return "\n".join(lines)


def _warnings(text: str) -> list[str]:
    return [f"{w.line}:{w.message}" for w in load_policy(text, "s.policy").warnings]


@settings(max_examples=300, deadline=None)
@given(policies())
def test_index_finds_what_comparing_every_pair_finds(text):
    indexed = _warnings(text)
    keys, key = checker._implied_by_keys, checker._implication_key
    try:  # every rule filed under one key that every rule yields: each meets all the others
        checker._implied_by_keys = lambda part, number: [("every",)]
        checker._implication_key = lambda part, number: ("every",)
        every_pair = _warnings(text)
    finally:
        checker._implied_by_keys, checker._implication_key = keys, key
    assert indexed == every_pair


def test_prefix_rules_are_compared_only_with_rules_they_can_shadow():
    # 3,000 rules sharing three conjuncts and differing by a path prefix; compared pair by pair
    # this took minutes. Each warning below is the only one expected.
    rules = "".join(
        f'  allow "svc-{i}" {{ source.attrs.ns == "b" and request.method in ["GET", "HEAD"] '
        f'and request.path startswith "/svc{i}/" }}\n' for i in range(3000)
    )
    text = (f'policy "big" protects destination.attrs.sa == "server" {{\n{rules}'
            '  allow "svc-7-items" { source.attrs.ns == "b" and request.method == "GET" '
            'and request.path startswith "/svc7/items" }\n}\n')
    (warning,) = _warnings(text)
    assert 'rule "svc-7-items" is shadowed by allow rule "svc-7"' in warning and "adds nothing" in warning
