"""The webhook over HTTP: app.test_client() against fakes of Git's state and of the audit log (tests/fakes.py).

FakeSource and FakeAudit implement webhook.app.DesiredSource and AuditSink; FakeAudit seals what it is given with
engine.adapters.audit.seal, as the real store does, and keeps it in memory. What the webhook asks the cluster itself
goes through the real webhook.lookups.ApiLookups to the fake API server. Git's objects are made as the webhook's
index makes them (engine.gitstate.from_probe), from what the API server answers to its probe.
"""

from __future__ import annotations

import copy
import io
import json
import os
import string
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import event, given, note, settings
from hypothesis import strategies as st

from engine.adapters.audit import verify
from engine.core.admission import BREAK_GLASS_ANNOTATION, GitObject, Unjudged
from engine.core.errors import ApiError
from engine.core.objects import (
    REVISION_ANNOTATION,
    TRACKING_ANNOTATION,
    TRACKING_LABEL,
    AppRef,
    DriftMode,
    KubeObject,
    ObjectKey,
)
from webhook.app import AuditSink, DesiredSource, create_app, webhook_of
from webhook.lookups import ApiLookups
from webhook.review import API_VERSION

from ..fakes import CONFIGMAPS, SIGNER, FakeAudit, FakeCluster, FakeSource, Request, namespace
from .core import rule_model
from .stored import git_object, k

DEPLOYMENT = ObjectKey("apps", "Deployment", "shop", "web")
CONFIGMAP = ObjectKey("", "ConfigMap", "shop", "settings")
APP = AppRef("gitops-system", "shop")
REVISION = "0123456789abcdef0123456789abcdef01234567"
UID = "705ab4f5-6393-11e8-b7cc-42010a800002"


