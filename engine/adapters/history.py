"""The SyncRecords of Applications in the cluster (engine.core.history builds and reads them).

A record is created once and never changed. Its id counts up per Application: the next id is one more than the
newest record's, and a create that finds the name taken (another sync recorded at the same moment) takes the next.
"""

from __future__ import annotations

import datetime
import functools
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..core.errors import ApiError, GitOpsError
from ..core.history import (
    APP_LABEL,
    RECORD_API_VERSION,
    RECORD_KIND,
    InvalidRecord,
    Retention,
    SyncRecord,
    expired,
    parse_record,
    record_name,
    record_object,
)
from ..core.objects import ObjectKey
from ..core.resources import ResourceInfo
from .kube import KubeClient

ID_ATTEMPTS = 20
TRANSIENT = (429, 500, 503, 504)
TRANSIENT_SECONDS = 30.0


class HistoryStore:
    def __init__(self, cluster: KubeClient, namespace: str) -> None:
        self.cluster = cluster
        self.namespace = namespace
        # Per Application, the records `add` read and the one it added: what a `retire` right after it needs, without
        # listing them again. One sync of an Application runs at a time (engine.synclock), so nothing else adds one
        # meanwhile; and if something did, retention would only keep that record one sync longer.
        self._added: dict[str, list[SyncRecord]] = {}

    def resource(self) -> ResourceInfo:
        info = self.cluster.resource_for(RECORD_API_VERSION, RECORD_KIND)
        if info is None:  # installed since this client read discovery
            self.cluster.refresh_discovery()
            info = self.cluster.resource_for(RECORD_API_VERSION, RECORD_KIND)
        if info is None:
            raise GitOpsError(f"the cluster does not serve {RECORD_KIND}s; run `kubectl gitops install` first")
        return info

    def records(self, application: str = "", *, with_objects: bool = False) -> list[SyncRecord]:
        """The records of one Application (or of every one in the namespace), oldest first. Without `with_objects`
        only the records' metadata is read (the summaries): what a timeline of many Applications needs."""
        selector = f"{APP_LABEL}={application}" if application else APP_LABEL
        listed: list[dict[str, Any]] = []

        def read() -> None:
            listed[:] = self.cluster.list_objects(
                self.resource(), namespace=self.namespace, label_selector=selector, metadata_only=not with_objects
            )

        _through_transient(read)
        out = [parse_record(obj, with_objects=with_objects) for obj in listed]
        return sorted(out, key=lambda r: (r.application, r.id))

    def record(self, application: str, record_id: int) -> SyncRecord:
        obj = self.cluster.get(self.resource(), self.namespace, record_name(application, record_id))
        if obj is None:
            raise GitOpsError(
                f"Application {application!r} has no sync {record_id} (`kubectl gitops history {application}` lists "
                "those kept)"
            )
        record = parse_record(obj)
        if record.application != application or record.id != record_id:
            raise InvalidRecord(f"SyncRecord {obj['metadata']['name']!r} names another sync than its name says")
        return record

    def add(self, record: SyncRecord) -> SyncRecord:
        """Creates the record under the next free id of its Application; returns it with that id."""
        info = self.resource()
        existing = self.records(record.application)
        newest = max((r.id for r in existing), default=0)
        for attempt in range(ID_ATTEMPTS):
            numbered = _with_id(record, newest + 1 + attempt)
            try:
                create = functools.partial(
                    self.cluster.request,
                    "POST",
                    info.path(self.namespace),
                    body=record_object(numbered),
                    params={"fieldManager": "kubectl-gitops"},
                )
                _through_transient(create)
            except ApiError as e:
                if e.status == 409:
                    continue  # recorded at the same moment by another sync: take the next id
                raise
            self._added[record.application] = [*existing, numbered]
            return numbered
        raise GitOpsError(f"no free SyncRecord id for {record.application} after {ID_ATTEMPTS} attempts")

    def retire(self, application: str, policy: Retention, now: datetime.datetime) -> list[SyncRecord]:
        """Deletes the records retention drops (never the newest); returns them. After an `add`, from the records it
        read (one request fewer for every sync)."""
        info = self.resource()
        known = self._added.pop(application, None)
        dropped = expired(known if known is not None else self.records(application), policy, now)
        for record in dropped:
            key = ObjectKey(info.group, info.kind, self.namespace, record_name(application, record.id))
            self.cluster.delete(info, key)
        return dropped


def _through_transient(call: Callable[[], object], seconds: float = TRANSIENT_SECONDS) -> None:
    """`call`, again while the API server answers that it cannot now (a CRD just installed: "storage is
    (re)initializing"; 429 too many requests), for up to `seconds`."""
    deadline = time.monotonic() + seconds
    wait = 0.1
    while True:
        try:
            call()
            return
        except ApiError as e:
            if e.status not in TRANSIENT or time.monotonic() + wait > deadline:
                raise
        time.sleep(wait)
        wait = min(2.0, wait * 2)


def _with_id(record: SyncRecord, record_id: int) -> SyncRecord:
    return replace(record, id=record_id, name=record_name(record.application, record_id))
