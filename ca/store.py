"""The on-disk CA directory used by ``trustmesh ca`` and the CA service.

Layout (see docs/ca.md)::

    DIR/                      mode 0700
      ca.json                 configuration, slots, bundle sequence, taint history
                              (serial numbers as hex strings)
      .lock                   flock(2) target: writers exclusive, readers shared
      certs/<id>.pem          an authority's certificate, the intermediates above it,
                              then its root (for an upstream-signed authority)
      certs/upstream.pem      the upstream CA certificate and its chain to the root
      keys/<id>-x509.key      PKCS#8 PEM, mode 0600 (encrypted if a passphrase is set)
      keys/<id>-jwt.key
      keys/upstream.key       the upstream CA key (kept to sign the next intermediate)

``<id>`` is the authority id, also its JWT ``kid``. Files are written before
``ca.json`` is atomically replaced, and files of authorities no longer in
``ca.json`` are deleted after, so a crash never leaves ``ca.json`` naming a
file that does not exist. Every load error names the file and what is wrong.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding

from ca.authority import X509Authority, check_authority, parse_certificates
from ca.errors import CaError, CaStoreError
from ca.keys import FileKeyStore, KeyStore, KeyType
from ca.manager import CaConfig, CertificateAuthority, TaintRecord
from ca.rotation import Authority, Slots, SlotState
from sdk.errors import TrustmeshError
from sdk.spiffeid import TrustDomain

__all__ = ["FORMAT", "CaDirectory"]

FORMAT = "trustmesh-ca/1"
_ID = re.compile(r"[0-9a-f]{32}")


class CaDirectory:
    """A CA kept in a directory: create it, load it, save changes under a lock."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        passphrase: bytes | None = None,
        key_store: KeyStore | None = None,
    ) -> None:
        self.path = Path(path)
        self.keys: KeyStore = key_store or FileKeyStore(self.path / "keys", passphrase)
        self.state_file = self.path / "ca.json"

    def exists(self) -> bool:
        """True when the directory already holds a CA."""
        return self.state_file.exists()

    # -- locking ---------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self, *, shared: bool = False) -> Iterator[None]:
        """Hold the directory lock (shared for readers, exclusive for writers)."""
        try:
            fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        except FileNotFoundError:
            raise CaStoreError(f"{self.path}: no such directory") from None
        except OSError as err:
            raise CaStoreError(f"{self.path}: cannot lock: {err.strerror or err}") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def update(self) -> Iterator[CertificateAuthority]:
        """Load the CA under the exclusive lock, yield it, and save it if no error was raised."""
        with self.locked():
            ca = self._load()
            yield ca
            self._save(ca)

    # -- create / load / save ------------------------------------------------

    def init(
        self, config: CaConfig, *, now: datetime, upstream: X509Authority | None = None
    ) -> CertificateAuthority:
        """Create a new CA here; refuses if the directory already holds one."""
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as err:
            raise CaStoreError(f"{self.path}: cannot create directory: {err.strerror or err}") from err
        with self.locked():
            if self.exists():
                raise CaStoreError(f"{self.path}: already holds a CA ({self.state_file.name} exists)")
            ca = CertificateAuthority.create(config, now=now, upstream=upstream)
            if upstream is not None:
                self.keys.save("upstream", upstream.private_key)
                _write(self.path / "certs" / "upstream.pem", _pem(_path_of(upstream)))
            self._save(ca)
            return ca

    def load(self) -> CertificateAuthority:
        """Read the CA (under a shared lock)."""
        if not self.path.is_dir():
            raise CaStoreError(f"{self.path}: no such directory")
        with self.locked(shared=True):
            return self._load()

    def save(self, ca: CertificateAuthority) -> None:
        """Write ``ca`` back (under the exclusive lock)."""
        with self.locked():
            self._save(ca)

    def _save(self, ca: CertificateAuthority) -> None:
        slots = ca.slots
        for authority in slots.all:
            cert_file = self.path / "certs" / f"{authority.id}.pem"
            if not cert_file.exists():
                _write(cert_file, _pem(_path_of(authority.x509)))
            if not self.keys.exists(f"{authority.id}-x509"):
                self.keys.save(f"{authority.id}-x509", authority.x509.private_key)
            if not self.keys.exists(f"{authority.id}-jwt"):
                self.keys.save(f"{authority.id}-jwt", authority.jwt_key)
        _write(self.state_file, _encode_state(ca).encode())
        keep = {a.id for a in slots.all}
        for stale in (self.path / "certs").glob("*.pem"):
            if _ID.fullmatch(stale.stem) and stale.stem not in keep:
                stale.unlink(missing_ok=True)
                self.keys.delete(f"{stale.stem}-x509")
                self.keys.delete(f"{stale.stem}-jwt")

    def _load(self) -> CertificateAuthority:
        src = str(self.state_file)
        try:
            text = self.state_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CaStoreError(
                f"{self.path}: not a CA directory ({self.state_file.name} missing); run `trustmesh ca init`"
            ) from None
        except (OSError, UnicodeDecodeError) as err:
            raise CaStoreError(f"{src}: cannot read: {err}") from err
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as err:
            raise CaStoreError(f"{src}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}") from err
        try:
            return self._decode(doc, src)
        except CaStoreError:
            raise
        except TrustmeshError as err:
            raise CaStoreError(f"{err}") from err

    def _decode(self, doc: Any, src: str) -> CertificateAuthority:
        f = _Fields(doc, src)
        if f.text("format") != FORMAT:
            raise CaStoreError(f"{src}: unsupported format {doc.get('format')!r} (expected {FORMAT!r})")
        try:
            td = TrustDomain.parse(f.text("trust_domain"))
            key_type = KeyType.parse(f.text("key_type"))
        except (TrustmeshError, ValueError) as err:
            raise CaStoreError(f"{src}: {err}") from err
        config = CaConfig(
            td,
            key_type=key_type,
            ca_ttl=f.seconds("ca_ttl_seconds"),
            x509_svid_max_ttl=f.seconds("x509_svid_max_ttl_seconds"),
            jwt_svid_max_ttl=f.seconds("jwt_svid_max_ttl_seconds"),
            jwt_algorithm=f.optional_text("jwt_algorithm"),
            refresh_hint=f.seconds("refresh_hint_seconds"),
        )
        upstream = self._load_upstream() if f.flag("upstream") else None
        authorities = [self._load_authority(_Fields(a, f"{src}: authorities[{i}]")) for i, a in enumerate(f.items("authorities"))]
        active = [a for a in authorities if a.state is SlotState.ACTIVE]
        others = [a for a in authorities if a.state is not SlotState.ACTIVE]
        if len(active) != 1 or len(others) > 1:
            raise CaStoreError(
                f"{src}: expected one active authority and at most one standby, "
                f"found {', '.join(a.state.value for a in authorities) or 'none'}"
            )
        tainted = [
            TaintRecord(t.id("id"), t.hex("serial"), t.time("tainted_at"))
            for t in (_Fields(x, f"{src}: tainted[{i}]") for i, x in enumerate(f.items("tainted")))
        ]
        sequence = f.integer("sequence")
        try:
            slots = Slots(active[0], others[0] if others else None)
            return CertificateAuthority(config, slots, sequence=sequence, upstream=upstream, tainted=tainted)
        except CaError as err:
            raise CaStoreError(f"{src}: {err}") from err

    def _load_authority(self, f: "_Fields") -> Authority:
        authority_id = f.id("id")
        try:
            state = SlotState(f.text("state"))
        except ValueError:
            raise CaStoreError(f"{f.where}: state must be prepared, active or retired") from None
        cert_file = self.path / "certs" / f"{authority_id}.pem"
        x509_authority = self._read_authority(cert_file, f"{authority_id}-x509")
        jwt_key = self.keys.load(f"{authority_id}-jwt")
        return Authority(
            authority_id,
            x509_authority,
            jwt_key,
            state,
            created_at=f.time("created_at"),
            activated_at=f.optional_time("activated_at"),
            retired_at=f.optional_time("retired_at"),
        )

    def _load_upstream(self) -> X509Authority:
        return self._read_authority(self.path / "certs" / "upstream.pem", "upstream")

    def _read_authority(self, cert_file: Path, key_name: str) -> X509Authority:
        try:
            data = cert_file.read_bytes()
        except FileNotFoundError:
            raise CaStoreError(f"{cert_file}: certificate file is missing") from None
        except OSError as err:
            raise CaStoreError(f"{cert_file}: cannot read: {err.strerror or err}") from err
        try:
            found = parse_certificates(data, source=str(cert_file))
            authority = X509Authority(found[0], self.keys.load(key_name), found[1:-1], found[-1])
            check_authority(authority, source=str(cert_file))
        except CaStoreError:
            raise
        except TrustmeshError as err:
            raise CaStoreError(str(err)) from err
        return authority


