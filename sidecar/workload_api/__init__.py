"""The SPIFFE Workload API served by the sidecar to the apps of its pod.

:func:`serve_workload_api` runs the standard ``SpiffeWorkloadAPI`` gRPC
service (with server reflection) on the pod's Unix socket, fed by an
:class:`IdentitySource`.
"""

from sidecar.workload_api.errors import WorkloadApiServerError
from sidecar.workload_api.jwt_cache import JwtSvidCache
from sidecar.workload_api.server import (
    DEFAULT_SOCKET_MODE,
    DEFAULT_SOCKET_PATH,
    WorkloadApiServer,
    serve_workload_api,
)
from sidecar.workload_api.service import WorkloadApiService
from sidecar.workload_api.source import IdentitySource, JwtMinter, MemoryIdentitySource

__all__ = [
    "DEFAULT_SOCKET_MODE",
    "DEFAULT_SOCKET_PATH",
    "IdentitySource",
    "JwtMinter",
    "JwtSvidCache",
    "MemoryIdentitySource",
    "WorkloadApiServer",
    "WorkloadApiServerError",
    "WorkloadApiService",
    "serve_workload_api",
]
