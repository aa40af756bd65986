"""In-memory fakes of what the engine and the webhook talk to, for the unit tests: small, honest models, each
implementing the whole Protocol it stands for (mypy checks that, at the end of this module).

FakeCluster is an API server: objects by ObjectKey; one resourceVersion that rises with every write that changes
something; server-side apply with managedFields (a manager owns what it applied, and what it applied before and no
longer applies is removed unless another manager owns it too); PUT with its preconditions; JSON patch; create;
delete with a uid precondition; label selectors; discovery that a client reads once and again when it refreshes (a
CRD it stores makes its kind served); and the refusals the real one gives, in its words: 404, 409, 422. It leaves
out defaulting, conversion between versions (an object is answered in the version asked for), watches, and the
list types a schema declares beyond the common ones (LIST_KEYS). A test adds the cluster's other actors: `gates`
refuse requests (RBAC, an admission webhook), `validators` refuse the objects a write would store (the API server's
validation: 422), and `after` hooks act right after a request is answered (another writer between a GET and a PUT).
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import json
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonpatch
import jsonpointer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from engine.adapters.audit import GENESIS, seal
from engine.compare import Cluster
from engine.core.admission import Found, GitObject, Unjudged
from engine.core.clock import Clock
from engine.core.errors import ApiError, GitOpsError
from engine.core.objects import FIELD_MANAGER, AppRef, Claim, KubeObject, ObjectKey, split_api_version
from engine.core.resources import Applied, ResourceInfo
from engine.registration import Discovery, RegistrationStore
from webhook.app import AuditSink, DesiredSource
from webhook.lookups import Reader

Path = tuple[str, ...]


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
CREATED_AT = "2024-05-02T10:00:00Z"

# Lists the API server merges by key (x-kubernetes-list-type: map), by the name of the field that holds them; every
# other list is atomic (replaced whole).
LIST_KEYS: Mapping[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "volumeMounts": ("mountPath",),
    "ports": ("containerPort", "protocol"),  # a container's; a Service's are keyed by port and protocol (_keys)
    "ownerReferences": ("uid",),
    "webhooks": ("name",),
    "conditions": ("type",),
}
# The metadata a manager can own; the rest is the server's (identity, versions, timestamps, managedFields).
OWNED_METADATA = ("labels", "annotations", "ownerReferences", "finalizers")
BUILTIN_GROUPS = frozenset(
    {
        "",
        "admissionregistration.k8s.io",
        "apiextensions.k8s.io",
        "apps",
        "autoscaling",
        "batch",
        "coordination.k8s.io",
        "networking.k8s.io",
        "policy",
        "rbac.authorization.k8s.io",
        "storage.k8s.io",
    }
)
# Built-in resources whose update strategy refuses a PUT without a resourceVersion (AllowUnconditionalUpdate false);
# custom resources refuse it too.
CONDITIONAL_UPDATES = frozenset(
    {
        ("admissionregistration.k8s.io", "validatingwebhookconfigurations"),
        ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"),
        ("apiextensions.k8s.io", "customresourcedefinitions"),
    }
)

NAMESPACES = ResourceInfo("", "v1", "Namespace", "namespaces", False, frozenset({"status", "finalize"}))
CONFIGMAPS = ResourceInfo("", "v1", "ConfigMap", "configmaps", True)
SECRETS = ResourceInfo("", "v1", "Secret", "secrets", True)
SERVICES = ResourceInfo("", "v1", "Service", "services", True, frozenset({"status", "proxy"}))
PODS = ResourceInfo(
    "",
    "v1",
    "Pod",
    "pods",
    True,
    frozenset({"status", "eviction", "ephemeralcontainers", "resize", "log", "binding"}),
    frozenset({"status", "ephemeralcontainers", "resize"}),
)
DEPLOYMENTS = ResourceInfo("apps", "v1", "Deployment", "deployments", True, frozenset({"scale", "status"}))
HPAS = ResourceInfo(
    "autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", True, frozenset({"status"})
)
CLUSTER_ROLES = ResourceInfo("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False)
CRDS = ResourceInfo(
    "apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", False, frozenset({"status"})
)
WEBHOOK_CONFIGURATIONS = ResourceInfo(
    "admissionregistration.k8s.io", "v1", "ValidatingWebhookConfiguration", "validatingwebhookconfigurations", False
)
BUILTIN = (
    NAMESPACES,
    CONFIGMAPS,
    SECRETS,
    SERVICES,
    PODS,
    DEPLOYMENTS,
    HPAS,
    CLUSTER_ROLES,
    CRDS,
    WEBHOOK_CONFIGURATIONS,
)


def namespace(name: str) -> KubeObject:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


# --- field sets ------------------------------------------------------------------------------------------------------
def _keys(name: str, item: Mapping[str, Any]) -> tuple[str, ...]:
    if name == "ports" and "containerPort" not in item:
        return ("port", "protocol")
    return LIST_KEYS.get(name, ())


def _segment(name: str, item: Any) -> str:
    """The fieldsV1 segment that names a list item: `k:{...}` by its key fields, `v:...` for a plain value."""
    if isinstance(item, dict) and name in LIST_KEYS:
        keys = {k: item[k] for k in _keys(name, item) if k in item}
        return "k:" + json.dumps(keys, sort_keys=True, separators=(",", ":"))
    return "v:" + json.dumps(item, sort_keys=True, separators=(",", ":"))


def _keyed(name: str, value: Any) -> bool:
    return isinstance(value, list) and name in LIST_KEYS and all(isinstance(i, dict) for i in value)


def leaves(value: Any, name: str = "", path: Path = ()) -> dict[Path, Any]:
    """Every path a manager can own in `value`, with its value there: fields, and the items of keyed lists (the item
    itself, fieldsV1's ".", and its fields)."""
    out: dict[Path, Any] = {}
    if isinstance(value, dict) and value:
        for key, child in value.items():
            out.update(leaves(child, key, (*path, f"f:{key}")))
    elif _keyed(name, value) and value:
        for item in value:
            segment = (*path, _segment(name, item))
            out[segment] = item
            out.update(leaves(item, "", segment))
    elif path:
        out[path] = value
    return out


# Fields a built-in type always has (structs, required lists): an Update that makes them does not own them as such.
ALWAYS_PRESENT = frozenset({"metadata", "spec", "template", "strategy", "containers", "status"})


def containers(value: Any, name: str = "", path: Path = ()) -> Iterator[Path]:
    """The maps and keyed lists in `value` that may be absent, as `(*path, ".")`: what an Update that makes one owns
    of it as such (the API server's fieldsV1 marks it with ".")."""
    if isinstance(value, dict) and value:
        if path and name not in ALWAYS_PRESENT:
            yield (*path, ".")
        for key, child in value.items():
            yield from containers(child, key, (*path, f"f:{key}"))
    elif _keyed(name, value) and value:
        if name not in ALWAYS_PRESENT:
            yield (*path, ".")
        for item in value:
            segment = (*path, _segment(name, item))
            for inner in containers(item, "", segment):
                if inner != (*segment, "."):
                    yield inner


def fields_v1(paths: Iterable[Path]) -> dict[str, Any]:
    """Paths as fieldsV1: nested maps, "." marking a list item (or, for `(*path, ".")`, a map or list) owned as
    such."""
    out: dict[str, Any] = {}
    for path in sorted(paths):
        node = out
        for segment in path:
            node = node.setdefault(segment, {})
        if path and path[-1].startswith(("k:", "v:")):
            node["."] = {}
    return out


def paths_of(fields: Mapping[str, Any], prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    for key, child in fields.items():
        if key == ".":
            out.add(prefix if prefix[-1:] and prefix[-1].startswith(("k:", "v:")) else (*prefix, "."))
        elif isinstance(child, dict) and child:
            out |= paths_of(child, (*prefix, key))
        else:
            out.add((*prefix, key))
    return out


def _at(value: Any, path: Path) -> Any:
    for segment in path:
        kind, _, raw = segment.partition(":")
        if kind == "f" and isinstance(value, dict):
            value = value.get(raw, MISSING)
        elif kind in ("k", "v") and isinstance(value, list):
            value = next((i for i in value if _item_is(i, segment)), MISSING)
        else:
            return MISSING
        if value is MISSING:
            return MISSING
    return value


def _item_is(item: Any, segment: str) -> bool:
    kind, _, raw = segment.partition(":")
    wanted = json.loads(raw)
    if kind == "v":
        return bool(item == wanted)
    return isinstance(item, dict) and all(item.get(k) == v for k, v in wanted.items())


def _key_field(path: Path) -> bool:
    """A field that names the list item it is in (an item stays while another manager owns it)."""
    return len(path) > 1 and path[-2].startswith("k:") and path[-1].removeprefix("f:") in json.loads(path[-2][2:])


def _remove(obj: Any, path: Path) -> None:
    """Removes the field or list item at `path`, and the maps that are left empty by it."""
    parent = _at(obj, path[:-1])
    kind, _, raw = path[-1].partition(":")
    if kind == "f" and isinstance(parent, dict):
        parent.pop(raw, None)
    elif isinstance(parent, list):
        parent[:] = [i for i in parent if not _item_is(i, path[-1])]
    if len(path) > 1 and parent == {} and path[-2].startswith("f:"):
        _remove(obj, path[:-1])


def _without_empty_lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_empty_lists(v) for k, v in value.items() if v != []}
    if isinstance(value, list):
        return [_without_empty_lists(v) for v in value]
    return value


def _merged(live: Any, applied: Any, name: str = "") -> Any:
    """An applied configuration merged into the live object: maps field by field, keyed lists item by item."""
    if isinstance(live, dict) and isinstance(applied, dict):
        out = copy.deepcopy(live)
        for key, value in applied.items():
            out[key] = _merged(live.get(key, MISSING), value, key)
        return out
    if _keyed(name, live) and _keyed(name, applied):
        items = copy.deepcopy(live)
        for item in applied:
            segment = _segment(name, item)
            index = next((n for n, i in enumerate(items) if _segment(name, i) == segment), None)
            if index is None:
                items.append(copy.deepcopy(item))
            else:
                items[index] = _merged(items[index], item)
        return items
    return copy.deepcopy(applied)


@dataclass
class _Entry:
    manager: str
    operation: str
    api_version: str
    paths: set[Path]

    def as_dict(self) -> dict[str, Any]:
        return {
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": CREATED_AT,
            "fieldsType": "FieldsV1",
            "fieldsV1": fields_v1(self.paths),
        }


def _entries(obj: Mapping[str, Any]) -> list[_Entry]:
    return [
        _Entry(str(e.get("manager", "")), str(e.get("operation", "")), str(e.get("apiVersion", "")), paths_of(fields))
        for e in (obj.get("metadata") or {}).get("managedFields") or []
        if isinstance(e, dict) and isinstance(fields := e.get("fieldsV1") or {}, dict)
    ]


# --- the API server --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Request:
    """One request the fake answered (or refused)."""

    verb: str  # discover, get, list, apply, replace, create, patch, delete
    resource: str = ""  # plural.group, as RBAC names it
    key: ObjectKey | None = None
    body: Any = None
    dry_run: bool = False
    field_manager: str = ""


def forbid(verb: str, resource: str) -> Callable[[Request], None]:
    """A gate: RBAC refuses `verb` on `resource` (plural.group, or the plural of a core resource)."""

    def gate(request: Request) -> None:
        if request.verb == verb and request.resource == resource:
            name = f' "{request.key.name}"' if request.key else ""
            raise ApiError(
                f'{resource}{name} is forbidden: User "alice" cannot {verb} resource "{resource}"', 403, "Forbidden"
            )

    return gate


def _resource(info: ResourceInfo) -> str:
    return f"{info.plural}.{info.group}" if info.group else info.plural


def _kind(info: ResourceInfo) -> str:
    return f"{info.kind}.{info.group}" if info.group else info.kind


@dataclass
class FakeCluster:
    """An API server in memory (see the module's docstring). engine.compare.Cluster, engine.registration's
    RegistrationStore and Discovery, and webhook.lookups.Reader."""

    resources: Iterable[ResourceInfo] = BUILTIN
    objects: Iterable[KubeObject] = ()  # there before the test, created by someone else (`add`)
    gates: list[Callable[[Request], None]] = field(default_factory=list)
    validators: list[Callable[[KubeObject], str]] = field(default_factory=list)
    after: list[Callable[[Request], None]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    looked_up: list[tuple[str, str]] = field(default_factory=list)  # resource_for's questions (answered from memory)

    def __post_init__(self) -> None:
        self._served: dict[tuple[str, str, str], ResourceInfo] = {}
        for info in self.resources:
            self._served[(info.group, info.version, info.kind)] = info
        self._discovered: dict[tuple[str, str, str], ResourceInfo] | None = None
        self._stored: dict[ObjectKey, KubeObject] = {}
        self._version = 100
        self._uids = 0
        self._lock = threading.RLock()
        self._quiet = False
        self._in_hook = False
        for obj in list(self.objects):
            self.add(obj)

    # --- what a test sets up and reads ------------------------------------------------------------------------
    def add(self, obj: KubeObject, *, manager: str = "kubectl-create") -> KubeObject:
        """Stores `obj` as another client created it, before the test looks (not in `requests`, through no gate)."""
        group, version = split_api_version(str(obj["apiVersion"]))
        info = self._served.get((group, version, str(obj["kind"])))
        assert info is not None, f"the fake does not serve {obj['kind']} in {obj['apiVersion']}"
        with self._lock:
            self._quiet = True
            try:
                return self.create(info, obj, field_manager=manager)
            finally:
                self._quiet = False

    def stored(self, key: ObjectKey) -> KubeObject | None:
        """The object as stored now (a copy), without a request."""
        with self._lock:
            found = self._stored.get(key)
            return copy.deepcopy(found) if found is not None else None

    def keys(self) -> list[ObjectKey]:
        with self._lock:
            return sorted(self._stored)

    def made(self, verb: str, *, dry_run: bool | None = None) -> list[Request]:
        """The requests of one verb made so far (dry runs or not, when said)."""
        return [r for r in self.requests if r.verb == verb and dry_run in (None, r.dry_run)]

    def serve(self, info: ResourceInfo) -> None:
        """The server serves a kind from now on (a client sees it once it reads discovery again)."""
        with self._lock:
            self._served[(info.group, info.version, info.kind)] = info

    # --- discovery ----------------------------------------------------------------------------------------------
    def _discovery(self) -> dict[tuple[str, str, str], ResourceInfo]:
        if self._discovered is None:
            self.refresh_discovery()
        assert self._discovered is not None
        return self._discovered

    def refresh_discovery(self) -> None:
        with self._lock:
            self._log(Request("discover"))
            self._discovered = dict(self._served)

    def resource_for(self, api_version: str, kind: str) -> ResourceInfo | None:
        self.looked_up.append((api_version, kind))
        group, version = split_api_version(api_version)
        return self._discovery().get((group, version, kind))

    def preferred(self, group: str, kind: str) -> ResourceInfo | None:
        """The first version discovery lists the kind in."""
        return next((i for i in self._discovery().values() if (i.group, i.kind) == (group, kind)), None)

    def preferred_resource(self, group: str, plural: str) -> ResourceInfo | None:
        return next((i for i in self._discovery().values() if (i.group, i.plural) == (group, plural)), None)

    def preferred_resources(self) -> list[ResourceInfo]:
        seen: dict[tuple[str, str], ResourceInfo] = {}
        for info in self._discovery().values():
            seen.setdefault((info.group, info.kind), info)
        return list(seen.values())

    # --- plumbing -----------------------------------------------------------------------------------------------
    def _log(self, request: Request) -> None:
        if self._quiet:
            return
        self.requests.append(request)
        for gate in self.gates:
            gate(request)

    def _answered(self, request: Request) -> None:
        """The `after` hooks, once per request a test made (not for the requests the hooks make)."""
        if self._quiet or self._in_hook:
            return
        self._in_hook = True
        try:
            for hook in self.after:
                hook(request)
        finally:
            self._in_hook = False

    def _served_as(self, info: ResourceInfo) -> ResourceInfo:
        """How the server serves what `info` names (a client may know only its group and plural)."""
        found = next(
            (
                i
                for i in self._served.values()
                if (i.group, i.plural) == (info.group, info.plural) and i.version == info.version
            ),
            None,
        )
        if found is None:
            raise ApiError("the server could not find the requested resource", 404, "NotFound")
        return found

    def _key(self, info: ResourceInfo, namespace: str, name: str) -> ObjectKey:
        return ObjectKey(info.group, info.kind, namespace if info.namespaced else "", name)

    def _not_found(self, info: ResourceInfo, name: str) -> ApiError:
        return ApiError(f'{_resource(info)} "{name}" not found', 404, "NotFound")

    def _conflict(self, info: ResourceInfo, name: str) -> ApiError:
        return ApiError(
            f'Operation cannot be fulfilled on {_resource(info)} "{name}": the object has been modified; please '
            "apply your changes to the latest version and try again",
            409,
            "Conflict",
        )

    def _answer(self, info: ResourceInfo, obj: KubeObject) -> KubeObject:
        return {**copy.deepcopy(obj), "apiVersion": info.api_version, "kind": info.kind}

    def _check_namespace(self, info: ResourceInfo, key: ObjectKey, *, creating: bool) -> None:
        if not info.namespaced:
            return
        found = self._stored.get(ObjectKey("", "Namespace", "", key.namespace))
        if found is None:
            raise ApiError(f'namespaces "{key.namespace}" not found', 404, "NotFound")
        if creating and found["metadata"].get("deletionTimestamp"):
            raise ApiError(
                f'{key.kind} "{key.name}" is forbidden: unable to create new content in namespace {key.namespace} '
                "because it is being terminated",
                403,
                "Forbidden",
            )

    def _content(self, info: ResourceInfo, obj: Mapping[str, Any]) -> KubeObject:
        """What a manager can own of `obj`: no type fields, the owned metadata only, no status when a subresource
        writes it."""
        out = {k: copy.deepcopy(v) for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
        if info.group in BUILTIN_GROUPS:
            out = _without_empty_lists(out)  # a built-in type's lists are `omitempty`: an empty one is no value
        if "status" in info.subresources:
            out.pop("status", None)
        metadata = obj.get("metadata") or {}
        owned = {k: copy.deepcopy(metadata[k]) for k in OWNED_METADATA if metadata.get(k) not in (None, {}, [])}
        if owned:
            out["metadata"] = owned
        return out

    def _stored_form(
        self,
        info: ResourceInfo,
        key: ObjectKey,
        content: KubeObject,
        before: KubeObject | None,
        entries: list[_Entry],
        *,
        dry_run: bool,
    ) -> KubeObject:
        """The object a write stores: `content` with the server's metadata, validated; stored unless `dry_run`. The
        resourceVersion rises only when something changed (a no-op write stores nothing)."""
        metadata: dict[str, Any] = {"name": key.name}
        if key.namespace:
            metadata["namespace"] = key.namespace
        old = (before or {}).get("metadata") or {}
        if before is None:
            self._uids += 1
            metadata["uid"] = f"00000000-0000-4000-8000-{self._uids:012d}"
            metadata["creationTimestamp"] = CREATED_AT
            metadata["generation"] = 1
        else:
            for kept in ("uid", "creationTimestamp", "generation", "resourceVersion", "deletionTimestamp"):
                if kept in old:
                    metadata[kept] = old[kept]
        metadata.update(content.get("metadata") or {})
        obj: KubeObject = {"apiVersion": info.api_version, "kind": info.kind, "metadata": metadata}
        obj.update({k: v for k, v in content.items() if k != "metadata"})
        if before is not None and "status" in info.subresources and "status" in before:
            obj["status"] = copy.deepcopy(before["status"])
        content_now = self._content(info, obj)
        present = set(leaves(content_now))
        for e in entries:
            e.paths = {p for p in e.paths if p in present or (p[-1] == "." and _at(content_now, p[:-1]) is not MISSING)}
        owners = [e.as_dict() for e in entries if e.paths]
        if owners:
            metadata["managedFields"] = owners
        if info.kind == "CustomResourceDefinition":
            obj["status"] = {
                "conditions": [
                    {"type": "NamesAccepted", "status": "True"},
                    {"type": "Established", "status": "True"},
                ],
                "acceptedNames": (obj.get("spec") or {}).get("names") or {},
            }
        for validate in self.validators:
            reason = validate(obj)
            if reason:
                raise ApiError(f'{_kind(info)} "{key.name}" is invalid: {reason}', 422, "Invalid")
        if before is not None:
            unchanged = {k: v for k, v in before.items() if k != "metadata"} == {
                k: v for k, v in obj.items() if k != "metadata"
            } and {k: v for k, v in old.items() if k != "resourceVersion"} == {
                k: v for k, v in metadata.items() if k != "resourceVersion"
            }
            if unchanged:
                return copy.deepcopy(before)
            content_before = {k: v for k, v in before.items() if k not in ("metadata", "status")}
            if content_before != {k: v for k, v in obj.items() if k not in ("metadata", "status")}:
                metadata["generation"] = int(old.get("generation") or 0) + 1
        if dry_run:
            return obj
        self._version += 1
        metadata["resourceVersion"] = str(self._version)
        if metadata.get("deletionTimestamp") and not metadata.get("finalizers"):
            del self._stored[key]  # its last finalizer is gone: deleted now
            return obj
        self._stored[key] = copy.deepcopy(obj)
        if info.kind == "CustomResourceDefinition":
            self._establish(obj)
        return obj

    def _establish(self, crd: KubeObject) -> None:
        """What the CRD's controller does: its kind is served, in each version the CRD serves."""
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        for version in spec.get("versions") or []:
            if version.get("served", True):
                subresources = frozenset((version.get("subresources") or {}).keys())
                self._served[(str(spec.get("group")), str(version["name"]), str(names.get("kind")))] = ResourceInfo(
                    str(spec.get("group")),
                    str(version["name"]),
                    str(names.get("kind")),
                    str(names.get("plural")),
                    spec.get("scope", "Namespaced") == "Namespaced",
                    subresources,
                    subresources & {"status"},
                )

    def _updated_by(self, entries: list[_Entry], manager: str, api_version: str, changed: set[Path]) -> list[_Entry]:
        """An Update's ownership: the manager owns what it changed, nobody else does any more."""
        if not changed:
            return entries
        for e in entries:
            e.paths -= changed
        mine = next((e for e in entries if e.manager == manager and e.operation == "Update"), None)
        if mine is None:
            mine = _Entry(manager, "Update", api_version, set())
            entries.append(mine)
        mine.paths |= changed
        return entries

    @staticmethod
    def _changed(before: KubeObject | None, after: KubeObject) -> set[Path]:
        """Fields whose value a write set or changed, and the list items, maps and lists it added."""
        was, now = leaves(before or {}), leaves(after)
        out = set()
        for path, value in now.items():
            is_item = path[-1].startswith(("k:", "v:"))
            if (is_item and path not in was) or (not is_item and was.get(path, MISSING) != value):
                out.add(path)
        return out | {p for p in containers(after) if before is None or _at(before, p[:-1]) is MISSING}

    # --- verbs ----------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _serving(
        self,
        verb: str,
        info: ResourceInfo,
        namespace: str = "",
        name: str = "",
        *,
        body: Any = None,
        dry_run: bool = False,
        field_manager: str = "",
    ) -> Iterator[tuple[ResourceInfo, ObjectKey]]:
        """One request: logged, through the gates, about the resource `info` names as served (404 when it is not)
        and the object's key there; the `after` hooks run once it is answered, refused or not."""
        asked = ObjectKey(info.group, info.kind, namespace, name) if name else None
        request = Request(verb, _resource(info), asked, copy.deepcopy(body), dry_run, field_manager)
        with self._lock:
            try:
                self._log(request)
                served = self._served_as(info)
                yield served, self._key(served, namespace, name)
            finally:
                self._answered(request)

    def get(self, info: ResourceInfo, namespace: str, name: str) -> KubeObject | None:
        try:
            with self._serving("get", info, namespace, name) as (_, key):
                found = self._stored.get(key)
                return self._answer(info, found) if found is not None else None
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    def list_objects(
        self, info: ResourceInfo, *, namespace: str = "", label_selector: str = ""
    ) -> Iterator[KubeObject]:
        with self._serving("list", info, namespace, body=label_selector) as (served, _):
            return iter(
                [
                    self._answer(info, obj)
                    for key, obj in sorted(self._stored.items())
                    if key.group_kind == (served.group, served.kind)
                    and (not namespace or key.namespace == namespace)
                    and _selects(label_selector, (obj.get("metadata") or {}).get("labels") or {})
                ]
            )

    def apply(
        self,
        info: ResourceInfo,
        obj: KubeObject,
        *,
        dry_run: bool = False,
        force: bool = True,
        field_manager: str = FIELD_MANAGER,
    ) -> Applied:
        """Server-side apply: creates the object, or merges what `field_manager` applies into it."""
        metadata = obj.get("metadata") or {}
        namespace, name = str(metadata.get("namespace") or ""), str(metadata["name"])
        with self._serving("apply", info, namespace, name, body=obj, dry_run=dry_run, field_manager=field_manager) as (
            served,
            key,
        ):
            live = self._stored.get(key)
            applied = self._content(served, obj)
            applied_paths = set(leaves(applied))
            version = metadata.get("resourceVersion")
            if version and live is None:
                raise self._not_found(served, key.name)
            if version and live is not None and live["metadata"]["resourceVersion"] != version:
                raise self._conflict(served, key.name)
            if live is None:
                self._check_namespace(served, key, creating=True)
                entries = [_Entry(field_manager, "Apply", info.api_version, applied_paths)]
                result = self._stored_form(served, key, applied, None, entries, dry_run=dry_run)
                return Applied(self._answer(info, result), created=True)
            entries = _entries(live)
            current = self._content(served, live)
            others = [e for e in entries if e.manager != field_manager or e.operation != "Apply"]
            if not force:
                self._refuse_conflicts(current, applied, applied_paths, others)
            mine = next((e for e in entries if e.manager == field_manager and e.operation == "Apply"), None)
            before = mine.paths if mine is not None else set()
            owned_by_others: set[Path] = set()
            for e in others:
                owned_by_others |= e.paths
            content = _merged(current, applied)
            for path in sorted(before - applied_paths - owned_by_others, key=len):
                if not _key_field(path):
                    _remove(content, path)
            for e in others:
                e.paths -= applied_paths
            entries = [*others, _Entry(field_manager, "Apply", info.api_version, applied_paths)]
            result = self._stored_form(served, key, content, live, entries, dry_run=dry_run)
            return Applied(self._answer(info, result))

    @staticmethod
    def _refuse_conflicts(current: KubeObject, applied: KubeObject, paths: set[Path], others: list[_Entry]) -> None:
        """Without force, an apply may not set a field another manager owns to another value."""
        now = leaves(current)
        clashes = sorted(
            (e.manager, path)
            for e in others
            for path in e.paths & paths
            if not path[-1].startswith(("k:", "v:")) and now.get(path, MISSING) != _at(applied, path)
        )
        if clashes:
            listed = "; ".join(
                f'conflict with "{manager}": .' + ".".join(s.split(":", 1)[1] for s in path)
                for manager, path in clashes
            )
            plural = "s" if len(clashes) > 1 else ""
            raise ApiError(f"Apply failed with {len(clashes)} conflict{plural}: {listed}", 409, "Conflict")

    def replace(
        self, info: ResourceInfo, obj: KubeObject, *, dry_run: bool = False, field_manager: str = FIELD_MANAGER
    ) -> KubeObject:
        """PUT: the whole object, at the resourceVersion it carries (without one: unconditionally, where the
        resource allows that)."""
        metadata = obj.get("metadata") or {}
        namespace, name = str(metadata.get("namespace") or ""), str(metadata["name"])
        with self._serving(
            "replace", info, namespace, name, body=obj, dry_run=dry_run, field_manager=field_manager
        ) as (served, key):
            live = self._stored.get(key)
            if live is None:
                raise self._not_found(served, key.name)
            version = metadata.get("resourceVersion")
            if not version:
                if (served.group, served.plural) in CONDITIONAL_UPDATES or served.group not in BUILTIN_GROUPS:
                    raise ApiError(
                        f'{_resource(served)} "{key.name}" is invalid: metadata.resourceVersion: Invalid value: 0: '
                        "must be specified for an update",
                        422,
                        "Invalid",
                    )
            elif version != live["metadata"]["resourceVersion"]:
                raise self._conflict(served, key.name)
            self._check_uid(str(metadata.get("uid") or ""), live)
            content = self._content(served, obj)
            entries = _entries(obj) if "managedFields" in metadata else _entries(live)
            changed = self._changed(self._content(served, live), content)
            entries = self._updated_by(entries, field_manager, info.api_version, changed)
            return self._answer(info, self._stored_form(served, key, content, live, entries, dry_run=dry_run))

    @staticmethod
    def _check_uid(uid: str, live: KubeObject) -> None:
        if uid and uid != live["metadata"]["uid"]:
            raise ApiError(
                f"Precondition failed: UID in precondition: {uid}, UID in object meta: {live['metadata']['uid']}",
                409,
                "Conflict",
            )

    def json_patch(
        self, info: ResourceInfo, key: ObjectKey, ops: list[dict[str, Any]], *, field_manager: str = FIELD_MANAGER
    ) -> KubeObject:
        with self._serving("patch", info, key.namespace, key.name, body=ops, field_manager=field_manager) as (
            served,
            key,
        ):
            live = self._stored.get(key)
            if live is None:
                raise self._not_found(served, key.name)
            try:
                patched = jsonpatch.apply_patch(self._answer(info, live), ops)
            except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as e:
                raise ApiError(f"the server rejected our request due to an error in our request: {e}", 422) from e
            content = self._content(served, patched)
            changed = self._changed(self._content(served, live), content)
            entries = self._updated_by(_entries(live), field_manager, info.api_version, changed)
            return self._answer(info, self._stored_form(served, key, content, live, entries, dry_run=False))

    def create(self, info: ResourceInfo, obj: KubeObject, *, field_manager: str = FIELD_MANAGER) -> KubeObject:
        metadata = obj.get("metadata") or {}
        namespace, name = str(metadata.get("namespace") or ""), str(metadata["name"])
        with self._serving("create", info, namespace, name, body=obj, field_manager=field_manager) as (served, key):
            if key in self._stored:
                raise ApiError(f'{_resource(served)} "{key.name}" already exists', 409, "AlreadyExists")
            self._check_namespace(served, key, creating=True)
            content = self._content(served, obj)
            entries = [_Entry(field_manager, "Update", info.api_version, self._changed(None, content))]
            return self._answer(info, self._stored_form(served, key, content, None, entries, dry_run=False))

    def delete(self, info: ResourceInfo, key: ObjectKey, *, uid: str = "") -> bool:
        """Deletes the object (False when there is none); one with finalizers is only marked as being deleted. A
        namespace goes with everything in it, a CRD with its kind."""
        with self._serving("delete", info, key.namespace, key.name) as (served, key):
            live = self._stored.get(key)
            if live is None:
                return False
            self._check_uid(uid, live)
            self._version += 1
            if live["metadata"].get("finalizers"):
                live["metadata"]["deletionTimestamp"] = CREATED_AT
                live["metadata"]["resourceVersion"] = str(self._version)
                return True
            del self._stored[key]
            if served.kind == "Namespace":
                for inside in [k for k in self._stored if k.namespace == key.name]:
                    del self._stored[inside]
            if served.kind == "CustomResourceDefinition":
                spec = live.get("spec") or {}
                kind = (spec.get("group"), (spec.get("names") or {}).get("kind"))
                for gone in [k for k in self._served if (k[0], k[2]) == kind]:
                    del self._served[gone]
            return True


def _selects(selector: str, labels: Mapping[str, Any]) -> bool:
    """Equality-based label selectors: `a=b`, `a==b`, `a!=b`, `a`, `!a`, comma-separated."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            name, _, value = term.partition("!=")
            if labels.get(name) == value:
                return False
        elif "=" in term:
            name, _, value = term.replace("==", "=").partition("=")
            if labels.get(name) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


# --- Git's state, the audit log, the clock ---------------------------------------------------------------------------
SIGNER = Ed25519PrivateKey.generate()
APP = AppRef("gitops-system", "shop")
REVISION = "0123456789abcdef0123456789abcdef01234567"


class FakeSource:
    """Git's state, as webhook.app.DesiredSource: objects by key, and whether they are loaded."""

    def __init__(self, objects: Iterable[GitObject] = (), *, ready: bool = True) -> None:
        self.objects = {o.key: o for o in objects}
        self.ready = ready
        self.serving = True  # a first load has been tried
        self.kinds = {("apps", "deployments"): "Deployment", ("", "configmaps"): "ConfigMap"}
        self.lookups: list[tuple[ObjectKey, str]] = []
        self.refreshes = 0
        self.fail = False
        self.slow: dict[str, threading.Event] = {}  # revisions whose lookup waits (for Git) until the event is set
        self.lookup_threads: list[str] = []
        self.unjudged: Unjudged | None = None  # what a claimed object gets when set: a state not loaded

    def lookup(self, key: ObjectKey, revision: str = "", claims: tuple[Claim, ...] = ()) -> Found:
        if self.fail:
            raise RuntimeError("a bug in the desired state")
        self.lookups.append((key, revision))
        self.lookup_threads.append(threading.current_thread().name)
        if revision in self.slow:
            self.slow[revision].wait(30)
        found = self.objects.get(key)
        if found is not None:
            return Found(found)
        if self.unjudged is not None and claims:
            return Found(unjudged=self.unjudged)
        apps = {o.app for o in self.objects.values()}
        return Found(claimed=frozenset(a for a in apps if any(c.matches(a) for c in claims)))

    def answers_at_once(self, key: ObjectKey, revision: str = "", claims: tuple[Claim, ...] = ()) -> bool:
        return revision not in self.slow

    def all_loaded(self) -> bool:
        return self.unjudged is None

    def kind_of(self, group: str, resource: str) -> str:
        return self.kinds.get((group, resource), "")

    def refresh(self, *, full: bool = True) -> None:
        self.refreshes += 1

    def status(self) -> dict[str, Any]:
        apps = sorted({str(o.app) for o in self.objects.values()} or {str(APP)})
        return {
            "ready": self.ready,
            "serving": self.serving,
            "listed": True,
            "applications": {
                app: {
                    "loaded": self.ready,
                    "revision": next((o.revision for o in self.objects.values() if str(o.app) == app), REVISION),
                    "objects": sum(1 for o in self.objects.values() if str(o.app) == app),
                    "pending": [],
                    "error": "",
                    "age_seconds": 2.5,
                    "newer_commits_loaded": [],
                }
                for app in apps
            },
            "last_error": "",
        }

    def cache_age(self) -> float:
        return 2.5


class FakeAudit:
    """The audit log, as webhook.app.AuditSink: seals records into an in-memory chain, as the real store does, or
    fails like the API server."""

    def __init__(self, *, fail: str = "", keep: bool = True, signer: Ed25519PrivateKey = SIGNER) -> None:
        self.fail = fail
        self.keep = keep
        self.signer = signer
        self.records: list[dict[str, Any]] = []
        self.threads: list[str] = []
        self.head = (0, GENESIS)
        self._lock = threading.Lock()

    def append(self, body: Mapping[str, Any], received: float | None = None) -> dict[str, Any]:
        self.threads.append(threading.current_thread().name)
        if self.fail:
            raise GitOpsError(self.fail)
        with self._lock:
            sequence, previous = self.head
            record = seal(body, sequence + 1, previous, self.signer)
            self.head = (sequence + 1, record["hash"])
        if not self.keep:  # fuzzing: sealed all the same, but only its chain fields are kept and echoed
            return {k: record[k] for k in ("sequence", "hash")}
        self.records.append(record)
        return record


class FakeClock:
    """A clock that moves only when a test moves it: the monotonic one (also called, as engine.gitstate takes it) and
    the wall clock (engine.adapters.audit.Clock), `now` seconds after `start`."""

    def __init__(self, now: float = 1000.0, start: datetime.datetime | None = None) -> None:
        self.now = now
        self.start = start or datetime.datetime(2024, 5, 2, 10, 0, tzinfo=datetime.UTC)
        self._zero = now

    def __call__(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> datetime.datetime:
        return self.start + datetime.timedelta(seconds=self.now - self._zero)


def _implements(
    cluster: FakeCluster, source: FakeSource, audit: FakeAudit, clock: FakeClock
) -> tuple[Cluster, RegistrationStore, Discovery, Reader, DesiredSource, AuditSink, Clock, Callable[[], float]]:
    """Never called: mypy checks here that each fake implements the whole Protocol it stands for."""
    return cluster, cluster, cluster, cluster, source, audit, clock, clock
