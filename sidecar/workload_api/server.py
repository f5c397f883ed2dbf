"""The Workload API server: gRPC on the pod's Unix socket, with reflection.

Use it as an async context manager::

    async with serve_workload_api(source, "/run/trustmesh/sockets/agent.sock"):
        ...  # apps in the pod can now reach the SPIFFE Workload API

or keep a :class:`WorkloadApiServer` and call ``start()`` / ``stop()``.
The socket lives on the emptyDir volume the sidecar shares with the app
containers of its pod, so the volume is the access boundary; the socket is
made connectable by any uid in those containers (mode 0666 by default) since
app containers may run as any user. A stale socket from an earlier run is
replaced; a live one, or any other kind of file at the path, is an error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import grpc
from grpc_reflection.v1alpha import reflection

from sdk.proto import workload as pb
from sidecar.workload_api.errors import WorkloadApiServerError
from sidecar.workload_api.service import WorkloadApiService, generic_handler
from sidecar.workload_api.source import IdentitySource

__all__ = ["DEFAULT_SOCKET_PATH", "DEFAULT_SOCKET_MODE", "WorkloadApiServer", "serve_workload_api"]

log = logging.getLogger(__name__)

DEFAULT_SOCKET_PATH = "/run/trustmesh/sockets/agent.sock"
DEFAULT_SOCKET_MODE = 0o666
_MAX_UNIX_PATH = 107  # sun_path is 108 bytes including the terminating NUL


class WorkloadApiServer:
    """The SPIFFE Workload API (plus gRPC reflection) on one Unix socket."""

    def __init__(
        self,
        source: IdentitySource,
        socket_path: str | os.PathLike[str] = DEFAULT_SOCKET_PATH,
        *,
        socket_mode: int = DEFAULT_SOCKET_MODE,
        jwt_ttl: timedelta | None = None,
        grace: float = 1.0,
    ) -> None:
        if not isinstance(socket_mode, int) or not 0 <= socket_mode <= 0o777:
            raise WorkloadApiServerError(f"socket mode must be between 0 and 0o777, got {socket_mode!r}")
        self.socket_path = Path(socket_path)
        self.socket_mode = socket_mode
        self._service = WorkloadApiService(source, jwt_ttl=jwt_ttl)
        self._grace = grace
        self._server: grpc.aio.Server | None = None
        self._inode: int | None = None

    @property
    def address(self) -> str:
        """The endpoint as a ``SPIFFE_ENDPOINT_SOCKET`` value (``unix:///...``)."""
        return f"unix://{self.socket_path}"

    async def start(self) -> None:
        """Bind the socket and start serving; raises :class:`WorkloadApiServerError`."""
        if self._server is not None:
            raise WorkloadApiServerError("the Workload API server is already running")
        path = self.socket_path
        _check_path(path)
        _prepare_socket_path(path)
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((generic_handler(self._service),))
        reflection.enable_server_reflection(
            (pb.SERVICE_NAME, reflection.SERVICE_NAME), server, pool=pb.POOL
        )
        try:
            server.add_insecure_port(f"unix:{path}")
        except RuntimeError as err:
            raise WorkloadApiServerError(f"cannot listen on {path}: {err}") from err
        await server.start()
        try:
            os.chmod(path, self.socket_mode)
            self._inode = path.stat().st_ino
        except OSError as err:
            await server.stop(None)
            raise WorkloadApiServerError(f"cannot set the mode of {path}: {err}") from err
        self._server = server
        log.info("workload API listening on %s (mode %o)", path, self.socket_mode)

    async def stop(self) -> None:
        """Stop serving (open streams get ``grace`` seconds) and remove the socket."""
        server, self._server = self._server, None
        if server is None:
            return
        await server.stop(self._grace)
        with contextlib.suppress(OSError):
            if self._inode is not None and self.socket_path.stat().st_ino == self._inode:
                self.socket_path.unlink()
        self._inode = None

    async def __aenter__(self) -> WorkloadApiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


@contextlib.asynccontextmanager
async def serve_workload_api(
    source: IdentitySource,
    socket_path: str | os.PathLike[str] = DEFAULT_SOCKET_PATH,
    *,
    socket_mode: int = DEFAULT_SOCKET_MODE,
    jwt_ttl: timedelta | None = None,
    grace: float = 1.0,
) -> AsyncIterator[WorkloadApiServer]:
    """Serve the Workload API from ``source`` on ``socket_path`` for the block's duration.

    ``jwt_ttl`` is passed to :meth:`IdentitySource.mint_jwt_svid` (``None``:
    the source's default); ``grace`` is how long open streams get on stop.
    """
    server = WorkloadApiServer(
        source, socket_path, socket_mode=socket_mode, jwt_ttl=jwt_ttl, grace=grace
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def _check_path(path: Path) -> None:
    if not path.is_absolute():
        raise WorkloadApiServerError(f"socket path must be absolute: {path}")
    if len(os.fsencode(path)) > _MAX_UNIX_PATH:
        raise WorkloadApiServerError(
            f"socket path is {len(os.fsencode(path))} bytes, longer than the "
            f"{_MAX_UNIX_PATH} a Unix socket allows: {path}"
        )


def _prepare_socket_path(path: Path) -> None:
    """Create the parent directory if needed and clear a stale socket."""
    try:
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        st = path.lstat()
    except FileNotFoundError:
        return
    except OSError as err:
        raise WorkloadApiServerError(f"cannot prepare {path}: {err}") from err
    if not stat.S_ISSOCK(st.st_mode):
        raise WorkloadApiServerError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:  # nobody listening: a leftover from an earlier run
        path.unlink()
    else:
        raise WorkloadApiServerError(f"another server is already listening on {path}")
    finally:
        probe.close()
