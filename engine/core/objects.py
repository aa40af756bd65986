"""Object identity and the tracking marks that say which Application manages an object."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

API_GROUP = "gitops.kubectl-gitops.io"
FIELD_MANAGER = "kubectl-gitops"
TRACKING_LABEL = f"{API_GROUP}/application"
TRACKING_ANNOTATION = f"{API_GROUP}/tracking-id"
# The commit a sync applied: lets the admission webhook judge a sync to a commit it has not loaded yet.
REVISION_ANNOTATION = f"{API_GROUP}/revision"
# What the webhook's unjudged denial asks of its sender (engine.core.admission): a sync that reads it in a refusal
# tries that apply again a little later (engine.sync), since the webhook's state of a CRD just made or of an
# Application just created is on its way.
TRY_AGAIN = "try again once it has loaded Git's state"

KubeObject = dict[str, Any]


@dataclass(frozen=True, order=True)
class ObjectKey:
    """An object's identity: group, kind, namespace ("" when cluster-scoped) and name."""

    group: str
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        kind = f"{self.kind}.{self.group}" if self.group else self.kind
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{kind} {where}{self.name}"

    @property
    def group_kind(self) -> tuple[str, str]:
        return self.group, self.kind

    def as_dict(self) -> dict[str, str]:
        return {"group": self.group, "kind": self.kind, "namespace": self.namespace, "name": self.name}


def split_api_version(api_version: str) -> tuple[str, str]:
    """`apps/v1` -> ("apps", "v1"); `v1` -> ("", "v1")."""
    group, _, version = api_version.rpartition("/")
    return group, version


def key_of(obj: Mapping[str, Any]) -> ObjectKey:
    metadata = obj.get("metadata") or {}
    group, _ = split_api_version(str(obj.get("apiVersion", "")))
    return ObjectKey(group, str(obj.get("kind", "")), str(metadata.get("namespace") or ""), str(metadata["name"]))


class DriftMode(StrEnum):
    """What the admission webhook does with a change that moves an Application's object away from Git."""

    ENFORCE = "enforce"  # deny it
    WARN = "warn"  # allow it with a warning, and record it
    AUDIT = "audit"  # allow it silently, and record it
    OFF = "off"  # allow it, record nothing


DRIFT_MODES = tuple(m.value for m in DriftMode)


@dataclass(frozen=True)
class AppRef:
    """An Application by namespace and name."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def tracking_id(app: AppRef, key: ObjectKey) -> str:
    """The annotation value that ties one object to one Application (a copied label alone does not)."""
    return f"{app.namespace}/{app.name}:{key.group}/{key.kind}:{key.namespace}/{key.name}"


def is_tracked_by(obj: Mapping[str, Any], app: AppRef) -> bool:
    """True when both marks point at `app` and the annotation names this very object."""
    metadata = obj.get("metadata") or {}
    labels = metadata.get("labels") or {}
    annotations = metadata.get("annotations") or {}
    if labels.get(TRACKING_LABEL) != app.name:
        return False
    return bool(annotations.get(TRACKING_ANNOTATION) == tracking_id(app, key_of(obj)))


def with_tracking(obj: KubeObject, app: AppRef, revision: str = "") -> KubeObject:
    """A copy of `obj` that carries the tracking label and annotations (and the commit, when given)."""
    out = dict(obj)
    metadata = dict(out.get("metadata") or {})
    metadata["labels"] = {**(metadata.get("labels") or {}), TRACKING_LABEL: app.name}
    marks = {TRACKING_ANNOTATION: tracking_id(app, key_of(out))}
    if revision:
        marks[REVISION_ANNOTATION] = revision
    metadata["annotations"] = {**(metadata.get("annotations") or {}), **marks}
    out["metadata"] = metadata
    return out


@dataclass(frozen=True)
class Claim:
    """An Application an object claims by our tracking marks: the annotation names its namespace, the label only its
    name (namespace "": any)."""

    namespace: str
    name: str

    def matches(self, ref: AppRef) -> bool:
        return ref.name == self.name and self.namespace in ("", ref.namespace)


def claims_of(*objects: KubeObject | None) -> tuple[Claim, ...]:
    """The Applications these objects (a request's object and oldObject) claim, by label or annotation."""
    out: list[Claim] = []
    for obj in objects:
        metadata = (obj or {}).get("metadata") or {}
        labels = metadata.get("labels") if isinstance(metadata, dict) else None
        annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
        name = (labels or {}).get(TRACKING_LABEL) if isinstance(labels, dict) else None
        if isinstance(name, str) and name:
            out.append(Claim("", name))
        tracking = (annotations or {}).get(TRACKING_ANNOTATION) if isinstance(annotations, dict) else None
        if isinstance(tracking, str) and ":" in tracking:
            namespace, _, app = tracking.split(":", 1)[0].partition("/")
            if namespace and app:
                out.append(Claim(namespace, app))
    return tuple(dict.fromkeys(out))
