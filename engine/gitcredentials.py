"""Git credentials from the Secret an Application names (spec.source.secretRef), for every front door that reads
Git for it: the plugin as the person running it, the webhook and the reconciler as their ServiceAccounts.

The Secret lives beside the Application and holds, as Flux's GitRepository secrets do, `username` and `password`
(a token for HTTPS), or `identity` (an SSH private key) and `known_hosts`.
"""

from __future__ import annotations

import base64
import binascii
from typing import Protocol

from .adapters.source import GitCredentials, GitSource
from .core.application import ApplicationSpec
from .core.errors import ApiError, SourceError
from .core.objects import KubeObject
from .core.resources import ResourceInfo


class Cluster(Protocol):
    def resource_for(self, api_version: str, kind: str) -> ResourceInfo | None: ...
    def get(self, info: ResourceInfo, namespace: str, name: str) -> KubeObject | None: ...


KEYS = ("username", "password", "identity", "known_hosts")


def git_credentials(cluster: Cluster, spec: ApplicationSpec) -> GitCredentials | None:
    """The credentials spec.source.secretRef names (None when it names none); a clear error when they cannot be
    read, never their values."""
    if not spec.secret_ref:
        return None
    where = f"Secret {spec.ref.namespace}/{spec.secret_ref} (spec.source.secretRef of {spec.ref})"
    info = cluster.resource_for("v1", "Secret")
    if info is None:
        raise SourceError(f"cannot read {where}: the cluster serves no Secrets")
    try:
        secret = cluster.get(info, spec.ref.namespace, spec.secret_ref)
    except ApiError as e:
        if e.status == 403:
            raise SourceError(f"cannot read {where}: this identity may not get it ({e})") from e
        raise SourceError(f"cannot read {where}: {e}") from e
    if secret is None:
        raise SourceError(f"{where} does not exist; create it with username and password, or identity and known_hosts")
    values: dict[str, str] = {}
    for key, encoded in (secret.get("data") or {}).items():
        if key in KEYS:
            try:
                values[key] = base64.b64decode(str(encoded)).decode()
            except (binascii.Error, UnicodeDecodeError) as e:
                raise SourceError(f"{where}: key {key} is not base64-encoded UTF-8 text") from e
    if not values.get("password") and not values.get("identity"):
        raise SourceError(f"{where} has neither password (HTTPS) nor identity (SSH)")
    return GitCredentials(name=f"{spec.ref.namespace}/{spec.secret_ref}", **values)


def with_credentials(source: GitSource, cluster: Cluster, spec: ApplicationSpec) -> GitSource:
    """`source`, set to fetch with the Application's credentials (if it names any)."""
    if spec.secret_ref:
        source.credentials = git_credentials(cluster, spec)
    return source
