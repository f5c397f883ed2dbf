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

Everything here needs root and podman; :func:`unavailable` says why a
machine cannot run the pods, and :func:`require_podman` skips with that
reason. The sidecar image comes from ``scripts/image sidecar``, started by
:func:`start_image_build` in the background as soon as the test is collected
(``tests/integration/podman/conftest.py``) so that it overlaps the rest of the
suite; :func:`built_images` waits for that build to end. Set
``TRUSTMESH_PODMAN=0`` to skip these tests.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import tomllib
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parents[2]
CONTAINERS_CONF = ROOT / "scripts" / "podman" / "containers.conf"
OPT_OUT = "TRUSTMESH_PODMAN"
SIDECAR_CONFIG = "trustmesh.io/sidecar-config"


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(CONTAINERS_CONF))}


def unavailable() -> str | None:
    """Why injected pods cannot run under podman here, or ``None`` when they can."""
    if os.environ.get(OPT_OUT) == "0":
        return f"switched off with {OPT_OUT}=0"
    if os.geteuid() != 0:
        return "needs root (podman pods in network namespaces the test creates)"
    missing = [tool for tool in ("podman", "buildah", "runc", "catatonit", "ip", "nsenter")
               if shutil.which(tool) is None]
    if missing:
        return f"needs {', '.join(missing)} (scripts/setup installs them)"
    try:
        info = subprocess.run(["podman", "info", "--format", "{{.Host.OCIRuntime.Name}}"], capture_output=True,
                              text=True, timeout=120, env=podman_env())
    except subprocess.TimeoutExpired:
        return "`podman info` did not answer within 120 s"
    if info.returncode != 0:
        return f"podman cannot run here: `podman info` exited {info.returncode}: {info.stderr.strip()[:500]}"
    return None


def require_podman() -> None:
    """Skip the calling test, with the reason, unless podman can run pods here."""
    import pytest

    reason = unavailable()
    if reason:
        pytest.skip(reason)


def podman(*args: str, check: bool = True, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    """Run podman with the project's containers.conf; raise with its stderr when ``check`` fails."""
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, env=podman_env())
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    return done


def image_names() -> dict[str, str]:
    """Target -> the image name scripts/image gives it (the tag is the package version)."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    return {t: f"ghcr.io/trustmesh/trustmesh-{t}:{version}" for t in ("sidecar", "control-plane")}


class ImageBuild:
    """``scripts/image TARGET...`` running in the background, at low CPU priority, its output in a file."""

    #: An upper bound far above a first build on a slow, busy machine (a few minutes),
    #: only so that a hung build ends the test with its log instead of the CI run.
    LIMIT = 1500.0

    def __init__(self, *targets: str) -> None:
        self.targets = targets
        self._log_dir = tempfile.TemporaryDirectory(prefix="tm-image-")
        self.log = Path(self._log_dir.name) / "scripts-image.log"
        self._out: TextIO = self.log.open("w")
        # nice 19 and the lowest best-effort I/O priority: the rest of the suite runs meanwhile
        # and keeps the CPU and disk it needs (the build takes what they leave);
        # its own session: stop() ends podman and everything it started, and only that.
        low = ["nice", "-n", "19"] + (["ionice", "-c", "2", "-n", "7"] if shutil.which("ionice") else [])
        self._proc = subprocess.Popen([*low, str(ROOT / "scripts" / "image"), *targets],
                                      stdout=self._out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      env=podman_env(), cwd=ROOT, start_new_session=True)

    def wait(self) -> dict[str, str]:
        """Wait for the build to exit (at most :attr:`LIMIT`); the images, or AssertionError with its output."""
        try:
            code = self._proc.wait(timeout=self.LIMIT)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"scripts/image {' '.join(self.targets)} still ran after {self.LIMIT:.0f} s "
                                 f"(stopped); its output:\n{self.output()}") from None
        if code != 0:
            raise AssertionError(f"scripts/image {' '.join(self.targets)} exited {code}; its output:\n{self.output()}")
        names = image_names()
        return {target: names[target] for target in self.targets}

    def output(self) -> str:
        self._out.flush()
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        """End the build if it still runs (SIGTERM to its session, SIGKILL after 60 s); remove its log."""
        if self._proc.poll() is None:
            for sig, grace in ((signal.SIGTERM, 60), (signal.SIGKILL, 10)):
                try:
                    os.killpg(self._proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self._proc.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self._out.close()
        self._log_dir.cleanup()


_build: ImageBuild | None = None


def start_image_build() -> ImageBuild:
    """Start building the sidecar image in the background (once per test session)."""
    global _build
    if _build is None:
        _build = ImageBuild("sidecar")
    return _build


def built_images() -> tuple[dict[str, str], str]:
    """Wait for the build :func:`start_image_build` started (starting it now if none); images and its output."""
    build = start_image_build()
    return build.wait(), build.output()


def pin(target: str, build_output: str, tag: str) -> str:
    """Tag the image scripts/image built for ``target``, if it is still the one it reported, as ``tag``.

    Every checkout on a machine builds the same names (``...-sidecar:VERSION``),
    so another checkout's build may retag the name at any time; the pods run
    ``tag``, which only this run sets (and removes: :func:`unpin`). If the name
    already carries other sources, ``scripts/image`` runs again (at most 3 times).
    """
    image = image_names()[target]
    for _ in range(3):
        reported = re.findall(rf"{re.escape(image)} .*\(inputs (\w+)\)", build_output)
        assert reported, f"scripts/image did not report {image}:\n{build_output}"
        image_id = podman("image", "inspect", "--format", "{{.Id}}", image).stdout.strip()
        label = podman("image", "inspect", "--format", '{{index .Labels "io.trustmesh.source-hash"}}',
                       image_id).stdout.strip()
        if label == reported[-1]:
            podman("tag", image_id, tag)
            return tag
        again = ImageBuild(target)
        try:
            again.wait()
            build_output = again.output()
        finally:
            again.stop()
    raise AssertionError(f"{image} kept being rebuilt from other sources (another checkout's scripts/image)")


def unpin(tag: str) -> None:
    """Remove ``tag`` alone (``podman untag IMAGE`` without a name would remove every tag), and the
    image with it if a newer build took its name meanwhile (nothing else names it then)."""
    image_id = podman("image", "inspect", "--format", "{{.Id}}", tag, check=False).stdout.strip()
    podman("untag", tag, tag, check=False)
    if image_id and podman("image", "inspect", "--format", "{{len .RepoTags}}", image_id,
                           check=False).stdout.strip() == "0":
        podman("rmi", image_id, check=False)


def stop_image_build() -> None:
    """At the end of the session: a build still running (its test never ran) is ended."""
    global _build
    if _build is not None:
        _build.stop()
        _build = None


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
