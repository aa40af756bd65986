"""Drift of one object, from hand-built dry-run results and live objects with realistic managedFields.

`desired` is what a server-side dry-run apply of Git's manifest answers: the live object merged with Git, our field
manager owning what Git declares (so fields other managers own are still there). `live` is the object in the cluster.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from typing import Any

import jsonpatch
import pytest

from engine.core import fieldsets
from engine.core.drift import (
    UNKNOWN_SCALER,
    UNRECORDED,
    DriftItem,
    DriftKind,
    DriftPolicy,
    IgnoreRule,
    ObjectDiff,
    ObjectState,
    added,
    declared_fields,
    diff_object,
    diff_replaced,
    remove_fields,
)
from engine.core.fieldsets import FieldPath
from engine.core.normalize import LAST_APPLIED, SecretMasker
from engine.core.objects import (
    FIELD_MANAGER,
    REVISION_ANNOTATION,
    TRACKING_ANNOTATION,
    TRACKING_LABEL,
    KubeObject,
    ObjectKey,
)

from ..stored import container, k

KEY = ObjectKey("apps", "Deployment", "shop", "web")
SECRET_KEY = ObjectKey("", "Secret", "shop", "db")
MASKER = SecretMasker(b"unit-test-key-0123456789abcdef!!")
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


APP, PROXY = k(name="app"), k(name="proxy")
MODE, LEVEL = k(name="MODE"), k(name="LEVEL")
HTTP = k(containerPort=80, protocol="TCP")


def entry(
    manager: str, fields: dict[str, Any], *, operation: str = "Update", subresource: str = "", api: str = "apps/v1"
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "manager": manager,
        "operation": operation,
        "apiVersion": api,
        "time": "2024-05-01T10:00:00Z",
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
    }
    if subresource:
        out["subresource"] = subresource
    return out


def template_spec(*inner: tuple[str, Any]) -> dict[str, Any]:
    """fieldsV1 under spec.template.spec."""
    return {"f:spec": {"f:template": {"f:spec": dict(inner)}}}


def git_fields(*, replicas: bool = True) -> dict[str, Any]:
    """What Git's Deployment declares, as our manager's field set."""
    env_var: dict[str, Any] = {".": {}, "f:name": {}, "f:value": {}}
    spec: dict[str, Any] = {
        "f:selector": {},
        "f:template": {
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {
                "f:containers": {
                    APP: {
                        ".": {},
                        "f:name": {},
                        "f:image": {},
                        "f:env": {MODE: env_var, LEVEL: env_var},
                        "f:ports": {HTTP: {".": {}, "f:containerPort": {}, "f:protocol": {}}},
                    },
                    PROXY: {".": {}, "f:name": {}, "f:image": {}},
                }
            },
        },
    }
    if replicas:
        spec["f:replicas"] = {}
    return {
        "f:metadata": {
            "f:labels": {"f:app": {}, f"f:{TRACKING_LABEL}": {}},
            "f:annotations": {f"f:{TRACKING_ANNOTATION}": {}},
        },
        "f:spec": spec,
    }


def stored(*, replicas: bool = True) -> KubeObject:
    """Git's Deployment as the API server stores it: defaults filled in, our field set, the controller's marks."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "uid": "0b5e0f36-0000-4000-8000-000000000001",
            "resourceVersion": "1200",
            "generation": 3,
            "creationTimestamp": "2024-05-01T10:00:00Z",
            "labels": {"app": "web", TRACKING_LABEL: "shop"},
            "annotations": {
                TRACKING_ANNOTATION: "gitops-system/shop:apps/Deployment:shop/web",
                "deployment.kubernetes.io/revision": "3",
            },
            "managedFields": [
                entry(FIELD_MANAGER, git_fields(replicas=replicas), operation="Apply"),
                entry(
                    "kube-controller-manager",
                    {"f:metadata": {"f:annotations": {".": {}, "f:deployment.kubernetes.io/revision": {}}}},
                ),
                entry(
                    "kube-controller-manager",
                    {"f:status": {"f:replicas": {}, "f:readyReplicas": {}, "f:observedGeneration": {}}},
                    subresource="status",
                ),
            ],
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        container(
                            "app",
                            "nginx:1.25",
                            env=[{"name": "MODE", "value": "prod"}, {"name": "LEVEL", "value": "info"}],
                            ports=[{"containerPort": 80, "protocol": "TCP"}],
                        ),
                        container("proxy", "envoy:1.30"),
                    ],
                    "restartPolicy": "Always",
                    "dnsPolicy": "ClusterFirst",
                    "schedulerName": "default-scheduler",
                    "securityContext": {},
                    "terminationGracePeriodSeconds": 30,
                },
            },
        },
        "status": {"replicas": 2, "readyReplicas": 2, "observedGeneration": 3},
    }


def pod_spec(obj: KubeObject) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def app_container(obj: KubeObject) -> dict[str, Any]:
    found: dict[str, Any] = pod_spec(obj)["containers"][0]
    return found


def own(obj: KubeObject, manager: str, fields: dict[str, Any], **kwargs: Any) -> None:
    obj["metadata"]["managedFields"].append(entry(manager, fields, **kwargs))


def diff(
    desired: KubeObject | None, live: KubeObject | None, policy: DriftPolicy | None = None, key: ObjectKey = KEY
) -> ObjectDiff:
    return diff_object(key, desired, live, policy or DriftPolicy(), MASKER)


def summary(result: ObjectDiff) -> list[tuple[str, str, Any, Any, str]]:
    return [(i.path, i.kind.value, i.desired, i.live, i.manager) for i in result.items]


def assert_patch_makes_target(result: ObjectDiff) -> None:
    """The displayed patch takes the displayed live object to the displayed target."""
    assert result.live is not None
    assert result.target is not None
    assert jsonpatch.apply_patch(result.live, result.patch) == result.target


# --- synced -------------------------------------------------------------------------------------------------------


def test_an_object_as_git_stores_it_is_synced() -> None:
    result = diff(stored(), stored())
    assert result.state is ObjectState.SYNCED
    assert not result.drifted
    assert result.items == []
    assert result.patch == []
    assert result.live == result.target
    assert result.live is not None
    assert "managedFields" not in result.live["metadata"]
    assert "status" not in result.live


