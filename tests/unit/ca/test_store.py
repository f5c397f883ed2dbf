"""The on-disk CA directory: layout, round trips, rotation on disk, precise errors for broken dirs."""

from __future__ import annotations

import json
import stat
from datetime import timedelta

import pytest

from ca.authority import load_upstream
from ca.errors import CaStoreError
from ca.keys import generate_key, private_key_to_pem
from ca.manager import CaConfig
from ca.store import CaDirectory
from sdk.spiffeid import SpiffeId
from sdk.x509svid import verify_chain
from tests.support.pki import make_intermediate, make_root
from tests.unit.ca.conftest import T0

WEB = SpiffeId.parse("spiffe://example.org/ns/prod/sa/web")


@pytest.fixture
def ca_dir(tmp_path, td):
    directory = CaDirectory(tmp_path / "ca")
    directory.init(CaConfig(td, ca_ttl=timedelta(days=10)), now=T0)
    return directory


def _ids(directory):
    return [a["id"] for a in json.loads(directory.state_file.read_text())["authorities"]]


def test_init_writes_the_documented_layout(ca_dir):
    (authority_id,) = _ids(ca_dir)
    root = ca_dir.path
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert (root / "certs" / f"{authority_id}.pem").is_file()
    for name in (f"{authority_id}-x509.key", f"{authority_id}-jwt.key"):
        assert stat.S_IMODE((root / "keys" / name).stat().st_mode) == 0o600
    state = json.loads(ca_dir.state_file.read_text())
    assert state["format"] == "trustmesh-ca/1" and state["trust_domain"] == "example.org"
    assert state["sequence"] == 1 and state["authorities"][0]["state"] == "active"


def test_load_gives_back_the_same_ca(ca_dir):
    before = ca_dir.load()
    after = ca_dir.load()
    assert after.bundle() == before.bundle()
    assert after.config == before.config
    chain = after.issue_x509_svid(generate_key().public_key(), WEB, now=T0)
    assert verify_chain(chain, before.bundle(), T0) == WEB


def test_init_refuses_to_overwrite_a_ca(ca_dir, td):
    with pytest.raises(CaStoreError, match="already holds a CA"):
        ca_dir.init(CaConfig(td), now=T0)


def test_rotation_persists_and_tainted_keys_are_deleted(ca_dir):
    (first,) = _ids(ca_dir)
    with ca_dir.update() as ca:
        second = ca.prepare(T0).id
    assert _ids(ca_dir) == [first, second] and ca_dir.load().sequence == 2
    with ca_dir.update() as ca:
        ca.activate(T0)
    assert ca_dir.load().slots.active.id == second
    with ca_dir.update() as ca:
        ca.taint(T0)
    assert _ids(ca_dir) == [second]
    assert not (ca_dir.path / "certs" / f"{first}.pem").exists()
    assert not (ca_dir.path / "keys" / f"{first}-x509.key").exists()
    loaded = ca_dir.load()
    assert loaded.sequence == 3 and [t.id for t in loaded.tainted] == [first]
    assert loaded.tainted[0].serial == ca.tainted[0].serial > 2**64


def test_a_failed_update_changes_nothing(ca_dir):
    before = ca_dir.state_file.read_bytes()
    with pytest.raises(ValueError):
        with ca_dir.update() as ca:
            ca.activate(T0)  # nothing prepared
    assert ca_dir.state_file.read_bytes() == before


def test_upstream_ca_keeps_its_upstream_and_rotates_under_it(tmp_path, td):
    now = T0.replace(year=2026)
    user_root = make_root("corp.example", not_before=now - timedelta(days=1), not_after=now + timedelta(days=60))
    user_mid = make_intermediate(user_root, not_before=now - timedelta(days=1), not_after=now + timedelta(days=30))
    upstream = load_upstream(user_mid.pem + user_root.pem, user_mid.key, now=now)
    directory = CaDirectory(tmp_path / "ca")
    directory.init(CaConfig(td), now=now, upstream=upstream)
    assert (tmp_path / "ca" / "certs" / "upstream.pem").read_bytes() == user_mid.pem + user_root.pem
    with directory.update() as ca:
        ca.prepare(now)
        ca.activate(now)
    ca = directory.load()
    chain = ca.issue_x509_svid(generate_key().public_key(), WEB, now=now)
    assert chain[-1] == user_mid.cert
    assert verify_chain(chain, ca.bundle(), now) == WEB


