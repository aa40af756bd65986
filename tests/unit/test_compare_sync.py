"""Preparing Git's objects against a fake cluster, the sync order, and the patch that removes added fields."""

from __future__ import annotations

import json
import threading
import time

import jsonpatch
import pytest

from engine import sync
from engine.adapters.source import Commit
from engine.compare import Desired, DesiredObject, apply_desired, autoscaled_targets, concurrently, prepare
from engine.core.application import ApplicationSpec
from engine.core.errors import ApiError, ManifestError
from engine.core.manifests import Manifest, parse
from engine.core.objects import (
    TRACKING_ANNOTATION,
    TRACKING_LABEL,
    TRY_AGAIN,
    AppRef,
    KubeObject,
    ObjectKey,
    is_tracked_by,
    tracking_id,
)
from engine.core.resources import ResourceInfo

from ..fakes import DEPLOYMENTS, FakeCluster, Request, namespace
from .stored import k

RESOURCES = [
    ResourceInfo("", "v1", "ConfigMap", "configmaps", True),
    ResourceInfo("", "v1", "Secret", "secrets", True),
    ResourceInfo("", "v1", "Namespace", "namespaces", False),
    ResourceInfo("apps", "v1", "Deployment", "deployments", True),
    ResourceInfo("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", True),
    ResourceInfo("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False),
    ResourceInfo("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", False),
]


def cluster() -> FakeCluster:
    """An API server that serves a few kinds, with the namespaces Git's objects go to."""
    return FakeCluster(RESOURCES, objects=[namespace("shop"), namespace("other")])


APP = ApplicationSpec(ref=AppRef("gitops-system", "shop"), repo_url="/srv/git/shop", destination_namespace="shop")


def manifests(*docs: str, source: str = "apps/all.yaml") -> list[Manifest]:
    return parse("---\n".join(docs), source)


def run(*docs: str) -> list[DesiredObject]:
    fake = cluster()
    prepared = prepare(manifests(*docs), APP, fake)
    assert {r.verb for r in fake.requests} <= {"discover"}  # it reads discovery, and nothing else
    return prepared


DEPLOYMENT = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n"
CONFIGMAP = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg, namespace: other, labels: {team: a}}\n"
CLUSTER_ROLE = (
    "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: reader, namespace: shop}\n"
)
NAMESPACE = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n"
CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.acme.io}
spec:
  group: acme.io
  scope: Namespaced
  names: {kind: Widget, plural: widgets}
  versions: [{name: v1, served: true, storage: true}]
