"""The REST edge's HTTPS server: routes, authentication and the error boundary.

Paths are Kubernetes': ``/api/v1/...`` (the core group) and ``/apis/<group>/<version>/...``,
namespaced (``/namespaces/<ns>/<plural>[/<name>[/<sub>]]``) and cluster-wide
(``/<plural>[/<name>[/<sub>]]``); discovery, ``/version``, the health endpoints and
``/openapi``. Every request but those public ones needs ``Authorization: Bearer
<token>`` from the token file (when one is given); an API error anywhere becomes its
``Status`` (:mod:`services.apiserver.rest.status`, the one table).
"""

from __future__ import annotations

import asyncio
import hmac
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from services.apiserver.registry import Registry
from services.apiserver.rest import discovery, metrics_api, openapi, streaming
from services.apiserver.rest.common import Target, respond
from services.apiserver.rest.kubelets import LookupConnector
from services.apiserver.rest.request import RequestError, accepted
from services.apiserver.rest.resources import ResourceHandler
from services.apiserver.rest.status import from_error, status
from skiff import tokenfile
from skiff.api import errors
from skiff.api.kinds import KINDS, Kind
from skiff.api.v1 import meta_pb2
from skiff.logging import get_logger

log = get_logger("apiserver.rest")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: Paths anyone may read (Kubernetes' system:public-info-viewer and system:discovery).
PUBLIC_EXACT = frozenset({"/version", "/version/", "/healthz", "/livez", "/readyz", "/api",
                          "/apis"})
USER_KEY = web.AppKey("user", tokenfile.User)
#: Python's own server ciphers at OpenSSL security level 0: a TLS 1.2 client that
#: sends no signature_algorithms (busybox's wget and ssl_client in pods) must get a
#: SHA-1 signature (RFC 5246 7.4.1.4.1), which OpenSSL 3 refuses from level 1 up; Go,
#: so Kubernetes, serves it. Clients that offer better still get better.
CIPHERS = ("@SECLEVEL=0:ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:ECDHE+AES:"
           "DHE+AES:!aNULL:!eNULL:!aDSS:!SHA1:!AESCCM")


@dataclass(frozen=True)
class RESTConfig:
    """The REST edge's flags: the port (0: off), TLS files and the token file."""

    port: int = 0
    host: str = "0.0.0.0"
    cert_file: Path | None = None
    key_file: Path | None = None
    token_file: Path | None = None


def _is_public(path: str) -> bool:
    if path in PUBLIC_EXACT or path.startswith("/openapi/"):
        return True
    parts = path.strip("/").split("/")
    # /api/v1, /apis/<group>, /apis/<group>/<version>: discovery documents only.
    return (parts[0] == "api" and len(parts) == 2) or (parts[0] == "apis"
                                                       and len(parts) in (2, 3))


#: (apiVersion, plural) -> kind.
KINDS_BY_PATH: dict[tuple[str, str], Kind] = {(k.api_version, k.plural): k for k in KINDS}


class RESTServer:
    """The aiohttp application of the REST edge over the apiserver's registries."""

    def __init__(self, registries: dict[str, Registry], *,
                 tokens: dict[str, tokenfile.User] | None, ready: Callable[[], bool]) -> None:
        self.tokens = tokens
        self.ready = ready
        self.resources = ResourceHandler(registries)
        self.app = web.Application(middlewares=[self._errors, self._authenticate],
                                   client_max_size=64 * 1024 * 1024)
        # Routes of other modules go first: aiohttp matches in the order of adding.
        mount_kubelet_routes(self.app, registries)
        self.app.router.add_get("/version", self.version)
        self.app.router.add_get("/version/", self.version)  # the Python client's path
        for path in ("/healthz", "/livez", "/readyz"):
            self.app.router.add_get(path, self.health)
        self.app.router.add_get("/api", self.core_discovery)
        self.app.router.add_get("/apis", self.groups_discovery)
        self.app.router.add_get("/openapi/{tail:.*}", self.openapi)
        self.app.router.add_route("*", "/api/{version}", self.core_version)
        self.app.router.add_route("*", "/api/{version}/{tail:.+}", self.core_resource)
        self.app.router.add_route("*", "/apis/{group}", self.group_discovery)
        self.app.router.add_route("*", "/apis/{group}/{version}", self.group_version)
        self.app.router.add_route("*", "/apis/{group}/{version}/{tail:.+}",
                                  self.group_resource)

    # ------------------------------------------------------------ middleware

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        code = 500
        try:
            response = await handler(request)
            code = response.status
            return response
        except RequestError as e:
            code = e.code
            return respond(status(e.code, e.reason, str(e)), e.code)
        except errors.APIError as e:
            target = request.get("target")
            body = from_error(e, target.kind if target else None,
                              target.name if target else "")
            code = body["code"]
            return respond(body, code)
        except asyncio.CancelledError:
            code = 499  # the client went away, or the server is stopping (nginx's 499)
            raise
        except web.HTTPException as e:
            code = e.status
            return respond(status(e.status, e.reason.replace(" ", ""), e.text or e.reason),
                           e.status)
        except Exception:
            log.exception("request failed", method=request.method, path=request.path)
            return respond(status(500, "InternalError", "an internal error occurred"), 500)
        finally:
            if request.method != "GET" or code >= 400:
                user = request.get("user")
                log.info("request", method=request.method, path=request.path, code=code,
                         user=user.name if user else "",
                         ms=round((time.perf_counter() - started) * 1000, 2))

    @web.middleware
    async def _authenticate(self, request: web.Request,
                            handler: Handler) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        if self.tokens is None:
            return await handler(request)
        if header:
            scheme, _, token = header.partition(" ")
            user = self._user(token.strip()) if scheme.lower() == "bearer" else None
            if user is None:
                raise RequestError(401, "Unauthorized", "Unauthorized")
            request["user"] = user
        elif not _is_public(request.path):
            raise RequestError(401, "Unauthorized", "Unauthorized")
        return await handler(request)

    def _user(self, token: str) -> tokenfile.User | None:
        assert self.tokens is not None
        for known, user in self.tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                return user
        return None

    # ------------------------------------------------------------ discovery

    async def version(self, request: web.Request) -> web.Response:
        return respond(discovery.version_info())

    async def health(self, request: web.Request) -> web.Response:
        if not self.ready():
            return web.Response(status=500, text="[-]informer-sync failed: not ready\n")
        return web.Response(text="ok")

    def _aggregated(self, request: web.Request) -> bool:
        return any(m.params.get("as") == "APIGroupDiscoveryList"
                   and m.params.get("g") == "apidiscovery.k8s.io" and m.params.get("v") == "v2"
                   for m in accepted(request.headers.get("Accept", "")))

    def _discovery_response(self, request: web.Request, core: bool) -> web.Response:
        if self._aggregated(request):
            response = respond(discovery.aggregated(core))
            response.content_type = "application/json"
            response.headers["Content-Type"] = discovery.AGGREGATED_V2
            return response
        if core:
            return respond(discovery.api_versions(request.host))
        return respond(discovery.api_group_list())

    async def core_discovery(self, request: web.Request) -> web.Response:
        return self._discovery_response(request, core=True)

    async def groups_discovery(self, request: web.Request) -> web.Response:
        return self._discovery_response(request, core=False)

    async def core_version(self, request: web.Request) -> web.Response:
        return self._resource_list(request, request.match_info["version"])

    async def group_discovery(self, request: web.Request) -> web.Response:
        self._only_get(request)
        group = discovery.api_group(request.match_info["group"])
        if group is None:
            raise _not_found(request)
        return respond(group)

    async def group_version(self, request: web.Request) -> web.Response:
        info = request.match_info
        return self._resource_list(request, f'{info["group"]}/{info["version"]}')

    def _resource_list(self, request: web.Request, api_version: str) -> web.Response:
        self._only_get(request)
        document = discovery.api_resource_list(api_version)
        if document is None:
            raise _not_found(request)
        return respond(document)

    @staticmethod
    def _only_get(request: web.Request) -> None:
        if request.method != "GET":
            raise RequestError(405, "MethodNotAllowed", f"{request.method} is not allowed "
                               f"on {request.path}")

    async def openapi(self, request: web.Request) -> web.Response:
        """``/openapi/v3`` and each group-version's document (``?hash=`` ignored: the
        document is served with its ETag and cached by clients by that URL)."""
        tail = request.match_info["tail"]
        if tail == "v3":
            return respond(openapi.index_document())
        document = openapi.documents().get(tail[3:]) if tail.startswith("v3/") else None
        if document is not None:
            return web.Response(body=document.body, content_type="application/json",
                                headers={"ETag": f'"{document.etag}"',
                                         "Cache-Control": "public, immutable"})
        raise _not_found(request)

    # ------------------------------------------------------------ resources

    async def core_resource(self, request: web.Request) -> web.StreamResponse:
        info = request.match_info
        return await self._resource(request, info["version"], info["tail"])

    async def group_resource(self, request: web.Request) -> web.StreamResponse:
        info = request.match_info
        return await self._resource(request, f'{info["group"]}/{info["version"]}',
                                    info["tail"])

    async def _resource(self, request: web.Request, api_version: str,
                        tail: str) -> web.StreamResponse:
        target = target_of(api_version, tail)
        if target is None:
            raise _not_found(request)
        request["target"] = target
        return await self.resources.handle(request, target)

    # -------------------------------------------------------------- serving

    async def start(self, config: RESTConfig) -> web.AppRunner:
        """Listen with TLS on ``config.port``; returns the runner to clean up."""
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, config.host, config.port,
                           ssl_context=ssl_context(config), shutdown_timeout=1.0)
        await site.start()
        return runner


