"""Shared fixtures for the injector's integration tests (schema checks with kubernetes-validate)."""

from __future__ import annotations

from collections.abc import Callable

import kubernetes_validate
import pytest

K8S_VERSION = "1.36"


def assert_valid(obj: dict) -> None:
    """Fail unless ``obj`` is valid against the strict Kubernetes 1.36 schema (shipped offline)."""
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as err:
        pytest.fail(f"{obj.get('kind')} {obj.get('metadata', {}).get('name')} is not valid Kubernetes: "
                    f"{err.message} at {list(err.path)}")


@pytest.fixture(name="assert_valid")
def _assert_valid() -> Callable[[dict], None]:
    return assert_valid
