"""engine.core.admission.decide against a reference model of the webhook's rule (tests/unit/core/rule_model.py), on
random Git objects and random requests derived from them.

Each property draws a Git Deployment (its manifest, the stored object a dry-run apply answers, the fieldsV1 our
manager owns), an object before the request (Git's, or one that already drifted) and one after, and checks that
decide, in enforce mode for an ordinary user, denies exactly when the model finds new drift. The families of changes
are kept apart so that a failing one names the hole it found.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from engine.core.admission import AdmissionRequest, Exemptions, GitObject, decide
from engine.core.normalize import SecretMasker
from engine.core.objects import (
    FIELD_MANAGER,
    REVISION_ANNOTATION,
    TRACKING_ANNOTATION,
    TRACKING_LABEL,
    AppRef,
    DriftMode,
    KubeObject,
    ObjectKey,
)

from . import rule_model

KEY = ObjectKey("apps", "Deployment", "shop", "web")
APP = AppRef("gitops-system", "shop")
REVISION = "0123456789abcdef0123456789abcdef01234567"
MASKER = SecretMasker(b"rule-model-key-0123456789abcdef!")
# A few seconds, and the same examples every run by default (a test suite that fails at random proves little);
# RULE_MODEL_EXAMPLES=5000 for a longer search with fresh random examples. RULE_MODEL_SMOKE=1 runs a few (set by
# tests/unit/test_layers.py, which runs these tests again only to show that they need no I/O library).
RULE = settings(
    max_examples=int(os.environ.get("RULE_MODEL_EXAMPLES", "10" if os.environ.get("RULE_MODEL_SMOKE") else "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize="RULE_MODEL_EXAMPLES" not in os.environ,
    database=None if "RULE_MODEL_EXAMPLES" not in os.environ else settings().database,
)

NAMES = ("app", "proxy", "worker")
ENV_NAMES = ("MODE", "LEVEL", "TRACE")
VALUES = ("prod", "debug", "evil", "1")
PORTS = ((80, "TCP"), (443, "TCP"), (53, "UDP"))
MOUNTS = ("/data", "/cache")
IMAGES = ("registry.local/web:1.0", "registry.local/web:2.0", "evil/miner:latest")
DECOYS = (
    {"apiVersion": "v1", "kind": "ConfigMap", "name": "decoy", "uid": "uid-decoy"},
    {"apiVersion": "v1", "kind": "ConfigMap", "name": "decoy-2", "uid": "uid-decoy-2"},
)
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


# --- Git's object --------------------------------------------------------------------------------------------------
@st.composite
def manifests(draw: st.DrawFn) -> KubeObject:
    """Git's Deployment as committed, tracking marks on (as a sync applies it)."""
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=2, unique=True))
    containers = []
    volumes = []
    for name in names:
        c: dict[str, Any] = {"name": name, "image": draw(st.sampled_from(IMAGES[:2]))}
        env = draw(st.lists(st.sampled_from(ENV_NAMES), max_size=2, unique=True))
        if env:
            c["env"] = [{"name": e, "value": draw(st.sampled_from(VALUES[:2]))} for e in env]
        ports = draw(st.lists(st.sampled_from(PORTS), max_size=2, unique=True))
        if ports:
            c["ports"] = [{"containerPort": p, "protocol": proto} for p, proto in ports]
        mounts = draw(st.lists(st.sampled_from(MOUNTS), max_size=1))
        if mounts:
            c["volumeMounts"] = [{"name": f"vol-{name}", "mountPath": m} for m in mounts]
            volumes.append({"name": f"vol-{name}", "emptyDir": {}})
        containers.append(c)
    pod: dict[str, Any] = {"containers": containers}
    if volumes:
        pod["volumes"] = volumes
    template_metadata: dict[str, Any] = {"labels": {"app": "web"}}
    if draw(st.booleans()):
        template_metadata["annotations"] = {"team": "shop"}
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": template_metadata, "spec": pod},
    }
    if draw(st.booleans()):
        spec["replicas"] = draw(st.integers(2, 3))
    labels = {"app": "web", TRACKING_LABEL: "shop"}
    annotations = {TRACKING_ANNOTATION: f"{APP}:apps/Deployment:shop/web", REVISION_ANNOTATION: REVISION}
    if draw(st.booleans()):
        annotations["owner"] = "team-a"
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "labels": labels, "annotations": annotations},
        "spec": spec,
    }


def declared_of(manifest: KubeObject) -> dict[str, Any]:
    """What our manager owns after applying `manifest` (name and namespace too, as the API server records them)."""
    return rule_model.fields_of(manifest)


