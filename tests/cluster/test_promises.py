"""What the README promises of `kubectl gitops` and had no test: `sync --dry-run` and `install --dry-run` write
nothing, `install --webhook-service`, `sync --revision`, a missing destination namespace, `list` and `status` as JSON,
`audit verify --public-key`, and prune's uid precondition."""

from __future__ import annotations

import base64
import json
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from engine.adapters.audit import PUBLIC_KEY_CONFIGMAP, AuditStore, read_records
from engine.adapters.kube import KubeClient, KubeTarget
from engine.adapters.source import GitSource
from engine.apps import get_application
from engine.compare import load_desired
from engine.core.auditchain import GENESIS, record_name, seal
from engine.core.objects import REVISION_ANNOTATION, TRACKING_ANNOTATION, TRACKING_LABEL, AppRef, ObjectKey
from engine.core.resources import ResourceInfo
from engine.core.webhookconfig import NAME as REGISTRATION
from engine.core.webhookconfig import webhook_configuration
from engine.sync import Action, Syncer

from ..conftest import Gitops, GitRepo, Kubectl
from .test_audit_log import attempt

pytestmark = pytest.mark.cluster

MakeRepo = Callable[[str | None], GitRepo]
KINDS = "configmaps,secrets,services,deployments,serviceaccounts"


def resource_versions(kubectl: Kubectl, namespace: str, app: str) -> dict[str, str]:
    """kind/name -> resourceVersion of every object in `namespace` that carries the Application's label."""
    out = json.loads(kubectl.run("-n", namespace, "get", KINDS, "-l", f"{TRACKING_LABEL}={app}", "-o", "json").stdout)
    return {f"{i['kind']}/{i['metadata']['name']}": i["metadata"]["resourceVersion"] for i in out["items"]}


def resource_version(kubectl: Kubectl, *args: str) -> str:
    return kubectl.run(*args, "-o", "jsonpath={.metadata.resourceVersion}").stdout


