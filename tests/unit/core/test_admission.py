"""The admission decision, from hand-built AdmissionRequests and Git objects as the API server would store them.

`stored()` is Git's Deployment as a sync leaves it: Git's fields plus the server's defaults. `git_fields()` is the
field set our manager ("kubectl-gitops") owns after a dry-run apply of the webhook's probe of it; `git()` is the object
the webhook judges against, made from that answer as engine.gitstate makes it, and `declared()` what it declares (our
tracking marks among it). A request is drift when the object after it strays from Git at a path where the object
before it did not.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from engine.core.admission import (
    BREAK_GLASS_ANNOTATION,
    CONTROLLER_PREFIX,
    AdmissionRequest,
    ClusterFacts,
    Decision,
    Exemptions,
    GitObject,
    Unjudged,
    Verdict,
    decide,
    new_drift,
)
from engine.core.drift import DriftKind, DriftPolicy, IgnoreRule
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

from ..stored import container, git_object, k

KEY = ObjectKey("apps", "Deployment", "shop", "web")
SERVICE_KEY = ObjectKey("", "Service", "shop", "web")
SECRET_KEY = ObjectKey("", "Secret", "shop", "db")
APP = AppRef("gitops-system", "shop")
REVISION = "0123456789abcdef0123456789abcdef01234567"
MASKER = SecretMasker(b"unit-test-key-0123456789abcdef!!")
EXEMPTIONS = Exemptions()
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
CONTAINERS = "/spec/template/spec/containers"


# --- Git's Deployment ------------------------------------------------------------------------------------------------
def git_fields(*, replicas: bool = True) -> dict[str, Any]:
    """The fieldsV1 our manager owns after a dry-run apply of the webhook's probe of Git's Deployment (with the
    tracking annotation and the revision, without the tracking label: the probe must not reach the webhook)."""
    env_var: dict[str, Any] = {".": {}, "f:name": {}, "f:value": {}}
    spec: dict[str, Any] = {
        "f:selector": {},
        "f:template": {
            "f:metadata": {"f:labels": {"f:app": {}}, "f:annotations": {"f:team": {}}},
            "f:spec": {
                "f:containers": {
                    k(name="app"): {
                        ".": {},
                        "f:name": {},
                        "f:image": {},
                        "f:env": {k(name="MODE"): env_var, k(name="LEVEL"): env_var},
                        "f:ports": {k(containerPort=80, protocol="TCP"): {".": {}, "f:containerPort": {}}},
                    },
                    k(name="proxy"): {".": {}, "f:name": {}, "f:image": {}},
                }
            },
        },
    }
    if replicas:
        spec["f:replicas"] = {}
    return {
        "f:metadata": {
            "f:labels": {"f:app": {}},
            "f:annotations": {"f:owner": {}, f"f:{TRACKING_ANNOTATION}": {}, f"f:{REVISION_ANNOTATION}": {}},
        },
        "f:spec": spec,
    }


def declared(*, replicas: bool = True) -> dict[str, Any]:
    """What Git declares of the Deployment, as the webhook holds it: what a sync's apply owns."""
    return dict(git(replicas=replicas).declared)


def stored(*, replicas: int = 2) -> KubeObject:
    """Git's Deployment as the API server stores it after a sync."""
    obj = deployment_as_stored(replicas)
    obj["metadata"]["managedFields"] = [
        {
            "manager": FIELD_MANAGER,
            "operation": "Apply",
            "apiVersion": "apps/v1",
            "fieldsType": "FieldsV1",
            "fieldsV1": declared(),
        }
    ]
    return obj


def deployment_as_stored(replicas: int) -> KubeObject:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "uid": "0b5e0f36-0000-4000-8000-000000000001",
            "resourceVersion": "1200",
            "generation": 3,
            "labels": {"app": "web", TRACKING_LABEL: "shop"},
            "annotations": {
                "owner": "team-a",
                TRACKING_ANNOTATION: "gitops-system/shop:apps/Deployment:shop/web",
                REVISION_ANNOTATION: REVISION,
                "deployment.kubernetes.io/revision": "3",
            },
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "revisionHistoryLimit": 10,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"labels": {"app": "web"}, "annotations": {"team": "shop"}},
                "spec": {
                    "containers": [
                        container(
                            "app",
                            "registry.local/web:1.0",
                            env=[{"name": "MODE", "value": "prod"}, {"name": "LEVEL", "value": "info"}],
                            ports=[{"containerPort": 80, "protocol": "TCP"}],
                        ),
                        container("proxy", "registry.local/proxy:2.1"),
                    ],
                    "restartPolicy": "Always",
                    "dnsPolicy": "ClusterFirst",
                },
            },
        },
        "status": {"replicas": 2, "readyReplicas": 2, "observedGeneration": 3},
    }


def git(mode: str = "enforce", *, replicas: bool = True, policy: DriftPolicy | None = None) -> GitObject:
    """Git's Deployment as the webhook's index holds it (engine.gitstate.from_probe of the probe's answer)."""
    answered = deployment_as_stored(2 if replicas else 1)
    return git_object(answered, git_fields(replicas=replicas), mode=mode, app=APP, revision=REVISION, policy=policy)


def edited(obj: KubeObject, *changes: Callable[[KubeObject], Any]) -> KubeObject:
    out = copy.deepcopy(obj)
    for change in changes:
        change(out)
    return out


def app_container(obj: KubeObject) -> dict[str, Any]:
    found: dict[str, Any] = obj["spec"]["template"]["spec"]["containers"][0]
    return found


def request(
    operation: str,
    obj: KubeObject | None,
    old: KubeObject | None = None,
    *,
    user: str = "alice",
    groups: tuple[str, ...] = ("developers", "system:authenticated"),
    sub: str = "",
    kind: tuple[str, str, str] = ("apps", "v1", "Deployment"),
    resource: tuple[str, str, str] = ("apps", "v1", "deployments"),
    name: str = "web",
    **more: Any,
) -> AdmissionRequest:
    req: dict[str, Any] = {
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": dict(zip(("group", "version", "kind"), kind, strict=True)),
        "resource": dict(zip(("group", "version", "resource"), resource, strict=True)),
        "operation": operation,
        "userInfo": {"username": user, "groups": list(groups)},
        "name": name,
        "namespace": "shop",
        "object": obj,
        "oldObject": old,
        "dryRun": False,
        **more,
    }
    if sub:
        req["subResource"] = sub
    return req  # type: ignore[return-value]


def update(after: KubeObject, before: KubeObject | None = None, **kw: Any) -> AdmissionRequest:
    return request("UPDATE", after, before if before is not None else stored(), **kw)


def judged(req: AdmissionRequest, target: GitObject | None, **kw: Any) -> Decision:
    return decide(req, target, exemptions=kw.pop("exemptions", EXEMPTIONS), masker=MASKER, **kw)


# --- edits of the live Deployment -------------------------------------------------------------------------------------
def set_image(image: str) -> Callable[[KubeObject], None]:
    return lambda o: app_container(o).__setitem__("image", image)


def set_env(name: str, value: str) -> Callable[[KubeObject], None]:
    def change(o: KubeObject) -> None:
        env = app_container(o)["env"]
        found = next((e for e in env if e["name"] == name), None)
        if found is None:
            env.append({"name": name, "value": value})
        else:
            found["value"] = value

    return change


def set_replicas(n: int) -> Callable[[KubeObject], None]:
    return lambda o: o["spec"].__setitem__("replicas", n)


def set_label(name: str, value: str) -> Callable[[KubeObject], None]:
    return lambda o: o["metadata"]["labels"].__setitem__(name, value)


def set_annotation(name: str, value: str) -> Callable[[KubeObject], None]:
    return lambda o: o["metadata"]["annotations"].__setitem__(name, value)


def set_template_label(name: str, value: str) -> Callable[[KubeObject], None]:
    return lambda o: o["spec"]["template"]["metadata"]["labels"].__setitem__(name, value)


def set_template_annotation(name: str, value: str) -> Callable[[KubeObject], None]:
    return lambda o: o["spec"]["template"]["metadata"]["annotations"].__setitem__(name, value)


def add_container(name: str) -> Callable[[KubeObject], None]:
    return lambda o: o["spec"]["template"]["spec"]["containers"].append(container(name, f"registry.local/{name}:1"))


def drop_env(name: str) -> Callable[[KubeObject], None]:
    def change(o: KubeObject) -> None:
        c = app_container(o)
        c["env"] = [e for e in c["env"] if e["name"] != name]

    return change


def set_status(o: KubeObject) -> None:
    o["status"] = {"replicas": 7, "readyReplicas": 0, "observedGeneration": 9}


