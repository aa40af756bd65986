"""The use cases both front doors (and, later, history and the in-cluster reconciler) run: load an Application and
Git's state of it, compare it with the cluster, sync it and record the sync. The CLI verbs only parse flags and
print what these return."""

from __future__ import annotations

import datetime
import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .adapters.clock import SYSTEM
from .adapters.fingerprintkey import ensure_key, read_kept, read_key, write_kept
from .adapters.history import HistoryStore
from .adapters.kube import KubeClient
from .adapters.source import GitSource
from .apps import application_resource, comparison_status, get_application, patch_status, sync_status
from .compare import NO_FINGERPRINTS, Comparison, Desired, Fingerprints, compare, load_desired, new_masker
from .core.application import KIND, ApplicationSpec, Rollback, Suspension
from .core.clock import Clock, rfc3339
from .core.errors import GitOpsError
from .core.history import (
    CommitInfo,
    RecordedObject,
    Result,
    SyncRecord,
    Trigger,
    between,
    bounded_errors,
    counts_of,
    live_at,
    object_digest,
    render_digest,
    result_of,
)
from .core.normalize import SecretMasker
from .core.objects import API_GROUP, AppRef, KubeObject, ObjectKey
from .core.renderdiff import ObjectChange, diff_renders
from .sync import Action, BeforeApply, Syncer, SyncResult
from .synclock import sync_lock


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
    cluster: KubeClient,
    ref: AppRef,
    *,
    revision: str | None = None,
    masker: SecretMasker | None = None,
    shortcut: bool = True,
) -> tuple[Loaded, Comparison]:
    """How the cluster differs from Git for `ref` (Secret values masked with `masker`, by default one of its own).
    With `shortcut`, objects whose fingerprint shows them as the last sync left them are not dry-run again
    (engine.core.fingerprint); without it, or without the key to check fingerprints with, every object is."""
    loaded = load_application(cluster, ref, revision=revision)
    return loaded, compare_loaded(cluster, loaded, masker or new_masker(), shortcut=shortcut)


def compare_loaded(cluster: KubeClient, loaded: Loaded, masker: SecretMasker, *, shortcut: bool = True) -> Comparison:
    """How the cluster differs from Git's objects of `loaded` (the fingerprints' shortcut as compare_application)."""
    ref = loaded.ref
    fingerprints = _fingerprints(cluster, ref, read_key(cluster, ref.namespace)) if shortcut else NO_FINGERPRINTS
    return compare(loaded.spec, loaded.obj, loaded.desired, cluster, masker, fingerprints=fingerprints)


def _fingerprints(cluster: KubeClient, ref: AppRef, secret: bytes | None) -> Fingerprints:
    return Fingerprints(secret, read_kept(cluster, ref) if secret is not None else frozenset())


@dataclass(frozen=True)
class StatusReport:
    loaded: Loaded
    comparison: Comparison
    summary: dict[str, Any]  # what was written to the Application's status: sync state and drift counts

    @property
    def last_sync(self) -> dict[str, Any]:
        return dict((self.loaded.obj.get("status") or {}).get("lastSync") or {})