def test_bookkeeping_and_status_changes_are_not_drift() -> None:
    live = stored()
    live["metadata"]["resourceVersion"] = "9999"
    live["metadata"]["generation"] = 4
    live["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "4"
    live["status"] = {"replicas": 3, "readyReplicas": 1, "unavailableReplicas": 2}
    desired = copy.deepcopy(live)
    assert diff(desired, live).state is ObjectState.SYNCED


# --- changed ------------------------------------------------------------------------------------------------------


def set_image(obj: KubeObject) -> None:
    app_container(obj)["image"] = "nginx:1.26"
    own(obj, "kubectl-set", template_spec(("f:containers", {APP: {"f:image": {}}})))


def set_env_value(obj: KubeObject) -> None:
    app_container(obj)["env"][0]["value"] = "debug"
    own(obj, "kubectl-set", template_spec(("f:containers", {APP: {"f:env": {MODE: {"f:value": {}}}}})))


def scale(obj: KubeObject) -> None:
    obj["spec"]["replicas"] = 5


def change_selector(obj: KubeObject) -> None:
    obj["spec"]["selector"] = {"matchLabels": {"app": "web", "tier": "front"}}


def change_label(obj: KubeObject) -> None:
    obj["metadata"]["labels"]["app"] = "shop-web"
    own(obj, "kubectl-label", {"f:metadata": {"f:labels": {"f:app": {}}}})


def drop_label(obj: KubeObject) -> None:
    del obj["metadata"]["labels"]["app"]


def change_template_label(obj: KubeObject) -> None:
    obj["spec"]["template"]["metadata"]["labels"]["app"] = "other"


def change_port(obj: KubeObject) -> None:
    app_container(obj)["ports"][0]["containerPort"] = 8080


@pytest.mark.parametrize(
    ("change", "path", "want", "have"),
    [
        (set_image, "/spec/template/spec/containers/0/image", "nginx:1.25", "nginx:1.26"),
        (set_env_value, "/spec/template/spec/containers/0/env/0/value", "prod", "debug"),
        (scale, "/spec/replicas", 2, 5),
        (
            change_selector,
            "/spec/selector",
            {"matchLabels": {"app": "web"}},
            {"matchLabels": {"app": "web", "tier": "front"}},
        ),
        (change_label, "/metadata/labels/app", "web", "shop-web"),
        (drop_label, "/metadata/labels/app", "web", None),
        (change_template_label, "/spec/template/metadata/labels/app", "web", "other"),
        # The port element keyed (80, TCP) is gone live, and reported once, at the element.
        (change_port, "/spec/template/spec/containers/0/ports/0", {"containerPort": 80, "protocol": "TCP"}, None),
    ],
    ids=["image", "env-value", "replicas", "atomic-selector", "label", "label-removed", "template-label", "port-key"],
)
def test_a_changed_declared_field(change: Callable[[KubeObject], None], path: str, want: Any, have: Any) -> None:
    live = stored()
    change(live)
    result = diff(stored(), live)
    assert result.state is ObjectState.MODIFIED
    assert result.drifted
    assert summary(result) == [(path, "changed", want, have, "")]
    assert_patch_makes_target(result)
    assert result.target is not None
    assert result.target == diff(stored(), stored()).target


def drop_env(name: str) -> Callable[[KubeObject], None]:
    def change(obj: KubeObject) -> None:
        env = app_container(obj)["env"]
        env[:] = [e for e in env if e["name"] != name]

    return change


def drop_all_env(obj: KubeObject) -> None:
    del app_container(obj)["env"]


def drop_proxy(obj: KubeObject) -> None:
    del pod_spec(obj)["containers"][1]


def drop_proxy_and_image(obj: KubeObject) -> None:
    drop_proxy(obj)
    set_image(obj)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            drop_env("MODE"),
            [("/spec/template/spec/containers/0/env/0", {"name": "MODE", "value": "prod"})],
        ),
        (
            drop_env("LEVEL"),
            [("/spec/template/spec/containers/0/env/1", {"name": "LEVEL", "value": "info"})],
        ),
        (
            drop_all_env,
            [
                (
                    "/spec/template/spec/containers/0/env",
                    [{"name": "MODE", "value": "prod"}, {"name": "LEVEL", "value": "info"}],
                )
            ],
        ),
        (drop_proxy, [("/spec/template/spec/containers/1", container("proxy", "envoy:1.30"))]),
    ],
    ids=["first-env", "second-env", "whole-env-list", "container"],
)
def test_a_declared_list_element_gone_is_reported_once_at_the_element(
    change: Callable[[KubeObject], None], expected: list[tuple[str, Any]]
) -> None:
    live = stored()
    change(live)
    result = diff(stored(), live)
    assert summary(result) == [(path, "changed", want, None, "") for path, want in expected]
    assert_patch_makes_target(result)


def test_a_gone_element_and_a_changed_field_are_two_items() -> None:
    live = stored()
    drop_proxy_and_image(live)
    result = diff(stored(), live)
    assert sorted(i.path for i in result.items) == [
        "/spec/template/spec/containers/0/image",
        "/spec/template/spec/containers/1",
    ]
    assert {i.kind for i in result.items} == {DriftKind.CHANGED}
    assert_patch_makes_target(result)


# --- added --------------------------------------------------------------------------------------------------------


def add_env(obj: KubeObject) -> None:
    app_container(obj)["env"].append({"name": "DEBUG", "value": "1"})
    fields: dict[str, Any] = {"f:env": {k(name="DEBUG"): {".": {}, "f:name": {}, "f:value": {}}}}
    own(obj, "kubectl-set", template_spec(("f:containers", {APP: fields})))


def add_container(obj: KubeObject) -> None:
    pod_spec(obj)["containers"].append(container("debug", "busybox:1.36", command=["sleep", "3600"]))
    fields: dict[str, Any] = {
        ".": {},
        "f:name": {},
        "f:image": {},
        "f:command": {},
        "f:imagePullPolicy": {},
        "f:resources": {},
        "f:terminationMessagePath": {},
        "f:terminationMessagePolicy": {},
    }
    own(obj, "kubectl-edit", template_spec(("f:containers", {k(name="debug"): fields})))


def add_command(obj: KubeObject) -> None:
    app_container(obj)["command"] = ["nginx", "-g", "daemon off;"]
    own(obj, "kubectl-patch", template_spec(("f:containers", {APP: {"f:command": {}}})))


def add_volume(obj: KubeObject) -> None:
    pod_spec(obj)["volumes"] = [{"name": "scratch", "emptyDir": {}}]
    fields: dict[str, Any] = {"f:volumes": {k(name="scratch"): {".": {}, "f:name": {}, "f:emptyDir": {}}}}
    own(obj, "kubectl-edit", {"f:spec": {"f:template": {"f:spec": fields}}})


def pause(obj: KubeObject) -> None:
    obj["spec"]["paused"] = True
    own(obj, "kubectl-rollout", {"f:spec": {"f:paused": {}}})


def add_node_selector(obj: KubeObject) -> None:
    pod_spec(obj)["nodeSelector"] = {"disk": "ssd"}
    own(obj, "Mozilla", template_spec(("f:nodeSelector", {".": {}, "f:disk": {}})))


@pytest.mark.parametrize(
    ("change", "path", "value", "manager"),
    [
        (add_env, "/spec/template/spec/containers/0/env/2", {"name": "DEBUG", "value": "1"}, "kubectl-set"),
        (
            add_container,
            "/spec/template/spec/containers/2",
            container("debug", "busybox:1.36", command=["sleep", "3600"]),
            "kubectl-edit",
        ),
        (add_command, "/spec/template/spec/containers/0/command", ["nginx", "-g", "daemon off;"], "kubectl-patch"),
        (add_volume, "/spec/template/spec/volumes/0", {"name": "scratch", "emptyDir": {}}, "kubectl-edit"),
        (pause, "/spec/paused", True, "kubectl-rollout"),
        (add_node_selector, "/spec/template/spec/nodeSelector", {"disk": "ssd"}, "Mozilla"),
    ],
    ids=["env", "container", "field-in-declared-container", "volume", "paused", "map-owned-whole"],
)
def test_a_field_another_manager_added_is_drift_by_that_manager(
    change: Callable[[KubeObject], None], path: str, value: Any, manager: str
) -> None:
    live = stored()
    change(live)
    desired = copy.deepcopy(live)  # a dry-run apply keeps what other managers own
    result = diff(desired, live)
    assert result.state is ObjectState.MODIFIED
    assert summary(result) == [(path, "added", None, value, manager)]
    assert result.items[0].as_dict() == {"path": path, "kind": "added", "manager": manager}
    # A sync removes it: the target is Git's object without the added field.
    assert jsonpatch.JsonPointer(path).resolve(result.target, None) is None
    assert result.patch == [{"op": "remove", "path": path}]
    assert_patch_makes_target(result)
    if change is not add_volume:  # (removing the only volume leaves `volumes: []` in the target)
        assert result.target == diff(stored(), stored()).target


def declare_in_app(obj: KubeObject, field: str) -> None:
    """Git declares `field` of the app container as an empty map (`resources: {}`, common in charts)."""
    ours = obj["metadata"]["managedFields"][0]["fieldsV1"]
    ours["f:spec"]["f:template"]["f:spec"]["f:containers"][APP][f"f:{field}"] = {}


def set_limits(obj: KubeObject) -> None:
    declare_in_app(obj, "resources")
    app_container(obj)["resources"] = {"limits": {"cpu": "200m"}}
    fields: dict[str, Any] = {"f:resources": {"f:limits": {".": {}, "f:cpu": {}}}}
    own(obj, "kubectl-set", template_spec(("f:containers", {APP: fields})))


