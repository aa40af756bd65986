"""The two spellings of a field path, and the one conversion between them.

- A `FieldPath` is how managedFields (fieldsV1) name a field: `f:spec`, `k:{"name":"web"}`, `i:0`, `v:"x"` tokens
  (engine.core.fieldsets reads and resolves them; diff and sync use them, as the API server's field ownership does).
- A `Path` is how the webhook walks two versions of an object side by side: str keys, int indexes, and
  `("name", value, n)` selectors, the n-th item named `value` of a list of named items. Counting occurrences keeps a
  second item whose name collides with one Git declares (a duplicate env name, which the API server accepts with a
  warning and whose last copy wins at run time) apart from the first: it is an item Git does not have.

`declared_paths` turns Git's declared field set into Paths; `pointer` writes a Path as a JSON pointer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from . import fieldsets, text
from .fieldsets import FieldPath

ABSENT: Any = object()  # a field a Path does not reach

__all__ = [
    "ABSENT",
    "FieldPath",
    "Lists",
    "Path",
    "Selector",
    "changed_paths",
    "declared_paths",
    "get",
    "hashable",
    "is_empty",
    "is_named_list",
    "is_under_any",
    "pointer",
    "selectors",
]

Path = tuple[Any, ...]
Selector = tuple[str, Any, int]


def is_named_list(value: list[Any]) -> bool:
    return bool(value) and all(isinstance(v, dict) and "name" in v for v in value)


def selectors(items: list[Any]) -> dict[Selector, Any]:
    counts: dict[Any, int] = {}
    out: dict[Selector, Any] = {}
    for v in items:
        name = v["name"]
        n = counts.get(hashable(name), 0)
        counts[hashable(name)] = n + 1
        out[("name", hashable(name), n)] = v
    return out


def hashable(value: Any) -> Any:
    """A list item's name as a dict key (a name is a string in every real object; anything else still compares)."""
    return value if isinstance(value, str | int | float | bool) or value is None else json.dumps(value, sort_keys=True)


class Lists:
    """The position of every named item in the lists one decision looks into, found once per list: so that resolving
    N paths into a list of N items costs N steps, not N squared (a request with thousands of env entries must not
    hold the webhook up; the API server would time out, and an entry with failurePolicy Ignore let changes by)."""

    def __init__(self) -> None:
        self._positions: dict[int, tuple[list[Any], dict[Selector, int]]] = {}

    def index(self, items: list[Any], segment: Selector) -> int:
        known = self._positions.get(id(items))
        if known is None or known[0] is not items:
            positions: dict[Selector, int] = {}
            counts: dict[Any, int] = {}
            for i, v in enumerate(items):
                if isinstance(v, dict) and "name" in v:
                    name = hashable(v["name"])
                    n = counts.get(name, 0)
                    counts[name] = n + 1
                    positions[("name", name, n)] = i
            known = self._positions[id(items)] = (items, positions)
        return known[1].get(segment, -1)


def get(obj: Any, path: Path, lists: Lists | None = None) -> Any:
    lists = lists or Lists()
    value = obj
    for segment in path:
        if isinstance(segment, tuple):
            if not isinstance(value, list):
                return ABSENT
            i = lists.index(value, segment)
            if i < 0:
                return ABSENT
            value = value[i]
        elif isinstance(value, dict) and segment in value:
            value = value[segment]
        else:
            return ABSENT
    return value


def changed_paths(before: Any, after: Any, prefix: Path = (), *, fill: bool = False) -> Iterator[Path]:
    """Leaf paths where two values differ: maps by key, lists of named items by name and occurrence, other lists
    whole. With `fill`, what `before` lacks is compared as an empty map or list, down to the leaves."""
    if before == after or (is_empty(before) and is_empty(after)):
        return  # an empty list or map is no value: the API server stores neither (found by the rule model)
    # Labels or annotations that appear or go as a whole are compared key by key: each key is its own business (a
    # request that adds one annotation where there were none does not take Git's annotations away).
    b, a = before, after
    if len(prefix) >= 2 and prefix[-2] == "metadata" and prefix[-1] in ("labels", "annotations"):
        b = {} if before is ABSENT and isinstance(after, dict) and after else before
        a = {} if after is ABSENT and isinstance(before, dict) and before else after
    if fill and b is ABSENT:
        b = {} if isinstance(a, dict) else [] if isinstance(a, list) and is_named_list(a) else b
    if isinstance(b, dict) and isinstance(a, dict):
        for key in b.keys() | a.keys():
            yield from changed_paths(b.get(key, ABSENT), a.get(key, ABSENT), (*prefix, key), fill=fill)
        return
    if isinstance(b, list) and isinstance(a, list) and (is_named_list(b) or not b) and (is_named_list(a) or not a):
        sb, sa = selectors(b), selectors(a)
        for selector in sb.keys() | sa.keys():
            yield from changed_paths(sb.get(selector, ABSENT), sa.get(selector, ABSENT), (*prefix, selector), fill=fill)
        return
    yield prefix


def is_empty(value: Any) -> bool:
    return value is ABSENT or (isinstance(value, list | dict) and not value)


def pointer(obj: Any, path: Path, lists: Lists | None = None) -> str:
    """JSON pointer of `path` (named list items resolved to their index in `obj`)."""
    lists = lists or Lists()
    tokens = []
    value = obj
    for segment in path:
        if isinstance(segment, tuple):
            _, name, n = segment
            i = lists.index(value, segment) if isinstance(value, list) else -1
            suffix = f"#{n + 1}" if n else ""
            tokens.append(str(i) if i >= 0 else f"[name={name}{suffix}]")
            value = value[i] if i >= 0 else ABSENT
        else:
            tokens.append(text.escape(segment))
            value = value.get(segment, ABSENT) if isinstance(value, dict) else ABSENT
    return "/" + "/".join(tokens)


def declared_paths(declared: Mapping[str, Any]) -> set[Path]:
    """The declared leaves as paths of this module (k:{"name":..} selectors as the first item of that name)."""
    out: set[Path] = set()
    for leaf in fieldsets.leaves(declared, containers=False):
        path: list[Any] = []
        for segment in leaf:
            kind, _, raw = segment.partition(":")
            if kind == "f":
                path.append(raw)
            elif kind == "k":
                try:
                    selector = json.loads(raw)
                except ValueError:
                    break
                if isinstance(selector, dict) and set(selector) == {"name"}:
                    path.append(("name", hashable(selector["name"]), 0))
                else:
                    break  # an element keyed otherwise: compare its list whole
            else:
                break
        out.add(tuple(path))
    return out


def is_under_any(path: Path, declared: set[Path]) -> bool:
    return any(path[: len(d)] == d or d[: len(path)] == path for d in declared)