def application_status(cluster: KubeClient, ref: AppRef, *, shortcut: bool = True) -> StatusReport:
    """Compares `ref` with Git, and writes nothing: a read-only verb needs no write permission, and the reconciler
    (gitops-controller) owns the Application's status."""
    loaded, comparison = compare_application(cluster, ref, shortcut=shortcut)
    return StatusReport(loaded, comparison, comparison_status(comparison))


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
    expect_synced: str | None = None,
    shortcut: bool = True,
) -> SyncReport:
    """Applies Git's objects of `loaded` (pruning when asked or when the Application says so) and, unless it is a dry
    run, records the sync: a SyncRecord with the authenticated user (kubectl gitops history), its summary in the
    Application's status, and the records retention now drops. A sync that stops on an error is recorded too.

    One sync of an Application runs at a time (engine.synclock), the reconciler's and a person's alike. With
    `expect_synced` (the commit the caller saw synced), a sync that finds, once it holds the lock, that another sync
    moved the Application meanwhile does not run (SyncSuperseded). With `shortcut`, an object whose fingerprint shows
    it as the last sync left it, at this commit, is not applied again; every object applied without drift left gets a
    new fingerprint either way."""
    if dry_run:
        secret = read_key(cluster, loaded.ref.namespace)
        fingerprints = _fingerprints(cluster, loaded.ref, secret) if shortcut else NO_FINGERPRINTS
        syncer = Syncer(
            cluster, loaded.spec, dry_run=True, progress=progress, before_apply=before_apply, fingerprints=fingerprints
        )
        return SyncReport(loaded, syncer.run(loaded.desired, loaded.obj, prune=prune or loaded.spec.prune), True)
    with sync_lock(cluster, loaded.ref, clock):
        if expect_synced is not None:
            obj, _ = get_application(cluster, loaded.ref)
            now_synced = str(((obj.get("status") or {}).get("lastSync") or {}).get("revision") or "")
            if now_synced != expect_synced:
                raise SyncSuperseded(
                    f"{loaded.ref}: another sync ran meanwhile (now at {now_synced[:12] or 'nothing'}); not syncing"
                )
        secret = ensure_key(cluster, loaded.ref.namespace)
        fingerprints = _fingerprints(cluster, loaded.ref, secret) if shortcut else Fingerprints(secret, frozenset())
        syncer = Syncer(
            cluster, loaded.spec, dry_run=False, progress=progress, before_apply=before_apply, fingerprints=fingerprints
        )
        started = clock.wall()
        try:
            results = syncer.run(loaded.desired, loaded.obj, prune=prune or loaded.spec.prune)
        except GitOpsError as e:
            try:
                _record(cluster, loaded, [], trigger, reason, started, clock, stopped=str(e))
            except GitOpsError as unrecorded:
                e.add_note(f"the failed sync was not recorded either: {unrecorded}")
            raise
        return SyncReport(loaded, results, False, _record(cluster, loaded, results, trigger, reason, started, clock))


class SyncSuperseded(GitOpsError):
    """The sync was decided on a state that another sync changed before this one could start."""


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
    # What this sync left without drift, for the next diff, status and sync (engine.core.fingerprint).
    left = [r.fingerprint for r in results if r.fingerprint and r.action is not Action.FAILED]
    if left or any(r.action is not Action.FAILED for r in results):
        try:
            write_kept(cluster, loaded.ref, left)
        except GitOpsError as e:
            raise GitOpsError(
                f"{loaded.ref}: recorded as sync {record.id}, but its fingerprints were not kept: {e}"
            ) from e
    try:
        store.retire(loaded.ref.name, loaded.spec.history, clock.wall())
    except GitOpsError as e:
        raise GitOpsError(f"{loaded.ref}: recorded as sync {record.id}, but dropping older records failed: {e}") from e
    return record


# --- history -------------------------------------------------------------------------------------------------------
def history_of(cluster: KubeClient, ref: AppRef) -> list[SyncRecord]:
    """The kept records of `ref`'s syncs, newest first (summaries only)."""
    get_application(cluster, ref)  # a clear error for an Application that does not exist
    return sorted(HistoryStore(cluster, ref.namespace).records(ref.name), key=lambda r: r.id, reverse=True)


def sync_record(cluster: KubeClient, ref: AppRef, record_id: int) -> SyncRecord:
    return HistoryStore(cluster, ref.namespace).record(ref.name, record_id)


@dataclass(frozen=True)
class Rendered:
    """Git's objects of one commit, rendered today, and whether they are what a recorded sync applied."""

    desired: Desired
    record: SyncRecord | None = None

    @property
    def objects(self) -> dict[ObjectKey, KubeObject]:
        return {d.key: d.obj for d in self.desired.objects}

    @property
    def matches_record(self) -> bool:
        return self.record is None or self.digest == self.record.render_digest

    @functools.cached_property
    def digest(self) -> str:
        return render_digest({d.key: object_digest(d.obj) for d in self.desired.objects})

    def mismatch(self) -> str:
        """Why today's render is not what the sync applied, in words (empty when it is)."""
        if self.matches_record or self.record is None:
            return ""
        return (
            f"commit {self.record.commit.sha[:12]} no longer renders what sync {self.record.id} applied (a Helm "
            "dependency, a remote base or a tool version moved since); shown: today's render of that commit"
        )


def render_revision(
    cluster: KubeClient, spec: ApplicationSpec, revision: str, record: SyncRecord | None = None
) -> Rendered:
    return Rendered(load_desired(spec, cluster, revision=revision), record)


@dataclass(frozen=True)
class RenderDiff:
    before: Rendered
    after: Rendered
    changes: list[ObjectChange]


