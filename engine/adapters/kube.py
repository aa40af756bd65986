"""The Kubernetes API adapter: one kept-alive connection pool, discovery, and the few verbs the engine needs.

Credentials come from the kubeconfig (or the in-cluster ServiceAccount) through the `kubernetes` package; requests go
through urllib3 directly, so that many dry-runs can run concurrently over kept-alive connections.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import urllib3

from ..core import redact
from ..core.errors import ApiError, ClusterUnreachable, KubeConfigError
from ..core.objects import FIELD_MANAGER, KubeObject, ObjectKey, key_of, split_api_version
from ..core.resources import Applied, ResourceInfo
from . import kubeconfig

TOKEN_REREAD_SECONDS = 60.0
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
DISCOVERY_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"


@dataclass(frozen=True)
class KubeTarget:
    """Which cluster to talk to, as kubectl's --kubeconfig and --context name it (None: kubectl's defaults)."""

    kubeconfig: str | None = None
    context: str | None = None
    in_cluster: bool = False


def credentials(target: KubeTarget) -> kubeconfig.Credentials:
    """How to reach and authenticate to the API server, as kubectl would for the same flags."""
    if target.in_cluster:
        return kubeconfig.in_cluster()
    try:
        return kubeconfig.load(target.kubeconfig, target.context)
    except kubeconfig.NeedsPlugin:
        return _through_kubernetes_package(target)


def _through_kubernetes_package(target: KubeTarget) -> kubeconfig.Credentials:
    """exec plugins and auth-providers, run by the kubernetes package (imported only for them)."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    configuration = client.Configuration()
    try:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=target.kubeconfig, context=target.context, client_configuration=configuration
        )
    except (ConfigException, OSError, TypeError, ValueError) as e:
        raise KubeConfigError(str(e)) from e  # KubeClient says which kubeconfig, once
    api_key = configuration.api_key or {}
    token = str(api_key.get("authorization") or api_key.get("BearerToken") or "").removeprefix("Bearer ")
    return kubeconfig.Credentials(
        host=str(configuration.host).rstrip("/"),
        ca_file=configuration.ssl_ca_cert,
        verify=bool(configuration.verify_ssl),
        cert_file=configuration.cert_file,
        key_file=configuration.key_file,
        token=token or None,
        server_name=configuration.tls_server_name,
    )


def _status_message(status: int, body: bytes) -> tuple[str, str]:
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body.decode(errors="replace")[:500] or f"HTTP {status}", ""
    if isinstance(parsed, dict):
        return str(parsed.get("message") or f"HTTP {status}"), str(parsed.get("reason") or "")
    return f"HTTP {status}", ""


def _secret_forms(path: str, body: Any) -> set[str]:
    """The forms of the Secret values in a request's body (a whole Secret, or a patch sent to one), remembered for
    every later error of this process (engine.core.redact.SEEN)."""
    to_secret = "/secrets/" in path + "/"
    if isinstance(body, list) and to_secret:  # a JSON patch: the values it sets
        body = {"data": [op.get("value") for op in body if isinstance(op, dict)]}
    elif not (isinstance(body, dict) and (to_secret or redact.is_secret_like(body))):
        return set()
    return redact.SEEN.remember({**body, "kind": "Secret"})


