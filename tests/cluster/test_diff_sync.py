"""diff, sync and status against the real API server, with real git repositories and real kubectl."""

from __future__ import annotations

import base64
import json
import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ..conftest import Gitops, GitRepo, Kubectl

pytestmark = pytest.mark.cluster

MakeRepo = Callable[[str | None], GitRepo]


def diff_json(gitops: Gitops, app: str, expect: int, *args: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(gitops.run("diff", app, "-o", "json", *args, expect=expect).stdout)
    return out


def by_name(report: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["name"]): o for o in report["objects"]}


def drift_paths(entry: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {d["path"]: (d["kind"], d.get("manager", "")) for d in entry["drift"]}


def with_own_crd_group(git_repo: MakeRepo) -> MakeRepo:
    """The realistic corpus with its CRD in a group of its own: a CRD is cluster-wide, and another Application (an
    earlier run of the same test, the other way) may own the corpus's already."""
    group = f"c{uuid.uuid4().hex[:8]}.example.com"

    def corpus(source: str | None) -> GitRepo:
        repo = git_repo(source)
        for name in ("crd-widgets.yaml", "widgets.yaml"):
            path = repo.path / name
            path.write_text(path.read_text().replace("corpus.example.com", group))
        repo.commit("a CRD group of its own")
        return repo

    return corpus


def test_realistic_corpus_has_no_false_drift_after_sync(
    gitops_both_ways: Gitops, git_repo: MakeRepo, namespace: str
) -> None:
    """Trusting the last sync's fingerprints, and with --full."""
    realistic_corpus_has_no_false_drift(gitops_both_ways, with_own_crd_group(git_repo), namespace)


def realistic_corpus_has_no_false_drift(gitops: Gitops, git_repo: MakeRepo, namespace: str) -> None:
    repo = git_repo("tests/corpus/realistic")
    gitops.run("create", namespace, "--repo", str(repo.path), "--dest-namespace", namespace)
    before = diff_json(gitops, namespace, 1)
    assert {o["state"] for o in before["objects"]} == {"missing"}
    assert len(before["objects"]) >= 30

    sync = json.loads(gitops.run("sync", namespace, "-o", "json", user="gitops").stdout)
    assert {r["action"] for r in sync["results"]} == {"created"}

    after = diff_json(gitops, namespace, 0)
    assert [o for o in after["objects"] if o["state"] != "synced"] == []
    assert gitops.run("diff", namespace).stdout == ""

    # A second sync changes nothing.
    again = json.loads(gitops.run("sync", namespace, "-o", "json", user="gitops").stdout)
    assert {(r["kind"], r["name"], r["action"]) for r in again["results"] if r["action"] != "unchanged"} == set()


def test_ad_hoc_changes_show_as_changed_added_or_missing(
    gitops_both_ways: Gitops, kubectl: Kubectl, git_repo: MakeRepo, namespace: str, tmp_path: Path
) -> None:
    gitops = gitops_both_ways  # trusting the last sync's fingerprints, and with --full
    repo = git_repo("examples/guestbook")
    gitops.run("create", namespace, "--repo", str(repo.path), "--dest-namespace", namespace)
    gitops.run("sync", namespace, user="gitops")

    def alice(*args: str, **kwargs: Any) -> None:
        kubectl.run("-n", namespace, *args, user="alice", **kwargs)

    # changed: patch, edit, set image
    alice(
        "patch", "service", "frontend", "--type=json", "-p", '[{"op":"replace","path":"/spec/ports/0/port","value":81}]'
    )
    edited = kubectl.edit(
        namespace,
        "configmap/guestbook-settings",
        "Hello from Git!",
        "Hello from an editor",
        user="alice",
        scratch=tmp_path,
    )
    assert edited.returncode == 0, edited.stderr
    alice("set", "image", "deployment/frontend", "frontend=registry.example/guestbook-frontend:2.0")
    # added: set env, a new container, scale where Git leaves replicas open
    alice("set", "env", "deployment/frontend", "DEBUG=1")
    sidecar = {
        "op": "add",
        "path": "/spec/template/spec/containers/-",
        "value": {"name": "sidecar", "image": "busybox"},
    }
    alice("patch", "deployment", "redis", "--type=json", "-p", json.dumps([sidecar]))
    alice("scale", "deployment/redis", "--replicas=3")
    # not drift: an undeclared label, a rollout restart
    alice("label", "deployment", "frontend", "team=web")
    alice("rollout", "restart", "deployment/frontend")
    # missing
    alice("delete", "secret", "guestbook-credentials")

    report = by_name(diff_json(gitops, namespace, 1))
    assert report[("Service", "frontend")]["state"] == "modified"
    assert drift_paths(report[("Service", "frontend")]) == {"/spec/ports/0/port": ("changed", "")}
    assert drift_paths(report[("ConfigMap", "guestbook-settings")]) == {"/data/message": ("changed", "")}
    frontend = drift_paths(report[("Deployment", "frontend")])
    assert frontend["/spec/template/spec/containers/0/image"] == ("changed", "")
    assert frontend["/spec/template/spec/containers/0/env/3"] == ("added", "kubectl-set")
    assert len(frontend) == 2, frontend  # neither the label nor the restart
    redis = drift_paths(report[("Deployment", "redis")])
    assert redis["/spec/template/spec/containers/1"] == ("added", "kubectl-patch")
    assert redis["/spec/replicas"][0] == "added"
    assert report[("Secret", "guestbook-credentials")]["state"] == "missing"
    assert report[("Deployment", "redis")]["patch"]  # an RFC 6902 patch from live to Git

    text = gitops.run("diff", namespace, expect=1).stdout
    assert "=== Deployment.apps " + namespace + "/frontend (modified)" in text
    assert "added   /spec/template/spec/containers/0/env/3 (by kubectl-set)" in text
    assert "-        image: registry.example/guestbook-frontend:2.0" in text
    assert "\x1b[" not in text  # no colour when not on a terminal

    status = gitops.run("status", namespace).stdout
    assert "OutOfSync" in status

    gitops.run("sync", namespace, user="gitops")
    assert diff_json(gitops, namespace, 0)["objects"]
    deployment = json.loads(kubectl.run("-n", namespace, "get", "deployment", "redis", "-o", "json").stdout)
    assert [c["name"] for c in deployment["spec"]["template"]["spec"]["containers"]] == ["redis"]
    assert deployment["spec"]["replicas"] == 1
    frontend_obj = json.loads(kubectl.run("-n", namespace, "get", "deployment", "frontend", "-o", "json").stdout)
    env = frontend_obj["spec"]["template"]["spec"]["containers"][0].get("env", [])
    assert "DEBUG" not in [e["name"] for e in env]
    assert frontend_obj["metadata"]["labels"]["team"] == "web"  # not drift, so left alone


def test_secret_values_never_appear(
    gitops: Gitops, kubectl: Kubectl, git_repo: MakeRepo, namespace: str, tmp_path: Path
) -> None:
    repo = git_repo("examples/guestbook")
    git_value = "s3cr3t-from-git"
    secret_file = repo.path / "settings.yaml"
    secret_file.write_text(secret_file.read_text().replace("guestbook-demo-only", git_value))
    repo.commit("a real-looking password")
    gitops.run("create", namespace, "--repo", str(repo.path), "--dest-namespace", namespace)
    gitops.run("sync", namespace)
    live_value = "hand-typed-password"
    kubectl.run(
        "-n",
        namespace,
        "patch",
        "secret",
        "guestbook-credentials",
        "-p",
        json.dumps({"stringData": {"redis-password": live_value}}),
        user="alice",
    )
    outputs = [
        gitops.run("diff", namespace, expect=1).stdout,
        gitops.run("diff", namespace, "-o", "json", expect=1).stdout,
        gitops.run("status", namespace).stdout,
        gitops.run("sync", namespace, "--dry-run", "-o", "json").stdout,
    ]
    external = tmp_path / "external"
    external.mkdir()
    gitops.run("diff", namespace, expect=1, env={"KUBECTL_EXTERNAL_DIFF": f"cp -r -t {external}"})
    assert sorted(p.name for p in external.iterdir()) == ["LIVE", "MERGED"]
    outputs += [p.read_text() for p in external.rglob("*") if p.is_file()]
    forbidden = [
        git_value,
        live_value,
        base64.b64encode(git_value.encode()).decode(),
        base64.b64encode(live_value.encode()).decode(),
    ]
    for output in outputs:
        for value in forbidden:
            assert value not in output
    assert "<secret:" in outputs[0]


def test_prune_removes_only_what_this_application_tracked(
    gitops: Gitops, kubectl: Kubectl, git_repo: MakeRepo, namespace: str
) -> None:
    repo = git_repo("examples/guestbook")
    gitops.run("create", namespace, "--repo", str(repo.path), "--dest-namespace", namespace)
    gitops.run("sync", namespace)
    # A copy-pasted object carrying our label but not our tracking annotation is not ours.
    impostor = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "impostor", "labels": {"gitops.kubectl-gitops.io/application": namespace}},
    }
    kubectl.run("-n", namespace, "create", "-f", "-", stdin=json.dumps(impostor), user="alice")
    (repo.path / "redis.yaml").unlink()
    repo.commit("drop redis")

    report = by_name(diff_json(gitops, namespace, 1))
    assert report[("Deployment", "redis")]["state"] == "extra"
    assert report[("Service", "redis")]["state"] == "extra"
    assert ("ConfigMap", "impostor") not in report

    gitops.run("sync", namespace)  # without --prune: kept
    kubectl.run("-n", namespace, "get", "deployment", "redis")
    pruned = json.loads(gitops.run("sync", namespace, "--prune", "-o", "json").stdout)
    assert {(r["kind"], r["name"]) for r in pruned["results"] if r["action"] == "pruned"} == {
        ("Deployment", "redis"),
        ("Service", "redis"),
    }
    kubectl.run("-n", namespace, "wait", "--for=delete", "deployment/redis", "--timeout=30s")
    kubectl.run("-n", namespace, "get", "configmap", "impostor")
    assert diff_json(gitops, namespace, 0)