def diff_revisions(
    cluster: KubeClient, ref: AppRef, from_revision: str, to_revision: str, masker: SecretMasker | None = None
) -> RenderDiff:
    """Git's objects at two revisions, rendered and compared object by object (no cluster history needed)."""
    _, spec = get_application(cluster, ref)
    before = render_revision(cluster, spec, from_revision)
    after = render_revision(cluster, spec, to_revision)
    return RenderDiff(before, after, diff_renders(before.objects, after.objects, masker or new_masker()))


@dataclass(frozen=True)
class AtTime:
    at: datetime.datetime
    record: SyncRecord | None  # the sync live then (None: none kept that old)
    drift: list[dict[str, Any]]  # drift attempts the webhook let through between that sync and `at`


LET_THROUGH = ("warned", "recorded", "break-glass")


def drift_attempts(
    audit: Iterable[Mapping[str, Any]],
    ref: AppRef,
    since: datetime.datetime | None,
    until: datetime.datetime,
    *,
    allowed_only: bool,
) -> list[dict[str, Any]]:
    """The audit log's records (`audit`, as read_records gives them) of `ref` between two times, oldest first:
    every attempt, or those the webhook let through."""
    from .core.auditchain import filter_records  # the audit log's modules: imported by what reads it (a diff need not)

    low = rfc3339(since, milliseconds=True) if since else ""
    high = rfc3339(until, milliseconds=True)
    out = []
    for r in filter_records(audit, app=ref.name, since=low):
        if r.get("type") == "retention" or str(r.get("time", "")) > high:
            continue
        if str(r.get("application", "")) not in (str(ref), ref.name):
            continue
        if allowed_only and r.get("decision") not in LET_THROUGH:
            continue
        out.append(dict(r))
    return out


def _at(records: list[SyncRecord], audit: list[dict[str, Any]], ref: AppRef, at: datetime.datetime) -> AtTime:
    live = live_at(records, at)
    return AtTime(at, live, drift_attempts(audit, ref, live.finished if live else None, at, allowed_only=True))


def at_time(cluster: KubeClient, ref: AppRef, at: datetime.datetime) -> AtTime:
    """Which sync was live at `at`, and the drift the webhook let through after it and up to `at`."""
    from .adapters.audit import read_records  # as in drift_attempts

    return _at(history_of(cluster, ref), read_records(cluster, ref.namespace), ref, at)


@dataclass(frozen=True)
class TimeDiff:
    since: AtTime
    until: AtTime
    diff: RenderDiff | None  # None: no sync was live at one of the two times
    syncs: list[SyncRecord]  # those that finished in between, oldest first
    attempts: list[dict[str, Any]]  # every drift attempt the audit log holds for the span


def diff_times(
    cluster: KubeClient,
    ref: AppRef,
    since: datetime.datetime,
    until: datetime.datetime,
    masker: SecretMasker | None = None,
) -> TimeDiff:
    """What changed in the cluster between two times: the rendered objects of the sync live at `since` against
    those of the sync live at `until`, the syncs in between, and the drift attempts of the span."""
    from .adapters.audit import read_records  # as in drift_attempts

    _, spec = get_application(cluster, ref)
    records = history_of(cluster, ref)
    audit = read_records(cluster, ref.namespace)  # the history and the audit log read once for both times
    first, last = _at(records, audit, ref, since), _at(records, audit, ref, until)
    diff = None
    if first.record is not None and last.record is not None:
        before = render_revision(cluster, spec, first.record.commit.sha, first.record)
        after = render_revision(cluster, spec, last.record.commit.sha, last.record)
        diff = RenderDiff(before, after, diff_renders(before.objects, after.objects, masker or new_masker()))
    attempts = drift_attempts(audit, ref, since, until, allowed_only=False)
    return TimeDiff(first, last, diff, between(records, since, until), attempts)


@dataclass(frozen=True)
class Event:
    """One line of the cluster's timeline: a sync (or rollback) or a drift attempt."""

    time: datetime.datetime
    application: str
    what: str  # sync | rollback | drift
    summary: str
    detail: Mapping[str, Any]


