"""Private scratch directories for key material that must pass through files.

Python's ``ssl`` loads certificates and keys only from files, and the CA's
on-disk format is files, so the Secret-backed store and the serving
certificate briefly write key material. They do so in a fresh 0700
directory that is removed right after, preferably in RAM: ``$TMPDIR`` if
set, else ``/dev/shm`` when writable (it stays writable in containers with a
read-only root filesystem), else the system default.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["scratch_directory"]


def _base() -> str | None:
    if os.environ.get("TMPDIR"):
        return None  # tempfile honours it
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return None


@contextmanager
def scratch_directory(prefix: str = "trustmesh-ca-") -> Iterator[Path]:
    """A new private directory, deleted (with its contents) on exit."""
    with tempfile.TemporaryDirectory(prefix=prefix, dir=_base()) as tmp:
        yield Path(tmp)
