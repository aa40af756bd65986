"""Fingerprints of what a sync left: an object whose fingerprint still matches has provably not changed since.

A sync that leaves an object with no drift keeps (engine.adapters.fingerprintkey: in a Secret per Application) an
HMAC over the Application, the object's identity and uid, Git's object as it was applied, the drift policy it was
judged under, and a token of the live state it left. The next diff, status or sync recomputes the HMAC from Git's
object and the object as one LIST returns it now: found among those kept means neither side moved, so the dry-run it
would send is a repeat of one already answered, and it is skipped. Anything else (not kept, no key to check with)
means the object is compared in full.

Why an HMAC and not a plain digest: whoever can write where fingerprints are kept could otherwise write one
that matches an object they drifted. The key lives in a Secret next to the Applications; without it a fingerprint
cannot be made, so a forged or copied entry never matches, and whoever cannot read the key gets the full compare.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from typing import Any

from .drift import DriftPolicy
from .objects import REVISION_ANNOTATION, AppRef, KubeObject, ObjectKey

# Kinds whose `generation` moves with every change to what is not metadata or status: for these the live token is
# the generation plus a digest of the metadata and the non-status managedFields entries, so that a controller that
# writes the status (a Deployment's ready replicas: a new resourceVersion each time) does not spoil the fingerprint.
# Every other kind is bound to its resourceVersion, which moves with any write at all.
GENERATION_KINDS = frozenset(
    {
        ("apps", "Deployment"),
        ("apps", "StatefulSet"),
        ("apps", "DaemonSet"),
        ("apps", "ReplicaSet"),
        ("batch", "Job"),
        ("batch", "CronJob"),
    }
)
# What a metadata edit can change that matters to drift (labels and annotations declared or not, an owner, a
# finalizer, a deletion under way); managedFields are taken apart below.
_METADATA = (
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)
LENGTH = 32  # hex digits kept: 128 bits of an HMAC-SHA256


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=sorted).encode()


def live_token(key: ObjectKey, live: KubeObject) -> str:
    """What of the live object the fingerprint binds: its resourceVersion, or for GENERATION_KINDS its generation and
    every write to it other than through the status subresource (which managedFields tell, manager and fields)."""
    metadata = live.get("metadata") or {}
    generation = metadata.get("generation")
    if key.group_kind in GENERATION_KINDS and isinstance(generation, int) and generation > 0:
        managed = [
            {k: v for k, v in entry.items() if k != "time"}
            for entry in metadata.get("managedFields") or []
            if isinstance(entry, Mapping) and entry.get("subresource") != "status"
        ]
        meta = {k: metadata.get(k) for k in _METADATA}
        return f"g{generation}:" + hashlib.sha256(_canonical([meta, managed])).hexdigest()
    return f"rv{metadata.get('resourceVersion', '')}"


def desired_form(obj: KubeObject) -> KubeObject:
    """Git's object without its revision mark, which moves with every commit and is not drift (an operational mark):
    a commit that leaves an object as it was leaves its fingerprint too."""
    metadata = dict(obj.get("metadata") or {})
    annotations = {k: v for k, v in (metadata.get("annotations") or {}).items() if k != REVISION_ANNOTATION}
    metadata["annotations"] = annotations
    return {**obj, "metadata": metadata}


def policy_form(policy: DriftPolicy) -> list[Any]:
    return [
        sorted([r.group, r.kind, list(r.pointers)] for r in policy.ignore),
        sorted(policy.controller_managers),
        policy.field_manager,
        policy.autoscaled,
    ]


def fingerprint(
    secret: bytes, app: AppRef, key: ObjectKey, desired: KubeObject, live: KubeObject, policy: DriftPolicy
) -> str:
    """The fingerprint of `live` as left for Git's `desired` under `policy` (uid bound: a recreated object is new)."""
    uid = str((live.get("metadata") or {}).get("uid", ""))
    message = _canonical(
        [
            "kubectl-gitops/fingerprint/v1",
            str(app),
            key.as_dict(),
            uid,
            live_token(key, live),
            desired_form(desired),
            policy_form(policy),
        ]
    )
    return hmac.new(secret, message, hashlib.sha256).hexdigest()[:LENGTH]


def to_blob(fingerprints: Iterable[str]) -> bytes:
    """What a sync keeps of its fingerprints: the digests, sorted, end to end (16 bytes each). No key is needed with
    them: each one binds its object (identity and uid), so a set is all a check asks for."""
    return b"".join(sorted({bytes.fromhex(f) for f in fingerprints if len(f) == LENGTH}))


def from_blob(blob: bytes) -> frozenset[str]:
    """The fingerprints of `to_blob`'s answer (a damaged tail is left out: those objects are compared in full)."""
    size = LENGTH // 2
    return frozenset(blob[i : i + size].hex() for i in range(0, len(blob) - size + 1, size))


def kept_fingerprint(
    secret: bytes | None,
    kept: frozenset[str],
    app: AppRef,
    key: ObjectKey,
    desired: KubeObject,
    live: KubeObject | None,
    policy: DriftPolicy,
) -> str:
    """`live`'s fingerprint when `live` is provably what a sync left for this same `desired`, else "" (whenever it
    cannot be shown). `kept` holds what the last sync left (from_blob); the set is public to whoever can read it, the
    key is not. A sync that leaves the object alone keeps that same fingerprint again."""
    if secret is None or not kept or live is None:
        return ""
    found = fingerprint(secret, app, key, desired, live, policy)
    return found if found in kept else ""
