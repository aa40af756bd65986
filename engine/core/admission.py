"""The admission decision: does a request add drift to an object Git manages, and what does the mode make of it?

Pure: the request, Git's object as the API server would store it, and the policy in; a decision out. A request adds
drift when the object after it strays from Git at a path where the object before it did not. Who counts as the
cluster's own machinery is decided from the authenticated userInfo only; what a request changed is learned by
comparing oldObject with object, never from managedFields or field-manager names, which any client can choose.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Any, NotRequired, TypedDict

from . import text
from .compact import DeclaredSet
from .drift import DriftItem, DriftKind, DriftPolicy, _is_ignored
from .normalize import SecretMasker
from .objects import (
    API_GROUP,
    REVISION_ANNOTATION,
    TRACKING_LABEL,
    TRY_AGAIN,
    AppRef,
    DriftMode,
    KubeObject,
    ObjectKey,
)
from .paths import (
    ABSENT,
    Lists,
    Path,
    changed_paths,
    declared_paths,
    get,
    hashable,
    is_empty,
    is_named_list,
    is_under_any,
    pointer,
    selectors,
)

BREAK_GLASS_ANNOTATION = f"{API_GROUP}/break-glass"


# --- AdmissionReview, as the API server sends it -------------------------------------------------------------------
class UserInfo(TypedDict, total=False):
    username: str
    uid: str
    groups: list[str]
    extra: dict[str, list[str]]


class GroupVersionResource(TypedDict, total=False):
    group: str
    version: str
    resource: str


class GroupVersionKind(TypedDict, total=False):
    group: str
    version: str
    kind: str


class AdmissionRequest(TypedDict):
    uid: str
    kind: GroupVersionKind
    resource: GroupVersionResource
    operation: str
    userInfo: UserInfo
    name: NotRequired[str]
    namespace: NotRequired[str]
    subResource: NotRequired[str]
    object: NotRequired[KubeObject | None]
    oldObject: NotRequired[KubeObject | None]
    dryRun: NotRequired[bool]


class Verdict(StrEnum):
    ALLOWED = "allowed"  # no drift, or not ours to judge
    DENIED = "denied"
    WARNED = "warned"
    RECORDED = "recorded"  # audit mode: allowed silently, recorded
    BREAK_GLASS = "break-glass"


# Users that only the cluster's own components hold: client-certificate identities, which the built-in `edit` role
# cannot impersonate (it can impersonate ServiceAccounts in its namespaces, and mint their tokens).
TRUSTED_USERS = frozenset({"system:kube-controller-manager", "system:kube-scheduler", "system:apiserver"})
NODE_PREFIX = "system:node:"
CONTROLLER_PREFIX = "system:serviceaccount:kube-system:"


@dataclass(frozen=True)
class Exemptions:
    """Who is always allowed: the cluster's own components (by their authenticated name) and configured users and
    groups. kube-controller-manager's per-controller ServiceAccounts are not exempt by name: see `machinery_grant`."""

    users: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    break_glass_group: str = "gitops:break-glass"

    def exempt(self, user: Mapping[str, Any]) -> str:
        """Why this user is exempt ("" when not)."""
        name = str(user.get("username") or "")
        groups = set(user.get("groups") or [])
        if name in self.users or groups & self.groups:
            return "configured exemption"
        if name in TRUSTED_USERS:
            return "cluster machinery"
        if name.startswith(NODE_PREFIX) and "system:nodes" in groups:
            return "cluster machinery"
        return ""


@dataclass(frozen=True)
class ClusterFacts:
    """What the webhook looked up in the cluster for a request of a controller (None: not looked up, or unknown)."""

    owners_gone: bool | None = None  # every owner in the object's ownerReferences is gone or being deleted
    namespace_terminating: bool | None = None  # the object's namespace has a deletionTimestamp


