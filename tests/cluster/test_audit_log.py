"""The audit log's store against the real API server: finding the head in O(log n) GETs whatever a hint says, never
reusing a number after the tail was deleted, `verify --witness` catching truncation and re-signing, folding a flood,
two stores on one chain, retention, late records, and who may read the signing key.

Each test keeps its chain in its own namespace (AuditRecords are namespaced), so the webhook's log in gitops-system
is never touched."""

from __future__ import annotations

import base64
import datetime
import json
import math
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from engine.adapters.audit import SIGNING_SECRET, AuditStore, ClusterWitness, Witnesses, read_public_key, read_records
from engine.adapters.auditwitness import GitWitness, read_witness
from engine.adapters.kube import KubeClient, KubeTarget
from engine.core.auditchain import GENESIS, Checkpoint, RetentionPolicy, record_name, seal, verify

from ..conftest import Gitops, Kubectl

pytestmark = pytest.mark.cluster


def attempt(i: int, *, user: str = "alice", uid: str = "") -> dict[str, Any]:
    return {
        "time": f"2030-01-01T00:00:{i % 60:02d}.000Z",
        "requestUID": uid or f"uid-{i}-{time.monotonic_ns()}",
        "user": user,
        "groups": ["developers"],
        "operation": "UPDATE",
        "subResource": "",
        "object": {"group": "", "kind": "ConfigMap", "namespace": "shop", "name": "settings"},
        "application": "gitops-system/shop",
        "revision": "f" * 40,
        "mode": "enforce",
        "decision": "denied",
        "reason": "",
        "fields": [{"path": "/data/message", "kind": "changed", "git": "hello", "requested": f"try {i}"}],
    }


@pytest.fixture(scope="module")
def client(gitops: Gitops, kubectl: Kubectl) -> KubeClient:
    """An API client as admin, with the CRDs installed (the gitops fixture)."""
    return KubeClient(KubeTarget(kubeconfig=str(kubectl.cluster.kubeconfig("admin"))))


class Checkpoints(list[Checkpoint]):
    """What the store would print on stdout, collected."""


@pytest.fixture
def printed() -> Checkpoints:
    return Checkpoints()


@pytest.fixture
def store(client: KubeClient, namespace: str, printed: Checkpoints) -> AuditStore:
    return AuditStore(client, namespace, publish=printed.append, checkpoint_every=5)


@pytest.fixture
def witness_repo(tmp_path: Path) -> str:
    """A bare Git repository, as a witness reached by URL would be."""
    path = tmp_path / "witness.git"
    subprocess.run(["git", "init", "-q", "--bare", str(path)], check=True)
    return str(path)


def stored(client: KubeClient, namespace: str) -> list[dict[str, Any]]:
    return read_records(client, namespace)


def delete_record(kubectl: Kubectl, namespace: str, sequence: int) -> None:
    kubectl.run("-n", namespace, "delete", "auditrecord", record_name(sequence))


def test_a_head_hint_of_99999999_costs_o_log_n_calls(
    client: KubeClient, store: AuditStore, namespace: str, kubectl: Kubectl
) -> None:
    for i in range(1, 201):
        store.append(attempt(i))
    # What misled the old writer: a hint pointing far beyond the log. Nothing reads it now.
    kubectl.run("-n", namespace, "create", "configmap", "gitops-audit-head", "--from-literal=sequence=99999999")
    fresh = AuditStore(client, namespace, publish=lambda cp: None)
    started = time.monotonic()
    assert fresh.find_head()[0] == 200
    assert fresh.calls <= 2 * math.ceil(math.log2(200)) + 3, fresh.calls
    assert time.monotonic() - started < 5
    record = fresh.append(attempt(1000))
    assert record["sequence"] == 201
    assert verify(stored(client, namespace), read_public_key(client, namespace)) == []


