"""Helpers for the injector's unit tests.

Pods come from ``tests.support.k8s_admission_double`` (real API shapes);
results are checked against the Kubernetes 1.36 OpenAPI schema with
kubernetes-validate, which ships its schemas and reads nothing from the network.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable

import jsonpatch
import kubernetes_validate
import pytest
import yaml

from injector.annotations import SIDECAR_CONFIG_ANNOTATION
from injector.config import InjectorConfig
from injector.inject import inject_pod, pod_patch
from sidecar.config import parse_config as parse_sidecar_config
from sidecar.redirect import cli as redirect_cli
from tests.support.k8s_defaults import apiserver_defaulted

K8S_VERSION = "1.36"


def assert_valid(obj: dict) -> None:
    """Fail unless ``obj`` is valid against the strict Kubernetes schema."""
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as err:
        pytest.fail(f"{obj.get('kind')} is not valid Kubernetes: {err.message} at {list(err.path)}")


@pytest.fixture
def config() -> InjectorConfig:
    return InjectorConfig(trust_domain="example.org")


@pytest.fixture(name="assert_valid")
def _assert_valid() -> Callable[[dict], None]:
    return assert_valid


@pytest.fixture
def injected() -> Callable[[dict, InjectorConfig], dict]:
    """Inject, apply the JSON Patch to the original, check it equals the builder's pod and is valid."""

    def run(pod: dict, config: InjectorConfig) -> dict:
        original = copy.deepcopy(pod)
        result = inject_pod(pod, config)
        assert pod == original, "the builder must not modify its argument"
        patched = jsonpatch.apply_patch(pod, pod_patch(pod, result))
        assert patched == result.pod
        assert_valid(patched)
        if result.injected:
            redirect_config_of(patched)  # what the injector admits, trustmesh-init and the sidecar accept
            sidecar_config_of(patched)
            # Reinvocation on the pod as the API server leaves it changes nothing.
            stored = apiserver_defaulted(patched)
            assert pod_patch(stored, inject_pod(stored, config)) == []
        return patched

    return run


def redirect_config_of(pod: dict):
    """The init container's arguments, read by `trustmesh redirect` itself (raises what it would)."""
    init = next(c for c in pod["spec"]["initContainers"] if c["name"] == "trustmesh-init")
    parser = argparse.ArgumentParser()
    redirect_cli.register(parser.add_subparsers())
    return redirect_cli.config_from_args(parser.parse_args(init["args"]))


def sidecar_config_of(pod: dict):
    """The sidecar's config file as the injector rendered it, read by the sidecar's own parser."""
    text = pod["metadata"]["annotations"][SIDECAR_CONFIG_ANNOTATION]
    return parse_sidecar_config(yaml.safe_load(text))


def by_name(items: list[dict], name: str) -> dict:
    return next(item for item in items if item["name"] == name)


@pytest.fixture(name="by_name")
def _by_name() -> Callable[[list[dict], str], dict]:
    return by_name
