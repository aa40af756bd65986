"""The webhook as most users run it: the image built from the Dockerfile (hack/image), `kubectl apply -k manifests/`
and `manifests/webhook/`, then `kubectl gitops install --webhook-service`. The API server calls the pods through
their Service; the pods read Git from a real remote on the pod network (git daemon) and the API server through the
`kubernetes` Service. Alice's requests are judged by whichever replica the Service picks."""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import os
import signal
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from localcluster import node as nodehost

from engine.core.repourl import HOST_PATH_HINT

from ..cluster.test_webhook import denied, records, set_message
from ..conftest import REPO_ROOT, GitRepo, grant_developers_edit
from .conftest import Node, NodeSlot, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.node]

NS = "gitops-system"
SELECTOR = "app.kubernetes.io/name=gitops-webhook"
SERVICE_HOST = "gitops-webhook.gitops-system.svc"


@dataclass
class Deployed:
    node: Node
    ca: Path  # the CA of the serving certificate the replicas share (the registration's caBundle)
    apps: list[str] = field(default_factory=list)

    def kubectl(self, *args: str, check: bool = True, user: str = "admin") -> subprocess.CompletedProcess[str]:
        return self.node.kubectl.run(*args, check=check, user=user)

    def pods(self) -> list[dict[str, Any]]:
        out = self.kubectl("-n", NS, "get", "pods", "-l", SELECTOR, "-o", "json").stdout
        return [p for p in json.loads(out)["items"] if not p["metadata"].get("deletionTimestamp")]

    def ready_pods(self) -> list[dict[str, Any]]:
        return [p for p in self.pods() if pod_ready(p)]

    def get(self, pod: dict[str, Any], path: str) -> Any:
        """GET path on one replica's address, as the kubelet's probes do (its certificate checked against the CA)."""
        return pod_get(pod["status"]["podIP"], path, self.ca)

    def wait_loaded(self, app: str) -> None:
        def loaded() -> bool:
            for pod in self.ready_pods():
                status = self.get(pod, "/readyz") or {}
                entry = (status.get("applications") or {}).get(f"{NS}/{app}")
                if not (entry and entry["objects"]):
                    return False
            return len(self.ready_pods()) >= 2

        wait_for(loaded, f"both replicas to load {app}")

    def wait_two_ready(self) -> None:
        wait_for(
            lambda: len(self.ready_pods()) == 2 and len(self.pods()) == 2,
            "two ready replicas, and no more",
            timeout=120,
        )


def pod_ready(pod: dict[str, Any]) -> bool:
    conditions = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
    return conditions.get("Ready") == "True"


def pod_tls(ip: str, ca: Path) -> tuple[ssl.SSLContext, str]:
    context = ssl.create_default_context(cafile=str(ca))
    return context, SERVICE_HOST


def pod_get(ip: str, path: str, ca: Path) -> Any:
    import http.client

    context, host = pod_tls(ip, ca)
    conn = http.client.HTTPSConnection(ip, 8443, context=context, timeout=5)
    try:
        # The certificate names the Service, not the pod: check it against that name.
        conn.sock = context.wrap_socket(socket.create_connection((ip, 8443), timeout=5), server_hostname=host)
        conn.request("GET", path)
        body = conn.getresponse().read()
    except OSError:
        return None
    finally:
        conn.close()
    try:
        return json.loads(body)
    except ValueError:
        return body.decode()


def served_certificate(ip: str, ca: Path) -> bytes | None:
    context, host = pod_tls(ip, ca)
    try:
        with (
            socket.create_connection((ip, 8443), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=host) as conn,
        ):
            der = conn.getpeercert(binary_form=True)
    except OSError:
        return None
    return der


@pytest.fixture(scope="module")
def deployed(node_slot: NodeSlot) -> Iterator[Deployed]:
    """The image loaded into the node, the manifests applied, the Service registered; removed after."""
    node = node_slot.with_image()
    cluster = node.cluster
    kubectl = node.kubectl
    # The CA of the client certificate the API server presents to webhooks (the README, "Deploying in a cluster").
    kubectl.run(
        "-n", NS, "create", "configmap", "gitops-webhook-client-ca", f"--from-file=ca.crt={cluster.pki_dir}/ca.crt"
    )
    kubectl.run("apply", "-k", str(REPO_ROOT / "manifests" / "webhook"))
    kubectl.run("-n", NS, "rollout", "status", "deployment/gitops-webhook", "--timeout=180s", timeout=200)
    secret = kubectl.run("-n", NS, "get", "secret", "gitops-webhook-tls", "-o", "jsonpath={.data.ca\\.crt}").stdout
    ca = node.work / "webhook-ca.crt"
    ca.write_bytes(base64.b64decode(secret))
    node.gitops.run("install", "--webhook-service", "--ca-file", str(ca))
    result = Deployed(node, ca)
    result.wait_two_ready()
    yield result
    kubectl.run("delete", "validatingwebhookconfiguration", "gitops-drift.kubectl-gitops.io", check=False)
    kubectl.run("delete", "-k", str(REPO_ROOT / "manifests" / "webhook"), "--wait=false", check=False)