"""
WIDGET = "apiVersion: acme.io/v1\nkind: Widget\nmetadata: {name: w1}\nspec: {size: 3}\n"


# --- prepare ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "namespace"),
    [
        (DEPLOYMENT, "shop"),
        ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: ''}\n", "shop"),
        ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: null}\n", "shop"),
        (CONFIGMAP, "other"),
        (CLUSTER_ROLE, None),
        (NAMESPACE, None),
        ("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, namespace: shop}\n", None),
    ],
    ids=["defaulted", "empty", "null", "kept", "cluster-scoped-stripped", "namespace", "namespace-stripped"],
)
def test_namespaces(doc: str, namespace: str | None) -> None:
    (desired,) = run(doc)
    assert desired.obj["metadata"].get("namespace") == namespace
    assert desired.manifest.obj["metadata"].get("namespace") == namespace
    if namespace is None:
        assert "namespace" not in desired.obj["metadata"]
    assert desired.key.namespace == (namespace or "")


def test_tracking_marks_are_added_and_existing_ones_kept() -> None:
    desired = run(DEPLOYMENT, CONFIGMAP, CLUSTER_ROLE)
    for d in desired:
        metadata = d.obj["metadata"]
        assert metadata["labels"][TRACKING_LABEL] == "shop"
        assert metadata["annotations"][TRACKING_ANNOTATION] == tracking_id(APP.ref, d.key)
        assert is_tracked_by(d.obj, APP.ref)
        # What Git declares (for messages) is kept without the marks.
        assert TRACKING_LABEL not in (d.manifest.obj["metadata"].get("labels") or {})
    assert desired[1].obj["metadata"]["labels"]["team"] == "a"
    assert desired[1].obj["metadata"]["annotations"][TRACKING_ANNOTATION] == ("gitops-system/shop:/ConfigMap:other/cfg")
    assert desired[2].obj["metadata"]["annotations"][TRACKING_ANNOTATION] == (
        "gitops-system/shop:rbac.authorization.k8s.io/ClusterRole:/reader"
    )


def test_prepare_keeps_order_place_and_resource() -> None:
    found = manifests(DEPLOYMENT, CONFIGMAP, source="apps/two.yaml")
    before = json.dumps([m.obj for m in found], sort_keys=True)
    desired = prepare(found, APP, cluster())
    assert [d.key for d in desired] == [
        ObjectKey("apps", "Deployment", "shop", "web"),
        ObjectKey("", "ConfigMap", "other", "cfg"),
    ]
    assert [d.manifest.where for d in desired] == ["apps/two.yaml (document 1)", "apps/two.yaml (document 2)"]
    assert [d.info for d in desired] == [RESOURCES[3], RESOURCES[0]]
    assert json.dumps([m.obj for m in found], sort_keys=True) == before  # Git's manifests are left alone


def test_only_the_kinds_in_git_are_looked_up() -> None:
    fake = cluster()
    prepare(manifests(DEPLOYMENT, NAMESPACE), APP, fake)
    assert fake.looked_up == [("apps/v1", "Deployment"), ("v1", "Namespace")]


@pytest.mark.parametrize(
    ("doc", "what"),
    [
        (WIDGET, "Widget in acme.io/v1"),
        ("apiVersion: apps/v2\nkind: Deployment\nmetadata: {name: web}\n", "Deployment in apps/v2"),
        ("apiVersion: v1\nkind: Deployment\nmetadata: {name: web}\n", "Deployment in v1"),
        ("apiVersion: v1\nkind: configmap\nmetadata: {name: c}\n", "configmap in v1"),
    ],
    ids=["custom-resource", "unserved-version", "wrong-group", "kind-case"],
)
def test_an_unknown_kind_is_an_error_that_says_what_to_do(doc: str, what: str) -> None:
    with pytest.raises(ManifestError) as caught:
        prepare(manifests(NAMESPACE, doc), APP, cluster())
    assert str(caught.value) == (
        f"apps/all.yaml (document 2): the cluster does not know {what}; "
        "install its CustomResourceDefinition first or fix apiVersion/kind"
    )


@pytest.mark.parametrize("order", ["crd-first", "crd-last"])
def test_a_custom_resource_whose_crd_is_in_git_too(order: str) -> None:
    docs = (CRD, WIDGET) if order == "crd-first" else (WIDGET, CRD)
    desired = {d.key.kind: d for d in run(*docs)}
    widget = desired["Widget"]
    assert widget.info is None
    assert widget.key == ObjectKey("acme.io", "Widget", "shop", "w1")
    assert is_tracked_by(widget.obj, APP.ref)
    assert desired["CustomResourceDefinition"].info == RESOURCES[6]
    assert desired["CustomResourceDefinition"].key.namespace == ""


def test_a_crd_in_git_covers_only_its_own_group_and_kind() -> None:
    gadget = "apiVersion: acme.io/v1\nkind: Gadget\nmetadata: {name: g}\n"
    other_group = "apiVersion: other.io/v1\nkind: Widget\nmetadata: {name: w}\n"
    for doc in (gadget, other_group):
        with pytest.raises(ManifestError, match="the cluster does not know"):
            run(CRD, doc)


def test_a_cluster_scoped_custom_resource_whose_crd_is_in_git_gets_no_namespace() -> None:
    """The API server drops the namespace of a cluster-scoped object; its identity must not carry one either."""
    crd = CRD.replace("scope: Namespaced", "scope: Cluster")
    desired = {d.key.kind: d for d in run(crd, WIDGET)}
    assert desired["Widget"].key == ObjectKey("acme.io", "Widget", "", "w1")
    assert "namespace" not in desired["Widget"].obj["metadata"]


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\n",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg, namespace: shop}\n",
            "ConfigMap shop/cfg is declared twice: in a.yaml (document 1) and in b.yaml (document 1)",
        ),
        (
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: r, namespace: a}\n",
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: r, namespace: b}\n",
            "ClusterRole.rbac.authorization.k8s.io r is declared twice: "
            "in a.yaml (document 1) and in b.yaml (document 1)",
        ),
    ],
    ids=["namespace-defaulted", "namespace-stripped"],
)
def test_duplicates_after_namespace_defaulting(first: str, second: str, message: str) -> None:
    found = parse(first, "a.yaml") + parse(second, "b.yaml")
    with pytest.raises(ManifestError) as caught:
        prepare(found, APP, cluster())
    assert str(caught.value) == message


def test_the_same_name_in_two_namespaces_is_two_objects() -> None:
    first = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\n"
    second = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg, namespace: other}\n"
    assert [d.key.namespace for d in run(first, second)] == ["shop", "other"]


# --- autoscaled_targets -------------------------------------------------------------------------------------------


def hpa(name: str, target_kind: str, target: str, namespace: str = "") -> str:
    where = f", namespace: {namespace}" if namespace else ""
    return (
        f"apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {{name: {name}{where}}}\n"
        f"spec:\n  scaleTargetRef: {{apiVersion: apps/v1, kind: {target_kind}, name: {target}}}\n"
        "  minReplicas: 2\n  maxReplicas: 5\n"
    )


def test_autoscaled_targets() -> None:
    desired = run(
        DEPLOYMENT,
        hpa("web", "Deployment", "web"),
        hpa("db", "StatefulSet", "db", namespace="data"),
        CONFIGMAP,
    )
    assert autoscaled_targets(desired) == {("shop", "Deployment", "web"), ("data", "StatefulSet", "db")}


def test_no_autoscaler_no_targets() -> None:
    assert autoscaled_targets(run(DEPLOYMENT, CONFIGMAP)) == set()
    assert autoscaled_targets([]) == set()


# --- concurrently -------------------------------------------------------------------------------------------------


def test_concurrently_keeps_input_order() -> None:
    def slow_square(n: int) -> int:
        time.sleep(0.001 * (10 - n))
        return n * n

    assert concurrently(slow_square, list(range(10)), workers=4) == [n * n for n in range(10)]


@pytest.mark.parametrize("items", [[], [7]])
def test_concurrently_runs_zero_or_one_item_in_the_calling_thread(items: list[int]) -> None:
    threads: list[int] = []

    def record(n: int) -> int:
        threads.append(threading.get_ident())
        return n + 1

    assert concurrently(record, items) == [n + 1 for n in items]
    assert set(threads) <= {threading.get_ident()}


def test_concurrently_propagates_an_exception() -> None:
    def fail_on_three(n: int) -> int:
        if n == 3:
            raise ValueError("three")
        return n

    with pytest.raises(ValueError, match="three"):
        concurrently(fail_on_three, list(range(6)), workers=3)


# --- waves --------------------------------------------------------------------------------------------------------


def kinds(waves: list[list[DesiredObject]]) -> list[list[str]]:
    return [[f"{d.key.kind}/{d.key.name}" for d in wave] for wave in waves]


def test_waves_namespaces_then_crds_then_the_rest_in_git_order() -> None:
    desired = run(
        DEPLOYMENT,
        WIDGET,
        CRD,
        NAMESPACE,
        CONFIGMAP,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: data}\n",
        CLUSTER_ROLE,
    )
    assert kinds(sync.waves(desired)) == [
        ["Namespace/shop", "Namespace/data"],
        ["CustomResourceDefinition/widgets.acme.io"],
        ["Deployment/web", "Widget/w1", "ConfigMap/cfg", "ClusterRole/reader"],
    ]


@pytest.mark.parametrize(
    ("docs", "expected"),
    [
        ((), []),
        ((DEPLOYMENT, CONFIGMAP), [["Deployment/web", "ConfigMap/cfg"]]),
        ((NAMESPACE,), [["Namespace/shop"]]),
        ((CONFIGMAP, CRD, WIDGET), [["CustomResourceDefinition/widgets.acme.io"], ["ConfigMap/cfg", "Widget/w1"]]),
        ((DEPLOYMENT, NAMESPACE), [["Namespace/shop"], ["Deployment/web"]]),
    ],
    ids=["nothing", "no-first-waves", "only-namespace", "no-namespace", "no-crd"],
)
def test_empty_waves_are_dropped(docs: tuple[str, ...], expected: list[list[str]]) -> None:
    assert kinds(sync.waves(run(*docs) if docs else [])) == expected


# --- _removal_ops -------------------------------------------------------------------------------------------------


LIVE: KubeObject = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "4711"},
    "spec": {
        "paused": True,
        "template": {
            "spec": {
                "containers": [
                    {"name": "app", "env": [{"name": f"E{n}", "value": str(n)} for n in range(12)]},
                    {"name": "debug", "image": "busybox"},
                    {"name": "tail", "image": "busybox"},
                ],
                "volumes": [{"name": "scratch", "emptyDir": {}}],
            }
        },
    },
}
CONTAINERS = ("f:spec", "f:template", "f:spec", "f:containers")


def env(n: int) -> tuple[str, ...]:
    return (*CONTAINERS, k(name="app"), "f:env", k(name=f"E{n}"))


def test_removal_ops_test_the_resource_version_first_then_remove_deepest_and_last_first() -> None:
    paths = [
        env(0),
        (*CONTAINERS, k(name="debug")),
        ("f:spec", "f:paused"),
        env(9),
        env(10),
        env(2),
        (*CONTAINERS, k(name="tail")),
        ("f:spec", "f:template", "f:spec", "f:volumes", k(name="scratch")),
    ]
    ops = sync._removal_ops(LIVE, paths)
    assert ops[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "4711"}
    assert [op["path"] for op in ops[1:]] == [
        "/spec/template/spec/volumes/0",
        "/spec/template/spec/containers/2",
        "/spec/template/spec/containers/1",
        "/spec/template/spec/containers/0/env/10",
        "/spec/template/spec/containers/0/env/9",
        "/spec/template/spec/containers/0/env/2",
        "/spec/template/spec/containers/0/env/0",
        "/spec/paused",
    ]
    assert {op["op"] for op in ops[1:]} == {"remove"}


def test_removal_ops_apply_cleanly_and_remove_exactly_those_fields() -> None:
    paths = [env(0), env(11), env(5), (*CONTAINERS, k(name="debug")), ("f:spec", "f:paused")]
    patched = jsonpatch.apply_patch(LIVE, sync._removal_ops(LIVE, paths))
    containers = patched["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["app", "tail"]
    assert [e["name"] for e in containers[0]["env"]] == [f"E{n}" for n in range(12) if n not in (0, 5, 11)]
    assert "paused" not in patched["spec"]


@pytest.mark.parametrize("index", [1, 10])
def test_removal_ops_orders_indices_as_numbers(index: int) -> None:
    ops = sync._removal_ops(LIVE, [env(index - 1), env(index)])
    assert [op["path"].rsplit("/", 1)[1] for op in ops[1:]] == [str(index), str(index - 1)]


def test_removal_ops_drop_duplicates_and_elements_that_are_gone() -> None:
    ops = sync._removal_ops(LIVE, [env(3), env(3), (*CONTAINERS, k(name="gone")), env(99)])
    assert ops == [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "4711"},
        {"op": "remove", "path": "/spec/template/spec/containers/0/env/3"},
    ]


def test_removal_ops_of_nothing_only_test() -> None:
    assert sync._removal_ops(LIVE, []) == [{"op": "test", "path": "/metadata/resourceVersion", "value": "4711"}]


# --- the sync's hook before applying (where the plugin extends the webhook's registration) -----------------------
def sync_with_hook(*docs: str, dry_run: bool = False) -> list[str]:
    """What a sync asks: the hook's calls and the applies, in order (applying the Widget CRD makes Widgets served)."""
    fake = cluster()
    events: list[str] = []
    fake.after.append(lambda r: events.append(f"apply {r.key.kind}") if r.verb == "apply" and r.key else None)
    desired = Desired(Commit("a" * 40, "s", "a", "d"), prepare(manifests(*docs), APP, fake))

    def before_apply(objects: list[DesiredObject]) -> None:
        events.append("before " + ", ".join(sorted(d.key.kind for d in objects)))

    results = sync.Syncer(fake, APP, dry_run=dry_run, before_apply=before_apply).run(desired, {}, prune=False)
    assert all(r.action is not sync.Action.FAILED for r in results)
    return events


