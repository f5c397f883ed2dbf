"""The CA service's calls to the Kubernetes API, through the kubernetes client.

The client is blocking, so each call runs in a thread of the API's own pool
(as many threads as calls may be in flight, so a burst of new tokens — each
needing a TokenReview, then the pod and the ServiceAccount at once — is not
queued behind the event loop's small default pool) with a timeout. Results
are the API's JSON documents (dicts); :mod:`ca.service.wire` turns them into
domain values. Any failure to get an answer — connection refused, timeout,
5xx, or the API refusing the CA's own credentials — raises
:class:`UpstreamUnavailableError`: the caller must not decide on a guess.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ca.service.errors import ConfigError, UpstreamUnavailableError
from sdk.optional import require_kubernetes

__all__ = ["KubeApi", "api_client_for"]

_MAX_IN_FLIGHT = 16
_MAX_TOKEN_BYTES = 64 * 1024


def api_client_for(host: str = "", *, token_file: str = "", ca_file: str = ""):
    """A kubernetes ApiClient: ``host`` if given, else in-cluster config, else KUBECONFIG.

    With ``host``, ``ca_file`` (PEM) is what the API server's certificate must
    chain to (default: the system's roots), and the bearer token is read from
    ``token_file`` and read again before a call whenever the file has changed,
    as a projected or rotated token does. Unreadable files raise
    :class:`~ca.service.errors.ConfigError` naming the key.
    """
    require_kubernetes("the CA's Kubernetes authentication")
    import kubernetes.client
    import kubernetes.config

    if host:
        config = kubernetes.client.Configuration(host=host)
        if ca_file:
            _check_ca_file(ca_file)
            config.ssl_ca_cert = ca_file
        if token_file:
            tokens = _TokenFile(token_file)
            config.api_key = {"BearerToken": tokens.current()}
            config.api_key_prefix = {"BearerToken": "Bearer"}
            config.refresh_api_key_hook = tokens.refresh
    else:
        config = kubernetes.client.Configuration()
        try:
            kubernetes.config.load_incluster_config(client_configuration=config)
        except kubernetes.config.ConfigException:
            try:
                kubernetes.config.load_kube_config(client_configuration=config)
            except (kubernetes.config.ConfigException, OSError) as err:
                raise UpstreamUnavailableError(f"no Kubernetes API configuration: {err}") from err
    config.retries = False  # one attempt; the caller's deadline decides
    config.connection_pool_maxsize = _MAX_IN_FLIGHT  # a connection per call thread, kept for reuse
    return kubernetes.client.ApiClient(config)


_CA_FILE_KEY = "authentication.kubernetes.api_ca_file"
_TOKEN_FILE_KEY = "authentication.kubernetes.api_token_file"


def _check_ca_file(path: str) -> None:
    try:
        ssl.create_default_context(cafile=path)
    except OSError as err:  # ssl.SSLError is an OSError
        raise ConfigError(_CA_FILE_KEY, f"cannot use {path} as PEM CA certificates: {err.strerror or err}") from err


class _TokenFile:
    """A bearer token file, re-read when its identity, size or mtime changes.

    The kubelet replaces a projected token by swapping a symlink, and a
    rotated Secret is rewritten; either way the next call sends the new token.
    A file that cannot be read at start is a configuration error; later, the
    call fails (the API is unreachable with our credentials) and the next one
    tries again.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._seen: tuple[int, int, int] | None = None
        self._token = ""
        try:
            token = self.current()
        except OSError as err:
            raise ConfigError(_TOKEN_FILE_KEY, f"cannot read {path}: {err.strerror or err}") from err
        if not token:
            raise ConfigError(_TOKEN_FILE_KEY, f"{path} is empty")

    def current(self) -> str:
        stat = os.stat(self.path)
        seen = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if seen != self._seen:
            with open(self.path, encoding="utf-8") as handle:
                self._token = handle.read(_MAX_TOKEN_BYTES).strip()
            self._seen = seen
        return self._token

    def refresh(self, config: Any) -> None:
        """The client's ``refresh_api_key_hook``: called before every request."""
        config.api_key = {"BearerToken": self.current()}


class KubeApi:
    """The few API calls the CA makes, each bounded by ``timeout`` seconds."""

    def __init__(self, api_client: Any, *, timeout: float = 3.0) -> None:
        require_kubernetes("the CA's Kubernetes authentication")
        import kubernetes.client

        self._client = api_client
        self._k = kubernetes.client
        self._auth = kubernetes.client.AuthenticationV1Api(api_client)
        self._core = kubernetes.client.CoreV1Api(api_client)
        self._well_known = kubernetes.client.WellKnownApi(api_client)
        self._openid = kubernetes.client.OpenidApi(api_client)
        self.timeout = timeout
        # Bounds the threads (and API load) that a burst of new tokens can cause.
        self._in_flight = asyncio.Semaphore(_MAX_IN_FLIGHT)
        self._threads = ThreadPoolExecutor(_MAX_IN_FLIGHT, thread_name_prefix="kube-api")

    def close(self) -> None:
        """Close the underlying ApiClient's connection pool and the call threads."""
        self._threads.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    async def token_review(self, token: str, audiences: list[str]) -> dict:
        """POST a TokenReview; returns the API's TokenReview document."""
        body = self._k.V1TokenReview(spec=self._k.V1TokenReviewSpec(token=token, audiences=audiences))
        return await self._call("TokenReview", self._auth.create_token_review, body)

    async def issuer_discovery(self) -> dict:
        """The service-account issuer's OIDC discovery document."""
        return await self._call("issuer discovery", self._well_known.get_service_account_issuer_open_id_configuration)

    async def issuer_keys(self) -> dict:
        """The service-account issuer's public keys (JWKS)."""
        return await self._call("issuer keys", self._openid.get_service_account_issuer_open_id_keyset)

    async def read_pod(self, namespace: str, name: str) -> dict | None:
        """The Pod document, or None when it does not exist."""
        return await self._call(f"read pod {namespace}/{name}", self._core.read_namespaced_pod, name, namespace, missing_ok=True)

    async def read_service_account(self, namespace: str, name: str) -> dict | None:
        """The ServiceAccount document, or None when it does not exist."""
        return await self._call(
            f"read serviceaccount {namespace}/{name}", self._core.read_namespaced_service_account, name, namespace,
            missing_ok=True,
        )

    async def read_config_map(self, namespace: str, name: str) -> dict | None:
        return await self._call(
            f"read configmap {namespace}/{name}", self._core.read_namespaced_config_map, name, namespace, missing_ok=True
        )

    async def write_config_map(self, namespace: str, name: str, data: dict[str, str]) -> dict:
        """Create or replace the ConfigMap's data (retrying once on a write conflict)."""
        return await self._write("config_map", namespace, name, {"data": data})

    async def read_secret(self, namespace: str, name: str) -> dict | None:
        return await self._call(
            f"read secret {namespace}/{name}", self._core.read_namespaced_secret, name, namespace, missing_ok=True
        )

    async def write_secret(self, namespace: str, name: str, data_b64: dict[str, str], *, resource_version: str = "") -> dict:
        """Create (no ``resource_version``) or replace-if-unchanged a Secret.

        A conflict raises :class:`UpstreamUnavailableError` whose message says
        so; the caller re-reads and decides (another replica won).
        """
        body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": data_b64,
                "metadata": {"name": name, "namespace": namespace}}
        if resource_version:
            body["metadata"]["resourceVersion"] = resource_version
            return await self._call(f"replace secret {namespace}/{name}", self._core.replace_namespaced_secret, name, namespace, body)
        return await self._call(f"create secret {namespace}/{name}", self._core.create_namespaced_secret, namespace, body)

    async def _write(self, kind: str, namespace: str, name: str, fields: dict) -> dict:
        read = getattr(self._core, f"read_namespaced_{kind}")
        create = getattr(self._core, f"create_namespaced_{kind}")
        replace = getattr(self._core, f"replace_namespaced_{kind}")
        api_kind = "ConfigMap" if kind == "config_map" else "Secret"
        for _ in range(3):
            current = await self._call(f"read {kind} {namespace}/{name}", read, name, namespace, missing_ok=True)
            body = {"apiVersion": "v1", "kind": api_kind, "metadata": {"name": name, "namespace": namespace}, **fields}
            try:
                if current is None:
                    return await self._call(f"create {kind} {namespace}/{name}", create, namespace, body, conflict_ok=True)
                body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                return await self._call(f"replace {kind} {namespace}/{name}", replace, name, namespace, body, conflict_ok=True)
            except _Conflict:
                continue
        raise UpstreamUnavailableError(f"{kind} {namespace}/{name}: kept conflicting with other writers")

    async def _call(self, what: str, method, *args, missing_ok: bool = False, conflict_ok: bool = False) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        def run():
            response = method(*args, _preload_content=False, _request_timeout=self.timeout)
            return json.loads(response.data)

        try:
            async with self._in_flight:
                call = asyncio.get_running_loop().run_in_executor(self._threads, run)
                return await asyncio.wait_for(call, self.timeout + 1.0)
        except ApiException as err:
            if err.status == 404 and missing_ok:
                return None
            if err.status == 409 and conflict_ok:
                raise _Conflict() from err
            raise UpstreamUnavailableError(f"Kubernetes API {what}: HTTP {err.status} {err.reason}") from err
        except (HTTPError, OSError, TimeoutError, ValueError) as err:
            raise UpstreamUnavailableError(f"Kubernetes API {what}: unreachable ({type(err).__name__})") from err


class _Conflict(Exception):
    pass