def set_security_context(obj: KubeObject) -> None:
    declare_in_app(obj, "securityContext")
    app_container(obj)["securityContext"] = {"privileged": True}
    own(obj, "kubectl-edit", template_spec(("f:containers", {APP: {"f:securityContext": {"f:privileged": {}}}})))


@pytest.mark.parametrize(
    ("change", "path", "value", "manager"),
    [
        (set_limits, "/spec/template/spec/containers/0/resources/limits", {"cpu": "200m"}, "kubectl-set"),
        (set_security_context, "/spec/template/spec/containers/0/securityContext/privileged", True, "kubectl-edit"),
    ],
    ids=["set-resources", "privileged"],
)
def test_a_field_added_inside_a_map_git_declares_empty(
    change: Callable[[KubeObject], None], path: str, value: Any, manager: str
) -> None:
    """Git's `{}` declares the map, not what someone puts in it later."""
    live = stored()
    change(live)
    result = diff(copy.deepcopy(live), live)
    assert summary(result) == [(path, "added", None, value, manager)]


def test_changed_and_added_together() -> None:
    live = stored()
    set_image(live)
    add_env(live)
    desired = stored()
    add_env(desired)
    result = diff(desired, live)
    assert summary(result) == [
        ("/spec/template/spec/containers/0/image", "changed", "nginx:1.25", "nginx:1.26", ""),
        ("/spec/template/spec/containers/0/env/2", "added", None, {"name": "DEBUG", "value": "1"}, "kubectl-set"),
    ]
    assert result.added_paths() == [("f:spec", "f:template", "f:spec", "f:containers", APP, "f:env", k(name="DEBUG"))]
    assert result.as_dict() == {
        "group": "apps",
        "kind": "Deployment",
        "namespace": "shop",
        "name": "web",
        "state": "modified",
        "drift": [
            {"path": "/spec/template/spec/containers/0/image", "kind": "changed"},
            {"path": "/spec/template/spec/containers/0/env/2", "kind": "added", "manager": "kubectl-set"},
        ],
        "patch": result.patch,
    }
    assert_patch_makes_target(result)
    assert result.target == diff(stored(), stored()).target


def test_two_added_env_vars_by_two_managers() -> None:
    live = stored()
    add_env(live)
    app_container(live)["env"].append({"name": "TRACE", "value": "on"})
    own(
        live,
        "kubectl-edit",
        template_spec(("f:containers", {APP: {"f:env": {k(name="TRACE"): {".": {}, "f:name": {}, "f:value": {}}}}})),
    )
    result = diff(copy.deepcopy(live), live)
    assert [(i.path, i.manager) for i in result.items] == [
        ("/spec/template/spec/containers/0/env/2", "kubectl-set"),
        ("/spec/template/spec/containers/0/env/3", "kubectl-edit"),
    ]
    assert_patch_makes_target(result)


# --- not drift ----------------------------------------------------------------------------------------------------


def controller_injects_env(obj: KubeObject) -> None:
    app_container(obj)["env"].append({"name": "INJECTED", "value": "x"})
    fields: dict[str, Any] = {"f:env": {k(name="INJECTED"): {".": {}, "f:name": {}, "f:value": {}}}}
    own(obj, "kube-controller-manager", template_spec(("f:containers", {APP: fields})))


def operator_writes_status(obj: KubeObject) -> None:
    obj["status"]["conditions"] = [{"type": "Audited", "status": "True"}]
    own(obj, "audit-operator", {"f:status": {"f:conditions": {}}}, subresource="status")


def status_without_subresource(obj: KubeObject) -> None:
    obj["status"]["note"] = "x"
    own(obj, "someone", {"f:status": {"f:note": {}}})


def label(obj: KubeObject) -> None:
    obj["metadata"]["labels"]["team"] = "payments"
    own(obj, "kubectl-label", {"f:metadata": {"f:labels": {"f:team": {}}}})


def annotate(obj: KubeObject) -> None:
    obj["metadata"]["annotations"]["owner"] = "alice"
    own(obj, "kubectl-annotate", {"f:metadata": {"f:annotations": {"f:owner": {}}}})


def template_label(obj: KubeObject) -> None:
    obj["spec"]["template"]["metadata"]["labels"]["version"] = "v2"
    own(obj, "kubectl-edit", {"f:spec": {"f:template": {"f:metadata": {"f:labels": {"f:version": {}}}}}})


def template_annotations(obj: KubeObject) -> None:
    obj["spec"]["template"]["metadata"]["annotations"] = {"prometheus.io/scrape": "true"}
    fields: dict[str, Any] = {"f:annotations": {".": {}, "f:prometheus.io/scrape": {}}}
    own(obj, "kubectl-patch", {"f:spec": {"f:template": {"f:metadata": fields}}})


def rollout_restart(obj: KubeObject) -> None:
    obj["spec"]["template"]["metadata"]["annotations"] = {RESTARTED_AT: "2024-06-01T12:00:00Z"}
    fields: dict[str, Any] = {"f:annotations": {".": {}, f"f:{RESTARTED_AT}": {}}}
    own(obj, "kubectl-rollout", {"f:spec": {"f:template": {"f:metadata": fields}}})


def stale_owner(obj: KubeObject) -> None:
    own(obj, "kubectl-edit", {"f:spec": {"f:paused": {}, "f:minReadySeconds": {}}})


def shared_owner(obj: KubeObject) -> None:
    own(obj, "kubectl-client-side-apply", {"f:spec": {"f:replicas": {}, "f:selector": {}}})
    own(obj, "kubectl-set", template_spec(("f:containers", {APP: {".": {}, "f:image": {}}})))


def scale_by_hpa(obj: KubeObject) -> None:
    own(obj, "kube-controller-manager", {"f:spec": {"f:replicas": {}}}, subresource="scale")


def owner_of_type_fields(obj: KubeObject) -> None:
    own(obj, "kubectl-edit", {"f:apiVersion": {}, "f:kind": {}})


@pytest.mark.parametrize(
    "change",
    [
        controller_injects_env,
        operator_writes_status,
        status_without_subresource,
        label,
        annotate,
        template_label,
        template_annotations,
        rollout_restart,
        stale_owner,
        shared_owner,
        scale_by_hpa,
        owner_of_type_fields,
    ],
)
def test_what_is_not_drift(change: Callable[[KubeObject], None]) -> None:
    live = stored()
    change(live)
    result = diff(copy.deepcopy(live), live)
    assert result.state is ObjectState.SYNCED
    assert result.items == []
    assert result.patch == []


def test_a_custom_controller_list_is_honoured() -> None:
    live = stored()
    add_container(live)
    policy = DriftPolicy(controller_managers=frozenset({"kube-controller-manager", "kubectl-edit"}))
    assert diff(copy.deepcopy(live), live, policy).state is ObjectState.SYNCED
    assert diff(copy.deepcopy(live), live).state is ObjectState.MODIFIED


def test_our_own_update_entries_are_not_added_drift() -> None:
    live = stored()
    pause(live)
    live["metadata"]["managedFields"][-1]["manager"] = FIELD_MANAGER
    assert diff(copy.deepcopy(live), live).state is ObjectState.SYNCED


# --- ignore rules -------------------------------------------------------------------------------------------------


def with_restarted_at(obj: KubeObject, value: str) -> KubeObject:
    """Git declares the restart annotation (say, someone committed it); `value` is what the object holds."""
    obj["spec"]["template"]["metadata"]["annotations"] = {RESTARTED_AT: value}
    ours = obj["metadata"]["managedFields"][0]["fieldsV1"]
    ours["f:spec"]["f:template"]["f:metadata"]["f:annotations"] = {f"f:{RESTARTED_AT}": {}}
    return obj


