"""The audit log's pure core: bounded records, their hash chain, tallies of folded repeats, checkpoints, retention.

No I/O here: engine.adapters.audit stores what this module builds, engine.adapters.auditwitness keeps checkpoints
outside the cluster.

A record has an immutable core (the facts of the attempt, its sequence number, the previous record's hash, its own
hash and an Ed25519 signature of that hash) and, once repeats of the same attempt are folded into it, a tally (count,
last time, last request uid, late answers) signed on its own together with the record's sequence and hash. The chain
links cores only, so a tally can grow while later records already follow. A retention record, sealed into the chain
like any other, says which records before it were retired and what the last one's hash was, so that `verify` still
accepts a log whose beginning is gone. A checkpoint (sequence, hash, count, time, key id, signed) is the log's state
as a witness outside the cluster keeps it: `verify` against checkpoints catches truncation and re-signing.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from . import clock
from .admission import AdmissionRequest, Decision, GitObject
from .errors import GitOpsError
from .objects import API_GROUP, KubeObject, ObjectKey

GENESIS = "0" * 64
POSITION = "storedAt"  # where a record was found (its object's name), next to what it says of itself
RECORD_KIND = "AuditRecord"
RECORD_API_VERSION = f"{API_GROUP}/v1alpha1"
RECORD_PREFIX = "audit-"
RETENTION = "retention"  # the `type` of a retention record (an attempt's record has no type)

# Bounds of one record: a value longer than VALUE_BYTES (as JSON) is cut and keeps a digest of the whole; a text
# (a path, a reason, a user name) longer than TEXT_BYTES likewise; at most MAX_FIELDS field changes are listed (with
# a count and a digest of the rest); and the whole record stays below RECORD_BYTES.
VALUE_BYTES = 256
TEXT_BYTES = 512
MAX_FIELDS = 16
MAX_GROUPS = 32
RECORD_BYTES = 16 * 1024
_UNSEALED = ("hash", "signature", "tally", "tallySignature")


def canonical(body: Any) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def record_hash(body: Mapping[str, Any]) -> str:
    """sha256 over the record's core: everything but its own hash and signature and its tally."""
    return sha256(canonical({k: v for k, v in body.items() if k not in _UNSEALED}))


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return sha256(raw)[:16]


def rfc3339(when: datetime.datetime) -> str:
    return clock.rfc3339(when, milliseconds=True)


def parse_time(text: str) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


# --- bounding ----------------------------------------------------------------------------------------------------
def bounded_value(value: Any, limit: int = VALUE_BYTES) -> Any:
    """The value itself when its JSON is at most `limit` bytes; otherwise the beginning of that JSON, its size and
    the sha256 of the whole (values are already masked: a Secret's value never gets here, only its marker)."""
    whole = canonical(value)
    if len(whole) <= limit:
        return value
    return {"$cut": whole[:limit].decode(errors="ignore"), "bytes": len(whole), "sha256": sha256(whole)}


def bounded_text(text: str, limit: int = TEXT_BYTES) -> str:
    whole = text.encode()
    if len(whole) <= limit:
        return text
    return f"{whole[:limit].decode(errors='ignore')}…[cut: {len(whole)} bytes, sha256 {sha256(whole)}]"


OMITTED_PATHS = 64  # paths of field changes beyond MAX_FIELDS, listed by name alone


class ObjectRef(TypedDict):
    group: str
    kind: str
    namespace: str
    name: str


class FieldChange(TypedDict):
    path: str
    kind: str  # changed | added | removed (engine.core.drift.DriftKind)
    git: Any  # bounded_value of what Git declares (None: Git lacks it)
    requested: Any  # bounded_value of what the request asked for


class AuditRecord(TypedDict):
    """The facts of one drift attempt as build_record writes them, before the chain's fields are added (seal). Read
    back from the cluster, a record is untrusted data (a Mapping of anything) until verify has checked it."""

    time: str
    requestUID: str
    user: str
    groups: list[str]
    operation: str
    subResource: str
    object: ObjectRef
    application: str
    revision: str
    mode: str
    decision: str
    reason: str
    fields: list[FieldChange]
    fieldsOmitted: NotRequired[int]
    omittedPaths: NotRequired[list[str]]
    fieldsSHA256: NotRequired[str]
    unjudged: NotRequired[str]
    groupsOmitted: NotRequired[int]


