"""Where the audit log is kept: AuditRecord objects in the API server, appended to by every webhook replica.

Records (engine.core.auditchain builds and checks them) are named by sequence number, so that every replica appends to
one log (a name already taken means another replica got that number: find the head again and retry), a record exists
in etcd before the webhook answers, and anyone with RBAC to read them can. The head is found in O(log n) GETs,
never from a hint the cluster could bend; a writer never goes below the highest number it or a witness has seen, so
a truncated tail shows up as a gap instead of being written over. Identical attempts fold into one record (its tally
re-signed under a resourceVersion precondition); checkpoints go to stdout and, optionally, to a Git witness.
"""

from __future__ import annotations

import base64
import datetime
import json
import logging
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..core.auditchain import (
    GENESIS,
    POSITION,
    RECORD_API_VERSION,
    RECORD_KIND,
    Checkpoint,
    Problem,
    RetentionPolicy,
    build_record,
    checkpoint,
    count_of,
    filter_records,
    find_last,
    fold,
    fold_key,
    key_id,
    load_public_key,
    marked_late,
    private_key_pem,
    public_key_pem,
    record_hash,
    record_name,
    record_object,
    retention_body,
    retire_through,
    rfc3339,
    seal,
    sequence_of_name,
    verify,
)
from ..core.clock import Clock
from ..core.errors import ApiError, GitOpsError
from ..core.objects import KubeObject, ObjectKey
from .clock import SYSTEM

__all__ = [
    "GENESIS",
    "POSITION",
    "RECORD_API_VERSION",
    "RECORD_KIND",
    "AuditStore",
    "Checkpoint",
    "Clock",
    "Problem",
    "RetentionPolicy",
    "build_record",
    "filter_records",
    "key_id",
    "load_public_key",
    "public_key_pem",
    "read_public_key",
    "read_records",
    "record_hash",
    "record_name",
    "record_object",
    "seal",
    "verify",
]

log = logging.getLogger(__name__)

SIGNING_SECRET = "gitops-audit-signing-key"
PUBLIC_KEY_CONFIGMAP = "gitops-audit-public-key"
ANSWER_TIMEOUT_SECONDS = 10.0  # the registration's timeoutSeconds (engine.core.webhookconfig)
FOLD_SECONDS = 300.0  # repeats of an attempt within this long of its first fold into one record
CHECKPOINT_EVERY = 100  # records between checkpoints
CHECKPOINT_SECONDS = 60.0  # and at most this long between checkpoints while records come


class Witness(Protocol):
    """Somewhere outside the cluster that keeps checkpoints (engine.adapters.auditwitness.GitWitness)."""

    def add(self, checkpoints: list[Checkpoint]) -> None: ...
    def read(self) -> list[Checkpoint]: ...


def print_checkpoint(cp: Checkpoint) -> None:
    """A checkpoint as a JSON line on stdout, next to the `{"auditRecord": ...}` lines, for log pipelines."""
    sys.stdout.write(json.dumps({"auditCheckpoint": cp.as_dict()}, sort_keys=True) + "\n")
    sys.stdout.flush()


CHECKPOINT_KIND = "AuditCheckpoint"


def served(cluster: Any, api_version: str, kind: str) -> Any:
    """How the cluster serves `kind`, reading discovery again once when it seems not to (installed after this
    process started?)."""
    info = cluster.resource_for(api_version, kind)
    if info is None:
        cluster.refresh_discovery()
        info = cluster.resource_for(api_version, kind)
    if info is None:
        raise GitOpsError(f"the cluster does not serve {kind}; run `kubectl gitops install` first")
    return info