def set_server_metadata(o: KubeObject) -> None:
    o["metadata"]["resourceVersion"] = "1300"
    o["metadata"]["generation"] = 4
    o["metadata"]["managedFields"] = [{"manager": "kubectl-edit", "operation": "Update", "fieldsV1": {}}]


# --- UPDATE: changed fields ----------------------------------------------------------------------------------------
CHANGES = [
    pytest.param(
        set_image("registry.local/web:2.0"),
        f"{CONTAINERS}/0/image",
        "registry.local/web:1.0",
        "registry.local/web:2.0",
        id="image",
    ),
    pytest.param(set_env("MODE", "debug"), f"{CONTAINERS}/0/env/0/value", "prod", "debug", id="env-value"),
    pytest.param(set_replicas(5), "/spec/replicas", 2, 5, id="replicas"),
    pytest.param(set_label("app", "other"), "/metadata/labels/app", "web", "other", id="declared-label"),
    pytest.param(
        set_annotation("owner", "team-b"), "/metadata/annotations/owner", "team-a", "team-b", id="declared-annotation"
    ),
    pytest.param(
        set_template_label("app", "canary"),
        "/spec/template/metadata/labels/app",
        "web",
        "canary",
        id="declared-template-label",
    ),
    pytest.param(
        set_template_annotation("team", "ops"),
        "/spec/template/metadata/annotations/team",
        "shop",
        "ops",
        id="declared-template-annotation",
    ),
    pytest.param(
        lambda o: app_container(o).__setitem__("ports", [{"containerPort": 8080, "protocol": "TCP"}]),
        f"{CONTAINERS}/0/ports",
        [{"containerPort": 80, "protocol": "TCP"}],
        [{"containerPort": 8080, "protocol": "TCP"}],
        id="ports-list-whole",
    ),
    pytest.param(
        lambda o: o["spec"].__setitem__("selector", {"matchLabels": {"app": "x"}}),
        "/spec/selector/matchLabels/app",
        "web",
        "x",
        id="selector",
    ),
]


@pytest.mark.parametrize(("change", "path", "want", "have"), CHANGES)
def test_a_changed_declared_field_is_changed_drift(
    change: Callable[[KubeObject], None], path: str, want: Any, have: Any
) -> None:
    items = new_drift(git(), stored(), edited(stored(), change), MASKER)
    assert [(i.path, i.kind, i.desired, i.live) for i in items] == [(path, DriftKind.CHANGED, want, have)]


@pytest.mark.parametrize(("change", "path", "want", "have"), CHANGES)
def test_enforce_denies_a_change_and_says_what_differs_and_what_to_do(
    change: Callable[[KubeObject], None], path: str, want: Any, have: Any
) -> None:
    decision = judged(update(edited(stored(), change)), git("enforce"))
    assert not decision.allowed
    assert decision.verdict is Verdict.DENIED
    assert decision.record
    assert [i.path for i in decision.items] == [path]
    text = decision.message
    assert path in text
    for value in (want, have):
        assert (value if isinstance(value, str) else json.dumps(value, sort_keys=True)) in text
    assert "kubectl gitops sync" in text
    assert "Change Git" in text
    assert str(KEY) in text
    assert str(APP) in text
    assert REVISION[:12] in text
    assert BREAK_GLASS_ANNOTATION in text  # the emergency exit is named, with the group that may use it
    assert EXEMPTIONS.break_glass_group in text


def test_the_message_names_every_drifted_path_with_both_values() -> None:
    after = edited(stored(), set_image("registry.local/web:9"), set_env("LEVEL", "trace"), set_replicas(3))
    decision = judged(update(after), git())
    assert [line.strip() for line in decision.message.splitlines()[1:4]] == [
        "/spec/replicas: Git has 2, request has 3",
        f"{CONTAINERS}/0/env/1/value: Git has info, request has trace",
        f"{CONTAINERS}/0/image: Git has registry.local/web:1.0, request has registry.local/web:9",
    ]


def test_long_values_are_shortened_in_the_message() -> None:
    decision = judged(update(edited(stored(), set_env("MODE", "x" * 500))), git())
    line = next(line for line in decision.message.splitlines() if "/env/0/value" in line)
    assert "x" * 117 + "..." in line
    assert "x" * 118 not in line


@pytest.mark.parametrize(
    ("mode", "allowed", "verdict", "record", "warns"),
    [
        ("enforce", False, Verdict.DENIED, True, False),
        ("warn", True, Verdict.WARNED, True, True),
        ("audit", True, Verdict.RECORDED, True, False),
        ("off", True, Verdict.ALLOWED, False, False),
    ],
)
def test_what_each_mode_makes_of_drift(mode: str, allowed: bool, verdict: Verdict, record: bool, warns: bool) -> None:
    decision = judged(update(edited(stored(), set_image("registry.local/web:2.0"))), git(mode))
    assert (decision.allowed, decision.verdict, decision.record) == (allowed, verdict, record)
    assert bool(decision.warnings) is warns
    if allowed:
        assert decision.message == ""
    if mode == "off":
        assert decision.items == ()
        assert decision.reason == "drift mode off"
    else:
        assert [i.path for i in decision.items] == [f"{CONTAINERS}/0/image"]


def test_warn_mode_warns_once_per_path_naming_the_application() -> None:
    after = edited(stored(), set_image("registry.local/web:2.0"), set_replicas(4))
    decision = judged(update(after), git("warn"))
    assert decision.allowed
    assert len(decision.warnings) == 2
    assert all(
        w.startswith(f"drift from Git (Application {APP}, revision {REVISION[:12]}): ") for w in decision.warnings
    )
    assert any("/spec/replicas: Git has 2, request has 4" in w for w in decision.warnings)
    assert any("registry.local/web:2.0" in w for w in decision.warnings)


@pytest.mark.parametrize(
    ("change", "path"),
    [
        pytest.param(lambda o: o["metadata"].pop("annotations"), "/metadata/annotations/owner", id="annotations"),
        pytest.param(
            lambda o: o["metadata"].__setitem__("annotations", {}),
            "/metadata/annotations/owner",
            id="annotations-emptied",
        ),
        pytest.param(lambda o: o["metadata"].pop("labels"), "/metadata/labels/app", id="labels"),
        pytest.param(lambda o: o["metadata"]["labels"].pop("app"), "/metadata/labels/app", id="one-label"),
        pytest.param(
            lambda o: o["spec"]["template"]["metadata"].pop("annotations"),
            "/spec/template/metadata/annotations/team",
            id="template-annotations",
        ),
    ],
)
def test_removing_declared_labels_or_annotations_is_drift(change: Callable[[KubeObject], None], path: str) -> None:
    """A declared label or annotation removed with the whole map it is in is as gone as one removed alone."""
    decision = judged(update(edited(stored(), change)), git())
    assert not decision.allowed
    assert any(i.path.startswith(path.rsplit("/", 1)[0]) for i in decision.items), decision.items
    assert path.rsplit("/", 1)[1] in decision.message


# --- UPDATE: added fields ----------------------------------------------------------------------------------------
ADDITIONS = [
    pytest.param(set_env("EXTRA", "1"), f"{CONTAINERS}/0/env/2", {"name": "EXTRA", "value": "1"}, id="env-var"),
    pytest.param(
        add_container("sidecar"), f"{CONTAINERS}/2", container("sidecar", "registry.local/sidecar:1"), id="container"
    ),
    pytest.param(
        lambda o: app_container(o)["resources"].__setitem__("limits", {"cpu": "2"}),
        f"{CONTAINERS}/0/resources/limits",
        {"cpu": "2"},
        id="limits",
    ),
    pytest.param(
        lambda o: app_container(o).__setitem__("args", ["--verbose"]), f"{CONTAINERS}/0/args", ["--verbose"], id="args"
    ),
    pytest.param(
        lambda o: o["spec"]["template"]["spec"].__setitem__("hostNetwork", True),
        "/spec/template/spec/hostNetwork",
        True,
        id="pod-field",
    ),
]


@pytest.mark.parametrize(("change", "path", "have"), ADDITIONS)
@pytest.mark.parametrize("mode", ["enforce", "warn", "audit"])
def test_a_field_git_does_not_declare_is_added_drift(
    change: Callable[[KubeObject], None], path: str, have: Any, mode: str
) -> None:
    decision = judged(update(edited(stored(), change)), git(mode))
    assert [(i.path, i.kind, i.desired, i.live) for i in decision.items] == [(path, DriftKind.ADDED, None, have)]
    assert decision.record
    assert decision.allowed is (mode != "enforce")
    if mode == "enforce":
        assert f"{path}: not in Git, request sets" in decision.message


