"""What is compared and shown of an object: server bookkeeping removed, Secret values replaced by keyed markers."""

from __future__ import annotations

import copy
import hashlib
import hmac
from typing import Any

from .objects import KubeObject

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
_SERVER_METADATA = (
    "managedFields",
    "resourceVersion",
    "uid",
    "generation",
    "creationTimestamp",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)


def normalized_view(obj: KubeObject) -> KubeObject:
    """What `normalize` answers, without copying what it leaves as it is: the top level, metadata and annotations
    are new, everything below them is shared with `obj`. For reading (digests): a deep copy of 500 objects took
    most of a no-op sync's record."""
    out = {k: v for k, v in obj.items() if k != "status"}
    metadata = out.get("metadata")
    if isinstance(metadata, dict):
        metadata = {k: v for k, v in metadata.items() if k not in _SERVER_METADATA}
        annotations = metadata.get("annotations")
        if isinstance(annotations, dict):
            annotations = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
            if annotations:
                metadata["annotations"] = annotations
            else:
                metadata.pop("annotations")
        out["metadata"] = metadata
    return out


def normalize(obj: KubeObject) -> KubeObject:
    """A copy without status and server-managed metadata (including kubectl's last-applied annotation)."""
    out = copy.deepcopy(obj)
    out.pop("status", None)
    metadata = out.get("metadata")
    if isinstance(metadata, dict):
        for field in _SERVER_METADATA:
            metadata.pop(field, None)
        annotations = metadata.get("annotations")
        if isinstance(annotations, dict):
            annotations.pop(LAST_APPLIED, None)
            if not annotations:
                metadata.pop("annotations")
    return out


def is_secret(obj: KubeObject) -> bool:
    return obj.get("kind") == "Secret" and obj.get("apiVersion") == "v1"


class SecretMasker:
    """Replaces Secret values with `<secret:...>` markers from an HMAC under a key that never leaves the process.

    Equal values get equal markers under one key, so a change is visible while the value is not, and without the key
    a marker cannot be checked against guessed values.
    """

    def __init__(self, key: bytes) -> None:
        self._key = key

    def marker(self, value: Any) -> str:
        digest = hmac.new(self._key, str(value).encode(), hashlib.sha256).hexdigest()
        return f"<secret:{digest[:16]}>"

    def mask(self, obj: KubeObject) -> KubeObject:
        """A copy of a Secret with every value in `data` and `stringData` masked; other objects are returned as is."""
        if not is_secret(obj):
            return obj
        out = dict(obj)
        for field in ("data", "stringData"):
            values = out.get(field)
            if isinstance(values, dict):
                out[field] = {k: self.marker(v) for k, v in values.items()}
        metadata = out.get("metadata")
        annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
        # kubectl's client-side apply copies the whole Secret, values included, into this annotation.
        if isinstance(metadata, dict) and isinstance(annotations, dict) and LAST_APPLIED in annotations:
            annotations = {**annotations, LAST_APPLIED: self.marker(annotations[LAST_APPLIED])}
            out["metadata"] = {**metadata, "annotations": annotations}
        return out

    def mask_value(self, obj: KubeObject, pointer: str, value: Any) -> Any:
        """A value taken from `obj` at `pointer`, masked when it is (or holds) Secret data."""
        if not is_secret(obj):
            return value
        if pointer.startswith(("/data", "/stringData")) or pointer.startswith("/metadata/annotations"):
            if isinstance(value, dict):
                return {k: self.marker(v) for k, v in value.items()}
            return self.marker(value)
        if pointer == "" or pointer == "/" or pointer == "/metadata":
            return "<secret object>"
        return value
