"""The webhook server over real HTTPS, with a serving certificate issued by the trustmesh CA.

Real TLS (the client verifies the chain and the service DNS name as the API
server does), real aiohttp on 127.0.0.1. The Kubernetes API server is
replaced only where the ``caBundle`` patch needs one: by the in-process
double in ``tests/support/k8s_admission_double.py``, reached through the real
``kubernetes`` client.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from pathlib import Path

import aiohttp
import jsonpatch
import kubernetes.client
import pytest

from injector.cabundle import patch_ca_bundle, read_ca_bundle
from injector.config import InjectorConfig, ServerSettings
from injector.errors import CaBundlePatchError, ServingCertError
from injector.server import start_server
from tests.support.k8s_admission_double import (
    SERVICE_DNS,
    AdmissionRegistrationDouble,
    admission_review,
    client_context,
)
from tests.support.k8s_admission_double import pod as make_pod


@pytest.fixture
async def server(pki):
    cert_file, key_file, _ = pki
    config = InjectorConfig(
        trust_domain="example.org",
        server=ServerSettings(host="127.0.0.1", port=0, cert_file=str(cert_file), key_file=str(key_file),
                              max_body_bytes=64 * 1024, read_timeout_seconds=0.5),
    )
    running = await start_server(config, reload_interval=0)
    try:
        yield running
    finally:
        await running.close()


async def post(port: int, path: str, data: bytes, ca_file: Path) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"https://127.0.0.1:{port}{path}", data=data, ssl=client_context(ca_file),
                                server_hostname=SERVICE_DNS,
                                headers={"Content-Type": "application/json"}) as resp:
            return resp.status, await resp.json()


async def test_inject_over_https_returns_a_patch_that_validates(server, pki, assert_valid):
    pod = make_pod()
    review = admission_review(pod)
    status, body = await post(server.port, "/inject", json.dumps(review).encode(), pki[2])
    assert status == 200
    response = body["response"]
    assert response["uid"] == review["request"]["uid"] and response["allowed"] is True
    patched = jsonpatch.apply_patch(pod, json.loads(base64.b64decode(response["patch"])))
    assert "trustmesh-proxy" in [c["name"] for c in patched["spec"]["initContainers"]]
    assert_valid(patched)


async def test_a_refusal_over_https_is_an_admission_response(server, pki):
    review = admission_review(make_pod(securityContext={"runAsUser": 1337}))
    status, body = await post(server.port, "/inject", json.dumps(review).encode(), pki[2])
    assert status == 200 and body["response"]["allowed"] is False
    assert "uid 1337" in body["response"]["status"]["message"]


async def test_malformed_and_oversized_bodies_are_client_errors(server, pki):
    status, body = await post(server.port, "/inject", b"{", pki[2])
    assert status == 400 and "not JSON" in body["message"]
    status, body = await post(server.port, "/validate", b"x" * (64 * 1024 + 1), pki[2])
    assert status == 413 and "larger than" in body["message"]


async def test_a_body_that_never_arrives_gets_408(server, pki):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=client_context(pki[2]),
                                                   server_hostname=SERVICE_DNS)
    try:
        writer.write(b"POST /inject HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"kind\":")
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout=10)
        assert status_line.split()[1] == b"408"
    finally:
        writer.close()


async def test_a_client_that_does_not_trust_the_ca_cannot_connect(server, pki, issue_cert):
    other = issue_cert("other")
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await post(server.port, "/inject", b"{}", other[2])


async def test_a_renewed_certificate_is_served_after_reload(server, pki, issue_cert):
    new_cert, new_key, new_ca = issue_cert("renewed")
    cert_file, key_file, _ = pki
    cert_file.write_bytes(new_cert.read_bytes())
    key_file.write_bytes(new_key.read_bytes())
    later = cert_file.stat().st_mtime + 10  # as the kubelet's atomic Secret update would
    for path in (cert_file, key_file):
        os.utime(path, (later, later))
    assert server.reloader.check() is True
    status, _ = await post(server.port, "/inject", b"{", new_ca)
    assert status == 400


async def test_missing_certificate_files_fail_start_up(tmp_path):
    config = InjectorConfig(server=ServerSettings(host="127.0.0.1", port=0, cert_file=str(tmp_path / "no.crt"),
                                                  key_file=str(tmp_path / "no.key")))
    with pytest.raises(ServingCertError, match="not found"):
        await start_server(config)


async def test_ca_bundle_is_patched_into_the_shipped_webhook_configurations(pki, assert_valid, webhook_configurations):
    ca_pem = read_ca_bundle(str(pki[2]))
    double = AdmissionRegistrationDouble()
    configs = webhook_configurations
    for obj in configs:
        double.add(obj)
    url = await double.start()
    try:
        client = kubernetes.client.ApiClient(kubernetes.client.Configuration(host=url))
        names = {"mutating": [], "validating": []}
        for obj in configs:
            names["mutating" if obj["kind"].startswith("Mutating") else "validating"].append(obj["metadata"]["name"])
        patched = await asyncio.to_thread(patch_ca_bundle, client, ca_pem, names["mutating"], names["validating"])
        assert len(patched) == len(configs)
    finally:
        await double.stop()
    assert set(double.patch_content_types) == {"application/json-patch+json"}
    for stored in double.objects.values():
        for webhook in stored["webhooks"]:
            assert base64.b64decode(webhook["clientConfig"]["caBundle"]) == ca_pem
        assert_valid(stored)


async def test_ca_bundle_patch_of_a_missing_configuration_fails_start_up(pki):
    double = AdmissionRegistrationDouble()
    url = await double.start()
    try:
        client = kubernetes.client.ApiClient(kubernetes.client.Configuration(host=url))
        with pytest.raises(CaBundlePatchError, match="404"):
            await asyncio.to_thread(patch_ca_bundle, client, read_ca_bundle(str(pki[2])), ["trustmesh-injector"])
    finally:
        await double.stop()


def test_a_leaf_is_not_accepted_as_the_ca_bundle(pki):
    with pytest.raises(CaBundlePatchError, match="not a CA"):
        read_ca_bundle(str(pki[0]))


@pytest.mark.parametrize(("group", "accepted"), [("X25519", True), ("P-256", True), ("P-384", True),
                                                 ("X448", False), ("secp521r1", False)])
async def test_webhook_key_exchange_offers_only_the_mesh_groups(server, pki, group, accepted):
    """The apiserver's side of the webhook gets the same key-exchange groups as every trustmesh
    TLS endpoint; `openssl s_client` offering one group alone is the independent peer."""
    _, _, ca_file = pki
    proc = await asyncio.create_subprocess_exec(
        "openssl", "s_client", "-connect", f"127.0.0.1:{server.port}", "-tls1_3", "-groups", group,
        "-CAfile", str(ca_file), "-servername", SERVICE_DNS,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    text = out.decode("latin-1")
    assert ("\nNew, TLSv1.3" in text) is accepted, text
    assert ("Cipher is (NONE)" in text) is not accepted, text
