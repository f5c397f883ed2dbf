"""Fetching a SPIFFE bundle from another trust domain's bundle endpoint (SPIFFE Federation 5.2).

One HTTPS ``GET`` per fetch, bounded in time (connect, TLS, request and
answer together within ``timeout`` seconds) and in size (``max_bytes`` of
body, 16 KiB of head). The endpoint is authenticated per profile before the
request is sent:

- ``https_web``: the server certificate must chain to the system's roots (or
  the relationship's ``endpoint_ca_file``) and name the URL's host;
- ``https_spiffe``: the server certificate must be an X.509-SVID that verifies
  against the bundle of the endpoint's trust domain and carries exactly the
  configured endpoint SPIFFE ID.

Both offer only the key-exchange groups of :mod:`sdk.tlsprofile` (Mozilla's
intermediate profile, which the standard asks of bundle endpoints).

The request is HTTP/1.0, so the answer is delimited by ``Content-Length`` or
by the end of the connection, never chunked. Redirects are not followed (the
standard allows following them; refusing them keeps the authenticated
endpoint the one the operator configured). Every failure is a
:class:`~ca.service.errors.FederationError` saying what went wrong and where.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from ca.service.errors import FederationError
from sdk.bundle import Bundle
from sdk.errors import X509SvidError
from sdk.spiffeid import SpiffeId
from sdk.tlsprofile import restrict_groups
from sdk.workloadapi.tls import peer_chain
from sdk.x509svid import verify_chain

__all__ = ["Endpoint", "fetch_document", "web_endpoint", "spiffe_endpoint"]

MAX_HEAD_BYTES = 16 * 1024


@dataclass(frozen=True)
class Endpoint:
    """Where to fetch and how to authenticate the server before asking."""

    url: str
    context: ssl.SSLContext
    check_peer: Callable[[ssl.SSLObject], None] | None = None  # raises FederationError


def web_endpoint(url: str, ca_file: str = "") -> Endpoint:
    """``https_web``: Web PKI roots (or ``ca_file``), host name checked."""
    try:
        context = ssl.create_default_context(cafile=ca_file or None)
    except (OSError, ssl.SSLError) as err:
        raise FederationError(f"cannot read endpoint_ca_file {ca_file}: {err}") from err
    restrict_groups(context)
    return Endpoint(url, context)


def spiffe_endpoint(url: str, expected: SpiffeId, bundle: Bundle, now: Callable[[], datetime]) -> Endpoint:
    """``https_spiffe``: the server's X.509-SVID must verify against ``bundle`` and be ``expected``."""
    if not bundle.x509_authorities:
        raise FederationError(f"the bundle of {bundle.trust_domain} holds no X.509 authority to verify {expected} with")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False  # the SPIFFE ID is checked instead of a host name
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=bundle.to_pem().decode("ascii"))
    restrict_groups(context)

    def check(ssl_object: ssl.SSLObject) -> None:
        try:
            presented = verify_chain(peer_chain(ssl_object), bundle, now())
        except X509SvidError as err:
            raise FederationError(f"endpoint certificate is not a valid X.509-SVID of {bundle.trust_domain}: {err}") from err
        if presented != expected:
            raise FederationError(f"endpoint presented {presented}, expected {expected} (endpoint_spiffe_id)")

    return Endpoint(url, context, check)


async def fetch_document(endpoint: Endpoint, *, max_bytes: int, timeout: float) -> bytes:
    """The body of a ``200`` answer to ``GET url``; :class:`FederationError` otherwise."""
    url = endpoint.url
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 443
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    authority = parts.netloc.rpartition("@")[2]
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=endpoint.context, server_hostname=host, limit=MAX_HEAD_BYTES
            )
            try:
                if endpoint.check_peer is not None:
                    endpoint.check_peer(writer.get_extra_info("ssl_object"))
                writer.write(
                    f"GET {target} HTTP/1.0\r\nHost: {authority}\r\nAccept: application/json\r\n"
                    "User-Agent: trustmesh-ca-federation\r\n\r\n".encode("ascii")
                )
                return await _read_answer(reader, url, max_bytes)
            finally:
                writer.close()
                with contextlib.suppress(OSError, ssl.SSLError, asyncio.TimeoutError):
                    await asyncio.wait_for(writer.wait_closed(), 1.0)
    except TimeoutError as err:
        raise FederationError(f"{url}: no complete answer within {timeout:g}s (refresh.timeout_seconds)") from err
    except ssl.SSLCertVerificationError as err:
        raise FederationError(f"{url}: endpoint certificate not trusted: {err.verify_message or err.reason}") from err
    except ssl.SSLError as err:
        raise FederationError(f"{url}: TLS failed: {err.reason or err}") from err
    except OSError as err:
        raise FederationError(f"{url}: cannot connect: {err.strerror or err}") from err


async def _read_answer(reader: asyncio.StreamReader, url: str, max_bytes: int) -> bytes:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError as err:
        raise FederationError(f"{url}: answer head larger than {MAX_HEAD_BYTES} bytes") from err
    except asyncio.IncompleteReadError as err:
        raise FederationError(f"{url}: connection closed before a complete answer head") from err
    lines = head.decode("latin-1").split("\r\n")
    status_line = lines[0].split(" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith("HTTP/") or not status_line[1].isdigit():
        raise FederationError(f"{url}: not an HTTP answer: {lines[0][:80]!r}")
    status = int(status_line[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if 300 <= status < 400:
        raise FederationError(f"{url}: answered {status} (redirect to {headers.get('location', '?')!r}); redirects are not followed")
    if status != 200:
        raise FederationError(f"{url}: answered HTTP {status}")
    if "transfer-encoding" in headers:
        raise FederationError(f"{url}: unexpected Transfer-Encoding {headers['transfer-encoding']!r} on an HTTP/1.0 answer")
    length = headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise FederationError(f"{url}: malformed Content-Length {length!r}")
        if int(length) > max_bytes:
            raise FederationError(f"{url}: bundle of {int(length)} bytes is larger than {max_bytes} (refresh.max_bytes)")
        try:
            return await reader.readexactly(int(length))
        except asyncio.IncompleteReadError as err:
            raise FederationError(f"{url}: connection closed after {len(err.partial)} of {length} bytes") from err
    body = bytearray()
    while chunk := await reader.read(64 * 1024):
        body += chunk
        if len(body) > max_bytes:
            raise FederationError(f"{url}: bundle larger than {max_bytes} bytes (refresh.max_bytes)")
    return bytes(body)
