"""What the injector admits, the init container accepts.

Every list the injector hands `trustmesh redirect apply` (the pod's annotation
merged with the injector's own entries) is checked against the redirect
command's own limits at admission; a pod that would sit in Init:Error is
refused with the reason instead. Each admitted pod's init container arguments
are parsed here by the real redirect command, and its sidecar config by the
real sidecar config parser.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import replace

import pytest

from injector.config import InjectorConfig
from injector.errors import AnnotationError
from injector.inject import inject_pod
from injector.webhook import Webhooks
from sdk.redirect_limits import MAX_LIST
from sidecar.config import parse_config as parse_sidecar_config
from sidecar.redirect import cli as redirect_cli
from tests.support.k8s_admission_double import pod as make_pod
from tests.unit.injector.conftest import redirect_config_of, sidecar_config_of
from tests.support.k8s_admission_double import admission_review


def ports(count: int, start: int = 20000) -> str:
    return ",".join(str(p) for p in range(start, start + count))


def cidrs(count: int) -> str:
    return ",".join(str(ipaddress.ip_network(f"10.{i // 256}.{i % 256}.0/24")) for i in range(count))


@pytest.mark.parametrize("annotation, longest", [
    # 15021 (the sidecar's health port) is always added to the inbound list.
    ("trustmesh.io/exclude-inbound-ports", ports(MAX_LIST - 1)),
    ("trustmesh.io/exclude-outbound-ports", ports(MAX_LIST)),
    ("trustmesh.io/exclude-outbound-cidrs", cidrs(MAX_LIST)),
])
def test_the_longest_list_the_redirect_takes_is_admitted_and_one_more_is_refused(config, annotation, longest):
    admitted = inject_pod(make_pod(annotations={annotation: longest}), config)
    assert admitted.injected
    redirect_config_of(admitted.pod)  # the init container accepts it
    one_more = longest + "," + (ports(1, start=40000) if "ports" in annotation else "192.168.0.0/16")
    with pytest.raises(AnnotationError, match=f"^annotation {annotation}: .*{MAX_LIST + 1} entries.*at most {MAX_LIST}"):
        inject_pod(make_pod(annotations={annotation: one_more}), config)


def test_the_limit_counts_the_injectors_own_entries_and_duplicates_once(config):
    own = replace(config, exclude_outbound_ports=tuple(range(30000, 30000 + 200)))
    # 100 of the pod's entries are the injector's own: 256 distinct in all, accepted.
    pod_list = ",".join(str(p) for p in range(30100, 30100 + 156))
    redirect_config_of(inject_pod(make_pod(annotations={"trustmesh.io/exclude-outbound-ports": pod_list}), own).pod)
    pod_list += ",40000"
    with pytest.raises(AnnotationError, match="257 entries with the injector's own"):
        inject_pod(make_pod(annotations={"trustmesh.io/exclude-outbound-ports": pod_list}), own)
    # The health port the injector adds is counted once when the pod names it too.
    inbound = ports(MAX_LIST - 1) + ",15021"
    redirect_config_of(inject_pod(make_pod(annotations={"trustmesh.io/exclude-inbound-ports": inbound}), config).pod)


def test_the_webhook_denies_it_with_the_reason(config):
    review = admission_review(make_pod(annotations={"trustmesh.io/exclude-inbound-ports": ports(MAX_LIST)}))
    reply = Webhooks(config).inject(json.dumps(review).encode())
    response = reply.body["response"]
    assert response["allowed"] is False and response["status"]["code"] == 400
    assert "trustmesh.io/exclude-inbound-ports" in response["status"]["message"]
    assert "at most 256" in response["status"]["message"]


def test_a_huge_annotation_is_refused_without_quadratic_work(config):
    # The API server allows 256 KiB of annotations: about 40 000 short entries.
    huge = ",".join(str(1 + i % 65535) for i in range(40000))
    with pytest.raises(AnnotationError, match="at most 256"):
        inject_pod(make_pod(annotations={"trustmesh.io/exclude-outbound-ports": huge}), config)


def test_the_default_config_renders_what_the_redirect_and_the_sidecar_accept():
    injected = inject_pod(make_pod(), InjectorConfig(trust_domain="example.org")).pod
    assert redirect_config_of(injected).effective_inbound_exclusions == (15000, 15021)
    assert str(sidecar_config_of(injected).trust_domain) == "example.org"