class ClusterWitness:
    """The newest checkpoint, kept in a cluster-scoped AuditCheckpoint: a high-water mark inside the cluster that no
    namespace role can write, so that whoever may delete records in the log's namespace cannot make a restarted
    writer reuse their numbers, nor a plain `audit verify` miss the truncation. (Cluster administrators can write
    it: against them, a witness outside the cluster, GitWitness or the stdout lines, is the anchor.)"""

    def __init__(self, cluster: Any, namespace: str) -> None:
        self.cluster = cluster
        self.name = namespace  # one mark per log, named after the namespace the log lives in

    def _info(self) -> Any:
        return served(self.cluster, RECORD_API_VERSION, CHECKPOINT_KIND)

    def read(self) -> list[Checkpoint]:
        """The mark, if there is one (none while the cluster lacks the CRD: an installation from before it)."""
        try:
            info = self._info()
        except GitOpsError as e:
            log.warning("no high-water mark of the audit log: %s", e)
            return []
        found = self.cluster.get(info, "", self.name)
        if not found or not isinstance(found.get("checkpoint"), dict):
            return []
        return [Checkpoint.of(found["checkpoint"])]

    def add(self, checkpoints: list[Checkpoint]) -> None:
        """Raises the mark to the newest of `checkpoints`; never lowers it (a conflict re-reads and tries again)."""
        if not checkpoints:
            return
        newest = max(checkpoints, key=lambda c: (c.sequence, c.count))
        info = self._info()
        for _ in range(5):
            found = self.cluster.get(info, "", self.name)
            if found is not None:
                current = found.get("checkpoint") or {}
                if (int(current.get("sequence", 0)), int(current.get("count", 0))) >= (newest.sequence, newest.count):
                    return
            metadata: dict[str, Any] = {"name": self.name}
            if found is not None:
                metadata["resourceVersion"] = found["metadata"]["resourceVersion"]
            body = {
                "apiVersion": RECORD_API_VERSION,
                "kind": CHECKPOINT_KIND,
                "metadata": metadata,
                "checkpoint": newest.as_dict(),
            }
            try:
                if found is None:
                    self.cluster.create(info, body)
                else:
                    self.cluster.replace(info, body)
                return
            except ApiError as e:
                if e.status != 409:
                    raise
        raise GitOpsError("could not raise the audit log's high-water mark: too much contention")


class Witnesses:
    """Several witnesses as one: a checkpoint goes to each, and each tells what it holds."""

    def __init__(self, *witnesses: Witness) -> None:
        self.witnesses = witnesses

    def add(self, checkpoints: list[Checkpoint]) -> None:
        failed = []
        for witness in self.witnesses:
            try:
                witness.add(checkpoints)
            except GitOpsError as e:
                failed.append(str(e))
        if failed:
            raise GitOpsError("; ".join(failed))

    def read(self) -> list[Checkpoint]:
        out: list[Checkpoint] = []
        for witness in self.witnesses:
            out.extend(witness.read())
        return out


