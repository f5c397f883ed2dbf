"""Malformed and wrong policy files: each error names file, line, column and what was expected."""

from __future__ import annotations

import pytest

from policy_dsl import PolicyCheckError, PolicyError, PolicySyntaxError, load_policy

MALFORMED = [
    # (text, error type, line, column, message fragment)
    (
        'policy "p" protects all {\n  allow "r" { }\n}\n',
        PolicySyntaxError, 2, 15, 'unexpected "}"; expected a condition',
    ),
    (
        'policy "p" protects all {\n  allow "r" { true }\n',
        PolicySyntaxError, 2, 20, "unexpected end of file; expected one of: dry-run, a rule (allow, deny or audit), \"}\"",
    ),
    (
        'policy "p" protects all {\n  allow "r { true }\n}\n',
        PolicySyntaxError, 2, 9, "unterminated string",
    ),
    (
        'policy p protects all {}\n',
        PolicySyntaxError, 1, 8, 'unexpected "p"; expected a quoted string',
    ),
    (
        'policy "p" protects all {\n  permit "r" { true }\n}\n',
        PolicySyntaxError, 2, 3, 'unexpected "permit"',
    ),
    (
        'policy "p" protects all {\n  allow "r" { request.method = "GET" }\n}\n',
        PolicySyntaxError, 2, 30, "unexpected character '='",
    ),
    (
        'policy "p" protects all {\n  allow "r" { request.method == "GET" request.path == "/" }\n}\n',
        PolicySyntaxError, 2, 39, 'unexpected "request"',
    ),
    (
        "default open\n",
        PolicySyntaxError, 1, 9, 'unknown default "open"; expected deny or allow-authenticated',
    ),
    (
        'policy "p" protects all {\n  allow "r" { request.path == "a\\qb" }\n}\n',
        PolicySyntaxError, 2, 33, 'unknown escape "\\q"',
    ),
    (
        'policy "p" protects all {\n  allow "r" { source.atrs.app == "web" }\n}\n',
        PolicyCheckError, 2, 22, 'unknown attribute "source.atrs"; source has: id, trust_domain',
    ),
    (
        'policy "p" protects all {\n  allow "r" { destination.port == "80" }\n}\n',
        PolicyCheckError, 2, 32, '"==" compares a number with a string',
    ),
    (
        'policy "p" protects all {\n  allow "r" { request.path }\n}\n',
        PolicyCheckError, 2, 15, '"request.path" is a string, not a condition',
    ),
    (
        'policy "p" protects all {\n  allow "r" { true }\n  deny "r" { true }\n}\n',
        PolicyCheckError, 3, 3, 'duplicate rule name "r" in policy "p" (first at line 2)',
    ),
    (
        'policy "p" protects all { allow "a" { true } }\npolicy "p" protects all { }\n',
        PolicyCheckError, 2, 8, 'duplicate policy name "p" (first defined at bad.policy:1)',
    ),
    (
        'policy "p" protects source.attrs.app == "x" { }\n',
        PolicyCheckError, 1, 21, "a policy selector reads only destination.*",
    ),
    (
        'policy "p" protects all {\n  allow "r" { request.headers.X-Team == "blue" }\n}\n',
        PolicyCheckError, 2, 31, 'header names are lower-case: write "x-team"',
    ),
    (
        'policy "p" protects all {\n  allow "r" { source.ip in_cidr "10.0.0.1/8" }\n}\n',
        PolicyCheckError, 2, 33, "invalid CIDR '10.0.0.1/8': 10.0.0.1/8 has host bits set",
    ),
    (
        'policy "p" protects all {\n  allow "r" { request.path matches "/a**/b" }\n}\n',
        PolicyCheckError, 2, 36, 'invalid glob: "**" must be a whole path segment',
    ),
    (
        'policy "p" protects all {\n  allow "r" { context.time > "yesterday" }\n}\n',
        PolicyCheckError, 2, 30, "invalid timestamp 'yesterday'",
    ),
    (
        'policy "p" protects all {\n  allow "r" { context.protocol == "udp" }\n}\n',
        PolicyCheckError, 2, 35, "context.protocol is one of http, tcp; 'udp' never matches",
    ),
    (
        'policy "p" protects all {\n  allow "r" { source.authenticated < true }\n}\n',
        PolicyCheckError, 2, 36, '"<" does not order booleans',
    ),
    (
        "default deny\ndefault allow-authenticated\n",
        PolicyCheckError, 2, 9, 'conflicting default "allow-authenticated"',
    ),
]


@pytest.mark.parametrize(("text", "kind", "line", "column", "message"), MALFORMED)
def test_malformed_file_is_located_precisely(text, kind, line, column, message):
    with pytest.raises(kind) as caught:
        load_policy(text, "bad.policy")
    err = caught.value
    assert isinstance(err, PolicyError) and isinstance(err, ValueError)
    assert (err.filename, err.line, err.column) == ("bad.policy", line, column), str(err)
    assert message in err.message, err.message
    rendered = str(err).splitlines()
    assert rendered[0].startswith(f"bad.policy:{line}:{column}: error: ")
    assert rendered[1].strip() == text.splitlines()[line - 1].strip()
    assert rendered[2].index("^") - 4 == column - 1  # the caret sits under the column


def test_syntax_errors_say_what_was_expected():
    with pytest.raises(PolicySyntaxError) as caught:
        load_policy('policy "p" protects all {\n  allow "r" { request.method == }\n}\n')
    assert caught.value.expected == ("a condition",)


def test_every_check_error_is_reported_at_once():
    text = (
        'policy "p" protects all {\n'
        '  allow "a" { source.nope == "x" }\n'
        '  allow "b" { destination.port startswith "8" }\n'
        "}\n"
    )
    with pytest.raises(PolicyCheckError) as caught:
        load_policy(text)
    assert [(d.line, d.column) for d in caught.value.diagnostics] == [(2, 22), (3, 15)]


def test_nesting_is_bounded():
    deep = "not " * 100 + "true"
    with pytest.raises(PolicySyntaxError, match="nested deeper than 64"):
        load_policy(f'policy "p" protects all {{ allow "r" {{ {deep} }} }}')


def test_nul_byte_is_refused():
    with pytest.raises(PolicySyntaxError, match="NUL"):
        load_policy('policy "p" protects all {\n\x00}')