@pytest.fixture
def app_namespace(deployed: Deployed) -> Iterator[str]:
    name = f"p-{os.urandom(4).hex()}"
    deployed.kubectl("create", "namespace", name)
    grant_developers_edit(deployed.node.kubectl, name)
    yield name
    deployed.node.gitops.run("delete", name, expect=None)
    deployed.kubectl("delete", "namespace", name, "--wait=false", check=False)


def make_app(deployed: Deployed, name: str, mode: str) -> GitRepo:
    """The guestbook from the git daemon as Application `name` in namespace `name`, synced, loaded by both pods."""
    repo = deployed.node.git.repo("examples/guestbook")
    gitops = deployed.node.gitops
    gitops.run("create", name, "--repo", deployed.node.git.url(repo), "--dest-namespace", name, "--mode", mode)
    gitops.run("sync", name, user="gitops")
    deployed.wait_loaded(name)
    return repo


@dataclass
class Stream:
    """alice patching the guestbook's message as fast as kubectl goes, until stopped: what each attempt got."""

    deployed: Deployed
    namespace: str
    answered: list[int] = field(default_factory=list)  # denied with the drift message: judged right
    failed: list[tuple[int, str]] = field(default_factory=list)  # anything else
    attempts: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set() and i < 400:
            proc = set_message(self.deployed.node.kubectl, self.namespace, f"attempt {i}")
            if denied(proc) and "/data/message: Git has Hello from Git!, request has" in proc.stderr:
                self.answered.append(i)
            else:
                self.failed.append((i, proc.stderr.strip()))
            self.attempts += 1
            i += 1

    def __enter__(self) -> Stream:
        self._thread = threading.Thread(target=self._run)
        self._thread.start()
        wait_for(lambda: len(self.answered) >= 3, "three of alice's attempts answered")
        return self

    def more(self, count: int) -> None:
        target = self.attempts + count
        wait_for(lambda: self.attempts >= target, f"{count} more attempts")

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=120)

    def check_recorded(self) -> None:
        """Every answered attempt is in the audit log, and the log's chain holds."""
        recorded = {r["fields"][0]["requested"] for r in records(self.deployed.node.kubectl, self.namespace)}
        missing = [i for i in self.answered if f"attempt {i}" not in recorded]
        assert missing == []
        self.deployed.node.gitops.run("audit", "verify")


def test_enforce_warn_and_audit_hold_through_the_pods(deployed: Deployed, app_namespace: str) -> None:
    make_app(deployed, app_namespace, "enforce")
    kubectl = deployed.node.kubectl
    patch = kubectl.run(
        "-n",
        app_namespace,
        "patch",
        "service",
        "frontend",
        "--type=json",
        "-p",
        '[{"op":"replace","path":"/spec/ports/0/port","value":81}]',
        user="alice",
        check=False,
    )
    assert denied(patch), patch.stderr
    assert "/spec/ports/0/port: Git has 80, request has 81" in patch.stderr
    scale = kubectl.run("-n", app_namespace, "scale", "deployment/frontend", "--replicas=5", user="alice", check=False)
    assert denied(scale)
    assert "/spec/replicas: Git has 2, request has 5" in scale.stderr
    assert kubectl.run("-n", app_namespace, "label", "deployment", "frontend", "team=web", user="alice").returncode == 0
    assert [r["decision"] for r in records(kubectl, app_namespace)] == ["denied", "denied"]

    attempt = 0

    def judged_in(mode: str, decision: str) -> None:
        """Switches the Application to `mode`, then tries until both replicas judge by it (each attempt a new value,
        so that each is a change): the attempt's record says `decision`, and alice's write went through."""
        patch = json.dumps({"spec": {"driftMode": mode}})
        kubectl.run("-n", NS, "patch", "application", app_namespace, "--type=merge", "-p", patch)
        in_a_row = 0

        def taken() -> bool:
            nonlocal attempt, in_a_row
            attempt += 1
            proc = set_message(kubectl, app_namespace, f"{mode} {attempt}")
            newest = [r for r in records(kubectl, app_namespace) if r["fields"][0]["requested"] == f"{mode} {attempt}"]
            warned = "Warning: drift from Git" in proc.stderr
            if proc.returncode == 0 and newest and newest[0]["decision"] == decision and warned == (mode == "warn"):
                in_a_row += 1
            else:
                in_a_row = 0
            return in_a_row >= 4  # four in a row: the Service spreads them over both replicas

        wait_for(taken, f"{mode} mode to be in force in both replicas")

    judged_in("warn", "warned")
    judged_in("audit", "recorded")
    deployed.node.gitops.run("audit", "verify")


