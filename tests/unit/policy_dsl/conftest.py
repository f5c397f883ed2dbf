"""Helpers for the policy language tests: build attribute dicts and one-rule policies."""

from __future__ import annotations

import pytest

from policy_dsl import load_policy


def one_rule(condition: str, effect: str = "allow", selector: str = "all", extra: str = "") -> str:
    """Policy text with a single rule named "r" in policy "p"."""
    return f'{extra}\npolicy "p" protects {selector} {{\n  {effect} "r" {{ {condition} }}\n}}\n'


def request(**sections) -> dict:
    """A request's attributes; sections override a plain authenticated HTTP GET."""
    attrs = {
        "source": {
            "id": "spiffe://prod.example/ns/prod/sa/web/app/web",
            "trust_domain": "prod.example",
            "path": "/ns/prod/sa/web/app/web",
            "attrs": {"ns": "prod", "sa": "web", "app": "web"},
            "authenticated": True,
            "ip": "10.1.2.3",
        },
        "destination": {"id": "spiffe://prod.example/ns/prod/sa/api", "attrs": {"ns": "prod", "sa": "api"}, "port": 8080},
        "request": {"method": "GET", "path": "/v1/items", "host": "api", "query": {}, "headers": {"x-team": "blue"}},
        "context": {"protocol": "http"},
    }
    for name, values in sections.items():
        if values is None:
            attrs.pop(name, None)
        else:
            attrs[name] = {**attrs.get(name, {}), **values}
    return attrs


@pytest.fixture
def allowed():
    """allowed(condition, attrs) -> bool for a single allow rule."""

    def run(condition: str, attrs: dict) -> bool:
        return load_policy(one_rule(condition)).evaluate(attrs).allowed

    return run