def test_sync_records_history_in_status(gitops: Gitops, kubectl: Kubectl, git_repo: MakeRepo, namespace: str) -> None:
    repo = git_repo("examples/guestbook")
    first = repo.git("rev-parse", "HEAD")
    gitops.run("create", namespace, "--repo", str(repo.path), "--dest-namespace", namespace)
    gitops.run("sync", namespace, user="gitops")
    settings = repo.path / "settings.yaml"
    settings.write_text(settings.read_text().replace("Hello from Git!", "Hello again"))
    second = repo.commit("Say hello again")

    old = diff_json(gitops, namespace, 0, "--revision", first)
    assert old["revision"] == first
    assert diff_json(gitops, namespace, 1)["revision"] == second
    gitops.run("sync", namespace, user="gitops")

    app = json.loads(kubectl.run("-n", "gitops-system", "get", "applications", namespace, "-o", "json").stdout)
    last = app["status"]["lastSync"]
    assert last["revision"] == second
    assert last["subject"] == "Say hello again"
    assert last["author"] == "Dev <dev@example.com>"
    assert last["user"] == "gitops-sync"
    assert last["result"] == "Succeeded"
    assert (last["id"], last["record"], last["trigger"]) == (2, f"{namespace}-2", "manual")
    assert "history" not in app["status"]  # the syncs are SyncRecords now (kubectl gitops history)
    history = json.loads(gitops.run("history", namespace, "-o", "json").stdout)
    assert [h["revision"] for h in history] == [second, first]
    assert app["status"]["sync"] == {"status": "Synced", "revision": second}
    assert len(app["status"]["resources"]) == 6

    status = gitops.run("status", namespace).stdout
    assert "by gitops-sync" in status
    assert "Say hello again" in status
    listed = gitops.run("list").stdout
    assert namespace in listed