def test_restarted_at_is_ignored_by_default() -> None:
    desired = with_restarted_at(stored(), "2024-01-01T00:00:00Z")
    live = with_restarted_at(stored(), "2024-06-01T12:00:00Z")
    assert diff(desired, live).state is ObjectState.SYNCED

    strict = diff(desired, live, DriftPolicy(ignore=()))
    assert summary(strict) == [
        (
            "/spec/template/metadata/annotations/kubectl.kubernetes.io~1restartedAt",
            "changed",
            "2024-01-01T00:00:00Z",
            "2024-06-01T12:00:00Z",
            "",
        )
    ]


def test_an_ignored_field_is_shown_as_it_is_live_and_left_out_of_the_patch() -> None:
    desired = with_restarted_at(stored(), "2024-01-01T00:00:00Z")
    live = with_restarted_at(stored(), "2024-06-01T12:00:00Z")
    set_image(live)
    result = diff(desired, live)
    assert [i.path for i in result.items] == ["/spec/template/spec/containers/0/image"]
    assert result.target is not None
    assert result.target["spec"]["template"]["metadata"]["annotations"] == {RESTARTED_AT: "2024-06-01T12:00:00Z"}
    assert result.patch == [
        {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "nginx:1.25"},
    ]


@pytest.mark.parametrize(
    ("rule", "ignored"),
    [
        (IgnoreRule("apps", "Deployment", ("/spec/replicas",)), True),
        (IgnoreRule("*", "Deployment", ("/spec/replicas",)), True),
        (IgnoreRule("apps", "*", ("/spec/replicas",)), True),
        (IgnoreRule("*", "*", ("/spec",)), True),
        (IgnoreRule("*", "*", ("/spec/template", "/spec/replicas")), True),
        (IgnoreRule("", "Deployment", ("/spec/replicas",)), False),
        (IgnoreRule("apps", "StatefulSet", ("/spec/replicas",)), False),
        (IgnoreRule("*", "*", ("/spec/rep",)), False),
        (IgnoreRule("*", "*", ("/spec/replicas/0",)), False),
    ],
    ids=["exact", "any-group", "any-kind", "parent", "second-pointer", "core-group", "other-kind", "prefix", "child"],
)
def test_custom_ignore_rules(rule: IgnoreRule, ignored: bool) -> None:
    live = stored()
    scale(live)
    result = diff(stored(), live, DriftPolicy(ignore=(rule,)))
    assert (result.state is ObjectState.SYNCED) is ignored
    if not ignored:
        assert [i.path for i in result.items] == ["/spec/replicas"]


@pytest.mark.parametrize(
    ("pointer", "ignored"),
    [
        ("/spec/template/spec/containers/0/env", True),
        ("/spec/template/spec/containers/0", True),
        ("/spec/template/spec/containers/0/env/2", True),
        ("/spec/template/spec/containers/0/env/1", False),
        ("/spec/template/spec/containers/1", False),
    ],
)
def test_ignore_rules_apply_to_added_fields(pointer: str, ignored: bool) -> None:
    live = stored()
    add_env(live)
    result = diff(copy.deepcopy(live), live, DriftPolicy(ignore=(IgnoreRule("*", "*", (pointer,)),)))
    assert (result.state is ObjectState.SYNCED) is ignored


@pytest.mark.parametrize(
    ("rule", "key", "matches"),
    [
        (IgnoreRule("*", "*", ()), ObjectKey("", "ConfigMap", "a", "b"), True),
        (IgnoreRule("", "ConfigMap", ()), ObjectKey("", "ConfigMap", "a", "b"), True),
        (IgnoreRule("", "ConfigMap", ()), ObjectKey("", "Secret", "a", "b"), False),
        (IgnoreRule("apps", "*", ()), ObjectKey("apps", "StatefulSet", "a", "b"), True),
        (IgnoreRule("apps", "*", ()), ObjectKey("batch", "Job", "a", "b"), False),
        (IgnoreRule("*", "Job", ()), ObjectKey("batch", "Job", "a", "b"), True),
    ],
)
def test_ignore_rule_matches(rule: IgnoreRule, key: ObjectKey, matches: bool) -> None:
    assert rule.matches(key) is matches


def test_policy_collects_the_pointers_of_matching_rules() -> None:
    policy = DriftPolicy(
        ignore=(
            IgnoreRule("*", "*", ("/a",)),
            IgnoreRule("apps", "Deployment", ("/b", "/c")),
            IgnoreRule("", "ConfigMap", ("/d",)),
        )
    )
    assert policy.ignored_pointers(KEY) == ("/a", "/b", "/c")
    assert DriftPolicy().ignored_pointers(KEY) == (
        "/spec/template/metadata/annotations/kubectl.kubernetes.io~1restartedAt",
    )


# --- replicas -----------------------------------------------------------------------------------------------------


def open_replicas(replicas: int, *entries: dict[str, Any]) -> tuple[KubeObject, KubeObject]:
    """Git leaves replicas to the cluster; live holds `replicas`. Returns (desired, live)."""
    live = stored(replicas=False)
    live["spec"]["replicas"] = replicas
    live["metadata"]["managedFields"].extend(entries)
    return copy.deepcopy(live), live


@pytest.mark.parametrize(
    ("replicas", "autoscaled", "expected"),
    [
        (3, False, [("/spec/replicas", "added", None, 3, UNKNOWN_SCALER)]),
        (0, False, [("/spec/replicas", "added", None, 0, UNKNOWN_SCALER)]),
        (3, True, []),
        (1, False, []),
        (1, True, []),
    ],
    ids=["scaled", "scaled-to-zero", "autoscaled", "default", "default-autoscaled"],
)
def test_replicas_scaled_with_no_owner_recorded(replicas: int, autoscaled: bool, expected: list[Any]) -> None:
    desired, live = open_replicas(replicas)
    result = diff(desired, live, DriftPolicy(autoscaled=autoscaled))
    assert summary(result) == expected
    assert result.state is (ObjectState.MODIFIED if expected else ObjectState.SYNCED)


def test_replicas_scaled_by_a_person_name_the_person() -> None:
    desired, live = open_replicas(4, entry("kubectl-scale", {"f:spec": {"f:replicas": {}}}, subresource="scale"))
    assert summary(diff(desired, live)) == [("/spec/replicas", "added", None, 4, "kubectl-scale")]


@pytest.mark.parametrize("manager", ["kube-controller-manager", FIELD_MANAGER])
def test_replicas_owned_by_a_controller_or_us_are_not_drift(manager: str) -> None:
    desired, live = open_replicas(4, entry(manager, {"f:spec": {"f:replicas": {}}}, subresource="scale"))
    assert diff(desired, live).state is ObjectState.SYNCED


@pytest.mark.parametrize("autoscaled", [False, True])
def test_replicas_git_declares_are_changed_not_added(autoscaled: bool) -> None:
    live = stored()
    scale(live)
    result = diff(stored(), live, DriftPolicy(autoscaled=autoscaled))
    assert summary(result) == [("/spec/replicas", "changed", 2, 5, "")]


def test_replicas_of_a_kind_that_does_not_scale_are_not_guessed() -> None:
    widget: KubeObject = {
        "apiVersion": "acme.io/v1",
        "kind": "Widget",
        "metadata": {
            "name": "w",
            "namespace": "shop",
            "managedFields": [entry(FIELD_MANAGER, {"f:spec": {"f:size": {}}}, operation="Apply", api="acme.io/v1")],
        },
        "spec": {"size": 1, "replicas": 7},
    }
    result = diff(copy.deepcopy(widget), widget, key=ObjectKey("acme.io", "Widget", "shop", "w"))
    assert result.state is ObjectState.SYNCED


# --- declared fields ----------------------------------------------------------------------------------------------


