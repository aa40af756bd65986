"""The key tests of test_diff_sync.py again, with the drift webhook registered in enforce mode: every request of
`kubectl gitops sync` (applies, the replace of an object whose merge with Git's is invalid, the removal of added
fields, prune's deletions) goes through it and must pass, and its audit log holds no denial of them.

alice makes the drift the syncs take back; she is a configured exemption of this webhook (so that the drift can be
made in enforce mode at all), and only she: the syncs run as gitops-sync and admin, who are judged."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.core.webhookconfig import NAME as REGISTRATION

from ..conftest import Gitops, GitRepo, Kubectl
from . import test_diff_sync as plain
from .test_webhook import WebhookProcess, _free_port, records, service_account_kubeconfig

pytestmark = pytest.mark.cluster

MakeRepo = Callable[[str | None], GitRepo]


@pytest.fixture(scope="module")
def webhook(gitops: Gitops, kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookProcess]:
    """gitops-webhook as its ServiceAccount, registered (objects entry failing closed) for this module's tests."""
    work = tmp_path_factory.mktemp("webhook-sync")
    hook = WebhookProcess(
        work / "certs",
        _free_port(),
        service_account_kubeconfig(kubectl, work / "webhook.kubeconfig"),
        work / "webhook.log",
        kubectl.cluster.webhook_client_ca,
        env={"GITOPS_WEBHOOK_EXEMPT_USERS": "alice"},
    )
    hook.start()
    hook.wait_serving()
    gitops.run("install", "--webhook-url", f"{hook.url}/validate", "--ca-file", str(hook.cert_dir / "ca.crt"))
    yield hook
    kubectl.run("delete", "validatingwebhookconfiguration", REGISTRATION, check=False)
    hook.stop()


def absent(kubectl: Kubectl, *args: str) -> bool:
    proc = kubectl.run(*args, check=False)
    return proc.returncode != 0 and "NotFound" in proc.stderr


def decisions(hook: WebhookProcess) -> dict[tuple[str, str], float]:
    """gitops_webhook_decisions_total by (verdict, mode), from /metrics."""
    out: dict[tuple[str, str], float] = {}
    text = hook.get("/metrics")
    assert isinstance(text, str), text
    for line in text.splitlines():
        if line.startswith("gitops_webhook_decisions_total{"):
            labels, _, value = line.partition("} ")
            fields = dict(
                part.split("=", 1) for part in labels.removeprefix("gitops_webhook_decisions_total{").split(",")
            )
            out[(fields["verdict"].strip('"'), fields["mode"].strip('"'))] = float(value)
    return out


def registered_resources(kubectl: Kubectl) -> set[str]:
    config = json.loads(kubectl.run("get", "validatingwebhookconfiguration", REGISTRATION, "-o", "json").stdout)
    objects = next(w for w in config["webhooks"] if w["name"].startswith("objects."))
    assert objects["failurePolicy"] == "Fail"
    return {resource for rule in objects["rules"] for resource in rule["resources"]}


@pytest.fixture
def judged(webhook: WebhookProcess, kubectl: Kubectl, namespace: str) -> Callable[..., None]:
    """Call it after the test's syncs: the webhook answered them (its enforce-mode allowances rose, and the
    registration covers `resources`, failing closed), denied nothing, and recorded nothing of the namespace."""
    before = decisions(webhook)

    def check(*resources: str) -> None:
        after = decisions(webhook)
        assert after.get(("allowed", "enforce"), 0) > before.get(("allowed", "enforce"), 0)
        assert after.get(("denied", "enforce"), 0) == before.get(("denied", "enforce"), 0)
        assert set(resources) <= registered_resources(kubectl)
        assert records(kubectl, namespace) == []

    return check


def test_ad_hoc_changes_are_synced_back_through_the_webhook(
    gitops: Gitops,
    kubectl: Kubectl,
    git_repo: MakeRepo,
    namespace: str,
    tmp_path: Path,
    judged: Callable[..., None],
) -> None:
    """Changed and added fields restored and removed, a deleted Secret created again, and the Service whose port was
    re-keyed by hand replaced whole (the 422 path)."""
    plain.test_ad_hoc_changes_show_as_changed_added_or_missing(gitops, kubectl, git_repo, namespace, tmp_path)
    judged("deployments", "services", "configmaps", "secrets")


