"""Desired state from Git, live state from the cluster, and their comparison: the question both front doors ask."""

from __future__ import annotations

import functools
import hashlib
import posixpath
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from .adapters.parsedcache import ParsedCache
from .adapters.render import DIRECTORY_SUFFIXES, detect_from_names, render_directory, render_files
from .adapters.source import Commit, GitSource
from .core import fingerprint, redact
from .core.application import ApplicationSpec
from .core.drift import DriftPolicy, ObjectDiff, ObjectState, diff_object, diff_replaced
from .core.errors import ApiError, ManifestError
from .core.manifests import Manifest, check_unique
from .core.normalize import SecretMasker
from .core.objects import TRACKING_LABEL, AppRef, KubeObject, ObjectKey, is_tracked_by, key_of, with_tracking
from .core.redact import scrub_for
from .core.resources import Applied, ResourceInfo
from .gitcredentials import with_credentials

T = TypeVar("T")
R = TypeVar("R")
WORKERS = 16  # concurrent requests: as many as KubeClient keeps connections (its pool_size)


class Cluster(Protocol):
    """What the engine needs of the API server (engine.adapters.kube.KubeClient implements it)."""

    def resource_for(self, api_version: str, kind: str) -> ResourceInfo | None: ...
    def preferred(self, group: str, kind: str) -> ResourceInfo | None: ...
    def refresh_discovery(self) -> None: ...
    def get(self, info: ResourceInfo, namespace: str, name: str) -> KubeObject | None: ...
    def list_objects(
        self, info: ResourceInfo, *, namespace: str = "", label_selector: str = ""
    ) -> Iterator[KubeObject]: ...
    def apply(
        self,
        info: ResourceInfo,
        obj: KubeObject,
        *,
        dry_run: bool = False,
        force: bool = True,
        field_manager: str = ...,
    ) -> Applied: ...
    def json_patch(
        self, info: ResourceInfo, key: ObjectKey, ops: list[dict[str, Any]], *, field_manager: str = ...
    ) -> KubeObject: ...
    def replace(self, info: ResourceInfo, obj: KubeObject, *, dry_run: bool = False) -> KubeObject: ...
    def delete(self, info: ResourceInfo, key: ObjectKey, *, uid: str = "") -> bool: ...


def concurrently(fn: Callable[[T], R], items: Sequence[T], workers: int = WORKERS) -> list[R]:
    """`fn` over `items` on a thread pool, results in input order; the first exception propagates."""
    if len(items) <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        return list(pool.map(fn, items))


@dataclass(frozen=True)
class DesiredObject:
    """One object Git declares, ready to send: namespace set, tracking marks on, its resource resolved."""

    manifest: Manifest
    obj: KubeObject
    info: ResourceInfo | None  # None: a custom resource whose CRD is part of this same sync

    @functools.cached_property
    def key(self) -> ObjectKey:  # asked for many times per object: computed once
        return key_of(self.obj)


@dataclass
class Desired:
    commit: Commit
    objects: list[DesiredObject]

    def by_key(self) -> dict[ObjectKey, DesiredObject]:
        return {d.key: d for d in self.objects}


def _crd_kinds(manifests: Iterable[Manifest]) -> dict[tuple[str, str], bool]:
    """(group, kind) -> namespaced, for the CRDs among the manifests."""
    kinds = {}
    for m in manifests:
        if m.obj.get("kind") == "CustomResourceDefinition":
            spec = m.obj.get("spec") or {}
            kind = (str(spec.get("group", "")), str((spec.get("names") or {}).get("kind", "")))
            kinds[kind] = spec.get("scope", "Namespaced") != "Cluster"
    return kinds


