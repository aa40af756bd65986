"""Git credentials from a Secret (spec.source.secretRef): a private repository over HTTPS-style basic auth reached by
the plugin, the values never in any output, and clear errors for a missing Secret or a wrong token."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ..conftest import Gitops, GitRepo, Kubectl
from ..githttp import serve

pytestmark = pytest.mark.cluster

MakeRepo = Callable[[str | None], GitRepo]
TOKEN = "tok-s3cret-8c1f27e4"
USER = "deploy-bot"


@pytest.fixture
def private_repo(git_repo: MakeRepo, tmp_path: Path) -> Iterator[tuple[GitRepo, str]]:
    repo = git_repo(None)
    repo.write("settings.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {a: b}\n")
    repo.commit("first")
    root = tmp_path / "served"
    root.mkdir()
    subprocess.run(["git", "clone", "-q", "--bare", str(repo.path), str(root / "private.git")], check=True)
    with serve(root, USER, TOKEN) as base:
        yield repo, f"{base}/private.git"


@pytest.fixture(autouse=True)
def application_deleted_after(kubectl: Kubectl, namespace: str) -> Iterator[None]:
    """Each test's Application (named after its namespace) goes with it: later modules' webhooks need not load it."""
    yield
    kubectl.run(
        "-n", "gitops-system", "delete", "applications.gitops.kubectl-gitops.io", namespace, "--ignore-not-found"
    )


def credentials_secret(kubectl: Kubectl, name: str, password: str) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "gitops-system"},
        "data": {
            "username": base64.b64encode(USER.encode()).decode(),
            "password": base64.b64encode(password.encode()).decode(),
        },
    }
    kubectl.run("apply", "-f", "-", stdin=json.dumps(secret))


def no_token(*texts: str) -> None:
    for text in texts:
        assert TOKEN not in text
        assert base64.b64encode(f"{USER}:{TOKEN}".encode()).decode() not in text


def test_a_private_repository_is_reached_with_the_secrets_credentials(
    gitops: Gitops, kubectl: Kubectl, private_repo: tuple[GitRepo, str], namespace: str
) -> None:
    _, url = private_repo
    without = gitops.run("create", namespace, "--repo", url, "--dest-namespace", namespace, expect=1)
    assert "cannot fetch" in without.stderr, without.stderr
    credentials_secret(kubectl, f"{namespace}-git", TOKEN)
    created = gitops.run(
        "create", namespace, "--repo", url, "--dest-namespace", namespace, "--secret", f"{namespace}-git"
    )
    synced = gitops.run("sync", namespace, user="gitops")
    status = gitops.run("status", namespace, "-o", "json")
    diff = gitops.run("diff", namespace)
    assert kubectl.run("-n", namespace, "get", "configmap", "settings", "-o", "jsonpath={.data.a}").stdout == "b"
    app = kubectl.run("-n", "gitops-system", "get", "applications", namespace, "-o", "json").stdout
    assert json.loads(app)["spec"]["source"]["secretRef"] == {"name": f"{namespace}-git"}
    no_token(created.stdout, created.stderr, synced.stdout, synced.stderr, status.stdout, diff.stdout, app)


def test_a_missing_secret_or_a_wrong_token_is_a_clear_error_that_quotes_no_value(
    gitops: Gitops, kubectl: Kubectl, private_repo: tuple[GitRepo, str], namespace: str
) -> None:
    _, url = private_repo
    credentials_secret(kubectl, f"{namespace}-git", TOKEN)
    gitops.run("create", namespace, "--repo", url, "--dest-namespace", namespace, "--secret", f"{namespace}-git")
    kubectl.run("-n", "gitops-system", "delete", "secret", f"{namespace}-git")
    missing = gitops.run("sync", namespace, user="gitops", expect=1)
    assert f"Secret gitops-system/{namespace}-git" in missing.stderr, missing.stderr
    assert "does not exist" in missing.stderr, missing.stderr
    wrong = "tok-wrong-51d0e2a9"
    credentials_secret(kubectl, f"{namespace}-git", wrong)
    refused = gitops.run("sync", namespace, user="gitops", expect=1)
    assert "cannot fetch" in refused.stderr, refused.stderr
    assert f"credentials in Secret gitops-system/{namespace}-git" in refused.stderr, refused.stderr
    assert wrong not in refused.stderr
    no_token(missing.stderr, refused.stderr)