# --- UPDATE: what is never drift ---------------------------------------------------------------------------------
HARMLESS = [
    pytest.param([set_label("team", "payments")], id="undeclared-label"),
    pytest.param([set_annotation("note", "hello")], id="undeclared-annotation"),
    pytest.param([set_template_label("version", "v2")], id="undeclared-template-label"),
    pytest.param([set_template_annotation("prometheus.io/scrape", "true")], id="undeclared-template-annotation"),
    pytest.param([set_template_annotation(RESTARTED_AT, "2024-05-02T10:00:00Z")], id="rollout-restart"),
    pytest.param([set_status], id="status-in-object"),
    pytest.param([set_server_metadata], id="server-metadata"),
    pytest.param([set_annotation(REVISION_ANNOTATION, "f" * 40)], id="revision-mark"),
    pytest.param([set_annotation(BREAK_GLASS_ANNOTATION, "just a note")], id="break-glass-annotation-alone"),
    pytest.param([set_label(TRACKING_LABEL, "shop")], id="tracking-label-unchanged"),
    pytest.param([], id="no-op"),
]


@pytest.mark.parametrize("changes", HARMLESS)
@pytest.mark.parametrize("mode", ["enforce", "warn", "audit"])
def test_changes_nobody_minds_are_allowed_silently(changes: list[Callable[[KubeObject], None]], mode: str) -> None:
    decision = judged(update(edited(stored(), *changes)), git(mode))
    assert decision == Decision(True, Verdict.ALLOWED, reason="adds no drift")


def test_an_ignore_rule_of_the_application_is_honoured() -> None:
    policy = DriftPolicy(ignore=(IgnoreRule("apps", "Deployment", ("/spec/replicas",)),))
    decision = judged(update(edited(stored(), set_replicas(9))), git(policy=policy))
    assert decision.allowed
    assert decision.items == ()


# --- UPDATE: a request that only removes drift ----------------------------------------------------------------------
DRIFTS = [
    pytest.param(set_image("registry.local/web:2.0"), id="changed-image"),
    pytest.param(set_env("MODE", "debug"), id="changed-env"),
    pytest.param(set_replicas(7), id="changed-replicas"),
    pytest.param(set_env("EXTRA", "1"), id="added-env"),
    pytest.param(add_container("sidecar"), id="added-container"),
    pytest.param(set_label("app", "other"), id="changed-label"),
]


@pytest.mark.parametrize("drift", DRIFTS)
@pytest.mark.parametrize("mode", ["enforce", "warn", "audit"])
def test_bringing_a_drifted_object_back_to_git_is_allowed(drift: Callable[[KubeObject], None], mode: str) -> None:
    drifted = edited(stored(), drift)
    decision = judged(update(stored(), drifted), git(mode))
    assert decision == Decision(True, Verdict.ALLOWED, reason="adds no drift")


@pytest.mark.parametrize("drift", DRIFTS)
def test_a_sync_by_an_ordinary_user_removing_several_drifts_is_allowed(drift: Callable[[KubeObject], None]) -> None:
    drifted = edited(stored(), drift, set_annotation("note", "x"), set_env("OTHER", "2"))
    assert judged(update(stored(), drifted), git()).allowed


def test_removing_an_added_field_is_allowed_even_with_other_changes_nobody_minds() -> None:
    drifted = edited(stored(), set_env("EXTRA", "1"))
    after = edited(stored(), set_label("team", "x"))
    assert judged(update(after, drifted), git()).verdict is Verdict.ALLOWED


# --- UPDATE: an object already drifted ----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["warn", "audit", "enforce"])
@pytest.mark.parametrize(
    ("drift", "again"),
    [
        pytest.param(set_image("registry.local/web:2.0"), set_label("team", "x"), id="unrelated-label"),
        pytest.param(set_env("EXTRA", "1"), set_template_annotation(RESTARTED_AT, "now"), id="rollout-restart"),
    ],
)
def test_an_unrelated_change_to_a_drifted_object_adds_no_drift(
    mode: str, drift: Callable[[KubeObject], None], again: Callable[[KubeObject], None]
) -> None:
    before = edited(stored(), drift)
    after = edited(before, again)
    assert new_drift(git(mode), before, after, MASKER) == []
    assert judged(update(after, before), git(mode)) == Decision(True, Verdict.ALLOWED, reason="adds no drift")


@pytest.mark.parametrize(
    ("mode", "verdict"), [("warn", Verdict.WARNED), ("audit", Verdict.RECORDED), ("enforce", Verdict.DENIED)]
)
@pytest.mark.parametrize(
    ("drift", "again", "path"),
    [
        pytest.param(
            set_image("registry.local/web:2.0"),
            set_image("registry.local/web:3.0"),
            f"{CONTAINERS}/0/image",
            id="image",
        ),
        pytest.param(set_env("EXTRA", "1"), set_env("EXTRA", "2"), f"{CONTAINERS}/0/env/2/value", id="added-env"),
        pytest.param(set_replicas(5), set_replicas(6), "/spec/replicas", id="replicas"),
    ],
)
def test_nobody_rides_on_earlier_drift(
    mode: str, verdict: Verdict, drift: Callable[[KubeObject], None], again: Callable[[KubeObject], None], path: str
) -> None:
    """After a break-glass change (or drift let through in warn or audit mode), changing that path to yet another
    value is a new drift attempt."""
    before = edited(stored(), drift)
    after = edited(before, again)
    assert [i.path for i in new_drift(git(mode), before, after, MASKER)] == [path]
    decision = judged(update(after, before), git(mode))
    assert decision.verdict is verdict
    assert decision.record


def test_only_the_new_path_counts_when_a_drifted_object_drifts_further() -> None:
    before = edited(stored(), set_image("registry.local/web:2.0"))
    after = edited(before, set_replicas(4))
    decision = judged(update(after, before), git("warn"))
    assert [i.path for i in decision.items] == ["/spec/replicas"]
    assert decision.verdict is Verdict.WARNED


# --- CREATE ----------------------------------------------------------------------------------------------------------
def manifest() -> KubeObject:
    """Git's Deployment as a client sends it: no server defaults, no server metadata."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "labels": {"app": "web", TRACKING_LABEL: "shop"},
            "annotations": {
                "owner": "team-a",
                TRACKING_ANNOTATION: "gitops-system/shop:apps/Deployment:shop/web",
                REVISION_ANNOTATION: REVISION,
            },
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}, "annotations": {"team": "shop"}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "registry.local/web:1.0",
                            "env": [{"name": "MODE", "value": "prod"}, {"name": "LEVEL", "value": "info"}],
                            "ports": [{"containerPort": 80, "protocol": "TCP"}],
                        },
                        {"name": "proxy", "image": "registry.local/proxy:2.1"},
                    ]
                },
            },
        },
    }


@pytest.mark.parametrize("obj", [pytest.param(stored(), id="as-stored"), pytest.param(manifest(), id="as-sent")])
@pytest.mark.parametrize("mode", ["enforce", "warn", "audit"])
def test_create_equal_to_git_is_allowed(obj: KubeObject, mode: str) -> None:
    decision = judged(request("CREATE", obj), git(mode))
    assert decision == Decision(True, Verdict.ALLOWED, reason="adds no drift")


@pytest.mark.parametrize(
    ("change", "path"),
    [
        pytest.param(set_image("registry.local/web:6.6.6"), f"{CONTAINERS}/0/image", id="image"),
        pytest.param(set_env("EXTRA", "1"), f"{CONTAINERS}/0/env/2", id="added-env"),
        pytest.param(set_replicas(10), "/spec/replicas", id="replicas"),
    ],
)
def test_create_differing_from_git_is_drift(change: Callable[[KubeObject], None], path: str) -> None:
    decision = judged(request("CREATE", edited(manifest(), change)), git())
    assert not decision.allowed
    assert [i.path for i in decision.items] == [path]


def test_create_without_a_declared_annotation_map_is_drift() -> None:
    decision = judged(request("CREATE", edited(manifest(), lambda o: o["metadata"].pop("annotations"))), git())
    assert not decision.allowed
    assert "owner" in decision.message


def test_create_without_a_declared_list_item_names_it_as_in_git() -> None:
    """The path of something only Git has is resolved in Git's object, as for an UPDATE."""
    decision = judged(request("CREATE", edited(manifest(), drop_env("LEVEL"))), git())
    assert not decision.allowed
    assert [(i.path, i.kind, i.live) for i in decision.items] == [(f"{CONTAINERS}/0/env/1", DriftKind.CHANGED, None)]