def test_prune_passes_the_webhook(
    gitops: Gitops, kubectl: Kubectl, git_repo: MakeRepo, namespace: str, judged: Callable[..., None]
) -> None:
    plain.test_prune_removes_only_what_this_application_tracked(gitops, kubectl, git_repo, namespace)
    judged("deployments", "services")


def test_syncs_to_each_commit_pass_the_webhook(
    gitops: Gitops, kubectl: Kubectl, git_repo: MakeRepo, namespace: str, judged: Callable[..., None]
) -> None:
    plain.test_sync_records_history_in_status(gitops, kubectl, git_repo, namespace)
    judged("configmaps")


def test_the_realistic_corpus_passes_the_webhook_with_no_false_drift(
    gitops: Gitops, kubectl: Kubectl, git_repo: MakeRepo, namespace: str, judged: Callable[..., None]
) -> None:
    """Every kind of the corpus created through the webhook (its CRD and custom resources in one sync). The CRD is
    cluster-wide, and another Application (test_diff_sync's) may own it already: this one's is of a group of its
    own."""
    plain.realistic_corpus_has_no_false_drift(gitops, plain.with_own_crd_group(git_repo), namespace)
    judged("deployments", "statefulsets", "daemonsets", "jobs", "cronjobs", "widgets")


def test_rbac_objects_are_loaded_and_judged_against_git(
    gitops: Gitops, kubectl: Kubectl, git_repo: MakeRepo, namespace: str, webhook: WebhookProcess
) -> None:
    """A Role granting what the webhook's ServiceAccount does not hold, a binding of it, and an aggregated
    ClusterRole: the webhook, with its shipped RBAC, loads them (its probe leaves the grants out), the sync passes,
    and a change of the rules or the subjects (by admin, who is not exempt) is denied."""
    aggregated = f"{namespace}-aggregated"
    repo = git_repo(None)
    repo.write(
        "rbac.yaml",
        f"""apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: watcher}}
rules:
  - {{apiGroups: [""], resources: [configmaps], verbs: [get, watch]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: watchers}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: watcher}}
subjects:
  - {{kind: Group, name: developers}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: {aggregated}}}
aggregationRule:
  clusterRoleSelectors: [{{matchLabels: {{aggregate-to: {aggregated}}}}}]
""",
    )
    # (Something stays in Git when the RBAC goes: the applies of a new commit are what make the webhook load it
    # before the prune's deletions; a commit that empties the Application gives it none.)
    repo.write("settings.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {a: b}\n")
    repo.commit("RBAC")
    gitops.run("create", namespace, "--repo", str(repo.path), "--dest-namespace", namespace)
    try:
        gitops.run("sync", namespace, user="gitops")
        webhook.wait_loaded(namespace)
        gitops.run("diff", namespace)

        def admin(*args: str) -> str:
            proc = kubectl.run("-n", namespace, *args, check=False)
            assert proc.returncode != 0, f"kubectl {' '.join(args)} was let through"
            assert "denied the request" in proc.stderr
            return proc.stderr

        rules = '[{"op":"add","path":"/rules/0/verbs/-","value":"delete"}]'
        assert "/rules" in admin("patch", "role", "watcher", "--type=json", "-p", rules)
        subjects = '[{"op":"add","path":"/subjects/-","value":{"kind":"User","name":"mallory"}}]'
        assert "/subjects" in admin("patch", "rolebinding", "watchers", "--type=json", "-p", subjects)
        selectors = '{"aggregationRule":{"clusterRoleSelectors":[{"matchLabels":{"aggregate-to":"admin"}}]}}'
        assert "/aggregationRule" in admin("patch", "clusterrole", aggregated, "--type=merge", "-p", selectors)
        assert "delete" not in kubectl.run("-n", namespace, "get", "role", "watcher", "-o", "jsonpath={.rules}").stdout
    finally:
        # The ClusterRole outlives the test's namespace: pruned, through the webhook too.
        (repo.path / "rbac.yaml").unlink()
        repo.commit("no RBAC")
        gitops.run("sync", namespace, "--prune", user="gitops")
        gitops.run("delete", namespace)
    assert absent(kubectl, "get", "clusterrole", aggregated)
