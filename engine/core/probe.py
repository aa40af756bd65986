"""Git's object as the API server would store it, from a dry-run apply of a probe: the probe made of Git's object,
and Git's object as requests are judged against it made of the server's answer (engine.gitstate sends the probe)."""

from __future__ import annotations

from typing import Any

from .drift import declared_fields
from .objects import FIELD_MANAGER, TRACKING_ANNOTATION, TRACKING_LABEL, KubeObject, ObjectKey, key_of

CRD = ("apiextensions.k8s.io", "CustomResourceDefinition")
RBAC = "rbac.authorization.k8s.io"
ROLES = ("Role", "ClusterRole")
BINDINGS = ("RoleBinding", "ClusterRoleBinding")
# What a binding's probe binds instead of Git's role: a ClusterRole that every authenticated identity holds (the API
# server keeps it), so that the webhook may bind it without `bind`.
PROBE_ROLE_REF = {"apiGroup": RBAC, "kind": "ClusterRole", "name": "system:discovery"}


def plural_of(obj: KubeObject) -> str:
    return str(((obj.get("spec") or {}).get("names") or {}).get("plural") or "")


def probe(obj: KubeObject, token: str) -> KubeObject:
    """Git's object under a probe name, without the tracking label (the probe must not reach the admission webhook
    itself), and what the API server checks against the webhook's own rights, even in a dry run, taken out (put back
    by `restored`; the API server defaults none of it):

    - a CRD's name must be its plural and its group: its probe takes a plural of its own as well;
    - a Role's or ClusterRole's rules, and an aggregationRule: creating them takes holding every permission they grant
      (or `escalate`), and cluster-admin for an aggregationRule;
    - a binding's roleRef: creating it takes holding the role's permissions (or `bind`), and the role may not exist
      yet (the sync creates it)."""
    key = key_of(obj)
    labels = {k: v for k, v in (obj["metadata"].get("labels") or {}).items() if k != TRACKING_LABEL}
    metadata = {**obj["metadata"], "name": f"gitops-probe-{token}", "labels": labels}
    probe = {**obj, "metadata": metadata}
    if (key.group, key.kind) == CRD:
        spec = obj.get("spec") or {}
        plural = f"gitopsprobe{token}"
        metadata["name"] = f"{plural}.{spec.get('group', '')}"
        probe["spec"] = {**spec, "names": {**(spec.get("names") or {}), "plural": plural}}
    elif key.group == RBAC and key.kind in ROLES:
        probe.pop("aggregationRule", None)
        probe["rules"] = []
    elif key.group == RBAC and key.kind in BINDINGS:
        probe["roleRef"] = dict(PROBE_ROLE_REF)
    return probe


def restored(obj: KubeObject, stored: KubeObject, declared: dict[str, Any]) -> KubeObject:
    """The probe's answer with what `probe` took out of Git's object put back (and declared, as Git declares it)."""
    key = key_of(obj)
    if (key.group, key.kind) == CRD:
        spec = stored.get("spec") or {}
        return {**stored, "spec": {**spec, "names": {**(spec.get("names") or {}), "plural": plural_of(obj)}}}
    if key.group != RBAC or key.kind not in (*ROLES, *BINDINGS):
        return stored
    out = dict(stored)
    if key.kind in BINDINGS:
        out["roleRef"] = obj.get("roleRef")  # declared as the probe's was, field by field
        return out
    for name in ("rules", "aggregationRule"):
        declared.pop(f"f:{name}", None)
        if name in obj:
            declared[f"f:{name}"] = {}  # atomic lists: compared whole
            if obj[name] not in (None, [], {}):  # else what the API server made of none (rules: null)
                out[name] = obj[name]
    return out


def from_probe(answered: KubeObject, key: ObjectKey, app_name: str) -> tuple[KubeObject, dict[str, Any]]:
    """Git's object as requests are judged against it, from what the API server answered to its probe's dry run:
    under its own name and namespace, with our tracking label back on and the server's bookkeeping off; and what Git
    declares of it (what our manager applied), our tracking marks among it."""
    declared = declared_fields(answered, FIELD_MANAGER)
    # Our tracking marks are Git's: taking them off would take the object out of the webhook's sight.
    marks = declared.setdefault("f:metadata", {})
    marks.setdefault("f:labels", {})[f"f:{TRACKING_LABEL}"] = {}
    marks.setdefault("f:annotations", {})[f"f:{TRACKING_ANNOTATION}"] = {}
    metadata = {**answered.get("metadata", {}), "name": key.name}
    if key.namespace:
        metadata["namespace"] = key.namespace
    metadata["labels"] = {**(metadata.get("labels") or {}), TRACKING_LABEL: app_name}
    for noise in ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation"):
        metadata.pop(noise, None)
    return {**answered, "metadata": metadata}, declared
