"""The ValidatingWebhookConfiguration that registers the drift webhook. Pure: options in, object out."""

from __future__ import annotations

import base64
import copy
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple, Protocol

from .objects import TRACKING_LABEL, KubeObject

NAME = "gitops-drift.kubectl-gitops.io"
OBJECTS_ENTRY = f"objects.{NAME}"
SCALE_ENTRY = f"scale.{NAME}"
SERVICE_NAME = "gitops-webhook"
OPERATIONS = ["CREATE", "UPDATE", "DELETE"]
# kube-controller-manager (and its per-controller ServiceAccounts) and nodes never reach the webhook; the webhook
# exempts them again from the authenticated userInfo, so this is only a shortcut.
MACHINERY = (
    "!(request.userInfo.username == 'system:kube-controller-manager'"
    " || request.userInfo.username.startsWith('system:serviceaccount:kube-system:')"
    " || request.userInfo.username.startsWith('system:node:'))"
)


class ManagedResource(NamedTuple):
    """A resource Applications manage, as a registration names it: API group, plural, and whether it has a `scale`
    subresource (then `<plural>/scale` is registered too)."""

    group: str
    plural: str
    scale: bool = False


class ServedResource(Protocol):
    """What discovery says of a resource (engine.kube.ResourceInfo has it)."""

    @property
    def group(self) -> str: ...
    @property
    def plural(self) -> str: ...
    @property
    def has_scale(self) -> bool: ...


def managed_resources(served: Iterable[ServedResource]) -> set[ManagedResource]:
    return {ManagedResource(s.group, s.plural, s.has_scale) for s in served}


def _rules(pairs: Iterable[tuple[str, str]], operations: list[str]) -> list[dict[str, Any]]:
    """One rule per API group, its resources sorted; every version (matchPolicy Equivalent does the rest)."""
    by_group: defaultdict[str, set[str]] = defaultdict(set)
    for group, resource in pairs:
        by_group[group].add(resource)
    return [
        {
            "apiGroups": [group],
            "apiVersions": ["*"],
            "resources": sorted(resources),
            "operations": list(operations),
            "scope": "*",
        }
        for group, resources in sorted(by_group.items())
    ]


def object_rules(resources: Iterable[ManagedResource]) -> list[dict[str, Any]]:
    return _rules(((r.group, r.plural) for r in resources), OPERATIONS)


def scale_rules(resources: Iterable[ManagedResource]) -> list[dict[str, Any]]:
    return _rules(((r.group, f"{r.plural}/scale") for r in resources if r.scale), ["UPDATE"])


def webhook_configuration(
    *,
    ca_bundle: bytes,
    resources: Iterable[ManagedResource],
    url: str = "",
    namespace: str = "gitops-system",
    timeout_seconds: int = 10,
) -> KubeObject:
    """Two entries, each listing only the resources Applications manage. Managed objects: selected by the tracking
    label, failurePolicy Fail, so that stopping the webhook cannot open the door to drift (unmanaged objects never
    reach it). Scale subresources of those resources: a Scale carries none of its parent's labels, so no
    objectSelector can match it; every scale request of such a resource reaches the webhook, which looks the parent
    up in its own index, and failurePolicy Ignore keeps a webhook outage from stopping every autoscaler in the
    cluster. With no resources yet, both entries have `rules: []` (the API server accepts it, and stores the entry
    without rules: it matches nothing until resources are added)."""
    wanted = set(resources)
    if url:
        client: dict[str, object] = {"url": url}
    else:
        client = {"service": {"name": SERVICE_NAME, "namespace": namespace, "path": "/validate", "port": 443}}
    client["caBundle"] = base64.b64encode(ca_bundle).decode()
    namespaces = {
        "matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", namespace]}
        ]
    }
    common = {
        "clientConfig": client,
        "admissionReviewVersions": ["v1"],
        "sideEffects": "NoneOnDryRun",
        "timeoutSeconds": timeout_seconds,
        "namespaceSelector": namespaces,
        "matchPolicy": "Equivalent",
        "matchConditions": [{"name": "not-cluster-machinery", "expression": MACHINERY}],
    }
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": NAME},
        "webhooks": [
            {
                "name": OBJECTS_ENTRY,
                **common,
                "failurePolicy": "Fail",
                "objectSelector": {"matchExpressions": [{"key": TRACKING_LABEL, "operator": "Exists"}]},
                "rules": object_rules(wanted),
            },
            {
                "name": SCALE_ENTRY,
                **common,
                "failurePolicy": "Ignore",
                "rules": scale_rules(wanted),
            },
        ],
    }


