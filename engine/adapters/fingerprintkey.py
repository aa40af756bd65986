"""The key that signs sync fingerprints (engine.core.fingerprint): a Secret next to the Applications, made by the first
sync that needs it, read by every diff, status and sync that may trust a fingerprint."""

from __future__ import annotations

import base64
import secrets
from typing import Protocol

from ..core.errors import ApiError
from ..core.objects import KubeObject
from ..core.resources import ResourceInfo

FINGERPRINT_SECRET = "kubectl-gitops-fingerprint-key"
FIELD = "hmac-sha256"


class SecretStore(Protocol):
    def resource_for(self, api_version: str, kind: str) -> ResourceInfo | None: ...
    def get(self, info: ResourceInfo, namespace: str, name: str) -> KubeObject | None: ...
    def create(self, info: ResourceInfo, obj: KubeObject) -> KubeObject: ...


def _decode(found: KubeObject | None) -> bytes | None:
    value = ((found or {}).get("data") or {}).get(FIELD)
    if not isinstance(value, str):
        return None
    key = base64.b64decode(value)
    return key if len(key) >= 32 else None


def read_key(cluster: SecretStore, namespace: str) -> bytes | None:
    """The key, or None when there is none yet or this identity may not read it: then nothing is trusted and every
    object is compared in full."""
    info = cluster.resource_for("v1", "Secret")
    if info is None:
        return None
    try:
        return _decode(cluster.get(info, namespace, FINGERPRINT_SECRET))
    except ApiError as e:
        if e.status in (401, 403, 404):
            return None
        raise


def ensure_key(cluster: SecretStore, namespace: str) -> bytes | None:
    """The key, made when missing (a sync's: its fingerprints need it). None when this identity may neither read nor
    make it: the sync then records no fingerprints."""
    found = read_key(cluster, namespace)
    info = cluster.resource_for("v1", "Secret")
    if found is not None or info is None:
        return found
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": FINGERPRINT_SECRET, "namespace": namespace},
        "type": "Opaque",
        "data": {FIELD: base64.b64encode(secrets.token_bytes(32)).decode()},
    }
    try:
        return _decode(cluster.create(info, secret))
    except ApiError as e:
        if e.status == 409:  # made meanwhile by another sync
            return read_key(cluster, namespace)
        if e.status in (401, 403):
            return None
        raise
