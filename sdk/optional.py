"""Optional dependencies: the Kubernetes client is not part of every installation.

The sidecar and its init container never talk to the Kubernetes API, so the
sidecar image ships without the ``kubernetes`` package (128 MB). The CA's
Kubernetes authentication and the injector's ``caBundle`` patching need it;
they call :func:`require_kubernetes` first, which turns a missing package into
one line that says what to install::

    pip install 'trustmesh[kubernetes]'
"""

from __future__ import annotations

import importlib.util

from sdk.errors import MissingDependencyError

__all__ = ["KUBERNETES_EXTRA", "require_kubernetes"]

KUBERNETES_EXTRA = "kubernetes"


def require_kubernetes(purpose: str) -> None:
    """Raise :class:`MissingDependencyError` unless the ``kubernetes`` package can be imported."""
    if importlib.util.find_spec("kubernetes") is None:
        raise MissingDependencyError(
            f"{purpose} needs the Kubernetes client, which this installation does not have "
            f"(the sidecar image leaves it out): pip install 'trustmesh[{KUBERNETES_EXTRA}]', "
            f"or use the control-plane image")
