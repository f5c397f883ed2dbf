"""``trustmesh api`` against a real Workload API server.

The commands run their own event loop, so each runs in a worker thread while
the server runs on the test's loop.
"""

import argparse
import asyncio
import stat

import pytest

from sdk.errors import UsageError
from sdk.workloadapi.cli import register


def _parser():
    parser = argparse.ArgumentParser(prog="trustmesh")
    register(parser.add_subparsers(dest="command"))
    return parser


async def _run(argv):
    args = _parser().parse_args(argv)
    return await asyncio.wait_for(asyncio.to_thread(args.func, args), 30)


async def test_fetch_x509_writes_files(served, tmp_path, capsys):
    source, address = served
    assert await _run(["api", "fetch-x509", "--socket", address, "--write", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "SPIFFE ID:     spiffe://example.org/ns/prod/sa/web" in out
    assert "Trust domains: example.org, partner.org" in out
    assert (tmp_path / "svid.pem").read_bytes() == source.get_x509_svid().cert_chain_pem()
    assert stat.S_IMODE((tmp_path / "svid.key").stat().st_mode) == 0o600


async def test_fetch_jwt_then_validate(served, capsys):
    _, address = served
    assert await _run(["api", "fetch-jwt", "--socket", address, "--audience", "db"]) == 0
    token = capsys.readouterr().out.strip()
    assert token.count(".") == 2
    assert await _run(["api", "validate-jwt", "--socket", address, "--audience", "db", token]) == 0
    assert "VALID spiffe://example.org/ns/prod/sa/web" in capsys.readouterr().out
    assert await _run(["api", "validate-jwt", "--socket", address, "--audience", "x", token]) == 1
    assert "INVALID" in capsys.readouterr().out


async def test_fetch_bundles(served, capsys):
    _, address = served
    assert await _run(["api", "fetch-bundles", "--socket", address]) == 0
    out = capsys.readouterr().out
    assert "# spiffe://partner.org" in out and out.count("BEGIN CERTIFICATE") == 2
    assert await _run(["api", "fetch-bundles", "--socket", address, "--jwt"]) == 0
    assert '"use": "jwt-svid"' in capsys.readouterr().out


async def test_bad_address_is_a_usage_error():
    with pytest.raises(UsageError, match="scheme must be unix or tcp"):
        await _run(["api", "fetch-jwt", "--socket", "http://x", "--audience", "a"])