def test_a_host_path_repository_is_said_to_mean_nothing_inside_a_pod(
    deployed: Deployed, app_namespace: str, tmp_path: Path
) -> None:
    local = deployed.node.git.repo("examples/guestbook")  # also a directory on this machine
    created = deployed.node.gitops.run(
        "create", app_namespace, "--repo", str(local.path), "--dest-namespace", app_namespace
    )
    assert "the webhook runs in the cluster and cannot read" in created.stderr
    assert HOST_PATH_HINT in created.stderr

    def said_in_the_pods() -> bool:
        for pod in deployed.ready_pods():
            entry = ((deployed.get(pod, "/readyz") or {}).get("applications") or {}).get(f"{NS}/{app_namespace}")
            if not entry or "inside a pod it names the pod's own files" not in (entry.get("error") or ""):
                return False
        return True

    wait_for(said_in_the_pods, "both replicas to say why they cannot read the host path")


class StalledRemote:
    """A Git remote that accepts connections and never answers: a pod loading from it has not loaded Git's state."""

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.bind((nodehost.HOST_ADDRESS, 0))
        self.server.listen(16)
        self.port = int(self.server.getsockname()[1])
        self.held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.server.accept()
                self.held.append(conn)

    def close(self) -> None:
        """Every held connection and the listener closed: git fails at once, and the load is done (with an error).
        The accepting thread is woken (a listener's shutdown) and joined first, so that no connection it accepts
        meanwhile is left open (the CI run's ResourceWarning)."""
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)
        self.server.close()
        self._thread.join(timeout=10)
        for conn in self.held:
            conn.close()


def test_a_replica_that_has_not_loaded_git_gets_no_traffic(deployed: Deployed, app_namespace: str) -> None:
    make_app(deployed, app_namespace, "enforce")
    stalled = StalledRemote()
    stalled_app = {
        "apiVersion": "gitops.kubectl-gitops.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": f"{app_namespace}-stalled", "namespace": NS},
        "spec": {
            "source": {"repoURL": f"git://{nodehost.HOST_ADDRESS}:{stalled.port}/x", "path": "."},
            "destination": {"namespace": app_namespace},
        },
    }
    try:
        deployed.node.kubectl.run("apply", "-f", "-", stdin=json.dumps(stalled_app))
        old = {p["metadata"]["name"] for p in deployed.pods()}
        deployed.kubectl("-n", NS, "delete", "pod", sorted(old)[0], "--wait=false")
        wait_for(lambda: {p["metadata"]["name"] for p in deployed.pods()} - old, "a replacement pod")
        new = next(p for p in deployed.pods() if p["metadata"]["name"] not in old)
        name = new["metadata"]["name"]

        def probe_failed() -> bool:
            events = deployed.kubectl(
                "-n", NS, "get", "events", f"--field-selector=involvedObject.name={name}", "-o", "json"
            ).stdout
            return any("Readiness probe failed" in e.get("message", "") for e in json.loads(events)["items"])

        wait_for(probe_failed, "the replacement's readiness probe to fail while Git is stalled")
        current = next(p for p in deployed.pods() if p["metadata"]["name"] == name)

        def says_not_serving() -> bool:
            # Up and alive (its liveness probe passes), but not serving: it has not loaded Git's state yet.
            return (
                deployed.get(current, "/healthz") == {"status": "ok"}
                and (deployed.get(current, "/servingz") or {}).get("serving") is False
            )

        wait_for(says_not_serving, "the replacement to answer that it is alive and not serving")
        current = next(p for p in deployed.pods() if p["metadata"]["name"] == name)
        assert not pod_ready(current)
        slices = json.loads(
            deployed.kubectl(
                "-n", NS, "get", "endpointslices", "-l", "kubernetes.io/service-name=gitops-webhook", "-o", "json"
            ).stdout
        )
        endpoints = [e for s in slices["items"] for e in s.get("endpoints") or []]
        assert all(
            e["conditions"].get("ready") is False for e in endpoints if current["status"]["podIP"] in e["addresses"]
        )
        # The API server's calls all go to the replica that has loaded: each of alice's attempts is judged.
        for i in range(5):
            proc = set_message(deployed.node.kubectl, app_namespace, f"while stalled {i}")
            assert denied(proc), proc.stderr
    finally:
        stalled.close()
        deployed.kubectl("-n", NS, "delete", "application", f"{app_namespace}-stalled", "--wait=false", check=False)
    deployed.wait_two_ready()


