"""The use cases both front doors (and, later, history and the in-cluster reconciler) run: load an Application and
Git's state of it, compare it with the cluster, sync it and record the sync. The CLI verbs only parse flags and
print what these return."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .adapters.clock import SYSTEM
from .adapters.history import HistoryStore
from .adapters.kube import KubeClient
from .adapters.source import GitSource
from .apps import comparison_status, get_application, patch_status, sync_status
from .compare import Comparison, Desired, compare, load_desired, new_masker
from .core.application import ApplicationSpec
from .core.clock import Clock
from .core.errors import GitOpsError
from .core.history import (
    CommitInfo,
    RecordedObject,
    Result,
    SyncRecord,
    Trigger,
    bounded_errors,
    counts_of,
    object_digest,
    render_digest,
    result_of,
)
from .core.normalize import SecretMasker
from .core.objects import AppRef, KubeObject
from .sync import Action, BeforeApply, Syncer, SyncResult


@dataclass(frozen=True)
class Loaded:
    """An Application as the cluster holds it, and Git's objects for it at one commit."""

    ref: AppRef
    obj: KubeObject
    spec: ApplicationSpec
    desired: Desired


def load_application(
    cluster: KubeClient, ref: AppRef, *, revision: str | None = None, source: GitSource | None = None
) -> Loaded:
    """The Application `ref` and Git's objects at `revision` (default: the Application's own)."""
    obj, spec = get_application(cluster, ref)
    return Loaded(ref, obj, spec, load_desired(spec, cluster, revision=revision, source=source))


def compare_application(
    cluster: KubeClient, ref: AppRef, *, revision: str | None = None, masker: SecretMasker | None = None
) -> tuple[Loaded, Comparison]:
    """How the cluster differs from Git for `ref` (Secret values masked with `masker`, by default one of its own)."""
    loaded = load_application(cluster, ref, revision=revision)
    return loaded, compare(loaded.spec, loaded.obj, loaded.desired, cluster, masker or new_masker())


@dataclass(frozen=True)
class StatusReport:
    loaded: Loaded
    comparison: Comparison
    summary: dict[str, Any]  # what was written to the Application's status: sync state and drift counts

    @property
    def last_sync(self) -> dict[str, Any]:
        return dict((self.loaded.obj.get("status") or {}).get("lastSync") or {})


def application_status(cluster: KubeClient, ref: AppRef) -> StatusReport:
    """Compares `ref` with Git and records the outcome in the Application's status."""
    loaded, comparison = compare_application(cluster, ref)
    summary = comparison_status(comparison)
    patch_status(cluster, ref, summary)
    return StatusReport(loaded, comparison, summary)


@dataclass(frozen=True)
class SyncReport:
    loaded: Loaded
    results: list[SyncResult]
    dry_run: bool
    record: SyncRecord | None = None  # what history keeps of it (None for a dry run)

    @property
    def failed(self) -> list[SyncResult]:
        return [r for r in self.results if r.action is Action.FAILED]


def sync_loaded(
    cluster: KubeClient,
    loaded: Loaded,
    *,
    prune: bool = False,
    dry_run: bool = False,
    trigger: Trigger = Trigger.MANUAL,
    reason: str = "",
    progress: Callable[[SyncResult], None] = lambda _: None,
    before_apply: BeforeApply = lambda _: None,
    clock: Clock = SYSTEM,
) -> SyncReport:
    """Applies Git's objects of `loaded` (pruning when asked or when the Application says so) and, unless it is a dry
    run, records the sync: a SyncRecord with the authenticated user (kubectl gitops history), its summary in the
    Application's status, and the records retention now drops. A sync that stops on an error is recorded too."""
    syncer = Syncer(cluster, loaded.spec, dry_run=dry_run, progress=progress, before_apply=before_apply)
    started = clock.wall()
    try:
        results = syncer.run(loaded.desired, loaded.obj, prune=prune or loaded.spec.prune)
    except GitOpsError as e:
        if not dry_run:
            try:
                _record(cluster, loaded, [], trigger, reason, started, clock, stopped=str(e))
            except GitOpsError as unrecorded:
                e.add_note(f"the failed sync was not recorded either: {unrecorded}")
        raise
    if dry_run:
        return SyncReport(loaded, results, dry_run)
    return SyncReport(loaded, results, dry_run, _record(cluster, loaded, results, trigger, reason, started, clock))


def _record(
    cluster: KubeClient,
    loaded: Loaded,
    results: list[SyncResult],
    trigger: Trigger,
    reason: str,
    started: datetime.datetime,
    clock: Clock,
    stopped: str = "",
) -> SyncRecord:
    digests = {d.key: object_digest(d.obj) for d in loaded.desired.objects}
    objects = tuple(RecordedObject(r.key, r.action, digests.get(r.key, ""), r.message) for r in results)
    errors = bounded_errors([*(f"{r.key}: {r.message}" for r in results if r.action is Action.FAILED), stopped])
    commit = loaded.desired.commit
    record = SyncRecord(
        application=loaded.ref.name,
        namespace=loaded.ref.namespace,
        id=0,
        commit=CommitInfo(commit.sha, commit.subject, commit.author, commit.date),
        trigger=trigger,
        user=cluster.whoami(),
        started=started,
        finished=clock.wall(),
        result=Result.FAILED if stopped else result_of(objects),
        render_digest=render_digest(digests),
        objects=objects,
        errors=tuple(e for e in errors if e),
        reason=reason,
        counts=counts_of(objects),
    )
    store = HistoryStore(cluster, loaded.ref.namespace)
    try:
        record = store.add(record)
    except GitOpsError as e:
        patch_status(cluster, loaded.ref, sync_status(loaded.obj, record, results))
        raise GitOpsError(f"{loaded.ref}: the sync ran, but its record was not kept: {e}") from e
    patch_status(cluster, loaded.ref, sync_status(loaded.obj, record, results))
    try:
        store.retire(loaded.ref.name, loaded.spec.history, clock.wall())
    except GitOpsError as e:
        raise GitOpsError(f"{loaded.ref}: recorded as sync {record.id}, but dropping older records failed: {e}") from e
    return record
