"""gitops-controller against the real API server, as its own ServiceAccount with the shipped RBAC, with the drift
webhook registered: automated sync, reconcile on request, drift found from the watch, healed or only reported, a
fight that backs off, leader election with a killed leader, Git taken away and brought back, suspend and resume, a
rollback honoured, and `kubectl wait --for=condition=Synced`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ..conftest import Gitops, GitRepo, Kubectl
from .test_webhook import WebhookProcess, _free_port, registered_webhook, service_account_kubeconfig

pytestmark = pytest.mark.cluster

MakeRepo = Callable[[str | None], GitRepo]
CONTROLLER = Path(sys.executable).parent / "gitops-controller"
APP_GROUP = "applications.gitops.kubectl-gitops.io"


@dataclass
class ControllerProcess:
    kubeconfig: Path
    cache: Path
    log: Path
    port: int = field(default_factory=_free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ControllerProcess:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    str(CONTROLLER),
                    "--kubeconfig",
                    str(self.kubeconfig),
                    "--probe-address",
                    f"127.0.0.1:{self.port}",
                    "--lease-duration",
                    "6",
                    "--renew-deadline",
                    "4",
                    "--retry-period",
                    "1",
                    "--git-cache",
                    str(self.cache),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "XDG_CACHE_HOME": str(self.cache)},
            )
        return self

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return 0, ""

    def leading(self) -> bool:
        return "gitops_controller_leader 1.0" in self.get("/metrics")[1]

    def wait_ready(self, *, leading: bool = True, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"gitops-controller exited ({self.proc.returncode}):\n{self.log.read_text()}")
            status, body = self.get("/readyz")
            if status == 200 and (not leading or body.startswith("leading")):
                return
            time.sleep(0.2)
        raise AssertionError(f"gitops-controller not ready in {timeout}s:\n{self.log.read_text()[-4000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def webhook(gitops: Gitops, kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookProcess]:
    with registered_webhook(gitops, kubectl, tmp_path_factory.mktemp("controller-webhook")) as hook:
        yield hook


@pytest.fixture(scope="module")
def controller_identity(kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return service_account_kubeconfig(kubectl, tmp_path_factory.mktemp("controller-sa") / "c.kubeconfig", "controller")


@pytest.fixture(scope="module")
def controller(
    webhook: WebhookProcess, controller_identity: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControllerProcess]:
    """One gitops-controller for the module, leading, as its ServiceAccount."""
    work = tmp_path_factory.mktemp("controller")
    proc = ControllerProcess(controller_identity, work / "cache", work / "controller.log").start()
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


@pytest.fixture(autouse=True)
def application_deleted_after(kubectl: Kubectl, namespace: str) -> Iterator[None]:
    """Each test's Application (named after its namespace) goes with it: later modules' webhooks need not load it."""
    yield
    kubectl.run(
        "-n", "gitops-system", "delete", "applications.gitops.kubectl-gitops.io", namespace, "--ignore-not-found"
    )


def application(kubectl: Kubectl, name: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(
        kubectl.run("-n", "gitops-system", "get", f"{APP_GROUP}/{name}", "-o", "json").stdout
    )
    return out


def condition(app: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in (app.get("status") or {}).get("conditions") or [] if c.get("type") == kind), {})


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60, log: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
    raise AssertionError(f"{what}: not within {timeout}s\n{tail}")


def synced_to(kubectl: Kubectl, name: str, commit: str) -> Callable[[], bool]:
    def check() -> bool:
        app = application(kubectl, name)
        last = (app.get("status") or {}).get("lastSync") or {}
        return bool(last.get("revision") == commit and last.get("result") == "Succeeded")

    return check


def records(kubectl: Kubectl, name: str) -> list[dict[str, Any]]:
    out = json.loads(
        kubectl.run(
            "-n",
            "gitops-system",
            "get",
            "syncrecords",
            "-l",
            f"gitops.kubectl-gitops.io/application={name}",
            "-o",
            "json",
        ).stdout
    )
    found = [json.loads(i["metadata"]["annotations"]["gitops.kubectl-gitops.io/sync"]) for i in out["items"]]
    return sorted(found, key=lambda r: int(r["id"]))


def events(kubectl: Kubectl, name: str) -> list[dict[str, Any]]:
    out = json.loads(
        kubectl.run(
            "-n", "gitops-system", "get", "events", "--field-selector", f"involvedObject.name={name}", "-o", "json"
        ).stdout
    )
    items: list[dict[str, Any]] = out["items"]
    return items


def configmap_value(kubectl: Kubectl, namespace: str, name: str, key: str) -> str:
    out = kubectl.run("-n", namespace, "get", "configmap", name, "-o", f"jsonpath={{.data.{key}}}", check=False)
    return out.stdout


CONFIG = "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings}}\ndata: {{greeting: {value}}}\n"


@pytest.fixture
def small_repo(git_repo: MakeRepo) -> GitRepo:
    repo = git_repo(None)
    repo.write("settings.yaml", CONFIG.format(value="hello"))
    repo.commit("hello")
    return repo


def wait_synced(kubectl: Kubectl, name: str) -> None:
    """kubectl wait --for=condition=Synced, as a user would."""
    kubectl.run(
        "-n", "gitops-system", "wait", f"{APP_GROUP}/{name}", "--for=condition=Synced", "--timeout=60s", timeout=70
    )


def create(gitops: Gitops, name: str, repo: GitRepo, namespace: str, *args: str) -> None:
    gitops.run("create", name, "--repo", str(repo.path), "--dest-namespace", namespace, *args)


def test_a_new_commit_is_synced_on_its_own_and_kubectl_wait_sees_it(
    gitops: Gitops, kubectl: Kubectl, controller: ControllerProcess, small_repo: GitRepo, namespace: str
) -> None:
    create(gitops, namespace, small_repo, namespace, "--auto-sync", "--interval", "3s", "--mode", "enforce")
    wait_synced(kubectl, namespace)
    assert configmap_value(kubectl, namespace, "settings", "greeting") == "hello"
    small_repo.write("settings.yaml", CONFIG.format(value="bonjour"))
    commit = small_repo.commit("bonjour")
    wait_for("the new commit synced by the reconciler", synced_to(kubectl, namespace, commit), log=controller.log)
    assert configmap_value(kubectl, namespace, "settings", "greeting") == "bonjour"
    synced = [r for r in records(kubectl, namespace) if r["revision"] == commit]
    assert len(synced) == 1, synced
    assert synced[0]["trigger"] == "automated"
    assert synced[0]["user"] == "system:serviceaccount:gitops-system:gitops-controller"
    app = application(kubectl, namespace)
    assert condition(app, "Synced")["status"] == "True"
    assert condition(app, "Synced")["observedGeneration"] == app["metadata"]["generation"]
    assert app["status"]["health"]["status"] == "Healthy"
    assert any(e["reason"] == "Synced" for e in events(kubectl, namespace))
    columns = kubectl.run("-n", "gitops-system", "get", APP_GROUP, namespace).stdout
    assert "HEALTH" in columns, columns
    assert "Healthy" in columns, columns


def test_reconcile_wait_syncs_at_once_and_reports(
    gitops: Gitops, kubectl: Kubectl, controller: ControllerProcess, small_repo: GitRepo, namespace: str
) -> None:
    create(gitops, namespace, small_repo, namespace, "--auto-sync", "--interval", "1h")
    wait_synced(kubectl, namespace)
    small_repo.write("settings.yaml", CONFIG.format(value="hola"))
    commit = small_repo.commit("hola")
    out = gitops.run("reconcile", namespace, "--timeout", "60s").stdout
    assert "Ready:       True" in out, out
    assert synced_to(kubectl, namespace, commit)()
    assert configmap_value(kubectl, namespace, "settings", "greeting") == "hola"


def test_audit_mode_drift_is_found_from_the_watch_and_healed(
    gitops: Gitops, kubectl: Kubectl, controller: ControllerProcess, small_repo: GitRepo, namespace: str
) -> None:
    create(
        gitops, namespace, small_repo, namespace, "--auto-sync", "--self-heal", "--mode", "audit", "--interval", "1h"
    )
    wait_synced(kubectl, namespace)
    kubectl.run("-n", namespace, "patch", "configmap", "settings", "-p", '{"data":{"greeting":"hacked"}}', user="alice")
    wait_for(
        "alice's change healed",
        lambda: configmap_value(kubectl, namespace, "settings", "greeting") == "hello",
        timeout=30,
        log=controller.log,
    )
    heals = [r for r in records(kubectl, namespace) if r["trigger"] == "self-heal"]
    assert heals, records(kubectl, namespace)
    assert any(e["reason"] == "DriftDetected" for e in events(kubectl, namespace))
    # A removed tracking label comes back: the object leaves the labelled watch as a deletion, and is compared.
    kubectl.run(
        "-n", namespace, "label", "configmap", "settings", "gitops.kubectl-gitops.io/application-", user="alice"
    )
    wait_for(
        "the tracking label put back",
        lambda: kubectl.run(
            "-n", namespace, "get", "configmap", "settings", "-o", "jsonpath={.metadata.labels}"
        ).stdout.count("gitops.kubectl-gitops.io/application"),
        timeout=30,
        log=controller.log,
    )
    # A deleted object comes back too.
    kubectl.run("-n", namespace, "delete", "configmap", "settings", user="alice")
    wait_for(
        "the deleted ConfigMap recreated",
        lambda: configmap_value(kubectl, namespace, "settings", "greeting") == "hello",
        timeout=30,
        log=controller.log,
    )


def test_without_self_heal_drift_is_only_reported(
    gitops: Gitops, kubectl: Kubectl, controller: ControllerProcess, small_repo: GitRepo, namespace: str
) -> None:
    create(gitops, namespace, small_repo, namespace, "--auto-sync", "--mode", "audit", "--interval", "1h")
    wait_synced(kubectl, namespace)
    kubectl.run("-n", namespace, "patch", "configmap", "settings", "-p", '{"data":{"greeting":"hacked"}}', user="alice")
    kubectl.run(
        "-n",
        "gitops-system",
        "wait",
        f"{APP_GROUP}/{namespace}",
        "--for=condition=Drifted=True",
        "--timeout=30s",
        timeout=40,
    )
    app = application(kubectl, namespace)
    assert app["status"]["drift"]["objects"] == 1
    assert condition(app, "Ready")["status"] == "False"
    assert configmap_value(kubectl, namespace, "settings", "greeting") == "hacked"  # reported, not healed
    assert any(e["reason"] == "DriftDetected" for e in events(kubectl, namespace))
    metrics = controller.get("/metrics")[1]
    line = f'gitops_application_drifted_objects{{application="{namespace}",namespace="gitops-system"}} 1.0'
    assert line in metrics
    assert not [r for r in records(kubectl, namespace) if r["trigger"] == "self-heal"]


def test_a_fight_with_another_writer_backs_off(
    gitops: Gitops, kubectl: Kubectl, controller: ControllerProcess, small_repo: GitRepo, namespace: str
) -> None:
    create(
        gitops, namespace, small_repo, namespace, "--auto-sync", "--self-heal", "--mode", "audit", "--interval", "1h"
    )
    wait_synced(kubectl, namespace)
    deadline = time.monotonic() + 25
    writes = 0
    backoff = False
    while time.monotonic() < deadline and not backoff:
        if configmap_value(kubectl, namespace, "settings", "greeting") != "theirs":
            kubectl.run(
                "-n", namespace, "patch", "configmap", "settings", "-p", '{"data":{"greeting":"theirs"}}', user="alice"
            )
            writes += 1
        backoff = condition(application(kubectl, namespace), "Drifted").get("reason") == "SelfHealBackoff"
        time.sleep(0.3)
    assert backoff, (writes, records(kubectl, namespace))
    heals = [r for r in records(kubectl, namespace) if r["trigger"] == "self-heal"]
    assert 2 <= len(heals) <= 4, heals
    assert any(e["reason"] == "SelfHealBackoff" for e in events(kubectl, namespace))


def test_git_unreachable_deletes_nothing_and_recovers(
    gitops: Gitops, kubectl: Kubectl, controller: ControllerProcess, small_repo: GitRepo, namespace: str
) -> None:
    create(gitops, namespace, small_repo, namespace, "--auto-sync", "--prune", "--interval", "2s")
    wait_synced(kubectl, namespace)
    away = small_repo.path.with_name(small_repo.path.name + "-away")
    small_repo.path.rename(away)
    try:
        wait_for(
            "the status says Git is unreachable",
            lambda: condition(application(kubectl, namespace), "Ready").get("reason") == "SourceUnavailable",
            timeout=40,
            log=controller.log,
        )
        assert configmap_value(kubectl, namespace, "settings", "greeting") == "hello"
        failed = gitops.run("reconcile", namespace, "--timeout", "30s", expect=1)
        assert "SourceUnavailable" in failed.stderr, failed.stderr
    finally:
        away.rename(small_repo.path)
    small_repo.write("settings.yaml", CONFIG.format(value="back"))
    commit = small_repo.commit("back")
    gitops.run("reconcile", namespace, "--timeout", "60s")
    assert synced_to(kubectl, namespace, commit)()
    assert condition(application(kubectl, namespace), "Ready")["status"] == "True"


def test_suspend_pauses_and_resume_goes_on(
    gitops: Gitops, kubectl: Kubectl, controller: ControllerProcess, small_repo: GitRepo, namespace: str
) -> None:
    create(gitops, namespace, small_repo, namespace, "--auto-sync", "--interval", "1h")
    wait_synced(kubectl, namespace)
    gitops.run("suspend", namespace, "--reason", "incident 42")
    small_repo.write("settings.yaml", CONFIG.format(value="paused"))
    commit = small_repo.commit("while suspended")
    gitops.run("reconcile", namespace, "--timeout", "60s")
    app = application(kubectl, namespace)
    assert condition(app, "Synced")["reason"] == "Suspended", app["status"]
    assert configmap_value(kubectl, namespace, "settings", "greeting") == "hello"
    listed = gitops.run("list").stdout
    assert "suspended by" in listed, listed
    assert "incident 42" in listed, listed
    assert "incident 42" in gitops.run("status", namespace).stdout
    history = gitops.run("history", namespace).stdout
    assert "suspend" in history, history
    gitops.run("resume", namespace)
    wait_for("synced after resume", synced_to(kubectl, namespace, commit), timeout=30, log=controller.log)
    assert [r["trigger"] for r in records(kubectl, namespace)][-3:] == ["suspend", "resume", "automated"]


def test_a_rollback_is_honoured_by_automated_sync(
    gitops: Gitops, kubectl: Kubectl, controller: ControllerProcess, small_repo: GitRepo, namespace: str
) -> None:
    first = small_repo.git("rev-parse", "HEAD")
    create(gitops, namespace, small_repo, namespace, "--auto-sync", "--interval", "1h")
    wait_synced(kubectl, namespace)
    small_repo.write("settings.yaml", CONFIG.format(value="second"))
    second = small_repo.commit("second")
    gitops.run("reconcile", namespace, "--timeout", "60s")
    assert synced_to(kubectl, namespace, second)()
    gitops.run("rollback", namespace, "--reason", "second is broken", user="gitops")
    assert configmap_value(kubectl, namespace, "settings", "greeting") == "hello"
    small_repo.write("settings.yaml", CONFIG.format(value="third"))
    small_repo.commit("third")
    gitops.run("reconcile", namespace, "--timeout", "60s")
    assert synced_to(kubectl, namespace, first)(), application(kubectl, namespace)["status"]
    assert configmap_value(kubectl, namespace, "settings", "greeting") == "hello"


def test_reconcile_without_a_controller_says_so(gitops: Gitops, kubectl: Kubectl, namespace: str) -> None:
    other = f"ns-{uuid.uuid4().hex[:8]}"
    kubectl.run("create", "namespace", other)
    try:
        out = gitops.run("-n", other, "reconcile", "anything", expect=1)
        assert "no gitops-controller runs" in out.stderr, out.stderr
    finally:
        kubectl.run("delete", "namespace", other, "--wait=false", check=False)


def test_two_controllers_one_leads_and_a_killed_leader_hands_over(
    gitops: Gitops,
    kubectl: Kubectl,
    controller: ControllerProcess,
    controller_identity: Path,
    small_repo: GitRepo,
    namespace: str,
    tmp_path: Path,
) -> None:
    second = ControllerProcess(controller_identity, tmp_path / "cache", tmp_path / "second.log").start()
    try:
        second.wait_ready(leading=False)
        assert controller.leading()
        assert not second.leading()
        create(gitops, namespace, small_repo, namespace, "--auto-sync", "--interval", "2s")
        kubectl.run(
            "-n",
            "gitops-system",
            "wait",
            f"{APP_GROUP}/{namespace}",
            "--for=condition=Synced",
            "--timeout=60s",
            timeout=70,
        )
        assert not second.leading()
        controller.stop(signal.SIGKILL)
        small_repo.write("settings.yaml", CONFIG.format(value="after the handover"))
        commit = small_repo.commit("after the handover")
        wait_for("the second controller leads", second.leading, timeout=20, log=second.log)
        wait_for("synced by the new leader", synced_to(kubectl, namespace, commit), timeout=30, log=second.log)
        synced = [r for r in records(kubectl, namespace) if r["revision"] == commit]
        assert len(synced) == 1, synced
    finally:
        second.stop()
        controller.start()  # the module's controller again, for any test after this one
        controller.wait_ready()


def test_a_leader_whose_lease_is_taken_stops_at_once(
    kubectl: Kubectl, controller: ControllerProcess, controller_identity: Path
) -> None:
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    patch = json.dumps({"spec": {"holderIdentity": "someone-else", "renewTime": now, "leaseDurationSeconds": 6}})
    try:
        kubectl.run("-n", "gitops-system", "patch", "lease", "gitops-controller", "--type=merge", "-p", patch)
        assert controller.proc is not None
        code = controller.proc.wait(timeout=20)
        assert code == 1
        assert "the lease was lost" in controller.log.read_text()
    finally:
        controller.start()
        controller.wait_ready(timeout=60)


def test_a_sync_waits_for_the_lock_of_another_and_takes_over_an_expired_one(
    gitops: Gitops, kubectl: Kubectl, small_repo: GitRepo, namespace: str
) -> None:
    create(gitops, namespace, small_repo, namespace)
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": f"gitops-sync-{namespace}", "namespace": "gitops-system"},
        "spec": {"holderIdentity": "a-killed-cli", "leaseDurationSeconds": 3, "renewTime": now, "acquireTime": now},
    }
    kubectl.run("apply", "-f", "-", stdin=json.dumps(lease))
    started = time.monotonic()
    gitops.run("sync", namespace, user="gitops")
    assert time.monotonic() - started >= 2  # it waited for the holder's lease to run out
    assert configmap_value(kubectl, namespace, "settings", "greeting") == "hello"
    left = kubectl.run("-n", "gitops-system", "get", "lease", f"gitops-sync-{namespace}", check=False)
    assert left.returncode != 0, "the sync lock is released after the sync"


def test_a_controller_started_before_install_waits_and_then_works(tmp_path: Path, small_repo: GitRepo) -> None:
    """A fresh control plane with nothing installed: the reconciler waits (no crash loop), and works once
    `kubectl gitops install` ran."""
    from localcluster.cluster import LocalCluster

    cluster = LocalCluster(tmp_path / "fresh")
    state = cluster.up()
    proc = None
    try:
        env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig("admin")), "XDG_CACHE_HOME": str(tmp_path / "c")}
        port = _free_port()
        with open(tmp_path / "controller.log", "ab") as out:
            proc = subprocess.Popen(
                [
                    str(CONTROLLER),
                    "--probe-address",
                    f"127.0.0.1:{port}",
                    "--lease-duration",
                    "6",
                    "--renew-deadline",
                    "4",
                    "--retry-period",
                    "1",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        probe = ControllerProcess(Path(), tmp_path, tmp_path / "controller.log", port=port, proc=proc)
        wait_for("the probes answer", lambda: probe.get("/healthz")[0] == 200, timeout=30)
        assert proc.poll() is None
        kubectl = str(Path(state.bin_dir) / "kubectl")
        plugin = Path(sys.executable).parent / "kubectl-gitops"
        # Its namespace first (where the Lease goes), the CRDs not yet: it leads, and waits for them.
        subprocess.run([kubectl, "create", "namespace", "gitops-system"], env=env, check=True, capture_output=True)
        wait_for("leading", probe.leading, timeout=60, log=probe.log)
        # Leading comes first, then its first look for the CRD: until that answers, /readyz says "starting".
        wait_for(
            "/readyz names the missing install",
            lambda: "kubectl gitops install" in probe.get("/readyz")[1],
            timeout=30,
            log=probe.log,
        )
        status, body = probe.get("/readyz")
        assert status == 503, body
        assert proc.poll() is None
        subprocess.run([str(plugin), "install"], env=env, check=True, capture_output=True)
        subprocess.run([kubectl, "create", "namespace", "shop"], env=env, check=True, capture_output=True)
        subprocess.run(
            [str(plugin), "create", "shop", "--repo", str(small_repo.path), "--dest-namespace", "shop", "--auto-sync"],
            env=env,
            check=True,
            capture_output=True,
        )
        done = subprocess.run(
            [
                kubectl,
                "-n",
                "gitops-system",
                "wait",
                "application.gitops.kubectl-gitops.io/shop",
                "--for=condition=Synced",
                "--timeout=60s",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=70,
        )
        assert done.returncode == 0, done.stderr + probe.log.read_text()[-3000:]
        assert proc.poll() is None
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        cluster.down()


def test_the_controller_reads_a_private_repository_with_the_secrets_credentials(
    gitops: Gitops, kubectl: Kubectl, controller: ControllerProcess, small_repo: GitRepo, namespace: str, tmp_path: Path
) -> None:
    from ..githttp import serve
    from .test_git_credentials import TOKEN, credentials_secret, no_token

    root = tmp_path / "served"
    root.mkdir()
    subprocess.run(["git", "clone", "-q", "--bare", str(small_repo.path), str(root / "private.git")], check=True)
    with serve(root, "deploy-bot", TOKEN) as base:
        credentials_secret(kubectl, f"{namespace}-git", TOKEN)
        gitops.run(
            "create",
            namespace,
            "--repo",
            f"{base}/private.git",
            "--dest-namespace",
            namespace,
            "--secret",
            f"{namespace}-git",
            "--auto-sync",
        )
        wait_synced(kubectl, namespace)
        assert configmap_value(kubectl, namespace, "settings", "greeting") == "hello"
    no_token(
        controller.log.read_text(), json.dumps(events(kubectl, namespace)), json.dumps(application(kubectl, namespace))
    )
