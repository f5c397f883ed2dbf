"""RFC 5280 name constraints on the CA certificates of an X509-SVID path, with real certificates.

Each CA here really carries a ``nameConstraints`` extension built with
``cryptography`` (or, for encodings ``cryptography`` will not build, the DER
written by hand), and every chain is verified with :func:`sdk.verify_chain`.
``openssl verify`` must agree with us on the chains of :func:`_cases`, and
Hypothesis compares the host matching with a plain-string reading of RFC 5280.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtensionOID
from hypothesis import given, settings
from hypothesis import strategies as st

from sdk import Bundle, TrustDomain, X509SvidError, validate_leaf, verify_chain
from sdk._name_constraints import MAX_COMPARISONS, Constraints, constraints_of
from tests.support.pki import (
    chain_pem,
    make_intermediate,
    make_leaf,
    make_root,
    name_constraints,
    raw_extension,
    standard_chain,
)


def _bundle(trust_domain, root):
    return Bundle(TrustDomain.parse(trust_domain), (root.cert,))


def _verify(spiffe_id, root, *intermediates, **leaf_overrides):
    """Issue a leaf for ``spiffe_id`` under the last CA and verify it against ``root``."""
    issuer = intermediates[-1] if intermediates else root
    leaf = make_leaf(issuer, spiffe_id, **leaf_overrides)
    trust_domain = spiffe_id.removeprefix("spiffe://").split("/", 1)[0]
    return verify_chain([leaf.cert, *(i.cert for i in intermediates)], _bundle(trust_domain, root))


def _root(*permitted, excluded=(), trust_domain="example.org", critical=True):
    return make_root(trust_domain, extensions=[name_constraints(permitted, excluded, critical=critical)])


# -- URI constraints: the trust domain of the SPIFFE ID ------------------------


def test_permitted_uri_host_admits_its_trust_domain():
    root = _root("URI:example.org")
    assert str(_verify("spiffe://example.org/ns/prod/sa/web", root)) == "spiffe://example.org/ns/prod/sa/web"


def test_permitted_uri_host_is_one_host_not_its_subdomains():
    """RFC 5280: without a leading period a URI constraint names a host (Go would also admit subdomains)."""
    root = _root("URI:example.org")
    with pytest.raises(X509SvidError) as caught:
        _verify("spiffe://prod.example.org/web", root)
    assert str(caught.value) == (
        "authority certificate 'CN=example.org test root' does not permit "
        "URI 'spiffe://prod.example.org/web' (host 'prod.example.org') of the leaf: "
        "it is in none of the permitted URI subtrees ('example.org')"
    )


def test_leading_period_permits_subdomains_only():
    root = _root("URI:.example.org")
    assert _verify("spiffe://prod.example.org/web", root).trust_domain.name == "prod.example.org"
    assert _verify("spiffe://a.b.example.org/web", root).trust_domain.name == "a.b.example.org"
    with pytest.raises(X509SvidError, match="none of the permitted URI subtrees"):
        _verify("spiffe://example.org/web", root)
    with pytest.raises(X509SvidError, match="none of the permitted URI subtrees"):
        _verify("spiffe://badexample.org/web", root)


def test_excluded_uri_subtree_beats_permitted():
    root = _root("URI:.example.org", excluded=["URI:evil.example.org", "URI:.lab.example.org"])
    assert _verify("spiffe://prod.example.org/web", root)
    with pytest.raises(X509SvidError) as caught:
        _verify("spiffe://evil.example.org/web", root)
    assert "excludes URI 'spiffe://evil.example.org/web' (host 'evil.example.org') of the leaf" in str(caught.value)
    assert "(excluded URI subtree 'evil.example.org')" in str(caught.value)
    with pytest.raises(X509SvidError, match="excluded URI subtree '.lab.example.org'"):
        _verify("spiffe://x.lab.example.org/web", root)


def test_excluded_only_leaves_every_other_trust_domain_permitted():
    root = _root(excluded=["URI:evil.example.org"])
    assert _verify("spiffe://example.org/web", root)
    with pytest.raises(X509SvidError, match="excludes URI"):
        _verify("spiffe://evil.example.org/web", root)


def test_constraints_are_enforced_even_when_not_critical():
    root = _root("URI:example.org", critical=False)
    with pytest.raises(X509SvidError, match="does not permit URI"):
        _verify("spiffe://prod.example.org/web", root)


# -- where on the path ----------------------------------------------------------


def test_constrained_intermediate_under_unconstrained_root():
    """A shared root trusted for two domains; the intermediate is limited to one of them."""
    root = make_root("example.org")
    mid = make_intermediate(root, extensions=[name_constraints(["URI:example.org"])])
    assert _verify("spiffe://example.org/ns/prod/sa/web", root, mid)
    with pytest.raises(X509SvidError) as caught:
        _verify("spiffe://other.org/ns/prod/sa/web", root, mid)
    assert str(caught.value).startswith(
        "intermediate certificate 'CN=example.org test intermediate' does not permit URI "
        "'spiffe://other.org/ns/prod/sa/web' (host 'other.org') of the leaf"
    )


def test_root_constraints_apply_to_the_intermediates_names_too():
    root = _root("URI:example.org")
    stray = make_intermediate(root, "other.org", subject="stray")
    with pytest.raises(X509SvidError, match=r"does not permit URI 'spiffe://other.org' .* of intermediate 'CN=stray'"):
        _verify("spiffe://example.org/web", root, stray)


def test_two_constrained_cas_permit_only_what_both_permit():
    """Each CA is checked on its own, so disjoint permitted subtrees leave nothing permitted."""
    root = _root("URI:a.example.org", trust_domain="a.example.org")
    mid = make_intermediate(root, extensions=[name_constraints(["URI:b.example.org"])])
    with pytest.raises(X509SvidError, match="intermediate certificate .* does not permit URI 'spiffe://a.example.org/web'"):
        _verify("spiffe://a.example.org/web", root, mid)
    with pytest.raises(X509SvidError, match="authority certificate .* does not permit URI 'spiffe://b.example.org/web'"):
        _verify("spiffe://b.example.org/web", root, mid)


def test_chain_without_constraints_is_unchanged():
    root, mid, leaf = standard_chain()
    assert constraints_of(root.cert) is None and constraints_of(mid.cert) is None
    assert str(verify_chain([leaf.cert, mid.cert], _bundle("example.org", root))) == "spiffe://example.org/ns/default/sa/default"


# -- DNS and IP SANs of serving certificates -----------------------------------


def test_dns_constraint_checks_dns_sans_and_leaves_the_uri_alone():
    root = _root("DNS:example.org")  # no URI constraint: the SPIFFE ID's form is unconstrained
    assert _verify("spiffe://example.org/web", root, dns_sans=["web.example.org", "example.org"])
    assert _verify("spiffe://other.org/web", root)  # no DNS names to check
    with pytest.raises(X509SvidError) as caught:
        _verify("spiffe://example.org/web", root, dns_sans=["web.example.org", "web.example.com"])
    assert "does not permit DNS name 'web.example.com' of the leaf" in str(caught.value)
    assert "permitted DNS subtrees ('example.org')" in str(caught.value)


def test_dns_leading_period_and_case():
    root = _root("DNS:.example.org")
    assert _verify("spiffe://example.org/web", root, dns_sans=["WEB.Example.ORG"])
    with pytest.raises(X509SvidError, match="does not permit DNS name 'example.org'"):
        _verify("spiffe://example.org/web", root, dns_sans=["example.org"])


def test_wildcard_dns_name_is_excluded_if_any_name_it_covers_is():
    root = _root("DNS:example.org", excluded=["DNS:admin.example.org"])
    assert _verify("spiffe://example.org/web", root, dns_sans=["*.prod.example.org"])
    with pytest.raises(X509SvidError, match=r"excludes DNS name '\*.example.org'"):
        _verify("spiffe://example.org/web", root, dns_sans=["*.example.org"])


def test_ip_constraint():
    root = _root("IP:10.0.0.0/8", excluded=["IP:10.9.0.0/16"])

    def ip(text):
        return [x509.IPAddress(ipaddress.ip_address(text))]

    assert _verify("spiffe://example.org/web", root, other_sans=ip("10.1.2.3"))
    with pytest.raises(X509SvidError, match="does not permit IP '192.168.1.1'"):
        _verify("spiffe://example.org/web", root, other_sans=ip("192.168.1.1"))
    with pytest.raises(X509SvidError, match="excludes IP '10.9.0.1'"):
        _verify("spiffe://example.org/web", root, other_sans=ip("10.9.0.1"))
    with pytest.raises(X509SvidError, match="does not permit IP '::1'"):
        _verify("spiffe://example.org/web", root, other_sans=ip("::1"))


def test_uri_whose_host_is_an_ip_address_cannot_be_checked():
    root = _root("URI:.example.org", trust_domain="10.0.0.1")
    with pytest.raises(X509SvidError, match="its host is an IP address"):
        _verify("spiffe://10.0.0.1/web", root)


# -- what we do not check fails closed -----------------------------------------


def test_directory_name_constraint_is_refused_when_the_leaf_has_a_subject():
    root = _root("dirName:O=Example")
    with pytest.raises(X509SvidError) as caught:
        _verify("spiffe://example.org/web", root)
    assert str(caught.value) == (
        "authority certificate 'CN=example.org test root' has directoryName name constraints ('O=Example'), "
        "which trustmesh does not check, and the leaf has a name of that form "
        "('CN=trustmesh test workload'); refusing"
    )
    empty_subject = {"subject": x509.Name([]), "extensions": []}
    with pytest.raises(X509SvidError, match="empty subject"):  # the leaf rule, before any path
        _verify("spiffe://example.org/web", root, **empty_subject)


def test_email_constraint_is_refused_only_when_the_leaf_has_an_email():
    root = _root("email:example.org")
    assert _verify("spiffe://example.org/web", root)
    with pytest.raises(X509SvidError, match="has rfc822Name name constraints .* the leaf has a name of that form"):
        _verify("spiffe://example.org/web", root, other_sans=[x509.RFC822Name("ops@example.org")])


@pytest.mark.parametrize(
    ("constraint", "reason"),
    [
        ("URI:spiffe://example.org/ns/prod", "names a host or a domain, never a scheme, path or port"),
        ("URI:", "an empty constraint has no meaning"),
        ("DNS:exa mple.org", "is not a domain name"),
    ],
)
@pytest.mark.parametrize("kind", ["permitted", "excluded"])
def test_malformed_constraint_is_refused(constraint, reason, kind):
    root = _root(constraint) if kind == "permitted" else _root(excluded=[constraint])
    with pytest.raises(X509SvidError, match=f"has a malformed {kind} .* name constraint .*{reason}"):
        _verify("spiffe://example.org/web", root, dns_sans=["web.example.org"])


# DER of NameConstraints values cryptography will not build: a subtree with a
# minimum or maximum, and an x400Address base.
_MINIMUM_1 = bytes.fromhex("3014a0123010820b6578616d706c652e6f7267800101")
_MAXIMUM_1 = bytes.fromhex("3014a0123010820b6578616d706c652e6f7267810101")
_X400 = bytes.fromhex("3006a0043002a300")


@pytest.mark.parametrize("der", [_MINIMUM_1, _MAXIMUM_1], ids=["minimum", "maximum"])
def test_subtree_minimum_or_maximum_is_refused(der):
    root = make_root("example.org", extensions=[raw_extension(ExtensionOID.NAME_CONSTRAINTS, der)])
    with pytest.raises(X509SvidError, match="name constraints with a minimum or maximum"):
        _verify("spiffe://example.org/web", root)


@pytest.mark.parametrize("critical", [True, False])
def test_unparseable_constraint_form_is_refused_not_a_crash(critical):
    root = make_root("example.org", extensions=[raw_extension(ExtensionOID.NAME_CONSTRAINTS, _X400, critical)])
    with pytest.raises(X509SvidError, match="malformed extensions: x400Address"):
        _verify("spiffe://example.org/web", root)


def test_too_many_comparisons_is_refused():
    root = _root(*(f"DNS:d{i}.example.org" for i in range(MAX_COMPARISONS + 1)))
    assert _verify("spiffe://example.org/web", root)  # no DNS names: nothing to compare
    with pytest.raises(X509SvidError, match="more name constraints than trustmesh checks"):
        _verify("spiffe://example.org/web", root, dns_sans=["web.example.org"])


# -- openssl agrees ---------------------------------------------------------------


def _cases():
    """(name, root, intermediates, leaf, trust domain, openssl's reason when it refuses)."""
    cases = []
    root = _root("URI:.example.org")
    cases.append(("uri-subdomain-permitted", root, [], make_leaf(root, "spiffe://prod.example.org/web"), None))
    root = _root("URI:example.org")
    cases.append(("uri-host-is-not-its-subdomain", root, [], make_leaf(root, "spiffe://prod.example.org/web"),
                  "permitted subtree violation"))
    root = _root("URI:.example.org", excluded=["URI:evil.example.org"])
    cases.append(("uri-excluded", root, [], make_leaf(root, "spiffe://evil.example.org/web"),
                  "excluded subtree violation"))
    root = make_root("example.org")
    mid = make_intermediate(root, extensions=[name_constraints(["URI:example.org"])])
    cases.append(("constrained-intermediate-permits", root, [mid], make_leaf(mid, "spiffe://example.org/web"), None))
    cases.append(("constrained-intermediate-refuses", root, [mid], make_leaf(mid, "spiffe://other.org/web"),
                  "permitted subtree violation"))
    root = _root("DNS:example.org")
    cases.append(("dns-refused", root, [], make_leaf(root, "spiffe://example.org/web", dns_sans=["web.example.com"]),
                  "permitted subtree violation"))
    root = make_root("example.org", extensions=[raw_extension(ExtensionOID.NAME_CONSTRAINTS, _MAXIMUM_1)])
    cases.append(("subtree-maximum", root, [], make_leaf(root, "spiffe://example.org/web", dns_sans=["example.org"]),
                  "minimum and maximum not supported"))
    return cases


_CASES = _cases()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
@pytest.mark.parametrize("case", _CASES, ids=[c[0] for c in _CASES])
def test_openssl_agrees_on_allow_and_deny(case, tmp_path):
    _, root, intermediates, leaf, openssl_reason = case
    (tmp_path / "root.pem").write_bytes(root.pem)
    (tmp_path / "leaf.pem").write_bytes(leaf.pem)
    command = ["openssl", "verify", "-CAfile", "root.pem"]
    if intermediates:
        (tmp_path / "untrusted.pem").write_bytes(chain_pem(*intermediates))
        command += ["-untrusted", "untrusted.pem"]
    result = subprocess.run([*command, "leaf.pem"], cwd=tmp_path, capture_output=True, text=True, timeout=30, check=False)
    trust_domain = validate_leaf(leaf.cert).trust_domain.name
    chain = [leaf.cert, *(i.cert for i in intermediates)]
    if openssl_reason is None:
        assert result.returncode == 0, result.stdout + result.stderr
        assert verify_chain(chain, _bundle(trust_domain, root))
    else:
        assert result.returncode != 0
        assert openssl_reason in (result.stdout + result.stderr).lower()
        with pytest.raises(X509SvidError):
            verify_chain(chain, _bundle(trust_domain, root))


# -- the matching itself, against a plain-string reading of RFC 5280 -------------

_label = st.from_regex(r"[abz][abz09-]{0,3}", fullmatch=True)  # a letter first: never an IP address
_domain = st.lists(_label, min_size=1, max_size=4).map(".".join)


@settings(max_examples=300, deadline=None)
@given(name=_domain, constraint=_domain, dotted=st.booleans(), form=st.sampled_from(["DNS", "URI"]))
def test_domain_matching_agrees_with_string_suffix_rules(name, constraint, dotted, form):
    written = "." + constraint if dotted else constraint
    if dotted:
        expected = name.endswith("." + constraint)
    elif form == "URI":
        expected = name == constraint
    else:
        expected = name == constraint or name.endswith("." + constraint)
    value = f"spiffe://{name}/web" if form == "URI" else name
    permitted = Constraints({form: (written,)}, {})
    excluded = Constraints({}, {form: (written,)})
    assert (permitted._name_problem(form, value, "the leaf") is None) == expected
    assert (excluded._name_problem(form, value, "the leaf") is None) == (not expected)


@settings(max_examples=300, deadline=None)
@given(name=st.text(max_size=30), constraint=st.text(max_size=30), form=st.sampled_from(["DNS", "URI"]))
def test_any_name_and_constraint_give_an_answer_not_a_crash(name, constraint, form):
    problem = Constraints({form: (constraint,)}, {form: (constraint,)})._name_problem(form, name, "the leaf")
    assert problem is None or isinstance(problem, str)


def test_leaf_with_an_x400_address_san_is_refused_not_a_crash():
    """cryptography raises UnsupportedGeneralNameType (not a ValueError) for x400Address; we translate it."""
    root = make_root("example.org")
    leaf = make_leaf(root, uri_sans=None, extensions=[raw_extension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, bytes.fromhex("3002a300"), False)])
    with pytest.raises(X509SvidError, match="leaf certificate has malformed extensions: x400Address"):
        validate_leaf(leaf.cert)
    with pytest.raises(X509SvidError, match="malformed extensions"):
        verify_chain([leaf.cert], _bundle("example.org", root))