@dataclass(frozen=True)
class Unjudged:
    """The webhook cannot judge: the object is claimed by an Application whose Git state it has not loaded (or the
    request cannot be compared with Git's object). `mode` is the Application's, enforce when unknown."""

    app: AppRef | None
    mode: DriftMode
    why: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", DriftMode(self.mode))  # a value that is no mode raises here


@dataclass(frozen=True)
class GitObject:
    """One object Git declares, as the API server would store it (a dry-run apply of Git's manifest alone)."""

    key: ObjectKey
    app: AppRef
    mode: DriftMode
    revision: str
    stored: KubeObject
    declared: Mapping[str, Any]  # the fieldsV1 of what Git declares
    policy: DriftPolicy = field(default_factory=DriftPolicy)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", DriftMode(self.mode))  # a value that is no mode raises here

    @cached_property
    def declared_paths(self) -> set[Path]:
        """What Git declares, as paths of this module: computed once per object (once per shared declared-field set,
        engine.core.compact), not once per request."""
        if isinstance(self.declared, DeclaredSet):
            return self.declared.paths
        return declared_paths(self.declared)

    @cached_property
    def ignored(self) -> tuple[str, ...]:
        return self.policy.ignored_pointers(self.key)

    @cached_property
    def ordered_lists(self) -> tuple[Path, ...]:
        """Where Git's object has lists whose order counts: found once per object, not once per request."""
        return tuple(_ordered_lists(self.stored))

    @property
    def api_version(self) -> str:
        """The API version Git declares the object in: a request in another one cannot be compared with it."""
        return str(self.stored.get("apiVersion", ""))


@dataclass(frozen=True)
class Found:
    """What the index says of an object a request is about: Git's object; or that the webhook cannot judge it
    (`unjudged`); or that it claims a loaded Application whose Git lacks it (`claimed`); or nothing (not managed)."""

    git: GitObject | None = None
    unjudged: Unjudged | None = None
    claimed: frozenset[AppRef] = frozenset()  # each loaded Application it claims


@dataclass(frozen=True)
class Decision:
    allowed: bool
    verdict: Verdict
    message: str = ""
    warnings: tuple[str, ...] = ()
    items: tuple[DriftItem, ...] = ()
    record: bool = False  # goes to the audit log
    reason: str = ""  # why it was allowed without judging, for logs and metrics
    unjudged: str = ""  # why the webhook could not judge (then it failed closed)


# Operational annotations: they follow every sync (the commit) or ask for an exception (break-glass); neither is a
# difference of the object from Git.
_OPERATIONAL = (REVISION_ANNOTATION, BREAK_GLASS_ANNOTATION)


def _counts(path: Path, declared: set[Path]) -> bool:
    """Whether a difference at `path` can be drift at all."""
    if not path or path[0] in ("status", "apiVersion", "kind"):
        return False
    strs = [p for p in path if isinstance(p, str)]
    if path[0] == "metadata":
        if len(path) >= 2 and path[1] in ("ownerReferences", "finalizers"):
            # An owner Git does not declare hands the object to the garbage collector: delete the owner and the
            # object goes with it. A finalizer keeps it alive (Terminating, still served) after a sync prunes it.
            return True
        # Only labels and annotations that Git declares (our tracking marks among them); everything else there is
        # the server's.
        return (
            len(path) >= 2
            and path[1] in ("labels", "annotations")
            and is_under_any(path, declared)
            and (len(path) < 3 or path[2] not in _OPERATIONAL)
        )
    return not any(
        strs[i] == "metadata" and strs[i + 1] in ("labels", "annotations") and not is_under_any(path, declared)
        for i in range(len(strs) - 1)
    )