def prepare(
    manifests: list[Manifest], app: ApplicationSpec, cluster: Cluster, revision: str = ""
) -> list[DesiredObject]:
    """Resolves each manifest's resource, defaults namespaces, adds tracking; unknown kinds and duplicates fail."""
    pending_crds = _crd_kinds(manifests)
    prepared: list[DesiredObject] = []
    for manifest in manifests:
        # A Secret's values are known to the scrubber from the moment they are read from Git: an error about the
        # object (a kind the cluster lacks, a duplicate) must not quote them either.
        redact.SEEN.remember(manifest.obj)
        obj = dict(manifest.obj)
        metadata = dict(obj.get("metadata") or {})
        api_version, kind = str(obj["apiVersion"]), str(obj["kind"])
        info = cluster.resource_for(api_version, kind)
        group = api_version.rpartition("/")[0]
        if info is None and (group, kind) not in pending_crds:
            raise ManifestError(
                f"{manifest.where}: the cluster does not know {kind} in {api_version}; "
                "install its CustomResourceDefinition first or fix apiVersion/kind"
            )
        namespaced = info.namespaced if info is not None else pending_crds[(group, kind)]
        if namespaced and not metadata.get("namespace"):
            metadata["namespace"] = app.destination_namespace
        elif not namespaced:
            metadata.pop("namespace", None)
        obj["metadata"] = metadata
        prepared.append(
            DesiredObject(
                Manifest(manifest.source, manifest.document, obj), with_tracking(obj, app.ref, revision), info
            )
        )
    check_unique(p.manifest for p in prepared)
    return prepared


def load_desired(
    app: ApplicationSpec, cluster: Cluster, *, revision: str | None = None, source: GitSource | None = None
) -> Desired:
    """Git's objects for `app` at `revision` (default: the Application's), rendered and prepared."""
    source = source or GitSource(app.repo_url)
    if source.credentials is None:
        with_credentials(source, cluster, app)
    commit = source.resolve(revision or app.target or None)
    label = f"{app.path.strip('/') or '.'}@{commit.sha[:12]}"
    env = build_env(app, commit.sha)
    # A plain directory's render is fixed by the commit, the path and how it is read (its options, Jsonnet's
    # variables): kept per commit next to the mirror (engine.adapters.parsedcache), read once per commit.
    options = hashlib.sha256(repr((app.directory, sorted(env.items()))).encode()).hexdigest()[:16]
    parsed = ParsedCache(source.path.with_name(source.path.name + ".parsed"))
    cached = parsed.get(commit.sha, app.path, f"{label}#{options}")
    kind = "directory" if cached is not None else detect_from_names(source.file_names(commit.sha, app.path))
    if cached is not None:
        manifests = cached
    elif kind == "directory":
        files = source.read_files(commit.sha, app.path, DIRECTORY_SUFFIXES, recurse=app.directory.recurse)
        manifests = render_files(
            files,
            label,
            options=app.directory,
            base=app.path,
            read=lambda path: source.read_file(commit.sha, path),
            env=env,
        )
        parsed.put(commit.sha, app.path, f"{label}#{options}", manifests)
    else:
        with source.checkout(commit.sha, app.path) as directory:
            manifests = render_directory(
                directory, label, app.destination_namespace, app.helm, root=_export_root(directory, app.path)
            )
    if not manifests and not app.allow_empty:
        raise ManifestError(
            f"{label}: the source renders no object ({_empty_hint(kind, app)}); nothing is synced, pruned or "
            "judged from it. Fix spec.source.path, or set spec.source.allowEmpty: true if an empty source is "
            "meant (a sync with --prune then removes everything the Application manages)"
        )
    return Desired(commit, prepare(manifests, app, cluster, commit.sha))


def _export_root(directory: Path, path: str) -> Path:
    """The root of the export that GitSource.checkout made, from the source path's folder in it."""
    for part in posixpath.normpath(path.strip("/") or ".").split("/"):
        if part != ".":
            directory = directory.parent
    return directory


def build_env(app: ApplicationSpec, sha: str) -> dict[str, str]:
    """The variables Argo CD substitutes into Jsonnet's TLAs and external variables (its build environment; the
    repository URL is left out, as it may carry credentials)."""
    return {
        "ARGOCD_APP_NAME": app.ref.name,
        "ARGOCD_APP_NAMESPACE": app.destination_namespace,
        "ARGOCD_APP_REVISION": sha,
        "ARGOCD_APP_REVISION_SHORT": sha[:7],
        "ARGOCD_APP_SOURCE_PATH": app.path,
        "ARGOCD_APP_SOURCE_TARGET_REVISION": app.revision,
    }


