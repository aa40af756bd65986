"""The admission decision: does a request add drift to an object Git manages, and what does the mode make of it?

Pure: the request, Git's object as the API server would store it, and the policy in; a decision out. A request adds
drift when the object after it strays from Git at a path where the object before it did not. Who counts as the
cluster's own machinery is decided from the authenticated userInfo only; what a request changed is learned by
comparing oldObject with object, never from managedFields or field-manager names, which any client can choose.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Any, NotRequired, TypedDict

from . import fieldsets
from .drift import DriftItem, DriftKind, DriftPolicy, _is_ignored
from .normalize import SecretMasker
from .objects import API_GROUP, REVISION_ANNOTATION, KubeObject, ObjectKey

BREAK_GLASS_ANNOTATION = f"{API_GROUP}/break-glass"

_ABSENT: Any = object()


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


@dataclass(frozen=True)
class Exemptions:
    """Who is always allowed: the cluster's machinery plus configured users and groups."""

    users: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    break_glass_group: str = "gitops:break-glass"

    def exempt(self, user: Mapping[str, Any]) -> str:
        """Why this user is exempt ("" when not)."""
        name = str(user.get("username") or "")
        groups = set(user.get("groups") or [])
        if name in self.users or groups & self.groups:
            return "configured exemption"
        if name in ("system:kube-controller-manager", "system:kube-scheduler", "system:apiserver"):
            return "cluster machinery"
        if name.startswith("system:node:") or "system:nodes" in groups:
            return "cluster machinery"
        # kube-controller-manager with --use-service-account-credentials acts as one ServiceAccount per controller.
        if name.startswith("system:serviceaccount:kube-system:"):
            return "cluster machinery"
        return ""


@dataclass(frozen=True)
class GitObject:
    """One object Git declares, as the API server would store it (a dry-run apply of Git's manifest alone)."""

    key: ObjectKey
    app: str  # "namespace/name" of the Application
    mode: str  # enforce | warn | audit | off
    revision: str
    stored: KubeObject
    declared: Mapping[str, Any]  # the fieldsV1 of what Git declares
    policy: DriftPolicy = field(default_factory=DriftPolicy)

    @cached_property
    def declared_paths(self) -> set[Path]:
        """What Git declares, as paths of this module: computed once per object, not once per request."""
        return _declared_paths(self.declared)

    @cached_property
    def ignored(self) -> tuple[str, ...]:
        return self.policy.ignored_pointers(self.key)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    verdict: Verdict
    message: str = ""
    warnings: tuple[str, ...] = ()
    items: tuple[DriftItem, ...] = ()
    record: bool = False  # goes to the audit log
    reason: str = ""  # why it was allowed without judging, for logs and metrics


# --- comparing objects path by path ------------------------------------------------------------------------------
Path = tuple[Any, ...]  # str keys, and ("name", value) selectors for lists of named items, or int indices


def _named(value: list[Any]) -> bool:
    return bool(value) and all(isinstance(v, dict) and "name" in v for v in value)


def _index(items: list[Any], name: Any) -> int:
    return next((i for i, v in enumerate(items) if v.get("name") == name), -1)


def get(obj: Any, path: Path) -> Any:
    value = obj
    for segment in path:
        if isinstance(segment, tuple):
            if not isinstance(value, list):
                return _ABSENT
            i = _index(value, segment[1])
            if i < 0:
                return _ABSENT
            value = value[i]
        elif isinstance(value, dict) and segment in value:
            value = value[segment]
        else:
            return _ABSENT
    return value


def changed_paths(before: Any, after: Any, prefix: Path = ()) -> Iterator[Path]:
    """Leaf paths where two values differ: maps by key, lists of named items by name, other lists whole."""
    if before == after:
        return
    if isinstance(before, dict) and isinstance(after, dict):
        for key in before.keys() | after.keys():
            yield from changed_paths(before.get(key, _ABSENT), after.get(key, _ABSENT), (*prefix, key))
        return
    if isinstance(before, list) and isinstance(after, list) and _named(before) and _named(after):
        names = {v["name"] for v in before} | {v["name"] for v in after}
        for name in names:
            b, a = (
                before[i] if (i := _index(before, name)) >= 0 else _ABSENT,
                (after[j] if (j := _index(after, name)) >= 0 else _ABSENT),
            )
            yield from changed_paths(b, a, (*prefix, ("name", name)))
        return
    yield prefix


def pointer(obj: Any, path: Path) -> str:
    """JSON pointer of `path` (named list items resolved to their index in `obj`)."""
    tokens = []
    value = obj
    for segment in path:
        if isinstance(segment, tuple):
            i = _index(value, segment[1]) if isinstance(value, list) else -1
            tokens.append(str(i) if i >= 0 else f"[name={segment[1]}]")
            value = value[i] if i >= 0 else _ABSENT
        else:
            tokens.append(str(segment).replace("~", "~0").replace("/", "~1"))
            value = value.get(segment, _ABSENT) if isinstance(value, dict) else _ABSENT
    return "/" + "/".join(tokens)


