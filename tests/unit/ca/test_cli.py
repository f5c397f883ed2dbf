"""`trustmesh ca ...` run as a real subprocess: outputs, files, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import spiffe

from ca.keys import private_key_to_pem
from sdk.bundle import Bundle
from sdk.jwtsvid import validate_jwt_svid
from sdk.spiffeid import SpiffeId, TrustDomain
from sdk.x509svid import X509Svid, verify_chain
from tests.support.pki import make_intermediate, make_root

ROOT = Path(__file__).resolve().parents[3]
TD = TrustDomain.parse("example.org")
WEB = "spiffe://example.org/ns/prod/sa/web"


def trustmesh(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trustmesh", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def ok(*args: str, **kwargs) -> str:
    result = trustmesh(*args, **kwargs)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _init(path: Path) -> str:
    out = ok("ca", "init", "--trust-domain", "example.org", "--dir", str(path), "--ttl", "720h")
    assert "self-signed root" in out
    return str(path)


@pytest.fixture
def ca_dir(tmp_path) -> str:
    return _init(tmp_path / "ca")


@pytest.fixture(scope="module")
def shared_ca(tmp_path_factory) -> str:
    """One CA for the tests that only read it or fail before writing."""
    return _init(tmp_path_factory.mktemp("shared") / "ca")


def test_quickstart_init_issue_inspect(ca_dir, tmp_path, openssl_verify):
    prefix = tmp_path / "web"
    out = ok("ca", "issue", "--dir", ca_dir, "--spiffe-id", WEB, "--dns", "web.prod.svc", "--out", str(prefix))
    assert out.startswith(f"{WEB} valid until ")
    crt, key, bundle_pem = (Path(f"{prefix}{s}") for s in (".crt", ".key", ".bundle.pem"))
    assert stat.S_IMODE(key.stat().st_mode) == 0o600

    svid = X509Svid.load(crt, key)
    bundle = Bundle.parse_pem(bundle_pem.read_bytes(), TD)
    assert verify_chain(svid.cert_chain, bundle) == SpiffeId.parse(WEB)
    theirs = spiffe.X509Svid.parse(crt.read_bytes(), key.read_bytes())
    assert str(theirs.spiffe_id) == WEB
    for purpose in ("sslclient", "sslserver"):
        result = openssl_verify(svid.cert_chain, bundle.x509_authorities, purpose=purpose)
        assert result.returncode == 0, result.stderr
    # the quickstart's last step: the sdk's inspector accepts it against the written bundle
    inspected = ok("svid", "inspect", str(crt), "--bundle", str(bundle_pem))
    assert WEB in inspected


def test_jwt_issue_prints_a_token_the_bundle_validates(ca_dir):
    token = ok("ca", "issue", "--dir", ca_dir, "--spiffe-id", WEB, "--jwt", "--audience", "payments",
               "--ttl", "2m").strip()
    bundle = Bundle.parse_jwks(ok("ca", "bundle", "--dir", ca_dir), TD)
    svid = validate_jwt_svid(token, bundle, "payments")
    assert svid.spiffe_id == SpiffeId.parse(WEB)
    assert svid.claims["exp"] - svid.claims["iat"] == 120


def test_bundle_formats(ca_dir):
    doc = json.loads(ok("ca", "bundle", "--dir", ca_dir, "--format", "jwks"))
    assert doc["spiffe_sequence"] == 1
    assert sorted(k["use"] for k in doc["keys"]) == ["jwt-svid", "x509-svid"]
    pem = ok("ca", "bundle", "--dir", ca_dir, "--format", "pem")
    assert pem.count("BEGIN CERTIFICATE") == 1


def test_rotate_prepare_activate_taint(ca_dir, tmp_path):
    ok("ca", "issue", "--dir", ca_dir, "--spiffe-id", WEB, "--out", str(tmp_path / "old"))
    assert "bundle sequence 2" in ok("ca", "rotate", "prepare", "--dir", ca_dir)
    assert ok("ca", "bundle", "--dir", ca_dir, "--format", "pem").count("BEGIN CERTIFICATE") == 2
    assert "activated authority" in ok("ca", "rotate", "activate", "--dir", ca_dir)
    old = X509Svid.load(tmp_path / "old.crt", tmp_path / "old.key")
    bundle = Bundle.parse_jwks(ok("ca", "bundle", "--dir", ca_dir), TD)
    assert verify_chain(old.cert_chain, bundle) == SpiffeId.parse(WEB)  # still trusted while retired
    # Right after activation, SVIDs signed by the retired authority may still be valid for
    # the CA's longest SVID lifetime: taint refuses, and changes nothing, unless forced.
    refused = trustmesh("ca", "rotate", "taint", "--dir", ca_dir)
    assert refused.returncode == 1 and "may be valid until" in refused.stderr and "--force" in refused.stderr
    assert ok("ca", "bundle", "--dir", ca_dir, "--format", "pem").count("BEGIN CERTIFICATE") == 2
    forced = trustmesh("ca", "rotate", "taint", "--dir", ca_dir, "--force")
    assert forced.returncode == 0 and "bundle sequence 3" in forced.stdout
    assert "warning: SVIDs signed by retired authority" in forced.stderr
    assert ok("ca", "bundle", "--dir", ca_dir, "--format", "pem").count("BEGIN CERTIFICATE") == 1


def test_init_under_an_upstream_ca_with_an_encrypted_key(tmp_path):
    user_root = make_root("corp.example")
    user_mid = make_intermediate(user_root)
    (tmp_path / "up.crt").write_bytes(user_mid.pem + user_root.pem)
    (tmp_path / "up.key").write_bytes(private_key_to_pem(user_mid.key, b"hunter2"))
    env = {"TRUSTMESH_CA_PASSPHRASE": "hunter2"}
    out = ok("ca", "init", "--trust-domain", "example.org", "--dir", str(tmp_path / "ca"),
             "--upstream-cert", str(tmp_path / "up.crt"), "--upstream-key", str(tmp_path / "up.key"), env=env)
    assert "intermediate under the upstream CA" in out
    ok("ca", "issue", "--dir", str(tmp_path / "ca"), "--spiffe-id", WEB, "--out", str(tmp_path / "w"), env=env)
    svid = X509Svid.load(tmp_path / "w.crt", tmp_path / "w.key")
    assert len(svid.cert_chain) == 3
    assert Bundle.parse_pem((tmp_path / "w.bundle.pem").read_bytes(), TD).x509_authorities == (user_root.cert,)
    # without the passphrase the CA's (encrypted) keys cannot be used
    result = trustmesh("ca", "bundle", "--dir", str(tmp_path / "ca"), env={"TRUSTMESH_CA_PASSPHRASE": ""})
    assert result.returncode == 1 and "encrypted and no passphrase" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ca", "init", "--trust-domain", "Example.org", "--dir", "{tmp}/x"], "--trust-domain"),
        (["ca", "init", "--trust-domain", "example.org", "--dir", "{tmp}/x", "--ttl", "1y"], "invalid duration '1y'"),
        (["ca", "init", "--trust-domain", "example.org", "--dir", "{tmp}/x", "--ttl", "0h"], "must be positive"),
        (["ca", "init", "--trust-domain", "example.org", "--dir", "{tmp}/x", "--key-type", "dsa"], "invalid choice"),
        (["ca", "init", "--trust-domain", "example.org", "--dir", "{tmp}/x", "--upstream-cert", "f"], "go together"),
        (["ca", "init", "--trust-domain", "example.org", "--dir", "{tmp}/x", "--upstream-cert", "{tmp}/no",
          "--upstream-key", "{tmp}/no"], "No such file"),
        (["ca", "issue", "--dir", "{ca}", "--spiffe-id", "spiffe://example.org/a//b", "--out", "{tmp}/w"], "--spiffe-id"),
        (["ca", "issue", "--dir", "{ca}", "--spiffe-id", WEB], "--out PREFIX is required"),
        (["ca", "issue", "--dir", "{ca}", "--spiffe-id", WEB, "--jwt"], "at least one --audience"),
        (["ca", "issue", "--dir", "{ca}", "--spiffe-id", WEB, "--audience", "a", "--out", "{tmp}/w"], "--jwt only"),
        (["ca", "rotate", "retire", "--dir", "{ca}"], "invalid choice"),
        (["ca"], "required"),
    ],
)
def test_usage_errors_exit_2_with_one_line(shared_ca, tmp_path, args, message):
    result = trustmesh(*(a.format(tmp=tmp_path, ca=shared_ca) for a in args))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("trustmesh: error: ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ca", "bundle", "--dir", "{tmp}/missing"], "missing: no such directory"),
        (["ca", "issue", "--dir", "{tmp}", "--spiffe-id", WEB, "--out", "{tmp}/w"], "not a CA directory"),
        (["ca", "rotate", "activate", "--dir", "{ca}"], "no prepared authority to activate"),
        (["ca", "rotate", "taint", "--dir", "{ca}"], "no retired authority to taint"),
        (["ca", "issue", "--dir", "{ca}", "--spiffe-id", "spiffe://evil.org/x", "--out", "{tmp}/w"],
         "not in trust domain example.org"),
        (["ca", "issue", "--dir", "{ca}", "--spiffe-id", WEB, "--dns", "bad name", "--out", "{tmp}/w"],
         "invalid label"),
        (["ca", "init", "--trust-domain", "example.org", "--dir", "{ca}"], "already holds a CA"),
    ],
)
def test_failures_exit_1_with_one_line(shared_ca, tmp_path, args, message):
    before = (Path(shared_ca) / "ca.json").read_bytes()
    result = trustmesh(*(a.format(tmp=tmp_path, ca=shared_ca) for a in args))
    assert result.returncode == 1, result.stderr
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == ""
    assert not (tmp_path / "w.crt").exists()
    assert (Path(shared_ca) / "ca.json").read_bytes() == before


def test_concurrent_rotations_are_serialised_by_the_directory_lock(ca_dir):
    runs = [
        subprocess.Popen([sys.executable, "-m", "trustmesh", "ca", "rotate", "prepare", "--dir", ca_dir],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    results = [(p.wait(timeout=60), p.stderr.read()) for p in runs]
    for p in runs:
        p.stdout.close()
        p.stderr.close()
    assert sorted(code for code, _ in results) == [0, 1, 1]
    assert all("already prepared" in err for code, err in results if code == 1)
    doc = json.loads((Path(ca_dir) / "ca.json").read_text())
    assert doc["sequence"] == 2 and len(doc["authorities"]) == 2


def test_taint_needs_no_force_once_the_retired_authoritys_svids_have_expired(ca_dir):
    ok("ca", "rotate", "prepare", "--dir", ca_dir)
    ok("ca", "rotate", "activate", "--dir", ca_dir)
    # Retired two days ago: longer ago than the longest SVID lifetime (24 h), as a user
    # running taint the day after next would find it.
    state_file = Path(ca_dir) / "ca.json"
    state = json.loads(state_file.read_text())
    retired = next(a for a in state["authorities"] if a["state"] == "retired")
    retired["retired_at"] = "2000-01-01T00:00:00+00:00"
    state_file.write_text(json.dumps(state))
    result = trustmesh("ca", "rotate", "taint", "--dir", ca_dir)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "tainted (removed from the bundle)" in result.stdout


def test_issue_says_when_the_ca_capped_the_requested_ttl(shared_ca, tmp_path):
    capped = trustmesh("ca", "issue", "--dir", shared_ca, "--spiffe-id", WEB, "--ttl", "48h", "--out", str(tmp_path / "w"))
    assert capped.returncode == 0, capped.stderr
    assert "note: --ttl 48h was capped" in capped.stderr and "this CA's maximum is 24h" in capped.stderr
    svid = X509Svid.load(tmp_path / "w.crt", tmp_path / "w.key")
    assert svid.leaf.not_valid_after_utc - svid.leaf.not_valid_before_utc <= timedelta(hours=24)
    jwt = trustmesh("ca", "issue", "--dir", shared_ca, "--spiffe-id", WEB, "--jwt", "--audience", "a", "--ttl", "2h")
    assert jwt.returncode == 0 and "note: --ttl 2h was capped" in jwt.stderr and "maximum is 1h" in jwt.stderr
    within = trustmesh("ca", "issue", "--dir", shared_ca, "--spiffe-id", WEB, "--ttl", "2h", "--out", str(tmp_path / "v"))
    assert within.returncode == 0 and within.stderr == ""
