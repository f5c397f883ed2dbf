"""TLS settings every trustmesh mutual-TLS context shares that Python's ``ssl`` cannot set itself.

* **Key-exchange groups**: X25519, P-256 and P-384 only, in that order of preference (Mozilla's
  "intermediate" profile). OpenSSL 3 also offers X448, P-521 and the FFDHE groups by default.
* **No session resumption**: no TLS 1.3 tickets, no TLS 1.2 tickets, no TLS 1.2 session-ID
  cache. A resumed session carries no peer chain to verify again, so trustmesh could not check
  the peer against the *current* bundles (a removed CA must still force refusal); a client that
  offers an old session simply gets a full handshake. Envoy Gateway and rpxy turn resumption off
  for mutual TLS for the same reason.
* **Record buffers released when idle** (``SSL_MODE_RELEASE_BUFFERS``, as nginx sets): an idle
  connection gives back its 16 KB+ read and write buffers. CPython's ``ssl`` sets it on every
  context today; the profile sets it itself and checks it, so an idle mesh connection's cost does
  not hang on that.

Python 3.11's ``ssl`` has no ``set_groups``, no session-cache switch and no mode setter, so all are set with
``SSL_CTX_ctrl`` on the context's own ``SSL_CTX``, called through the very libssl the ``_ssl``
module is linked with. The pointer is read from the CPython object and checked against
``SSL_CTX_get_options`` before it is used; anything unexpected raises :class:`TlsSetupError`
instead of leaving a context with the wider defaults.
"""

from __future__ import annotations

import ctypes
import functools
import ssl
import sys

from sdk.errors import TlsSetupError

__all__ = ["GROUPS", "apply_mesh_profile", "disable_resumption", "release_idle_buffers", "releases_idle_buffers", "restrict_groups"]

GROUPS = ("X25519", "P-256", "P-384")

_SSL_CTRL_MODE = 33  # SSL_CTX_set_mode (larg 0: SSL_CTX_get_mode)
_SSL_CTRL_SET_SESS_CACHE_MODE = 44
_SSL_CTRL_SET_GROUPS_LIST = 92
_SSL_SESS_CACHE_OFF = 0
_SSL_MODE_RELEASE_BUFFERS = 0x10


def apply_mesh_profile(ctx: ssl.SSLContext) -> ssl.SSLContext:
    """Restrict ``ctx`` to :data:`GROUPS`, turn session resumption off and release idle
    connections' record buffers; returns ``ctx``."""
    restrict_groups(ctx)
    disable_resumption(ctx)
    release_idle_buffers(ctx)
    return ctx


def restrict_groups(ctx: ssl.SSLContext, groups: tuple[str, ...] = GROUPS) -> None:
    """Offer and accept only ``groups`` for the key exchange (TLS 1.2 ECDHE and TLS 1.3)."""
    ctrl, _ = _libssl()
    if ctrl(_ssl_ctx(ctx), _SSL_CTRL_SET_GROUPS_LIST, 0, ":".join(groups).encode("ascii")) != 1:
        raise TlsSetupError(f"OpenSSL refused the key-exchange groups {':'.join(groups)}")


def disable_resumption(ctx: ssl.SSLContext) -> None:
    """Issue no session tickets and keep no session cache: every handshake is a full one."""
    ctx.options |= ssl.OP_NO_TICKET
    if ctx.protocol == ssl.PROTOCOL_TLS_SERVER:
        ctx.num_tickets = 0  # TLS 1.3 (OP_NO_TICKET alone switches to stateful tickets there)
    ctrl, _ = _libssl()
    ctrl(_ssl_ctx(ctx), _SSL_CTRL_SET_SESS_CACHE_MODE, _SSL_SESS_CACHE_OFF, None)  # returns the old mode


def release_idle_buffers(ctx: ssl.SSLContext) -> None:
    """Free each connection's record buffers whenever it has nothing buffered (``SSL_MODE_RELEASE_BUFFERS``)."""
    ctrl, _ = _libssl()
    if not ctrl(_ssl_ctx(ctx), _SSL_CTRL_MODE, _SSL_MODE_RELEASE_BUFFERS, None) & _SSL_MODE_RELEASE_BUFFERS:
        raise TlsSetupError("OpenSSL did not keep SSL_MODE_RELEASE_BUFFERS")


def releases_idle_buffers(ctx: ssl.SSLContext) -> bool:
    """Whether connections made with ``ctx`` release their record buffers when idle."""
    ctrl, _ = _libssl()
    return bool(ctrl(_ssl_ctx(ctx), _SSL_CTRL_MODE, 0, None) & _SSL_MODE_RELEASE_BUFFERS)


@functools.cache
def _libssl() -> tuple[ctypes._CFuncPtr, ctypes._CFuncPtr]:  # type: ignore[name-defined]
    """``SSL_CTX_ctrl`` and ``SSL_CTX_get_options`` of the libssl behind the ``ssl`` module."""
    if sys.implementation.name != "cpython":
        raise TlsSetupError(f"setting TLS groups needs CPython, not {sys.implementation.name}")
    try:
        # symbols resolve through the libssl the extension is linked with; a _ssl built into the
        # interpreter (no __file__) has OpenSSL in the executable's own global scope
        lib = ctypes.CDLL(getattr(ssl._ssl, "__file__", None))  # type: ignore[attr-defined]
        ctrl, get_options = lib.SSL_CTX_ctrl, lib.SSL_CTX_get_options
    except (OSError, AttributeError) as err:
        raise TlsSetupError(f"cannot reach the libssl of the ssl module: {err}") from err
    ctrl.restype, ctrl.argtypes = ctypes.c_long, [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_char_p]
    get_options.restype, get_options.argtypes = ctypes.c_uint64, [ctypes.c_void_p]
    return ctrl, get_options


def _ssl_ctx(ctx: ssl.SSLContext) -> int:
    """The ``SSL_CTX *`` of ``ctx``: CPython's ``PySSLContext`` holds it right after the object
    header. Checked by asking OpenSSL for that context's options, which must equal ``ctx.options``."""
    if not isinstance(ctx, ssl.SSLContext):
        raise TlsSetupError(f"expected an ssl.SSLContext, got {type(ctx).__name__}")
    pointer = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    _, get_options = _libssl()
    if not pointer or get_options(pointer) != int(ctx.options):
        raise TlsSetupError("cannot find the OpenSSL context behind this ssl.SSLContext")
    return pointer
