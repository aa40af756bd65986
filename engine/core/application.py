"""The Application resource: what Git source an app follows, where it goes, and how drift is treated."""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .drift import DEFAULT_IGNORES, DriftPolicy, IgnoreRule
from .errors import GitOpsError
from .history import Retention
from .objects import API_GROUP, DRIFT_MODES, AppRef, DriftMode, KubeObject
from .timespec import duration, duration_text

API_VERSION = f"{API_GROUP}/v1alpha1"
KIND = "Application"
PLURAL = "applications"
DEFAULT_NAMESPACE = "gitops-system"
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class InvalidApplication(GitOpsError):
    """An Application whose spec cannot be used; the message names the field."""


@dataclass(frozen=True)
class HelmOptions:
    release_name: str = ""
    values_files: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class JsonnetVar:
    """A top-level argument or external variable: a string, or Jsonnet code when `code` (Argo CD's shape)."""

    name: str
    value: str
    code: bool = False


@dataclass(frozen=True)
class DirectoryOptions:
    """How a plain directory (YAML, JSON and Jsonnet files) is read: Argo CD's `spec.source.directory`.

    `recurse` defaults to True here (this project always read subfolders); Argo CD's default is False.
    `include`/`exclude` are globs over the path relative to the source path (`{a,b}` for several; exclude wins).
    `jsonnet_libs` are library folders relative to the repository's root."""

    recurse: bool = True
    include: str = ""
    exclude: str = ""
    jsonnet_libs: tuple[str, ...] = ()
    tlas: tuple[JsonnetVar, ...] = ()
    ext_vars: tuple[JsonnetVar, ...] = ()

    def is_default(self) -> bool:
        return self == DirectoryOptions()


@dataclass(frozen=True)
class Rollback:
    """An earlier commit the Application is held at (`kubectl gitops rollback`) until `rollback --resume` lifts it:
    syncs, the reconciler and the webhook all take it for the Application's target meanwhile."""

    revision: str  # the commit, in full
    reason: str = ""
    user: str = ""
    at: str = ""  # RFC 3339
    record: int = 0  # the sync whose commit it is (0: a revision was named)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"revision": self.revision, "reason": self.reason, "user": self.user, "at": self.at}
        if self.record:
            out["record"] = self.record
        return out


@dataclass(frozen=True)
class Suspension:
    """Automation paused by `kubectl gitops suspend` (an incident, maintenance) until `resume`: the reconciler
    neither syncs new commits nor heals drift meanwhile, and still reports both."""

    reason: str = ""
    user: str = ""
    at: str = ""  # RFC 3339

    def as_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "user": self.user, "at": self.at}


DEFAULT_INTERVAL = 180.0  # seconds: how often the reconciler fetches Git and compares, by default (3m)


@dataclass(frozen=True)
class ApplicationSpec:
    ref: AppRef
    repo_url: str
    revision: str = ""  # empty: the repository's default branch
    path: str = "."
    destination_namespace: str = "default"
    drift_mode: DriftMode = DriftMode.ENFORCE
    helm: HelmOptions = field(default_factory=HelmOptions)
    directory: DirectoryOptions = field(default_factory=DirectoryOptions)
    allow_empty: bool = False  # spec.source.allowEmpty: a render with no object is not an error
    secret_ref: str = ""  # spec.source.secretRef.name: the Secret (beside the Application) with Git credentials
    ignore: tuple[IgnoreRule, ...] = ()
    prune: bool = False
    history: Retention = field(default_factory=Retention)
    automated: bool = False
    self_heal: bool = False
    rollback: Rollback | None = None
    suspend: Suspension | None = None
    interval: float = DEFAULT_INTERVAL

    @property
    def target(self) -> str:
        """What to sync: the rollback's commit while one is in force, else the source's revision ("" for the
        repository's default branch)."""
        return self.rollback.revision if self.rollback is not None else self.revision

    def __post_init__(self) -> None:
        object.__setattr__(self, "drift_mode", DriftMode(self.drift_mode))  # a value that is no mode raises here

    def policy(self, *, autoscaled: bool = False) -> DriftPolicy:
        defaults = tuple(IgnoreRule(g, k, p) for (g, k), p in DEFAULT_IGNORES.items())
        return DriftPolicy(ignore=defaults + self.ignore, autoscaled=autoscaled)


def validate_name(name: str, what: str = "Application name") -> str:
    if not _NAME.fullmatch(name):
        raise InvalidApplication(
            f"{what} {name!r} is not valid: lowercase letters, digits and '-', at most 63 characters, "
            "starting and ending with a letter or digit"
        )
    return name


def _str(value: Any, where: str, default: str = "") -> str:
    if value is None:
        return default
    if not isinstance(value, str):
        raise InvalidApplication(f"{where} must be a string")
    return value


