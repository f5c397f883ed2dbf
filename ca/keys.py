"""CA signing keys: generation, PKCS#8 encoding, and key stores.

Keys are ECDSA P-256 by default, or RSA 2048/3072. A :class:`FileKeyStore`
keeps each key in its own PKCS#8 PEM file created with mode 0600 (optionally
passphrase-encrypted) and refuses to read a key file that other users can
read; a :class:`MemoryKeyStore` holds keys in a dict for tests.

Example::

    >>> store = MemoryKeyStore()
    >>> store.save("root", generate_key(KeyType.EC_P256))
    >>> key_type_of(store.load("root"))
    <KeyType.EC_P256: 'ec-p256'>
"""

from __future__ import annotations

import enum
import os
import re
import stat
from pathlib import Path
from typing import Protocol, Union

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ca.errors import CaStoreError, KeyFormatError
from sdk.pem import PRIVATE_KEY_LABELS, mismatch

__all__ = [
    "PrivateKey",
    "KeyType",
    "generate_key",
    "key_type_of",
    "check_signing_key",
    "signature_hash",
    "private_key_to_pem",
    "private_key_from_pem",
    "KeyStore",
    "FileKeyStore",
    "MemoryKeyStore",
]

PrivateKey = Union[ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class KeyType(enum.Enum):
    """The key algorithms the CA signs with; the value is the CLI spelling."""

    EC_P256 = "ec-p256"
    RSA_2048 = "rsa-2048"
    RSA_3072 = "rsa-3072"

    @classmethod
    def parse(cls, text: str) -> "KeyType":
        """Return the key type spelled ``text`` (``ec-p256``, ``rsa-2048``, ``rsa-3072``)."""
        try:
            return cls(text)
        except ValueError:
            choices = ", ".join(t.value for t in cls)
            raise KeyFormatError(f"unknown key type {text!r} (choose from {choices})") from None


def generate_key(key_type: KeyType = KeyType.EC_P256) -> PrivateKey:
    """Return a fresh private key of ``key_type``."""
    if key_type is KeyType.EC_P256:
        return ec.generate_private_key(ec.SECP256R1())
    bits = 2048 if key_type is KeyType.RSA_2048 else 3072
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def key_type_of(key: object) -> KeyType:
    """Return the :class:`KeyType` of a private or public key, or raise KeyFormatError."""
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        if isinstance(key.curve, ec.SECP256R1):
            return KeyType.EC_P256
        raise KeyFormatError(f"unsupported elliptic curve {key.curve.name} (only P-256)")
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        if key.key_size == 2048:
            return KeyType.RSA_2048
        if key.key_size == 3072:
            return KeyType.RSA_3072
        raise KeyFormatError(f"unsupported RSA key size {key.key_size} (only 2048 or 3072)")
    raise KeyFormatError(f"unsupported key type {type(key).__name__} (only ECDSA P-256 or RSA)")


def check_signing_key(key: object) -> None:
    """Raise KeyFormatError unless ``key`` can sign certificates here.

    The CA generates only :class:`KeyType` keys, but an upstream CA's key may
    also be ECDSA P-384/P-521 or RSA up to 8192 bits.
    """
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        if not isinstance(key.curve, (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)):
            raise KeyFormatError(f"unsupported elliptic curve {key.curve.name} (P-256, P-384 or P-521)")
    elif isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        if not 2048 <= key.key_size <= 8192:
            raise KeyFormatError(f"unsupported RSA key size {key.key_size} (2048 to 8192)")
    else:
        raise KeyFormatError(f"unsupported key type {type(key).__name__} (only ECDSA or RSA)")


def signature_hash(key: PrivateKey) -> hashes.HashAlgorithm:
    """The digest to sign with ``key``: SHA-384 for P-384, SHA-512 for P-521, else SHA-256."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if isinstance(key.curve, ec.SECP384R1):
            return hashes.SHA384()
        if isinstance(key.curve, ec.SECP521R1):
            return hashes.SHA512()
    return hashes.SHA256()


def private_key_to_pem(key: PrivateKey, passphrase: bytes | None = None) -> bytes:
    """Encode ``key`` as PKCS#8 PEM, encrypted with ``passphrase`` when one is given."""
    encryption: serialization.KeySerializationEncryption
    if passphrase:
        encryption = serialization.BestAvailableEncryption(passphrase)
    else:
        encryption = serialization.NoEncryption()
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def private_key_from_pem(
    data: bytes, passphrase: bytes | None = None, *, source: str = "key"
) -> PrivateKey:
    """Decode a PEM private key (PKCS#8 or traditional); ``source`` names it in errors."""
    try:
        key = serialization.load_pem_private_key(data, password=passphrase or None)
    except TypeError as err:
        if passphrase:
            raise KeyFormatError(f"{source}: a passphrase was given but the key is not encrypted") from err
        raise KeyFormatError(f"{source}: the key is encrypted and no passphrase was given") from err
    except (ValueError, UnsupportedAlgorithm) as err:
        if passphrase and b"ENCRYPTED" in data:
            raise KeyFormatError(f"{source}: wrong passphrase or corrupt encrypted key") from err
        what = mismatch(data, expected="a PEM private key", label=PRIVATE_KEY_LABELS)
        raise KeyFormatError(f"{source}: {what}") from err
    try:
        check_signing_key(key)  # reject unsupported algorithms and sizes
    except KeyFormatError as err:
        raise KeyFormatError(f"{source}: {err}") from None
    return key  # type: ignore[return-value]


class KeyStore(Protocol):
    """Where the CA keeps its private keys, by name."""

    def save(self, name: str, key: PrivateKey) -> None: ...

    def load(self, name: str) -> PrivateKey: ...

    def exists(self, name: str) -> bool: ...

    def delete(self, name: str) -> None: ...


def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise KeyFormatError(f"invalid key name {name!r}")
    return name


class MemoryKeyStore:
    """Keys held in memory (tests, throwaway CAs)."""

    def __init__(self) -> None:
        self._keys: dict[str, PrivateKey] = {}

    def save(self, name: str, key: PrivateKey) -> None:
        self._keys[_check_name(name)] = key

    def load(self, name: str) -> PrivateKey:
        try:
            return self._keys[name]
        except KeyError:
            raise CaStoreError(f"no key named {name!r}") from None

    def exists(self, name: str) -> bool:
        return name in self._keys

    def delete(self, name: str) -> None:
        self._keys.pop(name, None)


class FileKeyStore:
    """One PKCS#8 PEM file per key, ``<directory>/<name>.key``, mode 0600.

    The directory is created with mode 0700. A key file that group or others
    may read is refused rather than used.
    """

    def __init__(self, directory: str | os.PathLike[str], passphrase: bytes | None = None) -> None:
        self.directory = Path(directory)
        self._passphrase = passphrase or None

    def path(self, name: str) -> Path:
        """The file that holds key ``name``."""
        return self.directory / f"{_check_name(name)}.key"

    def save(self, name: str, key: PrivateKey) -> None:
        path = self.path(name)
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.unlink(missing_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(private_key_to_pem(key, self._passphrase))
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except OSError as err:
            raise CaStoreError(f"{path}: cannot write key: {err.strerror or err}") from err

    def load(self, name: str) -> PrivateKey:
        path = self.path(name)
        try:
            mode = path.stat().st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise CaStoreError(
                    f"{path}: key file is accessible by group or others "
                    f"(mode {stat.S_IMODE(mode):04o}); chmod 600 it"
                )
            data = path.read_bytes()
        except FileNotFoundError:
            raise CaStoreError(f"{path}: key file is missing") from None
        except CaStoreError:
            raise
        except OSError as err:
            raise CaStoreError(f"{path}: cannot read key: {err.strerror or err}") from err
        return private_key_from_pem(data, self._passphrase, source=str(path))

    def exists(self, name: str) -> bool:
        return self.path(name).exists()

    def delete(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)