@pytest.mark.parametrize(
    ("source", "path", "extra", "expect_name"),
    [
        ("examples/guestbook-kustomize", "overlays/production", [], "frontend"),
        (
            "examples/guestbook-helm",
            ".",
            ["--release-name", "demo", "--values", "values-production.yaml"],
            "demo-frontend",
        ),
    ],
)
def test_kustomize_and_helm_sources(
    gitops: Gitops,
    kubectl: Kubectl,
    git_repo: MakeRepo,
    namespace: str,
    source: str,
    path: str,
    extra: list[str],
    expect_name: str,
) -> None:
    repo = git_repo(source)
    gitops.run("create", namespace, "--repo", str(repo.path), "--path", path, "--dest-namespace", namespace, *extra)
    gitops.run("sync", namespace)
    deployment = json.loads(kubectl.run("-n", namespace, "get", "deployment", expect_name, "-o", "json").stdout)
    assert deployment["spec"]["replicas"] == 3
    assert diff_json(gitops, namespace, 0)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"bad.yaml": "kind: ConfigMap\nmetadata: {name: a\n"}, "bad.yaml (document 1): invalid YAML"),
        (
            {"nokind.yaml": "apiVersion: v1\nmetadata: {name: a}\n"},
            "nokind.yaml (document 1): the object has no `kind`",
        ),
        (
            {"noname.yaml": "---\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {}\n"},
            "noname.yaml (document 2): ConfigMap has no `metadata.name`",
        ),
        (
            {
                "a.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: twice}\n",
                "b/c.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: twice}\n",
            },
            "is declared twice",
        ),
        (
            {"crd.yaml": "apiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: g}\n"},
            "the cluster does not know Gadget in example.com/v1",
        ),
    ],
)
def test_bad_manifests_stop_before_anything_is_applied(
    gitops: Gitops, kubectl: Kubectl, git_repo: MakeRepo, namespace: str, files: dict[str, str], message: str
) -> None:
    repo = git_repo(None)
    repo.write("good.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: good}\ndata: {a: b}\n")
    for name, text in files.items():
        repo.write(name, text)
    repo.commit("broken")
    gitops.run("create", namespace, "--repo", str(repo.path), "--dest-namespace", namespace)
    failed = gitops.run("sync", namespace, expect=1)
    assert message in failed.stderr
    assert "Traceback" not in failed.stderr
    assert "NotFound" in kubectl.run("-n", namespace, "get", "configmap", "good", check=False).stderr
    assert gitops.run("diff", namespace, expect=2).returncode == 2


