"""How two renders of an Application differ, object by object and field by field: what `diff --from/--to` and
`diff --since/--until` show. Rendered objects, not files: a Helm values change shows as the fields it moves.

Both sides are compared as a sync would send them, without server bookkeeping and without the annotation that names
the commit (every object of another commit carries another one). Secret values are masked with one masker for both
sides, so a changed value shows as two different markers and an unchanged one as the same.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import jsonpatch

from . import text
from .normalize import SecretMasker, normalize
from .objects import REVISION_ANNOTATION, KubeObject, ObjectKey


class Change(StrEnum):
    ADDED = "added"
    REMOVED = "removed"
    CHANGED = "changed"


@dataclass(frozen=True)
class FieldChange:
    path: str  # JSON pointer
    change: Change  # added: `before` means nothing; removed: `after` means nothing
    before: Any = None
    after: Any = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "change": self.change.value}
        if self.change is not Change.ADDED:
            out["before"] = self.before
        if self.change is not Change.REMOVED:
            out["after"] = self.after
        return out


@dataclass(frozen=True)
class ObjectChange:
    key: ObjectKey
    change: Change
    fields: tuple[FieldChange, ...] = ()  # for a changed object

    def as_dict(self) -> dict[str, Any]:
        return {**self.key.as_dict(), "change": self.change.value, "fields": [f.as_dict() for f in self.fields]}


def compared_form(obj: KubeObject, masker: SecretMasker) -> KubeObject:
    out = masker.mask(normalize(obj))
    annotations = (out.get("metadata") or {}).get("annotations")
    if isinstance(annotations, dict):
        annotations.pop(REVISION_ANNOTATION, None)
        if not annotations:
            out["metadata"].pop("annotations")
    return out


def _at(doc: Any, pointer: str) -> Any:
    value = doc
    for token in text.tokens(pointer):
        if isinstance(value, dict) and token in value:
            value = value[token]
        elif isinstance(value, list) and token.isdigit() and int(token) < len(value):
            value = value[int(token)]
        else:
            return None
    return value


def field_changes(before: KubeObject, after: KubeObject) -> tuple[FieldChange, ...]:
    """What differs, as JSON pointers with the value before and after. The patch's operations are read in order
    against the document as the earlier ones left it (their pointers mean that), a move or copy as the value
    removed and added."""
    out: list[FieldChange] = []
    working = copy.deepcopy(before)
    for op in jsonpatch.make_patch(before, after).patch:
        kind, pointer = op["op"], op["path"]
        if kind == "move":
            value = _at(working, op["from"])
            out += [
                FieldChange(op["from"], Change.REMOVED, before=value),
                FieldChange(pointer, Change.ADDED, after=value),
            ]
        elif kind == "copy":
            out.append(FieldChange(pointer, Change.ADDED, after=_at(working, op["from"])))
        elif kind == "remove":
            out.append(FieldChange(pointer, Change.REMOVED, before=_at(working, pointer)))
        elif kind == "add":
            out.append(FieldChange(pointer, Change.ADDED, after=op["value"]))
        else:  # replace
            out.append(FieldChange(pointer, Change.CHANGED, _at(working, pointer), op["value"]))
        working = jsonpatch.apply_patch(working, [op])
    return tuple(out)


def diff_renders(
    before: Mapping[ObjectKey, KubeObject], after: Mapping[ObjectKey, KubeObject], masker: SecretMasker
) -> list[ObjectChange]:
    """Objects added, removed or changed from `before` to `after` (key order); unchanged objects are left out."""
    out = []
    for key in sorted(set(before) | set(after)):
        if key not in before:
            out.append(ObjectChange(key, Change.ADDED))
        elif key not in after:
            out.append(ObjectChange(key, Change.REMOVED))
        else:
            fields = field_changes(compared_form(before[key], masker), compared_form(after[key], masker))
            if fields:
                out.append(ObjectChange(key, Change.CHANGED, fields))
    return out


def shown(value: Any) -> str:
    return "(absent)" if value is None else text.shorten(json.dumps(value, sort_keys=True), 200)
