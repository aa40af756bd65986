"""What a sync leaves behind (a SyncRecord), which records retention drops, and which sync was live at a time.

A record holds the facts of one sync: the Application, the commit, what started it and who, when it started and
finished, its result, each object it created, configured, pruned or left alone with a digest of the object's desired
state, and a digest of the whole render. Its summary sits in annotations, so that a timeline of every Application
lists metadata only; its objects are gzip-compressed JSON, so that a record of a 500-object sync stays small in etcd.

No Secret value is stored: an object's digest covers a Secret with its values replaced by one constant (the keys
still count), so a digest cannot be checked against guessed values, and a chart that generates a random password on
every render does not make each re-render look different.
"""

from __future__ import annotations

import base64
import datetime
import gzip
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .clock import rfc3339
from .errors import GitOpsError
from .normalize import is_secret, normalize
from .objects import API_GROUP, KubeObject, ObjectKey

RECORD_API_VERSION = f"{API_GROUP}/v1alpha1"
RECORD_KIND = "SyncRecord"
RECORD_PLURAL = "syncrecords"
APP_LABEL = f"{API_GROUP}/application"
SUMMARY = f"{API_GROUP}/sync"  # the annotation with the record's summary (JSON)
MAX_ERRORS = 20
ERROR_CHARS = 1024
_SECRET_VALUE = "(secret value)"


class Trigger(StrEnum):
    MANUAL = "manual"
    ROLLBACK = "rollback"
    AUTOMATED = "automated"
    SELF_HEAL = "self-heal"
    # Not syncs: automation paused and resumed (kubectl gitops suspend/resume), kept in the same history so that
    # `history` tells when automation stopped and why. They apply nothing and never change what is live.
    SUSPEND = "suspend"
    RESUME = "resume"


NOT_SYNCS = (Trigger.SUSPEND, Trigger.RESUME)


class Result(StrEnum):
    SUCCEEDED = "Succeeded"
    PARTIAL = "Partial"  # some objects failed, others were changed
    FAILED = "Failed"  # some objects failed and none was changed


class ObjectAction(StrEnum):
    CREATED = "created"
    CONFIGURED = "configured"
    UNCHANGED = "unchanged"
    PRUNED = "pruned"
    FAILED = "failed"


CHANGES = (ObjectAction.CREATED, ObjectAction.CONFIGURED, ObjectAction.PRUNED)


class InvalidRecord(GitOpsError):
    """A SyncRecord that cannot be read (edited by hand, or written by a newer version)."""


# --- digests -------------------------------------------------------------------------------------------------------
def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def desired_form(obj: KubeObject) -> KubeObject:
    """What an object's digest covers: the object as Git renders it, without server bookkeeping, and a Secret with
    each value replaced by one constant."""
    out = normalize(obj)
    if is_secret(out):
        for section in ("data", "stringData"):
            values = out.get(section)
            if isinstance(values, dict):
                out[section] = dict.fromkeys(values, _SECRET_VALUE)
    return out


def object_digest(obj: KubeObject) -> str:
    return hashlib.sha256(canonical(desired_form(obj))).hexdigest()


