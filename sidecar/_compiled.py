"""The sidecar's hot modules compiled with mypyc, used only when built from these exact sources.

Two groups are compiled: the HTTP/2 codec (:data:`CODEC_MODULES`) and the HTTP/1.1 request
path (:data:`HOT_MODULES`: strict parsing, the exchange, identity-header checks, metrics).
``scripts/build_codec`` (run by ``scripts/setup``) compiles :data:`COMPILED_MODULES` out of
the working tree, into ``<venv>/trustmesh-codec/<digest>/``, where ``<digest>`` hashes the
sources it compiled and those they are compiled against (:data:`DIGEST_INPUTS`). At import,
:mod:`sidecar` puts ``<digest>/sidecar`` first on its package path only when that digest is
the one of the ``.py`` files here now: an edited source has another digest, so it runs as
Python (never a stale extension shadowing it) until the next build. Nothing compiled is ever
written next to the sources. ``TRUSTMESH_PURE_CODEC=1`` forces the Python modules; without a
build they are what runs, with the same behaviour.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

CODEC_MODULES = ("_hpack_tables", "hpack", "h2frames", "h2events", "h2headers", "h2state", "h2receive", "http2")
"""The HTTP/2 codec (``sidecar.<name>``)."""
HOT_MODULES = ("identity_headers", "http1", "exchange", "metrics")
"""The HTTP/1.1 request path (``sidecar.<name>``): what every request runs through."""
COMPILED_MODULES = (*CODEC_MODULES, *HOT_MODULES)
"""Every module compiled."""
DIGEST_INPUTS = (*COMPILED_MODULES, "h2errors", "errors", "pool")
"""The sources a build is for: the compiled modules and the ones whose classes they are compiled against."""

_HERE = Path(__file__).resolve().parent


def source_digest(package_dir: Path = _HERE) -> str:
    """A digest of :data:`DIGEST_INPUTS` in ``package_dir`` and of this interpreter's version."""
    digest = hashlib.sha256(sys.implementation.cache_tag.encode())
    for name in DIGEST_INPUTS:
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
