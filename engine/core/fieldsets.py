"""Field sets from `metadata.managedFields` (fieldsV1): which manager owns which paths of an object.

A path here is symbolic, a tuple of fieldsV1 keys (`f:spec`, `k:{"name":"app"}`, `v:"x"`, `i:0`), so that the same
list element is the same path in two versions of an object even when its index moved. `pointer()` turns one into
a JSON pointer against a concrete object.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from . import text

FieldPath = tuple[str, ...]
FieldsV1 = Mapping[str, Any]

_MISSING = object()


@dataclass(frozen=True)
class ManagerEntry:
    """One entry of managedFields: who, how, on which subresource, owning which field set."""

    manager: str
    operation: str
    subresource: str
    fields: FieldsV1


def manager_entries(obj: Mapping[str, Any]) -> list[ManagerEntry]:
    entries = []
    for raw in (obj.get("metadata") or {}).get("managedFields") or []:
        if not isinstance(raw, dict) or raw.get("fieldsType", "FieldsV1") != "FieldsV1":
            continue
        fields = raw.get("fieldsV1")
        entries.append(
            ManagerEntry(
                manager=str(raw.get("manager") or ""),
                operation=str(raw.get("operation") or ""),
                subresource=str(raw.get("subresource") or ""),
                fields=fields if isinstance(fields, dict) else {},
            )
        )
    return entries


def leaves(fields: FieldsV1, prefix: FieldPath = (), *, containers: bool = True) -> Iterator[FieldPath]:
    """Every owned path: atomic fields ({}) and, with `containers`, maps and list elements owned as such (".").

    Without `containers` a map or element is yielded only when nothing inside it is listed: the paths whose values
    say what the owner set.
    """
    for key, child in fields.items():
        if key == ".":
            if prefix and (containers or len(fields) == 1):
                yield prefix
            continue
        path = (*prefix, key)
        if not isinstance(child, dict) or not child:
            yield path
        else:
            yield from leaves(child, path, containers=containers)


def _select(value: Any, segment: str) -> tuple[Any, Any]:
    """(the child value or _MISSING, its concrete JSON-pointer token or None)."""
    kind, _, raw = segment.partition(":")
    if kind == "f":
        if isinstance(value, dict) and raw in value:
            return value[raw], raw
        return _MISSING, raw
    if not isinstance(value, list):
        return _MISSING, None
    try:
        if kind == "i":
            index = int(raw)
            return (value[index], index) if 0 <= index < len(value) else (_MISSING, None)
        wanted = json.loads(raw)
    except (ValueError, json.JSONDecodeError):
        return _MISSING, None
    for index, item in enumerate(value):
        if _matches(item, kind, wanted):
            return item, index
    return _MISSING, None


def _matches(item: Any, kind: str, wanted: Any) -> bool:
    """Whether a list item is the one a `k:` (associative list) or `v:` (set) segment names."""
    if kind == "v":
        return bool(item == wanted)
    return (
        kind == "k"
        and isinstance(item, dict)
        and isinstance(wanted, dict)
        and all(item.get(k) == v for k, v in wanted.items())
    )


def is_element(segment: str) -> bool:
    """A segment that names a list item by its key (`k:`) or value (`v:`), not by index."""
    return segment.startswith(("k:", "v:"))


def duplicates(obj: Any, path: FieldPath) -> list[int]:
    """Indices of the items after the first that the last (`k:`/`v:`) segment of `path` names as well.

    The API server accepts a list with two items under one key (a second `env` entry named like the first, with a
    warning), and at run time the last one wins: every item after the first is one Git does not have.
    """
    if not path or not is_element(path[-1]):
        return []
    items = lookup(obj, path[:-1])
    kind, _, raw = path[-1].partition(":")
    try:
        wanted = json.loads(raw)
    except ValueError:
        return []
    if not isinstance(items, list):
        return []
    return [i for i, item in enumerate(items) if _matches(item, kind, wanted)][1:]


def lookup(obj: Any, path: FieldPath) -> Any:
    """The value at `path`, or `MISSING`."""
    value = obj
    for segment in path:
        value, _ = _select(value, segment)
        if value is _MISSING:
            return MISSING
    return value


MISSING: Any = _MISSING


_escape = text.escape  # one JSON pointer token


def pointer(obj: Any, path: FieldPath) -> str | None:
    """The JSON pointer of `path` in `obj`, or None when some list element on the way is not there."""
    tokens = []
    value = obj
    for depth, segment in enumerate(path, start=1):
        value, token = _select(value, segment)
        if token is None:
            return None
        tokens.append(_escape(str(token)))
        # Only the last field of a path may be absent (a field Git declares that is gone live).
        if value is _MISSING and depth < len(path):
            return None
    return "/" + "/".join(tokens)


def display(path: FieldPath) -> str:
    """A readable path for messages when no concrete pointer exists: `spec.containers[name=app].image`."""
    out = ""
    for segment in path:
        kind, _, raw = segment.partition(":")
        if kind == "f":
            out += f".{raw}" if out else raw
        elif kind == "k":
            try:
                pairs = json.loads(raw)
                out += "[" + ",".join(f"{k}={v}" for k, v in pairs.items()) + "]"
            except (ValueError, AttributeError):
                out += f"[{raw}]"
        elif kind == "v":
            out += f"[={raw}]"
        else:
            out += f"[{raw}]"
    return out


def is_metadata_label_or_annotation(path: FieldPath) -> bool:
    """Labels and annotations at any depth (the object's, a pod template's)."""
    return any(path[i] == "f:metadata" and path[i + 1] in ("f:labels", "f:annotations") for i in range(len(path) - 1))


def is_owner_reference(path: FieldPath) -> bool:
    """`metadata.ownerReferences` or under: server metadata in form, but who may delete the object (the garbage
    collector deletes it with the owner named there)."""
    return path[:2] == ("f:metadata", "f:ownerReferences")


def is_content(path: FieldPath) -> bool:
    """Everything outside the object's own metadata and status, and its type fields."""
    return bool(path) and path[0] not in ("f:metadata", "f:status", "f:apiVersion", "f:kind")


def secret_declared(fields: FieldsV1) -> FieldsV1:
    """A Secret's `stringData` is stored as `data`: Git declaring stringData/k declares data/k."""
    string_data = fields.get("f:stringData")
    if not isinstance(string_data, dict):
        return fields
    out = {k: v for k, v in fields.items() if k != "f:stringData"}
    out["f:data"] = {**(fields.get("f:data") or {}), **string_data}
    return out