@pytest.mark.parametrize("operation", ["UPDATE", "CREATE"])
def test_an_ignore_rule_covers_a_declared_list_item_left_out(operation: str) -> None:
    policy = DriftPolicy(ignore=(IgnoreRule("apps", "Deployment", (f"{CONTAINERS}/0/env",)),))
    base = stored() if operation == "UPDATE" else manifest()
    req = request(operation, edited(base, drop_env("LEVEL")), stored() if operation == "UPDATE" else None)
    decision = judged(req, git(policy=policy))
    assert decision == Decision(True, Verdict.ALLOWED, reason="adds no drift")


def service(cluster_ip: str) -> KubeObject:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop", "labels": {TRACKING_LABEL: "shop"}},
        "spec": {
            "selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
            "type": "ClusterIP",
            "clusterIP": cluster_ip,
            "clusterIPs": [cluster_ip],
            "internalTrafficPolicy": "Cluster",
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "sessionAffinity": "None",
        },
    }


def service_git() -> GitObject:
    fields: dict[str, Any] = {
        "f:spec": {
            "f:selector": {},
            "f:ports": {k(port=80, protocol="TCP"): {".": {}, "f:name": {}, "f:port": {}, "f:targetPort": {}}},
        },
    }
    return git_object(service("10.96.0.10"), fields, app=APP, revision=REVISION)


def test_create_with_fields_the_server_fills_in_differently_is_allowed() -> None:
    req = request("CREATE", service("10.96.7.7"), kind=("", "v1", "Service"), resource=("", "v1", "services"))
    decision = judged(req, service_git())
    assert decision == Decision(True, Verdict.ALLOWED, reason="adds no drift")


def test_create_with_a_field_neither_git_nor_the_server_has_is_drift() -> None:
    obj = edited(service("10.96.0.10"), lambda o: o["spec"].__setitem__("externalIPs", ["1.2.3.4"]))
    req = request("CREATE", obj, kind=("", "v1", "Service"), resource=("", "v1", "services"))
    decision = judged(req, service_git())
    assert not decision.allowed
    assert [(i.path, i.kind) for i in decision.items] == [("/spec/externalIPs", DriftKind.ADDED)]


def test_create_of_an_object_git_does_not_have_that_claims_tracking_is_denied() -> None:
    decision = judged(request("CREATE", manifest()), None, tracked_elsewhere=True)
    assert not decision.allowed
    assert decision.verdict is Verdict.DENIED
    assert decision.record
    assert "claims tracking by an Application but is not in Git" in decision.message
    assert "kubectl gitops sync" in decision.message


def test_create_of_an_object_git_does_not_have_without_a_claim_is_not_ours() -> None:
    decision = judged(request("CREATE", manifest()), None, tracked_elsewhere=False)
    assert decision == Decision(True, Verdict.ALLOWED, reason="not managed")


@pytest.mark.parametrize("operation", ["UPDATE", "DELETE"])
def test_changing_or_deleting_an_object_git_no_longer_has_is_allowed(operation: str) -> None:
    """An object that already claimed the Application (a prune's candidate) is no longer Git's business."""
    after = edited(stored(), set_image("anything"))
    req = request(operation, None if operation == "DELETE" else after, stored())
    assert judged(req, None, tracked_elsewhere=False) == Decision(True, Verdict.ALLOWED, reason="not managed")
    if operation == "DELETE":
        assert judged(req, None, tracked_elsewhere=True) == Decision(True, Verdict.ALLOWED, reason="not managed")


def test_an_update_that_makes_an_object_claim_an_application_is_drift() -> None:
    """Labelling an unmanaged object as an Application's (the webhook passes tracked_elsewhere for a new claim) is
    drift, as creating one is."""
    req = request("UPDATE", manifest(), manifest())
    decision = judged(req, None, tracked_elsewhere=True)
    assert decision.verdict is Verdict.DENIED
    assert "claims tracking" in decision.message


# --- DELETE ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mode", "allowed", "verdict"),
    [
        ("enforce", False, Verdict.DENIED),
        ("warn", True, Verdict.WARNED),
        ("audit", True, Verdict.RECORDED),
    ],
)
def test_deleting_an_object_git_has_is_drift(mode: str, allowed: bool, verdict: Verdict) -> None:
    decision = judged(request("DELETE", None, stored()), git(mode))
    assert (decision.allowed, decision.verdict, decision.record) == (allowed, verdict, True)
    assert [(i.path, i.kind) for i in decision.items] == [("", DriftKind.CHANGED)]
    if mode == "enforce":
        assert f"deletes {KEY}, which Git still declares" in decision.message
        assert "kubectl gitops sync" in decision.message


def test_deleting_an_object_git_has_in_mode_off_is_allowed() -> None:
    assert judged(request("DELETE", None, stored()), git("off")).allowed


# --- who is asking ---------------------------------------------------------------------------------------------------
CONFIGURED = Exemptions(users=frozenset({"ci-deployer"}), groups=frozenset({"platform-admins"}))


@pytest.mark.parametrize(
    ("user", "groups"),
    [
        ("system:kube-controller-manager", ()),
        ("system:kube-scheduler", ()),
        ("system:apiserver", ()),
        ("system:node:worker-1", ("system:nodes",)),
        ("ci-deployer", ()),
        ("bob", ("developers", "platform-admins")),
    ],
)
@pytest.mark.parametrize("operation", ["UPDATE", "DELETE", "CREATE"])
def test_exempt_identities_are_always_allowed(user: str, groups: tuple[str, ...], operation: str) -> None:
    after = edited(stored(), set_image("registry.local/web:evil"), set_env("EXTRA", "1"))
    req = request(operation, None if operation == "DELETE" else after, stored(), user=user, groups=groups)
    decision = judged(req, git(), exemptions=CONFIGURED, tracked_elsewhere=True)
    assert decision.allowed
    assert decision.verdict is Verdict.ALLOWED
    assert not decision.record
    assert decision.reason in ("cluster machinery", "configured exemption")


@pytest.mark.parametrize(
    ("user", "groups"),
    [
        ("kube-controller-manager", ()),
        ("system:kube-controller-manager-but-not", ()),
        ("system:serviceaccount:default:deployment-controller", ()),
        ("system:serviceaccount:kube-systemx:deployment-controller", ()),
        ("system:serviceaccount:shop:kube-system", ()),
        ("system:nodes", ()),
        ("system:node", ()),
        ("system:node:worker-1", ()),
        ("someone", ("system:nodes",)),
        ("mallory", ("system:masters", "system:authenticated")),
        # `edit` can impersonate ServiceAccounts (and mint their tokens): their names alone earn nothing.
        ("system:serviceaccount:kube-system:deployment-controller", ("system:serviceaccounts",)),
        ("system:serviceaccount:kube-system:generic-garbage-collector", ()),
        ("system:serviceaccount:kube-system:namespace-controller", ()),
        ("system:serviceaccount:kube-system:horizontal-pod-autoscaler", ()),
        ("ci-deployer-2", ("platform",)),
    ],
)
def test_look_alike_identities_are_judged(user: str, groups: tuple[str, ...]) -> None:
    req = update(edited(stored(), set_image("registry.local/web:evil")), user=user, groups=groups)
    decision = judged(req, git(), exemptions=CONFIGURED)
    assert not decision.allowed
    assert decision.verdict is Verdict.DENIED


@pytest.mark.parametrize(
    "claim",
    [
        pytest.param({"options": {"fieldManager": "kube-controller-manager"}}, id="field-manager-option"),
        pytest.param({"options": {"fieldManager": FIELD_MANAGER}}, id="our-field-manager"),
        pytest.param(
            {"userInfo": {"username": "alice", "extra": {"manager": ["kube-controller-manager"]}}}, id="user-extra"
        ),
    ],
)
def test_a_client_claiming_to_be_a_controller_is_still_judged(claim: dict[str, Any]) -> None:
    def controller_owns_everything(o: KubeObject) -> None:
        o["metadata"]["managedFields"] = [
            {"manager": "kube-controller-manager", "operation": "Update", "fieldsV1": declared()},
            {"manager": FIELD_MANAGER, "operation": "Apply", "fieldsV1": declared()},
        ]

    after = edited(stored(), set_image("registry.local/web:evil"), controller_owns_everything)
    decision = judged(update(after, **claim), git())
    assert not decision.allowed
    assert [i.path for i in decision.items] == [f"{CONTAINERS}/0/image"]


def test_a_request_without_user_info_is_judged() -> None:
    req = update(edited(stored(), set_image("registry.local/web:evil")))
    req["userInfo"] = {}
    assert not judged(req, git()).allowed


