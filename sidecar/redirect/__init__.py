"""Traffic capture for the init container (`trustmesh redirect`) and the sidecar's view of it.

The init container puts the capture in force with iptables, nftables or
eBPF (:mod:`sidecar.redirect.capture`); the sidecar asks each accepted
connection where it was going with :func:`original_destination`.
"""

from sidecar.redirect.config import RedirectConfig
from sidecar.redirect.errors import RedirectConfigError, RedirectError
from sidecar.redirect.origdst import original_destination

__all__ = ["RedirectConfig", "RedirectConfigError", "RedirectError", "original_destination"]
