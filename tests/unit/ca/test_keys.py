"""CA keys: types, PKCS#8 files with mode 0600 and optional passphrase, the in-memory store."""

from __future__ import annotations

import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ca.errors import CaStoreError, KeyFormatError
from ca.keys import (
    FileKeyStore,
    KeyType,
    MemoryKeyStore,
    generate_key,
    key_type_of,
    private_key_from_pem,
    private_key_to_pem,
    signature_hash,
)
from tests.support.pki import new_key


@pytest.mark.parametrize("key_type", list(KeyType))
def test_each_key_type_round_trips_through_pkcs8(key_type):
    key = generate_key(key_type)
    assert key_type_of(key) is key_type
    pem = private_key_to_pem(key)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8, unencrypted
    assert private_key_from_pem(pem).public_key() == key.public_key()


def test_default_key_is_ecdsa_p256():
    key = generate_key()
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert isinstance(generate_key(KeyType.RSA_3072), rsa.RSAPrivateKey)


def test_passphrase_encrypts_and_is_required():
    key = generate_key()
    pem = private_key_to_pem(key, b"s3cret")
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert private_key_from_pem(pem, b"s3cret").public_key() == key.public_key()
    with pytest.raises(KeyFormatError, match="no passphrase was given"):
        private_key_from_pem(pem, source="ca.key")
    with pytest.raises(KeyFormatError, match="wrong passphrase"):
        private_key_from_pem(pem, b"guess", source="ca.key")
    with pytest.raises(KeyFormatError, match="not encrypted"):
        private_key_from_pem(private_key_to_pem(key), b"s3cret")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty; expected a PEM private key"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", 'a malformed PEM "PRIVATE KEY" block'),
        (private_key_to_pem(new_key("rsa-1024")), "unsupported RSA key size 1024"),
        (private_key_to_pem(new_key("ed25519")), "only ECDSA or RSA"),
    ],
    ids=["empty", "garbage", "rsa-1024", "ed25519"],
)
def test_unusable_keys_are_refused_with_the_reason(data, reason):
    with pytest.raises(KeyFormatError, match=reason) as caught:
        private_key_from_pem(data, source="upstream.key")
    assert str(caught.value).startswith("upstream.key: ")


def test_an_upstream_p384_key_loads_and_signs_with_sha384():
    key = private_key_from_pem(private_key_to_pem(new_key("ec-p384")))
    assert signature_hash(key).name == "sha384"
    assert signature_hash(generate_key()).name == "sha256"
    with pytest.raises(KeyFormatError, match="only P-256"):
        key_type_of(key)  # but the CA never generates one for itself


def test_unknown_key_type_name_lists_the_choices():
    with pytest.raises(KeyFormatError, match="ec-p256, rsa-2048, rsa-3072"):
        KeyType.parse("ec-p384")


def test_file_store_writes_mode_0600_in_a_0700_directory(tmp_path):
    store = FileKeyStore(tmp_path / "keys")
    key = generate_key()
    store.save("root", key)
    path = tmp_path / "keys" / "root.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    assert serialization.load_pem_private_key(path.read_bytes(), None).public_key() == key.public_key()
    assert store.load("root").public_key() == key.public_key()
    assert store.exists("root") and not store.exists("other")
    store.delete("root")
    assert not path.exists()


def test_file_store_with_passphrase_encrypts_on_disk(tmp_path):
    FileKeyStore(tmp_path, b"pw").save("root", generate_key())
    assert b"ENCRYPTED" in (tmp_path / "root.key").read_bytes()
    assert FileKeyStore(tmp_path, b"pw").load("root")
    with pytest.raises(KeyFormatError, match="no passphrase"):
        FileKeyStore(tmp_path).load("root")


def test_file_store_refuses_keys_others_can_read(tmp_path):
    store = FileKeyStore(tmp_path)
    store.save("root", generate_key())
    (tmp_path / "root.key").chmod(0o644)
    with pytest.raises(CaStoreError, match=r"root.key: key file is accessible by group or others \(mode 0644\)"):
        store.load("root")


def test_file_store_names_the_missing_or_corrupt_file(tmp_path):
    store = FileKeyStore(tmp_path)
    with pytest.raises(CaStoreError, match=r"root.key: key file is missing"):
        store.load("root")
    (tmp_path / "root.key").write_bytes(b"junk")
    (tmp_path / "root.key").chmod(0o600)
    with pytest.raises(KeyFormatError, match=r"root.key: not PEM \(no -----BEGIN line\); expected a PEM private key"):
        store.load("root")


@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".hidden", "x" * 200])
def test_key_names_cannot_escape_the_directory(tmp_path, name):
    with pytest.raises(KeyFormatError, match="invalid key name"):
        FileKeyStore(tmp_path).save(name, generate_key())


def test_memory_store_keeps_keys_by_name():
    store = MemoryKeyStore()
    key = generate_key()
    store.save("jwt", key)
    assert store.load("jwt") is key and store.exists("jwt")
    store.delete("jwt")
    with pytest.raises(CaStoreError, match="no key named 'jwt'"):
        store.load("jwt")