# --- subresources ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["enforce", "warn", "audit"])
def test_the_status_subresource_is_always_allowed(mode: str) -> None:
    after = edited(stored(), set_status, set_image("registry.local/web:smuggled"))
    decision = judged(update(after, sub="status"), git(mode))
    assert decision == Decision(True, Verdict.ALLOWED, reason="status subresource")


def scale(replicas: int | None) -> KubeObject:
    spec = {} if replicas is None else {"replicas": replicas}
    return {
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {"name": "web", "namespace": "shop", "uid": "0b5e0f36-0000-4000-8000-000000000001"},
        "spec": spec,
        "status": {"replicas": 2, "selector": "app=web"},
    }


def scale_request(new: int | None, old: int | None, **kw: Any) -> AdmissionRequest:
    return request(
        "UPDATE",
        scale(new),
        scale(old) if old is not None else None,
        sub="scale",
        kind=("autoscaling", "v1", "Scale"),
        **kw,
    )


@pytest.mark.parametrize(
    ("declared_replicas", "old", "new", "expected"),
    [
        pytest.param(True, 2, 5, [("/spec/replicas", DriftKind.CHANGED, 2, 5)], id="declared-up"),
        pytest.param(True, 2, 0, [("/spec/replicas", DriftKind.CHANGED, 2, 0)], id="declared-to-zero"),
        pytest.param(True, 5, 2, [], id="declared-back-to-git"),
        pytest.param(True, 5, 6, [("/spec/replicas", DriftKind.CHANGED, 2, 6)], id="declared-already-drifted"),
        pytest.param(True, 2, 2, [], id="declared-same"),
        pytest.param(False, 1, 4, [("/spec/replicas", DriftKind.ADDED, None, 4)], id="undeclared-up"),
        pytest.param(False, 4, 1, [], id="undeclared-back-to-default"),
        pytest.param(False, 4, 3, [("/spec/replicas", DriftKind.ADDED, None, 3)], id="undeclared-already-drifted"),
    ],
)
def test_a_scale_is_judged_as_the_change_of_the_parents_replicas(
    declared_replicas: bool, old: int, new: int, expected: list[tuple[str, DriftKind, Any, Any]]
) -> None:
    decision = judged(scale_request(new, old), git(replicas=declared_replicas))
    assert [(i.path, i.kind, i.desired, i.live) for i in decision.items] == expected
    assert decision.allowed is (not expected)
    if expected:
        assert "/spec/replicas" in decision.message


def test_a_scale_by_the_autoscaler_is_allowed_only_where_an_hpa_in_git_scales_the_object() -> None:
    req = scale_request(9, 2, user="system:serviceaccount:kube-system:horizontal-pod-autoscaler")
    decision = judged(req, git(policy=DriftPolicy(autoscaled=True)))
    assert decision == Decision(True, Verdict.ALLOWED, reason="an HPA in Git scales this object")
    # Without an HPA in Git, the name is anyone's who can impersonate the ServiceAccount.
    assert judged(req, git()).verdict is Verdict.DENIED
    # And the autoscaler's name earns nothing outside scale.
    other = update(
        edited(stored(), set_replicas(9)), user="system:serviceaccount:kube-system:horizontal-pod-autoscaler"
    )
    assert judged(other, git(policy=DriftPolicy(autoscaled=True))).verdict is Verdict.DENIED


def test_a_scale_object_carries_nothing_else_that_could_count() -> None:
    """Only replicas can differ: a Scale's own metadata and status are not the parent's."""
    new = scale(2)
    new["metadata"]["labels"] = {"app": "changed"}
    new["status"] = {"replicas": 99}
    req = request("UPDATE", new, scale(2), sub="scale", kind=("autoscaling", "v1", "Scale"))
    assert judged(req, git()) == Decision(True, Verdict.ALLOWED, reason="adds no drift")


# --- break-glass -----------------------------------------------------------------------------------------------------
def break_glass(reason: str) -> Callable[[KubeObject], None]:
    return set_annotation(BREAK_GLASS_ANNOTATION, reason)


@pytest.mark.parametrize("mode", ["enforce", "warn", "audit"])
@pytest.mark.parametrize(
    "operation",
    [
        pytest.param("UPDATE", id="update"),
        pytest.param("DELETE", id="delete"),
    ],
)
def test_break_glass_with_a_reason_from_a_member_is_allowed_and_recorded(mode: str, operation: str) -> None:
    drifted = edited(stored(), set_image("registry.local/web:hotfix"), break_glass("INC-1234: outage"))
    if operation == "UPDATE":
        req = update(drifted, groups=("developers", "gitops:break-glass"))
    else:
        req = request("DELETE", None, drifted, groups=("gitops:break-glass",))
    decision = judged(req, git(mode))
    assert decision.allowed
    assert decision.verdict is Verdict.BREAK_GLASS
    assert decision.record
    assert decision.reason == "INC-1234: outage"
    assert decision.items
    assert len(decision.warnings) == 1
    assert "break-glass" in decision.warnings[0]
    assert "INC-1234: outage" in decision.warnings[0]


def test_break_glass_honours_the_configured_group() -> None:
    exemptions = Exemptions(break_glass_group="sre-oncall")
    after = edited(stored(), set_image("registry.local/web:hotfix"), break_glass("INC-9"))
    assert judged(update(after, groups=("sre-oncall",)), git(), exemptions=exemptions).verdict is Verdict.BREAK_GLASS
    denied = judged(update(after, groups=("gitops:break-glass",)), git(), exemptions=exemptions)
    assert not denied.allowed
    assert "sre-oncall" in denied.message


def test_break_glass_from_a_non_member_is_denied_with_the_hint() -> None:
    after = edited(stored(), set_image("registry.local/web:hotfix"), break_glass("INC-1234"))
    decision = judged(update(after, groups=("developers",)), git())
    assert not decision.allowed
    assert decision.verdict is Verdict.DENIED
    assert decision.record
    assert "the break-glass annotation is honoured only for members of gitops:break-glass" in decision.message
    assert "kubectl gitops sync" in decision.message


@pytest.mark.parametrize("reason", ["", None])
def test_break_glass_without_a_reason_is_not_honoured(reason: str | None) -> None:
    def annotate(o: KubeObject) -> None:
        o["metadata"]["annotations"][BREAK_GLASS_ANNOTATION] = reason

    after = edited(stored(), set_image("registry.local/web:hotfix"), annotate)
    decision = judged(update(after, groups=("gitops:break-glass",)), git())
    assert not decision.allowed
    assert f"annotate the object with {BREAK_GLASS_ANNOTATION}=<reason>" in decision.message


def test_break_glass_on_a_request_without_drift_is_an_ordinary_allow() -> None:
    after = edited(stored(), break_glass("INC-1"))
    decision = judged(update(after, groups=("gitops:break-glass",)), git())
    assert decision == Decision(True, Verdict.ALLOWED, reason="adds no drift")


# --- Secrets ---------------------------------------------------------------------------------------------------------
GIT_PASSWORD, LIVE_PASSWORD, NEW_TOKEN = "hunter2-from-git", "s3cr3t-typed-by-hand", "tok-abcdef-123456"


def b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


SECRET_VALUES = [v for raw in (GIT_PASSWORD, LIVE_PASSWORD, NEW_TOKEN) for v in (raw, b64(raw))]


def secret(**data: str) -> KubeObject:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db", "namespace": "shop", "labels": {TRACKING_LABEL: "shop"}},
        "type": "Opaque",
        "data": {k: b64(v) for k, v in data.items()},
    }


def secret_git(mode: str) -> GitObject:
    fields: dict[str, Any] = {"f:type": {}, "f:data": {"f:password": {}}}
    return git_object(secret(password=GIT_PASSWORD), fields, mode=mode, app=APP, revision=REVISION)


def secret_request(operation: str, new: KubeObject | None, old: KubeObject | None, **kw: Any) -> AdmissionRequest:
    return request(operation, new, old, kind=("", "v1", "Secret"), resource=("", "v1", "secrets"), name="db", **kw)


SECRET_REQUESTS = [
    pytest.param("UPDATE", secret(password=LIVE_PASSWORD), secret(password=GIT_PASSWORD), id="changed-value"),
    pytest.param(
        "UPDATE", secret(password=GIT_PASSWORD, token=NEW_TOKEN), secret(password=GIT_PASSWORD), id="added-key"
    ),
    pytest.param("UPDATE", secret(password=LIVE_PASSWORD, token=NEW_TOKEN), secret(password=GIT_PASSWORD), id="both"),
    pytest.param("UPDATE", edited(secret(), lambda o: o.pop("data")), secret(password=GIT_PASSWORD), id="data-removed"),
    pytest.param("UPDATE", secret(token=NEW_TOKEN), secret(password=GIT_PASSWORD), id="key-replaced"),
    pytest.param("CREATE", secret(password=LIVE_PASSWORD, token=NEW_TOKEN), None, id="create"),
    pytest.param("CREATE", edited(secret(), lambda o: o.pop("data")), None, id="create-without-data"),
    pytest.param("DELETE", None, secret(password=LIVE_PASSWORD), id="delete"),
]