def _bool(value: Any, where: str, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidApplication(f"{where} must be true or false")
    return value


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidApplication(f"{where} must be an object")
    return value


def _jsonnet_vars(value: Any, where: str) -> tuple[JsonnetVar, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidApplication(f"{where} must be a list of {{name, value, code}}")
    found: list[JsonnetVar] = []
    for index, item in enumerate(value):
        at = f"{where}[{index}]"
        item = _mapping(item, at)
        name = _str(item.get("name"), f"{at}.name")
        if not name:
            raise InvalidApplication(f"{at}.name is required")
        raw = item.get("value")
        if raw is not None and not isinstance(raw, str):
            raise InvalidApplication(f"{at}.value must be a string (with code: true, Jsonnet code as a string)")
        if name in {v.name for v in found}:
            raise InvalidApplication(f"{at}.name {name!r} is given twice")
        found.append(JsonnetVar(name, raw or "", _bool(item.get("code"), f"{at}.code", False)))
    return tuple(found)


def _relative_path(value: Any, where: str) -> str:
    path = _str(value, where)
    parts = path.replace("\\", "/").split("/")
    if not path or path.startswith("/") or ".." in parts:
        raise InvalidApplication(f"{where} {path!r} must be a path inside the repository, relative to its root")
    return path


def parse_directory(value: Any, where: str = "spec.source.directory") -> DirectoryOptions:
    """`spec.source.directory` (Argo CD's fields) to DirectoryOptions; the message names the field at fault."""
    directory = _mapping(value, where)
    jsonnet = _mapping(directory.get("jsonnet"), f"{where}.jsonnet")
    libs = jsonnet.get("libs")
    if libs is not None and not isinstance(libs, list):
        raise InvalidApplication(f"{where}.jsonnet.libs must be a list of paths")
    return DirectoryOptions(
        recurse=_bool(directory.get("recurse"), f"{where}.recurse", True),
        include=_str(directory.get("include"), f"{where}.include"),
        exclude=_str(directory.get("exclude"), f"{where}.exclude"),
        jsonnet_libs=tuple(_relative_path(p, f"{where}.jsonnet.libs[{i}]") for i, p in enumerate(libs or ())),
        tlas=_jsonnet_vars(jsonnet.get("tlas"), f"{where}.jsonnet.tlas"),
        ext_vars=_jsonnet_vars(jsonnet.get("extVars"), f"{where}.jsonnet.extVars"),
    )


def directory_manifest(options: DirectoryOptions) -> dict[str, Any]:
    """DirectoryOptions as `spec.source.directory` (only what differs from the defaults)."""
    out: dict[str, Any] = {}
    if not options.recurse:
        out["recurse"] = False
    if options.include:
        out["include"] = options.include
    if options.exclude:
        out["exclude"] = options.exclude
    jsonnet: dict[str, Any] = {}
    if options.jsonnet_libs:
        jsonnet["libs"] = list(options.jsonnet_libs)
    for key, values in (("tlas", options.tlas), ("extVars", options.ext_vars)):
        if values:
            jsonnet[key] = [{"name": v.name, "value": v.value, "code": v.code} for v in values]
    if jsonnet:
        out["jsonnet"] = jsonnet
    return out


def parse_application(obj: Mapping[str, Any]) -> ApplicationSpec:
    metadata = obj.get("metadata") or {}
    ref = AppRef(str(metadata.get("namespace") or DEFAULT_NAMESPACE), str(metadata.get("name") or ""))
    spec = obj.get("spec") or {}
    source = spec.get("source") or {}
    repo_url = _str(source.get("repoURL"), "spec.source.repoURL")
    if not repo_url:
        raise InvalidApplication(f"Application {ref}: spec.source.repoURL is required")
    helm = source.get("helm") or {}
    mode = _str(spec.get("driftMode"), "spec.driftMode", "enforce")
    if mode not in DRIFT_MODES:
        raise InvalidApplication(f"Application {ref}: spec.driftMode {mode!r} is not one of {', '.join(DRIFT_MODES)}")
    drift_mode = DriftMode(mode)
    rules = []
    for index, rule in enumerate(spec.get("ignoreDifferences") or []):
        pointers = rule.get("jsonPointers") or []
        if not all(isinstance(p, str) and p.startswith("/") for p in pointers):
            raise InvalidApplication(
                f"Application {ref}: spec.ignoreDifferences[{index}].jsonPointers must be JSON pointers ('/a/b')"
            )
        rules.append(IgnoreRule(str(rule.get("group", "*")), str(rule.get("kind", "*")), tuple(pointers)))
    policy = spec.get("syncPolicy") or {}
    rollback = None
    if spec.get("rollback"):
        held = spec["rollback"]
        if not isinstance(held, dict) or not re.fullmatch(r"[0-9a-f]{40}", str(held.get("revision", ""))):
            raise InvalidApplication(f"Application {ref}: spec.rollback.revision must be a full commit id")
        rollback = Rollback(
            revision=str(held["revision"]),
            reason=_str(held.get("reason"), "spec.rollback.reason"),
            user=_str(held.get("user"), "spec.rollback.user"),
            at=_str(held.get("at"), "spec.rollback.at"),
            record=int(held.get("record") or 0),
        )
    suspend = None
    if spec.get("suspend"):
        held = spec["suspend"]
        if not isinstance(held, dict):
            raise InvalidApplication(f"Application {ref}: spec.suspend must be an object (reason, user, at)")
        suspend = Suspension(
            reason=_str(held.get("reason"), "spec.suspend.reason"),
            user=_str(held.get("user"), "spec.suspend.user"),
            at=_str(held.get("at"), "spec.suspend.at"),
        )
    try:
        interval = duration(str(policy["interval"])).total_seconds() if policy.get("interval") else DEFAULT_INTERVAL
    except GitOpsError as e:
        raise InvalidApplication(f"Application {ref}: spec.syncPolicy.interval: {e}") from e
    if interval < 1:
        raise InvalidApplication(f"Application {ref}: spec.syncPolicy.interval must be at least 1s")
    try:
        directory = parse_directory(source.get("directory"))
        allow_empty = _bool(source.get("allowEmpty"), "spec.source.allowEmpty", False)
    except InvalidApplication as e:
        raise InvalidApplication(f"Application {ref}: {e}") from e
    history = spec.get("history") or {}
    try:
        retention = Retention(
            records=int(history.get("records", Retention.records)),
            max_age=duration(str(history["maxAge"])) if history.get("maxAge") else None,
        )
    except (GitOpsError, TypeError, ValueError) as e:
        raise InvalidApplication(f"Application {ref}: spec.history: {e}") from e
    if retention.records < 0:
        raise InvalidApplication(f"Application {ref}: spec.history.records must not be negative")
    return ApplicationSpec(
        ref=ref,
        repo_url=repo_url,
        revision=_str(source.get("targetRevision"), "spec.source.targetRevision"),
        path=_str(source.get("path"), "spec.source.path", ".") or ".",
        destination_namespace=_str(
            (spec.get("destination") or {}).get("namespace"), "spec.destination.namespace", "default"
        ),
        drift_mode=drift_mode,
        helm=HelmOptions(
            release_name=_str(helm.get("releaseName"), "spec.source.helm.releaseName"),
            values_files=tuple(str(v) for v in helm.get("valueFiles") or ()),
        ),
        directory=directory,
        allow_empty=allow_empty,
        secret_ref=_secret_ref(source.get("secretRef"), ref),
        ignore=tuple(rules),
        history=retention,
        rollback=rollback,
        suspend=suspend,
        interval=interval,
        prune=bool(policy.get("prune", False)),
        automated=bool(policy.get("automated", False)),
        self_heal=bool(policy.get("selfHeal", False)),
    )


def _secret_ref(value: Any, ref: AppRef) -> str:
    if value is None:
        return ""
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise InvalidApplication(f"Application {ref}: spec.source.secretRef must be {{name: SECRET}}")
    name = value["name"]
    if name and not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", name):
        raise InvalidApplication(f"Application {ref}: spec.source.secretRef.name {name!r} is not a Secret's name")
    return str(name)


def application_manifest(spec: ApplicationSpec) -> KubeObject:
    source: dict[str, Any] = {"repoURL": spec.repo_url, "path": spec.path}
    if spec.revision:
        source["targetRevision"] = spec.revision
    if spec.helm.release_name or spec.helm.values_files:
        source["helm"] = {"releaseName": spec.helm.release_name, "valueFiles": list(spec.helm.values_files)}
    if not spec.directory.is_default():
        source["directory"] = directory_manifest(spec.directory)
    if spec.allow_empty:
        source["allowEmpty"] = True
    if spec.secret_ref:
        source["secretRef"] = {"name": spec.secret_ref}
    body: dict[str, Any] = {
        "source": source,
        "destination": {"namespace": spec.destination_namespace},
        "driftMode": spec.drift_mode.value,
        "syncPolicy": {"prune": spec.prune, "automated": spec.automated, "selfHeal": spec.self_heal},
    }
    if spec.interval != DEFAULT_INTERVAL:
        body["syncPolicy"]["interval"] = duration_text(datetime.timedelta(seconds=spec.interval))
    if spec.suspend is not None:
        body["suspend"] = spec.suspend.as_dict()
    if spec.rollback is not None:
        body["rollback"] = spec.rollback.as_dict()
    if spec.history != Retention():
        history: dict[str, Any] = {"records": spec.history.records}
        if spec.history.max_age is not None:
            history["maxAge"] = duration_text(spec.history.max_age)
        body["history"] = history
    if spec.ignore:
        body["ignoreDifferences"] = [
            {"group": r.group, "kind": r.kind, "jsonPointers": list(r.pointers)} for r in spec.ignore
        ]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": spec.ref.name, "namespace": spec.ref.namespace},
        "spec": body,
    }
