"""Where the service keeps its CA so that several replicas serve one authority.

Three stores share one small async interface:

- :class:`MemoryCaStore` — a CA that lives and dies with the process (demo, tests);
- :class:`DirectoryCaStore` — the on-disk :class:`ca.store.CaDirectory`
  (a volume shared by replicas; changes are made under its file lock);
- :class:`SecretCaStore` — the same files held in one Kubernetes Secret;
  writes are compare-and-swap on the Secret's ``resourceVersion``, so when
  two replicas rotate at once one wins and the other re-reads.

``apply(step)`` re-reads the latest CA, runs ``step`` on it and saves it;
``reload()`` picks up changes another replica made.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Protocol

from ca.errors import CaStoreError
from ca.manager import CaConfig, CertificateAuthority
from ca.service.errors import UpstreamUnavailableError
from ca.service.kube import KubeApi
from ca.service.scratch import scratch_directory
from ca.store import CaDirectory

__all__ = ["CaStore", "MemoryCaStore", "DirectoryCaStore", "SecretCaStore"]

Step = Callable[[CertificateAuthority], object]


class CaStore(Protocol):
    async def load_or_create(self, config: CaConfig, now: datetime) -> CertificateAuthority: ...
    async def apply(self, step: Step) -> CertificateAuthority: ...
    async def reload(self) -> CertificateAuthority: ...


class MemoryCaStore:
    """Keeps the CA in memory only."""

    def __init__(self, ca: CertificateAuthority | None = None) -> None:
        self._ca = ca

    async def load_or_create(self, config: CaConfig, now: datetime) -> CertificateAuthority:
        if self._ca is None:
            self._ca = CertificateAuthority.create(config, now=now)
        return self._ca

    async def apply(self, step: Step) -> CertificateAuthority:
        assert self._ca is not None
        step(self._ca)
        return self._ca

    async def reload(self) -> CertificateAuthority:
        assert self._ca is not None
        return self._ca


class DirectoryCaStore:
    """A :class:`CaDirectory` on disk (blocking file I/O runs in a thread)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.directory = CaDirectory(path)

    async def load_or_create(self, config: CaConfig, now: datetime) -> CertificateAuthority:
        def run() -> CertificateAuthority:
            if self.directory.exists():
                return self.directory.load()
            try:
                return self.directory.init(config, now=now)
            except CaStoreError:
                if self.directory.exists():  # another replica initialised it first
                    return self.directory.load()
                raise

        return await asyncio.to_thread(run)

    async def apply(self, step: Step) -> CertificateAuthority:
        def run() -> CertificateAuthority:
            with self.directory.update() as ca:
                step(ca)
            return ca

        return await asyncio.to_thread(run)

    async def reload(self) -> CertificateAuthority:
        return await asyncio.to_thread(self.directory.load)


def _secret_key(relative: str) -> str:
    return relative.replace("/", ".", 1)  # "certs/<id>.pem" -> "certs.<id>.pem"


def _relative(secret_key: str) -> str:
    head, sep, rest = secret_key.partition(".")
    return f"{head}/{rest}" if head in ("certs", "keys") and sep else secret_key


class SecretCaStore:
    """The CA directory's files, held in the Secret ``namespace/name``."""

    def __init__(self, api: KubeApi, namespace: str, name: str) -> None:
        self.api, self.namespace, self.name = api, namespace, name

    async def load_or_create(self, config: CaConfig, now: datetime) -> CertificateAuthority:
        doc = await self.api.read_secret(self.namespace, self.name)
        if doc is not None:
            return self._materialize(doc)[0]
        with scratch_directory() as tmp:
            directory = CaDirectory(tmp / "ca")
            ca = directory.init(config, now=now)
            files = _collect(directory.path)
        try:
            await self.api.write_secret(self.namespace, self.name, files)
        except UpstreamUnavailableError as err:
            if "409" not in str(err):
                raise
            return await self.reload()  # another replica created it first: use theirs
        return ca

    async def apply(self, step: Step) -> CertificateAuthority:
        for _ in range(5):
            doc = await self.api.read_secret(self.namespace, self.name)
            if doc is None:
                raise UpstreamUnavailableError(f"CA Secret {self.namespace}/{self.name} disappeared")
            with scratch_directory() as tmp:
                directory = _write_files(tmp, doc)
                with directory.update() as ca:
                    step(ca)
                files = _collect(directory.path)
            try:
                await self.api.write_secret(
                    self.namespace, self.name, files, resource_version=doc["metadata"]["resourceVersion"]
                )
                return ca
            except UpstreamUnavailableError as err:
                if "409" not in str(err):
                    raise
        raise UpstreamUnavailableError(f"CA Secret {self.namespace}/{self.name}: too many concurrent writers")

    async def reload(self) -> CertificateAuthority:
        doc = await self.api.read_secret(self.namespace, self.name)
        if doc is None:
            raise UpstreamUnavailableError(f"CA Secret {self.namespace}/{self.name} does not exist")
        return self._materialize(doc)[0]

    def _materialize(self, doc: dict) -> tuple[CertificateAuthority, str]:
        with scratch_directory() as tmp:
            directory = _write_files(tmp, doc)
            return directory.load(), doc["metadata"]["resourceVersion"]


def _write_files(tmp: Path, doc: dict) -> CaDirectory:
    root = tmp / "ca"
    root.mkdir(mode=0o700)
    for key, value in (doc.get("data") or {}).items():
        rel = _relative(key)
        if ".." in rel or rel.startswith("/"):
            raise CaStoreError(f"CA Secret: unexpected key {key!r}")
        path = root / rel
        path.parent.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(base64.b64decode(value))
    return CaDirectory(root)


def _collect(root: Path) -> dict[str, str]:
    files: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name != ".lock":
            files[_secret_key(str(path.relative_to(root)))] = base64.b64encode(path.read_bytes()).decode()
    return files
