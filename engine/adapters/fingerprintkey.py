"""Where sync fingerprints (engine.core.fingerprint) live: the key that makes them, a Secret next to the Applications
made by the first sync that needs it; and each Application's fingerprints, a Secret of its own beside it (16 bytes an
object: 20,000 objects are 320 KB, which the Application's status, already holding the inventory, has no room for).
Both are read by every diff, status and sync that may trust a fingerprint; neither is writable with `edit` in an
application namespace."""

from __future__ import annotations

import base64
import secrets
from typing import Protocol

from ..core.errors import ApiError
from ..core.fingerprint import from_blob, to_blob
from ..core.objects import AppRef, KubeObject
from ..core.resources import Applied, ResourceInfo

FINGERPRINT_SECRET = "kubectl-gitops-fingerprint-key"
FIELD = "hmac-sha256"
KEPT_FIELD = "fingerprints"
KEPT_PREFIX = "kubectl-gitops-fingerprints-"  # + the Application's name (at most 63 characters: fits a Secret's 253)


class SecretStore(Protocol):
    def resource_for(self, api_version: str, kind: str) -> ResourceInfo | None: ...
    def get(self, info: ResourceInfo, namespace: str, name: str) -> KubeObject | None: ...
    def create(self, info: ResourceInfo, obj: KubeObject) -> KubeObject: ...
    def apply(self, info: ResourceInfo, obj: KubeObject, *, dry_run: bool = False, force: bool = True) -> Applied: ...


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


def read_kept(cluster: SecretStore, app: AppRef) -> frozenset[str]:
    """The fingerprints `app`'s last sync left (none when there are none or this identity may not read them)."""
    info = cluster.resource_for("v1", "Secret")
    if info is None:
        return frozenset()
    try:
        found = cluster.get(info, app.namespace, KEPT_PREFIX + app.name)
    except ApiError as e:
        if e.status in (401, 403, 404):
            return frozenset()
        raise
    value = ((found or {}).get("data") or {}).get(KEPT_FIELD)
    return from_blob(base64.b64decode(value)) if isinstance(value, str) else frozenset()


def write_kept(cluster: SecretStore, app: AppRef, fingerprints: list[str]) -> bool:
    """Replaces `app`'s fingerprints with those of this sync (server-side apply of the whole Secret). False when this
    identity may not write them: the next diff compares every object, as it would without fingerprints."""
    info = cluster.resource_for("v1", "Secret")
    if info is None:
        return False
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": KEPT_PREFIX + app.name, "namespace": app.namespace},
        "type": "Opaque",
        "data": {KEPT_FIELD: base64.b64encode(to_blob(fingerprints)).decode()},
    }
    try:
        cluster.apply(info, secret)
    except ApiError as e:
        if e.status in (401, 403):
            return False
        raise
    return True