class KubeClient:
    """A thin, thread-safe client for the engine's requests."""

    def __init__(self, target: KubeTarget, *, pool_size: int = 16, timeout: float = 30.0) -> None:
        try:
            creds = credentials(target)
        except KubeConfigError as e:
            if target.in_cluster:
                raise
            where = target.kubeconfig or "the default kubeconfig ($KUBECONFIG or ~/.kube/config)"
            raise KubeConfigError(f"cannot load {where}: {e}; pass --kubeconfig/--context or set KUBECONFIG") from e
        self.host = creds.host
        self._creds = creds
        self._token_read = time.monotonic()
        self._headers: dict[str, str] = {"Accept": "application/json", "User-Agent": "kubectl-gitops"}
        if creds.token:
            self._headers["Authorization"] = f"Bearer {creds.token}"
        elif creds.username and creds.password:
            self._headers.update(urllib3.make_headers(basic_auth=f"{creds.username}:{creds.password}"))
        pool_args: dict[str, Any] = {
            "num_pools": 2,
            "maxsize": pool_size,
            "block": True,
            "retries": False,
            "timeout": urllib3.Timeout(connect=5.0, read=timeout),
            "cert_reqs": ssl.CERT_REQUIRED if creds.verify else ssl.CERT_NONE,
        }
        if creds.verify and creds.ca_file:
            pool_args["ca_certs"] = creds.ca_file
        if creds.cert_file:
            pool_args["cert_file"] = creds.cert_file
            pool_args["key_file"] = creds.key_file
        if creds.server_name:
            pool_args["server_hostname"] = creds.server_name
        self._http = urllib3.PoolManager(**pool_args)
        self._sent = 0  # requests sent: the reconciler's metric
        self._sent_lock = threading.Lock()
        self._resources: dict[tuple[str, str, str], ResourceInfo] | None = None
        self._preferred: dict[tuple[str, str], ResourceInfo] = {}

    # --- transport -------------------------------------------------------------------------------------------
    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.exchange(method, path, **kwargs)[1]

    def exchange(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        accept: str | None = None,
    ) -> tuple[int, Any]:
        """One request; returns the HTTP status and the decoded body."""
        url = self.host + path + (f"?{urlencode(params)}" if params else "")
        if self._creds.token_file and time.monotonic() - self._token_read > TOKEN_REREAD_SECONDS:
            self._reread_token()
        self._count()
        headers = dict(self._headers)
        if accept:
            headers["Accept"] = accept
        data = None
        secret: set[str] = set()
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = content_type
            secret = _secret_forms(path, body)
        try:
            response = self._http.request(method, url, body=data, headers=headers, preload_content=True)
        except urllib3.exceptions.HTTPError as e:
            raise ClusterUnreachable(
                f"the API server at {self.host} did not answer ({e}); check that the cluster runs "
                "and that --context/--kubeconfig point at it"
            ) from e
        if response.status >= 400:
            message, reason = _status_message(response.status, response.data)
            # The API server may quote the values of the Secret it was sent: none of them stays in the message.
            raise ApiError(redact.scrub(message, secret), response.status, reason)
        if not response.data:
            return response.status, None
        return response.status, json.loads(response.data)

    def _count(self) -> None:
        with self._sent_lock:
            self._sent += 1

    def requests_sent(self) -> int:
        """How many requests this client has sent (watches included)."""
        return self._sent

    def _reread_token(self) -> None:
        assert self._creds.token_file is not None
        with contextlib.suppress(OSError):
            token = Path(self._creds.token_file).read_text().strip()
            if token:
                self._headers = {**self._headers, "Authorization": f"Bearer {token}"}
        self._token_read = time.monotonic()

    # --- discovery -------------------------------------------------------------------------------------------
    def _discover(self) -> dict[tuple[str, str, str], ResourceInfo]:
        found: dict[tuple[str, str, str], ResourceInfo] = {}
        self._preferred = {}
        for root in ("/api", "/apis"):
            listing = self.request("GET", root, accept=DISCOVERY_V2)
            if not isinstance(listing, dict) or listing.get("kind") != "APIGroupDiscoveryList":
                raise ApiError(f"the API server at {self.host} does not serve aggregated discovery (v1.30+ needed)")
            for group_doc in listing.get("items") or []:
                group = (group_doc.get("metadata") or {}).get("name") or ""
                # Versions come in order of preference: the first one seen for a kind is its preferred version.
                for version_doc in group_doc.get("versions") or []:
                    version = version_doc.get("version")
                    for res in version_doc.get("resources") or []:
                        kind = (res.get("responseKind") or {}).get("kind")
                        if not kind or "/" in res.get("resource", ""):
                            continue
                        subs = [sub for sub in res.get("subresources") or [] if sub.get("subresource")]
                        writes_itself = frozenset(
                            str(sub["subresource"])
                            for sub in subs
                            if (sub.get("responseKind") or {}).get("kind") == kind
                            and {"update", "patch"} & set(sub.get("verbs") or [])
                        )
                        subresources = frozenset(str(sub["subresource"]) for sub in subs)
                        namespaced = res.get("scope") == "Namespaced"
                        info = ResourceInfo(
                            group, version, kind, res["resource"], namespaced, subresources, writes_itself
                        )
                        found.setdefault((group, version, kind), info)
                        self._preferred.setdefault((group, kind), info)
        return found

    def refresh_discovery(self) -> None:
        self._resources = self._discover()

    def resource_for(self, api_version: str, kind: str) -> ResourceInfo | None:
        if self._resources is None:
            self._resources = self._discover()
        group, version = split_api_version(api_version)
        return self._resources.get((group, version, kind))

    def preferred(self, group: str, kind: str) -> ResourceInfo | None:
        if self._resources is None:
            self._resources = self._discover()
        return self._preferred.get((group, kind))

    def preferred_resources(self) -> list[ResourceInfo]:
        """Every kind the cluster serves, each in its preferred version."""
        if self._resources is None:
            self._resources = self._discover()
        return list(self._preferred.values())

    def preferred_resource(self, group: str, plural: str) -> ResourceInfo | None:
        """The preferred version of the resource served as `group`/`plural` (what a registration names)."""
        return next((i for i in self.preferred_resources() if (i.group, i.plural) == (group, plural)), None)

    # --- verbs -----------------------------------------------------------------------------------------------
    def get(self, info: ResourceInfo, namespace: str, name: str) -> KubeObject | None:
        try:
            obj: KubeObject = self.request("GET", info.path(namespace, name))
        except ApiError as e:
            if e.status == 404:
                return None
            raise
        return obj

    def list_objects(
        self, info: ResourceInfo, *, namespace: str = "", label_selector: str = "", metadata_only: bool = False
    ) -> Iterator[KubeObject]:
        """Every object of a kind (in `namespace`, or all), page by page; `metadata_only`: only their apiVersion,
        kind and metadata (the server sends PartialObjectMetadata, so large bodies never cross the wire)."""
        params = {"limit": "500"}
        if label_selector:
            params["labelSelector"] = label_selector
        accept = METADATA_ONLY if metadata_only else None
        while True:
            page = self.request("GET", info.path(namespace), params=params, accept=accept)
            for item in page.get("items") or []:
                item.setdefault("apiVersion", info.api_version)
                item.setdefault("kind", info.kind)
                yield item
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return
            params = {**params, "continue": token}

    def list_versioned(self, info: ResourceInfo, *, label_selector: str = "") -> tuple[list[KubeObject], str]:
        """Every object of a kind in every namespace, and the list's resourceVersion to watch from."""
        params = {"limit": "500"}
        if label_selector:
            params["labelSelector"] = label_selector
        items: list[KubeObject] = []
        while True:
            page = self.request("GET", info.path(""), params=params)
            for item in page.get("items") or []:
                item.setdefault("apiVersion", info.api_version)
                item.setdefault("kind", info.kind)
                items.append(item)
            metadata = page.get("metadata") or {}
            if not metadata.get("continue"):
                return items, str(metadata.get("resourceVersion") or "")
            params = {**params, "continue": str(metadata["continue"])}

    def watch(
        self, info: ResourceInfo, *, resource_version: str, label_selector: str = "", timeout_seconds: int = 300
    ) -> Iterator[dict[str, Any]]:
        """One watch of a kind in every namespace from `resource_version`: its events ({"type", "object"}, bookmarks
        included) as the API server streams them, until the server ends the stream (after `timeout_seconds`). A
        watch holds its connection for its whole life: give watches a client of their own."""
        params = {
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        if label_selector:
            params["labelSelector"] = label_selector
        url = self.host + info.path("") + f"?{urlencode(params)}"
        self._count()
        if self._creds.token_file and time.monotonic() - self._token_read > TOKEN_REREAD_SECONDS:
            self._reread_token()
        try:
            response = self._http.request(
                "GET",
                url,
                headers=self._headers,
                preload_content=False,
                timeout=urllib3.Timeout(connect=5.0, read=timeout_seconds + 30.0),
            )
        except urllib3.exceptions.HTTPError as e:
            raise ClusterUnreachable(f"the API server at {self.host} did not answer a watch ({e})") from e
        try:
            if response.status >= 400:
                message, reason = _status_message(response.status, response.read())
                raise ApiError(message, response.status, reason)
            pending = b""
            try:
                for chunk in response.stream(65536):
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        if line.strip():
                            yield json.loads(line)
            except (urllib3.exceptions.HTTPError, OSError) as e:
                raise ClusterUnreachable(f"the watch of {info.plural} was cut ({e})") from e
        finally:
            response.release_conn()

    def apply(
        self,
        info: ResourceInfo,
        obj: KubeObject,
        *,
        dry_run: bool = False,
        force: bool = True,
        field_manager: str = FIELD_MANAGER,
    ) -> Applied:
        """Server-side apply: the object as the server answered, and whether the apply created it (HTTP 201)."""
        key = key_of(obj)
        params = {"fieldManager": field_manager, "force": "true" if force else "false"}
        if dry_run:
            params["dryRun"] = "All"
        status, result = self.exchange(
            "PATCH",
            info.path(key.namespace, key.name),
            body=obj,
            params=params,
            content_type="application/apply-patch+yaml",
        )
        return Applied(result, created=status == 201)

    def replace(self, info: ResourceInfo, obj: KubeObject, *, dry_run: bool = False) -> KubeObject:
        """PUT: the whole object as given (it must carry the live resourceVersion)."""
        key = key_of(obj)
        params = {"fieldManager": FIELD_MANAGER, **({"dryRun": "All"} if dry_run else {})}
        result: KubeObject = self.request("PUT", info.path(key.namespace, key.name), body=obj, params=params)
        return result

    def json_patch(
        self, info: ResourceInfo, key: ObjectKey, ops: list[dict[str, Any]], *, field_manager: str = FIELD_MANAGER
    ) -> KubeObject:
        result: KubeObject = self.request(
            "PATCH",
            info.path(key.namespace, key.name),
            body=ops,
            params={"fieldManager": field_manager},
            content_type="application/json-patch+json",
        )
        return result

    def merge_patch(
        self, info: ResourceInfo, key: ObjectKey, patch: Mapping[str, Any], *, subresource: str = ""
    ) -> KubeObject:
        path = info.path(key.namespace, key.name) + (f"/{subresource}" if subresource else "")
        result: KubeObject = self.request(
            "PATCH",
            path,
            body=patch,
            params={"fieldManager": FIELD_MANAGER},
            content_type="application/merge-patch+json",
        )
        return result

    def create(self, info: ResourceInfo, obj: KubeObject) -> KubeObject:
        result: KubeObject = self.request("POST", info.path(key_of(obj).namespace), body=obj)
        return result

    def delete(self, info: ResourceInfo, key: ObjectKey, *, uid: str = "") -> bool:
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            self.request("DELETE", info.path(key.namespace, key.name), body=body)
        except ApiError as e:
            if e.status == 404:
                return False
            raise
        return True

    def whoami(self) -> str:
        """The authenticated user name, as the API server sees it."""
        review = self.request(
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
        return str(((review.get("status") or {}).get("userInfo") or {}).get("username") or "unknown")

    def version(self) -> str:
        return str(self.request("GET", "/version").get("gitVersion"))


def server_version(target: KubeTarget) -> str:
    return KubeClient(target).version()