@pytest.mark.parametrize(("operation", "new", "old"), SECRET_REQUESTS)
@pytest.mark.parametrize("mode", ["enforce", "warn", "audit"])
@pytest.mark.parametrize("glass", [False, True])
def test_no_secret_value_reaches_the_decision(
    operation: str, new: KubeObject | None, old: KubeObject | None, mode: str, glass: bool
) -> None:
    new, old = copy.deepcopy(new), copy.deepcopy(old)
    if glass:
        for obj in (new, old):
            if obj is not None:
                obj["metadata"]["annotations"] = {BREAK_GLASS_ANNOTATION: "INC-7"}
    groups = ("gitops:break-glass",) if glass else ("developers",)
    decision = judged(secret_request(operation, new, old, groups=groups), secret_git(mode))
    assert decision.items, "every one of these requests adds drift"
    seen = repr(decision) + json.dumps([i.desired for i in decision.items] + [i.live for i in decision.items])
    for value in SECRET_VALUES:
        assert value not in seen


def test_a_secret_change_is_visible_as_markers() -> None:
    decision = judged(
        secret_request("UPDATE", secret(password=LIVE_PASSWORD), secret(password=GIT_PASSWORD)), secret_git("enforce")
    )
    [item] = decision.items
    assert item.path == "/data/password"
    assert item.desired == MASKER.marker(b64(GIT_PASSWORD))
    assert item.live == MASKER.marker(b64(LIVE_PASSWORD))
    assert item.desired != item.live
    assert f"Git has {item.desired}, request has {item.live}" in decision.message


def test_a_secret_unchanged_but_relabelled_is_allowed() -> None:
    new = edited(secret(password=GIT_PASSWORD), lambda o: o["metadata"]["labels"].__setitem__("x", "y"))
    decision = judged(secret_request("UPDATE", new, secret(password=GIT_PASSWORD)), secret_git("enforce"))
    assert decision.allowed


# --- ways around the gate (issue: the gate holds) ------------------------------------------------------------------
def without_label(name: str) -> Callable[[KubeObject], None]:
    return lambda o: o["metadata"]["labels"].pop(name)


def without_annotation(name: str) -> Callable[[KubeObject], None]:
    return lambda o: o["metadata"]["annotations"].pop(name)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(without_label(TRACKING_LABEL), id="label-removed"),
        pytest.param(set_label(TRACKING_LABEL, "other"), id="label-changed"),
        pytest.param(without_annotation(TRACKING_ANNOTATION), id="annotation-removed"),
        pytest.param(set_annotation(TRACKING_ANNOTATION, "gitops-system/x:apps/Deployment:shop/web"), id="forged"),
    ],
)
def test_our_tracking_marks_are_declared_fields(change: Callable[[KubeObject], None]) -> None:
    """Taking the label off would take the object out of the webhook's sight for good."""
    decision = judged(update(edited(stored(), change)), git())
    assert decision.verdict is Verdict.DENIED
    assert decision.items[0].kind is DriftKind.CHANGED


def test_removing_every_label_at_once_names_the_tracking_label() -> None:
    decision = judged(update(edited(stored(), lambda o: o["metadata"].pop("labels"))), git())
    assert decision.verdict is Verdict.DENIED
    assert f"/metadata/labels/{TRACKING_LABEL.replace('/', '~1')}" in [i.path for i in decision.items]


def duplicate_env(name: str, value: str) -> Callable[[KubeObject], None]:
    return lambda o: app_container(o)["env"].append({"name": name, "value": value})


@pytest.mark.parametrize("mode", ["enforce", "warn", "audit"])
def test_a_second_list_entry_with_a_key_git_declares_is_drift(mode: str) -> None:
    """The API server accepts a duplicate env name with a warning, and the last copy wins at run time."""
    decision = judged(update(edited(stored(), duplicate_env("MODE", "evil"))), git(mode))
    assert decision.record
    assert decision.allowed is (mode != "enforce")
    assert [(i.path, i.kind, i.live) for i in decision.items] == [
        (f"{CONTAINERS}/0/env/2", DriftKind.ADDED, {"name": "MODE", "value": "evil"})
    ]


def test_a_duplicate_container_name_is_drift() -> None:
    twin = lambda o: o["spec"]["template"]["spec"]["containers"].append(  # noqa: E731
        {**copy.deepcopy(app_container(o)), "image": "evil"}
    )
    assert judged(update(edited(stored(), twin)), git()).verdict is Verdict.DENIED


def test_removing_a_duplicate_again_is_allowed() -> None:
    drifted = edited(stored(), duplicate_env("MODE", "evil"))
    assert judged(update(stored(), drifted), git()).verdict is Verdict.ALLOWED


OWNER = {"apiVersion": "v1", "kind": "ConfigMap", "name": "decoy", "uid": "0b5e0f36-0000-4000-8000-00000000dec0"}


def test_an_owner_git_does_not_declare_is_drift() -> None:
    """An owner reference hands the object to the garbage collector: delete the decoy and the object goes."""
    decision = judged(update(edited(stored(), lambda o: o["metadata"].__setitem__("ownerReferences", [OWNER]))), git())
    assert decision.verdict is Verdict.DENIED
    assert decision.items[0].path == "/metadata/ownerReferences"
    # Taking it off again removes drift.
    owned = edited(stored(), lambda o: o["metadata"].__setitem__("ownerReferences", [OWNER]))
    assert judged(update(stored(), owned), git()).verdict is Verdict.ALLOWED


GC = "system:serviceaccount:kube-system:generic-garbage-collector"
NAMESPACE_CONTROLLER = "system:serviceaccount:kube-system:namespace-controller"


@pytest.mark.parametrize(
    ("user", "facts", "allowed"),
    [
        pytest.param(GC, ClusterFacts(owners_gone=True), True, id="gc-owner-gone"),
        pytest.param(GC, ClusterFacts(owners_gone=False), False, id="gc-owner-alive"),
        pytest.param(GC, ClusterFacts(), False, id="gc-unknown"),
        pytest.param(GC, ClusterFacts(namespace_terminating=True), False, id="gc-is-not-the-namespace-controller"),
        pytest.param(NAMESPACE_CONTROLLER, ClusterFacts(namespace_terminating=True), True, id="ns-terminating"),
        pytest.param(NAMESPACE_CONTROLLER, ClusterFacts(namespace_terminating=False), False, id="ns-alive"),
        pytest.param(NAMESPACE_CONTROLLER, ClusterFacts(owners_gone=True), False, id="ns-controller-unknown"),
        pytest.param("alice", ClusterFacts(owners_gone=True, namespace_terminating=True), False, id="alice"),
    ],
)
def test_the_machinery_deletes_only_when_the_cluster_says_so(user: str, facts: ClusterFacts, allowed: bool) -> None:
    decision = judged(
        request("DELETE", None, stored(), user=user, groups=("system:serviceaccounts",)), git(), facts=facts
    )
    assert decision.allowed is allowed
    assert decision.record is (not allowed)


@pytest.mark.parametrize(
    ("user", "facts", "allowed"),
    [
        pytest.param(NAMESPACE_CONTROLLER, ClusterFacts(namespace_terminating=True), True, id="ns-terminating"),
        pytest.param(NAMESPACE_CONTROLLER, ClusterFacts(namespace_terminating=False), False, id="ns-alive"),
        pytest.param(NAMESPACE_CONTROLLER, ClusterFacts(), False, id="ns-unknown"),
        pytest.param(GC, ClusterFacts(owners_gone=True), True, id="gc-owner-gone"),
        pytest.param(GC, ClusterFacts(), False, id="gc-unknown"),
        pytest.param("alice", ClusterFacts(owners_gone=True, namespace_terminating=True), False, id="alice"),
    ],
)
def test_a_terminating_namespace_empties_even_when_its_applications_state_cannot_load(
    user: str, facts: ClusterFacts, allowed: bool
) -> None:
    """In a namespace being deleted nothing can be created, so the state of an Application there may not load (its
    probe fails): the namespace controller's deletions are still the cluster's own, and denying them would leave the
    namespace Terminating for good. Anything else stays failed closed."""
    req = request("DELETE", None, stored(), user=user, groups=("system:serviceaccounts",))
    decision = judged(req, None, unjudged=Unjudged(APP, DriftMode.ENFORCE, "not loaded"), facts=facts)
    assert decision.allowed is allowed