def _empty_hint(kind: str, app: ApplicationSpec) -> str:
    if kind != "directory":
        return f"{kind} rendered nothing"
    where = "in the folder" if not app.directory.recurse else "in the folder or below it"
    globs = " matching include/exclude" if app.directory.include or app.directory.exclude else ""
    return f"no .yaml, .yml, .json or .jsonnet file{globs} {where} declares an object"


def tracked_live(cluster: Cluster, app: AppRef, kinds: Iterable[tuple[str, str]]) -> dict[ObjectKey, KubeObject]:
    """Objects of the given (group, kind)s that carry this Application's marks: one list call per kind."""
    infos = [info for group, kind in sorted(set(kinds)) if (info := cluster.preferred(group, kind)) is not None]

    def list_kind(info: ResourceInfo) -> list[KubeObject]:
        return [
            o
            for o in cluster.list_objects(info, label_selector=f"{TRACKING_LABEL}={app.name}")
            if is_tracked_by(o, app)
        ]

    found: dict[ObjectKey, KubeObject] = {}
    for objects in concurrently(list_kind, infos):
        for obj in objects:
            found[key_of(obj)] = obj
    return found


def inventory_kinds(app_obj: KubeObject) -> set[tuple[str, str]]:
    """The kinds this Application managed at its last sync (from its status), to find objects to prune."""
    return {
        (str(r.get("group", "")), str(r.get("kind", "")))
        for r in ((app_obj.get("status") or {}).get("resources") or [])
        if r.get("kind")
    }


def autoscaled_targets(objects: Iterable[DesiredObject]) -> set[tuple[str, str, str]]:
    """(namespace, kind, name) of every object an HPA in Git scales: its replicas belong to the autoscaler."""
    out = set()
    for d in objects:
        if d.obj.get("kind") == "HorizontalPodAutoscaler":
            ref = (d.obj.get("spec") or {}).get("scaleTargetRef") or {}
            out.add((d.key.namespace, str(ref.get("kind", "")), str(ref.get("name", ""))))
    return out


@dataclass(frozen=True)
class LiveState:
    """What diff and sync both start from: the objects that carry the Application's marks (of the kinds Git declares
    and of those its last sync managed), and which of Git's objects an HPA in Git scales."""

    objects: dict[ObjectKey, KubeObject]
    scaled: frozenset[tuple[str, str, str]]

    def autoscaled(self, key: ObjectKey) -> bool:
        return (key.namespace, key.kind, key.name) in self.scaled


@dataclass(frozen=True)
class Fingerprints:
    """What tells an object left as the last sync left it (engine.core.fingerprint): the key (None: trust nothing)
    and the fingerprints that sync kept."""

    secret: bytes | None
    kept: frozenset[str]

    def unchanged(self, app: ApplicationSpec, d: DesiredObject, live: KubeObject | None, policy: DriftPolicy) -> bool:
        return bool(self.kept_for(app, d, live, policy))

    def kept_for(self, app: ApplicationSpec, d: DesiredObject, live: KubeObject | None, policy: DriftPolicy) -> str:
        """The fingerprint of `live`, when the last sync kept it ("" when it did not, or nothing is trusted): what a
        sync that leaves the object alone keeps again, computed once."""
        return fingerprint.kept_fingerprint(self.secret, self.kept, app.ref, d.key, d.obj, live, policy)

    def of_left(self, app: ApplicationSpec, d: DesiredObject, live: KubeObject, policy: DriftPolicy) -> str:
        """The fingerprint of `live` as a sync leaves it ("" without a key)."""
        if self.secret is None:
            return ""
        return fingerprint.fingerprint(self.secret, app.ref, d.key, d.obj, live, policy)


NO_FINGERPRINTS = Fingerprints(None, frozenset())


def live_state(cluster: Cluster, app: ApplicationSpec, app_obj: KubeObject, desired: Desired) -> LiveState:
    kinds = {d.key.group_kind for d in desired.objects} | inventory_kinds(app_obj)
    return LiveState(tracked_live(cluster, app.ref, kinds), frozenset(autoscaled_targets(desired.objects)))


