"""Run an injected pod under ``podman kube play``: what podman 4.3 needs changed, and nothing more.

Podman's ``kube play`` is not Kubernetes. :func:`for_podman` adapts an
injected pod to it and returns the list of what it changed, so a test can
print it. The containers, images, commands, arguments and security contexts
stay as the injector wrote them. What changes (the ``configMap`` volumes stay, fed by ConfigMaps
in the same YAML):

1. ``trustmesh.io/sidecar-config`` is removed from the annotations (podman
   refuses annotation values over 63 characters) and the ``downwardAPI``
   volume that projects it into ``sidecar.yaml`` becomes a ``hostPath``
   directory holding that same text (podman has no downwardAPI volumes);
2. the ``projected`` ServiceAccount-token volume becomes a ``hostPath``
   directory holding the CA's token for this workload (no projected volumes,
   and no API server to issue a token);
3. ``env`` taken from ``fieldRef`` (pod name, namespace, IP, ServiceAccount)
   gets the values the kubelet would have put there;
4. ``ports`` are dropped: podman publishes containerPorts on the host, which
   it refuses for a pod without its network (the test wires the network);
5. each ``emptyDir`` becomes a fresh ``hostPath`` directory of the pod, mode
   0777 as the kubelet makes an emptyDir: podman 4.3 turns an emptyDir into a
   *named* volume, root-owned 0755 (the proxy uid could not create its socket)
   and shared by every pod that uses the same name (two pods' sidecars would
   share one Workload API socket directory);
6. ``restartPolicy: Always`` becomes ``OnFailure``: podman 4.3 applies the
   pod's policy to init containers as well, and restarts a finished
   ``trustmesh-init`` forever;
7. the pod runs the sidecar in classic mode (``trustmesh.io/sidecar-mode:
   classic`` is set before injection, by the caller): podman 4.3 runs every
   init container to completion first, so a native sidecar would block the pod.

Everything here needs root, podman and the images (``scripts/image``);
:func:`require_podman` skips the test otherwise, with the reason.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CONTAINERS_CONF = ROOT / "scripts" / "podman" / "containers.conf"
OPT_IN = "TRUSTMESH_PODMAN"
SIDECAR_CONFIG = "trustmesh.io/sidecar-config"


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(CONTAINERS_CONF))}


def require_podman() -> None:
    """Skip the calling test unless podman can run pods here and the user asked for it."""
    import pytest

    if os.environ.get(OPT_IN) != "1":
        pytest.skip(f"set {OPT_IN}=1 to build the images (scripts/image, a few minutes the first time; "
                    "cached afterwards) and run injected pods under podman")
    if os.geteuid() != 0:
        pytest.skip("needs root (podman pods in network namespaces)")
    missing = [tool for tool in ("podman", "runc", "catatonit", "ip", "nsenter") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (scripts/setup installs them)")


def podman(*args: str, check: bool = True, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run podman with the project's containers.conf; raise with its stderr when ``check`` fails."""
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, env=podman_env())
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    return done


def build_images() -> dict[str, str]:
    """Build (or find up to date) the images with scripts/image; returns target -> image name."""
    done = subprocess.run([str(ROOT / "scripts" / "image")], capture_output=True, text=True, timeout=1500,
                          env=podman_env())
    if done.returncode != 0:
        raise AssertionError(f"scripts/image failed:\n{done.stdout}\n{done.stderr}")
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    return {t: f"ghcr.io/trustmesh/trustmesh-{t}:{version}" for t in ("sidecar", "control-plane")}


def for_podman(pod: dict[str, Any], files: Path, *, token: str, pod_ip: str) -> tuple[dict[str, Any], list[str]]:
    """The pod adapted for ``podman kube play`` (see the module docstring) and what was changed."""
    pod = copy.deepcopy(pod)
    meta, spec = pod["metadata"], pod["spec"]
    changes: list[str] = []
    config_text = meta["annotations"].pop(SIDECAR_CONFIG)
    changes.append(f"removed annotation {SIDECAR_CONFIG} ({len(config_text)} characters; podman's limit is 63)")
    for volume in spec["volumes"]:
        name = volume["name"]
        if "emptyDir" in volume:
            directory = _directory(files / name)
            directory.chmod(0o777)  # what the kubelet gives an emptyDir
            volume.pop("emptyDir")
            volume["hostPath"] = {"path": str(directory), "type": "Directory"}
            changes.append(f"volume {name}: emptyDir -> a fresh hostPath directory of this pod, mode 0777 "
                           "(podman 4.3 makes an emptyDir a root-owned 0755 volume named after it, shared by "
                           "every pod that uses the name)")
        elif "downwardAPI" in volume:
            directory = _directory(files / name)
            for item in volume.pop("downwardAPI")["items"]:
                assert item["fieldRef"]["fieldPath"] == f"metadata.annotations['{SIDECAR_CONFIG}']", item
                (directory / item["path"]).write_text(config_text)
                (directory / item["path"]).chmod(0o644)
            volume["hostPath"] = {"path": str(directory), "type": "Directory"}
            changes.append(f"volume {name}: downwardAPI -> hostPath holding the annotation's text")
        elif "projected" in volume:
            directory = _directory(files / name)
            for source in volume.pop("projected")["sources"]:
                account_token = source["serviceAccountToken"]
                path = directory / account_token["path"]
                path.write_text(token)
                path.chmod(0o644)  # the kubelet's defaultMode for a projected volume (pod uids differ)
            volume["hostPath"] = {"path": str(directory), "type": "Directory"}
            changes.append(f"volume {name}: projected ServiceAccount token -> hostPath holding the CA's static token")
    if spec.get("restartPolicy", "Always") == "Always":
        spec["restartPolicy"] = "OnFailure"
        changes.append("restartPolicy Always -> OnFailure (podman 4.3 applies it to init containers too, "
                       "restarting trustmesh-init forever)")
    fields = {"metadata.name": meta["name"], "metadata.namespace": meta.get("namespace", "default"),
              "status.podIP": pod_ip, "spec.serviceAccountName": spec.get("serviceAccountName", "default")}
    for container in spec.get("initContainers", []) + spec["containers"]:
        if container.pop("ports", None):
            changes.append(f"{container['name']}: ports removed (podman publishes them on the host, "
                           "which a pod with --network none refuses)")
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("fieldRef")
            if ref:
                env.pop("valueFrom")
                env["value"] = fields[ref["fieldPath"]]
                changes.append(f"{container['name']}: env {env['name']} from fieldRef {ref['fieldPath']} -> value")
    return pod, changes


def volumes_of(pod: dict[str, Any]) -> list[str]:
    """The named volumes ``podman kube play`` creates for ``pod``'s configMaps (``kube down`` leaves them)."""
    names = []
    for volume in pod["spec"].get("volumes", []):
        if "configMap" in volume:
            names.append(volume["configMap"]["name"])
    return names


def _directory(path: Path) -> Path:
    path.mkdir(parents=True)
    path.chmod(0o755)
    return path


def infra_pid(pod_name: str) -> int:
    """The pid of the pod's infra container, whose network namespace every container shares."""
    infra = podman("pod", "inspect", pod_name, "--format", "{{.InfraContainerID}}").stdout.strip()
    return int(podman("inspect", infra, "--format", "{{.State.Pid}}").stdout.strip())


def inspect(container: str) -> dict[str, Any]:
    return json.loads(podman("inspect", container).stdout)[0]
