"""An in-process Kubernetes API server double for tests.

Kubernetes itself is the one thing trustmesh tests do not run; this aiohttp
application stands in for kube-apiserver and speaks its real JSON shapes, so
production code uses the real ``kubernetes`` client against it exactly as it
would against a cluster (``kubernetes.client.Configuration(host=kube.url)``,
or simply ``kube.api_client()``). Plain HTTP by default; ``tls=True`` serves
HTTPS with a fresh self-signed certificate for 127.0.0.1 (``kube.ca_pem``),
which ``api_client()`` trusts.

What it serves:

- ``POST /apis/authentication.k8s.io/v1/tokenreviews`` — TokenReview, with the
  apiserver's observed behaviour (kube-apiserver 1.36): pod-bound tokens review
  with ``status.user.extra`` keys ``authentication.kubernetes.io/pod-name``,
  ``.../pod-uid``, ``.../credential-id`` (and node name/uid); a wrong audience
  fails with ``token audiences ["a"] is invalid for the target audiences ["b"]``;
  a deleted pod's token keeps reviewing as valid for ``invalidation_delay``
  seconds (10 s by default, like the apiserver's cache), then fails with
  ``service account token has been invalidated``.
- Namespaced core/v1 objects — ``pods``, ``configmaps``, ``secrets``,
  ``serviceaccounts``: GET/list, POST, PUT (with resourceVersion conflicts),
  PATCH (json-patch, merge-patch, strategic-merge-patch as a merge) and DELETE,
  answering errors with ``Status`` objects (``NotFound``, ``AlreadyExists``,
  ``Conflict``, ``Invalid``).
- ``/.well-known/openid-configuration`` and ``/openid/v1/jwks`` — the service
  account issuer's discovery document and keys, for offline verification.

Tokens are real RS256 JWTs signed by the double's issuer key, with the claims a
projected ServiceAccount token carries (``iss``, ``sub``, ``aud``, ``exp``,
``iat``, ``nbf``, ``jti`` and ``kubernetes.io``: namespace, pod name/uid,
serviceaccount name/uid, node name/uid).

Time comes from ``clock`` (seconds since the epoch), so tests can move it
instead of sleeping. ``outage()`` makes every API call answer 503
(``outage("serviceaccounts")`` only the calls on that resource);
``response_delay`` makes each API call wait; ``stop()`` closes the port
(connection refused). ``requests`` and ``token_reviews`` record what was asked.

Example::

    async with KubernetesDouble() as kube:
        pod = kube.add_pod("prod", "web-0", service_account="web", labels={"app": "web"})
        token = kube.issue_token("prod", "web", pod_name="web-0", audiences=["trustmesh-ca"])
        api = kubernetes.client.CoreV1Api(kube.api_client())
        await asyncio.to_thread(api.read_namespaced_pod, "web-0", "prod")
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import ipaddress
import json
import os
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import jwt
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

__all__ = ["KubernetesDouble", "DEFAULT_ISSUER", "NAMESPACED_KINDS"]

DEFAULT_ISSUER = "https://kubernetes.default.svc.cluster.local"
# The apiserver's own audience, used when a TokenReview names none.
API_AUDIENCE = DEFAULT_ISSUER

# plural -> (kind, list kind)
NAMESPACED_KINDS = {
    "pods": "Pod",
    "configmaps": "ConfigMap",
    "secrets": "Secret",
    "serviceaccounts": "ServiceAccount",
}

_PREFIX = "authentication.kubernetes.io/"


def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(int(epoch), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str, name: str = "", kind: str = "") -> web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if name or kind:
        body["details"] = {"name": name, "kind": kind}
    return web.json_response(body, status=code)


def _quoted_list(items: Iterable[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def _merge_patch(target: object, patch: object) -> object:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


class KubernetesDouble:
    """A kube-apiserver stand-in on 127.0.0.1 (an ephemeral port).

    ``invalidation_delay``: seconds a deleted pod's token still reviews as
    valid. ``api_token``: if set, API calls must carry ``Authorization:
    Bearer <api_token>`` or get 401 (the discovery/JWKS endpoints stay open,
    as with ``--service-account-issuer-discovery`` granted to everyone).
    """

    def __init__(
        self,
        *,
        issuer: str = DEFAULT_ISSUER,
        invalidation_delay: float = 10.0,
        clock: Callable[[], float] = time.time,
        api_token: str | None = None,
        node_name: str = "node-1",
        tls: bool = False,
    ) -> None:
        self.issuer = issuer
        self.invalidation_delay = invalidation_delay
        self.clock = clock
        self.api_token = api_token
        self.node_name = node_name
        self.node_uid = str(uuid.uuid4())
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.kid = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()
        # (plural, namespace, name) -> object
        self.objects: dict[tuple[str, str, str], dict] = {}
        # pod uid -> time the pod was deleted (for the token-invalidation window)
        self.deleted_pods: dict[str, float] = {}
        self.requests: list[tuple[str, str]] = []
        self.token_reviews: list[dict] = []
        self._outage = False
        self._outage_resource: str | None = None
        # False: TokenReviews leave out status.user.uid (the ServiceAccount's uid),
        # as API servers that do not report it do.
        self.review_reports_user_uid = True
        # Seconds every API call waits before answering (a slow apiserver).
        self.response_delay = 0.0
        self._rv = 1000
        self._lock = threading.Lock()
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.tls = tls
        self.ca_pem = b""  # with tls=True: the certificate clients must trust

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> str:
        """Listen on 127.0.0.1 (ephemeral port); returns the base URL."""
        app = web.Application(middlewares=[self._middleware], client_max_size=4 * 1024 * 1024)
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/openid/v1/jwks", self._jwks)
        app.router.add_post("/apis/authentication.k8s.io/v1/tokenreviews", self._token_review)
        base = "/api/v1/namespaces/{namespace}/{plural}"
        app.router.add_get(base, self._list)
        app.router.add_post(base, self._create)
        app.router.add_get(base + "/{name}", self._get)
        app.router.add_put(base + "/{name}", self._replace)
        app.router.add_patch(base + "/{name}", self._patch)
        app.router.add_delete(base + "/{name}", self._delete)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._ssl_context() if self.tls else None)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"{'https' if self.tls else 'http'}://{host}:{port}"
        return self.url

    def _ssl_context(self) -> ssl.SSLContext:
        """A self-signed serving certificate for 127.0.0.1 (its PEM lands in ``ca_pem``)."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver double")])
        now = datetime.now(timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
            .sign(key, hashes.SHA256())
        )
        self.ca_pem = cert.public_bytes(serialization.Encoding.PEM)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        with tempfile.TemporaryDirectory(prefix="k8s-double-") as tmp:
            cert_path, key_path = os.path.join(tmp, "tls.crt"), os.path.join(tmp, "tls.key")
            with open(cert_path, "wb") as out:
                out.write(self.ca_pem)
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(
                    key.private_bytes(
                        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                    )
                )
            context.load_cert_chain(cert_path, key_path)
        return context

    async def stop(self) -> None:
        """Close the listening port; later client calls get connection refused."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> KubernetesDouble:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @contextmanager
    def running_in_thread(self) -> Iterator[str]:
        """Serve from a private event loop in a thread (for synchronous tests)."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        try:
            yield asyncio.run_coroutine_threadsafe(self.start(), loop).result(10)
        finally:
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()

    def api_client(self, token: str | None = None):
        """A real ``kubernetes.client.ApiClient`` pointed at this double."""
        import kubernetes.client

        config = kubernetes.client.Configuration(host=self.url)
        if self.tls:
            config.ssl_ca_cert = None
            config.ca_cert_data = self.ca_pem.decode()
        bearer = token or self.api_token
        if bearer:
            config.api_key = {"BearerToken": bearer}
            config.api_key_prefix = {"BearerToken": "Bearer"}
        return kubernetes.client.ApiClient(config)

    @contextmanager
    def outage(self, resource: str | None = None) -> Iterator[None]:
        """While active, every API call answers 503 ServiceUnavailable.

        With ``resource`` (a plural such as ``"serviceaccounts"``), only the
        calls on that namespaced resource do.
        """
        self._outage, self._outage_resource = True, resource
        try:
            yield
        finally:
            self._outage, self._outage_resource = False, None

    # -- test-side helpers ------------------------------------------------------------

    def add_pod(
        self,
        namespace: str,
        name: str,
        *,
        service_account: str = "default",
        labels: Mapping[str, str] | None = None,
        uid: str | None = None,
    ) -> dict:
        """Create a running pod (and its ServiceAccount if new); returns the pod."""
        self.ensure_service_account(namespace, service_account)
        pod = {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})},
            "spec": {
                "serviceAccountName": service_account,
                "nodeName": self.node_name,
                "containers": [{"name": "app", "image": "registry.example/app:1"}],
            },
            "status": {"phase": "Running", "podIP": "10.244.0.10"},
        }
        if uid:
            pod["metadata"]["uid"] = uid
        return self._store("pods", namespace, name, pod, create=True)

    def pod(self, namespace: str, name: str) -> dict | None:
        return self.objects.get(("pods", namespace, name))

    def delete_pod(self, namespace: str, name: str) -> None:
        """Remove a pod now; its tokens stay valid for ``invalidation_delay``."""
        pod = self.objects.pop(("pods", namespace, name))
        self.deleted_pods[pod["metadata"]["uid"]] = self.clock()

    def mark_terminating(self, namespace: str, name: str, grace_seconds: int = 30) -> None:
        """Give the pod a deletionTimestamp, as a graceful delete does."""
        meta = self.objects[("pods", namespace, name)]["metadata"]
        meta["deletionTimestamp"] = _rfc3339(self.clock() + grace_seconds)
        meta["deletionGracePeriodSeconds"] = grace_seconds
        self._bump(meta)

    def ensure_service_account(self, namespace: str, name: str) -> dict:
        existing = self.objects.get(("serviceaccounts", namespace, name))
        if existing is not None:
            return existing
        sa = {"kind": "ServiceAccount", "apiVersion": "v1", "metadata": {"name": name, "namespace": namespace}}
        return self._store("serviceaccounts", namespace, name, sa, create=True)

    def delete_service_account(self, namespace: str, name: str) -> None:
        """Remove a ServiceAccount now; the API stops accepting its tokens at once."""
        del self.objects[("serviceaccounts", namespace, name)]

    def issue_token(
        self,
        namespace: str,
        service_account: str,
        *,
        pod_name: str | None = None,
        audiences: Iterable[str] = ("trustmesh-ca",),
        ttl: int = 3600,
        issued_at: float | None = None,
        extra_claims: Mapping[str, object] | None = None,
        key: rsa.RSAPrivateKey | None = None,
    ) -> str:
        """A projected ServiceAccount token, bound to ``pod_name`` if given.

        ``key`` signs with another key (a forged token); ``extra_claims``
        override or add claims.
        """
        sa = self.ensure_service_account(namespace, service_account)
        now = int(self.clock() if issued_at is None else issued_at)
        k8s: dict[str, object] = {
            "namespace": namespace,
            "serviceaccount": {"name": service_account, "uid": sa["metadata"]["uid"]},
        }
        if pod_name is not None:
            pod = self.objects[("pods", namespace, pod_name)]
            k8s["pod"] = {"name": pod_name, "uid": pod["metadata"]["uid"]}
            k8s["node"] = {"name": self.node_name, "uid": self.node_uid}
        claims: dict[str, object] = {
            "aud": list(audiences),
            "exp": now + ttl,
            "iat": now,
            "nbf": now,
            "iss": self.issuer,
            "jti": str(uuid.uuid4()),
            "kubernetes.io": k8s,
            "sub": f"system:serviceaccount:{namespace}:{service_account}",
        }
        claims.update(extra_claims or {})
        return jwt.encode(claims, key or self._key, algorithm="RS256", headers={"kid": self.kid})

    def jwks(self) -> dict:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self._key.public_key()))
        jwk.update({"use": "sig", "kid": self.kid, "alg": "RS256"})
        return {"keys": [jwk]}

    # -- token review -----------------------------------------------------------------

    def review(self, token: str, audiences: list[str]) -> dict:
        """The ``status`` the apiserver would put on a TokenReview."""
        target = audiences or [API_AUDIENCE]
        try:
            claims = jwt.decode(
                token,
                self._key.public_key(),
                algorithms=["RS256"],
                options={"verify_aud": False, "verify_exp": False, "verify_nbf": False, "verify_iat": False},
                issuer=self.issuer,
            )
        except jwt.PyJWTError:
            return {"authenticated": False, "user": {}, "error": "invalid bearer token"}
        token_aud = claims.get("aud") or []
        if isinstance(token_aud, str):
            token_aud = [token_aud]
        matched = [a for a in target if a in token_aud]
        if not matched:
            return {
                "authenticated": False,
                "user": {},
                "error": f"token audiences {_quoted_list(token_aud)} is invalid "
                f"for the target audiences {_quoted_list(target)}",
            }
        now = self.clock()
        if now >= claims["exp"]:
            return {"authenticated": False, "user": {}, "error": "service account token has expired"}
        if now < claims.get("nbf", 0):
            return {"authenticated": False, "user": {}, "error": "service account token is not valid yet"}
        k8s = claims["kubernetes.io"]
        ns, sa_name = k8s["namespace"], k8s["serviceaccount"]["name"]
        sa = self.objects.get(("serviceaccounts", ns, sa_name))
        if sa is None or sa["metadata"]["uid"] != k8s["serviceaccount"]["uid"]:
            return self._invalidated()
        extra = {_PREFIX + "credential-id": [f"JTI={claims['jti']}"]}
        pod_ref = k8s.get("pod")
        if pod_ref is not None:
            pod = self.objects.get(("pods", ns, pod_ref["name"]))
            if pod is None or pod["metadata"]["uid"] != pod_ref["uid"]:
                deleted_at = self.deleted_pods.get(pod_ref["uid"])
                if deleted_at is None or now - deleted_at >= self.invalidation_delay:
                    return self._invalidated()
            extra[_PREFIX + "node-name"] = [k8s["node"]["name"]]
            extra[_PREFIX + "node-uid"] = [k8s["node"]["uid"]]
            extra[_PREFIX + "pod-name"] = [pod_ref["name"]]
            extra[_PREFIX + "pod-uid"] = [pod_ref["uid"]]
        user = {
            "username": f"system:serviceaccount:{ns}:{sa_name}",
            "uid": sa["metadata"]["uid"],
            "groups": ["system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated"],
            "extra": extra,
        }
        if not self.review_reports_user_uid:
            del user["uid"]
        return {"authenticated": True, "user": user, "audiences": matched}

    @staticmethod
    def _invalidated() -> dict:
        return {"authenticated": False, "user": {}, "error": "service account token has been invalidated"}

    # -- HTTP handlers ------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler):
        self.requests.append((request.method, request.path))
        if request.path.startswith(("/api/", "/apis/")):
            if self._outage and self._outage_hits(request.path):
                return _status(503, "ServiceUnavailable", "the server is currently unable to handle the request")
            if self.api_token and request.headers.get("Authorization") != f"Bearer {self.api_token}":
                return _status(401, "Unauthorized", "Unauthorized")
            if self.response_delay:
                await asyncio.sleep(self.response_delay)
        return await handler(request)

    def _outage_hits(self, path: str) -> bool:
        if self._outage_resource is None:
            return True
        parts = path.split("/")  # "", "api", "v1", "namespaces", ns, plural, ...
        return len(parts) > 5 and parts[3] == "namespaces" and parts[5] == self._outage_resource

    async def _discovery(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": self.issuer,
                "jwks_uri": f"{self.url}/openid/v1/jwks",
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
            }
        )

    async def _jwks(self, request: web.Request) -> web.Response:
        return web.json_response(self.jwks(), content_type="application/jwk-set+json")

    async def _token_review(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        if isinstance(body, web.Response):
            return body
        spec = body.get("spec") or {}
        token = spec.get("token") or ""
        if not token:
            return _status(422, "Invalid", 'TokenReview.authentication.k8s.io "" is invalid: spec.token: Required value')
        status = self.review(token, list(spec.get("audiences") or []))
        self.token_reviews.append({"spec": spec, "status": status})
        return web.json_response(
            {
                "kind": "TokenReview",
                "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"creationTimestamp": None},
                "spec": spec,
                "status": status,
            },
            status=201,
        )

    def _key_of(self, request: web.Request) -> tuple[str, str, str] | web.Response:
        plural = request.match_info["plural"]
        if plural not in NAMESPACED_KINDS:
            return _status(404, "NotFound", "the server could not find the requested resource")
        return plural, request.match_info["namespace"], request.match_info.get("name", "")

    def _not_found(self, plural: str, name: str) -> web.Response:
        return _status(404, "NotFound", f'{plural} "{name}" not found', name, plural)

    async def _list(self, request: web.Request) -> web.Response:
        key = self._key_of(request)
        if isinstance(key, web.Response):
            return key
        plural, ns, _ = key
        selector = dict(
            part.split("=", 1) for part in request.query.get("labelSelector", "").split(",") if "=" in part
        )
        items = [
            obj
            for (p, n, _), obj in sorted(self.objects.items())
            if p == plural and n == ns
            and all(obj["metadata"].get("labels", {}).get(k) == v for k, v in selector.items())
        ]
        return web.json_response(
            {
                "kind": NAMESPACED_KINDS[plural] + "List",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": str(self._rv)},
                "items": items,
            }
        )

    async def _get(self, request: web.Request) -> web.Response:
        key = self._key_of(request)
        if isinstance(key, web.Response):
            return key
        obj = self.objects.get(key)
        if obj is None:
            return self._not_found(key[0], key[2])
        return web.json_response(obj)

    async def _create(self, request: web.Request) -> web.Response:
        key = self._key_of(request)
        if isinstance(key, web.Response):
            return key
        body = await self._json(request)
        if isinstance(body, web.Response):
            return body
        plural, ns, _ = key
        name = (body.get("metadata") or {}).get("name") or ""
        if not name:
            return _status(422, "Invalid", f"{NAMESPACED_KINDS[plural]} is invalid: metadata.name: Required value")
        if (plural, ns, name) in self.objects:
            return _status(409, "AlreadyExists", f'{plural} "{name}" already exists', name, plural)
        return web.json_response(self._store(plural, ns, name, body, create=True), status=201)

    async def _replace(self, request: web.Request) -> web.Response:
        key = self._key_of(request)
        if isinstance(key, web.Response):
            return key
        body = await self._json(request)
        if isinstance(body, web.Response):
            return body
        current = self.objects.get(key)
        if current is None:
            return self._not_found(key[0], key[2])
        wanted_rv = (body.get("metadata") or {}).get("resourceVersion")
        if wanted_rv and wanted_rv != current["metadata"]["resourceVersion"]:
            return self._conflict(key)
        return web.json_response(self._store(*key, body, create=False))

    async def _patch(self, request: web.Request) -> web.Response:
        key = self._key_of(request)
        if isinstance(key, web.Response):
            return key
        body = await self._json(request)
        if isinstance(body, web.Response):
            return body
        current = self.objects.get(key)
        if current is None:
            return self._not_found(key[0], key[2])
        content_type = request.headers.get("Content-Type", "")
        if "json-patch" in content_type:
            import jsonpatch

            try:
                patched = jsonpatch.apply_patch(current, body)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as err:
                return _status(422, "Invalid", f"the server rejected our request due to an error in our request: {err}")
        else:  # merge-patch and (for maps, equivalently) strategic-merge-patch
            patched = _merge_patch(current, body)
        wanted_rv = (patched.get("metadata") or {}).get("resourceVersion")
        if wanted_rv and wanted_rv != current["metadata"]["resourceVersion"]:
            return self._conflict(key)
        return web.json_response(self._store(*key, patched, create=False))

    async def _delete(self, request: web.Request) -> web.Response:
        key = self._key_of(request)
        if isinstance(key, web.Response):
            return key
        obj = self.objects.pop(key, None)
        if obj is None:
            return self._not_found(key[0], key[2])
        if key[0] == "pods":
            self.deleted_pods[obj["metadata"]["uid"]] = self.clock()
        return web.json_response(
            {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
             "details": {"name": key[2], "kind": key[0], "uid": obj["metadata"]["uid"]}}
        )

    def _conflict(self, key: tuple[str, str, str]) -> web.Response:
        plural, _, name = key
        return _status(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {plural} "{name}": the object has been modified; '
            "please apply your changes to the latest version and try again",
            name,
            plural,
        )

    @staticmethod
    async def _json(request: web.Request) -> dict | web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            return _status(400, "BadRequest", f"the request body is not JSON: {err}")
        if not isinstance(body, (dict, list)):
            return _status(400, "BadRequest", "the request body must be a JSON object")
        return body

    # -- storage ----------------------------------------------------------------------

    def _bump(self, meta: dict) -> None:
        with self._lock:
            self._rv += 1
            meta["resourceVersion"] = str(self._rv)

    def _store(self, plural: str, ns: str, name: str, obj: dict, *, create: bool) -> dict:
        obj = copy.deepcopy(obj)
        obj.setdefault("kind", NAMESPACED_KINDS[plural])
        obj.setdefault("apiVersion", "v1")
        meta = obj.setdefault("metadata", {})
        meta["name"], meta["namespace"] = name, ns
        if create:
            meta.setdefault("uid", str(uuid.uuid4()))
            meta["creationTimestamp"] = _rfc3339(self.clock())
        else:
            old = self.objects[(plural, ns, name)]["metadata"]
            meta["uid"], meta["creationTimestamp"] = old["uid"], old["creationTimestamp"]
        if plural == "secrets":
            string_data = obj.pop("stringData", None) or {}
            data = obj.setdefault("data", {}) or {}
            for k, v in string_data.items():
                data[k] = base64.b64encode(v.encode()).decode()
            obj["data"] = data
            obj.setdefault("type", "Opaque")
        self._bump(meta)
        self.objects[(plural, ns, name)] = obj
        return obj