# --- Git's objects ---------------------------------------------------------------------------------------------------
def deployment() -> KubeObject:
    """Git's Deployment as stored (without the tracking annotation a sync adds: tests of webhook.front replace its
    annotations whole)."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "labels": {"app": "web", TRACKING_LABEL: "shop"},
            "annotations": {REVISION_ANNOTATION: REVISION},
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [{"name": "app", "image": "registry.local/web:1.0", "imagePullPolicy": "Always"}]
                },
            },
        },
        "status": {"replicas": 2},
    }


# What our manager owns after a dry-run apply of the probe of Git's Deployment (which carries no tracking label).
DEPLOYMENT_FIELDS = {
    "f:metadata": {
        "f:labels": {"f:app": {}},
        "f:annotations": {f"f:{REVISION_ANNOTATION}": {}},
    },
    "f:spec": {
        "f:replicas": {},
        "f:selector": {},
        "f:template": {
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {"f:containers": {k(name="app"): {".": {}, "f:name": {}, "f:image": {}}}},
        },
    },
}


def configmap() -> KubeObject:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "settings",
            "namespace": "shop",
            "labels": {TRACKING_LABEL: "shop"},
        },
        "data": {"level": "info"},
    }


def git_objects(mode: str = "enforce") -> list[GitObject]:
    """Git's Deployment and ConfigMap as the webhook's index holds them."""
    configmap_fields: dict[str, Any] = {"f:data": {"f:level": {}}}
    return [
        git_object(deployment(), DEPLOYMENT_FIELDS, mode=mode, app=APP, revision=REVISION),
        git_object(configmap(), configmap_fields, mode=mode, app=APP, revision=REVISION),
    ]


def with_image(image: str) -> KubeObject:
    obj = deployment()
    obj["spec"]["template"]["spec"]["containers"][0]["image"] = image
    return obj


def review(
    operation: str = "UPDATE",
    obj: KubeObject | None = None,
    old: KubeObject | None = None,
    *,
    uid: str = UID,
    user: str = "alice",
    groups: tuple[str, ...] = ("developers",),
    **more: Any,
) -> dict[str, Any]:
    """An AdmissionReview about the Deployment, as the API server sends it."""
    request: dict[str, Any] = {
        "uid": uid,
        "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
        "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
        "requestKind": {"group": "apps", "version": "v1", "kind": "Deployment"},
        "name": "web",
        "namespace": "shop",
        "operation": operation,
        "userInfo": {"username": user, "uid": "u-1", "groups": list(groups)},
        "object": deployment() if obj is None and operation != "DELETE" else obj,
        "oldObject": deployment() if old is None and operation != "CREATE" else old,
        "dryRun": False,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "UpdateOptions", "fieldManager": "kubectl-edit"},
        **more,
    }
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "request": request}


def make_app(
    source: DesiredSource | None = None, audit: AuditSink | None = None, **config: Any
) -> tuple[Flask, FakeSource, FakeAudit]:
    src = source if source is not None else FakeSource(git_objects())
    sink = audit if audit is not None else FakeAudit()
    app = create_app(config, source=src, audit=sink)
    assert isinstance(src, FakeSource)
    assert isinstance(sink, FakeAudit)
    return app, src, sink


def post(client: FlaskClient, body: Any) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    resp = client.post("/validate", data=data, content_type="application/json")
    return resp.status_code, resp.get_json(silent=True)


@pytest.fixture
def app() -> Flask:
    return make_app()[0]


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def source_of(app: Flask) -> FakeSource:
    src = webhook_of(app).source
    assert isinstance(src, FakeSource)
    return src


def audit_of(app: Flask) -> FakeAudit:
    sink = webhook_of(app).audit
    assert isinstance(sink, FakeAudit)
    return sink


def assert_well_formed(body: Any, uid: str = UID) -> dict[str, Any]:
    assert body["apiVersion"] == API_VERSION
    assert body["kind"] == "AdmissionReview"
    answer: dict[str, Any] = body["response"]
    assert answer["uid"] == uid
    assert isinstance(answer["allowed"], bool)
    return answer


# --- answers ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("uid", [UID, "x", "ünïcödé-uid", "a" * 300])
def test_a_valid_review_gets_an_answer_with_its_uid_and_api_version(client: FlaskClient, uid: str) -> None:
    status, body = post(client, review(uid=uid))
    assert status == 200
    answer = assert_well_formed(body, uid)
    assert answer == {"uid": uid, "allowed": True}


def test_a_denial_is_a_403_status_with_a_message(app: Flask, client: FlaskClient, capsys: Any) -> None:
    status, body = post(client, review(obj=with_image("registry.local/web:evil")))
    assert status == 200
    answer = assert_well_formed(body)
    assert answer["allowed"] is False
    assert answer["status"]["code"] == 403
    assert answer["status"]["reason"] == "Forbidden"
    message = answer["status"]["message"]
    assert "/spec/template/spec/containers/0/image" in message
    assert "registry.local/web:1.0" in message
    assert "registry.local/web:evil" in message
    assert "kubectl gitops sync" in message
    assert "warnings" not in answer
    assert source_of(app).lookups == [(DEPLOYMENT, REVISION)]


def test_warn_mode_answers_allowed_with_warnings() -> None:
    app, _, audit = make_app(FakeSource(git_objects("warn")))
    status, body = post(app.test_client(), review(obj=with_image("registry.local/web:2.0")))
    answer = assert_well_formed(body)
    assert status == 200
    assert answer["allowed"] is True
    assert "status" not in answer
    assert isinstance(answer["warnings"], list)
    assert len(answer["warnings"]) == 1
    assert all(isinstance(w, str) for w in answer["warnings"])
    assert "registry.local/web:2.0" in answer["warnings"][0]
    assert [r["decision"] for r in audit.records] == ["warned"]


@pytest.mark.parametrize("mode", ["enforce", "warn", "audit"])
def test_a_dry_run_is_judged_but_never_recorded(mode: str, capsys: pytest.CaptureFixture[str]) -> None:
    app, _, audit = make_app(FakeSource(git_objects(mode)))
    status, body = post(app.test_client(), review(obj=with_image("registry.local/web:evil"), dryRun=True))
    answer = assert_well_formed(body)
    assert status == 200
    assert answer["allowed"] is (mode != "enforce")
    assert bool(answer.get("warnings")) is (mode == "warn")
    assert audit.records == []
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(("mode", "verdict"), [("enforce", "denied"), ("warn", "warned"), ("audit", "recorded")])
def test_a_recorded_decision_is_in_the_audit_log_and_on_stdout(
    mode: str, verdict: str, capsys: pytest.CaptureFixture[str]
) -> None:
    app, _, audit = make_app(FakeSource(git_objects(mode)))
    post(app.test_client(), review(obj=with_image("registry.local/web:evil"), user="bob", groups=("devs", "b")))
    [record] = audit.records
    assert record["decision"] == verdict
    assert record["user"] == "bob"
    assert record["groups"] == ["b", "devs"]
    assert record["requestUID"] == UID
    assert record["object"] == DEPLOYMENT.as_dict()
    assert record["application"] == str(APP)
    assert record["fields"] == [
        {
            "path": "/spec/template/spec/containers/0/image",
            "kind": "changed",
            "git": "registry.local/web:1.0",
            "requested": "registry.local/web:evil",
        }
    ]
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in lines] == [{"auditRecord": record}]
    assert verify(audit.records, SIGNER.public_key()) == []


def test_every_attempt_extends_one_chain(capsys: pytest.CaptureFixture[str]) -> None:
    app, _, audit = make_app()
    client = app.test_client()
    for i in range(5):
        post(client, review(uid=f"uid-{i}", obj=with_image(f"registry.local/web:{i}")))
    post(client, review(uid="no-drift"))
    assert [r["requestUID"] for r in audit.records] == [f"uid-{i}" for i in range(5)]
    assert [r["sequence"] for r in audit.records] == [1, 2, 3, 4, 5]
    assert verify(audit.records, SIGNER.public_key()) == []
    assert len(capsys.readouterr().out.splitlines()) == 5


def test_break_glass_through_the_webhook_is_allowed_and_recorded() -> None:
    app, _, audit = make_app()
    obj = with_image("registry.local/web:hotfix")
    obj["metadata"]["annotations"][BREAK_GLASS_ANNOTATION] = "INC-1234"
    status, body = post(app.test_client(), review(obj=obj, groups=("gitops:break-glass",)))
    assert status == 200
    answer = assert_well_formed(body)
    assert answer["allowed"] is True
    assert any("INC-1234" in w for w in answer["warnings"])
    assert [(r["decision"], r["reason"]) for r in audit.records] == [("break-glass", "INC-1234")]


@pytest.mark.parametrize("mode", ["enforce", "warn", "audit"])
def test_without_the_audit_log_a_drift_attempt_is_denied(mode: str, capsys: pytest.CaptureFixture[str]) -> None:
    app, _, _ = make_app(FakeSource(git_objects(mode)), FakeAudit(fail="the API server refused: etcd is down"))
    status, body = post(app.test_client(), review(obj=with_image("registry.local/web:evil")))
    assert status == 200
    answer = assert_well_formed(body)
    assert answer["allowed"] is False
    assert answer["status"]["code"] == 403
    assert "audit log is unavailable" in answer["status"]["message"]
    assert "etcd is down" in answer["status"]["message"]
    assert capsys.readouterr().out == ""


def test_without_the_audit_log_a_request_that_adds_no_drift_still_passes() -> None:
    app, _, _ = make_app(audit=FakeAudit(fail="down"))
    client = app.test_client()
    assert post(client, review())[1]["response"]["allowed"] is True
    assert post(client, review(obj=with_image("evil"), dryRun=True))[1]["response"]["status"]["code"] == 403


def test_a_scale_is_judged_against_its_parent() -> None:
    app, source, audit = make_app()
    scale = {
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"replicas": 7},
    }
    old = copy.deepcopy(scale) | {"spec": {"replicas": 2}}
    body = review(
        obj=scale, old=old, subResource="scale", kind={"group": "autoscaling", "version": "v1", "kind": "Scale"}
    )
    answer = assert_well_formed(post(app.test_client(), body)[1])
    assert answer["allowed"] is False
    assert "/spec/replicas: Git has 2, request has 7" in answer["status"]["message"]
    assert source.lookups == [(DEPLOYMENT, "")]
    assert [r["subResource"] for r in audit.records] == ["scale"]


@pytest.mark.parametrize(("claimed", "allowed"), [("shop", False), ("someone-elses-app", True), ("", True)])
def test_a_new_object_that_claims_tracking_but_is_not_in_git(claimed: str, allowed: bool) -> None:
    app, _, _ = make_app()
    obj = deployment()
    obj["metadata"]["name"] = "rogue"
    obj["metadata"]["labels"] = {TRACKING_LABEL: claimed} if claimed else {}
    tracking = {TRACKING_ANNOTATION: f"gitops-system/{claimed}:apps/Deployment:shop/rogue"} if claimed else {}
    obj["metadata"]["annotations"] = tracking
    answer = assert_well_formed(post(app.test_client(), review("CREATE", obj, name="rogue"))[1])
    assert answer["allowed"] is allowed


@pytest.mark.parametrize(("user", "allowed"), [("system:node:w1", True), ("alice", False)])
def test_delete_through_the_webhook(user: str, allowed: bool) -> None:
    app, _, _ = make_app()
    groups = ("system:nodes", "system:authenticated") if user.startswith("system:node:") else ("developers",)
    answer = assert_well_formed(
        post(app.test_client(), review("DELETE", None, deployment(), user=user, groups=groups))[1]
    )
    assert answer["allowed"] is allowed


def test_configured_exemptions_come_from_the_config() -> None:
    app, _, audit = make_app(EXEMPT_USERS="ci-bot, deployer", EXEMPT_GROUPS="platform")
    client = app.test_client()
    for user, groups in [("ci-bot", ()), ("deployer", ()), ("x", ("platform",))]:
        answer = assert_well_formed(post(client, review(obj=with_image("evil"), user=user, groups=groups))[1])
        assert answer["allowed"] is True
    assert audit.records == []


def test_a_bug_while_judging_is_a_denial_with_a_reason_not_a_500() -> None:
    source = FakeSource(git_objects())
    source.fail = True
    app, _, _ = make_app(source)
    status, body = post(app.test_client(), review())
    assert status == 200
    answer = assert_well_formed(body)
    assert answer["allowed"] is False
    assert "internal error" in answer["status"]["message"]


# --- malformed bodies ------------------------------------------------------------------------------------------------
def changed(path: str, value: Any) -> dict[str, Any]:
    """A valid review with one field set (or removed, for `...`)."""
    body = review()
    *parents, last = path.split(".")
    target = body
    for p in parents:
        target = target[p]
    if value is ...:
        del target[last]
    else:
        target[last] = value
    return body


MALFORMED = [
    pytest.param(b"this is not json", "not valid JSON", id="not-json"),
    pytest.param(b"", "not valid JSON", id="empty"),
    pytest.param(b"\xff\xfe\x00garbage", "not valid JSON", id="not-utf8"),
    pytest.param([review()], "must be a JSON object", id="json-array"),
    pytest.param("AdmissionReview", "must be a JSON object", id="json-string"),
    pytest.param(None, "must be a JSON object", id="json-null"),
    pytest.param(changed("apiVersion", "admission.k8s.io/v1beta1"), "apiVersion", id="wrong-api-version"),
    pytest.param(changed("apiVersion", ...), "apiVersion", id="no-api-version"),
    pytest.param(changed("kind", "ConversionReview"), "kind must be AdmissionReview", id="wrong-kind"),
    pytest.param(changed("request", ...), "request is missing", id="missing-request"),
    pytest.param(changed("request", "x"), "request is missing or not an object", id="request-string"),
    pytest.param(changed("request.uid", ...), "request.uid", id="missing-uid"),
    pytest.param(changed("request.uid", ""), "request.uid", id="empty-uid"),
    pytest.param(changed("request.uid", 42), "request.uid", id="uid-number"),
    pytest.param(changed("request.operation", "PATCH"), "request.operation", id="bad-operation"),
    pytest.param(changed("request.operation", ...), "request.operation", id="no-operation"),
    pytest.param(changed("request.userInfo", "alice"), "request.userInfo", id="user-info-string"),
    pytest.param(changed("request.userInfo", ...), "request.userInfo", id="no-user-info"),
    pytest.param(changed("request.userInfo.username", ["alice"]), "username", id="username-list"),
    pytest.param(changed("request.userInfo.groups", [1, 2]), "groups", id="groups-not-strings"),
    pytest.param(changed("request.userInfo.groups", "developers"), "groups", id="groups-string"),
    pytest.param(changed("request.kind", "Deployment"), "request.kind", id="kind-string"),
    pytest.param(changed("request.kind.kind", 5), "request.kind.kind", id="kind-kind-number"),
    pytest.param(changed("request.resource", None), "request.resource", id="resource-null"),
    pytest.param(changed("request.resource.group", {}), "request.resource.group", id="resource-group-object"),
    pytest.param(changed("request.name", 7), "request.name", id="name-number"),
    pytest.param(changed("request.namespace", ["shop"]), "request.namespace", id="namespace-list"),
    pytest.param(changed("request.subResource", 1), "request.subResource", id="subresource-number"),
    pytest.param(changed("request.object", [deployment()]), "request.object", id="object-list"),
    pytest.param(changed("request.oldObject", "x"), "request.oldObject", id="old-object-string"),
    pytest.param(changed("request.object.metadata", "web"), "request.object.metadata", id="metadata-string"),
    pytest.param(changed("request.object.metadata.labels", "app=web"), "labels", id="labels-string"),
    pytest.param(changed("request.oldObject.metadata.annotations", ["a"]), "annotations", id="annotations-list"),
    pytest.param(changed("request.dryRun", "true"), "request.dryRun", id="dry-run-string"),
    pytest.param(changed("request.dryRun", 1), "request.dryRun", id="dry-run-number"),
]


@pytest.mark.parametrize(("body", "reason"), MALFORMED)
def test_a_malformed_review_is_a_400_with_a_reason(client: FlaskClient, app: Flask, body: Any, reason: str) -> None:
    status, answer = post(client, body)
    assert status == 400
    assert answer["error"] == "bad AdmissionReview"
    assert reason in answer["reason"]
    assert audit_of(app).records == []


def test_a_body_larger_than_the_limit_is_refused_unread() -> None:
    app, source, _ = make_app(MAX_REQUEST_BYTES=10_000)
    body = review(obj=configmap() | {"data": {"blob": "x" * 20_000}})
    status, answer = post(app.test_client(), body)
    assert status == 400
    assert answer["reason"] == "the body is larger than 10000 bytes"
    assert source.lookups == []


def test_the_default_limit_is_8_mib() -> None:
    app, _, _ = make_app()
    status, answer = post(app.test_client(), b" " * (8 * 1024 * 1024 + 1))
    assert status == 400
    assert "larger than 8388608 bytes" in answer["reason"]


def test_only_post_is_served_on_validate(client: FlaskClient) -> None:
    answer = client.get("/validate")
    assert answer.status_code == 405
    assert answer.headers["Allow"] == "POST"


def wsgi_call(app: Flask, body: bytes, **environ: Any) -> tuple[str, dict[str, str], bytes]:
    """One request straight through the WSGI interface, as gunicorn makes it (no test client in between)."""
    got: dict[str, Any] = {}

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: object = None
    ) -> Callable[[bytes], object]:
        got["status"], got["headers"] = status, dict(headers)
        return lambda data: None  # the `write` of WSGI, which Flask never calls

    env = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/validate",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "8443",
        "wsgi.url_scheme": "https",
        "wsgi.input": io.BytesIO(body),
        **environ,
    }
    payload = b"".join(app(env, start_response))
    return got["status"], got["headers"], payload


def test_a_chunked_body_is_read_up_to_the_limit_only() -> None:
    app, source, _ = make_app(MAX_REQUEST_BYTES=10_000)
    big = review(obj=configmap() | {"data": {"blob": "x" * 20_000}})
    status, _, payload = wsgi_call(app, json.dumps(big).encode())  # no CONTENT_LENGTH: a chunked request
    assert status == "400 Bad Request"
    assert json.loads(payload)["reason"] == "the body is larger than 10000 bytes"
    assert source.lookups == []


def test_a_chunked_review_within_the_limit_is_answered() -> None:
    app, _, _ = make_app()
    status, headers, payload = wsgi_call(app, json.dumps(review()).encode())
    assert status == "200 OK"
    assert headers["Content-Type"] == "application/json"
    assert int(headers["Content-Length"]) == len(payload)
    assert json.loads(payload)["response"]["uid"] == review()["request"]["uid"]


# --- health and metrics ----------------------------------------------------------------------------------------------
def test_healthz(client: FlaskClient) -> None:
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.get_json() == {"status": "ok"}


def test_readyz_waits_for_the_desired_state() -> None:
    app, source, _ = make_app(FakeSource(git_objects(), ready=False))
    client = app.test_client()
    resp = client.get("/readyz")
    assert resp.status_code == 503
    assert resp.get_json()["ready"] is False
    source.ready = True
    resp = client.get("/readyz")
    assert resp.status_code == 200
    assert resp.get_json()["applications"][str(APP)]["objects"] == 2


def test_no_background_refresh_when_turned_off(app: Flask) -> None:
    assert source_of(app).refreshes == 0


def test_metrics_count_decisions_and_time_them(client: FlaskClient) -> None:
    before = client.get("/metrics").get_data(as_text=True)
    assert "gitops_webhook_decision_seconds_count 0.0" in before
    post(client, review(obj=with_image("evil")))
    post(client, review())
    post(client, review())
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.content_type.startswith("text/plain")
    text = resp.get_data(as_text=True)
    assert 'gitops_webhook_decisions_total{mode="enforce",verdict="denied"} 1.0' in text
    assert 'gitops_webhook_decisions_total{mode="enforce",verdict="allowed"} 2.0' in text
    assert "gitops_webhook_decision_seconds_bucket" in text
    assert "gitops_webhook_decision_seconds_count 3.0" in text
    assert "gitops_webhook_desired_state_age_seconds 2.5" in text


def test_apps_do_not_share_metrics() -> None:
    first, _, _ = make_app()
    second, _, _ = make_app()
    post(first.test_client(), review())
    assert "gitops_webhook_decision_seconds_count 0.0" in second.test_client().get("/metrics").get_data(as_text=True)


def test_create_app_needs_a_cluster_unless_both_adapters_are_given() -> None:
    with pytest.raises(ValueError, match="needs `kube`"):
        create_app(source=FakeSource())


@pytest.mark.parametrize("where", ["spec", "data"])
@pytest.mark.parametrize("opener", ['{"a":', "["])
def test_no_nesting_depth_up_to_the_parsers_limit_is_a_500(where: str, opener: str) -> None:
    """Whatever json.loads accepts must also survive being judged, recorded and logged: the depths just under the
    parser's recursion limit are where a later json.dumps of the same value, a few frames and levels deeper, fails."""
    app, _, _ = make_app(audit=FakeAudit(keep=False))
    client = app.test_client()
    closer = "}" if opener.startswith("{") else "]"
    failed = []
    for depth in range(800, 1100):
        body = review(obj=with_image("registry.local/web:deep"))
        body["request"]["object"][where] = "__NESTED__"
        raw = json.dumps(body).replace('"__NESTED__"', opener * depth + "1" + closer * depth).encode()
        status, answer = post(client, raw)
        if status == 400:
            assert "not valid JSON" in answer["reason"] or "nests deeper than" in answer["reason"]
        elif status == 200:
            assert_well_formed(answer)
        else:
            failed.append((depth, status))
    assert failed == []


