"""The mesh TLS profile against real clients and servers: no session resumption (a client that
tries to resume gets a full handshake and an answer, never a close), and only the X25519, P-256
and P-384 groups (Mozilla "intermediate"). Python's ssl client and `openssl s_client`/`s_server`
are the independent peers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator

import pytest

from sdk.bundle import Bundle
from sdk.spiffeid import TrustDomain
from sdk.tlsprofile import releases_idle_buffers
from tests.integration.sidecar.helpers import free_port
from tests.support.pki import make_root
from tests.unit.sidecar.conftest import config, rule_authorizer

CLIENT = "spiffe://example.org/ns/a/sa/client"
REQUEST = b"GET /data HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"


def _call(port: int, ctx: ssl.SSLContext, session: ssl.SSLSession | None = None) -> tuple[bytes, ssl.SSLSession | None, bool]:
    """One request on a new blocking TLS connection: (everything read, the session, resumed?)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, session=session) as tls:
            tls.sendall(REQUEST)
            answer = b""
            try:
                while data := tls.recv(65536):  # TLS 1.3 tickets, if any, arrive with the answer
                    answer += data
            except (ssl.SSLError, ConnectionResetError):
                pass
            return answer, tls.session, tls.session_reused


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
async def test_a_client_that_resumes_gets_a_full_handshake_and_an_answer(mesh, pki, app, version):
    b = await mesh(config(app.port), pki.identity("/ns/b/sa/server"), rule_authorizer({CLIENT}))
    ctx = pki.identity("/ns/a/sa/client").client_context()
    ctx.maximum_version = version
    port = b.ports["inbound"]
    first, session, _ = await asyncio.to_thread(_call, port, ctx)
    assert first.startswith(b"HTTP/1.1 200")
    second, _, resumed = await asyncio.to_thread(_call, port, ctx, session)
    assert not resumed
    assert second.startswith(b"HTTP/1.1 200")
    assert not (session is not None and session.has_ticket)  # nothing was offered to resume with


async def test_a_client_whose_authority_was_removed_is_refused_even_with_a_session(mesh, pki, app):
    b = await mesh(config(app.port), pki.identity("/ns/b/sa/server"), rule_authorizer({CLIENT}))
    ctx = pki.identity("/ns/a/sa/client").client_context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # session-ID resumption: the server keeps no cache
    port = b.ports["inbound"]
    first, session, _ = await asyncio.to_thread(_call, port, ctx)
    assert first.startswith(b"HTTP/1.1 200")
    b.identity._update(bundle=Bundle.parse_pem(make_root("example.org").pem, TrustDomain.parse("example.org")))
    try:
        answer, _, resumed = await asyncio.to_thread(_call, port, ctx, session)
    except (ssl.SSLError, ConnectionResetError):  # the handshake failed: the client's CA is gone
        answer, resumed = b"", False
    assert answer == b"" and not resumed
    assert len(app.seen) == 1


async def _s_client(port: int, files: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-cert", files["cert_file"], "-key", files["key_file"],
        "-cert_chain", files["cert_file"], "-CAfile", files["bundle_file"], "-ign_eof", *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(REQUEST), 20)
    return proc.returncode or 0, out.decode("latin-1")


@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
async def test_openssl_s_client_offering_a_session_gets_an_answer(mesh, pki, app, tmp_path, version):
    b = await mesh(config(app.port), pki.identity("/ns/b/sa/server"), rule_authorizer({CLIENT}))
    files = pki.write(tmp_path, "client", "/ns/a/sa/client")
    own = tmp_path / "own-session.pem"
    _, first = await _s_client(b.ports["inbound"], files, version, "-sess_out", str(own))
    assert "HTTP/1.1 200" in first
    assert not own.exists()  # the sidecar offered nothing to resume: no ticket, no session ID
    # a session the client holds from elsewhere (another replica, the sidecar before a restart)
    foreign = tmp_path / "foreign-session.pem"
    async with _s_server(pki, tmp_path) as port:
        _, out = await _s_client(port, files, version, "-sess_out", str(foreign))
    assert "\nNew, TLS" in out and foreign.exists()
    _, second = await _s_client(b.ports["inbound"], files, version, "-sess_in", str(foreign))
    assert "\nNew, TLS" in second and "\nReused, TLS" not in second  # a full handshake...
    assert "HTTP/1.1 200" in second  # ...and an answer, not a close