def stored_of(manifest: KubeObject, declared: dict[str, Any]) -> KubeObject:
    """`manifest` as the API server stores it: defaults filled in, server metadata, our field set, status."""
    out = copy.deepcopy(manifest)
    metadata = out["metadata"]
    metadata.update(uid="0b5e0f36-0000-4000-8000-000000000001", resourceVersion="1200", generation=3)
    metadata["managedFields"] = [
        {
            "manager": FIELD_MANAGER,
            "operation": "Apply",
            "apiVersion": "apps/v1",
            "fieldsType": "FieldsV1",
            "fieldsV1": declared,
        }
    ]
    spec = out["spec"]
    spec.setdefault("replicas", 1)
    spec.update(revisionHistoryLimit=10, progressDeadlineSeconds=600)
    spec["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}
    pod = spec["template"]["spec"]
    pod.update(restartPolicy="Always", dnsPolicy="ClusterFirst", terminationGracePeriodSeconds=30)
    for c in pod["containers"]:
        c.update(imagePullPolicy="IfNotPresent", resources={}, terminationMessagePath="/dev/termination-log")
    out["status"] = {"replicas": spec["replicas"], "observedGeneration": 3}
    return out


def git_object(stored: KubeObject, declared: dict[str, Any]) -> GitObject:
    return GitObject(key=KEY, app=APP, mode=DriftMode.ENFORCE, revision=REVISION, stored=stored, declared=declared)


# --- changes ---------------------------------------------------------------------------------------------------------
Change = Callable[[KubeObject, st.DataObject], None]


def containers_of(obj: KubeObject) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = obj["spec"]["template"]["spec"]["containers"]
    return found


def a_container(obj: KubeObject, data: st.DataObject) -> dict[str, Any] | None:
    containers = containers_of(obj)
    return data.draw(st.sampled_from(containers), label="container") if containers else None


def set_image(obj: KubeObject, data: st.DataObject) -> None:
    if c := a_container(obj, data):
        c["image"] = data.draw(st.sampled_from(IMAGES), label="image")


def set_env(obj: KubeObject, data: st.DataObject) -> None:
    """Sets the value of an env var by name (the first one named so), adding it when absent."""
    if c := a_container(obj, data):
        name, value = data.draw(st.sampled_from(ENV_NAMES)), data.draw(st.sampled_from(VALUES))
        env = c.setdefault("env", [])
        found = next((e for e in env if e.get("name") == name), None)
        if found is None:
            env.append({"name": name, "value": value})
        else:
            found["value"] = value


def drop_env(obj: KubeObject, data: st.DataObject) -> None:
    if (c := a_container(obj, data)) and c.get("env"):
        c["env"].pop(data.draw(st.integers(0, len(c["env"]) - 1)))


def add_container(obj: KubeObject, data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(("sidecar", "debug")))
    if all(c["name"] != name for c in containers_of(obj)):
        containers_of(obj).append({"name": name, "image": "busybox"})


def drop_container(obj: KubeObject, data: st.DataObject) -> None:
    containers = containers_of(obj)
    if len(containers) > 1:
        containers.pop(data.draw(st.integers(0, len(containers) - 1)))


def set_replicas(obj: KubeObject, data: st.DataObject) -> None:
    obj["spec"]["replicas"] = data.draw(st.integers(1, 4), label="replicas")


def set_limits(obj: KubeObject, data: st.DataObject) -> None:
    if c := a_container(obj, data):
        c.setdefault("resources", {})["limits"] = {"cpu": data.draw(st.sampled_from(("1", "2")))}


def set_host_network(obj: KubeObject, data: st.DataObject) -> None:
    obj["spec"]["template"]["spec"]["hostNetwork"] = data.draw(st.booleans())


def set_default(obj: KubeObject, data: st.DataObject) -> None:
    obj["spec"]["revisionHistoryLimit"] = data.draw(st.sampled_from((10, 3)))


def set_label(obj: KubeObject, data: st.DataObject) -> None:
    where = data.draw(st.sampled_from(("labels", "annotations", "template-labels", "template-annotations")))
    key = data.draw(st.sampled_from(("app", "owner", "team", "note")))
    value = data.draw(st.sampled_from(("web", "team-a", "shop", "other")))
    metadata = obj["spec"]["template"]["metadata"] if where.startswith("template") else obj["metadata"]
    metadata.setdefault(where.removeprefix("template-"), {})[key] = value


def drop_label(obj: KubeObject, data: st.DataObject) -> None:
    where = data.draw(st.sampled_from(("labels", "annotations")))
    metadata = data.draw(st.sampled_from((obj["metadata"], obj["spec"]["template"]["metadata"])))
    values = metadata.get(where) or {}
    keys = sorted(k for k in values if k not in (TRACKING_LABEL, TRACKING_ANNOTATION))
    if keys and bool(data.draw(st.booleans())):
        values.pop(data.draw(st.sampled_from(keys)))
    elif keys:
        metadata.pop(where)


def harmless(obj: KubeObject, data: st.DataObject) -> None:
    """What nobody minds: status, server metadata, the revision mark, a rollout restart, undeclared marks."""
    what = data.draw(st.sampled_from(("status", "version", "revision", "restart", "label")), label="harmless")
    if what == "status":
        obj["status"] = {"replicas": 7, "observedGeneration": 9}
    elif what == "version":
        obj["metadata"].update(resourceVersion="1300", generation=4)
    elif what == "revision":
        obj["metadata"].setdefault("annotations", {})[REVISION_ANNOTATION] = "f" * 40
    elif what == "restart":
        obj["spec"]["template"]["metadata"].setdefault("annotations", {})[RESTARTED_AT] = "2024-05-02T10:00:00Z"
    else:
        obj["metadata"].setdefault("labels", {})["undeclared-" + data.draw(st.sampled_from("ab"))] = "x"


def tracking(obj: KubeObject, data: st.DataObject) -> None:
    """Our tracking label or annotation removed or changed."""
    where, key = data.draw(st.sampled_from((("labels", TRACKING_LABEL), ("annotations", TRACKING_ANNOTATION))))
    marks = obj["metadata"].setdefault(where, {})
    value = data.draw(st.sampled_from((None, "other", "shop", f"{APP}:apps/Deployment:shop/web")), label="mark")
    if value is None:
        marks.pop(key, None)
    else:
        marks[key] = value


def duplicate(obj: KubeObject, data: st.DataObject) -> None:
    """A second entry under a key a list already has (appended, or put first), equal or not."""
    lists: list[tuple[str, list[Any]]] = [("containers", containers_of(obj))]
    for c in containers_of(obj):
        lists += [(name, c[name]) for name in ("env", "ports", "volumeMounts") if c.get(name)]
    if obj["spec"]["template"]["spec"].get("volumes"):
        lists.append(("volumes", obj["spec"]["template"]["spec"]["volumes"]))
    name, items = data.draw(st.sampled_from(lists), label="list")
    if not items:
        return
    item = copy.deepcopy(data.draw(st.sampled_from(items)))
    if data.draw(st.booleans(), label="other value"):
        changed_field = {"env": "value", "containers": "image", "ports": "name", "volumeMounts": "subPath"}.get(
            name, "x"
        )
        item[changed_field] = data.draw(st.sampled_from(("evil", "p")))
    items.insert(len(items) if data.draw(st.booleans(), label="append") else 0, item)


def owner_reference(obj: KubeObject, data: st.DataObject) -> None:
    references = obj["metadata"].setdefault("ownerReferences", [])
    what = data.draw(st.sampled_from(("add", "rename", "drop")), label="owner reference")
    if what == "add":
        references.append(dict(data.draw(st.sampled_from(DECOYS))))
    elif references and what == "rename":
        references[0]["name"] = data.draw(st.sampled_from(("decoy", "decoy-x")))
    elif references:
        references.pop()
    if not references:
        obj["metadata"].pop("ownerReferences")


FIELDS: tuple[Change, ...] = (
    set_image,
    set_env,
    drop_env,
    add_container,
    drop_container,
    set_replicas,
    set_limits,
    set_host_network,
    set_default,
    set_label,
    drop_label,
)


def changed(obj: KubeObject, data: st.DataObject, changes: tuple[Change, ...], most: int, label: str) -> KubeObject:
    out = copy.deepcopy(obj)
    for change in data.draw(st.lists(st.sampled_from(changes), max_size=most), label=label):
        change(out, data)
    return out


def back_to_git(obj: KubeObject, stored: KubeObject, data: st.DataObject) -> KubeObject:
    """A part of the object brought back to Git (what a sync does), the rest left as it is."""
    out = copy.deepcopy(obj)
    part = data.draw(st.sampled_from(("nothing", "spec", "metadata", "containers", "all")), label="back to Git")
    if part in ("spec", "all"):
        out["spec"] = copy.deepcopy(stored["spec"])
    if part in ("metadata", "all"):
        out["metadata"] = copy.deepcopy(stored["metadata"])
    if part == "containers":
        out["spec"]["template"]["spec"]["containers"] = copy.deepcopy(containers_of(stored))
    return out


# --- the property ----------------------------------------------------------------------------------------------------
def request(operation: str, new: KubeObject | None, old: KubeObject | None) -> AdmissionRequest:
    return {
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
        "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
        "operation": operation,
        "userInfo": {"username": "alice", "groups": ["developers", "system:authenticated"]},
        "name": "web",
        "namespace": "shop",
        "object": new,
        "oldObject": old,
        "dryRun": False,
    }


def check(
    stored: KubeObject, declared: dict[str, Any], operation: str, old: KubeObject | None, new: KubeObject
) -> None:
    """decide denies exactly when the model finds new drift."""
    expected = rule_model.new_drift(stored, declared, operation, old, new)
    decision = decide(
        request(operation, new, old), git_object(stored, declared), exemptions=Exemptions(), masker=MASKER
    )
    note(f"model: {expected}")
    note(f"decide: {decision.verdict.value} {[(i.path, i.kind.value) for i in decision.items]}")
    if expected:
        assert not decision.allowed, f"the model finds drift at {sorted(expected, key=str)}, decide allows it"
    else:
        assert decision.allowed, f"the model finds no drift, decide denies: {decision.message}"


@st.composite
def gits(draw: st.DrawFn) -> tuple[KubeObject, dict[str, Any]]:
    manifest = draw(manifests())
    declared = declared_of(manifest)
    return stored_of(manifest, declared), declared


def update_property(
    name: str, before: tuple[Change, ...], during: tuple[Change, ...], *, rule: settings = RULE
) -> Callable[..., None]:
    """An UPDATE: `before` changes make the object before the request, `during` ones the request itself."""

    def prop(git: tuple[KubeObject, dict[str, Any]], data: st.DataObject) -> None:
        stored, declared = git
        old = changed(stored, data, before, 2, "before the request") if before else copy.deepcopy(stored)
        new = changed(back_to_git(old, stored, data) if before else old, data, during, 3, "the request")
        check(stored, declared, "UPDATE", old, new)

    prop.__name__ = prop.__qualname__ = name  # one example database entry per property
    return rule(given(gits(), st.data())(prop))


# Changes to fields, on an object that did not drift before: the rule's plain core.
test_changes_to_an_object_in_sync = update_property("test_changes_to_an_object_in_sync", (), (*FIELDS, harmless))

# A request that only takes drift away, partly or whole, or adds nothing new: allowed.
test_syncing_a_drifted_object_back = update_property(
    "test_syncing_a_drifted_object_back", (*FIELDS, harmless), (harmless,)
)

# A further change at a path that already drifted is a new attempt (nobody rides on earlier drift).
test_changes_to_an_object_that_already_drifted = update_property(
    "test_changes_to_an_object_that_already_drifted", (*FIELDS, harmless), (*FIELDS, harmless)
)

# Our tracking label and annotation are declared fields.
test_tracking_marks = update_property("test_tracking_marks", (), (tracking, harmless))

# Every list entry Git does not have is drift, also under a key that collides with one Git declares.
test_duplicate_keys = update_property("test_duplicate_keys", (), (duplicate, set_env, harmless))

# Owner references Git does not declare are drift.
test_owner_references = update_property("test_owner_references", (owner_reference,), (owner_reference, harmless))

# Everything together, with drift of every kind before the request.
ALL = (*FIELDS, harmless, tracking, duplicate, owner_reference)
test_any_change = update_property("test_any_change", ALL, ALL)


@RULE
@given(gits(), st.data())
def test_create(git: tuple[KubeObject, dict[str, Any]], data: st.DataObject) -> None:
    """A CREATE: drift wherever the new object strays from Git (before is empty)."""
    stored, declared = git
    manifest = {k: v for k, v in copy.deepcopy(stored).items() if k != "status"}
    for field in ("uid", "resourceVersion", "generation", "managedFields"):
        manifest["metadata"].pop(field)
    new = changed(manifest, data, (*FIELDS, tracking, duplicate, owner_reference), 2, "created as")
    check(stored, declared, "CREATE", None, new)


@settings(RULE, max_examples=30)
@given(gits())
def test_delete_of_an_object_git_has(git: tuple[KubeObject, dict[str, Any]]) -> None:
    stored, declared = git
    check(stored, declared, "DELETE", stored, stored)


# --- the model itself, on cases worked by hand ------------------------------------------------------------------------
def worked() -> tuple[KubeObject, dict[str, Any]]:
    manifest: KubeObject = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "labels": {"app": "web", TRACKING_LABEL: "shop"},
            "annotations": {TRACKING_ANNOTATION: "t", REVISION_ANNOTATION: REVISION},
        },
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "a:1", "env": [{"name": "MODE", "value": "prod"}]}]},
            },
        },
    }
    declared = declared_of(manifest)
    return stored_of(manifest, declared), declared


