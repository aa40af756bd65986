"""Sync: apply Git's state with server-side apply, in a safe order, remove what others added, prune what Git dropped."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .compare import (
    NO_FINGERPRINTS,
    Cluster,
    Desired,
    DesiredObject,
    Fingerprints,
    apply_desired,
    concurrently,
    live_state,
)
from .core import fieldsets
from .core.application import ApplicationSpec
from .core.drift import added, declared_fields
from .core.errors import ApiError, GitOpsError
from .core.history import ObjectAction
from .core.normalize import normalize
from .core.objects import REVISION_ANNOTATION, TRY_AGAIN, KubeObject, ObjectKey, key_of
from .core.redact import scrub_for
from .core.resources import Applied

# Applied first, one wave each: what other objects live in or are instances of.
FIRST_WAVES = (frozenset({"Namespace"}), frozenset({"CustomResourceDefinition"}))
CRD_ESTABLISH_TIMEOUT = 60.0


Action = ObjectAction  # what a sync did to one object; its record keeps the same words (engine.core.history)


@dataclass(frozen=True)
class SyncResult:
    key: ObjectKey
    action: Action
    message: str = ""
    fingerprint: str = ""  # of what the sync left, when it left no drift (engine.core.fingerprint); "": none

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {**self.key.as_dict(), "action": self.action.value}
        if self.message:
            out["message"] = self.message
        return out


Progress = Callable[[SyncResult], None]
# Called with objects about to be applied (all whose kind is known first, then those of CRDs this sync applies):
# where the plugin makes sure the webhook's registration covers their kinds before any of them exists.
BeforeApply = Callable[[list[DesiredObject]], None]


def _no_progress(_: SyncResult) -> None:
    pass


def _nothing_before(_: list[DesiredObject]) -> None:
    pass


def waves(objects: list[DesiredObject]) -> list[list[DesiredObject]]:
    """Namespaces, then CRDs, then everything else; empty waves dropped."""
    out: list[list[DesiredObject]] = [[] for _ in range(len(FIRST_WAVES) + 1)]
    for d in objects:
        index = next((i for i, kinds in enumerate(FIRST_WAVES) if d.key.kind in kinds), len(FIRST_WAVES))
        out[index].append(d)
    return [w for w in out if w]


def _removal_ops(live: KubeObject, paths: list[fieldsets.FieldPath]) -> list[dict[str, Any]]:
    """JSON patch removing fields from `live`, deepest and last first so earlier indices stay valid."""
    pointers = [p for p in (fieldsets.pointer(live, path) for path in paths) if p]

    def order(pointer: str) -> list[Any]:
        return [(0, int(t)) if t.isdigit() else (1, t) for t in pointer.split("/")]

    ops: list[dict[str, Any]] = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": live["metadata"]["resourceVersion"]}
    ]
    ops += [{"op": "remove", "path": p} for p in sorted(set(pointers), key=order, reverse=True)]
    return ops


# Seconds between the tries of an apply our webhook could not judge yet (about the interval of its on-demand loads).
UNJUDGED_WAITS = (1.0, 2.0, 4.0)


def judged_later(refusal: ApiError) -> bool:
    """Whether the API server's refusal is our webhook's "cannot be judged against Git yet": worth another try."""
    return refusal.status == 403 and TRY_AGAIN in str(refusal)


class Syncer:
    def __init__(
        self,
        cluster: Cluster,
        app: ApplicationSpec,
        *,
        dry_run: bool = False,
        progress: Progress = _no_progress,
        before_apply: BeforeApply = _nothing_before,
        fingerprints: Fingerprints = NO_FINGERPRINTS,
        unjudged_waits: tuple[float, ...] = UNJUDGED_WAITS,
    ):
        self.fingerprints = fingerprints
        self.unjudged_waits = unjudged_waits
        self.cluster = cluster
        self.app = app
        self.dry_run = dry_run
        self.progress = progress
        self.before_apply = before_apply
        self._new_namespaces: set[str] = set()  # what this sync creates (a dry run: would create)

    def _wait_established(self, names: list[str]) -> None:
        info = self.cluster.resource_for("apiextensions.k8s.io/v1", "CustomResourceDefinition")
        if info is None or not names:
            return
        deadline = time.monotonic() + CRD_ESTABLISH_TIMEOUT
        pending = set(names)
        while pending:
            for name in sorted(pending):
                crd = self.cluster.get(info, "", name) or {}
                conditions = (crd.get("status") or {}).get("conditions") or []
                if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
                    pending.discard(name)
            if pending and time.monotonic() > deadline:
                raise GitOpsError(
                    f"CustomResourceDefinitions not established after {CRD_ESTABLISH_TIMEOUT:.0f}s: {sorted(pending)}"
                )
            if pending:
                time.sleep(0.2)
        self.cluster.refresh_discovery()

    def _resolve(self, d: DesiredObject) -> DesiredObject:
        if d.info is not None or self.dry_run:
            return d  # a dry run applies no CRD: its kind stays unserved (see _unchecked)
        deadline = time.monotonic() + CRD_ESTABLISH_TIMEOUT
        # Discovery catches up with a newly established CRD a moment later.
        while (info := self.cluster.resource_for(str(d.obj["apiVersion"]), str(d.obj["kind"]))) is None:
            if time.monotonic() > deadline:
                raise GitOpsError(f"{d.key} ({d.manifest.where}): its kind is still unknown after its CRD was applied")
            time.sleep(0.25)
            self.cluster.refresh_discovery()
        return DesiredObject(d.manifest, d.obj, info)

    def _unchecked(self, d: DesiredObject) -> str:
        """In a dry run, why the API server cannot be asked about `d` ("" when it can): its kind or its namespace
        comes with this sync, and a dry run creates neither. A sync would create the object."""
        if not self.dry_run:
            return ""
        if d.info is None:
            return "dry run: its kind comes with a CustomResourceDefinition of this sync, not created by a dry run"
        if d.key.namespace in self._new_namespaces:
            return f"dry run: its namespace {d.key.namespace} comes with this sync, not created by a dry run"
        return ""

    def _apply_one(self, d: DesiredObject, live: KubeObject | None, autoscaled: bool) -> SyncResult:
        unchecked = self._unchecked(d)
        if unchecked:
            return SyncResult(d.key, Action.CREATED, unchecked + " (not checked by the API server)")
        assert d.info is not None
        created = False
        try:
            applied = self._apply_judged(d, live)
            result, created = applied.obj, applied.created
            # Fields others added that Git does not declare: we own what Git declares now, so remove the rest.
            policy = self.app.policy(autoscaled=autoscaled)
            extra = [path for path, _ in added(result, declared_fields(result), policy)]
            if extra and not self.dry_run:
                result = self.cluster.json_patch(d.info, d.key, _removal_ops(result, extra))
        except ApiError as e:
            return SyncResult(d.key, Action.FAILED, scrub_for(str(e), d.obj))
        # What the apply answered is what it left, with nothing added to remove: its fingerprint can be trusted.
        left = "" if extra or self.dry_run else self.fingerprints.of_left(self.app, d, result, policy)
        if created:
            action = Action.CREATED
        elif extra or live is None or normalize(result) != normalize(live):
            # Compared by content: the server sometimes rewrites an unchanged object once (a new resourceVersion).
            action = Action.CONFIGURED
        else:
            action = Action.UNCHANGED
        return SyncResult(d.key, action, fingerprint=left)

    def _apply_judged(self, d: DesiredObject, live: KubeObject | None) -> Applied:
        """apply_desired, tried again while our webhook answers that it cannot judge the object yet (its Git state of
        a CRD the sync has just made, or of an Application created a moment ago, is still loading); any other
        refusal, a drift denial among them, is the answer at once."""
        for wait in self.unjudged_waits:
            try:
                return apply_desired(self.cluster, d, live, dry_run=self.dry_run)
            except ApiError as e:
                if not judged_later(e):
                    raise
            time.sleep(wait)
        return apply_desired(self.cluster, d, live, dry_run=self.dry_run)

    def _left_alone(self, d: DesiredObject, live: KubeObject | None, autoscaled: bool) -> SyncResult | None:
        """The result for an object the last sync left as Git has it and that nobody touched since (its fingerprint
        matches, and it carries this commit's mark): an apply would change nothing. None: it is applied."""
        if live is None or d.info is None:
            return None
        marks = (live.get("metadata") or {}).get("annotations") or {}
        wanted = ((d.obj.get("metadata") or {}).get("annotations") or {}).get(REVISION_ANNOTATION)
        if marks.get(REVISION_ANNOTATION) != wanted:
            return None
        policy = self.app.policy(autoscaled=autoscaled)
        kept = self.fingerprints.kept_for(self.app, d, live, policy)
        return SyncResult(d.key, Action.UNCHANGED, fingerprint=kept) if kept else None

    def _ensure_namespace(self, desired: Desired) -> None:
        """The destination namespace, created if missing (not tracked: pruning never deletes it)."""
        name = self.app.destination_namespace
        if any(d.key.kind == "Namespace" and d.key.name == name for d in desired.objects):
            return
        info = self.cluster.resource_for("v1", "Namespace")
        if info is None or self.cluster.get(info, "", name) is not None:
            return
        self.cluster.apply(
            info, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}, dry_run=self.dry_run
        )
        self._new_namespaces.add(name)

    def run(self, desired: Desired, app_obj: KubeObject, *, prune: bool) -> list[SyncResult]:
        state = live_state(self.cluster, self.app, app_obj, desired)
        live = state.objects
        self._ensure_namespace(desired)
        if not self.dry_run:
            self.before_apply([d for d in desired.objects if d.info is not None])
        results: list[SyncResult] = []
        for wave in waves(desired.objects):
            resolved = [self._resolve(d) for d in wave]
            late = [r for d, r in zip(wave, resolved, strict=True) if d.info is None]
            if late and not self.dry_run:
                self.before_apply(late)
            wave = resolved

            def apply(d: DesiredObject) -> SyncResult:
                # An object not tracked yet is created, or adopted (configured): the apply's answer tells which.
                result = self._apply_one(d, live.get(d.key), state.autoscaled(d.key))
                self.progress(result)
                return result

            # What the last sync left as Git has it is found first, here: CPU only, no thread pool needed.
            alone = {d.key: r for d in wave if (r := self._left_alone(d, live.get(d.key), state.autoscaled(d.key)))}
            for r in alone.values():
                self.progress(r)
            pending = [d for d in wave if d.key not in alone]
            applied = dict(zip((d.key for d in pending), concurrently(apply, pending), strict=True))
            done = [alone[d.key] if d.key in alone else applied[d.key] for d in wave]
            results.extend(done)
            self._new_namespaces |= {
                r.key.name for r in done if r.key.kind == "Namespace" and r.action is Action.CREATED
            }
            if any(r.action is Action.FAILED for r in done):
                return results  # later waves depend on this one
            crds = [d.key.name for d in wave if d.key.kind == "CustomResourceDefinition"]
            if crds and not self.dry_run:
                self._wait_established(crds)
        if prune:
            wanted = {d.key for d in desired.objects}
            extras = [obj for key, obj in sorted(live.items()) if key not in wanted]
            results.extend(concurrently(self._prune_one, extras))
        return results

    def _prune_one(self, obj: KubeObject) -> SyncResult:
        key = key_of(obj)
        info = self.cluster.resource_for(str(obj["apiVersion"]), str(obj["kind"]))
        if info is None:
            return SyncResult(key, Action.FAILED, "its kind is no longer served")
        if self.dry_run:
            result = SyncResult(key, Action.PRUNED, "dry run")
        else:
            try:
                self.cluster.delete(info, key, uid=str(obj["metadata"].get("uid", "")))
                result = SyncResult(key, Action.PRUNED)
            except ApiError as e:
                result = SyncResult(key, Action.FAILED, str(e))
        self.progress(result)
        return result
