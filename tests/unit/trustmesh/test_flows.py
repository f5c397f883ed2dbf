"""The flow page's data and HTML (pure parts of ``trustmesh flows``)."""

from __future__ import annotations

import json
import re

from trustmesh.flows.model import Flows
from trustmesh.flows.page import build_page

WEB = "spiffe://d.example/ns/shop/app/web"


def _line(**fields) -> str:
    record = {"v": 1, "time": "2026-12-05T10:00:00Z", "direction": "inbound", "decision": "allow", "method": "GET",
              "path": "/x", "status": 200, "policy": "p", "rule": "r",
              "attrs": {"source.id": WEB, "destination.id": "spiffe://d.example/ns/shop/app/db"}}
    record.update(fields)
    return json.dumps(record)


def test_requests_carry_verdict_rule_and_why_and_bad_lines_are_counted():
    flows = Flows()
    flows.add_line(_line(), "a.log", 1)
    flows.add_line(_line(audit=[{"policy": "p", "rule": "(default)", "would": "deny"}], rule=None), "a.log", 2)
    flows.add_line(_line(decision="deny", status=403, rule=None, explain={"policies": ["p"], "candidates": [
        {"rule": "p/r", "condition": 'request.path == "/y"', "result": "false", "values": {"request.path": "/x"}}]}), "a.log", 3)
    flows.add_line(_line(direction="outbound", decision="forward"), "a.log", 4)
    flows.add_line('{"v":1,"time":"2026', "a.log", 5)
    data = flows.data()
    assert [(r["verdict"], r["rule"]) for r in data["requests"]] == [("allow", "p/r"), ("would-deny", "(default)"), ("deny", "(default)")]
    assert data["requests"][2]["why"] == "p/r: request.path == \"/y\" is false (request.path = '/x')"
    assert data["requests"][1]["audit"] == ["p/(default): deny"]
    assert data["badLines"] == 1 and data["errors"][0].startswith("a.log:5: not JSON")


def test_the_page_is_self_contained_and_data_cannot_close_its_script():
    flows = Flows()
    flows.add_line(_line(path="/</script><script>alert(1)</script>"), "a.log", 1)
    page = build_page(flows.data())
    assert page.count("</script>") == 2  # the data block's and the code's, nothing from the data
    assert not re.search(r'<(script|link|img)[^>]+(src|href)=', page)  # no external asset
    data = page.split('<script id="flow-data" type="application/json">', 1)[1].split("</script>", 1)[0]
    assert json.loads(data)["requests"][0]["path"] == "/</script><script>alert(1)</script>"
    assert "const LIVE = false;" in page and "const LIVE = true;" in build_page(flows.data(), live=True)