def _with_bounded_fields(body: AuditRecord, fields: list[FieldChange]) -> AuditRecord:
    """At most MAX_FIELDS field changes, each with bounded values, changes of what Git declares first; beyond that
    the paths of the next OMITTED_PATHS, a count and a digest of them all. (Sixteen decoy fields must not push the
    one change that matters out of the record: found red-teaming.)"""
    fields = sorted(fields, key=lambda f: (f["kind"] != "changed", f["path"]))
    body["fields"] = fields[:MAX_FIELDS]
    if len(fields) > MAX_FIELDS:
        body["fieldsOmitted"] = len(fields) - MAX_FIELDS
        body["omittedPaths"] = [bounded_text(f["path"], 128) for f in fields[MAX_FIELDS:][:OMITTED_PATHS]]
        body["fieldsSHA256"] = sha256(canonical(fields))
    return body


def bound_record(record: AuditRecord) -> AuditRecord:
    """Below RECORD_BYTES: drops omitted paths from the last, then listed fields from the last (counting them as
    omitted; the digest still covers them all)."""
    body = record.copy()
    omitted = list(body.get("omittedPaths") or [])
    while len(canonical(body)) > RECORD_BYTES and omitted:
        omitted.pop()
        body["omittedPaths"] = omitted
    fields = list(body.get("fields") or [])
    while len(canonical(body)) > RECORD_BYTES and fields:
        fields.pop()
        body["fields"] = fields
        body["fieldsOmitted"] = int(body.get("fieldsOmitted", 0)) + 1
    return body


def build_record(
    request: AdmissionRequest, decision: Decision, git: GitObject | None, key: ObjectKey, *, time: str
) -> AuditRecord:
    """The facts of one drift attempt (values already masked by the decision), bounded in size; no chain fields."""
    user = request.get("userInfo") or {}
    groups = sorted(bounded_text(str(g), 256) for g in user.get("groups") or [])
    changes = [
        FieldChange(
            path=bounded_text(i.path),
            kind=i.kind.value,
            git=bounded_value(i.desired),
            requested=bounded_value(i.live),
        )
        for i in decision.items
    ]
    obj = key.as_dict()
    body: AuditRecord = {
        "time": time,
        "requestUID": bounded_text(str(request.get("uid", "")), 128),
        "user": bounded_text(str(user.get("username", "")), 256),
        "groups": groups[:MAX_GROUPS],
        "operation": str(request.get("operation", ""))[:32],
        "subResource": bounded_text(str(request.get("subResource") or ""), 64),
        "object": ObjectRef(
            group=bounded_text(obj["group"], 256),
            kind=bounded_text(obj["kind"], 256),
            namespace=bounded_text(obj["namespace"], 256),
            name=bounded_text(obj["name"], 256),
        ),
        "application": bounded_text(str(git.app) if git else "", 256),
        "revision": bounded_text(git.revision if git else "", 128),
        "mode": git.mode if git else "",
        "decision": decision.verdict.value,
        "reason": bounded_text(decision.reason) if decision.verdict.value == "break-glass" else "",
        "fields": [],
    }
    _with_bounded_fields(body, changes)
    if decision.unjudged:
        # The webhook could not judge the request against Git (it failed closed): why, in the record.
        body["unjudged"] = bounded_text(decision.unjudged)
    if len(groups) > MAX_GROUPS:
        body["groupsOmitted"] = len(groups) - MAX_GROUPS
    return bound_record(body)


def fold_key(body: Mapping[str, Any]) -> str:
    """What makes two attempts the same attempt: everything but when it came and its request uid."""
    return sha256(canonical({k: v for k, v in body.items() if k not in ("time", "requestUID")}))


def retention_body(through: int, through_hash: str, records: int, attempts: int, time: str) -> dict[str, Any]:
    """The record that retires records up to `through` (whose hash it keeps, so the chain goes on from there)."""
    return {
        "type": RETENTION,
        "time": time,
        "retired": {"through": through, "hash": through_hash, "records": records, "attempts": attempts},
    }


# --- sealing -----------------------------------------------------------------------------------------------------
def _sign(signer: Ed25519PrivateKey, data: bytes) -> str:
    return base64.b64encode(signer.sign(data)).decode()


def _valid(public: Ed25519PublicKey, signature: Any, data: bytes) -> bool:
    try:
        public.verify(base64.b64decode(str(signature or "")), data)
    except (InvalidSignature, ValueError):
        return False
    return True


def seal(body: Mapping[str, Any], sequence: int, previous: str, signer: Ed25519PrivateKey) -> dict[str, Any]:
    """Adds the sequence number, the previous record's hash, this record's hash and its signature."""
    sealed = {**body, "sequence": sequence, "previous": previous, "keyID": key_id(signer.public_key())}
    digest = record_hash(sealed)
    sealed["hash"] = digest
    sealed["signature"] = _sign(signer, digest.encode())
    return sealed