# --- fuzzing ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fuzz_client() -> FlaskClient:
    app = create_app(source=FakeSource(git_objects()), audit=FakeAudit(keep=False))
    return app.test_client()


FUZZ = settings(max_examples=300, deadline=None, database=None, derandomize=True)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


def paths(value: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    if isinstance(value, dict):
        for key, child in value.items():
            yield (*prefix, key)
            yield from paths(child, (*prefix, key))


BASE = review(obj=with_image("registry.local/web:fuzz"))
PATHS = sorted(paths(BASE))


def replaced(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    body = copy.deepcopy(BASE)
    target = body
    for key in path[:-1]:
        target = target[key]
    if value is ...:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return body


def value_at(path: tuple[str, ...]) -> Any:
    value: Any = BASE
    for key in path:
        value = value[key]
    return value


def other_type(path: tuple[str, ...]) -> st.SearchStrategy[Any]:
    original = type(value_at(path))
    return st.just(...) | json_values.filter(lambda v: type(v) is not original)


def assert_answered(status: int, body: Any, uid: Any = None) -> None:
    assert status in (200, 400), status
    assert body is not None, "the answer is JSON"
    if status == 400:
        assert isinstance(body["reason"], str)
        assert body["reason"]
        return
    assert body["apiVersion"] == "admission.k8s.io/v1"
    assert body["kind"] == "AdmissionReview"
    assert isinstance(body["response"]["allowed"], bool)
    assert isinstance(body["response"]["uid"], str)
    if uid is not None:
        assert body["response"]["uid"] == uid
    if not body["response"]["allowed"]:
        assert body["response"]["status"]["code"] == 403
        assert body["response"]["status"]["message"]


@FUZZ
@given(st.binary(max_size=2000))
def test_fuzz_random_bytes(fuzz_client: FlaskClient, data: bytes) -> None:
    assert_answered(*post(fuzz_client, data))


@FUZZ
@given(st.data())
def test_fuzz_truncated_reviews(fuzz_client: FlaskClient, data: st.DataObject) -> None:
    raw = json.dumps(BASE).encode()
    cut = data.draw(st.integers(0, len(raw) - 1))
    assert_answered(*post(fuzz_client, raw[:cut]))


@FUZZ
@given(json_values)
def test_fuzz_random_json(fuzz_client: FlaskClient, value: Any) -> None:
    assert_answered(*post(fuzz_client, value))


@FUZZ
@given(st.sampled_from(PATHS).flatmap(lambda p: st.tuples(st.just(p), other_type(p))))
def test_fuzz_fields_of_the_wrong_type(fuzz_client: FlaskClient, change: tuple[tuple[str, ...], Any]) -> None:
    path, value = change
    assert_answered(*post(fuzz_client, replaced(path, value)), UID)


@FUZZ
@given(
    st.sampled_from(["object.spec", "object.spec.template", "oldObject.spec", "object.metadata.labels", "object"]),
    st.sampled_from(['{"a":', "[", '{"name":"app","x":[', '[{"name":"n","v":']),
    st.integers(1, 3000),
    st.booleans(),
)
def test_fuzz_deeply_nested_objects(fuzz_client: FlaskClient, where: str, opener: str, depth: int, both: bool) -> None:
    closer = "".join("]" if c == "[" else "}" for c in opener if c in "[{")[::-1]
    nested = opener * depth + "1" + closer * depth
    body = review(obj=with_image("registry.local/web:deep"))
    *parents, last = ["request", *where.split(".")]
    target: Any = body
    for key in parents:
        target = target[key]
    target[last] = "__NESTED__"
    if both and where.startswith("object."):  # the same depth before and after: compared level by level
        old: Any = body["request"]["oldObject"]
        for key in where.split(".")[1:-1]:
            old = old[key]
        old[last] = "__NESTED__"
    raw = json.dumps(body).replace('"__NESTED__"', nested).encode()
    assert_answered(*post(fuzz_client, raw), UID)


@FUZZ
@given(
    st.sampled_from([1, 512 * 1024, 3 * 1024 * 1024, 7 * 1024 * 1024]),
    st.sampled_from(["blob", "keys"]),
    st.sampled_from(["UPDATE", "CREATE", "DELETE"]),
    st.sampled_from([("", "v1", "ConfigMap", "configmaps", "settings"), ("apps", "v1", "Deployment", "x", "web")]),
    st.booleans(),
)
def test_fuzz_huge_objects(
    fuzz_client: FlaskClient,
    size: int,
    shape: str,
    operation: str,
    target: tuple[str, str, str, str, str],
    dry_run: bool,
) -> None:
    group, version, kind, resource, name = target
    data = (
        {"blob": "x" * size}
        if shape == "blob"
        else {f"k{i}": string.ascii_letters * 16 for i in range(max(1, size // 900))}
    )
    obj = configmap() if kind == "ConfigMap" else deployment()
    obj["data"] = data
    body = review(operation, obj, obj if operation == "DELETE" else None, dryRun=dry_run, name=name)
    body["request"]["kind"] = {"group": group, "version": version, "kind": kind}
    body["request"]["resource"] = {"group": group, "version": version, "resource": resource}
    assert_answered(*post(fuzz_client, body), UID)


# --- failing closed, through the webhook ------------------------------------------------------------------------------
def lookups_of(*objects: KubeObject) -> tuple[ApiLookups, FakeCluster]:
    """What the webhook asks the cluster itself, asked of an API server that holds `objects`."""
    cluster = FakeCluster(objects=[namespace("shop"), *objects])
    return ApiLookups(cluster), cluster


def claimed_configmap(name: str = "other") -> KubeObject:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": "shop",
            "labels": {TRACKING_LABEL: "shop"},
            "annotations": {TRACKING_ANNOTATION: f"gitops-system/shop:/ConfigMap:shop/{name}"},
        },
        "data": {"k": "v"},
    }


def configmap_review(operation: str, obj: KubeObject | None, old: KubeObject | None) -> dict[str, Any]:
    body = review(operation, obj, old)
    name = (obj or old or {})["metadata"]["name"]
    body["request"].update(
        kind={"group": "", "version": "v1", "kind": "ConfigMap"},
        resource={"group": "", "version": "v1", "resource": "configmaps"},
        requestKind={"group": "", "version": "v1", "kind": "ConfigMap"},
        name=name,
        object=obj,
        oldObject=old,
    )
    return body


@pytest.mark.parametrize("operation", ["CREATE", "UPDATE", "DELETE"])
def test_a_claimed_object_of_an_application_not_loaded_is_refused_and_recorded(operation: str) -> None:
    app, source, audit = make_app()
    source.unjudged = Unjudged(APP, DriftMode.ENFORCE, f"Git's state of {APP} is not loaded: cannot fetch")
    obj = claimed_configmap()
    body = configmap_review(
        operation, None if operation == "DELETE" else obj, None if operation == "CREATE" else claimed_configmap()
    )
    answer = assert_well_formed(post(app.test_client(), body)[1])
    assert answer["allowed"] is False
    assert "cannot be judged" in answer["status"]["message"]
    assert "cannot fetch" in answer["status"]["message"]
    assert [(r["decision"], r["unjudged"]) for r in audit.records] == [("denied", source.unjudged.why)]


def test_a_scale_while_a_state_is_not_loaded_asks_the_cluster_for_the_parents_marks() -> None:
    parent = {**deployment(), "metadata": {**deployment()["metadata"], "name": "api"}}
    lookups, cluster = lookups_of(parent)
    source = FakeSource(git_objects())
    source.unjudged = Unjudged(APP, DriftMode.ENFORCE, "not loaded")
    app = create_app(source=source, audit=FakeAudit(), lookups=lookups)
    body = review("UPDATE", {"apiVersion": "autoscaling/v1", "kind": "Scale", "spec": {"replicas": 9}}, None)
    body["request"].update(
        name="api",
        subResource="scale",
        kind={"group": "autoscaling", "version": "v1", "kind": "Scale"},
        oldObject={"apiVersion": "autoscaling/v1", "kind": "Scale", "spec": {"replicas": 2}},
    )
    answer = assert_well_formed(post(app.test_client(), body)[1])
    assert [r.key.name for r in cluster.made("get") if r.key] == ["api"]
    assert answer["allowed"] is False  # the parent claims an Application whose state is not loaded
    source.unjudged = None
    answer = assert_well_formed(post(app.test_client(), body)[1])
    assert answer["allowed"] is True  # every state loaded, and Git has no such object: not managed
    assert len(cluster.made("get")) == 1


OWNER = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bundle", "namespace": "shop"}}


def unavailable(request: Request) -> None:
    raise ApiError("etcdserver: request timed out", 500)


@pytest.mark.parametrize(("owner", "allowed"), [("gone", True), ("alive", False), ("unknown", False)])
def test_the_garbage_collector_deletes_only_what_has_lost_its_owners(owner: str, allowed: bool) -> None:
    lookups, cluster = lookups_of(OWNER)
    alive = cluster.stored(ObjectKey("", "ConfigMap", "shop", "bundle"))
    assert alive is not None
    if owner == "gone":
        cluster.delete(CONFIGMAPS, ObjectKey("", "ConfigMap", "shop", "bundle"))
    if owner == "unknown":
        cluster.gates.append(unavailable)
    old = deployment()
    old["metadata"]["ownerReferences"] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "bundle", "uid": alive["metadata"]["uid"]}
    ]
    app = create_app(source=FakeSource(git_objects()), audit=FakeAudit(), lookups=lookups)
    body = review(
        "DELETE",
        None,
        old,
        user="system:serviceaccount:kube-system:generic-garbage-collector",
        groups=("system:serviceaccounts", "system:serviceaccounts:kube-system"),
    )
    answer = assert_well_formed(post(app.test_client(), body)[1])
    assert answer["allowed"] is allowed


def test_taking_the_tracking_label_off_is_denied() -> None:
    app, _, audit = make_app()
    old = deployment()
    new = copy.deepcopy(old)
    new["metadata"]["labels"].pop(TRACKING_LABEL)
    answer = assert_well_formed(post(app.test_client(), review("UPDATE", new, old))[1])
    assert answer["allowed"] is False
    assert TRACKING_LABEL.replace("/", "~1") in answer["status"]["message"]
    assert [r["decision"] for r in audit.records] == ["denied"]


# --- fuzzing well-formed reviews that attack the decision, many thousands -------------------------------------------
marks = st.sampled_from([TRACKING_LABEL, TRACKING_ANNOTATION, REVISION_ANNOTATION, BREAK_GLASS_ANNOTATION, "team"])
mark_values = st.one_of(
    st.sampled_from(["shop", "gitops-system/shop:apps/Deployment:shop/web", REVISION, "e" * 40, "", "x:y:z", "/"]),
    json_values,
)
named_items = st.lists(
    st.fixed_dictionaries(
        {"name": st.one_of(st.sampled_from(["app", "MODE", "proxy"]), json_values)},
        optional={
            "value": json_values,
            "image": st.text(max_size=5),
        },
    ),
    max_size=4,
)


# What an ordinary user's change may carry, all of it what the API server stores (and so what reaches the webhook).
valid_marks = st.one_of(
    st.sampled_from(["shop", "gitops-system/shop:apps/Deployment:shop/web", REVISION, "e" * 40, "", "x"]),
    st.text(alphabet="abc-./:", max_size=6),
)
valid_env = st.lists(
    st.fixed_dictionaries(
        {"name": st.sampled_from(["MODE", "LEVEL", "proxy"])}, optional={"value": st.sampled_from(["", "1", "evil"])}
    ),
    max_size=4,
)
valid_containers = st.lists(
    st.fixed_dictionaries(
        {"name": st.sampled_from(["app", "proxy", "debug"]), "image": st.sampled_from(["registry.local/web:1.0", "x"])},
        optional={"env": valid_env, "imagePullPolicy": st.sampled_from(["Always", "IfNotPresent"])},
    ),
    min_size=1,
    max_size=3,
    unique_by=lambda c: c["name"],
)
owner_references = st.lists(
    st.fixed_dictionaries(
        {
            "apiVersion": st.just("v1"),
            "kind": st.just("ConfigMap"),
            "name": st.sampled_from(["a", "b"]),
            "uid": st.sampled_from(["uid-a", "uid-b"]),
        }
    ),
    max_size=2,
)


@st.composite
def attacking_reviews(draw: st.DrawFn) -> dict[str, Any]:
    # Half of them an ordinary user's create, update or delete of Git's Deployment, in Git's version (what the
    # reference model of the rule judges); the others anything.
    ordinary = draw(st.booleans())
    if ordinary:
        operation, sub, version = draw(st.sampled_from(["CREATE", "UPDATE", "DELETE"])), "", "v1"
    else:
        operation = draw(st.sampled_from(["CREATE", "UPDATE", "DELETE", "CONNECT"]))
        sub = draw(st.sampled_from(["", "", "status", "scale", "eviction", "ephemeralcontainers", "resize", "binding"]))
        version = draw(st.sampled_from(["v1", "v1beta1", "v2", ""]))
    obj = with_image(draw(st.sampled_from(["registry.local/web:1.0", "evil"])))
    if not ordinary:
        obj["apiVersion"] = draw(st.sampled_from(["apps/v1", f"apps/{version}", "autoscaling/v1", "policy/v1", 7]))
    for key, value in draw(st.dictionaries(marks, valid_marks if ordinary else mark_values, max_size=3)).items():
        obj["metadata"][draw(st.sampled_from(["labels", "annotations"]))][key] = value
    if draw(st.booleans()):
        obj["metadata"]["ownerReferences"] = draw(
            owner_references if ordinary else st.one_of(json_values, st.lists(st.fixed_dictionaries({}), max_size=2))
        )
    if draw(st.booleans()):
        obj["spec"]["template"]["spec"]["containers"][0]["env"] = draw(valid_env if ordinary else named_items)
    if draw(st.booleans()):
        obj["spec"]["template"]["spec"]["containers"] = draw(valid_containers if ordinary else named_items)
    if draw(st.booleans()):
        obj["spec"]["replicas"] = draw(st.integers(0, 4) if ordinary else json_values)
    old = copy.deepcopy(obj) if draw(st.booleans()) else deployment()
    if draw(st.booleans()):
        old["metadata"]["labels"].pop(TRACKING_LABEL, None)
    users = [
        "alice",
        "system:serviceaccount:kube-system:generic-garbage-collector",
        "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
        "system:serviceaccount:kube-system:persistent-volume-binder",
        "system:node:n1",
        "system:kube-controller-manager",
    ]
    groups = ["developers", "system:nodes"] if ordinary else ["developers", "gitops:break-glass", "system:nodes"]
    body = review(
        operation,
        None if operation == "DELETE" else obj,
        None if operation == "CREATE" else old,
        user="alice" if ordinary else draw(st.sampled_from(users)),
        groups=tuple(draw(st.lists(st.sampled_from(groups), max_size=2))),
    )
    request = body["request"]
    request["subResource"] = sub
    request["kind"]["version"] = version
    request["name"] = "web" if ordinary else draw(st.sampled_from(["web", "api", "", "../x"]))
    if sub == "scale":
        request["object"] = {"apiVersion": "autoscaling/v1", "kind": "Scale", "spec": {"replicas": draw(json_values)}}
    if sub == "eviction":
        request["resource"] = {"group": "", "version": "v1", "resource": draw(st.sampled_from(["pods", "nodes"]))}
    request["dryRun"] = draw(st.booleans())
    return body


FUZZ_GIT = [git_objects(), git_objects("warn")]  # enforce, with every state loaded; warn, with one not loaded


def fuzz_sources() -> list[Flask]:
    loaded = FakeSource(FUZZ_GIT[0])
    unloaded = FakeSource(FUZZ_GIT[1])
    unloaded.unjudged = Unjudged(APP, DriftMode.AUDIT, "not loaded")
    lookups, _ = lookups_of(deployment())  # and no owner of anything
    return [create_app(source=src, audit=FakeAudit(keep=False), lookups=lookups) for src in (loaded, unloaded)]


FUZZ_APPS = fuzz_sources()


# 1,000 by default (about 15 s); hack/test raises it for CI (GITOPS_FUZZ_EXAMPLES).
ATTACKS = int(os.environ.get("GITOPS_FUZZ_EXAMPLES", "1000"))
CONTAINER_FIELDS = frozenset({"name", "image", "imagePullPolicy", "env"})
ENV_FIELDS = frozenset({"name", "value"})


def _strings(values: Any) -> bool:
    return isinstance(values, dict) and all(isinstance(v, str) for v in values.values())


def stored_validly(obj: Any) -> bool:
    """Whether the API server would let `obj` reach a validating webhook at all (validating admission comes after
    the server's own validation): string labels and annotations, owner references with a uid, containers with a
    unique name, an image and only fields a container has (the server drops others), env vars with a name, and a
    count of replicas."""
    if not isinstance(obj, dict) or obj.get("apiVersion") != "apps/v1":
        return False
    metadata = obj["metadata"]
    if not (_strings(metadata.get("labels", {})) and _strings(metadata.get("annotations", {}))):
        return False
    references = metadata.get("ownerReferences", [])
    if not isinstance(references, list) or not all(isinstance(r, dict) and r.get("uid") for r in references):
        return False
    replicas = obj["spec"].get("replicas", 1)
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        return False
    containers = obj["spec"]["template"]["spec"]["containers"]
    names = [c.get("name") for c in containers]
    if not containers or len(set(map(str, names))) < len(names):
        return False
    for c in containers:
        if set(c) - CONTAINER_FIELDS or not isinstance(c.get("name"), str) or not c["name"]:
            return False
        if not isinstance(c.get("image"), str) or not c["image"]:
            return False
        for e in c.get("env", []):
            if set(e) - ENV_FIELDS or not isinstance(e.get("name"), str) or not e["name"]:
                return False
            if not isinstance(e.get("value", ""), str):
                return False
    return True


def modelled_drift(body: dict[str, Any]) -> dict[rule_model.Path, Any] | None:
    """What the reference model of the rule (tests/unit/core/rule_model.py) finds a request adds of drift, for the
    requests it covers: an ordinary user's create, update or delete of Git's Deployment itself, in Git's version, of
    objects the API server would store; None for the others."""
    request = body["request"]
    user = request["userInfo"]
    if request["operation"] not in ("CREATE", "UPDATE", "DELETE") or request["subResource"] or request["name"] != "web":
        return None
    if user["username"] != "alice" or "gitops:break-glass" in user["groups"] or request["kind"]["version"] != "v1":
        return None
    new, old = request["object"], request["oldObject"]
    if any(o is not None and not stored_validly(o) for o in (new, old)):
        return None
    git = FUZZ_GIT[0][0]
    return rule_model.new_drift(git.stored, git.declared, request["operation"], old, new)


@settings(max_examples=ATTACKS, deadline=None, database=None, derandomize=True)
@given(attacking_reviews(), st.sampled_from([0, 1]))
def test_fuzz_attacking_reviews_are_answered_as_the_rule_says(body: dict[str, Any], which: int) -> None:
    """Well-formed reviews with hostile content (forged and removed marks, colliding list keys, odd versions,
    subresources and identities, a state loaded or not): always a 400 with a reason or a well-formed answer with
    the request's uid, never a 500; and for those the reference model of the rule covers, the answer it gives:
    in enforce mode denied exactly when the request adds drift, in warn mode allowed, with a warning exactly then."""
    status, answer = post(FUZZ_APPS[which].test_client(), body)
    assert_answered(status, answer, UID)
    expected = modelled_drift(body)
    event("judged against the model" if expected is not None else "outside the model")
    if expected is None:
        return
    note(f"the model finds drift at {sorted(expected, key=str)}")
    assert status == 200, f"a review the model covers is refused: {answer}"
    response = answer["response"]
    if which == 0:
        assert response["allowed"] is not bool(expected), response.get("status", {}).get("message", "allowed")
    else:
        assert response["allowed"] is True
        assert bool(response.get("warnings")) is bool(expected), response.get("warnings")


def test_servingz_says_whether_a_replica_should_take_requests_and_readyz_whether_all_is_loaded() -> None:
    source = FakeSource(git_objects(), ready=False)
    source.serving = False
    client = make_app(source)[0].test_client()
    assert (client.get("/servingz").status_code, client.get("/readyz").status_code) == (503, 503)
    source.serving = True  # a first load was tried; one Application is not loaded: it answers, failing closed
    assert (client.get("/servingz").status_code, client.get("/readyz").status_code) == (200, 503)
