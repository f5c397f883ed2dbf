"""The patch builder over real pod shapes: what is added, to whom, and how often."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import yaml

from injector.errors import AnnotationError, PodRefusedError, PodSpecError
from injector.inject import inject_pod, pod_patch
from tests.support.k8s_admission_double import pod as make_pod


def names(containers):
    return [c["name"] for c in containers or ()]


def test_native_sidecar_injection_adds_init_proxy_volumes_and_socket(config, injected):
    pod = injected(make_pod(), config)
    spec = pod["spec"]
    assert names(spec["initContainers"]) == ["trustmesh-init", "trustmesh-proxy"]
    assert names(spec["containers"]) == ["web"]

    init = spec["initContainers"][0]
    assert init["command"] == ["trustmesh"]
    assert init["args"][:2] == ["redirect", "apply"]
    args = dict(zip(init["args"][2::2], init["args"][3::2]))
    assert args["--mode"] == "iptables"
    assert args["--proxy-uid"] == args["--proxy-gid"] == "1337"
    assert (args["--inbound-port"], args["--outbound-port"]) == ("15006", "15001")
    assert "15021" in args["--exclude-inbound-ports"].split(",")
    ctx = init["securityContext"]
    assert ctx["capabilities"] == {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]}
    assert ctx["privileged"] is False and ctx["allowPrivilegeEscalation"] is False
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}

    proxy = spec["initContainers"][1]
    assert proxy["restartPolicy"] == "Always"
    assert proxy["args"] == ["sidecar", "run", "--config", "/etc/trustmesh/sidecar.yaml"]
    ctx = proxy["securityContext"]
    assert (ctx["runAsUser"], ctx["runAsGroup"], ctx["runAsNonRoot"]) == (1337, 1337, True)
    assert ctx["readOnlyRootFilesystem"] is True and ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    assert proxy["readinessProbe"]["httpGet"]["port"] == 15021
    assert proxy["resources"] == {"requests": {"cpu": "50m", "memory": "64Mi"},
                                  "limits": {"cpu": "1", "memory": "256Mi"}}

    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "kube-api-access-9zq7x" in volumes
    token = volumes["trustmesh-token"]["projected"]["sources"][0]["serviceAccountToken"]
    assert (token["audience"], token["expirationSeconds"]) == ("trustmesh-ca", 3600)
    assert volumes["trustmesh-bundle"]["configMap"]["name"] == "trustmesh-bundle"
    assert "emptyDir" in volumes["trustmesh-sockets"]

    app = spec["containers"][0]
    assert {"name": "trustmesh-sockets", "mountPath": "/run/trustmesh/sockets", "readOnly": True} \
        in app["volumeMounts"]
    assert {"name": "SPIFFE_ENDPOINT_SOCKET", "value": "unix:///run/trustmesh/sockets/agent.sock"} in app["env"]


def test_sidecar_config_file_is_the_annotation_projected_by_downward_api(config, injected):
    pod = injected(make_pod(annotations={"trustmesh.io/policy": "web-policy"}), config)
    text = pod["metadata"]["annotations"]["trustmesh.io/sidecar-config"]
    sidecar = yaml.safe_load(text)
    assert sidecar["trust_domain"] == "example.org"
    assert sidecar["workload_api"] == {"socket": "/run/trustmesh/sockets/agent.sock"}
    assert sidecar["policy"] == {"file": "/var/run/trustmesh/policy/policy.policy"}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    item = volumes["trustmesh-config"]["downwardAPI"]["items"][0]
    assert item == {"path": "sidecar.yaml",
                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.annotations['trustmesh.io/sidecar-config']"}}
    assert volumes["trustmesh-policy"] == {"name": "trustmesh-policy", "configMap": {"name": "web-policy", "defaultMode": 420}}


def test_classic_sidecar_is_the_first_container_and_app_stays_default(config, injected):
    pod = injected(make_pod(), replace(config, native_sidecar=False))
    assert names(pod["spec"]["initContainers"]) == ["trustmesh-init"]
    assert names(pod["spec"]["containers"]) == ["trustmesh-proxy", "web"]
    assert "restartPolicy" not in pod["spec"]["containers"][0]
    assert pod["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"] == "web"


def test_sidecar_mode_annotation_overrides_the_default(config, injected):
    pod = injected(make_pod(annotations={"trustmesh.io/sidecar-mode": "classic"}), config)
    assert names(pod["spec"]["containers"])[0] == "trustmesh-proxy"


def test_app_init_containers_run_after_the_proxy_and_get_the_socket(config, injected):
    app_init = {"name": "migrate", "image": "registry.example/migrate:1"}
    pod = injected(make_pod(initContainers=[app_init]), config)
    inits = pod["spec"]["initContainers"]
    assert names(inits) == ["trustmesh-init", "trustmesh-proxy", "migrate"]
    assert any(m["name"] == "trustmesh-sockets" for m in inits[2]["volumeMounts"])


def test_injecting_twice_changes_nothing(config, injected):
    once = injected(make_pod(), config)
    again = inject_pod(once, config)
    assert pod_patch(once, again) == []


def test_reinvocation_after_another_webhook_added_a_container(config, injected, by_name):
    once = injected(make_pod(), config)
    once["spec"]["containers"].append({
        "name": "log-shipper", "image": "registry.example/shipper:2",
        "readinessProbe": {"httpGet": {"path": "/ok", "port": 9000}},
    })
    twice = injected(once, config)
    spec = twice["spec"]
    assert names(spec["initContainers"]).count("trustmesh-init") == 1
    all_names = names(spec["initContainers"]) + names(spec["containers"])
    assert all_names.count("trustmesh-proxy") == 1
    shipper = by_name(spec["containers"], "log-shipper")
    assert any(m["name"] == "trustmesh-sockets" for m in shipper["volumeMounts"])
    assert shipper["readinessProbe"]["httpGet"]["path"] == "/app-health/log-shipper/readyz"
    proxy = by_name(spec["initContainers"], "trustmesh-proxy")
    probers = json.loads(by_name(proxy["env"], "TRUSTMESH_APP_PROBERS")["value"])
    assert probers["/app-health/log-shipper/readyz"]["httpGet"]["port"] == 9000


def test_a_classic_sidecar_already_present_is_not_duplicated_by_native_mode(config, injected):
    classic = injected(make_pod(), replace(config, native_sidecar=False))
    again = injected(classic, config)
    all_names = names(again["spec"]["initContainers"]) + names(again["spec"]["containers"])
    assert all_names.count("trustmesh-proxy") == 1


def test_an_annotation_claiming_injection_does_not_prevent_it(config, injected):
    pod = make_pod(annotations={"trustmesh.io/sidecar-config": "trust_domain: evil.example\n"})
    out = injected(pod, config)
    assert "trustmesh-proxy" in names(out["spec"]["initContainers"])
    assert "evil" not in out["metadata"]["annotations"]["trustmesh.io/sidecar-config"]


def test_pod_label_false_opts_out(config):
    pod = make_pod(labels={"app": "web", "trustmesh.io/inject": "false"})
    result = inject_pod(pod, config)
    assert not result.injected and "opts out" in result.reason
    assert pod_patch(pod, result) == []


def test_pod_annotation_false_opts_out_as_linkerd_and_istio_users_expect(config):
    pod = make_pod(annotations={"trustmesh.io/inject": "false"})
    result = inject_pod(pod, config)
    assert not result.injected
    assert result.reason == 'the pod opts out with the annotation trustmesh.io/inject: "false"'
    assert pod_patch(pod, result) == []
    # "true" changes nothing (the namespace or the label selects the pod); other values are refused.
    assert inject_pod(make_pod(annotations={"trustmesh.io/inject": "true"}), config).injected
    for value in ("disabled", "False", "no"):
        with pytest.raises(AnnotationError, match="is not 'true' or 'false'") as caught:
            inject_pod(make_pod(annotations={"trustmesh.io/inject": value}), config)
        assert caught.value.annotation == "trustmesh.io/inject"


def test_host_network_pods_are_never_injected(config):
    pod = make_pod(labels={"trustmesh.io/inject": "true"}, hostNetwork=True)
    result = inject_pod(pod, config)
    assert not result.injected and "hostNetwork" in result.reason


@pytest.mark.parametrize("where", ["pod", "container", "init-container"])
@pytest.mark.parametrize("field", ["runAsUser", "runAsGroup"])
def test_app_running_as_the_proxy_uid_or_gid_is_refused(config, where, field):
    ctx = {field: 1337}
    if where == "pod":
        pod = make_pod(securityContext=ctx)
    elif where == "container":
        pod = make_pod()
        pod["spec"]["containers"][0]["securityContext"] = ctx
    else:
        pod = make_pod(initContainers=[{"name": "setup", "image": "x", "securityContext": ctx}])
    with pytest.raises(PodRefusedError, match="1337") as info:
        inject_pod(pod, config)
    assert "bypass" in str(info.value)


def test_container_override_of_a_pod_level_1337_is_accepted(config):
    pod = make_pod(securityContext={"runAsUser": 1337})
    pod["spec"]["containers"][0]["securityContext"] = {"runAsUser": 1000}
    assert inject_pod(pod, config).injected


@pytest.mark.parametrize("annotation, value", [
    ("trustmesh.io/exclude-inbound-ports", "8080,abc"),
    ("trustmesh.io/exclude-inbound-ports", "70000"),
    ("trustmesh.io/exclude-outbound-ports", "0"),
    ("trustmesh.io/exclude-outbound-ports", "1,,2"),
    ("trustmesh.io/exclude-outbound-cidrs", "10.0.0.1/8"),
    ("trustmesh.io/exclude-outbound-cidrs", "not-a-cidr"),
    ("trustmesh.io/interception-mode", "ipchains"),
    ("trustmesh.io/policy", "Bad_Name"),
    ("trustmesh.io/log-level", "loud"),
    ("trustmesh.io/sidecar-mode", "both"),
    ("trustmesh.io/rewrite-probes", "yes"),
    ("trustmesh.io/exclude-inbound-port", "8080"),
])
def test_bad_annotation_is_refused_naming_it(config, annotation, value):
    with pytest.raises(AnnotationError) as info:
        inject_pod(make_pod(annotations={annotation: value}), config)
    assert info.value.annotation == annotation
    assert annotation in str(info.value)


def test_ebpf_interception_is_refused_at_admission_with_the_reason(config):
    # An injected init container gets no cgroup v2 directory or bpffs, so the
    # pod would only fail later in Init:Error; refuse it now and say why.
    with pytest.raises(AnnotationError) as info:
        inject_pod(make_pod(annotations={"trustmesh.io/interception-mode": "ebpf"}), config)
    assert info.value.annotation == "trustmesh.io/interception-mode"
    assert "bpffs" in str(info.value) and "use iptables or nftables" in str(info.value)


def test_annotations_reach_the_init_container_and_sidecar(config, injected, by_name):
    pod = injected(make_pod(annotations={
        "trustmesh.io/exclude-inbound-ports": "9090, 9091",
        "trustmesh.io/exclude-outbound-ports": "5432",
        "trustmesh.io/exclude-outbound-cidrs": "169.254.169.254/32,fd00::/8",
        "trustmesh.io/interception-mode": "nftables",
        "trustmesh.io/log-level": "debug",
    }), config)
    init, proxy = pod["spec"]["initContainers"][:2]
    args = dict(zip(init["args"][2::2], init["args"][3::2]))
    assert args["--mode"] == "nftables"
    assert args["--exclude-inbound-ports"] == "15021,9090,9091"
    assert args["--exclude-outbound-ports"] == "5432"
    assert args["--exclude-outbound-cidrs"] == "169.254.169.254/32,fd00::/8"
    assert by_name(proxy["env"], "TRUSTMESH_LOG_LEVEL")["value"] == "debug"


def test_existing_socket_mount_path_clash_is_refused(config):
    pod = make_pod(volumes=[{"name": "mine", "emptyDir": {}}])
    pod["spec"]["containers"][0]["volumeMounts"].append({"name": "mine", "mountPath": "/run/trustmesh/sockets"})
    with pytest.raises(PodRefusedError, match="/run/trustmesh/sockets"):
        inject_pod(pod, config)


def test_app_setting_its_own_socket_env_keeps_it(config, injected):
    pod = make_pod()
    pod["spec"]["containers"][0]["env"] = [{"name": "SPIFFE_ENDPOINT_SOCKET", "value": "unix:///spire/agent.sock"}]
    out = injected(pod, config)
    env = out["spec"]["containers"][0]["env"]
    assert env == [{"name": "SPIFFE_ENDPOINT_SOCKET", "value": "unix:///spire/agent.sock"}]


@pytest.mark.parametrize("bad, message", [
    ({"kind": "Pod"}, "spec"),
    ({"spec": {"containers": []}}, "containers"),
    ({"spec": {"containers": [{"image": "x"}]}}, r"spec.containers\[0\].name is missing"),
    ({"spec": {"containers": [{"name": "a", "env": "x"}]}}, "env"),
    ({"spec": {"containers": [{"name": "a"}], "securityContext": []}}, "securityContext"),
    ({"metadata": {"annotations": ["x"]}, "spec": {"containers": [{"name": "a"}]}}, "annotations"),
])
def test_malformed_pods_raise_a_precise_error(config, bad, message):
    with pytest.raises(PodSpecError, match=message):
        inject_pod(bad, config)


@pytest.mark.parametrize("volume", ["trustmesh-bundle", "trustmesh-config", "trustmesh-token"])
def test_a_pod_supplied_volume_with_a_trustmesh_name_is_replaced(config, injected, volume):
    pod = make_pod()
    pod["spec"]["volumes"].append({"name": volume, "emptyDir": {}})
    out = injected(pod, config)
    mine = [v for v in out["spec"]["volumes"] if v["name"] == volume]
    assert len(mine) == 1 and "emptyDir" not in mine[0]
