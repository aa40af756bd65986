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
EVICTION_ENTRY = f"evictions.{NAME}"
SERVICE_NAME = "gitops-webhook"
OPERATIONS = ["CREATE", "UPDATE", "DELETE"]
SCALE = "scale"
EVICTION = "eviction"
MACHINERY_CONDITION = "not-cluster-machinery"
# Only identities that `edit` (which may impersonate ServiceAccounts and mint their tokens) cannot take on skip the
# webhook: kube-controller-manager's and the scheduler's own users, and nodes. The controllers' ServiceAccounts in
# kube-system reach it, and the webhook judges them narrowly (a garbage collector's deletion only when the owner is
# really gone, ...); the webhook exempts the machinery again from the authenticated userInfo, so this is only a
# shortcut.
MACHINERY = (
    "!(request.userInfo.username in ['system:kube-controller-manager', 'system:kube-scheduler']"
    " || request.userInfo.username.startsWith('system:node:'))"
)


class ManagedResource(NamedTuple):
    """A resource Applications manage, as a registration names it: API group, the version Git declares its objects
    in (the API server converts a request made in any other version into this one, matchPolicy Equivalent), plural,
    and the subresources registered with it: `scale` and `eviction` in entries of their own, the others (those that
    write the object itself, such as `pods/ephemeralcontainers`) in the objects entry. The version `*` is an older
    registration's: every version, each request in the version its client used."""

    group: str
    version: str
    plural: str
    subresources: frozenset[str] = frozenset()

    @property
    def scale(self) -> bool:
        return SCALE in self.subresources

    @property
    def eviction(self) -> bool:
        return EVICTION in self.subresources

    @property
    def object_subresources(self) -> frozenset[str]:
        return self.subresources - {SCALE, EVICTION}


class ServedResource(Protocol):
    """What discovery says of a resource (engine.adapters.kube.ResourceInfo has it)."""

    @property
    def group(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def plural(self) -> str: ...
    @property
    def subresources(self) -> frozenset[str]: ...
    @property
    def object_subresources(self) -> frozenset[str]: ...


def managed_resources(served: Iterable[ServedResource]) -> set[ManagedResource]:
    """The registration's resources for what discovery says of the kinds Git declares, each in the version of Git's
    objects (`served` must be that version's ResourceInfo, not the preferred one's). Registered with a resource: its
    `scale`; its `eviction` (pods: an Eviction carries none of the Pod's labels); and the subresources that write the
    object itself with the whole object as body (`pods/ephemeralcontainers`, `pods/resize`, `namespaces/finalize`),
    `status` aside (status is never drift)."""
    return {
        ManagedResource(
            s.group,
            s.version,
            s.plural,
            (s.subresources & {SCALE, EVICTION}) | (s.object_subresources - {"status"}),
        )
        for s in served
    }


def _rules(triples: Iterable[tuple[str, str, str]], operations: list[str]) -> list[dict[str, Any]]:
    """One rule per API group and version, its resources sorted."""
    by_version: defaultdict[tuple[str, str], set[str]] = defaultdict(set)
    for group, version, resource in triples:
        by_version[(group, version)].add(resource)
    return [
        {
            "apiGroups": [group],
            "apiVersions": [version],
            "resources": sorted(resources),
            "operations": list(operations),
            "scope": "*",
        }
        for (group, version), resources in sorted(by_version.items())
    ]


def _object_triples(r: ManagedResource) -> list[tuple[str, str, str]]:
    return [(r.group, r.version, r.plural)] + [(r.group, r.version, f"{r.plural}/{s}") for s in r.object_subresources]


def object_rules(resources: Iterable[ManagedResource]) -> list[dict[str, Any]]:
    return _rules((t for r in resources for t in _object_triples(r)), OPERATIONS)


def scale_rules(resources: Iterable[ManagedResource]) -> list[dict[str, Any]]:
    return _rules(((r.group, r.version, f"{r.plural}/{SCALE}") for r in resources if r.scale), ["UPDATE"])


def eviction_rules(resources: Iterable[ManagedResource]) -> list[dict[str, Any]]:
    return _rules(((r.group, r.version, f"{r.plural}/{EVICTION}") for r in resources if r.eviction), ["CREATE"])


def webhook_configuration(
    *,
    ca_bundle: bytes,
    resources: Iterable[ManagedResource],
    url: str = "",
    namespace: str = "gitops-system",
    timeout_seconds: int = 10,
) -> KubeObject:
    """Three entries, each listing only the resources Applications manage, each in the version Git uses.

    Managed objects (and the subresources that write the object itself, whose body carries its labels): selected by
    the tracking label, failurePolicy Fail, so that stopping the webhook cannot open the door to drift (unmanaged
    objects never reach it). Scale subresources of those resources, and evictions of managed Pods: a Scale or an
    Eviction carries none of its parent's labels, so no objectSelector can match it; every such request reaches the
    webhook, which looks the parent up in its own index, and failurePolicy Ignore keeps a webhook outage from
    stopping every autoscaler and every node drain in the cluster. With no resources yet, the entries have
    `rules: []` (the API server accepts it, and stores the entry without rules: it matches nothing until resources
    are added)."""
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
        "matchConditions": [{"name": MACHINERY_CONDITION, "expression": MACHINERY}],
    }
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": NAME},
        "webhooks": [
            {
                "name": OBJECTS_ENTRY,
                **copy.deepcopy(common),
                "failurePolicy": "Fail",
                "objectSelector": {"matchExpressions": [{"key": TRACKING_LABEL, "operator": "Exists"}]},
                "rules": object_rules(wanted),
            },
            {"name": SCALE_ENTRY, **copy.deepcopy(common), "failurePolicy": "Ignore", "rules": scale_rules(wanted)},
            {
                "name": EVICTION_ENTRY,
                **copy.deepcopy(common),
                "failurePolicy": "Ignore",
                "rules": eviction_rules(wanted),
            },
        ],
    }


