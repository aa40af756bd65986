"""The use cases both front doors (and, later, history and the in-cluster reconciler) run: load an Application and
Git's state of it, compare it with the cluster, sync it and record the sync. The CLI verbs only parse flags and
print what these return."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .adapters.kube import KubeClient
from .adapters.source import GitSource
from .apps import comparison_status, get_application, patch_status, sync_status
from .compare import Comparison, Desired, compare, load_desired, new_masker
from .core.application import ApplicationSpec
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

    @property
    def failed(self) -> list[SyncResult]:
        return [r for r in self.results if r.action is Action.FAILED]


def sync_loaded(
    cluster: KubeClient,
    loaded: Loaded,
    *,
    prune: bool = False,
    dry_run: bool = False,
    progress: Callable[[SyncResult], None] = lambda _: None,
    before_apply: BeforeApply = lambda _: None,
) -> SyncReport:
    """Applies Git's objects of `loaded` (pruning when asked or when the Application says so) and, unless it is a dry
    run, records the sync, with the authenticated user, in the Application's status."""
    syncer = Syncer(cluster, loaded.spec, dry_run=dry_run, progress=progress, before_apply=before_apply)
    results = syncer.run(loaded.desired, loaded.obj, prune=prune or loaded.spec.prune)
    if not dry_run:
        patch_status(cluster, loaded.ref, sync_status(loaded.obj, loaded.desired.commit, cluster.whoami(), results))
    return SyncReport(loaded, results, dry_run)