# -- encoding ------------------------------------------------------------------


def _path_of(authority: X509Authority) -> tuple:
    """Certificate, intermediates, then the root unless the certificate is the root."""
    tail = () if authority.is_root else (authority.trust_anchor,)
    return (authority.certificate, *authority.chain, *tail)


def _pem(certs: tuple) -> bytes:
    return b"".join(c.public_bytes(Encoding.PEM) for c in certs)


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat()


def _encode_state(ca: CertificateAuthority) -> str:
    cfg = ca.config
    doc = {
        "format": FORMAT,
        "trust_domain": str(cfg.trust_domain),
        "key_type": cfg.key_type.value,
        "ca_ttl_seconds": int(cfg.ca_ttl.total_seconds()),
        "x509_svid_max_ttl_seconds": int(cfg.x509_svid_max_ttl.total_seconds()),
        "jwt_svid_max_ttl_seconds": int(cfg.jwt_svid_max_ttl.total_seconds()),
        "jwt_algorithm": cfg.jwt_algorithm,
        "refresh_hint_seconds": int(cfg.refresh_hint.total_seconds()),
        "sequence": ca.sequence,
        "upstream": ca.upstream is not None,
        "authorities": [
            {
                "id": a.id,
                "state": a.state.value,
                "created_at": _iso(a.created_at),
                "activated_at": _iso(a.activated_at),
                "retired_at": _iso(a.retired_at),
                "not_after": _iso(a.expires_at),
            }
            for a in ca.slots.all
        ],
        "tainted": [
            {"id": t.id, "serial": format(t.serial, "x"), "tainted_at": _iso(t.tainted_at)} for t in ca.tainted
        ],
    }
    return json.dumps(doc, indent=2) + "\n"


