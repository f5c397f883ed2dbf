"""The fast parser against lark, the reference: on every example, every policy text in the test
suite and generated and mutated text, the fast path either gives up or builds exactly the AST
lark builds (every node, position and comment), and ``parse`` as a whole answers exactly as lark
does, the same tree or the same error at the same place."""

from __future__ import annotations

import ast as pyast
import dataclasses
import importlib.util
import random
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policy_dsl import PolicySyntaxError
from policy_dsl import ast as policy_ast
from policy_dsl.fastparse import parse_fast
from policy_dsl.parser import MAX_DEPTH, parse, parse_with_lark

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((ROOT / "policy_dsl" / "examples").glob("*.policy")) + [ROOT / "trustmesh" / "demo" / "demo.policy"]


def _shape(value):
    """Everything about a node, positions included (AST equality leaves them out)."""
    if dataclasses.is_dataclass(value):
        return (type(value).__name__,) + tuple(
            _shape(getattr(value, f.name)) for f in dataclasses.fields(value) if f.name != "source"
        )
    if isinstance(value, tuple):
        return tuple(_shape(v) for v in value)
    return (type(value).__name__, value)


def _outcome(parser, text: str):
    try:
        return "tree", _shape(parser(text, "t.policy"))
    except PolicySyntaxError as err:
        return "error", (str(err), err.expected)


def assert_same_as_lark(text: str) -> policy_ast.PolicyFile | None:
    """The fast path's tree (None when it gave up) after checking it against lark."""
    reference = _outcome(parse_with_lark, text)
    assert _outcome(parse, text) == reference
    fast = parse_fast(text, "t.policy", MAX_DEPTH)
    if fast is not None:
        assert reference == ("tree", _shape(fast))
    return fast


def _suite_texts() -> list[str]:
    """String constants of the test suite that look like policy text."""
    texts = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in pyast.walk(pyast.parse(path.read_text("utf-8"))):
            if isinstance(node, pyast.Constant) and isinstance(node.value, str) and "protects" in node.value:
                texts.append(node.value)
    return texts


def _bench_policy(rules: int) -> str:
    spec = importlib.util.spec_from_file_location("bench_sidecar_policy", ROOT / "bench" / "sidecar.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["bench_sidecar_policy"] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.bench_policy(rules)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_take_the_fast_path_and_match_lark(path):
    assert assert_same_as_lark(path.read_text("utf-8")) is not None


def test_the_benchmark_policy_takes_the_fast_path():
    assert assert_same_as_lark(_bench_policy(50)) is not None


def test_every_policy_text_of_the_test_suite_matches_lark():
    texts = _suite_texts()
    assert len(texts) > 100
    fast = sum(assert_same_as_lark(text) is not None for text in texts)
    assert fast > len(texts) // 2  # most are well formed and take the fast path


@pytest.mark.parametrize("seed", range(4))
def test_mutated_examples_match_lark(seed):
    """Characters deleted, doubled, swapped or replaced by a token fragment, at random places."""
    rng = random.Random(seed)
    fragments = ['"', "\\", "#", "\n", "\r\n", "(", ")", "[", "]", "{", "}", ",", ".", "-", "==", "<", "1.5",
                 "not ", " and ", " or ", "in", "all", "dry-run ", "\t", "é", '"a\\q"', "true", "x"]
    sources = [p.read_text("utf-8") for p in EXAMPLES]
    for _ in range(150):
        text = rng.choice(sources)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(text) + 1)
            how = rng.randrange(4)
            if how == 0:
                text = text[:at] + text[at + 1:]
            elif how == 1:
                text = text[:at] + text[at:at + 1] * 2 + text[at + 1:]
            elif how == 2 and at + 2 <= len(text):
                text = text[:at] + text[at + 1] + text[at] + text[at + 2:]
            else:
                text = text[:at] + rng.choice(fragments) + text[at:]
        assert_same_as_lark(text)


_ATOMS = ['request.method == "GET"', 'request.path startswith "/a/"', "source.attrs.app in [\"a\", \"b\",]",
          "has request.headers.x-debug", 'request.json["a b"].c != -2.5', "true", "false", "[]", "[1]",
          'source.id matches "spiffe://x/**"', "request.json.n>=3", "(request.json.n < 1)", '"a\\"b" == "c"',
          "request.json.all == 1", 'destination.attrs.sa == "s"', 'request.path inx "a"', "x andy", "1e5"]