def application(kubectl: Kubectl, name: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(
        kubectl.run("-n", "gitops-system", "get", "application", name, "-o", "json").stdout
    )
    return out


def actions(sync_json: str) -> dict[tuple[str, str], str]:
    return {(r["kind"], r["name"]): r["action"] for r in json.loads(sync_json)["results"]}


def absent(kubectl: Kubectl, *args: str) -> bool:
    proc = kubectl.run(*args, check=False)
    return proc.returncode != 0 and "NotFound" in proc.stderr


@pytest.fixture
def registration(kubectl: Kubectl) -> Iterator[None]:
    """A drift-webhook registration that matches nothing yet and whose calls fail open (a closed port, every entry
    `Ignore`): what a sync would extend. Removed afterwards."""
    assert absent(kubectl, "get", "validatingwebhookconfiguration", REGISTRATION), "another registration is in place"
    config = webhook_configuration(ca_bundle=b"unused", url="https://127.0.0.1:9/validate", resources=())
    for entry in config["webhooks"]:
        entry["failurePolicy"] = "Ignore"
    kubectl.run("create", "-f", "-", stdin=json.dumps(config))
    yield
    kubectl.run("delete", "validatingwebhookconfiguration", REGISTRATION, "--ignore-not-found")


def test_sync_dry_run_writes_nothing(
    gitops: Gitops, kubectl: Kubectl, git_repo: MakeRepo, namespace: str, registration: None
) -> None:
    """A dry run that would create, configure (also by replacing a Service whose port was re-keyed by hand), remove
    added fields and prune: every object, the Application's status and the webhook registration keep their
    resourceVersion. The real sync after it changes all of them (so the comparison would have seen a write)."""
    repo = git_repo("examples/guestbook")
    gitops.run("create", namespace, "--repo", str(repo.path), "--dest-namespace", namespace)
    gitops.run("sync", namespace, user="gitops")

    def alice(*args: str) -> None:
        kubectl.run("-n", namespace, *args, user="alice")

    alice("patch", "configmap", "guestbook-settings", "-p", '{"data":{"message":"by hand"}}')
    alice("set", "env", "deployment/frontend", "DEBUG=1")
    alice(
        "patch", "service", "frontend", "--type=json", "-p", '[{"op":"replace","path":"/spec/ports/0/port","value":81}]'
    )
    (repo.path / "redis.yaml").unlink()
    repo.write("flags.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: flags}\ndata: {beta: 'on'}\n")
    repo.write("reader.yaml", "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: reader}\n")
    repo.commit("no redis; flags; a ServiceAccount, a kind the registration does not list yet")

    objects = resource_versions(kubectl, namespace, namespace)
    app = resource_version(kubectl, "-n", "gitops-system", "get", "application", namespace)
    registered = resource_version(kubectl, "get", "validatingwebhookconfiguration", REGISTRATION)
    last_sync = application(kubectl, namespace)["status"]["lastSync"]

    dry = gitops.run("sync", namespace, "--dry-run", "--prune", "-o", "json", user="gitops").stdout
    assert json.loads(dry)["dryRun"] is True
    assert actions(dry) == {
        ("ConfigMap", "guestbook-settings"): "configured",
        ("Secret", "guestbook-credentials"): "configured",  # the revision annotation names the new commit
        ("Deployment", "frontend"): "configured",
        ("Service", "frontend"): "configured",
        ("ConfigMap", "flags"): "created",
        ("ServiceAccount", "reader"): "created",
        ("Deployment", "redis"): "pruned",
        ("Service", "redis"): "pruned",
    }
    text = gitops.run("sync", namespace, "--dry-run", "--prune", user="gitops").stdout
    assert "(dry run)" in text

    assert resource_versions(kubectl, namespace, namespace) == objects
    assert resource_version(kubectl, "-n", "gitops-system", "get", "application", namespace) == app
    assert application(kubectl, namespace)["status"]["lastSync"] == last_sync
    assert resource_version(kubectl, "get", "validatingwebhookconfiguration", REGISTRATION) == registered
    assert absent(kubectl, "-n", namespace, "get", "configmap", "flags")
    assert absent(kubectl, "-n", namespace, "get", "serviceaccount", "reader")
    live = kubectl.run("-n", namespace, "get", "configmap", "guestbook-settings", "-o", "jsonpath={.data.message}")
    assert live.stdout == "by hand"

    # The same sync for real writes all of it: the comparison above would have seen it.
    gitops.run("sync", namespace, "--prune", user="gitops")
    after = resource_versions(kubectl, namespace, namespace)
    assert set(after) == {
        "ConfigMap/guestbook-settings",
        "ConfigMap/flags",
        "Secret/guestbook-credentials",
        "Deployment/frontend",
        "Service/frontend",
        "ServiceAccount/reader",
    }
    assert {k for k in after if objects.get(k) == after[k]} == set()
    assert resource_version(kubectl, "-n", "gitops-system", "get", "application", namespace) != app
    assert resource_version(kubectl, "get", "validatingwebhookconfiguration", REGISTRATION) != registered
    gitops.run("diff", namespace)


def test_sync_creates_a_missing_destination_namespace_and_never_prunes_it(
    gitops: Gitops, kubectl: Kubectl, git_repo: MakeRepo
) -> None:
    namespace = f"t-{uuid.uuid4().hex[:10]}"
    repo = git_repo("examples/guestbook")
    gitops.run("create", namespace, "--repo", str(repo.path), "--dest-namespace", namespace)
    try:
        assert absent(kubectl, "get", "namespace", namespace)
        dry = gitops.run("sync", namespace, "--dry-run", "-o", "json", user="gitops").stdout
        assert set(actions(dry).values()) == {"created"}
        assert absent(kubectl, "get", "namespace", namespace)  # a dry run creates no namespace either

        gitops.run("sync", namespace, user="gitops")
        created = json.loads(kubectl.run("get", "namespace", namespace, "-o", "json").stdout)
        assert TRACKING_LABEL not in (created["metadata"].get("labels") or {})
        assert TRACKING_ANNOTATION not in (created["metadata"].get("annotations") or {})
        inventory = application(kubectl, namespace)["status"]["resources"]
        assert "Namespace" not in {r["kind"] for r in inventory}
        assert len(inventory) == 6
        gitops.run("diff", namespace)  # the namespace is neither drift nor extra

        (repo.path / "redis.yaml").unlink()
        repo.commit("drop redis")
        pruned = gitops.run("sync", namespace, "--prune", "-o", "json", user="gitops").stdout
        assert {k for k, a in actions(pruned).items() if a == "pruned"} == {
            ("Deployment", "redis"),
            ("Service", "redis"),
        }
        kept = json.loads(kubectl.run("get", "namespace", namespace, "-o", "json").stdout)
        assert kept["metadata"]["uid"] == created["metadata"]["uid"]
        assert "deletionTimestamp" not in kept["metadata"]
    finally:
        gitops.run("delete", namespace, expect=None)
        kubectl.run("delete", "namespace", namespace, "--wait=false", "--ignore-not-found")


def crd(group: str) -> str:
    return f"""apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: widgets.{group}}}
spec:
  group: {group}
  scope: Namespaced
  names: {{kind: Widget, plural: widgets, singular: widget, listKind: WidgetList}}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec: {{type: object, properties: {{size: {{type: integer, default: 1}}}}}}
"""


def test_sync_dry_run_of_a_namespace_and_a_crd_that_come_with_the_sync(
    gitops: Gitops, kubectl: Kubectl, git_repo: MakeRepo
) -> None:
    """A dry run creates neither the namespace nor the CRD a sync brings, so the API server cannot check what goes in
    them: they are reported as what a sync would create, said unchecked, and nothing is written."""
    suffix = uuid.uuid4().hex[:8]
    declared, destination, group = f"t-decl-{suffix}", f"t-dest-{suffix}", f"t{suffix}.example.com"
    repo = git_repo(None)
    repo.write("namespace.yaml", f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {declared}}}\n")
    repo.write("crd.yaml", crd(group))
    repo.write("widget.yaml", f"apiVersion: {group}/v1\nkind: Widget\nmetadata: {{name: w, namespace: {declared}}}\n")
    repo.write("settings.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {a: b}\n")
    repo.write("other.yaml", f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: o, namespace: {declared}}}\n")
    repo.commit("a namespace, a CRD and what goes in them")
    gitops.run("create", declared, "--repo", str(repo.path), "--dest-namespace", destination)
    try:
        dry = json.loads(gitops.run("sync", declared, "--dry-run", "-o", "json", user="admin").stdout)
        results = {(r["kind"], r["name"]): r for r in dry["results"]}
        assert {k: r["action"] for k, r in results.items()} == {
            ("Namespace", declared): "created",
            ("CustomResourceDefinition", f"widgets.{group}"): "created",
            ("Widget", "w"): "created",
            ("ConfigMap", "settings"): "created",
            ("ConfigMap", "o"): "created",
        }
        assert "namespace" in results[("ConfigMap", "settings")]["message"]
        assert "namespace" in results[("ConfigMap", "o")]["message"]
        assert "CustomResourceDefinition" in results[("Widget", "w")]["message"]
        assert "message" not in results[("Namespace", declared)]  # checked by the API server
        for args in (("namespace", declared), ("namespace", destination), ("crd", f"widgets.{group}")):
            assert absent(kubectl, "get", *args)
        assert "lastSync" not in (application(kubectl, declared).get("status") or {})
    finally:
        gitops.run("delete", declared, expect=None)