def test_a_finished_job_goes_with_its_time_to_live_only() -> None:
    job_key = ObjectKey("batch", "Job", "shop", "migrate")
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "migrate", "namespace": "shop"},
        "spec": {"ttlSecondsAfterFinished": 60, "template": {}},
    }
    target = GitObject(key=job_key, app=APP, mode=DriftMode.ENFORCE, revision=REVISION, stored=job, declared={})
    done = {**job, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    user = "system:serviceaccount:kube-system:ttl-after-finished-controller"
    kind, resource = ("batch", "v1", "Job"), ("batch", "v1", "jobs")
    finished = request("DELETE", None, done, user=user, kind=kind, resource=resource, name="migrate")
    running = request("DELETE", None, job, user=user, kind=kind, resource=resource, name="migrate")
    assert judged(finished, target).allowed
    assert not judged(running, target).allowed


def test_a_controller_writes_only_its_own_field() -> None:
    pvc_key = ObjectKey("", "PersistentVolumeClaim", "shop", "data")
    pvc: KubeObject = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": "shop"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    declared: dict[str, Any] = {"f:spec": {"f:accessModes": {}, "f:resources": {"f:requests": {"f:storage": {}}}}}
    target = GitObject(key=pvc_key, app=APP, mode=DriftMode.ENFORCE, revision=REVISION, stored=pvc, declared=declared)
    binder = "system:serviceaccount:kube-system:persistent-volume-binder"
    kw: dict[str, Any] = {"kind": ("", "v1", "PersistentVolumeClaim"), "resource": ("", "v1", "persistentvolumeclaims")}
    bound = copy.deepcopy(pvc)
    bound["spec"]["volumeName"] = "pv-1"
    assert judged(request("UPDATE", bound, pvc, user=binder, name="data", **kw), target).allowed
    grown = copy.deepcopy(bound)
    grown["spec"]["resources"]["requests"]["storage"] = "100Gi"
    assert not judged(request("UPDATE", grown, pvc, user=binder, name="data", **kw), target).allowed
    assert not judged(request("UPDATE", bound, pvc, name="data", **kw), target).allowed


def test_a_request_in_another_api_version_is_never_compared_with_git() -> None:
    """Fields of two versions sit in different places: comparing them across versions lets changes through."""
    after = edited(stored(), set_image("registry.local/web:evil"))
    after["apiVersion"] = "apps/v1beta2"
    for mode, verdict in (("enforce", Verdict.DENIED), ("warn", Verdict.WARNED), ("audit", Verdict.RECORDED)):
        decision = judged(update(after, kind=("apps", "v1beta2", "Deployment")), git(mode))
        assert decision.verdict is verdict
        assert decision.record
        assert "apps/v1beta2" in decision.unjudged
        assert "apps/v1" in decision.unjudged


def eviction(name: str = "web", **kw: Any) -> AdmissionRequest:
    body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": "shop"}}
    return request(
        "CREATE", body, None, sub="eviction", kind=("policy", "v1", "Eviction"), resource=("", "v1", "pods"), **kw
    )


def test_an_eviction_of_a_pod_git_declares_is_a_deletion() -> None:
    pod_key = ObjectKey("", "Pod", "shop", "web")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "shop"}, "spec": {}}
    for mode, verdict in (("enforce", Verdict.DENIED), ("warn", Verdict.WARNED), ("audit", Verdict.RECORDED)):
        target = GitObject(key=pod_key, app=APP, mode=DriftMode(mode), revision=REVISION, stored=pod, declared={})
        decision = judged(eviction(), target)
        assert decision.verdict is verdict
        if mode == "enforce":
            assert "evicts Pod shop/web, which Git still declares" in decision.message
    assert judged(eviction(), None) == Decision(True, Verdict.ALLOWED, reason="not managed")


def test_the_injected_token_volume_of_a_pod_is_not_drift_on_create() -> None:
    """The ServiceAccount admission plugin names the projected token volume at random on each creation: Git's stored
    form (a dry run) and the Pod a sync creates carry different names for the same thing."""

    def pod(suffix: str, *, extra: bool = False) -> KubeObject:
        volumes = [{"name": f"kube-api-access-{suffix}", "projected": {"sources": [{"serviceAccountToken": {}}]}}]
        if extra:
            volumes.append({"name": "host", "hostPath": {"path": "/"}})
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web", "namespace": "shop", "labels": {TRACKING_LABEL: "shop"}},
            "spec": {
                "containers": [
                    {
                        "name": "app",
                        "image": "web:1",
                        "volumeMounts": [{"name": f"kube-api-access-{suffix}", "mountPath": "/var/run/secrets"}],
                    }
                ],
                "volumes": volumes,
            },
        }

    fields: dict[str, Any] = {"f:spec": {"f:containers": {k(name="app"): {".": {}, "f:name": {}, "f:image": {}}}}}
    target = git_object(pod("abcde"), fields, app=APP, revision=REVISION)
    kw: dict[str, Any] = {"kind": ("", "v1", "Pod"), "resource": ("", "v1", "pods")}
    assert judged(request("CREATE", pod("x7k2p"), **kw), target).allowed
    assert not judged(request("CREATE", pod("x7k2p", extra=True), **kw), target).allowed


@pytest.mark.parametrize(
    ("mode", "allowed", "verdict"),
    [
        ("enforce", False, Verdict.DENIED),
        ("warn", True, Verdict.WARNED),
        ("audit", True, Verdict.RECORDED),
        ("off", True, Verdict.ALLOWED),
    ],
)
@pytest.mark.parametrize("operation", ["CREATE", "UPDATE", "DELETE"])
def test_what_the_webhook_cannot_judge_fails_closed(mode: str, allowed: bool, verdict: Verdict, operation: str) -> None:
    """Git's state not loaded is never "not managed"."""
    why = "Git's state of gitops-system/shop is not loaded: cannot fetch"
    after = None if operation == "DELETE" else edited(stored(), set_image("registry.local/web:evil"))
    req = request(operation, after, None if operation == "CREATE" else stored())
    decision = judged(req, None, unjudged=Unjudged(APP, DriftMode(mode), why))
    assert decision.allowed is allowed
    assert decision.verdict is verdict
    assert decision.record is (mode != "off")
    assert decision.unjudged == why
    if not allowed:
        assert why in decision.message
        assert "try again" in decision.message


def test_break_glass_works_when_git_cannot_be_judged() -> None:
    after = edited(stored(), set_image("hotfix"), set_annotation(BREAK_GLASS_ANNOTATION, "INC-7: Git is down"))
    req = update(after, user="oncall", groups=("developers", "gitops:break-glass"))
    decision = judged(req, None, unjudged=Unjudged(APP, DriftMode.ENFORCE, "not loaded"))
    assert decision.verdict is Verdict.BREAK_GLASS
    assert decision.record
    assert decision.reason == "INC-7: Git is down"


def test_adding_one_annotation_where_there_were_none_takes_nothing_of_gits_away() -> None:
    """Found by the rule model: before the request the object had no annotations at all (drift, judged when it was
    made); adding an operational one now is no new drift, whereas the map as a whole compared with Git's was."""
    before = edited(stored(), lambda o: o["metadata"].pop("annotations"))
    after = edited(before, lambda o: o["metadata"].__setitem__("annotations", {REVISION_ANNOTATION: "f" * 40}))
    assert judged(update(after, before), git()) == Decision(True, Verdict.ALLOWED, reason="adds no drift")
    # Taking them all away is drift at each key Git declares.
    decision = judged(update(before), git())
    assert {i.path for i in decision.items} == {
        "/metadata/annotations/owner",
        "/metadata/annotations/" + TRACKING_ANNOTATION.replace("/", "~1"),
    }


def test_an_empty_list_where_there_was_none_is_no_change() -> None:
    """Found by the rule model: `env: []` and no env at all are the same object to the API server (it stores
    neither), so a request that turns one into the other changes nothing."""
    before = edited(stored(), lambda o: app_container(o).pop("env"))
    after = edited(before, lambda o: app_container(o).__setitem__("env", []))
    assert judged(update(after, before), git()) == Decision(True, Verdict.ALLOWED, reason="adds no drift")


