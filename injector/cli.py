"""`trustmesh` subcommands that belong to `injector`.

    trustmesh inject -f FILE|- [--config FILE] [--trust-bundle FILE]
    trustmesh injector serve --config FILE [--check]

``inject`` prints the injected multi-document YAML on stdout. ``injector
serve`` runs the HTTPS admission webhooks (and, if ``server.ca_bundle.patch``
is set, first patches ``caBundle`` into the webhook configurations; with
``server.certificate_from_ca.enabled`` it first gets its serving
certificate from the trustmesh CA and renews it while it runs).
"""

from __future__ import annotations

import argparse
import sys

from sdk.errors import UsageError
from sdk.optional import require_kubernetes

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``inject`` and ``injector serve``."""
    inject = subparsers.add_parser(
        "inject", help="add the trustmesh init container and sidecar to pod templates in YAML (offline)")
    inject.add_argument("-f", "--filename", required=True, metavar="FILE",
                        help="multi-document YAML to inject; - reads stdin")
    inject.add_argument("--config", metavar="FILE", help="injector configuration (YAML); defaults otherwise")
    inject.add_argument("--trust-bundle", metavar="FILE",
                        help="copy this PEM trust bundle into the pods instead of mounting the bundle ConfigMap")
    inject.set_defaults(func=_inject)

    injector = subparsers.add_parser("injector", help="the admission webhooks")
    sub = injector.add_subparsers(dest="injector_command", metavar="ACTION", parser_class=type(injector))
    sub.required = True
    serve = sub.add_parser("serve", help="serve the mutating and validating webhooks over HTTPS")
    serve.add_argument("--config", required=True, metavar="FILE", help="injector configuration (YAML)")
    serve.add_argument("--check", action="store_true", help="validate the configuration and exit")
    serve.set_defaults(func=_serve)


def _inject(args: argparse.Namespace) -> int:
    from injector.config import InjectorConfig, load_config
    from injector.offline import inject_documents
    from injector.trust_bundle import TrustBundleFile

    config = load_config(args.config) if args.config else InjectorConfig()
    bundle_path = args.trust_bundle or config.trust_bundle_file
    bundle = TrustBundleFile(bundle_path).read() if bundle_path else None
    if args.filename == "-":
        text = sys.stdin.read()
    else:
        try:
            with open(args.filename, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as err:
            raise UsageError(f"-f {args.filename}: {err.strerror or err}") from err
    sys.stdout.write(inject_documents(text, config, trust_bundle=bundle))
    return 0


def _serve(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from injector.config import load_config
    from injector.identity import IdentityChecker

    config = load_config(args.config)
    IdentityChecker(config)  # the identity template and trust domain must be valid
    if args.check:
        print(f"injector config {args.config}: ok")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    patch = None
    settings = config.server.ca_bundle
    if settings.patch:
        patch = _ca_bundle_patcher(settings)
    from injector.server import serve

    certificate = None
    if config.server.certificate_from_ca.enabled:
        from injector.ca_certificate import CaServingCertificate

        certificate = CaServingCertificate(config, patch_ca_bundle=patch)
    try:
        asyncio.run(serve(config, patch_ca_bundle=patch, ca_certificate=certificate))
    except KeyboardInterrupt:
        return 130
    return 0


def _ca_bundle_patcher(settings):  # type: ignore[no-untyped-def]
    def patch() -> list[str]:
        require_kubernetes("patching caBundle into the webhook configurations (server.ca_bundle.patch)")
        import kubernetes.client
        import kubernetes.config

        from injector.cabundle import patch_ca_bundle, read_ca_bundle

        ca_pem = read_ca_bundle(settings.ca_file)
        try:
            kubernetes.config.load_incluster_config()
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config()
        with kubernetes.client.ApiClient() as client:
            return patch_ca_bundle(client, ca_pem, settings.mutating, settings.validating)

    return patch