def _tally_bytes(record: Mapping[str, Any], tally: Mapping[str, Any]) -> bytes:
    return canonical({"sequence": record.get("sequence"), "hash": record.get("hash"), "tally": tally})


def count_of(record: Mapping[str, Any]) -> int:
    tally = record.get("tally")
    return int(tally.get("count", 1)) if isinstance(tally, Mapping) else 1


def with_tally(record: Mapping[str, Any], tally: Mapping[str, Any], signer: Ed25519PrivateKey) -> dict[str, Any]:
    """The record with a new tally, signed together with the record's sequence and hash (its core is unchanged)."""
    out = {k: v for k, v in record.items() if k not in ("tally", "tallySignature")}
    out["tally"] = dict(tally)
    out["tallySignature"] = _sign(signer, _tally_bytes(record, tally))
    return out


def fold(
    record: Mapping[str, Any], *, time: str, request_uid: str, late: bool, signer: Ed25519PrivateKey
) -> dict[str, Any]:
    """The record with one more attempt folded in (an identical attempt: same fold_key)."""
    tally = dict(record.get("tally") or {"count": 1})
    tally.update(count=count_of(record) + 1, lastTime=time, lastRequestUID=request_uid)
    if late:
        tally.update(late=True, lateCount=int(tally.get("lateCount", 0)) + 1)
    return with_tally(record, tally, signer)


def marked_late(record: Mapping[str, Any], signer: Ed25519PrivateKey) -> dict[str, Any]:
    """The record saying that its last attempt was durable only after the API server's deadline."""
    tally = dict(record.get("tally") or {"count": 1})
    tally.update(late=True, lateCount=int(tally.get("lateCount", 0)) + 1)
    return with_tally(record, tally, signer)