# The ServiceAccount admission plugin mounts the token as a projected volume with a random suffix, on every Pod it
# creates: Git's stored form (a dry run) and the created Pod carry two different names for the same injection.
# What the API server allocates anew on each creation, so that Git's stored form (a dry run) and the created object
# differ there by nature: every other field the server fills in on creation (a default) has one value, which a
# CREATE must keep (a Pod created with another serviceAccountName, a Deployment with another strategy, is drift).
_ALLOCATED: Mapping[tuple[str, str], re.Pattern[str]] = {
    ("", "Service"): re.compile(r"/spec/(clusterIPs?(/\d+)?|healthCheckNodePort|ports/\d+/nodePort)"),
    # A Job's selector names the uid of the Job that is created.
    ("batch", "Job"): re.compile(r"/spec/selector(/.*)?"),
}


def _allocated(key: ObjectKey, ptr: str) -> bool:
    pattern = _ALLOCATED.get((key.group, key.kind))
    return pattern is not None and pattern.fullmatch(ptr) is not None


def _port_key(port: Any) -> tuple[Any, Any]:
    return port.get("port"), port.get("protocol") or "TCP"


def _with_created_node_ports(git: GitObject, stored: Any, created: Any) -> Any:
    """For a CREATE of a Service: Git's stored form with the node ports the creation allocated, in the ports where Git
    leaves them to the server. The dry run and the creation each pick one; the port holding it is one Git declares,
    so, unlike the cluster IPs, they would count as changed fields."""
    if (
        (git.key.group, git.key.kind) != ("", "Service")
        or not isinstance(stored, dict)
        or not isinstance(created, dict)
    ):
        return stored
    spec, made = stored.get("spec"), created.get("spec")
    if not isinstance(spec, dict) or not isinstance(made, dict):
        return stored
    ports, allocated = spec.get("ports"), made.get("ports")
    if not isinstance(ports, list) or not isinstance(allocated, list):
        return stored
    declared = ((git.declared.get("f:spec") or {}).get("f:ports")) or {}
    git_sets = {
        (item.get("port"), item.get("protocol") or "TCP")
        for key, fields in declared.items()
        if key.startswith("k:") and isinstance(fields, dict) and "f:nodePort" in fields
        for item in (json.loads(key[2:]),)
        if isinstance(item, dict)
    }
    picked = {_port_key(p): p["nodePort"] for p in allocated if isinstance(p, dict) and "nodePort" in p}
    merged = [
        {**p, "nodePort": picked[_port_key(p)]}
        if isinstance(p, dict) and "nodePort" in p and _port_key(p) in picked and _port_key(p) not in git_sets
        else p
        for p in ports
    ]
    return {**stored, "spec": {**spec, "ports": merged}}


MAX_ITEMS = 256  # drift items found before judging stops: the verdict is known by then

_INJECTED_TOKEN_VOLUME = re.compile(r"kube-api-access-[a-z0-9]{5}")
_TOKEN_VOLUME = "kube-api-access-<injected>"


def _canonical_pod(obj: Any) -> Any:
    """A Pod with the injected token volume (and its mounts) under one name; anything else as it is."""
    if not isinstance(obj, dict) or obj.get("kind") != "Pod" or not isinstance(obj.get("spec"), dict):
        return obj

    def rename(items: Any, field: str) -> Any:
        if not isinstance(items, list):
            return items
        return [
            {**v, field: _TOKEN_VOLUME}
            if isinstance(v, dict) and isinstance(v.get(field), str) and _INJECTED_TOKEN_VOLUME.fullmatch(v[field])
            else v
            for v in items
        ]

    spec = dict(obj["spec"])
    spec["volumes"] = rename(spec.get("volumes"), "name")
    for containers in ("initContainers", "containers", "ephemeralContainers"):
        if isinstance(spec.get(containers), list):
            spec[containers] = [
                {**c, "volumeMounts": rename(c.get("volumeMounts"), "name")}
                if isinstance(c, dict) and "volumeMounts" in c
                else c
                for c in spec[containers]
            ]
    if spec.get("volumes") is None:
        spec.pop("volumes")
    return {**obj, "spec": spec}