APP_C = 'k:{"name":"app"}'
MODE_E = 'k:{"name":"MODE"}'
POD = ("spec", "template", "spec")


def edit(obj: KubeObject, change: Callable[[KubeObject], Any]) -> KubeObject:
    out = copy.deepcopy(obj)
    change(out)
    return out


def env(obj: KubeObject) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = containers_of(obj)[0]["env"]
    return found


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        pytest.param(None, None, {}, id="nothing"),
        pytest.param(
            None,
            lambda o: containers_of(o)[0].update(image="b:2"),
            {(*POD, "containers", APP_C, "image"): "b:2"},
            id="image",
        ),
        pytest.param(
            lambda o: containers_of(o)[0].update(image="b:2"),
            lambda o: containers_of(o)[0].update(image="c:3"),
            {(*POD, "containers", APP_C, "image"): "c:3"},
            id="image-again",
        ),
        pytest.param(
            lambda o: containers_of(o)[0].update(image="b:2"),
            lambda o: o["metadata"]["labels"].update(x="1"),
            {},
            id="unrelated",
        ),
        pytest.param(
            lambda o: containers_of(o)[0].update(image="b:2"),
            lambda o: containers_of(o)[0].update(image="a:1"),
            {},
            id="back",
        ),
        pytest.param(
            None,
            lambda o: env(o).append({"name": "MODE", "value": "prod"}),
            {(*POD, "containers", APP_C, "env", MODE_E, "#1"): {"name": "MODE", "value": "prod"}},
            id="duplicate",
        ),
        pytest.param(
            None,
            lambda o: env(o).insert(0, {"name": "MODE", "value": "evil"}),
            {
                (*POD, "containers", APP_C, "env", MODE_E, "value"): "evil",
                (*POD, "containers", APP_C, "env", MODE_E, "#1"): {"name": "MODE", "value": "prod"},
            },
            id="duplicate-first",
        ),
        pytest.param(
            None,
            lambda o: o["metadata"]["labels"].pop(TRACKING_LABEL),
            {("metadata", "labels", TRACKING_LABEL): rule_model.MISSING},
            id="label",
        ),
        pytest.param(
            None, lambda o: o["metadata"]["annotations"].update({REVISION_ANNOTATION: "f"}), {}, id="revision"
        ),
        pytest.param(
            None,
            lambda o: o["metadata"].update(ownerReferences=[DECOYS[0]]),
            {("metadata", "ownerReferences", 'k:{"uid":"uid-decoy"}'): DECOYS[0]},
            id="owner",
        ),
        pytest.param(None, lambda o: o["spec"].update(replicas=3), {("spec", "replicas"): 3}, id="undeclared-replicas"),
        pytest.param(
            lambda o: o["spec"].update(paused=True), lambda o: o["spec"].pop("paused"), {}, id="undeclared-removed"
        ),
    ],
)
def test_the_model(
    before: Callable[[KubeObject], Any] | None, after: Callable[[KubeObject], Any] | None, expected: dict[Any, Any]
) -> None:
    stored, declared = worked()
    old = edit(stored, before) if before else stored
    new = edit(old, after) if after else old
    assert rule_model.new_drift(stored, declared, "UPDATE", old, new) == expected


def test_the_model_on_create_counts_a_server_default_set_otherwise() -> None:
    """A CREATE that keeps the server's defaults adds no drift; one that sets another value where Git leaves the
    field to the server does (a Pod with another serviceAccountName, a Deployment with another strategy)."""
    stored, declared = worked()
    assert rule_model.new_drift(stored, declared, "CREATE", None, stored) == {}
    created = edit(stored, lambda o: o["spec"].update(revisionHistoryLimit=5))
    assert rule_model.new_drift(stored, declared, "CREATE", None, created) == {("spec", "revisionHistoryLimit"): 5}
    assert rule_model.new_drift(stored, declared, "CREATE", None, edit(stored, lambda o: o["spec"].update(paused=True)))
    assert rule_model.new_drift(stored, declared, "DELETE", stored, None) == {(): "deleted"}
