"""Drift of one object: where the live object strays from Git, as `changed` and `added` field paths.

`desired` is Git's manifest as the API server would store it: the result of a server-side dry-run apply under our
field manager. Its managedFields tell exactly which fields Git declares, so server defaults are never compared, and
the live object's managedFields tell who added what Git does not declare.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import jsonpatch

from . import fieldsets, text
from .fieldsets import MISSING, FieldPath
from .normalize import SecretMasker, is_secret, normalize
from .objects import FIELD_MANAGER, REVISION_ANNOTATION, KubeObject, ObjectKey

# Managers of the cluster's own machinery: what they write is the cluster working, not drift.
CONTROLLER_MANAGERS = frozenset(
    {
        "kube-controller-manager",
        "kube-scheduler",
        "kubelet",
        "cloud-controller-manager",
        "kube-apiserver",
    }
)
SCALABLE_KINDS = frozenset({"Deployment", "StatefulSet", "ReplicaSet", "ReplicationController"})
UNKNOWN_SCALER = "unrecorded-scale"
# The manager named for what no managedFields entry owns (a client may send empty managedFields).
UNRECORDED = "unrecorded"
# `kubectl rollout restart` is an operation, not a change of configuration.
DEFAULT_IGNORES: Mapping[tuple[str, str], tuple[str, ...]] = {
    ("*", "*"): ("/spec/template/metadata/annotations/kubectl.kubernetes.io~1restartedAt",),
}


class DriftKind(StrEnum):
    CHANGED = "changed"
    ADDED = "added"


class ObjectState(StrEnum):
    SYNCED = "synced"
    MODIFIED = "modified"
    MISSING = "missing"
    EXTRA = "extra"


@dataclass(frozen=True)
class DriftItem:
    """One drifted field: its path, kind, Git's value and the live value (None when absent), and for `added` the
    manager that owns it."""

    path: str
    kind: DriftKind
    desired: Any = None
    live: Any = None
    manager: str = ""
    field_path: FieldPath = ()

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "kind": self.kind.value}
        if self.manager:
            out["manager"] = self.manager
        return out


@dataclass(frozen=True)
class IgnoreRule:
    """JSON pointers to leave out of the comparison for one group/kind ("*" matches any)."""

    group: str
    kind: str
    pointers: tuple[str, ...]

    def matches(self, key: ObjectKey) -> bool:
        return self.group in ("*", key.group) and self.kind in ("*", key.kind)


@dataclass(frozen=True)
class DriftPolicy:
    ignore: tuple[IgnoreRule, ...] = tuple(IgnoreRule(g, k, p) for (g, k), p in DEFAULT_IGNORES.items())
    controller_managers: frozenset[str] = CONTROLLER_MANAGERS
    field_manager: str = FIELD_MANAGER
    autoscaled: bool = False  # an HPA of the Application owns this object's replicas

    def ignored_pointers(self, key: ObjectKey) -> tuple[str, ...]:
        return tuple(p for rule in self.ignore if rule.matches(key) for p in rule.pointers)


def _is_ignored(pointer: str, ignored: Sequence[str]) -> bool:
    return any(pointer == p or pointer.startswith(p + "/") for p in ignored)


def _minimal(paths: Iterable[FieldPath]) -> list[FieldPath]:
    """Drops every path that lies under another one in the set."""
    ordered = sorted(set(paths), key=len)
    kept: list[FieldPath] = []
    for path in ordered:
        if not any(path[: len(k)] == k for k in kept):
            kept.append(path)
    return kept


def declared_fields(desired: KubeObject, field_manager: str = FIELD_MANAGER) -> dict[str, Any]:
    """The union of the field sets our manager applied: what Git declares of this object."""
    merged: dict[str, Any] = {}

    def merge(into: dict[str, Any], more: Mapping[str, Any]) -> None:
        for k, v in more.items():
            if isinstance(v, Mapping) and isinstance(into.get(k), dict):
                merge(into[k], v)
            else:
                into[k] = copy.deepcopy(dict(v)) if isinstance(v, Mapping) else v

    for entry in fieldsets.manager_entries(desired):
        if entry.manager == field_manager and entry.operation == "Apply" and not entry.subresource:
            merge(merged, entry.fields)
    if is_secret(desired):
        return dict(fieldsets.secret_declared(merged))
    return merged


# Identity, and the revision mark (it follows every commit, which is no difference in the object itself).
_IDENTITY = {
    ("f:metadata", "f:name"),
    ("f:metadata", "f:namespace"),
    ("f:metadata", "f:annotations", f"f:{REVISION_ANNOTATION}"),
}


def changed(desired: KubeObject, live: KubeObject, declared: Mapping[str, Any]) -> list[tuple[FieldPath, Any, Any]]:
    """(path, Git's value, live value) for every declared field whose live value differs or is gone."""
    found: list[FieldPath] = []
    for path in fieldsets.leaves(declared, containers=False):
        if path in _IDENTITY:
            continue
        want = fieldsets.lookup(desired, path)
        have = fieldsets.lookup(live, path)
        if want == have:
            continue
        # A whole list element or map that is gone live is one change, not one per field inside it.
        for depth in range(1, len(path)):
            if (
                fieldsets.lookup(live, path[:depth]) is MISSING
                and fieldsets.lookup(desired, path[:depth]) is not MISSING
            ):
                path = path[:depth]
                break
        found.append(path)
    return [(path, fieldsets.lookup(desired, path), fieldsets.lookup(live, path)) for path in _minimal(found)]


def _counts_as_added(path: FieldPath) -> bool:
    """Where a field Git does not declare is drift: the content, and the owner references (a decoy owner named there
    makes the garbage collector delete the object), but not labels and annotations Git does not declare."""
    if fieldsets.is_owner_reference(path):
        return True
    return fieldsets.is_content(path) and not fieldsets.is_metadata_label_or_annotation(path)


def added(live: KubeObject, declared: Mapping[str, Any], policy: DriftPolicy) -> list[tuple[FieldPath, str]]:
    """(path, manager) for content fields that someone other than us or a controller owns and Git does not declare."""
    declared_prefixes = {leaf[:i] for leaf in fieldsets.leaves(declared) for i in range(1, len(leaf) + 1)}
    entries = fieldsets.manager_entries(live)
    # Every path some manager owns, with the managers owning it or something under it.
    owned_by: dict[FieldPath, list[str]] = {}
    owners: dict[FieldPath, str] = {}
    for entry in entries:
        if entry.subresource == "status":
            continue
        for path in fieldsets.leaves(entry.fields):
            for depth in range(1, len(path) + 1):
                owned_by.setdefault(path[:depth], []).append(entry.manager)
            if entry.manager == policy.field_manager or entry.manager in policy.controller_managers:
                continue
            if not _counts_as_added(path):
                continue
            # Under a field Git declares as a leaf is still drift: a leaf that is an atomic value has no owned
            # sub-paths at all, so an owned sub-path means a map Git declared empty (`resources: {}`).
            if path in declared_prefixes:
                continue
            if fieldsets.lookup(live, path) is MISSING:
                continue
            owners.setdefault(path, entry.manager)

    def owner(path: FieldPath) -> str | None:
        """Who put what is at `path` there: None when it is ours or a controller's (not drift)."""
        managers = owned_by.get(path, [])
        others = [m for m in managers if m != policy.field_manager and m not in policy.controller_managers]
        if others:
            return others[0]
        return None if managers else UNRECORDED

    # A second list item under a key Git declares (or anyone owns): the first one is the item of that key.
    elements = {p for p in declared_prefixes | set(owned_by) if fieldsets.is_element(p[-1]) and _counts_as_added(p)}
    for element in sorted(elements):
        for index in fieldsets.duplicates(live, element):
            manager = owner(element)
            if manager is not None:
                owners.setdefault((*element[:-1], f"i:{index}"), manager)
    # An owner reference Git does not declare that no manager owns (managedFields can be cleared by any client).
    references = fieldsets.lookup(live, ("f:metadata", "f:ownerReferences"))
    for reference in references if isinstance(references, list) else []:
        if not isinstance(reference, dict) or "uid" not in reference:
            continue
        path = ("f:metadata", "f:ownerReferences", "k:" + json.dumps({"uid": reference["uid"]}, separators=(",", ":")))
        if path not in declared_prefixes and path not in owned_by:
            owners.setdefault(path, UNRECORDED)
    replicas = ("f:spec", "f:replicas")
    if (
        live.get("kind") in SCALABLE_KINDS
        and not policy.autoscaled
        and replicas not in declared_prefixes
        and replicas not in owners
        and fieldsets.lookup(live, replicas) not in (MISSING, 1)
        and not any(replicas in set(fieldsets.leaves(e.fields)) for e in entries)
    ):
        # A scale through the subresource of replicas nobody owned leaves no managedFields entry behind (seen on
        # v1.37): a replica count Git leaves open that is not the default, with no owner, was set by hand.
        owners[replicas] = UNKNOWN_SCALER
    return sorted((path, owners[path]) for path in _minimal(owners))


def remove_fields(obj: KubeObject, paths: Iterable[FieldPath]) -> KubeObject:
    """A copy of `obj` without the given fields (resolved one at a time, so list indices never go stale)."""
    out = copy.deepcopy(obj)

    def order(path: FieldPath) -> list[tuple[int, Any]]:
        # Items named by index go first, highest first, while every index still means what it meant.
        return [(1, int(s[2:])) if s.startswith("i:") and s[2:].isdigit() else (0, s) for s in path]

    for path in sorted(paths, key=order, reverse=True):
        parent = fieldsets.lookup(out, path[:-1])
        if parent is MISSING:
            continue
        last = path[-1]
        kind, _, raw = last.partition(":")
        if kind == "f" and isinstance(parent, dict):
            parent.pop(raw, None)
        elif isinstance(parent, list):
            element = fieldsets.lookup(parent, (last,))
            if element is not MISSING:
                parent.remove(element)
    return out


@dataclass
class ObjectDiff:
    """How one object differs from Git: its state, drifted paths, and normalized, masked views for display."""

    key: ObjectKey
    state: ObjectState
    items: list[DriftItem] = field(default_factory=list)
    live: KubeObject | None = None  # normalized and masked
    target: KubeObject | None = None  # what a sync makes of it: normalized and masked
    patch: list[dict[str, Any]] = field(default_factory=list)  # RFC 6902, live -> target

    @property
    def drifted(self) -> bool:
        return self.state is not ObjectState.SYNCED

    def added_paths(self) -> list[FieldPath]:
        return [item.field_path for item in self.items if item.kind is DriftKind.ADDED]

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.key.as_dict(),
            "state": self.state.value,
            "drift": [item.as_dict() for item in self.items],
            "patch": self.patch,
        }


