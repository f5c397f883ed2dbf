"""The Dockerfile builds two non-root images from a pinned base, entrypoint ``trustmesh``.

No image is built here; this checks the file itself (tests/integration/podman
builds the sidecar image and runs it).
"""

from __future__ import annotations

import re
from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parents[3] / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_base_image_is_pinned_to_a_patch_version():
    args = dict(rest.split("=", 1) for word, rest in instructions() if word == "ARG" and "=" in rest)
    image = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", image), image
    stages: list[str] = []
    for word, rest in instructions():
        if word == "FROM":
            base, _, name = rest.partition(" AS ")
            # the pinned base, an empty one for the flattened images, or an earlier stage
            assert base in ("${PYTHON_IMAGE}", "scratch", *stages), rest
            stages.append(name)


def _final_images() -> dict[str, list[tuple[str, str]]]:
    """The instructions of each ``FROM scratch`` stage: the images users run."""
    images: dict[str, list[tuple[str, str]]] = {}
    current = None
    for word, rest in instructions():
        if word == "FROM":
            current = rest.split(" AS ")[1] if rest.startswith("scratch AS ") else None
            if current:
                images[current] = []
        elif current:
            images[current].append((word, rest))
    return images


def test_both_images_run_as_non_root_with_the_trustmesh_entrypoint():
    images = _final_images()
    assert sorted(images) == ["control-plane", "sidecar"]
    for name, steps in images.items():
        users = [rest for word, rest in steps if word == "USER"]
        assert users and all(not user.startswith("0") and not user.startswith("root") for user in users), name
        assert ("ENTRYPOINT", '["trustmesh"]') in steps, name


def test_every_package_is_copied_into_the_build():
    copied = {rest.split()[0] for word, rest in instructions() if word == "COPY" and "--from" not in rest}
    for package in ("trustmesh", "sdk", "ca", "sidecar", "injector", "policy_dsl"):
        assert package in copied
