"""Security review: an identity template must never give two workloads one SPIFFE ID.

Namespaces, ServiceAccounts and label values may all contain ``-``, ``.`` and
``_``, so two fields in one path segment (``{namespace}-{service_account}``)
cannot be told apart again: ``a`` + ``b-c`` and ``a-b`` + ``c`` both render
``a-b-c``. Such templates are refused when parsed.
"""

from __future__ import annotations

import pytest

from sdk.errors import TemplateError
from sdk.spiffeid import TrustDomain
from sdk.template import IdentityTemplate

TD = TrustDomain.parse("example.org")


@pytest.mark.parametrize("text", [
    "ns/{namespace}-{service_account}",
    "{namespace}.{service_account}",
    "app/{labels.app}{labels.env}",
    "w/{labels.team}_{pod_name}",
])
def test_two_fields_in_one_segment_are_refused(text):
    with pytest.raises(TemplateError, match="one field per path segment"):
        IdentityTemplate.parse(text)


def test_one_field_with_literals_in_its_segment_stays_allowed():
    template = IdentityTemplate.parse("ns/ns-{namespace}/sa/{service_account}.sa")
    assert str(template.render(TD, namespace="a-b", service_account="c")) == "spiffe://example.org/ns/ns-a-b/sa/c.sa"