def timeline(cluster: KubeClient, namespace: str, since: datetime.datetime, application: str = "") -> list[Event]:
    """Syncs, rollbacks and drift attempts of every Application in `namespace` (or of one), newest first."""
    from .adapters.audit import read_records
    from .core.auditchain import filter_records, parse_time  # as in drift_attempts

    events = []
    for r in HistoryStore(cluster, namespace).records(application):
        if r.finished < since:
            continue
        what = "rollback" if r.trigger is Trigger.ROLLBACK else "sync"
        summary = (
            f"{r.trigger.value} sync {r.id} to {r.commit.sha[:12]} {r.commit.subject!r} by {r.user}: {r.result.value}"
        )
        events.append(Event(r.finished, r.application, what, summary, r.summary()))
    low = rfc3339(since, milliseconds=True)
    for a in filter_records(read_records(cluster, namespace), app=application, since=low):
        if a.get("type") == "retention":
            continue
        obj = a.get("object") or {}
        summary = (
            f"{a.get('decision')} {a.get('operation')} of {obj.get('kind')} {obj.get('namespace')}/{obj.get('name')} "
            f"by {a.get('user')}"
        )
        when = parse_time(str(a.get("time", ""))) or since
        app_name = str(a.get("application", "")).split("/")[-1]
        events.append(Event(when, app_name, "drift", summary, dict(a)))
    return sorted(events, key=lambda e: e.time, reverse=True)


# --- rollback ------------------------------------------------------------------------------------------------------
def rollback_target(cluster: KubeClient, loaded: Loaded, target: str) -> tuple[str, int]:
    """The commit to roll back to and the sync it comes from (0: a revision was named): `target` is a sync id, a
    revision, or "" for the sync before the current one (the newest earlier sync of another commit)."""
    records = history_of(cluster, loaded.ref)
    if target.isdigit():
        record = sync_record(cluster, loaded.ref, int(target))
        return record.commit.sha, record.id
    if target:
        return GitSource(loaded.spec.repo_url).resolve(target).sha, 0
    live = next((r for r in records if r.applied), None)
    current = live.commit.sha if live is not None else loaded.desired.commit.sha
    earlier = next((r for r in records if r.applied and r.commit.sha != current), None)
    if earlier is None:
        raise GitOpsError(
            f"{loaded.ref} has no earlier sync of another commit to roll back to; name a sync id or a revision"
        )
    return earlier.commit.sha, earlier.id


def hold(cluster: KubeClient, ref: AppRef, rollback: Rollback | None) -> None:
    """Sets (or, with None, lifts) the Application's rollback: what its syncs, the reconciler and the webhook take
    for its target meanwhile."""
    patch = {"spec": {"rollback": rollback.as_dict() if rollback is not None else None}}
    cluster.merge_patch(application_resource(cluster), ObjectKey(API_GROUP, KIND, ref.namespace, ref.name), patch)


def rollback(
    cluster: KubeClient,
    ref: AppRef,
    target: str = "",
    *,
    reason: str = "",
    prune: bool = False,
    progress: Callable[[SyncResult], None] = lambda _: None,
    before_apply: BeforeApply = lambda _: None,
    clock: Clock = SYSTEM,
) -> SyncReport:
    """Holds the Application at an earlier commit and syncs it there, recorded as a rollback. The hold stays until
    `resume`, so that the reconciler's next poll does not undo it."""
    current = load_application(cluster, ref)
    revision, record_id = rollback_target(cluster, current, target)
    held = Rollback(revision, reason, cluster.whoami(), rfc3339(clock.wall()), record_id)
    hold(cluster, ref, held)
    loaded = load_application(cluster, ref)  # now at the held commit (the Application names it)
    return sync_loaded(
        cluster,
        loaded,
        prune=prune,
        trigger=Trigger.ROLLBACK,
        reason=reason,
        progress=progress,
        before_apply=before_apply,
        clock=clock,
    )


def resume(
    cluster: KubeClient,
    ref: AppRef,
    *,
    prune: bool = False,
    progress: Callable[[SyncResult], None] = lambda _: None,
    before_apply: BeforeApply = lambda _: None,
    clock: Clock = SYSTEM,
) -> SyncReport:
    """Lifts the rollback and syncs the Application's own revision again."""
    current = load_application(cluster, ref)
    if current.spec.rollback is None:
        raise GitOpsError(f"{ref} is not rolled back")
    hold(cluster, ref, None)
    loaded = load_application(cluster, ref)
    return sync_loaded(
        cluster,
        loaded,
        prune=prune,
        reason=f"rollback to {current.spec.rollback.revision[:12]} lifted",
        progress=progress,
        before_apply=before_apply,
        clock=clock,
    )


# --- the reconciler's remote control -------------------------------------------------------------------------------
RECONCILE_ANNOTATION = f"{API_GROUP}/reconcile-requested-at"
CONTROLLER_LEASE = "gitops-controller"