class AuditStore:
    """Appends sealed records to the API server; safe across threads and across replicas."""

    def __init__(
        self,
        cluster: Any,
        namespace: str,
        *,
        clock: Clock | None = None,
        answer_timeout: float = ANSWER_TIMEOUT_SECONDS,
        fold_seconds: float = FOLD_SECONDS,
        checkpoint_every: int = CHECKPOINT_EVERY,
        checkpoint_seconds: float = CHECKPOINT_SECONDS,
        publish: Callable[[Checkpoint], None] = print_checkpoint,
        witness: Witness | None = None,
    ) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.clock = clock or SYSTEM
        self.answer_timeout = answer_timeout
        self.fold_seconds = fold_seconds
        self.checkpoint_every = checkpoint_every
        self.checkpoint_seconds = checkpoint_seconds
        self.publish = publish
        self.witness = witness
        self.calls = 0  # API calls made, for tests and the benchmark
        self._lock = threading.Lock()
        self._head: KubeObject | None = None  # the newest record this store knows of, as stored
        self._floor: tuple[int, str] = (0, GENESIS)  # the highest sequence number seen, and its hash
        self._floor_read = False
        self._signer: Ed25519PrivateKey | None = None
        self._folds: OrderedDict[str, KubeObject] = OrderedDict()  # fold key -> its record, as stored
        self._uids: OrderedDict[str, dict[str, Any]] = OrderedDict()  # request uid -> its record, newest last
        self._head_stale = False
        self._checkpointed: tuple[int, int, float] | None = None  # sequence, count, monotonic time
        # Commits to the witness wait for git: off the path of an answer, one at a time, in order.
        self._witnessing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-witness")

    # --- plumbing ----------------------------------------------------------------------------------------------
    def _info(self, api_version: str, kind: str) -> Any:
        return served(self.cluster, api_version, kind)

    def _records(self) -> Any:
        return self._info(RECORD_API_VERSION, RECORD_KIND)

    def _get(self, sequence: int) -> KubeObject | None:
        self.calls += 1
        found: KubeObject | None = self.cluster.get(self._records(), self.namespace, record_name(sequence))
        return found

    def _wall(self) -> str:
        return rfc3339(self.clock.wall())

    # --- keys --------------------------------------------------------------------------------------------------
    def signer(self) -> Ed25519PrivateKey:
        """The signing key, shared by replicas through a Secret (made by the first one to need it)."""
        if self._signer is not None:
            return self._signer
        secrets_info = self._info("v1", "Secret")
        found = self.cluster.get(secrets_info, self.namespace, SIGNING_SECRET)
        if found is None:
            key = Ed25519PrivateKey.generate()
            secret = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": SIGNING_SECRET, "namespace": self.namespace},
                "type": "Opaque",
                "data": {"ed25519.pem": base64.b64encode(private_key_pem(key)).decode()},
            }
            try:
                self.cluster.create(secrets_info, secret)
            except ApiError as e:
                if e.status != 409:
                    raise
                found = self.cluster.get(secrets_info, self.namespace, SIGNING_SECRET)
            else:
                self._publish_key(key.public_key())
                self._signer = key
                return key
        assert found is not None
        pem = base64.b64decode(found["data"]["ed25519.pem"])
        loaded = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(loaded, Ed25519PrivateKey):
            raise GitOpsError(f"Secret {self.namespace}/{SIGNING_SECRET} does not hold an Ed25519 key")
        self._publish_key(loaded.public_key())
        self._signer = loaded
        return loaded

    def _publish_key(self, public: Ed25519PublicKey) -> None:
        info = self._info("v1", "ConfigMap")
        config = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": PUBLIC_KEY_CONFIGMAP, "namespace": self.namespace},
            "data": {"ed25519.pub": public_key_pem(public), "keyID": key_id(public)},
        }
        self.cluster.apply(info, config, field_manager="gitops-webhook")

    # --- the head ----------------------------------------------------------------------------------------------
    def _lowest(self) -> KubeObject | None:
        """The stored record with the lowest number: one LIST of one item (etcd lists in name order)."""
        self.calls += 1
        page = self.cluster.request("GET", self._records().path(self.namespace), params={"limit": "1"})
        for item in page.get("items") or []:
            if sequence_of_name(str((item.get("metadata") or {}).get("name", ""))) is not None:
                found: KubeObject = {"apiVersion": RECORD_API_VERSION, "kind": RECORD_KIND, **item}
                return found
        return None

    def _raise_floor(self, sequence: int, digest: str) -> None:
        if sequence > self._floor[0]:
            self._floor = (sequence, digest)

    def find_head(self) -> tuple[int, str]:
        """The last record (number and hash) to chain the next one to. Searched from the newest record this store
        knows of if it is still there, else from the lowest stored one: O(log n) GETs. When the log ends below the
        highest number this store (or its witness) has seen, the tail was deleted: the next record follows the one
        remembered, so the gap shows, and its number is never used twice."""
        if not self._floor_read:
            self._floor_read = True
            if self.witness is not None:
                for cp in self.witness.read():
                    self._raise_floor(cp.sequence, cp.hash)
        seen: dict[int, KubeObject] = {}

        def exists(sequence: int) -> bool:
            found = self._get(sequence)
            if found is not None:
                seen[sequence] = found
            return found is not None

        start = 0
        if self._head is not None and exists(int(self._head["record"]["sequence"])):
            start = int(self._head["record"]["sequence"])
        elif (lowest := self._lowest()) is not None:
            start = int(sequence_of_name(lowest["metadata"]["name"]) or 0)
            seen[start] = lowest
        last = find_last(exists, start)
        if last:
            self._head = seen.get(last) or self._get(last)
        if self._head is not None and int(self._head["record"]["sequence"]) == last:
            self._raise_floor(last, str(self._head["record"]["hash"]))
        if last < self._floor[0]:
            log.error(
                "the audit log ends at record %d, but record %d was written: records were deleted; the next "
                "record follows %d, so the gap stays visible",
                last,
                self._floor[0],
                self._floor[0],
            )
        return self._floor

    # --- appending ---------------------------------------------------------------------------------------------
    def _late(self, received: float | None) -> bool:
        return received is not None and self.clock.monotonic() > received + self.answer_timeout

    def _remember(self, stored: KubeObject, key: str) -> None:
        self._folds[key] = stored
        self._folds.move_to_end(key)
        while len(self._folds) > 1024:
            self._folds.popitem(last=False)

    def _remember_uid(self, uid: str, record: dict[str, Any]) -> None:
        if uid:
            self._uids[uid] = record
            while len(self._uids) > 1024:
                self._uids.popitem(last=False)

    def _update(self, stored: KubeObject, record: dict[str, Any]) -> KubeObject | None:
        """PUT the record with a new tally, guarded by the resourceVersion it was read at; None on a conflict."""
        obj = {**stored, "record": record}
        self.calls += 1
        try:
            result: KubeObject = self.cluster.replace(self._records(), obj)
        except ApiError as e:
            if e.status in (404, 409):
                return None
            raise
        return result

    def _fold_into(self, stored: KubeObject, body: Mapping[str, Any], late: bool) -> KubeObject | None:
        """One more attempt in an earlier record; None when that record is gone or too old to fold into."""
        first = stored["record"]
        started = first.get("time", "")
        wall = self.clock.wall()
        if self.fold_seconds <= 0 or rfc3339(wall - datetime.timedelta(seconds=self.fold_seconds)) > str(started):
            return None
        for _ in range(20):
            folded = fold(
                stored["record"],
                time=str(body.get("time") or self._wall()),
                request_uid=str(body.get("requestUID", "")),
                late=late,
                signer=self.signer(),
            )
            result = self._update(stored, folded)
            if result is not None:
                return result
            refreshed = self._get(int(first["sequence"]))  # changed by another replica, or deleted
            if refreshed is None or refreshed["record"].get("hash") != first.get("hash"):
                return None
            stored = refreshed
        return None

    def _create(self, body: Mapping[str, Any], late: bool) -> KubeObject:
        info = self._records()
        signer = self.signer()
        for _ in range(50):
            if self._head is None or self._head_stale:
                seq, previous = self.find_head()
                self._head_stale = False
            else:
                seq, previous = int(self._head["record"]["sequence"]), str(self._head["record"]["hash"])
                if seq < self._floor[0]:
                    seq, previous = self._floor
            record = seal(body, seq + 1, previous, signer)
            if late:
                record = marked_late(record, signer)
            self.calls += 1
            try:
                stored: KubeObject = self.cluster.create(info, record_object(record, self.namespace))
            except ApiError as e:
                if e.status == 409:  # another replica took this number
                    self._head_stale = True
                    continue
                raise
            self._head = stored
            self._raise_floor(seq + 1, str(record["hash"]))
            return stored
        raise GitOpsError("could not append to the audit log: too much contention")

    def append(self, body: Mapping[str, Any], received: float | None = None) -> dict[str, Any]:
        """Records one attempt and returns its record once the API server has it (durable in etcd): a new record,
        or an earlier one with the attempt folded into its tally. `received` (on the clock's monotonic scale) is
        when the request came; a record durable only after the API server's deadline says `late`."""
        with self._lock:
            uid = str(body.get("requestUID", ""))
            if uid and uid in self._uids:  # the same request again (the same uid): it is recorded already
                return self._uids[uid]
            key = fold_key(body)
            late = self._late(received)
            earlier = self._folds.get(key)
            stored_or_none = self._fold_into(earlier, body, late) if earlier is not None else None
            stored = stored_or_none if stored_or_none is not None else self._create(body, late)
            if not late and self._late(received):  # durable, but after the deadline: say so
                for _ in range(20):
                    updated = self._update(stored, marked_late(stored["record"], self.signer()))
                    if updated is not None:
                        stored = updated
                        break
                    refreshed = self._get(int(stored["record"]["sequence"]))
                    if refreshed is None:
                        break
                    stored = refreshed
            self._remember(stored, key)
            record = dict(stored["record"])
            self._remember_uid(uid, record)
            if self._head is not None and self._head["record"]["sequence"] == record["sequence"]:
                self._head = stored
            self._checkpoint_if_due(record)
            return record

    # --- checkpoints -------------------------------------------------------------------------------------------
    def _checkpoint_if_due(self, record: Mapping[str, Any]) -> None:
        if self._checkpointed is None:
            self.emit_checkpoint(record)
            return
        seq, count, at = self._checkpointed
        if int(record["sequence"]) - seq >= self.checkpoint_every or (
            (int(record["sequence"]), count_of(record)) != (seq, count)
            and self.clock.monotonic() - at >= self.checkpoint_seconds
        ):
            self.emit_checkpoint(record)

    def emit_checkpoint(self, record: Mapping[str, Any], *, wait: bool = False) -> Checkpoint:
        """A signed checkpoint of `record` on stdout and to the witness (if one is configured; `wait` for it)."""
        cp = checkpoint(record, self.signer(), self._wall())
        self._checkpointed = (cp.sequence, cp.count, self.clock.monotonic())
        self.publish(cp)
        if self.witness is not None:
            done = self._witnessing.submit(self._witness, cp)
            if wait and not done.result():
                raise GitOpsError(f"the audit witness did not take checkpoint {cp.sequence}; nothing was retired")
        return cp

    def _witness(self, cp: Checkpoint) -> bool:
        assert self.witness is not None
        try:
            self.witness.add([cp])
        except GitOpsError as e:  # stdout still has it; the next checkpoint tries again
            log.error("could not add checkpoint %d to the audit witness: %s", cp.sequence, e)
            return False
        return True

    def flush(self) -> None:
        """Waits until the witness has every checkpoint emitted so far."""
        self._witnessing.submit(lambda: None).result()

    # --- retention ---------------------------------------------------------------------------------------------
    def retire(self, policy: RetentionPolicy) -> int:
        """Retires the records `policy` lets go: a retention record sealed into the chain keeps the hash of the last
        one retired, a checkpoint of it goes to stdout and the witness, then the records are deleted, oldest first.
        Returns how many were deleted."""
        stored = sorted(read_records(self.cluster, self.namespace), key=lambda r: int(r.get(POSITION, 0)))
        through = retire_through(stored, policy, self.clock.wall())
        if not through:
            return 0
        retired = [r for r in stored if int(r[POSITION]) <= through]
        last = next(r for r in retired if int(r[POSITION]) == through)
        attempts = sum(count_of(r) for r in retired if r.get("type") != "retention")
        body = retention_body(through, str(last["hash"]), len(retired), attempts, self._wall())
        with self._lock:
            stored_retention = self._create(body, late=False)
            self.emit_checkpoint(stored_retention["record"], wait=True)
        info = self._records()
        for r in retired:
            self.calls += 1
            self.cluster.delete(info, ObjectKey(info.group, RECORD_KIND, self.namespace, record_name(int(r[POSITION]))))
        return len(retired)


def read_records(cluster: Any, namespace: str) -> list[dict[str, Any]]:
    info = cluster.resource_for(RECORD_API_VERSION, RECORD_KIND)
    if info is None:
        raise GitOpsError(f"the cluster does not serve {RECORD_KIND}s; run `kubectl gitops install` first")
    out = []
    for obj in cluster.list_objects(info, namespace=namespace):
        record = dict(obj.get("record") or {})
        position = sequence_of_name(str((obj.get("metadata") or {}).get("name", "")))
        if position is not None:
            record[POSITION] = position
        out.append(record)
    return out


def read_public_key(cluster: Any, namespace: str) -> Ed25519PublicKey:
    info = cluster.resource_for("v1", "ConfigMap")
    found = cluster.get(info, namespace, PUBLIC_KEY_CONFIGMAP) if info else None
    if not found:
        raise GitOpsError(
            f"no audit public key in {namespace}/{PUBLIC_KEY_CONFIGMAP}; the webhook publishes it when it first "
            "records; or pass --public-key FILE"
        )
    return load_public_key(found["data"]["ed25519.pub"])