def test_bad_sources_are_reported(gitops: Gitops, git_repo: MakeRepo, namespace: str, tmp_path: Path) -> None:
    missing = gitops.run("create", namespace, "--repo", str(tmp_path / "nowhere"), expect=1)
    assert "cannot fetch" in missing.stderr
    repo = git_repo("examples/guestbook")
    no_rev = gitops.run("create", namespace, "--repo", str(repo.path), "--revision", "v9.9.9", expect=1)
    assert "revision 'v9.9.9' does not exist" in no_rev.stderr
    gitops.run("create", namespace, "--repo", str(repo.path), "--dest-namespace", namespace)
    assert "already exists" in gitops.run("create", namespace, "--repo", str(repo.path), expect=1).stderr
    assert "not found" in gitops.run("diff", "no-such-app", expect=2).stderr
    gitops.run("delete", namespace)
    assert "not found" in gitops.run("delete", namespace, expect=1).stderr


def test_credentials_in_a_repository_url_are_never_shown(gitops: Gitops, kubectl: Kubectl, namespace: str) -> None:
    """An Application whose URL carries a token (one nobody can reach): list, status and the fetch error show it
    redacted."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://bot:s3cr3t-token@127.0.0.1:{port}/shop.git"
    application = {
        "apiVersion": "gitops.kubectl-gitops.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": namespace, "namespace": "gitops-system"},
        "spec": {"source": {"repoURL": url}, "destination": {"namespace": namespace}},
    }
    kubectl.run("apply", "-f", "-", stdin=json.dumps(application))
    try:
        listed = gitops.run("list")
        status = gitops.run("status", namespace, expect=None)
        diff = gitops.run("diff", namespace, expect=2)
        for proc in (listed, status, diff):
            assert "s3cr3t-token" not in proc.stdout + proc.stderr
        assert f"http://***@127.0.0.1:{port}/shop.git" in listed.stdout
        assert f"cannot fetch http://***@127.0.0.1:{port}/shop.git" in diff.stderr
    finally:
        gitops.run("delete", namespace, expect=None)


def test_unreachable_api_server(gitops: Gitops, tmp_path: Path) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9', insecure-skip-tls-verify: true}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
        "current-context: x\n"
    )
    proc = gitops.run("diff", "anything", expect=2, env={"KUBECONFIG": str(config)})
    assert "did not answer" in proc.stderr
