"""A real Workload API server (the sidecar's) on a short Unix socket path."""

import shutil
import tempfile
from pathlib import Path

import pytest

from sidecar.workload_api import serve_workload_api
from tests.integration.workload_api.support import Domain, memory_source


@pytest.fixture(scope="module")
def domain():
    return Domain("example.org")


@pytest.fixture(scope="module")
def partner():
    return Domain("partner.org")


@pytest.fixture
def sock_dir():
    path = Path(tempfile.mkdtemp(prefix="wlapi-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def served(domain, partner, sock_dir):
    """(identity source, endpoint address) of a running server for .../sa/web."""
    source = memory_source(domain, "/ns/prod/sa/web", partner)
    async with serve_workload_api(source, sock_dir / "agent.sock") as server:
        yield source, server.address