@st.composite
def _expressions(draw, depth=0):
    if depth >= 3 or draw(st.integers(0, 2)) == 0:
        return draw(st.sampled_from(_ATOMS))
    kind = draw(st.sampled_from(["and", "or", "not", "paren", "cmp"]))
    if kind == "not":
        return "not " + draw(_expressions(depth + 1))
    if kind == "paren":
        return "(" + draw(_expressions(depth + 1)) + ")"
    if kind == "cmp":
        return f"({draw(_expressions(depth + 1))}) == {draw(st.sampled_from(_ATOMS))}"
    return f" {kind} ".join(draw(st.lists(_expressions(depth + 1), min_size=2, max_size=3)))


@st.composite
def _policies(draw):
    parts = []
    if draw(st.booleans()):
        parts.append(draw(st.sampled_from(["default deny", "default allow-authenticated", "default allow"])))
    for p in range(draw(st.integers(0, 2))):
        selector = draw(st.sampled_from(["all", 'destination.attrs.app == "api"', "all and true"]))
        mark = draw(st.sampled_from(["", "dry-run ", "dry-run\n"]))
        rules = "".join(
            f'  {draw(st.sampled_from(["allow", "deny", "audit", "dry-run deny", "permit"]))} "r{r}" '
            f"{{ {draw(_expressions())} }}{draw(st.sampled_from(['', ' # c', '#', '  #x # y']))}\n"
            for r in range(draw(st.integers(0, 3)))
        )
        parts.append(f'{mark}policy "p{p}" protects {selector} {{\n{rules}}}')
    text = draw(st.sampled_from(["\n", " ", "\n\n# between\n"])).join(parts)
    return text.replace("\n", "\r\n") if draw(st.booleans()) else text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_policies())
def test_generated_policies_match_lark(text):
    assert_same_as_lark(text)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([
    "policy", '"p"', "protects", "all", "{", "}", "allow", '"r"', "request", ".", "path", "==", '"/"', "and",
    "or", "not", "(", ")", "[", "]", ",", "1", "-2.5", "true", "has", "in", "#c\n", "\n", "dry-run", "default",
    "deny", '"\\n"', "in_cidr", "matches", "x-y",
]), max_size=40).map(" ".join))
def test_token_soup_matches_lark(text):
    assert_same_as_lark(text)


@pytest.mark.parametrize("text", [
    "policy \"p\" protects all { allow \"r\" { " + "not " * 70 + "true } }",
    "policy \"p\" protects all { allow \"r\" { " + "(" * 300 + "true" + ")" * 300 + " } }",
    "policy \"p\" protects all { allow \"r\" { " + "(" * 300 + "true" + ")" * 299 + " } }",
    "policy \"p\" protects all { allow \"r\" { " + " and ".join(["(a == 1"] * 70) + ")" * 70 + " } }",
    'policy "p" protects all { allow "r" { a == "\\q" } }',
    'policy "p" protects all { allow "r" { a == "x } }',
    "default maybe",
])
def test_deep_nesting_and_bad_constants_go_to_lark(text):
    assert assert_same_as_lark(text) is None


@pytest.mark.parametrize("condition", [
    'source.ip in_cidr "10.0.0.0/8"', 'source.ip in_cidr ["10.0.0.0/8", "::1/128",]', "request.json.n >= 3",
    "request.json.n<=-3.25", "request.json.n != 0", "request.json.n>1", "request.json.n<1",
    'request.path endswith ".json"', 'request.json.tags contains "a"', 'request.path matches "/a/*/b/**"',
    'request.json["a.b"]["c"].d == "x\\"y\\\\z\\n\\t\\/"', "source.attrs.app-name == request.json.app_name",
    "not not (source.authenticated)", "((source.authenticated))", "[1, 2.5, true, false] == []",
    "request.method in []", 'context.time < "2026-06-01T00:00:00Z" or (has request.jwt and not false)',
])
def test_every_construct_takes_the_fast_path(condition):
    text = (f'# head\r\ndefault deny\ndry-run policy "p\\"q" protects destination.port == 80 {{ # open\n'
            f'\tdry-run deny "r" {{\f{condition} }}#tail\n  audit "s" {{ true }}\n}}\n'
            'policy "all" protects all { }')
    assert assert_same_as_lark(text) is not None