def new_drift(git: GitObject, before: KubeObject | None, after: KubeObject, masker: SecretMasker) -> list[DriftItem]:
    """Paths where the request adds or alters drift: `after` differs from `before` there and strays from Git (for a
    CREATE, `before` is None and `after` is compared with Git's object)."""
    declared = git.declared_paths
    stored = _canonical_pod(git.stored)
    if before is None:
        stored = _with_created_node_ports(git, stored, after)
    after = _canonical_pod(after)
    before = _canonical_pod(before) if before is not None else None
    candidates = changed_paths(before, after) if before is not None else changed_paths(stored, after)
    ignored = git.ignored
    items: list[DriftItem] = []
    lists = Lists()

    def expand(path: Path) -> Iterator[Path]:
        """An item Git declares that comes back, compared field by field: a request that brings back half of a
        container someone removed does not add drift at the half it leaves out (found by the rule model)."""
        if path and isinstance(path[-1], tuple) and is_under_any(path, declared):
            b, a = get(before if before is not None else stored, path, lists), get(after, path, lists)
            if b is ABSENT and isinstance(a, dict):
                yield from changed_paths(ABSENT, a, path, fill=True)
                return
        yield path

    for path in (p for candidate in candidates for p in expand(candidate)):
        if len(items) >= MAX_ITEMS:
            # Enough to judge: a request that changes thousands of paths costs no more than one that changes a few
            # hundred (the API server waits, and an entry with failurePolicy Ignore would let changes by).
            items.append(DriftItem(path="/...", kind=DriftKind.CHANGED, live=f"more than {MAX_ITEMS} paths changed"))
            break
        ptr = pointer(
            after if get(after, path, lists) is not ABSENT else (before if before is not None else stored), path, lists
        )
        if not _counts(path, declared) or _is_ignored(ptr, ignored):
            continue
        want, now = get(stored, path, lists), get(after, path, lists)
        want, now = (ABSENT if is_empty(want) else want), (ABSENT if is_empty(now) else now)  # [] and {} are no value
        if path == ("metadata", "finalizers"):
            # A set, not a value: only a finalizer neither Git's object nor the object before had counts.
            added = (
                _strings(now) - _strings(want) - (_strings(get(before, path, lists)) if before is not None else set())
            )
            if not added:
                continue
            now = sorted(added)
        if now == want:
            continue  # the request brings this path back to Git (or leaves it there)
        if before is not None:
            was = get(before, path, lists)
            if (ABSENT if is_empty(was) else was) == now:
                continue  # strays here as it did before, with the same value: not a new attempt
        kind = DriftKind.CHANGED if is_under_any(path, declared) else DriftKind.ADDED
        if kind is DriftKind.ADDED and now is ABSENT:
            continue  # removing a field Git does not declare removes drift, never adds it
        if kind is DriftKind.ADDED and before is None and want is not ABSENT and _allocated(git.key, ptr):
            continue  # a value the server picks anew on every creation (a cluster IP, a node port)
        items.append(
            DriftItem(
                path=ptr,
                kind=kind,
                desired=None if want is ABSENT or kind is DriftKind.ADDED else masker.mask_value(stored, ptr, want),
                live=None if now is ABSENT else masker.mask_value(after, ptr, now),
            )
        )
    items.extend(_reordered(git, stored, before, after, declared, lists))
    return sorted(items, key=lambda i: i.path)


# Lists whose order is part of what they mean: init containers run in order, and an env entry's $(VAR) sees only
# the entries before it.
_ORDERED = ("initContainers", "env")