def _declared_paths(declared: Mapping[str, Any]) -> set[Path]:
    """The declared leaves as paths of this module (k:{"name":..} selectors as named items)."""
    out: set[Path] = set()
    for leaf in fieldsets.leaves(declared, containers=False):
        path: list[Any] = []
        for segment in leaf:
            kind, _, raw = segment.partition(":")
            if kind == "f":
                path.append(raw)
            elif kind == "k":
                try:
                    selector = json.loads(raw)
                except ValueError:
                    break
                if isinstance(selector, dict) and set(selector) == {"name"}:
                    path.append(("name", selector["name"]))
                else:
                    break  # an element keyed otherwise: compare its list whole
            else:
                break
        out.add(tuple(path))
    return out


def _is_declared(path: Path, declared: set[Path]) -> bool:
    return any(path[: len(d)] == d or d[: len(path)] == path for d in declared)


def _counts(path: Path, declared: set[Path]) -> bool:
    """Whether a difference at `path` can be drift at all."""
    if not path or path[0] in ("status", "apiVersion", "kind"):
        return False
    strs = [p for p in path if isinstance(p, str)]
    if path[0] == "metadata":
        # Only labels and annotations that Git declares; everything else there is the server's.
        # The tracking marks are declared (removing them would take the object out of the webhook's sight); the
        # revision and break-glass annotations are operational.
        return (
            len(path) >= 2
            and path[1] in ("labels", "annotations")
            and _is_declared(path, declared)
            and (len(path) < 3 or path[2] not in (REVISION_ANNOTATION, BREAK_GLASS_ANNOTATION))
        )
    return not any(
        strs[i] == "metadata" and strs[i + 1] in ("labels", "annotations") and not _is_declared(path, declared)
        for i in range(len(strs) - 1)
    )


def new_drift(git: GitObject, before: KubeObject | None, after: KubeObject, masker: SecretMasker) -> list[DriftItem]:
    """Paths where `after` strays from Git and `before` did not (for a CREATE, `before` is None)."""
    declared = git.declared_paths
    base = before if before is not None else {}
    candidates = changed_paths(base, after) if before is not None else changed_paths(git.stored, after)
    ignored = git.ignored
    items: list[DriftItem] = []

    def expand(path: Path) -> list[Path]:
        """A labels or annotations map gone as a whole: one item per key Git declares in it (the other keys in it
        are nobody's business)."""
        labelled = len(path) >= 2 and path[-2] == "metadata" and path[-1] in ("labels", "annotations")
        if labelled and isinstance(get(git.stored, path), dict) and not isinstance(get(after, path), dict):
            deeper = sorted((d for d in declared if len(d) > len(path) and d[: len(path)] == path), key=str)
            if deeper:
                return deeper
        return [path]

    for path in (p for candidate in candidates for p in expand(candidate)):
        ptr = pointer(
            after if get(after, path) is not _ABSENT else (before if before is not None else git.stored), path
        )
        if not _counts(path, declared) or _is_ignored(ptr, ignored):
            continue
        want, now = get(git.stored, path), get(after, path)
        if now == want:
            continue  # the request brings this path back to Git (or leaves it there)
        if before is not None and get(before, path) != want:
            continue  # already drifted here before this request: not new
        kind = DriftKind.CHANGED if _is_declared(path, declared) else DriftKind.ADDED
        if kind is DriftKind.ADDED and now is _ABSENT:
            continue  # removing a field Git does not declare removes drift, never adds it
        if kind is DriftKind.ADDED and before is None and want is not _ABSENT:
            continue  # a field the server fills in on creation (an allocated IP, a default), not the requester
        items.append(
            DriftItem(
                path=ptr,
                kind=kind,
                desired=None
                if want is _ABSENT or kind is DriftKind.ADDED
                else masker.mask_value(git.stored, ptr, want),
                live=None if now is _ABSENT else masker.mask_value(after, ptr, now),
            )
        )
    return sorted(items, key=lambda i: i.path)


# --- the decision --------------------------------------------------------------------------------------------------
def _value(value: Any) -> str:
    if value is None:
        return "(absent)"
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= 120 else text[:117] + "..."


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


def _verdict_for_mode(mode: str) -> Verdict:
    return {"enforce": Verdict.DENIED, "warn": Verdict.WARNED, "audit": Verdict.RECORDED}.get(mode, Verdict.ALLOWED)