@pytest.mark.parametrize(
    ("change", "drift"),
    [
        pytest.param(lambda o: None, False, id="git-as-stored"),
        pytest.param(lambda o: o["spec"].__setitem__("revisionHistoryLimit", 0), True, id="another-default"),
        pytest.param(lambda o: o["spec"].__setitem__("strategy", {"type": "Recreate"}), True, id="strategy"),
        pytest.param(
            lambda o: o["spec"]["template"]["spec"].__setitem__("serviceAccountName", "powerful"), True, id="sa"
        ),
    ],
)
def test_a_create_keeps_the_servers_defaults_where_git_leaves_fields_to_it(
    change: Callable[[KubeObject], None], drift: bool
) -> None:
    """Found red-teaming: a labelled CREATE of a missing object could set any value where Git's stored form has a
    server default (a Pod's service account, a Deployment's strategy). Only what the server allocates anew on each
    creation differs by nature."""
    created = edited(stored(), change)
    decision = judged(request("CREATE", created), git())
    assert decision.allowed is (not drift)


def test_what_the_server_allocates_on_each_creation_is_no_drift() -> None:
    service: KubeObject = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"clusterIP": "10.0.0.7", "clusterIPs": ["10.0.0.7"], "ports": [{"port": 80, "nodePort": 30001}]},
    }
    declared: dict[str, Any] = {"f:spec": {"f:ports": {k(port=80, protocol="TCP"): {".": {}, "f:port": {}}}}}
    target = GitObject(ObjectKey("", "Service", "shop", "web"), APP, DriftMode.ENFORCE, REVISION, service, declared)
    created = copy.deepcopy(service)
    created["spec"].update(clusterIP="10.0.0.9", clusterIPs=["10.0.0.9"])
    kw: dict[str, Any] = {"kind": ("", "v1", "Service"), "resource": ("", "v1", "services")}
    assert judged(request("CREATE", created, **kw), target).allowed
    created["spec"]["type"] = "NodePort"
    assert not judged(request("CREATE", created, **kw), target).allowed


@pytest.mark.parametrize(
    ("port", "declared"),
    [
        pytest.param({"name": "https", "port": 443, "protocol": "TCP", "targetPort": "https"}, True, id="named"),
        pytest.param({"port": 80, "protocol": "TCP", "targetPort": 8080}, False, id="protocol-defaulted"),
    ],
)
def test_node_ports_the_server_allocates_on_creation_are_no_drift(port: dict[str, Any], declared: bool) -> None:
    """Found by syncing the realistic corpus through the webhook: a NodePort or LoadBalancer Service Git gives no
    nodePort was denied at its creation, the dry run having allocated another port than the creation (the node
    port sits in a port Git declares, so it counted as a declared field)."""

    def target(node_port: int, git_declares_it: bool) -> GitObject:
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"type": "NodePort", "clusterIP": "10.0.0.7", "ports": [{**port, "nodePort": node_port}]},
        }
        fields: dict[str, Any] = {".": {}, "f:port": {}, "f:targetPort": {}}
        if declared:
            fields |= {"f:name": {}, "f:protocol": {}}
        if git_declares_it:
            fields["f:nodePort"] = {}
        git_fields = {"f:spec": {"f:type": {}, "f:ports": {k(port=port["port"], protocol="TCP"): fields}}}
        return GitObject(ObjectKey("", "Service", "shop", "web"), APP, DriftMode.ENFORCE, REVISION, service, git_fields)

    kw: dict[str, Any] = {"kind": ("", "v1", "Service"), "resource": ("", "v1", "services")}
    created = copy.deepcopy(target(32769, False).stored)
    created["spec"]["clusterIP"] = "10.0.0.9"
    created["spec"]["ports"][0]["nodePort"] = 31824
    assert judged(request("CREATE", created, **kw), target(32769, False)).allowed
    # A node port Git declares is Git's: a creation with another is drift.
    denied = judged(request("CREATE", created, **kw), target(30080, True))
    assert not denied.allowed
    assert [i.path for i in denied.items] == ["/spec/ports/0/nodePort" if declared else "/spec/ports"]
    # After the creation, a node port changed by hand is drift as ever.
    moved = copy.deepcopy(created)
    moved["spec"]["ports"][0]["nodePort"] = 30001
    assert not judged(request("UPDATE", moved, created, **kw), target(32769, False)).allowed


def test_a_request_with_thousands_of_list_items_is_judged_at_once() -> None:
    """Found red-teaming: resolving each changed path scanned its list again, so one patch of 1,200 env entries held
    the webhook for minutes (and the scale entry's failurePolicy Ignore let a scale through meanwhile)."""
    after = edited(
        stored(), lambda o: app_container(o)["env"].extend({"name": f"E{i}", "value": "x"} for i in range(20000))
    )
    decision = judged(update(after), git())
    assert decision.verdict is Verdict.DENIED
    assert len(decision.items) == 257  # judging stops once the verdict is known


def test_a_break_glass_reason_left_on_the_object_is_not_the_requesters() -> None:
    """Found red-teaming: alice annotated the object with a reason (no drift), then oncall's ordinary change was let
    through as break-glass, with alice's words as its reason."""
    planted = edited(stored(), set_annotation(BREAK_GLASS_ANNOTATION, "INC-4711 approved by the CISO"))
    oncall = ("developers", "gitops:break-glass")
    change = edited(planted, set_image("hotfix"))
    assert judged(update(change, planted, user="oncall", groups=oncall), git()).verdict is Verdict.DENIED
    fresh = edited(change, set_annotation(BREAK_GLASS_ANNOTATION, "INC-9: the hotfix"))
    decision = judged(update(fresh, planted, user="oncall", groups=oncall), git())
    assert (decision.verdict, decision.reason) == (Verdict.BREAK_GLASS, "INC-9: the hotfix")


def test_taking_on_our_label_makes_the_whole_object_judged() -> None:
    """Found red-teaming: a missing object created without our label never reaches the webhook; labelling it then
    changed only the marks, which match Git, and its content rode in. Taking on the label is judged as a creation."""
    unlabelled = edited(stored(), set_image("evil"), lambda o: o["metadata"]["labels"].pop(TRACKING_LABEL))
    labelled = edited(unlabelled, set_label(TRACKING_LABEL, "shop"))
    decision = judged(update(labelled, unlabelled), git())
    assert decision.verdict is Verdict.DENIED
    assert [i.path for i in decision.items] == [f"{CONTAINERS}/0/image"]
    # The same object as Git has it may take the label on.
    plain = edited(stored(), lambda o: o["metadata"]["labels"].pop(TRACKING_LABEL))
    assert judged(update(stored(), plain), git()).allowed


def finalizers(*names: str) -> Callable[[KubeObject], None]:
    return lambda o: o["metadata"].__setitem__("finalizers", list(names))


def test_a_finalizer_git_does_not_declare_is_drift_and_taking_one_off_is_not() -> None:
    """Found red-teaming: a finalizer keeps a managed object alive (Terminating, still served) after a sync prunes
    it."""
    decision = judged(update(edited(stored(), finalizers("example.com/keep"))), git())
    assert decision.verdict is Verdict.DENIED
    assert [(i.path, i.live) for i in decision.items] == [("/metadata/finalizers", ["example.com/keep"])]
    two = edited(stored(), finalizers("example.com/keep", "example.com/other"))
    assert judged(update(edited(stored(), finalizers("example.com/keep")), two), git()).allowed  # one taken off
    controller = update(edited(stored(), finalizers("kubernetes.io/pvc-protection")), user=CONTROLLER_PREFIX + "pvc-x")
    assert judged(controller, git()).allowed  # kube-system's controllers set finalizers as their job


def test_a_finalizer_a_controller_sets_with_another_change_earns_nothing() -> None:
    change = edited(stored(), finalizers("kubernetes.io/pvc-protection"), set_image("evil"))
    assert judged(update(change, user=CONTROLLER_PREFIX + "pvc-protection-controller"), git()).verdict is Verdict.DENIED


def test_putting_env_entries_git_declares_in_another_order_is_drift() -> None:
    """Found red-teaming: a $(VAR) in an env entry sees only the entries before it, and init containers run in
    order, so the order of what Git declares there is Git's."""
    swapped = edited(stored(), lambda o: app_container(o)["env"].reverse())
    decision = judged(update(swapped), git())
    assert decision.verdict is Verdict.DENIED
    assert [(i.path, i.desired, i.live) for i in decision.items] == [
        (f"{CONTAINERS}/0/env/(order)", ["MODE", "LEVEL"], ["LEVEL", "MODE"])
    ]
    # Back to Git's order: allowed; an entry added at the end keeps Git's order.
    assert judged(update(stored(), swapped), git()).allowed
    assert [i.path for i in judged(update(edited(stored(), set_env("EXTRA", "1"))), git()).items] == [
        f"{CONTAINERS}/0/env/2"
    ]