def test_sync_revision_syncs_that_commit_and_records_it(
    gitops: Gitops, kubectl: Kubectl, git_repo: MakeRepo, namespace: str
) -> None:
    repo = git_repo("examples/guestbook")
    first = repo.git("rev-parse", "HEAD")
    repo.git("tag", "v1")
    settings = repo.path / "settings.yaml"
    settings.write_text(settings.read_text().replace("Hello from Git!", "Hello again"))
    second = repo.commit("Say hello again")
    gitops.run("create", namespace, "--repo", str(repo.path), "--dest-namespace", namespace)

    def message() -> str:
        return kubectl.run(
            "-n", namespace, "get", "configmap", "guestbook-settings", "-o", "jsonpath={.data.message}"
        ).stdout

    def annotation() -> str:
        out = kubectl.run("-n", namespace, "get", "configmap", "guestbook-settings", "-o", "json").stdout
        return str(json.loads(out)["metadata"]["annotations"][REVISION_ANNOTATION])

    synced = json.loads(gitops.run("sync", namespace, "--revision", "v1", "-o", "json", user="gitops").stdout)
    assert synced["revision"] == first
    assert message() == "Hello from Git!"
    assert annotation() == first
    status = application(kubectl, namespace)["status"]
    assert status["lastSync"]["revision"] == first
    assert status["lastSync"]["subject"] == "add examples/guestbook"
    assert status["sync"]["revision"] == first
    assert [h["revision"] for h in json.loads(gitops.run("history", namespace, "-o", "json").stdout)] == [first]
    # The Application's own target is still main: diff, without --revision, compares with the newer commit.
    assert gitops.run("diff", namespace, expect=1).returncode == 1

    gitops.run("sync", namespace, user="gitops")
    assert message() == "Hello again"
    assert annotation() == second
    # Back to the first commit by a short commit name: the full one is recorded.
    gitops.run("sync", namespace, "--revision", first[:10], user="gitops")
    assert message() == "Hello from Git!"
    assert annotation() == first
    history = json.loads(gitops.run("history", namespace, "-o", "json").stdout)
    assert [h["revision"] for h in history] == [first, second, first]  # newest first
    assert "revision 'v9' does not exist" in gitops.run("sync", namespace, "--revision", "v9", expect=1).stderr


