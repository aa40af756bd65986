"""Git's objects as the API server would store them, indexed for the admission webhook and kept fresh.

For every Application: render its target revision, then ask the API server what each object would be on its own
(a server-side dry-run apply under a probe name, so that nothing live is merged in). The result is what a request is
judged against. Requests that carry another revision of a known Application (a sync to a new commit) make that
revision load on demand, within a bounded time. The revision is chosen by the client: only a full commit name is
looked at, and what Git answered about it is remembered, so that requests do not each run git (or wait on a fetch).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .adapters.clock import SYSTEM
from .adapters.memory import give_back
from .adapters.source import READ_ERRORS, GitSource, redact_url
from .compare import Cluster, DesiredObject, autoscaled_targets, concurrently, load_desired
from .core.admission import Found, GitObject, Unjudged
from .core.application import ApplicationSpec, parse_application
from .core.clock import Clock
from .core.compact import DeclaredSets, interned
from .core.errors import ApiError, GitOpsError, SourceError
from .core.objects import (
    TRACKING_LABEL,
    AppRef,
    Claim,
    DriftMode,
    KubeObject,
    ObjectKey,
)
from .core.probe import from_probe, restored
from .core.probe import probe as probe_of
from .core.resources import ResourceInfo
from .core.webhookconfig import ManagedResource, managed_resources
from .gitcredentials import with_credentials

log = logging.getLogger(__name__)
RETRY_SECONDS = 5.0
MISSING_REVISION_SECONDS = 10.0  # how long "no such commit" stands before Git is asked again (it may be pushed)
REVISION_MEMORY = 4096  # answers about named revisions kept, at most (random names cannot grow it further)
REREAD_SECONDS = 1.0  # an Application read again for a revision it did not target: not again before this
CHECKS_AT_ONCE = 4  # Git checks of named revisions running at a time
PROBE_CHUNK = 256  # objects probed (and their answers held) at a time while an Application loads
EXTRA_REVISIONS = 4  # newer commits of one Application kept loaded beside its own (syncs to commits it does not target)
# What a sync writes: a full commit name, SHA-1 or SHA-256, in lowercase hex.
COMMIT_NAME = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


@dataclass
class AppState:
    spec: ApplicationSpec
    revision: str = ""  # "" until Git's state has been loaded once: then nothing of it can be judged
    objects: dict[ObjectKey, GitObject] = field(default_factory=dict)
    loaded_at: float = 0.0
    error: str = ""
    generation: int = 0
    attempted_at: float = 0.0
    # Objects Git declares that the state lacks: their kind was not served when it loaded (a CRD the sync applies
    # first), or they were probed outside a destination namespace that did not exist yet.
    pending: frozenset[ObjectKey] = frozenset()
    provisional: bool = False

    @property
    def loaded(self) -> bool:
        return bool(self.revision)


@dataclass(frozen=True)
class Rendered:
    """One commit of an Application, as the index keeps it."""

    revision: str
    objects: dict[ObjectKey, GitObject]
    pending: frozenset[ObjectKey] = frozenset()
    provisional: bool = False


@dataclass(frozen=True)
class RevisionAnswer:
    """Whether a named revision is newer than an Application's loaded one, and until when that answer stands: for
    a commit that exists, for good (history does not change); for a missing one, a short while."""

    newer: bool
    until: float


def _namespace_missing(e: ApiError, namespace: str) -> bool:
    return e.status == 404 and f'namespaces "{namespace}" not found' in str(e)


def stored_form(
    cluster: Cluster, d: DesiredObject, probe_namespace: str = ""
) -> tuple[KubeObject, dict[str, Any], bool]:
    """Git's object as the API server would store it, alone: a dry-run apply under a probe name. When the destination
    namespace does not exist yet (an Application's first sync makes it), the probe runs in `probe_namespace`
    instead; the third value says so (the form is provisional, to be probed again once the namespace exists)."""
    assert d.info is not None
    probe = probe_of(d.obj, secrets.token_hex(4))
    elsewhere = False
    try:
        answered = cluster.apply(d.info, probe, dry_run=True).obj
    except ApiError as e:
        if not (d.info.namespaced and probe_namespace and _namespace_missing(e, d.key.namespace)):
            raise
        probe["metadata"] = {**probe["metadata"], "namespace": probe_namespace}
        answered = cluster.apply(d.info, probe, dry_run=True).obj
        elsewhere = True
    stored, declared = from_probe(answered, d.key, d.obj["metadata"]["labels"][TRACKING_LABEL])
    return restored(d.obj, stored, declared), declared, elsewhere


class DesiredState:
    """The webhook's in-memory index: ObjectKey -> GitObject, for every Application."""

    def __init__(
        self,
        cluster: Cluster,
        list_applications: Callable[[], list[KubeObject]],
        *,
        source_factory: Callable[[str], GitSource] = GitSource,
        load_timeout: float = 6.0,
        retry_seconds: float = RETRY_SECONDS,
        missing_revision_seconds: float = MISSING_REVISION_SECONDS,
        revision_memory: int = REVISION_MEMORY,
        clock: Clock = SYSTEM,
        probe_namespace: str = "",
    ) -> None:
        self.cluster = cluster
        self.probe_namespace = probe_namespace
        self._list_applications = list_applications
        self._sources: dict[str, GitSource] = {}
        self._source_factory = source_factory
        self._apps: dict[AppRef, AppState] = {}
        self._index: dict[ObjectKey, GitObject] = {}
        # Commits newer than an Application's loaded one, loaded for requests that name them; dropped whenever the
        # Application's state changes (newer than what it was), at most EXTRA_REVISIONS of each, oldest dropped first.
        self._extra_revisions: dict[tuple[AppRef, str], dict[ObjectKey, GitObject]] = {}
        self._kinds: dict[tuple[str, str], str] = {}
        self._declared_sets = DeclaredSets()  # one copy of each distinct declared-field set (engine.core.compact)
        # (group, version, kind) -> how the cluster serves it, for every version Git declares a kind in
        self._served: dict[tuple[str, str, str], ResourceInfo] = {}
        self._loading: dict[tuple[AppRef, str], tuple[threading.Event, dict[str, Any]]] = {}  # loads in flight
        # (Application, loaded revision, named revision) -> the answer, least recently used first.
        self._answers: OrderedDict[tuple[AppRef, str, str], RevisionAnswer] = OrderedDict()
        self._rereads: dict[tuple[AppRef, str], threading.Event] = {}  # Applications read again, in flight
        self._reread_at: dict[tuple[AppRef, str], float] = {}  # when each was last asked
        self._checks = threading.BoundedSemaphore(CHECKS_AT_ONCE)  # Git checks of named revisions in flight
        self._asking: dict[tuple[AppRef, str, str], threading.Event] = {}
        self._lock = threading.RLock()
        self.load_timeout = load_timeout
        self.retry_seconds = retry_seconds
        self.missing_revision_seconds = missing_revision_seconds
        self.revision_memory = revision_memory
        # One clock for every age and interval (tests pass their own). Waits for a load or a check are bounded by
        # real deadlines: time.monotonic, as Event.wait counts.
        self._clock = clock
        self.ready = False
        self.listed = False  # the last attempt to list Applications succeeded
        self.attempted = False  # a first refresh has run (whatever came of it)
        self.last_refresh = 0.0
        self.last_error = ""
        self._list_error = ""  # why the last attempt to list Applications failed ("" when it did not)
        self._refreshing = threading.Lock()  # one refresh at a time (the loop's, or one a request asked for)
        self._asked_refresh: threading.Event | None = None  # a refresh a request is waiting for
        # What that refresh retries (None: every Application whose render failed or was partial): the union of what
        # the requests that joined it before it began asked for.
        self._asked_only: set[AppRef] | None = set()
        self._asked_begun = False
        self._refresh_asked_at = -float("inf")
        # When the list call of the last refresh that finished began (monotonic): an Application it did not list may
        # have been created since, so only a refresh begun after a request arrived may call its claim made up.
        self._listed_at = -float("inf")

    # --- reads (the hot path) -------------------------------------------------------------------------------------
    def lookup(self, key: ObjectKey, revision: str = "", claims: tuple[Claim, ...] = ()) -> Found:
        """What Git says of `key`. At `revision` when the request names a commit newer than the loaded one that the
        Application's target reaches (loading it if needed); an older or unmerged commit is ignored. A key the loaded
        state lacks is looked for in the Applications the object claims (`claims`): at the named revision (a sync to
        a new commit creates objects the old one lacks), and, when such an Application is unknown or not loaded, by
        loading it now. Waits for Git and the cluster at most `load_timeout` in all. Never says "not managed" of an
        object that claims an Application whose state is not loaded: that is `unjudged`."""
        if not COMMIT_NAME.fullmatch(revision):
            revision = ""
        deadline = time.monotonic() + self.load_timeout  # for asking Git and loading the commit, together
        found = self._index.get(key)
        if found is not None:
            return self._in_index(found, key, revision, deadline)
        arrived = self._clock.monotonic()  # (off the hot path: an object Git declares is answered above)
        refs = self._claimed(claims)
        unknown = self._unknown(claims)
        if claims and (unknown or any(self._needs_load(ref, key) for ref in refs)):
            # An Application not known or not loaded yet: load it now. One not known (created a moment ago?), and an
            # object Git declares that its state lacks (its CRD was not served yet, the sync has just made it), are
            # worth the wait for the interval's next refresh when the last one ran too recently to run again.
            wait = unknown or any(self._pending(ref, key) for ref in refs)
            self._refresh_now(deadline, wait_for_turn=wait, retry_only=frozenset(refs))
            if any(self._pending(ref, key) for ref in refs):
                # The refresh it shared had begun without its Application (asked for by another request): the next.
                self._refresh_now(deadline, wait_for_turn=True, retry_only=frozenset(refs))
            if unknown and self._unknown(claims) and self._listed_at < arrived:
                # The refresh it shared began before it arrived: the interval's next one, if it comes in time.
                self._refresh_now(deadline, wait_for_turn=True, retry_only=frozenset(refs))
            found = self._index.get(key)
            if found is not None:
                return self._in_index(found, key, revision, deadline)
            refs = self._claimed(claims)
            # Still not listed when no listing begun since the request arrived has finished in time: it is taken for
            # made up, as a claim of no Application (a known limitation, README: the threat model).
        if claims and not refs and not self.listed:
            why = (
                f"the webhook cannot list Applications: {self._list_error}"
                if self._list_error
                else "the webhook has not finished loading the Applications yet"
            )
            return Found(unjudged=Unjudged(None, DriftMode.ENFORCE, why))
        loaded: set[AppRef] = set()
        for ref in refs:
            state = self._apps.get(ref)
            if state is None:
                continue
            if not state.loaded:
                why = state.error or "it has not been loaded yet"
                return Found(
                    unjudged=Unjudged(ref, state.spec.drift_mode, f"Git's state of {ref} is not loaded: {why}")
                )
            if revision and state.revision != revision:
                if self._is_newer(ref, revision, deadline):
                    other = self._revision_objects(ref, revision, deadline)
                    if other is None:
                        return Found(unjudged=self._not_loaded_in_time(ref, revision))
                    if key in other:
                        return Found(other[key])
                elif self._now_targets(ref, revision, deadline):  # a rollback to a commit that has it
                    current = self._index.get(key)
                    if current is not None and current.app == ref:
                        return Found(current)
                    state = self._apps.get(ref) or state
            if key in state.pending:
                why = state.error or "its kind or namespace is not served yet"
                return Found(unjudged=Unjudged(ref, state.spec.drift_mode, f"{key} of {ref} is not loaded: {why}"))
            loaded.add(ref)
        return Found(claimed=frozenset(loaded))

    def _in_index(self, found: GitObject, key: ObjectKey, revision: str, deadline: float) -> Found:
        if not revision or found.revision == revision:
            return Found(found)
        # Only a newer commit counts: an older one would let a hand-set annotation bring back old Git.
        app = found.app
        if not self._is_newer(app, revision, deadline):
            # An older commit counts only once the Application itself names it (a rollback: spec.rollback, which
            # only who may change Applications can write), never by the request's word: read it again to know.
            if not self._now_targets(app, revision, deadline):
                return Found(found)
            state = self._apps.get(app)
            if state is None or state.revision != revision:
                return Found(found)
            current = self._index.get(key)
            return Found(current) if current is not None and current.app == app else Found(claimed=frozenset({app}))
        other = self._revision_objects(app, revision, deadline)
        if other is None:
            return Found(unjudged=self._not_loaded_in_time(app, revision))
        return Found(other.get(key, found))

    def _now_targets(self, app: AppRef, revision: str, deadline: float) -> bool:
        """Whether the Application, read from the cluster now, targets `revision` (and its state is loaded there):
        it names that commit (a rollback), or it changed since it was loaded and now resolves to it (one lifted).
        The requests of one rollback sync name the same revision: one of them reads the Applications and, when the
        Application does name it, refreshes; the others wait for that. A name the Application does not target is
        read again at most once per REREAD_SECONDS, and at most CHECKS_AT_ONCE reads run at a time, so a flood of
        forged names costs a bounded number of list calls."""
        asked = (app, revision)
        with self._lock:
            pending = self._rereads.get(asked)
            owner = pending is None
            if owner:
                if self._clock.monotonic() - self._reread_at.get(asked, float("-inf")) < REREAD_SECONDS:
                    return False
                if not self._checks.acquire(blocking=False):
                    return False
                if len(self._reread_at) > self.revision_memory:
                    self._reread_at.clear()
                self._reread_at[asked] = self._clock.monotonic()
                pending = self._rereads[asked] = threading.Event()
        assert pending is not None
        if owner:

            def run() -> None:
                try:
                    for obj in self._list_applications():
                        try:
                            spec = parse_application(obj)
                        except GitOpsError:
                            continue
                        known = self._apps.get(app)
                        if spec.ref == app and (spec.target == revision or known is None or known.spec != spec):
                            self.refresh(full=False)  # held at it, or changed since (a rollback lifted)
                            break
                except GitOpsError as e:
                    log.warning("cannot read %s again: %s", app, e)
                finally:
                    with self._lock:
                        self._rereads.pop(asked, None)
                        state = self._apps.get(app)
                        if state is not None and state.revision == revision:
                            # It targets that name: a later request naming it (a rollback again after a resume)
                            # must read it again, however soon. Only names it did not target wait REREAD_SECONDS.
                            self._reread_at.pop(asked, None)
                    self._checks.release()
                    pending.set()

            threading.Thread(target=run, name="application-reread", daemon=True).start()
        pending.wait(max(0.0, deadline - time.monotonic()))
        state = self._apps.get(app)
        return state is not None and state.revision == revision

    def _now(self) -> float:
        """Wall time in seconds (ages shown in status, when a render was last attempted)."""
        return self._clock.wall().timestamp()

    def _not_loaded_in_time(self, app: AppRef, revision: str) -> Unjudged:
        state = self._apps.get(app)
        mode = state.spec.drift_mode if state is not None else DriftMode.ENFORCE
        return Unjudged(app, mode, f"commit {revision[:12]} of {app} could not be loaded in {self.load_timeout:.0f}s")

    def _claimed(self, claims: tuple[Claim, ...]) -> list[AppRef]:
        return [ref for ref in list(self._apps) if any(c.matches(ref) for c in claims)]

    def _unknown(self, claims: tuple[Claim, ...]) -> bool:
        """Whether one of `claims` names no Application the webhook knows."""
        known = list(self._apps)
        return any(not any(c.matches(ref) for ref in known) for c in claims)

    def _needs_load(self, ref: AppRef, key: ObjectKey) -> bool:
        state = self._apps.get(ref)
        return state is not None and (not state.loaded or key in state.pending)

    def _pending(self, ref: AppRef, key: ObjectKey) -> bool:
        state = self._apps.get(ref)
        return state is not None and state.loaded and key in state.pending

    def _refresh_now(
        self, deadline: float, *, wait_for_turn: bool = False, retry_only: frozenset[AppRef] | None = None
    ) -> None:
        """Asks for a refresh (a list call, renders of what is new or failed) in the background and waits for it
        until `deadline`. Requests share it, and it runs at most once per `retry_seconds`: a flood of requests
        claiming unknown Applications costs one list call per interval, not one each. Asked too soon after the last
        one, it does not run, unless `wait_for_turn` and its turn comes before `deadline`: then it runs then."""
        with self._lock:
            pending = self._asked_refresh
            if pending is not None and not self._asked_begun:
                self._join_asked(retry_only)  # the refresh waiting for its turn retries what this one needs too
            if pending is None:
                delay = self._refresh_asked_at + self.retry_seconds - self._clock.monotonic()
                if delay > 0 and not (wait_for_turn and delay < deadline - time.monotonic()):
                    return
                delay = max(0.0, delay)
                self._refresh_asked_at = self._clock.monotonic() + delay
                pending = self._asked_refresh = threading.Event()
                self._asked_only, self._asked_begun = set(), False
                self._join_asked(retry_only)

                def run() -> None:
                    try:
                        if delay:
                            time.sleep(delay)  # the turn of this interval's refresh
                        with self._lock:
                            self._asked_begun = True
                            only = None if self._asked_only is None else frozenset(self._asked_only)
                        self.refresh(full=False, retry_failed=True, retry_only=only)
                    except Exception:  # a request is waiting: never leave it hanging on a bug
                        log.exception("an on-demand refresh failed")
                    finally:
                        with self._lock:
                            self._asked_refresh = None
                        pending.set()

                threading.Thread(target=run, name="refresh-on-demand", daemon=True).start()
        pending.wait(max(0.0, deadline - time.monotonic()))

    def _join_asked(self, retry_only: frozenset[AppRef] | None) -> None:
        """Adds `retry_only` to what the scheduled on-demand refresh retries. (Call with the lock held.)"""
        if retry_only is None or self._asked_only is None:
            self._asked_only = None
        else:
            self._asked_only |= retry_only

    def _revision_objects(self, app: AppRef, revision: str, deadline: float) -> dict[ObjectKey, GitObject] | None:
        other = self._extra_revisions.get((app, revision))
        if other is None:
            other = self._load_revision(app, revision, deadline)
        return other

    def answers_at_once(self, key: ObjectKey, revision: str = "", claims: tuple[Claim, ...] = ()) -> bool:
        """Whether `lookup` answers from memory, without waiting for Git or the cluster: the revision is the loaded
        one, or not a commit name, or Git's answer about it is remembered (and, if newer, its objects are loaded);
        and every Application the object claims is known and loaded."""
        found = self._index.get(key)
        if found is None:
            refs = self._claimed(claims)
            if claims and (not refs or any(self._needs_load(ref, key) for ref in refs)):
                return False
        if not COMMIT_NAME.fullmatch(revision):
            return True
        if found is not None:
            if found.revision == revision:
                return True
            apps = [found.app]
        else:
            apps = [ref for ref in self._claimed(claims) if self._apps[ref].revision != revision]
        return all(self._known(app, revision) for app in apps)

    def all_loaded(self) -> bool:
        """Whether every Application's state is loaded (else an object without labels, the parent of a scale or an
        eviction, may be one the webhook cannot see)."""
        return self.listed and all(s.loaded and not s.pending for s in list(self._apps.values()))

    def _known(self, app: AppRef, revision: str) -> bool:
        state = self._apps.get(app)
        if state is None or not state.revision:
            return True
        with self._lock:
            known = self._answers.get((app, state.revision, revision))
            if known is None or self._clock.monotonic() >= known.until:
                return False
            if not known.newer:
                # An older commit: the Application is read again first (a rollback may name it), unless it just was.
                asked = (app, revision)
                recent = self._clock.monotonic() - self._reread_at.get(asked, float("-inf")) < REREAD_SECONDS
                return recent and asked not in self._rereads
            return (app, revision) in self._extra_revisions

    def _is_newer(self, app: AppRef, revision: str, deadline: float) -> bool:
        """Whether `revision` descends from the Application's loaded one and its target (branch, tag or commit)
        reaches it. Git is asked once per answer, not per
        request: a sync makes every request name the same revision (its requests wait for the one check), and a
        hand-set annotation can name anything. A request waits for Git until `deadline` (time.monotonic; a fetch
        can hang on a slow remote, and the answer is still remembered when it comes), and at most CHECKS_AT_ONCE
        checks run at a time,
        so that a hanging remote cannot pile up threads."""
        state = self._apps.get(app)
        if state is None or not state.revision:
            return False
        asked = (app, state.revision, revision)
        with self._lock:
            known = self._answers.get(asked)
            if known is not None and self._clock.monotonic() < known.until:
                self._answers.move_to_end(asked)
                return known.newer
            pending = self._asking.get(asked)
            if pending is None:
                if not self._checks.acquire(blocking=False):
                    return False  # Git is busy with other names: not newer for now (and not remembered)
                pending = self._asking[asked] = threading.Event()
                owner = True
            else:
                owner = False
        if owner:
            source = self._source(state.spec.repo_url)
            loaded = state.revision

            target = state.spec.target or None

            def check() -> None:
                final = False  # an answer that stands for good: history does not change
                try:
                    exists = source.ensure_commit(revision)
                    newer = exists and source.is_ancestor(loaded, revision)
                    final = exists and not newer  # an older or unrelated commit stays so
                    if newer:
                        # A commit counts only once the Application's target reaches it: a branch not merged, or a
                        # commit only a pull request's ref holds, is anyone's to push.
                        newer = source.is_ancestor(revision, source.resolve(target).sha)
                        if not newer:
                            source.fetch()  # the target may have moved since the mirror last looked
                            newer = source.is_ancestor(revision, source.resolve(target).sha)
                        final = newer
                except GitOpsError as e:
                    log.warning("cannot tell whether %s is newer than %s: %s", revision[:12], loaded[:12], e)
                    newer = False  # the remote is unreachable: as good as missing for now
                until = float("inf") if final else self._clock.monotonic() + self.missing_revision_seconds
                with self._lock:
                    self._answers[asked] = RevisionAnswer(newer, until)
                    self._answers.move_to_end(asked)
                    while len(self._answers) > self.revision_memory:
                        self._answers.popitem(last=False)

            def run() -> None:
                try:
                    check()
                finally:
                    with self._lock:
                        self._asking.pop(asked, None)
                    self._checks.release()
                    pending.set()

            threading.Thread(target=run, name="revision-check", daemon=True).start()
        pending.wait(max(0.0, deadline - time.monotonic()))
        with self._lock:
            known = self._answers.get(asked)
        return known.newer if known is not None else False

    def app_names(self) -> set[str]:
        return {ref.name for ref in self._apps}

    def managed_resources(self) -> set[ManagedResource]:
        """The resources of every object Git declares for the loaded Applications (with whether each has a `scale`
        subresource): what the webhook's registration must cover."""
        versions = {(key.group, obj.api_version.rpartition("/")[2], key.kind) for key, obj in self._index.items()}
        return managed_resources(info for served in versions if (info := self._served.get(served)) is not None)

    def kind_of(self, group: str, resource: str) -> str:
        """The kind served as `group`/`resource` among the objects Git declares ("" when none)."""
        return self._kinds.get((group, resource), "")

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "ready": self.ready,
                "serving": self.attempted,
                "listed": self.listed,
                "applications": {
                    str(ref): {
                        "loaded": s.loaded,
                        "mode": s.spec.drift_mode.value,
                        "revision": s.revision,
                        "objects": len(s.objects),
                        "pending": sorted(str(key) for key in s.pending),
                        "error": s.error,
                        "age_seconds": round(self._now() - s.loaded_at, 1) if s.loaded_at else None,
                        "newer_commits_loaded": [rev for app, rev in self._extra_revisions if app == ref],
                    }
                    for ref, s in self._apps.items()
                },
                "last_error": self.last_error,
            }

    def cache_age(self) -> float:
        return self._now() - self.last_refresh if self.last_refresh else float("inf")

    # --- loading --------------------------------------------------------------------------------------------------
    def _source(self, url: str) -> GitSource:
        if url not in self._sources:
            self._sources[url] = self._source_factory(url)
        return self._sources[url]

    def _render(self, spec: ApplicationSpec, revision: str | None, reuse: AppState | None = None) -> Rendered:
        """One commit of `spec` (its target's when `revision` is None), probed. `reuse`: the Application's state being
        retried for what it lacked (pending kinds); when it holds this very commit of this very spec, what it
        probed is kept, and only what it lacks is probed now (a CRD's first custom resources cost their own probes,
        not one per object of the Application)."""
        source = with_credentials(self._source(spec.repo_url), self.cluster, spec)
        if revision is None:
            source.fetch()
        else:
            source.ensure_commit(revision)
        desired = load_desired(spec, self.cluster, revision=revision, source=source)
        if any(d.info is None for d in desired.objects):
            # A kind Git declares that discovery did not serve when it was last read: a CRD installed since?
            self.cluster.refresh_discovery()
            desired = load_desired(spec, self.cluster, revision=desired.commit.sha, source=source)
        sha = desired.commit.sha
        pending = frozenset(d.key for d in desired.objects if d.info is None)
        autoscaled = autoscaled_targets(desired.objects)
        # Each object Git declares is let go once probed (`desired` is not held): the rendered objects, 4 KB each in
        # all, would else stay alive under the whole load while the index grows beside them, and their freed memory,
        # pinned by what was kept among it, would stay in the process (bench/webhook_memory.py).
        ready = deque(d for d in desired.objects if d.info is not None)
        del desired
        policy = spec.policy()
        objects = {}
        for d in ready:
            assert d.info is not None
            self._kinds[(d.info.group, d.info.plural)] = d.info.kind
            self._served[(d.info.group, d.info.version, d.info.kind)] = d.info
        if reuse is not None and reuse.spec == spec and reuse.revision == sha and not reuse.provisional:
            objects = {d.key: reuse.objects[d.key] for d in ready if d.key in reuse.objects}
            ready = deque(d for d in ready if d.key not in objects)
        provisional = False
        # Probed a chunk at a time, each kept compactly at once: the API server's answers (managedFields and all)
        # are never all in memory together, and what a process has held once it keeps (bench/webhook_memory.py).
        while ready:
            chunk = [ready.popleft() for _ in range(min(PROBE_CHUNK, len(ready)))]
            forms = concurrently(lambda d: stored_form(self.cluster, d, self.probe_namespace), chunk)
            for d, (stored, declared, elsewhere) in zip(chunk, forms, strict=True):
                provisional = provisional or elsewhere
                scaled = (d.key.namespace, d.key.kind, d.key.name) in autoscaled
                objects[d.key] = GitObject(
                    key=d.key,
                    app=spec.ref,
                    mode=spec.drift_mode,
                    revision=sha,
                    stored=interned(stored),
                    declared=self._declared_sets.shared(declared),
                    policy=dataclasses.replace(policy, autoscaled=True) if scaled else policy,
                )
            del chunk, forms, d
        return Rendered(sha, objects, pending, provisional)

    def refresh(
        self, *, full: bool = True, retry_failed: bool = False, retry_only: frozenset[AppRef] | None = None
    ) -> None:
        """Re-reads every Application and renders them: all of them when `full`, else only new or changed ones and
        those whose last render failed or was partial (after RETRY_SECONDS, or at once with `retry_failed`: of
        `retry_only` alone when given, so that a request waiting for its Application does not wait for every broken
        one to fail again). Keeps the last good state of an Application whose source fails (saying so in
        status())."""
        with self._refreshing:
            try:
                self._refresh(full=full, retry_failed=retry_failed, retry_only=retry_only)
            finally:
                self.attempted = True

    def _refresh(self, *, full: bool, retry_failed: bool, retry_only: frozenset[AppRef] | None = None) -> None:
        listing_began = self._clock.monotonic()
        try:
            raw = self._list_applications()
        except GitOpsError as e:
            with self._lock:
                self.listed = False
                self.ready = False
                self.last_error = self._list_error = str(e)
            log.warning("cannot list Applications: %s", e)
            # The CRDs may have been installed since discovery was read (the webhook started first): read it again,
            # so that the next attempt sees them.
            try:
                self.cluster.refresh_discovery()
            except GitOpsError as again:
                log.warning("cannot read the API server's discovery: %s", again)
            return
        with self._lock:
            self._list_error = ""
        seen: set[AppRef] = set()
        rendered_any = False
        for obj in raw:
            try:
                spec = parse_application(obj)
            except GitOpsError as e:
                log.warning("skipping an invalid Application: %s", e)
                continue
            seen.add(spec.ref)
            current = self._apps.get(spec.ref)
            generation = int((obj.get("metadata") or {}).get("generation") or 0)
            # Unchanged: keep it, unless its last render failed or was partial (a namespace not there yet, a CRD
            # not served yet, Git down) and RETRY_SECONDS have passed since.
            unchanged = not full and current is not None and current.generation == generation
            incomplete = current is not None and (bool(current.error) or bool(current.pending) or current.provisional)
            if (
                unchanged
                and current is not None
                and (
                    not incomplete
                    or (
                        not (retry_failed and (retry_only is None or spec.ref in retry_only))
                        and self._now() - current.attempted_at < self.retry_seconds
                    )
                )
            ):
                continue
            # Retried for what it lacked, same generation: what the last render probed at its commit stands.
            reuse = current if unchanged and current is not None and current.loaded else None
            try:
                try:
                    rendered = self._render(spec, None, reuse)
                except READ_ERRORS as e:
                    # GitPython's long-lived `git cat-file` of this mirror died (its repository moved or was
                    # removed under it): this Application fails closed with that reason, the mirror is opened anew
                    # at its next try, and every other Application's refresh goes on.
                    with self._lock:
                        self._sources.pop(spec.repo_url, None)
                    raise SourceError(f"reading {redact_url(spec.repo_url)} failed ({e!r}); it is read again") from e
                rendered_any = True
            except GitOpsError as e:
                with self._lock:
                    state = current or AppState(spec)
                    if current is not None and current.spec != spec:
                        state = AppState(spec)  # another source or mode: the old state judges nothing of it
                    state.error = str(e)
                    state.generation = generation
                    state.attempted_at = self._now()
                    self._set_app(spec.ref, state)
                self.last_error = f"{spec.ref}: {e}"
                log.warning("keeping the last good state of %s: %s", spec.ref, e)
                continue
            with self._lock:
                self._set_app(
                    spec.ref,
                    AppState(
                        spec,
                        rendered.revision,
                        rendered.objects,
                        self._now(),
                        generation=generation,
                        attempted_at=self._now(),
                        pending=rendered.pending,
                        provisional=rendered.provisional,
                    ),
                )
        with self._lock:
            for ref in set(self._apps) - seen:
                del self._apps[ref]
            self._index = {key: obj for state in self._apps.values() for key, obj in state.objects.items()}
            self._extra_revisions = {k: v for k, v in self._extra_revisions.items() if k[0] in self._apps}
            for asked in [a for a in self._answers if a[0] not in self._apps or a[1] != self._apps[a[0]].revision]:
                del self._answers[asked]  # about a revision no longer loaded (or an Application gone)
            self.listed = True
            # Ready only when every Application's state is loaded: until then its objects cannot be judged.
            self.ready = all(s.loaded for s in self._apps.values())
            self.last_refresh = self._now()
            self._listed_at = listing_began
            if all(not s.error for s in self._apps.values()):
                self.last_error = ""
        if rendered_any:
            give_back()  # what the probes' answers took, freed, back to the system (engine.adapters.memory)

    def _promote(self, app: AppRef, rendered: Rendered) -> None:
        state = self._apps.get(app)
        if state is None:
            return
        self._set_app(
            app,
            AppState(
                state.spec,
                rendered.revision,
                rendered.objects,
                self._now(),
                generation=state.generation,
                attempted_at=self._now(),
                pending=rendered.pending,
                provisional=rendered.provisional,
            ),
        )

    def _set_app(self, ref: AppRef, state: AppState) -> None:
        """An Application's new state, in the index at once: a request never sees an Application that /readyz
        reports as loaded without its objects. (Call with the lock held.)"""
        old = self._apps.get(ref)
        # Other commits were loaded because they were newer than the old state: that says nothing about the new one.
        self._extra_revisions = {k: v for k, v in self._extra_revisions.items() if k[0] != ref}
        if old is not None and old.spec != state.spec:
            # Whether a commit is newer depends on the target (a rollback held or lifted moves it): ask again.
            for asked in [a for a in self._answers if a[0] == ref]:
                del self._answers[asked]
        index = dict(self._index)
        for key in old.objects if old else ():
            index.pop(key, None)
        index.update(state.objects)
        self._apps[ref] = state
        self._index = index

    def _keep_extra(self, app: AppRef, revision: str, objects: dict[ObjectKey, GitObject]) -> None:
        """(Call with the lock held.)"""
        self._extra_revisions[(app, revision)] = objects
        kept = [k for k in self._extra_revisions if k[0] == app]
        for old in kept[: max(0, len(kept) - EXTRA_REVISIONS)]:
            del self._extra_revisions[old]

    def _load_revision(self, app: AppRef, revision: str, deadline: float) -> dict[ObjectKey, GitObject] | None:
        """Loads another commit of a known Application, waiting until `deadline` (time.monotonic) at most; None when
        it cannot."""
        state = self._apps.get(app)
        if state is None:
            return None
        with self._lock:
            # Concurrent requests of one sync name the same revision: load it once, let the others wait.
            loading = self._loading.get((app, revision))
            owner = loading is None
            if loading is None:
                loading = self._loading[(app, revision)] = (threading.Event(), {})
        done, result = loading
        if owner:

            def work() -> None:
                try:
                    rendered = self._render(state.spec, revision)
                    result["objects"] = rendered.objects
                    head = self._source(state.spec.repo_url).resolve(state.spec.target or None).sha
                except GitOpsError as e:
                    log.warning("revision %s of %s cannot be loaded: %s", revision[:12], app, e)
                    head = ""
                finally:
                    with self._lock:
                        if "objects" in result:
                            self._keep_extra(app, revision, result["objects"])
                            if head == revision:
                                # The Application's target moved here (a sync to a new commit): it is Git now,
                                # also for what the sync prunes next.
                                self._promote(app, rendered)
                        self._loading.pop((app, revision), None)
                    done.set()

            threading.Thread(target=work, daemon=True).start()
        done.wait(max(0.0, deadline - time.monotonic()))
        objects = result.get("objects")  # the load's own answer: a promotion has taken it out of the extras
        if objects is None:
            log.warning("revision %s of %s not loaded in %.0fs", revision[:12], app, self.load_timeout)
            return None
        return dict(objects)