def test_declared_fields_merge_our_apply_entries_only() -> None:
    obj: KubeObject = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "c",
            "managedFields": [
                entry(FIELD_MANAGER, {"f:data": {"f:a": {}}}, operation="Apply", api="v1"),
                entry(FIELD_MANAGER, {"f:data": {"f:b": {}}, "f:binaryData": {}}, operation="Apply", api="v1"),
                entry(FIELD_MANAGER, {"f:data": {"f:c": {}}}, operation="Update", api="v1"),
                entry(FIELD_MANAGER, {"f:status": {}}, operation="Apply", subresource="status", api="v1"),
                entry("kubectl-edit", {"f:data": {"f:d": {}}}, operation="Apply", api="v1"),
            ],
        },
    }
    assert declared_fields(obj) == {"f:data": {"f:a": {}, "f:b": {}}, "f:binaryData": {}}
    assert declared_fields(obj, "kubectl-edit") == {"f:data": {"f:d": {}}}
    assert declared_fields({"metadata": {}}) == {}


# --- Secrets ------------------------------------------------------------------------------------------------------

GIT_PASSWORD = "hunter2-in-git"
LIVE_PASSWORD = "s3cr3t-typed-by-hand"
ADDED_TOKEN = "tok-added-by-hand"
USERNAME = "shop-user-name"


def b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def secret(password: str, declared: str = "f:data", *, last_applied: bool = False) -> KubeObject:
    """The Secret `db` holding `password`; Git declares it under `declared` (data or stringData)."""
    obj: KubeObject = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "db",
            "namespace": "shop",
            "resourceVersion": "77",
            "uid": "0b5e0f36-0000-4000-8000-000000000002",
            "labels": {"app": "db", TRACKING_LABEL: "shop"},
            "annotations": {TRACKING_ANNOTATION: "gitops-system/shop:/Secret:shop/db"},
            "managedFields": [
                entry(
                    FIELD_MANAGER,
                    {
                        "f:metadata": {
                            "f:labels": {"f:app": {}, f"f:{TRACKING_LABEL}": {}},
                            "f:annotations": {f"f:{TRACKING_ANNOTATION}": {}},
                        },
                        declared: {"f:password": {}, "f:username": {}},
                        "f:type": {},
                    },
                    operation="Apply",
                    api="v1",
                )
            ],
        },
        "type": "Opaque",
        "data": {"password": b64(password), "username": b64(USERNAME)},
    }
    if last_applied:
        # kubectl's client-side apply copied the whole Secret, values included, into this annotation.
        copied = {"apiVersion": "v1", "kind": "Secret", "data": dict(obj["data"]), "stringData": {"x": password}}
        obj["metadata"]["annotations"][LAST_APPLIED] = json.dumps(copied)
        own(obj, "kubectl-client-side-apply", {"f:metadata": {"f:annotations": {f"f:{LAST_APPLIED}": {}}}}, api="v1")
    return obj


def assert_no_secret_value(result: ObjectDiff, *values: str) -> None:
    shown = repr(result) + json.dumps(result.as_dict(), default=str) + repr([i.as_dict() for i in result.items])
    for value in values:
        for form in (value, b64(value), b64(b64(value))):
            assert form not in shown, f"{form!r} appears in the diff"
    assert "hunter2" not in shown
    assert "s3cr3t" not in shown