def test_list_and_status_as_json(gitops: Gitops, kubectl: Kubectl, git_repo: MakeRepo, namespace: str) -> None:
    """The fields the README names: `list` (repo, path, revision, sync state, drift mode), `status` (revision, sync
    state, last sync with commit, author, who synced, when and result, each object's state)."""
    repo = git_repo("examples/guestbook")
    head = repo.git("rev-parse", "HEAD")
    gitops.run(
        "create",
        namespace,
        "--repo",
        str(repo.path),
        "--revision",
        "main",
        "--dest-namespace",
        namespace,
        "--mode",
        "warn",
    )
    gitops.run("sync", namespace, user="gitops")

    listed = {a["metadata"]["name"]: a for a in json.loads(gitops.run("list", "-o", "json").stdout)}
    mine = listed[namespace]
    assert mine["spec"]["source"] == {"repoURL": str(repo.path), "path": ".", "targetRevision": "main"}
    assert mine["spec"]["driftMode"] == "warn"
    assert mine["spec"]["destination"] == {"namespace": namespace}
    assert mine["status"]["sync"] == {"status": "Synced", "revision": head}

    status = json.loads(gitops.run("status", namespace, "-o", "json").stdout)
    assert status["application"] == namespace
    assert status["revision"] == head
    assert status["sync"] == {"status": "Synced", "revision": head}
    last = status["lastSync"]
    assert last["revision"] == head
    assert last["subject"] == "add examples/guestbook"
    assert last["author"] == "Dev <dev@example.com>"
    assert last["user"] == "gitops-sync"
    assert last["result"] == "Succeeded"
    assert last["time"].endswith("Z")
    assert {(o["kind"], o["name"]): o["state"] for o in status["objects"]} == {
        ("ConfigMap", "guestbook-settings"): "synced",
        ("Secret", "guestbook-credentials"): "synced",
        ("Deployment", "frontend"): "synced",
        ("Service", "frontend"): "synced",
        ("Deployment", "redis"): "synced",
        ("Service", "redis"): "synced",
    }
    assert status["drift"]["objects"] == 0

    kubectl.run("-n", namespace, "delete", "configmap", "guestbook-settings", user="alice")
    kubectl.run("-n", namespace, "set", "env", "deployment/frontend", "DEBUG=1", user="alice")
    drifted = json.loads(gitops.run("status", namespace, "-o", "json").stdout)
    assert drifted["sync"]["status"] == "OutOfSync"
    states = {(o["kind"], o["name"]): o["state"] for o in drifted["objects"]}
    assert states[("ConfigMap", "guestbook-settings")] == "missing"
    assert states[("Deployment", "frontend")] == "modified"
    assert drifted["drift"]["objects"] == 2
    assert drifted["drift"]["missing"] == 1
    relisted = {a["metadata"]["name"]: a for a in json.loads(gitops.run("list", "-o", "json").stdout)}
    # status is read-only: the Application keeps what its last sync wrote (the reconciler owns the status).
    assert relisted[namespace]["status"]["sync"]["status"] == "Synced"
    assert "drift" not in relisted[namespace]["status"]