# --- checkpoints ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Checkpoint:
    """The log's state at one record, as a witness outside the cluster keeps it."""

    sequence: int
    hash: str
    count: int
    time: str
    key_id: str
    signature: str = ""

    def payload(self) -> bytes:
        return canonical(
            {"sequence": self.sequence, "hash": self.hash, "count": self.count, "time": self.time, "keyID": self.key_id}
        )

    def as_dict(self) -> dict[str, Any]:
        return {**json.loads(self.payload()), "signature": self.signature}

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Checkpoint:
        try:
            return cls(
                int(data["sequence"]),
                str(data["hash"]),
                int(data.get("count", 1)),
                str(data.get("time", "")),
                str(data["keyID"]),
                str(data.get("signature", "")),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise GitOpsError(f"not an audit checkpoint ({e!r} missing or malformed): {dict(data)}") from e


def checkpoint(record: Mapping[str, Any], signer: Ed25519PrivateKey, time: str) -> Checkpoint:
    unsigned = Checkpoint(
        int(record["sequence"]), str(record["hash"]), count_of(record), time, key_id(signer.public_key())
    )
    return Checkpoint(**{**unsigned.__dict__, "signature": _sign(signer, unsigned.payload())})


def parse_checkpoints(lines: Iterable[str]) -> list[Checkpoint]:
    """Checkpoints in JSON lines: `{"auditCheckpoint": {...}}` as the webhook writes them on stdout (other lines, such
    as `{"auditRecord": ...}` or log lines, are skipped), or bare checkpoint objects as a witness file holds them."""
    found = []
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if not isinstance(data, dict):
            continue
        if "auditCheckpoint" in data:
            found.append(Checkpoint.of(data["auditCheckpoint"]))
        elif "keyID" in data and "sequence" in data and "hash" in data:
            found.append(Checkpoint.of(data))
    return found


# --- finding the head ----------------------------------------------------------------------------------------------
def find_last(exists: Callable[[int], bool], start: int) -> int:
    """The highest n >= start with exists(n), given that start exists (or is 0) and records run without gaps from
    there: exponential steps forward, then a binary search; O(log(head - start)) calls of `exists`."""
    low, step = start, 1
    while exists(low + step):
        low += step
        step *= 2
    high = low + step  # known not to exist
    while high - low > 1:
        middle = (low + high) // 2
        if exists(middle):
            low = middle
        else:
            high = middle
    return low


# --- retention -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RetentionPolicy:
    """Keep at most `records` records, none older than `max_age` (by their last attempt), at most `max_bytes` of
    them (as JSON); 0 means no bound. The newest record is always kept."""

    records: int = 0
    max_age: datetime.timedelta | None = None
    max_bytes: int = 0


def retire_through(records: Sequence[Mapping[str, Any]], policy: RetentionPolicy, when: datetime.datetime) -> int:
    """The sequence number up to which (inclusive) the policy retires records; 0 for none. `records` are the stored
    ones, oldest first; the retired ones are always a prefix, and never the newest."""
    if len(records) < 2:
        return 0
    retire = 0
    if policy.records and len(records) > policy.records:
        retire = len(records) - policy.records
    if policy.max_age is not None:
        oldest_kept = when - policy.max_age
        for i, r in enumerate(records):
            last = parse_time(str((r.get("tally") or {}).get("lastTime") or r.get("time", "")))
            if last is None or last >= oldest_kept:
                break
            retire = max(retire, i + 1)
    if policy.max_bytes:
        total = sum(len(canonical(r)) for r in records)
        i = 0
        while total > policy.max_bytes and i < len(records):
            total -= len(canonical(records[i]))
            i += 1
        retire = max(retire, i)
    retire = min(retire, len(records) - 1)
    return int(records[retire - 1]["sequence"]) if retire else 0


# --- verify --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    sequence: int
    what: str

    def __str__(self) -> str:
        return f"record {self.sequence}: {self.what}"


def _missing(previous_seq: int, seq: int) -> str:
    if seq == previous_seq + 2:
        return f"record {previous_seq + 1} is missing (deleted?)"
    return f"records {previous_seq + 1} to {seq - 1} are missing (deleted?)"


def _sealed_by(record: Mapping[str, Any], public: Ed25519PublicKey) -> bool:
    digest = record_hash(record)
    return digest == record.get("hash") and _valid(public, record.get("signature"), digest.encode())


def _record_problems(seq: int, record: Mapping[str, Any], public: Ed25519PublicKey, expected_key: str) -> list[Problem]:
    problems = []
    if record.get("keyID") != expected_key:
        problems.append(Problem(seq, f"signed by key {record.get('keyID')}, not {expected_key}"))
    digest = record_hash(record)
    if digest != record.get("hash"):
        problems.append(Problem(seq, "its content does not match its hash (edited?)"))
    elif not _valid(public, record.get("signature"), digest.encode()):
        problems.append(Problem(seq, "its signature is not valid (edited or re-signed?)"))
    tally = record.get("tally")
    if tally is not None and (
        not isinstance(tally, Mapping)
        or not _valid(public, record.get("tallySignature"), _tally_bytes(record, tally))
        or int(tally.get("count", 0)) < 1
    ):
        problems.append(Problem(seq, "its tally of repeated attempts is not validly signed (edited?)"))
    return problems


def verify(
    records: Sequence[Mapping[str, Any]],
    public: Ed25519PublicKey,
    last_known: int = 0,
    witness: Sequence[Checkpoint] = (),
) -> list[Problem]:
    """Every break in the log: an edited record (hash, signature or tally), a missing one (a gap), a reordered one (a
    previous-hash that does not match), a record signed by another key. Records before the newest valid retention
    record's `through` may be gone (retired); the chain goes on from the hash it kept. Given the sequence number the
    writers last reached (`last_known`), or checkpoints a witness outside the cluster kept (`witness`): records
    missing at the end (truncation), witnessed records whose hash or key differ (re-signing), fewer attempts than
    witnessed, and retired records whose retention the witness never saw."""
    problems: list[Problem] = []
    expected_key = key_id(public)

    def position(record: Mapping[str, Any]) -> int:
        return int(record.get(POSITION, record.get("sequence", 0)))

    ordered = []
    for stored in sorted(records, key=position):
        record = {k: v for k, v in stored.items() if k != POSITION}
        seq = int(record.get("sequence", 0))
        if POSITION in stored and int(stored[POSITION]) != seq:
            problems.append(Problem(position(stored), f"it holds record {seq} (reordered?)"))
            seq = position(stored)
        ordered.append((seq, record))

    retentions = {
        seq: r
        for seq, r in ordered
        if r.get("type") == RETENTION and _sealed_by(r, public) and r.get("sequence") == seq
    }
    base_seq, base_hash = 0, GENESIS
    for r in retentions.values():
        retired = r.get("retired") or {}
        if int(retired.get("through", 0)) > base_seq:
            base_seq, base_hash = int(retired["through"]), str(retired.get("hash", ""))

    previous_seq, previous_hash = 0, GENESIS
    for seq, record in ordered:
        problems.extend(_record_problems(seq, record, public, expected_key))
        if seq <= base_seq:  # left over from a retention still under way: its own chain, gaps allowed
            if seq == base_seq and record.get("hash") != base_hash:
                problems.append(Problem(seq, "its hash is not the one the retention record kept (replaced?)"))
            if seq == previous_seq + 1 and record.get("previous") != previous_hash and previous_seq:
                problems.append(Problem(seq, "it does not follow the record before it (reordered or replaced?)"))
            previous_seq, previous_hash = seq, str(record.get("hash", ""))
            continue
        if previous_seq <= base_seq:  # the chain goes on from what the retention record kept
            previous_seq, previous_hash = base_seq, base_hash
        if seq != previous_seq + 1:
            problems.append(Problem(seq, _missing(previous_seq, seq)))
        elif record.get("previous") != previous_hash:
            problems.append(Problem(seq, "it does not follow the record before it (reordered or replaced?)"))
        previous_seq, previous_hash = seq, str(record.get("hash", ""))
    end = max(previous_seq, base_seq)
    if last_known > end:
        problems.append(Problem(last_known, f"the log ends at {end} but reached {last_known} (deleted?)"))
    if witness:
        problems.extend(_against_witness(dict(ordered), retentions, base_seq, end, public, expected_key, witness))
    return problems


def _against_witness(
    by_seq: Mapping[int, Mapping[str, Any]],
    retentions: Mapping[int, Mapping[str, Any]],
    base_seq: int,
    end: int,
    public: Ed25519PublicKey,
    expected_key: str,
    witness: Sequence[Checkpoint],
) -> list[Problem]:
    problems: list[Problem] = []
    witnessed = {(c.sequence, c.hash) for c in witness}
    foreign = sorted({c.key_id for c in witness if c.key_id != expected_key})
    for kid in foreign:
        first = min(c.sequence for c in witness if c.key_id == kid)
        problems.append(
            Problem(
                first,
                f"the witness saw the log signed by key {kid}, it is now signed by {expected_key} "
                "(re-signed with another key?)",
            )
        )
    highest = max(witness, key=lambda c: c.sequence)
    if highest.sequence > end:
        problems.append(
            Problem(
                highest.sequence, f"the log ends at {end} but the witness saw record {highest.sequence} (truncated?)"
            )
        )
    for c in sorted(witness, key=lambda c: c.sequence):
        if c.key_id != expected_key:
            continue
        if not _valid(public, c.signature, c.payload()):
            problems.append(Problem(c.sequence, "the witness's checkpoint of it is not validly signed (forged?)"))
            continue
        if c.sequence > end:
            continue
        if c.sequence <= base_seq and c.sequence not in by_seq:
            covering = [
                s for s, r in retentions.items() if int((r.get("retired") or {}).get("through", 0)) >= c.sequence
            ]
            if not any((s, str(retentions[s].get("hash"))) in witnessed for s in covering):
                problems.append(
                    Problem(
                        c.sequence,
                        f"the witness saw it; it was retired by a retention record (at "
                        f"{', '.join(map(str, sorted(covering)))}) the witness never saw (an old witness, or a "
                        "retention forged with the signing key?)",
                    )
                )
            continue
        record = by_seq.get(c.sequence)
        if record is None:
            problems.append(Problem(c.sequence, "the witness saw it, the log no longer has it (deleted?)"))
        elif record.get("hash") != c.hash:
            problems.append(
                Problem(c.sequence, "its hash differs from the one the witness saw (rewritten and re-signed?)")
            )
        elif count_of(record) < c.count:
            problems.append(
                Problem(c.sequence, f"it counts {count_of(record)} attempts, the witness saw {c.count} (rolled back?)")
            )
    return problems


# --- storage shape ---------------------------------------------------------------------------------------------------
def record_name(sequence: int) -> str:
    return f"{RECORD_PREFIX}{sequence:012d}"


def sequence_of_name(name: str) -> int | None:
    rest = name[len(RECORD_PREFIX) :] if name.startswith(RECORD_PREFIX) else ""
    return int(rest) if rest.isdigit() else None


def record_object(record: Mapping[str, Any], namespace: str) -> KubeObject:
    return {
        "apiVersion": RECORD_API_VERSION,
        "kind": RECORD_KIND,
        "metadata": {
            "name": record_name(int(record["sequence"])),
            "namespace": namespace,
            "labels": {
                f"{API_GROUP}/decision": str(record.get("decision") or record.get("type") or ""),
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


def filter_records(
    records: Iterable[Mapping[str, Any]], *, app: str = "", user: str = "", since: str = ""
) -> Iterable[Mapping[str, Any]]:
    for r in sorted(records, key=lambda r: int(r.get("sequence", 0))):
        if app and str(r.get("application", "")).split("/")[-1] != app and r.get("application") != app:
            continue
        if user and r.get("user") != user:
            continue
        if since and str((r.get("tally") or {}).get("lastTime") or r.get("time", "")) < since:
            continue
        yield {k: v for k, v in r.items() if k != POSITION}