def is_marker(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("<secret:") and value.endswith(">")


@pytest.mark.parametrize("last_applied", [False, True])
@pytest.mark.parametrize("declared", ["f:data", "f:stringData"])
def test_a_changed_secret_value_is_reported_with_markers_only(declared: str, last_applied: bool) -> None:
    desired = secret(GIT_PASSWORD, declared, last_applied=last_applied)
    live = secret(LIVE_PASSWORD, declared, last_applied=last_applied)
    if last_applied:
        # The dry-run answer keeps the annotation that another manager owns.
        desired["metadata"]["annotations"][LAST_APPLIED] = live["metadata"]["annotations"][LAST_APPLIED]
    result = diff(desired, live, key=SECRET_KEY)
    assert result.state is ObjectState.MODIFIED
    assert [(i.path, i.kind) for i in result.items] == [("/data/password", DriftKind.CHANGED)]
    item = result.items[0]
    assert is_marker(item.desired)
    assert is_marker(item.live)
    assert item.desired != item.live
    assert item.desired == MASKER.marker(b64(GIT_PASSWORD))
    assert result.patch == [{"op": "replace", "path": "/data/password", "value": item.desired}]
    assert result.live is not None
    assert result.target is not None
    assert is_marker(result.live["data"]["username"])
    assert result.live["data"]["username"] == result.target["data"]["username"]
    assert_no_secret_value(result, GIT_PASSWORD, LIVE_PASSWORD, USERNAME)


@pytest.mark.parametrize("declared", ["f:data", "f:stringData"])
def test_an_unchanged_secret_is_synced(declared: str) -> None:
    result = diff(secret(GIT_PASSWORD, declared), secret(GIT_PASSWORD, declared), key=SECRET_KEY)
    assert result.state is ObjectState.SYNCED
    assert_no_secret_value(result, GIT_PASSWORD, USERNAME)


def test_a_secret_key_added_by_hand_is_masked() -> None:
    live = secret(GIT_PASSWORD)
    live["data"]["token"] = b64(ADDED_TOKEN)
    own(live, "kubectl-edit", {"f:data": {"f:token": {}}}, api="v1")
    result = diff(copy.deepcopy(live), live, key=SECRET_KEY)
    assert [(i.path, i.kind, i.manager) for i in result.items] == [("/data/token", DriftKind.ADDED, "kubectl-edit")]
    assert is_marker(result.items[0].live)
    assert result.patch == [{"op": "remove", "path": "/data/token"}]
    assert_no_secret_value(result, GIT_PASSWORD, ADDED_TOKEN, USERNAME)


def test_secret_data_gone_live_is_one_masked_item() -> None:
    live = secret(GIT_PASSWORD)
    del live["data"]
    result = diff(secret(GIT_PASSWORD), live, key=SECRET_KEY)
    assert [(i.path, i.kind, i.live) for i in result.items] == [("/data", DriftKind.CHANGED, None)]
    desired = result.items[0].desired
    assert isinstance(desired, dict)
    assert sorted(desired) == ["password", "username"]
    assert all(is_marker(v) for v in desired.values())
    assert_no_secret_value(result, GIT_PASSWORD, USERNAME)


def test_equal_secret_values_get_equal_markers_within_one_diff() -> None:
    live = secret(LIVE_PASSWORD)
    live["data"]["username"] = b64(LIVE_PASSWORD)
    result = diff(secret(GIT_PASSWORD), live, key=SECRET_KEY)
    by_path = {i.path: i for i in result.items}
    assert by_path["/data/password"].live == by_path["/data/username"].live
    assert by_path["/data/password"].desired != by_path["/data/username"].desired


def test_a_missing_secret_shows_markers_only() -> None:
    result = diff(secret(GIT_PASSWORD, last_applied=True), None, key=SECRET_KEY)
    assert result.state is ObjectState.MISSING
    assert result.target is not None
    assert all(is_marker(v) for v in result.target["data"].values())
    assert_no_secret_value(result, GIT_PASSWORD, USERNAME)


def test_an_extra_secret_shows_markers_only() -> None:
    result = diff(None, secret(LIVE_PASSWORD, last_applied=True), key=SECRET_KEY)
    assert result.state is ObjectState.EXTRA
    assert result.live is not None
    assert all(is_marker(v) for v in result.live["data"].values())
    assert_no_secret_value(result, LIVE_PASSWORD, USERNAME)


def test_a_replaced_secret_shows_markers_only() -> None:
    stored_secret = secret(GIT_PASSWORD)
    live = secret(LIVE_PASSWORD, last_applied=True)
    live["data"]["token"] = b64(ADDED_TOKEN)
    result = diff_replaced(SECRET_KEY, stored_secret, live, DriftPolicy(), MASKER)
    assert sorted((i.path, i.kind.value) for i in result.items) == [
        ("/data/password", "changed"),
        ("/data/token", "added"),
    ]
    assert all(is_marker(i.live) for i in result.items)
    assert_no_secret_value(result, GIT_PASSWORD, LIVE_PASSWORD, ADDED_TOKEN, USERNAME)


# --- missing and extra --------------------------------------------------------------------------------------------


def test_missing_object() -> None:
    result = diff(stored(), None)
    assert result.state is ObjectState.MISSING
    assert result.drifted
    assert result.items == []
    assert result.live is None
    assert result.target is not None
    assert "managedFields" not in result.target["metadata"]
    assert "resourceVersion" not in result.target["metadata"]
    assert "status" not in result.target
    assert result.patch == [{"op": "add", "path": "", "value": result.target}]
    assert result.as_dict() == {
        "group": "apps",
        "kind": "Deployment",
        "namespace": "shop",
        "name": "web",
        "state": "missing",
        "drift": [],
        "patch": result.patch,
    }


def test_extra_object() -> None:
    result = diff(None, stored())
    assert result.state is ObjectState.EXTRA
    assert result.drifted
    assert result.items == []
    assert result.target is None
    assert result.patch == []
    assert result.live is not None
    assert result.live["spec"]["replicas"] == 2
    assert "managedFields" not in result.live["metadata"]
    assert result.as_dict()["state"] == "extra"


def test_diff_leaves_its_inputs_alone() -> None:
    desired, live = stored(), stored()
    add_env(live)
    set_image(live)
    before = (copy.deepcopy(desired), copy.deepcopy(live))
    diff(desired, live)
    assert (desired, live) == before


def test_drift_item_as_dict() -> None:
    changed = DriftItem("/spec/replicas", DriftKind.CHANGED, desired=2, live=5)
    added = DriftItem("/spec/paused", DriftKind.ADDED, live=True, manager="kubectl-edit")
    assert changed.as_dict() == {"path": "/spec/replicas", "kind": "changed"}
    assert added.as_dict() == {"path": "/spec/paused", "kind": "added", "manager": "kubectl-edit"}


# --- remove_fields ------------------------------------------------------------------------------------------------

OBJ: KubeObject = {
    "metadata": {"name": "x", "finalizers": ["a", "b", "c"]},
    "spec": {
        "paused": True,
        "containers": [
            {"name": "app", "env": [{"name": "A"}, {"name": "B"}, {"name": "C"}]},
            {"name": "debug"},
        ],
    },
}


@pytest.mark.parametrize(
    ("paths", "check"),
    [
        ([("f:spec", "f:paused")], lambda o: "paused" not in o["spec"]),
        (
            [("f:spec", "f:containers", k(name="debug"))],
            lambda o: [c["name"] for c in o["spec"]["containers"]] == ["app"],
        ),
        (
            [
                ("f:spec", "f:containers", APP, "f:env", k(name="A")),
                ("f:spec", "f:containers", APP, "f:env", k(name="C")),
            ],
            lambda o: o["spec"]["containers"][0]["env"] == [{"name": "B"}],
        ),
        (
            [("f:spec", "f:containers", k(name="debug")), ("f:spec", "f:containers", APP, "f:env", k(name="B"))],
            lambda o: o["spec"]["containers"] == [{"name": "app", "env": [{"name": "A"}, {"name": "C"}]}],
        ),
        ([("f:metadata", "f:finalizers", 'v:"b"')], lambda o: o["metadata"]["finalizers"] == ["a", "c"]),
        ([("f:spec", "f:missing")], lambda o: o == OBJ),
        ([("f:status", "f:phase")], lambda o: o == OBJ),
        ([("f:spec", "f:containers", k(name="gone"))], lambda o: o == OBJ),
        ([("f:spec", "f:containers", k(name="gone"), "f:image")], lambda o: o == OBJ),
        ([], lambda o: o == OBJ),
    ],
    ids=[
        "field",
        "element",
        "two-elements-same-list",
        "element-then-nested",
        "set-value",
        "absent-field",
        "absent-parent",
        "absent-element",
        "under-absent-element",
        "nothing",
    ],
)
def test_remove_fields(paths: list[tuple[str, ...]], check: Callable[[KubeObject], bool]) -> None:
    before = copy.deepcopy(OBJ)
    out = remove_fields(OBJ, paths)
    assert check(out)
    assert before == OBJ
    assert out is not OBJ


# --- diff_replaced ------------------------------------------------------------------------------------------------


def replaced(live: KubeObject, stored_obj: KubeObject | None = None, policy: DriftPolicy | None = None) -> ObjectDiff:
    return diff_replaced(KEY, stored_obj or stored(), live, policy or DriftPolicy(), MASKER)


def test_replaced_equal_is_synced() -> None:
    result = replaced(stored())
    assert result.state is ObjectState.SYNCED
    assert result.patch == []


@pytest.mark.parametrize(
    "change",
    [
        label,
        annotate,
        template_label,
        template_annotations,
        rollout_restart,
        operator_writes_status,
        lambda o: o["metadata"].update(resourceVersion="5000", generation=9),
    ],
    ids=["label", "annotation", "template-label", "template-annotation", "restart", "status", "bookkeeping"],
)
def test_replaced_ignores_undeclared_metadata_and_status(change: Callable[[KubeObject], None]) -> None:
    live = stored()
    change(live)
    assert replaced(live).state is ObjectState.SYNCED


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (set_image, [("/spec/template/spec/containers/0/image", "changed", "nginx:1.25", "nginx:1.26", "")]),
        (scale, [("/spec/replicas", "changed", 2, 5, "")]),
        (change_label, [("/metadata/labels/app", "changed", "web", "shop-web", "")]),
        (drop_label, [("/metadata/labels/app", "changed", "web", None, "")]),
        (
            add_container,
            [
                (
                    "/spec/template/spec/containers/2",
                    "added",
                    None,
                    container("debug", "busybox:1.36", command=["sleep", "3600"]),
                    "kubectl-edit",
                )
            ],
        ),
        (pause, [("/spec/paused", "added", None, True, "kubectl-rollout")]),
        (lambda o: o["spec"].update(minReadySeconds=5), [("/spec/minReadySeconds", "added", None, 5, "unknown")]),
    ],
    ids=["image", "replicas", "declared-label", "declared-label-removed", "container", "paused", "no-owner"],
)
def test_replaced_reports_content_differences(change: Callable[[KubeObject], None], expected: list[Any]) -> None:
    live = stored()
    change(live)
    result = replaced(live)
    assert result.state is ObjectState.MODIFIED
    assert summary(result) == expected
    assert_patch_makes_target(result)


def test_replaced_honours_ignore_rules() -> None:
    live = stored()
    scale(live)
    assert replaced(live, policy=DriftPolicy(ignore=(IgnoreRule("apps", "*", ("/spec/replicas",)),))).state is (
        ObjectState.SYNCED
    )


def test_replaced_reports_a_declared_pod_template_annotation_that_changed() -> None:
    """Git declares it, so it is drift when it differs, as it is for the object's own labels and annotations."""
    git = stored()
    git["spec"]["template"]["metadata"]["annotations"] = {"prometheus.io/scrape": "true"}
    live = copy.deepcopy(git)
    live["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"] = "false"
    result = replaced(live, git)
    assert summary(result) == [
        ("/spec/template/metadata/annotations/prometheus.io~1scrape", "changed", "true", "false", "")
    ]


def test_replaced_reports_a_renamed_key_as_changed_and_added() -> None:
    """Live renamed a key, keeping its value: Git's key is gone (changed) and the new one is not Git's (added)."""
    git = stored()
    pod_spec(git)["nodeSelector"] = {"disktype": "ssd"}
    live = copy.deepcopy(git)
    pod_spec(live)["nodeSelector"] = {"disk-type": "ssd"}
    own(live, "kubectl-edit", template_spec(("f:nodeSelector", {"f:disk-type": {}})))
    result = replaced(live, git)
    assert sorted(summary(result)) == [
        ("/spec/template/spec/nodeSelector/disk-type", "added", None, "ssd", "kubectl-edit"),
        ("/spec/template/spec/nodeSelector/disktype", "changed", "ssd", None, ""),
    ]


