"""The audit log of drift attempts: records, their hash chain and signatures, and where they are kept.

Records are AuditRecord objects in the API server (one per attempt, named by sequence number), so that every
webhook replica appends to one log, a record exists in etcd before the webhook answers, and anyone with RBAC to read
them can. Each record holds the hash of the one before it and an Ed25519 signature of its own hash: an edited,
deleted or reordered record breaks the chain, and `verify` says where.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import json
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .admission import AdmissionRequest, Decision, GitObject
from .errors import ApiError, GitOpsError
from .objects import API_GROUP, KubeObject, ObjectKey

GENESIS = "0" * 64
POSITION = "storedAt"  # where a record was found (its object's name), next to what it says of itself
RECORD_KIND = "AuditRecord"
RECORD_API_VERSION = f"{API_GROUP}/v1alpha1"
SIGNING_SECRET = "gitops-audit-signing-key"
PUBLIC_KEY_CONFIGMAP = "gitops-audit-public-key"
HEAD_CONFIGMAP = "gitops-audit-head"


def canonical(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_hash(body: Mapping[str, Any]) -> str:
    """sha256 over the record without its own hash and signature."""
    return hashlib.sha256(canonical({k: v for k, v in body.items() if k not in ("hash", "signature")})).hexdigest()


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_record(
    request: AdmissionRequest, decision: Decision, git: GitObject | None, key: ObjectKey
) -> dict[str, Any]:
    """The facts of one drift attempt (values already masked by the decision); no chain fields yet."""
    user = request.get("userInfo") or {}
    return {
        "time": now(),
        "requestUID": str(request.get("uid", "")),
        "user": str(user.get("username", "")),
        "groups": sorted(str(g) for g in user.get("groups") or []),
        "operation": str(request.get("operation", "")),
        "subResource": str(request.get("subResource") or ""),
        "object": key.as_dict(),
        "application": git.app if git else "",
        "revision": git.revision if git else "",
        "mode": git.mode if git else "",
        "decision": decision.verdict.value,
        "reason": decision.reason if decision.verdict.value == "break-glass" else "",
        "fields": [
            {"path": i.path, "kind": i.kind.value, "git": i.desired, "requested": i.live} for i in decision.items
        ],
    }


def seal(body: dict[str, Any], sequence: int, previous: str, signer: Ed25519PrivateKey) -> dict[str, Any]:
    """Adds the sequence number, the previous record's hash, this record's hash and its signature."""
    sealed = {**body, "sequence": sequence, "previous": previous, "keyID": key_id(signer.public_key())}
    digest = record_hash(sealed)
    sealed["hash"] = digest
    sealed["signature"] = base64.b64encode(signer.sign(digest.encode())).decode()
    return sealed


@dataclass(frozen=True)
class Problem:
    sequence: int
    what: str

    def __str__(self) -> str:
        return f"record {self.sequence}: {self.what}"


def verify(records: Sequence[Mapping[str, Any]], public: Ed25519PublicKey, last_known: int = 0) -> list[Problem]:
    """Every break in the log: an edited record (hash or signature), a missing one (a gap), a reordered one (a
    previous-hash that does not match), a record signed by another key; and, given the sequence number the writers
    last reported (`last_known`), records missing at the end."""
    problems: list[Problem] = []
    expected_key = key_id(public)
    previous_hash = GENESIS
    previous_seq = 0

    def position(record: Mapping[str, Any]) -> int:
        return int(record.get(POSITION, record.get("sequence", 0)))

    for stored in sorted(records, key=position):
        record = {k: v for k, v in stored.items() if k != POSITION}
        seq = int(record.get("sequence", 0))
        if POSITION in stored and int(stored[POSITION]) != seq:
            problems.append(Problem(position(stored), f"it holds record {seq} (reordered?)"))
            seq = position(stored)
        if seq != previous_seq + 1:
            missing = f"{previous_seq + 1}" if seq == previous_seq + 2 else f"{previous_seq + 1} to {seq - 1}"
            problems.append(
                Problem(
                    seq,
                    f"records {missing} are missing (deleted?)"
                    if seq > previous_seq + 2
                    else f"record {missing} is missing (deleted?)",
                )
            )
        if record.get("keyID") != expected_key:
            problems.append(Problem(seq, f"signed by key {record.get('keyID')}, not {expected_key}"))
        digest = record_hash(record)
        if digest != record.get("hash"):
            problems.append(Problem(seq, "its content does not match its hash (edited?)"))
        else:
            try:
                public.verify(base64.b64decode(str(record.get("signature", ""))), digest.encode())
            except (InvalidSignature, ValueError):
                problems.append(Problem(seq, "its signature is not valid (edited or re-signed?)"))
        if record.get("previous") != previous_hash and seq == previous_seq + 1:
            problems.append(Problem(seq, "it does not follow the record before it (reordered or replaced?)"))
        previous_hash = str(record.get("hash", ""))
        previous_seq = seq
    if last_known > previous_seq:
        problems.append(Problem(last_known, f"the log ends at {previous_seq} but reached {last_known} (deleted?)"))
    return problems


def record_name(sequence: int) -> str:
    return f"audit-{sequence:012d}"


def record_object(record: Mapping[str, Any], namespace: str) -> KubeObject:
    return {
        "apiVersion": RECORD_API_VERSION,
        "kind": RECORD_KIND,
        "metadata": {
            "name": record_name(int(record["sequence"])),
            "namespace": namespace,
            "labels": {
                f"{API_GROUP}/decision": str(record.get("decision")),
                f"{API_GROUP}/application": str(record.get("application", "")).replace("/", ".")[:63],
            },
        },
        "record": dict(record),
    }


# --- keys --------------------------------------------------------------------------------------------------------
def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_key_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def load_public_key(pem: str | bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
    except ValueError as e:
        raise GitOpsError(f"the audit public key is not a PEM public key: {e}") from e
    if not isinstance(key, Ed25519PublicKey):
        raise GitOpsError("the audit public key is not an Ed25519 key")
    return key


class AuditStore:
    """Appends sealed records to the API server; safe across threads and across replicas."""

    def __init__(self, cluster: Any, namespace: str) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self._lock = threading.Lock()
        self._head: tuple[int, str] | None = None
        self._signer: Ed25519PrivateKey | None = None

    def _info(self, api_version: str, kind: str) -> Any:
        info = self.cluster.resource_for(api_version, kind)
        if info is None:  # installed after this process started?
            self.cluster.refresh_discovery()
            info = self.cluster.resource_for(api_version, kind)
        if info is None:
            raise GitOpsError(f"the cluster does not serve {kind}; run `kubectl gitops install` first")
        return info

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
                self._publish(key.public_key())
                self._signer = key
                return key
        assert found is not None
        pem = base64.b64decode(found["data"]["ed25519.pem"])
        loaded = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(loaded, Ed25519PrivateKey):
            raise GitOpsError(f"Secret {self.namespace}/{SIGNING_SECRET} does not hold an Ed25519 key")
        self._publish(loaded.public_key())
        self._signer = loaded
        return loaded

    def _publish(self, public: Ed25519PublicKey) -> None:
        info = self._info("v1", "ConfigMap")
        config = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": PUBLIC_KEY_CONFIGMAP, "namespace": self.namespace},
            "data": {"ed25519.pub": public_key_pem(public), "keyID": key_id(public)},
        }
        self.cluster.apply(info, config, field_manager="gitops-webhook")

    def _record_at(self, sequence: int) -> KubeObject | None:
        result: KubeObject | None = self.cluster.get(
            self._info(RECORD_API_VERSION, RECORD_KIND), self.namespace, record_name(sequence)
        )
        return result

    def _find_head(self) -> tuple[int, str]:
        """The last record: from the head hint, then forward until a sequence number is free."""
        info = self._info("v1", "ConfigMap")
        hint = self.cluster.get(info, self.namespace, HEAD_CONFIGMAP) or {}
        seq = int((hint.get("data") or {}).get("sequence", "0"))
        digest = GENESIS
        if seq:
            found = self._record_at(seq)
            if found is None:
                seq, digest = 0, GENESIS  # a broken hint: start from the beginning
            else:
                digest = str(found["record"]["hash"])
        while (nxt := self._record_at(seq + 1)) is not None:
            seq, digest = seq + 1, str(nxt["record"]["hash"])
        return seq, digest

    def append(self, body: dict[str, Any]) -> dict[str, Any]:
        """Seals and stores one record; returns it once the API server has it (durable in etcd)."""
        info = self._info(RECORD_API_VERSION, RECORD_KIND)
        with self._lock:
            signer = self.signer()
            for _ in range(50):
                if self._head is None:
                    self._head = self._find_head()
                seq, previous = self._head
                record = seal(body, seq + 1, previous, signer)
                try:
                    self.cluster.create(info, record_object(record, self.namespace))
                except ApiError as e:
                    if e.status == 409:  # another replica took this number
                        self._head = None
                        continue
                    raise
                self._head = (seq + 1, record["hash"])
                self._update_hint(seq + 1)
                return record
        raise GitOpsError("could not append to the audit log: too much contention")

    def _update_hint(self, sequence: int) -> None:
        info = self._info("v1", "ConfigMap")
        hint = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": HEAD_CONFIGMAP, "namespace": self.namespace},
            "data": {"sequence": str(sequence)},
        }
        with contextlib.suppress(ApiError):  # only a hint: readers walk forward from it
            self.cluster.apply(info, hint, field_manager="gitops-webhook")


def read_records(cluster: Any, namespace: str) -> list[dict[str, Any]]:
    info = cluster.resource_for(RECORD_API_VERSION, RECORD_KIND)
    if info is None:
        raise GitOpsError(f"the cluster does not serve {RECORD_KIND}s; run `kubectl gitops install` first")
    out = []
    for obj in cluster.list_objects(info, namespace=namespace):
        record = dict(obj.get("record") or {})
        name = str((obj.get("metadata") or {}).get("name", ""))
        if name.startswith("audit-") and name[len("audit-") :].isdigit():
            record[POSITION] = int(name[len("audit-") :])
        out.append(record)
    return out


def read_last_known(cluster: Any, namespace: str) -> int:
    """The sequence number the writers last reported (0 when unknown)."""
    info = cluster.resource_for("v1", "ConfigMap")
    found = cluster.get(info, namespace, HEAD_CONFIGMAP) if info else None
    try:
        return int(((found or {}).get("data") or {}).get("sequence", "0"))
    except ValueError:
        return 0


def read_public_key(cluster: Any, namespace: str) -> Ed25519PublicKey:
    info = cluster.resource_for("v1", "ConfigMap")
    found = cluster.get(info, namespace, PUBLIC_KEY_CONFIGMAP) if info else None
    if not found:
        raise GitOpsError(
            f"no audit public key in {namespace}/{PUBLIC_KEY_CONFIGMAP}; the webhook publishes it when it first "
            "records; or pass --public-key FILE"
        )
    return load_public_key(found["data"]["ed25519.pub"])


def filter_records(
    records: Iterable[Mapping[str, Any]], *, app: str = "", user: str = "", since: str = ""
) -> Iterator[Mapping[str, Any]]:
    for r in sorted(records, key=lambda r: int(r.get("sequence", 0))):
        if app and str(r.get("application", "")).split("/")[-1] != app and r.get("application") != app:
            continue
        if user and r.get("user") != user:
            continue
        if since and str(r.get("time", "")) < since:
            continue
        yield {k: v for k, v in r.items() if k != POSITION}
