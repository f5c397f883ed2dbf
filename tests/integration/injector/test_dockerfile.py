"""The Dockerfile builds one non-root image from a pinned base, entrypoint ``trustmesh``.

No image is built here (no network in tests); this checks the file itself.
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
    assert all(rest.split()[0] == "${PYTHON_IMAGE}" for word, rest in instructions() if word == "FROM")


def test_runs_as_non_root_with_the_trustmesh_entrypoint():
    users = [rest for word, rest in instructions() if word == "USER"]
    assert users and users[-1] == "65532:65532"
    assert ("ENTRYPOINT", '["trustmesh"]') in instructions()


def test_every_package_is_copied_into_the_build():
    copied = {rest.split()[0] for word, rest in instructions() if word == "COPY" and "--from" not in rest}
    for package in ("trustmesh", "sdk", "ca", "sidecar", "injector", "policy_dsl"):
        assert package in copied
