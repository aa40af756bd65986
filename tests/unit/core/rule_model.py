"""A reference model of the webhook's rule (product.md, "The webhook's rule"), over plain dicts, for property tests.

Written apart from engine.core.admission on purpose, from the rule's words only: a request is drift when, after it, the
object strays from Git at a path where before it did not, or strays there with another value than before (for a
CREATE before is empty; deleting an object Git has is drift). Where an object "strays from Git":

- a field Git declares (its fieldsV1) has another value than Git's object as the API server stores it, or is gone;
  our tracking label and annotation are declared like any other, the revision and break-glass annotations are
  operational, and the pod template's `kubectl.kubernetes.io/restartedAt` is ignored by default;
- a field in the content (outside metadata and status) that Git does not declare is there with another value than
  the stored object's (for a CREATE: one the stored object does not have at all, since the server fills in the rest);
  removing such a field is never drift;
- every list entry Git does not have: under a key Git does not declare, and every entry after the first under a key
  it does (an env name, a container port, a mount path), however equal;
- every owner reference Git does not declare (the garbage collector deletes an object with its owner);
- never: labels and annotations Git does not declare (at any depth), status, the rest of metadata.

Paths are symbolic (`("spec", "template", "spec", "containers", 'k:{"name":"app"}', "image")`, a duplicate adds
`"#1"`, `"#2"`), so that one entry is one path before and after a request, wherever its index.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from engine.core.objects import API_GROUP, REVISION_ANNOTATION, TRACKING_LABEL

MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING"})()
Path = tuple[str, ...]

# The keys of the keyed lists the model knows, by the list's field name.
LIST_KEYS: Mapping[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "ports": ("containerPort", "protocol"),
    "volumeMounts": ("mountPath",),
    "ownerReferences": ("uid",),
}
OPERATIONAL = frozenset({REVISION_ANNOTATION, f"{API_GROUP}/break-glass"})
RESTARTED_AT = ("spec", "template", "metadata", "annotations", "kubectl.kubernetes.io/restartedAt")


def element(item: Any, keys: tuple[str, ...]) -> str:
    """The fieldsV1 segment naming a list item: `k:{...}` by its key fields, `v:...` for a plain value."""
    if keys and isinstance(item, dict):
        return "k:" + json.dumps({k: item.get(k) for k in keys}, sort_keys=True, separators=(",", ":"))
    return "v:" + json.dumps(item, sort_keys=True, separators=(",", ":"))


def fields_of(value: Any, name: str = "") -> dict[str, Any]:
    """The fieldsV1 a server-side apply of `value` owns (what Git declares when `value` is Git's manifest)."""
    if isinstance(value, dict) and value:
        return {f"f:{k}": fields_of(v, k) for k, v in value.items()}
    if isinstance(value, list) and value and name in LIST_KEYS:
        return {element(item, LIST_KEYS[name]): {".": {}, **fields_of(item)} for item in value}
    return {}


def _children(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if k != "."}


def _labelled(have: Any, want: Any, fields: Mapping[str, Any] | None, path: Path, out: dict[Path, Any]) -> None:
    """Labels or annotations: only the keys Git declares count, less the operational ones."""
    have = have if isinstance(have, dict) else {}
    want = want if isinstance(want, dict) else {}
    for segment in _children(fields or {}):
        key = segment.removeprefix("f:")
        if key in OPERATIONAL or (*path, key) == RESTARTED_AT:
            continue
        if have.get(key, MISSING) != want.get(key, MISSING):
            out[(*path, key)] = have.get(key, MISSING)


def _undeclared(have: Any, want: Any, path: Path, out: dict[Path, Any], create: bool) -> None:
    if have is MISSING:
        return  # removing what Git does not declare removes drift, never adds it
    if want is MISSING:
        out[path] = have
    elif isinstance(have, dict) and isinstance(want, dict):
        for key in have:
            if path[-1:] == ("metadata",) and key in ("labels", "annotations"):
                continue
            _undeclared(have[key], want.get(key, MISSING), (*path, key), out, create)
    elif isinstance(have, list) and isinstance(want, list) and path[-1] in LIST_KEYS:
        _list(have, want, {}, path, out, create)
    elif have != want:
        # Also on CREATE: a value other than the server's default in a field Git leaves to it is the requester's
        # (only what the server allocates anew on every creation, a Service's cluster IP, differs by nature; this
        # model's objects have none).
        out[path] = have


def _list(have: Any, want: Any, fields: Mapping[str, Any], path: Path, out: dict[Path, Any], create: bool) -> None:
    """A keyed list: the first entry under each key is that key's entry, every later one an entry of its own."""
    keys = LIST_KEYS.get(path[-1], ())
    have = have if isinstance(have, list) else []
    want = want if isinstance(want, list) else []
    seen: dict[str, int] = {}
    for item in have:
        segment = element(item, keys)
        n = seen.get(segment, 0)
        seen[segment] = n + 1
        if n:
            out[(*path, segment, f"#{n}")] = item
        elif segment in fields:
            _walk(item, _first(want, segment, keys), fields[segment], (*path, segment), out, create)
        else:
            _undeclared(item, _first(want, segment, keys), (*path, segment), out, create)
    for segment, declared in fields.items():
        if segment != "." and segment not in seen:
            _walk(MISSING, _first(want, segment, keys), declared, (*path, segment), out, create)


def _first(items: list[Any], segment: str, keys: tuple[str, ...]) -> Any:
    return next((item for item in items if element(item, keys) == segment), MISSING)


def _walk(have: Any, want: Any, fields: Mapping[str, Any], path: Path, out: dict[Path, Any], create: bool) -> None:
    """A field Git declares: compared leaf by leaf, and what is inside it that Git does not declare."""
    children = _children(fields)
    if not children:
        if have != want:
            out[path] = have
        return
    if any(not c.startswith("f:") for c in children):
        _list(have, want, children, path, out, create)
        return
    have_map = have if isinstance(have, dict) else {}
    want_map = want if isinstance(want, dict) else {}
    for key in have_map.keys() | want_map.keys() | {c.removeprefix("f:") for c in children}:
        sub = children.get(f"f:{key}")
        h, w = have_map.get(key, MISSING), want_map.get(key, MISSING)
        if path[-1:] == ("metadata",) and key in ("labels", "annotations"):
            _labelled(h, w, sub, (*path, key), out)
        elif sub is not None:
            _walk(h, w, sub, (*path, key), out, create)
        else:
            _undeclared(h, w, (*path, key), out, create)


def _pruned(value: Any) -> Any:
    """`value` without empty lists and maps as values of maps, at any depth."""
    if isinstance(value, dict):
        kept = {k: _pruned(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if not (isinstance(v, list | dict) and not v)}
    if isinstance(value, list):
        return [_pruned(v) for v in value]
    return value


def strays(
    stored: Mapping[str, Any], declared: Mapping[str, Any], obj: Mapping[str, Any] | None, *, create: bool = False
) -> dict[Path, Any]:
    """Every path where `obj` strays from Git, with its value there (MISSING when gone)."""
    out: dict[Path, Any] = {}
    if obj is None:
        return out
    # An empty list or map is no value: the API server stores neither, so `env: []` and no env are one object.
    obj, stored = _pruned(obj), _pruned(stored)
    for key in obj.keys() | stored.keys():
        if key in ("status", "apiVersion", "kind"):
            continue
        have, want, sub = obj.get(key, MISSING), stored.get(key, MISSING), declared.get(f"f:{key}")
        if key == "metadata":
            have_md = have if isinstance(have, dict) else {}
            want_md = want if isinstance(want, dict) else {}
            md_fields = sub or {}
            for labelled in ("labels", "annotations"):
                _labelled(
                    have_md.get(labelled), want_md.get(labelled), md_fields.get(f"f:{labelled}"), (key, labelled), out
                )
            references = md_fields.get("f:ownerReferences") or {}
            _list(
                have_md.get("ownerReferences"),
                want_md.get("ownerReferences"),
                references,
                (key, "ownerReferences"),
                out,
                create,
            )
        elif sub is not None:
            _walk(have, want, sub, (key,), out, create)
        else:
            _undeclared(have, want, (key,), out, create)
    return out


def _label(obj: Mapping[str, Any] | None) -> bool:
    return TRACKING_LABEL in (((obj or {}).get("metadata") or {}).get("labels") or {})


def new_drift(
    stored: Mapping[str, Any],
    declared: Mapping[str, Any],
    operation: str,
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any] | None,
) -> dict[Path, Any]:
    """The paths a request adds or alters drift at, with the request's value there ({} for no drift)."""
    if operation == "DELETE":
        return {(): "deleted"}
    # An object that takes on our tracking label becomes managed now: all of it counts, as at a creation.
    adopted = operation == "UPDATE" and _label(new) and not _label(old)
    before = strays(stored, declared, old) if operation != "CREATE" and not adopted else {}
    after = strays(stored, declared, new, create=operation == "CREATE" or adopted)
    return {path: value for path, value in after.items() if path not in before or before[path] != value}