def test_list_as_json_never_shows_credentials_in_a_repository_url(gitops: Gitops, kubectl: Kubectl) -> None:
    """As in the text of `list`: a token written into the URL is `***` in the JSON too, also where kubectl's
    last-applied annotation repeats the Application."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    name = f"creds-{uuid.uuid4().hex[:8]}"
    url = f"http://bot:s3cr3t-token@127.0.0.1:{port}/shop.git"
    app = {
        "apiVersion": "gitops.kubectl-gitops.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name, "namespace": "gitops-system"},
        "spec": {"source": {"repoURL": url}, "destination": {"namespace": name}},
    }
    kubectl.run("apply", "-f", "-", stdin=json.dumps(app))
    try:
        out = gitops.run("list", "-o", "json").stdout
        assert "s3cr3t-token" not in out
        assert "bot:" not in out
        listed = {a["metadata"]["name"]: a for a in json.loads(out)}
        assert listed[name]["spec"]["source"]["repoURL"] == f"http://***@127.0.0.1:{port}/shop.git"
    finally:
        gitops.run("delete", name, expect=None)


def test_install_dry_run_prints_what_it_would_apply_and_applies_nothing(
    gitops: Gitops, kubectl: Kubectl, tmp_path: Path
) -> None:
    """Installed already (the gitops fixture); the Application CRD then changed by hand, as a later release would
    change it: a dry run puts nothing back and registers nothing, an install does."""
    crd = "applications.gitops.kubectl-gitops.io"
    kubectl.run("patch", "crd", crd, "--type=merge", "-p", '{"spec":{"names":{"categories":["gitops","by-hand"]}}}')
    ca = tmp_path / "ca.crt"
    ca.write_bytes(kubectl.cluster.webhook_client_ca.read_bytes())  # any CA: a dry run calls nobody
    names = ["crd/applications.gitops.kubectl-gitops.io", "crd/auditrecords.gitops.kubectl-gitops.io"]
    names += ["crd/auditcheckpoints.gitops.kubectl-gitops.io", "crd/syncrecords.gitops.kubectl-gitops.io"]
    names += ["namespace/gitops-system"]
    before = {n: resource_version(kubectl, "get", n) for n in names}
    url = "https://127.0.0.1:9/validate"
    try:
        printed = gitops.run("install", "--dry-run", "--webhook-url", url, "--ca-file", str(ca)).stdout
        docs = [d for d in yaml.safe_load_all(printed) if d]
        as_json = json.loads(
            gitops.run("install", "--dry-run", "-o", "json", "--webhook-url", url, "--ca-file", str(ca)).stdout
        )
        assert as_json["kind"] == "List"
        assert as_json["items"] == docs
        assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
            ("Namespace", "gitops-system"),
            ("CustomResourceDefinition", crd),
            ("CustomResourceDefinition", "auditrecords.gitops.kubectl-gitops.io"),
            ("CustomResourceDefinition", "auditcheckpoints.gitops.kubectl-gitops.io"),
            ("CustomResourceDefinition", "syncrecords.gitops.kubectl-gitops.io"),
            ("ValidatingWebhookConfiguration", REGISTRATION),
        ]
        assert docs[1]["spec"]["names"]["categories"] == ["gitops"]
        for entry in docs[-1]["webhooks"]:
            assert entry["clientConfig"] == {"url": url, "caBundle": base64.b64encode(ca.read_bytes()).decode()}
        plain = [d for d in yaml.safe_load_all(gitops.run("install", "--dry-run").stdout) if d]
        assert [d["kind"] for d in plain] == ["Namespace"] + ["CustomResourceDefinition"] * 4

        assert {n: resource_version(kubectl, "get", n) for n in names} == before
        live = json.loads(kubectl.run("get", "crd", crd, "-o", "json").stdout)
        assert live["spec"]["names"]["categories"] == ["gitops", "by-hand"]
        assert absent(kubectl, "get", "validatingwebhookconfiguration", REGISTRATION)
    finally:
        gitops.run("install")  # puts the CRD back as the release has it
    live = json.loads(kubectl.run("get", "crd", crd, "-o", "json").stdout)
    assert live["spec"]["names"]["categories"] == ["gitops"]


def test_install_webhook_service_registers_the_service_with_the_ca_bundle(
    gitops: Gitops, kubectl: Kubectl, tmp_path: Path
) -> None:
    """`install --webhook-service`: the webhook in the cluster, behind the Service manifests/webhook/ ships
    (gitops-system/gitops-webhook, port 443). The registration stored is removed at once: no such Service runs
    here, and its objects entry fails closed."""
    ca = tmp_path / "ca.crt"
    ca.write_bytes(kubectl.cluster.webhook_client_ca.read_bytes())
    assert absent(kubectl, "get", "validatingwebhookconfiguration", REGISTRATION)
    try:
        out = gitops.run("install", "--webhook-service", "--ca-file", str(ca)).stdout
        assert f"validatingwebhookconfiguration/{REGISTRATION} serverside-applied" in out
        stored = json.loads(kubectl.run("get", "validatingwebhookconfiguration", REGISTRATION, "-o", "json").stdout)
    finally:
        kubectl.run("delete", "validatingwebhookconfiguration", REGISTRATION, "--ignore-not-found")
    assert [w["name"] for w in stored["webhooks"]] == [
        f"objects.{REGISTRATION}",
        f"scale.{REGISTRATION}",
        f"evictions.{REGISTRATION}",
    ]
    for entry in stored["webhooks"]:
        assert entry["clientConfig"] == {
            "service": {"namespace": "gitops-system", "name": "gitops-webhook", "path": "/validate", "port": 443},
            "caBundle": base64.b64encode(ca.read_bytes()).decode(),
        }
    assert "--ca-file is needed" in gitops.run("install", "--webhook-service", expect=1).stderr


def public_key_file(path: Path, key: Any) -> Path:
    path.write_bytes(key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def test_audit_verify_with_a_pinned_public_key(
    gitops: Gitops, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    """`audit verify --public-key FILE` checks the signatures against that key, not the one published in the
    cluster: it passes with the log's key, fails with another, and catches a log re-signed with a new key whose
    public half replaced the published one."""
    client = KubeClient(KubeTarget(kubeconfig=str(kubectl.cluster.kubeconfig("admin"))))
    store = AuditStore(client, namespace, publish=lambda checkpoint: None)
    for i in range(1, 4):
        store.append(attempt(i))
    published = kubectl.run(
        "-n", namespace, "get", "configmap", PUBLIC_KEY_CONFIGMAP, "-o", "jsonpath={.data.ed25519\\.pub}"
    ).stdout
    right = tmp_path / "right.pub"
    right.write_text(published)
    other = public_key_file(tmp_path / "other.pub", Ed25519PrivateKey.generate().public_key())
    verify = ("-n", namespace, "audit", "verify")

    assert "audit log verified: 3 records" in gitops.run(*verify, "--public-key", str(right)).stdout
    wrong = gitops.run(*verify, "--public-key", str(other), expect=1)
    assert "audit log verification failed" in wrong.stderr
    assert wrong.stdout.strip(), "each problem is named"
    assert "signature" in wrong.stdout
    garbage = tmp_path / "garbage.pub"
    garbage.write_text("not a key\n")
    assert "not a PEM public key" in gitops.run(*verify, "--public-key", str(garbage), expect=1).stderr

    # Whoever can write the log and the public-key ConfigMap re-signs every record with a key of their own...
    forger = Ed25519PrivateKey.generate()
    previous = GENESIS
    for r in sorted(read_records(client, namespace), key=lambda r: r["sequence"]):
        live = json.loads(
            kubectl.run("-n", namespace, "get", "auditrecord", record_name(r["sequence"]), "-o", "json").stdout
        )
        sealed = ("sequence", "previous", "keyID", "hash", "signature", "tally", "tallySignature", "storedAt")
        body = {k: v for k, v in r.items() if k not in sealed}
        body["user"] = "nobody"
        live["record"] = seal(body, r["sequence"], previous, forger)
        previous = live["record"]["hash"]
        kubectl.run("-n", namespace, "replace", "-f", "-", stdin=json.dumps(live))
    forged_pub = public_key_file(tmp_path / "forged.pub", forger.public_key())
    kubectl.run(
        "-n",
        namespace,
        "patch",
        "configmap",
        PUBLIC_KEY_CONFIGMAP,
        "--type=merge",
        "-p",
        json.dumps({"data": {"ed25519.pub": forged_pub.read_text()}}),
    )
    # ...which the published key no longer shows, and the pinned one does.
    assert gitops.run(*verify, "--public-key", str(forged_pub)).returncode == 0
    caught = gitops.run(*verify, "--public-key", str(right), expect=1)
    assert "signature" in caught.stdout


class RecreatedBeforeDelete:
    """The real API client, except that just before the prune deletes `name`, someone else deletes that object and
    creates it again: the same name and the same tracking marks, another uid."""

    def __init__(self, client: KubeClient, kubectl: Kubectl, namespace: str, name: str) -> None:
        self.client = client
        self.kubectl = kubectl
        self.namespace = namespace
        self.name = name
        self.recreated_uid = ""

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self.client, attribute)

    def delete(self, info: ResourceInfo, key: ObjectKey, *, uid: str = "") -> bool:
        if key.name == self.name and not self.recreated_uid:
            live = json.loads(
                self.kubectl.run("-n", self.namespace, "get", "configmap", self.name, "-o", "json").stdout
            )
            assert live["metadata"]["uid"] == uid  # the prune asks to delete exactly what it listed
            self.kubectl.run("-n", self.namespace, "delete", "configmap", self.name, "--wait=true")
            copy = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": self.name,
                    "labels": live["metadata"]["labels"],
                    "annotations": live["metadata"]["annotations"],
                },
                "data": {"made": "again, by someone else"},
            }
            made = json.loads(
                self.kubectl.run("-n", self.namespace, "create", "-f", "-", "-o", "json", stdin=json.dumps(copy)).stdout
            )
            self.recreated_uid = made["metadata"]["uid"]
        return self.client.delete(info, key, uid=uid)


def test_prune_does_not_delete_an_object_recreated_since_it_was_listed(
    gitops: Gitops, kubectl: Kubectl, git_repo: MakeRepo, namespace: str, tmp_path: Path
) -> None:
    """Between the listing and the DELETE, the object Git dropped was deleted and created again by someone else:
    the DELETE carries the uid that was listed, so the API server refuses it and the new object stays."""
    repo = git_repo("examples/guestbook")
    repo.write("leftover.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: leftover}\ndata: {a: b}\n")
    repo.commit("a ConfigMap to drop later")
    gitops.run("create", namespace, "--repo", str(repo.path), "--dest-namespace", namespace)
    gitops.run("sync", namespace, user="gitops")
    (repo.path / "leftover.yaml").unlink()
    repo.commit("drop it")

    client = KubeClient(KubeTarget(kubeconfig=str(kubectl.cluster.kubeconfig("gitops"))))
    app_obj, spec = get_application(client, AppRef("gitops-system", namespace))
    desired = load_desired(spec, client, source=GitSource(spec.repo_url, tmp_path / "mirrors"))
    cluster = RecreatedBeforeDelete(client, kubectl, namespace, "leftover")
    results = {(r.key.kind, r.key.name): r for r in Syncer(cluster, spec).run(desired, app_obj, prune=True)}

    assert cluster.recreated_uid
    outcome = results[("ConfigMap", "leftover")]
    assert outcome.action is not Action.PRUNED
    assert "uid" in outcome.message.lower() or "precondition" in outcome.message.lower()
    live = json.loads(kubectl.run("-n", namespace, "get", "configmap", "leftover", "-o", "json").stdout)
    assert live["metadata"]["uid"] == cluster.recreated_uid
    assert "deletionTimestamp" not in live["metadata"]
    assert live["data"] == {"made": "again, by someone else"}