def _ordered_lists(obj: Any, path: Path = ()) -> Iterator[Path]:
    """The paths of the ordered named lists in `obj` (Git's object), through named list items."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key in _ORDERED and isinstance(value, list) and is_named_list(value):
                yield (*path, key)
            if key not in ("status", "metadata"):
                yield from _ordered_lists(value, (*path, key))
    elif isinstance(obj, list) and is_named_list(obj):
        for selector, item in selectors(obj).items():
            yield from _ordered_lists(item, (*path, selector))


def _order(value: Any, among: Sequence[Any]) -> list[Any]:
    """The names of `among` in the order `value` (a named list) has them, first occurrences only."""
    wanted, seen, out = set(among), set(), []
    for v in value if isinstance(value, list) else []:
        name = hashable(v.get("name")) if isinstance(v, dict) else None
        if name in wanted and name not in seen:
            seen.add(name)
            out.append(name)
    return out


def _reordered(
    git: GitObject, stored: Any, before: Any, after: Any, declared: set[Path], lists: Lists
) -> Iterator[DriftItem]:
    """Where the request puts items Git declares in an ordered list in another order than Git's (and than before)."""
    for path in git.ordered_lists:
        if not _counts(path, declared) or not is_under_any(path, declared):
            continue
        git_order = _order(get(stored, path, lists), [hashable(v.get("name")) for v in get(stored, path, lists)])
        now = _order(get(after, path, lists), git_order)
        if now == [n for n in git_order if n in now]:
            continue  # Git's order (some items may be gone: that is judged item by item)
        if before is not None and _order(get(before, path, lists), git_order) == now:
            continue  # reordered as before: not a new attempt
        ptr = pointer(after, path, lists) + "/(order)"
        if _is_ignored(ptr, git.ignored):
            continue
        yield DriftItem(path=ptr, kind=DriftKind.CHANGED, desired=git_order, live=now)


# --- the decision --------------------------------------------------------------------------------------------------
def _value(value: Any) -> str:
    return text.shown(value, 120)


def describe(items: Sequence[DriftItem]) -> list[str]:
    lines = []
    for item in items:
        if not item.path:
            lines.append(f"the whole object: Git has {_value(item.desired)}, the request makes it {_value(item.live)}")
        elif item.kind is DriftKind.ADDED:
            lines.append(f"{item.path}: not in Git, request sets {_value(item.live)}")
        else:
            lines.append(f"{item.path}: Git has {_value(item.desired)}, request has {_value(item.live)}")
    return lines


_VERDICTS = {
    DriftMode.ENFORCE: Verdict.DENIED,
    DriftMode.WARN: Verdict.WARNED,
    DriftMode.AUDIT: Verdict.RECORDED,
    DriftMode.OFF: Verdict.ALLOWED,
}


def _verdict_for_mode(mode: DriftMode) -> Verdict:
    return _VERDICTS[DriftMode(mode)]  # a value that is no mode raises: never an unknown mode read as "allow"


def _deletes(request: Mapping[str, Any]) -> bool:
    """A DELETE, or an eviction (a CREATE of pods/eviction: the Pod goes)."""
    operation = request.get("operation")
    return operation == "DELETE" or (operation == "CREATE" and request.get("subResource") == "eviction")