# --- a second list item under a key Git declares --------------------------------------------------------------------
# The API server accepts two items under one key (with a warning) where validation lets it (env names, container
# ports), and at run time the last one wins. Its field sets then hold the duplicated key as one atomic path, owned
# by whoever made it a duplicate (structured-merge-diff v4.4): Git's manager no longer owns the fields inside.
ENV = ("f:spec", "f:template", "f:spec", "f:containers", APP, "f:env")
PORTS = (*ENV[:-1], "f:ports")
MOUNTS = (*ENV[:-1], "f:volumeMounts")
CONTAINERS = ENV[:-2]
VOLUMES = (*ENV[:-3], "f:volumes")


def duplicate(at: FieldPath, key: str, item: Any, manager: str = "kubectl-patch") -> Callable[[KubeObject], None]:
    """A change appending `item` to the list at `at`, named by `key` as an item Git declares is, by `manager`."""

    def change(obj: KubeObject) -> None:
        fieldsets.lookup(obj, at).append(item)
        fields: dict[str, Any] = {key: {}}
        for segment in reversed(at):
            fields = {segment: fields}
        own(obj, manager, fields)
        ours = obj["metadata"]["managedFields"][0]["fieldsV1"]
        for segment in at:
            ours = ours.get(segment, {})
        ours.pop(key, None)

    return change


def env_of(obj: KubeObject) -> list[Any]:
    found: list[Any] = app_container(obj)["env"]
    return found


DATA = k(mountPath="/data")
CACHE = k(name="cache")


def with_volume(obj: KubeObject) -> KubeObject:
    """Git's Deployment declaring a volume `cache` mounted at /data in the app container."""
    pod_spec(obj)["volumes"] = [{"name": "cache", "emptyDir": {}}]
    app_container(obj)["volumeMounts"] = [{"name": "cache", "mountPath": "/data"}]
    ours = obj["metadata"]["managedFields"][0]["fieldsV1"]
    pod = ours["f:spec"]["f:template"]["f:spec"]
    pod["f:volumes"] = {CACHE: {".": {}, "f:name": {}, "f:emptyDir": {}}}
    pod["f:containers"][APP]["f:volumeMounts"] = {DATA: {".": {}, "f:name": {}, "f:mountPath": {}}}
    return obj


DUPLICATES = [
    pytest.param(
        duplicate(ENV, MODE, {"name": "MODE", "value": "evil"}),
        "/spec/template/spec/containers/0/env/2",
        {"name": "MODE", "value": "evil"},
        id="env-name",
    ),
    pytest.param(
        duplicate(ENV, MODE, {"name": "MODE", "value": "prod"}),
        "/spec/template/spec/containers/0/env/2",
        {"name": "MODE", "value": "prod"},
        id="env-name-same-value",
    ),
    pytest.param(
        duplicate(PORTS, HTTP, {"containerPort": 80, "protocol": "TCP", "hostPort": 80}),
        "/spec/template/spec/containers/0/ports/1",
        {"containerPort": 80, "protocol": "TCP", "hostPort": 80},
        id="container-port",
    ),
    pytest.param(
        duplicate(CONTAINERS, PROXY, container("proxy", "evil/proxy:1")),
        "/spec/template/spec/containers/2",
        container("proxy", "evil/proxy:1"),
        id="container-name",
    ),
    pytest.param(
        duplicate(MOUNTS, DATA, {"name": "cache", "mountPath": "/data", "readOnly": False, "subPath": "x"}),
        "/spec/template/spec/containers/0/volumeMounts/1",
        {"name": "cache", "mountPath": "/data", "readOnly": False, "subPath": "x"},
        id="volume-mount-path",
    ),
    pytest.param(
        duplicate(VOLUMES, CACHE, {"name": "cache", "hostPath": {"path": "/"}}),
        "/spec/template/spec/volumes/1",
        {"name": "cache", "hostPath": {"path": "/"}},
        id="volume-name",
    ),
]


@pytest.mark.parametrize(("change", "path", "value"), DUPLICATES)
def test_a_second_item_under_a_key_git_declares_is_added_drift(
    change: Callable[[KubeObject], None], path: str, value: Any
) -> None:
    git = with_volume(stored())
    live = copy.deepcopy(git)
    change(live)
    # A dry-run apply of Git replaces every duplicate of a key it declares with Git's one item.
    result = diff(git, live)
    assert summary(result) == [(path, "added", None, value, "kubectl-patch")]
    assert result.patch == [{"op": "remove", "path": path}]
    assert result.target == diff(git, git).target
    assert_patch_makes_target(result)


def test_a_duplicate_put_first_makes_git_s_item_the_changed_one() -> None:
    """Which item is Git's: the first under the key (the one every lookup finds). Both differences are drift."""
    live = stored()
    duplicate(ENV, MODE, {"name": "MODE", "value": "prod"})(live)
    env = env_of(live)
    env.insert(0, {"name": "MODE", "value": "evil"})
    env.pop()
    result = diff(stored(), live)
    assert summary(result) == [
        ("/spec/template/spec/containers/0/env/0/value", "changed", "prod", "evil", ""),
        ("/spec/template/spec/containers/0/env/1", "added", None, {"name": "MODE", "value": "prod"}, "kubectl-patch"),
    ]
    assert result.target == diff(stored(), stored()).target
    assert_patch_makes_target(result)


def test_every_copy_of_an_item_git_does_not_have_is_added_drift() -> None:
    live = stored()
    pod_spec(live)["volumes"] = [{"name": "scratch", "emptyDir": {}}, {"name": "scratch", "hostPath": {"path": "/"}}]
    own(live, "kubectl-edit", {"f:spec": {"f:template": {"f:spec": {"f:volumes": {k(name="scratch"): {}}}}}})
    result = diff(copy.deepcopy(live), live)
    assert sorted((i.path, i.kind.value, i.manager) for i in result.items) == [
        ("/spec/template/spec/volumes/0", "added", "kubectl-edit"),
        ("/spec/template/spec/volumes/1", "added", "kubectl-edit"),
    ]
    assert pod_spec(result.target or {}).get("volumes") == []
    assert_patch_makes_target(result)


def test_three_copies_of_a_declared_key_are_two_added_items() -> None:
    live = stored()
    duplicate(ENV, MODE, {"name": "MODE", "value": "a"})(live)
    env_of(live).append({"name": "MODE", "value": "b"})
    result = diff(stored(), live)
    assert [(i.path, i.manager) for i in result.items] == [
        ("/spec/template/spec/containers/0/env/2", "kubectl-patch"),
        ("/spec/template/spec/containers/0/env/3", "kubectl-patch"),
    ]
    assert result.target == diff(stored(), stored()).target
    assert_patch_makes_target(result)


def test_a_duplicate_in_a_set_is_added_drift() -> None:
    """A `v:` set (a list of values merged as a set) has duplicates too."""
    tags = ("f:spec", "f:tags", 'v:"blue"')
    fields: dict[str, Any] = {"f:spec": {"f:tags": {'v:"blue"': {}}}}
    git: KubeObject = {
        "apiVersion": "example.io/v1",
        "kind": "Widget",
        "metadata": {
            "name": "w",
            "namespace": "shop",
            "managedFields": [entry(FIELD_MANAGER, fields, operation="Apply")],
        },
        "spec": {"tags": ["blue"]},
    }
    live = copy.deepcopy(git)
    live["spec"]["tags"].append("blue")
    live["metadata"]["managedFields"] = [entry("kubectl-edit", {"f:spec": {"f:tags": {tags[-1]: {}}}})]
    result = diff(git, live, key=ObjectKey("example.io", "Widget", "shop", "w"))
    assert summary(result) == [("/spec/tags/1", "added", None, "blue", "kubectl-edit")]


