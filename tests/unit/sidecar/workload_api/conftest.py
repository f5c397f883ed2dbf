"""Fixtures for the Workload API server tests: a short socket path, a trust domain."""

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.integration.workload_api.support import Domain


@pytest.fixture
def sock_dir():
    # tmp_path can exceed the 107-byte limit of a Unix socket path; keep it short.
    path = Path(tempfile.mkdtemp(prefix="wlapi-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def domain():
    return Domain("example.org")


@pytest.fixture(scope="module")
def other_domain():
    return Domain("other.org")
