"""The ValidatingWebhookConfiguration that registers the drift webhook: what it lists, in which versions, and how a
live one is read and extended."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from engine.core.objects import TRACKING_LABEL
from engine.core.resources import ResourceInfo
from engine.core.webhookconfig import (
    EVICTION_ENTRY,
    MACHINERY,
    MACHINERY_CONDITION,
    NAME,
    OBJECTS_ENTRY,
    OPERATIONS,
    SCALE_ENTRY,
    SERVICE_NAME,
    ManagedResource,
    managed_resources,
    missing_resources,
    object_rules,
    registered_resources,
    webhook_configuration,
    with_resources,
)

CA = b"-----BEGIN CERTIFICATE-----\nMIIB...\n-----END CERTIFICATE-----\n"
SCALE = frozenset({"scale"})
DEPLOYMENTS = ManagedResource("apps", "v1", "deployments", SCALE)
STATEFULSETS = ManagedResource("apps", "v1", "statefulsets", SCALE)
CONFIGMAPS = ManagedResource("", "v1", "configmaps")
SERVICES = ManagedResource("", "v1", "services")
WIDGETS = ManagedResource("acme.io", "v1beta1", "widgets", SCALE)
ROLES = ManagedResource("rbac.authorization.k8s.io", "v1", "roles")
HPA_V2 = ManagedResource("autoscaling", "v2", "horizontalpodautoscalers")
HPA_V1 = ManagedResource("autoscaling", "v1", "horizontalpodautoscalers")
PODS = ManagedResource("", "v1", "pods", frozenset({"eviction", "ephemeralcontainers", "resize"}))
GUESTBOOK = {DEPLOYMENTS, CONFIGMAPS, SERVICES, ManagedResource("", "v1", "secrets")}


def entries(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {w["name"]: w for w in obj["webhooks"]}


def configuration(*resources: ManagedResource, **options: Any) -> dict[str, Any]:
    return webhook_configuration(ca_bundle=CA, resources=resources or GUESTBOOK, **options)


def listed(entry: dict[str, Any]) -> list[tuple[list[str], list[str], list[str]]]:
    return [(rule["apiGroups"], rule["apiVersions"], rule["resources"]) for rule in entry.get("rules") or []]


def stored(obj: dict[str, Any]) -> dict[str, Any]:
    """As the API server returns it: an empty `rules` is left out, metadata grows."""
    out: dict[str, Any] = json.loads(json.dumps(obj))
    for hook in out["webhooks"]:
        if not hook["rules"]:
            del hook["rules"]
    out["metadata"] |= {"resourceVersion": "42", "uid": "u-1"}
    return out


# --- a fresh configuration -----------------------------------------------------------------------------------------
def test_the_configuration_object() -> None:
    obj = configuration()
    assert obj["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert obj["kind"] == "ValidatingWebhookConfiguration"
    assert obj["metadata"] == {"name": NAME}
    assert [hook["name"] for hook in obj["webhooks"]] == [OBJECTS_ENTRY, SCALE_ENTRY, EVICTION_ENTRY]


def test_in_cluster_the_webhook_is_reached_through_its_service() -> None:
    for hook in configuration(namespace="ops")["webhooks"]:
        assert hook["clientConfig"] == {
            "service": {"name": SERVICE_NAME, "namespace": "ops", "path": "/validate", "port": 443},
            "caBundle": base64.b64encode(CA).decode(),
        }


def test_locally_the_webhook_is_reached_by_url() -> None:
    for hook in configuration(url="https://127.0.0.1:8443/validate")["webhooks"]:
        assert hook["clientConfig"] == {
            "url": "https://127.0.0.1:8443/validate",
            "caBundle": base64.b64encode(CA).decode(),
        }


def test_managed_objects_are_selected_by_the_tracking_label_and_fail_closed() -> None:
    hook = entries(configuration())[OBJECTS_ENTRY]
    assert hook["failurePolicy"] == "Fail"
    assert hook["objectSelector"] == {"matchExpressions": [{"key": TRACKING_LABEL, "operator": "Exists"}]}
    for rule in hook["rules"]:
        assert rule["operations"] == ["CREATE", "UPDATE", "DELETE"]
        assert rule["scope"] == "*"


def test_one_rule_per_group_and_version_exactly_the_versions_git_uses() -> None:
    obj = configuration(DEPLOYMENTS, STATEFULSETS, SERVICES, CONFIGMAPS, WIDGETS, ROLES, HPA_V2)
    assert listed(entries(obj)[OBJECTS_ENTRY]) == [
        ([""], ["v1"], ["configmaps", "services"]),
        (["acme.io"], ["v1beta1"], ["widgets"]),
        (["apps"], ["v1"], ["deployments", "statefulsets"]),
        (["autoscaling"], ["v2"], ["horizontalpodautoscalers"]),  # not `*`: a v1 request is converted to v2
        (["rbac.authorization.k8s.io"], ["v1"], ["roles"]),
    ]
    assert not any("*" in rule["apiVersions"] for hook in obj["webhooks"] for rule in hook["rules"])


def test_a_resource_git_declares_in_two_versions_is_registered_in_both() -> None:
    assert listed(entries(configuration(HPA_V1, HPA_V2))[OBJECTS_ENTRY]) == [
        (["autoscaling"], ["v1"], ["horizontalpodautoscalers"]),
        (["autoscaling"], ["v2"], ["horizontalpodautoscalers"]),
    ]


def test_scale_subresources_have_their_own_entry_that_fails_open() -> None:
    hook = entries(configuration(DEPLOYMENTS, STATEFULSETS, CONFIGMAPS, WIDGETS, ROLES))[SCALE_ENTRY]
    assert hook["failurePolicy"] == "Ignore"
    assert "objectSelector" not in hook  # a Scale carries none of its parent's labels
    assert [(rule["resources"], rule["operations"]) for rule in hook["rules"]] == [
        (["widgets/scale"], ["UPDATE"]),
        (["deployments/scale", "statefulsets/scale"], ["UPDATE"]),
    ]
    assert listed(hook)[0][:2] == (["acme.io"], ["v1beta1"])


def test_evictions_of_managed_pods_have_their_own_entry_that_fails_open() -> None:
    hook = entries(configuration(PODS, DEPLOYMENTS))[EVICTION_ENTRY]
    assert hook["failurePolicy"] == "Ignore"  # a webhook outage must not block node drains cluster-wide
    assert "objectSelector" not in hook  # an Eviction carries none of the Pod's labels
    assert hook["rules"] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods/eviction"],
            "operations": ["CREATE"],
            "scope": "*",
        }
    ]


def test_subresources_that_write_the_pod_itself_are_in_the_objects_entry() -> None:
    # Their body is the Pod, labels included: the objects entry's objectSelector matches it.
    assert listed(entries(configuration(PODS))[OBJECTS_ENTRY]) == [
        ([""], ["v1"], ["pods", "pods/ephemeralcontainers", "pods/resize"])
    ]


def test_no_managed_resource_yet_gives_every_entry_empty_rules() -> None:
    # The API server accepts `rules: []` (and stores the entry without rules: it matches nothing), while a rule with
    # no resources is invalid; keeping the entries keeps their clientConfig for the webhook to fill in.
    obj = webhook_configuration(ca_bundle=CA, resources=[])
    assert [hook["rules"] for hook in obj["webhooks"]] == [[], [], []]
    assert registered_resources(obj) == set()


def test_a_resource_without_those_subresources_has_no_rule_in_their_entries() -> None:
    obj = configuration(CONFIGMAPS, SERVICES)
    assert (entries(obj)[SCALE_ENTRY]["rules"], entries(obj)[EVICTION_ENTRY]["rules"]) == ([], [])


@pytest.mark.parametrize("namespace", ["gitops-system", "ops"])
def test_every_entry_leaves_kube_system_and_its_own_namespace_alone(namespace: str) -> None:
    for hook in configuration(namespace=namespace, timeout_seconds=7)["webhooks"]:
        assert hook["namespaceSelector"] == {
            "matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", namespace]}
            ]
        }
        assert hook["sideEffects"] == "NoneOnDryRun"
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["timeoutSeconds"] == 7
        assert hook["matchPolicy"] == "Equivalent"
        assert hook["matchConditions"] == [{"name": MACHINERY_CONDITION, "expression": MACHINERY}]


def test_only_identities_edit_cannot_take_on_skip_the_webhook() -> None:
    # `edit` impersonates ServiceAccounts and mints their tokens: no ServiceAccount is trusted by its name.
    assert MACHINERY == (
        "!(request.userInfo.username in ['system:kube-controller-manager', 'system:kube-scheduler']"
        " || request.userInfo.username.startsWith('system:node:'))"
    )
    assert "serviceaccount" not in MACHINERY


# --- what discovery says ----------------------------------------------------------------------------------------------
def test_managed_resources_take_the_version_and_the_subresources_from_discovery() -> None:
    served = [
        ResourceInfo(
            "apps", "v1", "Deployment", "deployments", True, frozenset({"scale", "status"}), frozenset({"status"})
        ),
        ResourceInfo("", "v1", "ConfigMap", "configmaps", True),
        ResourceInfo("", "v1", "Service", "services", True, frozenset({"status", "proxy"}), frozenset({"status"})),
        ResourceInfo("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", True),
        ResourceInfo(
            "",
            "v1",
            "Pod",
            "pods",
            True,
            frozenset({"attach", "binding", "ephemeralcontainers", "eviction", "exec", "log", "resize", "status"}),
            frozenset({"ephemeralcontainers", "resize", "status"}),
        ),
    ]
    assert managed_resources(served) == {DEPLOYMENTS, CONFIGMAPS, SERVICES, HPA_V2, PODS}


# --- reading and extending a live registration --------------------------------------------------------------------
@pytest.mark.parametrize(
    "resources",
    [set(), {CONFIGMAPS}, GUESTBOOK, {DEPLOYMENTS, STATEFULSETS, WIDGETS, ROLES, CONFIGMAPS}, {PODS, HPA_V1, HPA_V2}],
)
def test_registered_resources_reads_back_what_was_written(resources: set[ManagedResource]) -> None:
    assert registered_resources(stored(webhook_configuration(ca_bundle=CA, resources=resources))) == resources


def older(obj: dict[str, Any], *, condition: str = MACHINERY) -> dict[str, Any]:
    """A registration as an older version wrote it: every version (`*`), no eviction entry, and its condition."""
    out = stored(obj)
    out["webhooks"] = [hook for hook in out["webhooks"] if hook["name"] != EVICTION_ENTRY]
    for hook in out["webhooks"]:
        hook["matchConditions"] = [{"name": MACHINERY_CONDITION, "expression": condition}]
        for rule in hook.get("rules") or []:
            rule["apiVersions"] = ["*"]
    return out


OLD_MACHINERY = (
    "!(request.userInfo.username == 'system:kube-controller-manager'"
    " || request.userInfo.username.startsWith('system:serviceaccount:kube-system:')"
    " || request.userInfo.username.startsWith('system:node:'))"
)


def test_an_older_registration_every_version_covers_every_version() -> None:
    old = older(configuration(DEPLOYMENTS, CONFIGMAPS, HPA_V1))
    assert registered_resources(old) == {
        ManagedResource("apps", "*", "deployments", SCALE),
        ManagedResource("", "*", "configmaps"),
        ManagedResource("autoscaling", "*", "horizontalpodautoscalers"),
    }
    assert missing_resources(old, [DEPLOYMENTS, CONFIGMAPS, HPA_V2]) == set()
    assert with_resources(old, [DEPLOYMENTS, HPA_V2]) == old  # left as it is: `install` makes the versions exact


def test_an_older_broader_machinery_condition_is_narrowed_and_nothing_else_changes() -> None:
    old = older(configuration(DEPLOYMENTS), condition=OLD_MACHINERY)
    other = {"name": "theirs", "expression": "true"}
    entries(old)[OBJECTS_ENTRY]["matchConditions"].append(other)
    merged = with_resources(old, [DEPLOYMENTS])
    assert entries(merged)[OBJECTS_ENTRY]["matchConditions"] == [
        {"name": MACHINERY_CONDITION, "expression": MACHINERY},
        other,
    ]
    assert entries(merged)[SCALE_ENTRY]["matchConditions"] == [{"name": MACHINERY_CONDITION, "expression": MACHINERY}]
    for hook in merged["webhooks"]:
        hook["matchConditions"] = entries(old)[hook["name"]]["matchConditions"]
    assert merged == old


def test_an_older_registration_gets_the_subresources_of_pods_it_can_hold() -> None:
    old = older(configuration(CONFIGMAPS))
    merged = with_resources(old, [PODS])
    assert listed(entries(merged)[OBJECTS_ENTRY]) == [
        ([""], ["*"], ["configmaps"]),
        ([""], ["v1"], ["pods", "pods/ephemeralcontainers", "pods/resize"]),
    ]
    assert [hook["name"] for hook in merged["webhooks"]] == [OBJECTS_ENTRY, SCALE_ENTRY]  # no eviction entry made up
    assert missing_resources(merged, [PODS]) == {PODS}  # its evictions still are not covered


def test_another_version_of_a_registered_resource_is_added_next_to_it() -> None:
    live = stored(configuration(HPA_V1, CONFIGMAPS))
    assert missing_resources(live, [HPA_V2]) == {HPA_V2}
    merged = with_resources(live, [HPA_V2])
    assert registered_resources(merged) == {HPA_V1, HPA_V2, CONFIGMAPS}  # add-only: v1 stays
    assert missing_resources(merged, [HPA_V1, HPA_V2]) == set()


@pytest.mark.parametrize(
    ("rule_resources", "versions", "resource", "covered"),
    [
        (["*"], ["v1"], "deployments", True),
        (["*"], ["v1"], "deployments/scale", False),  # `*` is every resource, no subresource
        (["*/*"], ["v1"], "deployments/scale", True),
        (["deployments/*"], ["v1"], "deployments/scale", True),
        (["*/scale"], ["v1"], "deployments/scale", True),
        (["*/scale"], ["v1"], "deployments", False),
        (["deployments"], ["v1"], "deployments/scale", False),
        (["statefulsets/scale"], ["v1"], "deployments/scale", False),
        (["deployments"], ["v1beta1"], "deployments", False),  # another version: converted, not this one
        (["deployments"], ["v1beta1", "v1"], "deployments", True),
        (["deployments"], ["*"], "deployments", True),
    ],
)
def test_rules_match_as_the_api_server_reads_them(
    rule_resources: list[str], versions: list[str], resource: str, covered: bool
) -> None:
    obj = webhook_configuration(ca_bundle=CA, resources=[])
    rule = {"apiGroups": ["apps"], "apiVersions": versions, "resources": rule_resources, "operations": ["UPDATE"]}
    name = SCALE_ENTRY if "/" in resource else OBJECTS_ENTRY
    entries(obj)[name]["rules"] = [rule]
    plural, _, sub = resource.partition("/")
    wanted = ManagedResource("apps", "v1", plural, frozenset({sub}) if sub else frozenset())
    if sub:  # the objects entry is not the question here
        entries(obj)[OBJECTS_ENTRY]["rules"] = object_rules([wanted])
    assert (missing_resources(obj, [wanted]) == set()) is covered


def test_missing_resources_names_what_any_entry_lacks() -> None:
    without_scale = ManagedResource("apps", "v1", "deployments")
    live = stored(configuration(CONFIGMAPS, without_scale, ManagedResource("", "v1", "pods")))
    assert missing_resources(live, [CONFIGMAPS, without_scale]) == set()
    assert missing_resources(live, [DEPLOYMENTS, SERVICES]) == {DEPLOYMENTS, SERVICES}
    assert missing_resources(live, [PODS]) == {PODS}  # its eviction, ephemeralcontainers, resize


def test_with_resources_adds_and_never_drops() -> None:
    live = stored(configuration(CONFIGMAPS, DEPLOYMENTS))
    merged = with_resources(live, [ROLES, WIDGETS, PODS])
    assert registered_resources(merged) == {CONFIGMAPS, DEPLOYMENTS, ROLES, WIDGETS, PODS}
    assert merged["metadata"] == live["metadata"]  # the resourceVersion guards the update
    for name in (OBJECTS_ENTRY, SCALE_ENTRY, EVICTION_ENTRY):
        before, after = entries(live)[name], entries(merged)[name]
        assert {k: v for k, v in after.items() if k != "rules"} == {k: v for k, v in before.items() if k != "rules"}
    assert registered_resources(live) == {CONFIGMAPS, DEPLOYMENTS}  # the input is left alone


def test_with_resources_leaves_a_covering_registration_as_it_is() -> None:
    live = stored(configuration(CONFIGMAPS, DEPLOYMENTS, ROLES, PODS))
    assert with_resources(live, [CONFIGMAPS, DEPLOYMENTS, PODS]) == live
    assert with_resources(live, []) == live


def test_with_resources_fills_an_empty_registration() -> None:
    live = stored(webhook_configuration(ca_bundle=CA, resources=[]))
    merged = with_resources(live, GUESTBOOK | {PODS})
    assert merged == stored(configuration(*GUESTBOOK, PODS)) | {"metadata": merged["metadata"]}


def test_with_resources_keeps_a_wildcard_rule_it_does_not_understand() -> None:
    live = stored(configuration(CONFIGMAPS))
    odd = {"apiGroups": ["batch"], "apiVersions": ["*"], "resources": ["*"], "operations": OPERATIONS, "scope": "*"}
    entries(live)[OBJECTS_ENTRY]["rules"].append(odd)
    merged = with_resources(live, [ROLES])
    assert odd in entries(merged)[OBJECTS_ENTRY]["rules"]
    assert missing_resources(merged, [ManagedResource("batch", "v1", "jobs"), ROLES, CONFIGMAPS]) == set()


def test_an_entry_the_registration_lacks_is_not_made_up() -> None:
    live = stored(configuration(CONFIGMAPS))
    live["webhooks"] = [w for w in live["webhooks"] if w["name"] != SCALE_ENTRY]
    merged = with_resources(live, [DEPLOYMENTS])
    assert [w["name"] for w in merged["webhooks"]] == [OBJECTS_ENTRY, EVICTION_ENTRY]
    assert missing_resources(merged, [DEPLOYMENTS]) == {DEPLOYMENTS}  # its scale still is not covered


def test_the_entries_share_nothing() -> None:
    # A caller that edits one entry (a test giving each its own URL) must not edit the others.
    obj = configuration()
    obj["webhooks"][0]["clientConfig"]["url"] = "https://elsewhere/validate"
    obj["webhooks"][0]["matchConditions"].clear()
    assert all("url" not in hook["clientConfig"] and hook["matchConditions"] for hook in obj["webhooks"][1:])
