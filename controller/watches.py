"""List and watch: the reconciler's view of Applications and of the objects they manage, pushed, not polled.

One watcher per kind lists it once (with a label selector: only our objects), then follows the API server's watch
from the list's resourceVersion, resuming from the last event or bookmark when the stream ends and listing again
when the server says that version is gone (410). A relist tells what changed while nobody watched, as events.

The kubernetes package's SharedInformer takes a typed list function (one per built-in kind), so it cannot watch
the arbitrary kinds and CustomResources that Git declares; this is the same loop over the engine's own client.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from engine.adapters.kube import KubeClient
from engine.core.errors import ApiError, GitOpsError
from engine.core.objects import KubeObject, ObjectKey, key_of
from engine.core.resources import ResourceInfo

log = logging.getLogger(__name__)

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"
WATCH_SECONDS = 300
RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0)

Handler = Callable[[str, KubeObject], None]


class KindWatch:
    """Keeps the objects of one kind (matching `label_selector`) known, and tells `handler` each change."""

    def __init__(
        self,
        client: KubeClient,
        info: ResourceInfo,
        handler: Handler,
        stop: threading.Event,
        *,
        label_selector: str = "",
    ) -> None:
        self.client = client
        self.info = info
        self.handler = handler
        self.label_selector = label_selector
        self.stop = stop
        self.synced = threading.Event()  # set once the first list is known
        self.error = ""  # the last error, until a list or watch succeeds again
        self._known: dict[ObjectKey, str] = {}  # key -> resourceVersion
        self._thread = threading.Thread(target=self._run, name=f"watch-{info.plural}", daemon=True)

    def start(self) -> KindWatch:
        self._thread.start()
        return self

    def alive(self) -> bool:
        return self._thread.is_alive()

    def _fire(self, kind: str, obj: KubeObject) -> None:
        try:
            self.handler(kind, obj)
        except Exception:  # a handler's bug must not stop the watch that every later change depends on
            log.exception("handling a %s event of %s failed", kind, self.info.plural)

    def _relist(self) -> str:
        items, version = self.client.list_versioned(self.info, label_selector=self.label_selector)
        seen: dict[ObjectKey, str] = {}
        for obj in items:
            key = key_of(obj)
            rv = str((obj.get("metadata") or {}).get("resourceVersion", ""))
            seen[key] = rv
            if key not in self._known:
                self._fire(ADDED, obj)
            elif self._known[key] != rv:
                self._fire(MODIFIED, obj)
        for key in set(self._known) - set(seen):
            self._fire(DELETED, _tombstone(self.info, key))
        self._known = seen
        return version

    def _run(self) -> None:
        version = ""
        failures = 0
        while not self.stop.is_set():
            try:
                if not version:
                    version = self._relist()
                    self.synced.set()
                for event in self.client.watch(
                    self.info,
                    resource_version=version,
                    label_selector=self.label_selector,
                    timeout_seconds=WATCH_SECONDS,
                ):
                    if self.stop.is_set():
                        return
                    version = self._event(event, version)
                failures = 0
                self.error = ""
            except ApiError as e:
                if e.status == 410:
                    version = ""  # too old: list again
                    continue
                failures += 1
                self.error = f"watching {self.info.plural}: {e}"
            except GitOpsError as e:
                failures += 1
                self.error = f"watching {self.info.plural}: {e}"
            if failures:
                log.warning("%s (try %d)", self.error, failures)
                self.stop.wait(RETRY_SECONDS[min(failures, len(RETRY_SECONDS)) - 1])

    def _event(self, event: dict[str, Any], version: str) -> str:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            code = obj.get("code") if isinstance(obj, dict) else None
            if code == 410:
                return ""  # the version is gone: list again
            raise ApiError(str(obj.get("message") if isinstance(obj, dict) else obj), int(code or 500))
        rv = str((obj.get("metadata") or {}).get("resourceVersion", "")) or version
        if kind == "BOOKMARK":
            return rv
        obj.setdefault("apiVersion", self.info.api_version)
        obj.setdefault("kind", self.info.kind)
        key = key_of(obj)
        if kind == DELETED:
            self._known.pop(key, None)
        else:
            self._known[key] = rv
        self._fire(str(kind), obj)
        return rv


def _tombstone(info: ResourceInfo, key: ObjectKey) -> KubeObject:
    metadata: dict[str, Any] = {"name": key.name}
    if key.namespace:
        metadata["namespace"] = key.namespace
    return {"apiVersion": info.api_version, "kind": info.kind, "metadata": metadata}
