"""The reconcile loop: for each Application, fetch Git, compare with the cluster, then sync, heal, back off or report,
and write what was found to the Application's status (conditions, health, drift) with an Event for each change.

Every judgment is the engine's: Git's objects come from engine.compare.load_desired, drift from engine.compare,
syncs from engine.usecases.sync_loaded (the same ordering, prune and history record as `kubectl gitops sync`), the
next step from engine.core.automation and health from engine.core.health. This module only schedules them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from engine.adapters.kube import KubeClient
from engine.adapters.source import READ_ERRORS, GitSource, redact_url
from engine.apps import application_resource, patch_status
from engine.compare import Comparison, Desired, load_desired, new_masker
from engine.core.application import API_VERSION, KIND, ApplicationSpec, InvalidApplication, parse_application
from engine.core.automation import Attempts, Facts, Plan, Step, plan
from engine.core.clock import Clock, rfc3339
from engine.core.conditions import DRIFTED, HEALTHY, SYNCED, Condition, merged, ready
from engine.core.drift import ObjectState
from engine.core.errors import GitOpsError, SourceError
from engine.core.health import Health, application_health
from engine.core.history import Result
from engine.core.objects import TRACKING_LABEL, AppRef, KubeObject, ObjectKey, key_of
from engine.core.resources import ResourceInfo
from engine.gitcredentials import git_credentials
from engine.usecases import RECONCILE_ANNOTATION, Loaded, SyncSuperseded, compare_loaded, sync_loaded

from .metrics import ControllerMetrics
from .queue import WorkQueue
from .repos import Repositories
from .watches import DELETED, KindWatch

log = logging.getLogger(__name__)


CHANGE_DELAY = 1.0  # a changed managed object is compared this soon (a burst of changes costs one compare)
STATUS_DELAY = 5.0  # an object whose status alone changed (a rollout): its health is looked at this soon
ERROR_RETRY_SECONDS = 30.0
CRD_POLL_SECONDS = 5.0
MAX_LISTED_DRIFT = 20


class LeadershipLost(Exception):
    """This process no longer holds the lease: whatever it was doing stops before its next write."""


@dataclass
class AppMemory:
    """What the reconciler keeps of one Application between its reconciles (in memory: a new leader starts from
    the cluster's state, which is all that matters)."""

    attempts: Attempts = field(default_factory=Attempts)
    keys: set[ObjectKey] = field(default_factory=set)
    drift_told: str = ""  # the drift last told in an Event (told again only when it changes)
    fight_told: bool = False
    source_told: str = ""


def _declared_fingerprint(obj: KubeObject) -> str:
    """What a change to this object may change of its drift: everything but its status and server bookkeeping."""
    metadata = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in ("resourceVersion", "managedFields")}
    rest = {k: v for k, v in obj.items() if k not in ("status", "metadata")}
    return hashlib.sha256(json.dumps([metadata, rest], sort_keys=True, default=str).encode()).hexdigest()


def synced_commit(status: dict[str, Any]) -> str:
    """The commit the last sync applied whole ("" when none did, or the last one failed on some object)."""
    last = status.get("lastSync") or {}
    if last.get("result") != Result.SUCCEEDED.value:
        return ""
    return str(last.get("revision") or "")


def last_synced(status: dict[str, Any]) -> str:
    """The commit the last sync ran at, whatever its result ("" before the first)."""
    return str((status.get("lastSync") or {}).get("revision") or "")


