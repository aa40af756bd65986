"""Only the API server may call /validate (its client certificate, through the local cluster's admission config), and
no Secret value from Git reaches sync's or diff's output, an Application's status, /readyz or the webhook's log."""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from localcluster import pki

from ..conftest import Gitops, GitRepo, Kubectl
from .test_webhook import MakeRepo, WebhookProcess, records
from .test_webhook import webhook as webhook  # the same fixture: this module gets its own webhook and registration

pytestmark = pytest.mark.cluster

INT_VALUE = "73918"
MAP_VALUE = "s3cr3t-x"


def review(kubectl: Kubectl, namespace: str, message: str, *, dry_run: bool = False) -> bytes:
    """What the API server would send for alice's change of the guestbook's message (drift in enforce mode)."""
    live = json.loads(kubectl.run("-n", namespace, "get", "configmap", "guestbook-settings", "-o", "json").stdout)
    changed = json.loads(json.dumps(live))
    changed["data"]["message"] = message
    body = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": f"forged-{message}",
            "operation": "UPDATE",
            "name": "guestbook-settings",
            "namespace": namespace,
            "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
            "resource": {"group": "", "version": "v1", "resource": "configmaps"},
            "userInfo": {"username": "mallory-as-somebody", "groups": ["developers"]},
            "object": changed,
            "oldObject": live,
            "dryRun": dry_run,
        },
    }
    return json.dumps(body).encode()


def post(hook: WebhookProcess, body: bytes, client: pki.KeyPair | None) -> tuple[int, Any]:
    context = ssl.create_default_context(cafile=str(hook.cert_dir / "ca.crt"))
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    request = urllib.request.Request(f"{hook.url}/validate", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, context=context, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture
def guarded(gitops: Gitops, git_repo: MakeRepo, namespace: str, webhook: WebhookProcess) -> GitRepo:
    """The guestbook in enforce mode, synced, loaded by the webhook."""
    repo = git_repo("examples/guestbook")
    gitops.run("create", namespace, "--repo", str(repo.path), "--dest-namespace", namespace, "--mode", "enforce")
    gitops.run("sync", namespace, user="gitops")
    webhook.wait_loaded(namespace)
    return repo


def test_only_the_api_server_gets_an_answer_from_validate(
    guarded: GitRepo, kubectl: Kubectl, namespace: str, webhook: WebhookProcess, tmp_path: Path
) -> None:
    # No client certificate: refused before anything is judged; no record in a made-up user's name, and a dry-run
    # guess learns nothing (no allowed/denied).
    for dry_run in (False, True):
        status, answer = post(webhook, review(kubectl, namespace, f"forged {dry_run}", dry_run=dry_run), None)
        assert status == 401
        assert "response" not in answer
        assert "only the API server may call /validate" in answer["reason"]
    # A certificate of the cluster's CA, but a person's (alice): refused.
    alice = pki.KeyPair(kubectl.cluster.pki_dir / "alice.crt", kubectl.cluster.pki_dir / "alice.key")
    status, answer = post(webhook, review(kubectl, namespace, "forged as alice"), alice)
    assert status == 403
    assert "response" not in answer
    # The API server's name on a certificate of another CA: the TLS handshake fails.
    other = tmp_path / "other-ca"
    other.mkdir()
    forged = pki.CertificateAuthority(other).issue_client(other, pki.WEBHOOK_CLIENT)
    with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
        post(webhook, review(kubectl, namespace, "forged by another CA"), forged)
    assert records(kubectl, namespace) == []
    # The probes need no certificate.
    assert webhook.get("/healthz") == {"status": "ok"}
    # The real API server's call passes: alice's change is judged, denied and recorded.
    patch = json.dumps({"data": {"message": "by hand"}})
    proc = kubectl.run(
        "-n", namespace, "patch", "configmap", "guestbook-settings", "-p", patch, user="alice", check=False
    )
    assert proc.returncode != 0
    assert "Git has Hello from Git!, request has by hand" in proc.stderr
    assert [(r["user"], r["decision"]) for r in records(kubectl, namespace)] == [("alice", "denied")]


BAD_SECRETS = f"""\
apiVersion: v1
kind: Secret
metadata:
  name: typed-wrong
type: Opaque
data:
  password: {INT_VALUE}
---
apiVersion: v1
kind: Secret
metadata:
  name: nested-wrong
type: Opaque
stringData:
  token:
    nested: {MAP_VALUE}
"""


def leaks(text: str) -> list[str]:
    return [value for value in (INT_VALUE, MAP_VALUE) if value in text]


def test_no_secret_value_from_git_reaches_any_output(
    gitops: Gitops, kubectl: Kubectl, git_repo: MakeRepo, namespace: str, webhook: WebhookProcess
) -> None:
    repo = git_repo("examples/guestbook")
    gitops.run("create", namespace, "--repo", str(repo.path), "--dest-namespace", namespace, "--mode", "warn")
    gitops.run("sync", namespace, user="gitops")
    webhook.wait_loaded(namespace)
    # The Secrets exist with good values first, so that diff dry-runs Git's bad ones against them.
    repo.write(
        "bad-secrets.yaml",
        BAD_SECRETS.replace(f"password: {INT_VALUE}", "password: b2s=")
        .replace(f"nested: {MAP_VALUE}", "")
        .replace("  token:\n", "  token: fine\n"),
    )
    repo.commit("two more Secrets")
    gitops.run("sync", namespace, user="gitops")
    repo.write("bad-secrets.yaml", BAD_SECRETS)
    repo.commit("Secret values of the wrong type")

    outputs: dict[str, str] = {}
    for verb in (("sync", namespace), ("diff", namespace), ("diff", namespace, "-o", "json"), ("status", namespace)):
        proc = gitops.run(*verb, user="gitops", expect=None)
        outputs[" ".join(verb)] = proc.stdout + proc.stderr
    assert "typed-wrong" in outputs[f"sync {namespace}"]  # the failure is reported...
    application = kubectl.run("-n", "gitops-system", "get", "applications", namespace, "-o", "json").stdout
    assert "expected string, got" in application  # the sync's failure is in the status...
    outputs["Application"] = application
    # ...and the webhook, rendering the new commit, meets the same error (its dry-run of Git's objects): a change of
    # the Application's spec makes it render again at once.
    patch = json.dumps({"spec": {"driftMode": "audit"}})
    kubectl.run("-n", "gitops-system", "patch", "applications", namespace, "--type=merge", "-p", patch)
    readyz: Any = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        readyz = webhook.get("/readyz")
        entry = (readyz.get("applications") or {}).get(f"gitops-system/{namespace}") or {}
        if entry.get("error"):
            break
        time.sleep(0.2)
    assert "expected string, got" in json.dumps(readyz), readyz
    outputs["/readyz"] = json.dumps(readyz)
    outputs["webhook log"] = webhook.log.read_text()
    found = {where: leaks(text) for where, text in outputs.items() if leaks(text)}
    assert found == {}, {where: outputs[where][-2000:] for where in found}