def _mask(masker: SecretMasker, obj: KubeObject | None) -> KubeObject | None:
    return None if obj is None else masker.mask(normalize(obj))


def _restore_ignored(target: KubeObject, live: KubeObject, ignored: Sequence[str]) -> None:
    """Ignored fields are shown as they are live, so the displayed diff leaves them out too."""
    for pointer in ignored:
        value = jsonpatch.JsonPointer(pointer).resolve(live, MISSING)
        op = {"op": "remove", "path": pointer} if value is MISSING else {"op": "add", "path": pointer, "value": value}
        with contextlib.suppress(jsonpatch.JsonPointerException, jsonpatch.JsonPatchConflict):
            jsonpatch.apply_patch(target, [op], in_place=True)


def diff_object(
    key: ObjectKey,
    desired: KubeObject | None,
    live: KubeObject | None,
    policy: DriftPolicy,
    masker: SecretMasker,
) -> ObjectDiff:
    """The drift of one object. `desired` None means Git no longer has it (extra); `live` None means missing."""
    if desired is None:
        return ObjectDiff(key, ObjectState.EXTRA, live=_mask(masker, live), target=None)
    if live is None:
        target = _mask(masker, desired)
        return ObjectDiff(key, ObjectState.MISSING, target=target, patch=[{"op": "add", "path": "", "value": target}])

    ignored = policy.ignored_pointers(key)
    declared = declared_fields(desired, policy.field_manager)
    items: list[DriftItem] = []
    for path, want, have in changed(desired, live, declared):
        pointer = fieldsets.pointer(live, path) or fieldsets.pointer(desired, path) or fieldsets.display(path)
        if _is_ignored(pointer, ignored):
            continue
        items.append(
            DriftItem(
                path=pointer,
                kind=DriftKind.CHANGED,
                desired=None if want is MISSING else masker.mask_value(desired, pointer, want),
                live=None if have is MISSING else masker.mask_value(live, pointer, have),
                field_path=path,
            )
        )
    for path, manager in added(live, declared, policy):
        pointer = fieldsets.pointer(live, path) or fieldsets.display(path)
        if _is_ignored(pointer, ignored):
            continue
        items.append(
            DriftItem(
                path=pointer,
                kind=DriftKind.ADDED,
                live=masker.mask_value(live, pointer, fieldsets.lookup(live, path)),
                manager=manager,
                field_path=path,
            )
        )

    live_view = normalize(live)
    # What a sync removes, where Git's object has it too (a duplicate list item the dry-run merged away is not).
    removed = [
        i.field_path
        for i in items
        if i.kind is DriftKind.ADDED and fieldsets.lookup(desired, i.field_path) == fieldsets.lookup(live, i.field_path)
    ]
    target_view = normalize(remove_fields(desired, removed))
    _restore_ignored(target_view, live_view, ignored)
    live_masked, target_masked = masker.mask(live_view), masker.mask(target_view)
    patch = list(jsonpatch.make_patch(live_masked, target_masked)) if items else []
    state = ObjectState.MODIFIED if items else ObjectState.SYNCED
    return ObjectDiff(key, state, items=items, live=live_masked, target=target_masked, patch=patch)


