"""The reloadable store keeps the last good policy set when a reload fails."""

from __future__ import annotations

from policy_dsl import PolicyCheckError, PolicyError, PolicyStore, PolicySyntaxError

from tests.unit.policy_dsl.conftest import request

GOOD = 'policy "p" protects all { allow "get" { request.method == "GET" } }'
BETTER = 'policy "p" protects all { allow "any" { true } }'


def test_empty_store_denies_everything():
    store = PolicyStore()
    assert store.generation == 0 and store.last_error is None
    decision = store.current.evaluate(request())
    assert decision.effect == "DENY" and decision.reason == "no rule matched (default deny)"


def test_failed_reload_keeps_last_good_and_says_why():
    store = PolicyStore()
    assert store.load_text(GOOD, "v1.policy") is True
    first = store.current
    assert store.generation == 1
    assert store.load_text('policy "p" protects all { allow "x" { } }', "v2.policy") is False
    assert store.current is first and store.generation == 1
    assert isinstance(store.last_error, PolicySyntaxError)
    assert (store.last_error.filename, store.last_error.line) == ("v2.policy", 1)
    assert store.current.evaluate(request()).allowed
    assert store.load_text('policy "p" protects all { allow "x" { source.nope } }', "v3.policy") is False
    assert isinstance(store.last_error, PolicyCheckError)
    assert store.load_text(BETTER, "v4.policy") is True
    assert store.generation == 2 and store.last_error is None
    assert store.current.evaluate(request(request={"method": "PUT"})).allowed


def test_load_files_reports_unreadable_files(tmp_path):
    store = PolicyStore()
    good = tmp_path / "good.policy"
    good.write_text(GOOD)
    assert store.load_files([good]) is True
    assert store.load_files([good, tmp_path / "missing.policy"]) is False
    assert isinstance(store.last_error, PolicyError) and "missing.policy" in str(store.last_error)
    binary = tmp_path / "binary.policy"
    binary.write_bytes(b'policy "p" \xff')
    assert store.load_files([binary]) is False
    assert "not valid UTF-8" in str(store.last_error)
    assert store.generation == 1