def test_a_killed_webhook_process_is_restarted_and_serves_again(deployed: Deployed, app_namespace: str) -> None:
    make_app(deployed, app_namespace, "enforce")
    pod = deployed.ready_pods()[0]
    name = pod["metadata"]["name"]
    restarts = pod["status"]["containerStatuses"][0]["restartCount"]
    container = pod["status"]["containerStatuses"][0]["containerID"].removeprefix("containerd://")
    crictl = [
        str(deployed.node.cluster.load_state().bin_dir) + "/crictl",  # type: ignore[union-attr]
        f"--runtime-endpoint=unix://{deployed.node.cluster.dir / 'node' / 'containerd' / 'containerd.sock'}",
    ]
    info = json.loads(subprocess.run([*crictl, "inspect", container], capture_output=True, text=True).stdout)
    os.kill(int(info["info"]["pid"]), signal.SIGKILL)  # the gitops-webhook process, from the host

    def restarted() -> bool:
        now = next((p for p in deployed.pods() if p["metadata"]["name"] == name), None)
        return bool(now and now["status"]["containerStatuses"][0]["restartCount"] > restarts and pod_ready(now))

    wait_for(restarted, "the kubelet to restart the killed webhook and the pod to be ready again")
    deployed.wait_loaded(app_namespace)
    proc = set_message(deployed.node.kubectl, app_namespace, "after the restart")
    assert denied(proc), proc.stderr


def test_two_replicas_share_the_certificate_and_one_audit_chain(deployed: Deployed, app_namespace: str) -> None:
    make_app(deployed, app_namespace, "enforce")
    stored = base64.b64decode(
        deployed.kubectl("-n", NS, "get", "secret", "gitops-webhook-tls", "-o", "jsonpath={.data.tls\\.crt}").stdout
    )
    leaf = x509.load_pem_x509_certificate(stored)
    pods = deployed.ready_pods()
    assert len(pods) == 2
    for pod in pods:
        der = served_certificate(pod["status"]["podIP"], deployed.ca)
        assert der is not None
        assert x509.load_der_x509_certificate(der) == leaf
    with Stream(deployed, app_namespace) as stream:
        stream.more(20)
    assert stream.failed == []
    stream.check_recorded()


def test_deleting_a_pod_under_alices_requests_loses_no_answered_request(deployed: Deployed, app_namespace: str) -> None:
    make_app(deployed, app_namespace, "enforce")
    with Stream(deployed, app_namespace) as stream:
        victim = deployed.ready_pods()[0]["metadata"]["name"]
        deployed.kubectl("-n", NS, "delete", "pod", victim)
        deployed.wait_two_ready()
        stream.more(10)
    assert stream.answered
    stream.check_recorded()
    assert stream.failed == []


def test_a_rolling_update_under_alices_requests_fails_none(deployed: Deployed, app_namespace: str) -> None:
    make_app(deployed, app_namespace, "enforce")
    before = {p["metadata"]["name"] for p in deployed.pods()}
    with Stream(deployed, app_namespace) as stream:
        patch = [{"op": "add", "path": "/spec/template/spec/containers/0/args/-", "value": "--cert-check-seconds=1800"}]
        deployed.kubectl("-n", NS, "patch", "deployment", "gitops-webhook", "--type=json", "-p", json.dumps(patch))
        deployed.kubectl("-n", NS, "rollout", "status", "deployment/gitops-webhook", "--timeout=180s")
        deployed.wait_two_ready()
        stream.more(10)
    assert not before & {p["metadata"]["name"] for p in deployed.pods()}
    assert stream.failed == []
    stream.check_recorded()


