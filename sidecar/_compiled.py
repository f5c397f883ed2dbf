"""The HTTP/2 codec modules compiled with mypyc, used only when built from these exact sources.

``scripts/build_codec`` (run by ``scripts/setup``) compiles :data:`CODEC_MODULES` out of the
working tree, into ``<venv>/trustmesh-codec/<digest>/``, where ``<digest>`` hashes the
sources it compiled. At import, :mod:`sidecar` puts ``<digest>/sidecar`` first on its package
path only when that digest is the one of the ``.py`` files here now: an edited source has
another digest, so it runs as Python (never a stale extension shadowing it) until the next
build. Nothing compiled is ever written next to the sources. ``TRUSTMESH_PURE_CODEC=1``
forces the Python modules; without a build they are what runs, with the same behaviour.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

CODEC_MODULES = ("_hpack_tables", "hpack", "h2frames", "h2events", "h2headers", "h2state", "h2receive", "http2")
"""The modules compiled (``sidecar.<name>``)."""

_DIGEST_INPUTS = (*CODEC_MODULES, "h2errors")  # h2errors: not compiled, but its classes are compiled against
_HERE = Path(__file__).resolve().parent


def source_digest(package_dir: Path = _HERE) -> str:
    """A digest of the codec sources in ``package_dir`` and of this interpreter's version."""
    digest = hashlib.sha256(sys.implementation.cache_tag.encode())
    for name in _DIGEST_INPUTS:
        digest.update(name.encode() + b"\0" + (package_dir / f"{name}.py").read_bytes() + b"\0")
    return digest.hexdigest()[:24]


def build_root(prefix: str | None = None) -> Path:
    """Where builds are kept: in the virtual environment, never in the working tree."""
    return Path(prefix if prefix is not None else sys.prefix) / "trustmesh-codec"


def compiled_dir(prefix: str | None = None) -> Path | None:
    """The complete build for the sources as they are now, or None (none, stale, or disabled)."""
    if os.environ.get("TRUSTMESH_PURE_CODEC"):
        return None
    root = build_root(prefix)
    if not root.is_dir():  # the common case without a build: no hashing at all
        return None
    try:
        build = root / source_digest()
    except OSError:
        return None
    return build if (build / "complete").is_file() else None


def use_compiled_codec(package_path: list[str], prefix: str | None = None) -> bool:
    """Put the matching build first on ``package_path`` (``sidecar.__path__``); True if there is one."""
    build = compiled_dir(prefix)
    if build is None:
        return False
    package_path.insert(0, str(build / "sidecar"))
    if str(build) not in sys.path:
        sys.path.append(str(build))  # mypyc's shared runtime module, a name of its own
    return True