def request_reconcile(cluster: KubeClient, ref: AppRef, token: str) -> None:
    """Asks the reconciler to fetch and reconcile `ref` now: it answers with status.lastHandledReconcileAt = token."""
    get_application(cluster, ref)
    patch = {"metadata": {"annotations": {RECONCILE_ANNOTATION: token}}}
    cluster.merge_patch(application_resource(cluster), ObjectKey(API_GROUP, KIND, ref.namespace, ref.name), patch)


@dataclass(frozen=True)
class ControllerLease:
    holder: str  # "" when nobody holds it
    renewed: datetime.datetime | None
    duration: float

    def held(self, now: datetime.datetime) -> bool:
        return bool(self.holder) and self.renewed is not None and (now - self.renewed).total_seconds() < self.duration


def controller_lease(cluster: KubeClient, namespace: str, name: str = CONTROLLER_LEASE) -> ControllerLease | None:
    """The reconciler's Lease in `namespace` (None: no reconciler ever ran there, or it cannot be read)."""
    from .core.auditchain import parse_time  # as in drift_attempts

    info = cluster.resource_for("coordination.k8s.io/v1", "Lease")
    if info is None:
        return None
    try:
        lease = cluster.get(info, namespace, name)
    except GitOpsError:
        return None
    if lease is None:
        return None
    spec = lease.get("spec") or {}
    renewed = parse_time(str(spec.get("renewTime") or "")) if spec.get("renewTime") else None
    return ControllerLease(
        str(spec.get("holderIdentity") or ""), renewed, float(spec.get("leaseDurationSeconds") or 15)
    )


def _live_commit(cluster: KubeClient, spec: ApplicationSpec, obj: KubeObject) -> CommitInfo:
    """The commit the last sync applied (from the status, without reading Git); Git's target if none was."""
    last = (obj.get("status") or {}).get("lastSync") or {}
    if last.get("revision"):
        return CommitInfo(str(last["revision"]), str(last.get("subject", "")), str(last.get("author", "")))
    commit = GitSource(spec.repo_url).resolve(spec.target or None)
    return CommitInfo(commit.sha, commit.subject, commit.author, commit.date)


def _mark(
    cluster: KubeClient, ref: AppRef, commit: CommitInfo, trigger: Trigger, reason: str, clock: Clock
) -> SyncRecord:
    """A history record that applies nothing (a suspension or its end), at the commit that is live."""
    now = clock.wall()
    record = SyncRecord(
        application=ref.name,
        namespace=ref.namespace,
        id=0,
        commit=commit,
        trigger=trigger,
        user=cluster.whoami(),
        started=now,
        finished=now,
        result=Result.SUCCEEDED,
        render_digest="",
        objects=(),
        errors=(),
        reason=reason,
        counts={},
    )
    return HistoryStore(cluster, ref.namespace).add(record)


def _set_suspend(cluster: KubeClient, ref: AppRef, held: Suspension | None) -> None:
    patch = {"spec": {"suspend": held.as_dict() if held is not None else None}}
    cluster.merge_patch(application_resource(cluster), ObjectKey(API_GROUP, KIND, ref.namespace, ref.name), patch)


def suspend(cluster: KubeClient, ref: AppRef, reason: str, *, clock: Clock = SYSTEM) -> SyncRecord:
    """Pauses the reconciler's automation for `ref` (no sync of new commits, no heal; drift is still reported),
    recorded in its history."""
    obj, spec = get_application(cluster, ref)
    if spec.suspend is not None:
        raise GitOpsError(f"{ref} is already suspended (by {spec.suspend.user} at {spec.suspend.at})")
    _set_suspend(cluster, ref, Suspension(reason, cluster.whoami(), rfc3339(clock.wall())))
    return _mark(cluster, ref, _live_commit(cluster, spec, obj), Trigger.SUSPEND, reason, clock)


def resume_automation(cluster: KubeClient, ref: AppRef, *, clock: Clock = SYSTEM) -> SyncRecord:
    """Lifts a suspension; the reconciler takes the Application up again at once."""
    obj, spec = get_application(cluster, ref)
    if spec.suspend is None:
        raise GitOpsError(f"{ref} is not suspended")
    _set_suspend(cluster, ref, None)
    held = spec.suspend
    why = f"suspended by {held.user} at {held.at}" + (f": {held.reason}" if held.reason else "")
    return _mark(cluster, ref, _live_commit(cluster, spec, obj), Trigger.RESUME, why, clock)