def target_of(api_version: str, tail: str) -> Target | None:
    """What ``tail`` (after the group-version) names, or None if nothing served."""
    parts = tail.strip("/").split("/")
    if any(p == "" for p in parts):
        return None
    namespace = ""
    # /namespaces/<ns>/<plural>/..., except a Namespace's own subresources.
    if (parts[0] == "namespaces" and len(parts) >= 3
            and not (len(parts) == 3 and parts[2] in ("status", "finalize"))):
        namespace, parts = parts[1], parts[2:]
    if len(parts) > 3:
        return None
    kind = KINDS_BY_PATH.get((api_version, parts[0]))
    if kind is None or (namespace and not kind.namespaced):
        return None
    if kind.namespaced and not namespace and len(parts) > 1:
        return None  # /api/v1/pods/<name>: a namespaced object needs its namespace
    name = parts[1] if len(parts) > 1 else ""
    sub = parts[2] if len(parts) > 2 else ""
    return Target(kind, namespace, name, sub)


def mount_kubelet_routes(app: web.Application, registries: dict[str, Registry]) -> None:
    """Mount the streaming subresources (exec, attach, port-forward, log) and
    ``metrics.k8s.io``, which reach kubelets found through the Pod and Node
    registries. The app's middlewares authenticate for them."""
    pods, nodes = registries["Pod"], registries["Node"]

    async def list_nodes() -> list[Any]:
        return list((await nodes.list(meta_pb2.ListOptions())).items)  # type: ignore[attr-defined]

    async def list_pods(namespace: str, selector: str) -> list[Any]:
        options = meta_pb2.ListOptions(namespace=namespace, label_selector=selector)
        return list((await pods.list(options)).items)  # type: ignore[attr-defined]

    connector = LookupConnector(get_pod=pods.get, get_node=lambda name: nodes.get("", name),
                                list_nodes=list_nodes, list_pods=list_pods)
    streaming.add_routes(app, connector)
    metrics_api.add_routes(app, connector)


def ssl_context(config: RESTConfig) -> ssl.SSLContext:
    if config.cert_file is None or config.key_file is None:
        raise ValueError("--secure-port needs --tls-cert-file and --tls-private-key-file")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(CIPHERS)
    context.load_cert_chain(config.cert_file, config.key_file)
    context.set_alpn_protocols(["http/1.1"])
    return context


def _not_found(request: web.Request) -> RequestError:
    return RequestError(404, "NotFound", "the server could not find the requested resource")