_LABELLED = ("labels", "annotations")


def _owner(live: KubeObject, pointer: str) -> str:
    """The manager whose field set holds `pointer` (or a parent of it) in `live`."""
    for entry in fieldsets.manager_entries(live):
        for path in fieldsets.leaves(entry.fields):
            owned = fieldsets.pointer(live, path)
            if owned and (pointer == owned or pointer.startswith(owned + "/") or owned.startswith(pointer + "/")):
                return entry.manager
    return ""


def diff_replaced(
    key: ObjectKey, stored: KubeObject, live: KubeObject, policy: DriftPolicy, masker: SecretMasker
) -> ObjectDiff:
    """Drift against Git's object stored whole (a dry-run replace), for when a merge with the live object is invalid.

    Without our field set every content difference counts: fields only live has are `added` (by their owner),
    the rest `changed`. Labels and annotations Git does not declare are still not drift.
    """
    live_view, target_view = normalize(live), normalize(stored)
    ignored = policy.ignored_pointers(key)
    ops: list[dict[str, Any]] = []
    for op in jsonpatch.make_patch(live_view, target_view):
        if op["op"] == "move":  # a renamed key: the old one is gone, the new one set
            ops += [{"op": "remove", "path": op["from"]}, {"op": "add", "path": op["path"]}]
        elif op["op"] == "copy":
            ops.append({"op": "add", "path": op["path"]})
        else:
            ops.append(op)
    items: list[DriftItem] = []
    for op in ops:
        pointer = op["path"]
        parts = ["", *text.tokens(pointer)]
        if parts[1] == "status" or _is_ignored(pointer, ignored):
            continue
        labelled = [i for i in range(1, len(parts) - 1) if parts[i] == "metadata" and parts[i + 1] in _LABELLED]
        if labelled:
            # Labels and annotations count only where Git's object has that key (at any depth).
            if jsonpatch.JsonPointer(pointer).resolve(target_view, MISSING) is MISSING:
                continue
        elif parts[1] == "metadata" and not (len(parts) > 2 and parts[2] == "ownerReferences"):
            continue
        have = jsonpatch.JsonPointer(pointer).resolve(live_view, None)
        if op["op"] == "remove":
            manager = _owner(live, pointer) or "unknown"
            if parts[1] == "metadata" and manager in policy.controller_managers:
                continue  # an owner a controller named (an adoption): the cluster working
            items.append(
                DriftItem(pointer, DriftKind.ADDED, live=masker.mask_value(live, pointer, have), manager=manager)
            )
        else:
            want = jsonpatch.JsonPointer(pointer).resolve(target_view, None)
            items.append(
                DriftItem(
                    pointer,
                    DriftKind.CHANGED,
                    desired=None if want is None else masker.mask_value(stored, pointer, want),
                    live=None if have is None else masker.mask_value(live, pointer, have),
                )
            )
    live_masked, target_masked = masker.mask(live_view), masker.mask(target_view)
    patch = list(jsonpatch.make_patch(live_masked, target_masked)) if items else []
    state = ObjectState.MODIFIED if items else ObjectState.SYNCED
    return ObjectDiff(key, state, items=items, live=live_masked, target=target_masked, patch=patch)
