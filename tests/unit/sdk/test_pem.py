"""sdk.pem.mismatch: what a file holds, said in words, when it is not what was expected."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import serialization

from ca.keys import generate_key, private_key_to_pem
from sdk.bundle import Bundle
from sdk.errors import BundleError, X509SvidError
from sdk.pem import mismatch
from sdk.spiffeid import TrustDomain
from sdk.x509svid import X509Svid, parse_certificates
from tests.support.pki import make_root

KEY_PEM = private_key_to_pem(generate_key())
ROOT = make_root("example.org")


@pytest.mark.parametrize(
    ("data", "said"),
    [
        (KEY_PEM, 'a private key (PEM "PRIVATE KEY"), not a certificate'),
        (b"", "empty; expected a certificate"),
        (b"  \n", "empty; expected a certificate"),
        (json.dumps({"keys": []}).encode(), "JSON, not a certificate"),
        (b"hello", "not PEM (no -----BEGIN line); expected a certificate"),
        (b"-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----\n",
         'a malformed PEM "CERTIFICATE" block; expected a certificate'),
        (b"-----BEGIN WIDGET-----\n-----END WIDGET-----\n", 'other PEM data (PEM "WIDGET"), not a certificate'),
    ],
    ids=["key", "empty", "blank", "json", "text", "malformed", "unknown-label"],
)
def test_mismatch_says_what_the_data_holds(data, said):
    assert mismatch(data, expected="a certificate", label="CERTIFICATE") == said


def test_loaders_name_the_file_and_never_leak_the_library_message(tmp_path):
    (tmp_path / "web.key").write_bytes(KEY_PEM)
    (tmp_path / "web.crt").write_bytes(ROOT.pem)
    with pytest.raises(X509SvidError) as caught:
        parse_certificates(KEY_PEM, source="web.key")
    assert str(caught.value) == 'web.key: a private key (PEM "PRIVATE KEY"), not certificates (PEM or DER)'
    with pytest.raises(X509SvidError) as caught:  # the two files swapped
        X509Svid.load(tmp_path / "web.key", tmp_path / "web.crt")
    assert str(caught.value).startswith(f"{tmp_path / 'web.key'}: a private key")
    with pytest.raises(X509SvidError) as caught:
        X509Svid.parse(ROOT.pem, ROOT.pem, key_source="web.crt")
    assert str(caught.value) == 'web.crt: a certificate (PEM "CERTIFICATE"), not a private key'
    with pytest.raises(BundleError) as caught:
        Bundle.parse_pem(KEY_PEM, TrustDomain.parse("example.org"))
    assert "a private key (PEM" in str(caught.value)
    der = ROOT.cert.public_bytes(serialization.Encoding.DER)
    assert parse_certificates(der) == [ROOT.cert]  # DER still reads
    for err in (caught.value,):
        assert "cryptography.io" not in str(err)
