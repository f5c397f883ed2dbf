"""`trustmesh sidecar run` as real processes: the `ready` line only once the SVID is there,
the log level from flag / TRUSTMESH_LOG_LEVEL / config, app probes from TRUSTMESH_APP_PROBERS,
and a port in use ending in one line. A real CA service runs in this process."""

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess

import aiohttp
import pytest
import yaml

from sdk.errors import UsageError
from sidecar.run_cli import resolve_log_level
from tests.integration.sidecar.helpers import PYTHON, ROOT, EchoApp, Pki, sidecar_config, start_ca

TOKEN = "token-web-0123456789abcdef"
WEB = "spiffe://example.org/ns/prod/sa/web"


async def _spawn(tmp_path, name, config, env=(), args=()):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    stderr = tmp_path / f"{name}.stderr"
    with open(stderr, "wb") as err:  # noqa: ASYNC230 - a local file, before the child starts
        proc = await asyncio.create_subprocess_exec(
            PYTHON, "-m", "trustmesh", "sidecar", "run", "--config", str(path), *args,
            stdout=subprocess.PIPE, stderr=err, cwd=str(ROOT),
            env={**os.environ, "PYTHONPATH": str(ROOT), **dict(env)},
        )
    return proc, stderr


async def _event(proc, timeout):
    line = await asyncio.wait_for(proc.stdout.readline(), timeout)
    assert line, "the sidecar exited"
    return json.loads(line)


async def _get(url):
    async with aiohttp.ClientSession() as s:
        async with s.get(url) as r:
            return r.status, await r.text()


async def test_ready_line_waits_for_the_svid_and_the_log_level_applies(tmp_path):
    ca = await start_ca(tmp_path, {TOKEN: WEB})
    app = await EchoApp().start()
    token_file = tmp_path / "token"  # not there yet: the CA cannot be asked
    cfg = sidecar_config(
        ca={"address": f"127.0.0.1:{ca.grpc_port}", "bundle_file": str(tmp_path / "ca-bundle.pem"),
            "token_file": str(token_file)},
        inbound={"app_port": app.port}, access_log="off", log_level="debug",
    )
    # timeoutSeconds: the probe's default 1 s is a bet on the machine's speed, not what is tested here
    probers = {"/app-health/web/readyz": {"httpGet": {"path": "/ready", "port": app.port, "scheme": "HTTP",
                                                      "httpHeaders": [{"name": "X-Probe", "value": "kubelet"}]},
                                          "timeoutSeconds": 30}}
    # quiet: the environment beats the config's debug; loud: the flag beats the environment
    quiet, quiet_err = await _spawn(tmp_path, "quiet", cfg, {"TRUSTMESH_LOG_LEVEL": "error",
                                                              "TRUSTMESH_APP_PROBERS": json.dumps(probers)})
    loud, loud_err = await _spawn(tmp_path, "loud", cfg, {"TRUSTMESH_LOG_LEVEL": "error"}, ["--log-level", "warning"])
    try:
        listening = await _event(quiet, 60)  # process start-up: bounds a slow machine
        assert listening["event"] == "listening"
        assert (await _event(loud, 60))["event"] == "listening"
        health = f"http://127.0.0.1:{listening['ports']['health']}"
        assert await _get(f"{health}/healthz/ready") == (503, "no valid SVID\n")
        status, _ = await _get(f"{health}/app-health/web/readyz")  # app probes do not wait for the SVID
        assert status == 200 and app.seen[-1]["path"] == "/ready" and app.seen[-1]["headers"]["x-probe"] == "kubelet"
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(quiet.stdout.readline(), 1.0)  # no "ready" without an SVID

        token_file.write_text(TOKEN)
        ready = await _event(quiet, 60)
        assert ready["event"] == "ready" and ready["spiffe_id"] == WEB
        assert (await _event(loud, 60))["event"] == "ready"
        assert await _get(f"{health}/healthz/ready") == (200, "ready\n")
    finally:
        for proc in (quiet, loud):
            proc.send_signal(signal.SIGTERM)
        codes = [await asyncio.wait_for(p.wait(), 60) for p in (quiet, loud)]
        await app.stop()
        await ca.stop(grace=0.5)
    assert codes == [0, 0]
    assert "SVID request failed" in loud_err.read_text()  # warnings shown at warning ...
    assert "SVID request failed" not in quiet_err.read_text()  # ... and not at error


@pytest.mark.parametrize("listener", ["inbound", "health"])
async def test_a_port_in_use_ends_in_one_line_naming_the_listener(tmp_path, listener):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        ident = Pki().write(tmp_path, "web", "/ns/prod/sa/web")
        section = {"inbound": {"port": port}} if listener == "inbound" else {"admin": {"health_port": port}}
        proc, stderr = await _spawn(tmp_path, "busy", sidecar_config(identity=ident, **section))
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        busy.close()
    assert proc.returncode == 1
    assert out == b""  # never claimed to be listening
    assert stderr.read_text().splitlines() == [
        f"trustmesh: {listener} listener: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


def test_check_reports_the_log_level_and_refuses_bad_environment(tmp_path):
    ident = Pki().write(tmp_path, "web", "/ns/prod/sa/web")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(sidecar_config(identity=ident, log_level="warning")))

    def check(**env):
        return subprocess.run(
            [PYTHON, "-m", "trustmesh", "sidecar", "run", "--config", str(path), "--check"],
            capture_output=True, text=True, cwd=str(ROOT), timeout=30, check=False,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        )

    done = check(TRUSTMESH_LOG_LEVEL="debug", TRUSTMESH_APP_PROBERS='{"/app-health/web/livez": {"tcpSocket": {"port": 8080}}}')
    assert done.returncode == 0 and "log level debug" in done.stdout and "1 app probe(s)" in done.stdout
    done = check(TRUSTMESH_LOG_LEVEL="loud")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "trustmesh: error: TRUSTMESH_LOG_LEVEL: must be one of trace, debug, info, warning, error, got 'loud'"
    )
    done = check(TRUSTMESH_APP_PROBERS='{"/app-health/web/livez": {"tcpSocket": {"port": 0}}}')
    assert done.returncode == 2 and "TRUSTMESH_APP_PROBERS[/app-health/web/livez].tcpSocket.port" in done.stderr


def test_log_level_precedence():
    assert resolve_log_level("error", "debug", "info") == ("error", logging.ERROR)
    assert resolve_log_level(None, "DEBUG", "error") == ("debug", logging.DEBUG)
    assert resolve_log_level(None, "", "error") == ("error", logging.ERROR)  # an empty variable is unset
    assert resolve_log_level(None, None, None) == ("info", logging.INFO)
    assert resolve_log_level(None, "trace", None)[1] < logging.DEBUG
    with pytest.raises(UsageError, match="--log-level: must be one of"):
        resolve_log_level("verbose", None, None)
