"""trustmesh: zero-trust SPIFFE identities and mutual TLS for Kubernetes.

This package holds only the command line (:mod:`trustmesh.cli`) and the
whole-system demo; the libraries are the sibling packages ``sdk``, ``ca``,
``sidecar``, ``injector`` and ``policy_dsl``.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
