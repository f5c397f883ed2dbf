"""Two injected pods run for real, under podman, with the security contexts the injector wrote.

``trustmesh inject`` (the CLI users run) injects two pods; each runs with
``podman kube play`` in its own network namespace, adapted only as
:func:`tests.support.podman.for_podman` says (and the test prints). A router
namespace the test created holds the CA service and joins the pods by veth
pairs; nothing else is reachable::

    pod a 10.98.1.2 ── veth ── router (CA 10.98.0.1:15012) ── veth ── pod b 10.98.2.2

It shows: the init container installs the redirect with only NET_ADMIN and
NET_RAW; each sidecar runs as 1337:1337 with a read-only root and no
capabilities, gets its SVID from the CA and serves the Workload API socket in
the shared emptyDir; app a (plain HTTP, unmodified) reaches app b only through
both sidecars, with b's policy applied; a direct connection to b's app port
from outside is captured by b's sidecar and refused (STRICT mTLS).

Runs wherever podman can (root, podman, runc, catatonit; skipped with the
reason otherwise, or with TRUSTMESH_PODMAN=0). Its sidecar image is built by
``scripts/image sidecar`` in the background while the rest of the suite runs
(see conftest.py) and stays in podman's storage afterwards as the cache: the
next run with unchanged sources reuses it, and a run with changed sources
rebuilds only trustmesh's own layers. The pods run the image under a tag of
this run's own (:func:`tests.support.podman.pin`), since another checkout's
build may retag the shared name meanwhile. Everything else the test creates
is removed: that tag, both pods and their containers (``podman kube down``),
the volumes podman made for the ConfigMaps, the network namespaces and veths,
the CA process and the files. Names carry the test's pid, so two runs never
share a pod, container, volume or tag.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from tests.support.netns import NetLab, require_root
from tests.support.podman import (
    ROOT,
    built_images,
    for_podman,
    infra_pid,
    inspect,
    pin,
    podman,
    require_podman,
    unpin,
    volumes_of,
)

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(1800)]

TD = "example.org"
CA_IP = "10.98.0.1"
PODS = {"a": ("10.98.1.1", "10.98.1.2"), "b": ("10.98.2.1", "10.98.2.2")}
APP_UID = 1000
POLICY = """
policy "b" protects destination.attrs.sa == "b" {
  allow "a-reads-allowed" {
    source.authenticated and source.attrs.sa == "a" and request.path == "/allowed"
  }
}
"""


RUN = f"tm{os.getpid()}"  # names of this run's pods, containers and ConfigMap volumes


def _pod(name: str, image: str, command: list[str], annotations: dict[str, str]) -> dict:
    """Pod ``<RUN>-<name>`` of ServiceAccount ``name`` (its identity .../sa/<name>)."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"{RUN}-{name}", "namespace": "demo", "labels": {"app": name},
                     "annotations": {"trustmesh.io/sidecar-mode": "classic", **annotations}},
        "spec": {"serviceAccountName": name, "restartPolicy": "Always", "containers": [{
            "name": "app", "image": image, "command": command,
            "securityContext": {"runAsUser": APP_UID, "runAsGroup": APP_UID, "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]}},
        }]},
    }


