"""Local-mode authentication: single-use join tokens and static tokens.

For the demo, tests and hosts without Kubernetes. Tokens are looked up by
their SHA-256, so a token is never stored or logged in clear once loaded; the
audit log names a token by ``token_id``, the first 12 hex digits of its hash.

- :class:`JoinTokens`: each token maps to one SPIFFE ID, has an expiry, and
  can be used exactly once. Consumption is a single ``dict.pop`` under a
  lock, so of two simultaneous uses exactly one succeeds. If backed by a
  file, the file is rewritten (atomically) without the used token, so a
  restart does not revive it; the file stores token hashes, never tokens.
- :class:`StaticTokens`: a file mapping tokens to SPIFFE IDs; reusable.

File formats (YAML)::

    # join tokens (``token: "jt-..."`` in clear is accepted for hand-written files)
    - {token_sha256: "9f2c...", spiffe_id: "spiffe://example.org/demo/web", expires_at: 1893456000}
    # static tokens
    "st-...": "spiffe://example.org/host/build-agent"
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from ca.service.errors import ConfigError, UnauthenticatedError
from ca.service.identity import Caller
from sdk.errors import SpiffeIdError
from sdk.spiffeid import SpiffeId, TrustDomain

__all__ = ["JoinTokens", "StaticTokens", "token_id"]


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def token_id(token: str) -> str:
    """The public name of a token: 12 hex digits of its SHA-256."""
    return _digest(token)[:12]


def _spiffe_id(text: object, td: TrustDomain, where: str) -> SpiffeId:
    try:
        sid = SpiffeId.parse(str(text))
    except SpiffeIdError as err:
        raise ConfigError(where, str(err)) from err
    if not sid.member_of(td):
        raise ConfigError(where, f"{sid} is not in trust domain {td}")
    return sid


@dataclass(frozen=True)
class _Join:
    spiffe_id: SpiffeId
    expires_at: float


class JoinTokens:
    """Single-use tokens, each naming the SPIFFE ID its user receives.

    With ``path``, the file is the shared store: ``trustmesh ca join-token``
    adds to it while the service runs, and every change happens under an
    exclusive ``flock`` on ``<path>.lock`` after re-reading the file, so
    neither side loses the other's update. The file holds token hashes only.
    """

    def __init__(self, trust_domain: TrustDomain, *, path: str = "", clock: Callable[[], float] = time.time) -> None:
        self.trust_domain, self._path, self._clock = trust_domain, path, clock
        self._lock = threading.Lock()
        self._tokens: dict[str, _Join] = {}
        self._seen: tuple[int, int, int] | None = None  # (inode, mtime_ns, size) of the file last read
        if path:
            with self._file_lock():
                self._refresh(force=True)

    def create(self, spiffe_id: SpiffeId, ttl: float = 3600.0) -> str:
        """A new join token for ``spiffe_id``, valid for ``ttl`` seconds."""
        if not spiffe_id.member_of(self.trust_domain):
            raise ValueError(f"{spiffe_id} is not in trust domain {self.trust_domain}")
        token = "jt-" + secrets.token_urlsafe(24)
        with self._lock, self._file_lock():
            self._refresh()
            self._tokens[_digest(token)] = _Join(spiffe_id, self._clock() + ttl)
            self._save()
        return token

    def knows(self, token: str) -> bool:
        if self._path:
            with self._lock:
                self._refresh()
        return _digest(token) in self._tokens

    def consume(self, token: str) -> Caller:
        """Use ``token`` up; raises :class:`UnauthenticatedError` if unknown, used or expired."""
        with self._lock, self._file_lock():
            self._refresh(force=bool(self._path))
            entry = self._tokens.pop(_digest(token), None)
            if entry is not None:
                self._save()
        if entry is None:
            raise UnauthenticatedError("unknown or already used join token")
        if entry.expires_at <= self._clock():
            raise UnauthenticatedError("join token has expired")
        return Caller(spiffe_id=entry.spiffe_id, kind="join-token", token_id=token_id(token))

    def __len__(self) -> int:
        return len(self._tokens)

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        if not self._path:
            yield
            return
        fd = os.open(f"{self._path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _refresh(self, *, force: bool = False) -> None:
        """Re-read the file if it changed since it was last read (or written) here."""
        if not self._path:
            return
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            self._tokens, self._seen = {}, None
            return
        except OSError as err:
            raise ConfigError("authentication.join_tokens_file", f"cannot read {self._path}: {err}") from err
        if force or self._seen != (st.st_ino, st.st_mtime_ns, st.st_size):
            self._tokens = self._load(Path(self._path))
            self._seen = (st.st_ino, st.st_mtime_ns, st.st_size)

    def _load(self, path: Path) -> dict[str, _Join]:
        where = "authentication.join_tokens_file"
        try:
            data = yaml.safe_load(path.read_text()) or []
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(where, f"cannot read {path}: {err}") from err
        if not isinstance(data, list):
            raise ConfigError(where, f"{path} must hold a list of {{token_sha256, spiffe_id, expires_at}}")
        tokens: dict[str, _Join] = {}
        for i, item in enumerate(data):
            if not isinstance(item, Mapping):
                raise ConfigError(f"{where}[{i}]", "needs token_sha256 (or token), spiffe_id and expires_at")
            digest = item.get("token_sha256")
            if digest is None and isinstance(item.get("token"), str) and item["token"]:
                digest = _digest(item["token"])
            if not isinstance(digest, str) or len(digest) != 64:
                raise ConfigError(f"{where}[{i}]", "needs token_sha256 (64 hex digits) or token")
            expires = item.get("expires_at")
            if isinstance(expires, bool) or not isinstance(expires, (int, float)):
                raise ConfigError(f"{where}[{i}].expires_at", "must be seconds since the epoch")
            sid = _spiffe_id(item.get("spiffe_id"), self.trust_domain, f"{where}[{i}].spiffe_id")
            tokens[digest.lower()] = _Join(sid, float(expires))
        return tokens

    def _save(self) -> None:
        if not self._path:
            return
        now = self._clock()
        items = [
            {"token_sha256": digest, "spiffe_id": str(j.spiffe_id), "expires_at": j.expires_at}
            for digest, j in self._tokens.items()
            if j.expires_at > now
        ]
        target = Path(self._path)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".join-tokens-")
        with os.fdopen(fd, "w") as out:
            yaml.safe_dump(items, out)
        os.replace(tmp, target)
        st = os.stat(target)
        self._seen = (st.st_ino, st.st_mtime_ns, st.st_size)


class StaticTokens:
    """Reusable tokens mapped to SPIFFE IDs (read once from a file or a mapping)."""

    def __init__(self, trust_domain: TrustDomain, mapping: Mapping[str, str]) -> None:
        where = "authentication.static_tokens_file"
        self._ids: dict[str, SpiffeId] = {}
        for token, sid in mapping.items():
            if not isinstance(token, str) or len(token) < 16:
                raise ConfigError(where, "static tokens must be strings of at least 16 characters")
            self._ids[_digest(token)] = _spiffe_id(sid, trust_domain, f"{where}[{token_id(str(token))}]")

    @classmethod
    def load(cls, trust_domain: TrustDomain, path: str) -> StaticTokens:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError("authentication.static_tokens_file", f"cannot read {path}: {err}") from err
        if not isinstance(data, Mapping):
            raise ConfigError("authentication.static_tokens_file", f"{path} must map tokens to SPIFFE IDs")
        return cls(trust_domain, data)

    def lookup(self, token: str) -> Caller | None:
        sid = self._ids.get(_digest(token))
        if sid is None:
            return None
        return Caller(spiffe_id=sid, kind="static-token", token_id=token_id(token))