def decide(
    request: AdmissionRequest,
    git: GitObject | None,
    *,
    exemptions: Exemptions,
    masker: SecretMasker,
    tracked_elsewhere: bool = False,
    unjudged: Unjudged | None = None,
    facts: ClusterFacts | None = None,
) -> Decision:
    """The webhook's answer for one request about an object. `git` None: Git does not have it, or (with `unjudged`)
    the webhook cannot tell; `tracked_elsewhere`: the object claims tracking by an Application whose Git lacks it."""
    user = request.get("userInfo") or {}
    operation = request.get("operation", "")
    subresource = request.get("subResource") or ""
    if subresource == "status":
        return Decision(True, Verdict.ALLOWED, reason="status subresource")
    why = exemptions.exempt(user)
    if why:
        return Decision(True, Verdict.ALLOWED, reason=why)
    new, old = request.get("object"), request.get("oldObject")

    if git is None:
        if unjudged is not None:
            # The cluster's own deletions need no Git to be told apart: a namespace being deleted (whose objects'
            # Application may not load there any more: nothing can be created in it) must not get stuck.
            grant = _cluster_deletes(user, request, facts or ClusterFacts()) if _deletes(request) else ""
            if grant:
                return Decision(True, Verdict.ALLOWED, reason=grant)
            return _unjudged(request, unjudged, exemptions)
        # Not in Git. Only an object that newly claims our tracking is drift; deleting or changing one Git no
        # longer has is not (pruning it is the sync's job).
        if tracked_elsewhere and operation in ("CREATE", "UPDATE") and not _deletes(request):
            item = DriftItem(path="", kind=DriftKind.ADDED, live="an object Git does not declare")
            return _judge(
                request, DriftMode.ENFORCE, [item], "claims tracking by an Application but is not in Git", exemptions
            )
        return Decision(True, Verdict.ALLOWED, reason="not managed")
    if git.mode is DriftMode.OFF:
        return Decision(True, Verdict.ALLOWED, reason="drift mode off")

    if _deletes(request):
        grant = _machinery_deletes(user, request, git, facts or ClusterFacts())
        if grant:
            return Decision(True, Verdict.ALLOWED, reason=grant)
        item = DriftItem(path="", kind=DriftKind.CHANGED, desired="the object", live="deleted")
        how = "evicts" if subresource == "eviction" else "deletes"
        return _judge(request, git.mode, [item], f"{how} {git.key}, which Git still declares", exemptions, git)
    if subresource == "scale":
        new, old = _scale_as_parent(git, new, old)
    elif not isinstance(new, dict):
        return Decision(True, Verdict.ALLOWED, reason="no object in the request")
    else:
        version = str(new.get("apiVersion", ""))
        if version != git.api_version or (subresource and new.get("kind") != git.key.kind):
            # Never judge two versions against each other: a field of one may sit elsewhere in the other.
            what = f"{subresource} of " if subresource else ""
            return _unjudged(
                request,
                Unjudged(
                    git.app,
                    git.mode,
                    f"the request is a {what}{new.get('kind')} in {version or 'no version'}, and Git declares "
                    f"{git.key} in {git.api_version}; make the change in {git.api_version}",
                ),
                exemptions,
                git,
            )
    assert new is not None
    # An object that takes on our tracking label now becomes managed: all of it is judged, as at a creation (else
    # content made while it was unlabelled, unseen by the webhook, would ride in on the label).
    adopted = subresource != "scale" and _labelled(new) and not _labelled(old)
    items = new_drift(git, old if operation != "CREATE" and not adopted else None, new, masker)
    if not items:
        return Decision(True, Verdict.ALLOWED, reason="adds no drift")
    grant = _machinery_changes(user, request, git, items)
    if grant:
        return Decision(True, Verdict.ALLOWED, reason=grant)
    return _judge(request, git.mode, items, f"changes {git.key} away from Git", exemptions, git)


def _strings(value: Any) -> set[str]:
    return {str(v) for v in value} if isinstance(value, list) else set()


def _labelled(obj: Any) -> bool:
    labels = ((obj or {}).get("metadata") or {}).get("labels") if isinstance(obj, dict) else None
    return isinstance(labels, dict) and TRACKING_LABEL in labels


def _controller(user: Mapping[str, Any]) -> str:
    """The kube-controller-manager controller a ServiceAccount of kube-system stands for ("" for anyone else)."""
    name = str(user.get("username") or "")
    return name[len(CONTROLLER_PREFIX) :] if name.startswith(CONTROLLER_PREFIX) else ""


def _cluster_deletes(user: Mapping[str, Any], request: Mapping[str, Any], facts: ClusterFacts) -> str:
    """The deletions that are the cluster working whatever Git says: the garbage collector's when the owners really
    are gone, the namespace controller's when the namespace really is terminating ("" for any other)."""
    controller = _controller(user)
    if request.get("subResource"):
        return ""
    if controller == "generic-garbage-collector" and facts.owners_gone:
        return "garbage collection: the object's owners are gone"
    if controller == "namespace-controller" and facts.namespace_terminating:
        return "namespace deletion: the namespace is terminating"
    return ""