def leaf_due_for_renewal(stored: dict[str, bytes]) -> tuple[bytes, bytes]:
    """A leaf for the same names from the Secret's CA that expires in 10 days (renewal is due 30 days before): what
    the shared certificate is some 80 days after it was made. PEM certificate and key."""
    issuer = x509.load_pem_x509_certificate(stored["ca.crt"])
    signer = serialization.load_pem_private_key(stored["ca.key"], password=None)
    assert isinstance(signer, ec.EllipticCurvePrivateKey)
    current = x509.load_pem_x509_certificate(stored["tls.crt"])
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(current.subject)
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=80))
        .not_valid_after(now + datetime.timedelta(days=10))
        .add_extension(current.extensions.get_extension_for_class(x509.SubjectAlternativeName).value, critical=False)
        .sign(signer, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return leaf.public_bytes(serialization.Encoding.PEM), pem_key


def test_a_certificate_renewed_in_place_keeps_the_ca_bundle_and_fails_no_request(
    deployed: Deployed, app_namespace: str
) -> None:
    make_app(deployed, app_namespace, "enforce")
    # The replicas look at their certificate every second (an hour by default): a changed argument, rolled out.
    patch = [{"op": "add", "path": "/spec/template/spec/containers/0/args/-", "value": "--cert-check-seconds=1"}]
    deployed.kubectl("-n", NS, "patch", "deployment", "gitops-webhook", "--type=json", "-p", json.dumps(patch))
    deployed.kubectl("-n", NS, "rollout", "status", "deployment/gitops-webhook", "--timeout=180s")
    deployed.wait_two_ready()
    deployed.wait_loaded(app_namespace)

    def stored() -> dict[str, bytes]:
        secret = json.loads(deployed.kubectl("-n", NS, "get", "secret", "gitops-webhook-tls", "-o", "json").stdout)
        return {key: base64.b64decode(value) for key, value in secret["data"].items()}

    before = stored()
    planted_cert, planted_key = leaf_due_for_renewal(before)
    encoded = {"tls.crt": base64.b64encode(planted_cert).decode(), "tls.key": base64.b64encode(planted_key).decode()}
    with Stream(deployed, app_namespace) as stream:
        deployed.kubectl("-n", NS, "patch", "secret", "gitops-webhook-tls", "-p", json.dumps({"data": encoded}))

        def renewed_and_served() -> bool:
            now = stored()["tls.crt"]
            if now in (before["tls.crt"], planted_cert):
                return False
            leaf = x509.load_pem_x509_certificate(now)
            served = [served_certificate(p["status"]["podIP"], deployed.ca) for p in deployed.ready_pods()]
            return len(served) == 2 and all(d is not None and x509.load_der_x509_certificate(d) == leaf for d in served)

        wait_for(renewed_and_served, "both replicas to serve the certificate one of them renewed", timeout=120)
        stream.more(10)
    after = stored()
    assert after["ca.crt"] == before["ca.crt"]
    registration = json.loads(
        deployed.kubectl("get", "validatingwebhookconfiguration", "gitops-drift.kubectl-gitops.io", "-o", "json").stdout
    )
    assert {base64.b64decode(w["clientConfig"]["caBundle"]) for w in registration["webhooks"]} == {before["ca.crt"]}
    assert stream.failed == []
    stream.check_recorded()


def test_the_disruption_budget_holds_during_evictions(deployed: Deployed) -> None:
    deployed.wait_two_ready()
    wait_for(
        lambda: (
            deployed.kubectl(
                "-n", NS, "get", "pdb", "gitops-webhook", "-o", "jsonpath={.status.disruptionsAllowed}"
            ).stdout.strip()
            == "1"
        ),
        "the disruption controller to allow one disruption",
    )
    first, second = (p["metadata"]["name"] for p in deployed.ready_pods())

    def evict(name: str) -> subprocess.CompletedProcess[str]:
        eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": NS}}
        return deployed.node.kubectl.run(
            "create",
            "--raw",
            f"/api/v1/namespaces/{NS}/pods/{name}/eviction",
            "-f",
            "-",
            stdin=json.dumps(eviction),
            check=False,
        )

    assert evict(first).returncode == 0
    refused = evict(second)
    assert refused.returncode != 0
    assert "Cannot evict pod as it would violate the pod's disruption budget" in refused.stderr
    deployed.wait_two_ready()