def decide(
    request: AdmissionRequest,
    git: GitObject | None,
    *,
    exemptions: Exemptions,
    masker: SecretMasker,
    tracked_elsewhere: bool = False,
) -> Decision:
    """The webhook's answer for one request about an object (`git` None: Git does not have it)."""
    user = request.get("userInfo") or {}
    operation = request.get("operation", "")
    if request.get("subResource") == "status":
        return Decision(True, Verdict.ALLOWED, reason="status subresource")
    why = exemptions.exempt(user)
    if why:
        return Decision(True, Verdict.ALLOWED, reason=why)
    new, old = request.get("object"), request.get("oldObject")

    if git is None:
        # Not in Git. Only a new object that claims our tracking is drift; deleting or changing one Git
        # no longer has is not (pruning it is the sync's job).
        if operation == "CREATE" and tracked_elsewhere:
            item = DriftItem(path="", kind=DriftKind.ADDED, live="an object Git does not declare")
            return _judge(request, "enforce", [item], "claims tracking by an Application but is not in Git", exemptions)
        return Decision(True, Verdict.ALLOWED, reason="not managed")
    if git.mode == "off":
        return Decision(True, Verdict.ALLOWED, reason="drift mode off")

    if operation == "DELETE":
        item = DriftItem(path="", kind=DriftKind.CHANGED, desired="the object", live="deleted")
        return _judge(request, git.mode, [item], f"deletes {git.key}, which Git still declares", exemptions, git)
    if request.get("subResource") == "scale":
        new, old = _scale_as_parent(git, new, old)
    if not isinstance(new, dict):
        return Decision(True, Verdict.ALLOWED, reason="no object in the request")
    items = new_drift(git, old if operation != "CREATE" else None, new, masker)
    if not items:
        return Decision(True, Verdict.ALLOWED, reason="adds no drift")
    return _judge(request, git.mode, items, f"changes {git.key} away from Git", exemptions, git)


def _scale_as_parent(
    git: GitObject, new: KubeObject | None, old: KubeObject | None
) -> tuple[KubeObject | None, KubeObject | None]:
    """A Scale request, seen as the change of the parent's spec.replicas that it is."""

    def replicas(scale: KubeObject | None) -> Any:
        return ((scale or {}).get("spec") or {}).get("replicas", _ABSENT)

    def parent(value: Any) -> KubeObject:
        out = {k: v for k, v in git.stored.items() if k != "status"}
        spec = dict(out.get("spec") or {})
        if value is _ABSENT:
            spec.pop("replicas", None)
        else:
            spec["replicas"] = value
        out["spec"] = spec
        return out

    before = replicas(old)
    # Compared with Git's object everywhere but replicas, so that only the replica count can count.
    return parent(replicas(new)), parent(before) if old is not None else None


def _judge(
    request: AdmissionRequest,
    mode: str,
    items: list[DriftItem],
    summary: str,
    exemptions: Exemptions,
    git: GitObject | None = None,
) -> Decision:
    obj = request.get("object") if request.get("operation") != "DELETE" else request.get("oldObject")
    annotations = ((obj or {}).get("metadata") or {}).get("annotations") or {}
    reason = annotations.get(BREAK_GLASS_ANNOTATION) if isinstance(annotations, dict) else None
    groups = set((request.get("userInfo") or {}).get("groups") or [])
    lines = describe(items)
    if reason and exemptions.break_glass_group in groups:
        return Decision(
            True,
            Verdict.BREAK_GLASS,
            warnings=(f"break-glass: {summary} ({reason}); recorded",),
            items=tuple(items),
            record=True,
            reason=str(reason),
        )
    verdict = _verdict_for_mode(mode)
    app = f" (Application {git.app}, revision {git.revision[:12]})" if git else ""
    if verdict is Verdict.DENIED:
        message = (
            f"kubectl-gitops: this request {summary}{app}:\n  "
            + "\n  ".join(lines)
            + "\nChange Git instead and run `kubectl gitops sync`"
            + (
                f", or, in an emergency, annotate the object with {BREAK_GLASS_ANNOTATION}=<reason> "
                f"as a member of {exemptions.break_glass_group}."
                if not reason
                else f"; the break-glass annotation is honoured only for members of {exemptions.break_glass_group}."
            )
        )
        return Decision(False, verdict, message=message, items=tuple(items), record=True)
    if verdict is Verdict.WARNED:
        warnings = tuple(f"drift from Git{app}: {line}" for line in lines[:10])
        return Decision(True, verdict, warnings=warnings, items=tuple(items), record=True)
    return Decision(True, verdict, items=tuple(items), record=verdict is Verdict.RECORDED)


def object_of(request: Mapping[str, Any]) -> KubeObject | None:
    obj = request.get("object") if request.get("operation") != "DELETE" else request.get("oldObject")
    return obj if isinstance(obj, dict) else None