@dataclass
class Comparison:
    desired: Desired
    diffs: list[ObjectDiff] = field(default_factory=list)
    live: dict[ObjectKey, KubeObject] = field(default_factory=dict)

    @property
    def drifted(self) -> bool:
        return any(d.drifted for d in self.diffs)


def apply_desired(cluster: Cluster, d: DesiredObject, live: KubeObject | None, *, dry_run: bool) -> Applied:
    """Server-side apply of Git's object. When the merge with what others changed makes it invalid (HTTP 422: say, a
    list element re-keyed by hand) and the object exists, Git's object is stored whole instead (a PUT at the live
    resourceVersion) and then, for real, applied again so that our field manager owns what Git declares. A dry run
    answers the object as it would be stored whole. The API server's message never carries the object's Secret
    values."""
    assert d.info is not None
    try:
        try:
            return cluster.apply(d.info, d.obj, dry_run=dry_run)
        except ApiError as e:
            live = live or cluster.get(d.info, d.key.namespace, d.key.name)
            if e.status != 422 or live is None:
                raise
            version = live["metadata"]["resourceVersion"]
            replacement = {**d.obj, "metadata": {**d.obj["metadata"], "resourceVersion": version}}
            try:
                stored = cluster.replace(d.info, replacement, dry_run=dry_run)
            except ApiError as again:
                raise e from again  # the apply's reason is the one that says what is wrong with Git's object
            if dry_run:
                return Applied(stored, replaced=True)
            return Applied(cluster.apply(d.info, d.obj).obj, replaced=True)
    except ApiError as e:
        raise ApiError(scrub_for(str(e), d.obj), e.status, e.reason) from e


def new_masker() -> SecretMasker:
    """A masker with a key of this process only: markers compare within one output, never across runs."""
    return SecretMasker(secrets.token_bytes(32))


def compare(
    app: ApplicationSpec,
    app_obj: KubeObject,
    desired: Desired,
    cluster: Cluster,
    masker: SecretMasker,
    *,
    fingerprints: Fingerprints = NO_FINGERPRINTS,
) -> Comparison:
    """Diffs every desired object against the cluster (server-side dry-run, concurrently) and finds extras. An object
    whose fingerprint says it is as the last sync left it for this same Git object is synced without a dry-run."""
    state = live_state(cluster, app, app_obj, desired)
    live = state.objects

    def one(d: DesiredObject) -> tuple[ObjectDiff, KubeObject | None]:
        current = live.get(d.key)
        if current is None and d.info is not None:
            current = cluster.get(d.info, d.key.namespace, d.key.name)  # there, but not ours yet
        policy = app.policy(autoscaled=state.autoscaled(d.key))
        if current is None or d.info is None:
            return diff_object(d.key, d.obj, None, policy, masker), current
        try:
            applied = apply_desired(cluster, d, current, dry_run=True)
        except ApiError as e:
            raise ApiError(f"{d.key} ({d.manifest.where}): the API server rejects it: {e}", e.status, e.reason) from e
        if applied.replaced:
            return diff_replaced(d.key, applied.obj, current, policy, masker), current
        return diff_object(d.key, applied.obj, current, policy, masker), current

    # The fingerprints first, here (CPU only: a thread pool would only add its overhead); the rest is dry-run.
    left_alone = {
        d.key
        for d in desired.objects
        if d.info is not None
        and fingerprints.unchanged(app, d, live.get(d.key), app.policy(autoscaled=state.autoscaled(d.key)))
    }
    pending = [d for d in desired.objects if d.key not in left_alone]
    asked = dict(zip((d.key for d in pending), concurrently(one, pending), strict=True))
    results = [
        (ObjectDiff(d.key, ObjectState.SYNCED), live[d.key]) if d.key in left_alone else asked[d.key]
        for d in desired.objects
    ]
    diffs = [diff for diff, _ in results]
    found_live = {d.key: cur for d, (_, cur) in zip(desired.objects, results, strict=True) if cur is not None}
    wanted = {d.key for d in desired.objects}
    for key, obj in sorted(live.items()):
        if key not in wanted:
            diffs.append(diff_object(key, None, obj, app.policy(), masker))
            found_live[key] = obj
    return Comparison(desired, diffs, found_live)
