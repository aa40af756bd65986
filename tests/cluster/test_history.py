"""History, the time questions and rollback against the real API server, with the drift webhook in enforce mode."""

from __future__ import annotations

import base64
import datetime
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ..conftest import Gitops, GitRepo, Kubectl
from .test_webhook import WebhookProcess, denied, registered_webhook

pytestmark = pytest.mark.cluster

MakeRepo = Callable[[str | None], GitRepo]
SECRET_A, SECRET_B = "guestbook-demo-only", "rotated-s3cret-value"


@pytest.fixture(scope="module")
def webhook(gitops: Gitops, kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookProcess]:
    with registered_webhook(gitops, kubectl, tmp_path_factory.mktemp("history-webhook")) as hook:
        yield hook


def wait_mode(webhook: WebhookProcess, app: str, mode: str) -> None:
    """Until the webhook has read the Application's new drift mode (it polls Applications every few seconds)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        entry = ((webhook.get("/readyz") or {}).get("applications") or {}).get(f"gitops-system/{app}") or {}
        if entry.get("mode") == mode:
            return
        time.sleep(0.2)
    raise AssertionError(f"the webhook never saw {app} in {mode} mode")


def as_json(gitops: Gitops, *args: str, expect: int = 0) -> Any:
    return json.loads(gitops.run(*args, "-o", "json", expect=expect).stdout)


@pytest.fixture
def three_syncs(
    gitops: Gitops, git_repo: MakeRepo, namespace: str, webhook: WebhookProcess
) -> tuple[GitRepo, list[str]]:
    """The guestbook in enforce mode synced at three commits: A as in examples/, B with another message and
    Secret value, C with frontend 1.1, no Redis and a new ConfigMap (synced with --prune)."""
    repo = git_repo("examples/guestbook")
    a = repo.git("rev-parse", "HEAD")
    gitops.run("create", namespace, "--repo", str(repo.path), "--dest-namespace", namespace, "--mode", "enforce")
    gitops.run("sync", namespace, user="gitops")
    webhook.wait_loaded(namespace, a)
    settings = repo.path / "settings.yaml"
    settings.write_text(settings.read_text().replace("Hello from Git!", "Hello again").replace(SECRET_A, SECRET_B))
    b = repo.commit("say hello again, rotate the password")
    gitops.run("sync", namespace, user="gitops")
    frontend = repo.path / "frontend.yaml"
    frontend.write_text(frontend.read_text().replace("guestbook-frontend:1.0", "guestbook-frontend:1.1"))
    (repo.path / "redis.yaml").unlink()
    repo.write("flags.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: flags}\ndata: {beta: 'on'}\n")
    c = repo.commit("frontend 1.1, no redis, feature flags")
    gitops.run("sync", namespace, "--prune", user="gitops")
    return repo, [a, b, c]


def changes_by_object(report: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["name"]): o for o in report["objects"]}


def fields(change: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {f["path"]: (f.get("before"), f.get("after")) for f in change["fields"]}


def assert_no_secret(text: str) -> None:
    for value in (SECRET_A, SECRET_B):
        assert value not in text
        assert base64.b64encode(value.encode()).decode() not in text


def test_history_at_and_both_diffs_answer_what_ran_when_and_what_changed(
    gitops: Gitops, namespace: str, three_syncs: tuple[GitRepo, list[str]]
) -> None:
    _, (a, b, c) = three_syncs
    listed = as_json(gitops, "history", namespace)
    assert [(r["id"], r["revision"], r["trigger"], r["user"], r["result"]) for r in listed] == [
        (3, c, "manual", "gitops-sync", "Succeeded"),
        (2, b, "manual", "gitops-sync", "Succeeded"),
        (1, a, "manual", "gitops-sync", "Succeeded"),
    ]
    assert listed[0]["subject"] == "frontend 1.1, no redis, feature flags"
    text = gitops.run("history", namespace).stdout
    assert text.splitlines()[0].split()[:3] == ["ID", "TIME", "TRIGGER"]
    assert c[:12] in text.splitlines()[1]

    whole = as_json(gitops, "history", namespace, "3")
    actions = {(o["kind"], o["name"]): o["action"] for o in whole["objects"]}
    assert actions[("Deployment", "frontend")] == "configured"
    assert actions[("ConfigMap", "flags")] == "created"
    assert actions[("Deployment", "redis")] == "pruned"
    assert actions[("ConfigMap", "guestbook-settings")] == "configured"  # its revision annotation names C now
    assert all(len(o["digest"]) == 64 for o in whole["objects"] if o["action"] != "pruned")

    # --at: each sync is live from its end until the next one ends; before the first, none.
    first, second, third = reversed(listed)
    for record in (first, second, third):
        at = as_json(gitops, "history", namespace, "--at", record["finishedAt"])
        assert at["sync"]["id"] == record["id"]
        assert at["drift"] == []
    started = datetime.datetime.fromisoformat(first["startedAt"].replace("Z", "+00:00"))
    before = (started - datetime.timedelta(seconds=1)).isoformat()
    assert as_json(gitops, "history", namespace, "--at", before)["sync"] is None
    assert "sync 3 was live" in gitops.run("history", namespace, "--at", "now").stdout

    # --from/--to: Git's objects at A against those at C, rendered, field by field.
    revisions = as_json(gitops, "diff", namespace, "--from", a, "--to", c, expect=1)
    objects = changes_by_object(revisions)
    assert {k: o["change"] for k, o in objects.items()} == {
        ("Deployment", "frontend"): "changed",
        ("Deployment", "redis"): "removed",
        ("Service", "redis"): "removed",
        ("ConfigMap", "flags"): "added",
        ("ConfigMap", "guestbook-settings"): "changed",
        ("Secret", "guestbook-credentials"): "changed",
    }
    assert fields(objects[("Deployment", "frontend")]) == {
        "/spec/template/spec/containers/0/image": (
            "registry.example/guestbook-frontend:1.0",
            "registry.example/guestbook-frontend:1.1",
        )
    }
    assert fields(objects[("ConfigMap", "guestbook-settings")]) == {"/data/message": ("Hello from Git!", "Hello again")}
    ((secret_path, (old, new)),) = fields(objects[("Secret", "guestbook-credentials")]).items()
    assert secret_path == "/stringData/redis-password"
    assert str(old).startswith("<secret:")
    assert old != new
    assert gitops.run("diff", namespace, "--from", c, "--to", c).returncode == 0

    # --since/--until: the sync live at the first time against the one live at the second, and what came between.
    span = as_json(gitops, "diff", namespace, "--since", first["finishedAt"], "--until", third["finishedAt"], expect=1)
    assert span["since"]["sync"]["id"] == 1
    assert span["until"]["sync"]["id"] == 3
    assert [s["id"] for s in span["syncs"]] == [2, 3]
    # The same objects and fields (a Secret's markers differ from run to run: each run masks with a key of its own)
    assert {k: fields(o) for k, o in changes_by_object(span).items() if k[0] != "Secret"} == {
        k: fields(o) for k, o in objects.items() if k[0] != "Secret"
    }
    assert fields(changes_by_object(span)[("Secret", "guestbook-credentials")]).keys() == {secret_path}
    assert span["renderMatches"] == {"from": True, "to": True}
    one_step = as_json(
        gitops, "diff", namespace, "--since", first["finishedAt"], "--until", second["finishedAt"], expect=1
    )
    assert set(changes_by_object(one_step)) == {
        ("ConfigMap", "guestbook-settings"),
        ("Secret", "guestbook-credentials"),
    }

    # A Secret that changed between commits shows only markers, in every output.
    outputs = [
        gitops.run("diff", namespace, "--from", a, "--to", c, expect=1).stdout,
        json.dumps(revisions),
        json.dumps(span),
        gitops.run("diff", namespace, "--since", first["finishedAt"], expect=1).stdout,
        gitops.run("history", namespace, "2", "--manifests").stdout,
        gitops.run("history", namespace, "2", "--manifests", "-o", "json").stdout,
        json.dumps(listed),
        gitops.run("changes", namespace).stdout,
    ]
    for out in outputs:
        assert_no_secret(out)


def test_a_helm_values_change_shows_as_the_deployment_fields_it_moves(
    gitops: Gitops, git_repo: MakeRepo, namespace: str, webhook: WebhookProcess
) -> None:
    repo = git_repo("examples/guestbook-helm")
    a = repo.git("rev-parse", "HEAD")
    gitops.run("create", namespace, "--repo", str(repo.path), "--dest-namespace", namespace, "--release-name", "demo")
    values = repo.path / "values.yaml"
    values.write_text(values.read_text().replace("  replicas: 2", "  replicas: 5", 1))
    b = repo.commit("five frontends")
    report = as_json(gitops, "diff", namespace, "--from", a, "--to", b, expect=1)
    assert [(o["kind"], o["name"], o["change"]) for o in report["objects"]] == [
        ("Deployment", "demo-frontend", "changed")
    ]
    assert fields(report["objects"][0]) == {"/spec/replicas": (2, 5)}


def test_changes_interleaves_syncs_and_denied_and_warned_attempts(
    gitops: Gitops, kubectl: Kubectl, git_repo: MakeRepo, namespace: str, webhook: WebhookProcess
) -> None:
    repo = git_repo("examples/guestbook")
    gitops.run("create", namespace, "--repo", str(repo.path), "--dest-namespace", namespace, "--mode", "enforce")
    gitops.run("sync", namespace, user="gitops")
    webhook.wait_loaded(namespace)
    patch = json.dumps({"data": {"message": "by hand"}})
    edit = ("-n", namespace, "patch", "configmap", "guestbook-settings", "-p", patch)
    assert denied(kubectl.run(*edit, user="alice", check=False))
    kubectl.run(
        "-n", "gitops-system", "patch", "application", namespace, "--type=merge", "-p", '{"spec":{"driftMode":"warn"}}'
    )
    wait_mode(webhook, namespace, "warn")
    warned = kubectl.run(*edit, user="alice", check=False)
    assert warned.returncode == 0
    assert "drift from Git" in warned.stderr
    gitops.run("sync", namespace, user="gitops")  # heals it

    events = as_json(gitops, "changes", namespace, "--since", "1h")
    kinds = [(e["what"], e["detail"].get("decision") or e["detail"].get("trigger")) for e in events]
    assert kinds == [("sync", "manual"), ("drift", "warned"), ("drift", "denied"), ("sync", "manual")]
    everyone = as_json(gitops, "changes", "--since", "1h")
    assert {e["application"] for e in everyone} >= {namespace}
    assert "nothing changed" in gitops.run("changes", namespace, "--since", "2099-01-01").stdout


def test_rollback_in_enforce_mode_holds_until_resumed(
    gitops: Gitops, kubectl: Kubectl, namespace: str, three_syncs: tuple[GitRepo, list[str]], webhook: WebhookProcess
) -> None:
    _, (a, b, c) = three_syncs

    def message() -> str:
        return kubectl.run(
            "-n", namespace, "get", "configmap", "guestbook-settings", "-o", "jsonpath={.data.message}"
        ).stdout

    # Before any rollback: an annotation naming an older commit does not bring old Git back.
    forged = json.dumps(
        {"metadata": {"annotations": {"gitops.kubectl-gitops.io/revision": a}}, "data": {"message": "Hello from Git!"}}
    )
    forge = ("-n", namespace, "patch", "configmap", "guestbook-settings", "-p", forged)
    assert denied(kubectl.run(*forge, user="alice", check=False))

    done = as_json(gitops, "rollback", namespace, "--reason", "frontend 1.1 is broken", "--prune")
    assert done["sync"]["trigger"] == "rollback"
    assert done["sync"]["revision"] == b  # the sync before the current one
    assert done["sync"]["reason"] == "frontend 1.1 is broken"
    assert done["sync"]["result"] == "Succeeded"
    image = kubectl.run(
        "-n", namespace, "get", "deployment", "frontend", "-o", "jsonpath={.spec.template.spec.containers[0].image}"
    ).stdout
    assert image == "registry.example/guestbook-frontend:1.0"
    kubectl.run("-n", namespace, "get", "deployment", "redis")  # back
    assert gitops.run("diff", namespace).returncode == 0  # the held commit is the target now
    status = gitops.run("status", namespace).stdout
    assert f"Rolled back: to {b[:12]}" in status
    assert "frontend 1.1 is broken" in status
    assert f"rolled back to {b[:12]}" in gitops.run("list").stdout
    assert as_json(gitops, "status", namespace)["rollback"]["revision"] == b
    # Another sync keeps the rollback (a reconciler's poll would too).
    gitops.run("sync", namespace, user="gitops")
    assert as_json(gitops, "history", namespace)[0]["revision"] == b

    # Still no way back to A by annotation, rolled back or not.
    assert denied(kubectl.run(*forge, user="alice", check=False))
    assert message() == "Hello again"

    resumed = as_json(gitops, "rollback", namespace, "--resume", "--prune")
    assert resumed["sync"]["revision"] == c
    assert gitops.run("diff", namespace).returncode == 0
    assert "Rolled back" not in gitops.run("status", namespace).stdout
    assert [r["trigger"] for r in as_json(gitops, "history", namespace)[:3]] == ["manual", "manual", "rollback"]
    gitops.run("rollback", namespace, "--resume", expect=1)  # nothing to resume


def test_rollback_to_a_sync_id_or_a_revision(
    gitops: Gitops, kubectl: Kubectl, namespace: str, three_syncs: tuple[GitRepo, list[str]]
) -> None:
    _, (a, _, c) = three_syncs
    assert as_json(gitops, "rollback", namespace, "1", "--prune")["sync"]["revision"] == a
    gitops.run("rollback", namespace, "--resume", "--prune")
    assert as_json(gitops, "rollback", namespace, a[:10], "--prune")["sync"]["revision"] == a
    gitops.run("rollback", namespace, "99", expect=1)
    gitops.run("rollback", namespace, "--resume", "--prune")
    assert as_json(gitops, "history", namespace)[0]["revision"] == c


def test_retention_drops_the_oldest_records(
    gitops: Gitops, kubectl: Kubectl, git_repo: MakeRepo, namespace: str
) -> None:
    repo = git_repo("examples/guestbook")
    gitops.run("create", namespace, "--repo", str(repo.path), "--dest-namespace", namespace, "--mode", "audit")
    kubectl.run(
        "-n",
        "gitops-system",
        "patch",
        "application",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"history":{"records":2}}}',
    )
    for _ in range(4):
        gitops.run("sync", namespace, user="gitops")
    assert [r["id"] for r in as_json(gitops, "history", namespace)] == [4, 3]
    stored = json.loads(
        kubectl.run(
            "-n",
            "gitops-system",
            "get",
            "syncrecords",
            "-l",
            f"gitops.kubectl-gitops.io/application={namespace}",
            "-o",
            "json",
        ).stdout
    )
    assert sorted(i["metadata"]["name"] for i in stored["items"]) == [f"{namespace}-3", f"{namespace}-4"]
    gitops.run("history", namespace, "1", expect=1)


def test_developers_cannot_write_history(kubectl: Kubectl, gitops: Gitops, namespace: str) -> None:
    """Not aggregated to `edit`: alice can neither forge nor delete a record, in gitops-system or her namespace."""
    forged = json.dumps(
        {"apiVersion": "gitops.kubectl-gitops.io/v1alpha1", "kind": "SyncRecord", "metadata": {"name": "x"}}
    )
    for where in ("gitops-system", namespace):
        proc = kubectl.run("-n", where, "create", "-f", "-", user="alice", check=False, stdin=forged)
        assert proc.returncode != 0
        assert "forbidden" in proc.stderr.lower()
