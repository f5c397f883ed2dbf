"""Adversarial review: requests crafted so the app would parse something other than what the
policy saw. Real sidecar (PERMISSIVE, so a raw plaintext socket can speak to it), real aiohttp app."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from sidecar.attributes import Verdict
from tests.unit.sidecar.conftest import config


def deny_admin(attrs: dict) -> Verdict:
    """Anything under /admin is denied; everything else is allowed."""
    if attrs["request"]["path"].startswith("/admin"):
        return Verdict(False, "no-admin")
    return Verdict(True, "public")


async def exchange(port: int, request: bytes) -> bytes:
    """Send raw bytes on a new connection; return the first response."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        return await exchange_on(reader, writer, request)
    finally:
        writer.close()


async def exchange_on(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bytes:
    """Send raw bytes; return the first response (head and Content-Length body)."""
    writer.write(request)
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = 0
    for line in head.lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    body = await asyncio.wait_for(reader.readexactly(length), 5)
    return head + body


async def test_connection_header_naming_content_length_cannot_smuggle_a_request(mesh, pki, app):
    # `Connection: content-length` asks a proxy to drop Content-Length: the app would then read
    # the body as a second request (GET /admin) that the policy never saw.
    b = await mesh(config(app.port, mode="PERMISSIVE"), pki.identity("/ns/b/sa/server"), deny_admin)
    smuggled = b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n"
    response = await exchange(
        b.ports["inbound"],
        b"POST /public HTTP/1.1\r\nHost: x\r\nConnection: content-length\r\nContent-Length: %d\r\n\r\n%b"
        % (len(smuggled), smuggled),
    )
    assert response.startswith(b"HTTP/1.1 200")
    assert [seen["path"] for seen in app.seen] == ["/public"]
    assert app.seen[0]["body"] == smuggled.decode()  # the app read it as the body it is


def deny_billing(attrs: dict) -> Verdict:
    """Only JSON requests for app "web" are allowed."""
    if attrs["request"].get("json", {}).get("appname") == "web":
        return Verdict(True, "web-only")
    return Verdict(False, None)


@pytest.mark.parametrize(
    "body",
    [
        b'{"appname": "billing", "appname": "web"}',  # Python keeps the last, many parsers the first
        b'{"x": {"appname": "a", "appname": "b"}, "appname": "web"}',  # nested
        b'{"AppName": "billing", "appname": "web"}',  # Go's encoding/json matches keys case-insensitively
    ],
)
async def test_json_body_with_duplicate_keys_is_refused(mesh, pki, app, body):
    b = await mesh(config(app.port, mode="PERMISSIVE"), pki.identity("/ns/b/sa/server"), deny_billing)
    response = await exchange(
        b.ports["inbound"],
        b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b"
        % (len(body), body),
    )
    assert response.startswith(b"HTTP/1.1 400")
    assert app.seen == []


async def test_json_body_without_duplicates_is_still_judged_by_its_fields(mesh, pki, app):
    b = await mesh(config(app.port, mode="PERMISSIVE"), pki.identity("/ns/b/sa/server"), deny_billing)
    for body, status in ((b'{"appname": "web", "n": {"appname": 1}}', b"200"), (b'{"appname": "billing"}', b"403")):
        response = await exchange(
            b.ports["inbound"],
            b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b"
            % (len(body), body),
        )
        assert response.startswith(b"HTTP/1.1 " + status)


@pytest.mark.parametrize(
    "header",
    [b"x_trustmesh_jwt_sub: spiffe://example.org/ns/prod/sa/admin", b"X_Forwarded_Client_Cert: By=x;URI=spiffe://example.org/admin"],
)
async def test_identity_header_spelled_with_underscores_is_refused(mesh, pki, app, header):
    # WSGI, Rack, PHP and other CGI-style servers expose `x_trustmesh_jwt_sub` and
    # `x-trustmesh-jwt-sub` as the same HTTP_X_TRUSTMESH_JWT_SUB: the caller would forge the
    # identity the sidecar vouches for.
    b = await mesh(config(app.port, mode="PERMISSIVE"), pki.identity("/ns/b/sa/server"), deny_admin)
    response = await exchange(b.ports["inbound"], b"GET /whoami HTTP/1.1\r\nHost: x\r\n%b\r\n\r\n" % header)
    assert response.startswith(b"HTTP/1.1 400")
    assert app.seen == []


async def test_ordinary_headers_with_underscores_still_pass(mesh, pki, app):
    b = await mesh(config(app.port, mode="PERMISSIVE"), pki.identity("/ns/b/sa/server"), deny_admin)
    response = await exchange(b.ports["inbound"], b"GET /x HTTP/1.1\r\nHost: x\r\nx_request_id: 7\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 200")
    assert app.seen[0]["headers"]["x_request_id"] == "7"


def deny_deletes_and_admin_host(attrs: dict) -> Verdict:
    """A deny-list policy: no DELETE, nothing for the admin virtual host; the rest is allowed."""
    req = attrs["request"]
    if req["method"] == "DELETE":
        return Verdict(False, "no-deletes")
    if req["host"] == "admin.internal":
        return Verdict(False, "no-admin-host")
    return Verdict(True, "public")


async def test_lower_case_method_is_refused(mesh, pki, app):
    # Django, Werkzeug (Flask) and others upper-case the method: `delete` would pass a rule
    # written for DELETE and then be served as one.
    b = await mesh(config(app.port, mode="PERMISSIVE"), pki.identity("/ns/b/sa/server"), deny_deletes_and_admin_host)
    response = await exchange(b.ports["inbound"], b"delete /orders/7 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 400")
    assert app.seen == []


async def test_repeated_host_is_refused_in_http_1_0_too(mesh, pki, app):
    # The policy would see "public, admin.internal"; a server that takes the last Host serves
    # the admin virtual host.
    b = await mesh(config(app.port, mode="PERMISSIVE"), pki.identity("/ns/b/sa/server"), deny_deletes_and_admin_host)
    response = await exchange(b.ports["inbound"], b"GET / HTTP/1.0\r\nHost: public\r\nHost: admin.internal\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 400")
    assert app.seen == []


async def test_a_repeated_header_reaches_the_app_as_the_one_value_the_policy_judged(mesh, pki):
    # The policy sees repeated lines joined ("admin, user"), so a rule denying `x-role == "admin"`
    # does not match; an app that reads the first line (Go's Header.Get, aiohttp's headers.get)
    # would then act on "admin". The app must get the one joined line the policy judged.
    judged: list[str | None] = []

    def deny_admin_role(attrs: dict) -> Verdict:
        role = attrs["request"]["headers"].get("x-role")
        judged.append(role)
        return Verdict(role != "admin", "roles")

    received: list[list[str]] = []

    async def handle(request: web.Request) -> web.Response:
        received.append(request.headers.getall("X-Role", []))
        return web.Response(text="ok")

    runner = web.ServerRunner(web.Server(handle), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        app_port = runner.addresses[0][1]
        b = await mesh(config(app_port, mode="PERMISSIVE"), pki.identity("/ns/b/sa/server"), deny_admin_role)
        response = await exchange(
            b.ports["inbound"], b"GET /accounts HTTP/1.1\r\nHost: x\r\nX-Role: admin\r\nX-Role: user\r\n\r\n"
        )
    finally:
        await runner.cleanup()
    assert response.startswith(b"HTTP/1.1 200")
    assert judged == ["admin, user"]
    assert received == [["admin, user"]]


async def test_a_header_sent_both_with_dashes_and_with_underscores_is_refused(mesh, pki, app):
    # CGI-style servers (WSGI, Rack, PHP) give `X-Role` and `X_Role` the same HTTP_X_ROLE name and
    # keep one of the two; the policy saw `x-role: user`.
    b = await mesh(config(app.port, mode="PERMISSIVE"), pki.identity("/ns/b/sa/server"), deny_admin)
    response = await exchange(b.ports["inbound"], b"GET /accounts HTTP/1.1\r\nHost: x\r\nX-Role: user\r\nX_Role: admin\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 400")
    assert app.seen == []


@pytest.mark.parametrize("host", [b"Admin.Internal", b"admin.internal."])
async def test_a_host_rule_is_not_passed_by_another_spelling_of_the_same_host(mesh, pki, app, host):
    # Host names are case-insensitive and a trailing dot names the same host: virtual hosting
    # in the app serves admin.internal for these; the policy must judge them as admin.internal.
    b = await mesh(config(app.port, mode="PERMISSIVE"), pki.identity("/ns/b/sa/server"), deny_deletes_and_admin_host)
    response = await exchange(b.ports["inbound"], b"GET / HTTP/1.1\r\nHost: %b\r\n\r\n" % host)
    assert response.startswith(b"HTTP/1.1 403")
    assert app.seen == []


async def test_a_semicolon_in_the_query_is_refused(mesh, pki, app):
    # Parameter cloaking (CVE-2021-23336): the policy reads user="x;user=admin", while servers
    # that also split on ';' (Rack 2, older Python and others) read user="admin".
    def deny_admin_user(attrs: dict) -> Verdict:
        return Verdict(attrs["request"]["query"].get("user") != "admin", "users")

    b = await mesh(config(app.port, mode="PERMISSIVE"), pki.identity("/ns/b/sa/server"), deny_admin_user)
    response = await exchange(b.ports["inbound"], b"GET /profile?user=x;user=admin HTTP/1.1\r\nHost: x\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 400")
    assert app.seen == []


def deny_internal_host(attrs: dict) -> Verdict:
    """`deny { request.host == "internal.example" }`; everything else is allowed."""
    if attrs["request"]["host"] == "internal.example":
        return Verdict(False, "no-internal")
    return Verdict(True, "public")


@pytest.mark.parametrize(
    "host", [b"internal.example:80", b"internal.example:443", b"internal.example.:80", b"INTERNAL.example:8080"]
)
async def test_a_port_suffix_does_not_walk_past_a_host_rule(mesh, pki, app, host):
    b = await mesh(config(app.port, mode="PERMISSIVE"), pki.identity("/ns/b/sa/server"), deny_internal_host)
    response = await exchange(b.ports["inbound"], b"GET / HTTP/1.1\r\nHost: %b\r\n\r\n" % host)
    assert response.startswith(b"HTTP/1.1 403")
    assert app.seen == []


async def test_the_policy_reads_the_port_as_request_port(mesh, pki, app):
    ports: list[int] = []

    def record(attrs: dict) -> Verdict:
        ports.append(attrs["request"]["port"])
        return Verdict(attrs["request"]["host"] == "[::1]", "ipv6-only")

    b = await mesh(config(app.port, mode="PERMISSIVE"), pki.identity("/ns/b/sa/server"), record)
    for host, status in ((b"[::1]:8080", b"200"), (b"[0::1]", b"200"), (b"public.example:8443", b"403")):
        response = await exchange(b.ports["inbound"], b"GET / HTTP/1.1\r\nHost: %b\r\n\r\n" % host)
        assert response.startswith(b"HTTP/1.1 " + status)
    assert ports == [8080, 80, 8443]
    assert [seen["headers"]["host"] for seen in app.seen] == ["[::1]:8080", "[0::1]"]  # forwarded as sent


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET / HTTP/1.1\r\nHost: user@internal.example\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: internal.example:\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: internal%2Eexample\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: public.example, internal.example\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: public.example\r\nHost: internal.example\r\n\r\n",
        b"GET http://internal.example/ HTTP/1.1\r\nHost: public.example\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: ::1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: 2130706433\r\n\r\n",
    ],
    ids=["userinfo", "empty-port", "percent", "comma-list", "duplicate", "absolute-form", "bare-ipv6", "numeric"],
)
async def test_an_ambiguous_host_is_refused(mesh, pki, app, request_bytes):
    b = await mesh(config(app.port, mode="PERMISSIVE"), pki.identity("/ns/b/sa/server"), deny_internal_host)
    response = await exchange(b.ports["inbound"], request_bytes)
    assert response.startswith(b"HTTP/1.1 400")
    assert app.seen == []