def _machinery_deletes(user: Mapping[str, Any], request: Mapping[str, Any], git: GitObject, facts: ClusterFacts) -> str:
    """Why a deletion by a controller is the cluster working ("" when it is not). Judged by what the cluster says,
    not by the name alone: `edit` can impersonate ServiceAccounts, and a deletion is the garbage collector's only
    when the owners really are gone, the namespace controller's only when the namespace really is terminating."""
    controller = _controller(user)
    grant = _cluster_deletes(user, request, facts)
    if grant or request.get("subResource"):
        return grant
    if controller == "ttl-after-finished-controller" and git.key.kind == "Job" and git.key.group == "batch":
        old = request.get("oldObject") or {}
        finished = any(
            isinstance(c, dict) and c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
            for c in ((old.get("status") or {}).get("conditions") or [])
        )
        if finished and (old.get("spec") or {}).get("ttlSecondsAfterFinished") is not None:
            return "a finished Job's time to live"
    return ""


# What a controller may change of a managed object, and only that: (controller, group, kind) -> JSON pointers.
_CONTROLLER_FIELDS: Mapping[tuple[str, str, str], tuple[str, ...]] = {
    ("persistent-volume-binder", "", "PersistentVolumeClaim"): ("/spec/volumeName",),
    ("clusterrole-aggregation-controller", "rbac.authorization.k8s.io", "ClusterRole"): ("/rules",),
}


def _machinery_changes(
    user: Mapping[str, Any], request: Mapping[str, Any], git: GitObject, items: Sequence[DriftItem]
) -> str:
    """Why a change by a controller is the cluster working ("" when it is not): the autoscaler scaling an object an
    HPA in Git targets, or a controller writing the one field that is its job."""
    controller = _controller(user)
    if not controller:
        return ""
    if controller == "horizontal-pod-autoscaler" and request.get("subResource") == "scale" and git.policy.autoscaled:
        return "an HPA in Git scales this object"
    if all(i.path == "/metadata/finalizers" for i in items):
        return f"{controller} sets a finalizer"  # protection controllers, the garbage collector's foreground deletion
    allowed = _CONTROLLER_FIELDS.get((controller, git.key.group, git.key.kind), ())
    if allowed and all(any(i.path == p or i.path.startswith(p + "/") for p in allowed) for i in items):
        if controller == "clusterrole-aggregation-controller" and not git.stored.get("aggregationRule"):
            return ""
        return f"{controller} writes {', '.join(allowed)}"
    return ""


def _scale_as_parent(
    git: GitObject, new: KubeObject | None, old: KubeObject | None
) -> tuple[KubeObject | None, KubeObject | None]:
    """A Scale request, seen as the change of the parent's spec.replicas that it is."""

    def replicas(scale: KubeObject | None) -> Any:
        return ((scale or {}).get("spec") or {}).get("replicas", ABSENT)

    def parent(value: Any) -> KubeObject:
        out = {k: v for k, v in git.stored.items() if k != "status"}
        spec = dict(out.get("spec") or {})
        if value is ABSENT:
            spec.pop("replicas", None)
        else:
            spec["replicas"] = value
        out["spec"] = spec
        return out

    before = replicas(old)
    # Compared with Git's object everywhere but replicas, so that only the replica count can count.
    return parent(replicas(new)), parent(before) if old is not None else None


def _break_glass_reason(obj: Any) -> Any:
    annotations = ((obj or {}).get("metadata") or {}).get("annotations") or {}
    return annotations.get(BREAK_GLASS_ANNOTATION) if isinstance(annotations, dict) else None


def _break_glass(request: AdmissionRequest, exemptions: Exemptions) -> str:
    """The break-glass reason, when the requester may use it ("" otherwise). The reason must come with the request
    itself: a reason someone else left on the object (alice may annotate it; that is no drift) is not the
    requester's. So a CREATE carries it, an UPDATE sets it anew; a DELETE takes the object's."""
    groups = set((request.get("userInfo") or {}).get("groups") or [])
    if exemptions.break_glass_group not in groups:
        return ""
    obj = object_of(request)
    reason = _break_glass_reason(obj)
    if not reason:
        return ""
    if request.get("operation") == "UPDATE" and _break_glass_reason(request.get("oldObject")) == reason:
        return ""  # left there before: not this request's reason
    return str(reason)


