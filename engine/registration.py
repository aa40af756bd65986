"""Keeps the drift webhook's registration covering every resource Applications manage: read it, add what is
missing, never drop anything.

Add-only, so that webhook replicas at different revisions of Git (or a sync of an older commit) never take turns
removing and adding a kind; a kind no Application manages any more costs nothing, because only objects that carry
the tracking label reach the webhook (and a scale request of an unmanaged object is answered from the index at once).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from .adapters.kube import KubeClient
from .apps import list_applications
from .core.errors import ApiError, GitOpsError
from .core.objects import KubeObject
from .core.resources import ResourceInfo
from .core.webhookconfig import (
    NAME,
    ManagedResource,
    managed_resources,
    missing_resources,
    registered_resources,
    webhook_configuration,
    with_resources,
)

REGISTRATION = ResourceInfo(
    "admissionregistration.k8s.io", "v1", "ValidatingWebhookConfiguration", "validatingwebhookconfigurations", False
)
CONFLICT_ATTEMPTS = 5


class RegistrationStore(Protocol):
    """What covering needs of the API server (engine.adapters.kube.KubeClient has it)."""

    def get(self, info: ResourceInfo, namespace: str, name: str) -> KubeObject | None: ...
    def replace(self, info: ResourceInfo, obj: KubeObject, *, dry_run: bool = False) -> KubeObject: ...


class Coverage(StrEnum):
    COVERED = "covered"  # nothing was missing
    EXTENDED = "extended"  # updated with what was missing
    NOT_INSTALLED = "not installed"  # no registration (yet): nothing to keep
    FORBIDDEN = "forbidden"  # no RBAC to read or update it
    INCOMPLETE = "incomplete"  # it lacks one of its two entries


@dataclass(frozen=True)
class Outcome:
    coverage: Coverage
    added: frozenset[ManagedResource] = frozenset()  # EXTENDED: what it now covers; INCOMPLETE: what it cannot
    detail: str = ""

    def __str__(self) -> str:
        if self.coverage is Coverage.EXTENDED:
            if not self.added:
                return f"the webhook registration {NAME} now sends the cluster's controllers to the webhook too"
            return f"the webhook registration {NAME} now also covers {describe(self.added)}"
        if self.coverage is Coverage.COVERED:
            return f"the webhook registration {NAME} already covers every resource"
        if self.coverage is Coverage.NOT_INSTALLED:
            return f"no webhook registration {NAME} yet (`kubectl gitops install --webhook-url|--webhook-service`)"
        if self.coverage is Coverage.FORBIDDEN:
            return f"not allowed to read or update the webhook registration {NAME}: {self.detail}"
        return (
            f"the webhook registration {NAME} lacks an entry, so it cannot cover {describe(self.added)}; "
            "run `kubectl gitops install --webhook-url|--webhook-service` again"
        )


def describe(resources: Iterable[ManagedResource]) -> str:
    names = []
    for r in sorted(resources):
        name = f"{r.plural}.{r.group}" if r.group else r.plural
        name += f" {r.version}" if r.version != "*" else ""
        subs = sorted(r.subresources)
        names.append(f"{name} (and its {', '.join(subs)})" if subs else name)
    return ", ".join(names) or "nothing"


def cover(store: RegistrationStore, resources: Collection[ManagedResource], *, name: str = NAME) -> Outcome:
    """Makes sure the registration, if there is one, covers `resources`: a GET, and only when something is missing
    (or its machinery condition is an older, broader one), an update guarded by the resourceVersion just read
    (re-read and retried on a conflict). Add-only. What an entry it lacks would hold is left out of the update
    and said (INCOMPLETE); the rest is added all the same."""
    if not resources:
        return Outcome(Coverage.COVERED)
    for _ in range(CONFLICT_ATTEMPTS):
        try:
            live = store.get(REGISTRATION, "", name)
        except ApiError as e:
            if e.status == 403:
                return Outcome(Coverage.FORBIDDEN, detail=str(e))
            raise
        if live is None:
            return Outcome(Coverage.NOT_INSTALLED)
        missing = missing_resources(live, resources)
        updated = with_resources(live, resources)
        uncoverable = frozenset(missing_resources(updated, resources))
        if updated == live:
            return Outcome(Coverage.INCOMPLETE, uncoverable) if uncoverable else Outcome(Coverage.COVERED)
        try:
            store.replace(REGISTRATION, updated)
        except ApiError as e:
            if e.status == 409:
                continue  # another replica (or an install) changed it since the GET: read it again
            if e.status == 404:
                return Outcome(Coverage.NOT_INSTALLED)
            if e.status == 403:
                return Outcome(Coverage.FORBIDDEN, detail=str(e))
            raise
        if uncoverable:
            return Outcome(Coverage.INCOMPLETE, uncoverable)
        return Outcome(Coverage.EXTENDED, frozenset(missing))
    raise GitOpsError(
        f"the webhook registration {name} changed under every one of {CONFLICT_ATTEMPTS} updates; "
        "it is retried after the next refresh"
    )


class Discovery(Protocol):
    """How the cluster serves a kind (engine.adapters.kube.KubeClient has it)."""

    def preferred(self, group: str, kind: str) -> ResourceInfo | None: ...
    def preferred_resource(self, group: str, plural: str) -> ResourceInfo | None: ...


def inventory_resources(cluster: Discovery, applications: Iterable[KubeObject]) -> set[ManagedResource]:
    """The resources Applications managed at their last sync, from their status inventory, in the version the
    cluster prefers (the inventory names no version; the webhook adds the one Git uses, if it is another, after its
    first refresh). Kinds the cluster no longer serves are left out."""
    kinds = {
        (str(r.get("group") or ""), str(r.get("kind")))
        for app in applications
        for r in (app.get("status") or {}).get("resources") or []
        if isinstance(r, dict) and r.get("kind")
    }
    return managed_resources(info for group, kind in sorted(kinds) if (info := cluster.preferred(group, kind)))


def exact_versions(cluster: Discovery, resources: Iterable[ManagedResource]) -> set[ManagedResource]:
    """`resources` with an older registration's `*` version made the version the cluster prefers (what `install`
    writes instead: every version still reaches the webhook, matchPolicy Equivalent converts them). One the cluster
    does not serve (yet) is kept as it is: add-only."""
    out = set()
    for r in resources:
        info = cluster.preferred_resource(r.group, r.plural) if r.version == "*" else None
        out |= managed_resources([info]) if info else {r}
    return out


def planned_registration(cluster: KubeClient, *, ca_bundle: bytes, url: str = "") -> tuple[KubeObject, str]:
    """The registration `kubectl gitops install` writes, and the resourceVersion of the one it replaces ("" when
    none): it keeps every resource an existing registration names (each in the versions it names, `*` made exact)
    and adds what the Applications' status says they manage (no Application, or no CRD yet: nothing; the webhook adds
    what it indexes)."""
    live = cluster.get(REGISTRATION, "", NAME)
    try:
        applications = list_applications(cluster, "")
    except GitOpsError:
        applications = []  # the Application CRD is not served yet, or we may not list them: the webhook fills in
    kept = exact_versions(cluster, registered_resources(live)) if live else set()
    config = webhook_configuration(
        ca_bundle=ca_bundle, url=url, resources=kept | inventory_resources(cluster, applications)
    )
    return config, str(((live or {}).get("metadata") or {}).get("resourceVersion") or "")


def install_registration(cluster: KubeClient, *, ca_bundle: bytes, url: str = "") -> KubeObject:
    """Applies the planned registration with the resourceVersion it was planned from as a precondition, so that a
    resource the webhook adds meanwhile is never dropped: on a conflict, plan again."""
    for _ in range(CONFLICT_ATTEMPTS):
        config, version = planned_registration(cluster, ca_bundle=ca_bundle, url=url)
        if version:
            config["metadata"]["resourceVersion"] = version
        try:
            return cluster.apply(REGISTRATION, config).obj
        except ApiError as e:
            if e.status != 409:
                raise
    raise GitOpsError(
        f"the webhook registration {NAME} changed under every one of {CONFLICT_ATTEMPTS} attempts to install it; "
        "run the install again"
    )


def served_in_cluster(store: RegistrationStore, *, name: str = NAME) -> bool:
    """Whether the registration sends the API server to a Service (the webhook runs in pods); false when there is
    none, or it cannot be read."""
    try:
        registration = store.get(REGISTRATION, "", name)
    except ApiError:
        return False
    hooks = (registration or {}).get("webhooks") or []
    return any("service" in (hook.get("clientConfig") or {}) for hook in hooks)