def render_digest(digests: Mapping[ObjectKey, str]) -> str:
    """The digest of a whole render: of its objects' keys and digests, in key order."""
    lines = "".join(f"{key}\t{digest}\n" for key, digest in sorted(digests.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


# --- the record ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RecordedObject:
    key: ObjectKey
    action: ObjectAction
    digest: str = ""  # of the desired state; "" for a pruned object (Git no longer has it)
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {**self.key.as_dict(), "action": self.action.value}
        if self.digest:
            out["digest"] = self.digest
        if self.message:
            out["message"] = self.message
        return out


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    subject: str = ""
    author: str = ""
    time: str = ""  # the commit's time, ISO 8601


@dataclass(frozen=True)
class SyncRecord:
    """One sync of one Application."""

    application: str
    namespace: str
    id: int
    commit: CommitInfo
    trigger: Trigger
    user: str
    started: datetime.datetime
    finished: datetime.datetime
    result: Result
    render_digest: str
    objects: tuple[RecordedObject, ...] = ()
    errors: tuple[str, ...] = ()
    reason: str = ""  # a rollback's reason
    counts: Mapping[str, int] = field(default_factory=dict)
    name: str = ""

    @property
    def applied(self) -> bool:
        """Whether this record is of a sync that changed the cluster's target (not a failure, not a suspension)."""
        return self.result is not Result.FAILED and self.trigger not in NOT_SYNCS

    def commit_dict(self) -> dict[str, str]:
        return {"revision": self.commit.sha, "subject": self.commit.subject, "author": self.commit.author}

    @property
    def changed(self) -> int:
        return sum(int(self.counts.get(a.value, 0)) for a in CHANGES)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "application": self.application,
            "revision": self.commit.sha,
            "subject": self.commit.subject,
            "author": self.commit.author,
            "commitTime": self.commit.time,
            "trigger": self.trigger.value,
            "user": self.user,
            "startedAt": rfc3339(self.started, milliseconds=True),
            "finishedAt": rfc3339(self.finished, milliseconds=True),
            "result": self.result.value,
            "renderDigest": self.render_digest,
            "counts": dict(self.counts),
        }
        if self.errors:
            out["errors"] = list(self.errors)
        if self.reason:
            out["reason"] = self.reason
        return out

    def as_dict(self) -> dict[str, Any]:
        return {**self.summary(), "objects": [o.as_dict() for o in self.objects]}


def result_of(objects: Sequence[RecordedObject]) -> Result:
    failed = any(o.action is ObjectAction.FAILED for o in objects)
    if not failed:
        return Result.SUCCEEDED
    return Result.PARTIAL if any(o.action in CHANGES for o in objects) else Result.FAILED


def counts_of(objects: Iterable[RecordedObject]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for o in objects:
        counts[o.action.value] = counts.get(o.action.value, 0) + 1
    return counts


def record_name(application: str, record_id: int) -> str:
    return f"{application}-{record_id}"


def record_object(record: SyncRecord) -> KubeObject:
    """The SyncRecord object to create: the summary in an annotation, the objects compressed."""
    objects = gzip.compress(canonical([o.as_dict() for o in record.objects]), mtime=0)
    return {
        "apiVersion": RECORD_API_VERSION,
        "kind": RECORD_KIND,
        "metadata": {
            "name": record_name(record.application, record.id),
            "namespace": record.namespace,
            "labels": {APP_LABEL: record.application},
            "annotations": {SUMMARY: json.dumps(record.summary(), sort_keys=True)},
        },
        "objects": base64.b64encode(objects).decode(),
    }


def _time(text: Any, what: str) -> datetime.datetime:
    try:
        at = datetime.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError as e:
        raise InvalidRecord(f"{what} {text!r} is not an RFC 3339 time") from e
    if at.tzinfo is None:
        raise InvalidRecord(f"{what} {text!r} has no time zone")
    return at


def parse_record(obj: Mapping[str, Any], *, with_objects: bool = True) -> SyncRecord:
    """A SyncRecord object as read from the cluster (or only its metadata, `with_objects` False)."""
    metadata = obj.get("metadata") or {}
    name = str(metadata.get("name", ""))
    try:
        summary = json.loads((metadata.get("annotations") or {})[SUMMARY])
        objects: tuple[RecordedObject, ...] = ()
        if with_objects:
            raw = json.loads(gzip.decompress(base64.b64decode(str(obj.get("objects", "")), validate=True)))
            objects = tuple(
                RecordedObject(
                    ObjectKey(str(o["group"]), str(o["kind"]), str(o["namespace"]), str(o["name"])),
                    ObjectAction(o["action"]),
                    str(o.get("digest", "")),
                    str(o.get("message", "")),
                )
                for o in raw
            )
        return SyncRecord(
            application=str(summary["application"]),
            namespace=str(metadata.get("namespace", "")),
            id=int(summary["id"]),
            commit=CommitInfo(
                str(summary["revision"]),
                str(summary.get("subject", "")),
                str(summary.get("author", "")),
                str(summary.get("commitTime", "")),
            ),
            trigger=Trigger(summary["trigger"]),
            user=str(summary.get("user", "")),
            started=_time(summary["startedAt"], "startedAt"),
            finished=_time(summary["finishedAt"], "finishedAt"),
            result=Result(summary["result"]),
            render_digest=str(summary.get("renderDigest", "")),
            objects=objects,
            errors=tuple(str(e) for e in summary.get("errors") or []),
            reason=str(summary.get("reason", "")),
            counts={str(k): int(v) for k, v in (summary.get("counts") or {}).items()},
            name=name,
        )
    except (KeyError, TypeError, ValueError, OSError, EOFError) as e:
        raise InvalidRecord(f"SyncRecord {name!r} cannot be read: {type(e).__name__}: {e}") from e


def bounded_errors(messages: Iterable[str]) -> tuple[str, ...]:
    out = [m if len(m) <= ERROR_CHARS else m[: ERROR_CHARS - 3] + "..." for m in messages]
    return tuple(out[:MAX_ERRORS])


# --- retention -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Retention:
    """How many records of an Application to keep, and for how long; 0 / None: no bound of that kind. The newest
    record (the sync that is live) is always kept."""

    records: int = 100
    max_age: datetime.timedelta | None = None


def expired(records: Sequence[SyncRecord], policy: Retention, now: datetime.datetime) -> list[SyncRecord]:
    """The records of one Application that retention drops: beyond the newest `policy.records`, or older than
    `policy.max_age`; never the newest."""
    newest_first = sorted(records, key=lambda r: r.id, reverse=True)
    drop = []
    for index, record in enumerate(newest_first):
        if index == 0:
            continue
        too_many = policy.records > 0 and index >= policy.records
        too_old = policy.max_age is not None and now - record.finished > policy.max_age
        if too_many or too_old:
            drop.append(record)
    return drop


# --- time questions ------------------------------------------------------------------------------------------------
def live_at(records: Iterable[SyncRecord], at: datetime.datetime) -> SyncRecord | None:
    """The sync that was live at `at`: the newest that had finished by then and changed the cluster's target (a sync
    whose every object failed changed nothing, so the one before stays live; a suspension is no sync)."""
    done = [r for r in records if r.finished <= at and r.applied]
    return max(done, key=lambda r: (r.finished, r.id), default=None)


def between(records: Iterable[SyncRecord], since: datetime.datetime, until: datetime.datetime) -> list[SyncRecord]:
    """The syncs that finished in (since, until], oldest first."""
    return sorted((r for r in records if since < r.finished <= until), key=lambda r: (r.finished, r.id))