def test_a_deleted_tail_is_never_written_over_and_the_witness_catches_it(
    client: KubeClient, namespace: str, kubectl: Kubectl, gitops: Gitops, witness_repo: str, tmp_path: Path
) -> None:
    printed = Checkpoints()
    store = AuditStore(client, namespace, publish=printed.append, checkpoint_every=5, witness=GitWitness(witness_repo))
    for i in range(1, 13):
        store.append(attempt(i))
    store.flush()
    witnessed = read_witness(witness_repo)
    assert [c.sequence for c in witnessed] == [c.sequence for c in printed] == [1, 6, 11]
    stdout = tmp_path / "webhook-stdout.jsonl"
    stdout.write_text("".join(json.dumps({"auditCheckpoint": c.as_dict()}) + "\n" for c in printed))
    cli = ("-n", namespace, "audit", "verify")
    gitops.run(*cli, "--witness", witness_repo)

    for sequence in range(9, 13):  # the tail deleted
        delete_record(kubectl, namespace, sequence)
    assert gitops.run(*cli).returncode == 0  # without a witness, a clean cut looks like a shorter log
    for witness in (witness_repo, str(stdout)):
        caught = gitops.run(*cli, "--witness", witness, expect=1).stdout
        assert "the log ends at 8 but the witness saw record 11 (truncated?)" in caught

    # The running writer goes on after the highest number it wrote: the gap shows, no number is used twice.
    assert store.append(attempt(13))["sequence"] == 13
    assert "records 9 to 12 are missing (deleted?)" in gitops.run(*cli, expect=1).stdout
    # A restarted writer (its memory gone, the tail deleted again) starts after the witness's last checkpoint.
    delete_record(kubectl, namespace, 13)
    restarted = AuditStore(client, namespace, publish=printed.append, witness=GitWitness(witness_repo))
    assert restarted.append(attempt(14))["sequence"] == 12
    caught = gitops.run(*cli, "--witness", witness_repo, expect=1).stdout
    assert "records 9 to 11 are missing (deleted?)" in caught
    assert "record 11: the witness saw it, the log no longer has it (deleted?)" in caught


def test_the_cluster_scoped_mark_keeps_numbers_from_being_reused_and_shows_a_cut_tail(
    client: KubeClient, namespace: str, kubectl: Kubectl, gitops: Gitops
) -> None:
    """Whoever may delete records in the log's namespace cannot lower its high-water mark: it is cluster-scoped."""
    mark = ClusterWitness(client, namespace)
    store = AuditStore(client, namespace, publish=lambda cp: None, checkpoint_every=5, witness=Witnesses(mark))
    for i in range(1, 13):
        store.append(attempt(i))
    store.flush()
    assert [c.sequence for c in mark.read()] == [11]
    mark.add([Checkpoint(3, "0" * 64, 1, "", "k")])  # a writer that lags behind never lowers it
    assert [c.sequence for c in mark.read()] == [11]
    for sequence in range(9, 13):  # the tail deleted
        delete_record(kubectl, namespace, sequence)
    cli = ("-n", namespace, "audit", "verify")
    caught = gitops.run(*cli, expect=1).stdout  # no witness outside the cluster needed
    assert "the log ends at 8 but the witness saw record 11 (truncated?)" in caught
    restarted = AuditStore(client, namespace, publish=lambda cp: None, witness=Witnesses(mark))
    assert restarted.append(attempt(13))["sequence"] == 12  # never 9: numbers the log reached are not used again
    # A namespace role cannot write it, not even `admin` of the log's namespace.
    kubectl.run("-n", namespace, "create", "rolebinding", "mallory-admin", "--clusterrole=admin", "--user=mallory")
    for verb in ("update", "delete", "patch"):
        proc = kubectl.run(
            "auth", "can-i", verb, f"auditcheckpoints.gitops.kubectl-gitops.io/{namespace}", "--as=mallory", check=False
        )
        assert proc.stdout.strip() == "no", (verb, proc.stdout)
    kubectl.run("delete", "auditcheckpoint", namespace)