# --- reading and extending a registration that exists -----------------------------------------------------------
def _entry(config: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    return next((w for w in config.get("webhooks") or [] if isinstance(w, Mapping) and w.get("name") == name), None)


def _named_pairs(entry: Mapping[str, Any] | None) -> set[tuple[str, str]]:
    """(group, resource) for every group and resource an entry's rules name explicitly (wildcards left out)."""
    pairs = set()
    for rule in (entry or {}).get("rules") or []:
        for group in rule.get("apiGroups") or []:
            for resource in rule.get("resources") or []:
                if group != "*" and "*" not in resource:
                    pairs.add((str(group), str(resource)))
    return pairs


def registered_resources(config: Mapping[str, Any]) -> set[ManagedResource]:
    """The resources a registration names: its objects entry's, with `scale` where its scale entry names
    `<plural>/scale`. Wildcard rules (an older registration's `*`) name no resource and are left out."""
    objects = {(g, r) for g, r in _named_pairs(_entry(config, OBJECTS_ENTRY)) if "/" not in r}
    scaled = {
        (g, r.removesuffix("/scale")) for g, r in _named_pairs(_entry(config, SCALE_ENTRY)) if r.endswith("/scale")
    }
    return {ManagedResource(g, r, (g, r) in scaled) for g, r in objects | scaled}


def _matches(rule: Mapping[str, Any], group: str, resource: str) -> bool:
    """Whether a rule matches (group, resource), wildcards as the API server reads them: `*` is every resource but
    no subresource, `*/*` everything, `x/*` every subresource of x, `*/scale` every scale subresource."""
    groups = rule.get("apiGroups") or []
    if group not in groups and "*" not in groups:
        return False
    base, _, sub = resource.partition("/")
    accepted = {resource, "*/*"} | ({f"{base}/*", f"*/{sub}"} if sub else {"*"})
    return bool(accepted & set(rule.get("resources") or []))


def _covered(entry: Mapping[str, Any] | None, group: str, resource: str) -> bool:
    return entry is not None and any(_matches(rule, group, resource) for rule in entry.get("rules") or [])


def missing_resources(config: Mapping[str, Any], resources: Iterable[ManagedResource]) -> set[ManagedResource]:
    """The resources whose objects (or, when they have one, scale subresource) the registration does not cover."""
    objects, scale = _entry(config, OBJECTS_ENTRY), _entry(config, SCALE_ENTRY)
    return {
        r
        for r in resources
        if not _covered(objects, r.group, r.plural) or (r.scale and not _covered(scale, r.group, f"{r.plural}/scale"))
    }


def with_resources(config: Mapping[str, Any], resources: Iterable[ManagedResource]) -> KubeObject:
    """A copy of a live registration that also covers `resources`: an entry that misses one of them lists what it
    named before plus them (add-only: nothing it named is dropped, and a rule with a wildcard is kept as it is);
    everything else stays as it was. Unchanged when nothing is missing. An entry the registration lacks is not made
    up (`kubectl gitops install` writes it)."""
    wanted = set(resources)
    out: KubeObject = copy.deepcopy(dict(config))
    missing = missing_resources(config, wanted)
    if not missing:
        return out
    union = registered_resources(config) | wanted
    for entry in out.get("webhooks") or []:
        if entry.get("name") == OBJECTS_ENTRY and any(not _covered(entry, r.group, r.plural) for r in missing):
            entry["rules"] = _wildcard_rules(entry) + object_rules(union)
        elif entry.get("name") == SCALE_ENTRY and any(
            r.scale and not _covered(entry, r.group, f"{r.plural}/scale") for r in missing
        ):
            entry["rules"] = _wildcard_rules(entry) + scale_rules(union)
    return out


def _wildcard_rules(entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        dict(rule)
        for rule in entry.get("rules") or []
        if "*" in (rule.get("apiGroups") or []) or any("*" in r for r in rule.get("resources") or [])
    ]
