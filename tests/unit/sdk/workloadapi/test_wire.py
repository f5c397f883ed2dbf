"""Malformed Workload API answers are refused with the field that is wrong."""

import pytest
from cryptography.hazmat.primitives import serialization

from sdk.proto import workload as pb
from sdk.workloadapi import WorkloadApiError
from sdk.workloadapi._wire import jwt_bundle_set, split_der, x509_bundle_set, x509_context


def _entry(domain, spiffe_id=None, bundle=None):
    svid = domain.svid("/w")
    return pb.X509SVID(
        spiffe_id=spiffe_id or str(svid.spiffe_id),
        x509_svid=b"".join(c.public_bytes(serialization.Encoding.DER) for c in svid.cert_chain),
        x509_svid_key=svid.private_key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        bundle=domain.root_der if bundle is None else bundle,
    )


def test_split_der_reads_concatenated_certificates(domain):
    chain = (*domain.svid("/w").cert_chain, domain.root_cert)
    der = b"".join(c.public_bytes(serialization.Encoding.DER) for c in chain)
    assert split_der(der, "chain") == chain
    assert split_der(b"", "empty") == ()


@pytest.mark.parametrize(
    ("mangle", "complaint"),
    [
        (lambda der: der[:-1], "truncated"),
        (lambda der: b"\x31" + der[1:], "not a DER certificate"),
        (lambda der: der + b"\x30", "not a DER certificate"),
        (lambda der: der[:1] + b"\x85" + der[2:], "bad DER length"),
    ],
)
def test_split_der_refuses_garbage(domain, mangle, complaint):
    with pytest.raises(WorkloadApiError, match=complaint) as caught:
        split_der(mangle(domain.root_der), "bundle")
    assert caught.value.code == "BAD_RESPONSE"


def test_x509_context_puts_own_bundle_with_federated(domain, partner):
    message = pb.X509SVIDResponse(
        svids=[_entry(domain)], federated_bundles={"spiffe://partner.org": partner.root_der}
    )
    context = x509_context(message)
    assert context.bundles.trust_domains() == (domain.trust_domain, partner.trust_domain)


@pytest.mark.parametrize(
    ("build", "complaint"),
    [
        (lambda d: pb.X509SVIDResponse(), "no SVIDs"),
        (
            lambda d: pb.X509SVIDResponse(svids=[_entry(d, "spiffe://example.org/other")]),
            "does not match",
        ),
        (lambda d: pb.X509SVIDResponse(svids=[_entry(d, bundle=b"")]), "empty bundle"),
        (
            lambda d: pb.X509SVIDResponse(
                svids=[_entry(d)], federated_bundles={"not a trust domain!": d.root_der}
            ),
            "bundle key",
        ),
        (
            lambda d: pb.X509SVIDResponse(
                svids=[pb.X509SVID(spiffe_id="spiffe://example.org/w", x509_svid=b"", bundle=b"")]
            ),
            r"svids\[0\]",
        ),
    ],
)
def test_x509_context_refuses_malformed_responses(domain, build, complaint):
    with pytest.raises(WorkloadApiError, match=complaint) as caught:
        x509_context(build(domain))
    assert caught.value.code == "BAD_RESPONSE"


def test_bundle_maps_refuse_bad_entries(domain):
    with pytest.raises(WorkloadApiError, match="JWT bundle of spiffe://example.org"):
        jwt_bundle_set({"spiffe://example.org": b"{not json"})
    with pytest.raises(WorkloadApiError, match="bundle of spiffe://example.org"):
        x509_bundle_set({"spiffe://example.org": b"\x30\x03abc"})
