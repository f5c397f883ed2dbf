"""The images users get: names and tags agree everywhere, and the Dockerfile ships what it says.

The tag is the package version (pyproject.toml), so a release bumps one number
and every manifest, the injector's default and scripts/image follow it.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

import trustmesh
from injector.config import InjectorConfig

ROOT = Path(__file__).resolve().parents[1]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
SIDECAR = f"ghcr.io/trustmesh/trustmesh-sidecar:{VERSION}"
CONTROL_PLANE = f"ghcr.io/trustmesh/trustmesh-control-plane:{VERSION}"


def _manifest_images() -> dict[str, set[str]]:
    """Every image named in manifests/: container images and the injector configs' `image:`."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "manifests").rglob("*.yaml")):
        text = path.read_text()
        list(yaml.safe_load_all(text))  # each is valid YAML
        for match in re.finditer(r"ghcr\.io/trustmesh/[^\s'\"]+", text):
            found.setdefault(match.group(0), set()).add(str(path.relative_to(ROOT)))
    return found


def test_the_package_version_is_one_number():
    assert trustmesh.__version__ == VERSION


def test_injector_default_and_manifests_name_the_images_with_the_package_version():
    assert InjectorConfig().image == SIDECAR  # what the injector puts in pods
    images = _manifest_images()
    assert set(images) == {SIDECAR, CONTROL_PLANE}, images
    # The control plane runs the control-plane image; pods get the sidecar image.
    assert images[CONTROL_PLANE] == {"manifests/system/ca/deployment.yaml", "manifests/system/injector/deployment.yaml"}
    assert "manifests/system/injector/configmap.yaml" in images[SIDECAR]


def test_scripts_image_builds_the_names_the_manifests_use():
    script = (ROOT / "scripts" / "image").read_text()
    assert 'REGISTRY=${TRUSTMESH_IMAGE_REGISTRY:-ghcr.io/trustmesh}' in script
    assert 'image="$REGISTRY/trustmesh-$target:$VERSION"' in script
    targets = re.findall(r"^FROM scratch AS (\S+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert sorted(targets) == ["control-plane", "sidecar"]


def test_dockerfile_runs_non_root_with_the_contract_uids():
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", dockerfile, flags=re.M)
    sidecar = next(s for s in stages if s.startswith("scratch AS sidecar"))
    control = next(s for s in stages if s.startswith("scratch AS control-plane"))
    assert re.search(r"^USER 1337:1337$", sidecar, re.M)
    assert re.search(r"^USER 65532:65532$", control, re.M)


def test_runtime_dependencies_leave_the_kubernetes_client_and_build_tools_out():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=\[ ]", dep)[0].lower() for dep in project["dependencies"]}
    assert not names & {"kubernetes", "grpcio-tools", "httptools", "pip", "setuptools"}
    assert [d.split(">")[0] for d in project["optional-dependencies"]["kubernetes"]] == ["kubernetes"]
    assert any(d.startswith("grpcio-tools") for d in project["optional-dependencies"]["test"])