def test_a_second_service_port_under_git_s_port_and_protocol_is_added_drift() -> None:
    port = k(port=80, protocol="TCP")
    fields: dict[str, Any] = {
        "f:spec": {"f:ports": {port: {".": {}, "f:port": {}, "f:protocol": {}, "f:targetPort": {}}}}
    }
    git: KubeObject = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "managedFields": [entry(FIELD_MANAGER, fields, operation="Apply", api="v1")],
        },
        "spec": {"ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}], "clusterIP": "10.0.0.7"},
    }
    live = copy.deepcopy(git)
    live["spec"]["ports"].append({"port": 80, "protocol": "TCP", "targetPort": 22, "name": "b"})
    live["metadata"]["managedFields"] = [entry("kubectl-edit", {"f:spec": {"f:ports": {port: {}}}}, api="v1")]
    result = diff(git, live, key=ObjectKey("", "Service", "shop", "web"))
    assert summary(result) == [("/spec/ports/1", "added", None, live["spec"]["ports"][1], "kubectl-edit")]


def test_a_duplicate_nobody_owns_is_drift_by_an_unrecorded_manager() -> None:
    live = stored()
    env_of(live).append({"name": "MODE", "value": "evil"})
    live["metadata"]["managedFields"] = []  # any client may send managedFields: [{}], which clears them
    assert summary(diff(stored(), live)) == [
        ("/spec/template/spec/containers/0/env/2", "added", None, {"name": "MODE", "value": "evil"}, UNRECORDED)
    ]


@pytest.mark.parametrize("manager", ["kube-controller-manager", FIELD_MANAGER])
def test_a_duplicate_of_a_controller_or_of_ours_is_not_drift(manager: str) -> None:
    live = stored()
    duplicate(ENV, MODE, {"name": "MODE", "value": "injected"}, manager=manager)(live)
    assert diff(copy.deepcopy(live), live).state is ObjectState.SYNCED


# --- owner references ----------------------------------------------------------------------------------------------
# An owner named in metadata.ownerReferences takes the object with it when it is deleted (the garbage collector):
# one Git does not declare is drift, although it lives in metadata.
DECOY_UID = "7d1c0c55-0000-4000-8000-00000000dec0"
DECOY = {"apiVersion": "v1", "kind": "ConfigMap", "name": "decoy", "uid": DECOY_UID}
DECOY_FIELDS: dict[str, Any] = {".": {}, "f:apiVersion": {}, "f:kind": {}, "f:name": {}, "f:uid": {}}


def add_owner(manager: str) -> Callable[[KubeObject], None]:
    def change(obj: KubeObject) -> None:
        obj["metadata"]["ownerReferences"] = [dict(DECOY)]
        own(obj, manager, {"f:metadata": {"f:ownerReferences": {".": {}, k(uid=DECOY_UID): DECOY_FIELDS}}})

    return change


def test_an_owner_reference_git_does_not_declare_is_added_drift() -> None:
    live = stored()
    add_owner("kubectl-patch")(live)
    result = diff(copy.deepcopy(live), live)  # a dry-run apply keeps what others own
    # The patch made the list (`.` owned): the list as a whole is what was added.
    assert summary(result) == [("/metadata/ownerReferences", "added", None, [DECOY], "kubectl-patch")]
    assert result.patch == [{"op": "remove", "path": "/metadata/ownerReferences"}]
    assert result.target is not None
    assert "ownerReferences" not in result.target["metadata"]
    assert_patch_makes_target(result)
    # What a sync removes after its apply.
    assert added(live, declared_fields(live), DriftPolicy()) == [(("f:metadata", "f:ownerReferences"), "kubectl-patch")]


def test_an_owner_reference_added_to_a_controller_s_list_is_added_drift() -> None:
    live = stored()
    add_owner("kube-controller-manager")(live)
    theirs = {"apiVersion": "v1", "kind": "ConfigMap", "name": "decoy-2", "uid": "u-2"}
    live["metadata"]["ownerReferences"].append(theirs)
    own(live, "kubectl-edit", {"f:metadata": {"f:ownerReferences": {k(uid="u-2"): DECOY_FIELDS}}})
    result = diff(copy.deepcopy(live), live)
    assert summary(result) == [("/metadata/ownerReferences/1", "added", None, theirs, "kubectl-edit")]
    assert result.target is not None
    assert result.target["metadata"]["ownerReferences"] == [DECOY]


def test_an_owner_reference_nobody_owns_is_drift_by_an_unrecorded_manager() -> None:
    live = stored()
    live["metadata"]["ownerReferences"] = [dict(DECOY)]
    assert summary(diff(copy.deepcopy(live), live)) == [
        ("/metadata/ownerReferences/0", "added", None, DECOY, UNRECORDED)
    ]


def test_an_owner_reference_a_controller_set_is_not_drift() -> None:
    live = stored()
    add_owner("kube-controller-manager")(live)
    assert diff(copy.deepcopy(live), live).state is ObjectState.SYNCED


def test_an_owner_reference_git_declares_is_compared() -> None:
    git = stored()
    git["metadata"]["ownerReferences"] = [dict(DECOY)]
    ours = git["metadata"]["managedFields"][0]["fieldsV1"]
    ours["f:metadata"]["f:ownerReferences"] = {k(uid=DECOY_UID): DECOY_FIELDS}
    assert diff(git, copy.deepcopy(git)).state is ObjectState.SYNCED
    live = copy.deepcopy(git)
    live["metadata"]["ownerReferences"][0]["name"] = "other"
    assert summary(diff(git, live)) == [("/metadata/ownerReferences/0/name", "changed", "decoy", "other", "")]


def test_replaced_reports_an_owner_reference_git_does_not_declare_unless_a_controller_set_it() -> None:
    live = stored()
    add_owner("kubectl-patch")(live)
    assert summary(replaced(live)) == [("/metadata/ownerReferences", "added", None, [DECOY], "kubectl-patch")]
    adopted = stored()
    add_owner("kube-controller-manager")(adopted)
    assert replaced(adopted).state is ObjectState.SYNCED


# --- our tracking marks --------------------------------------------------------------------------------------------
TRACKED_ID = "gitops-system/shop:apps/Deployment:shop/web"


@pytest.mark.parametrize(
    ("change", "path", "want", "have"),
    [
        pytest.param(
            lambda o: o["metadata"]["labels"].pop(TRACKING_LABEL),
            f"/metadata/labels/{TRACKING_LABEL.replace('/', '~1')}",
            "shop",
            None,
            id="label-removed",
        ),
        pytest.param(
            lambda o: o["metadata"]["labels"].__setitem__(TRACKING_LABEL, "other"),
            f"/metadata/labels/{TRACKING_LABEL.replace('/', '~1')}",
            "shop",
            "other",
            id="label-changed",
        ),
        pytest.param(
            lambda o: o["metadata"]["annotations"].pop(TRACKING_ANNOTATION),
            f"/metadata/annotations/{TRACKING_ANNOTATION.replace('/', '~1')}",
            TRACKED_ID,
            None,
            id="annotation-removed",
        ),
        pytest.param(
            lambda o: o["metadata"]["annotations"].__setitem__(TRACKING_ANNOTATION, "x/y:/ConfigMap:x/y"),
            f"/metadata/annotations/{TRACKING_ANNOTATION.replace('/', '~1')}",
            TRACKED_ID,
            "x/y:/ConfigMap:x/y",
            id="annotation-changed",
        ),
    ],
)
def test_our_tracking_marks_are_declared_fields(
    change: Callable[[KubeObject], None], path: str, want: Any, have: Any
) -> None:
    live = stored()
    change(live)
    result = diff(stored(), live)
    assert summary(result) == [(path, "changed", want, have, "")]
    assert_patch_makes_target(result)


def test_the_revision_mark_is_operational() -> None:
    git = stored()
    git["metadata"]["annotations"][REVISION_ANNOTATION] = "a" * 40
    git["metadata"]["managedFields"][0]["fieldsV1"]["f:metadata"]["f:annotations"][f"f:{REVISION_ANNOTATION}"] = {}
    live = copy.deepcopy(git)
    live["metadata"]["annotations"][REVISION_ANNOTATION] = "b" * 40
    assert diff(git, live).state is ObjectState.SYNCED