def test_before_apply_sees_every_known_kind_first_then_custom_resources_once_their_crd_is_served() -> None:
    events = sync_with_hook(DEPLOYMENT, CRD, WIDGET)
    assert events[:3] == [
        "before CustomResourceDefinition, Deployment",
        "apply CustomResourceDefinition",
        "before Widget",
    ]
    assert sorted(events[3:]) == ["apply Deployment", "apply Widget"]


def test_before_apply_is_called_once_when_every_kind_is_known() -> None:
    events = sync_with_hook(NAMESPACE, DEPLOYMENT, CONFIGMAP)
    assert events[0] == "before ConfigMap, Deployment, Namespace"
    assert sum(e.startswith("before") for e in events) == 1


def test_a_dry_run_sync_does_not_call_before_apply() -> None:
    events = sync_with_hook(DEPLOYMENT, CONFIGMAP, dry_run=True)
    assert sorted(events) == ["apply ConfigMap", "apply Deployment"]


def test_a_sync_removes_what_others_added_and_git_does_not_declare() -> None:
    fake = cluster()
    (web,) = prepare(manifests(DEPLOYMENT_WITH_APP), APP, fake)
    live = fake.apply(DEPLOYMENTS, web.obj).obj
    live["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "DEBUG", "value": "1"}]
    live["spec"]["paused"] = True
    fake.replace(DEPLOYMENTS, live, field_manager="kubectl-edit")
    desired = Desired(Commit("a" * 40, "s", "a", "d"), [web])
    (result,) = sync.Syncer(fake, APP).run(desired, {}, prune=False)
    assert result.action is sync.Action.CONFIGURED
    synced = fake.stored(web.key)
    assert synced is not None
    assert synced["spec"] == {"template": {"spec": {"containers": [{"name": "app", "image": "web:1"}]}}}
    (patch,) = fake.made("patch")  # guarded by the version the apply answered: a write since then fails it
    assert patch.body[0]["path"] == "/metadata/resourceVersion"
    assert [e["manager"] for e in synced["metadata"]["managedFields"]] == ["kubectl-gitops"]


# --- the one place for apply, and for Git's object stored whole when the merge with others' changes is invalid ----
DEPLOYMENT_WITH_APP = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  template:
    spec:
      containers: [{name: app, image: "web:1"}]
"""
ROLLING = DEPLOYMENT_WITH_APP + "  strategy: {rollingUpdate: {maxSurge: 1}}\n"


def recreate_forbids_rolling_update(obj: KubeObject) -> str:
    """The API server's validation of a Deployment's strategy."""
    strategy = (obj.get("spec") or {}).get("strategy") or {}
    if strategy.get("type") == "Recreate" and "rollingUpdate" in strategy:
        return "spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'"
    return ""


def recreated_by_hand() -> tuple[FakeCluster, DesiredObject, KubeObject]:
    """Git declares a rolling update; someone set the live object's strategy to Recreate by hand, so that Git's
    object merged into it is invalid (422), while Git's object whole is not."""
    fake = cluster()
    fake.validators.append(recreate_forbids_rolling_update)
    (desired,) = prepare(manifests(ROLLING), APP, fake)
    by_hand = {**desired.obj, "spec": {**desired.obj["spec"], "strategy": {"type": "Recreate"}}}
    live = fake.add(by_hand, manager="kubectl-edit")
    fake.requests.clear()
    return fake, desired, live


def writes(fake: FakeCluster) -> list[str]:
    return [f"{r.verb} dry-run" if r.dry_run else r.verb for r in fake.requests if r.verb in ("apply", "replace")]


def test_apply_desired_stores_gits_object_whole_then_applies_it_when_the_merge_is_invalid() -> None:
    fake, desired, live = recreated_by_hand()
    applied = apply_desired(fake, desired, None, dry_run=False)
    assert writes(fake) == ["apply", "replace", "apply"]
    put = fake.made("replace")[0].body
    assert put["metadata"]["resourceVersion"] == live["metadata"]["resourceVersion"]  # a concurrent write fails it
    assert applied.replaced
    assert applied.obj["spec"]["strategy"] == {"rollingUpdate": {"maxSurge": 1}}
    assert applied.obj == fake.stored(desired.key)
    owners = {e["manager"]: e["fieldsV1"] for e in applied.obj["metadata"]["managedFields"]}
    assert "f:strategy" in owners["kubectl-gitops"]["f:spec"]  # ours after the apply that followed
    assert "f:spec" not in owners["kubectl-edit"]  # who set Recreate owns nothing of the spec any more


def test_apply_desired_dry_run_answers_the_object_stored_whole_and_writes_nothing() -> None:
    fake, desired, live = recreated_by_hand()
    applied = apply_desired(fake, desired, live, dry_run=True)
    assert writes(fake) == ["apply dry-run", "replace dry-run"]
    assert fake.stored(desired.key) == live
    assert applied.replaced
    assert applied.obj["spec"]["strategy"] == {"rollingUpdate": {"maxSurge": 1}}


def test_apply_desired_keeps_the_applys_reason_when_the_object_changed_before_the_put() -> None:
    fake, desired, live = recreated_by_hand()

    def another_writer(request: Request) -> None:
        if request.verb == "apply" and not fake.made("replace"):  # between the refused apply and the PUT
            fake.replace(DEPLOYMENTS, {**live, "metadata": {**live["metadata"], "labels": {"x": "1"}}})

    fake.after.append(another_writer)
    with pytest.raises(ApiError) as raised:
        apply_desired(fake, desired, live, dry_run=False)
    assert raised.value.status == 422
    assert "may not be specified when strategy `type` is 'Recreate'" in str(raised.value)
    refused = raised.value.__cause__  # the apply's refusal, caused in turn by the PUT's
    assert isinstance(refused, ApiError)
    assert isinstance(refused.__cause__, ApiError)
    assert refused.__cause__.status == 409


SECRET = 'apiVersion: v1\nkind: Secret\nmetadata: {name: web}\nstringData: {token: "hunter2-secret"}\n'


def quotes_the_token(obj: KubeObject) -> str:
    token = (obj.get("stringData") or {}).get("token")
    return f'stringData.token: Invalid value: "{token}": not allowed here' if token else ""


def policy_webhook(request: Request) -> None:
    if request.verb == "apply":
        token = request.body["stringData"]["token"]
        raise ApiError(f'admission webhook "policy.example.com" denied the request: {token} is a password', 403)


@pytest.mark.parametrize("refusal", ["admission-403", "invalid-422-without-live"])
def test_apply_desired_raises_other_refusals_without_the_objects_values(refusal: str) -> None:
    """Another refusal, or a 422 for an object that does not exist (nothing to store whole), is the answer."""
    fake = cluster()
    (secret,) = prepare(manifests(SECRET), APP, fake)
    if refusal == "admission-403":
        fake.add({**secret.obj, "stringData": {"token": "by-hand"}}, manager="kubectl-edit")
        fake.gates.append(policy_webhook)
    else:
        fake.validators.append(quotes_the_token)
    with pytest.raises(ApiError) as raised:
        apply_desired(fake, secret, None, dry_run=False)
    assert raised.value.status == (403 if refusal == "admission-403" else 422)
    assert "hunter2" not in str(raised.value)
    assert writes(fake) == ["apply"]


# --- an apply our webhook cannot judge yet is tried again; any other refusal is the answer ------------------------
def webhook_refusing(times: int, message: str) -> tuple[FakeCluster, DesiredObject, list[int]]:
    """A cluster whose admission refuses the first `times` applies of the Deployment with `message` (403)."""
    fake = cluster()
    (web,) = prepare(manifests(DEPLOYMENT_WITH_APP), APP, fake)
    tries: list[int] = []

    def gate(request: Request) -> None:
        if request.verb == "apply" and request.key == web.key:
            tries.append(1)
            if len(tries) <= times:
                raise ApiError(
                    f'admission webhook "objects.gitops-drift.kubectl-gitops.io" denied the request: {message}', 403
                )

    fake.gates.append(gate)
    return fake, web, tries


WEBHOOK = "objects.gitops-drift.kubectl-gitops.io"
UNJUDGED = (
    "kubectl-gitops: this request cannot be judged against Git (Application gitops-system/shop): Deployment "
    "shop/web of gitops-system/shop is not loaded: its kind or namespace is not served yet. The webhook fails "
    f"closed: {TRY_AGAIN}"
)


def test_an_apply_the_webhook_cannot_judge_yet_is_tried_again() -> None:
    fake, web, tries = webhook_refusing(2, UNJUDGED)
    desired = Desired(Commit("a" * 40, "s", "a", "d"), [web])
    (result,) = sync.Syncer(fake, APP, unjudged_waits=(0.0, 0.0, 0.0)).run(desired, {}, prune=False)
    assert result.action is sync.Action.CREATED
    assert len(tries) == 3


def test_an_apply_the_webhook_never_judges_fails_after_its_tries_with_the_webhooks_reason() -> None:
    fake, web, tries = webhook_refusing(10, UNJUDGED)
    desired = Desired(Commit("a" * 40, "s", "a", "d"), [web])
    (result,) = sync.Syncer(fake, APP, unjudged_waits=(0.0, 0.0)).run(desired, {}, prune=False)
    assert result.action is sync.Action.FAILED
    assert TRY_AGAIN in result.message
    assert len(tries) == 3


def test_a_drift_denial_is_not_tried_again() -> None:
    fake, web, tries = webhook_refusing(10, "kubectl-gitops: drift from Git (enforce): /spec/replicas changed")
    desired = Desired(Commit("a" * 40, "s", "a", "d"), [web])
    (result,) = sync.Syncer(fake, APP, unjudged_waits=(0.0, 0.0)).run(desired, {}, prune=False)
    assert result.action is sync.Action.FAILED
    assert len(tries) == 1