def _break_glass_hint(request: AdmissionRequest, exemptions: Exemptions) -> str:
    if _break_glass_reason(object_of(request)):
        return (
            f"; the break-glass annotation is honoured only for members of {exemptions.break_glass_group}, and only "
            "with a reason the request itself sets (in the same request as the change)."
        )
    return (
        f", or, in an emergency, annotate the object with {BREAK_GLASS_ANNOTATION}=<reason> in the same request as "
        f"the change, as a member of {exemptions.break_glass_group}."
    )


def _unjudged(
    request: AdmissionRequest, unjudged: Unjudged, exemptions: Exemptions, git: GitObject | None = None
) -> Decision:
    """Fail closed: enforce denies and says why; warn and audit allow and record the attempt as unjudged."""
    if unjudged.mode is DriftMode.OFF:
        return Decision(True, Verdict.ALLOWED, reason="drift mode off", unjudged=unjudged.why)
    item = DriftItem(path="", kind=DriftKind.CHANGED, desired="(not judged)", live=f"{request.get('operation')}")
    reason = _break_glass(request, exemptions)
    if reason:
        return Decision(
            True,
            Verdict.BREAK_GLASS,
            warnings=(f"break-glass: not judged against Git ({unjudged.why}) ({reason}); recorded",),
            items=(item,),
            record=True,
            reason=reason,
            unjudged=unjudged.why,
        )
    verdict = _verdict_for_mode(unjudged.mode)
    app = f" (Application {unjudged.app})" if unjudged.app else ""
    if verdict is Verdict.DENIED:
        message = (
            f"kubectl-gitops: this request cannot be judged against Git{app}: {unjudged.why}. "
            f"The webhook fails closed: {TRY_AGAIN} (its /readyz says what it lacks)"
            + _break_glass_hint(request, exemptions)
        )
        return Decision(False, verdict, message=message, items=(item,), record=True, unjudged=unjudged.why)
    warnings = (f"not judged against Git{app}: {unjudged.why}; recorded",) if verdict is Verdict.WARNED else ()
    return Decision(True, verdict, warnings=warnings, items=(item,), record=True, unjudged=unjudged.why)


def _judge(
    request: AdmissionRequest,
    mode: DriftMode,
    items: list[DriftItem],
    summary: str,
    exemptions: Exemptions,
    git: GitObject | None = None,
) -> Decision:
    lines = describe(items)
    reason = _break_glass(request, exemptions)
    if reason:
        return Decision(
            True,
            Verdict.BREAK_GLASS,
            warnings=(f"break-glass: {summary} ({reason}); recorded",),
            items=tuple(items),
            record=True,
            reason=reason,
        )
    verdict = _verdict_for_mode(mode)
    app = f" (Application {git.app}, revision {git.revision[:12]})" if git else ""
    if verdict is Verdict.DENIED:
        message = (
            f"kubectl-gitops: this request {summary}{app}:\n  "
            + "\n  ".join(lines)
            + "\nChange Git instead and run `kubectl gitops sync`"
            + _break_glass_hint(request, exemptions)
        )
        return Decision(False, verdict, message=message, items=tuple(items), record=True)
    if verdict is Verdict.WARNED:
        warnings = tuple(f"drift from Git{app}: {line}" for line in lines[:10])
        return Decision(True, verdict, warnings=warnings, items=tuple(items), record=True)
    return Decision(True, verdict, items=tuple(items), record=verdict is Verdict.RECORDED)


def object_of(request: Mapping[str, Any]) -> KubeObject | None:
    obj = request.get("object") if request.get("operation") != "DELETE" else request.get("oldObject")
    return obj if isinstance(obj, dict) else None