@pytest.mark.parametrize("group", ["X448", "secp521r1", "ffdhe2048"])
async def test_the_inbound_side_refuses_groups_outside_the_profile(mesh, pki, app, tmp_path, group):
    # TLS 1.3: the client offers only this group (its one key share). TLS 1.2 cannot be tested
    # alone this way: an ECDSA P-256 SVID needs P-256 among the client's groups there anyway.
    b = await mesh(config(app.port), pki.identity("/ns/b/sa/server"), rule_authorizer({CLIENT}))
    files = pki.write(tmp_path, "client", "/ns/a/sa/client")
    code, out = await _s_client(b.ports["inbound"], files, "-tls1_3", "-groups", group)
    assert code != 0
    assert "Cipher is (NONE)" in out  # no handshake: no group in common
    assert "HTTP/1.1" not in out
    assert app.seen == []


@pytest.mark.parametrize(
    ("version", "groups", "shown"),
    [
        ("-tls1_3", "X25519", "X25519"),
        ("-tls1_3", "P-256", "ECDH, prime256v1"),
        ("-tls1_3", "P-384", "ECDH, secp384r1"),
        ("-tls1_2", "X448:X25519:P-256", "X25519"),
        ("-tls1_2", "secp521r1:P-256", "ECDH, prime256v1"),
    ],
)
async def test_the_inbound_side_accepts_the_profile_groups(mesh, pki, app, tmp_path, version, groups, shown):
    b = await mesh(config(app.port), pki.identity("/ns/b/sa/server"), rule_authorizer({CLIENT}))
    files = pki.write(tmp_path, "client", "/ns/a/sa/client")
    _, out = await _s_client(b.ports["inbound"], files, version, "-groups", groups)
    assert "HTTP/1.1 200" in out, out
    assert f"Server Temp Key: {shown}," in out


def _handshake(port: int, ctx: ssl.SSLContext) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw) as tls:
            tls.sendall(b"GET / HTTP/1.0\r\n\r\n")
            tls.recv(1)


@contextlib.asynccontextmanager
async def _s_server(pki, tmp_path, *args: str) -> AsyncIterator[int]:
    """``openssl s_server -www`` for one connection, with an SVID of the test PKI; yields its port."""
    files = pki.write(tmp_path, "server", "/ns/b/sa/server")
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        "openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", files["cert_file"], "-key", files["key_file"],
        "-cert_chain", files["cert_file"], "-CAfile", files["bundle_file"], "-Verify", "1", "-www", "-naccept", "1", *args,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        while b"ACCEPT" not in await asyncio.wait_for(proc.stdout.readline(), 10):
            pass
        yield port
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


@pytest.mark.parametrize(("group", "accepted"), [("X448", False), ("secp521r1", False), ("X25519", True), ("P-256", True), ("P-384", True)])
async def test_the_outbound_side_offers_only_the_profile_groups(pki, tmp_path, group, accepted):
    async with _s_server(pki, tmp_path, "-groups", group) as port:
        ctx = pki.identity("/ns/a/sa/client").client_context()
        if accepted:
            await asyncio.to_thread(_handshake, port, ctx)
        else:
            with pytest.raises(ssl.SSLError):
                await asyncio.to_thread(_handshake, port, ctx)


async def test_the_sidecar_contexts_release_idle_record_buffers_and_carry_requests(mesh, pki, app):
    b = await mesh(config(app.port), pki.identity("/ns/b/sa/server"), rule_authorizer({CLIENT}))
    contexts = (b.identity.server_context(), b.identity.client_context(), b.identity.client_context_h2())
    assert all(ctx is not None and releases_idle_buffers(ctx) for ctx in contexts)
    answer, _, _ = await asyncio.to_thread(_call, b.ports["inbound"], pki.identity("/ns/a/sa/client").client_context())
    assert answer.startswith(b"HTTP/1.1 200")
