"""Git's stored form kept compactly in the webhook's index: one copy of each string, and one copy of each distinct
set of declared fields (fieldsV1), shared by every object that declares the same fields.

Tens of thousands of objects of a few kinds repeat the same keys ("apiVersion", "terminationMessagePath"), the same
values ("ClusterFirst", "IfNotPresent") and, object after object of one kind and shape, the same declared-field
set; JSON decoding makes a new string for each of them. What is kept is equal, value for value, to what it replaces:
the decision reads it as before (bench/webhook_memory.py measures the memory and the decision)."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Mapping
from typing import Any

from .paths import Path, declared_paths

LONG = 256  # longer strings (a ConfigMap's file, a certificate) are rarely repeated: left as they are


def interned(value: Any) -> Any:
    """A copy of a JSON-like value whose dict keys and short strings are interned (shared across the process)."""
    if isinstance(value, str):
        return sys.intern(value) if len(value) <= LONG else value
    if isinstance(value, dict):
        return {sys.intern(k) if isinstance(k, str) else k: interned(v) for k, v in value.items()}
    if isinstance(value, list):
        return [interned(v) for v in value]
    return value


class DeclaredSet(dict[str, Any]):
    """A declared-field set shared by the objects that declare those fields, with its paths (what the decision
    derives from it, engine.core.admission) computed once for all of them."""

    @functools.cached_property
    def paths(self) -> set[Path]:
        return declared_paths(self)


class DeclaredSets:
    """Hands out one shared copy per distinct declared-field set. The sets are read, never changed, once an object is
    in the index; the table only grows with distinct shapes (a few per kind), not with objects."""

    def __init__(self) -> None:
        self._sets: dict[str, DeclaredSet] = {}

    def shared(self, declared: Mapping[str, Any]) -> DeclaredSet:
        key = json.dumps(declared, sort_keys=True, separators=(",", ":"))
        found = self._sets.get(key)
        if found is None:
            found = self._sets[key] = DeclaredSet(interned(dict(declared)))
        return found

    def __len__(self) -> int:
        return len(self._sets)