def _write(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(tmp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except OSError as err:
        raise CaStoreError(f"{path}: cannot write: {err.strerror or err}") from err


class _Fields:
    """Typed access to a JSON object; errors name the file and the field."""

    def __init__(self, doc: Any, where: str) -> None:
        if not isinstance(doc, dict):
            raise CaStoreError(f"{where}: expected a JSON object")
        self.doc, self.where = doc, where

    def _get(self, name: str, kind: type | tuple[type, ...], what: str) -> Any:
        if name not in self.doc:
            raise CaStoreError(f"{self.where}: field {name!r} is missing")
        value = self.doc[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise CaStoreError(f"{self.where}: field {name!r} must be {what}, got {value!r}")
        return value

    def text(self, name: str) -> str:
        return self._get(name, str, "a string")

    def optional_text(self, name: str) -> str | None:
        return None if self.doc.get(name) is None else self.text(name)

    def flag(self, name: str) -> bool:
        return self._get(name, bool, "true or false")

    def integer(self, name: str) -> int:
        value = self._get(name, int, "an integer")
        if value < 0:
            raise CaStoreError(f"{self.where}: field {name!r} must not be negative, got {value}")
        return value

    def hex(self, name: str) -> int:
        value = self.text(name)
        try:
            return int(value, 16)
        except ValueError:
            raise CaStoreError(f"{self.where}: field {name!r} must be hexadecimal, got {value!r}") from None

    def seconds(self, name: str) -> timedelta:
        value = self.integer(name)
        if value < 1:
            raise CaStoreError(f"{self.where}: field {name!r} must be at least 1, got {value}")
        return timedelta(seconds=value)

    def items(self, name: str) -> list:
        return self._get(name, list, "a list")

    def id(self, name: str) -> str:
        value = self.text(name)
        if not _ID.fullmatch(value):
            raise CaStoreError(f"{self.where}: field {name!r} must be 32 lower-case hex digits, got {value!r}")
        return value

    def time(self, name: str) -> datetime:
        text = self.text(name)
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            value = None
        if value is None or value.tzinfo is None:
            raise CaStoreError(f"{self.where}: field {name!r} must be an ISO 8601 time with offset, got {text!r}")
        return value

    def optional_time(self, name: str) -> datetime | None:
        return None if self.doc.get(name) is None else self.time(name)
