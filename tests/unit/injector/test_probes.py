"""Probe rewrite through the sidecar's health port, checked on real pod shapes."""

from __future__ import annotations

import json

from tests.support.k8s_admission_double import pod as make_pod


def _by_name(items, name):
    return next(item for item in items if item["name"] == name)


def probers_of(pod):
    proxy = _by_name(pod["spec"]["initContainers"] + pod["spec"]["containers"], "trustmesh-proxy")
    return json.loads(_by_name(proxy["env"], "TRUSTMESH_APP_PROBERS")["value"])


def test_http_probe_on_a_named_port_is_rewritten_and_recorded(config, injected):
    pod = make_pod()
    app = pod["spec"]["containers"][0]
    app["readinessProbe"] = {"httpGet": {"path": "/ready", "port": "http",
                                         "httpHeaders": [{"name": "X-Probe", "value": "1"}]},
                             "timeoutSeconds": 2, "periodSeconds": 7}
    out = injected(pod, config)
    probe = out["spec"]["containers"][0]["readinessProbe"]
    assert probe == {"httpGet": {"path": "/app-health/web/readyz", "port": 15021, "scheme": "HTTP"},
                     "timeoutSeconds": 2, "periodSeconds": 7}
    assert probers_of(out) == {"/app-health/web/readyz": {
        "httpGet": {"path": "/ready", "port": 8080, "scheme": "HTTP",
                    "httpHeaders": [{"name": "X-Probe", "value": "1"}]},
        "timeoutSeconds": 2}}


def test_tcp_and_grpc_probes_become_http_probes_on_the_sidecar(config, injected):
    pod = make_pod()
    app = pod["spec"]["containers"][0]
    app["livenessProbe"] = {"tcpSocket": {"port": 8080}}
    app["startupProbe"] = {"grpc": {"port": 9090, "service": "health"}, "failureThreshold": 30}
    out = injected(pod, config)
    app = out["spec"]["containers"][0]
    assert app["livenessProbe"] == {"httpGet": {"path": "/app-health/web/livez", "port": 15021, "scheme": "HTTP"}}
    assert app["startupProbe"]["httpGet"]["path"] == "/app-health/web/startupz"
    assert app["startupProbe"]["failureThreshold"] == 30
    assert probers_of(out) == {"/app-health/web/livez": {"tcpSocket": {"port": 8080}},
                               "/app-health/web/startupz": {"grpc": {"port": 9090, "service": "health"}}}


def test_exec_probes_and_probes_on_excluded_ports_are_left_alone(config, injected):
    pod = make_pod(annotations={"trustmesh.io/exclude-inbound-ports": "8081"})
    app = pod["spec"]["containers"][0]
    app["livenessProbe"] = {"exec": {"command": ["true"]}}
    app["readinessProbe"] = {"httpGet": {"path": "/ready", "port": 8081}}
    out = injected(pod, config)
    app = out["spec"]["containers"][0]
    assert app["livenessProbe"] == {"exec": {"command": ["true"]}}
    assert app["readinessProbe"] == {"httpGet": {"path": "/ready", "port": 8081}}
    assert probers_of(out) == {}


def test_rewrite_can_be_turned_off_per_pod(config, injected):
    pod = make_pod(annotations={"trustmesh.io/rewrite-probes": "false"})
    pod["spec"]["containers"][0]["readinessProbe"] = {"httpGet": {"path": "/ready", "port": 8080}}
    out = injected(pod, config)
    assert out["spec"]["containers"][0]["readinessProbe"] == {"httpGet": {"path": "/ready", "port": 8080}}


def test_unknown_named_port_is_left_alone(config, injected):
    pod = make_pod()
    pod["spec"]["containers"][0]["readinessProbe"] = {"httpGet": {"path": "/", "port": "nope"}}
    out = injected(pod, config)
    assert out["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] == "nope"


def test_probes_of_the_apps_own_native_sidecar_are_rewritten_too(config, injected):
    log_agent = {"name": "log-agent", "image": "registry.example/agent:1", "restartPolicy": "Always",
                 "readinessProbe": {"httpGet": {"path": "/ok", "port": 9000}}}
    out = injected(make_pod(initContainers=[log_agent]), config)
    agent = _by_name(out["spec"]["initContainers"], "log-agent")
    assert agent["readinessProbe"]["httpGet"] == {"path": "/app-health/log-agent/readyz", "port": 15021,
                                                  "scheme": "HTTP"}
    assert probers_of(out)["/app-health/log-agent/readyz"]["httpGet"]["port"] == 9000
