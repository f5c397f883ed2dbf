"""The flow map page in a real headless browser (Debian's chromium + chromedriver, selenium),
built from the demo's own access logs; and ``flows serve`` following a growing log.

The screenshot is kept as a test artifact in ``test-artifacts/flows.png`` (or
``$TRUSTMESH_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
TRUSTMESH = [sys.executable, "-m", "trustmesh"]


@pytest.fixture(scope="module")
def demo_logs(tmp_path_factory):
    base = tmp_path_factory.mktemp("flows")
    logs, run_tmp = base / "logs", base / "run"
    run_tmp.mkdir()
    result = subprocess.run([*TRUSTMESH, "demo", "--log-dir", str(logs)], capture_output=True, text=True, timeout=90,
                            env={**os.environ, "TMPDIR": str(run_tmp)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"trustmesh flows html {logs}/sidecar-*-access.jsonl -o flows.html" in result.stdout
    return sorted(logs.glob("sidecar-*-access.jsonl"))


def _browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("chromium and chromium-driver are not installed (scripts/setup installs them)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def test_the_page_shows_workloads_flows_filters_and_why_offline(demo_logs, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    page = tmp_path / "flows.html"
    built = subprocess.run([*TRUSTMESH, "flows", "html", *map(str, demo_logs), "-o", str(page)], capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    html = page.read_text()
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html  # nothing fetched
    browser = _browser()
    try:
        browser.get(page.as_uri())
        nodes = {e.get_attribute("data-node") for e in browser.find_elements(By.CSS_SELECTOR, "g.node")}
        assert {"demo/web", "demo/billing", "demo/config", "demo/reports", "demo/analytics"} <= nodes
        assert "(outside the mesh)/unauthenticated" in nodes  # the plaintext caller to reports
        groups = {e.get_attribute("data-namespace") for e in browser.find_elements(By.CSS_SELECTOR, "g.group")}
        assert "demo" in groups
        edges = {e.get_attribute("data-edge"): e.get_attribute("data-verdict") for e in browser.find_elements(By.CSS_SELECTOR, "path.edge")}
        assert edges["demo/web -> demo/config"] == "deny"  # an allowed and a denied fetch: red wins
        assert edges["demo/web -> demo/billing"] == "allow"
        summary = browser.find_element(By.ID, "summary").text
        assert summary.startswith("10 requests (4 allowed, 6 denied, 0 would deny)")

        Select(browser.find_element(By.ID, "f-verdict")).select_by_value("allow")
        allowed = {e.get_attribute("data-edge"): e.get_attribute("data-verdict") for e in browser.find_elements(By.CSS_SELECTOR, "path.edge")}
        assert set(allowed.values()) == {"allow"} and "demo/analytics -> demo/reports" in allowed
        assert "(outside the mesh)/unauthenticated -> demo/reports" not in allowed
        Select(browser.find_element(By.ID, "f-verdict")).select_by_value("")

        browser.find_element(By.CSS_SELECTOR, '[data-edge-label="demo/web -> demo/config"]').click()
        table = browser.find_element(By.ID, "requests").text
        assert "config/fetch-own-config" in table  # the deciding rule of the allowed fetch
        assert "request.json.appname == source.attrs.app is false" in table  # why the other was denied
        assert "config/no-admin-api" in table

        artifacts = Path(os.environ.get("TRUSTMESH_TEST_ARTIFACTS", ROOT / "test-artifacts"))
        artifacts.mkdir(parents=True, exist_ok=True)
        shot = artifacts / "flows.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        browser.quit()


def test_serve_follows_a_growing_log(demo_logs, tmp_path):
    log = tmp_path / "access.jsonl"
    lines = (demo_logs[2]).read_text().splitlines(keepends=True)  # config's sidecar
    log.write_text(lines[0])
    server = subprocess.Popen([*TRUSTMESH, "flows", "serve", str(log), "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        first = server.stdout.readline()
        assert first.startswith("serving the flow map on http://127.0.0.1:"), first
        url = first.split(" on ", 1)[1].split(" ", 1)[0]

        def requests() -> int:
            with urllib.request.urlopen(url + "data.json", timeout=10) as response:
                return len(json.load(response)["requests"])

        assert requests() == 1
        with log.open("a") as handle:
            handle.writelines(lines[1:])
            handle.write('{"v":1,"time":"2026-12-05T10:00:00Z","decision":"allow"')  # a line being written
        assert requests() == len([x for x in lines if '"direction":"inbound"' in x])
        with urllib.request.urlopen(url, timeout=10) as response:
            assert b"setInterval" in response.read()  # the served page polls data.json
    finally:
        server.terminate()
        server.wait(timeout=10)
