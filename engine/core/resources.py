"""What discovery says of a kind: its group, version, plural, scope and subresources, and the paths of its API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote


@dataclass(frozen=True)
class ResourceInfo:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    subresources: frozenset[str] = frozenset()  # `scale`, `status`, ... as discovery lists them
    # Those of them that write the object itself: their body is the whole object (labels included) and they take an
    # update or a patch (`status`; for pods `ephemeralcontainers`, `resize`; for namespaces `finalize`).
    object_subresources: frozenset[str] = frozenset()

    @property
    def has_scale(self) -> bool:
        return "scale" in self.subresources

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str = "", name: str = "") -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name:
            base += f"/{quote(name, safe='')}"
        return base


@dataclass(frozen=True)
class Applied:
    """What a server-side apply did: the object as the API server answered it, whether the apply created it (HTTP
    201), and whether Git's object had to be stored whole first (the merge with others' changes was invalid)."""

    obj: dict[str, Any]
    created: bool = False
    replaced: bool = False