def test_resigning_with_the_stolen_key_passes_verify_but_not_the_witness(
    client: KubeClient,
    store: AuditStore,
    printed: Checkpoints,
    namespace: str,
    kubectl: Kubectl,
    gitops: Gitops,
    tmp_path: Path,
) -> None:
    for i in range(1, 9):
        store.append(attempt(i))
    witness = tmp_path / "witness.jsonl"
    witness.write_text("".join(json.dumps(c.as_dict()) + "\n" for c in printed))
    # Whoever can read the Secret (`edit` in the namespace is enough) holds the signing key...
    pem = kubectl.run("-n", namespace, "get", "secret", SIGNING_SECRET, "-o", "jsonpath={.data.ed25519\\.pem}").stdout
    stolen = serialization.load_pem_private_key(base64.b64decode(pem), password=None)
    assert isinstance(stolen, Ed25519PrivateKey)
    # ...and rewrites what alice did in records 3..8 as somebody else's, dropping the last two.
    previous = next(r for r in stored(client, namespace) if r["sequence"] == 2)["hash"]
    for sequence in range(3, 9):
        live = json.loads(
            kubectl.run("-n", namespace, "get", "auditrecord", record_name(sequence), "-o", "json").stdout
        )
        if sequence > 6:
            delete_record(kubectl, namespace, sequence)
            continue
        forged = seal(attempt(sequence, user="nobody"), sequence, previous, stolen)
        previous = forged["hash"]
        live["record"] = forged
        kubectl.run("-n", namespace, "replace", "-f", "-", stdin=json.dumps(live))
    gitops.run("-n", namespace, "audit", "verify")
    caught = gitops.run("-n", namespace, "audit", "verify", "--witness", str(witness), expect=1).stdout
    assert "record 6: its hash differs from the one the witness saw (rewritten and re-signed?)" in caught

    # A new key and a new public key ConfigMap: every record re-signed; the witness knows the old key id.
    other = Ed25519PrivateKey.generate()
    previous = GENESIS
    for r in sorted(stored(client, namespace), key=lambda r: r["sequence"]):
        live = json.loads(
            kubectl.run("-n", namespace, "get", "auditrecord", record_name(r["sequence"]), "-o", "json").stdout
        )
        body = {
            k: v
            for k, v in r.items()
            if k not in ("sequence", "previous", "keyID", "hash", "signature", "tally", "tallySignature", "storedAt")
        }
        live["record"] = seal(body, r["sequence"], previous, other)
        previous = live["record"]["hash"]
        kubectl.run("-n", namespace, "replace", "-f", "-", stdin=json.dumps(live))
    key = tmp_path / "other.pub"
    key.write_bytes(
        other.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    gitops.run("-n", namespace, "audit", "verify", "--public-key", str(key))
    caught = gitops.run(
        "-n", namespace, "audit", "verify", "--public-key", str(key), "--witness", str(witness), expect=1
    ).stdout
    assert "(re-signed with another key?)" in caught


def test_a_flood_of_identical_attempts_folds_into_one_record(
    client: KubeClient, store: AuditStore, namespace: str, gitops: Gitops
) -> None:
    store.append(attempt(0))
    for n in range(100):
        store.append({**attempt(1), "time": f"2030-01-01T00:01:{n % 60:02d}.000Z"})
    store.append(attempt(2))
    again = store.append(attempt(1))  # not next to its twin, still within the fold window: folded into it
    same_uid = store.append(attempt(1, uid=again["tally"]["lastRequestUID"]))  # the same request: not counted twice
    records = sorted(stored(client, namespace), key=lambda r: r["sequence"])
    assert [r["sequence"] for r in records] == [1, 2, 3]
    assert records[1]["tally"]["count"] == 101
    assert same_uid["tally"]["count"] == 101
    assert verify(records, read_public_key(client, namespace)) == []
    listed = gitops.run("-n", namespace, "audit", "-o", "json").stdout
    assert [r.get("tally", {}).get("count", 1) for r in json.loads(listed)] == [1, 101, 1]
    assert "101x" in gitops.run("-n", namespace, "audit").stdout


def test_two_stores_appending_at_once_stay_one_chain(client: KubeClient, namespace: str, kubectl: Kubectl) -> None:
    second_client = KubeClient(KubeTarget(kubeconfig=str(kubectl.cluster.kubeconfig("admin"))))
    stores = [
        AuditStore(client, namespace, publish=lambda cp: None),
        AuditStore(second_client, namespace, publish=lambda cp: None),
    ]
    uids: list[str] = []

    def run(s: AuditStore, offset: int) -> None:
        for i in range(15):
            body = attempt(offset + i) if i % 3 else attempt(999)  # distinct ones, and a repeat folded by each store
            uids.append(body["requestUID"])
            s.append(body)

    threads = [threading.Thread(target=run, args=(s, 100 * n)) for n, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = stored(client, namespace)
    assert verify(records, read_public_key(client, namespace)) == []
    assert sorted(r["sequence"] for r in records) == list(range(1, len(records) + 1))
    assert sum(r.get("tally", {}).get("count", 1) for r in records) == 30  # every attempt counted once


def test_retention_retires_old_records_and_verify_still_accepts_the_log(
    client: KubeClient, store: AuditStore, printed: Checkpoints, namespace: str, gitops: Gitops, tmp_path: Path
) -> None:
    for i in range(1, 11):
        store.append(attempt(i))
    assert store.retire(RetentionPolicy(records=4)) == 6
    records = sorted(stored(client, namespace), key=lambda r: r["sequence"])
    assert [r["sequence"] for r in records] == [7, 8, 9, 10, 11]
    assert records[-1]["retired"]["through"] == 6
    assert printed[-1].sequence == 11  # the retention was checkpointed before anything was deleted
    witness = tmp_path / "witness.jsonl"
    witness.write_text("".join(json.dumps(c.as_dict()) + "\n" for c in printed))
    gitops.run("-n", namespace, "audit", "verify", "--witness", str(witness))
    assert "retention" in gitops.run("-n", namespace, "audit").stdout
    store.append(attempt(12))
    gitops.run("-n", namespace, "audit", "verify", "--witness", str(witness))


def test_a_record_durable_after_the_deadline_says_late(client: KubeClient, store: AuditStore) -> None:
    on_time = store.append(attempt(1), received=time.monotonic())
    assert "tally" not in on_time
    late = store.append(attempt(2), received=time.monotonic() - 11)  # the registration's 10 s are over
    assert late["tally"]["late"] is True

    class SlowWrite:
        """A clock on which the write took the whole deadline: the request came at 0, it is durable at 100."""

        def __init__(self) -> None:
            self.readings = iter([0.0])

        def wall(self) -> datetime.datetime:
            return datetime.datetime.now(datetime.UTC)

        def monotonic(self) -> float:
            return next(self.readings, 100.0)

    slow = AuditStore(client, store.namespace, clock=SlowWrite(), publish=lambda cp: None)
    marked = slow.append(attempt(3), received=0.0)
    assert marked["tally"] == {"count": 1, "late": True, "lateCount": 1}
    assert marked["sequence"] == 3
    assert verify(read_records(client, store.namespace), read_public_key(client, store.namespace)) == []


def test_an_auditor_reads_the_log_but_not_the_signing_key(kubectl: Kubectl, namespace: str) -> None:
    kubectl.run(
        "apply",
        "-f",
        str(Path(__file__).resolve().parents[2] / "manifests" / "webhook" / "rbac.yaml"),
        "-n",
        "gitops-system",
    )
    kubectl.run("-n", namespace, "create", "serviceaccount", "auditor")
    kubectl.run(
        "create",
        "clusterrolebinding",
        f"auditor-{namespace}",
        "--clusterrole=gitops-audit-reader",
        f"--serviceaccount={namespace}:auditor",
    )
    try:
        who = f"system:serviceaccount:{namespace}:auditor"

        def can(*args: str) -> bool:
            return kubectl.run("auth", "can-i", *args, "--as", who, check=False).stdout.strip() == "yes"

        assert can("list", "auditrecords.gitops.kubectl-gitops.io", "-n", "gitops-system")
        assert can("get", "configmap/gitops-audit-public-key", "-n", "gitops-system")
        assert not can("get", f"secret/{SIGNING_SECRET}", "-n", "gitops-system")
        assert not can("delete", "auditrecords.gitops.kubectl-gitops.io", "-n", "gitops-system")
        webhook = "system:serviceaccount:gitops-system:gitops-webhook"
        for verb in ("get", "create", "update", "delete"):
            assert (
                kubectl.run(
                    "auth",
                    "can-i",
                    verb,
                    "auditrecords.gitops.kubectl-gitops.io",
                    "-n",
                    "gitops-system",
                    "--as",
                    webhook,
                    check=False,
                ).stdout.strip()
                == "yes"
            ), verb
    finally:
        kubectl.run("delete", "clusterrolebinding", f"auditor-{namespace}", check=False)