# --- reading and extending a registration that exists -----------------------------------------------------------
# Which subresources each entry holds (the objects entry: every other one), and how it lists its rules.
ENTRY_SUBRESOURCE = {SCALE_ENTRY: SCALE, EVICTION_ENTRY: EVICTION}
ENTRY_RULES = {OBJECTS_ENTRY: object_rules, SCALE_ENTRY: scale_rules, EVICTION_ENTRY: eviction_rules}


def _entry(config: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    return next((w for w in config.get("webhooks") or [] if isinstance(w, Mapping) and w.get("name") == name), None)


def _named(entry: Mapping[str, Any] | None) -> set[tuple[str, str, str]]:
    """(group, version, resource) for every group and resource an entry's rules name explicitly (wildcards left
    out; the version may be `*`)."""
    named = set()
    for rule in (entry or {}).get("rules") or []:
        for group in rule.get("apiGroups") or []:
            for version in rule.get("apiVersions") or []:
                for resource in rule.get("resources") or []:
                    if group != "*" and "*" not in resource:
                        named.add((str(group), str(version), str(resource)))
    return named


def registered_resources(config: Mapping[str, Any]) -> set[ManagedResource]:
    """The resources a registration names, with the subresources it names for them: the objects entry's resources
    and subresources, `scale` where the scale entry names `<plural>/scale`, `eviction` where the eviction entry
    names `<plural>/eviction`. Wildcard rules (`*` groups or resources) name no resource and are left out; a `*`
    version is kept as it is."""
    found: defaultdict[tuple[str, str, str], set[str]] = defaultdict(set)
    for group, version, resource in _named(_entry(config, OBJECTS_ENTRY)):
        plural, _, sub = resource.partition("/")
        found[(group, version, plural)] |= {sub} - {"", SCALE, EVICTION}
    for name, sub in ENTRY_SUBRESOURCE.items():
        for group, version, resource in _named(_entry(config, name)):
            plural, _, named_sub = resource.partition("/")
            if named_sub == sub:
                found[(group, version, plural)].add(sub)
    return {ManagedResource(g, v, p, frozenset(subs)) for (g, v, p), subs in found.items()}


def _matches(rule: Mapping[str, Any], group: str, version: str, resource: str) -> bool:
    """Whether a rule matches (group, version, resource) exactly, wildcards as the API server reads them: `*` is
    every group or version, and every resource but no subresource; `*/*` everything, `x/*` every subresource of x,
    `*/scale` every scale subresource."""
    groups, versions = rule.get("apiGroups") or [], rule.get("apiVersions") or []
    if (group not in groups and "*" not in groups) or (version not in versions and "*" not in versions):
        return False
    base, _, sub = resource.partition("/")
    accepted = {resource, "*/*"} | ({f"{base}/*", f"*/{sub}"} if sub else {"*"})
    return bool(accepted & set(rule.get("resources") or []))


def _wanted_in(name: str, r: ManagedResource) -> list[str]:
    """The resources (and subresources) of `r` that entry `name` must cover."""
    if name in ENTRY_SUBRESOURCE:
        sub = ENTRY_SUBRESOURCE[name]
        return [f"{r.plural}/{sub}"] if sub in r.subresources else []
    return [resource for _, _, resource in _object_triples(r)]


def _covers(entry: Mapping[str, Any] | None, name: str, r: ManagedResource) -> bool:
    """Whether an entry covers what it must of `r`. A version `*` on either side: any version."""
    rules = (entry or {}).get("rules") or []
    return all(
        entry is not None and any(_matches(rule, r.group, r.version, resource) for rule in rules)
        for resource in _wanted_in(name, r)
    )


def missing_resources(config: Mapping[str, Any], resources: Iterable[ManagedResource]) -> set[ManagedResource]:
    """The resources whose objects, or one of whose registered subresources, the registration does not cover in
    their version."""
    entries = {name: _entry(config, name) for name in ENTRY_RULES}
    return {r for r in resources if not all(_covers(entry, name, r) for name, entry in entries.items())}


def with_resources(config: Mapping[str, Any], resources: Iterable[ManagedResource]) -> KubeObject:
    """A copy of a live registration that also covers `resources`, and whose machinery condition is this version's:
    an entry that misses one of them lists what it named before plus them (add-only per group, version and resource:
    nothing it named is dropped, another version of a resource is added next to the one registered, and a rule with
    a wildcard is kept as it is); an entry whose `not-cluster-machinery` condition differs from this version's gets
    this version's (an older one let every kube-system ServiceAccount skip the webhook); everything else stays as it
    was. Unchanged when nothing is missing or outdated. An entry the registration lacks is not made up
    (`kubectl gitops install` writes it)."""
    wanted = set(resources)
    out: KubeObject = copy.deepcopy(dict(config))
    union = registered_resources(config) | wanted
    for entry in out.get("webhooks") or []:
        name = entry.get("name")
        if name not in ENTRY_RULES:
            continue
        if any(not _covers(entry, name, r) for r in wanted):
            entry["rules"] = _wildcard_rules(entry) + ENTRY_RULES[name](union)
        for condition in entry.get("matchConditions") or []:
            if condition.get("name") == MACHINERY_CONDITION and condition.get("expression") != MACHINERY:
                condition["expression"] = MACHINERY
    return out


def _wildcard_rules(entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        dict(rule)
        for rule in entry.get("rules") or []
        if "*" in (rule.get("apiGroups") or []) or any("*" in r for r in rule.get("resources") or [])
    ]
