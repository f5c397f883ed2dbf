"""The hot modules compiled with mypyc (sidecar._compiled, scripts/build_codec): used only for
the exact sources they were built from, and their tests pass both compiled and as Python."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import sidecar
from sidecar import _compiled

ROOT = Path(__file__).resolve().parents[3]
CODEC_TESTS = ["test_hpack.py", "test_http2.py", "test_http2_adversarial.py", "test_h2headers_fields.py"]
# the HTTP/1.1 request path: strict parsing, framing, smuggling and exhaustion reviews, the exchange's fast path
REQUEST_PATH_TESTS = [
    "test_http1.py", "test_chunked_framing.py", "test_identity_headers.py", "test_review_smuggling.py",
    "test_review_exhaustion.py", "test_fast_path.py", "test_proxy.py", "test_request_records.py",
    "test_trimmed_attributes.py", "test_connection_limits.py",
]


def test_a_build_is_used_only_for_the_sources_it_was_built_from(tmp_path, monkeypatch):
    monkeypatch.delenv("TRUSTMESH_PURE_CODEC", raising=False)
    prefix = str(tmp_path)
    assert _compiled.use_compiled_codec(path := [], prefix) is False and path == []  # no build
    stale = _compiled.build_root(prefix) / "0123456789abcdef01234567"
    (stale / "sidecar").mkdir(parents=True)
    (stale / "complete").write_text("")
    assert _compiled.use_compiled_codec(path, prefix) is False and path == []  # other sources
    current = _compiled.build_root(prefix) / _compiled.source_digest()
    (current / "sidecar").mkdir(parents=True)
    assert _compiled.use_compiled_codec(path, prefix) is False  # not marked complete
    (current / "complete").write_text("")
    assert _compiled.use_compiled_codec(path, prefix) is True and path == [str(current / "sidecar")]
    monkeypatch.setenv("TRUSTMESH_PURE_CODEC", "1")
    assert _compiled.use_compiled_codec([], prefix) is False


def test_an_edited_source_changes_the_digest(tmp_path):
    for name in _compiled.DIGEST_INPUTS:
        (tmp_path / f"{name}.py").write_bytes((ROOT / "sidecar" / f"{name}.py").read_bytes())
    assert _compiled.source_digest(tmp_path) == _compiled.source_digest()
    (tmp_path / "hpack.py").write_bytes((tmp_path / "hpack.py").read_bytes() + b"\n# edited\n")
    assert _compiled.source_digest(tmp_path) != _compiled.source_digest()


def test_nothing_compiled_lies_in_the_working_tree():
    assert not [p for p in (ROOT / "sidecar").rglob("*.so")]


def test_the_codec_runs_compiled_when_a_build_for_these_sources_exists():
    if _compiled.compiled_dir() is None:
        pytest.skip("no compiled codec for these sources (scripts/build_codec): the Python modules ran")
    import sidecar.hpack
    import sidecar.http2

    assert sidecar.CODEC_COMPILED
    assert sidecar.hpack.__file__.endswith(".so") and sidecar.http2.__file__.endswith(".so")


def test_the_request_path_runs_compiled_when_a_build_for_these_sources_exists():
    if _compiled.compiled_dir() is None:
        pytest.skip("no compiled modules for these sources (scripts/build_codec): the Python modules ran")
    import importlib

    files = [importlib.import_module(f"sidecar.{name}").__file__ for name in _compiled.HOT_MODULES]
    # a build of the codec alone means mypyc refused the request path: scripts/build_codec says why
    assert all(f is not None and f.endswith(".so") for f in files), files


def _pass_as_python(tests: list[str], module: str) -> None:
    env = {**os.environ, "TRUSTMESH_PURE_CODEC": "1"}
    probe = subprocess.run(
        [sys.executable, "-c", f"import sidecar, {module}; print(sidecar.CODEC_COMPILED, {module}.__file__)"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True,
    )
    assert probe.stdout.split()[0] == "False" and probe.stdout.strip().endswith(module.rpartition(".")[2] + ".py")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *(f"tests/unit/sidecar/{t}" for t in tests)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:]


def test_the_codec_tests_pass_in_the_other_form():
    """This run tests the form in use (compiled when built); the other one is tested here."""
    if not sidecar.CODEC_COMPILED:
        pytest.skip("the codec runs as Python in this run, and there is no compiled form to test")
    _pass_as_python(CODEC_TESTS, "sidecar.hpack")


def test_the_request_path_tests_pass_in_the_other_form():
    if not sidecar.CODEC_COMPILED:
        pytest.skip("the request path runs as Python in this run, and there is no compiled form to test")
    _pass_as_python(REQUEST_PATH_TESTS, "sidecar.http1")