def _inject(pods: list[dict], config: Path) -> list[dict]:
    done = subprocess.run([sys.executable, "-m", "trustmesh", "inject", "-f", "-", "--config", str(config)],
                          input=yaml.safe_dump_all(pods), capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    return list(yaml.safe_load_all(done.stdout))


def _wait_for(what: str, probe, timeout: float = 300.0, explain=lambda: ""):
    """Poll ``probe`` until it returns something true; ``timeout`` is a generous bound for a busy
    machine (a probe that sees a definite failure raises at once instead)."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{explain()}")
        time.sleep(0.5)


def _status_caps(pid: int) -> tuple[str, str, int]:
    """(Uid line, Gid line, CapEff) of a process."""
    lines = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return lines["Uid"].split()[0], lines["Gid"].split()[0], int(lines["CapEff"].strip(), 16)


def _start_ca(router, work: Path, tokens: dict[str, str]) -> Path:
    from ca.manager import CaConfig
    from ca.store import CaDirectory
    from sdk.spiffeid import TrustDomain

    ca = CaDirectory(work / "ca").init(CaConfig(TrustDomain.parse(TD), ca_ttl=timedelta(days=2)),
                                       now=datetime.now(timezone.utc))
    bundle = work / "bundle.pem"
    bundle.write_bytes(ca.bundle().to_pem())
    (work / "tokens.yaml").write_text(yaml.safe_dump(
        {token: f"spiffe://{TD}/ns/demo/sa/{name}" for name, token in tokens.items()}))
    (work / "tokens.yaml").chmod(0o600)
    (work / "ca.yaml").write_text(yaml.safe_dump({
        "trust_domain": TD,
        "ca": {"store": {"kind": "directory", "path": str(work / "ca")}},
        "authentication": {"static_tokens_file": str(work / "tokens.yaml")},
        "listen": {"grpc": f"{CA_IP}:15012", "bundle_endpoint": f"{CA_IP}:8443", "metrics": "127.0.0.1:0"},
        "serving": {"dns_names": ["trustmesh-ca.trustmesh-system.svc"], "ip_addresses": [CA_IP]},
        "audit_log": str(work / "ca-audit.jsonl"),
    }))
    proc = router.spawn([sys.executable, "-m", "trustmesh", "ca", "serve", "--config", str(work / "ca.yaml")])
    log = work / "ca.log"

    def serving() -> bool:
        line = proc.stderr.readline()
        with log.open("a") as out:
            out.write(line)
        assert line or proc.poll() is None, f"the CA exited: {log.read_text()}"
        return "serving gRPC on" in line

    _wait_for("the CA service", serving)
    return bundle


def test_injected_pods_run_under_podman_with_their_real_security_contexts(capsys):
    require_podman()
    require_root()
    _, build_log = built_images()
    with capsys.disabled():
        print("\n" + build_log.strip())
    work = Path(tempfile.mkdtemp(prefix="tm-podman-", dir="/tmp"))
    work.chmod(0o711)
    tokens = {name: f"static-token-{name}-0123456789" for name in PODS}
    with NetLab() as lab:
        lab.on_close(lambda: subprocess.run(["rm", "-rf", str(work)], check=False))
        # The image this run's build reported, under a tag of this run's own.
        sidecar_image = pin("sidecar", build_log, f"localhost/trustmesh-sidecar:test-{RUN}")
        lab.on_close(lambda: unpin(sidecar_image))
        router = lab.namespace("router")
        router.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        router.run(["ip", "addr", "add", f"{CA_IP}/32", "dev", "lo"])
        bundle = _start_ca(router, work, tokens)

        config = work / "injector.yaml"
        config.write_text(yaml.safe_dump({"trust_domain": TD, "ca_address": f"{CA_IP}:15012",
                                          "bundle_configmap": f"{RUN}-bundle",
                                          "image": sidecar_image, "image_pull_policy": "Never"}))
        app_b = ["sh", "-c", "mkdir -p /tmp/www && echo hello-from-b > /tmp/www/allowed && "
                 "echo secret > /tmp/www/denied && cd /tmp/www && exec python -m http.server 8080"]
        app_a = ["python", "-c", "import time; time.sleep(3600)"]
        injected = _inject([_pod("a", sidecar_image, app_a, {}),
                            _pod("b", sidecar_image, app_b, {"trustmesh.io/policy": f"{RUN}-b-policy"})], config)
        config_maps = [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{RUN}-bundle"},
             "data": {"bundle.pem": bundle.read_text()}},
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{RUN}-b-policy"},
             "data": {"policy.policy": POLICY}},
        ]
        adapted = {}
        for pod in injected:
            name = pod["spec"]["serviceAccountName"]
            adapted[name], changes = for_podman(pod, work / f"files-{name}", token=tokens[name], pod_ip=PODS[name][1])
            with capsys.disabled():
                print(f"\npod {name}: changed for podman:\n  " + "\n  ".join(changes))
        # podman keeps the volumes it makes for configMaps and emptyDirs after `kube down`.
        volumes = sorted({v for pod in adapted.values() for v in volumes_of(pod)})
        podman("volume", "rm", "--force", *volumes, check=False)  # left by a run killed before its cleanup
        lab.on_close(lambda: podman("volume", "rm", "--force", *volumes, check=False))
        for name, pod in adapted.items():
            gateway, address = PODS[name]
            kube = work / f"{name}.yaml"
            kube.write_text(yaml.safe_dump_all([*config_maps, pod]))
            lab.on_close(lambda kube=kube: podman("kube", "down", str(kube), check=False))
            # Create the pod without starting it; read what podman made of the security
            # contexts (podman removes the init container once it has run).
            podman("kube", "play", "--start=false", "--network", "none", str(kube), timeout=300)
            init, proxy = inspect(f"{RUN}-{name}-trustmesh-init"), inspect(f"{RUN}-{name}-trustmesh-proxy")
            assert sorted(init["EffectiveCaps"]) == ["CAP_NET_ADMIN", "CAP_NET_RAW"]
            assert init["Config"]["User"] == "0:0"
            assert proxy["EffectiveCaps"] in (None, [])
            assert proxy["Config"]["User"] == "1337:1337"
            assert proxy["HostConfig"]["ReadonlyRootfs"] is True
            # Start the infra container alone, wire its network namespace, then the pod.
            infra = podman("pod", "inspect", f"{RUN}-{name}", "--format", "{{.InfraContainerID}}").stdout.strip()
            podman("start", infra)
            ns = lab.adopt(f"pod-{name}", infra_pid(f"{RUN}-{name}"))
            lab.link(router, ns, [f"{gateway}/24"], [f"{address}/24"])
            ns.run(["ip", "route", "add", "default", "via", gateway])
            podman("pod", "start", f"{RUN}-{name}")

        for name in PODS:
            _wait_for(f"sidecar {name} ready", lambda name=name: _ready(f"{RUN}-{name}-trustmesh-proxy"),
                      explain=lambda name=name: _logs(f"{RUN}-{name}-trustmesh-proxy")
                      + podman("ps", "-a", "--filter", f"pod={RUN}-{name}").stdout)

        for name in PODS:
            proxy = inspect(f"{RUN}-{name}-trustmesh-proxy")
            # The running sidecar: uid/gid 1337, no effective capabilities.
            assert _status_caps(proxy["State"]["Pid"]) == ("1337", "1337", 0)
            # It runs the sidecar's modules compiled in the image (the Dockerfile's mypyc
            # stage), not their Python sources: the build it loaded is the one for the
            # image's own installed sources (asked in the container, as 1337, read-only root).
            digests, modules = _compiled_loaded(proxy["State"]["Pid"])
            assert digests == {_compiled_build(f"{RUN}-{name}-trustmesh-proxy")}
            assert "http2" in modules, modules  # the codec, loaded at start (the rest on first use)
            # The init container (only NET_ADMIN and NET_RAW, checked above) installed the capture.
            rules = lab_ns_run(lab, name, ["iptables-save", "-t", "nat"])
            assert "REDIRECT --to-ports 15001" in rules and "REDIRECT --to-ports 15006" in rules
            # The app gets its SVID from the sidecar's Workload API, in the shared emptyDir.
            fetched = podman("exec", f"{RUN}-{name}-app", "trustmesh", "api", "fetch-x509").stdout
            assert f"spiffe://{TD}/ns/demo/sa/{name}" in fetched

        # App a, plain HTTP to b's address: through both sidecars, with b's policy.
        def get(path: str) -> str:
            code = ("import urllib.request, urllib.error\n"
                    f"try:\n    r = urllib.request.urlopen('http://{PODS['b'][1]}:8080{path}', timeout=120)\n"
                    "    print(r.status, r.read().decode().strip())\n"
                    "except urllib.error.HTTPError as e:\n    print(e.code)\n")
            return podman("exec", f"{RUN}-a-app", "python", "-c", code).stdout.strip()

        assert get("/allowed") == "200 hello-from-b"
        assert get("/denied") == "403"
        access = podman("logs", f"{RUN}-b-trustmesh-proxy").stdout
        assert f"spiffe://{TD}/ns/demo/sa/a" in access and "a-reads-allowed" in access
        # A direct plaintext connection to b's app port, from outside the mesh, is captured
        # by b's sidecar (STRICT: mTLS only) and never reaches the app.
        rejected = lambda: _rejected_handshakes(lab)  # noqa: E731
        before = rejected()
        direct = router.run(["python3", "-c", (
            "import urllib.request\n"
            f"try:\n    urllib.request.urlopen('http://{PODS['b'][1]}:8080/allowed', timeout=120); print('reached')\n"
            "except Exception as e:\n    print('refused', type(e).__name__)\n")], timeout=300).stdout
        assert direct.startswith("refused"), direct
        _wait_for("b's sidecar to count the refused handshake", lambda: rejected() > before)
        # And a's own calls left through a's sidecar (captured: the app dialled b's address).
        records = [json.loads(line) for line in podman("logs", f"{RUN}-a-trustmesh-proxy").stdout.splitlines()
                   if line.startswith("{") and '"direction"' in line]
        sent = {(r["direction"], r["source"], r["destination"], r["path"], r["status"]) for r in records}
        assert sent == {("outbound", f"spiffe://{TD}/ns/demo/sa/a", f"{PODS['b'][1]}:8080", "/allowed", 200),
                        ("outbound", f"spiffe://{TD}/ns/demo/sa/a", f"{PODS['b'][1]}:8080", "/denied", 403)}


def _compiled_loaded(pid: int) -> tuple[set[str], set[str]]:
    """The builds (digests) and the compiled sidecar modules that process ``pid`` has mapped."""
    found = re.findall(r"trustmesh-codec/(\w+)/sidecar/(\w+)\.cpython", Path(f"/proc/{pid}/maps").read_text())
    return {digest for digest, _ in found}, {module for _, module in found}


def _compiled_build(container: str) -> str:
    """The digest of the container's installed sidecar sources, once every module
    :mod:`sidecar._compiled` names has imported from its compiled build (run as the container's user),
    and the image was seen to carry neither mypy nor a C compiler (they stay in the build stage)."""
    code = ("import importlib, importlib.util, shutil, sidecar, sidecar._compiled as c\n"
            "assert not [m for m in ('mypy', 'mypyc') if importlib.util.find_spec(m)], 'mypy in the image'\n"
            "assert not [t for t in ('gcc', 'cc', 'x86_64-linux-gnu-gcc-12') if shutil.which(t)], 'a compiler'\n"
            "assert sidecar.CODEC_COMPILED, 'no build for these sources: the sidecar runs as Python'\n"
            "files = [importlib.import_module('sidecar.' + name).__file__ for name in c.COMPILED_MODULES]\n"
            "assert all(f.endswith('.so') for f in files), files\n"
            "print(c.source_digest())\n")
    return podman("exec", container, "python", "-c", code).stdout.strip()


def _logs(container: str) -> str:
    done = podman("logs", container, check=False)
    return "\n".join((done.stdout + done.stderr).splitlines()[-60:]) + "\n"


def _ready(container: str) -> bool:
    """Whether the sidecar said it is ready; raises at once if it exited (no point waiting)."""
    if '"event": "ready"' in podman("logs", container).stdout:
        return True
    state = inspect(container)["State"]
    if state["Status"] in ("exited", "stopped"):
        raise AssertionError(f"{container} exited ({state.get('ExitCode')}) before it was ready:\n{_logs(container)}")
    return False


def _rejected_handshakes(lab: NetLab) -> float:
    """b's sidecar's count of inbound connections refused at the TLS handshake (admin port, loopback)."""
    metrics = lab_ns_run(lab, "b", ["python3", "-c", "import urllib.request; print(urllib.request.urlopen("
                                    "'http://127.0.0.1:15000/metrics', timeout=60).read().decode())"])
    found = re.search(r'^trustmesh_sidecar_connections_rejected_total\{listener="inbound",reason="handshake"\} (\S+)$',
                      metrics, re.M)
    return float(found.group(1)) if found else 0.0


def lab_ns_run(lab: NetLab, pod: str, argv: list[str]) -> str:
    return subprocess.run(["nsenter", f"--net=/run/netns/{lab.prefix}-pod-{pod}", "--", *argv],
                          capture_output=True, text=True, check=True, timeout=300).stdout
