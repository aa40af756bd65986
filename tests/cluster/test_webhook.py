"""The drift admission webhook end to end: the real API server calls the real gitops-webhook over TLS; alice, oncall
and gitops-sync use real kubectl."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from ..conftest import REPO_ROOT, Gitops, GitRepo, Kubectl

pytestmark = pytest.mark.cluster

MakeRepo = Callable[[str | None], GitRepo]
WEBHOOK = Path(sys.executable).parent / "gitops-webhook"
BREAK_GLASS = "gitops.kubectl-gitops.io/break-glass"


@dataclass
class WebhookProcess:
    cert_dir: Path
    port: int
    kubeconfig: Path
    log: Path
    client_ca: Path  # what signed the API server's client certificate: only it may call /validate
    proc: subprocess.Popen[bytes] | None = None
    cert_secret: str = "gitops-webhook-tls"  # "": no Secret, the certificate is this process's own
    args: tuple[str, ...] = ()  # more command-line options
    env: dict[str, str] = dataclasses.field(default_factory=dict)  # more environment (GITOPS_WEBHOOK_* settings)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    str(WEBHOOK),
                    "--kubeconfig",
                    str(self.kubeconfig),
                    "--listen",
                    f"127.0.0.1:{self.port}",
                    "--cert-dir",
                    str(self.cert_dir),
                    *(("--cert-secret", self.cert_secret) if self.cert_secret else ()),
                    "--client-ca-file",
                    str(self.client_ca),
                    *self.args,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.get("/healthz") is not None:
                return
            time.sleep(0.2)
        raise AssertionError(f"gitops-webhook did not start:\n{self.log.read_text()[-3000:]}")

    def wait_serving(self, timeout: float = 120) -> None:
        """Until /servingz says this replica takes requests (its first load of Git's state has been tried), as a
        Deployment's readiness probe waits before its Service routes to it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.get("/servingz")
            if isinstance(status, dict) and status.get("serving"):
                return
            time.sleep(0.2)
        raise AssertionError(f"gitops-webhook not serving after {timeout:.0f}s:\n{self.log.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)
            self.proc = None

    def get(self, path: str) -> Any:
        try:
            context = ssl.create_default_context(cafile=str(self.cert_dir / "ca.crt"))
        except OSError:
            return None  # not written yet
        try:
            with urllib.request.urlopen(self.url + path, context=context, timeout=5) as response:
                body = response.read()
        except urllib.error.HTTPError as e:
            body = e.read()
        except OSError:
            return None
        try:
            return json.loads(body)
        except ValueError:
            return body.decode()

    def wait_loaded(self, app: str, revision: str = "") -> None:
        deadline = time.monotonic() + 60
        status: Any = None
        while time.monotonic() < deadline:
            status = self.get("/readyz") or {}
            entry = (status.get("applications") or {}).get(f"gitops-system/{app}")
            if entry and entry["objects"] and (not revision or entry["revision"] == revision):
                return
            time.sleep(0.2)
        raise AssertionError(f"{app} never loaded: {status}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_account_kubeconfig(kubectl: Kubectl, path: Path, component: str = "webhook") -> Path:
    """A kubeconfig for the gitops-COMPONENT ServiceAccount of manifests/COMPONENT/rbac.yaml (its least privilege)."""
    account = f"gitops-{component}"
    kubectl.run("-n", "gitops-system", "apply", "-f", str(REPO_ROOT / "manifests" / component / "rbac.yaml"))
    token = kubectl.run("-n", "gitops-system", "create", "token", account, "--duration=2h").stdout.strip()
    admin = yaml.safe_load(kubectl.cluster.kubeconfig("admin").read_text())
    admin["users"] = [{"name": account, "user": {"token": token}}]
    admin["contexts"] = [{"name": "sa", "context": {"cluster": "local", "user": account}}]
    admin["current-context"] = "sa"
    path.write_text(yaml.safe_dump(admin))
    return path


@contextlib.contextmanager
def registered_webhook(gitops: Gitops, kubectl: Kubectl, work: Path) -> Iterator[WebhookProcess]:
    """gitops-webhook running as its ServiceAccount with the shipped RBAC, registered with the API server; its
    certificate is shared through a Secret, as replicas in a cluster share it. Unregistered and stopped after."""
    identity = service_account_kubeconfig(kubectl, work / "webhook.kubeconfig")
    hook = WebhookProcess(
        work / "certs", _free_port(), identity, work / "webhook.log", kubectl.cluster.webhook_client_ca
    )
    hook.start()
    try:
        hook.wait_serving()
        gitops.run("install", "--webhook-url", f"{hook.url}/validate", "--ca-file", str(hook.cert_dir / "ca.crt"))
        yield hook
    finally:
        kubectl.run("delete", "validatingwebhookconfiguration", "gitops-drift.kubectl-gitops.io", check=False)
        hook.stop()


@pytest.fixture(scope="module")
def webhook(gitops: Gitops, kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookProcess]:
    """The webhook for this module's tests (registered_webhook)."""
    with registered_webhook(gitops, kubectl, tmp_path_factory.mktemp("webhook")) as hook:
        yield hook


@pytest.fixture
def app(gitops: Gitops, git_repo: MakeRepo, namespace: str, webhook: WebhookProcess) -> Callable[..., GitRepo]:
    """Factory: the guestbook as an Application named after the test's namespace, synced, loaded by the webhook."""

    def make(mode: str) -> GitRepo:
        repo = git_repo("examples/guestbook")
        gitops.run("create", namespace, "--repo", str(repo.path), "--dest-namespace", namespace, "--mode", mode)
        gitops.run("sync", namespace, user="gitops")
        webhook.wait_loaded(namespace)
        return repo

    return make


def records(kubectl: Kubectl, namespace: str) -> list[dict[str, Any]]:
    out = json.loads(kubectl.run("-n", "gitops-system", "get", "auditrecords", "-o", "json").stdout)
    found = [i["record"] for i in out["items"] if i["record"]["object"].get("namespace") == namespace]
    return sorted(found, key=lambda r: r["sequence"])


def denied(proc: subprocess.CompletedProcess[str]) -> bool:
    return proc.returncode != 0 and "denied the request" in proc.stderr and "kubectl-gitops:" in proc.stderr


def set_message(
    kubectl: Kubectl, namespace: str, message: str, user: str = "alice"
) -> subprocess.CompletedProcess[str]:
    """`kubectl patch` of the message in the guestbook's managed ConfigMap (Git has "Hello from Git!")."""
    patch = json.dumps({"data": {"message": message}})
    return kubectl.run("-n", namespace, "patch", "configmap", "guestbook-settings", "-p", patch, user=user, check=False)


def test_enforce_denies_every_out_of_band_change(
    app: Callable[..., GitRepo], kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    app("enforce")

    def alice(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return kubectl.run("-n", namespace, *args, user="alice", check=False, stdin=stdin)

    patch = alice(
        "patch", "service", "frontend", "--type=json", "-p", '[{"op":"replace","path":"/spec/ports/0/port","value":81}]'
    )
    assert denied(patch), patch.stderr
    assert "/spec/ports/0/port: Git has 80, request has 81" in patch.stderr
    assert "Change Git instead and run `kubectl gitops sync`" in patch.stderr

    edit = kubectl.edit(
        namespace, "configmap/guestbook-settings", "Hello from Git!", "Edited by hand", user="alice", scratch=tmp_path
    )
    assert edit.returncode != 0
    assert "/data/message: Git has Hello from Git!, request has Edited by hand" in edit.stderr

    scale = alice("scale", "deployment/frontend", "--replicas=5")
    assert denied(scale)
    assert "/spec/replicas: Git has 2, request has 5" in scale.stderr
    image = alice("set", "image", "deployment/frontend", "frontend=registry.example/evil:1")
    assert denied(image)
    env = alice("set", "env", "deployment/frontend", "DEBUG=1")
    assert denied(env)
    assert "not in Git, request sets" in env.stderr

    local = json.loads(kubectl.run("-n", namespace, "get", "service", "redis", "-o", "json").stdout)
    local["spec"]["ports"][0]["targetPort"] = 6380
    for field in ("resourceVersion", "uid", "creationTimestamp", "managedFields"):
        local["metadata"].pop(field, None)
    applied = alice("apply", "-f", "-", stdin=json.dumps(local))
    assert denied(applied), applied.stderr
    delete = alice("delete", "configmap", "guestbook-settings")
    assert denied(delete)
    assert "which Git still declares" in delete.stderr

    # Changes nobody minds pass.
    assert alice("label", "deployment", "frontend", "team=web").returncode == 0
    assert alice("rollout", "restart", "deployment/frontend").returncode == 0

    recorded = records(kubectl, namespace)
    assert [r["decision"] for r in recorded] == ["denied"] * 7
    assert {r["user"] for r in recorded} == {"alice"}
    assert recorded[0]["fields"] == [{"path": "/spec/ports/0/port", "kind": "changed", "git": 80, "requested": 81}]

    # A server-side dry run is judged the same, but not recorded.
    dry = alice("set", "image", "deployment/frontend", "frontend=registry.example/evil:2", "--dry-run=server")
    assert denied(dry)
    assert len(records(kubectl, namespace)) == 7


def test_warn_allows_with_a_warning_and_records(app: Callable[..., GitRepo], kubectl: Kubectl, namespace: str) -> None:
    app("warn")
    proc = kubectl.run(
        "-n", namespace, "set", "image", "deployment/frontend", "frontend=registry.example/x:2", user="alice"
    )
    assert "Warning: drift from Git" in proc.stderr
    assert "/spec/template/spec/containers/0/image" in proc.stderr
    # Already drifted there: a second change to the same field is a new attempt, not a ride on the first one.
    again = kubectl.run(
        "-n", namespace, "set", "image", "deployment/frontend", "frontend=registry.example/x:3", user="alice"
    )
    assert "Warning: drift from Git" in again.stderr
    # An unrelated change to the drifted object adds nothing.
    kubectl.run("-n", namespace, "label", "deployment/frontend", "team=web", user="alice")
    assert [r["decision"] for r in records(kubectl, namespace)] == ["warned", "warned"]


def test_audit_allows_silently_and_records(app: Callable[..., GitRepo], kubectl: Kubectl, namespace: str) -> None:
    app("audit")
    proc = kubectl.run("-n", namespace, "scale", "deployment/redis", "--replicas=4", user="alice")
    assert "Warning" not in proc.stderr
    recorded = records(kubectl, namespace)
    assert [(r["decision"], r["subResource"], r["fields"][0]["kind"]) for r in recorded] == [
        ("recorded", "scale", "added")
    ]


def test_sync_to_a_new_commit_passes_in_enforce_mode(
    app: Callable[..., GitRepo], gitops: Gitops, kubectl: Kubectl, namespace: str
) -> None:
    repo = app("enforce")
    frontend = repo.path / "frontend.yaml"
    frontend.write_text(frontend.read_text().replace("guestbook-frontend:1.0", "guestbook-frontend:1.1"))
    (repo.path / "redis.yaml").unlink()
    repo.write("flags.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: flags}\ndata: {beta: 'on'}\n")
    repo.commit("frontend 1.1, no redis, feature flags")
    gitops.run("sync", namespace, "--prune", user="gitops")
    image = kubectl.run(
        "-n", namespace, "get", "deployment", "frontend", "-o", "jsonpath={.spec.template.spec.containers[0].image}"
    ).stdout
    assert image == "registry.example/guestbook-frontend:1.1"
    kubectl.run("-n", namespace, "get", "configmap", "flags")  # created by the sync: new in that commit
    assert records(kubectl, namespace) == []
    # The admission of the sync made the webhook load the new commit: alice is now judged against it.
    back = kubectl.run(
        "-n",
        namespace,
        "set",
        "image",
        "deployment/frontend",
        "frontend=registry.example/guestbook-frontend:1.0",
        user="alice",
        check=False,
    )
    assert "Git has registry.example/guestbook-frontend:1.1" in back.stderr


def test_break_glass_only_for_its_group(app: Callable[..., GitRepo], kubectl: Kubectl, namespace: str) -> None:
    """The reason comes with the change, in one request: a reason left on the object earlier (by anyone: an
    annotation alone adds no drift) is not the requester's."""
    app("enforce")
    reason = "INC-42 hotfix"
    for user, allowed in (("alice", False), ("breakglass", True)):
        patch = json.dumps(
            {
                "metadata": {"annotations": {BREAK_GLASS: f"{reason} by {user}"}},
                "data": {"message": f"hotfix by {user}"},
            }
        )
        proc = kubectl.run(
            "-n", namespace, "patch", "configmap", "guestbook-settings", "-p", patch, user=user, check=False
        )
        assert (proc.returncode == 0) is allowed, proc.stderr
        if not allowed:
            assert "honoured only for members of gitops:break-glass" in proc.stderr
    decisions = [(r["user"], r["decision"], r["reason"]) for r in records(kubectl, namespace)]
    assert decisions == [("alice", "denied", ""), ("oncall", "break-glass", f"{reason} by breakglass")]
    # A reason left on the object earlier, by alice, lends nothing to oncall's next change.
    kubectl.run(
        "-n",
        namespace,
        "annotate",
        "configmap",
        "guestbook-settings",
        f"{BREAK_GLASS}=planted",
        "--overwrite",
        user="alice",
    )
    assert set_message(kubectl, namespace, "riding on a planted reason", user="breakglass").returncode != 0


def test_secret_values_stay_out_of_records_and_messages(
    app: Callable[..., GitRepo], kubectl: Kubectl, namespace: str, webhook: WebhookProcess
) -> None:
    app("enforce")
    value = "alice-typed-this-password"
    proc = kubectl.run(
        "-n",
        namespace,
        "patch",
        "secret",
        "guestbook-credentials",
        "-p",
        json.dumps({"stringData": {"redis-password": value}}),
        user="alice",
        check=False,
    )
    assert denied(proc)
    assert "/data/redis-password: Git has <secret:" in proc.stderr
    encoded = base64.b64encode(value.encode()).decode()
    git_value = "guestbook-demo-only"
    text = proc.stderr + json.dumps(records(kubectl, namespace)) + webhook.log.read_text()
    for secret in (value, encoded, git_value, base64.b64encode(git_value.encode()).decode()):
        assert secret not in text


def test_down_webhook_leaves_unmanaged_objects_and_kube_system_alone(
    app: Callable[..., GitRepo], kubectl: Kubectl, namespace: str, webhook: WebhookProcess
) -> None:
    app("enforce")
    webhook.stop()
    try:
        kubectl.run("-n", namespace, "create", "configmap", "unmanaged", "--from-literal=a=b", user="alice")
        kubectl.run("-n", namespace, "patch", "configmap", "unmanaged", "-p", '{"data":{"a":"c"}}', user="alice")
        kubectl.run("-n", "kube-system", "create", "configmap", f"probe-{namespace}", "--from-literal=a=b")
        kubectl.run("-n", "kube-system", "delete", "configmap", f"probe-{namespace}")
        # Managed objects stay protected: failurePolicy Fail.
        blocked = kubectl.run(
            "-n", namespace, "set", "image", "deployment/frontend", "frontend=x:1", user="alice", check=False
        )
        assert blocked.returncode != 0
        assert "failed calling webhook" in blocked.stderr
    finally:
        webhook.start()
        webhook.wait_serving()  # for the module's next test


def test_kill_9_loses_no_record_of_an_answered_request(
    app: Callable[..., GitRepo], kubectl: Kubectl, namespace: str, webhook: WebhookProcess
) -> None:
    app("enforce")
    answered: list[int] = []
    attempts = 0  # attempts that have finished, answered or not
    progress = threading.Condition()
    stop = threading.Event()

    def stream() -> None:
        nonlocal attempts
        i = 0
        while not stop.is_set() and i < 60:
            proc = set_message(kubectl, namespace, f"attempt {i}")
            with progress:
                if denied(proc):
                    answered.append(i)
                attempts += 1
                progress.notify_all()
            i += 1

    def wait_for(condition: Callable[[], bool], what: str) -> None:
        with progress:
            assert progress.wait_for(condition, timeout=120), what

    worker = threading.Thread(target=stream)
    worker.start()
    wait_for(lambda: len(answered) >= 3, "three attempts answered before the kill")
    webhook.stop(signal.SIGKILL)
    with progress:
        killed_at = attempts
    wait_for(lambda: attempts >= killed_at + 2, "an attempt made while the webhook was down")
    webhook.start()
    stop.set()
    worker.join(timeout=120)
    webhook.wait_serving()  # (for the module's next test)
    kept = records(kubectl, namespace)
    recorded = {r["fields"][0].get("requested") for r in kept if not r.get("unjudged")}
    assert answered, "no request was answered before the kill"
    missing = [i for i in answered if f"attempt {i}" not in recorded]
    # The restarted webhook answers before it has loaded Git's state: it denies what it cannot judge, and records
    # each such attempt as unjudged (the field values it could not compare are not in that record).
    unjudged = [r for r in kept if r.get("unjudged") and r["decision"] == "denied"]
    assert len(missing) <= len(unjudged), (missing, unjudged)


def test_audit_cli_lists_and_verify_catches_tampering(
    app: Callable[..., GitRepo], gitops: Gitops, kubectl: Kubectl, namespace: str
) -> None:
    app("enforce")
    for n in range(3):
        set_message(kubectl, namespace, f"try {n}")
    listed = gitops.run("audit", namespace, "--user", "alice", "--since", "10m").stdout
    assert listed.count("denied") == 3
    assert "/data/message (changed)" in listed
    as_json = json.loads(gitops.run("audit", namespace, "-o", "json").stdout)
    assert [r["fields"][0]["requested"] for r in as_json] == ["try 0", "try 1", "try 2"]
    gitops.run("audit", "verify")

    names = [f"audit-{r['sequence']:012d}" for r in records(kubectl, namespace)]
    original = json.loads(kubectl.run("-n", "gitops-system", "get", "auditrecord", names[1], "-o", "json").stdout)

    def restore() -> None:
        kubectl.run("-n", "gitops-system", "delete", "auditrecord", names[1], "--ignore-not-found")
        clean = {k: v for k, v in original.items() if k != "metadata"}
        clean["metadata"] = {"name": names[1], "namespace": "gitops-system", "labels": original["metadata"]["labels"]}
        kubectl.run("-n", "gitops-system", "create", "-f", "-", stdin=json.dumps(clean))
        gitops.run("audit", "verify")

    # edited
    kubectl.run(
        "-n",
        "gitops-system",
        "patch",
        "auditrecord",
        names[1],
        "--type=merge",
        "-p",
        json.dumps({"record": {"user": "somebody-else"}}),
    )
    edited = gitops.run("audit", "verify", expect=1)
    assert "does not match its hash (edited?)" in edited.stdout
    restore()
    # deleted
    kubectl.run("-n", "gitops-system", "delete", "auditrecord", names[1])
    assert "is missing (deleted?)" in gitops.run("audit", "verify", expect=1).stdout
    restore()
    # reordered: two records' contents swapped
    first = json.loads(kubectl.run("-n", "gitops-system", "get", "auditrecord", names[0], "-o", "json").stdout)
    second = original
    for name, body in ((names[0], second["record"]), (names[1], first["record"])):
        kubectl.run(
            "-n", "gitops-system", "patch", "auditrecord", name, "--type=merge", "-p", json.dumps({"record": body})
        )
    reordered = gitops.run("audit", "verify", expect=1).stdout
    assert "does not follow the record before it" in reordered
    for name, body in ((names[0], first["record"]), (names[1], second["record"])):
        kubectl.run(
            "-n", "gitops-system", "patch", "auditrecord", name, "--type=merge", "-p", json.dumps({"record": body})
        )
    gitops.run("audit", "verify")


def test_replicas_share_one_certificate_and_one_audit_chain(
    app: Callable[..., GitRepo],
    gitops: Gitops,
    kubectl: Kubectl,
    namespace: str,
    webhook: WebhookProcess,
    tmp_path: Path,
) -> None:
    app("enforce")
    second = WebhookProcess(
        tmp_path / "certs", _free_port(), webhook.kubeconfig, tmp_path / "second.log", webhook.client_ca
    )
    second.start()
    try:
        stored = kubectl.run(
            "-n", "gitops-system", "get", "secret", "gitops-webhook-tls", "-o", "jsonpath={.data.ca\\.crt}"
        )
        shared = base64.b64decode(stored.stdout)
        assert (webhook.cert_dir / "ca.crt").read_bytes() == shared, "first"
        assert (second.cert_dir / "ca.crt").read_bytes() == shared, "second"
        second.wait_loaded(namespace)
        live = json.loads(kubectl.run("-n", namespace, "get", "configmap", "guestbook-settings", "-o", "json").stdout)

        def post(replica: WebhookProcess, n: int) -> dict[str, Any]:
            changed = json.loads(json.dumps(live))
            changed["data"]["message"] = f"via replica {n}"
            body = {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": {
                    "uid": f"uid-{n}",
                    "operation": "UPDATE",
                    "name": "guestbook-settings",
                    "namespace": namespace,
                    "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
                    "resource": {"group": "", "version": "v1", "resource": "configmaps"},
                    "userInfo": {"username": "alice", "groups": ["developers"]},
                    "object": changed,
                    "oldObject": live,
                    "dryRun": False,
                },
            }
            context = ssl.create_default_context(cafile=str(webhook.cert_dir / "ca.crt"))
            client = kubectl.cluster.webhook_client  # posting as the API server does
            context.load_cert_chain(str(client.cert), str(client.key))
            request = urllib.request.Request(
                f"{replica.url}/validate", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, context=context, timeout=30) as response:
                answer: dict[str, Any] = json.loads(response.read())
            return answer

        threads = []
        answers: list[dict[str, Any]] = []
        for n in range(12):
            replica = webhook if n % 2 else second
            thread = threading.Thread(target=lambda r=replica, i=n: answers.append(post(r, i)))
            threads.append(thread)
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(a["response"]["uid"] for a in answers) == sorted(f"uid-{n}" for n in range(12))
        assert not any(a["response"]["allowed"] for a in answers)
        recorded = records(kubectl, namespace)
        assert sorted(r["requestUID"] for r in recorded) == sorted(f"uid-{n}" for n in range(12))
        gitops.run("audit", "verify")
    finally:
        second.stop()


def test_the_in_cluster_manifests_are_accepted_by_the_api_server(kubectl: Kubectl) -> None:
    """`kubectl apply -k manifests/webhook/` as a server-side dry run: every object passes the API server's own
    validation (schemas, RBAC rules, the PodDisruptionBudget against the Deployment's labels)."""
    out = kubectl.run("apply", "-k", str(REPO_ROOT / "manifests" / "webhook"), "--dry-run=server", "-o", "json").stdout
    applied = json.loads(out)
    items = applied["items"] if applied.get("kind") == "List" else [applied]
    kinds = {(item["kind"], item["metadata"]["name"]) for item in items}
    assert {
        ("ServiceAccount", "gitops-webhook"),
        ("Deployment", "gitops-webhook"),
        ("Service", "gitops-webhook"),
        ("PodDisruptionBudget", "gitops-webhook"),
    } <= kinds
    deployment = next(item for item in items if item["kind"] == "Deployment")
    assert deployment["metadata"]["namespace"] == "gitops-system"
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "gitops-webhook"