def test_passphrase_protects_every_key(tmp_path, td):
    directory = CaDirectory(tmp_path / "ca", passphrase=b"pw")
    directory.init(CaConfig(td), now=T0)
    for key_file in (tmp_path / "ca" / "keys").iterdir():
        assert b"ENCRYPTED PRIVATE KEY" in key_file.read_bytes()
    assert CaDirectory(tmp_path / "ca", passphrase=b"pw").load().sequence == 1
    with pytest.raises(CaStoreError, match="encrypted and no passphrase"):
        CaDirectory(tmp_path / "ca").load()


def _edit_state(directory, change):
    doc = json.loads(directory.state_file.read_text())
    change(doc)
    directory.state_file.write_text(json.dumps(doc))


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda d: d.state_file.unlink(), r"not a CA directory \(ca.json missing\)"),
        (lambda d: d.state_file.write_text("{not json"), r"ca.json: invalid JSON at line 1"),
        (lambda d: d.state_file.write_text("[]"), r"ca.json: expected a JSON object"),
        (lambda d: _edit_state(d, lambda s: s.pop("sequence")), r"ca.json: field 'sequence' is missing"),
        (lambda d: _edit_state(d, lambda s: s.update(sequence="2")), r"field 'sequence' must be an integer"),
        (lambda d: _edit_state(d, lambda s: s.update(format="x")), r"unsupported format 'x'"),
        (lambda d: _edit_state(d, lambda s: s.update(trust_domain="Bad Domain")), r"ca.json: .*trust domain"),
        (lambda d: _edit_state(d, lambda s: s.update(key_type="dsa")), r"unknown key type 'dsa'"),
        (lambda d: _edit_state(d, lambda s: s.update(ca_ttl_seconds=0)), r"'ca_ttl_seconds' must be at least 1"),
        (lambda d: _edit_state(d, lambda s: s["authorities"][0].update(state="retired")),
         r"expected one active authority and at most one standby, found retired"),
        (lambda d: _edit_state(d, lambda s: s["authorities"][0].update(id="../../etc")),
         r"authorities\[0\]: field 'id' must be 32 lower-case hex digits"),
        (lambda d: _edit_state(d, lambda s: s["authorities"][0].update(created_at="yesterday")),
         r"field 'created_at' must be an ISO 8601 time"),
        (lambda d: _remove(d, "certs", ".pem"), r"\.pem: certificate file is missing"),
        (lambda d: _remove(d, "keys", "-jwt.key"), r"-jwt\.key: key file is missing"),
        (lambda d: _chmod(d, "-x509.key", 0o640), r"-x509\.key: key file is accessible by group or others"),
        (lambda d: _swap_key(d), r"\.pem: the private key does not match the certificate"),
        (lambda d: _garble(d, "certs", ".pem"), r'\.pem: a malformed PEM "CERTIFICATE" block'),
    ],
    ids=["no-state", "bad-json", "not-object", "missing-field", "wrong-type", "format", "trust-domain",
         "key-type", "ttl", "no-active", "path-id", "bad-time", "missing-cert", "missing-key",
         "key-mode", "mismatched-key", "garbled-cert"],
)
def test_broken_directory_gives_a_precise_error(ca_dir, breakage, message):
    breakage(ca_dir)
    with pytest.raises(CaStoreError, match=message):
        ca_dir.load()


def test_missing_directory_is_named(tmp_path):
    with pytest.raises(CaStoreError, match=r"nowhere: no such directory"):
        CaDirectory(tmp_path / "nowhere").load()


def _file(directory, sub, suffix):
    (path,) = [p for p in (directory.path / sub).iterdir() if p.name.endswith(suffix)]
    return path


def _remove(directory, sub, suffix):
    _file(directory, sub, suffix).unlink()


def _chmod(directory, suffix, mode):
    _file(directory, "keys", suffix).chmod(mode)


def _garble(directory, sub, suffix):
    _file(directory, sub, suffix).write_bytes(b"-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----\n")


def _swap_key(directory):
    path = _file(directory, "keys", "-x509.key")
    path.write_bytes(private_key_to_pem(generate_key()))
    path.chmod(0o600)