class Reconciler:
    def __init__(
        self,
        cluster: KubeClient,
        watch_client: KubeClient,
        *,
        namespace: str,
        repos: Repositories,
        metrics: ControllerMetrics,
        clock: Clock,
        stop: threading.Event,
        identity: str,
        workers: int = 4,
        leading: Callable[[], bool] = lambda: True,
        shortcut: bool = True,
    ) -> None:
        self.cluster = cluster
        self.watch_client = watch_client
        self.namespace = namespace
        self.repos = repos
        self.metrics = metrics
        self.clock = clock
        self.stop = stop
        self.identity = identity
        self.workers = workers
        self.leading = leading
        self.shortcut = shortcut  # the fingerprints' shortcut (engine.core.fingerprint); off: every object dry-run
        self.queue: WorkQueue[AppRef] = WorkQueue(clock.monotonic)
        self.masker = new_masker()
        self._memory: dict[AppRef, AppMemory] = {}
        self._by_name: dict[str, set[AppRef]] = {}  # the tracking label names an Application by its name only
        self._owners: dict[ObjectKey, set[AppRef]] = {}  # which Applications manage (or managed) each object
        self._fingerprints: dict[ObjectKey, str] = {}
        self._generations: dict[AppRef, tuple[int, str]] = {}
        self._watches: dict[tuple[str, str], KindWatch] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.app_watch: KindWatch | None = None
        self.waiting_for = "starting"

    # --- start and health ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Starts watching and working; when the Application CRD is not installed yet (a reconciler deployed before
        `kubectl gitops install`), waits for it in the background and says so in /readyz and the log."""
        threading.Thread(target=self._start_when_served, name="start", daemon=True).start()

    def _start_when_served(self) -> None:
        told = False
        while not self.stop.is_set():
            try:
                info = application_resource(self.cluster)
                break
            except GitOpsError as e:
                self.waiting_for = str(e)
                if not told:
                    log.warning("waiting: %s", e)
                    told = True
            self.stop.wait(CRD_POLL_SECONDS)
            with contextlib.suppress(GitOpsError):
                self.cluster.refresh_discovery()
        else:
            return
        self.waiting_for = ""
        self.app_watch = KindWatch(self.watch_client, info, self._on_application, self.stop).start()
        for n in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"reconcile-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def ready(self) -> bool:
        return self.app_watch is not None and self.app_watch.synced.is_set()

    def healthy(self) -> tuple[bool, str]:
        if self.waiting_for:
            return True, self.waiting_for  # alive: waiting for the CRD is no reason to be restarted
        if self.app_watch is not None and not self.app_watch.alive():
            return False, "the Applications watch stopped"
        dead = [t.name for t in self._threads if not t.is_alive()]
        if dead:
            return False, f"reconcile workers stopped: {', '.join(dead)}"
        return True, "ok"

    def close(self) -> None:
        self.stop.set()
        self.queue.close()

    # --- what comes from the watches -------------------------------------------------------------------------
    def _on_application(self, event: str, obj: KubeObject) -> None:
        metadata = obj.get("metadata") or {}
        ref = AppRef(str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))
        if self.namespace and ref.namespace != self.namespace:
            return
        if event == DELETED:
            self._forget(ref)
            return
        # Its own status writes come back as events too: only a new generation (a spec change) or a new request
        # asks for a reconcile.
        mark = (
            int(metadata.get("generation") or 0),
            str((metadata.get("annotations") or {}).get(RECONCILE_ANNOTATION)),
        )
        with self._lock:
            changed = self._generations.get(ref) != mark
            self._generations[ref] = mark
        if changed:
            self.queue.add(ref)

    def _on_object(self, event: str, obj: KubeObject) -> None:
        key = key_of(obj)
        labels = (obj.get("metadata") or {}).get("labels") or {}
        name = labels.get(TRACKING_LABEL)
        fingerprint = "" if event == DELETED else _declared_fingerprint(obj)
        with self._lock:
            owners = set(self._owners.get(key, ()))
            if name:
                owners |= self._by_name.get(str(name), set())
            before = self._fingerprints.get(key)
            if event == DELETED:
                self._fingerprints.pop(key, None)
            else:
                self._fingerprints[key] = fingerprint
        delay = STATUS_DELAY if before is not None and before == fingerprint else CHANGE_DELAY
        for ref in owners:
            self.queue.add(ref, delay)

    def _watch_kinds(self, kinds: Iterable[tuple[str, str]]) -> None:
        for group_kind in kinds:
            with self._lock:
                if group_kind in self._watches:
                    continue
            info: ResourceInfo | None = self.cluster.preferred(*group_kind)
            if info is None:
                continue
            watch = KindWatch(self.watch_client, info, self._on_object, self.stop, label_selector=TRACKING_LABEL)
            with self._lock:
                if group_kind in self._watches:
                    continue
                self._watches[group_kind] = watch
            watch.start()

    def _forget(self, ref: AppRef) -> None:
        with self._lock:
            self._memory.pop(ref, None)
            self._by_name.get(ref.name, set()).discard(ref)
            self._generations.pop(ref, None)
            for owners in self._owners.values():
                owners.discard(ref)
        self.metrics.forget(ref)

    # --- the workers -----------------------------------------------------------------------------------------
    def _work(self) -> None:
        while not self.stop.is_set():
            ref = self.queue.get(timeout=1.0)
            if ref is None:
                continue
            try:
                delay = self.reconcile(ref)
            except LeadershipLost:
                return
            except GitOpsError as e:  # the API server unreachable, a write refused: said, and tried again later
                log.warning("reconciling %s: %s", ref, e)
                delay = ERROR_RETRY_SECONDS
            except Exception:  # a bug in one reconcile must not stop the worker that serves every Application
                log.exception("reconciling %s failed", ref)
                delay = ERROR_RETRY_SECONDS
            finally:
                self.queue.done(ref)
            if delay is not None and not self.stop.is_set():
                self.queue.add(ref, delay)

    def _check_leading(self, *_: Any) -> None:
        if self.stop.is_set() or not self.leading():
            raise LeadershipLost()

    def _memory_of(self, ref: AppRef) -> AppMemory:
        with self._lock:
            self._by_name.setdefault(ref.name, set()).add(ref)
            return self._memory.setdefault(ref, AppMemory())

    def reconcile(self, ref: AppRef) -> float | None:
        """One pass over one Application; returns when to look at it again (seconds), None: only when told."""
        self._check_leading()
        started = self.clock.monotonic()
        info = application_resource(self.cluster)
        obj = self.cluster.get(info, ref.namespace, ref.name)
        if obj is None:
            self._forget(ref)
            return None
        memory = self._memory_of(ref)
        metadata = obj.get("metadata") or {}
        generation = int(metadata.get("generation") or 0)
        requested = str((metadata.get("annotations") or {}).get(RECONCILE_ANNOTATION) or "")
        status = dict(obj.get("status") or {})
        answering = bool(requested) and requested != status.get("lastHandledReconcileAt")
        try:
            spec = parse_application(obj)
        except InvalidApplication as e:
            self._write(ref, obj, generation, requested, _unknown_all("InvalidSpec", str(e)), {})
            self._event(obj, "Warning", "InvalidSpec", str(e))
            return None
        source, fetch_error = None, ""
        try:
            credentials = git_credentials(self.cluster, spec)
            source, fetch_error = self.repos.source(
                spec.repo_url, max_age=spec.interval, force=answering, credentials=credentials
            )
            try:
                desired = load_desired(spec, self.cluster, source=source)
            except READ_ERRORS as e:  # the thread's mirror process died: a new one at the next try
                self.repos.drop_reader(spec.repo_url)
                raise SourceError(f"reading {redact_url(spec.repo_url)} failed ({e!r}); it is read again") from e
            applied = last_synced(status)
            if applied and applied != desired.commit.sha and not fetch_error and self._behind(source, applied, desired):
                # Someone synced a commit this mirror has not fetched yet (kubectl gitops sync, another replica
                # before a handover): Git is asked again before anything is taken for the target, so that an old
                # mirror never syncs the cluster backwards.
                source, fetch_error = self.repos.source(
                    spec.repo_url, max_age=spec.interval, force=True, credentials=credentials
                )
                desired = load_desired(spec, self.cluster, source=source)
        except GitOpsError as e:
            message = f"{fetch_error}; {e}" if fetch_error and fetch_error not in str(e) else str(e)
            reason = "SourceUnavailable" if fetch_error or source is None else "RenderFailed"
            self._write(ref, obj, generation, requested, _unknown_all(reason, message), {"source": {"error": message}})
            if memory.source_told != message:
                memory.source_told = message
                self._event(obj, "Warning", reason, message)
            self.metrics.reconciled(ref, "error", self.clock.monotonic() - started)
            return min(spec.interval, ERROR_RETRY_SECONDS)
        loaded = Loaded(ref, obj, spec, desired)
        comparison = compare_loaded(self.cluster, loaded, self.masker, shortcut=self.shortcut)
        self._track(ref, memory, comparison)
        facts = _facts(spec, desired.commit.sha, obj, comparison)
        now = self.clock.monotonic()
        step = plan(facts, memory.attempts, now)
        self._tell_drift(obj, memory, comparison, step)
        sync_error = ""
        if step.step is Step.SYNC:
            sync_error, obj, comparison = self._sync(loaded, memory, step, now)
            facts = _facts(spec, desired.commit.sha, obj, comparison)
        elif step.fighting and not memory.fight_told:
            memory.fight_told = True
            self._event(obj, "Warning", "SelfHealBackoff", step.message)
        conditions, extra = self._judge(spec, facts, comparison, step, sync_error, fetch_error)
        self._write(ref, obj, generation, requested, conditions, extra)
        self.metrics.observed(ref, facts, comparison, extra["health"]["status"], spec.suspend is not None)
        self.metrics.reconciled(ref, "error" if sync_error else "ok", self.clock.monotonic() - started)
        if step.step is Step.WAIT:
            return max(step.retry_at - self.clock.monotonic(), 0.1)
        return spec.interval

    @staticmethod
    def _behind(source: GitSource, applied: str, desired: Desired) -> bool:
        """Whether the mirror is behind what was synced: it lacks that commit, or has it as a descendant of its
        own target."""
        return not source.has_commit(applied) or source.is_ancestor(desired.commit.sha, applied)

    def _sync(self, loaded: Loaded, memory: AppMemory, step: Plan, now: float) -> tuple[str, KubeObject, Comparison]:
        ref = loaded.ref
        memory.attempts = memory.attempts.after(step.attempt, now)
        error = ""
        started = self.clock.monotonic()
        try:
            report = sync_loaded(
                self.cluster,
                loaded,
                trigger=step.trigger,
                reason=step.message,
                before_apply=self._check_leading,
                clock=self.clock,
                shortcut=self.shortcut,
                expect_synced=last_synced(loaded.obj.get("status") or {}),
            )
        except SyncSuperseded as e:
            log.info("%s", e)
            memory.attempts = Attempts()
            self.queue.add(ref)  # judged again on the state the other sync left
            error = ""
        except GitOpsError as e:
            error = str(e)
            self._event(loaded.obj, "Warning", "SyncFailed", f"{step.message}: {e}")
            self.metrics.synced(ref, step.trigger.value, "Failed", self.clock.monotonic() - started)
        else:
            record = report.record
            result = record.result.value if record is not None else "Succeeded"
            counts = dict(record.counts) if record is not None else {}
            text = ", ".join(f"{n} {what}" for what, n in sorted(counts.items()) if n and what != "unchanged")
            what = f"{step.message}: {text or 'nothing changed'}"
            if record is not None:
                what += f" (sync {record.id} at {record.commit.sha[:12]})"
            if report.failed:
                error = "; ".join(f"{r.key}: {r.message}" for r in report.failed[:3])
                self._event(loaded.obj, "Warning", "SyncFailed", f"{what}; failed: {error}")
            else:
                self._event(loaded.obj, "Normal", "Synced", what)
                if step.attempt.startswith("sync"):
                    memory.attempts = Attempts()  # a sync that worked is no failure to back off from
            self.metrics.synced(ref, step.trigger.value, result, self.clock.monotonic() - started)
        obj = self.cluster.get(application_resource(self.cluster), ref.namespace, ref.name) or loaded.obj
        comparison = compare_loaded(
            self.cluster, Loaded(ref, obj, loaded.spec, loaded.desired), self.masker, shortcut=self.shortcut
        )
        self._track(ref, memory, comparison)
        return error, obj, comparison

    def _track(self, ref: AppRef, memory: AppMemory, comparison: Comparison) -> None:
        keys = {d.key for d in comparison.diffs}
        with self._lock:
            for key in memory.keys - keys:
                self._owners.get(key, set()).discard(ref)
            for key in keys:
                self._owners.setdefault(key, set()).add(ref)
            memory.keys = keys
        self._watch_kinds({k.group_kind for k in keys})

    def _tell_drift(self, obj: KubeObject, memory: AppMemory, comparison: Comparison, step: Plan) -> None:
        drifted = [d for d in comparison.diffs if d.drifted]
        told = "; ".join(f"{d.key} {d.state.value}" for d in drifted[:MAX_LISTED_DRIFT])
        if told and told != memory.drift_told:
            fields = sum(len(d.items) for d in drifted)
            action = "healed" if step.step is Step.SYNC and step.attempt == "heal" else "reported"
            self._event(
                obj,
                "Warning",
                "DriftDetected",
                f"{len(drifted)} objects differ from Git ({fields} fields), {action}: {told}",
            )
        if not told and step.step is not Step.SYNC:
            memory.fight_told = False
        if step.step is not Step.SYNC:  # a heal's own result is looked at on the next pass
            memory.drift_told = told
        elif told:
            memory.drift_told = ""  # drift that comes back after the heal is told again

    def _judge(
        self,
        spec: ApplicationSpec,
        facts: Facts,
        comparison: Comparison,
        step: Plan,
        sync_error: str,
        fetch_error: str,
    ) -> tuple[list[Condition], dict[str, Any]]:
        target = facts.target
        held = f" (held by a rollback to {target[:12]})" if spec.rollback is not None else ""
        if sync_error:
            synced = Condition(SYNCED, False, "SyncFailed", sync_error)
        elif facts.synced == target:
            synced = Condition(SYNCED, True, "Synced", f"the cluster was synced to {target[:12]}{held}")
        else:
            synced = Condition(
                SYNCED, False, step.reason if step.step is not Step.NOTHING else "NewCommit", step.message
            )
        drifted_diffs = [d for d in comparison.diffs if d.drifted]
        if drifted_diffs:
            names = ", ".join(str(d.key) for d in drifted_diffs[:5])
            reason = step.reason if step.reason in ("SelfHealBackoff", "Suspended") else "DriftFound"
            message = f"{len(drifted_diffs)} objects differ from Git: {names}"
            if step.fighting:
                message = f"{step.message}. {message}"
            drifted = Condition(DRIFTED, True, reason, message)
        else:
            drifted = Condition(DRIFTED, False, "NoDrift", "every object is as Git declares it")
        live = {d.key: comparison.live.get(d.key) for d in comparison.diffs if d.state is not ObjectState.EXTRA}
        health = application_health(live)
        healthy = Condition(HEALTHY, health.status is Health.HEALTHY, health.status.value, health.message)
        conditions = [synced, drifted, healthy]
        if fetch_error:
            conditions.insert(0, Condition("Ready", False, "SourceUnavailable", fetch_error))
        else:
            conditions.insert(0, ready(synced, drifted, healthy))
        extra: dict[str, Any] = {
            "sync": {
                "status": "Synced" if synced.status else "OutOfSync",
                "revision": facts.synced or None,
                "target": target,
            },
            "health": {
                "status": health.status.value,
                "message": health.message,
                "resources": [
                    {**key.as_dict(), "status": h.status.value, **({"message": h.message} if h.message else {})}
                    for key, h in health.objects
                ],
            },
            "drift": {
                "checkedAt": rfc3339(self.clock.wall()),
                "objects": len(drifted_diffs),
                "missing": sum(1 for d in drifted_diffs if d.state is ObjectState.MISSING),
                "extra": sum(1 for d in drifted_diffs if d.state is ObjectState.EXTRA),
                "fields": sum(len(d.items) for d in drifted_diffs),
                "items": [{**d.key.as_dict(), "state": d.state.value} for d in drifted_diffs[:MAX_LISTED_DRIFT]],
            },
            "source": {"error": fetch_error or None},
        }
        return conditions, extra

    # --- writing ---------------------------------------------------------------------------------------------
    def _write(
        self,
        ref: AppRef,
        obj: KubeObject,
        generation: int,
        requested: str,
        conditions: list[Condition],
        extra: dict[str, Any],
    ) -> None:
        self._check_leading()
        previous = (obj.get("status") or {}).get("conditions") or []
        status: dict[str, Any] = {
            **extra,
            "observedGeneration": generation,
            "conditions": merged(previous, conditions, generation=generation, now=self.clock.wall()),
            "reconciledAt": rfc3339(self.clock.wall()),
            "controller": self.identity,
        }
        if requested:
            status["lastHandledReconcileAt"] = requested
        try:
            patch_status(self.cluster, ref, status)
        except GitOpsError as e:
            log.warning("writing the status of %s failed: %s", ref, e)

    def _event(self, obj: KubeObject, kind: str, reason: str, message: str) -> None:
        """An Event on the Application, as kubectl describe and kubectl get events show them."""
        metadata = obj.get("metadata") or {}
        info = self.cluster.resource_for("v1", "Event")
        if info is None or self.stop.is_set():
            return
        at = self.clock.wall()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{metadata.get('name')}.", "namespace": metadata.get("namespace")},
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": metadata.get("name"),
                "namespace": metadata.get("namespace"),
                "uid": metadata.get("uid"),
                "resourceVersion": metadata.get("resourceVersion"),
            },
            "type": kind,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "gitops-controller"},
            "firstTimestamp": rfc3339(at),
            "lastTimestamp": rfc3339(at),
            "count": 1,
        }
        try:
            self.cluster.request("POST", info.path(str(metadata.get("namespace") or "")), body=event)
        except GitOpsError as e:
            log.warning("recording the event %s on %s failed: %s", reason, metadata.get("name"), e)


def _facts(spec: ApplicationSpec, target: str, obj: KubeObject, comparison: Comparison) -> Facts:
    return Facts(
        target=target,
        synced=synced_commit(dict(obj.get("status") or {})),
        drifted=comparison.drifted,
        automated=spec.automated,
        self_heal=spec.self_heal,
        suspended=spec.suspend is not None,
    )


def _unknown_all(reason: str, message: str) -> list[Condition]:
    """The conditions when Git's state cannot be had: nothing can be judged, and that is what they say."""
    return [
        Condition("Ready", False, reason, message),
        Condition(SYNCED, None, reason, message),
        Condition(DRIFTED, None, reason, message),
        Condition(HEALTHY, None, reason, message),
    ]
